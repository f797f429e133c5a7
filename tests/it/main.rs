//! The integration tests, one binary with a module per area (linking the crate once
//! rather than once per file). They run under cargo-nextest, which gives every test a
//! process of its own: the metrics recorder and the figment `Jail` are process-wide.
//!
//! Each test starts what it needs (a redis-server, a daemon) from `cache-layer-testkit`,
//! and takes topics and a group of its own on Apache Kafka: on the broker `scripts/test.sh`
//! starts for the whole run, or on one of the test's own when there is none or when the
//! test stops, freezes or kills it. librdkafka's mock cluster serves the few tests whose
//! faults only it can inject.

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
mod handover;
mod http;
mod http_limits;
mod kafka;
mod kafka_security;
mod layers;
mod log;
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
