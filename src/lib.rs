//! cache-layer: a Kafka-to-Redis cache stage for a Bluesky streaming pipeline.
//!
//! The modules, in the order data flows through them:
//! - [`config`]: the typed configuration, from TOML and the environment;
//! - [`models`]: the upstream messages, decoded and validated;
//! - [`schema`]: the Redis key schema that readers rely on;
//! - [`cache`]: the `CacheLayer` library that writes and reads that schema;
//! - [`telemetry`]: logging set-up, in one place;
//! - [`redis_server`]: a throwaway local `redis-server`, for tests and the demo.

pub mod cache;
pub mod config;
pub mod models;
pub mod redis_server;
pub mod schema;
pub mod telemetry;

pub use cache::{CacheError, CacheLayer, WriteSet};
pub use config::Config;
