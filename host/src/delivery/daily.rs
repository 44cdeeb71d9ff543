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

/// What a report counts over a period.
pub trait Tally: Default + Serialize + DeserializeOwned + Send {
    /// Whether nothing was counted.
    fn is_empty(&self) -> bool;
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

/// Day-by-day counts of one kind, in memory and in a file.
#[derive(Debug)]
pub struct DailyCounts<T> {
    path: PathBuf,
    /// The counts, and whether they changed since the last save.
    counts: Mutex<(Counts<T>, bool)>,
}

impl<T: Tally> DailyCounts<T> {
    /// Counts kept in `path` (read back from a previous run when it holds
    /// any; an unreadable file is logged and counting starts afresh).
    pub fn open(path: &Path, now_ms: u64) -> DailyCounts<T> {
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
        DailyCounts {
            path: path.to_path_buf(),
            counts: Mutex::new((counts, false)),
        }
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
