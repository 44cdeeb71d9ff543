//! When to retry a delivery that failed temporarily, and when to give up.
//!
//! A schedule is a list of waits: after failure N (1-based) the entry waits
//! the Nth interval; after the last one the next failure bounces. The text
//! form is Haraka's `temp_fail_intervals`: `1m, 5m*2, 1h*3` is
//! 60 s, 300 s, 300 s, 3600 s, 3600 s, 3600 s; units `s`, `m`, `h`, `d`;
//! `none` bounces on the first temporary failure.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The shortest wait a schedule may hold.
const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// The waits between delivery attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    intervals: Vec<Duration>,
}

impl Default for RetrySchedule {
    /// Haraka's default: twelve waits doubling from 64 s to about 36 h,
    /// about three days in all.
    fn default() -> Self {
        RetrySchedule {
            intervals: (0..12).map(|n| Duration::from_secs(1 << (n + 6))).collect(),
        }
    }
}

impl RetrySchedule {
    /// How long to wait after failure number `failures` (1 for the first);
    /// `None` when the schedule is used up and the entry should bounce.
    pub fn wait_after(&self, failures: u32) -> Option<Duration> {
        let index = usize::try_from(failures).ok()?.checked_sub(1)?;
        self.intervals.get(index).copied()
    }

    /// The waits still to come after the one that follows failure number
    /// `failures`: with it, how long until the last attempt.
    pub fn remaining_after(&self, failures: u32) -> Duration {
        let from = usize::try_from(failures).unwrap_or(usize::MAX);
        self.intervals.iter().skip(from).sum()
    }

    /// The total time from the first failure to the bounce.
    pub fn total(&self) -> Duration {
        self.intervals.iter().sum()
    }
}

/// Why a schedule text was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("retry schedule {text:?}: {reason}")]
pub struct ScheduleError {
    text: String,
    reason: String,
}

fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    Some(Duration::from_secs(number.checked_mul(seconds)?))
}

impl FromStr for RetrySchedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| ScheduleError {
            text: text.to_string(),
            reason,
        };
        if text.trim().eq_ignore_ascii_case("none") {
            return Ok(RetrySchedule { intervals: Vec::new() });
        }
        let mut intervals = Vec::new();
        for item in text.split(',') {
            let (wait, times) = match item.split_once('*') {
                Some((wait, times)) => {
                    let times: usize = times
                        .trim()
                        .parse()
                        .map_err(|_| error(format!("{:?} is not a repeat count", times.trim())))?;
                    (wait, times)
                }
                None => (item, 1),
            };
            let wait = parse_duration(wait)
                .ok_or_else(|| error(format!("{:?} is not a duration such as 90s, 5m, 2h or 1d", wait.trim())))?;
            if wait < MIN_INTERVAL {
                return Err(error(format!("{:?} is shorter than 5s", item.trim())));
            }
            if times == 0 || times > 1000 {
                return Err(error(format!("{:?}: repeat 1 to 1000 times", item.trim())));
            }
            intervals.extend(std::iter::repeat_n(wait, times));
        }
        Ok(RetrySchedule { intervals })
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.intervals.is_empty() {
            return f.write_str("none");
        }
        let texts: Vec<String> = self.intervals.iter().map(|d| format!("{}s", d.as_secs())).collect();
        f.write_str(&texts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_doubles_for_about_three_days() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.wait_after(1), Some(Duration::from_secs(64)));
        assert_eq!(schedule.wait_after(2), Some(Duration::from_secs(128)));
        assert_eq!(schedule.wait_after(12), Some(Duration::from_secs(131072)));
        assert_eq!(schedule.wait_after(13), None, "then bounce");
        assert_eq!(schedule.wait_after(0), None);
        let days = schedule.total().as_secs_f64() / 86400.0;
        assert!((3.0..3.1).contains(&days), "{days}");
    }

    #[test]
    fn haraka_style_text() {
        let schedule: RetrySchedule = "1m, 5m*2, 1h*3".parse().unwrap();
        let waits: Vec<u64> = (1..=7)
            .filter_map(|n| schedule.wait_after(n))
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(waits, [60, 300, 300, 3600, 3600, 3600]);
        assert_eq!(schedule.to_string(), "60s, 300s, 300s, 3600s, 3600s, 3600s");
        let none: RetrySchedule = "none".parse().unwrap();
        assert_eq!(none.wait_after(1), None);
        assert_eq!(
            "2d".parse::<RetrySchedule>().unwrap().total(),
            Duration::from_secs(172800)
        );
    }

    #[test]
    fn bad_text_says_what_is_wrong() {
        for (text, reason) in [
            ("1s", "shorter than 5s"),
            ("5 minutes", "not a duration"),
            ("1m*x", "not a repeat count"),
            ("1m*0", "repeat 1 to 1000"),
            ("", "not a duration"),
        ] {
            let error = text.parse::<RetrySchedule>().unwrap_err().to_string();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }
}
