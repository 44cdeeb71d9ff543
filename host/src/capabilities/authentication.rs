//! Sender authentication of a received message with the `mail-auth` crate:
//! SPF (RFC 7208) for the client's address and envelope sender, every DKIM
//! signature (RFC 6376), the ARC chain (RFC 8617), DMARC (RFC 7489/9989) for
//! the author's domain, and the `Authentication-Results` field (RFC 8601)
//! that records them. DNS goes
//! through the server's resolver, so `[dns]` applies here too.

use super::{CapabilityError, Dns, DomainKey};
use mail_auth::Txt;
use mail_auth::common::cache::NoCache;
use mail_auth::dkim::Signature;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::report::{IdentityAlignment, PolicyPublished, Record, SPFDomainScope};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput, DmarcResult,
    MessageAuthenticator, SpfOutput, SpfResult,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The result of one check, with RFC 8601's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The check passed.
    Pass,
    /// The check failed.
    Fail,
    /// SPF: the domain says the client is probably not allowed.
    SoftFail,
    /// The domain makes no statement.
    Neutral,
    /// A transient error (DNS) stopped the check; trying later may work.
    TempError,
    /// The domain's record is broken; trying later will not help.
    PermError,
    /// There was nothing to check (no record, no signature).
    None,
}

/// What a domain's DMARC record asks receivers to do with failing mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmarcPolicy {
    /// No record, or `p=none`.
    None,
    /// `p=quarantine`: treat failing mail as suspicious.
    Quarantine,
    /// `p=reject`: refuse failing mail.
    Reject,
}

/// One DKIM signature and how it verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureCheck {
    /// The signing domain (`d=`); empty when the signature did not parse.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// How the signature verified.
    pub outcome: Outcome,
    /// Why it did not pass; empty when it did.
    pub reason: String,
}

/// One ARC set: who sealed the message at that hop and what it recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArcHop {
    /// The sealing domain (`d=` of the `ARC-Seal`).
    pub sealer: String,
    /// The `ARC-Authentication-Results` value after its `i=N;`, unfolded:
    /// the hop's authserv-id and the results it saw.
    pub results: String,
}

/// The message's ARC chain and how it validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArcChain {
    /// `Pass`, `Fail` (broken chain or seal), `Neutral` (expired or body
    /// changed since the last seal), `None` without ARC sets; DNS failures
    /// are `TempError`.
    pub outcome: Outcome,
    /// The sets, oldest (`i=1`) first.
    pub hops: Vec<ArcHop>,
}

impl ArcChain {
    fn from_output(arc: &ArcOutput<'_>) -> ArcChain {
        let hops = arc
            .sets()
            .iter()
            .map(|set| {
                let value = String::from_utf8_lossy(set.results.value);
                let unfolded = value.replace("\r\n", "").replace('\n', "");
                let results = unfolded.split_once(';').map_or("", |(_, rest)| rest);
                ArcHop {
                    sealer: set.seal.header.d.clone(),
                    results: results.trim().to_string(),
                }
            })
            .collect();
        ArcChain {
            outcome: dkim_outcome(arc.result()).0,
            hops,
        }
    }
}

/// Everything verified for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authentication {
    /// The SPF result for the client address.
    pub spf: Outcome,
    /// The domain SPF checked: the envelope sender's, or the HELO name for `<>`.
    pub spf_domain: String,
    /// Every DKIM signature of the message, in header order.
    pub dkim: Vec<SignatureCheck>,
    /// The DMARC result for the author domain.
    pub dmarc: Outcome,
    /// The author (`From:`) domain DMARC evaluated; empty when there was none.
    pub dmarc_domain: String,
    /// The policy that applies to this message if it fails DMARC.
    pub dmarc_policy: DmarcPolicy,
    /// The ARC chain the message arrived with.
    pub arc: ArcChain,
    /// The value of an `Authentication-Results` field recording all of it
    /// (folded, authserv-id first).
    pub header: String,
    /// The DMARC evaluation as an aggregate report counts it, when the
    /// subject asked for it and the author domain's record asks for reports.
    pub dmarc_report: Option<DmarcObservation>,
    /// The failure to report (RFC 7489 §7.3), when the subject asked for
    /// reports and the author domain's record asks for this one (`ruf`, `fo`).
    pub dmarc_failure: Option<DmarcFailure>,
}

/// A message whose DMARC checks failed as its author domain asks to be
/// told of (`ruf` addresses, `fo` options): what a failure report (RFC 6591)
/// says, with the message's header but not its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarcFailure {
    /// The author (`From:`) domain.
    pub domain: String,
    /// The record's `ruf` addresses (`mailto:` ones, without the scheme).
    pub ruf: Vec<String>,
    /// Their size limits in bytes, for those that set one.
    pub ruf_limits: BTreeMap<String, u64>,
    /// The client's address.
    pub client_ip: IpAddr,
    /// The envelope sender, empty for `<>`.
    pub mail_from: String,
    /// Which identifiers passed aligned (`fo=1` reports a message one of
    /// them failed, even if DMARC passed).
    pub alignment: IdentityAlignment,
    /// The `Authentication-Results` value of the checks.
    pub results: String,
    /// The message's header (every field, up to the empty line).
    pub header: String,
}

/// One message's DMARC evaluation as an aggregate report (RFC 7489 §7.2)
/// counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarcObservation {
    /// The author (`From:`) domain the report is about.
    pub domain: String,
    /// The domain's DMARC record, as a report publishes it.
    pub policy: PolicyPublished,
    /// The record's `rua` addresses (`mailto:` ones, without the scheme).
    pub rua: Vec<String>,
    /// The size limits (`!10m`) of those `rua` addresses that set one, in bytes.
    pub rua_limits: BTreeMap<String, u64>,
    /// The message's row: the client's address, the identifiers, the DKIM
    /// and SPF results and the disposition the policy asks for.
    pub record: Record,
}

/// The facts of a transaction that authentication needs.
pub struct Subject<'a> {
    /// The whole message, header and body, as received.
    pub message: &'a [u8],
    /// Who sent it.
    pub client: Client,
    /// Whether to make the message's row for DMARC aggregate reports
    /// ([`Authentication::dmarc_report`]).
    pub dmarc_report: bool,
    /// Whether to find the failure to report
    /// ([`Authentication::dmarc_failure`]).
    pub dmarc_failure: bool,
}

/// Which of the client's names an SPF check is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpfIdentity {
    /// The HELO/EHLO name.
    Helo,
    /// The envelope sender's domain (the HELO name for `<>`).
    MailFrom,
}

/// One SPF check of the client's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpfCheck {
    /// The result; `None` when the identity is not a domain name.
    pub outcome: Outcome,
    /// The domain whose record was evaluated; empty when none was.
    pub domain: String,
    /// The domain's explanation (`exp=`) of a fail, if it has one.
    pub explanation: Option<String>,
}

/// The SMTP client's address and names, and this server's name.
#[derive(Clone, Debug)]
pub struct Client {
    /// The address of the SMTP client.
    pub client_ip: IpAddr,
    /// The HELO/EHLO name (empty if the client sent none).
    pub helo: String,
    /// The envelope sender's address, empty for `<>`.
    pub mail_from: String,
    /// This server's name (the `%{r}` macro).
    pub hostname: String,
}

impl Client {
    /// The HELO name without the brackets of an address literal.
    fn helo_name(&self) -> &str {
        self.helo.trim_start_matches('[').trim_end_matches(']')
    }

    /// The SPF check of `identity` (RFC 7208 §2.4: for `<>` the MAIL FROM
    /// identity is the HELO name's).
    async fn check(&self, authenticator: &MessageAuthenticator, identity: SpfIdentity) -> SpfOutput {
        let helo = self.helo_name();
        if identity == SpfIdentity::MailFrom && !self.mail_from.is_empty() {
            let params = SpfParameters::verify_mail_from(self.client_ip, helo, &self.hostname, &self.mail_from);
            authenticator.verify_spf(params).await
        } else {
            let params = SpfParameters::verify_ehlo(self.client_ip, helo, &self.hostname);
            authenticator.verify_spf(params).await
        }
    }
}

/// Checks SPF (RFC 7208) for the client's address and `identity` before the
/// message, through the server's resolver. A HELO name that is not a domain
/// name (an address literal, a name without a dot) is not checked: `None`.
pub async fn check_spf(dns: &Dns, client: &Client, identity: SpfIdentity) -> Result<SpfCheck, CapabilityError> {
    let helo = client.helo_name();
    let uses_helo = identity == SpfIdentity::Helo || client.mail_from.is_empty();
    if uses_helo && (helo.parse::<IpAddr>().is_ok() || !helo.trim_end_matches('.').contains('.')) {
        return Ok(SpfCheck {
            outcome: Outcome::None,
            domain: String::new(),
            explanation: None,
        });
    }
    let authenticator = MessageAuthenticator(dns.resolver().await?.clone());
    let output = client.check(&authenticator, identity).await;
    Ok(SpfCheck {
        outcome: spf_outcome(output.result()),
        domain: output.domain().to_string(),
        explanation: output.explanation().map(str::to_string),
    })
}

fn spf_outcome(result: SpfResult) -> Outcome {
    match result {
        SpfResult::Pass => Outcome::Pass,
        SpfResult::Fail => Outcome::Fail,
        SpfResult::SoftFail => Outcome::SoftFail,
        SpfResult::Neutral => Outcome::Neutral,
        SpfResult::TempError => Outcome::TempError,
        SpfResult::PermError => Outcome::PermError,
        SpfResult::None => Outcome::None,
    }
}

fn dkim_outcome(result: &DkimResult) -> (Outcome, String) {
    match result {
        DkimResult::Pass => (Outcome::Pass, String::new()),
        DkimResult::Neutral(e) => (Outcome::Neutral, e.to_string()),
        DkimResult::Fail(e) => (Outcome::Fail, e.to_string()),
        DkimResult::PermError(e) => (Outcome::PermError, e.to_string()),
        DkimResult::TempError(e) => (Outcome::TempError, e.to_string()),
        DkimResult::None => (Outcome::None, String::new()),
    }
}

fn dmarc_outcome(result: &DmarcResult) -> Outcome {
    match result {
        DmarcResult::Pass => Outcome::Pass,
        DmarcResult::Fail(_) => Outcome::Fail,
        DmarcResult::TempError(_) => Outcome::TempError,
        DmarcResult::PermError(_) => Outcome::PermError,
        DmarcResult::None => Outcome::None,
    }
}

fn signature_check(signature: Option<&Signature>, result: &DkimResult) -> SignatureCheck {
    let (outcome, reason) = dkim_outcome(result);
    SignatureCheck {
        domain: signature.map(|s| s.d.clone()).unwrap_or_default(),
        selector: signature.map(|s| s.s.clone()).unwrap_or_default(),
        outcome,
        reason,
    }
}

/// The checks of one message, borrowing it.
struct Verified<'x> {
    spf: SpfOutput,
    dkim: Vec<DkimOutput<'x>>,
    dmarc: DmarcOutput,
    arc: ArcOutput<'x>,
}

impl<'x> Verified<'x> {
    /// Checks SPF, every DKIM signature, DMARC and the ARC chain of `message` from `client`.
    async fn of(authenticator: &MessageAuthenticator, client: &Client, message: &'x AuthenticatedMessage<'x>) -> Self {
        let spf = client.check(authenticator, SpfIdentity::MailFrom).await;
        let dkim = authenticator.verify_dkim(message).await;
        let mail_from_domain = client
            .mail_from
            .rsplit_once('@')
            .map_or(client.helo_name(), |(_, domain)| domain);
        let dmarc = authenticator
            .verify_dmarc(DmarcParameters::new(message, &dkim, mail_from_domain, &spf))
            .await;
        let arc = authenticator.verify_arc(message).await;
        Verified { spf, dkim, dmarc, arc }
    }

    /// The `Authentication-Results` that record the checks, under this server's name.
    fn results<'a>(&'a self, client: &'a Client, message: &'a AuthenticatedMessage<'_>) -> AuthenticationResults<'a> {
        let header_from = message.from.first().map(String::as_str).unwrap_or_default();
        let mut results = AuthenticationResults::new(&client.hostname)
            .with_spf_mailfrom_result(&self.spf, client.client_ip, &client.mail_from, client.helo_name())
            .with_dkim_results(&self.dkim, header_from);
        if !self.arc.sets().is_empty() || *self.arc.result() != DkimResult::None {
            results = results.with_arc_result(&self.arc, client.client_ip);
        }
        results.with_dmarc_result(&self.dmarc)
    }
}

/// Verifies SPF, DKIM, ARC and DMARC for `subject`. DNS failures become
/// `TempError` outcomes; only a resolver that cannot be built is an error.
pub async fn authenticate(dns: &Dns, subject: Subject<'_>) -> Result<Authentication, CapabilityError> {
    let authenticator = MessageAuthenticator(dns.resolver().await?.clone());
    let client = &subject.client;
    let message = AuthenticatedMessage::parse(subject.message).unwrap_or_default();
    let verified = Verified::of(&authenticator, client, &message).await;
    let header = verified.results(client, &message).to_string();
    let dmarc_report = subject
        .dmarc_report
        .then(|| dmarc_observation(&verified, client))
        .flatten();
    let dmarc_failure = subject
        .dmarc_failure
        .then(|| dmarc_failure(&verified, client, &header, subject.message))
        .flatten();
    let Verified { spf, dkim, dmarc, arc } = &verified;
    let dmarc_record = dmarc.dmarc_record().is_some();
    Ok(Authentication {
        spf: spf_outcome(spf.result()),
        spf_domain: spf.domain().to_string(),
        dkim: dkim
            .iter()
            .map(|d| signature_check(d.signature(), d.result()))
            .collect(),
        dmarc: dmarc_outcome(&dmarc.result()),
        dmarc_domain: dmarc.domain().to_string(),
        dmarc_policy: match dmarc.policy() {
            Policy::Reject if dmarc_record => DmarcPolicy::Reject,
            Policy::Quarantine if dmarc_record => DmarcPolicy::Quarantine,
            _ => DmarcPolicy::None,
        },
        arc: ArcChain::from_output(arc),
        header,
        dmarc_report,
        dmarc_failure,
    })
}

/// What an aggregate report counts of `verified`, when the author domain's
/// DMARC record has `rua` addresses.
fn dmarc_observation(verified: &Verified<'_>, client: &Client) -> Option<DmarcObservation> {
    let dmarc = &verified.dmarc;
    let found = dmarc.dmarc_record()?;
    let (rua, rua_limits) = mailto_uris(&found.rua);
    if rua.is_empty() {
        return None;
    }
    let domain = dmarc.domain().to_string();
    let mail_from_domain = client
        .mail_from
        .rsplit_once('@')
        .map_or(client.helo_name(), |(_, domain)| domain);
    let record = Record::new()
        .with_source_ip(client.client_ip)
        .with_header_from(domain.as_str())
        .with_envelope_from(mail_from_domain)
        .with_dkim_output(&verified.dkim)
        .with_spf_output(&verified.spf, SPFDomainScope::MailFrom)
        .with_dmarc_output(dmarc);
    Some(DmarcObservation {
        policy: PolicyPublished::from_record(domain.as_str(), found),
        domain,
        rua,
        rua_limits,
        record,
    })
}

/// The `mailto:` addresses of a record's `rua` or `ruf` (without the
/// scheme), and the size limits of those that set one.
fn mailto_uris(uris: &[mail_auth::dmarc::URI]) -> (Vec<String>, BTreeMap<String, u64>) {
    let mailto: Vec<_> = uris.iter().filter(|uri| uri.uri.contains('@')).collect();
    let addresses = mailto.iter().map(|uri| uri.uri.clone()).collect();
    let limits = mailto
        .iter()
        .filter(|uri| uri.max_size > 0)
        .map(|uri| (uri.uri.clone(), uri.max_size as u64))
        .collect();
    (addresses, limits)
}

/// The failure report `verified` calls for, when the message failed DMARC
/// in a way the record's `fo` asks to hear of and `ruf` names addresses.
fn dmarc_failure(verified: &Verified<'_>, client: &Client, results: &str, message: &[u8]) -> Option<DmarcFailure> {
    let dmarc = &verified.dmarc;
    dmarc.failure_report()?;
    let alignment = match (
        dmarc.dkim_result() == &DmarcResult::Pass,
        dmarc.spf_result() == &DmarcResult::Pass,
    ) {
        (true, true) => IdentityAlignment::DkimSpf,
        (true, false) => IdentityAlignment::Dkim,
        (false, true) => IdentityAlignment::Spf,
        (false, false) => IdentityAlignment::None,
    };
    let (ruf, ruf_limits) = mailto_uris(&dmarc.dmarc_record()?.ruf);
    if ruf.is_empty() {
        return None;
    }
    let (header, _) = super::mime::split_header(message);
    Some(DmarcFailure {
        domain: dmarc.domain().to_string(),
        ruf,
        ruf_limits,
        client_ip: client.client_ip,
        mail_from: client.mail_from.clone(),
        alignment,
        results: results.to_string(),
        header: String::from_utf8_lossy(header).into_owned(),
    })
}

/// The domain whose DMARC record applies to mail from `author`: `author`
/// itself or its nearest parent (of two labels at least) with a
/// `v=DMARC1` record at `_dmarc`, as RFC 9989's tree walk finds it for
/// the usual `example.com` and `news.example.com`; `author` when none has one.
pub async fn dmarc_policy_domain(dns: &Dns, author: &str) -> Result<String, CapabilityError> {
    let labels: Vec<&str> = author.split('.').collect();
    for skip in 0..labels.len().saturating_sub(1).max(1) {
        let domain = labels[skip..].join(".");
        match dns.txt(&format!("_dmarc.{domain}")).await {
            Ok(texts) if texts.iter().any(|t| t.trim_start().starts_with("v=DMARC1")) => return Ok(domain),
            Ok(_) | Err(CapabilityError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(author.to_string())
}

/// Those of `rua` that may receive `domain`'s DMARC reports (RFC 7489
/// §7.1): an address in `domain` or below it, or one whose domain OTHER
/// publishes `DOMAIN._report._dmarc.OTHER`. A DNS failure is an error.
pub async fn dmarc_report_consent(dns: &Dns, domain: &str, rua: &[String]) -> Result<Vec<String>, CapabilityError> {
    let authenticator = MessageAuthenticator(dns.resolver().await?.clone());
    let allowed = authenticator
        .verify_dmarc_report_address(domain, rua, None::<&NoCache<Box<str>, Txt>>)
        .await
        .ok_or_else(|| CapabilityError::Backend(format!("looking up who may receive {domain}'s reports failed")))?;
    Ok(allowed.into_iter().cloned().collect())
}

/// Verifies `subject` as [`authenticate`] does and seals it with `key`: an
/// ARC set (RFC 8617) that records the results and continues the chain the
/// message carries. Its three header fields, `ARC-Seal` first. `Invalid`
/// when that chain failed at an earlier hop (`cv=fail` ends a chain). The
/// two signatures are made on the calling thread (an RSA key takes about a
/// millisecond each).
pub async fn seal_arc(
    dns: &Dns,
    subject: Subject<'_>,
    key: DomainKey,
) -> Result<Vec<(String, String)>, CapabilityError> {
    let authenticator = MessageAuthenticator(dns.resolver().await?.clone());
    let message = AuthenticatedMessage::parse(subject.message)
        .ok_or_else(|| CapabilityError::Invalid("the message has no header to seal".into()))?;
    let verified = Verified::of(&authenticator, &subject.client, &message).await;
    if !verified.arc.can_be_sealed() {
        return Err(CapabilityError::Invalid(
            "its ARC chain failed at an earlier hop (cv=fail): not sealed again".into(),
        ));
    }
    let results = verified.results(&subject.client, &message);
    key.seal_arc(&message, &results, &verified.arc)
}
