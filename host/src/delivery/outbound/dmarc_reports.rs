//! Sending DMARC aggregate reports (RFC 7489 §7.2). Each author domain's
//! counts for a day are mailed
//! to those `rua` addresses of its record that may receive them: one
//! outside the domain needs that other domain's consent, a
//! `DOMAIN._report._dmarc.OTHER` TXT record (§7.1), and one with a size
//! limit (`!10m`) gets no report over it. What is counted and how
//! a report reads is `delivery::dmarc_report`'s.

use super::Outbound;
use super::reports::{ReportKind, within_size_limits};
use crate::capabilities::authentication::{dmarc_policy_domain, dmarc_report_consent};
use crate::queue::now_ms;
use std::collections::BTreeMap;
use tracing::warn;

const DMARC: ReportKind = ReportKind::Dmarc;

impl Outbound {
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
                        DMARC.count("deferred");
                        later.push(author);
                    }
                }
            }
            for (domain, authors) in by_record {
                let rua = period.tally.rua(&authors[0]);
                let recipients = match dmarc_report_consent(&self.inner.dns, &domain, &rua).await {
                    Ok(allowed) if allowed.is_empty() => {
                        warn!(%domain, rua = %rua.join(","), "DMARC report not sent: no rua address consents to receive it");
                        DMARC.count("unauthorized");
                        continue;
                    }
                    Ok(allowed) => allowed,
                    Err(e) => {
                        warn!(%domain, error = %e, "DMARC report not sent yet");
                        DMARC.count("deferred");
                        later.extend(authors);
                        continue;
                    }
                };
                let Some(mail) = reports.mail(&period, &domain, &authors, recipients) else {
                    continue;
                };
                let Some(mail) = within_size_limits(
                    DMARC,
                    mail,
                    |address, size| period.tally.takes(&authors[0], address, size),
                    |fit| reports.mail(&period, &domain, &authors, fit),
                ) else {
                    continue;
                };
                if self.queue_daily_report(DMARC, &domain, mail).await {
                    queued += 1;
                }
            }
            reports.retry_later(period, &later, now_ms());
        }
        self.blocking(|o| o.save_report_counts()).await;
        Some(queued)
    }
}
