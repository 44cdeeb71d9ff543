//! The epoch ticker: advances the engine's epoch every millisecond while
//! guest calls run, so that their deadlines are enforced (and long calls
//! yield to other tasks), and sleeps while none has run for a while, so that
//! an idle server is not woken a thousand times a second.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;
use wasmtime::EngineWeak;

/// How often the epoch advances (the precision of plugin timeouts).
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Ticks without a guest call before the ticker sleeps.
const LINGER_TICKS: u32 = 100;

/// How long the sleeping ticker waits before it looks again whether its
/// engine is gone (a call's start wakes it at once).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The ticker of one engine.
pub(super) struct EpochTicker {
    /// Guest calls running now.
    running: AtomicUsize,
    /// Set when a call starts; cleared when the ticker sees it.
    called: AtomicBool,
    /// The ticker's thread, to wake it.
    thread: OnceLock<Thread>,
    /// Epochs advanced so far.
    ticks: AtomicU64,
}

/// Keeps the ticker ticking while a guest call runs: hold it until the call
/// has returned.
#[must_use = "the ticker may sleep once this is dropped"]
pub(super) struct Ticking(Arc<EpochTicker>);

impl EpochTicker {
    /// Starts the ticker thread of `engine`; it ends once the engine is dropped.
    pub(super) fn start(engine: EngineWeak) -> std::io::Result<Arc<EpochTicker>> {
        let ticker = Arc::new(EpochTicker {
            running: AtomicUsize::new(0),
            called: AtomicBool::new(false),
            thread: OnceLock::new(),
            ticks: AtomicU64::new(0),
        });
        let runner = ticker.clone();
        let handle = std::thread::Builder::new()
            .name("waraka-epoch".into())
            .spawn(move || runner.run(engine))?;
        let _ = ticker.thread.set(handle.thread().clone());
        Ok(ticker)
    }

    fn run(&self, engine: EngineWeak) {
        let mut quiet_ticks = 0;
        while let Some(engine) = engine.upgrade() {
            let busy = self.running.load(Ordering::Acquire) > 0 || self.called.swap(false, Ordering::AcqRel);
            quiet_ticks = if busy { 0 } else { quiet_ticks + 1 };
            if quiet_ticks > LINGER_TICKS {
                drop(engine);
                // A call's start unparks the thread; a start between the
                // check above and here leaves the token, so park returns.
                std::thread::park_timeout(IDLE_CHECK);
                continue;
            }
            engine.increment_epoch();
            self.ticks.fetch_add(1, Ordering::Relaxed);
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        }
    }

    /// Marks a guest call as running until the returned guard is dropped,
    /// waking the ticker if it sleeps.
    pub(super) fn ticking(self: &Arc<Self>) -> Ticking {
        self.called.store(true, Ordering::Release);
        if self.running.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
        Ticking(self.clone())
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use wasmtime::{Config, Engine};

    /// Waits up to five seconds for the ticker to advance past `ticks`.
    fn advances_past(ticker: &EpochTicker, ticks: u64) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if ticker.ticks.load(Ordering::Relaxed) > ticks {
                return true;
            }
            std::thread::sleep(EPOCH_TICK);
        }
        false
    }

    #[test]
    fn it_ticks_while_calls_run_sleeps_when_idle_and_a_call_wakes_it() {
        let engine = Engine::new(Config::new().epoch_interruption(true)).unwrap();
        let ticker = EpochTicker::start(engine.weak()).unwrap();
        let idle = || {
            // Past the linger, the count stops.
            std::thread::sleep(EPOCH_TICK * LINGER_TICKS * 3);
            let before = ticker.ticks.load(Ordering::Relaxed);
            std::thread::sleep(EPOCH_TICK * LINGER_TICKS * 2);
            ticker.ticks.load(Ordering::Relaxed) == before
        };
        assert!(idle(), "no call yet: asleep");
        let call = ticker.ticking();
        let now = ticker.ticks.load(Ordering::Relaxed);
        assert!(advances_past(&ticker, now), "a call wakes it");
        // A call longer than the linger keeps it ticking.
        std::thread::sleep(EPOCH_TICK * LINGER_TICKS * 3);
        let now = ticker.ticks.load(Ordering::Relaxed);
        assert!(advances_past(&ticker, now), "still ticking during a long call");
        drop(call);
        assert!(idle(), "asleep again after the call");
    }
}
