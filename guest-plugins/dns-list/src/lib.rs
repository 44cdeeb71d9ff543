//! `dns-list`: DNS blocklists and allowlists for the connecting address —
//! Haraka's `dns-list` (formerly `dnsbl` and `dnswl`).
//!
//! At `connect` the client's address is looked up in each zone of
//! `allow_zones`, then `zones` (`2.0.0.192.zone` for 192.0.2.2, reversed
//! nibbles for IPv6). An A answer in 127.0.0.0/8 means listed, except
//! 127.255.255.0/24, which list operators use for errors ("query refused").
//! Allow-listed clients skip the blocklists; a blocklisted one gets
//! `554 5.7.1` at the greeting with the zone's TXT reason, or only a
//! connection note with `reject = false`. Private, loopback and link-local
//! clients are not looked up unless `check_private = true`.

use std::net::IpAddr;
use waraka_plugin::{Hook, Plugin, Scope, Settings, Verdict, dns_list, notes};

const SETTINGS: &str = "dns-list.ini";

struct DnsList;

/// Each zone of the config `key` with whether `ip` is in it (`Err` when
/// the lookup failed), in order, every zone asked at once.
fn listed_in(settings: &Settings, key: &str, ip: IpAddr) -> Vec<(String, Result<bool, String>)> {
    let zones = dns_list::zones(settings, key);
    let names: Vec<String> = zones.iter().map(|zone| dns_list::query_name(ip, zone)).collect();
    let answers = dns_list::listings_each(&names).into_iter();
    zones
        .into_iter()
        .zip(answers.map(|a| a.map(|found| !found.is_empty())))
        .collect()
}

impl Plugin for DnsList {
    const NAME: &'static str = "dns-list";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Connect];

    fn connect() -> Verdict {
        let settings = Settings::load(SETTINGS);
        let Some(ip) = settings.client_to_check() else {
            return Verdict::Cont;
        };
        let tempfail = settings.get("on_error").as_deref() != Some("continue");
        for (zone, listed) in listed_in(&settings, "allow_zones", ip) {
            match listed {
                Ok(true) => {
                    waraka_plugin::info!("{ip} is allow-listed in {zone}");
                    let _ = notes::set(Scope::Connection, "dns-list.allowed", &zone);
                    return Verdict::Cont;
                }
                Ok(false) => {}
                Err(e) => waraka_plugin::warn!("allow list {zone} lookup for {ip} failed: {e}"),
            }
        }
        for (zone, listed) in listed_in(&settings, "zones", ip) {
            match listed {
                Ok(false) => {}
                Ok(true) => {
                    let why = dns_list::reason(&dns_list::query_name(ip, &zone), &ip.to_string(), &zone);
                    waraka_plugin::info!("{why}");
                    let _ = notes::set(Scope::Connection, "dns-list.listed", &zone);
                    if settings.bool("reject", true) {
                        return Verdict::deny_code(554, "5.7.1", &why);
                    }
                }
                Err(e) => {
                    waraka_plugin::warn!("block list {zone} lookup for {ip} failed: {e}");
                    if tempfail {
                        return Verdict::denysoft_code(421, "4.4.3", "Cannot check your address right now, try later");
                    }
                }
            }
        }
        Verdict::Cont
    }
}

waraka_plugin::export!(DnsList);
