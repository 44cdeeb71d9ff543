//! The hooks and their WIT names: the one list both sides of the plugin
//! interface compile. The host includes this file as its own `Hook`
//! (`host/src/policy/mod.rs`), so it stays plain Rust without dependencies.

/// The hooks a plugin can implement (names as in the WIT and `docs/hooks.md`):
/// the inbound ones a session calls, then the outbound ones of the delivery worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// A client connected; decides the greeting.
    Connect,
    /// `HELO host`.
    Helo,
    /// `EHLO host`.
    Ehlo,
    /// EHLO keywords to add to the capability list.
    Capabilities,
    /// Credentials from `AUTH`.
    Auth,
    /// A verb the core does not know.
    UnrecognizedCommand,
    /// `MAIL FROM`.
    Mail,
    /// `RCPT TO`.
    Rcpt,
    /// A recipient was accepted by `rcpt`.
    RcptOk,
    /// `DATA`, before the `354`.
    Data,
    /// The whole message has arrived.
    DataPost,
    /// The message went over the size limit.
    MaxDataExceeded,
    /// Store the message of a non-relaying session durably.
    Queue,
    /// Store the message of a relaying session for delivery.
    QueueOutbound,
    /// The message was accepted with a queue id (notification).
    QueueOk,
    /// The transaction ends (notification).
    ResetTransaction,
    /// The client is gone (notification).
    Disconnect,
    /// A chain is about to reject; `ok` overrides it.
    Deny,
    /// Outbound: before each delivery attempt.
    SendEmail,
    /// Outbound: where to deliver.
    GetMx,
    /// Outbound: recipients failed temporarily.
    Deferred,
    /// Outbound: recipients failed for good; may suppress the bounce.
    Bounce,
    /// Outbound: recipients were delivered.
    Delivered,
}

impl Hook {
    /// Every inbound hook, in session order.
    pub const ALL: &'static [Hook] = &[
        Hook::Connect,
        Hook::Helo,
        Hook::Ehlo,
        Hook::Capabilities,
        Hook::Auth,
        Hook::UnrecognizedCommand,
        Hook::Mail,
        Hook::Rcpt,
        Hook::RcptOk,
        Hook::Data,
        Hook::DataPost,
        Hook::MaxDataExceeded,
        Hook::Queue,
        Hook::QueueOutbound,
        Hook::QueueOk,
        Hook::ResetTransaction,
        Hook::Disconnect,
        Hook::Deny,
    ];

    /// Every outbound hook (called by the delivery worker, without a session).
    pub const OUTBOUND: &'static [Hook] = &[
        Hook::SendEmail,
        Hook::GetMx,
        Hook::Deferred,
        Hook::Bounce,
        Hook::Delivered,
    ];

    /// The hook's name in the WIT (`"rcpt-ok"`, `"data-post"`…).
    pub fn name(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Helo => "helo",
            Hook::Ehlo => "ehlo",
            Hook::Capabilities => "capabilities",
            Hook::Auth => "auth",
            Hook::UnrecognizedCommand => "unrecognized-command",
            Hook::Mail => "mail",
            Hook::Rcpt => "rcpt",
            Hook::RcptOk => "rcpt-ok",
            Hook::Data => "data",
            Hook::DataPost => "data-post",
            Hook::MaxDataExceeded => "max-data-exceeded",
            Hook::Queue => "queue",
            Hook::QueueOutbound => "queue-outbound",
            Hook::QueueOk => "queue-ok",
            Hook::ResetTransaction => "reset-transaction",
            Hook::Disconnect => "disconnect",
            Hook::Deny => "deny",
            Hook::SendEmail => "send-email",
            Hook::GetMx => "get-mx",
            Hook::Deferred => "deferred",
            Hook::Bounce => "bounce",
            Hook::Delivered => "delivered",
        }
    }

    /// Looks a hook up by its WIT name.
    pub fn from_name(name: &str) -> Option<Hook> {
        Hook::every().find(|h| h.name() == name)
    }

    /// Every hook: the inbound ones in session order, then the outbound ones.
    pub fn every() -> impl Iterator<Item = Hook> {
        Hook::ALL.iter().chain(Hook::OUTBOUND).copied()
    }

    /// Whether the delivery worker calls this hook (not a session).
    pub fn is_outbound(self) -> bool {
        Hook::OUTBOUND.contains(&self)
    }
}
