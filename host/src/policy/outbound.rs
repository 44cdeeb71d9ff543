//! What the delivery worker asks its policy (the plugins' outbound hooks)
//! about queued mail. Typed answers, no verdicts: each hook can only say what
//! makes sense for it, and a fault is an error the worker handles safely.

use futures_util::future::BoxFuture;
use std::time::Duration;

/// The queue entry a hook is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryInfo {
    pub id: String,
    pub domain: String,
    /// `local@domain`; empty for a bounce.
    pub sender: String,
    pub recipients: Vec<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it was queued, in ms since the epoch.
    pub arrival_ms: u64,
}

/// A next hop a plugin chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHopSpec {
    pub host: String,
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
    pub recipient: String,
    pub status: String,
    pub diagnostic: String,
}

/// A plugin fault in an outbound hook: which plugin, and what happened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("plugin {plugin} failed in {hook}: {fault}")]
pub struct HookFault {
    pub plugin: String,
    pub hook: &'static str,
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
