//! `relay`: who may relay, and a clear refusal for everyone else.
//!
//! Clients whose address is in one of the ranges of `config/relay.acl_allow`
//! (one address or CIDR range per line, IPv4 or IPv6) relay for the whole
//! connection, and so do clients whose TLS certificate's fingerprint is in
//! `config/relay.clientcerts` (Postfix's `relay_clientcerts`; `[tls]
//! ask_client_cert` must be on), from their first MAIL. For every other session that has not authenticated, a
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
    const HOOKS: &'static [Hook] = &[Hook::Connect, Hook::Mail, Hook::Rcpt];

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

    /// A client whose certificate is listed relays (TLS comes after connect).
    fn mail(_sender: Address) -> Verdict {
        if session::relaying() {
            return Verdict::Cont;
        }
        let Some(fingerprint) = session::tls_client_fingerprint() else {
            return Verdict::Cont;
        };
        match config::lines("relay.clientcerts") {
            Ok(listed) => {
                if listed.iter().any(|l| same_fingerprint(l, &fingerprint)) {
                    waraka_plugin::info!("{} may relay (relay.clientcerts: {fingerprint})", session::peer_ip());
                    session::set_relaying(true);
                }
            }
            Err(e) => waraka_plugin::warn!("relay.clientcerts unreadable: {e:?}"),
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

/// Whether a listed fingerprint is `seen`: any case, with or without
/// colons, bare, `sha256:…` or as openssl prints it (`SHA256
/// Fingerprint=…`), a comment after `#` or a space.
fn same_fingerprint(listed: &str, seen: &str) -> bool {
    let hex = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_hexdigit())
            .map(|c| c.to_ascii_uppercase())
            .collect()
    };
    let listed = listed.split('#').next().unwrap_or_default();
    let listed = listed.rsplit('=').next().unwrap_or_default();
    let listed = listed.split_whitespace().next().unwrap_or_default();
    let listed = listed.strip_prefix("sha256:").unwrap_or(listed);
    !listed.is_empty() && hex(listed) == hex(seen)
}

waraka_plugin::export!(Relay);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_compare_as_postfix_writes_them_or_bare() {
        let seen = "AB:0C:FF";
        assert!(same_fingerprint("AB:0C:FF", seen));
        assert!(same_fingerprint("ab0cff  # the backup relay", seen));
        assert!(same_fingerprint("sha256:ab:0c:ff", seen));
        assert!(same_fingerprint("SHA256 Fingerprint=AB:0C:FF", seen));
        assert!(!same_fingerprint("AB:0C:FE", seen));
        assert!(!same_fingerprint("", seen));
        assert!(!same_fingerprint("# a comment", seen));
    }
}
