//! The consume-to-write path: consume, batch, write, store offsets, and drain on shutdown.
//!
//! One loop owns the consumer and the batch being collected; at most one batch is being
//! written beside it, on a task of its own so that consuming and writing use both cores,
//! and memory stays bounded whatever the input rate. The loop awaits shutdown, the write
//! in flight, the batch deadline and the next message in one `select!`. A batch is
//! written when it is full, `batch.max_wait_ms` after its first message, or as soon as
//! the consumer has no message ready while nothing is being written: under a light load
//! a message waits for no timer, and under a heavy one batches grow while the previous
//! write is in flight. Batches are written one after the other, so offsets are stored in
//! order.
//!
//! While a write keeps failing (Redis full, read-only, hanging or down; the dead-letter
//! topic unreachable), the assigned partitions are paused: the loop keeps polling, so the
//! group membership stays alive, but nothing more is fetched until the write went
//! through. Then the loop resumes them where it stands (`partitions`): a message is never
//! acknowledged past one it did not receive.
//!
//! Every second, and whenever a write found the group's marker gone, a round of
//! housekeeping runs beside the loop: it reports a Redis that lost its data and reads
//! the rebuild requests of the partitions assigned; the loop then replays them
//! (`rebuild`). With `redis.pause_above_memory_ratio` it also reads Redis's memory use,
//! and the loop pauses consuming while it is at or above the ratio.
//!
//! The stages, each in its own module: `consume` (the loop, which drives the rest),
//! `consumer` (the Kafka group), `partitions` (the partitions held: where each stands,
//! what it stores, and its replay), `handover` (a revoked partition's batch, given up),
//! `batch` (decoding, validating and coalescing on arrival), `sink` (the retried write)
//! with `retry` (how long to wait), [`dead_letter`] (rejected and refused messages),
//! `rebuild` (the housekeeping that finds what Redis lost and asks for replays) with
//! `replay` (each replay's progress), `health` (Kafka errors) and `topics` (missing
//! topics), both for the operator; and [`offsets`] (the group's offsets, for the
//! operator's `offsets` command). The error of a write attempt, [`SinkError`], is here,
//! beside the loop that the sink and the retry logic serve.

mod batch;
mod consume;
mod consumer;
pub mod dead_letter;
mod handover;
mod health;
pub mod offsets;
mod partitions;
mod rebuild;
mod replay;
mod retry;
mod sink;
mod topics;

pub(crate) use consume::run;
pub use rebuild::request_rebuild;

/// Why one write attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SinkError {
    #[error(transparent)]
    Redis(#[from] crate::cache::CacheError),
    #[error("dead-letter topic {topic:?} unavailable: {source}")]
    DeadLetter {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
}
