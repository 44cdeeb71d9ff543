//! DMARC aggregate reports (RFC 7489 §7.2). Every received message whose
//! author domain publishes a DMARC record with `rua` addresses is counted
//! by the domain, the client's address, the identifiers and the results
//! (what the `authentication` capability verified); once a UTC day is
//! over, each domain is mailed that day's counts. mail-auth writes the
//! report (XML, gzip, the mail around it).
//!
//! The counts live in memory and in `queue/dmarc-reports.json`, saved at
//! most a minute late (see [`DailyCounts`]).

use super::daily::{DailyReports, Period, ReportMail, Tally};
use crate::capabilities::DmarcObservation;
use mail_auth::report::{PolicyPublished, Record, Report};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The counts of one author domain in a day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct DomainCounts {
    /// Its DMARC record as last seen.
    policy: PolicyPublished,
    /// The record's `rua` addresses as last seen.
    rua: Vec<String>,
    /// Their size limits in bytes, for those that set one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    rua_limits: BTreeMap<String, u64>,
    /// Each distinct row, with how many messages it stands for.
    rows: Vec<(Record, u32)>,
}

/// The DMARC counts of one server, and the reports made of them.
pub type DmarcReports = DailyReports<DmarcTally>;

/// The counts of a day, by author domain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmarcTally {
    domains: BTreeMap<String, DomainCounts>,
}

impl Tally for DmarcTally {
    fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    fn domains(&self) -> Vec<String> {
        self.domains.keys().cloned().collect()
    }

    fn retain_domains(&mut self, domains: &[String]) {
        self.domains.retain(|domain, _| domains.contains(domain));
    }
}

impl DmarcTally {
    fn add(&mut self, seen: &DmarcObservation) {
        let counts = self.domains.entry(seen.domain.clone()).or_insert_with(|| DomainCounts {
            policy: seen.policy.clone(),
            rua: Vec::new(),
            rua_limits: BTreeMap::new(),
            rows: Vec::new(),
        });
        counts.policy = seen.policy.clone();
        counts.rua = seen.rua.clone();
        counts.rua_limits = seen.rua_limits.clone();
        match counts.rows.iter_mut().find(|(record, _)| *record == seen.record) {
            Some((_, count)) => *count += 1,
            None => counts.rows.push((seen.record.clone(), 1)),
        }
    }
}

impl DmarcTally {
    /// The `rua` addresses of the author `domain`'s record, as last seen.
    pub fn rua(&self, domain: &str) -> Vec<String> {
        self.domains
            .get(domain)
            .map(|counts| counts.rua.clone())
            .unwrap_or_default()
    }

    /// Whether a report of `size` bytes may go to `address`, one of the
    /// author `domain`'s `rua` addresses: within its size limit, if it set one.
    pub fn takes(&self, domain: &str, address: &str, size: usize) -> bool {
        let limit = self
            .domains
            .get(domain)
            .and_then(|counts| counts.rua_limits.get(address));
        limit.is_none_or(|&limit| size as u64 <= limit)
    }
}

impl DmarcReports {
    /// Counts one message.
    pub fn record(&self, seen: &DmarcObservation, now_ms: u64) {
        self.add(now_ms, |tally| tally.add(seen));
    }

    /// The report of `domain`'s DMARC record in `period`, with the counts
    /// of the `authors` it applies to, mailed to `recipients`; `None` when
    /// they have no counts or the message cannot be written.
    pub fn mail(
        &self,
        period: &Period<DmarcTally>,
        domain: &str,
        authors: &[String],
        recipients: Vec<String>,
    ) -> Option<ReportMail> {
        let counted: Vec<&DomainCounts> = authors
            .iter()
            .filter_map(|author| period.tally.domains.get(author))
            .collect();
        let policy = PolicyPublished {
            domain: domain.to_string(),
            ..counted.first()?.policy.clone()
        };
        let seconds = |ms: u64| ms / 1000;
        let (start, end) = (seconds(period.start_ms), seconds(period.end_ms));
        let submitter = self.submitter();
        let mut report = Report::new()
            .with_org_name(submitter.name.as_str())
            .with_email(submitter.from.as_str())
            .with_report_id(format!("{start}.{end}.{domain}@{}", submitter.name))
            .with_date_range_begin(start)
            .with_date_range_end(end)
            .with_policy_published(policy);
        for (record, count) in counted.iter().flat_map(|counts| &counts.rows) {
            report.add_record(record.clone().with_count(*count));
        }
        let mut message = Vec::new();
        report
            .write_rfc5322(
                &submitter.name,
                submitter.from.as_str(),
                recipients.iter().map(String::as_str),
                &mut message,
            )
            .ok()?;
        Some(ReportMail {
            domain: domain.to_string(),
            recipients,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::daily::DAY_MS;
    use super::super::daily::testing::{DAY1, submitter};
    use super::*;
    use mail_auth::report::ActionDisposition;
    use std::path::Path;

    fn seen(domain: &str, ip: &str) -> DmarcObservation {
        DmarcObservation {
            domain: domain.into(),
            policy: PolicyPublished {
                domain: domain.into(),
                ..Default::default()
            },
            rua: vec![format!("dmarc@{domain}")],
            rua_limits: BTreeMap::new(),
            record: Record::new()
                .with_source_ip(ip.parse().unwrap())
                .with_header_from(domain)
                .with_action_disposition(ActionDisposition::None),
        }
    }

    fn reports(dir: &Path) -> DmarcReports {
        let submitter = submitter("mx.me.test", "dmarc-reports@me.test");
        DmarcReports::open(&dir.join("dmarc-reports.json"), submitter, DAY1 + 1000)
    }

    #[test]
    fn the_same_row_is_counted_and_a_day_reported_once_it_is_over() {
        let dir = tempfile::tempdir().unwrap();
        let reports = reports(dir.path());
        reports.record(&seen("a.test", "192.0.2.1"), DAY1 + 2000);
        reports.record(&seen("a.test", "192.0.2.1"), DAY1 + 3000);
        reports.record(&seen("a.test", "192.0.2.2"), DAY1 + 4000);
        reports.record(&seen("b.test", "192.0.2.1"), DAY1 + 5000);
        assert_eq!(reports.take_due(DAY1 + 6000, false), vec![], "the day is not over");
        reports.save().unwrap();
        let reopened = self::reports(dir.path());
        let due = reopened.take_due(DAY1 + DAY_MS, false);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].domains(), ["a.test", "b.test"]);
        assert_eq!(due[0].tally.rua("a.test"), ["dmarc@a.test"]);
        let a = &due[0].tally.domains["a.test"];
        let counts: Vec<u32> = a.rows.iter().map(|(_, count)| *count).collect();
        assert_eq!(counts, [2, 1], "one row per distinct source");
        let mail = reopened
            .mail(&due[0], "a.test", &["a.test".into()], vec!["dmarc@a.test".into()])
            .unwrap();
        let text = String::from_utf8_lossy(&mail.message);
        assert!(
            text.contains("Report Domain: a.test\r\nSubmitter: mx.me.test\r\n"),
            "{text}"
        );
        assert!(text.contains("application/gzip"), "{text}");
        assert_eq!(reopened.take_due(DAY1 + DAY_MS + 1, true), vec![], "sent once");
    }

    #[test]
    fn size_limits_of_rua_addresses_are_kept_with_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        let reports = reports(dir.path());
        let mut limited = seen("a.test", "192.0.2.1");
        limited.rua.push("small@a.test".into());
        limited.rua_limits.insert("small@a.test".into(), 1000);
        reports.record(&limited, DAY1 + 2000);
        reports.save().unwrap();
        let due = self::reports(dir.path()).take_due(DAY1 + DAY_MS, false);
        let tally = &due[0].tally;
        assert!(tally.takes("a.test", "dmarc@a.test", 5000), "no limit");
        assert!(tally.takes("a.test", "small@a.test", 1000));
        assert!(
            !tally.takes("a.test", "small@a.test", 1001),
            "over its limit, after a restart"
        );
    }
}
