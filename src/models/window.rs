//! `WindowedKeywordCount`: one keyword's count in one time window, on `keyword-windows`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::borrow::Cow;

use super::time::{put_digits, LastFormatted};
use super::validate::{check, check_counts, check_keyword, check_window, Reject, Validate};
use super::RejectReason;
use crate::schema;

/// Window ids become part of a key and of an HTTP path, so they are short and plain.
pub(crate) const MAX_WINDOW_ID_BYTES: usize = 128;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowedKeywordCount {
    pub keyword: String,
    pub count: i64,
    #[serde(with = "super::time")]
    pub window_start: DateTime<Utc>,
    #[serde(with = "super::time")]
    pub window_end: DateTime<Utc>,
    pub unique_authors: i64,
    /// Computed by validation with [`normalize_keyword`](super::normalize_keyword):
    /// upstream's value is not trusted to match the key schema's rule, so it is skipped
    /// unread rather than decoded into a string that validation would replace (a third
    /// allocation in every window count of a stream that carries it).
    #[serde(default, skip_deserializing)]
    pub normalized_keyword: String,
    /// Upstream's window id; when absent, the default of `window_start` (see
    /// [`DefaultWindowId`] and [`WindowedKeywordCount::window_id`]).
    #[serde(default)]
    pub window_id: Option<String>,
}

impl WindowedKeywordCount {
    /// The window id: upstream's, or the default of `window_start`.
    pub fn window_id(&self) -> Cow<'_, str> {
        match &self.window_id {
            Some(id) => Cow::Borrowed(id),
            None => Cow::Owned(DefaultWindowId::of(&self.window_start).as_str().to_owned()),
        }
    }

    /// Where a validated count is stored, its window id (upstream's, `None` for the
    /// default of `window_start`) and normalised keyword, and what is stored there; its
    /// strings are moved, not copied.
    pub(crate) fn into_entry(self) -> (Option<String>, String, WindowEntry) {
        let entry = WindowEntry {
            keyword: self.keyword,
            count: self.count,
            unique_authors: self.unique_authors,
            window_start: self.window_start,
            window_end: self.window_end,
        };
        (self.window_id, self.normalized_keyword, entry)
    }
}

/// The old service's window id, `window_YYYY_MM_DD_HH_MM` of `window_start` in UTC, on
/// the stack: a count names its window this way, and the id is copied onto the heap
/// only for a window that a batch meets first.
///
/// Written digit by digit: with `format!` it was 11% of the consume loop's CPU, one in
/// every window count.
pub(crate) struct DefaultWindowId([u8; DEFAULT_WINDOW_ID_LEN]);

const DEFAULT_WINDOW_ID_LEN: usize = "window_YYYY_MM_DD_HH_MM".len();

impl DefaultWindowId {
    pub(crate) fn of(window_start: &DateTime<Utc>) -> Self {
        use chrono::{Datelike, Timelike};
        let window_start = window_start.naive_utc();
        let mut id = *b"window_YYYY_MM_DD_HH_MM";
        // Accepted timestamps are within 1970..2200, four digits.
        let year = window_start.year().clamp(0, 9999) as u32;
        let parts = [
            (7, year, 4),
            (12, window_start.month(), 2),
            (15, window_start.day(), 2),
            (18, window_start.hour(), 2),
            (21, window_start.minute(), 2),
        ];
        for (at, value, width) in parts {
            put_digits(&mut id[at..at + width], value);
        }
        Self(id)
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII digits and letters")
    }
}

/// Window ids are data in a key, but also path segments of the read API: keep them to a
/// conservative alphabet so that neither a glob nor a path trick can hide in one, and
/// never let one name a fixed key of the schema (`windows:index`).
pub(crate) fn check_window_id(id: &str) -> Result<(), Reject> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
    check(
        !id.is_empty()
            && id.len() <= MAX_WINDOW_ID_BYTES
            && id.chars().all(plain)
            && id != "."
            && id != "..",
        RejectReason::InvalidWindowId,
        || format!("window_id {id:?} must be 1..={MAX_WINDOW_ID_BYTES} of [A-Za-z0-9_.:-]"),
    )?;
    check(
        !schema::is_reserved_window_id(id),
        RejectReason::InvalidWindowId,
        || format!("window_id {id:?} would name a fixed key of the schema"),
    )
}

impl Validate for WindowedKeywordCount {
    fn validate(&mut self) -> Result<(), Reject> {
        self.normalized_keyword = check_keyword(&mut self.keyword)?;
        check_counts("count", self.count, self.unique_authors)?;
        check_window(&self.window_start, &self.window_end)?;
        // The default id is valid by construction.
        self.window_id.as_deref().map_or(Ok(()), check_window_id)
    }
}

/// What a `windows:{window_id}` hash holds per keyword, and what the read API returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowEntry {
    pub keyword: String,
    pub count: i64,
    pub unique_authors: i64,
    #[serde(with = "super::time")]
    pub window_start: DateTime<Utc>,
    #[serde(with = "super::time")]
    pub window_end: DateTime<Utc>,
}

/// The canonical texts of a window's start and end, formatted once for all its counts.
#[derive(Debug, Default)]
pub(crate) struct WindowTimes {
    start: LastFormatted,
    end: LastFormatted,
}

impl WindowEntry {
    /// Appends the JSON that serde_json writes for the entry (a test holds the two equal)
    /// to `out`. Written by hand because it is one field of every window count, at a
    /// tenth of the daemon's write CPU: serde_json escapes each of the five field names
    /// and formats both timestamps again for every entry, where only the keyword needs
    /// escaping and a window's counts share their timestamps.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>, times: &mut WindowTimes) {
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(br#"{"keyword":"#);
        serde_json::to_writer(&mut *out, &self.keyword).expect("a string always serializes");
        out.extend_from_slice(br#","count":"#);
        out.extend_from_slice(number.format(self.count).as_bytes());
        out.extend_from_slice(br#","unique_authors":"#);
        out.extend_from_slice(number.format(self.unique_authors).as_bytes());
        out.extend_from_slice(br#","window_start":""#);
        out.extend_from_slice(times.start.of(&self.window_start).as_bytes());
        out.extend_from_slice(br#"","window_end":""#);
        out.extend_from_slice(times.end.of(&self.window_end).as_bytes());
        out.extend_from_slice(br#""}"#);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn entry(
        keyword: String,
        count: i64,
        unique_authors: i64,
        start: i64,
        end: i64,
    ) -> WindowEntry {
        WindowEntry {
            keyword,
            count,
            unique_authors,
            window_start: Utc.timestamp_micros(start).unwrap(),
            window_end: Utc.timestamp_micros(end).unwrap(),
        }
    }

    proptest! {
        #[test]
        fn an_entry_written_by_hand_is_what_serde_json_writes(
            keywords in proptest::collection::vec(any::<String>(), 1..4),
            count in any::<i64>(),
            unique_authors in any::<i64>(),
            start in 0i64..7_258_118_400_000_000,
            length in 0i64..86_400_000_000,
        ) {
            // Several entries through one `WindowTimes`, as a window's are written.
            let mut times = WindowTimes::default();
            for keyword in keywords {
                let entry = entry(keyword, count, unique_authors, start, start + length);
                let mut out = Vec::new();
                entry.write_json(&mut out, &mut times);
                prop_assert_eq!(out, serde_json::to_vec(&entry).unwrap());
            }
        }
    }

    #[test]
    fn entries_of_other_windows_get_their_own_timestamps() {
        let mut times = WindowTimes::default();
        for (start, end) in [(0, 60_000_000), (60_000_000, 120_000_000), (0, 60_000_000)] {
            let entry = entry("rust \"quoted\"".into(), 3, 2, start, end);
            let mut out = Vec::new();
            entry.write_json(&mut out, &mut times);
            assert_eq!(out, serde_json::to_vec(&entry).unwrap());
        }
    }
}
