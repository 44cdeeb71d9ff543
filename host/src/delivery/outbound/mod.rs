//! The delivery worker: takes entries of the outbound queue when they are
//! due, within a global limit and each domain's (see [`pacing`]), routes each
//! domain, hands the message to its servers and settles every recipient:
//! delivered ones leave the entry, temporary failures wait for the next
//! attempt of the retry schedule, permanent ones (and those whose schedule
//! ran out) are bounced to the sender with a DSN.

use super::client::{BindAddresses, ClientError, ClientSettings, RemoteReply, TlsMode, send};
use super::daily::Submitter;
use super::dmarc_failure::DmarcFailureReports;
use super::dmarc_report::DmarcReports;
use super::mta_sts::{Mode, MtaSts, Policy};
use super::notice::{self, About, Action, Report, Returned, status_of};
use super::route::{Address, Dane, Route, RouteSettings, Target, hop_target, resolve, target};
use super::tls_report::{TlsFailure, TlsPolicy, TlsReports};
use crate::capabilities::{CapabilityError, DkimKeys, Dns, Srs, Tlsa};
use crate::policy::{DeliveryInfo, OutboundPolicy, RecipientFailure, SendDecision};
use crate::protocol::{DsnRequests, Return, TlsRequest};
use crate::queue::{Entry, Envelope, QueueStore, RetrySchedule, Selection, now_ms};
use crate::session::{Handoff, HeldCopy, MessageReader, OutboundQueue, SuccessNotice};
use crate::telemetry;
use futures_util::future::BoxFuture;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{error, info, warn};
use waraka_config::NextHopConfig;

mod dmarc_failures;
mod dmarc_reports;
mod give_up;
mod hold;
mod pacing;
mod reports;
mod tls_reports;

use pacing::Pacing;
pub use pacing::{DomainLimit, Limits, Rate};
use tls_reports::sts_policy;

/// A configured next hop that replaces MX lookup (a smarthost or a route).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// A host name (resolved with the `[dns]` resolver) or an IP address.
    pub host: String,
    /// The SMTP port.
    pub port: u16,
    /// User and password for AUTH.
    pub auth: Option<(String, String)>,
    /// Overrides the default TLS policy for this hop.
    pub tls: Option<TlsMode>,
    /// Whether the hop speaks LMTP (a mailbox server: final delivery).
    pub lmtp: bool,
}

impl From<&NextHopConfig> for NextHop {
    fn from(hop: &NextHopConfig) -> NextHop {
        NextHop {
            host: hop.host.clone(),
            port: hop.port,
            auth: hop.user.clone().zip(hop.password.clone()),
            tls: hop.tls.map(TlsMode::from),
            lmtp: hop.lmtp,
        }
    }
}

/// How the worker delivers.
#[derive(Clone, Debug)]
pub struct OutboundSettings {
    /// Our name: in bounces (`Reporting-MTA`, `From`).
    pub hostname: String,
    /// The keys that sign bounces, for our name's domain (or a parent).
    pub dkim: Arc<DkimKeys>,
    /// How the sender of forwarded mail is rewritten (none: kept).
    pub srs: Option<Arc<Srs>>,
    /// How old a deferred entry gets before the sender is told it is late
    /// (once); zero: never.
    pub delay_warning: Duration,
    /// Whether MTA-STS policies (RFC 8461) of destination domains are
    /// looked up and enforced, and the HTTPS port of their policy hosts.
    pub mta_sts: Option<u16>,
    /// Whether DANE (RFC 7672) is obeyed for MX hosts.
    pub dane: bool,
    /// Who sends TLS reports (RFC 8460), when they are sent.
    pub tls_reports: Option<Submitter>,
    /// The DMARC counts whose aggregate reports are sent (RFC 7489), when
    /// they are: the same the `authentication` capability counts into.
    pub dmarc_reports: Option<Arc<DmarcReports>>,
    /// The DMARC failures to report (RFC 7489 §7.3), when they are: those
    /// the `authentication` capability finds.
    pub dmarc_failures: Option<Arc<DmarcFailureReports>>,
    /// The client's defaults (EHLO name, timeouts, TLS policy).
    pub client: ClientSettings,
    /// How DNS answers are turned into servers to try.
    pub route: RouteSettings,
    /// The waits between attempts, and when a message bounces.
    pub schedule: RetrySchedule,
    /// Deliveries at once.
    pub concurrency: usize,
    /// Deliveries at once and per period to each domain, its TLS policy,
    /// and whether unreachable ones are suspended.
    pub limits: Limits,
    /// Every domain goes here when set (unless it has a route).
    pub smarthost: Option<NextHop>,
    /// Per domain (lower-case), a next hop instead of its MX hosts.
    pub routes: HashMap<String, NextHop>,
    /// Per sender (lower-case: an address, `@domain`, or `<>`), a next hop
    /// instead of the smarthost and the MX hosts.
    pub senders: HashMap<String, NextHop>,
    /// Per sender (as `senders`), where its connections come from.
    pub sources: HashMap<String, Source>,
}

/// Where one sender's mail leaves from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Source {
    /// The local addresses its connections come from (unset: `[outbound]`'s).
    pub bind: BindAddresses,
    /// The name its sessions greet with (unset: `[outbound] helo`).
    pub helo: Option<String>,
}

/// The entry of `table` for `sender` (empty for a bounce): its address
/// (any case), then its `@domain`; `<>` for a bounce.
fn by_sender<'a, T>(table: &'a HashMap<String, T>, sender: &str) -> Option<&'a T> {
    if table.is_empty() {
        return None;
    }
    if sender.is_empty() {
        return table.get("<>");
    }
    let sender = sender.to_ascii_lowercase();
    let domain = sender.rsplit_once('@').map(|(_, domain)| format!("@{domain}"));
    table
        .get(&sender)
        .or_else(|| domain.and_then(|domain| table.get(&domain)))
}

impl OutboundSettings {
    /// The configured next hop for mail to `domain` from `sender` (empty
    /// for a bounce): the domain's route, else the sender's (its address,
    /// then its `@domain`), else the smarthost — Postfix's order of
    /// `transport_maps`, `sender_dependent_relayhost_maps` and `relayhost`.
    pub fn fixed_hop(&self, domain: &str, sender: &str) -> Option<&NextHop> {
        self.routes
            .get(domain)
            .or_else(|| by_sender(&self.senders, sender))
            .or(self.smarthost.as_ref())
    }

    /// The client settings for mail from `sender`: `[outbound]`'s, with
    /// the sender's own source address and greeting when it has them.
    pub fn client_for(&self, sender: &str) -> ClientSettings {
        let mut client = self.client.clone();
        if let Some(source) = by_sender(&self.sources, sender) {
            client.bind.v4 = source.bind.v4.or(client.bind.v4);
            client.bind.v6 = source.bind.v6.or(client.bind.v6);
            if let Some(helo) = &source.helo {
                client.helo = helo.clone();
            }
        }
        client
    }
}

/// What became of one recipient in one attempt.
#[derive(Clone, Debug)]
enum Outcome {
    Delivered(Handover),
    Deferred(Report),
    Failed(Report),
}

/// How a recipient was handed to its server.
#[derive(Clone, Debug)]
struct Handover {
    host: String,
    reply: RemoteReply,
    /// Whether the server took the DSN requests on (it offers DSN).
    dsn_passed: bool,
    /// Whether the server put the message in the recipient's mailbox (an
    /// LMTP server), so a success notice says `delivered`, not `relayed`.
    in_mailbox: bool,
}

/// The outcomes of one attempt, sorted, and what the hooks made of them.
#[derive(Default)]
struct Settlement {
    delivered: Vec<(String, Handover)>,
    failed: Vec<(String, Report)>,
    deferred: Vec<(String, Report)>,
    /// Failed attempts once this one counts.
    attempts: u32,
    /// Until the next attempt; `None` when the schedule is used up.
    wait: Option<Duration>,
    suppress_bounce: bool,
}

fn hook_failures(list: &[(String, Report)]) -> Vec<RecipientFailure> {
    list.iter()
        .map(|(recipient, f)| RecipientFailure {
            recipient: recipient.clone(),
            status: f.status.clone(),
            diagnostic: f.diagnostic.clone(),
        })
        .collect()
}

impl Settlement {
    /// Tells the plugins: `delivered`, `deferred` (may change
    /// the wait), `bounce` (may suppress the DSN). A fault changes nothing:
    /// the schedule holds and the DSN is sent.
    async fn consult(&mut self, policy: &dyn OutboundPolicy, info: &DeliveryInfo) {
        // One attempt hands the message to one server, so every delivered
        // recipient shares it; the hook gets the first one's reply to the
        // message (an LMTP server gives each its own).
        if let Some((_, handover)) = self.delivered.first() {
            let recipients: Vec<String> = self.delivered.iter().map(|(rcpt, _)| rcpt.clone()).collect();
            policy
                .delivered(info, &recipients, &handover.host, &handover.reply.to_string())
                .await;
        }
        if let (false, Some(wait)) = (self.deferred.is_empty(), self.wait)
            && let Ok(Some(changed)) = policy.deferred(info, &hook_failures(&self.deferred), wait).await
        {
            self.wait = Some(changed);
        }
        if !self.failed.is_empty() && !info.sender.is_empty() {
            self.suppress_bounce = matches!(policy.bounce(info, &hook_failures(&self.failed)).await, Ok(true));
        }
    }
}

/// A next hop's failed address lookup, as the attempt's failure (retried).
fn lookup_failed(host: &str) -> impl FnOnce(CapabilityError) -> Report + '_ {
    move |e| Report::local("4.4.3", format!("DNS lookup for {host} failed: {e}"))
}

fn delivery_info(entry: &Entry) -> DeliveryInfo {
    DeliveryInfo {
        id: entry.id.clone(),
        domain: entry.domain.clone(),
        sender: entry.sender.clone(),
        recipients: entry.recipients.clone(),
        attempts: entry.attempts,
        arrival_ms: entry.arrival_ms,
    }
}

fn all_recipients(entry: &Entry, outcome: Outcome) -> Vec<(String, Outcome)> {
    entry.recipients.iter().map(|r| (r.clone(), outcome.clone())).collect()
}

/// What the scheduler holds.
#[derive(Default)]
struct State {
    /// Entries waiting for their attempt, by (next attempt, id).
    waiting: BTreeMap<(u64, String), Entry>,
    /// Deliveries in progress, by domain.
    active_by_domain: HashMap<String, usize>,
    /// The entries being delivered, by id (what a selection asks of them).
    in_progress: HashMap<String, Entry>,
    /// Entries held by the administrator, by id.
    held: BTreeMap<String, Entry>,
    /// Entries asked to be held while they were being delivered: held
    /// after their attempt if recipients are left.
    hold_after_attempt: HashSet<String>,
    /// Recent starts of rate-limited domains, and suspended domains.
    pacing: Pacing,
}

impl State {
    /// Deliveries in progress.
    fn active(&self) -> usize {
        self.active_by_domain.values().sum()
    }

    /// Takes the waiting entries `selection` names out of the schedule.
    fn take_waiting(&mut self, selection: &Selection) -> Vec<Entry> {
        let keys: Vec<(u64, String)> = self
            .waiting
            .iter()
            .filter(|(_, e)| selection.matches(e))
            .map(|(key, _)| key.clone())
            .collect();
        keys.iter().filter_map(|key| self.waiting.remove(key)).collect()
    }

    /// Puts `entry` with the held ones or the waiting ones.
    fn place(&mut self, entry: Entry) {
        if entry.held {
            self.held.insert(entry.id.clone(), entry);
        } else {
            self.waiting.insert((entry.next_attempt_ms, entry.id.clone()), entry);
        }
    }

    fn publish_depth(&self) {
        let depth = self.waiting.len() + self.active() + self.held.len();
        metrics::gauge!(telemetry::OUTBOUND_QUEUE_DEPTH).set(depth as f64);
    }
}

/// Counts `n` recipients with a delivery result.
fn count_recipients(result: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!(telemetry::OUTBOUND_RECIPIENTS, "result" => result).increment(n as u64);
    }
}

struct Inner {
    store: QueueStore,
    settings: OutboundSettings,
    dns: Dns,
    /// The plugins' outbound hooks.
    policy: Option<Arc<dyn OutboundPolicy>>,
    /// Destination domains' MTA-STS policies, when on.
    mta_sts: Option<MtaSts>,
    /// The TLS counts for reports, when they are sent.
    tls_reports: Option<Arc<TlsReports>>,
    state: Mutex<State>,
    wake: Notify,
}

/// The host's outbound queue and its delivery worker; cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    inner: Arc<Inner>,
}

fn failure_of(error: &ClientError, host: &str) -> Report {
    let (status, from_remote) = match error {
        ClientError::Refused { reply, .. } => (status_of(reply), true),
        ClientError::Network { .. } => ("4.4.1".to_string(), false),
        ClientError::Timeout(_) => ("4.4.2".to_string(), false),
        ClientError::Protocol { .. } => ("4.5.0".to_string(), false),
        ClientError::Tls(_) => ("4.7.5".to_string(), false),
        ClientError::NoRequireTls(_) => ("5.7.30".to_string(), false),
    };
    Report {
        status,
        diagnostic: error.to_string(),
        remote: Some(host.to_string()),
        from_remote,
    }
}

/// The `targets` that the DNSSEC-validated MX records (`exchanges`) name:
/// the route was resolved without validation, and a forged MX host must not
/// take the mail without DANE's checks.
fn validated_only(mut targets: Vec<Target>, exchanges: &[String]) -> Vec<Target> {
    targets.retain(|t| exchanges.iter().any(|e| e.eq_ignore_ascii_case(&t.host)));
    targets
}

/// Applies `domain`'s MTA-STS policy (RFC 8461) to the route to its MX
/// hosts: under `enforce` only the hosts the policy names are tried, each
/// over TLS with a certificate valid for its name, and a route left with
/// none waits (`4.7.5`); under `testing` hosts it does not name are logged
/// and delivery goes on as usual.
fn apply_policy(
    policy: Option<&Policy>,
    route: Route,
    client: &mut ClientSettings,
    domain: &str,
) -> Result<Route, Report> {
    let (Some(policy), Route::Targets(targets)) = (policy, &route) else {
        return Ok(route);
    };
    match policy.mode {
        Mode::None => Ok(route),
        Mode::Testing => {
            for stray in targets.iter().filter(|t| !policy.allows(&t.host)) {
                warn!(%domain, host = %stray.host, "MX host not in the domain's MTA-STS policy (testing mode: delivering anyway)");
            }
            Ok(route)
        }
        Mode::Enforce => {
            let named: Vec<Target> = targets.iter().filter(|t| policy.allows(&t.host)).cloned().collect();
            if named.is_empty() {
                return Err(Report::local(
                    "4.7.5",
                    format!("no MX host of {domain} is named by its MTA-STS policy"),
                ));
            }
            client.tls = TlsMode::Required;
            Ok(Route::Targets(named))
        }
    }
}

/// For a message that asked for REQUIRETLS (RFC 8689 §4.2.1): only the MX
/// hosts whose names are proven, by DNSSEC-validated MX records (`proven`)
/// or by the domain's MTA-STS policy naming them. None proven is final
/// (`5.7.30`), unless the policy could not be fetched (`policy_failed`).
fn proven_only(
    route: Route,
    policy: Option<&Policy>,
    proven: bool,
    domain: &str,
    policy_failed: bool,
) -> Result<Route, Report> {
    let Route::Targets(targets) = route else {
        return Ok(route);
    };
    if proven {
        return Ok(Route::Targets(targets));
    }
    let named: Vec<Target> = match policy {
        Some(policy) if policy.mode != Mode::None => targets.into_iter().filter(|t| policy.allows(&t.host)).collect(),
        _ => Vec::new(),
    };
    if named.is_empty() {
        return Err(Report::local(
            if policy_failed { "4.7.5" } else { "5.7.30" },
            format!("REQUIRETLS: no MX host of {domain} is proven by DNSSEC or named by an MTA-STS policy"),
        ));
    }
    Ok(Route::Targets(named))
}

/// `[192.0.2.1]` → the address.
fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    inner.strip_prefix("IPv6:").unwrap_or(inner).parse().ok()
}

impl Outbound {
    /// Opens the queue in `dir` (recovering it, see [`QueueStore::open`]) and
    /// schedules what it holds. Call [`Outbound::run`] to deliver.
    pub fn open(
        dir: &Path,
        settings: OutboundSettings,
        dns: Dns,
        policy: Option<Arc<dyn OutboundPolicy>>,
    ) -> io::Result<Outbound> {
        let (store, recovery) = QueueStore::open(dir)?;
        if !recovery.entries.is_empty() {
            info!(entries = recovery.entries.len(), "outbound queue recovered");
        }
        let mta_sts = settings.mta_sts.map(|port| {
            MtaSts::new(
                port,
                settings.route.allow_local,
                Some(dir.with_file_name("mta-sts.json")),
            )
        });
        let tls_reports = settings.tls_reports.clone().map(|submitter| {
            Arc::new(TlsReports::open(
                &dir.with_file_name("tls-reports.json"),
                submitter,
                now_ms(),
            ))
        });
        let outbound = Outbound {
            inner: Arc::new(Inner {
                store,
                settings,
                dns,
                policy,
                mta_sts,
                tls_reports,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
            }),
        };
        outbound.schedule(recovery.entries);
        Ok(outbound)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn schedule(&self, entries: impl IntoIterator<Item = Entry>) {
        {
            let mut state = self.state();
            for entry in entries {
                state.place(entry);
            }
            state.publish_depth();
        }
        self.inner.wake.notify_one();
    }

    /// Makes every waiting entry (of `domain`, if given) due now; returns how many.
    pub fn flush(&self, domain: Option<&str>) -> usize {
        let now = now_ms();
        let count = {
            let mut state = self.state();
            state.pacing.resume(domain);
            let chosen: Vec<(u64, String)> = state
                .waiting
                .iter()
                .filter(|(_, e)| domain.is_none_or(|d| e.domain.eq_ignore_ascii_case(d)))
                .map(|(key, _)| key.clone())
                .collect();
            for key in &chosen {
                if let Some(mut entry) = state.waiting.remove(key) {
                    entry.next_attempt_ms = now;
                    state.waiting.insert((now, entry.id.clone()), entry);
                }
            }
            chosen.len()
        };
        self.inner.wake.notify_one();
        count
    }

    /// Delivers forever: starts due entries within the concurrency limits and
    /// sleeps until the next is due or something changes.
    pub async fn run(self) {
        if self.inner.settings.dane {
            let this = self.clone();
            tokio::spawn(async move { this.check_dnssec().await });
        }
        if self.inner.tls_reports.is_some() || self.inner.settings.dmarc_reports.is_some() {
            let this = self.clone();
            tokio::spawn(async move { this.report_daily().await });
        }
        if let Some(failures) = self.inner.settings.dmarc_failures.clone() {
            let this = self.clone();
            tokio::spawn(async move { this.report_dmarc_failures(failures).await });
        }
        loop {
            let next_due = self.start_due();
            match next_due {
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now_ms()));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.inner.wake.notified() => {}
                    }
                }
                None => self.inner.wake.notified().await,
            }
        }
    }

    /// Starts every due entry the limits allow; returns when the next
    /// waiting entry is due or a rate-limited domain may start again
    /// (`None`: nothing waits, or the concurrency limits hold the rest and
    /// a finishing delivery will wake the worker).
    fn start_due(&self) -> Option<u64> {
        let now = now_ms();
        let settings = &self.inner.settings;
        let mut started = Vec::new();
        let next_due = {
            let mut guard = self.state();
            let state = &mut *guard;
            let mut next_due = None;
            let mut rate_opens: Option<u64> = None;
            let mut chosen = Vec::new();
            let active = state.active();
            let mut by_domain: HashMap<&str, usize> = HashMap::new();
            for ((at, id), entry) in &state.waiting {
                if *at > now {
                    next_due = Some(*at);
                    break;
                }
                if active + chosen.len() >= settings.concurrency {
                    break;
                }
                let domain = entry.domain.as_str();
                let active = state.active_by_domain.get(domain).copied().unwrap_or(0);
                let count = by_domain.entry(domain).or_insert(active);
                if *count >= settings.limits.concurrency(domain) {
                    continue;
                }
                if let Err(opens) = state.pacing.admit(domain, settings.limits.rate(domain), now) {
                    rate_opens = Some(rate_opens.map_or(opens, |t| t.min(opens)));
                    continue;
                }
                *count += 1;
                chosen.push((*at, id.clone()));
            }
            for key in chosen {
                let entry = state.waiting.remove(&key).expect("chosen from the map");
                *state.active_by_domain.entry(entry.domain.clone()).or_default() += 1;
                state.in_progress.insert(entry.id.clone(), entry.clone());
                started.push(entry);
            }
            match (next_due, rate_opens) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        for entry in started {
            let this = self.clone();
            tokio::spawn(async move { this.deliver(entry).await });
        }
        next_due
    }

    /// One attempt for `entry`, its results settled on disk, the scheduler told.
    async fn deliver(self, entry: Entry) {
        let domain = entry.domain.clone();
        let id = entry.id.clone();
        let fallback = entry.clone();
        let this = self.clone();
        let settled = tokio::spawn(async move { this.attempt_and_settle(entry).await }).await;
        let (mut kept, bounces) = match settled {
            Ok(result) => result,
            Err(e) => {
                error!(id = %fallback.id, error = %e, "a delivery task failed; retrying later");
                let mut entry = fallback;
                entry.next_attempt_ms = now_ms() + 60_000;
                (Some(entry), Vec::new())
            }
        };
        // A hold may come in until the entry is back in the scheduler, so
        // it is looked for under the lock that puts the entry back.
        let mut bounces = bounces;
        loop {
            let held_now = {
                let mut state = self.state();
                if state.hold_after_attempt.remove(&id) && kept.is_some() {
                    kept.take()
                } else {
                    state.in_progress.remove(&id);
                    if let Some(count) = state.active_by_domain.get_mut(&domain) {
                        *count -= 1;
                        if *count == 0 {
                            state.active_by_domain.remove(&domain);
                        }
                    }
                    for entry in kept.take().into_iter().chain(bounces.drain(..)) {
                        state.place(entry);
                    }
                    state.publish_depth();
                    None
                }
            };
            let Some(entry) = held_now else { break };
            // Scheduled by mark_held, held or (when that fails) as it was;
            // told once the entry on disk says so.
            if let Ok(1) = self.mark_held(vec![entry], true).await {
                info!(id = %id, "queue entry held after its attempt");
            }
        }
        self.inner.wake.notify_one();
    }

    /// Runs a blocking queue operation off the async threads.
    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce(&Outbound) -> T + Send + 'static) -> T {
        let this = self.clone();
        tokio::task::spawn_blocking(move || work(&this))
            .await
            .expect("queue operations do not panic")
    }

    /// Asks `send-email`, attempts delivery, asks the settling hooks and
    /// records the outcome. Returns the entry if recipients wait, and the
    /// bounces queued.
    async fn attempt_and_settle(&self, mut entry: Entry) -> (Option<Entry>, Vec<Entry>) {
        let id = entry.id.clone();
        if !self.blocking(move |o| o.inner.store.contains(&id)).await {
            info!(id = %entry.id, "queue entry deleted before its attempt; dropped");
            return (None, Vec::new());
        }
        let info = delivery_info(&entry);
        let decision = match &self.inner.policy {
            Some(policy) => policy.send_email(&info).await,
            None => Ok(SendDecision::Deliver),
        };
        let outcomes = match decision {
            Ok(SendDecision::Deliver) => {
                let suspended = self.state().pacing.suspension(&entry.domain, now_ms());
                match suspended {
                    Some(report) => all_recipients(&entry, Outcome::Deferred(report)),
                    None => self.attempt(&entry, &info).await,
                }
            }
            Ok(SendDecision::Delay(wait)) => {
                info!(id = %entry.id, wait = %humantime::format_duration(wait), "delivery delayed by a plugin");
                entry.next_attempt_ms = now_ms() + wait.as_millis() as u64;
                let saved = entry.clone();
                if let Err(e) = self.blocking(move |o| o.inner.store.update(&saved)).await {
                    error!(id = %entry.id, error = %e, "could not save the delay");
                }
                return (Some(entry), Vec::new());
            }
            Ok(SendDecision::Drop) => {
                count_recipients("dropped", entry.recipients.len());
                info!(id = %entry.id, recipients = %entry.recipients.join(","), "dropped by a plugin: not delivered, no bounce");
                let done = entry.clone();
                if let Err(e) = self.blocking(move |o| o.inner.store.remove(&done)).await {
                    error!(id = %entry.id, error = %e, "could not remove a dropped queue entry");
                }
                return (None, Vec::new());
            }
            Err(fault) => all_recipients(&entry, Outcome::Deferred(Report::local("4.3.0", fault.to_string()))),
        };
        self.settle(entry, &info, outcomes).await
    }

    /// Sorts the `outcomes` of `entry`, asks the settling hooks and records
    /// the result: the entry if recipients wait, and the bounces queued.
    async fn settle(
        &self,
        entry: Entry,
        info: &DeliveryInfo,
        outcomes: Vec<(String, Outcome)>,
    ) -> (Option<Entry>, Vec<Entry>) {
        let mut settlement = self.sort(&entry, outcomes);
        if let Some(policy) = &self.inner.policy {
            settlement.consult(policy.as_ref(), info).await;
        }
        self.blocking(move |o| o.record(entry, settlement)).await
    }

    /// The servers for `domain` and the client settings to use with them:
    /// the `chosen` hop of a queue plugin, else the outbound hooks', the
    /// configured hop ([`OutboundSettings::fixed_hop`]), or the MX hosts; as the sender's
    /// `tls_request` asks (RFC 8689).
    async fn route(
        &self,
        info: &DeliveryInfo,
        chosen: Option<&NextHopConfig>,
        tls_request: TlsRequest,
    ) -> Result<(Route, ClientSettings, Option<TlsPolicy>), Report> {
        let domain = info.domain.as_str();
        let settings = &self.inner.settings;
        let mut client = settings.client_for(&info.sender);
        if let Some(tls) = settings.limits.tls(domain) {
            client.tls = tls;
        }
        let required = tls_request == TlsRequest::Required;
        let waived = tls_request == TlsRequest::PolicyWaived;
        let unreported = |(route, client)| (route, client, None);
        if let Some(hop) = chosen {
            return self.fixed_route(&NextHop::from(hop), client).await.map(unreported);
        }
        let from_plugin = match &self.inner.policy {
            Some(policy) => policy
                .get_mx(info)
                .await
                .map_err(|fault| Report::local("4.3.0", fault.to_string()))?,
            None => None,
        };
        if let Some(hops) = from_plugin {
            let mut targets = Vec::new();
            for hop in hops {
                targets.push(self.next_hop_target(&hop.host, hop.port).await?);
            }
            targets.retain(|t| !t.addrs.is_empty());
            let route = if targets.is_empty() {
                Route::NoMailServer
            } else {
                Route::Targets(targets)
            };
            return Ok((route, client, None));
        }
        if let Some(hop) = settings.fixed_hop(domain, &info.sender) {
            return self.fixed_route(hop, client).await.map(unreported);
        }
        if let Some(ip) = address_literal(domain) {
            if required {
                return Err(Report::local(
                    "5.7.30",
                    format!("REQUIRETLS: the server of the address literal {domain} cannot be authenticated"),
                ));
            }
            let target = Target {
                host: ip.to_string(),
                addrs: vec![Address::Inet(SocketAddr::new(ip, settings.route.port))],
                dane: Dane::None,
            };
            return Ok((Route::Targets(vec![target]), client, None));
        }
        let route = resolve(&self.inner.dns, domain, &settings.route)
            .await
            .map_err(|e| Report::local("4.4.3", format!("DNS lookup for {domain} failed: {e}")))?;
        // `TLS-Required: No`: the domain's policies are not looked up.
        let (policy, fetch_failure) = match &self.inner.mta_sts {
            Some(mta_sts) if !waived => mta_sts.policy(&self.inner.dns, domain).await,
            _ => (None, None),
        };
        if let Some(failure) = fetch_failure
            && self.inner.tls_reports.is_some()
        {
            let policy = policy.as_deref().map_or(
                TlsPolicy::Sts {
                    lines: Vec::new(),
                    mx: Vec::new(),
                },
                sts_policy,
            );
            self.tls_failed(domain, policy, "", failure);
        }
        let mut route = apply_policy(policy.as_deref(), route, &mut client, domain)?;
        let mut proven = false;
        if settings.dane && !waived {
            (route, proven) = self.with_dane(domain, route).await?;
        }
        if required {
            route = proven_only(route, policy.as_deref(), proven, domain, fetch_failure.is_some())?;
        }
        // A session not held to the domain's policies is not reported.
        if self.inner.tls_reports.is_none() || waived {
            return Ok((route, client, None));
        }
        let reported = match policy.as_deref() {
            Some(policy) if policy.mode != Mode::None => {
                // Testing mode: the certificate is checked for the report
                // but not enforced.
                client.audit = policy.mode == Mode::Testing;
                sts_policy(policy)
            }
            _ => TlsPolicy::NoPolicy,
        };
        Ok((route, client, Some(reported)))
    }

    /// Says in the log whether DNSSEC validation works, as DANE needs: where
    /// it does not (DNS servers that strip DNSSEC records), every signed
    /// destination domain is deferred.
    async fn check_dnssec(&self) {
        match self.inner.dns.dnssec_works().await {
            Ok(true) => info!("DANE: DNSSEC validation works through the configured DNS servers"),
            Ok(false) => error!(
                "DANE: the DNS servers give the root zone without DNSSEC proof; mail to signed domains will be deferred (set [outbound] dane = false, or use servers that pass DNSSEC records)"
            ),
            Err(e) => error!(
                error = %e,
                "DANE: DNSSEC validation fails through the configured DNS servers; mail to signed domains will be deferred (set [outbound] dane = false, or use servers that pass DNSSEC records)"
            ),
        }
    }

    /// `route` with what DANE says of each MX host (RFC 7672), when DNSSEC
    /// proves `domain`'s MX records (or, without MX records, its address):
    /// only the hosts those records name, each with the TLSA records DNSSEC
    /// proves or why they could not be validated. MX records that fail
    /// validation, or name none of the hosts, defer the delivery (`4.7.5`):
    /// a forged answer must not lead around DANE. Also whether DNSSEC
    /// proved the hosts' names.
    async fn with_dane(&self, domain: &str, route: Route) -> Result<(Route, bool), Report> {
        let Route::Targets(targets) = route else {
            return Ok((route, false));
        };
        let dns = &self.inner.dns;
        let exchanges = dns.secure_mx(domain).await.map_err(|e| {
            Report::local(
                "4.7.5",
                format!("DNSSEC validation of {domain}'s MX records failed: {e}"),
            )
        })?;
        let mut targets = match exchanges {
            Some(exchanges) => {
                let targets = validated_only(targets, &exchanges);
                if targets.is_empty() {
                    return Err(Report::local(
                        "4.7.5",
                        format!("none of {domain}'s MX hosts is among its DNSSEC-validated MX records"),
                    ));
                }
                targets
            }
            None => {
                // No proven MX records: DANE still applies to the implicit MX,
                // the domain itself, when DNSSEC proves its address (RFC 7672 2.2.1).
                let implicit = matches!(targets.as_slice(), [only] if only.host.eq_ignore_ascii_case(domain));
                let proven = implicit
                    && dns.address_is_secure(domain).await.map_err(|e| {
                        Report::local("4.7.5", format!("DNSSEC validation of {domain}'s address failed: {e}"))
                    })?;
                if !proven {
                    return Ok((Route::Targets(targets), false));
                }
                targets
            }
        };
        for target in &mut targets {
            target.dane = match dns.tlsa(&target.host, self.inner.settings.route.port).await {
                Ok(Some(records)) if !records.is_empty() => Dane::Records(records.into()),
                Ok(_) => Dane::None,
                Err(e) => Dane::Failed(format!(
                    "DNSSEC validation of {}'s TLSA records failed: {e}",
                    target.host
                )),
            };
        }
        Ok((Route::Targets(targets), true))
    }

    /// The route to one configured or plugin-chosen next hop, and the
    /// client settings it asks for.
    async fn fixed_route(&self, hop: &NextHop, mut client: ClientSettings) -> Result<(Route, ClientSettings), Report> {
        client.auth = hop.auth.clone();
        client.tls = hop.tls.unwrap_or(client.tls);
        client.lmtp = hop.lmtp;
        let target = hop_target(&self.inner.dns, &hop.host, hop.port)
            .await
            .map_err(lookup_failed(&hop.host))?;
        let route = if target.addrs.is_empty() {
            Route::NoMailServer
        } else {
            Route::Targets(vec![target])
        };
        Ok((route, client))
    }

    /// A next hop of the outbound hooks (`get-mx`): a server on the network
    /// (local addresses allowed: a plugin chose them), never a socket.
    async fn next_hop_target(&self, host: &str, port: u16) -> Result<Target, Report> {
        target(&self.inner.dns, host, port, true)
            .await
            .map_err(lookup_failed(host))
    }

    /// Tries the entry's servers in order until one gives per-recipient answers.
    async fn attempt(&self, entry: &Entry, info: &DeliveryInfo) -> Vec<(String, Outcome)> {
        let all = |outcome: Outcome| all_recipients(entry, outcome);
        let (targets, client, reported) = match self.route(info, entry.hop.as_ref(), entry.tls_request).await {
            Ok((Route::Targets(mut targets), client, reported)) => {
                let route = &self.inner.settings.route;
                for target in &mut targets {
                    target.addrs.retain(|addr| route.allows(addr));
                }
                targets.retain(|target| !target.addrs.is_empty());
                if targets.is_empty() {
                    return all(Outcome::Failed(Report::local(
                        "5.4.4",
                        format!(
                            "the mail servers of {} have no address of the IP version [outbound] inet_protocols allows",
                            entry.domain
                        ),
                    )));
                }
                (targets, client, reported)
            }
            Ok((Route::NullMx, _, _)) => {
                return all(Outcome::Failed(Report::local(
                    "5.1.10",
                    format!("{} accepts no mail (null MX)", entry.domain),
                )));
            }
            Ok((Route::NoMailServer, _, _)) => {
                return all(Outcome::Failed(Report::local(
                    "5.1.2",
                    format!("no mail server found for {}", entry.domain),
                )));
            }
            Err(failure) if failure.is_permanent() => return all(Outcome::Failed(failure)),
            Err(failure) => return all(Outcome::Deferred(failure)),
        };
        let path = self.inner.store.message_path(entry);
        let mut last = Report::local("4.4.1", "no server could be reached");
        // Whether any server failed other than by not offering REQUIRETLS.
        let mut other_failure = false;
        // Whether every server tried was out of reach (no session at all).
        let mut unreachable = true;
        for target in &targets {
            let dane_client;
            let client = match &target.dane {
                Dane::None => &client,
                Dane::Records(records) => {
                    info!(id = %entry.id, host = %target.host, records = records.len(), "DANE: the certificate must match the host's TLSA records");
                    dane_client = ClientSettings {
                        dane: Some(records.clone()),
                        ..client.clone()
                    };
                    &dane_client
                }
                Dane::Failed(reason) => {
                    warn!(id = %entry.id, host = %target.host, "{reason}; trying the next host");
                    if reported.is_some() {
                        let policy = TlsPolicy::Tlsa {
                            mx_host: target.host.clone(),
                            records: Vec::new(),
                        };
                        self.tls_failed(&entry.domain, policy, &target.host, TlsFailure::DnssecInvalid);
                    }
                    last = Report::local("4.7.5", reason.clone());
                    other_failure = true;
                    unreachable = false;
                    continue;
                }
            };
            for addr in &target.addrs {
                let watched;
                let client = match reported.as_ref().and_then(|base| {
                    let policy = match &target.dane {
                        Dane::Records(records) => TlsPolicy::Tlsa {
                            mx_host: target.host.clone(),
                            records: records.iter().map(Tlsa::presentation).collect(),
                        },
                        _ => base.clone(),
                    };
                    self.tls_seen(&entry.domain, policy, &target.host, addr.ip())
                }) {
                    Some(seen) => {
                        watched = ClientSettings {
                            tls_seen: Some(seen),
                            ..client.clone()
                        };
                        &watched
                    }
                    None => client,
                };
                let file = match tokio::fs::File::open(&path).await {
                    Ok(file) => file,
                    Err(e) => {
                        return all(Outcome::Deferred(Report::local(
                            "4.3.0",
                            format!("queued message: {e}"),
                        )));
                    }
                };
                let size = file.metadata().await.map_or(0, |m| m.len());
                let sent = send(
                    addr,
                    &target.host,
                    client,
                    entry.envelope(),
                    tokio::io::BufReader::new(file),
                    size,
                )
                .await;
                match sent {
                    Ok(delivery) => {
                        return entry
                            .recipients
                            .iter()
                            .enumerate()
                            .map(|(i, rcpt)| {
                                let reply = delivery.outcome(i).clone();
                                let outcome = if reply.is_positive() {
                                    Outcome::Delivered(Handover {
                                        host: target.host.clone(),
                                        reply,
                                        dsn_passed: delivery.dsn_passed,
                                        in_mailbox: client.lmtp,
                                    })
                                } else {
                                    let failure = Report::from_reply(&target.host, &reply);
                                    if reply.is_permanent() {
                                        Outcome::Failed(failure)
                                    } else {
                                        Outcome::Deferred(failure)
                                    }
                                };
                                (rcpt.clone(), outcome)
                            })
                            .collect();
                    }
                    Err(e) => {
                        let failure = failure_of(&e, &target.host);
                        if e.try_next_host() {
                            warn!(id = %entry.id, host = %target.host, %addr, error = %e, "delivery attempt failed; trying the next address");
                            other_failure |= !matches!(e, ClientError::NoRequireTls(_));
                            unreachable &= e.is_unreachable();
                            last = failure;
                            continue;
                        }
                        return all(if e.is_permanent() {
                            Outcome::Failed(failure)
                        } else {
                            Outcome::Deferred(failure)
                        });
                    }
                }
            }
        }
        // No server offers REQUIRETLS: waiting will not change that.
        if !other_failure && last.is_permanent() {
            return all(Outcome::Failed(last));
        }
        if unreachable && other_failure {
            self.suspend(entry, &last);
        }
        all(Outcome::Deferred(last))
    }

    /// Suspends the domain of `entry`, none of whose servers could be
    /// reached, until the entry's next attempt by the retry schedule:
    /// that attempt finds out whether the domain is back, and meanwhile
    /// its other mail is deferred without knocking.
    fn suspend(&self, entry: &Entry, failure: &Report) {
        let settings = &self.inner.settings;
        if !settings.limits.suspend_unreachable {
            return;
        }
        let Some(wait) = settings.schedule.wait_after(entry.attempts + 1) else {
            return;
        };
        warn!(domain = %entry.domain, until = %humantime::format_duration(wait), error = %failure.diagnostic, "no server of the domain could be reached: its mail waits for this entry's retry");
        let until = now_ms() + wait.as_millis() as u64;
        self.state().pacing.suspend(&entry.domain, until, failure.clone());
    }

    /// Sorts the outcomes of an attempt: delivered, failed for good (with
    /// those whose retry schedule is used up), or waiting for the next attempt.
    fn sort(&self, entry: &Entry, outcomes: Vec<(String, Outcome)>) -> Settlement {
        let attempts = entry.attempts + 1;
        let mut settlement = Settlement {
            attempts,
            wait: self.inner.settings.schedule.wait_after(attempts),
            ..Settlement::default()
        };
        for (rcpt, outcome) in outcomes {
            match outcome {
                Outcome::Delivered(handover) => settlement.delivered.push((rcpt, handover)),
                Outcome::Failed(failure) => settlement.failed.push((rcpt, failure)),
                Outcome::Deferred(failure) => settlement.deferred.push((rcpt, failure)),
            }
        }
        if settlement.wait.is_none() {
            for (rcpt, mut failure) in settlement.deferred.drain(..) {
                warn!(id = %entry.id, recipient = %rcpt, attempts, "giving up: the retry schedule is used up");
                failure.diagnostic = format!("{} (gave up after {attempts} attempts)", failure.diagnostic);
                settlement.failed.push((rcpt, failure));
            }
        }
        settlement
    }

    /// Records a settlement on disk: delivered recipients leave, failed ones
    /// are bounced (unless suppressed), deferred ones wait; the notices the
    /// sender asked for are queued (see [`Outbound::notices`]). Returns the
    /// entry if recipients are left, and the notices queued.
    fn record(&self, mut entry: Entry, settlement: Settlement) -> (Option<Entry>, Vec<Entry>) {
        let store = &self.inner.store;
        let Settlement {
            delivered,
            failed,
            mut deferred,
            attempts,
            wait,
            suppress_bounce,
        } = settlement;
        let latency = Duration::from_millis(now_ms().saturating_sub(entry.arrival_ms));
        for (rcpt, handover) in &delivered {
            info!(id = %entry.id, recipient = %rcpt, host = %handover.host, reply = %handover.reply, attempts, "delivered");
            metrics::histogram!(telemetry::OUTBOUND_DELIVERY_SECONDS).record(latency.as_secs_f64());
        }
        count_recipients("delivered", delivered.len());
        for (rcpt, failure) in &failed {
            warn!(id = %entry.id, recipient = %rcpt, status = %failure.status, diagnostic = %failure.diagnostic, "delivery failed permanently");
        }
        if suppress_bounce && !failed.is_empty() {
            info!(id = %entry.id, "bounce suppressed by a plugin");
        }
        let wait = wait.unwrap_or(Duration::from_secs(60));
        let failed_count = failed.len();
        let failed = if suppress_bounce { Vec::new() } else { failed };
        let (notices, unsent) = self.notices(&mut entry, &delivered, failed, &deferred, attempts, wait);
        // Recipients whose bounce could not be queued are retried, not counted as bounced.
        count_recipients("bounced", failed_count - unsent.len());
        deferred.extend(unsent);
        if deferred.is_empty() {
            if let Err(e) = store.remove(&entry) {
                error!(id = %entry.id, error = %e, "could not remove a finished queue entry");
            }
            return (None, notices);
        }
        count_recipients("deferred", deferred.len());
        let first = &deferred[0].1;
        entry.recipients = deferred.iter().map(|(rcpt, _)| rcpt.clone()).collect();
        entry.attempts = attempts;
        entry.next_attempt_ms = now_ms() + wait.as_millis() as u64;
        entry.last_error = Some(first.diagnostic.clone());
        warn!(id = %entry.id, recipients = %entry.recipients.join(","), attempts, retry_in = %humantime::format_duration(wait), error = %first.diagnostic, "delivery deferred");
        if let Err(e) = store.update(&entry) {
            error!(id = %entry.id, error = %e, "could not save the retry state");
        }
        (Some(entry), notices)
    }

    /// Queues the notices of one attempt to the sender of `entry`, each only
    /// for the recipients whose `NOTIFY` wants it (RFC 3461): a failure
    /// notice for `failed`; a relay notice for `delivered` ones whose server
    /// did not take the request on; once per entry, when it is older than
    /// `delay_warning`, a delay notice for `deferred` ones. A mail from `<>`
    /// gets none. Returns the notices queued and the failed recipients whose
    /// notice could not be queued (to retry them rather than lose the notice).
    fn notices(
        &self,
        entry: &mut Entry,
        delivered: &[(String, Handover)],
        failed: Vec<(String, Report)>,
        deferred: &[(String, Report)],
        attempts: u32,
        wait: Duration,
    ) -> (Vec<Entry>, Vec<(String, Report)>) {
        let mut queued = Vec::new();
        if entry.sender.is_empty() {
            if !failed.is_empty() {
                let recipients: Vec<&str> = failed.iter().map(|(r, _)| r.as_str()).collect();
                warn!(id = %entry.id, recipients = %recipients.join(","), "double bounce dropped: the failed message was itself a bounce");
            }
            return (queued, Vec::new());
        }
        let (failed, unwanted): (Vec<_>, Vec<_>) = failed
            .into_iter()
            .partition(|(rcpt, _)| entry.dsn.recipient(rcpt).wants_failure());
        if !unwanted.is_empty() {
            let recipients: Vec<&str> = unwanted.iter().map(|(r, _)| r.as_str()).collect();
            info!(id = %entry.id, recipients = %recipients.join(","), "no failure notice: NOTIFY did not ask for one");
        }
        let mut unsent = Vec::new();
        if !failed.is_empty() {
            match self.notify(entry, Action::Failed, &failed, None) {
                Ok(notice) => queued.extend(notice),
                Err(e) => {
                    error!(id = %entry.id, error = %e, "could not queue the bounce; keeping the recipients for a retry");
                    unsent = failed;
                }
            }
        }
        let notify_success: Vec<&(String, Handover)> = delivered
            .iter()
            .filter(|(rcpt, handover)| !handover.dsn_passed && entry.dsn.recipient(rcpt).wants_success())
            .collect();
        for (action, in_mailbox) in [(Action::Delivered, true), (Action::Relayed, false)] {
            let reports: Vec<(String, Report)> = notify_success
                .iter()
                .filter(|(_, handover)| handover.in_mailbox == in_mailbox)
                .map(|(rcpt, handover)| (rcpt.clone(), Report::from_reply(&handover.host, &handover.reply)))
                .collect();
            if !reports.is_empty() {
                self.notify_or_log(entry, action, &reports, None, &mut queued);
            }
        }
        let warning = self.inner.settings.delay_warning;
        let late = now_ms().saturating_sub(entry.arrival_ms) >= warning.as_millis() as u64;
        if !deferred.is_empty() && !entry.delay_notified && !warning.is_zero() && late {
            entry.delay_notified = true;
            let delayed: Vec<(String, Report)> = deferred
                .iter()
                .filter(|(rcpt, _)| entry.dsn.recipient(rcpt).wants_delay())
                .cloned()
                .collect();
            if !delayed.is_empty() {
                let schedule = &self.inner.settings.schedule;
                let until = now_ms() + (wait + schedule.remaining_after(attempts)).as_millis() as u64;
                self.notify_or_log(entry, Action::Delayed, &delayed, Some(until), &mut queued);
            }
        }
        (queued, unsent)
    }

    /// [`Outbound::notify`], adding the notice to `queued`; an error is
    /// logged (only a failure notice is worth keeping recipients for).
    fn notify_or_log(
        &self,
        entry: &Entry,
        action: Action,
        reports: &[(String, Report)],
        retry_until_ms: Option<u64>,
        queued: &mut Vec<Entry>,
    ) {
        match self.notify(entry, action, reports, retry_until_ms) {
            Ok(notice) => queued.extend(notice),
            Err(e) => error!(id = %entry.id, ?action, error = %e, "could not queue a delivery notice"),
        }
    }

    /// Queues a DSN of `action` for `reports` to the sender of `entry`.
    fn notify(
        &self,
        entry: &Entry,
        action: Action,
        reports: &[(String, Report)],
        retry_until_ms: Option<u64>,
    ) -> io::Result<Vec<Entry>> {
        let store = &self.inner.store;
        // The notice may travel without TLS (RFC 8689 binds no `<>`
        // sender): the content of a REQUIRETLS message never goes in it.
        let ret = match entry.tls_request {
            TlsRequest::Required => Some(Return::Headers),
            _ => entry.dsn.message.ret,
        };
        let returned = Returned::choose(&store.message_path(entry), action, ret)?;
        let about = About {
            retry_until_ms,
            ..About::entry(entry)
        };
        let queued = self.queue_notice(about, action, reports, &returned)?;
        info!(id = %entry.id, to = %entry.sender, notice = %queued[0].id, ?action, "delivery notice queued");
        Ok(queued)
    }

    /// Queues the notices of a message accepted by the session and not
    /// queued here: `delivered` and `relayed` (see [`SuccessNotice`]).
    fn queue_success(&self, message: MessageReader, notice: &SuccessNotice) -> io::Result<Vec<Entry>> {
        let returned = Returned::Header(notice::header_of(message)?);
        let about = About {
            id: &notice.id,
            sender: &notice.sender,
            arrival_ms: now_ms(),
            dsn: &notice.dsn,
            retry_until_ms: None,
        };
        let delivered: Vec<(String, Report)> = notice
            .delivered
            .iter()
            .map(|rcpt| (rcpt.clone(), Report::delivered()))
            .collect();
        let relayed: Vec<(String, Report)> = notice
            .relayed
            .iter()
            .map(|h| (h.recipient.clone(), Report::handed_on(&h.host, &h.reply)))
            .collect();
        let mut queued = Vec::new();
        for (action, reports) in [(Action::Delivered, delivered), (Action::Relayed, relayed)] {
            if !reports.is_empty() {
                queued.extend(self.queue_notice(about, action, &reports, &returned)?);
                info!(id = %notice.id, to = %notice.sender, ?action, "delivery notice queued");
            }
        }
        Ok(queued)
    }

    /// Where a notice to `sender` goes: for one of our SRS senders (mail
    /// forwarded here), straight to whom it stands for, without a trip
    /// through this domain's MX and the `srs` plugin; else `sender`.
    fn notice_recipient(&self, sender: &str) -> String {
        let original = self
            .inner
            .settings
            .srs
            .as_ref()
            .and_then(|srs| srs.reverse(sender).ok().flatten());
        original.unwrap_or_else(|| sender.to_string())
    }

    /// Signs and queues the DSN of `action` about a message to its sender.
    fn queue_notice(
        &self,
        about: About<'_>,
        action: Action,
        reports: &[(String, Report)],
        returned: &Returned,
    ) -> io::Result<Vec<Entry>> {
        let settings = &self.inner.settings;
        let to = [self.notice_recipient(about.sender)];
        let about = About {
            sender: &to[0],
            ..about
        };
        let message = notice::signed(
            notice::dsn(&settings.hostname, about, action, reports, returned),
            &settings.hostname,
            &settings.dkim,
        );
        self.inner.store.enqueue(
            message.as_slice(),
            Envelope {
                sender: "",
                recipients: &to,
                dsn: &DsnRequests::default(),
                tls_request: TlsRequest::Unstated,
            },
            about.id,
            None,
        )
    }
}

impl Outbound {
    /// Queues a failure notice (`Action: failed`) to `sender` about a
    /// message that never reached the queue — one the maildrop's pickup
    /// could not hand in (`id`, left at `arrival_ms`) — quoting its `header`.
    pub async fn notify_failure(
        &self,
        id: String,
        sender: String,
        arrival_ms: u64,
        reports: Vec<(String, Report)>,
        header: Vec<u8>,
    ) -> io::Result<()> {
        let entries = self
            .blocking(move |o| {
                let dsn = DsnRequests::default();
                let about = About {
                    id: &id,
                    sender: &sender,
                    arrival_ms,
                    dsn: &dsn,
                    retry_until_ms: None,
                };
                o.queue_notice(about, Action::Failed, &reports, &Returned::Header(header))
            })
            .await?;
        self.schedule(entries);
        Ok(())
    }

    /// Stores `handoff` in the queue, durably, without scheduling it.
    async fn store(&self, handoff: Handoff, hop: Option<NextHopConfig>) -> io::Result<Vec<Entry>> {
        self.blocking(move |o| {
            let Handoff {
                message,
                sender,
                recipients,
                dsn,
                origin,
                tls_request,
            } = handoff;
            o.inner.store.enqueue(
                message,
                Envelope {
                    sender: &sender,
                    recipients: &recipients,
                    dsn: &dsn,
                    tls_request,
                },
                &origin,
                hop.as_ref(),
            )
        })
        .await
    }
}

impl OutboundQueue for Outbound {
    fn enqueue(&self, handoff: Handoff, hop: Option<NextHopConfig>) -> BoxFuture<'static, io::Result<Vec<String>>> {
        let this = self.clone();
        Box::pin(async move {
            let entries = this.store(handoff, hop).await?;
            let ids = entries.iter().map(|e| e.id.clone()).collect();
            this.schedule(entries);
            Ok(ids)
        })
    }

    fn forward(&self, mut handoff: Handoff) -> BoxFuture<'static, io::Result<HeldCopy>> {
        if let Some(srs) = &self.inner.settings.srs {
            handoff.sender = srs.forward(&handoff.sender);
        }
        let this = self.clone();
        Box::pin(async move {
            let recipients = handoff.recipients.clone();
            let entries = this.store(handoff, None).await?;
            Ok(HeldCopy {
                ids: entries.iter().map(|e| e.id.clone()).collect(),
                recipients,
                token: Box::new(entries),
            })
        })
    }

    fn release(&self, held: HeldCopy) {
        if let Ok(entries) = held.token.downcast::<Vec<Entry>>() {
            self.schedule(*entries);
        }
    }

    fn discard(&self, held: HeldCopy) -> BoxFuture<'static, io::Result<()>> {
        let Ok(entries) = held.token.downcast::<Vec<Entry>>() else {
            return Box::pin(async { Ok(()) });
        };
        let this = self.clone();
        Box::pin(async move {
            this.blocking(move |o| entries.iter().try_for_each(|entry| o.inner.store.remove(entry)))
                .await
        })
    }

    fn notify_success(&self, message: MessageReader, notice: SuccessNotice) -> BoxFuture<'static, io::Result<()>> {
        let this = self.clone();
        Box::pin(async move {
            let queued = this.blocking(move |o| o.queue_success(message, &notice)).await?;
            this.schedule(queued);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_dane_only_the_validated_mx_hosts_are_tried() {
        let target = |host: &str| Target {
            host: host.into(),
            addrs: Vec::new(),
            dane: Dane::None,
        };
        let kept = validated_only(
            vec![
                target("mx.forged.test"),
                target("MX1.example.com"),
                target("mx2.example.com"),
            ],
            &["mx1.example.com".to_string(), "mx2.example.com".to_string()],
        );
        assert_eq!(
            kept.iter().map(|t| t.host.as_str()).collect::<Vec<_>>(),
            ["MX1.example.com", "mx2.example.com"]
        );
        assert!(validated_only(vec![target("mx.forged.test")], &["mx1.example.com".to_string()]).is_empty());
    }

    #[test]
    fn address_literals_route_to_their_address() {
        assert_eq!(address_literal("[127.0.0.2]"), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(address_literal("[IPv6:::1]"), Some("::1".parse().unwrap()));
        assert_eq!(address_literal("example.com"), None);
    }

    #[test]
    fn statuses_come_from_the_reply_or_its_class() {
        assert_eq!(status_of(&RemoteReply::local(550, "5.1.1", "no")), "5.1.1");
        let bare = RemoteReply {
            code: 451,
            enhanced: None,
            lines: vec!["later".into()],
        };
        assert_eq!(status_of(&bare), "4.0.0");
    }
}
