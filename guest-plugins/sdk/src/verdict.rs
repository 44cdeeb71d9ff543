use crate::{Reply, Verdict};

fn text(code: u16, enhanced: Option<&str>, message: &str) -> Option<Reply> {
    Some(Reply {
        code,
        enhanced: enhanced.map(str::to_string),
        lines: message.lines().map(str::to_string).collect(),
    })
}

/// Builds a reply whose code the host picks for the hook, with this text.
fn msg(message: &str) -> Option<Reply> {
    Some(Reply {
        code: 0,
        enhanced: None,
        lines: message.lines().map(str::to_string).collect(),
    })
}

impl Verdict {
    /// Accept, with the hook's default reply.
    pub fn ok() -> Self {
        Verdict::Ok(None)
    }
    /// Accept with this reply text.
    pub fn ok_with(message: &str) -> Self {
        Verdict::Ok(msg(message))
    }
    /// Reject permanently with this text; the host picks the code (e.g. 550).
    pub fn deny(message: &str) -> Self {
        Verdict::Deny(msg(message))
    }
    /// Reject temporarily with this text; the host picks the code (e.g. 450).
    pub fn denysoft(message: &str) -> Self {
        Verdict::Denysoft(msg(message))
    }
    /// Reject permanently and close the connection.
    pub fn deny_disconnect(message: &str) -> Self {
        Verdict::DenyDisconnect(msg(message))
    }
    /// Reject temporarily and close the connection.
    pub fn denysoft_disconnect(message: &str) -> Self {
        Verdict::DenysoftDisconnect(msg(message))
    }
    /// Reject permanently with an exact code and enhanced status, e.g.
    /// `Verdict::deny_code(550, "5.1.1", "No such user")`.
    pub fn deny_code(code: u16, enhanced: &str, message: &str) -> Self {
        Verdict::Deny(text(code, Some(enhanced), message))
    }
    /// Reject temporarily with an exact code and enhanced status.
    pub fn denysoft_code(code: u16, enhanced: &str, message: &str) -> Self {
        Verdict::Denysoft(text(code, Some(enhanced), message))
    }
}
