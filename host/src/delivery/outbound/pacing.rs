//! How hard the delivery worker pushes each destination domain: how many
//! deliveries to it run at once and how many start per period
//! (`[outbound.domains."DOMAIN"]`, for receivers that throttle senders), and
//! domains none of whose servers could be reached, whose other mail is
//! deferred without trying until the failed attempt's retry (`[outbound]
//! suspend_unreachable`, as Postfix suspends a dead destination) instead of
//! each message knocking again.

use super::{Report, TlsMode};
use crate::telemetry;
use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::time::Duration;

/// At most `count` delivery attempts started per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Attempts per period.
    pub count: u32,
    /// The sliding window they are counted in.
    pub period: Duration,
}

impl FromStr for Rate {
    type Err = String;

    /// `COUNT/DURATION`: `100/1m`, `2000/1h`, `1/5s`.
    fn from_str(text: &str) -> Result<Rate, String> {
        let bad = || format!("{text:?} is not COUNT/DURATION (such as \"100/1m\")");
        let (count, period) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let period = humantime::parse_duration(period.trim()).map_err(|_| bad())?;
        if count == 0 || period.is_zero() {
            return Err(format!("{text:?}: the count and the duration must be above zero"));
        }
        Ok(Rate { count, period })
    }
}

/// One domain's own settings (`[outbound.domains."DOMAIN"]`); what it
/// leaves out comes from `[outbound]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomainLimit {
    /// Deliveries at once (instead of `per_domain`).
    pub concurrency: Option<usize>,
    /// Attempts started per period.
    pub rate: Option<Rate>,
    /// STARTTLS to its servers, instead of the client's default.
    pub tls: Option<TlsMode>,
}

/// The limits of the delivery worker per destination domain.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Deliveries at once to a domain without its own limit.
    pub per_domain: usize,
    /// Domains (lower-case) with their own limits.
    pub domains: HashMap<String, DomainLimit>,
    /// Whether unreachable domains are suspended.
    pub suspend_unreachable: bool,
}

impl Limits {
    /// Deliveries to `domain` that may run at once.
    pub fn concurrency(&self, domain: &str) -> usize {
        self.domains
            .get(domain)
            .and_then(|limit| limit.concurrency)
            .unwrap_or(self.per_domain)
    }

    /// How many attempts for `domain` may start per period, if limited.
    pub fn rate(&self, domain: &str) -> Option<Rate> {
        self.domains.get(domain).and_then(|limit| limit.rate)
    }

    /// `domain`'s own STARTTLS policy, if it has one.
    pub fn tls(&self, domain: &str) -> Option<TlsMode> {
        self.domains.get(domain).and_then(|limit| limit.tls)
    }
}

/// A domain whose mail waits without trying.
#[derive(Debug)]
struct Suspension {
    until_ms: u64,
    /// Why: the failure of the attempt that found no server.
    report: Report,
}

/// What the scheduler remembers for the limits: when recent attempts for
/// rate-limited domains started, and which domains are suspended.
#[derive(Debug, Default)]
pub(super) struct Pacing {
    starts: HashMap<String, VecDeque<u64>>,
    suspended: HashMap<String, Suspension>,
}

impl Pacing {
    /// Counts an attempt for `domain` starting at `now_ms` if its `rate`
    /// allows one; else `Err` with when the next may start.
    pub fn admit(&mut self, domain: &str, rate: Option<Rate>, now_ms: u64) -> Result<(), u64> {
        let Some(rate) = rate else { return Ok(()) };
        let period = u64::try_from(rate.period.as_millis()).unwrap_or(u64::MAX);
        let starts = self.starts.entry(domain.to_string()).or_default();
        while starts.front().is_some_and(|&at| at.saturating_add(period) <= now_ms) {
            starts.pop_front();
        }
        if starts.len() >= rate.count as usize {
            let oldest = starts.front().copied().unwrap_or(now_ms);
            return Err(oldest.saturating_add(period));
        }
        starts.push_back(now_ms);
        Ok(())
    }

    /// Suspends `domain` until `until_ms`, for the reason `report`.
    pub fn suspend(&mut self, domain: &str, until_ms: u64, report: Report) {
        self.suspended
            .insert(domain.to_string(), Suspension { until_ms, report });
        self.publish();
    }

    fn publish(&self) {
        metrics::gauge!(telemetry::OUTBOUND_SUSPENDED_DOMAINS).set(self.suspended.len() as f64);
    }

    /// Why `domain` is suspended at `now_ms`, as the deferral its mail gets
    /// instead of an attempt; `None` when it is not (any longer).
    pub fn suspension(&mut self, domain: &str, now_ms: u64) -> Option<Report> {
        let suspension = self.suspended.get(domain)?;
        if suspension.until_ms <= now_ms {
            self.suspended.remove(domain);
            self.publish();
            return None;
        }
        let mut report = suspension.report.clone();
        report.diagnostic = format!("delivery temporarily suspended: {}", report.diagnostic);
        Some(report)
    }

    /// Lifts the suspension of `domain`, or of every domain.
    pub fn resume(&mut self, domain: Option<&str>) {
        match domain {
            Some(domain) => {
                self.suspended.remove(&domain.to_ascii_lowercase());
            }
            None => self.suspended.clear(),
        }
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_count_per_duration() {
        assert_eq!(
            "100/1m".parse(),
            Ok(Rate {
                count: 100,
                period: Duration::from_secs(60)
            })
        );
        assert_eq!(
            " 2000 / 1h ".parse::<Rate>().map(|r| (r.count, r.period.as_secs())),
            Ok((2000, 3600))
        );
        for bad in ["100", "x/1m", "100/soon", "0/1m", "5/0s", "-1/1m"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_rate_admits_its_count_per_sliding_period() {
        let rate = Some("2/10s".parse().unwrap());
        let mut pacing = Pacing::default();
        assert_eq!(pacing.admit("a.test", rate, 1_000), Ok(()));
        assert_eq!(pacing.admit("a.test", rate, 4_000), Ok(()));
        assert_eq!(
            pacing.admit("a.test", rate, 5_000),
            Err(11_000),
            "the first start leaves the window at 11 s"
        );
        assert_eq!(
            pacing.admit("b.test", rate, 5_000),
            Ok(()),
            "each domain has its own window"
        );
        assert_eq!(pacing.admit("a.test", rate, 11_000), Ok(()));
        assert_eq!(pacing.admit("a.test", rate, 12_000), Err(14_000));
        assert_eq!(pacing.admit("a.test", None, 12_000), Ok(()), "no rate: no limit");
    }

    #[test]
    fn a_suspension_defers_until_it_ends_or_is_lifted() {
        let mut pacing = Pacing::default();
        let report = Report::local("4.4.1", "connecting to 192.0.2.1:25: Connection refused");
        pacing.suspend("down.test", 60_000, report);
        let deferral = pacing.suspension("down.test", 59_999).expect("suspended");
        assert_eq!(deferral.status, "4.4.1");
        assert_eq!(
            deferral.diagnostic,
            "delivery temporarily suspended: connecting to 192.0.2.1:25: Connection refused"
        );
        assert!(pacing.suspension("other.test", 0).is_none());
        assert!(pacing.suspension("down.test", 60_000).is_none(), "over at its end");
        pacing.suspend("down.test", 60_000, Report::local("4.4.1", "x"));
        pacing.resume(Some("DOWN.test"));
        assert!(pacing.suspension("down.test", 0).is_none(), "lifted by a flush");
    }

    #[test]
    fn domains_without_their_own_limits_take_the_defaults() {
        let limits = Limits {
            per_domain: 10,
            domains: HashMap::from([(
                "slow.test".to_string(),
                DomainLimit {
                    concurrency: Some(2),
                    rate: None,
                    tls: Some(TlsMode::Required),
                },
            )]),
            suspend_unreachable: true,
        };
        assert_eq!(limits.concurrency("slow.test"), 2);
        assert_eq!(limits.concurrency("other.test"), 10);
        assert_eq!(limits.rate("slow.test"), None);
        assert_eq!(limits.tls("slow.test"), Some(TlsMode::Required));
        assert_eq!(limits.tls("other.test"), None);
    }
}
