//! What the daemon is compared with: the naive writer (one awaited round trip per
//! message, as the old Python service did) and the batched consumer a careful user would
//! write with the same crates: one Redis pipeline per polled batch of plain commands,
//! with no coalescing and no scripts.

use std::time::{Duration, Instant};

use anyhow::ensure;
use cache_layer::cache::{CacheLayer, WriteSet};
use cache_layer::models::{decode, normalize_keyword, Message};
use cache_layer::schema::Keys;
use cache_layer_testkit::generate::Generated;
use cache_layer_testkit::RedisServer;
use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message as _;

use crate::broker::{blocking, raw_consumer_config, topic_names, topics_by_kind};
use crate::scenarios::{connect, ttls, TTL_SECS};

/// One awaited round trip per message, as the old service did.
pub async fn naive(cache: &CacheLayer, stream: &[Generated]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let now = Utc::now();
    for message in stream {
        if let Ok(decoded) = decode(message.kind, message.payload.as_bytes()) {
            let mut set = WriteSet::new();
            set.add_message(decoded, now);
            cache.write(&set, &ttls(), now).await?;
        }
    }
    Ok(stream.len() as f64 / started.elapsed().as_secs_f64())
}

/// The most messages one batch of the batched baseline takes, as the daemon's default.
const BATCH: usize = 5_000;

/// The preloaded topics consumed by a plain consumer with the daemon's fetch settings; each
/// polled batch (up to 5,000 messages, or what arrived within 50 ms) decoded and written
/// as one pipeline of plain commands, then its offsets committed. Timed from `subscribe`
/// until the last batch is written. Returns messages per second.
pub async fn batched(
    bootstrap: &str,
    redis: &RedisServer,
    fetch_wait_ms: u64,
    expected: u64,
) -> anyhow::Result<f64> {
    let consumer: BaseConsumer =
        raw_consumer_config(bootstrap, "bench-batched", fetch_wait_ms).create()?;
    let topics = topic_names("bench");
    let kinds = topics_by_kind("bench");
    let mut conn = connect(redis).await?;
    let keys = Keys::new("");
    let started = Instant::now();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    let consumer = std::sync::Arc::new(consumer);
    let mut seen = 0u64;
    let mut last_progress = Instant::now();
    while seen < expected {
        ensure!(
            last_progress.elapsed() < Duration::from_secs(30),
            "the batched baseline stalled at {seen} of {expected} messages"
        );
        let polling = std::sync::Arc::clone(&consumer);
        let kinds = kinds.clone();
        // Poll a batch on the blocking pool: (kind, payload) pairs.
        let batch = blocking(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let deadline = Instant::now() + Duration::from_millis(50);
            while batch.len() < BATCH && Instant::now() < deadline {
                let Some(message) = polling.poll(Duration::from_millis(10)) else {
                    continue;
                };
                let message = message?;
                let kind = kinds
                    .iter()
                    .find(|(_, topic)| topic.as_str() == message.topic())
                    .map(|(kind, _)| *kind)
                    .expect("a subscribed topic");
                batch.push((kind, message.payload().unwrap_or_default().to_vec()));
            }
            Ok(batch)
        })
        .await?;
        if batch.is_empty() {
            continue;
        }
        last_progress = Instant::now();
        seen += batch.len() as u64;
        let mut pipe = redis::pipe();
        for (kind, payload) in &batch {
            if let Ok(message) = decode(*kind, payload) {
                plain_commands(&mut pipe, &keys, message);
            }
        }
        pipe.query_async::<()>(&mut conn).await?;
        let committing = std::sync::Arc::clone(&consumer);
        blocking(move || Ok(committing.commit_consumer_state(CommitMode::Async)?)).await?;
    }
    Ok(seen as f64 / started.elapsed().as_secs_f64())
}

/// The commands a careful user would send for one message, one by one, each value with
/// its TTL.
fn plain_commands(pipe: &mut redis::Pipeline, keys: &Keys, message: Message) {
    match message {
        Message::Trends(alerts) => {
            for alert in alerts {
                let keyword = normalize_keyword(&alert.keyword);
                let json = serde_json::to_string(&alert).expect("an alert serializes");
                let score = cache_layer::schema::trend_score(&alert.window_end, alert.rank);
                pipe.set_ex(keys.trend_normalized(&keyword), json, TTL_SECS)
                    .ignore()
                    .zadd(keys.trends_current(), &keyword, score)
                    .ignore()
                    .expire(keys.trends_current(), TTL_SECS as i64)
                    .ignore();
            }
        }
        Message::UserMetrics(snapshots) => {
            for snapshot in snapshots {
                let json = serde_json::to_string(&snapshot).expect("metrics serialize");
                pipe.set_ex(keys.users_metrics(), json, TTL_SECS).ignore();
                let seen = Utc::now().timestamp();
                for user in snapshot.active_users.iter().flatten() {
                    pipe.zadd(keys.users_active(), user, seen).ignore();
                }
                pipe.expire(keys.users_active(), TTL_SECS as i64).ignore();
            }
        }
        Message::Windows(counts) => {
            for count in counts {
                let window = keys.window(&count.window_id());
                let keyword = normalize_keyword(&count.keyword);
                pipe.hset(&window, &keyword, count.count)
                    .ignore()
                    .expire(&window, TTL_SECS as i64)
                    .ignore()
                    .zadd(
                        keys.windows_index(),
                        count.window_id(),
                        count.window_end.timestamp(),
                    )
                    .ignore()
                    .expire(keys.windows_index(), TTL_SECS as i64)
                    .ignore();
            }
        }
    }
}
