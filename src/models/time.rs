//! Timestamps: accepted as RFC 3339 or as the naive ISO form that Python's
//! `datetime.utcnow().isoformat()` produces (taken as UTC), stored in one canonical form.
//!
//! The canonical form has a fixed width (`2024-01-01T12:00:00.123456Z`), so that comparing
//! two stored timestamps as strings, as the Redis scripts do, compares them as times.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SubsecRound, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// The marker that lets the decoder tell a bad timestamp from other shape errors.
pub(crate) const INVALID_TIMESTAMP: &str = "invalid timestamp";

/// Earliest and latest accepted instants. The upper bound keeps `window_end` scores exact
/// in a Redis sorted-set double (see `schema::trend_score`).
const MIN_UNIX: i64 = 0;
const MAX_UNIX: i64 = 7_258_118_400; // 2200-01-01T00:00:00Z

/// Parses a timestamp, truncated to microseconds.
pub(crate) fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let parsed = match parse_utc_fast(text.as_bytes()) {
        Some(parsed) => parsed,
        None => DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| {
                NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
                    .map(|naive| naive.and_utc())
            })
            .map_err(|_| format!("{INVALID_TIMESTAMP} {text:?}: expected RFC 3339"))?
            .trunc_subsecs(6),
    };
    if !(MIN_UNIX..MAX_UNIX).contains(&parsed.timestamp()) {
        return Err(format!("{INVALID_TIMESTAMP} {text:?}: outside 1970..2200"));
    }
    Ok(parsed)
}

/// The common forms in UTC, `2024-01-01T12:00:00`, with or without a fraction and with
/// `Z`, `+00:00` or nothing after, read without chrono's general parsers: they were 10%
/// of the consume loop's CPU, two timestamps in every window count. Anything else
/// (another offset, a space for the `T`, a leap second, an impossible date) returns
/// `None` and takes the general path, which decides and words the error.
fn parse_utc_fast(text: &[u8]) -> Option<DateTime<Utc>> {
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        text.get(range)?.iter().try_fold(0u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if !separators.iter().all(|&(at, b)| text.get(at) == Some(&b)) {
        return None;
    }
    let mut rest = text.get(19..)?;
    let mut micros = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        micros = fraction[..digits]
            .iter()
            .chain(std::iter::repeat(&b'0'))
            .take(6)
            .fold(0, |n, &b| n * 10 + u32::from(b - b'0'));
        rest = &fraction[digits..];
    }
    if !matches!(rest, b"" | b"Z" | b"+00:00") {
        return None;
    }
    let second = number(17..19)?;
    if second > 59 {
        return None;
    }
    NaiveDate::from_ymd_opt(number(0..4)? as i32, number(5..7)?, number(8..10)?)?
        .and_hms_micro_opt(number(11..13)?, number(14..16)?, second, micros)
        .map(|naive| naive.and_utc())
}

/// The canonical, fixed-width, string-comparable form, `2024-01-01T12:00:00.123456Z`.
///
/// Written digit by digit: chrono's `format` parses its format string on every call,
/// which showed up at 8% of the daemon's CPU profile, and `write!` was most of the rest.
pub(crate) fn format_timestamp(t: &DateTime<Utc>) -> String {
    // The fields of a `DateTime<Utc>` each add its (zero) offset first; these do not.
    let t = t.naive_utc();
    let mut out = String::with_capacity(27);
    // Accepted timestamps are within 1970..2200 (`parse_timestamp`), four digits.
    push_digits(&mut out, t.year().clamp(0, 9999) as u32, 4);
    let fields = [
        ('-', t.month()),
        ('-', t.day()),
        ('T', t.hour()),
        (':', t.minute()),
        (':', t.second()),
    ];
    for (separator, value) in fields {
        out.push(separator);
        push_digits(&mut out, value, 2);
    }
    out.push('.');
    push_digits(&mut out, (t.nanosecond() / 1_000).min(999_999), 6);
    out.push('Z');
    out
}

/// The canonical text of the timestamp formatted last, kept for the next one: the counts
/// of one window share their start and their end.
#[derive(Debug, Default)]
pub(crate) struct LastFormatted(Option<(DateTime<Utc>, String)>);

impl LastFormatted {
    pub(crate) fn of(&mut self, t: &DateTime<Utc>) -> &str {
        if !matches!(&self.0, Some((last, _)) if last == t) {
            self.0 = Some((*t, format_timestamp(t)));
        }
        self.0.as_ref().map_or("", |(_, text)| text)
    }
}

/// Appends the last `width` decimal digits of `value`, zero-padded.
pub(crate) fn push_digits(out: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        out.push(char::from(b'0' + (value / 10u32.pow(place) % 10) as u8));
    }
}

/// Writes the last `out.len()` decimal digits of `value` into `out`, zero-padded.
pub(crate) fn put_digits(out: &mut [u8], mut value: u32) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Parses a timestamp straight from the string the deserializer holds, borrowed or
/// transient: no copy of it is made (a `Cow<str>` field would be an owned `String` unless
/// borrowed, two allocations in every window count).
struct TimestampVisitor;

impl serde::de::Visitor<'_> for TimestampVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an RFC 3339 timestamp")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        parse_timestamp(text).map_err(E::custom)
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    d.deserialize_str(TimestampVisitor)
}

pub(crate) fn deserialize_opt<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    /// `Option<T>` through a newtype, so that `null` is `None` and a string is parsed in
    /// place.
    struct Timestamp(DateTime<Utc>);

    impl<'de> Deserialize<'de> for Timestamp {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize(d).map(Timestamp)
        }
    }

    Ok(Option::<Timestamp>::deserialize(d)?.map(|t| t.0))
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

    /// The general path alone, as `parse_timestamp` was before it had a fast one.
    fn parse_general(text: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| {
                NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc())
            })
            .map(|t| t.trunc_subsecs(6))
            .ok()
    }

    #[test]
    fn the_fast_path_reads_what_the_general_one_reads_and_leaves_the_rest_to_it() {
        let mut texts = Vec::new();
        for date in [
            "2024-01-01",
            "2024-02-29",
            "2023-02-29",
            "1999-12-31",
            "2024-13-01",
        ] {
            for time in ["00:00:00", "12:34:56", "23:59:59", "24:00:00", "12:60:00"] {
                for fraction in ["", ".1", ".123456", ".1234567", ".123456789", ".", ".x"] {
                    for end in ["", "Z", "+00:00", "+02:00", "-00:00", "z", " "] {
                        texts.push(format!("{date}T{time}{fraction}{end}"));
                    }
                }
            }
        }
        texts.extend(
            [
                "2024-01-01 12:00:00",
                "2024-1-01T12:00:00Z",
                "20240101T120000Z",
            ]
            .map(String::from),
        );
        let mut fast = 0;
        for text in &texts {
            if let Some(parsed) = parse_utc_fast(text.as_bytes()) {
                fast += 1;
                assert_eq!(Some(parsed), parse_general(text), "{text}");
            }
        }
        // Every one with a valid date, time and fraction, and a UTC ending, went fast:
        // 3 dates, 3 times, 5 fractions, 3 endings.
        assert_eq!(fast, 3 * 3 * 5 * 3);
        assert_eq!(
            format_timestamp(&parse_timestamp("2024-02-29T23:59:59.9999999Z").unwrap()),
            "2024-02-29T23:59:59.999999Z"
        );
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
