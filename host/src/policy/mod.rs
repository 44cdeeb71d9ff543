//! What the SMTP session asks its policy (the plugin chain) and what it gets
//! back: hooks, typed verdicts, and the one table that turns a verdict into a
//! reply. Nothing here knows about WebAssembly.

mod outbound;
mod table;

use crate::protocol::{Address, Reply};
use std::future::Future;

pub use outbound::{DeliveryInfo, HookFault, NextHopSpec, OutboundPolicy, RecipientFailure, SendDecision};
pub use table::{Effect, HOST_QUEUE_FAILED, Rule, rule};

#[path = "../../../guest-plugins/sdk/src/hook.rs"]
mod hook;
pub use hook::Hook;

impl Hook {
    /// A bit for [`HookSet`].
    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of hooks (which hooks a plugin implements).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookSet(u32);

impl HookSet {
    /// Adds a hook.
    pub fn insert(&mut self, hook: Hook) {
        self.0 |= hook.bit();
    }
    /// Whether the hook is in the set.
    pub fn contains(self, hook: Hook) -> bool {
        self.0 & hook.bit() != 0
    }
    /// The hooks in session order.
    pub fn iter(self) -> impl Iterator<Item = Hook> {
        Hook::every().filter(move |h| self.contains(*h))
    }
}

/// A hook's decision. Rejecting verdicts may carry the plugin's own reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No opinion: the next plugin decides.
    Cont,
    /// Accept; the chain stops here.
    Ok(Option<Reply>),
    /// Refuse permanently (5xx).
    Deny(Option<Reply>),
    /// Refuse for now (4xx); the client may retry.
    Denysoft(Option<Reply>),
    /// Refuse permanently and close the connection.
    DenyDisconnect(Option<Reply>),
    /// Refuse for now and close the connection.
    DenysoftDisconnect(Option<Reply>),
    /// Close the connection (`421`).
    Disconnect(Option<Reply>),
}

impl Verdict {
    /// The verdict's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Cont => "cont",
            Verdict::Ok(_) => "ok",
            Verdict::Deny(_) => "deny",
            Verdict::Denysoft(_) => "denysoft",
            Verdict::DenyDisconnect(_) => "deny-disconnect",
            Verdict::DenysoftDisconnect(_) => "denysoft-disconnect",
            Verdict::Disconnect(_) => "disconnect",
        }
    }

    /// The plugin's reply, if it gave one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Verdict::Cont => None,
            Verdict::Ok(r)
            | Verdict::Deny(r)
            | Verdict::Denysoft(r)
            | Verdict::DenyDisconnect(r)
            | Verdict::DenysoftDisconnect(r)
            | Verdict::Disconnect(r) => r.as_ref(),
        }
    }

    /// Whether this verdict rejects (the `deny` hook runs before it is sent).
    pub fn is_rejection(&self) -> bool {
        !matches!(self, Verdict::Cont | Verdict::Ok(_))
    }
}

/// One hook invocation with its arguments.
#[derive(Clone, Debug)]
pub enum HookCall {
    /// A client connected.
    Connect,
    /// `HELO` with its name.
    Helo(String),
    /// `EHLO` with its name.
    Ehlo(String),
    /// Credentials from `AUTH`.
    Auth(AuthAttempt),
    /// A verb the core does not know.
    UnrecognizedCommand {
        /// The verb as sent.
        verb: String,
        /// Everything after the verb.
        args: String,
    },
    /// `MAIL FROM`.
    Mail(Address),
    /// `RCPT TO`.
    Rcpt(Address),
    /// A recipient was accepted.
    RcptOk(Address),
    /// `DATA`, before the `354`.
    Data,
    /// The whole message has arrived.
    DataPost,
    /// The message went over the size limit.
    MaxDataExceeded,
    /// Store the message of a non-relaying session.
    Queue,
    /// Store the message of a relaying session for delivery.
    QueueOutbound,
    /// The message was accepted with this queue id.
    QueueOk(String),
    /// The transaction ends.
    ResetTransaction,
    /// The client is gone.
    Disconnect,
}

impl HookCall {
    /// Which hook this call is for.
    pub fn hook(&self) -> Hook {
        match self {
            HookCall::Connect => Hook::Connect,
            HookCall::Helo(_) => Hook::Helo,
            HookCall::Ehlo(_) => Hook::Ehlo,
            HookCall::Auth(_) => Hook::Auth,
            HookCall::UnrecognizedCommand { .. } => Hook::UnrecognizedCommand,
            HookCall::Mail(_) => Hook::Mail,
            HookCall::Rcpt(_) => Hook::Rcpt,
            HookCall::RcptOk(_) => Hook::RcptOk,
            HookCall::Data => Hook::Data,
            HookCall::DataPost => Hook::DataPost,
            HookCall::MaxDataExceeded => Hook::MaxDataExceeded,
            HookCall::Queue => Hook::Queue,
            HookCall::QueueOutbound => Hook::QueueOutbound,
            HookCall::QueueOk(_) => Hook::QueueOk,
            HookCall::ResetTransaction => Hook::ResetTransaction,
            HookCall::Disconnect => Hook::Disconnect,
        }
    }
}

/// Credentials collected by a SASL exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthAttempt {
    /// `PLAIN`, `LOGIN` or `CRAM-MD5`.
    pub mechanism: String,
    /// The authentication identity.
    pub user: String,
    /// The password (PLAIN, LOGIN) or the hex digest (CRAM-MD5).
    pub secret: String,
    /// The authorisation identity, when the client sent one.
    pub authzid: Option<String>,
    /// The challenge the host sent (CRAM-MD5).
    pub challenge: Option<String>,
}

/// The result of running a hook's chain.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The verdict that ended the chain, or `cont`.
    pub verdict: Verdict,
    /// The plugin that ended the chain (none when every plugin said `cont`).
    pub plugin: Option<String>,
}

impl Decision {
    /// Nobody had an opinion.
    pub fn cont() -> Self {
        Decision {
            verdict: Verdict::Cont,
            plugin: None,
        }
    }
}

/// What the session consults at each hook: in production the WASM plugin
/// chain, in unit tests a plain Rust value.
pub trait Policy: Send {
    /// Whether any plugin implements the hook (AUTH is offered only then).
    fn implements(&self, hook: Hook) -> bool;
    /// Runs the chain for a hook that decides something.
    fn decide(&mut self, call: HookCall) -> impl Future<Output = Decision> + Send;
    /// Collects extra EHLO keywords from every plugin.
    fn capabilities(&mut self) -> impl Future<Output = Vec<String>> + Send;
    /// Tells every plugin that implements it (queue-ok, reset-transaction, disconnect).
    fn notify(&mut self, call: HookCall) -> impl Future<Output = ()> + Send;
    /// The client has gone quiet between commands: give back what is held
    /// from one hook to the next (the next hook starts afresh).
    fn park(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::{Hook, HookSet};

    /// The function names of one WIT hook interface, in order (`describe` aside).
    fn wit_functions(wit: &str) -> Vec<&str> {
        wit.lines()
            .filter_map(|line| line.trim().split_once(": func("))
            .map(|(name, _)| name)
            .filter(|name| *name != "describe")
            .collect()
    }

    #[test]
    fn hooks_are_the_wit_functions_in_order() {
        let names = |hooks: &[Hook]| hooks.iter().map(|h| h.name()).collect::<Vec<_>>();
        assert_eq!(names(Hook::ALL), wit_functions(include_str!("../../../wit/hooks.wit")));
        assert_eq!(
            names(Hook::OUTBOUND),
            wit_functions(include_str!("../../../wit/outbound.wit"))
        );
        assert!(!Hook::ALL.iter().any(|h| h.is_outbound()));
    }

    #[test]
    fn names_round_trip_and_sets_keep_session_order() {
        let mut set = HookSet::default();
        for hook in Hook::every() {
            assert_eq!(Hook::from_name(hook.name()), Some(hook));
        }
        assert_eq!(Hook::from_name("rcpt_ok"), None);
        set.insert(Hook::Delivered);
        set.insert(Hook::Rcpt);
        set.insert(Hook::Connect);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Hook::Connect, Hook::Rcpt, Hook::Delivered]
        );
        assert!(!set.contains(Hook::Mail));
    }
}
