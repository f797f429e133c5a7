//! cache-layer: a Kafka-to-Redis cache stage for a Bluesky streaming pipeline.
//!
//! The modules, in the order data flows through them:
//! - [`config`]: the typed configuration, from TOML and the environment;
//! - [`models`]: the upstream messages, decoded and validated;
//! - [`schema`]: the Redis key schema that readers rely on;
//! - [`cache`]: the `CacheLayer` library that writes and reads that schema;
//! - [`app`]: `run(config, shutdown)`, the whole daemon: [`daemon`] (the consume loop),
//!   built from [`consumer`] (the Kafka group), [`batcher`] (collecting and coalescing),
//!   [`sink`] (the retried Redis write) and [`dead_letter`] (rejected messages); beside it
//!   [`http`] (metrics, health, the read API) and [`background`] (stats and sweeps);
//! - [`metrics`]: every Prometheus metric, in one place; [`status`]: per-instance counters;
//! - [`tools`]: the `produce` and `generate` commands for operators and tests;
//! - [`demo`]: everything on one machine, with a live summary;
//! - [`cli`]: the command line;
//! - [`telemetry`]: logging set-up, in one place;
//! - [`redis_server`]: a throwaway local `redis-server`, for tests and the demo.

pub mod app;
pub mod background;
pub mod batcher;
pub mod cache;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod daemon;
pub mod dead_letter;
pub mod demo;
pub mod http;
pub mod metrics;
pub mod models;
pub mod redis_server;
pub mod schema;
pub mod sink;
pub mod status;
pub mod telemetry;
pub mod tools;

pub use app::{run, run_with_status};
pub use cache::{CacheError, CacheLayer, WriteSet};
pub use config::Config;
