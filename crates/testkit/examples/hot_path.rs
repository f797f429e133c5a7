//! The daemon's own work per message, without Kafka or Redis: what its consume loop and
//! write task do with the benchmark's generated stream, timed in one thread, with the
//! daemon's allocator. `cache-layer-bench` measures the whole daemon against a broker,
//! where the machine's other tenants move the figure by a third from run to run; this
//! measures only the daemon's code, steadily enough to compare two changes of it.
//!
//! ```text
//! cargo run --release -p cache-layer-testkit --example hot_path -- [MESSAGES]
//! ```
//!
//! It prints, as medians of five rounds: decoding and validation per message of each
//! kind, and per message of the stream: decoding, coalescing into one `WriteSet` per
//! batch of 5,000 (the daemon's default `batch.max_messages`), and encoding each set as
//! the Redis pipeline the daemon sends. Under callgrind, which counts instructions
//! exactly where a clock moves by a tenth, the daemon's part alone:
//!
//! ```text
//! valgrind --tool=callgrind --toggle-collect=hot_path::write_sets \
//!     target/release/examples/hot_path 20000
//! ```
//!
//! counts the instructions of decoding, coalescing and encoding the stream five times.

use std::time::Instant;

use cache_layer::models::{decode, MessageKind};
use cache_layer::schema::Keys;
use cache_layer::{Config, WriteSet};
use cache_layer_testkit::generate::{Generated, Generator, GeneratorConfig};
use chrono::{Duration, Utc};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ROUNDS: usize = 5;
const BATCH: usize = 5_000;

fn main() {
    let messages: usize = std::env::args()
        .nth(1)
        .map_or(1_000_000, |n| n.parse().expect("MESSAGES is a number"));
    let mut generator = Generator::new(GeneratorConfig::default());
    let stream: Vec<Generated> = (0..messages).map(|_| generator.next_message()).collect();

    for kind in [
        MessageKind::Trends,
        MessageKind::UserMetrics,
        MessageKind::Windows,
    ] {
        let of: Vec<&Generated> = stream
            .iter()
            .filter(|m| m.kind == kind && !m.malformed)
            .collect();
        let bytes = of.iter().map(|m| m.payload.len()).sum::<usize>() / of.len().max(1);
        let each = median(|| {
            let started = Instant::now();
            for m in &of {
                std::hint::black_box(decode(m.kind, m.payload.as_bytes()).is_ok());
            }
            started.elapsed().as_secs_f64() * 1e6 / of.len() as f64
        });
        println!(
            "decoding a {kind:?} message ({} of the stream, {bytes} bytes on average): {each:.3} µs",
            of.len()
        );
    }

    let mut rounds: Vec<[f64; 3]> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            for m in &stream {
                std::hint::black_box(decode(m.kind, m.payload.as_bytes()).is_ok());
            }
            let decoding = started.elapsed().as_secs_f64();
            let started = Instant::now();
            let encoding = write_sets(&stream);
            let coalescing = started.elapsed().as_secs_f64() - encoding - decoding;
            [decoding, coalescing, encoding].map(|secs| secs * 1e6 / messages as f64)
        })
        .collect();
    let mut part = |i: usize| {
        rounds.sort_by(|a, b| a[i].total_cmp(&b[i]));
        rounds[ROUNDS / 2][i]
    };
    let (decoding, coalescing, encoding) = (part(0), part(1), part(2));
    println!(
        "per message of the stream ({messages}): decoding {decoding:.3} µs, coalescing {coalescing:.3} µs, encoding {encoding:.3} µs; {:.3} µs in all",
        decoding + coalescing + encoding
    );
}

/// What the daemon does with `stream`: each batch decoded, coalesced into a `WriteSet`
/// and encoded as its pipeline. Returns the seconds spent encoding. Not inlined, so that
/// `valgrind --tool=callgrind --toggle-collect=hot_path::write_sets` counts the
/// instructions of exactly this work (`ROUNDS` times the stream).
#[inline(never)]
fn write_sets(stream: &[Generated]) -> f64 {
    let ttls = Config::default().cache.ttls();
    let keys = Keys::new("");
    let mut encoding = 0.0;
    for batch in stream.chunks(BATCH) {
        let now = Utc::now();
        let mut set = WriteSet::new();
        for m in batch {
            if let Ok(message) = decode(m.kind, m.payload.as_bytes()) {
                set.add_message(message, now);
            }
        }
        let started = Instant::now();
        let mut pipe = redis::pipe();
        set.append_to(&mut pipe, &keys, &ttls, now, now + Duration::days(1));
        std::hint::black_box(pipe.get_packed_pipeline());
        encoding += started.elapsed().as_secs_f64();
    }
    encoding
}

/// The median of `ROUNDS` runs of `run`.
fn median(mut run: impl FnMut() -> f64) -> f64 {
    let mut all: Vec<f64> = (0..ROUNDS).map(|_| run()).collect();
    all.sort_by(f64::total_cmp);
    all[ROUNDS / 2]
}
