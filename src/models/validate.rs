//! Decoding and validation: bytes from Kafka in, typed messages or a typed reason out.
//!
//! A message is one JSON object or a JSON array of objects of its topic's type. Any
//! invalid element rejects the whole message, so that a message is either written whole
//! or dead-lettered whole, never half.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use smallvec::SmallVec;

use super::time::INVALID_TIMESTAMP;
use super::{normalize_keyword, TrendAlert, UserMetrics, WindowedKeywordCount, MAX_KEYWORD_BYTES};

/// Why a message was rejected. The `as_str` names are metric labels and dead-letter
/// header values, so they are stable and few.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    NotJson,
    WrongShape,
    EmptyKeyword,
    KeywordTooLong,
    InvalidKeyword,
    NegativeValue,
    ConfidenceOutOfRange,
    NonFinite,
    WindowInverted,
    InvalidRank,
    InvalidTimestamp,
    /// An event time further ahead of the daemon's clock than `batch.max_future_skew_secs`:
    /// a wrong upstream clock, which would otherwise pin the value as the newest.
    FutureTimestamp,
    AuthorsExceedCount,
    InvalidWindowId,
    InvalidUserId,
    TooLarge,
    /// Valid, but Redis refused its write for its data (a key of another type at one of
    /// the schema's keys): set aside like a rejected message.
    RedisRefused,
}

impl RejectReason {
    pub const ALL: [RejectReason; 17] = [
        Self::NotJson,
        Self::WrongShape,
        Self::EmptyKeyword,
        Self::KeywordTooLong,
        Self::InvalidKeyword,
        Self::NegativeValue,
        Self::ConfidenceOutOfRange,
        Self::NonFinite,
        Self::WindowInverted,
        Self::InvalidRank,
        Self::InvalidTimestamp,
        Self::FutureTimestamp,
        Self::AuthorsExceedCount,
        Self::InvalidWindowId,
        Self::InvalidUserId,
        Self::TooLarge,
        Self::RedisRefused,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::NotJson => "not_json",
            Self::WrongShape => "wrong_shape",
            Self::EmptyKeyword => "empty_keyword",
            Self::KeywordTooLong => "keyword_too_long",
            Self::InvalidKeyword => "invalid_keyword",
            Self::NegativeValue => "negative_value",
            Self::ConfidenceOutOfRange => "confidence_out_of_range",
            Self::NonFinite => "non_finite",
            Self::WindowInverted => "window_inverted",
            Self::InvalidRank => "invalid_rank",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::FutureTimestamp => "future_timestamp",
            Self::AuthorsExceedCount => "authors_exceed_count",
            Self::InvalidWindowId => "invalid_window_id",
            Self::InvalidUserId => "invalid_user_id",
            Self::TooLarge => "too_large",
            Self::RedisRefused => "redis_refused",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected message: the reason, which array element (if the message was an array),
/// and a human-readable detail.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}{}: {detail}", index.map(|i| format!(" (element {i})")).unwrap_or_default())]
pub struct ValidationError {
    pub reason: RejectReason,
    pub index: Option<usize>,
    pub detail: String,
}

impl ValidationError {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            index: None,
            detail: detail.into(),
        }
    }
}

/// The reason and detail of one failed check, before the element index is known.
pub(crate) type Reject = (RejectReason, String);

/// The checks every message type runs after deserializing. They may normalise fields.
pub(crate) trait Validate: DeserializeOwned {
    fn validate(&mut self) -> Result<(), Reject>;
}

pub(crate) fn check(
    ok: bool,
    reason: RejectReason,
    detail: impl FnOnce() -> String,
) -> Result<(), Reject> {
    if ok {
        Ok(())
    } else {
        Err((reason, detail()))
    }
}

/// Trims a keyword in place and checks it; returns its normalised form. The trimmed
/// keyword is what gets stored, the normalised one what names its key. Neither is
/// copied when the keyword needs no trimming.
pub(crate) fn check_keyword(keyword: &mut String) -> Result<String, Reject> {
    let trimmed = keyword.trim();
    if trimmed.len() != keyword.len() {
        *keyword = trimmed.to_owned();
    }
    let keyword = keyword.as_str();
    check(!keyword.is_empty(), RejectReason::EmptyKeyword, || {
        "keyword is empty".into()
    })?;
    check(
        !keyword.chars().any(char::is_control),
        RejectReason::InvalidKeyword,
        || format!("keyword {keyword:?} contains control characters"),
    )?;
    let normalized = normalize_keyword(keyword);
    check(
        keyword.len() <= MAX_KEYWORD_BYTES && normalized.len() <= MAX_KEYWORD_BYTES,
        RejectReason::KeywordTooLong,
        || {
            format!(
                "keyword is {} bytes, over {MAX_KEYWORD_BYTES}",
                keyword.len().max(normalized.len())
            )
        },
    )?;
    Ok(normalized)
}

/// A post count and its unique authors: both non-negative, and no more authors than posts.
pub(crate) fn check_counts(name: &str, count: i64, unique_authors: i64) -> Result<(), Reject> {
    check(count >= 0, RejectReason::NegativeValue, || {
        format!("{name} {count} is negative")
    })?;
    check(unique_authors >= 0, RejectReason::NegativeValue, || {
        format!("unique_authors {unique_authors} is negative")
    })?;
    check(
        unique_authors <= count,
        RejectReason::AuthorsExceedCount,
        || format!("unique_authors {unique_authors} > {name} {count}"),
    )
}

pub(crate) fn check_window(start: &DateTime<Utc>, end: &DateTime<Utc>) -> Result<(), Reject> {
    check(end >= start, RejectReason::WindowInverted, || {
        format!("window_end {end} is before window_start {start}")
    })
}

/// Which topic a message came from, and so which type it must decode to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Trends,
    UserMetrics,
    Windows,
}

/// The items of a message: one object, as most messages are, held inline without an
/// allocation of its own, or an array's.
pub type Items<T> = SmallVec<[T; 1]>;

/// One decoded, validated Kafka message: never empty of meaning, possibly empty of items
/// (an empty array is valid and writes nothing).
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Trends(Items<TrendAlert>),
    UserMetrics(Items<UserMetrics>),
    Windows(Items<WindowedKeywordCount>),
}

impl Message {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Trends(v) => v.len(),
            Self::UserMetrics(v) => v.len(),
            Self::Windows(v) => v.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses the message if an item's event time (`window_end` of an alert or a count,
    /// `timestamp` of user metrics) is after `not_after`, the daemon's clock plus
    /// `batch.max_future_skew_secs`. Writes keep the newest event time, so one item from
    /// a clock in the future would shadow every correct one until its key expires.
    pub(crate) fn check_not_after(&self, not_after: DateTime<Utc>) -> Result<(), ValidationError> {
        let after = |times: &mut dyn Iterator<Item = Option<DateTime<Utc>>>| {
            times
                .enumerate()
                .find_map(|(i, time)| time.filter(|t| *t > not_after).map(|t| (i, t)))
        };
        let found = match self {
            Self::Trends(alerts) => after(&mut alerts.iter().map(|a| Some(a.window_end)))
                .map(|(i, t)| (i, "window_end", t)),
            Self::UserMetrics(all) => {
                after(&mut all.iter().map(|m| m.timestamp)).map(|(i, t)| (i, "timestamp", t))
            }
            Self::Windows(counts) => after(&mut counts.iter().map(|c| Some(c.window_end)))
                .map(|(i, t)| (i, "window_end", t)),
        };
        match found {
            None => Ok(()),
            Some((i, field, time)) => Err(ValidationError {
                reason: RejectReason::FutureTimestamp,
                index: (self.len() > 1).then_some(i),
                detail: format!(
                    "{field} {} is after {}, the daemon's clock plus batch.max_future_skew_secs",
                    super::format_timestamp(&time),
                    super::format_timestamp(&not_after)
                ),
            }),
        }
    }
}

/// Decodes a message of the given kind: one object or an array of them, each validated.
pub fn decode(kind: MessageKind, bytes: &[u8]) -> Result<Message, ValidationError> {
    Ok(match kind {
        MessageKind::Trends => Message::Trends(decode_items(bytes)?),
        MessageKind::UserMetrics => Message::UserMetrics(decode_items(bytes)?),
        MessageKind::Windows => Message::Windows(decode_items(bytes)?),
    })
}

fn decode_items<T: Validate>(bytes: &[u8]) -> Result<Items<T>, ValidationError> {
    let is_array = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[');
    let mut items: Items<T> = parse(bytes, is_array).map_err(|e| classify(bytes, &e))?;
    for (i, item) in items.iter_mut().enumerate() {
        item.validate()
            .map_err(|(reason, detail)| ValidationError {
                reason,
                index: is_array.then_some(i),
                detail,
            })?;
    }
    Ok(items)
}

/// Parses one item or an array of them. UTF-8 is checked once for the whole message,
/// so that serde_json reads a `&str` and does not check every string again (a seventh of
/// decoding's time); a message that is not UTF-8 goes to `from_slice`, which words the
/// error where the bad byte is.
fn parse<T: Validate>(bytes: &[u8], is_array: bool) -> serde_json::Result<Items<T>> {
    fn read<U: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<U> {
        match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(bytes),
        }
    }
    if is_array {
        read(bytes).map(Items::from_vec)
    } else {
        read(bytes).map(|one| smallvec::smallvec![one])
    }
}

/// Maps a serde_json error onto a reason. Python's `json.dumps` writes `NaN` and
/// `Infinity` as bare tokens, which are not JSON; they get their own reason because the
/// fix lies upstream in the producer, not in the transport.
fn classify(bytes: &[u8], err: &serde_json::Error) -> ValidationError {
    let message = err.to_string();
    let reason = match err.classify() {
        Category::Data if message.starts_with(INVALID_TIMESTAMP) => RejectReason::InvalidTimestamp,
        Category::Data => RejectReason::WrongShape,
        Category::Syntax if message.starts_with("number out of range") => RejectReason::NonFinite,
        Category::Syntax if non_finite_token_at(bytes, err.line(), err.column()) => {
            RejectReason::NonFinite
        }
        Category::Syntax | Category::Eof | Category::Io => RejectReason::NotJson,
    };
    ValidationError::new(reason, message)
}

/// Whether the syntax error at (line, column), both 1-based, sits on a `NaN` or `Infinity`.
fn non_finite_token_at(bytes: &[u8], line: usize, column: usize) -> bool {
    let Some(text) = bytes.split(|b| *b == b'\n').nth(line.saturating_sub(1)) else {
        return false;
    };
    let at = column.saturating_sub(1);
    (at.saturating_sub(1)..=at).any(|start| {
        let rest = text.get(start..).unwrap_or_default();
        [&b"NaN"[..], b"Infinity", b"-Infinity"]
            .iter()
            .any(|token| rest.starts_with(token))
    })
}

#[cfg(test)]
mod tests {
    use cache_layer_testkit::TREND;

    use super::*;

    const WINDOW: &str = r#"{"keyword":"Rust","count":7,"window_start":"2024-01-01T12:00:00Z",
        "window_end":"2024-01-01T12:01:00Z","unique_authors":3,"normalized_keyword":"RUST"}"#;
    const USERS: &str = r#"{"total_active_users":12,"posts_per_minute":3.5,
        "top_contributors":[{"user_id":"did:plc:abc","post_count":4}],
        "active_users":["did:plc:abc","did:plc:def"],"timestamp":"2024-01-01T12:00:30"}"#;

    /// `base` with `field` replaced by the raw JSON `value`.
    fn with(base: &str, field: &str, value: &str) -> String {
        let mut object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(base).unwrap();
        object.remove(field);
        let rest = serde_json::to_string(&object).unwrap();
        format!("{{\"{field}\":{value},{}", &rest[1..])
    }

    fn reason(kind: MessageKind, json: &str) -> RejectReason {
        decode(kind, json.as_bytes()).unwrap_err().reason
    }

    #[test]
    fn valid_messages_decode_as_one_object_or_an_array() {
        assert_eq!(
            decode(MessageKind::Trends, TREND.as_bytes()).unwrap().len(),
            1
        );
        let array = format!(" [{TREND},{TREND}]");
        assert_eq!(
            decode(MessageKind::Trends, array.as_bytes()).unwrap().len(),
            2
        );
        assert!(decode(MessageKind::Windows, b"[]").unwrap().is_empty());
        let Message::UserMetrics(users) =
            decode(MessageKind::UserMetrics, USERS.as_bytes()).unwrap()
        else {
            panic!("wrong kind");
        };
        assert_eq!(users[0].seen_user_ids().count(), 3);
    }

    #[test]
    fn window_id_defaults_to_the_old_format_and_keyword_is_renormalised() {
        let Message::Windows(counts) = decode(MessageKind::Windows, WINDOW.as_bytes()).unwrap()
        else {
            panic!("wrong kind");
        };
        assert_eq!(counts[0].window_id(), "window_2024_01_01_12_00");
        assert_eq!(counts[0].normalized_keyword, "rust");
    }

    #[test]
    fn each_bad_input_has_its_reason() {
        use MessageKind::*;
        use RejectReason::*;
        let cases: Vec<(MessageKind, String, RejectReason)> = vec![
            (Trends, "{not json".into(), NotJson),
            (Trends, "".into(), NotJson),
            (Trends, r#"{"keyword":"x"}"#.into(), WrongShape),
            (Trends, "42".into(), WrongShape),
            (Trends, with(TREND, "keyword", r#""   ""#), EmptyKeyword),
            (
                Trends,
                with(TREND, "keyword", &format!("\"{}\"", "k".repeat(257))),
                KeywordTooLong,
            ),
            (Trends, with(TREND, "keyword", r#""a\nb""#), InvalidKeyword),
            (Trends, with(TREND, "frequency", "-1"), NegativeValue),
            (Windows, with(WINDOW, "count", "-3"), NegativeValue),
            (
                UserMetrics,
                with(USERS, "posts_per_minute", "-0.5"),
                NegativeValue,
            ),
            (
                Trends,
                with(TREND, "confidence_score", "1.5"),
                ConfidenceOutOfRange,
            ),
            (
                Trends,
                with(TREND, "confidence_score", "-0.1"),
                ConfidenceOutOfRange,
            ),
            (Trends, with(TREND, "growth_rate", "NaN"), NonFinite),
            (Trends, with(TREND, "growth_rate", "Infinity"), NonFinite),
            (Trends, with(TREND, "growth_rate", "-Infinity"), NonFinite),
            (Trends, with(TREND, "growth_rate", "1e400"), NonFinite),
            (
                Trends,
                with(TREND, "window_end", r#""2024-01-01T11:00:00""#),
                WindowInverted,
            ),
            (Trends, with(TREND, "rank", "0"), InvalidRank),
            (Trends, with(TREND, "rank", "1000000"), InvalidRank),
            (
                Trends,
                with(TREND, "window_start", r#""noon""#),
                InvalidTimestamp,
            ),
            (
                Trends,
                with(TREND, "unique_authors", "11"),
                AuthorsExceedCount,
            ),
            (
                Windows,
                with(WINDOW, "window_id", r#""win*dow""#),
                InvalidWindowId,
            ),
            (Windows, with(WINDOW, "window_id", r#"".."#), NotJson),
            (
                Windows,
                with(WINDOW, "window_id", r#""..""#),
                InvalidWindowId,
            ),
            (
                UserMetrics,
                with(USERS, "active_users", r#"["ok",""]"#),
                InvalidUserId,
            ),
        ];
        for (kind, json, expected) in cases {
            assert_eq!(reason(kind, &json), expected, "{json}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_not_json_and_the_error_says_where() {
        let mut bytes = TREND.as_bytes().to_vec();
        let at = TREND.find("\"keyword\":\"").unwrap() + "\"keyword\":\"".len();
        bytes[at] = 0xff;
        let err = decode(MessageKind::Trends, &bytes).unwrap_err();
        assert_eq!(err.reason, RejectReason::NotJson);
        assert!(err.detail.contains("invalid unicode"), "{err}");
        assert!(err.detail.contains("column"), "{err}");
    }

    #[test]
    fn a_bad_element_rejects_the_whole_array_and_names_its_index() {
        let bad = with(TREND, "rank", "0");
        let err = decode(MessageKind::Trends, format!("[{TREND},{bad}]").as_bytes()).unwrap_err();
        assert_eq!(
            (err.reason, err.index),
            (RejectReason::InvalidRank, Some(1))
        );
        assert!(
            err.to_string()
                .starts_with("invalid_rank (element 1): rank 0"),
            "{err}"
        );
    }

    #[test]
    fn reason_names_are_unique_metric_labels() {
        let mut names: Vec<_> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RejectReason::ALL.len());
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }
}
