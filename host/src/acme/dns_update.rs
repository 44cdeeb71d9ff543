//! DNS-01 answers put into a zone and taken out again by dynamic update
//! (RFC 2136) signed with a TSIG key (RFC 8945), as certbot's `rfc2136`
//! plugin does: one TXT record at `_acme-challenge.NAME` per name, sent
//! over TCP to the zone's primary server, whose signed reply is checked.
//! The messages and the signature are `hickory-proto`'s.

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use hickory_proto::op::{Message, ResponseCode, update_message};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, RData, Record, RecordSet, TSigner};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use waraka_config::DnsUpdateConfig;

/// The TTL of a challenge record: resolvers should not keep it.
const CHALLENGE_TTL: u32 = 60;
/// How long the server may take to answer an update.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(30);
/// The clock difference the server allows (TSIG's fudge), in seconds.
const FUDGE: u16 = 300;

/// The zone's primary server, and the key that signs updates to it.
pub struct DnsUpdate {
    server: String,
    zone: Name,
    signer: TSigner,
    /// How long the zone's other servers take to catch up.
    pub propagation_delay: Duration,
}

impl DnsUpdate {
    /// The updater `config` describes; an error names what is wrong in it.
    pub fn new(config: &DnsUpdateConfig) -> Result<DnsUpdate> {
        let algorithm = match config.algorithm.to_ascii_lowercase().as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => bail!("[acme.dns_update] algorithm {other:?}: hmac-sha256, hmac-sha384 or hmac-sha512"),
        };
        let key = base64::engine::general_purpose::STANDARD
            .decode(config.key_secret.trim())
            .context("[acme.dns_update] key_secret is not base64")?;
        let key_name = Name::from_str(&config.key_name)
            .map_err(|e| anyhow!("[acme.dns_update] key_name {:?}: {e}", config.key_name))?;
        let signer = TSigner::new(key, algorithm, key_name, FUDGE).map_err(|e| anyhow!("[acme.dns_update] {e}"))?;
        let mut zone =
            Name::from_str(&config.zone).map_err(|e| anyhow!("[acme.dns_update] zone {:?}: {e}", config.zone))?;
        zone.set_fqdn(true);
        let server = if config.server.parse::<SocketAddr>().is_ok() || config.server.contains(':') {
            config.server.clone()
        } else {
            format!("{}:53", config.server)
        };
        Ok(DnsUpdate {
            server,
            zone,
            signer,
            propagation_delay: config.propagation_delay,
        })
    }

    /// Where the answer for `domain` goes: `_acme-challenge.DOMAIN`, which
    /// must be in the zone.
    pub fn record_name(&self, domain: &str) -> Result<Name> {
        let mut name = Name::from_str(&format!("_acme-challenge.{domain}"))
            .map_err(|e| anyhow!("ACME: {domain:?} is not a DNS name: {e}"))?;
        name.set_fqdn(true);
        if !self.zone.zone_of(&name) {
            bail!(
                "ACME: {domain} is not in the zone {} that [acme.dns_update] updates",
                self.zone
            );
        }
        Ok(name)
    }

    /// Adds the TXT record `value` at `name`.
    pub async fn add(&self, name: &Name, value: &str) -> Result<()> {
        let message = update_message::append(self.txt(name, value), self.zone.clone(), false, false);
        self.send(message).await
    }

    /// Takes the TXT record `value` at `name` out again.
    pub async fn remove(&self, name: &Name, value: &str) -> Result<()> {
        let message = update_message::delete_by_rdata(self.txt(name, value), self.zone.clone(), false);
        self.send(message).await
    }

    fn txt(&self, name: &Name, value: &str) -> RecordSet {
        let record = Record::from_rdata(
            name.clone(),
            CHALLENGE_TTL,
            RData::TXT(TXT::new(vec![value.to_string()])),
        );
        RecordSet::from(record)
    }

    /// Signs `message`, sends it, and checks the signed reply says it was done.
    async fn send(&self, mut message: Message) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let (signature, verifier) = self
            .signer
            .sign_message(&message, now)
            .map_err(|e| anyhow!("signing the update: {e}"))?;
        message.set_signature(signature);
        let bytes = message.to_vec().map_err(|e| anyhow!("encoding the update: {e}"))?;
        let reply = tokio::time::timeout(UPDATE_TIMEOUT, self.exchange(&bytes))
            .await
            .map_err(|_| anyhow!("no answer from {} in {UPDATE_TIMEOUT:?}", self.server))?
            .with_context(|| format!("updating {} at {}", self.zone, self.server))?;
        let code = Message::from_vec(&reply)
            .map_err(|e| anyhow!("{} answered what is not DNS: {e}", self.server))?
            .metadata
            .response_code;
        if code != ResponseCode::NoError {
            bail!("{} refused the update of {}: {code}", self.server, self.zone);
        }
        if let Some(mut verifier) = verifier {
            verifier
                .verify(&reply)
                .map_err(|e| anyhow!("{}'s answer is not signed with the key: {e}", self.server))?;
        }
        Ok(())
    }

    /// One DNS message over TCP (two length bytes, then the message).
    async fn exchange(&self, request: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(&self.server).await?;
        let length = u16::try_from(request.len()).map_err(|_| std::io::Error::other("update too long"))?;
        stream.write_all(&length.to_be_bytes()).await?;
        stream.write_all(request).await?;
        let mut length = [0u8; 2];
        stream.read_exact(&mut length).await?;
        let mut reply = vec![0u8; u16::from_be_bytes(length) as usize];
        stream.read_exact(&mut reply).await?;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(zone: &str, algorithm: &str, secret: &str) -> DnsUpdateConfig {
        DnsUpdateConfig {
            server: "192.0.2.53".into(),
            zone: zone.into(),
            key_name: "acme".into(),
            key_secret: secret.into(),
            algorithm: algorithm.into(),
            propagation_delay: Duration::ZERO,
        }
    }

    #[test]
    fn names_must_be_in_the_zone_and_settings_must_make_sense() {
        let update = DnsUpdate::new(&config("example.com", "hmac-sha256", "c2VjcmV0")).unwrap();
        assert_eq!(update.server, "192.0.2.53:53");
        assert_eq!(
            update.record_name("mx.example.com").unwrap().to_string(),
            "_acme-challenge.mx.example.com."
        );
        assert!(update.record_name("example.org").is_err());
        assert!(DnsUpdate::new(&config("example.com", "hmac-md5", "c2VjcmV0")).is_err());
        assert!(DnsUpdate::new(&config("example.com", "hmac-sha256", "not base64!")).is_err());
    }
}
