/// The inbound hooks a plugin can implement (names as in the WIT and `docs/hooks.md`).
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
        }
    }
}
