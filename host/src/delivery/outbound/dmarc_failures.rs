//! Sending DMARC failure reports (RFC 7489 §7.3) as the `authentication`
//! capability finds the failures: each goes to those `ruf` addresses of
//! its record that may receive it, as an aggregate report goes to `rua`
//! addresses (consent of another domain, size limits). A report that
//! cannot be sent now is dropped, logged: failure reports are not retried.

use super::Outbound;
use super::reports::{ReportKind, within_size_limits};
use crate::capabilities::authentication::{DmarcFailure, dmarc_policy_domain, dmarc_report_consent};
use crate::delivery::DmarcFailureReports;
use crate::queue::now_ms;
use std::sync::Arc;
use tracing::warn;

const FAILURE: ReportKind = ReportKind::DmarcFailure;

impl Outbound {
    /// Sends each failure report as it is found, forever.
    pub(super) async fn report_dmarc_failures(self, reports: Arc<DmarcFailureReports>) {
        loop {
            for failure in reports.next_batch().await {
                self.send_dmarc_failure(&reports, failure).await;
            }
        }
    }

    /// Sends the report of one failure, or logs why not.
    async fn send_dmarc_failure(&self, reports: &DmarcFailureReports, failure: DmarcFailure) {
        let domain = &failure.domain;
        let consent = match dmarc_policy_domain(&self.inner.dns, domain).await {
            Ok(record) => dmarc_report_consent(&self.inner.dns, &record, &failure.ruf).await,
            Err(e) => Err(e),
        };
        let allowed = match consent {
            Ok(allowed) => allowed,
            Err(e) => {
                warn!(%domain, error = %e, "DMARC failure report not sent: DNS could not be asked");
                FAILURE.count("deferred");
                return;
            }
        };
        if allowed.is_empty() {
            warn!(%domain, ruf = %failure.ruf.join(","), "DMARC failure report not sent: no ruf address consents to receive it");
            FAILURE.count("unauthorized");
            return;
        }
        let arrival = (now_ms() / 1000) as i64;
        let Some(mail) = reports.mail(&failure, allowed, arrival) else {
            return;
        };
        let takes = |address: &str, size: usize| {
            failure
                .ruf_limits
                .get(address)
                .is_none_or(|&limit| size as u64 <= limit)
        };
        if let Some(mail) = within_size_limits(FAILURE, mail, takes, |fit| reports.mail(&failure, fit, arrival)) {
            self.queue_daily_report(FAILURE, domain, mail).await;
        }
    }
}
