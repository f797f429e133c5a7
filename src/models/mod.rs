//! The messages that the upstream pipeline publishes, and their validation.
//!
//! Every type here is valid by construction once [`decode`] returned it: keywords are
//! non-empty and bounded, numbers finite and in range, windows ordered, timestamps in UTC
//! and truncated to microseconds (the precision they are stored with). The Redis writer
//! relies on that and never re-checks.

mod keyword;
mod time;
pub(crate) mod trend;
mod user;
mod validate;
mod window;

pub use keyword::{normalize_keyword, MAX_KEYWORD_BYTES};
pub use time::{format_timestamp, parse_timestamp};
pub use trend::{TrendAlert, MAX_RANK};
pub use user::{Contributor, UserMetrics};
pub use validate::{decode, Message, MessageKind, RejectReason, ValidationError};
pub(crate) use window::check_window_id;
pub use window::{default_window_id, WindowEntry, WindowedKeywordCount};
