//! `mail_from.is_resolvable`: the sender's domain must be able to receive
//! replies — Haraka's plugin of the same name.
//!
//! The domain needs an MX whose host has a usable address, or (no MX) an
//! A/AAAA record of its own (the implicit MX). Addresses `0.0.0.0`,
//! `255.255.255.255` and loopback do not count. A null MX (RFC 7505) is
//! refused with `550 5.7.27`; no usable record with `550 5.1.8`; a DNS
//! failure (or a missing `dns` grant) with `451 4.4.3`, never an accept.
//! `<>`, address literals, relaying sessions (`skip_relaying`) and clients on
//! private or loopback addresses (unless `check_private = true`) pass.

use std::net::IpAddr;
use waraka_plugin::{Address, Error, Hook, Plugin, Scope, Settings, Verdict, dns, notes};

const SETTINGS: &str = "mail_from.is_resolvable.ini";
const NOTE: &str = "mail_from.is_resolvable";

struct IsResolvable;

/// What the DNS says about a sender domain.
#[derive(Debug, PartialEq, Eq)]
enum Finding {
    Resolvable,
    NullMx,
    Unresolvable(String),
    Failed(String),
}

/// Addresses that cannot be a real mail server.
fn bogus(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_broadcast() || v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_loopback(),
    }
}

fn describe(e: &Error) -> String {
    format!("{e:?}")
}

/// Whether `host` has a usable address; `Err` when the lookups failed.
fn has_usable_address(host: &str) -> Result<bool, String> {
    let mut failure = None;
    for lookup in [dns::lookup_a, dns::lookup_aaaa] {
        match lookup(host) {
            Ok(addresses) => {
                if addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                    .any(|ip| !bogus(&ip))
                {
                    return Ok(true);
                }
            }
            Err(e) => failure = Some(describe(&e)),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(false),
    }
}

fn check(domain: &str) -> Finding {
    let hosts = match dns::lookup_mx(domain) {
        Ok(hosts) => hosts,
        Err(e) => return Finding::Failed(format!("MX lookup for {domain}: {}", describe(&e))),
    };
    if hosts.iter().any(|h| h.exchange.is_empty()) {
        return Finding::NullMx;
    }
    if hosts.is_empty() {
        return match has_usable_address(domain) {
            Ok(true) => Finding::Resolvable,
            Ok(false) => Finding::Unresolvable(format!("{domain} has no MX and no usable A/AAAA record")),
            Err(e) => Finding::Failed(format!("address lookup for {domain}: {e}")),
        };
    }
    let mut failure = None;
    for host in &hosts {
        match has_usable_address(&host.exchange) {
            Ok(true) => return Finding::Resolvable,
            Ok(false) => {}
            Err(e) => failure = Some(format!("address lookup for {}: {e}", host.exchange)),
        }
    }
    match failure {
        Some(e) => Finding::Failed(e),
        None => Finding::Unresolvable(format!("no MX host of {domain} has a usable address")),
    }
}

impl Plugin for IsResolvable {
    const NAME: &'static str = "mail_from.is_resolvable";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Mail];

    fn mail(sender: Address) -> Verdict {
        let domain = sender.domain.trim_end_matches('.').to_ascii_lowercase();
        if sender.is_null() || domain.is_empty() || domain.starts_with('[') {
            return Verdict::Cont;
        }
        let settings = Settings::load(SETTINGS);
        if settings.skips_relaying(true) || settings.skips_private() {
            return Verdict::Cont;
        }
        let finding = check(&domain);
        let note = match &finding {
            Finding::Resolvable => "ok".to_string(),
            Finding::NullMx => "fail: null MX".to_string(),
            Finding::Unresolvable(why) | Finding::Failed(why) => format!("fail: {why}"),
        };
        let _ = notes::set(Scope::Transaction, NOTE, &note);
        let reject = settings.bool("reject", true);
        match finding {
            Finding::Resolvable => Verdict::Cont,
            Finding::Failed(why) => {
                waraka_plugin::warn!("{sender}: {why}");
                Verdict::denysoft_code(
                    451,
                    "4.4.3",
                    &format!("Temporary failure resolving {domain}, try later"),
                )
            }
            _ if !reject => {
                waraka_plugin::info!("{sender}: {note} (reject = false)");
                Verdict::Cont
            }
            Finding::NullMx => Verdict::deny_code(
                550,
                "5.7.27",
                &format!("Sender domain {domain} accepts no mail (null MX)"),
            ),
            Finding::Unresolvable(why) => {
                waraka_plugin::info!("{sender}: {why}");
                Verdict::deny_code(550, "5.1.8", &format!("Sender domain {domain} cannot receive mail"))
            }
        }
    }
}

waraka_plugin::export!(IsResolvable);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_unspecified_addresses_are_bogus() {
        for ip in ["127.0.0.1", "0.0.0.0", "255.255.255.255", "::1", "::"] {
            assert!(bogus(&ip.parse().unwrap()), "{ip}");
        }
        for ip in ["192.0.2.10", "10.0.0.1", "2001:db8::1"] {
            assert!(!bogus(&ip.parse().unwrap()), "{ip}");
        }
    }
}
