//! `greylist`: temporary refusal of a first delivery attempt, as Haraka's
//! `greylist` plugin and Postgrey. A recipient is refused with `450 4.7.1`
//! the first time a (client network, sender, recipient) triplet is seen;
//! a retry after `black_timeout` and within `grey_timeout` passes and
//! whitelists the triplet for `white_timeout`. Real mail servers retry;
//! much spamware does not. The triplets live in the key/value store `store`
//! (grant `kv:NAME`), so servers sharing a Redis store share them.
//! Settings: `config/greylist.ini`.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use waraka_plugin::{Address, Hook, Plugin, Settings, Verdict, envelope, ip_in_range, kv, network_of, session};

const SETTINGS: &str = "greylist.ini";
/// The value of a triplet that has passed.
const WHITE: &[u8] = b"white";

struct Greylist;

/// What a triplet's stored value means now.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Never seen (or expired): record it and refuse.
    New,
    /// Seen first at this time (seconds since the epoch).
    Waiting(u64),
    /// Passed before.
    White,
}

fn state(value: Option<&[u8]>) -> State {
    match value {
        None => State::New,
        Some(WHITE) => State::White,
        Some(first) => std::str::from_utf8(first)
            .ok()
            .and_then(|t| t.parse().ok())
            .map_or(State::New, State::Waiting),
    }
}

fn millis(d: Duration) -> Option<u64> {
    Some(d.as_millis() as u64)
}

impl Plugin for Greylist {
    const NAME: &'static str = "greylist";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::RcptOk];

    fn rcpt_ok(recipient: Address) -> Verdict {
        let settings = Settings::load(SETTINGS);
        if session::relaying() {
            return Verdict::Cont;
        }
        let Ok(ip) = session::peer_ip().parse::<IpAddr>() else {
            return Verdict::Cont;
        };
        if settings.skips_private() || settings.list("ip_whitelist").iter().any(|range| ip_in_range(ip, range)) {
            return Verdict::Cont;
        }
        let sender = envelope::sender().map_or(String::new(), |s| s.to_addr_spec().to_ascii_lowercase());
        let key = format!(
            "greylist:{}:<{sender}>:<{}>",
            network_of(
                ip,
                settings.number("ipv4_prefix", 24),
                settings.number("ipv6_prefix", 64)
            ),
            recipient.to_addr_spec().to_ascii_lowercase()
        );
        let store = settings.store();
        let black = settings.duration("black_timeout", Duration::from_secs(5 * 60));
        let grey = settings.duration("grey_timeout", Duration::from_secs(24 * 3600));
        let white = settings.duration("white_timeout", Duration::from_secs(36 * 86_400));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let greylisted = || Verdict::denysoft_code(450, "4.7.1", "Greylisted, please try again later");
        let result = kv::get(&store, &key).and_then(|value| match state(value.as_deref()) {
            State::White => kv::set(&store, &key, WHITE, millis(white)).map(|_| Verdict::Cont),
            State::Waiting(first) if now >= first + black.as_secs() => {
                waraka_plugin::info!("{key} retried after {} s: passes", now - first);
                kv::set(&store, &key, WHITE, millis(white)).map(|_| Verdict::Cont)
            }
            State::Waiting(first) => {
                waraka_plugin::info!("{key} retried too soon ({} s)", now.saturating_sub(first));
                Ok(greylisted())
            }
            State::New => {
                waraka_plugin::info!("{key} seen first: greylisted");
                kv::set(&store, &key, now.to_string().as_bytes(), millis(grey)).map(|_| greylisted())
            }
        });
        result.unwrap_or_else(|e| {
            waraka_plugin::warn!("store {store} failed: {e:?}; not greylisting");
            Verdict::Cont
        })
    }
}

waraka_plugin::export!(Greylist);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_read_as_states() {
        assert_eq!(state(None), State::New);
        assert_eq!(state(Some(b"white")), State::White);
        assert_eq!(state(Some(b"1796371200")), State::Waiting(1_796_371_200));
        assert_eq!(state(Some(b"junk")), State::New);
    }
}
