//! `queue/smtp_forward`: hands each accepted message to a next-hop SMTP
//! server while the client waits — Haraka's `queue/smtp_forward`.
//!
//! The next hop is the `[DOMAIN]` section of `config/queue/smtp_forward.ini`
//! matching the recipient's domain, else the top of the file. Recipients
//! are grouped by next hop; the message goes to each group through the
//! host's SMTP client (the `forward` capability). `ok` only when every
//! recipient was accepted; a next hop that is down or answers 4xx gives
//! `451 4.4.1` (the client retries); 5xx for recipients gives `550` with the
//! next hop's reply, so the sender hears of it (never a silent loss).

use waraka_plugin::{Address, Error, Hook, Plugin, Verdict, config, envelope, forward};

const SETTINGS: &str = "queue/smtp_forward.ini";

struct SmtpForward;

/// One next hop from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Hop {
    host: String,
    port: u16,
    tls: String,
    auth: Option<(String, String)>,
}

/// `key = value` pairs of one part of the config file.
type Settings = Vec<(String, String)>;

/// The top of the file (`None`) and each `[domain]` section, with their settings.
type Sections = Vec<(Option<String>, Settings)>;

/// Splits the config file into its top and its `[domain]` sections.
fn sections(lines: &[String]) -> Sections {
    let mut out: Sections = vec![(None, Vec::new())];
    for line in lines {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push((Some(name.trim().to_ascii_lowercase()), Vec::new()));
        } else if let Some((key, value)) = line.split_once('=') {
            let section = out.last_mut().expect("there is always a section");
            section.1.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

fn hop_of(settings: &[(String, String)], defaults: &[(String, String)]) -> Option<Hop> {
    let get = |key: &str| {
        settings
            .iter()
            .chain(defaults)
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let auth = get("auth_user").zip(get("auth_pass"));
    Some(Hop {
        host: get("host")?,
        port: get("port").and_then(|p| p.parse().ok()).unwrap_or(25),
        tls: get("tls").unwrap_or_else(|| "opportunistic".into()),
        auth,
    })
}

/// The next hop for `domain`: its section, else the top of the file.
fn route(config: &[(Option<String>, Settings)], domain: &str) -> Option<Hop> {
    let defaults = &config[0].1;
    let domain = domain.to_ascii_lowercase();
    match config.iter().find(|(name, _)| name.as_deref() == Some(domain.as_str())) {
        Some((_, settings)) => hop_of(settings, defaults),
        None => hop_of(defaults, &[]),
    }
}

/// Groups recipients by next hop, in order of first appearance.
fn groups(config: &[(Option<String>, Settings)], recipients: &[Address]) -> Result<Vec<(Hop, Vec<String>)>, String> {
    let mut out: Vec<(Hop, Vec<String>)> = Vec::new();
    for rcpt in recipients {
        let hop = route(config, &rcpt.domain).ok_or_else(|| format!("no next hop (host) for {rcpt}"))?;
        let address = rcpt.to_addr_spec();
        match out.iter_mut().find(|(h, _)| *h == hop) {
            Some((_, list)) => list.push(address),
            None => out.push((hop, vec![address])),
        }
    }
    Ok(out)
}

fn tempfail(why: &str) -> Verdict {
    waraka_plugin::warn!("{why}");
    Verdict::denysoft_code(451, "4.4.1", "Next hop unavailable, try again later")
}

impl Plugin for SmtpForward {
    const NAME: &'static str = "queue/smtp_forward";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Queue];

    fn queue() -> Verdict {
        let config = match config::lines(SETTINGS) {
            Ok(lines) => sections(&lines),
            Err(e) => return tempfail(&format!("{SETTINGS} unreadable: {e:?}")),
        };
        let groups = match groups(&config, &envelope::recipients()) {
            Ok(groups) => groups,
            Err(why) => return tempfail(&why),
        };
        let mut rejected = Vec::new();
        for (hop, recipients) in groups {
            let target = forward::NextHop {
                host: hop.host.clone(),
                port: hop.port,
                tls: hop.tls.clone(),
                auth: hop.auth.clone(),
            };
            let replies = match forward::send(&target, &recipients) {
                Ok(replies) => replies,
                Err(Error::Backend(why)) => return tempfail(&format!("{}:{}: {why}", hop.host, hop.port)),
                Err(e) => return tempfail(&format!("{}:{}: {e:?}", hop.host, hop.port)),
            };
            for reply in replies {
                match reply.code {
                    200..=299 => waraka_plugin::info!(
                        "{} accepted by {}:{}: {}",
                        reply.recipient,
                        hop.host,
                        hop.port,
                        reply.text
                    ),
                    400..=499 => {
                        return tempfail(&format!("{} deferred by {}: {}", reply.recipient, hop.host, reply.text));
                    }
                    _ => rejected.push(format!("<{}>: {}", reply.recipient, reply.text)),
                }
            }
        }
        if rejected.is_empty() {
            return Verdict::ok();
        }
        waraka_plugin::warn!("next hop rejected {}", rejected.join("; "));
        Verdict::deny_code(550, "5.7.1", &format!("Next hop rejected {}", rejected.join("; ")))
    }
}

waraka_plugin::export!(SmtpForward);

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn domains_route_to_their_section_and_inherit_the_top() {
        let config = sections(&lines(
            "host = 10.0.0.1\nport = 2525\nauth_user = u\nauth_pass = p\n[Example.org]\nhost = 10.0.0.2\n",
        ));
        let top = route(&config, "other.test").unwrap();
        assert_eq!((top.host.as_str(), top.port), ("10.0.0.1", 2525));
        let org = route(&config, "example.ORG").unwrap();
        assert_eq!(
            (org.host.as_str(), org.port),
            ("10.0.0.2", 2525),
            "the port comes from the top"
        );
        assert_eq!(org.auth, Some(("u".to_string(), "p".to_string())));
        assert_eq!(
            route(&sections(&lines("port = 25\n")), "x.test"),
            None,
            "no host: no route"
        );
    }
}
