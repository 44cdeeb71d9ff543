//! Next hops by recipient domain, as the forwarding queue plugins configure
//! them (`queue/smtp_forward`, `queue/lmtp`): the top of the config file is
//! the default hop, a `[domain]` section sends that domain elsewhere and
//! takes the keys it leaves out from the top.

use crate::{Address, AuthAttempt, Error, Settings, Verdict, config, envelope, forward, host_list, kv, outbound_queue};

/// One next hop from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// `host`: a name or an IP address; or `path`, a Unix socket (LMTP).
    pub host: String,
    /// `port`.
    pub port: u16,
    /// `tls`: never, opportunistic, verify or required.
    pub tls: String,
    /// `auth_user` and `auth_pass`, when both are set.
    pub auth: Option<(String, String)>,
}

impl Hop {
    /// The hop as the `forward` capability takes it; LMTP never logs in.
    pub fn target(&self, protocol: Protocol) -> forward::NextHop {
        forward::NextHop {
            host: self.host.clone(),
            port: self.port,
            tls: self.tls.clone(),
            auth: match protocol {
                Protocol::Smtp => self.auth.clone(),
                Protocol::Lmtp => None,
            },
        }
    }
}

impl std::fmt::Display for Hop {
    /// `host:port`, or the socket's path.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.starts_with('/') {
            f.write_str(&self.host)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What a hop is when its keys and the top's leave something out.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    /// The port (25 for SMTP, 24 for LMTP).
    pub port: u16,
    /// The STARTTLS policy.
    pub tls: &'static str,
}

/// `key = value` pairs of one part of the config file.
type Part = Vec<(String, String)>;

/// A config file split into its top (`None`) and its `[domain]` sections.
#[derive(Clone, Debug, Default)]
pub struct Routes(Vec<(Option<String>, Part)>);

impl Routes {
    /// Splits the lines of a config file into its top and `[domain]` sections.
    pub fn parse(lines: &[String]) -> Routes {
        let mut out: Vec<(Option<String>, Part)> = vec![(None, Vec::new())];
        for line in lines {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                out.push((Some(name.trim().to_ascii_lowercase()), Vec::new()));
            } else if let Some((key, value)) = line.split_once('=') {
                let section = out.last_mut().expect("there is always a section");
                section.1.push((key.trim().to_string(), value.trim().to_string()));
            }
        }
        Routes(out)
    }

    /// The next hop for `domain`: its section, else the top of the file;
    /// `None` when neither names a `host` (or a socket `path`, which a
    /// section's own `host` overrides, as Haraka's `lmtp.ini` has it).
    pub fn route(&self, domain: &str, defaults: Defaults) -> Option<Hop> {
        self.route_in(&[domain], defaults)
    }

    /// The next hop for the recipient `address`: the section named by the
    /// whole address (`[alice@example.com]`: one mailbox elsewhere, as
    /// Haraka's `recipient-routes`), else its domain's, else the top.
    pub fn route_recipient(&self, address: &Address, defaults: Defaults) -> Option<Hop> {
        self.route_in(&[&address.to_addr_spec(), &address.domain], defaults)
    }

    /// The server for the user name `user`: the section named by the whole
    /// name, else its domain's (the part after `@`), else the top.
    pub fn route_user(&self, user: &str, defaults: Defaults) -> Option<Hop> {
        let domain = user.rsplit_once('@').map_or("", |(_, domain)| domain);
        self.route_in(&[user, domain], defaults)
    }

    /// The next hop of the first section `names` has (any case), else of
    /// the top; a section takes the keys it leaves out from the top.
    fn route_in(&self, names: &[&str], defaults: Defaults) -> Option<Hop> {
        let top = &self.0[0].1;
        let section = names.iter().find_map(|wanted| {
            let wanted = wanted.to_ascii_lowercase();
            self.0
                .iter()
                .find(|(name, _)| name.as_deref() == Some(wanted.as_str()))
                .map(|(_, section)| section)
        });
        let (settings, inherited): (&Part, &[(String, String)]) = match section {
            Some(section) => (section, top),
            None => (top, &[]),
        };
        let find = |part: &[(String, String)], key: &str| part.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let get = |key: &str| find(settings, key).or_else(|| find(inherited, key));
        let server = |part: &[(String, String)]| find(part, "path").or_else(|| find(part, "host"));
        Some(Hop {
            host: server(settings).or_else(|| server(inherited))?,
            port: get("port").and_then(|p| p.parse().ok()).unwrap_or(defaults.port),
            tls: get("tls").unwrap_or_else(|| defaults.tls.into()),
            auth: get("auth_user").zip(get("auth_pass")),
        })
    }

    /// Groups `recipients` (as `local@domain`) by next hop, in order of
    /// first appearance; `Err` names a recipient without one.
    pub fn groups(&self, recipients: &[Address], defaults: Defaults) -> Result<Vec<(Hop, Vec<String>)>, String> {
        let mut out: Vec<(Hop, Vec<String>)> = Vec::new();
        for rcpt in recipients {
            let hop = self
                .route_recipient(rcpt, defaults)
                .ok_or_else(|| format!("no next hop (host) for {rcpt}"))?;
            let address = rcpt.to_addr_spec();
            match out.iter_mut().find(|(h, _)| *h == hop) {
                Some((_, list)) => list.push(address),
                None => out.push((hop, vec![address])),
            }
        }
        Ok(out)
    }
}

/// The transaction's recipients grouped by the next hops of the config
/// file `name`; `Err` says why there are none (unreadable file, a
/// recipient without a hop).
pub fn recipient_groups(name: &str, defaults: Defaults) -> Result<Vec<(Hop, Vec<String>)>, String> {
    let lines = config::lines(name).map_err(|e| format!("{name} unreadable: {e:?}"))?;
    Routes::parse(&lines).groups(&envelope::recipients(), defaults)
}

/// Stores the message in the host's durable outbound queue for each group
/// of recipients and its hop, which the host's delivery worker then works
/// (retries, bounces, notices); `Err` says which group could not be
/// queued. The hops' AUTH is not kept with queued mail: an SMTP hop that
/// needs it is refused here, so nothing leaves without the login it was set
/// up with (LMTP never logs in).
pub fn enqueue_groups(groups: &[(Hop, Vec<String>)], protocol: Protocol) -> Result<(), String> {
    if let Some((hop, _)) = groups
        .iter()
        .find(|(hop, _)| protocol == Protocol::Smtp && hop.auth.is_some())
    {
        return Err(format!(
            "{hop}: queued mail cannot log in (auth_user): give the domain an [outbound.routes] entry with user and password instead"
        ));
    }
    for (hop, recipients) in groups {
        let server = outbound_queue::Hop {
            host: hop.host.clone(),
            port: hop.port,
            lmtp: protocol == Protocol::Lmtp,
            tls: hop.tls.clone(),
        };
        let ids = outbound_queue::enqueue(&server, recipients).map_err(|e| format!("{hop}: {e:?}"))?;
        crate::info!("{} queued for {hop} as {}", recipients.join(","), ids.join(","));
    }
    Ok(())
}

/// How the next hops of a config file speak: SMTP (`queue/smtp_forward`)
/// or LMTP (`queue/lmtp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// SMTP: `EHLO`, and AUTH with the hop's `auth_user`/`auth_pass`.
    Smtp,
    /// LMTP: `LHLO`, never AUTH.
    Lmtp,
}

/// What a next hop said of a recipient, as the verification cache keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mailbox {
    Exists,
    Unknown,
}

impl Mailbox {
    const fn cached(self) -> &'static [u8] {
        match self {
            Mailbox::Exists => b"exists",
            Mailbox::Unknown => b"unknown",
        }
    }

    fn from_cached(value: &[u8]) -> Option<Mailbox> {
        [Mailbox::Exists, Mailbox::Unknown]
            .into_iter()
            .find(|m| m.cached() == value)
    }

    fn verdict(self, address: &str) -> Verdict {
        match self {
            Mailbox::Exists => Verdict::Cont,
            Mailbox::Unknown => Verdict::deny_code(550, "5.1.1", &format!("Mailbox <{address}> does not exist here")),
        }
    }
}

/// Recipient verification at RCPT time for the forwarding queue plugins:
/// a recipient of a local domain (`config/host_list`) is asked for at its
/// next hop from the config file `name` (the `forward` capability's
/// `verify-recipient`: a session with `MAIL FROM:<>` and that RCPT, no
/// message), so a mailbox the next hop does not have is refused now (`550
/// 5.1.1`) instead of bounced later to a sender who may be forged.
///
/// Settings at the top of the file: `verify_recipients` (`on` when
/// missing, else off); `verify_cache`, a key/value store (grant `kv:NAME`)
/// that keeps answers for `verify_cache_exists` (default 1 d) and
/// `verify_cache_unknown` (default 1 h), so a busy domain does not cost a
/// session per recipient. A next hop that cannot be asked gives `451 4.4.3`,
/// a 4xx answer `450 4.2.1`; neither is cached.
pub fn verify_recipient(name: &str, defaults: Defaults, protocol: Protocol, on: bool, recipient: &Address) -> Verdict {
    // One read of the file for the switches and the hop.
    let lines = config::lines(name);
    let settings = Settings::from_lines(lines.as_deref().unwrap_or_default());
    if !settings.bool("verify_recipients", on) {
        return Verdict::Cont;
    }
    let address = recipient.to_addr_spec();
    let unverified = |why: String| {
        crate::warn!("cannot verify <{address}>: {why}");
        Verdict::denysoft_code(
            451,
            "4.4.3",
            &format!("Cannot verify mailbox <{address}> now, try again later"),
        )
    };
    match host_list::is_local(&recipient.domain) {
        Ok(true) => {}
        Ok(false) => return Verdict::Cont,
        Err(e) => return unverified(format!("host_list: {e:?}")),
    }
    let cache = settings.get("verify_cache");
    // Local parts may be case-sensitive at the next hop; domains are not.
    let key = format!(
        "verify:{}",
        Address {
            domain: recipient.domain.to_ascii_lowercase(),
            ..recipient.clone()
        }
        .to_addr_spec()
    );
    if let Some(store) = &cache {
        match kv::get(store, &key) {
            Ok(Some(value)) => {
                if let Some(mailbox) = Mailbox::from_cached(&value) {
                    return mailbox.verdict(&address);
                }
            }
            Ok(None) => {}
            Err(e) => crate::warn!("verify_cache {store}: {e:?}"),
        }
    }
    let hop = match &lines {
        Ok(lines) => Routes::parse(lines).route_recipient(recipient, defaults),
        Err(e) => return unverified(format!("{name} unreadable: {e:?}")),
    };
    let Some(hop) = hop else {
        return unverified(format!("no next hop (host) for {}", recipient.domain));
    };
    let reply = match forward::verify_recipient(&hop.target(protocol), protocol == Protocol::Lmtp, &address) {
        Ok(reply) => reply,
        Err(e) => return unverified(format!("{hop}: {e:?}")),
    };
    let (mailbox, ttl) = match reply.code {
        200..=299 => (Mailbox::Exists, settings.duration("verify_cache_exists", DAY)),
        500..=599 => {
            crate::info!("<{address}> refused by {hop}: {}", reply.text);
            (Mailbox::Unknown, settings.duration("verify_cache_unknown", HOUR))
        }
        _ => {
            crate::info!("<{address}> deferred by {hop}: {}", reply.text);
            return Verdict::denysoft_code(
                450,
                "4.2.1",
                &format!("Mailbox <{address}> unavailable, try again later"),
            );
        }
    };
    if let Some(store) = &cache {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if let Err(e) = kv::set(store, &key, mailbox.cached(), Some(ttl_ms)) {
            crate::warn!("verify_cache {store}: {e:?}");
        }
    }
    mailbox.verdict(&address)
}

const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);
const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

/// The `auth` hook of a plugin that has another server check AUTH PLAIN
/// and LOGIN credentials (`auth/proxy`, `auth/imap`): the server of the
/// config file `settings` — its top, or the `[domain]` section of the
/// user name's domain — is asked with `ask`. Its yes is an accept, its no
/// a `535`, a server that cannot answer a `454` (never an accept); a user
/// for whom no server is named passes on to the next `auth` plugin.
pub fn ask_server(
    plugin: &str,
    attempt: &AuthAttempt,
    settings: &str,
    defaults: Defaults,
    ask: impl FnOnce(&Hop, &str, &str) -> Result<bool, Error>,
) -> Verdict {
    if let Some(verdict) = attempt.precheck() {
        return verdict;
    }
    let routes = Routes::parse(&config::lines(settings).unwrap_or_default());
    let Some(hop) = routes
        .route_user(&attempt.user, defaults)
        .filter(|h| !h.host.is_empty())
    else {
        crate::debug!("{plugin}: no server for {}", attempt.user);
        return Verdict::Cont;
    };
    if attempt.secret.is_empty() {
        return Verdict::Deny(None);
    }
    match ask(&hop, &attempt.user, &attempt.secret) {
        Ok(true) => {
            crate::info!("{plugin}: {} authenticated by {hop}", attempt.user);
            Verdict::ok()
        }
        Ok(false) => Verdict::Deny(None),
        Err(e) => {
            crate::warn!("{plugin}: asking {hop} about {} failed: {e:?}", attempt.user);
            Verdict::denysoft("Authentication service unavailable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMTP: Defaults = Defaults {
        port: 25,
        tls: "opportunistic",
    };

    fn routes(text: &str) -> Routes {
        Routes::parse(&text.lines().map(str::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn users_are_routed_by_their_domain() {
        let routes = Routes::parse(
            &[
                "host = smtp.example.com",
                "[Example.ORG]",
                "host = mail.example.org",
                "port = 465",
            ]
            .map(String::from),
        );
        let submission = Defaults {
            port: 587,
            tls: "required",
        };
        let hop = |user| routes.route_user(user, submission).map(|h| h.to_string());
        assert_eq!(hop("alice").as_deref(), Some("smtp.example.com:587"));
        assert_eq!(hop("bob@example.org").as_deref(), Some("mail.example.org:465"));
        assert_eq!(hop("carol@EXAMPLE.org").as_deref(), Some("mail.example.org:465"));
        assert_eq!(hop("dave@example.net").as_deref(), Some("smtp.example.com:587"));
        assert_eq!(Routes::parse(&[]).route_user("", submission), None);
        let mailbox = Routes::parse(
            &[
                "host = new.example.com",
                "[old.example.com]",
                "host = old.example.com",
                "[Alice@Old.example.com]",
                "host = archive.example.com",
            ]
            .map(String::from),
        );
        let recipient = |local: &str, domain: &str| Address {
            local_part: local.into(),
            domain: domain.into(),
            params: Vec::new(),
        };
        let host = |address: Address| mailbox.route_recipient(&address, submission).map(|h| h.host);
        assert_eq!(
            host(recipient("alice", "old.example.com")).as_deref(),
            Some("archive.example.com")
        );
        assert_eq!(
            host(recipient("bob", "old.example.com")).as_deref(),
            Some("old.example.com")
        );
        assert_eq!(
            host(recipient("carol", "other.test")).as_deref(),
            Some("new.example.com")
        );
        assert_eq!(
            mailbox
                .route_user("ALICE@old.example.com", submission)
                .map(|h| h.host)
                .as_deref(),
            Some("archive.example.com")
        );
    }

    #[test]
    fn domains_route_to_their_section_and_inherit_the_top() {
        let config =
            routes("host = 10.0.0.1\nport = 2525\nauth_user = u\nauth_pass = p\n[Example.org]\nhost = 10.0.0.2\n");
        let top = config.route("other.test", SMTP).unwrap();
        assert_eq!(
            (top.host.as_str(), top.port, top.tls.as_str()),
            ("10.0.0.1", 2525, "opportunistic")
        );
        let org = config.route("example.ORG", SMTP).unwrap();
        assert_eq!(
            (org.host.as_str(), org.port),
            ("10.0.0.2", 2525),
            "the port comes from the top"
        );
        assert_eq!(org.auth, Some(("u".to_string(), "p".to_string())));
        assert_eq!(routes("port = 25\n").route("x.test", SMTP), None, "no host: no route");
        let lmtp = Defaults { port: 24, tls: "never" };
        let hop = routes("host = mail.local\n").route("x.test", lmtp).unwrap();
        assert_eq!((hop.port, hop.tls.as_str()), (24, "never"));
        assert_eq!(hop.to_string(), "mail.local:24");
    }

    #[test]
    fn a_socket_path_stands_for_the_host_unless_a_section_names_its_own() {
        let lmtp = Defaults { port: 24, tls: "never" };
        let config =
            routes("host = 10.0.0.1\npath = /run/dovecot/lmtp\n[a.test]\nhost = 10.0.0.2\n[b.test]\nport = 2424\n");
        let top = config.route("x.test", lmtp).unwrap();
        assert_eq!(top.host, "/run/dovecot/lmtp", "path wins over host");
        assert_eq!(top.to_string(), "/run/dovecot/lmtp");
        assert_eq!(config.route("a.test", lmtp).unwrap().host, "10.0.0.2");
        assert_eq!(config.route("b.test", lmtp).unwrap().host, "/run/dovecot/lmtp");
    }
}
