//! Next hops by recipient domain, as the forwarding queue plugins configure
//! them (`queue/smtp_forward`, `queue/lmtp`): the top of the config file is
//! the default hop, a `[domain]` section sends that domain elsewhere and
//! takes the keys it leaves out from the top.

use crate::{Address, config, envelope};

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
type Settings = Vec<(String, String)>;

/// A config file split into its top (`None`) and its `[domain]` sections.
#[derive(Clone, Debug, Default)]
pub struct Routes(Vec<(Option<String>, Settings)>);

impl Routes {
    /// Splits the lines of a config file into its top and `[domain]` sections.
    pub fn parse(lines: &[String]) -> Routes {
        let mut out: Vec<(Option<String>, Settings)> = vec![(None, Vec::new())];
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
        let top = &self.0[0].1;
        let domain = domain.to_ascii_lowercase();
        let (settings, inherited): (&Settings, &[(String, String)]) =
            match self.0.iter().find(|(name, _)| name.as_deref() == Some(domain.as_str())) {
                Some((_, section)) => (section, top),
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
                .route(&rcpt.domain, defaults)
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
