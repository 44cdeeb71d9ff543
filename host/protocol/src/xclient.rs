//! Postfix's XCLIENT command: a trusted front end (nginx's mail proxy, a
//! Postfix relay, a test tool) names the client it speaks for, which the
//! server then treats as if it had connected itself.

use crate::{Reply, xtext_decode};
use std::net::IpAddr;

/// An attribute's new value: `None` for `[UNAVAILABLE]` or `[TEMPUNAVAIL]`.
pub type Attribute<T> = Option<Option<T>>;

/// The attributes an `XCLIENT` command sets; `None` for one not given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Xclient {
    /// `ADDR`: the client's IP address (`IPV6:` prefix allowed).
    pub addr: Attribute<IpAddr>,
    /// `PORT`: the client's port.
    pub port: Attribute<u16>,
    /// `NAME`: the client's host name as the front end looked it up.
    pub name: Attribute<String>,
    /// `HELO`: the name the client greeted with.
    pub helo: Attribute<String>,
    /// `PROTO`: whether the client spoke ESMTP (`ESMTP`) or SMTP.
    pub esmtp: Attribute<bool>,
    /// `LOGIN`: the user the front end authenticated.
    pub login: Attribute<String>,
    /// `DESTADDR`: the address the client connected to.
    pub dest_addr: Attribute<IpAddr>,
    /// `DESTPORT`: the port the client connected to.
    pub dest_port: Attribute<u16>,
}

/// The EHLO keyword that offers XCLIENT, with the attributes understood.
pub const XCLIENT_KEYWORD: &str = "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT";

fn bad(text: String) -> Reply {
    Reply::new(501, "5.5.4", text)
}

/// A value that is not `[UNAVAILABLE]` or `[TEMPUNAVAIL]`, parsed.
fn value<T>(raw: &str, parse: impl FnOnce(&str) -> Option<T>, name: &str) -> Result<Option<T>, Reply> {
    if raw.eq_ignore_ascii_case("[UNAVAILABLE]") || raw.eq_ignore_ascii_case("[TEMPUNAVAIL]") {
        return Ok(None);
    }
    parse(raw)
        .map(Some)
        .ok_or_else(|| bad(format!("Bad XCLIENT {name} syntax: {raw}")))
}

fn address(raw: &str) -> Option<IpAddr> {
    let raw = raw
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("IPV6:"))
        .map_or(raw, |_| &raw[5..]);
    raw.parse().ok()
}

fn word(raw: &str) -> Option<String> {
    (!raw.is_empty() && raw.chars().all(|c| c.is_ascii_graphic() || !c.is_ascii())).then(|| raw.to_string())
}

impl Xclient {
    /// Parses the arguments of `XCLIENT` (`NAME=value …`, values in xtext).
    pub fn parse(args: &str) -> Result<Xclient, Reply> {
        let mut xclient = Xclient::default();
        let mut any = false;
        for pair in args.split_ascii_whitespace() {
            any = true;
            let (name, raw) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("Bad XCLIENT attribute: {pair}")))?;
            let raw = xtext_decode(raw).ok_or_else(|| bad(format!("Bad XCLIENT xtext: {pair}")))?;
            let name = name.to_ascii_uppercase();
            match name.as_str() {
                "ADDR" => xclient.addr = Some(value(&raw, address, &name)?),
                "PORT" => xclient.port = Some(value(&raw, |p| p.parse().ok(), &name)?),
                "NAME" => xclient.name = Some(value(&raw, word, &name)?),
                "HELO" => xclient.helo = Some(value(&raw, word, &name)?),
                "LOGIN" => xclient.login = Some(value(&raw, word, &name)?),
                "DESTADDR" => xclient.dest_addr = Some(value(&raw, address, &name)?),
                "DESTPORT" => xclient.dest_port = Some(value(&raw, |p| p.parse().ok(), &name)?),
                "PROTO" => {
                    let esmtp = |p: &str| match p.to_ascii_uppercase().as_str() {
                        "SMTP" => Some(false),
                        "ESMTP" => Some(true),
                        _ => None,
                    };
                    xclient.esmtp = Some(value(&raw, esmtp, &name)?);
                }
                _ => return Err(bad(format!("Bad XCLIENT attribute name: {name}"))),
            }
        }
        if !any {
            return Err(bad("Syntax: XCLIENT attribute=value...".to_string()));
        }
        Ok(xclient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_decoded_and_unavailable_ones_kept_apart() {
        let x = Xclient::parse(
            "addr=IPV6:2001:db8::1 PORT=4242 NAME=[UNAVAILABLE] LOGIN=al+2Bice HELO=client.test proto=ESMTP",
        )
        .unwrap();
        assert_eq!(x.addr, Some(Some("2001:db8::1".parse().unwrap())));
        assert_eq!(x.port, Some(Some(4242)));
        assert_eq!(x.name, Some(None));
        assert_eq!(x.login, Some(Some("al+ice".into())));
        assert_eq!(x.helo, Some(Some("client.test".into())));
        assert_eq!(x.esmtp, Some(Some(true)));
        assert_eq!((x.dest_addr, x.dest_port), (None, None), "not given");
        let v4 = Xclient::parse("ADDR=192.0.2.7 DESTADDR=[TEMPUNAVAIL]").unwrap();
        assert_eq!(v4.addr, Some(Some("192.0.2.7".parse().unwrap())));
        assert_eq!(v4.dest_addr, Some(None));
    }

    #[test]
    fn bad_attributes_are_refused_with_501() {
        for args in [
            "",
            "ADDR",
            "ADDR=300.1.1.1",
            "PORT=70000",
            "PROTO=LMTP",
            "COLOR=blue",
            "LOGIN=a+zz",
            "HELO=a+20b",
        ] {
            let reply = Xclient::parse(args).unwrap_err();
            assert_eq!(
                (reply.code, reply.enhanced.as_deref()),
                (501, Some("5.5.4")),
                "{args:?}"
            );
        }
    }
}
