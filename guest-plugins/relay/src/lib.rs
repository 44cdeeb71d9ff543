//! `relay`: who may relay, and a clear refusal for everyone else.
//!
//! Clients whose address is in one of the ranges of `config/relay.acl_allow`
//! (one address or CIDR range per line, IPv4 or IPv6) relay for the whole
//! connection. For every other session that has not authenticated, a
//! recipient outside the local domains (`host_list`, `host_list_regex`) is
//! refused with `554 5.7.1 Relay access denied`. The recipient's domain is
//! the one after its last `@` (a source route is ignored; `%` and `!` are
//! just characters of a local part), and address literals are never local.

use std::net::IpAddr;
use waraka_plugin::{Address, Hook, Plugin, Verdict, config, host_list, session};

struct Relay;

/// Whether `ip` is inside `range` (`192.0.2.0/24`, `2001:db8::/32` or a single address).
fn in_range(ip: IpAddr, range: &str) -> bool {
    let (net, bits) = match range.split_once('/') {
        Some((net, bits)) => (net, bits.parse::<u32>().ok()),
        None => (range, None),
    };
    let Ok(net) = net.trim().parse::<IpAddr>() else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

impl Plugin for Relay {
    const NAME: &'static str = "relay";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Connect, Hook::Rcpt];

    fn connect() -> Verdict {
        let Ok(ip) = session::peer_ip().parse::<IpAddr>() else {
            return Verdict::Cont;
        };
        match config::lines("relay.acl_allow") {
            Ok(ranges) => {
                if let Some(range) = ranges.iter().find(|r| in_range(ip, r)) {
                    waraka_plugin::info!("{ip} may relay (relay.acl_allow: {range})");
                    session::set_relaying(true);
                }
            }
            Err(e) => waraka_plugin::warn!("relay.acl_allow unreadable: {e:?}"),
        }
        Verdict::Cont
    }

    fn rcpt(recipient: Address) -> Verdict {
        if session::relaying() {
            return Verdict::Cont;
        }
        match host_list::is_local_recipient(&recipient) {
            Ok(true) => Verdict::Cont,
            Ok(false) => Verdict::deny_code(554, "5.7.1", "Relay access denied"),
            Err(e) => Verdict::denysoft_code(451, "4.3.0", &format!("host list unavailable: {e:?}")),
        }
    }
}

waraka_plugin::export!(Relay);

#[cfg(test)]
mod tests {
    use super::in_range;

    #[test]
    fn ranges_match_v4_and_v6() {
        let ip = |s: &str| s.parse().unwrap();
        assert!(in_range(ip("192.0.2.7"), "192.0.2.0/24"));
        assert!(!in_range(ip("192.0.3.7"), "192.0.2.0/24"));
        assert!(in_range(ip("127.0.0.1"), "127.0.0.1"));
        assert!(in_range(ip("10.1.2.3"), "0.0.0.0/0"));
        assert!(in_range(ip("2001:db8::1"), "2001:db8::/32"));
        assert!(!in_range(ip("2001:db8::1"), "192.0.2.0/24"));
        assert!(!in_range(ip("192.0.2.7"), "not an address"));
    }
}
