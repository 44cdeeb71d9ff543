//! Counts kept day by day for the reports mailed once a UTC day is over
//! (TLS reports, DMARC aggregate reports): what is being counted now, the
//! ended days not reported yet, all kept in memory and in a JSON file saved
//! at most a minute late, so a crash loses at most that minute's counts.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A report ready to send: to whom, and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportMail {
    /// The domain it is about.
    pub domain: String,
    /// The addresses of its `rua`.
    pub recipients: Vec<String>,
    /// The message (RFC 5322), not yet signed.
    pub message: Vec<u8>,
}

/// Who reports: the names a report carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitter {
    /// The reporting organisation's name (the host name).
    pub name: String,
    /// The `From:` address and contact address of the reports.
    pub from: String,
}

/// A day in milliseconds.
pub const DAY_MS: u64 = 24 * 3600 * 1000;

/// How long after its day a report that could not be sent is tried again.
pub const RETRY_FOR_MS: u64 = DAY_MS;

/// What a report counts over a period, by domain.
pub trait Tally: Default + Serialize + DeserializeOwned + Send {
    /// Whether nothing was counted.
    fn is_empty(&self) -> bool;

    /// The domains it has counts for, in order.
    fn domains(&self) -> Vec<String>;

    /// Keeps only the counts of `domains`.
    fn retain_domains(&mut self, domains: &[String]);
}

/// The counts of a stretch of time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period<T> {
    /// Its start, in ms since the epoch.
    pub start_ms: u64,
    /// Its end, in ms since the epoch (0 while it runs).
    pub end_ms: u64,
    /// What was counted in it.
    #[serde(flatten)]
    pub tally: T,
}

impl<T: Tally> Period<T> {
    fn starting(start_ms: u64) -> Period<T> {
        Period {
            start_ms,
            end_ms: 0,
            tally: T::default(),
        }
    }

    /// The domains it has counts for, in order.
    pub fn domains(&self) -> Vec<String> {
        self.tally.domains()
    }
}

/// What is kept on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(bound = "T: Tally")]
struct Counts<T> {
    /// The period being counted.
    current: Period<T>,
    /// Ended periods whose reports are not sent yet.
    ended: Vec<Period<T>>,
}

/// Day-by-day counts of one kind of report, in memory and in a file, and
/// who sends the reports made of them. What a kind counts, and how its
/// reports read, is in its own module (`impl DailyReports<ItsTally>`).
#[derive(Debug)]
pub struct DailyReports<T> {
    path: PathBuf,
    /// The counts, and whether they changed since the last save.
    counts: Mutex<(Counts<T>, bool)>,
    submitter: Submitter,
}

impl<T: Tally> DailyReports<T> {
    /// Counts kept in `path` (read back from a previous run when it holds
    /// any; an unreadable file is logged and counting starts afresh), for
    /// reports from `submitter`.
    pub fn open(path: &Path, submitter: Submitter, now_ms: u64) -> DailyReports<T> {
        let mut counts: Counts<T> = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "unreadable report counts; starting afresh");
                Counts::default()
            }),
            Err(_) => Counts::default(),
        };
        if counts.current.start_ms == 0 {
            counts.current = Period::starting(now_ms);
        }
        DailyReports {
            path: path.to_path_buf(),
            counts: Mutex::new((counts, false)),
            submitter,
        }
    }

    /// Who sends the reports.
    pub fn submitter(&self) -> &Submitter {
        &self.submitter
    }

    /// Counts something in the period of `now_ms`.
    pub fn add(&self, now_ms: u64, count: impl FnOnce(&mut T)) {
        let mut guard = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (counts, dirty) = &mut *guard;
        roll_over(counts, now_ms);
        count(&mut counts.current.tally);
        *dirty = true;
    }

    /// Saves the counts when they changed since the last save.
    pub fn save(&self) -> std::io::Result<()> {
        let text = {
            let mut guard = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let (counts, dirty) = &mut *guard;
            if !*dirty {
                return Ok(());
            }
            *dirty = false;
            serde_json::to_vec(counts).map_err(std::io::Error::other)?
        };
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, &self.path)
    }

    /// Takes the periods with counts whose reports are due: those of days
    /// that are over, and with `now` also the one being counted (ended now).
    pub fn take_due(&self, now_ms: u64, now: bool) -> Vec<Period<T>> {
        let mut guard = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (counts, dirty) = &mut *guard;
        roll_over(counts, now_ms);
        if now && now_ms > counts.current.start_ms {
            let mut ended = std::mem::replace(&mut counts.current, Period::starting(now_ms));
            ended.end_ms = now_ms;
            counts.ended.push(ended);
        }
        let due = std::mem::take(&mut counts.ended);
        *dirty |= !due.is_empty();
        due.into_iter().filter(|p| !p.tally.is_empty()).collect()
    }
}

impl<T: Tally> DailyReports<T> {
    /// Puts back the counts of `domains` in the ended `period`, whose
    /// reports could not be sent for now (a DNS failure), to be taken again
    /// by the next [`DailyReports::take_due`]; given up (logged) once
    /// [`RETRY_FOR_MS`] past the period's end.
    pub fn retry_later(&self, mut period: Period<T>, domains: &[String], now_ms: u64) {
        if domains.is_empty() {
            return;
        }
        if now_ms > period.end_ms + RETRY_FOR_MS {
            tracing::warn!(domains = %domains.join(","), "reports not sent a day after their period: given up");
            return;
        }
        period.tally.retain_domains(domains);
        let mut guard = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (counts, dirty) = &mut *guard;
        counts.ended.push(period);
        *dirty = true;
    }
}

/// Ends the period being counted when its UTC day is over.
fn roll_over<T: Tally>(counts: &mut Counts<T>, now_ms: u64) {
    let day_end = (counts.current.start_ms / DAY_MS + 1) * DAY_MS;
    if now_ms >= day_end {
        let next = Period::starting(now_ms / DAY_MS * DAY_MS);
        let mut ended = std::mem::replace(&mut counts.current, next);
        ended.end_ms = day_end - 1000;
        counts.ended.push(ended);
    }
}

/// What the report tests share: a first day and a submitter.
#[cfg(test)]
pub(super) mod testing {
    use super::{DAY_MS, Submitter};

    /// The start of a UTC day, as the tests' clock.
    pub const DAY1: u64 = 20_000 * DAY_MS;

    /// A submitter named `name`, sending from `from`.
    pub fn submitter(name: &str, from: &str) -> Submitter {
        Submitter {
            name: name.into(),
            from: from.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{DAY1, submitter};
    use super::*;
    use std::collections::BTreeMap;

    /// Messages counted by domain.
    #[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    struct ByDomain(BTreeMap<String, u32>);

    impl Tally for ByDomain {
        fn is_empty(&self) -> bool {
            self.0.is_empty()
        }

        fn domains(&self) -> Vec<String> {
            self.0.keys().cloned().collect()
        }

        fn retain_domains(&mut self, domains: &[String]) {
            self.0.retain(|domain, _| domains.contains(domain));
        }
    }

    fn count(counts: &DailyReports<ByDomain>, domain: &str, now_ms: u64) {
        counts.add(now_ms, |tally| *tally.0.entry(domain.to_string()).or_default() += 1);
    }

    #[test]
    fn a_day_is_due_once_over_and_what_could_not_be_sent_comes_back_for_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let counts = DailyReports::<ByDomain>::open(
            &dir.path().join("counts.json"),
            submitter("mx.me.test", "reports@me.test"),
            DAY1 + 1,
        );
        count(&counts, "a.test", DAY1 + 10);
        count(&counts, "b.test", DAY1 + 20);
        assert_eq!(counts.take_due(DAY1 + 30, false), vec![], "the day is not over");
        count(&counts, "a.test", DAY1 + DAY_MS + 5);
        let due = counts.take_due(DAY1 + DAY_MS + 10, false);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].start_ms, due[0].end_ms), (DAY1 + 1, DAY1 + DAY_MS - 1000));
        let period = due.into_iter().next().unwrap();
        counts.retry_later(period, &["b.test".to_string()], DAY1 + DAY_MS + 20);
        counts.save().unwrap();

        let reopened = DailyReports::<ByDomain>::open(
            &dir.path().join("counts.json"),
            submitter("mx.me.test", "reports@me.test"),
            DAY1 + DAY_MS + 30,
        );
        let again = reopened.take_due(DAY1 + DAY_MS + 40, false);
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(
            again[0].tally.0,
            BTreeMap::from([("b.test".to_string(), 1)]),
            "only what waits"
        );
        let period = again.into_iter().next().unwrap();
        reopened.retry_later(period, &["b.test".to_string()], DAY1 + 3 * DAY_MS);
        let last = reopened.take_due(DAY1 + 3 * DAY_MS, false);
        let domains: Vec<_> = last.iter().map(|p| p.tally.0.clone()).collect();
        assert_eq!(
            domains,
            [BTreeMap::from([("a.test".to_string(), 1)])],
            "b.test given up after a day"
        );
    }
}
