//! DMARC failure reports (RFC 7489 §7.3, written as RFC 6591 says). A
//! received message whose DMARC checks failed as its author domain's record
//! asks to hear of (`ruf` addresses, `fo` options) is reported to those
//! addresses soon after, one report per message, with the message's header
//! and never its body. A domain gets at most a set number an hour, so that
//! a flood of forged mail cannot turn this server into a mail cannon.
//! mail-auth writes the report.

use super::daily::{ReportMail, Submitter};
use crate::capabilities::authentication::DmarcFailure;
use mail_auth::report::{AuthFailureType, Feedback, FeedbackType};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::Notify;

/// An hour in milliseconds: the period of the per-domain limit.
const HOUR_MS: u64 = 3600 * 1000;
/// The most failures waiting to be reported; more are dropped (logged).
const MAX_PENDING: usize = 1000;

/// Why a failure was not taken for reporting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its domain had its reports for this hour.
    Limited,
    /// Too many wait to be sent.
    Full,
}

/// The failures of one server waiting to be reported, and the count of
/// each domain's reports in the current hour.
#[derive(Debug)]
pub struct DmarcFailureReports {
    submitter: Submitter,
    per_hour: u32,
    pending: Mutex<VecDeque<DmarcFailure>>,
    /// By author domain: the hour (its start, ms) and the reports taken in it.
    taken: Mutex<HashMap<String, (u64, u32)>>,
    wake: Notify,
}

impl DmarcFailureReports {
    /// Reports from `submitter`, at most `per_hour` for one domain.
    pub fn new(submitter: Submitter, per_hour: u32) -> Self {
        DmarcFailureReports {
            submitter,
            per_hour,
            pending: Mutex::new(VecDeque::new()),
            taken: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }
    }

    /// Who sends the reports.
    pub fn submitter(&self) -> &Submitter {
        &self.submitter
    }

    /// Takes `failure` to be reported, unless its domain had its reports
    /// this hour or too many wait.
    pub fn push(&self, failure: DmarcFailure, now_ms: u64) -> Result<(), Refused> {
        let hour = now_ms - now_ms % HOUR_MS;
        {
            let mut taken = self.taken.lock().expect("the counts are never poisoned");
            taken.retain(|_, (start, _)| *start == hour);
            let (_, count) = taken.entry(failure.domain.clone()).or_insert((hour, 0));
            if *count >= self.per_hour {
                return Err(Refused::Limited);
            }
            let mut pending = self.pending.lock().expect("the queue is never poisoned");
            if pending.len() >= MAX_PENDING {
                return Err(Refused::Full);
            }
            *count += 1;
            pending.push_back(failure);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// The failures waiting, once there is one.
    pub async fn next_batch(&self) -> Vec<DmarcFailure> {
        loop {
            let batch: Vec<DmarcFailure> = self
                .pending
                .lock()
                .expect("the queue is never poisoned")
                .drain(..)
                .collect();
            if !batch.is_empty() {
                return batch;
            }
            self.wake.notified().await;
        }
    }

    /// The report of `failure`, received at `arrival` (seconds since the
    /// epoch), mailed to `recipients`; `None` when it cannot be written.
    pub fn mail(&self, failure: &DmarcFailure, recipients: Vec<String>, arrival: i64) -> Option<ReportMail> {
        let feedback = Feedback::new(FeedbackType::AuthFailure)
            .with_version(1)
            .with_user_agent(concat!("Waraka/", env!("CARGO_PKG_VERSION")))
            .with_auth_failure(AuthFailureType::Dmarc)
            .with_arrival_date(arrival)
            .with_source_ip(failure.client_ip)
            .with_reporting_mta(self.submitter.name.as_str())
            .with_original_mail_from(failure.mail_from.as_str())
            .with_reported_domain(failure.domain.as_str())
            .with_authentication_results(failure.results.as_str())
            .with_identity_alignment(failure.alignment)
            .with_headers(failure.header.as_str());
        let to = recipients.join(", ");
        let subject = format!("DMARC failure report for {} from {}", failure.domain, failure.client_ip);
        let mut message = Vec::new();
        feedback
            .write_rfc5322(
                (self.submitter.name.as_str(), self.submitter.from.as_str()),
                &to,
                &subject,
                &mut message,
            )
            .ok()?;
        Some(ReportMail {
            domain: failure.domain.clone(),
            recipients,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::daily::testing::submitter;
    use super::*;
    use mail_auth::report::IdentityAlignment;
    use std::collections::BTreeMap;

    fn failure(domain: &str) -> DmarcFailure {
        DmarcFailure {
            domain: domain.into(),
            ruf: vec![format!("ruf@{domain}")],
            ruf_limits: BTreeMap::new(),
            client_ip: "192.0.2.9".parse().unwrap(),
            mail_from: format!("forger@{domain}"),
            alignment: IdentityAlignment::None,
            results: format!("mx.me.test; dmarc=fail header.from={domain}"),
            header: format!("From: <ceo@{domain}>\r\nSubject: pay now\r\n"),
        }
    }

    #[tokio::test]
    async fn each_domain_gets_its_hours_share_and_the_rest_waits_for_the_next_hour() {
        let reports = DmarcFailureReports::new(submitter("mx.me.test", "dmarc-reports@me.test"), 2);
        let hour = 5 * HOUR_MS;
        assert_eq!(reports.push(failure("a.test"), hour + 1), Ok(()));
        assert_eq!(reports.push(failure("a.test"), hour + 2), Ok(()));
        assert_eq!(reports.push(failure("a.test"), hour + 3), Err(Refused::Limited));
        assert_eq!(reports.push(failure("b.test"), hour + 4), Ok(()), "another domain");
        assert_eq!(reports.push(failure("a.test"), hour + HOUR_MS), Ok(()), "the next hour");
        let batch = reports.next_batch().await;
        let domains: Vec<&str> = batch.iter().map(|f| f.domain.as_str()).collect();
        assert_eq!(domains, ["a.test", "a.test", "b.test", "a.test"]);
    }

    #[test]
    fn a_report_is_an_arf_auth_failure_with_the_header_only() {
        let reports = DmarcFailureReports::new(submitter("mx.me.test", "dmarc-reports@me.test"), 2);
        let mail = reports
            .mail(&failure("a.test"), vec!["ruf@a.test".into()], 1_796_000_000)
            .unwrap();
        let text = String::from_utf8(mail.message).unwrap();
        for expected in [
            "multipart/report",
            "report-type=\"feedback-report\"",
            "Feedback-Type: auth-failure\r\n",
            "Auth-Failure: dmarc\r\n",
            "Reported-Domain: a.test\r\n",
            "Source-IP: 192.0.2.9\r\n",
            "text/rfc822-headers",
            "Subject: pay now",
            "Subject: DMARC failure report for a.test from 192.0.2.9",
        ] {
            assert!(text.contains(expected), "{expected:?} in {text}");
        }
    }
}
