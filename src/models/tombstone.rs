//! Tombstones: records with a key and a null value, which delete what their key names,
//! as Kafka Connect's sinks take them.

use super::validate::{check_keyword, MessageKind, Reject, RejectReason, ValidationError};
use super::window::check_window_id;

/// A record with a null value, which deletes what its key names, as Kafka Connect's sinks
/// take a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tombstone {
    /// A trend's detail and its ranking entry, by its keyword (normalised).
    Trend(String),
    /// A window's hash and its index entry, by its window id.
    Window(String),
}

/// Reads a tombstone's key: a keyword on the trends' topic, a window id on the windows'.
/// User metrics are one snapshot with no key to name, so a tombstone there is refused.
pub fn decode_tombstone(
    kind: MessageKind,
    key: Option<&[u8]>,
) -> Result<Tombstone, ValidationError> {
    let rejected = |(reason, detail): Reject| ValidationError::new(reason, detail);
    let Some(key) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
        return Err(ValidationError::new(
            RejectReason::WrongShape,
            "a tombstone (a null value) needs a UTF-8 key naming what to delete",
        ));
    };
    match kind {
        MessageKind::Trends => {
            let mut keyword = key.to_owned();
            check_keyword(&mut keyword)
                .map(Tombstone::Trend)
                .map_err(rejected)
        }
        MessageKind::Windows => check_window_id(key)
            .map(|()| Tombstone::Window(key.to_owned()))
            .map_err(rejected),
        MessageKind::UserMetrics => Err(ValidationError::new(
            RejectReason::WrongShape,
            "a tombstone (a null value) on the user metrics names nothing to delete: they are one snapshot",
        )),
    }
}
