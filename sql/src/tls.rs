//! TLS on the wire protocol: the acceptor built from `pg.tls.cert` and `pg.tls.key`
//! (PEM files), read once at startup so a bad file stops the server before it opens.
use std::io;
use std::sync::Arc;

use engine::TlsFiles;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;

/// ALPN name PostgreSQL 17 clients send for direct TLS (`sslnegotiation=direct`).
const POSTGRESQL_ALPN: &[u8] = b"postgresql";

fn invalid(key: &str, reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("invalid {key}: {reason}"))
}

/// The TLS acceptor for `files`; errors name the key and file that is wrong.
pub fn acceptor(files: &TlsFiles) -> io::Result<TlsAcceptor> {
    let cert_path = files.cert.display();
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            invalid(
                "pg.tls.cert",
                format!("cannot read a PEM certificate chain from {cert_path}: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(invalid("pg.tls.cert", format!("{cert_path} holds no PEM certificate")));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        invalid(
            "pg.tls.key",
            format!("cannot read a PEM private key from {}: {e}", files.key.display()),
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("pg.tls.cert", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            invalid(
                "pg.tls.key",
                format!("does not fit the certificate in {cert_path}: {e}"),
            )
        })?;
    config.alpn_protocols = vec![POSTGRESQL_ALPN.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
