//! Upstream messages, built in one place: as the JSON upstream publishes, and as the
//! decoded models. The models are always built by decoding the JSON, so a fixture is
//! valid exactly when the daemon would accept it.
//!
//! The library's own unit tests use the JSON builders only (`&str` and `String`), which
//! stay the same type whichever build of the library links this crate.

use crate::generate::{Generated, Generator, GeneratorConfig};
use cache_layer::models::{
    decode, Message, MessageKind, TrendAlert, UserMetrics, WindowedKeywordCount,
};

/// A trend alert for "Rust", in the window 12:00 to 12:01 (naive timestamps, read as UTC).
pub const TREND: &str = r#"{"keyword":"Rust","frequency":10,"growth_rate":2.5,"confidence_score":0.9,
        "window_start":"2024-01-01T12:00:00","window_end":"2024-01-01T12:01:00",
        "sample_posts":["a post"],"unique_authors":4,"rank":1}"#;

/// A trend alert ending at `window_end` (RFC 3339), with the given rank.
pub fn trend_alert_json(keyword: &str, window_end: &str, rank: i64) -> String {
    format!(
        r#"{{"keyword":{keyword:?},"frequency":50,"growth_rate":3.5,"confidence_score":0.8,
        "window_start":"2024-01-01T00:00:00Z","window_end":"{window_end}",
        "sample_posts":["look at this"],"unique_authors":12,"rank":{rank}}}"#
    )
}

/// A `TrendAlert` as upstream publishes it, in the window 12:`minute` to the next minute.
pub fn trend_json(keyword: &str, minute: u32, rank: i64, frequency: i64) -> String {
    format!(
        r#"{{"keyword":"{keyword}","frequency":{frequency},"growth_rate":1.5,"confidence_score":0.75,
        "window_start":"2024-01-01T12:{minute:02}:00Z","window_end":"2024-01-01T12:{:02}:00Z",
        "sample_posts":["a post about {keyword}"],"unique_authors":1,"rank":{rank}}}"#,
        minute + 1
    )
}

/// A `WindowedKeywordCount` as upstream publishes it, in the window 12:`minute`.
pub fn window_json(keyword: &str, count: i64, minute: u32) -> String {
    format!(
        r#"{{"keyword":"{keyword}","count":{count},"unique_authors":1,
        "window_start":"2024-01-01T12:{minute:02}:00Z","window_end":"2024-01-01T12:{:02}:00Z"}}"#,
        minute + 1
    )
}

/// A trend alert padded with `posts` sample posts of a kilobyte each: about `posts`
/// kilobytes, for the tests and the benchmark of messages near the size limit.
pub fn padded_trend_json(keyword: &str, posts: usize) -> String {
    serde_json::json!({
        "keyword": keyword,
        "frequency": 50,
        "growth_rate": 1.5,
        "confidence_score": 0.75,
        "window_start": "2024-01-01T12:00:00Z",
        "window_end": "2024-01-01T12:01:00Z",
        "sample_posts": vec!["p".repeat(1_000); posts],
        "unique_authors": 1,
        "rank": 1,
    })
    .to_string()
}

/// `n` trend alerts for distinct keywords in window 12:00, keyed by keyword; the rank of
/// the i-th is i + 1.
pub fn trend_records(prefix: &str, n: usize, frequency: i64) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("{prefix}{i}"),
                trend_json(&format!("{prefix}{i}"), 0, i as i64 + 1, frequency),
            )
        })
        .collect()
}

/// `n` window counts for distinct keywords in window 12:00, keyed by keyword; the count
/// of the i-th is i + 1.
pub fn window_records(prefix: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("{prefix}{i}"),
                window_json(&format!("{prefix}{i}"), i as i64 + 1, 0),
            )
        })
        .collect()
}

/// A valid synthetic stream of `messages` records of every kind (Zipf keywords, about 80%
/// window counts), `per_window` to a one-minute window.
pub fn stream(messages: usize, per_window: u64, seed: u64) -> Vec<Generated> {
    let mut generator = Generator::new(GeneratorConfig {
        seed,
        malformed: 0.0,
        messages_per_window: per_window,
        vocabulary: 2_000,
        ..GeneratorConfig::default()
    });
    (0..messages).map(|_| generator.next_message()).collect()
}

/// A backlog as upstream's windowed stage publishes it: `windows` one-minute windows of
/// `per_window` keyword counts each, keyed by window id (so each window fills a run of
/// one partition), then `trends` alerts of distinct keywords and `users` user-metrics
/// snapshots. The stream that found resuming a paused partition skipping messages.
pub fn window_backlog(
    windows: u32,
    per_window: usize,
    trends: usize,
    users: usize,
) -> Vec<Generated> {
    let generated = |kind, key: String, payload| Generated {
        kind,
        key,
        payload,
        malformed: false,
    };
    let mut backlog = Vec::new();
    for minute in 0..windows {
        let window_id = format!("window_2024_01_01_12_{minute:02}");
        backlog.extend((0..per_window).map(|i| {
            let payload = window_json(&format!("kw{i}"), i as i64 + 1, minute);
            generated(MessageKind::Windows, window_id.clone(), payload)
        }));
    }
    backlog.extend((0..trends).map(|i| {
        let keyword = format!("trend{i}");
        let payload = trend_json(&keyword, i as u32 % 20, i as i64 + 1, 10);
        generated(MessageKind::Trends, keyword, payload)
    }));
    backlog.extend(
        stream(users * 40, 600, 1)
            .into_iter()
            .filter(|m| m.kind == MessageKind::UserMetrics)
            .take(users),
    );
    backlog
}

/// [`trend_alert_json`], decoded.
pub fn trend(keyword: &str, window_end: &str, rank: i64) -> TrendAlert {
    match decoded(
        MessageKind::Trends,
        &trend_alert_json(keyword, window_end, rank),
    ) {
        Message::Trends(mut alerts) => alerts.remove(0),
        other => panic!("{other:?}"),
    }
}

/// A window count in the window starting (and, for brevity, ending) at `window_start`.
pub fn window_count(keyword: &str, count: i64, window_start: &str) -> WindowedKeywordCount {
    let json = format!(
        r#"{{"keyword":{keyword:?},"count":{count},"unique_authors":1,
        "window_start":"{window_start}","window_end":"{window_start}"}}"#
    );
    match decoded(MessageKind::Windows, &json) {
        Message::Windows(mut counts) => counts.remove(0),
        other => panic!("{other:?}"),
    }
}

/// A user-metrics snapshot of these users at `timestamp`.
pub fn user_metrics(users: &[&str], timestamp: &str, total: i64) -> UserMetrics {
    let json = format!(
        r#"{{"total_active_users":{total},"posts_per_minute":4.5,
        "top_contributors":[{{"user_id":"did:plc:top","post_count":9}}],
        "active_users":{users:?},"timestamp":"{timestamp}"}}"#
    );
    match decoded(MessageKind::UserMetrics, &json) {
        Message::UserMetrics(mut all) => all.remove(0),
        other => panic!("{other:?}"),
    }
}

fn decoded(kind: MessageKind, json: &str) -> Message {
    decode(kind, json.as_bytes()).unwrap_or_else(|e| panic!("a valid fixture: {e}\n{json}"))
}
