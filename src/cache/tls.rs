//! TLS to Redis: the `redis.tls_*` certificates, read from their files, for a server, a
//! cluster and the sentinels alike.

use super::error::{CacheError, Result};
use crate::config::RedisConfig;

/// The CA and the client certificate of `redis.tls_*`, read from their files; `None` when
/// none is set (TLS, if the URL asks for it, then trusts the system's roots).
pub(super) fn certificates(config: &RedisConfig) -> Result<Option<redis::TlsCertificates>> {
    let read = |path: &Option<std::path::PathBuf>| -> Result<Option<Vec<u8>>> {
        path.as_ref()
            .map(|p| {
                std::fs::read(p)
                    .map_err(|e| CacheError::Config(format!("cannot read {}: {e}", p.display())))
            })
            .transpose()
    };
    let root_cert = read(&config.tls_ca_file)?;
    let client_tls = match (read(&config.tls_cert_file)?, read(&config.tls_key_file)?) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    if root_cert.is_none() && client_tls.is_none() {
        return Ok(None);
    }
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// A client for the URL: plain, TLS with the system's roots, or TLS with the configured
/// CA and client certificate.
pub(super) fn client(config: &RedisConfig, url: &str) -> Result<redis::Client> {
    let bad = |e: redis::RedisError| CacheError::Config(e.to_string());
    match certificates(config)? {
        None => redis::Client::open(url).map_err(bad),
        Some(certificates) => redis::Client::build_with_tls(url, certificates).map_err(bad),
    }
}
