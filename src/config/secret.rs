//! How secrets print: masked, whatever the output (`Debug`, TOML, JSON), so that a
//! configuration dump or a log line can never carry one.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

/// What a secret prints as.
pub(crate) const REDACTED: &str = "[REDACTED]";

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

/// A secret from any scalar: the environment and TOML may spell a password `12345678` or
/// `true`, and it is still a password. Nothing else is accepted, and the error says what
/// was expected without repeating the value.
pub(super) fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    d.deserialize_any(SecretVisitor)
}

pub(super) fn secret_option<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SecretString>, D::Error> {
    secret(d).map(Some)
}

struct SecretVisitor;

impl Visitor<'_> for SecretVisitor {
    type Value = SecretString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret (text, a number or a boolean)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretString, E> {
        Ok(SecretString::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<SecretString, E> {
        Ok(SecretString::from(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<SecretString, E> {
        Ok(SecretString::from(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<SecretString, E> {
        Ok(SecretString::from(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<SecretString, E> {
        Ok(SecretString::from(v.to_string()))
    }
}
