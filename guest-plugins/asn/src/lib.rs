//! `asn`: the client's network — its autonomous system, the prefix it
//! announces and its country — looked up in DNS as Team Cymru's IP-to-ASN
//! service serves it (`origin.asn.cymru.com`, `origin6.asn.cymru.com` for
//! IPv6), as Haraka's `asn`. The connection notes `asn`, `asn.net` and
//! `asn.country` are for `karma` (its neighbourhood history and awards) and
//! the log. It never refuses: a lookup that fails is logged and noted as
//! nothing. Settings: `config/asn.ini`.

use std::net::IpAddr;
use waraka_plugin::{Hook, Plugin, Settings, Verdict, dns, dns_list};

const SETTINGS: &str = "asn.ini";

struct Asn;

/// What the service says of a network.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    /// The origin AS (the first, when several announce the prefix).
    asn: u32,
    /// The announced prefix (`192.0.2.0/24`).
    net: String,
    /// Its two-letter country code, upper case (empty when unknown).
    country: String,
}

/// Reads `ASN [ASN…] | PREFIX | CC | REGISTRY | DATE`.
fn parse_origin(record: &str) -> Option<Origin> {
    let mut fields = record.split('|').map(str::trim);
    let asn = fields.next()?.split_whitespace().next()?.parse().ok()?;
    let net = fields.next().unwrap_or_default().to_string();
    let country = fields.next().unwrap_or_default().to_ascii_uppercase();
    Some(Origin { asn, net, country })
}

impl Plugin for Asn {
    const NAME: &'static str = "asn";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Connect];

    fn connect() -> Verdict {
        let settings = Settings::load(SETTINGS);
        let Some(ip) = settings.client_to_check() else {
            return Verdict::Cont;
        };
        let (key, default) = match ip {
            IpAddr::V4(_) => ("zone", "origin.asn.cymru.com"),
            IpAddr::V6(_) => ("zone6", "origin6.asn.cymru.com"),
        };
        let zone = settings.get(key).unwrap_or_else(|| default.into());
        let name = dns_list::query_name(ip, zone.trim_end_matches('.'));
        match dns::lookup_txt(&name) {
            Ok(records) => match records.iter().find_map(|r| parse_origin(r)) {
                Some(origin) => {
                    waraka_plugin::debug!("asn: {ip} is in AS{} ({}, {})", origin.asn, origin.net, origin.country);
                    waraka_plugin::note_connection("asn", &origin.asn.to_string());
                    waraka_plugin::note_connection("asn.net", &origin.net);
                    if !origin.country.is_empty() {
                        waraka_plugin::note_connection("asn.country", &origin.country);
                    }
                }
                None => waraka_plugin::debug!("asn: {zone} knows no network of {ip}"),
            },
            Err(e) => waraka_plugin::warn!("asn: looking up {name} failed: {e:?}"),
        }
        Verdict::Cont
    }
}

waraka_plugin::export!(Asn);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cymru_answers_read_as_origins() {
        assert_eq!(
            parse_origin("15169 | 8.8.8.0/24 | us | arin | 1992-12-01"),
            Some(Origin {
                asn: 15169,
                net: "8.8.8.0/24".into(),
                country: "US".into()
            })
        );
        assert_eq!(parse_origin("3356 1299 | 4.0.0.0/9 | US | arin |").unwrap().asn, 3356);
        assert_eq!(parse_origin("64500").unwrap().net, "");
        assert_eq!(parse_origin("v=spf1 -all"), None);
        assert_eq!(parse_origin(""), None);
    }
}
