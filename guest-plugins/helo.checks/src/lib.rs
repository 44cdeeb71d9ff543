//! `helo.checks`: sanity checks of the HELO/EHLO name — Haraka's
//! `helo.checks`. Each check can be turned off, and only those listed in
//! `reject` refuse the greeting (`550 5.7.1`); the others are noted in the
//! connection note `helo.checks` for later plugins. Settings:
//! `config/helo.checks.ini`, patterns: `config/helo.checks.regexps`.

use regex_lite::RegexBuilder;
use std::net::IpAddr;
use waraka_plugin::{Hook, Plugin, Scope, Settings, Verdict, config, host_list, notes, session};

const SETTINGS: &str = "helo.checks.ini";
const PATTERNS: &str = "helo.checks.regexps";
const DEFAULT_REJECT: &str = "bare_ip, literal_mismatch, valid_hostname, forged_local, match_re";

struct HeloChecks;

/// What the checks need to know about the connection.
struct Client {
    ip: Option<IpAddr>,
    /// The server's end of the connection.
    local: Option<IpAddr>,
    /// This server's name.
    hostname: String,
    /// Names this server answers for (its name and the local domains).
    is_ours: Box<dyn Fn(&str) -> bool>,
    /// Patterns that refuse a name.
    patterns: Vec<String>,
}

/// One failed check: its name and why.
type Failure = (&'static str, String);

fn bare_ip(helo: &str) -> Option<String> {
    helo.parse::<IpAddr>()
        .is_ok()
        .then(|| format!("{helo} is a bare IP address; use an address literal [{helo}]"))
}

fn literal_mismatch(helo: &str, client: &Client) -> Option<String> {
    let inner = helo.strip_prefix('[')?.strip_suffix(']')?;
    let claimed = inner.strip_prefix("IPv6:").unwrap_or(inner).parse::<IpAddr>().ok();
    match (claimed, client.ip) {
        (Some(claimed), Some(ip)) if claimed == ip => None,
        _ => Some(format!("address literal {helo} is not the client's address")),
    }
}

/// A host name: at least two dot-separated labels of letters, digits and
/// hyphens (not at either end), the last one not all digits.
fn valid_hostname(helo: &str) -> Option<String> {
    if helo.starts_with('[') {
        return None;
    }
    let name = helo.strip_suffix('.').unwrap_or(helo);
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let valid = labels.len() >= 2
        && name.len() <= 253
        && labels.iter().all(label_ok)
        && !labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    (!valid).then(|| format!("{helo} is not a valid host name"))
}

fn forged_local(helo: &str, client: &Client) -> Option<String> {
    let name = helo.trim_end_matches('.');
    let ours = name.eq_ignore_ascii_case(&client.hostname) || (client.is_ours)(name);
    let same_machine = client.ip.is_some() && client.ip == client.local;
    (ours && !same_machine).then(|| format!("{helo} is this server's own name"))
}

fn match_re(helo: &str, client: &Client) -> Option<String> {
    client.patterns.iter().find_map(
        |pattern| match RegexBuilder::new(pattern).case_insensitive(true).build() {
            Ok(re) if re.is_match(helo) => Some(format!("{helo} matches a refused pattern")),
            Ok(_) => None,
            Err(e) => {
                waraka_plugin::warn!("{PATTERNS}: skipping {pattern:?}: {e}");
                None
            }
        },
    )
}

/// A name that carries the client's address: typical of dynamic ranges.
fn dynamic(helo: &str, client: &Client) -> Option<String> {
    let ip = client.ip?;
    waraka_plugin::names_address(helo, ip).then(|| format!("{helo} looks like a dynamic address's name"))
}

/// Every enabled check that fails for `helo`, in order.
fn failures(helo: &str, client: &Client, enabled: impl Fn(&str) -> bool) -> Vec<Failure> {
    let checks: [(&'static str, Option<String>); 6] = [
        ("bare_ip", bare_ip(helo)),
        ("literal_mismatch", literal_mismatch(helo, client)),
        ("valid_hostname", valid_hostname(helo)),
        ("forged_local", forged_local(helo, client)),
        ("match_re", match_re(helo, client)),
        ("dynamic", dynamic(helo, client)),
    ];
    checks
        .into_iter()
        .filter(|(name, _)| enabled(name))
        .filter_map(|(name, failed)| failed.map(|why| (name, why)))
        .collect()
}

fn check(helo: String) -> Verdict {
    let settings = Settings::load(SETTINGS);
    if settings.skips_relaying(true) || settings.skips_private() {
        return Verdict::Cont;
    }
    let client = Client {
        ip: session::peer_ip().parse().ok(),
        local: session::local_ip().parse().ok(),
        hostname: session::hostname(),
        is_ours: Box::new(|name| host_list::is_local(name).unwrap_or(false)),
        patterns: config::lines(PATTERNS).unwrap_or_default(),
    };
    let found = failures(&helo, &client, |name| settings.bool(name, true));
    if found.is_empty() {
        let _ = notes::set(Scope::Connection, "helo.checks", "pass");
        return Verdict::Cont;
    }
    let names: Vec<&str> = found.iter().map(|(name, _)| *name).collect();
    let _ = notes::set(Scope::Connection, "helo.checks", &format!("fail: {}", names.join(", ")));
    let reject = settings.get("reject").unwrap_or_else(|| DEFAULT_REJECT.into());
    let rejecting: Vec<&str> = reject.split(',').map(str::trim).collect();
    match found.iter().find(|(name, _)| rejecting.contains(name)) {
        Some((name, why)) => {
            waraka_plugin::info!("HELO {helo} refused ({name}): {why}");
            Verdict::deny_code(550, "5.7.1", &format!("HELO rejected: {why}"))
        }
        None => {
            waraka_plugin::info!("HELO {helo} noted: {}", names.join(", "));
            Verdict::Cont
        }
    }
}

impl Plugin for HeloChecks {
    const NAME: &'static str = "helo.checks";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Helo, Hook::Ehlo];

    fn helo(host: String) -> Verdict {
        check(host)
    }
    fn ehlo(host: String) -> Verdict {
        check(host)
    }
}

waraka_plugin::export!(HeloChecks);

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str) -> Client {
        Client {
            ip: ip.parse().ok(),
            local: "127.0.0.1".parse().ok(),
            hostname: "mx.ours.test".into(),
            is_ours: Box::new(|name| name.eq_ignore_ascii_case("ours.test")),
            patterns: vec![r"^spam-bot\.".into()],
        }
    }

    fn failed(helo: &str, ip: &str) -> Vec<&'static str> {
        failures(helo, &client(ip), |_| true)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn each_check_finds_its_case() {
        assert_eq!(failed("mail.example.net", "192.0.2.1"), Vec::<&str>::new());
        assert_eq!(failed("192.0.2.1", "192.0.2.1"), ["bare_ip", "valid_hostname"]);
        assert_eq!(failed("[192.0.2.1]", "192.0.2.1"), Vec::<&str>::new());
        assert_eq!(failed("[192.0.2.9]", "192.0.2.1"), ["literal_mismatch"]);
        assert_eq!(failed("localhost", "192.0.2.1"), ["valid_hostname"]);
        assert_eq!(failed("bad_name.example", "192.0.2.1"), ["valid_hostname"]);
        assert_eq!(failed("host.123", "192.0.2.1"), ["valid_hostname"]);
        assert_eq!(failed("-x.example", "192.0.2.1"), ["valid_hostname"]);
        assert_eq!(failed("mx.ours.test", "192.0.2.1"), ["forged_local"]);
        assert_eq!(failed("OURS.test", "192.0.2.1"), ["forged_local"]);
        assert_eq!(
            failed("ours.test", "127.0.0.1"),
            Vec::<&str>::new(),
            "the machine itself may use our name"
        );
        assert_eq!(failed("ours.test", "127.0.0.2"), ["forged_local"]);
        assert_eq!(failed("spam-bot.example.net", "192.0.2.1"), ["match_re"]);
        assert_eq!(failed("192-0-2-1.dsl.example.net", "192.0.2.1"), ["dynamic"]);
        assert_eq!(failed("1.2.0.192.pool.example.net", "192.0.2.1"), ["dynamic"]);
        assert_eq!(failed("c0000201.cust.example.net", "192.0.2.1"), ["dynamic"]);
        assert_eq!(failed("mx192.example.net", "192.0.2.1"), Vec::<&str>::new());
    }
}
