//! TLS for STARTTLS and implicit-TLS listeners (rustls, TLS 1.2 minimum).
//! The default certificate, and more chosen by the server name the client
//! asks for (SNI). The files are re-read at the first handshake after one of
//! them changes, so a renewed certificate needs no restart; connections
//! already encrypted keep the one they started with.

use anyhow::{Context, Result, anyhow};
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio_rustls::TlsAcceptor;

/// The certificate files and the acceptor built from them.
pub struct Tls {
    /// (certificate chain, key) pairs: the default first.
    files: Vec<(PathBuf, PathBuf)>,
    acceptor: ArcSwap<TlsAcceptor>,
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// One certificate chain and its key, checked to match.
fn certified_key(provider: &CryptoProvider, cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificates from {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("no certificate in {}", cert.display()));
    }
    let der =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the private key {}", key.display()))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .with_context(|| format!("loading the private key {}", key.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().with_context(|| {
        format!(
            "the certificate {} and key {} do not match",
            cert.display(),
            key.display()
        )
    })?;
    Ok(Arc::new(certified))
}

/// Picks the certificate for a handshake: the first of `named` valid for
/// the server name the client asks for, else the default.
#[derive(Debug)]
struct ByServerName {
    default: Arc<CertifiedKey>,
    named: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ByServerName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.named.is_empty() {
            return Some(self.default.clone());
        }
        let asked = hello.server_name().and_then(|name| ServerName::try_from(name).ok());
        let valid_for = |certified: &&Arc<CertifiedKey>| {
            let (Some(name), Some(leaf)) = (&asked, certified.cert.first()) else {
                return false;
            };
            webpki::EndEntityCert::try_from(leaf).is_ok_and(|leaf| leaf.verify_is_valid_for_subject_name(name).is_ok())
        };
        Some(self.named.iter().find(valid_for).unwrap_or(&self.default).clone())
    }
}

fn build(files: &[(PathBuf, PathBuf)]) -> Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut keys = files
        .iter()
        .map(|(cert, key)| certified_key(&provider, cert, key))
        .collect::<Result<Vec<_>>>()?;
    if keys.is_empty() {
        return Err(anyhow!("no certificate configured"));
    }
    let default = keys.remove(0);
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ByServerName { default, named: keys }));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Tls {
    /// Loads the certificate chains and keys (PEM files): the default pair
    /// first, then those chosen by server name.
    pub fn load(files: Vec<(PathBuf, PathBuf)>) -> Result<Tls> {
        let acceptor = build(&files)?;
        let stamps = Mutex::new(Self::stamps_of(&files));
        Ok(Tls {
            files,
            acceptor: ArcSwap::from_pointee(acceptor),
            stamps,
        })
    }

    fn stamps_of(files: &[(PathBuf, PathBuf)]) -> Vec<Option<SystemTime>> {
        files
            .iter()
            .flat_map(|(cert, key)| [modified(cert), modified(key)])
            .collect()
    }

    /// The acceptor for a new handshake, rebuilt first if a file changed.
    /// A broken new set is logged and the previous one stays in use.
    pub fn acceptor(&self) -> Arc<TlsAcceptor> {
        let now = Self::stamps_of(&self.files);
        let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if *stamps != now {
            *stamps = now;
            match build(&self.files) {
                Ok(acceptor) => {
                    tracing::info!(cert = %self.files[0].0.display(), certificates = self.files.len(), "TLS certificate reloaded");
                    self.acceptor.store(Arc::new(acceptor));
                }
                Err(e) => tracing::error!("TLS certificate not reloaded, keeping the previous one: {e:#}"),
            }
        }
        self.acceptor.load_full()
    }
}
