//! cache-layer: a Kafka-to-Redis cache stage for a Bluesky streaming pipeline.
//!
//! The modules, in the order data flows through them:
//! - [`config`]: the typed configuration, from TOML and the environment;
//! - [`models`]: the upstream messages, decoded and validated;
//! - [`schema`]: the Redis key schema that readers rely on;
//! - [`cache`]: the `CacheLayer` library that writes and reads that schema, and beside it
//!   [`kafka`]: the Kafka clients' configuration and the kinds of their errors;
//! - [`pipeline`]: the consume-to-write path: the Kafka group, batches, the retried
//!   Redis write and the dead-letter topic, driven by one loop;
//! - [`app`]: `run(config, shutdown)`, the whole daemon: the pipeline, and beside it
//!   [`http`] (metrics, health, the read API) and [`background`] (stats and sweeps);
//! - [`metrics`]: the catalog of every Prometheus metric and its exporter; [`status`]:
//!   the per-instance state that readiness judges by; `events`: one function per thing
//!   that happened, which moves the metrics, the status and the log together;
//! - [`telemetry`]: logging set-up, in one place.
//!
//! Only production code lives here: the throwaway redis-server, the mock broker, the
//! stream generator, the demo and the benchmark are in the `cache-layer-testkit` crate.

#![warn(unreachable_pub)]

pub mod app;
pub mod background;
pub mod cache;
pub mod config;
mod events;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod models;
pub mod pipeline;
pub mod schema;
pub mod status;
pub mod telemetry;

/// The unit tests count heap allocations (`cache_layer_testkit::allocations`).
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: cache_layer_testkit::allocations::Counting =
    cache_layer_testkit::allocations::Counting;

pub use app::{run, run_with_status};
pub use cache::{CacheError, CacheLayer, WriteSet};
pub use config::Config;
