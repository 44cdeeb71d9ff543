//! What the delivery worker asks its policy (the plugins' outbound hooks)
//! about queued mail. Typed answers, no verdicts: each hook can only say what
//! makes sense for it, and a fault is an error the worker handles safely.

use futures_util::future::BoxFuture;
use std::time::Duration;

/// The queue entry a hook is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryInfo {
    /// The queue entry id (as `waraka queue list` shows it).
    pub id: String,
    /// The destination domain, lower-case.
    pub domain: String,
    /// `local@domain`; empty for a bounce.
    pub sender: String,
    /// The recipients still to deliver.
    pub recipients: Vec<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it was queued, in ms since the epoch.
    pub arrival_ms: u64,
}

/// A next hop a plugin chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHopSpec {
    /// A host name or IP address.
    pub host: String,
    /// The SMTP port.
    pub port: u16,
}

/// What `send-email` decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendDecision {
    /// Attempt delivery now.
    Deliver,
    /// Wait first (not a failed attempt).
    Delay(Duration),
    /// A plugin took care of it: remove the entry, no delivery, no DSN.
    Drop,
}

/// A recipient that failed, as hooks see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientFailure {
    /// The recipient as `local@domain`.
    pub recipient: String,
    /// The enhanced status code, e.g. `5.1.1`.
    pub status: String,
    /// The remote reply or the local reason.
    pub diagnostic: String,
}

/// A plugin fault in an outbound hook: which plugin, and what happened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("plugin {plugin} failed in {hook}: {fault}")]
pub struct HookFault {
    /// The plugin's name.
    pub plugin: String,
    /// The hook's WIT name.
    pub hook: &'static str,
    /// What went wrong (trap, timeout, fuel…).
    pub fault: String,
}

/// The outbound hooks. In each, the first plugin with an answer other than
/// the default decides; `delivered` reaches every plugin.
pub trait OutboundPolicy: Send + Sync {
    /// Before an attempt.
    fn send_email<'a>(&'a self, delivery: &'a DeliveryInfo) -> BoxFuture<'a, Result<SendDecision, HookFault>>;
    /// Next hops instead of routes and MX lookup, if a plugin gives some.
    fn get_mx<'a>(&'a self, delivery: &'a DeliveryInfo) -> BoxFuture<'a, Result<Option<Vec<NextHopSpec>>, HookFault>>;
    /// Temporary failures waiting `retry_in`; `Some` replaces the wait.
    fn deferred<'a>(
        &'a self,
        delivery: &'a DeliveryInfo,
        failures: &'a [RecipientFailure],
        retry_in: Duration,
    ) -> BoxFuture<'a, Result<Option<Duration>, HookFault>>;
    /// Permanent failures; `true` suppresses the DSN.
    fn bounce<'a>(
        &'a self,
        delivery: &'a DeliveryInfo,
        failures: &'a [RecipientFailure],
    ) -> BoxFuture<'a, Result<bool, HookFault>>;
    /// `host` accepted `recipients` with `reply`.
    fn delivered<'a>(
        &'a self,
        delivery: &'a DeliveryInfo,
        recipients: &'a [String],
        host: &'a str,
        reply: &'a str,
    ) -> BoxFuture<'a, ()>;
}
