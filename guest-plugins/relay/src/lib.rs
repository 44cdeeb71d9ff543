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
                if let Some(range) = ranges.iter().find(|r| waraka_plugin::ip_in_range(ip, r)) {
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
