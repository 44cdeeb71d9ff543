//! The WebAssembly plugin runtime: loads components built against the
//! `waraka:plugin` world, runs hook chains with per-plugin fuel, wall-clock
//! and memory limits, and binds the host imports to the session and the
//! capabilities.

mod bindings;
mod breaker;
mod capability_imports;
mod chain;
mod epoch;
mod imports;
mod limits;
mod loader;
mod milter_imports;
mod outbound;
mod registry;
mod runtime;
mod store;
mod tarpit;
mod warm;
mod wasi_sync;

pub use chain::Chain;
pub use limits::{OnError, PluginLimits};
pub use loader::{DirGrant, LoadedPlugin, PluginSet, PluginSource, PluginSpec};
pub use outbound::PluginOutbound;
pub use registry::{Registry, Rejection, ReloadSummary};
pub use runtime::{Backends, Runtime, RuntimeSettings, Services};
pub use tarpit::FaultTarpit;

/// Records bytes that crossed between host and guest memory (target
/// `waraka::guest_bytes`, level trace), so a benchmark can add them up with
/// `RUST_LOG=waraka::guest_bytes=trace` at no cost otherwise.
fn trace_guest_bytes(call: &'static str, bytes: usize) {
    tracing::trace!(target: "waraka::guest_bytes", call, bytes);
}
