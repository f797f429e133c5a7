//! Rust futures as asyncio awaitables, run on a tokio runtime of the module's own, which
//! is shut down when the interpreter exits.
//!
//! The awaitable is a plain asyncio future of the caller's running loop. The work runs on
//! a tokio thread without the GIL; once it is done, that thread takes the GIL only to
//! hand the outcome to the loop (`call_soon_threadsafe`) and to let go of the loop and
//! the future, and then touches Python no more. A future cancelled meanwhile is left
//! alone: the work, a Redis call that is complete or nothing, runs to its end.
//!
//! Why not pyo3-async-runtimes, which does the same: its runtime lives in a process-wide
//! static that cannot be shut down, so its worker threads may still reach for the GIL
//! while the interpreter finalizes, and the process aborts ("PyGILState_Release: thread
//! state must be current when releasing", PyO3/pyo3-async-runtimes#40). This package hit
//! it at the exit of its own benchmark. Here `atexit` runs [`shutdown`] first, which
//! waits for the runtime's threads to end.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use tokio::runtime::{Builder, Handle, Runtime};

/// The runtime, made on first use; `None` again once shut down.
static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

/// How long the shutdown waits for work under way (a Redis call is bounded by the
/// client's `socket_timeout`).
const SHUTDOWN: Duration = Duration::from_secs(5);

fn runtime() -> PyResult<Handle> {
    let mut runtime = RUNTIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if runtime.is_none() {
        let built = Builder::new_multi_thread()
            .thread_name("cache-layer")
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the tokio runtime: {e}")))?;
        *runtime = Some(built);
    }
    Ok(runtime.as_ref().expect("made above").handle().clone())
}

/// Shuts the runtime down, waiting (without the GIL) for its threads to end. Registered
/// with `atexit` by the package; a later call starts a new runtime.
#[pyfunction]
pub(crate) fn shutdown(py: Python<'_>) {
    let runtime = RUNTIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(runtime) = runtime {
        py.detach(|| runtime.shutdown_timeout(SHUTDOWN));
    }
}

/// Runs `work` on the runtime; returns the awaitable of its outcome, a future of the
/// running asyncio loop.
pub(crate) fn awaitable<'py, T, W>(py: Python<'py>, work: W) -> PyResult<Bound<'py, PyAny>>
where
    W: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let future = event_loop.call_method0("create_future")?;
    let (event_loop, target) = (event_loop.unbind(), future.clone().unbind());
    runtime()?.spawn(async move {
        let outcome = work.await;
        Python::attach(move |py| {
            let (value, failed) = match outcome.and_then(|value| value.into_py_any(py)) {
                Ok(value) => (value, false),
                Err(error) => (error.into_value(py).into_any(), true),
            };
            let handed = wrap_pyfunction!(settle, py).and_then(|settle| {
                event_loop.bind(py).call_method1(
                    "call_soon_threadsafe",
                    (settle, target.bind(py), value, failed),
                )
            });
            // The loop is closed: nobody awaits the outcome any more.
            drop(handed);
        });
    });
    Ok(future)
}

/// Gives an asyncio future its outcome, unless it is done already (cancelled while the
/// work ran). Called by the loop.
#[pyfunction]
fn settle(future: &Bound<'_, PyAny>, value: Bound<'_, PyAny>, failed: bool) -> PyResult<()> {
    if future.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    let method = if failed {
        "set_exception"
    } else {
        "set_result"
    };
    future.call_method1(method, (value,))?;
    Ok(())
}
