//! The consumer lag per partition, rendered beside the recorder's exposition. The
//! recorder cannot forget a series, and a partition that moves to another instance must
//! leave this one's `/metrics`, not stay at its last value.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::catalog::{ALL, CONSUMER_LAG};

/// The consumer lag of each assigned partition, by topic and partition.
static LAG: Mutex<BTreeMap<(String, i32), i64>> = Mutex::new(BTreeMap::new());

/// Appends the lag of every partition assigned now, with its HELP and TYPE lines.
pub(super) fn render(text: &mut String) {
    use std::fmt::Write;
    let lag = LAG.lock().expect("not poisoned");
    let _ = writeln!(
        text,
        "# HELP {CONSUMER_LAG} {}\n# TYPE {CONSUMER_LAG} gauge",
        help()
    );
    for ((topic, partition), messages) in lag.iter() {
        let _ = writeln!(
            text,
            "{CONSUMER_LAG}{{topic=\"{}\",partition=\"{partition}\"}} {messages}",
            escape_label(topic)
        );
    }
}

/// The HELP text of the catalog's row.
fn help() -> &'static str {
    ALL.iter()
        .find(|metric| metric.name == CONSUMER_LAG)
        .map_or("", |metric| metric.help)
}

/// A label value in the text exposition: backslash, quote and newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// librdkafka's statistics reported this partition's lag.
pub(crate) fn consumer_lag(topic: &str, partition: i32, lag: i64) {
    let mut partitions = LAG.lock().expect("not poisoned");
    partitions.insert((topic.to_owned(), partition), lag);
}

/// These partitions were revoked: their lag is no longer this instance's to report.
pub(crate) fn lag_revoked<'a>(partitions: impl Iterator<Item = (&'a str, i32)>) {
    let mut lag = LAG.lock().expect("not poisoned");
    for (topic, partition) in partitions {
        lag.remove(&(topic.to_owned(), partition));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::render;

    #[test]
    fn a_revoked_partition_leaves_the_lag_gauge() {
        consumer_lag("trend-alerts", 0, 5);
        consumer_lag("trend-alerts", 1, 7);
        lag_revoked([("trend-alerts", 0)].into_iter());
        let text = render();
        assert!(!text.contains(r#"partition="0""#), "{text}");
        assert!(
            text.contains(
                r#"cache_layer_consumer_lag_messages{topic="trend-alerts",partition="1"} 7"#
            ),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
    }
}
