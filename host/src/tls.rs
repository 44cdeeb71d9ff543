//! TLS for STARTTLS and implicit-TLS listeners (rustls, TLS 1.2 minimum).
//! The certificate and key are re-read at the first handshake after either
//! file changes, so a renewed certificate needs no restart; connections
//! already encrypted keep the one they started with.

use anyhow::{Context, Result, anyhow};
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio_rustls::TlsAcceptor;

/// The certificate files and the acceptor built from them.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    acceptor: ArcSwap<TlsAcceptor>,
    stamps: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn build(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificates from {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("no certificate in {}", cert.display()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Tls {
    /// Loads the certificate chain and key (PEM files).
    pub fn load(cert: &Path, key: &Path) -> Result<Tls> {
        let acceptor = build(cert, key)?;
        Ok(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            acceptor: ArcSwap::from_pointee(acceptor),
            stamps: Mutex::new((modified(cert), modified(key))),
        })
    }

    /// The acceptor for a new handshake, rebuilt first if the files changed.
    /// A broken new pair is logged and the previous one stays in use.
    pub fn acceptor(&self) -> Arc<TlsAcceptor> {
        let now = (modified(&self.cert), modified(&self.key));
        let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if *stamps != now {
            *stamps = now;
            match build(&self.cert, &self.key) {
                Ok(acceptor) => {
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    self.acceptor.store(Arc::new(acceptor));
                }
                Err(e) => tracing::error!("TLS certificate not reloaded, keeping the previous one: {e:#}"),
            }
        }
        self.acceptor.load_full()
    }
}
