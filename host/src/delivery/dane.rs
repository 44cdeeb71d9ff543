//! DANE for SMTP (RFC 7672): the certificate of a server whose TLSA
//! records DNSSEC proves must match one of them. `DANE-EE(3)` records match
//! the server's own certificate or public key, whatever its name, issuer or
//! dates; `DANE-TA(2)` records match a certificate of the chain the server
//! sends, which then anchors that chain, checked as usual for the MX host's
//! name and dates. A record set with neither (only the PKIX usages, which
//! SMTP does not use) still requires TLS, without authentication.

use crate::capabilities::Tlsa;
use rustls::Error;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;

/// `DANE-TA`: a trust anchor of the server's chain.
const DANE_TA: u8 = 2;
/// `DANE-EE`: the server's own certificate.
const DANE_EE: u8 = 3;

/// Whether `record` is one SMTP clients use (RFC 7672 3.1): a DANE-TA or
/// DANE-EE usage with a selector and matching type this client knows.
fn usable(record: &Tlsa) -> bool {
    matches!(record.usage, DANE_TA | DANE_EE) && record.selector <= 1 && record.matching <= 2
}

/// Whether `cert` matches `record` (its selector and matching type).
fn matches(record: &Tlsa, cert: &CertificateDer<'_>) -> bool {
    let selected = match record.selector {
        0 => cert.as_ref().to_vec(),
        _ => match webpki::EndEntityCert::try_from(cert) {
            Ok(parsed) => parsed.subject_public_key_info().as_ref().to_vec(),
            Err(_) => return false,
        },
    };
    match record.matching {
        0 => selected == record.data,
        1 => ring::digest::digest(&ring::digest::SHA256, &selected).as_ref() == record.data.as_slice(),
        2 => ring::digest::digest(&ring::digest::SHA512, &selected).as_ref() == record.data.as_slice(),
        _ => false,
    }
}

/// Checks a server's certificate chain against the TLSA `records` of its
/// MX host `server_name` (the handshake's signatures are checked apart):
/// a DANE-EE record must match the server's own certificate, or a DANE-TA
/// record a certificate of the chain that then anchors it, verified for
/// `server_name` and `now`.
pub fn verify(
    records: &[Tlsa],
    provider: &Arc<CryptoProvider>,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), Error> {
    if !records.iter().any(usable) {
        return Ok(());
    }
    let own = records
        .iter()
        .any(|r| r.usage == DANE_EE && usable(r) && matches(r, end_entity));
    let anchored = || {
        let mut anchors = records
            .iter()
            .filter(|r| r.usage == DANE_TA && usable(r))
            .flat_map(|r| intermediates.iter().filter(move |cert| matches(r, cert)));
        anchors.any(|anchor| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(anchor.clone().into_owned()).is_ok()
                && rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .is_ok_and(|verifier| {
                        verifier
                            .verify_server_cert(end_entity, intermediates, server_name, &[], now)
                            .is_ok()
                    })
        })
    };
    if own || anchored() {
        return Ok(());
    }
    Err(Error::General(
        "DANE: no TLSA record of the MX host matches its certificate".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data,
        }
    }

    #[test]
    fn a_record_matches_the_certificate_or_its_digest() {
        let cert = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x05]);
        let sha256 = ring::digest::digest(&ring::digest::SHA256, cert.as_ref())
            .as_ref()
            .to_vec();
        let sha512 = ring::digest::digest(&ring::digest::SHA512, cert.as_ref())
            .as_ref()
            .to_vec();
        assert!(matches(&record(3, 0, 0, cert.as_ref().to_vec()), &cert));
        assert!(matches(&record(3, 0, 1, sha256.clone()), &cert));
        assert!(matches(&record(3, 0, 2, sha512), &cert));
        assert!(!matches(&record(3, 0, 1, vec![0; 32]), &cert));
        // Not a certificate: its public key cannot be selected.
        assert!(!matches(&record(3, 1, 1, sha256), &cert));
        assert!(usable(&record(3, 1, 1, vec![])) && usable(&record(2, 0, 2, vec![])));
        assert!(!usable(&record(1, 1, 1, vec![])) && !usable(&record(3, 2, 1, vec![])));
    }
}
