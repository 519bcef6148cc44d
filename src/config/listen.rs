//! The `tls` blocks of the three listeners. A TLS block's PEM files are read and turned into a rustls config here, so `check` refuses an unreadable file, a
//! key that does not match its certificate, or a client CA file without a usable CA; a reload reads them
//! again (certificate rotation). Messages name the file and the reason, never a key's content.

use super::model::ListenerTls;
use super::raw::{RawListenerTls, Scalar};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Certificate and key files are read only up to this size.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// One listener's `tls` block at `path` (`server.tls`...): the files read and checked, or the problem, as the
/// key path of the field to fix and a message.
pub(super) fn load(path: &str, raw: &RawListenerTls, base_dir: &Path) -> Result<ListenerTls, (String, String)> {
    let file = |name: &str, scalar: &Scalar| match scalar.0.trim() {
        "" => Err((format!("{path}.{name}"), "must not be empty".to_owned())),
        written => Ok(base_dir.join(written)),
    };
    let cert_file = file("cert_file", &raw.cert_file)?;
    let key_file = file("key_file", &raw.key_file)?;
    let client_ca_file = raw.client_ca_file.as_ref().map(|s| file("client_ca_file", s)).transpose()?;
    match server_config(&cert_file, &key_file, client_ca_file.as_deref()) {
        Ok(server_config) => Ok(ListenerTls { cert_file, key_file, client_ca_file, server_config }),
        Err((field, message)) => Err((format!("{path}.{field}"), message)),
    }
}

fn read(path: &Path) -> Result<String, String> {
    crate::files::read_text(path, MAX_PEM_BYTES).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = read(path)?;
    let certificates: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{} is not PEM certificates", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)", path.display()));
    }
    Ok(certificates)
}

/// The rustls config of a listener: HTTP/1.1 over TLS 1.2 or 1.3, ring's algorithms, the client CA's
/// verifier when there is one. Errors say which field to fix.
fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, (&'static str, String)> {
    let chain = certificates(cert_file).map_err(|e| ("cert_file", e))?;
    let key_text = read(key_file).map_err(|e| ("key_file", e))?;
    let key = PrivateKeyDer::from_pem_slice(key_text.as_bytes()).map_err(|_| {
        ("key_file", format!("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", key_file.display()))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("cert_file", format!("TLS: {e}")))?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            let (_, rejected) =
                roots.add_parsable_certificates(certificates(ca_file).map_err(|e| ("client_ca_file", e))?);
            if rejected > 0 || roots.is_empty() {
                return Err((
                    "client_ca_file",
                    format!("{}: a certificate cannot serve as a trust anchor", ca_file.display()),
                ));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ("client_ca_file", format!("{}: {e}", ca_file.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            ("key_file", format!("{} is not the key of the certificate in {}", key_file.display(), cert_file.display()))
        }
        e => ("key_file", format!("{} cannot be used with {}: {e}", key_file.display(), cert_file.display())),
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
