//! The one table that says what every verdict does on every hook.
//! `docs/hooks.md` is this table in prose; change both together.

use super::{Hook, Verdict};
use crate::protocol::Reply;

/// What the session does with a chain's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The hook's positive outcome (accept the sender, the recipient, the message…).
    Proceed,
    /// Reply and stay in the current state.
    Reject,
    /// Reply and refuse every later command but QUIT with the same reply
    /// (RFC 5321 §3.1: a 554 greeting).
    Refuse,
    /// Reply and close the connection.
    Close,
    /// Hand the message to the host's own outbound queue: the rule's reply
    /// once it is stored, [`HOST_QUEUE_FAILED`] when it cannot be.
    HostQueue,
}

/// What a verdict does on a hook and the reply it sends by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// What the session does.
    pub effect: Effect,
    /// The default code; 0 means the core builds the reply itself.
    pub code: u16,
    /// The default enhanced status code.
    pub enhanced: &'static str,
    /// Default text; `{}` is replaced by the subject (address, host, queue id).
    pub text: &'static str,
    /// Whether the plugin may not change the code (the greeting must be 220, 421 or 554).
    pub fixed_code: bool,
}

const fn r(effect: Effect, code: u16, enhanced: &'static str, text: &'static str) -> Rule {
    Rule {
        effect,
        code,
        enhanced,
        text,
        fixed_code: false,
    }
}

const fn fixed(effect: Effect, code: u16, enhanced: &'static str, text: &'static str) -> Rule {
    Rule {
        effect,
        code,
        enhanced,
        text,
        fixed_code: true,
    }
}

use Effect::{Close, HostQueue, Proceed, Refuse, Reject};

/// A hook's rules, one per verdict.
struct Row {
    hook: Hook,
    cont: Rule,
    ok: Rule,
    deny: Rule,
    denysoft: Rule,
    deny_disconnect: Rule,
    denysoft_disconnect: Rule,
}

const DISCONNECT: Rule = fixed(Close, 421, "4.7.0", "Closing connection");
const SOFT_CLOSE: Rule = fixed(Close, 421, "4.7.0", "Try again later, closing connection");

/// The table. Every verdict has a meaning on every hook; none falls through to accept.
const TABLE: &[Row] = &[
    Row {
        hook: Hook::Connect,
        // The subject is the server's name and `[smtp] banner`.
        cont: fixed(Proceed, 220, "", "{}"),
        ok: fixed(Proceed, 220, "", "{}"),
        deny: fixed(Refuse, 554, "5.7.1", "Your mail is not welcome here"),
        denysoft: SOFT_CLOSE,
        deny_disconnect: fixed(Close, 554, "5.7.1", "Your mail is not welcome here"),
        denysoft_disconnect: SOFT_CLOSE,
    },
    Row {
        hook: Hook::Helo,
        cont: r(Proceed, 250, "", "{}"),
        ok: r(Proceed, 250, "", "{}"),
        deny: r(Reject, 550, "5.7.1", "HELO {} rejected"),
        denysoft: r(Reject, 450, "4.7.1", "HELO {} temporarily rejected"),
        deny_disconnect: r(Close, 550, "5.7.1", "HELO {} rejected"),
        denysoft_disconnect: SOFT_CLOSE,
    },
    Row {
        hook: Hook::Ehlo,
        cont: r(Proceed, 250, "", "{}"),
        ok: r(Proceed, 250, "", "{}"),
        deny: r(Reject, 550, "5.7.1", "EHLO {} rejected"),
        denysoft: r(Reject, 450, "4.7.1", "EHLO {} temporarily rejected"),
        deny_disconnect: r(Close, 550, "5.7.1", "EHLO {} rejected"),
        denysoft_disconnect: SOFT_CLOSE,
    },
    Row {
        hook: Hook::Auth,
        cont: r(Reject, 535, "5.7.8", "Authentication credentials invalid"),
        ok: r(Proceed, 235, "2.7.0", "Authentication successful"),
        deny: r(Reject, 535, "5.7.8", "Authentication credentials invalid"),
        denysoft: r(Reject, 454, "4.7.0", "Temporary authentication failure"),
        deny_disconnect: r(Close, 535, "5.7.8", "Authentication credentials invalid"),
        denysoft_disconnect: SOFT_CLOSE,
    },
    Row {
        hook: Hook::UnrecognizedCommand,
        cont: r(Reject, 500, "5.5.2", "Unrecognized command"),
        ok: r(Proceed, 250, "2.0.0", "OK"),
        deny: r(Reject, 500, "5.5.2", "Command refused"),
        denysoft: r(Reject, 450, "4.7.0", "Command temporarily refused"),
        deny_disconnect: r(Close, 521, "5.5.2", "Command refused, closing connection"),
        denysoft_disconnect: SOFT_CLOSE,
    },
    Row {
        hook: Hook::Mail,
        cont: r(Proceed, 250, "2.1.0", "Sender {} OK"),
        ok: r(Proceed, 250, "2.1.0", "Sender {} OK"),
        deny: r(Reject, 550, "5.7.1", "Sender {} denied"),
        denysoft: r(Reject, 450, "4.7.1", "Sender {} temporarily denied"),
        deny_disconnect: r(Close, 550, "5.7.1", "Sender {} denied"),
        denysoft_disconnect: SOFT_CLOSE,
    },
    Row {
        hook: Hook::Rcpt,
        // A relaying session turns `cont` into `ok` (see `rule`).
        cont: r(Reject, 550, "5.1.1", "I cannot deliver mail for {}"),
        ok: r(Proceed, 250, "2.1.5", "Recipient {} OK"),
        deny: r(Reject, 550, "5.7.1", "Recipient {} denied"),
        denysoft: r(Reject, 450, "4.7.1", "Recipient {} temporarily denied"),
        deny_disconnect: r(Close, 550, "5.7.1", "Recipient {} denied"),
        denysoft_disconnect: SOFT_CLOSE,
    },
    Row {
        hook: Hook::RcptOk,
        cont: r(Proceed, 250, "2.1.5", "Recipient {} OK"),
        ok: r(Proceed, 250, "2.1.5", "Recipient {} OK"),
        deny: r(Reject, 550, "5.7.1", "Recipient {} denied"),
        denysoft: r(Reject, 450, "4.7.1", "Recipient {} temporarily denied"),
        deny_disconnect: r(Close, 550, "5.7.1", "Recipient {} denied"),
        denysoft_disconnect: SOFT_CLOSE,
    },
    Row {
        hook: Hook::Data,
        cont: fixed(Proceed, 354, "", "End data with <CR><LF>.<CR><LF>"),
        ok: fixed(Proceed, 354, "", "End data with <CR><LF>.<CR><LF>"),
        deny: r(Reject, 554, "5.7.1", "Message denied"),
        denysoft: r(Reject, 451, "4.7.1", "Message temporarily denied"),
        deny_disconnect: r(Close, 554, "5.7.1", "Message denied"),
        denysoft_disconnect: SOFT_CLOSE,
    },
    Row {
        hook: Hook::DataPost,
        cont: r(Proceed, 0, "", ""),
        ok: r(Proceed, 0, "", ""),
        deny: r(Reject, 550, "5.7.1", "Message denied"),
        denysoft: r(Reject, 451, "4.7.1", "Message temporarily denied"),
        deny_disconnect: r(Close, 550, "5.7.1", "Message denied"),
        denysoft_disconnect: SOFT_CLOSE,
    },
    Row {
        hook: Hook::MaxDataExceeded,
        cont: r(Reject, 552, "5.3.4", "Message size exceeds fixed maximum message size"),
        ok: r(Reject, 552, "5.3.4", "Message size exceeds fixed maximum message size"),
        deny: r(Reject, 552, "5.3.4", "Message size exceeds fixed maximum message size"),
        denysoft: r(Reject, 452, "4.3.4", "Message too big for now"),
        deny_disconnect: r(Close, 552, "5.3.4", "Message size exceeds fixed maximum message size"),
        denysoft_disconnect: SOFT_CLOSE,
    },
    Row {
        hook: Hook::Queue,
        cont: r(Reject, 451, "4.3.0", "Queuing declined or disabled, try later"),
        ok: r(Proceed, 250, "2.0.0", "Message queued as {}"),
        deny: r(Reject, 550, "5.7.1", "Message rejected"),
        denysoft: r(Reject, 451, "4.3.0", "Message not queued, try later"),
        deny_disconnect: r(Close, 550, "5.7.1", "Message rejected"),
        denysoft_disconnect: SOFT_CLOSE,
    },
    Row {
        hook: Hook::QueueOutbound,
        cont: r(HostQueue, 250, "2.0.0", "Message queued as {}"),
        ok: r(Proceed, 250, "2.0.0", "Message queued as {}"),
        deny: r(Reject, 550, "5.7.1", "Message rejected"),
        denysoft: r(Reject, 451, "4.3.0", "Message not queued, try later"),
        deny_disconnect: r(Close, 550, "5.7.1", "Message rejected"),
        denysoft_disconnect: SOFT_CLOSE,
    },
];

/// When the host's outbound queue is off or could not store the message.
pub const HOST_QUEUE_FAILED: Rule = r(Reject, 451, "4.3.0", "Outbound queuing failed or disabled, try later");

/// The rule for a verdict on a hook. `relaying` turns `cont` on `rcpt` into `ok`.
///
/// # Panics
/// For hooks that do not decide (capabilities, queue-ok, reset-transaction,
/// disconnect, deny): the session never asks for those.
pub fn rule(hook: Hook, verdict: &Verdict, relaying: bool) -> Rule {
    let row = TABLE
        .iter()
        .find(|row| row.hook == hook)
        .unwrap_or_else(|| panic!("hook {hook} has no verdict table row"));
    match verdict {
        Verdict::Cont if hook == Hook::Rcpt && relaying => row.ok,
        Verdict::Cont => row.cont,
        Verdict::Ok(_) => row.ok,
        Verdict::Deny(_) => row.deny,
        Verdict::Denysoft(_) => row.denysoft,
        Verdict::DenyDisconnect(_) => row.deny_disconnect,
        Verdict::DenysoftDisconnect(_) => row.denysoft_disconnect,
        Verdict::Disconnect(_) => DISCONNECT,
    }
}

fn valid_enhanced(status: &str, class: u16) -> bool {
    let parts: Vec<&str> = status.split('.').collect();
    parts.len() == 3
        && parts[0] == class.to_string()
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

impl Rule {
    /// The reply to send: the plugin's reply where it fits the rule (same
    /// class of code, valid enhanced status), the rule's default otherwise.
    /// A plugin can never turn a rejection into a success or the reverse.
    pub fn reply(&self, plugin: Option<&Reply>, subject: &str) -> Reply {
        let class = self.code / 100;
        let code = match plugin {
            Some(p) if !self.fixed_code && p.code / 100 == class && (200..600).contains(&p.code) => p.code,
            _ => self.code,
        };
        let enhanced = match plugin.and_then(|p| p.enhanced.as_deref()) {
            Some(e) if !self.enhanced.is_empty() && valid_enhanced(e, class) => Some(e.to_string()),
            _ => (!self.enhanced.is_empty()).then(|| self.enhanced.to_string()),
        };
        let lines = match plugin {
            Some(p) if !p.lines.is_empty() => p.lines.clone(),
            _ => vec![self.text.replace("{}", subject)],
        };
        Reply { code, enhanced, lines }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin_reply(code: u16, enhanced: Option<&str>, text: &str) -> Option<Reply> {
        Some(Reply {
            code,
            enhanced: enhanced.map(str::to_string),
            lines: vec![text.into()],
        })
    }

    #[test]
    fn every_deciding_hook_has_a_row_and_no_rejection_proceeds() {
        for &hook in Hook::ALL {
            if matches!(
                hook,
                Hook::Capabilities | Hook::QueueOk | Hook::ResetTransaction | Hook::Disconnect | Hook::Deny
            ) {
                continue;
            }
            for verdict in [
                Verdict::Deny(None),
                Verdict::Denysoft(None),
                Verdict::DenyDisconnect(None),
                Verdict::DenysoftDisconnect(None),
                Verdict::Disconnect(None),
            ] {
                let rule = rule(hook, &verdict, true);
                assert_ne!(rule.effect, Effect::Proceed, "{hook} {verdict:?}");
                assert!(rule.code >= 400, "{hook} {verdict:?}");
            }
        }
    }

    #[test]
    fn rcpt_needs_ok_unless_relaying_and_queue_needs_ok() {
        assert_eq!(rule(Hook::Rcpt, &Verdict::Cont, false).code, 550);
        assert_eq!(rule(Hook::Rcpt, &Verdict::Cont, false).enhanced, "5.1.1");
        assert_eq!(rule(Hook::Rcpt, &Verdict::Cont, true).effect, Effect::Proceed);
        assert_eq!(rule(Hook::Queue, &Verdict::Cont, false).code, 451);
        assert_eq!(
            rule(Hook::QueueOutbound, &Verdict::Cont, true).effect,
            Effect::HostQueue
        );
        assert_eq!(HOST_QUEUE_FAILED.code, 451);
    }

    #[test]
    fn a_plugin_cannot_change_the_class_of_a_reply() {
        let deny = rule(Hook::Rcpt, &Verdict::Deny(None), false);
        let r = deny.reply(plugin_reply(250, Some("2.0.0"), "fine").as_ref(), "<a@b>");
        assert_eq!((r.code, r.enhanced.as_deref()), (550, Some("5.7.1")));
        assert_eq!(r.lines, vec!["fine".to_string()]);
        let r = deny.reply(plugin_reply(553, Some("5.1.3"), "bad").as_ref(), "<a@b>");
        assert_eq!((r.code, r.enhanced.as_deref()), (553, Some("5.1.3")));
        let r = deny.reply(None, "<a@b>");
        assert_eq!(r.lines, vec!["Recipient <a@b> denied".to_string()]);
    }
}
