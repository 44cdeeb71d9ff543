//! `access`: allow and deny lists for the client, the sender and the
//! recipients — Haraka's `access` (`connect.rdns_access`,
//! `mail_from.access`, `rcpt_to.access`).
//!
//! Each phase (`connect`, `mail`, `rcpt`) has two list files in `config/`,
//! `access.PHASE.allow` and `access.PHASE.deny`: one entry per line, an
//! address, domain, host name, IP or CIDR range, or a `/regex/`. An allow
//! match ends the phase's check before the deny list; a deny match
//! refuses (`554 5.7.1` at connect, `550 5.7.1` for MAIL and RCPT). An
//! allow never accepts by itself: later plugins still decide.

use regex_lite::RegexBuilder;
use std::net::IpAddr;
use waraka_plugin::{Address, Error, Hook, Plugin, Scope, Verdict, config, dns, notes, session};

struct Access;

/// The lists of one phase.
struct Lists {
    phase: &'static str,
}

/// The pattern of a `/regex/` entry.
fn pattern_of(entry: &str) -> Option<&str> {
    entry.strip_prefix('/')?.strip_suffix('/').filter(|p| !p.is_empty())
}

/// Whether an exact entry matches one of `subjects`: the entry equals a
/// subject (case-insensitive), or, for a domain entry, is the subject's
/// domain or a parent of it (`example.com` matches `a@mail.example.com`
/// and `host.example.com`), or, for an address range, contains the IP.
fn entry_matches(entry: &str, subjects: &[String], ip: Option<IpAddr>) -> bool {
    if let Some(ip) = ip
        && (entry.parse::<IpAddr>().is_ok() || entry.contains('/'))
    {
        return waraka_plugin::ip_in_range(ip, entry);
    }
    let entry = entry.trim_end_matches('.').to_ascii_lowercase();
    subjects.iter().any(|subject| {
        let subject = subject.to_ascii_lowercase();
        if subject == entry {
            return true;
        }
        if entry.contains('@') {
            return false;
        }
        let domain = subject.rsplit_once('@').map_or(subject.as_str(), |(_, d)| d);
        domain == entry || domain.ends_with(&format!(".{entry}"))
    })
}

impl Lists {
    fn file(&self, kind: &str) -> Result<Vec<String>, Error> {
        config::lines(&format!("access.{}.{kind}", self.phase))
    }

    /// The first entry of list `kind` matching a subject (or the IP).
    fn matching(&self, kind: &str, subjects: &[String], ip: Option<IpAddr>) -> Result<Option<String>, Error> {
        for entry in self.file(kind)? {
            let found = match pattern_of(&entry) {
                Some(pattern) => match RegexBuilder::new(pattern).case_insensitive(true).build() {
                    Ok(re) => subjects.iter().any(|s| re.is_match(s)),
                    Err(e) => {
                        waraka_plugin::warn!("access.{}.{kind}: skipping {entry:?}: {e}", self.phase);
                        false
                    }
                },
                None => entry_matches(&entry, subjects, ip),
            };
            if found {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// Whether an entry needs the client's names (not an IP or range).
    fn names_needed(&self) -> Result<bool, Error> {
        let mut entries = self.file("allow")?;
        entries.extend(self.file("deny")?);
        Ok(entries
            .iter()
            .any(|e| e.parse::<IpAddr>().is_err() && !e.contains('/') || pattern_of(e).is_some()))
    }

    /// Allow first, then deny: `Some(entry)` when a deny entry matches.
    fn denied_by(&self, subjects: &[String], ip: Option<IpAddr>) -> Result<Option<String>, Error> {
        if let Some(entry) = self.matching("allow", subjects, ip)? {
            waraka_plugin::info!("{} allowed by access.{} entry {entry:?}", subjects[0], self.phase);
            let _ = notes::set(Scope::Connection, &format!("access.{}", self.phase), "allowed");
            return Ok(None);
        }
        self.matching("deny", subjects, ip)
    }
}

fn unreadable(phase: &str, e: &Error) -> Verdict {
    waraka_plugin::warn!("access.{phase} lists unreadable: {e:?}");
    Verdict::denysoft_code(451, "4.3.0", "Temporary local problem, try later")
}

/// The client's address and names from reverse DNS (when the `dns` grant
/// allows; names are only needed when the lists have name entries).
fn client_subjects(ip: &str) -> Result<Vec<String>, Error> {
    let mut subjects = vec![ip.to_string()];
    match dns::lookup_ptr(ip) {
        Ok(names) => subjects.extend(names),
        Err(Error::NotGranted) => {}
        Err(e) => return Err(e),
    }
    Ok(subjects)
}

/// The `mail` or `rcpt` lists for an envelope address.
fn check_address(phase: &'static str, what: &str, address: &Address) -> Verdict {
    match (Lists { phase }).denied_by(&[address.to_addr_spec()], None) {
        Ok(None) => Verdict::Cont,
        Ok(Some(entry)) => {
            waraka_plugin::info!("{address} denied by access.{phase} entry {entry:?}");
            Verdict::deny_code(550, "5.7.1", &format!("{what} {address} denied"))
        }
        Err(e) => unreadable(phase, &e),
    }
}

impl Plugin for Access {
    const NAME: &'static str = "access";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Connect, Hook::Mail, Hook::Rcpt];

    fn connect() -> Verdict {
        let lists = Lists { phase: "connect" };
        let peer = session::peer_ip();
        let ip = peer.parse::<IpAddr>().ok();
        let names_needed = match lists.names_needed() {
            Ok(needed) => needed,
            Err(e) => return unreadable("connect", &e),
        };
        let looked_up = if names_needed {
            client_subjects(&peer)
        } else {
            Ok(vec![peer.clone()])
        };
        let subjects = match looked_up {
            Ok(subjects) => subjects,
            Err(e) => {
                waraka_plugin::warn!("reverse DNS of {peer} failed: {e:?}; checking the address only");
                vec![peer.clone()]
            }
        };
        match lists.denied_by(&subjects, ip) {
            Ok(None) => Verdict::Cont,
            Ok(Some(entry)) => {
                waraka_plugin::info!("{peer} denied by access.connect entry {entry:?}");
                Verdict::deny_code(554, "5.7.1", "Your host is not allowed to connect")
            }
            Err(e) => unreadable("connect", &e),
        }
    }

    fn mail(sender: Address) -> Verdict {
        if sender.is_null() {
            return Verdict::Cont;
        }
        check_address("mail", "Sender", &sender)
    }

    fn rcpt(recipient: Address) -> Verdict {
        check_address("rcpt", "Recipient", &recipient)
    }
}

waraka_plugin::export!(Access);

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn entries_match_addresses_domains_names_and_ranges() {
        let a = subjects(&["Bob@Mail.Example.com"]);
        assert!(entry_matches("bob@mail.example.com", &a, None));
        assert!(entry_matches("example.com", &a, None), "a parent domain");
        assert!(entry_matches("mail.example.com", &a, None));
        assert!(!entry_matches("ample.com", &a, None));
        assert!(!entry_matches("alice@mail.example.com", &a, None));
        let client = subjects(&["192.0.2.7", "host.dsl.example.net"]);
        let ip = "192.0.2.7".parse().ok();
        assert!(entry_matches("192.0.2.0/24", &client, ip));
        assert!(entry_matches("192.0.2.7", &client, ip));
        assert!(!entry_matches("198.51.100.0/24", &client, ip));
        assert!(entry_matches("dsl.example.net", &client, ip), "an rDNS domain");
        assert_eq!(pattern_of("/^spam/"), Some("^spam"));
        assert_eq!(pattern_of("/"), None);
    }
}
