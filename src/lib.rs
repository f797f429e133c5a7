//! cache-layer: a Kafka-to-Redis cache stage for a Bluesky streaming pipeline.
//!
//! The modules, in the order data flows through them:
//! - [`config`]: the typed configuration, from TOML and the environment;
//! - [`models`]: the upstream messages, decoded and validated;
//! - [`schema`]: the Redis key schema that readers rely on;
//! - [`cache`]: the `CacheLayer` library that writes and reads that schema;
//! - [`daemon`]: the streaming loop, `run(config, shutdown)`, built from [`consumer`]
//!   (the Kafka group), [`batcher`] (collecting and coalescing), [`sink`] (the retried
//!   Redis write) and [`dead_letter`] (rejected messages);
//! - [`tools`]: the `produce` and `generate` commands for operators and tests;
//! - [`telemetry`]: logging set-up, in one place;
//! - [`redis_server`]: a throwaway local `redis-server`, for tests and the demo.

pub mod batcher;
pub mod cache;
pub mod config;
pub mod consumer;
pub mod daemon;
pub mod dead_letter;
pub mod models;
pub mod redis_server;
pub mod schema;
pub mod sink;
pub mod status;
pub mod telemetry;
pub mod tools;

pub use cache::{CacheError, CacheLayer, WriteSet};
pub use config::Config;
pub use daemon::{run, run_with_status};
