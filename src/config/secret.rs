//! How secrets print: masked, whatever the output (`Debug`, TOML, JSON), so that a
//! configuration dump or a log line can never carry one.

use secrecy::{ExposeSecret, SecretString};
use serde::Serializer;

/// What a secret prints as.
pub const REDACTED: &str = "[REDACTED]";

/// A secret as [`REDACTED`]; an empty one as empty, so that "not set" stays visible.
pub(super) fn redact<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    if secret.expose_secret().is_empty() {
        s.serialize_str("")
    } else {
        s.serialize_str(REDACTED)
    }
}

pub(super) fn redact_option<S: Serializer>(
    secret: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => redact(secret, s),
        None => s.serialize_none(),
    }
}

/// A URL with its password masked; an unparsable one is masked whole.
pub(super) fn redact_url<S: Serializer>(
    url: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let Some(url) = url else {
        return s.serialize_none();
    };
    match url::Url::parse(url.expose_secret()) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some(REDACTED));
            }
            s.serialize_str(parsed.as_str())
        }
        Err(_) => s.serialize_str(REDACTED),
    }
}
