//! Sending DMARC aggregate reports (RFC 7489 §7.2) and queuing the daily
//! reports of both kinds. Each author domain's counts for a day are mailed
//! to those `rua` addresses of its record that may receive them: one
//! outside the domain needs that other domain's consent, a
//! `DOMAIN._report._dmarc.OTHER` TXT record (§7.1). What is counted and how
//! a report reads is `delivery::dmarc_report`'s.

use super::super::daily::{ReportMail, Submitter};
use super::super::notice;
use super::Outbound;
use crate::capabilities::authentication::{dmarc_policy_domain, dmarc_report_consent};
use crate::protocol::{DsnRequests, TlsRequest};
use crate::queue::{Entry, Envelope, now_ms};
use std::collections::BTreeMap;
use std::io;
use std::time::Duration;
use tracing::{error, info, warn};

/// Counts a daily report of `kind` (`tls`, `dmarc`) by what became of it.
pub(super) fn count_report(kind: &'static str, result: &'static str) {
    metrics::counter!("waraka_reports_total", "kind" => kind, "result" => result).increment(1);
}

impl Outbound {
    /// Saves the DMARC counts every minute and, once a UTC day is over,
    /// sends its reports.
    pub(super) async fn report_dmarc_daily(self) {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            self.send_dmarc_reports(false).await;
        }
    }

    /// Sends the DMARC reports that are due (with `now`, also those of the
    /// day so far) and saves the counts; returns how many were queued
    /// (`None` when reports are off).
    pub async fn send_dmarc_reports(&self, now: bool) -> Option<usize> {
        let reports = self.inner.settings.dmarc_reports.clone()?;
        let mut queued = 0;
        for period in reports.take_due(now_ms(), now) {
            // One report per record: `news.example.com` and `example.com`
            // under `_dmarc.example.com` go in `example.com`'s.
            let mut by_record: BTreeMap<String, Vec<String>> = BTreeMap::new();
            // Authors whose reports wait for DNS to answer.
            let mut later = Vec::new();
            for author in period.domains() {
                match dmarc_policy_domain(&self.inner.dns, &author).await {
                    Ok(domain) => by_record.entry(domain).or_default().push(author),
                    Err(e) => {
                        warn!(%author, error = %e, "DMARC report not sent yet: its record could not be looked up");
                        count_report("dmarc", "deferred");
                        later.push(author);
                    }
                }
            }
            for (domain, authors) in by_record {
                let rua = period.rua(&authors[0]);
                let recipients = match dmarc_report_consent(&self.inner.dns, &domain, &rua).await {
                    Ok(allowed) if allowed.is_empty() => {
                        warn!(%domain, rua = %rua.join(","), "DMARC report not sent: no rua address consents to receive it");
                        count_report("dmarc", "unauthorized");
                        continue;
                    }
                    Ok(allowed) => allowed,
                    Err(e) => {
                        warn!(%domain, error = %e, "DMARC report not sent yet");
                        count_report("dmarc", "deferred");
                        later.extend(authors);
                        continue;
                    }
                };
                let Some(mail) = reports.mail(&period, &domain, &authors, recipients) else {
                    continue;
                };
                let to = mail.recipients.join(",");
                match self.blocking(move |o| o.queue_dmarc_report(mail)).await {
                    Ok(entries) => {
                        info!(%domain, %to, "DMARC report queued");
                        count_report("dmarc", "queued");
                        self.schedule(entries);
                        queued += 1;
                    }
                    Err(e) => {
                        error!(%domain, error = %e, "DMARC report not queued");
                        count_report("dmarc", "failed");
                    }
                }
            }
            reports.retry_later(period, &later, now_ms());
        }
        if let Err(e) = self.blocking(move |_| reports.save()).await {
            warn!(error = %e, "could not save the DMARC report counts");
        }
        Some(queued)
    }

    /// Saves the DMARC counts (at shutdown).
    pub fn save_dmarc_counts(&self) {
        if let Some(reports) = &self.inner.settings.dmarc_reports
            && let Err(e) = reports.save()
        {
            warn!(error = %e, "could not save the DMARC report counts");
        }
    }

    /// Queues a DMARC report.
    fn queue_dmarc_report(&self, mail: ReportMail) -> io::Result<Vec<Entry>> {
        let reports = self.inner.settings.dmarc_reports.as_ref().expect("reports are on");
        self.queue_report(mail, reports.submitter(), "dmarc-report", TlsRequest::Unstated)
    }

    /// Signs a daily report (with the sender domain's DKIM key, when there
    /// is one) and queues it from `submitter`; `kind` names its origin in
    /// the queue (`tls-report-DOMAIN`).
    pub(super) fn queue_report(
        &self,
        mail: ReportMail,
        submitter: &Submitter,
        kind: &str,
        tls_request: TlsRequest,
    ) -> io::Result<Vec<Entry>> {
        let from_domain = submitter
            .from
            .rsplit_once('@')
            .map_or(submitter.name.as_str(), |(_, d)| d);
        let message = notice::signed(mail.message, from_domain, &self.inner.settings.dkim);
        let origin = format!("{kind}-{}", mail.domain);
        let envelope = Envelope {
            sender: &submitter.from,
            recipients: &mail.recipients,
            dsn: &DsnRequests::default(),
            tls_request,
        };
        self.inner.store.enqueue(message.as_slice(), envelope, &origin, None)
    }
}
