//! Per-plugin limits and the memory limiter that enforces the memory cap.

use std::time::Duration;

pub use waraka_config::OnError;

/// Limits applied to every hook call of one plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginLimits {
    /// Wall-clock time per hook call.
    pub timeout: Duration,
    /// Fuel (roughly, WebAssembly instructions) per hook call.
    pub fuel: u64,
    /// Linear memory cap in bytes.
    pub memory: usize,
    /// What a fault answers.
    pub on_error: OnError,
    /// Consecutive faults that open the circuit breaker (0: never).
    pub breaker_faults: u32,
    /// How long the breaker first stays open; doubled at each failed trial.
    pub breaker_backoff: Duration,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            timeout: Duration::from_secs(30),
            fuel: 2_000_000_000,
            memory: 64 * 1024 * 1024,
            on_error: OnError::Tempfail,
            breaker_faults: 10,
            breaker_backoff: Duration::from_secs(1),
        }
    }
}

/// Enforces the memory cap and remembers whether it was hit, since wasmtime
/// reports a refused `memory.grow` as an ordinary trap (or not at all).
#[derive(Debug)]
pub struct MemoryLimiter {
    pub cap: usize,
    pub hit: bool,
    /// The largest linear memory the instance has grown to (bytes).
    pub largest: usize,
}

impl MemoryLimiter {
    /// A limiter with this cap, for an instance that has no memory yet.
    pub fn new(cap: usize) -> Self {
        MemoryLimiter {
            cap,
            hit: false,
            largest: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.hit = true;
            return Ok(false);
        }
        self.largest = self.largest.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
