//! `limit`: per-client limits — Haraka's `limit` (with
//! `max_unrecognized_commands` and `rate_limit`).
//!
//! - `concurrency`: connections open at once from one address (`421 4.7.0`).
//! - `connection_rate`: connections per period from one address (`421 4.7.0`).
//! - `recipient_rate`: recipients per period from one address (`450 4.7.1`).
//! - `user_recipient_rate`: recipients per period from one authenticated
//!   user, wherever they connect from — the brake on a stolen password.
//! - `sender_recipient_rate`: recipients per period for one envelope sender
//!   (Haraka's `rate_rcpt_sender`).
//! - `max_unrecognized`: unknown commands per connection (`521 5.5.2` and close).
//!
//! Counters live in the key/value store `store` (grant `kv:NAME`), so
//! servers sharing a Redis store share the limits. A store that fails is
//! logged and the limit skipped (`on_error = continue`), or answered with a
//! temporary failure (`on_error = tempfail`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use waraka_plugin::{Address, Hook, Plugin, Scope, Settings, Verdict, kv, notes, session};

const SETTINGS: &str = "limit.ini";
/// Set once this connection counted itself in the concurrency counter.
const COUNTED: &str = "limit.counted";
const UNRECOGNIZED: &str = "limit.unrecognized";
/// How long a concurrency count survives a server that died without
/// counting its connections down.
const CONCURRENCY_TTL: Duration = Duration::from_secs(600);

struct Limit;

/// `N/PERIOD`, e.g. `30/60s`, `100/1h`.
#[derive(Debug, PartialEq, Eq)]
struct Rate {
    max: i64,
    period: Duration,
}

fn parse_rate(text: &str) -> Option<Rate> {
    let (max, period) = text.split_once('/')?;
    let period = waraka_plugin::parse_duration(period)?;
    let max: i64 = max.trim().parse().ok()?;
    (max > 0 && !period.is_zero()).then_some(Rate { max, period })
}

/// `config/limit.ini`, read once per hook.
struct Config {
    settings: Settings,
    store: String,
}

impl Config {
    fn load() -> Config {
        let settings = Settings::load(SETTINGS);
        let store = settings.store();
        Config { settings, store }
    }

    fn rate(&self, key: &str) -> Option<Rate> {
        self.settings.get(key).and_then(|r| parse_rate(&r))
    }

    /// What to do when the store fails.
    fn store_failed(&self, what: &str, e: waraka_plugin::Error) -> Verdict {
        waraka_plugin::warn!("limit: {what}: store {} failed: {e:?}", self.store);
        if self.settings.get("on_error").as_deref() == Some("tempfail") {
            Verdict::denysoft_code(451, "4.3.0", "Temporary local problem, try later")
        } else {
            Verdict::Cont
        }
    }

    /// Counts one event of `who` (an address, a user, a sender) in the
    /// current window of `rate`; the count so far.
    fn count_in_window(&self, name: &str, who: &str, rate: &Rate) -> Result<i64, waraka_plugin::Error> {
        let period = rate.period.as_secs().max(1);
        let window = now().as_secs() / period;
        kv::incr(&self.store, &format!("{name}:{who}:{window}"), 1, Some(period * 1000))
    }
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn connect_limits(config: &Config) -> Verdict {
    let ip = session::peer_ip();
    if let Some(rate) = config.rate("connection_rate") {
        match config.count_in_window("conn", &ip, &rate) {
            Ok(n) if n > rate.max => {
                waraka_plugin::info!("{ip}: {n} connections in {:?}, limit {}", rate.period, rate.max);
                return Verdict::denysoft_code(421, "4.7.0", "Too many connections from your address, slow down");
            }
            Ok(_) => {}
            Err(e) => return config.store_failed("connection rate", e),
        }
    }
    let max = config.settings.number("concurrency", 0i64);
    if max > 0 {
        let key = format!("conc:{ip}");
        match kv::incr(&config.store, &key, 1, Some(CONCURRENCY_TTL.as_millis() as u64)) {
            Ok(n) => {
                if n > max {
                    let _ = kv::incr(&config.store, &key, -1, None);
                    waraka_plugin::info!("{ip}: {n} connections at once, limit {max}");
                    return Verdict::denysoft_code(421, "4.7.0", "Too many connections from your address");
                }
                let _ = notes::set(Scope::Connection, COUNTED, "1");
            }
            Err(e) => return config.store_failed("concurrency", e),
        }
    }
    Verdict::Cont
}

impl Plugin for Limit {
    const NAME: &'static str = "limit";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Connect, Hook::UnrecognizedCommand, Hook::Rcpt, Hook::Disconnect];

    fn connect() -> Verdict {
        connect_limits(&Config::load())
    }

    fn unrecognized_command(verb: String, _args: String) -> Verdict {
        let max = Config::load().settings.number("max_unrecognized", 0i64);
        if max <= 0 {
            return Verdict::Cont;
        }
        let count = notes::get(Scope::Connection, UNRECOGNIZED)
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0)
            + 1;
        let _ = notes::set(Scope::Connection, UNRECOGNIZED, &count.to_string());
        if count > max {
            waraka_plugin::info!(
                "{}: {count} unrecognized commands (last {verb}), limit {max}",
                session::peer_ip()
            );
            return Verdict::DenyDisconnect(Some(waraka_plugin::Reply {
                code: 521,
                enhanced: Some("5.5.2".into()),
                lines: vec!["Too many unrecognized commands, closing connection".into()],
            }));
        }
        Verdict::Cont
    }

    fn rcpt(_recipient: Address) -> Verdict {
        let config = Config::load();
        let exempt = session::relaying() && config.settings.bool("exempt_relaying", true);
        let sender = waraka_plugin::real_sender().map(|s| s.to_addr_spec().to_ascii_lowercase());
        // (setting, counter, who is counted, the reply over the limit)
        let counted = [
            (
                "recipient_rate",
                "rcpt",
                (!exempt).then(session::peer_ip),
                "Too many recipients from your address, try later",
            ),
            (
                "user_recipient_rate",
                "rcpt-user",
                session::auth_user(),
                "Too many recipients from your account, try later",
            ),
            (
                "sender_recipient_rate",
                "rcpt-sender",
                sender,
                "Too many recipients from this sender, try later",
            ),
        ];
        for (setting, counter, who, text) in counted {
            let (Some(rate), Some(who)) = (config.rate(setting), who) else {
                continue;
            };
            match config.count_in_window(counter, &who, &rate) {
                Ok(n) if n > rate.max => {
                    waraka_plugin::warn!(
                        "{setting}: {who}: {n} recipients in {:?}, limit {}",
                        rate.period,
                        rate.max
                    );
                    return Verdict::denysoft_code(450, "4.7.1", text);
                }
                Ok(_) => {}
                Err(e) => match config.store_failed(setting, e) {
                    Verdict::Cont => {}
                    refusal => return refusal,
                },
            }
        }
        Verdict::Cont
    }

    fn disconnect() {
        if notes::get(Scope::Connection, COUNTED).is_some() {
            let store = Config::load().store;
            let key = format!("conc:{}", session::peer_ip());
            match kv::incr(&store, &key, -1, None) {
                // The count expired meanwhile: do not leave a negative one behind.
                Ok(n) if n < 0 => {
                    let _ = kv::delete(&store, &key);
                }
                Ok(_) => {}
                Err(e) => waraka_plugin::warn!("limit: counting down {key} failed: {e:?}"),
            }
        }
    }
}

waraka_plugin::export!(Limit);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_like_haraka() {
        assert_eq!(
            parse_rate("30/60s"),
            Some(Rate {
                max: 30,
                period: Duration::from_secs(60)
            })
        );
        assert_eq!(parse_rate("100/1h").unwrap().period, Duration::from_secs(3600));
        assert_eq!(parse_rate("5/m").unwrap().period, Duration::from_secs(60));
        assert_eq!(parse_rate("0/60s"), None);
        assert_eq!(parse_rate("x"), None);
        assert_eq!(parse_rate("3/2w"), None);
    }
}
