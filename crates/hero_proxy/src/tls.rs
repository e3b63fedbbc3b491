//! Optional TLS termination on the public listener: when `tls_cert` and `tls_key` are both configured, every
//! accepted connection is wrapped in a rustls server session (ring provider, ALPN `http/1.1`) inside the worker that
//! accepted it. Otherwise the listener is plain HTTP and TLS is terminated in front (the grid gateway).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::error::{ProxyError, Result};

fn file_err(what: &str, path: &Path, e: impl std::fmt::Display) -> ProxyError {
    ProxyError::Config(format!("{what} {}: {e}", path.display()))
}

/// Builds the acceptor from the configuration: `None` for plain HTTP, an error naming the file when only one of
/// the two paths is set or a file is unreadable or invalid.
pub fn acceptor(cfg: &Config) -> Result<Option<TlsAcceptor>> {
    let (cert, key) = match (&cfg.tls_cert, &cfg.tls_key) {
        (None, None) => return Ok(None),
        (Some(c), None) => {
            return Err(ProxyError::Config(format!(
                "tls_cert is set ({}) but tls_key is not: set both or neither",
                c.display()
            )))
        }
        (None, Some(k)) => {
            return Err(ProxyError::Config(format!(
                "tls_key is set ({}) but tls_cert is not: set both or neither",
                k.display()
            )))
        }
        (Some(c), Some(k)) => (c, k),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err("tls_cert", cert, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| file_err("tls_cert", cert, e))?;
    if certs.is_empty() {
        return Err(file_err("tls_cert", cert, "no PEM certificate found"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err("tls_key", key, e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut sc = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            ProxyError::Config(format!(
                "tls_cert {} / tls_key {}: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(sc))))
}
