//! The errors of the Redis boundary, split by what the caller should do about them.
//!
//! The Redis error is part of each message rather than a `source`, so that printing the
//! cause chain shows it once.

use redis::{ErrorKind, RedisError, ServerErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis is unreachable, timed out, loading, read-only or dropped the connection:
    /// retry the same work later, nothing about it is wrong.
    #[error("redis unavailable: {0}")]
    Unavailable(RedisError),
    /// Redis refused the command itself (a wrong type, a script error, a denied ACL):
    /// retrying the same command cannot succeed.
    #[error("redis rejected a command: {0}")]
    Rejected(RedisError),
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
    pub fn kind_label(&self) -> &'static str {
        match self {
            Self::Unavailable(e) | Self::Rejected(e) => redis_kind_label(e),
            Self::ForeignPattern { .. } => "foreign_pattern",
            Self::InvalidValue(_) => "invalid_value",
            Self::Config(_) => "config",
        }
    }
}

fn redis_kind_label(e: &RedisError) -> &'static str {
    if e.is_timeout() {
        return "timeout";
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
                ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::Moved
                        | ServerErrorKind::Ask
                        | ServerErrorKind::NoScript
                ) | ErrorKind::ClusterConnectionNotFound
                    | ErrorKind::AuthenticationFailed
            );
        if transient {
            Self::Unavailable(e)
        } else {
            Self::Rejected(e)
        }
    }
}
