//! `fcrdns`: forward-confirmed reverse DNS of the client at connect, as
//! Haraka's `fcrdns` plugin. The client's address is looked up in reverse
//! (PTR), and each name found forward (A/AAAA); a name that leads back to
//! the address is confirmed. The results go to connection notes for later
//! plugins, and the server may refuse clients without reverse DNS, without a
//! confirmed name, or whose only names look like those of dynamic ranges.
//! Settings: `config/fcrdns.ini`; grant: `dns`.

use std::net::IpAddr;
use waraka_plugin::{Error, Hook, Plugin, Settings, Verdict, dns, session};

const SETTINGS: &str = "fcrdns.ini";
/// The most PTR names followed forward (Haraka checks a handful too).
const MAX_NAMES: usize = 10;

struct Fcrdns;

/// What reverse and forward DNS say about a client.
#[derive(Debug, Default, PartialEq, Eq)]
struct Findings {
    /// The names of its PTR records.
    ptr_names: Vec<String>,
    /// Those that resolve back to its address.
    confirmed: Vec<String>,
    /// Whether every confirmed name (or, with none, every name) carries the
    /// address as dynamic ranges' names do.
    generic: bool,
}

impl Findings {
    fn result(&self) -> &'static str {
        match (self.ptr_names.is_empty(), self.confirmed.is_empty()) {
            (true, _) => "none",
            (false, true) => "fail",
            (false, false) => "pass",
        }
    }
}

/// Looks up `ip` in reverse and its names forward with `ptr` and `forward`.
fn investigate(
    ip: IpAddr,
    ptr: impl Fn(&str) -> Result<Vec<String>, Error>,
    forward: impl Fn(&str, bool) -> Result<Vec<String>, Error>,
) -> Result<Findings, Error> {
    let mut findings = Findings {
        ptr_names: ptr(&ip.to_string())?
            .into_iter()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
            .take(MAX_NAMES)
            .collect(),
        ..Findings::default()
    };
    for name in &findings.ptr_names {
        let addresses = match forward(name, ip.is_ipv6()) {
            Ok(addresses) => addresses,
            Err(Error::NotFound) => continue,
            Err(e) => return Err(e),
        };
        if addresses.iter().any(|a| a.parse::<IpAddr>().is_ok_and(|a| a == ip)) {
            findings.confirmed.push(name.clone());
        }
    }
    let judged = if findings.confirmed.is_empty() {
        &findings.ptr_names
    } else {
        &findings.confirmed
    };
    findings.generic = !judged.is_empty() && judged.iter().all(|n| waraka_plugin::names_address(n, ip));
    Ok(findings)
}

impl Plugin for Fcrdns {
    const NAME: &'static str = "fcrdns";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Connect];

    fn connect() -> Verdict {
        let settings = Settings::load(SETTINGS);
        let peer = session::peer_ip();
        let Ok(ip) = peer.parse::<IpAddr>() else {
            return Verdict::Cont;
        };
        if settings.skips_private() {
            waraka_plugin::note_connection("fcrdns.result", "skipped");
            return Verdict::Cont;
        }
        let lookup = investigate(ip, dns::lookup_ptr, |name, v6| {
            if v6 {
                dns::lookup_aaaa(name)
            } else {
                dns::lookup_a(name)
            }
        });
        let findings = match lookup {
            Ok(findings) => findings,
            Err(e) => {
                waraka_plugin::warn!("DNS lookups for {peer} failed: {e:?}; not judged");
                waraka_plugin::note_connection("fcrdns.result", "error");
                return Verdict::Cont;
            }
        };
        let result = findings.result();
        waraka_plugin::note_connection("fcrdns.result", result);
        waraka_plugin::note_connection("fcrdns", &findings.confirmed.join(","));
        waraka_plugin::note_connection("fcrdns.ptr", &findings.ptr_names.join(","));
        waraka_plugin::note_connection("fcrdns.generic", if findings.generic { "true" } else { "false" });
        waraka_plugin::info!(
            "{peer}: {result} (names: {}; confirmed: {}{})",
            if findings.ptr_names.is_empty() {
                "none".into()
            } else {
                findings.ptr_names.join(",")
            },
            if findings.confirmed.is_empty() {
                "none".into()
            } else {
                findings.confirmed.join(",")
            },
            if findings.generic { "; generic" } else { "" }
        );
        let refusal = match result {
            "none" if settings.bool("reject_no_rdns", false) => Some("has no reverse DNS"),
            "fail" if settings.bool("reject_no_fcrdns", false) => Some("has no forward-confirmed reverse DNS"),
            _ if findings.generic && settings.bool("reject_generic_rdns", false) => {
                Some("has a reverse DNS name of a dynamic range")
            }
            _ => None,
        };
        match refusal {
            Some(why) => Verdict::deny_code(554, "5.7.25", &format!("Client {peer} {why}")),
            None => Verdict::Cont,
        }
    }
}

waraka_plugin::export!(Fcrdns);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn world(ptr: &[(&str, &[&str])], a: &[(&str, &[&str])], ip: &str) -> Result<Findings, Error> {
        let ptr: HashMap<String, Vec<String>> = ptr
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
        let a: HashMap<String, Vec<String>> = a
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
        investigate(
            ip.parse().unwrap(),
            |ip| Ok(ptr.get(ip).cloned().unwrap_or_default()),
            |name, _| a.get(name).cloned().ok_or(Error::NotFound),
        )
    }

    #[test]
    fn a_name_that_leads_back_is_confirmed() {
        let found = world(
            &[("192.0.2.7", &["Mail.Example.COM.", "alias.example.net"])],
            &[
                ("mail.example.com", &["192.0.2.7"]),
                ("alias.example.net", &["198.51.100.1"]),
            ],
            "192.0.2.7",
        )
        .unwrap();
        assert_eq!(found.ptr_names, ["mail.example.com", "alias.example.net"]);
        assert_eq!(found.confirmed, ["mail.example.com"]);
        assert_eq!((found.result(), found.generic), ("pass", false));
    }

    #[test]
    fn no_ptr_a_lying_ptr_and_a_dynamic_name_are_told_apart() {
        assert_eq!(world(&[], &[], "192.0.2.8").unwrap().result(), "none");
        let liar = world(
            &[("192.0.2.9", &["bank.example"])],
            &[("bank.example", &["203.0.113.1"])],
            "192.0.2.9",
        );
        assert_eq!(liar.unwrap().result(), "fail");
        let missing = world(&[("192.0.2.9", &["gone.example"])], &[], "192.0.2.9").unwrap();
        assert_eq!(
            missing.result(),
            "fail",
            "a name that does not resolve confirms nothing"
        );
        let dynamic = world(
            &[("192.0.2.10", &["192-0-2-10.dsl.example"])],
            &[("192-0-2-10.dsl.example", &["192.0.2.10"])],
            "192.0.2.10",
        )
        .unwrap();
        assert_eq!((dynamic.result(), dynamic.generic), ("pass", true));
    }

    #[test]
    fn dns_failures_are_errors_not_verdicts() {
        let failing = investigate(
            "192.0.2.11".parse().unwrap(),
            |_| Err(Error::Timeout),
            |_, _| Ok(Vec::new()),
        );
        assert!(matches!(failing, Err(Error::Timeout)));
    }
}
