//! The Redis key schema: the contract that dashboards and APIs read.
//!
//! | key | type | TTL |
//! |---|---|---|
//! | `{p}trends:keyword:{keyword}` | string, JSON of the `TrendAlert` | trends |
//! | `{p}trends:current` | sorted set of keywords, see [`trend_score`] | trends, refreshed |
//! | `{p}trends:last_update` | string, RFC 3339 | trends |
//! | `{p}users:metrics` | string, JSON of the `UserMetrics` | users |
//! | `{p}users:active` | sorted set, user id by last-seen unix seconds | users, refreshed |
//! | `{p}users:last_update` | string, RFC 3339 | users |
//! | `{p}windows:{window_id}` | hash, normalised keyword to JSON | windows |
//! | `{p}windows:index` | sorted set, window id by `window_end` unix seconds | windows, refreshed |
//!
//! Keys are built by concatenation only. A keyword is data: no key built here is ever
//! used as a pattern, and the patterns this module builds escape the prefix.

use chrono::{DateTime, Utc};

use crate::models::{format_timestamp, normalize_keyword, MAX_RANK};

/// The three namespaces, which are also the categories of the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Category {
    Trends,
    Users,
    Windows,
}

impl Category {
    pub(crate) const ALL: [Category; 3] = [Self::Trends, Self::Users, Self::Windows];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Trends => "trends",
            Self::Users => "users",
            Self::Windows => "windows",
        }
    }
}

/// The fixed keys of the `windows:` namespace, by their suffix. A window id is data that
/// becomes the suffix of `windows:{window_id}`, so it must never be one of these.
pub(crate) const FIXED_WINDOW_SUFFIXES: [&str; 1] = ["index"];

/// Whether a window id would name a fixed key of the schema.
pub(crate) fn is_reserved_window_id(id: &str) -> bool {
    FIXED_WINDOW_SUFFIXES.contains(&id)
}

/// Builds every key of the schema under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The detail key of a keyword, normalising it first.
    pub(crate) fn trend(&self, keyword: &str) -> String {
        self.trend_normalized(&normalize_keyword(keyword))
    }

    /// The detail key of an already normalised keyword (a `trends:current` member).
    pub fn trend_normalized(&self, normalized: &str) -> String {
        format!("{}trends:keyword:{normalized}", self.prefix)
    }

    pub fn trends_current(&self) -> String {
        format!("{}trends:current", self.prefix)
    }

    pub(crate) fn trends_last_update(&self) -> String {
        format!("{}trends:last_update", self.prefix)
    }

    pub fn users_metrics(&self) -> String {
        format!("{}users:metrics", self.prefix)
    }

    pub fn users_active(&self) -> String {
        format!("{}users:active", self.prefix)
    }

    pub(crate) fn users_last_update(&self) -> String {
        format!("{}users:last_update", self.prefix)
    }

    pub fn window(&self, window_id: &str) -> String {
        format!("{}windows:{window_id}", self.prefix)
    }

    pub fn windows_index(&self) -> String {
        format!("{}windows:index", self.prefix)
    }

    /// Every key of the schema whose name is fixed, not built from message data.
    #[cfg(test)]
    fn fixed(&self) -> [String; 6] {
        [
            self.trends_current(),
            self.trends_last_update(),
            self.users_metrics(),
            self.users_active(),
            self.users_last_update(),
            self.windows_index(),
        ]
    }

    /// A coordination lock between instances, outside the data namespaces.
    pub(crate) fn lock(&self, name: &str) -> String {
        format!("{}locks:{name}", self.prefix)
    }

    /// The marker of a consumer group, by which its instances find that Redis lost its data
    /// (`cache::Marker`), outside the data namespaces.
    pub(crate) fn marker(&self, group: &str) -> String {
        format!("{}markers:{group}", self.prefix)
    }

    /// The hash of the rebuilds asked for, partition to the time to replay from.
    pub(crate) fn rebuild_requests(&self) -> String {
        format!("{}rebuild:requests", self.prefix)
    }

    /// The literal start of every key in a namespace: `{p}trends:`.
    pub(crate) fn namespace(&self, category: Category) -> String {
        format!("{}{}:", self.prefix, category.as_str())
    }

    /// A SCAN pattern matching exactly the keys of one namespace.
    pub(crate) fn namespace_pattern(&self, category: Category) -> String {
        format!("{}*", escape_glob(&self.namespace(category)))
    }

    /// Whether a SCAN pattern can only match keys inside the service's namespaces: its
    /// literal start, before any glob syntax, must begin with one namespace.
    pub(crate) fn owns_pattern(&self, pattern: &str) -> bool {
        let literal = literal_prefix(pattern);
        Category::ALL
            .iter()
            .any(|c| literal.starts_with(&self.namespace(*c)))
    }
}

/// Escapes Redis glob syntax (`* ? [ ] \`) so that the text matches only itself.
pub(crate) fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The text a glob pattern matches literally before its first wildcard, unescaped.
fn literal_prefix(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' | '[' => break,
            '\\' => match chars.next() {
                Some(escaped) => out.push(escaped),
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

/// The `trends:current` score of an alert: newest window first, then rank ascending, so
/// one `ZRANGE 0 N` returns the current ranking.
///
/// `score = rank - window_end_secs * 1_000_000`. With `1 <= rank <= 999_999` and
/// `window_end` before 2200 the magnitude stays below 2^53, so the double is exact and
/// [`window_of_score`] (mirrored in the Lua script) recovers the window.
pub fn trend_score(window_end: &DateTime<Utc>, rank: i64) -> f64 {
    debug_assert!((1..=MAX_RANK).contains(&rank));
    (rank - window_end.timestamp() * 1_000_000) as f64
}

/// The version of a trend alert that its detail key and its ranking both compare: its
/// `window_end` to the second (`YYYY-MM-DDTHH:MM:SS`), because that is what a
/// [`trend_score`] holds. Within one second the later write wins in both places.
pub(crate) fn trend_version(window_end: &DateTime<Utc>) -> String {
    let mut version = format_timestamp(window_end);
    version.truncate(TREND_VERSION_LEN);
    version
}

/// `YYYY-MM-DDTHH:MM:SS`.
const TREND_VERSION_LEN: usize = 19;

/// The `window_end` seconds encoded in a [`trend_score`].
#[cfg(test)]
pub(crate) fn window_of_score(score: f64) -> i64 {
    ((-score + MAX_RANK as f64) / 1_000_000.0).floor() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::parse_timestamp;

    #[test]
    fn keys_normalise_keywords_and_keep_glob_characters() {
        let keys = Keys::new("bsky:");
        assert_eq!(keys.trend(" Python "), "bsky:trends:keyword:python");
        assert_eq!(keys.trend("K8s*"), "bsky:trends:keyword:k8s*");
        assert_eq!(keys.trend("🚀 Launch"), "bsky:trends:keyword:🚀 launch");
        assert_eq!(
            keys.window("window_2024_01_01_12_00"),
            "bsky:windows:window_2024_01_01_12_00"
        );
    }

    #[test]
    fn no_key_built_from_message_data_can_name_a_fixed_key() {
        use crate::models::{decode, MessageKind, RejectReason};
        for prefix in ["", "bsky:"] {
            let keys = Keys::new(prefix);
            for fixed in keys.fixed() {
                // A window id is the suffix of `{p}windows:{id}`.
                if let Some(id) = fixed.strip_prefix(&keys.window("")) {
                    let json = format!(
                        r#"{{"keyword":"k","count":1,"unique_authors":1,"window_id":"{id}",
                        "window_start":"2024-01-01T12:00:00Z","window_end":"2024-01-01T12:01:00Z"}}"#
                    );
                    let refused = decode(MessageKind::Windows, json.as_bytes()).unwrap_err();
                    assert_eq!(refused.reason, RejectReason::InvalidWindowId, "{fixed}");
                }
                // A keyword is the suffix of `{p}trends:keyword:{keyword}`, which no fixed
                // key starts with, whatever the keyword.
                assert!(!fixed.starts_with(&keys.trend_normalized("")), "{fixed}");
                for keyword in ["current", "last_update", "index", ":current", "../current"] {
                    assert_ne!(keys.trend(keyword), fixed);
                }
            }
        }
    }

    #[test]
    fn a_trend_version_is_its_window_end_to_the_second() {
        let end = parse_timestamp("2024-01-01T12:00:00.900Z").unwrap();
        assert_eq!(trend_version(&end), "2024-01-01T12:00:00");
        assert_eq!(window_of_score(trend_score(&end, 7)), end.timestamp());
    }

    #[test]
    fn namespace_patterns_escape_the_prefix() {
        let keys = Keys::new("a*[b]:");
        assert_eq!(
            keys.namespace_pattern(Category::Users),
            "a\\*\\[b\\]:users:*"
        );
    }

    #[test]
    fn only_patterns_inside_a_namespace_are_owned() {
        let keys = Keys::new("");
        for owned in [
            "trends:*",
            "users:active",
            "windows:window_2024*",
            "trends:keyword:k8s\\*",
        ] {
            assert!(keys.owns_pattern(owned), "{owned}");
        }
        for foreign in [
            "*",
            "trend*",
            "t[r]ends:*",
            "other:trends:*",
            "?rends:*",
            "\\",
        ] {
            assert!(!keys.owns_pattern(foreign), "{foreign}");
        }
        let prefixed = Keys::new("bsky:");
        assert!(prefixed.owns_pattern("bsky:trends:*"));
        assert!(!prefixed.owns_pattern("trends:*"));
        assert!(!prefixed.owns_pattern("bsky:*"));
    }

    #[test]
    fn trend_score_orders_newest_window_then_rank() {
        let older = parse_timestamp("2024-01-01T12:00:00Z").unwrap();
        let newer = parse_timestamp("2024-01-01T12:01:00Z").unwrap();
        let mut scores = [
            (trend_score(&older, 1), "old#1"),
            (trend_score(&newer, 2), "new#2"),
            (trend_score(&newer, 1), "new#1"),
            (trend_score(&older, 999_999), "old#max"),
        ];
        scores.sort_by(|a, b| a.0.total_cmp(&b.0));
        let order: Vec<_> = scores.iter().map(|s| s.1).collect();
        assert_eq!(order, ["new#1", "new#2", "old#1", "old#max"]);
        for rank in [1, 500, 999_999] {
            assert_eq!(
                window_of_score(trend_score(&newer, rank)),
                newer.timestamp()
            );
        }
        let far = parse_timestamp("2199-12-31T23:59:59Z").unwrap();
        assert_eq!(window_of_score(trend_score(&far, 999_999)), far.timestamp());
    }
}
