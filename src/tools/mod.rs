//! Tools for operators, tests and benchmarks: `produce` sends lines to a topic, and
//! `generate` writes a realistic synthetic Bluesky-trend stream. Both reuse the library's
//! models: generated messages are built from the same types the daemon decodes.

pub mod generate;
pub mod produce;
