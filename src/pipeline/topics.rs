//! Subscribed topics that do not exist yet, watched until they do: the instance is
//! unready meanwhile, and `cache_layer_topic_missing` says which.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::consumer::GroupConsumer;
use crate::events;
use crate::status::Status;

/// How often the subscribed topics are looked up while one is missing, and otherwise.
const TOPIC_CHECK_MISSING: Duration = Duration::from_secs(2);
const TOPIC_CHECK: Duration = Duration::from_secs(10);

/// Looks the subscribed topics up until `shutdown`, every 2 s while one is missing and
/// every 10 s otherwise, and records which are missing: in the status (readiness), the
/// metrics and the log. librdkafka itself picks up a topic created later at its next
/// metadata refresh (`topic.metadata.refresh.interval.ms`, 3 s unless set).
pub(crate) async fn watch_topics(
    consumer: Arc<GroupConsumer>,
    topics: Vec<String>,
    status: Arc<Status>,
    shutdown: CancellationToken,
) {
    let mut missing: Vec<String> = Vec::new();
    loop {
        let lookup = {
            let (consumer, topics) = (Arc::clone(&consumer), topics.clone());
            tokio::task::spawn_blocking(move || missing_topics(&consumer, &topics))
        };
        if let Ok(Some(now_missing)) = lookup.await {
            for topic in &topics {
                let absent = now_missing.contains(topic);
                events::topic_missing(topic, absent);
                match (absent, missing.contains(topic)) {
                    (true, false) => warn!(
                        topic,
                        "subscribed topic does not exist; consuming it once it is created"
                    ),
                    (false, true) => info!(topic, "subscribed topic exists now"),
                    _ => {}
                }
            }
            status.set_missing_topics(now_missing.clone());
            missing = now_missing;
        }
        let pause = if missing.is_empty() {
            TOPIC_CHECK
        } else {
            TOPIC_CHECK_MISSING
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// The topics the brokers do not know; `None` when they could not be asked.
fn missing_topics(consumer: &GroupConsumer, topics: &[String]) -> Option<Vec<String>> {
    let mut missing = Vec::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), TOPIC_CHECK_MISSING)
            .ok()?;
        let known = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !known {
            missing.push(topic.clone());
        }
    }
    Some(missing)
}
