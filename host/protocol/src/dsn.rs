//! Delivery status notification requests (RFC 3461): `RET` and `ENVID` of
//! MAIL, `NOTIFY` and `ORCPT` of RCPT, and the `xtext` encoding they use.
//! Parsed values are checked here; what to send, and when, is the queue's.

use crate::{Address, Reply};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The longest `ENVID` value, in characters (RFC 3461 §4.4).
pub const MAX_ENVID: usize = 100;
/// The longest `ORCPT` value, in characters (RFC 3461 §4.2).
pub const MAX_ORCPT: usize = 500;

/// How much of the message a failure notice returns (`RET`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Return {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: its header only.
    Headers,
}

impl Return {
    /// The parameter value (`FULL`, `HDRS`).
    pub fn keyword(self) -> &'static str {
        match self {
            Return::Full => "FULL",
            Return::Headers => "HDRS",
        }
    }
}

/// Which notices a recipient asked for (`NOTIFY`); `NEVER` is all false.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    /// `SUCCESS`: a notice when the message is delivered (or relayed on to
    /// a server that does not pass the request on).
    pub success: bool,
    /// `FAILURE`: a notice when it cannot be delivered.
    pub failure: bool,
    /// `DELAY`: a notice when delivery is late.
    pub delay: bool,
}

impl Notify {
    /// The parameter value (`NEVER`, `SUCCESS,FAILURE`…).
    pub fn keyword(self) -> String {
        let words: Vec<&str> = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ]
        .into_iter()
        .filter_map(|(on, word)| on.then_some(word))
        .collect();
        if words.is_empty() {
            "NEVER".into()
        } else {
            words.join(",")
        }
    }

    fn parse(value: &str) -> Option<Notify> {
        if value.eq_ignore_ascii_case("NEVER") {
            return Some(Notify::default());
        }
        let mut notify = Notify::default();
        for word in value.split(',') {
            let flag = match word.to_ascii_uppercase().as_str() {
                "SUCCESS" => &mut notify.success,
                "FAILURE" => &mut notify.failure,
                "DELAY" => &mut notify.delay,
                _ => return None,
            };
            if *flag {
                return None;
            }
            *flag = true;
        }
        Some(notify)
    }
}

/// The DSN requests of a MAIL command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRequest {
    /// `RET`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Return>,
    /// `ENVID`, decoded from xtext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
}

/// The DSN requests of a RCPT command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientRequest {
    /// `NOTIFY`, when given. Without it a server sends failure and delay
    /// notices at its discretion (RFC 3461 §4.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// `ORCPT`: the address type and the original address, decoded from xtext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<(String, String)>,
}

impl RecipientRequest {
    /// Whether nothing was asked.
    pub fn is_empty(&self) -> bool {
        self.notify.is_none() && self.orcpt.is_none()
    }

    /// Whether a failure notice is wanted (asked for, or `NOTIFY` absent).
    pub fn wants_failure(&self) -> bool {
        self.notify.is_none_or(|n| n.failure)
    }

    /// Whether a delay notice is wanted (asked for, or `NOTIFY` absent).
    pub fn wants_delay(&self) -> bool {
        self.notify.is_none_or(|n| n.delay)
    }

    /// Whether a success notice is wanted (only when asked for).
    pub fn wants_success(&self) -> bool {
        self.notify.is_some_and(|n| n.success)
    }
}

/// The DSN requests (RFC 3461) of a message and of its recipients.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DsnRequests {
    /// `RET` and `ENVID` of the MAIL command.
    #[serde(flatten)]
    pub message: MessageRequest,
    /// `NOTIFY` and `ORCPT` by recipient, for those that gave any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recipients: BTreeMap<String, RecipientRequest>,
}

impl DsnRequests {
    /// Whether nothing was asked.
    pub fn is_empty(&self) -> bool {
        self.message.is_empty() && self.recipients.is_empty()
    }

    /// What `recipient` asked (nothing, when it gave no parameter).
    pub fn recipient(&self, recipient: &str) -> RecipientRequest {
        self.recipients.get(recipient).cloned().unwrap_or_default()
    }

    /// The requests of the message and of those of `recipients` that gave any.
    pub fn for_recipients(&self, recipients: &[String]) -> DsnRequests {
        DsnRequests {
            message: self.message.clone(),
            recipients: recipients
                .iter()
                .filter_map(|r| Some((r.clone(), self.recipients.get(r)?.clone())))
                .collect(),
        }
    }
}

fn invalid(what: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Invalid {what} parameter"))
}

fn single<'a>(address: &'a Address, key: &str) -> Result<Option<&'a str>, Reply> {
    let mut found = address.params.iter().filter(|p| p.key.eq_ignore_ascii_case(key));
    let first = found.next();
    if found.next().is_some() {
        return Err(invalid(&format!("{key} (given twice)")));
    }
    match first {
        None => Ok(None),
        Some(p) => p.value.as_deref().map(Some).ok_or_else(|| invalid(key)),
    }
}

impl MessageRequest {
    /// The `RET` and `ENVID` of a MAIL command's parameters; a malformed or
    /// repeated one is a `501 5.5.4` reply.
    pub fn from_mail(sender: &Address) -> Result<MessageRequest, Reply> {
        let ret = match single(sender, "RET")? {
            None => None,
            Some(v) if v.eq_ignore_ascii_case("FULL") => Some(Return::Full),
            Some(v) if v.eq_ignore_ascii_case("HDRS") => Some(Return::Headers),
            Some(_) => return Err(invalid("RET")),
        };
        let envid = match single(sender, "ENVID")? {
            None => None,
            Some(v) => match xtext_decode(v) {
                Some(text) if v.len() <= MAX_ENVID => Some(text),
                _ => return Err(invalid("ENVID")),
            },
        };
        Ok(MessageRequest { ret, envid })
    }

    /// Whether nothing was asked.
    pub fn is_empty(&self) -> bool {
        self.ret.is_none() && self.envid.is_none()
    }

    /// The MAIL parameters that pass the request on (` RET=… ENVID=…`).
    pub fn mail_params(&self) -> String {
        let mut out = String::new();
        if let Some(ret) = self.ret {
            out.push_str(&format!(" RET={}", ret.keyword()));
        }
        if let Some(envid) = &self.envid {
            out.push_str(&format!(" ENVID={}", xtext_encode(envid)));
        }
        out
    }
}

impl RecipientRequest {
    /// The `NOTIFY` and `ORCPT` of a RCPT command's parameters; a malformed
    /// or repeated one is a `501 5.5.4` reply.
    pub fn from_rcpt(recipient: &Address) -> Result<RecipientRequest, Reply> {
        let notify = match single(recipient, "NOTIFY")? {
            None => None,
            Some(v) => Some(Notify::parse(v).ok_or_else(|| invalid("NOTIFY"))?),
        };
        let orcpt = match single(recipient, "ORCPT")? {
            None => None,
            Some(v) => {
                let parsed = v.split_once(';').and_then(|(kind, address)| {
                    let kind_ok = !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
                    let address = xtext_decode(address).filter(|a| !a.is_empty())?;
                    kind_ok.then(|| (kind.to_ascii_lowercase(), address))
                });
                match parsed {
                    Some(orcpt) if v.len() <= MAX_ORCPT => Some(orcpt),
                    _ => return Err(invalid("ORCPT")),
                }
            }
        };
        Ok(RecipientRequest { notify, orcpt })
    }

    /// The RCPT parameters that pass the request on (` NOTIFY=… ORCPT=…`).
    pub fn rcpt_params(&self) -> String {
        let mut out = String::new();
        if let Some(notify) = self.notify {
            out.push_str(&format!(" NOTIFY={}", notify.keyword()));
        }
        if let Some((kind, address)) = &self.orcpt {
            out.push_str(&format!(" ORCPT={kind};{}", xtext_encode(address)));
        }
        out
    }
}

/// Gives `derived` — an address a plugin put in place of `original` (an
/// alias's target, or another member of its list) — the DSN requests the
/// client made for `original`: its `NOTIFY`, and an `ORCPT` naming
/// `original` (its own `ORCPT` when it had one), so notices say which address
/// the sender used (RFC 3461 §4.2, §5.2.7). Requests `derived` already has
/// are kept; an address that is `original` itself is left alone.
pub fn inherit_requests(original: &Address, derived: &mut Address) {
    if derived.local_part.eq_ignore_ascii_case(&original.local_part)
        && derived.domain.eq_ignore_ascii_case(&original.domain)
    {
        return;
    }
    let orcpt = match original.param("ORCPT") {
        Some(Some(given)) => Some(given.to_string()),
        _ if original.needs_utf8() => None,
        _ => Some(format!("rfc822;{}", xtext_encode(&original.addr_spec()))),
    };
    for (key, value) in [
        ("NOTIFY", original.param("NOTIFY").flatten().map(str::to_string)),
        ("ORCPT", orcpt),
    ] {
        if let Some(value) = value
            && derived.param(key).is_none()
        {
            derived.params.push(crate::Param {
                key: key.to_string(),
                value: Some(value),
            });
        }
    }
}

/// Decodes xtext (RFC 3461 §4): printable ASCII but `+` and `=`, with `+XX`
/// (upper-case hex) for any other octet. `None` if it is not xtext or not UTF-8.
pub fn xtext_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b'!'..=b'~' if bytes[i] != b'=' => {
                out.push(bytes[i]);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes `text` as xtext (RFC 3461 §4).
pub fn xtext_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'!'..=b'~' if b != b'+' && b != b'=' => (b as char).to_string(),
            _ => format!("+{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(params: &str) -> Result<MessageRequest, Reply> {
        MessageRequest::from_mail(&Address::parse_with_params(&format!("<a@b.test> {params}"), true).unwrap())
    }

    fn rcpt(params: &str) -> Result<RecipientRequest, Reply> {
        RecipientRequest::from_rcpt(&Address::parse_with_params(&format!("<a@b.test> {params}"), false).unwrap())
    }

    #[test]
    fn a_derived_recipient_inherits_notify_and_names_the_original() {
        let original = Address::parse_with_params("<Team@a.test> NOTIFY=SUCCESS", false).unwrap();
        let mut target = Address::parse_with_params("<bob@a.test>", false).unwrap();
        inherit_requests(&original, &mut target);
        let request = RecipientRequest::from_rcpt(&target).unwrap();
        assert!(request.wants_success() && !request.wants_failure());
        assert_eq!(request.orcpt, Some(("rfc822".into(), "Team@a.test".into())));

        let given = Address::parse_with_params("<x@a.test> ORCPT=rfc822;first+2B@a.test", false).unwrap();
        let mut own = Address::parse_with_params("<y@a.test> NOTIFY=NEVER", false).unwrap();
        inherit_requests(&given, &mut own);
        let request = RecipientRequest::from_rcpt(&own).unwrap();
        assert_eq!(
            request.orcpt.as_ref().unwrap().1,
            "first+@a.test",
            "the client's own ORCPT travels on"
        );
        assert!(!request.wants_failure(), "what the target already has is kept");

        let mut same = Address::parse_with_params("<team@A.test>", false).unwrap();
        inherit_requests(&original, &mut same);
        assert!(same.params.is_empty(), "not derived: left alone");
    }

    #[test]
    fn xtext_round_trips_and_refuses_what_is_not_xtext() {
        assert_eq!(xtext_decode("a+2Bb+3Dc").as_deref(), Some("a+b=c"));
        assert_eq!(xtext_encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext_decode(&xtext_encode("ünï code;+")).as_deref(), Some("ünï code;+"));
        for bad in ["a+2", "a+2b", "a=b", "a b", "+ZZ", "+FF"] {
            assert_eq!(xtext_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn mail_takes_ret_and_envid() {
        let request = mail("RET=hdrs ENVID=QQ+2B1").unwrap();
        assert_eq!(request.ret, Some(Return::Headers));
        assert_eq!(request.envid.as_deref(), Some("QQ+1"));
        assert_eq!(request.mail_params(), " RET=HDRS ENVID=QQ+2B1");
        assert!(mail("SIZE=10").unwrap().is_empty());
        for bad in [
            "RET=BOTH",
            "RET",
            "ENVID=a+zz",
            "RET=FULL RET=HDRS",
            &format!("ENVID={}", "x".repeat(101)),
        ] {
            let reply = mail(bad).unwrap_err();
            assert_eq!((reply.code, reply.enhanced.as_deref()), (501, Some("5.5.4")), "{bad}");
        }
    }

    #[test]
    fn rcpt_takes_notify_and_orcpt() {
        let request = rcpt("NOTIFY=success,DELAY ORCPT=RFC822;x+2By@c.test").unwrap();
        assert_eq!(
            request.notify,
            Some(Notify {
                success: true,
                failure: false,
                delay: true
            })
        );
        assert_eq!(request.orcpt, Some(("rfc822".into(), "x+y@c.test".into())));
        assert_eq!(request.rcpt_params(), " NOTIFY=SUCCESS,DELAY ORCPT=rfc822;x+2By@c.test");
        assert!(request.wants_success() && request.wants_delay() && !request.wants_failure());
        let never = rcpt("NOTIFY=NEVER").unwrap();
        assert!(!never.wants_failure() && !never.wants_delay() && !never.wants_success());
        assert_eq!(never.rcpt_params(), " NOTIFY=NEVER");
        let none = rcpt("").unwrap();
        assert!(none.wants_failure() && none.wants_delay() && !none.wants_success());
        for bad in [
            "NOTIFY=NEVER,SUCCESS",
            "NOTIFY=SUCCESS,SUCCESS",
            "NOTIFY=SOMETIMES",
            "NOTIFY=",
            "ORCPT=a@b.test",
            "ORCPT=;a@b.test",
            "ORCPT=rfc822;",
            "ORCPT=rfc 822;a",
            "NOTIFY=DELAY NOTIFY=FAILURE",
        ] {
            let Ok(address) = Address::parse_with_params(&format!("<a@b.test> {bad}"), false) else {
                continue;
            };
            let reply = RecipientRequest::from_rcpt(&address).unwrap_err();
            assert_eq!(reply.code, 501, "{bad}");
        }
    }
}
