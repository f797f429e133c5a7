//! The errors of the Redis boundary, split by what the caller should do about them.
//!
//! The split follows what can end a failure. Redis's *state* (full, read-only, loading,
//! without a primary, an ACL that lacks a permission, an emptied script cache, a lost
//! connection) changes by itself or by an operator's hand, and then the same command
//! succeeds: the caller keeps its work and retries. A command refused for its *data* (a
//! key of another type, a script error caused by the arguments, a value over a limit) is
//! refused again however often it is sent: the caller sets that write aside.
//!
//! The Redis error is part of each message rather than a `source`, so that printing the
//! cause chain shows it once.

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// The Redis error codes that describe the server's state rather than the command.
const STATE_CODES: [&str; 15] = [
    "OOM",
    "READONLY",
    "LOADING",
    "MASTERDOWN",
    "NOPERM",
    "NOSCRIPT",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MOVED",
    "ASK",
    "NOREPLICAS",
    "MISCONF",
    "NOAUTH",
    "WRONGPASS",
];

/// Whether a Redis error code says the server's state refused the command, so that the
/// same command may succeed later; every other code is about the command's data.
pub(crate) fn is_state_code(code: &str) -> bool {
    STATE_CODES.contains(&code)
}

/// A Redis error from its text as Redis sends it (`CODE detail`): for an error that
/// reaches this crate inside a reply, as those a script reports for one of its keys.
pub(crate) fn server_error(text: &str) -> RedisError {
    let reply = format!("-{}\r\n", text.replace(['\r', '\n'], " "));
    match redis::parse_redis_value(reply.as_bytes()) {
        Ok(redis::Value::ServerError(e)) => e.into(),
        _ => (ErrorKind::Parse, "unreadable Redis error", text.to_owned()).into(),
    }
}

/// A write that Redis refused for its data, with Redis's own error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub key: Vec<u8>,
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis is unreachable, timed out, full, loading, read-only, lacks a permission or
    /// dropped the connection: retry the same work later, nothing about it is wrong.
    #[error("redis unavailable: {0}")]
    Unavailable(RedisError),
    /// Redis refused the command itself (a wrong type, a script error caused by the
    /// arguments): retrying the same command cannot succeed.
    #[error("redis rejected a command: {0}")]
    Rejected(RedisError),
    /// Redis refused some writes of a pipeline for their data; every other write of it
    /// was applied.
    #[error("redis refused {} write(s) for their data, the first to {:?}: {}", .0.len(), String::from_utf8_lossy(&.0[0].key), .0[0].error)]
    Refused(Vec<Refusal>),
    /// A pattern that could match keys outside this service's namespaces.
    #[error(
        "pattern {pattern:?} is outside the cache namespaces; it must start with one of {allowed}"
    )]
    ForeignPattern { pattern: String, allowed: String },
    /// A value read from Redis, or an argument, that does not have the expected form.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// The connection settings cannot work at all (a bad URL, say).
    #[error("invalid redis configuration: {0}")]
    Config(String),
}

impl CacheError {
    /// Whether the same call may succeed later. The daemon retries these forever, with
    /// backoff, and never drops the batch behind them.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// A short, stable label for metrics: `io`, `timeout`, `loading`, `readonly`, ...
    pub(crate) fn kind_label(&self) -> &'static str {
        match self {
            Self::Unavailable(e) | Self::Rejected(e) => redis_kind_label(e),
            Self::Refused(_) => "refused",
            Self::ForeignPattern { .. } => "foreign_pattern",
            Self::InvalidValue(_) => "invalid_value",
            Self::Config(_) => "config",
        }
    }
}

/// A result whose error is a [`CacheError`].
pub type Result<T, E = CacheError> = std::result::Result<T, E>;

/// Every label [`CacheError::kind_label`] gives a Redis error, for metrics that start at 0.
pub(crate) const REDIS_ERROR_KINDS: [&str; 13] = [
    "timeout",
    "oom",
    "busy",
    "misconf",
    "wrongtype",
    "io",
    "loading",
    "readonly",
    "noscript",
    "noperm",
    "cluster",
    "auth",
    "other",
];

fn redis_kind_label(e: &RedisError) -> &'static str {
    if e.is_timeout() {
        return "timeout";
    }
    match e.code() {
        Some("OOM") => return "oom",
        Some("BUSY") => return "busy",
        Some("MISCONF") => return "misconf",
        Some("WRONGTYPE") => return "wrongtype",
        _ => {}
    }
    match e.kind() {
        ErrorKind::Io => "io",
        ErrorKind::Server(ServerErrorKind::BusyLoading) => "loading",
        ErrorKind::Server(ServerErrorKind::ReadOnly) => "readonly",
        ErrorKind::Server(ServerErrorKind::NoScript) => "noscript",
        ErrorKind::Server(ServerErrorKind::NoPerm) => "noperm",
        ErrorKind::Server(ServerErrorKind::TryAgain)
        | ErrorKind::Server(ServerErrorKind::ClusterDown)
        | ErrorKind::Server(ServerErrorKind::MasterDown)
        | ErrorKind::Server(ServerErrorKind::Moved)
        | ErrorKind::Server(ServerErrorKind::Ask)
        | ErrorKind::ClusterConnectionNotFound => "cluster",
        ErrorKind::AuthenticationFailed => "auth",
        _ => "other",
    }
}

impl From<RedisError> for CacheError {
    fn from(e: RedisError) -> Self {
        let transient = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || matches!(
                e.kind(),
                ErrorKind::ClusterConnectionNotFound | ErrorKind::AuthenticationFailed
            )
            || e.code().is_some_and(is_state_code);
        if transient {
            Self::Unavailable(e)
        } else {
            Self::Rejected(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str, detail: &str) -> CacheError {
        let e = server_error(&format!("{code} {detail}"));
        assert_eq!(e.code(), Some(code));
        e.into()
    }

    #[test]
    fn redis_state_is_retried_and_data_is_refused() {
        for code in STATE_CODES {
            let e = error(code, "state");
            assert!(e.is_retryable(), "{code}: {e}");
        }
        for code in ["WRONGTYPE", "ERR"] {
            let e = error(code, "data");
            assert!(!e.is_retryable(), "{code}: {e}");
        }
        assert_eq!(error("OOM", "full").kind_label(), "oom");
        assert_eq!(error("WRONGTYPE", "x").kind_label(), "wrongtype");
        for code in STATE_CODES.iter().chain(&["WRONGTYPE", "ERR", "SOMETHING"]) {
            let label = error(code, "x").kind_label();
            assert!(REDIS_ERROR_KINDS.contains(&label), "{code}: {label}");
        }
    }
}
