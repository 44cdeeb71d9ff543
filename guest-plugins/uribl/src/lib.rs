//! `uribl`: domain block lists (Spamhaus DBL, SURBL, URIBL) for the names a
//! client and its message carry — Haraka's `uribl`.
//!
//! The HELO name (at HELO/EHLO), the envelope sender's domain (at MAIL
//! FROM), and after DATA the domains of `From`, `Reply-To` and
//! `Message-ID` and of the links in the message's text parts are each cut
//! to their registered domain (the public suffix list: `www.shop.example.co.uk`
//! → `example.co.uk`) and looked up as `DOMAIN.ZONE` in every zone of
//! `config/uribl.ini`. A listed name is refused where it was found
//! (`550 5.7.1 DOMAIN is listed in ZONE`), or only noted with
//! `reject = false`. Links to IP addresses are not looked up (domain lists
//! answer those with an error code).

use linkify::{LinkFinder, LinkKind};
use std::collections::BTreeSet;
use waraka_plugin::{Address, Hook, Plugin, Regex, Scope, Settings, Verdict, dns_list, message, mime, notes};

const SETTINGS: &str = "uribl.ini";
/// The note naming the first listing found: `DOMAIN ZONE`.
const NOTE: &str = "uribl.listed";
/// Text read from the message for links: the first 1 MiB.
const MAX_TEXT: u32 = 1024 * 1024;
/// The header fields whose domains are looked up.
const HEADERS: [&str; 3] = ["From", "Reply-To", "Message-ID"];

struct Uribl;

/// What a look-up found: the first listing, or a failed look-up.
enum Found {
    Clean,
    Listed { domain: String, zone: String, why: String },
    Failed(String),
}

/// The registered domain of a host name (lower case, without a final
/// dot); `None` for an IP address, a single label or a public suffix.
fn registered_domain(host: &str) -> Option<String> {
    let host = host
        .trim_end_matches('.')
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() || !host.contains('.') {
        return None;
    }
    let valid = host
        .split('.')
        .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !valid {
        return None;
    }
    psl::domain_str(&host).map(str::to_string)
}

/// The host of a link (`scheme://user@host:port/path`, or `www.host/…`).
fn link_host(link: &str) -> &str {
    let rest = link.split_once("://").map_or(link, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    host.split(':').next().unwrap_or("")
}

/// The registered domains of the links in `text`: those with a scheme,
/// and bare `www.` names.
fn link_domains(text: &str, into: &mut BTreeSet<String>) {
    let mut finder = LinkFinder::new();
    finder.kinds(&[LinkKind::Url]).url_must_have_scheme(false);
    for link in finder.links(text) {
        let link = link.as_str();
        let lower = link.get(..4).map(str::to_ascii_lowercase);
        if link.contains("://") || lower.as_deref() == Some("www.") {
            into.extend(registered_domain(link_host(link)));
        }
    }
}

/// The registered domains after `@` in the values of header fields.
fn address_domains<'a>(values: impl IntoIterator<Item = &'a str>, into: &mut BTreeSet<String>) {
    let at = Regex::new(r"@\[?([A-Za-z0-9.-]+)").expect("a valid pattern");
    for value in values {
        for found in at.captures_iter(value) {
            into.extend(registered_domain(&found[1]));
        }
    }
}

/// Looks `domains` (at most `max_lookups` of them) up in every zone, all
/// at once; the first listing in order, else a failed look-up if there
/// was one.
fn look_up<'a>(domains: impl IntoIterator<Item = &'a String>, settings: &Settings) -> Found {
    let zones = dns_list::zones(settings, "zones");
    let max = settings.number("max_lookups", 20usize);
    let queries: Vec<(&String, &String)> = domains
        .into_iter()
        .take(max)
        .flat_map(|domain| zones.iter().map(move |zone| (domain, zone)))
        .collect();
    let names: Vec<String> = queries
        .iter()
        .map(|(domain, zone)| format!("{domain}.{zone}"))
        .collect();
    let mut failed = None;
    for (((domain, zone), name), answer) in queries.iter().zip(&names).zip(dns_list::listings_each(&names)) {
        match answer {
            // 127.0.0.1 is URIBL's "query refused", never a listing.
            Ok(found) if found.iter().any(|a| a != "127.0.0.1") => {
                return Found::Listed {
                    why: dns_list::reason(name, domain, zone),
                    domain: domain.to_string(),
                    zone: zone.to_string(),
                };
            }
            Ok(_) => {}
            Err(e) => failed = failed.or(Some(format!("{name}: {e}"))),
        }
    }
    failed.map_or(Found::Clean, Found::Failed)
}

/// The answer to what `domains` (found in `what`) look up to.
fn verdict<'a>(
    settings: &Settings,
    what: &str,
    scope: Scope,
    domains: impl IntoIterator<Item = &'a String>,
) -> Verdict {
    match look_up(domains, settings) {
        Found::Clean => Verdict::Cont,
        Found::Listed { domain, zone, why } => {
            waraka_plugin::info!("{what}: {why}");
            let _ = notes::set(scope, NOTE, &format!("{domain} {zone}"));
            if settings.bool("reject", true) {
                Verdict::deny_code(550, "5.7.1", &why)
            } else {
                Verdict::Cont
            }
        }
        Found::Failed(why) => {
            waraka_plugin::warn!("{what}: look-up failed: {why}");
            if settings.get("on_error").as_deref() == Some("tempfail") {
                Verdict::denysoft_code(
                    451,
                    "4.4.3",
                    "Cannot check the domains of this message now, try again later",
                )
            } else {
                Verdict::Cont
            }
        }
    }
}

/// The settings when this session is checked at all (`check_KEY`, and
/// relaying sessions only with `skip_relaying = false`).
fn checking(key: &str) -> Option<Settings> {
    let settings = Settings::load(SETTINGS);
    (settings.bool(key, true) && !settings.skips_relaying(true)).then_some(settings)
}

fn helo_name(host: String) -> Verdict {
    let Some(settings) = checking("check_helo") else {
        return Verdict::Cont;
    };
    verdict(&settings, "HELO name", Scope::Connection, &registered_domain(&host))
}

impl Plugin for Uribl {
    const NAME: &'static str = "uribl";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Helo, Hook::Ehlo, Hook::Mail, Hook::DataPost];

    fn helo(host: String) -> Verdict {
        helo_name(host)
    }

    fn ehlo(host: String) -> Verdict {
        helo_name(host)
    }

    fn mail(sender: Address) -> Verdict {
        let Some(settings) = checking("check_mail_from") else {
            return Verdict::Cont;
        };
        if sender.is_null() {
            return Verdict::Cont;
        }
        verdict(
            &settings,
            "sender",
            Scope::Transaction,
            &registered_domain(&sender.domain),
        )
    }

    fn data_post() -> Verdict {
        let settings = Settings::load(SETTINGS);
        if settings.skips_relaying(true) {
            return Verdict::Cont;
        }
        // Header domains first: they count against max_lookups before links.
        let mut headers = BTreeSet::new();
        if settings.bool("check_headers", true) {
            let values: Vec<String> = HEADERS.iter().flat_map(|field| message::header(field)).collect();
            address_domains(values.iter().map(String::as_str), &mut headers);
        }
        let mut links = BTreeSet::new();
        if settings.bool("check_body", true) {
            match mime::texts(MAX_TEXT) {
                Ok(texts) => texts.iter().for_each(|t| link_domains(&t.text, &mut links)),
                Err(e) => waraka_plugin::warn!("cannot read the message's text: {e:?}"),
            }
        }
        let domains = headers.iter().chain(links.difference(&headers));
        verdict(&settings, "message", Scope::Transaction, domains)
    }
}

waraka_plugin::export!(Uribl);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_cut_to_their_registered_domain() {
        assert_eq!(
            registered_domain("www.Shop.Example.co.uk.").as_deref(),
            Some("example.co.uk")
        );
        assert_eq!(registered_domain("mail.spam.test").as_deref(), Some("spam.test"));
        assert_eq!(registered_domain("192.0.2.1"), None);
        assert_eq!(registered_domain("[192.0.2.1]"), None);
        assert_eq!(registered_domain("localhost"), None);
        assert_eq!(
            registered_domain("co.uk"),
            None,
            "a public suffix has no registered domain"
        );
        assert_eq!(registered_domain("bad_name.test"), None);
    }

    #[test]
    fn links_with_a_scheme_and_www_names_are_found_in_text_and_html() {
        let mut found = BTreeSet::new();
        link_domains(
            "see http://user@a.one.test:8080/x?y, <a href=\"https://Two.test/\">x</a>, www.three.test/p \
             and file.txt, http://192.0.2.7/ and mailto:x@four.test",
            &mut found,
        );
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            ["one.test", "three.test", "two.test"]
        );
    }

    #[test]
    fn header_values_give_the_domains_of_their_addresses() {
        let mut found = BTreeSet::new();
        address_domains(
            ["\"a@b\" <x@Mail.Sender.test>, y@[192.0.2.1]", "<1234.5@host.id.test>"],
            &mut found,
        );
        assert_eq!(found.into_iter().collect::<Vec<_>>(), ["id.test", "sender.test"]);
    }
}
