//! DKIM signing (RFC 6376) with keys the host keeps, using the `mail-auth`
//! crate: `DIR/DOMAIN/private` (PEM: RSA in PKCS#1 or PKCS#8, or Ed25519 in
//! PKCS#8) and `DIR/DOMAIN/selector`, the layout of Haraka's `dkim_sign`.
//! The directory sits beside `config/`, not in it, so no plugin can read a
//! key: plugins name the domain, the host signs.

use super::CapabilityError;
use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::{Algorithm, DkimKey, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::DkimSigner;
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The kind of key `waraka dkim-key` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA, 2048 bits: what every verifier understands.
    Rsa2048,
    /// Ed25519 (RFC 8463): short, but not yet checked by every receiver.
    Ed25519,
}

/// PEM text of `der` under `label`, in lines of 64 characters.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).expect("base64 is ASCII"))
        .collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// The header fields signed when present (every instance of each). `From`
/// is also signed once more than it occurs, so that a second one cannot be
/// added unnoticed (RFC 6376 §8.15); absent fields are not, so a forwarder
/// that adds, say, `List-Id` does not break the signature.
const SIGNED_FIELDS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// The signing keys of one server, read from a directory. A key is parsed
/// once and kept while its files stay as they are (a replaced key applies
/// to the next message). The default has none.
#[derive(Clone, Debug, Default)]
pub struct DkimKeys {
    dir: Option<PathBuf>,
    parsed: Arc<ParsedKeys>,
}

/// Which version of a file was read: its inode, length and change time.
type FileStamp = (u64, u64, Option<SystemTime>);

/// A domain's key as parsed, with the stamps of its `private` and
/// `selector` files then.
struct Parsed {
    stamps: [FileStamp; 2],
    selector: String,
    key: Arc<DkimKey>,
}

/// The keys parsed so far, by domain.
#[derive(Default)]
struct ParsedKeys(Mutex<HashMap<String, Parsed>>);

impl fmt::Debug for ParsedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.lock().map_or(0, |keys| keys.len());
        write!(f, "ParsedKeys({count})")
    }
}

/// The stamp of the file at `path`; `NotFound` when there is none.
fn stamp(path: &Path) -> Result<FileStamp, CapabilityError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok((meta.ino(), meta.len(), meta.modified().ok())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CapabilityError::NotFound),
        Err(e) => Err(CapabilityError::Backend(format!("{}: {e}", path.display()))),
    }
}

/// A signature made for a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DkimSignature {
    /// The signing domain (`d=`): the one asked for or a parent of it.
    pub domain: String,
    /// The selector of the key used (`s=`).
    pub selector: String,
    /// The `DKIM-Signature` field's value, folded with `\r\n\t`.
    pub value: String,
}

/// Whether `domain` can name a key directory: a lower-case host name.
fn is_domain_name(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The names of the header fields of `message`, lower-cased.
fn field_names(message: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':')
            && !matches!(line[0], b' ' | b'\t')
        {
            names.push(String::from_utf8_lossy(&line[..colon]).trim().to_ascii_lowercase());
        }
    }
    names
}

/// The `h=` list for `message`: the [`SIGNED_FIELDS`] it has, and `From`
/// once more (mail-auth signs every instance of a listed name and lists a
/// name it did not find as an absent field).
fn fields_to_sign(message: &[u8]) -> Vec<&'static str> {
    let present = field_names(message);
    let mut fields: Vec<&str> = SIGNED_FIELDS
        .iter()
        .copied()
        .filter(|field| present.iter().any(|name| name.eq_ignore_ascii_case(field)))
        .collect();
    fields.push("From");
    fields
}

/// A parsed key, shared by the messages it signs.
#[derive(Clone)]
struct SharedKey(Arc<DkimKey>);

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

/// A key of the directory with its selector.
pub struct DomainKey {
    /// The domain it signs for (`d=`).
    pub domain: String,
    /// Its selector (`s=`).
    pub selector: String,
    key: SharedKey,
}

/// The `DKIM-Signature` header field `key` makes for `message`.
fn sign_with<K: SigningKey<Hasher = Sha256>>(
    key: K,
    domain: &str,
    selector: &str,
    message: &[u8],
) -> Result<String, CapabilityError> {
    let signature = DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(fields_to_sign(message))
        .sign(message)
        .map_err(|e| CapabilityError::Backend(format!("signing failed: {e}")))?;
    Ok(signature.to_header())
}

/// The ARC set `key` seals `message` with: its three header fields as text.
fn seal_with<K: SigningKey<Hasher = Sha256>>(
    key: K,
    domain: &str,
    selector: &str,
    message: &AuthenticatedMessage<'_>,
    results: &AuthenticationResults<'_>,
    arc: &ArcOutput<'_>,
) -> Result<String, CapabilityError> {
    let set = ArcSealer::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(fields_to_sign(message.raw_message))
        .seal(message, results, arc)
        .map_err(|e| CapabilityError::Backend(format!("sealing failed: {e}")))?;
    Ok(set.to_header())
}

/// The fields of a header block (`Name: value` lines, values folded with
/// CRLF and white space), as (name, value without the line break after it).
fn header_fields(block: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in block.split_inclusive("\r\n") {
        match fields.last_mut() {
            Some((_, value)) if line.starts_with([' ', '\t']) => value.push_str(line),
            _ => {
                if let Some((name, value)) = line.split_once(':') {
                    fields.push((name.trim().to_string(), value.trim_start().to_string()));
                }
            }
        }
    }
    for (_, value) in &mut fields {
        value.truncate(value.trim_end_matches("\r\n").len());
    }
    fields
}

impl DomainKey {
    /// Signs `message` (header and body, as it will be queued).
    fn sign(self, message: &[u8]) -> Result<DkimSignature, CapabilityError> {
        let header = sign_with(self.key, &self.domain, &self.selector, message)?;
        let value = header
            .strip_prefix("DKIM-Signature:")
            .unwrap_or(&header)
            .trim_start()
            .trim_end_matches("\r\n")
            .to_string();
        Ok(DkimSignature {
            domain: self.domain,
            selector: self.selector,
            value,
        })
    }

    /// Seals `message` with an ARC set (RFC 8617) recording `results` and
    /// continuing the chain `arc` verified: its `ARC-Seal`,
    /// `ARC-Message-Signature` and `ARC-Authentication-Results` fields, in
    /// that order, as (name, folded value).
    pub fn seal_arc(
        self,
        message: &AuthenticatedMessage<'_>,
        results: &AuthenticationResults<'_>,
        arc: &ArcOutput<'_>,
    ) -> Result<Vec<(String, String)>, CapabilityError> {
        let block = seal_with(self.key, &self.domain, &self.selector, message, results, arc)?;
        Ok(header_fields(&block))
    }
}

impl DkimKeys {
    /// Keys under `dir`; `None` (the embedded default instance) has none.
    pub fn new(dir: Option<PathBuf>) -> DkimKeys {
        DkimKeys {
            dir,
            parsed: Arc::default(),
        }
    }

    /// Signs `message` (header and body, as it will be queued) with the key
    /// of `domain` or, when it has none, of its nearest parent down to two
    /// labels (`mail.example.com`, then `example.com`: still aligned with
    /// the author under DMARC's relaxed rule). `NotFound` when none has a
    /// key; `Invalid` for a name that cannot be a domain.
    pub fn sign(&self, domain: &str, message: &[u8]) -> Result<DkimSignature, CapabilityError> {
        self.key_for(domain)?.sign(message)
    }

    /// The key of `domain` or, when it has none, of its nearest parent down
    /// to two labels, as [`DkimKeys::sign`] looks for it. `NotFound` when
    /// none has a key; `Invalid` for a name that cannot be a domain.
    pub fn key_for(&self, domain: &str) -> Result<DomainKey, CapabilityError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !is_domain_name(&domain) {
            return Err(CapabilityError::Invalid(format!("{domain:?} is not a domain name")));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        for skip in 0..labels.len().saturating_sub(1).max(1) {
            match self.key_of(&labels[skip..].join(".")) {
                Err(CapabilityError::NotFound) => continue,
                done => return done,
            }
        }
        Err(CapabilityError::NotFound)
    }

    /// Makes a new key for `domain` under `selector`: writes `DOMAIN/private`
    /// (PKCS#8 PEM, readable by the owner only) and `DOMAIN/selector`, and
    /// returns the TXT record value to publish at
    /// `SELECTOR._domainkey.DOMAIN`. Refuses to replace an existing key.
    pub fn create(&self, domain: &str, selector: &str, algorithm: KeyAlgorithm) -> anyhow::Result<String> {
        use anyhow::{Context, bail};
        use base64::Engine;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !is_domain_name(&domain) {
            bail!("{domain:?} is not a domain name");
        }
        if selector.is_empty() || !selector.split('.').all(is_domain_name) {
            bail!("{selector:?} is not a selector (lower-case letters, digits, '-', dots)");
        }
        let Some(root) = &self.dir else {
            bail!("this instance has no dkim/ directory");
        };
        let dir = root.join(&domain);
        if dir.join("private").exists() {
            bail!(
                "{} exists: move it away to make a new key",
                dir.join("private").display()
            );
        }
        let (private_der, public, k) = match algorithm {
            KeyAlgorithm::Rsa2048 => {
                use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).context("making the RSA key")?;
                let private = key.to_pkcs8_der().context("encoding the RSA key")?.as_bytes().to_vec();
                // SubjectPublicKeyInfo, the form every verifier reads.
                let public = key
                    .to_public_key()
                    .to_public_key_der()
                    .context("encoding the public key")?;
                (private, public.as_bytes().to_vec(), "rsa")
            }
            KeyAlgorithm::Ed25519 => {
                let private = Ed25519Key::generate_pkcs8().map_err(|e| anyhow::anyhow!("making the key: {e}"))?;
                let key = Ed25519Key::from_pkcs8_der(&private).map_err(|e| anyhow::anyhow!("reading the key: {e}"))?;
                (private, key.public_key(), "ed25519")
            }
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("private");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(pem("PRIVATE KEY", &private_der).as_bytes())?;
        file.sync_all()?;
        std::fs::write(dir.join("selector"), format!("{selector}\n"))?;
        let p = base64::engine::general_purpose::STANDARD.encode(public);
        Ok(format!("v=DKIM1; k={k}; p={p}"))
    }

    /// The key of exactly `domain`, a checked domain name: parsed again
    /// only when its files changed since it was last.
    fn key_of(&self, domain: &str) -> Result<DomainKey, CapabilityError> {
        let dir = self.dir.as_ref().ok_or(CapabilityError::NotFound)?.join(domain);
        let stamps = [stamp(&dir.join("private"))?, stamp(&dir.join("selector"))?];
        let known = |parsed: &Parsed| DomainKey {
            domain: domain.to_string(),
            selector: parsed.selector.clone(),
            key: SharedKey(parsed.key.clone()),
        };
        if let Some(parsed) = self.parsed.lock().get(domain)
            && parsed.stamps == stamps
        {
            return Ok(known(parsed));
        }
        // Stamped before reading: a change while reading is parsed next time.
        let (selector, key) = parse_key(&dir)?;
        let parsed = Parsed {
            stamps,
            selector,
            key: Arc::new(key),
        };
        let key = known(&parsed);
        self.parsed.lock().insert(domain.to_string(), parsed);
        Ok(key)
    }
}

impl ParsedKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Parsed>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The selector and the private key in the key directory `dir`.
fn parse_key(dir: &Path) -> Result<(String, DkimKey), CapabilityError> {
    let read = |name: &str| match std::fs::read(dir.join(name)) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CapabilityError::NotFound),
        Err(e) => Err(CapabilityError::Backend(format!("{}: {e}", dir.join(name).display()))),
    };
    let pem = read("private")?;
    let selector = String::from_utf8_lossy(&read("selector")?).trim().to_string();
    if selector.is_empty() || !selector.split('.').all(is_domain_name) {
        return Err(CapabilityError::Backend(format!(
            "{}: bad selector {selector:?}",
            dir.display()
        )));
    }
    let bad_key = |e: String| CapabilityError::Backend(format!("{}: {e}", dir.join("private").display()));
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad_key(e.to_string()))?;
    let key = match RsaKey::<Sha256>::from_key_der(der.clone_key()) {
        Ok(rsa) => DkimKey::Rsa(rsa),
        Err(rsa_error) => {
            let ed25519 = match &der {
                PrivateKeyDer::Pkcs8(pkcs8) => Ed25519Key::from_pkcs8_der(pkcs8.secret_pkcs8_der()).ok(),
                _ => None,
            };
            DkimKey::Ed25519(ed25519.ok_or_else(|| bad_key(format!("neither RSA nor Ed25519 ({rsa_error})")))?)
        }
    };
    Ok((selector, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lower_case_host_names_name_a_key_directory() {
        for good in ["example.com", "a-b.example", "x1"] {
            assert!(is_domain_name(good), "{good}");
        }
        for bad in ["", "../etc", "a/b", "a..b", "-a.com", ".", "a.", "Example.com", "a b"] {
            assert!(!is_domain_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_header_block_splits_into_its_folded_fields() {
        let block = "ARC-Seal: i=1; a=rsa-sha256;\r\n\tb=abc\r\nARC-Message-Signature: i=1;\r\n h=from\r\n";
        assert_eq!(
            header_fields(block),
            [
                ("ARC-Seal".to_string(), "i=1; a=rsa-sha256;\r\n\tb=abc".to_string()),
                ("ARC-Message-Signature".to_string(), "i=1;\r\n h=from".to_string()),
            ]
        );
    }

    #[test]
    fn present_fields_are_signed_and_from_once_more() {
        let message = b"Subject: hi\r\nFROM: a@example.com\r\nX-Other: 1\r\n\tfolded: not a field\r\nTo: b@example.org\r\n\r\nCc: in the body\r\n";
        assert_eq!(fields_to_sign(message), ["From", "Subject", "To", "From"]);
    }

    /// An Ed25519 key made for this test only.
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINOymh15uvs5gSYyrKYaLodxuwjspQRJ6Yuy27eiowns\n-----END PRIVATE KEY-----\n";

    #[test]
    fn the_nearest_domain_with_a_key_signs() {
        let dir = tempfile::tempdir().unwrap();
        let key_dir = dir.path().join("example.com");
        std::fs::create_dir(&key_dir).unwrap();
        std::fs::write(key_dir.join("private"), TEST_KEY).unwrap();
        std::fs::write(key_dir.join("selector"), "sel2026\n").unwrap();
        let keys = DkimKeys::new(Some(dir.path().into()));
        let message = b"From: a@mail.example.com\r\nSubject: s\r\n\r\nbody\r\n";
        let signature = keys.sign("Mail.Example.com.", message).unwrap();
        assert_eq!(
            (signature.domain.as_str(), signature.selector.as_str()),
            ("example.com", "sel2026")
        );
        let compact: String = signature.value.split_whitespace().collect();
        for tag in [
            "v=1;",
            "a=ed25519-sha256;",
            "d=example.com;",
            "s=sel2026;",
            "h=Subject:From:From;",
        ] {
            assert!(compact.contains(tag), "{tag} in {compact}");
        }
        assert!(
            !signature.value.contains('\n') || signature.value.contains("\r\n\t"),
            "folded for add-header"
        );
        assert!(matches!(
            keys.sign("example.org", message),
            Err(CapabilityError::NotFound)
        ));
        assert!(
            matches!(keys.sign("com", message), Err(CapabilityError::NotFound)),
            "no walk past the name"
        );
        std::fs::write(key_dir.join("private"), "not a key").unwrap();
        assert!(matches!(
            keys.sign("example.com", message),
            Err(CapabilityError::Backend(_))
        ));
    }

    #[test]
    fn a_created_key_signs_and_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DkimKeys::new(Some(dir.path().join("dkim")));
        let record = keys.create("Example.com", "s1", KeyAlgorithm::Ed25519).unwrap();
        assert!(record.starts_with("v=DKIM1; k=ed25519; p="), "{record}");
        let private = dir.path().join("dkim/example.com/private");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
        let signature = keys.sign("example.com", b"From: a@example.com\r\n\r\nx\r\n").unwrap();
        assert_eq!(signature.selector, "s1");
        let again = keys.create("example.com", "s2", KeyAlgorithm::Ed25519).unwrap_err();
        assert!(again.to_string().contains("exists"), "{again}");
        assert!(
            keys.create("example.org", "Bad Selector", KeyAlgorithm::Ed25519)
                .is_err()
        );
    }

    #[test]
    fn a_key_is_parsed_once_until_its_files_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DkimKeys::new(Some(dir.path().join("dkim")));
        keys.create("example.com", "s1", KeyAlgorithm::Ed25519).unwrap();
        let first = keys.key_for("example.com").unwrap();
        let again = keys.key_for("mail.example.com").unwrap();
        assert!(Arc::ptr_eq(&first.key.0, &again.key.0), "parsed once");
        // A new key made elsewhere and moved in, as an administrator would.
        let other = DkimKeys::new(Some(dir.path().join("other")));
        other.create("example.com", "s2", KeyAlgorithm::Ed25519).unwrap();
        for file in ["private", "selector"] {
            std::fs::rename(
                dir.path().join("other/example.com").join(file),
                dir.path().join("dkim/example.com").join(file),
            )
            .unwrap();
        }
        let replaced = keys.key_for("example.com").unwrap();
        assert_eq!(replaced.selector, "s2");
        assert!(!Arc::ptr_eq(&first.key.0, &replaced.key.0));
        std::fs::remove_file(dir.path().join("dkim/example.com/private")).unwrap();
        assert!(matches!(keys.key_for("example.com"), Err(CapabilityError::NotFound)));
    }

    #[test]
    fn a_missing_key_or_directory_is_not_found_and_a_bad_name_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DkimKeys::new(Some(dir.path().into()));
        assert!(matches!(
            keys.sign("example.com", b"From: a@example.com\r\n\r\nx\r\n"),
            Err(CapabilityError::NotFound)
        ));
        assert!(matches!(
            DkimKeys::new(None).sign("example.com", b""),
            Err(CapabilityError::NotFound)
        ));
        assert!(matches!(keys.sign("../x", b""), Err(CapabilityError::Invalid(_))));
    }
}
