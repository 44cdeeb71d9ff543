//! The circuit breaker of one plugin version. After `breaker_faults`
//! consecutive faults (counted across every connection; any successful call
//! resets the count) the plugin is not called at all for a backoff period:
//! its hooks answer as its `on_error` says, at no cost. The first call after
//! the period is a trial: a success closes the breaker, a fault opens it
//! again for twice as long (up to [`MAX_BACKOFF`]). A new version of the
//! plugin starts with a closed breaker.

use super::limits::PluginLimits;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The longest a breaker stays open.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Consecutive faults and the open period of one plugin version.
#[derive(Debug)]
pub struct Breaker {
    /// What `open_until_ms` counts from.
    epoch: Instant,
    /// Faults since the last successful call.
    faults: AtomicU32,
    /// Times it opened since it was last closed by a success.
    trips: AtomicU32,
    /// Milliseconds after `epoch` until which calls are held back (0: closed).
    open_until_ms: AtomicU64,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            epoch: Instant::now(),
            faults: AtomicU32::new(0),
            trips: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
        }
    }
}

impl Breaker {
    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Whether calls are held back now.
    pub fn is_open(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Relaxed);
        until != 0 && self.millis(Instant::now()) < until
    }

    /// A call succeeded: the fault count restarts, and a trial closes the breaker.
    pub fn success(&self, plugin: &str) {
        if self.faults.load(Ordering::Relaxed) != 0 {
            self.faults.store(0, Ordering::Relaxed);
        }
        if self.trips.load(Ordering::Relaxed) != 0 && self.trips.swap(0, Ordering::Relaxed) != 0 {
            self.open_until_ms.store(0, Ordering::Relaxed);
            info!(plugin, "circuit breaker closed: plugin re-enabled");
        }
    }

    /// A call faulted: opens the breaker after `breaker_faults` in a row, or
    /// at once when the call was a trial after an open period. Returns how
    /// long it opened for.
    pub fn fault(&self, plugin: &str, limits: &PluginLimits) -> Option<Duration> {
        if limits.breaker_faults == 0 {
            return None;
        }
        let faults = self.faults.fetch_add(1, Ordering::Relaxed) + 1;
        let trips = self.trips.load(Ordering::Relaxed);
        if trips == 0 && faults < limits.breaker_faults {
            return None;
        }
        self.faults.store(0, Ordering::Relaxed);
        let trips = self.trips.fetch_add(1, Ordering::Relaxed);
        let backoff = limits
            .breaker_backoff
            .saturating_mul(1u32 << trips.min(16))
            .min(MAX_BACKOFF);
        self.open_until_ms
            .store(self.millis(Instant::now() + backoff).max(1), Ordering::Relaxed);
        warn!(
            plugin,
            faults,
            backoff_ms = backoff.as_millis() as u64,
            "circuit breaker open: plugin disabled"
        );
        metrics::counter!(crate::telemetry::PLUGIN_BREAKER_TRIPS, "plugin" => plugin.to_string()).increment(1);
        Some(backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(faults: u32) -> PluginLimits {
        PluginLimits {
            breaker_faults: faults,
            breaker_backoff: Duration::from_millis(50),
            ..PluginLimits::default()
        }
    }

    #[test]
    fn opens_after_consecutive_faults_and_a_success_resets_the_count() {
        let breaker = Breaker::default();
        let limits = limits(3);
        assert_eq!(breaker.fault("p", &limits), None);
        assert_eq!(breaker.fault("p", &limits), None);
        breaker.success("p");
        assert_eq!(breaker.fault("p", &limits), None);
        assert_eq!(breaker.fault("p", &limits), None);
        assert!(!breaker.is_open());
        assert_eq!(breaker.fault("p", &limits), Some(Duration::from_millis(50)));
        assert!(breaker.is_open());
    }

    #[test]
    fn a_failed_trial_reopens_for_twice_as_long_and_a_good_one_closes() {
        let breaker = Breaker::default();
        let limits = limits(1);
        assert_eq!(breaker.fault("p", &limits), Some(Duration::from_millis(50)));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!breaker.is_open(), "the trial call goes through");
        assert_eq!(breaker.fault("p", &limits), Some(Duration::from_millis(100)));
        assert!(breaker.is_open());
        std::thread::sleep(Duration::from_millis(110));
        breaker.success("p");
        assert!(!breaker.is_open());
        assert_eq!(
            breaker.fault("p", &limits),
            Some(Duration::from_millis(50)),
            "closed: back to the first backoff"
        );
    }

    #[test]
    fn zero_faults_means_never_open() {
        let breaker = Breaker::default();
        for _ in 0..100 {
            assert_eq!(breaker.fault("p", &limits(0)), None);
        }
        assert!(!breaker.is_open());
    }
}
