//! SMTP TLS Reporting (RFC 8460). Every outbound session with a domain's
//! MX host is counted by the policy it was held to (DANE's TLSA records,
//! MTA-STS, or none) and by how its TLS went; once a UTC day is over, each
//! domain that publishes `_smtp._tls.DOMAIN` (`v=TLSRPTv1; rua=mailto:…`)
//! is mailed that day's counts. mail-auth writes the report (JSON, gzip,
//! `multipart/report; report-type="tlsrpt"`).
//!
//! The counts live in memory and in `queue/tls-reports.json`, saved at most
//! a minute late: a crash loses at most that minute's counts, never mail.

use super::daily::{DailyReports, Period, ReportMail, Submitter, Tally};
use crate::protocol::TLS_REQUIRED_HEADER;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::flate2::Compression;
use mail_auth::flate2::write::GzEncoder;
use mail_auth::mta_sts::{ReportUri, TlsRpt};
use mail_auth::report::tlsrpt::{
    DateRange, FailureDetails, Policy, PolicyDetails, PolicyType, ResultType, Summary, TlsReport,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;

/// The policy a session was held to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum TlsPolicy {
    /// DANE (RFC 7672): the MX host's TLSA records, as `3 1 1 HEX` (none
    /// when they could not be proven).
    Tlsa {
        /// The MX host the records are for.
        mx_host: String,
        /// The records in presentation form.
        records: Vec<String>,
    },
    /// MTA-STS (RFC 8461): the policy's lines and MX patterns.
    Sts {
        /// The policy file's lines (`version: STSv1`, `mode: enforce`…).
        lines: Vec<String>,
        /// Its `mx` patterns.
        mx: Vec<String>,
    },
    /// Neither: opportunistic TLS.
    NoPolicy,
}

/// Why a session did not have the TLS its policy asks (RFC 8460 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsFailure {
    /// The MX host does not offer STARTTLS.
    StarttlsNotSupported,
    /// Its certificate is not for its name.
    CertificateHostMismatch,
    /// Its certificate has expired (or is not valid yet).
    CertificateExpired,
    /// Its certificate does not chain to a trusted root.
    CertificateNotTrusted,
    /// The handshake failed otherwise.
    ValidationFailure,
    /// Its certificate matches none of its TLSA records.
    TlsaInvalid,
    /// Its TLSA records (or the domain's MX records) failed DNSSEC validation.
    DnssecInvalid,
    /// The domain's MTA-STS policy could not be fetched.
    StsPolicyFetchError,
    /// Its MTA-STS policy was not a valid one.
    StsPolicyInvalid,
    /// The certificate of its MTA-STS policy host did not verify.
    StsWebpkiInvalid,
}

impl TlsFailure {
    fn result_type(self) -> ResultType {
        match self {
            TlsFailure::StarttlsNotSupported => ResultType::StartTlsNotSupported,
            TlsFailure::CertificateHostMismatch => ResultType::CertificateHostMismatch,
            TlsFailure::CertificateExpired => ResultType::CertificateExpired,
            TlsFailure::CertificateNotTrusted => ResultType::CertificateNotTrusted,
            TlsFailure::ValidationFailure => ResultType::ValidationFailure,
            TlsFailure::TlsaInvalid => ResultType::TlsaInvalid,
            TlsFailure::DnssecInvalid => ResultType::DnssecInvalid,
            TlsFailure::StsPolicyFetchError => ResultType::StsPolicyFetchError,
            TlsFailure::StsPolicyInvalid => ResultType::StsPolicyInvalid,
            TlsFailure::StsWebpkiInvalid => ResultType::StsWebpkiInvalid,
        }
    }
}

/// One session's TLS, as counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSession {
    /// The recipient domain (the policy domain).
    pub domain: String,
    /// The policy the session was held to.
    pub policy: TlsPolicy,
    /// The MX host (empty for a failure before any, such as fetching the
    /// MTA-STS policy).
    pub mx_host: String,
    /// The address it was reached at, when one was.
    pub receiving_ip: Option<IpAddr>,
    /// `None`: TLS as the policy asks; else why not.
    pub failure: Option<TlsFailure>,
}

/// A failure row of a report: what failed where, and how often.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FailureRow {
    result: TlsFailure,
    mx_host: String,
    receiving_ip: Option<IpAddr>,
    count: u32,
}

/// The counts of one domain under one policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Row {
    domain: String,
    policy: TlsPolicy,
    success: u32,
    failures: Vec<FailureRow>,
}

/// The TLS counts of one server, and the reports made of them.
pub type TlsReports = DailyReports<TlsTally>;

/// The counts of a day: a row per domain and policy.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TlsTally {
    rows: Vec<Row>,
    /// Where each domain's rows are in `rows`; built again after loading.
    #[serde(skip)]
    by_domain: HashMap<String, Vec<usize>>,
}

impl PartialEq for TlsTally {
    fn eq(&self, other: &TlsTally) -> bool {
        self.rows == other.rows
    }
}

impl Eq for TlsTally {}

impl Tally for TlsTally {
    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn domains(&self) -> Vec<String> {
        let mut domains: Vec<String> = self.rows.iter().map(|r| r.domain.clone()).collect();
        domains.sort();
        domains.dedup();
        domains
    }

    fn retain_domains(&mut self, domains: &[String]) {
        self.rows.retain(|row| domains.contains(&row.domain));
        self.by_domain.clear();
    }
}

impl TlsTally {
    fn add(&mut self, session: &TlsSession) {
        if self.by_domain.is_empty() {
            for (at, row) in self.rows.iter().enumerate() {
                self.by_domain.entry(row.domain.clone()).or_default().push(at);
            }
        }
        if !self.by_domain.contains_key(&session.domain) {
            self.by_domain.insert(session.domain.clone(), Vec::new());
        }
        let rows = &self.rows;
        let of_domain = self.by_domain.get_mut(&session.domain).expect("just made");
        let at = of_domain.iter().copied().find(|&at| rows[at].policy == session.policy);
        let row = match at {
            Some(at) => &mut self.rows[at],
            None => {
                of_domain.push(self.rows.len());
                self.rows.push(Row {
                    domain: session.domain.clone(),
                    policy: session.policy.clone(),
                    success: 0,
                    failures: Vec::new(),
                });
                self.rows.last_mut().expect("just pushed")
            }
        };
        let Some(result) = session.failure else {
            row.success += 1;
            return;
        };
        let same = |f: &&mut FailureRow| {
            f.result == result && f.mx_host == session.mx_host && f.receiving_ip == session.receiving_ip
        };
        match row.failures.iter_mut().find(same) {
            Some(failure) => failure.count += 1,
            None => row.failures.push(FailureRow {
                result,
                mx_host: session.mx_host.clone(),
                receiving_ip: session.receiving_ip,
                count: 1,
            }),
        }
    }
}

impl TlsReports {
    /// Counts one session.
    pub fn record(&self, session: &TlsSession, now_ms: u64) {
        self.add(now_ms, |tally| tally.add(session));
    }

    /// The report of `domain` in `period`, mailed to the `mailto:` addresses
    /// of `record` (the domain's `_smtp._tls` TXT record); `None` when it
    /// names none.
    pub fn mail(&self, period: &Period<TlsTally>, domain: &str, record: &TlsRpt) -> Option<ReportMail> {
        let recipients = addresses(record, false);
        if recipients.is_empty() {
            return None;
        }
        let report = report(period, domain, self.submitter());
        // The report must get through even to a domain whose TLS is what
        // fails (RFC 8460 §5.3): its policies are waived (RFC 8689 §5).
        let mut message = format!("{TLS_REQUIRED_HEADER}: No\r\n").into_bytes();
        report
            .write_rfc5322(
                domain,
                &self.submitter().name,
                self.submitter().from.as_str(),
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

    /// The report of `domain` in `period` as gzip JSON, once for each
    /// `https:` address of `record` (to be posted there).
    pub fn uploads(&self, period: &Period<TlsTally>, domain: &str, record: &TlsRpt) -> Vec<(String, Vec<u8>)> {
        let urls = addresses(record, true);
        if urls.is_empty() {
            return Vec::new();
        }
        let json = report(period, domain, self.submitter()).to_json();
        let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
        let body = gzip.write_all(json.as_bytes()).and_then(|()| gzip.finish());
        match body {
            Ok(body) => urls.into_iter().map(|url| (url, body.clone())).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// The `https:` addresses of a TLSRPT record's `rua`, or its `mailto:` ones.
fn addresses(record: &TlsRpt, https: bool) -> Vec<String> {
    record
        .rua
        .iter()
        .filter_map(|uri| match uri {
            ReportUri::Http(url) if https => Some(url.clone()),
            ReportUri::Mail(address) if !https => Some(address.clone()),
            _ => None,
        })
        .collect()
}

/// The report (RFC 8460 §4.4) of `domain` in `period`.
fn report(period: &Period<TlsTally>, domain: &str, submitter: &Submitter) -> TlsReport {
    let seconds = |ms: u64| (ms / 1000) as i64;
    let policies = period
        .tally
        .rows
        .iter()
        .filter(|r| r.domain == domain)
        .map(policy_of)
        .collect();
    TlsReport {
        organization_name: Some(submitter.name.clone()),
        date_range: DateRange {
            start_datetime: mail_parser::DateTime::from_timestamp(seconds(period.start_ms)),
            end_datetime: mail_parser::DateTime::from_timestamp(seconds(period.end_ms)),
        },
        contact_info: Some(submitter.from.clone()),
        report_id: format!(
            "{}.{}.{}@{}",
            seconds(period.start_ms),
            seconds(period.end_ms),
            domain,
            submitter.name
        ),
        policies,
    }
}

/// A report's entry for one row.
fn policy_of(row: &Row) -> Policy {
    let (policy_type, policy_string, mx_host) = match &row.policy {
        TlsPolicy::Tlsa { mx_host, records } => (PolicyType::Tlsa, records.clone(), vec![mx_host.clone()]),
        TlsPolicy::Sts { lines, mx } => (PolicyType::Sts, lines.clone(), mx.clone()),
        TlsPolicy::NoPolicy => (PolicyType::NoPolicyFound, Vec::new(), Vec::new()),
    };
    Policy {
        policy: PolicyDetails {
            policy_type,
            policy_string,
            policy_domain: row.domain.clone(),
            mx_host,
        },
        summary: Summary {
            total_success: row.success,
            total_failure: row.failures.iter().map(|f| f.count).sum(),
        },
        failure_details: row
            .failures
            .iter()
            .map(|f| FailureDetails {
                result_type: f.result.result_type(),
                receiving_mx_hostname: (!f.mx_host.is_empty()).then(|| f.mx_host.clone()),
                receiving_ip: f.receiving_ip,
                failed_session_count: f.count,
                ..FailureDetails::default()
            })
            .collect(),
    }
}

/// The one TLSRPT record among a domain's `_smtp._tls` TXT records (RFC
/// 8460 §3: records not starting `v=TLSRPTv1` are ignored, and anything
/// but exactly one left means none).
pub fn tlsrpt_record(texts: &[String]) -> Option<TlsRpt> {
    let records: Vec<&String> = texts.iter().filter(|t| t.starts_with("v=TLSRPTv1")).collect();
    match records.as_slice() {
        [one] => TlsRpt::parse(one.as_bytes()).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::daily::DAY_MS;
    use super::super::daily::testing::{DAY1, submitter};
    use super::*;
    use std::path::Path;

    fn session(domain: &str, policy: TlsPolicy, failure: Option<TlsFailure>) -> TlsSession {
        TlsSession {
            domain: domain.into(),
            policy,
            mx_host: format!("mx.{domain}"),
            receiving_ip: Some("192.0.2.1".parse().unwrap()),
            failure,
        }
    }

    fn reports(dir: &Path) -> TlsReports {
        let submitter = submitter("mx.sender.test", "tls-reports@mx.sender.test");
        TlsReports::open(&dir.join("tls-reports.json"), submitter, DAY1 + 1000)
    }

    #[test]
    fn a_day_is_reported_once_it_is_over_with_its_successes_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let reports = reports(dir.path());
        let tlsa = TlsPolicy::Tlsa {
            mx_host: "mx.a.test".into(),
            records: vec!["3 1 1 ABCD".into()],
        };
        reports.record(&session("a.test", tlsa.clone(), None), DAY1 + 2000);
        reports.record(&session("a.test", tlsa.clone(), None), DAY1 + 3000);
        reports.record(
            &session("a.test", tlsa.clone(), Some(TlsFailure::TlsaInvalid)),
            DAY1 + 4000,
        );
        reports.record(
            &session("b.test", TlsPolicy::NoPolicy, Some(TlsFailure::StarttlsNotSupported)),
            DAY1 + 5000,
        );
        assert_eq!(reports.take_due(DAY1 + 6000, false), vec![], "the day is not over");
        // The first session of the next day ends the first.
        reports.record(&session("a.test", tlsa.clone(), None), DAY1 + DAY_MS + 10);
        let due = reports.take_due(DAY1 + DAY_MS + 20, false);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].domains(), ["a.test", "b.test"]);
        let report = report(&due[0], "a.test", reports.submitter());
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["date-range"]["start-datetime"], "2024-10-04T00:00:01Z");
        assert_eq!(json["date-range"]["end-datetime"], "2024-10-04T23:59:59Z");
        assert_eq!(json["policies"].as_array().unwrap().len(), 1);
        let policy = &json["policies"][0];
        assert_eq!(policy["policy"]["policy-type"], "tlsa");
        assert_eq!(policy["policy"]["policy-string"][0], "3 1 1 ABCD");
        assert_eq!(policy["policy"]["mx-host"][0], "mx.a.test");
        assert_eq!(policy["summary"]["total-successful-session-count"], 2);
        assert_eq!(policy["summary"]["total-failure-session-count"], 1);
        assert_eq!(policy["failure-details"][0]["result-type"], "tlsa-invalid");
        assert_eq!(policy["failure-details"][0]["receiving-ip"], "192.0.2.1");
        // Reported once: the next day's session waits for its own day.
        assert_eq!(reports.take_due(DAY1 + DAY_MS + 30, false), vec![]);
        let now = reports.take_due(DAY1 + DAY_MS + 40, true);
        assert_eq!(now.len(), 1, "asked for now, the day so far is reported");
        assert_eq!(now[0].tally.rows[0].success, 1);
    }

    #[test]
    fn counts_outlast_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = reports(dir.path());
        first.record(&session("a.test", TlsPolicy::NoPolicy, None), DAY1 + 2000);
        first.save().unwrap();
        let second = reports(dir.path());
        second.record(&session("b.test", TlsPolicy::NoPolicy, None), DAY1 + 2500);
        second.record(&session("a.test", TlsPolicy::NoPolicy, None), DAY1 + 2600);
        let due = second.take_due(DAY1 + 3000, true);
        let rows: Vec<(&str, u32)> = due[0]
            .tally
            .rows
            .iter()
            .map(|r| (r.domain.as_str(), r.success))
            .collect();
        assert_eq!(rows, [("a.test", 2), ("b.test", 1)], "added to the rows read back");
    }

    #[test]
    fn only_one_tlsrpt_record_counts() {
        let record = |texts: &[&str]| tlsrpt_record(&texts.iter().map(|t| t.to_string()).collect::<Vec<_>>());
        let one = record(&["v=spf1 -all", "v=TLSRPTv1; rua=mailto:tls@a.test,https://r.a.test/x"]).unwrap();
        assert_eq!(
            one.rua,
            [
                ReportUri::Mail("tls@a.test".into()),
                ReportUri::Http("https://r.a.test/x".into())
            ]
        );
        assert!(record(&["v=TLSRPTv1; rua=mailto:a@a.test", "v=TLSRPTv1; rua=mailto:b@a.test"]).is_none());
        assert!(record(&["v=TLSRPTv1;"]).is_none(), "no rua");
    }

    #[test]
    fn the_mail_goes_to_the_mailto_addresses_with_the_gzip_report() {
        let dir = tempfile::tempdir().unwrap();
        let reports = reports(dir.path());
        reports.record(&session("a.test", TlsPolicy::NoPolicy, None), DAY1 + 2000);
        let due = reports.take_due(DAY1 + 3000, true);
        let record = tlsrpt_record(&["v=TLSRPTv1; rua=mailto:tls@a.test".to_string()]).unwrap();
        let mail = reports.mail(&due[0], "a.test", &record).unwrap();
        assert_eq!(mail.recipients, ["tls@a.test"]);
        let text = String::from_utf8_lossy(&mail.message);
        assert!(text.contains("TLS-Report-Domain: a.test"), "{text}");
        assert!(text.starts_with("TLS-Required: No\r\n"), "policies waived: {text}");
        assert!(text.contains("TLS-Report-Submitter: mx.sender.test"), "{text}");
        assert!(text.contains("report-type=\"tlsrpt\""), "{text}");
        assert!(text.contains("application/tlsrpt+gzip"), "{text}");
        let https_only = tlsrpt_record(&["v=TLSRPTv1; rua=https://r.a.test/x".to_string()]).unwrap();
        assert_eq!(reports.mail(&due[0], "a.test", &https_only), None);
        assert_eq!(reports.uploads(&due[0], "a.test", &record), vec![]);
        let upload = reports.uploads(&due[0], "a.test", &https_only);
        assert_eq!(upload.len(), 1);
        assert_eq!(upload[0].0, "https://r.a.test/x");
        let mut json = String::new();
        std::io::Read::read_to_string(
            &mut mail_auth::flate2::read::GzDecoder::new(&upload[0].1[..]),
            &mut json,
        )
        .unwrap();
        assert!(json.contains("\"policy-domain\":\"a.test\""), "{json}");
    }
}
