//! Waraka: an SMTP server whose mail policy runs in sandboxed WebAssembly
//! component plugins.
//!
//! Layers, each depending only on those above it:
//! - [`protocol`]: SMTP bytes ↔ commands and replies (no I/O), the
//!   `waraka-protocol` crate (`host/protocol`), which depends on nothing of
//!   the server and is what the fuzz targets exercise.
//! - [`capabilities`]: host services for plugins (no SMTP, no WASM).
//! - [`policy`]: hooks, verdicts and the verdict → reply table.
//! - [`session`]: the SMTP state machine, asking a `Policy` at each hook.
//! - [`queue`]: the durable outbound queue (no SMTP session, no WASM).
//! - [`delivery`]: the SMTP client, routing, bounces and the worker that
//!   delivers queued mail, asking an `OutboundPolicy` (no WASM).
//! - [`plugins`]: the WASM runtime: a `Policy` made of plugin chains, the
//!   plugins' `OutboundPolicy`, and the capability imports (the `forward`
//!   capability uses the delivery client).
//! - [`config`], [`server`], [`proxy`], [`control`], [`cli`]: the instance,
//!   sockets (behind a load balancer too) and commands; [`migrate`]: an
//!   instance made from a Haraka install directory; [`sendmail`] and
//!   [`maildrop`]: local programs' mail, over the submission socket or,
//!   while the server is down, left on disk for its pickup.
//! - [`telemetry`]: metric names and the Prometheus exporter (used by any layer).
#![warn(missing_docs)]

pub mod acme;
pub mod admission;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod control;
pub mod delivery;
pub mod lockout;
pub mod maildrop;
pub mod migrate;
pub mod password;
pub mod plugins;
pub mod policy;
pub mod proxy;
pub use waraka_protocol as protocol;
pub mod quarantine;
pub mod queue;
pub mod reload;
pub mod scaffold;
pub mod sendmail;
pub mod server;
pub mod session;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod trial;
