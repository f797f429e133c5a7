//! The integration tests, one binary with a module per area (linking the crate once
//! rather than once per file). They run under cargo-nextest, which gives every test a
//! process of its own: the metrics recorder and the figment `Jail` are process-wide.
//!
//! Each test starts what it needs (a redis-server, librdkafka's mock cluster, a daemon)
//! from `cache-layer-testkit`, with unique topic and key names, and nothing pre-started.

mod cache;
mod cli;
mod cluster;
mod config;
mod converge;
mod crashes;
mod daemon;
mod demo;
mod deploy;
mod expiry;
mod faults;
mod fuzz_decode;
mod http;
mod http_limits;
mod kafka;
mod kafka_security;
mod layers;
mod maintenance;
mod membership;
mod memory;
mod metrics;
mod offsets;
mod poison;
mod prometheus;
mod rebuild;
mod reload;
mod resume;
mod sentinel;
mod support;
mod sweep;
mod tls;
