//! Timestamps: accepted as RFC 3339 or as the naive ISO form that Python's
//! `datetime.utcnow().isoformat()` produces (taken as UTC), stored in one canonical form.
//!
//! The canonical form has a fixed width (`2024-01-01T12:00:00.123456Z`), so that comparing
//! two stored timestamps as strings, as the Redis scripts do, compares them as times.

use chrono::{DateTime, Datelike, NaiveDateTime, SubsecRound, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// The marker that lets the decoder tell a bad timestamp from other shape errors.
pub(crate) const INVALID_TIMESTAMP: &str = "invalid timestamp";

/// Earliest and latest accepted instants. The upper bound keeps `window_end` scores exact
/// in a Redis sorted-set double (see `schema::trend_score`).
const MIN_UNIX: i64 = 0;
const MAX_UNIX: i64 = 7_258_118_400; // 2200-01-01T00:00:00Z

/// Parses a timestamp, truncated to microseconds.
pub fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let parsed = DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
                .map(|naive| naive.and_utc())
        })
        .map_err(|_| format!("{INVALID_TIMESTAMP} {text:?}: expected RFC 3339"))?;
    if !(MIN_UNIX..MAX_UNIX).contains(&parsed.timestamp()) {
        return Err(format!("{INVALID_TIMESTAMP} {text:?}: outside 1970..2200"));
    }
    Ok(parsed.trunc_subsecs(6))
}

/// The canonical, fixed-width, string-comparable form, `2024-01-01T12:00:00.123456Z`.
///
/// Written field by field: chrono's `format` parses its format string on every call,
/// which showed up at 8% of the daemon's CPU profile.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(27);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_micros().min(999_999)
    );
    out
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    parse_timestamp(&text).map_err(serde::de::Error::custom)
}

pub(crate) fn deserialize_opt<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    match Option::<std::borrow::Cow<'de, str>>::deserialize(d)? {
        Some(text) => parse_timestamp(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_timestamp(t))
}

pub(crate) fn serialize_opt<S: Serializer>(
    t: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => serialize(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_python_isoformat_is_utc() {
        let t = parse_timestamp("2024-01-01T12:00:00.123456").unwrap();
        assert_eq!(format_timestamp(&t), "2024-01-01T12:00:00.123456Z");
    }

    #[test]
    fn offsets_are_converted_to_utc_and_nanos_truncated() {
        let t = parse_timestamp("2024-01-01T14:00:00.123456789+02:00").unwrap();
        assert_eq!(format_timestamp(&t), "2024-01-01T12:00:00.123456Z");
    }

    #[test]
    fn canonical_form_orders_as_text() {
        let a = format_timestamp(&parse_timestamp("2024-01-01T09:59:59.9Z").unwrap());
        let b = format_timestamp(&parse_timestamp("2024-01-01T10:00:00Z").unwrap());
        assert!(a < b, "{a} < {b}");
    }

    #[test]
    fn garbage_and_out_of_range_are_rejected() {
        for text in [
            "yesterday",
            "2024-13-01T00:00:00",
            "1969-12-31T23:59:59Z",
            "2300-01-01T00:00:00Z",
        ] {
            let err = parse_timestamp(text).unwrap_err();
            assert!(err.starts_with(INVALID_TIMESTAMP), "{err}");
        }
    }
}
