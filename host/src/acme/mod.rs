//! The certificate of `[tls]` obtained and renewed over ACME (RFC 8555,
//! with `instant-acme`): Let's Encrypt, or another CA. At start the server
//! orders one when there is none or it expires within `renew_before`, then
//! checks twice a day. Each order answers its HTTP-01 challenges on
//! `http_listen` (a responder that runs only while the order waits) — or
//! its DNS-01 challenges by dynamic update of the zone (`dns_update`,
//! [`dns_update`]) — and writes the new key and chain over `[tls]`'s
//! files, which the TLS acceptor reads again at the next handshake: no
//! restart.

mod dns_update;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use tokio::net::TcpListener;
use tracing::{info, warn};
use waraka_config::AcmeConfig;

/// How often a running server looks at the certificate's expiry.
const CHECK_EVERY: Duration = Duration::from_secs(12 * 3600);
/// How long the CA may take to validate the challenges and to issue.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// What one instance orders, and where it keeps the results.
pub struct Acme {
    settings: AcmeConfig,
    domains: Vec<String>,
    cert: PathBuf,
    key: PathBuf,
    /// The account's credentials, kept between orders.
    account: PathBuf,
    /// DNS-01's updater, with `[acme.dns_update]`.
    dns_update: Option<dns_update::DnsUpdate>,
}

impl Acme {
    /// The ordering for `domains`, writing `cert` and `key`; the account is
    /// kept in `state_dir`. An error when `[acme.dns_update]` is wrong, or
    /// a name is not in its zone.
    pub fn new(
        settings: AcmeConfig,
        domains: Vec<String>,
        cert: PathBuf,
        key: PathBuf,
        state_dir: &Path,
    ) -> Result<Acme> {
        let dns_update = settings
            .dns_update
            .as_ref()
            .map(dns_update::DnsUpdate::new)
            .transpose()?;
        if let Some(update) = &dns_update {
            for domain in &domains {
                update.record_name(domain.trim_start_matches("*."))?;
            }
        }
        Ok(Acme {
            settings,
            domains,
            cert,
            key,
            account: state_dir.join("account.json"),
            dns_update,
        })
    }

    /// When the certificate in place expires; `None` when there is none
    /// that can be read.
    pub fn expiry(&self) -> Option<SystemTime> {
        not_after(&std::fs::read(&self.cert).ok()?)
    }

    /// Whether a new certificate is due: none yet, or it expires within
    /// `renew_before`.
    pub fn due(&self) -> bool {
        self.expiry()
            .is_none_or(|expiry| expiry <= SystemTime::now() + self.settings.renew_before)
    }

    /// Orders a certificate for the domains and writes its key and chain.
    pub async fn obtain(&self) -> Result<()> {
        info!(domains = ?self.domains, directory = %self.settings.directory, "ACME: ordering a certificate");
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self.domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut answers = match &self.dns_update {
            Some(update) => Answers::Dns {
                update,
                placed: Vec::new(),
            },
            None => {
                let responses = Arc::new(Mutex::new(HashMap::new()));
                let responder = Responder::start(self.settings.http_listen, responses.clone()).await?;
                Answers::Http { responses, responder }
            }
        };
        let retries = RetryPolicy::new().timeout(ORDER_TIMEOUT);
        let status = match answers.answer(&mut order).await {
            Ok(()) => order.poll_ready(&retries).await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        let unreachable = answers.unreachable_hint(&self.domains);
        answers.clean_up().await;
        let status = status?;
        if status != OrderStatus::Ready {
            bail!("ACME: the order is {status:?} ({unreachable})");
        }
        let kept = self.kept_key();
        let key = match &kept {
            Some(key) => {
                // As `finalize` asks: the names alone, no subject.
                let mut params = rcgen::CertificateParams::new(self.domains.clone())?;
                params.distinguished_name = rcgen::DistinguishedName::new();
                order.finalize_csr(params.serialize_request(key)?.der()).await?;
                None
            }
            None => Some(order.finalize().await?),
        };
        let chain = order.poll_certificate(&retries).await?;
        for dir in [&self.key, &self.cert].into_iter().filter_map(|path| path.parent()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if let Some(key) = key {
            write_private(&self.key, key.as_bytes())?;
        }
        write_private(&self.cert, chain.as_bytes())?;
        info!(cert = %self.cert.display(), expires = ?self.expiry().map(humantime::format_rfc3339_seconds), "ACME: certificate installed");
        Ok(())
    }

    /// The private key in place, when `reuse_key` keeps it for the next
    /// certificate (none yet, or unreadable: a new one is made).
    fn kept_key(&self) -> Option<rcgen::KeyPair> {
        if !self.settings.reuse_key {
            return None;
        }
        let pem = std::fs::read_to_string(&self.key).ok()?;
        match rcgen::KeyPair::from_pem(&pem) {
            Ok(key) => Some(key),
            Err(e) => {
                warn!(key = %self.key.display(), "ACME: the key in place cannot be reused, a new one is made: {e}");
                None
            }
        }
    }

    /// The account: the one kept from an earlier order, else a new one
    /// (kept for the next).
    async fn account(&self) -> Result<Account> {
        if let Ok(text) = std::fs::read_to_string(&self.account) {
            let credentials: AccountCredentials =
                serde_json::from_str(&text).with_context(|| format!("reading {}", self.account.display()))?;
            return Ok(Account::builder()?.from_credentials(credentials).await?);
        }
        let contact: Vec<String> = self
            .settings
            .contact
            .iter()
            .map(|c| {
                if c.contains(':') {
                    c.clone()
                } else {
                    format!("mailto:{c}")
                }
            })
            .collect();
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new = NewAccount {
            contact: &contact,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = Account::builder()?
            .create(&new, self.settings.directory.clone(), None)
            .await?;
        if let Some(dir) = self.account.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_private(&self.account, serde_json::to_string(&credentials)?.as_bytes())?;
        info!(account = %self.account.display(), "ACME: account created");
        Ok(account)
    }

    /// Orders at start when one is due. A failure is an error only when
    /// there is no certificate at all; an expiring one stays in use.
    pub async fn at_start(&self) -> Result<()> {
        if !self.due() {
            info!(expires = ?self.expiry().map(humantime::format_rfc3339_seconds), "ACME: certificate valid, not renewed");
            return Ok(());
        }
        match self.obtain().await {
            Ok(()) => Ok(()),
            Err(e) if self.expiry().is_some() => {
                warn!("ACME: renewal failed, the certificate in place stays: {e:#}");
                Ok(())
            }
            Err(e) => Err(e.context("ACME: no certificate for [tls]")),
        }
    }

    /// Looks at the certificate twice a day and renews it when due; a
    /// failure is logged and tried again at the next look.
    pub async fn keep_renewed(self: Arc<Self>) {
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            if self.due()
                && let Err(e) = self.obtain().await
            {
                warn!("ACME: renewal failed, trying again in 12 hours: {e:#}");
            }
        }
    }
}

/// How an order's challenges are answered, and what to undo after.
enum Answers<'a> {
    /// HTTP-01: the responder on `http_listen`, with its answers by token.
    Http {
        responses: Arc<Mutex<HashMap<String, String>>>,
        responder: Responder,
    },
    /// DNS-01: TXT records put into the zone, taken out after.
    Dns {
        update: &'a dns_update::DnsUpdate,
        placed: Vec<(hickory_proto::rr::Name, String)>,
    },
}

impl Answers<'_> {
    /// Answers each pending authorization of `order` and tells the CA to look.
    async fn answer(&mut self, order: &mut instant_acme::Order) -> Result<()> {
        let wanted = match self {
            Answers::Http { .. } => ChallengeType::Http01,
            Answers::Dns { .. } => ChallengeType::Dns01,
        };
        let mut ready = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => bail!("ACME: authorization {other:?}"),
            }
            let domain = authorization.identifier().to_string();
            let mut challenge = authorization
                .challenge(wanted.clone())
                .ok_or_else(|| anyhow!("ACME: the CA offers no {wanted:?} challenge for {domain}"))?;
            match self {
                Answers::Http { responses, .. } => {
                    responses.lock().unwrap_or_else(|e| e.into_inner()).insert(
                        challenge.token.clone(),
                        challenge.key_authorization().as_str().to_string(),
                    );
                    challenge.set_ready().await?;
                }
                Answers::Dns { update, placed, .. } => {
                    let name = update.record_name(domain.trim_start_matches("*."))?;
                    let value = challenge.key_authorization().dns_value();
                    update.add(&name, &value).await?;
                    info!(%name, "ACME: DNS-01 answer put into the zone");
                    placed.push((name, value));
                    ready.push(challenge.url.clone());
                }
            }
        }
        if let Answers::Dns { update, .. } = self {
            // The zone's other servers catch up before the CA asks them.
            tokio::time::sleep(update.propagation_delay).await;
            let mut authorizations = order.authorizations();
            while let Some(authorization) = authorizations.next().await {
                let mut authorization = authorization?;
                if let Some(mut challenge) = authorization.challenge(ChallengeType::Dns01)
                    && ready.contains(&challenge.url)
                {
                    challenge.set_ready().await?;
                }
            }
        }
        Ok(())
    }

    /// What to check when the CA could not validate.
    fn unreachable_hint(&self, domains: &[String]) -> String {
        match self {
            Answers::Http { .. } => format!("the CA could not reach {} on port 80?", domains.join(", ")),
            Answers::Dns { .. } => "the CA did not find the TXT records: does the zone's NS reach them?".into(),
        }
    }

    /// Stops the responder, or takes the TXT records out of the zone.
    async fn clean_up(self) {
        match self {
            Answers::Http { responder, .. } => drop(responder),
            Answers::Dns { update, placed, .. } => {
                for (name, value) in placed {
                    if let Err(e) = update.remove(&name, &value).await {
                        warn!(%name, "ACME: the DNS-01 answer could not be taken out of the zone: {e:#}");
                    }
                }
            }
        }
    }
}

/// When the first certificate of a PEM chain stops being valid.
fn not_after(pem: &[u8]) -> Option<SystemTime> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let leaf = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    crate::tls::not_after(&leaf)
}

/// Writes `bytes` to `path` readable by the owner only, through a
/// temporary file renamed over it (a reader sees the old or the new).
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("acme-new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("writing {}", temporary.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// The HTTP-01 responder: answers `GET /.well-known/acme-challenge/TOKEN`
/// with the token's key authorization while it lives.
struct Responder {
    task: tokio::task::JoinHandle<()>,
}

impl Responder {
    async fn start(address: std::net::SocketAddr, responses: Arc<Mutex<HashMap<String, String>>>) -> Result<Responder> {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("ACME: the HTTP-01 responder cannot listen on {address}"))?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let responses = responses.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let answer = challenge_answer(&responses, request.uri().path());
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Ok(Responder { task })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reply to a request for `path`: the key authorization of a known
/// token, else 404.
fn challenge_answer(responses: &Mutex<HashMap<String, String>>, path: &str) -> Response<Full<Bytes>> {
    let answer = path
        .strip_prefix("/.well-known/acme-challenge/")
        .and_then(|token| responses.lock().unwrap_or_else(|e| e.into_inner()).get(token).cloned());
    match answer {
        Some(body) => Response::new(Full::new(Bytes::from(body))),
        None => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_tokens_are_answered() {
        let responses = Mutex::new(HashMap::from([("tok".to_string(), "tok.thumb".to_string())]));
        assert_eq!(
            challenge_answer(&responses, "/.well-known/acme-challenge/tok").status(),
            StatusCode::OK
        );
        for path in ["/.well-known/acme-challenge/other", "/tok", "/"] {
            assert_eq!(
                challenge_answer(&responses, path).status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
    }
}
