//! What the daily reports (TLS, RFC 8460; DMARC aggregate, RFC 7489) share
//! on the sending side: the minute's check that sends what is due and saves
//! the counts, and signing, queuing and counting a report as mail.

use super::super::daily::ReportMail;
use super::super::notice;
use super::Outbound;
use crate::protocol::{DsnRequests, TlsRequest};
use crate::queue::{Entry, Envelope};
use std::io;
use std::time::Duration;
use tracing::{error, info, warn};

/// A kind of daily report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReportKind {
    /// SMTP TLS Reporting (RFC 8460).
    Tls,
    /// DMARC aggregate reports (RFC 7489 §7.2).
    Dmarc,
    /// DMARC failure reports (RFC 7489 §7.3), one per message.
    DmarcFailure,
}

impl ReportKind {
    /// Its name in log lines (`TLS report queued`).
    fn label(self) -> &'static str {
        match self {
            ReportKind::Tls => "TLS",
            ReportKind::Dmarc => "DMARC",
            ReportKind::DmarcFailure => "DMARC failure",
        }
    }

    /// Its `kind` label in metrics, and its queue entries' origin prefix.
    fn name(self) -> &'static str {
        match self {
            ReportKind::Tls => "tls",
            ReportKind::Dmarc => "dmarc",
            ReportKind::DmarcFailure => "dmarc-failure",
        }
    }

    /// Counts a report of this kind by what became of it.
    pub(super) fn count(self, result: &'static str) {
        metrics::counter!("waraka_reports_total", "kind" => self.name(), "result" => result).increment(1);
    }
}

/// `mail` for those of its recipients that take a report of its size
/// (`takes(address, size)`: `rua` and `ruf` addresses may set a limit,
/// RFC 7489 §7.2.1.1): `mail` itself when all do, a copy written again by
/// `again` for the others when some do not, `None` when none does. What is
/// left out is logged and, when nothing is left, counted `too_large`.
pub(super) fn within_size_limits(
    kind: ReportKind,
    mail: ReportMail,
    takes: impl Fn(&str, usize) -> bool,
    again: impl FnOnce(Vec<String>) -> Option<ReportMail>,
) -> Option<ReportMail> {
    let size = mail.message.len();
    let (fit, over): (Vec<String>, Vec<String>) = mail.recipients.iter().cloned().partition(|a| takes(a, size));
    if over.is_empty() {
        return Some(mail);
    }
    let domain = &mail.domain;
    warn!(%domain, size, to = %over.join(","), "{} report not sent to addresses whose size limit it is over", kind.label());
    if fit.is_empty() {
        kind.count("too_large");
        return None;
    }
    again(fit)
}

impl Outbound {
    /// Every minute: sends the reports that are due (once a UTC day is over)
    /// and saves the counts. Runs while either kind is on.
    pub(super) async fn report_daily(self) {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            self.send_tls_reports(false).await;
            self.send_dmarc_reports(false).await;
        }
    }

    /// Saves the counts of both kinds of report (those that changed).
    pub fn save_report_counts(&self) {
        let tls = self.inner.tls_reports.as_ref().map(|r| r.save());
        let dmarc = self.inner.settings.dmarc_reports.as_ref().map(|r| r.save());
        for (kind, saved) in [(ReportKind::Tls, tls), (ReportKind::Dmarc, dmarc)] {
            if let Some(Err(e)) = saved {
                warn!(error = %e, "could not save the {} report counts", kind.label());
            }
        }
    }

    /// Signs and queues `mail`, a report of `kind` about `domain`, and
    /// schedules it; logged and counted. Whether it was queued.
    pub(super) async fn queue_daily_report(&self, kind: ReportKind, domain: &str, mail: ReportMail) -> bool {
        let to = mail.recipients.join(",");
        match self.blocking(move |o| o.queue_report(kind, mail)).await {
            Ok(entries) => {
                info!(%domain, %to, "{} report queued", kind.label());
                kind.count("queued");
                self.schedule(entries);
                true
            }
            Err(e) => {
                error!(%domain, error = %e, "{} report not queued", kind.label());
                kind.count("failed");
                false
            }
        }
    }

    /// Signs a report (with its sender domain's DKIM key, when there is
    /// one) and queues it from the kind's submitter. A TLS report goes with
    /// `TLS-Required: No`, as its header says.
    fn queue_report(&self, kind: ReportKind, mail: ReportMail) -> io::Result<Vec<Entry>> {
        let settings = &self.inner.settings;
        let (submitter, tls_request) = match kind {
            ReportKind::Tls => (settings.tls_reports.as_ref(), TlsRequest::PolicyWaived),
            ReportKind::Dmarc => (
                settings.dmarc_reports.as_ref().map(|r| r.submitter()),
                TlsRequest::Unstated,
            ),
            ReportKind::DmarcFailure => (
                settings.dmarc_failures.as_ref().map(|r| r.submitter()),
                TlsRequest::Unstated,
            ),
        };
        let submitter = submitter.expect("reports of this kind are on");
        let from_domain = submitter
            .from
            .rsplit_once('@')
            .map_or(submitter.name.as_str(), |(_, d)| d);
        let message = notice::signed(mail.message, from_domain, &settings.dkim);
        let origin = format!("{}-report-{}", kind.name(), mail.domain);
        let envelope = Envelope {
            sender: &submitter.from,
            recipients: &mail.recipients,
            dsn: &DsnRequests::default(),
            tls_request,
        };
        self.inner.store.enqueue(message.as_slice(), envelope, &origin, None)
    }
}
