//! TLS for STARTTLS and implicit-TLS listeners (rustls, TLS 1.2 minimum).
//! The default certificate, and more chosen by the server name the client
//! asks for (SNI). The files are re-read at the first handshake after one of
//! them changes, so a renewed certificate needs no restart; connections
//! already encrypted keep the one they started with. Clients may be asked
//! for a certificate, which identifies them by its fingerprint. Also the
//! system's roots, which Waraka's own TLS clients check servers against.

use anyhow::{Context, Result, anyhow};
use arc_swap::ArcSwap;
use ipnet::IpNet;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

/// The certificate files and the acceptor built from them.
pub struct Tls {
    /// (certificate chain, key) pairs: the default first.
    files: Vec<(PathBuf, PathBuf)>,
    /// Whether clients are asked for a certificate.
    ask_client_cert: bool,
    /// The clients STARTTLS is not offered to.
    no_tls_hosts: Vec<IpNet>,
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

/// How long the system's roots are kept before they are read again (an
/// updated CA bundle applies within this time, without a restart).
const ROOTS_KEPT: Duration = Duration::from_secs(3600);

/// The system's roots (`SSL_CERT_FILE` when set), read at most once per
/// [`ROOTS_KEPT`]: reading and parsing the bundle takes milliseconds, too
/// much for every verified session.
pub fn system_roots() -> Arc<rustls::RootCertStore> {
    static KEPT: Mutex<Option<(std::time::Instant, Arc<rustls::RootCertStore>)>> = Mutex::new(None);
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((read_at, roots)) = kept.as_ref()
        && read_at.elapsed() < ROOTS_KEPT
    {
        return roots.clone();
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let roots = Arc::new(roots);
    *kept = Some((std::time::Instant::now(), roots.clone()));
    roots
}

/// A TLS client's settings that check the server against the system's
/// roots (TLS 1.2 and 1.3): for Waraka's own HTTPS and SMTP clients.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(system_roots())
        .with_no_client_auth();
    Arc::new(config)
}

/// Asks the client for a certificate without requiring one, and takes any,
/// self-signed included, whose holder proves in the handshake that it has
/// the key: who it is comes from its fingerprint, which the plugins judge
/// (as Postfix's `relay_clientcerts`), not from a certificate authority.
#[derive(Debug)]
struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A certificate's SHA-256 fingerprint as Postfix writes it:
/// upper-case hex pairs joined by colons.
pub fn fingerprint(certificate: &[u8]) -> String {
    let digest = Sha256::digest(certificate);
    digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// The DANE TLSA records (RFC 7671) for a certificate chain (PEM file):
/// `3 1 1` (DANE-EE, the leaf's public key, SHA-256) and, when the chain
/// holds its issuer, `2 1 1` (DANE-TA, the issuer's key), with the DNS
/// names the leaf is for.
pub fn tlsa_records(chain: &Path) -> Result<(Vec<String>, Vec<String>)> {
    use sha2::Digest;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain)
        .with_context(|| format!("reading {}", chain.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", chain.display()))?;
    let parsed = certs
        .iter()
        .map(|der| x509_parser::parse_x509_certificate(der).map(|(_, c)| c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: {e}", chain.display()))?;
    let leaf = parsed
        .first()
        .ok_or_else(|| anyhow!("no certificate in {}", chain.display()))?;
    let names = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) if !dns.starts_with('*') => {
                        Some(dns.to_string())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let key_hash = |certificate: &x509_parser::certificate::X509Certificate| {
        hex::encode(sha2::Sha256::digest(certificate.tbs_certificate.subject_pki.raw))
    };
    let mut records = vec![format!("3 1 1 {}", key_hash(leaf))];
    if let Some(issuer) = parsed.iter().skip(1).find(|c| c.subject() == leaf.issuer()) {
        records.push(format!("2 1 1 {}", key_hash(issuer)));
    }
    Ok((names, records))
}

/// When a certificate (DER) stops being valid; `None` when it cannot be read.
pub fn not_after(certificate: &[u8]) -> Option<SystemTime> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let seconds = u64::try_from(parsed.validity().not_after.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

fn build(files: &[(PathBuf, PathBuf)], ask_client_cert: bool) -> Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut keys = files
        .iter()
        .map(|(cert, key)| certified_key(&provider, cert, key))
        .collect::<Result<Vec<_>>>()?;
    for ((cert, _), certified) in files.iter().zip(&keys) {
        let expiry = certified.cert.first().and_then(|leaf| not_after(leaf));
        if let Some(seconds) = expiry.and_then(|e| e.duration_since(SystemTime::UNIX_EPOCH).ok()) {
            metrics::gauge!(crate::telemetry::TLS_CERTIFICATE_EXPIRY, "cert" => cert.display().to_string())
                .set(seconds.as_secs() as f64);
        }
    }
    if keys.is_empty() {
        return Err(anyhow!("no certificate configured"));
    }
    let default = keys.remove(0);
    let algorithms = provider.signature_verification_algorithms;
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match ask_client_cert {
        true => builder.with_client_cert_verifier(Arc::new(AnyClientCert { algorithms })),
        false => builder.with_no_client_auth(),
    };
    let config = builder.with_cert_resolver(Arc::new(ByServerName { default, named: keys }));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Tls {
    /// Loads the certificate chains and keys (PEM files): the default pair
    /// first, then those chosen by server name. With `ask_client_cert`,
    /// clients are asked for a certificate of their own; the clients in
    /// `no_tls_hosts` are not offered STARTTLS.
    pub fn load(files: Vec<(PathBuf, PathBuf)>, ask_client_cert: bool, no_tls_hosts: Vec<IpNet>) -> Result<Tls> {
        let acceptor = build(&files, ask_client_cert)?;
        let stamps = Mutex::new(Self::stamps_of(&files));
        Ok(Tls {
            files,
            ask_client_cert,
            no_tls_hosts,
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

    /// Whether STARTTLS is offered to the client at `ip`.
    pub fn offered_to(&self, ip: IpAddr) -> bool {
        !self.no_tls_hosts.iter().any(|net| net.contains(&ip))
    }

    /// The acceptor for a new handshake, rebuilt first if a file changed.
    /// A broken new set is logged and the previous one stays in use.
    pub fn acceptor(&self) -> Arc<TlsAcceptor> {
        let now = Self::stamps_of(&self.files);
        let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if *stamps != now {
            *stamps = now;
            match build(&self.files, self.ask_client_cert) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_roots_are_read_once_and_shared() {
        let first = system_roots();
        assert!(Arc::ptr_eq(&first, &system_roots()));
    }
}
