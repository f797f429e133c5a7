//! The messages that the upstream pipeline publishes, and their validation.
//!
//! Every type here is valid by construction once [`decode`] returned it: keywords are
//! non-empty and bounded, numbers finite and in range, windows ordered, timestamps in UTC
//! and truncated to microseconds (the precision they are stored with). The Redis writer
//! relies on that and never re-checks.

mod keyword;
mod time;
mod tombstone;
pub(crate) mod trend;
mod user;
mod validate;
mod window;

pub use keyword::{normalize_keyword, MAX_KEYWORD_BYTES};
pub(crate) use time::format_timestamp;
#[cfg(test)]
pub(crate) use time::parse_timestamp;
pub use tombstone::{decode_tombstone, Tombstone};
pub use trend::{TrendAlert, MAX_RANK};
pub use user::{Contributor, UserMetrics};
pub(crate) use validate::ValidationError;
pub use validate::{decode, Items, Message, MessageKind, RejectReason};
pub(crate) use window::WindowEntry;
pub use window::WindowedKeywordCount;
pub(crate) use window::{check_window_id, DefaultWindowId, WindowTimes};
