/// The hooks a plugin can implement (names as in the WIT and `docs/hooks.md`):
/// the inbound ones a session calls, then the outbound ones of the delivery worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Connect,
    Helo,
    Ehlo,
    Capabilities,
    Auth,
    UnrecognizedCommand,
    Mail,
    Rcpt,
    RcptOk,
    Data,
    DataPost,
    MaxDataExceeded,
    Queue,
    QueueOutbound,
    QueueOk,
    ResetTransaction,
    Disconnect,
    Deny,
    SendEmail,
    GetMx,
    Deferred,
    Bounce,
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
}
