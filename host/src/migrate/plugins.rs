//! Haraka's plugins and what each becomes in Waraka: one table, from
//! Haraka's names (legacy ones too) to Waraka's plugins and the translation
//! of the plugin's settings.

use super::haraka::{HarakaDir, Ini};
use super::server::{plugin_timeout, seconds};
use super::target::Target;
use anyhow::Result;

/// What a Haraka plugin's settings become.
enum Settings {
    /// The plugin has no settings of its own (or Haraka's had none to carry).
    Nothing,
    /// Translated by this function.
    Carried(fn(&HarakaDir, &mut Target) -> Result<()>),
    /// Waraka's plugin has its own settings; Haraka's files (named here) do
    /// not map onto them and are left for the administrator.
    ByHand(&'static [&'static str]),
    /// Waraka does not need it: why.
    NotNeeded(&'static str),
    /// No counterpart in Waraka: what to do instead.
    Missing(&'static str),
}

/// One row of the table.
struct Counterpart {
    /// Haraka's names for the plugin, current and legacy.
    haraka: &'static [&'static str],
    /// Waraka's plugins, in chain order (none: the server does the job).
    waraka: &'static [&'static str],
    settings: Settings,
}

const fn row(haraka: &'static [&'static str], waraka: &'static [&'static str], settings: Settings) -> Counterpart {
    Counterpart {
        haraka,
        waraka,
        settings,
    }
}

/// Every Haraka plugin Waraka knows of.
const TABLE: &[Counterpart] = &[
    row(&["rcpt_to.in_host_list"], &["rcpt_to.in_host_list"], Settings::Nothing),
    row(
        &["mail_from.is_resolvable"],
        &["mail_from.is_resolvable"],
        Settings::Carried(is_resolvable),
    ),
    row(
        &["queue/smtp_forward"],
        &["queue/smtp_forward"],
        Settings::Carried(smtp_forward),
    ),
    row(
        &["queue/smtp_proxy"],
        &["queue/smtp_proxy"],
        Settings::Carried(smtp_proxy),
    ),
    row(&["queue/lmtp"], &["queue/lmtp"], Settings::Carried(lmtp)),
    row(&["queue/discard"], &["queue/discard"], Settings::Nothing),
    row(
        &["queue/quarantine"],
        &["queue/quarantine"],
        Settings::Carried(quarantine),
    ),
    row(&["auth/flat_file"], &["auth/flat_file"], Settings::Carried(flat_file)),
    row(&["auth/auth_proxy"], &["auth/proxy"], Settings::Carried(auth_proxy)),
    row(
        &["auth-ldap", "auth/auth_ldap"],
        &["auth/ldap"],
        Settings::ByHand(&["auth_ldap.ini"]),
    ),
    row(
        &["auth-imap", "auth/auth_imap"],
        &["auth/imap"],
        Settings::ByHand(&["auth_imap.ini"]),
    ),
    row(&["dovecot"], &["auth/dovecot"], Settings::ByHand(&["dovecot.ini"])),
    row(&["tls"], &[], Settings::Carried(tls)),
    row(&["early_talker"], &[], Settings::Carried(early_talker)),
    row(
        &["dns-list", "dnsbl", "dnswl", "backscatterer"],
        &["dns-list"],
        Settings::Carried(dns_list),
    ),
    row(
        &["relay", "relay_acl", "relay_all", "relay_force_routing"],
        &["relay"],
        Settings::Carried(relay),
    ),
    row(&["greylist"], &["greylist"], Settings::Carried(greylist)),
    row(&["spamassassin"], &["spamassassin"], Settings::Carried(spamassassin)),
    row(&["rspamd"], &["rspamd"], Settings::Carried(rspamd)),
    row(&["clamd"], &["clamd"], Settings::Carried(clamd)),
    row(
        &["dkim", "dkim_sign", "dkim_verify"],
        &["dkim_sign", "auth-results"],
        Settings::Carried(dkim),
    ),
    row(
        &[
            "access",
            "connect.rdns_access",
            "mail_from.access",
            "rcpt_to.access",
            "rdns.regexp",
            "mail_from.blocklist",
        ],
        &["access"],
        Settings::ByHand(&[
            "access.ini",
            "connect.rdns_access.ini",
            "mail_from.access.ini",
            "rcpt_to.access.ini",
        ]),
    ),
    row(
        &[
            "limit",
            "max_unrecognized_commands",
            "rate_limit",
            "rcpt_to.max_count",
            "connect.max_concurrency",
        ],
        &["limit"],
        Settings::ByHand(&["limit.ini", "rate_limit.ini", "max_unrecognized_commands"]),
    ),
    row(
        &["helo.checks"],
        &["helo.checks"],
        Settings::ByHand(&["helo.checks.ini"]),
    ),
    row(
        &[
            "headers",
            "data.headers",
            "data.rfc5322_header_checks",
            "data.noreceived",
        ],
        &["headers"],
        Settings::ByHand(&["headers.ini", "data.headers.ini"]),
    ),
    row(
        &["fcrdns", "connect.fcrdns"],
        &["fcrdns"],
        Settings::ByHand(&["fcrdns.ini"]),
    ),
    row(&["karma"], &["karma"], Settings::ByHand(&["karma.ini"])),
    row(&["spf"], &["spf"], Settings::ByHand(&["spf.ini"])),
    row(&["dmarc"], &["dmarc"], Settings::ByHand(&["dmarc.ini"])),
    row(&["uribl", "data.uribl"], &["uribl"], Settings::ByHand(&["uribl.ini"])),
    row(&["asn", "connect.asn"], &["asn"], Settings::ByHand(&["asn.ini"])),
    row(
        &["geoip", "connect.geoip"],
        &["geoip"],
        Settings::ByHand(&["geoip.ini"]),
    ),
    row(
        &["bounce"],
        &["bounce"],
        Settings::ByHand(&["bounce.ini", "bounce_bad_rcpt"]),
    ),
    row(&["attachment"], &["attachment"], Settings::ByHand(&["attachment.ini"])),
    row(&["aliases"], &["aliases"], Settings::ByHand(&["aliases"])),
    row(
        &["known-senders"],
        &["known-senders"],
        Settings::ByHand(&["known-senders.ini"]),
    ),
    row(
        &["data.signatures"],
        &["data.signatures"],
        Settings::ByHand(&["data.signatures"]),
    ),
    row(&["delay_deny"], &["delay_deny"], Settings::ByHand(&["delay_deny.ini"])),
    row(
        &["prevent_credential_leaks"],
        &["prevent_credential_leaks"],
        Settings::Nothing,
    ),
    row(
        &["record_envelope_addresses"],
        &["record_envelope_addresses"],
        Settings::Nothing,
    ),
    row(&["srs"], &["srs"], Settings::ByHand(&["srs.ini"])),
    row(&["batv"], &["batv"], Settings::ByHand(&["batv.ini"])),
    row(&["milter"], &["milter"], Settings::ByHand(&["milter.ini"])),
    row(
        &["ldap", "rcpt_to.ldap"],
        &["rcpt_to.ldap"],
        Settings::ByHand(&["ldap.ini", "rcpt_to.ldap.ini"]),
    ),
    row(
        &["queue/deliver"],
        &[],
        Settings::NotNeeded("relayed mail goes through Waraka's own outbound queue"),
    ),
    row(
        &["tarpit"],
        &[],
        Settings::NotNeeded("the server waits the seconds of the connection note tarpit itself"),
    ),
    row(
        &["toobusy"],
        &[],
        Settings::NotNeeded("Waraka limits connections itself ([smtp] max_connections)"),
    ),
    row(
        &["process_title"],
        &[],
        Settings::NotNeeded("`waraka status` and the metrics show the counters"),
    ),
    row(
        &["syslog", "log.syslog"],
        &[],
        Settings::NotNeeded("Waraka logs to standard error, which systemd's journal keeps"),
    ),
    row(
        &["status"],
        &[],
        Settings::NotNeeded("`waraka queue` and `waraka status` ask the running server"),
    ),
    row(&["reseed_rng"], &[], Settings::NotNeeded("Waraka is one process")),
    row(
        &["watch", "profile"],
        &[],
        Settings::NotNeeded("the metrics endpoint ([metrics]) shows what the server does"),
    ),
    row(
        &["redis"],
        &[],
        Settings::NotNeeded("plugins share Redis through [kv.NAME] backend = \"redis\" stores"),
    ),
    row(
        &["xclient"],
        &[],
        Settings::Missing("Waraka speaks XCLIENT itself: list the front ends as xclient_from of a [[listener]]"),
    ),
    row(
        &["auth/auth_vpopmaild", "auth/auth_bridge"],
        &[],
        Settings::Missing("no such plugin; auth/proxy checks passwords on another SMTP server"),
    ),
    row(
        &["queue/smtp_bridge", "queue/qmail-queue"],
        &[],
        Settings::Missing("no such plugin; queue/smtp_forward and queue/lmtp deliver to another server"),
    ),
    row(
        &[
            "block_me",
            "dcc",
            "messagesniffer",
            "qmail-deliverable",
            "avg",
            "esets",
            "p0f",
        ],
        &[],
        Settings::Missing("no such plugin yet"),
    ),
];

fn counterpart(name: &str) -> Option<&'static Counterpart> {
    TABLE.iter().find(|c| c.haraka.contains(&name))
}

/// Haraka's plugin list (`config/plugins`), names as Haraka takes them.
pub fn haraka_plugins(h: &HarakaDir) -> Vec<String> {
    h.list("plugins")
        .into_iter()
        .map(|name| name.strip_prefix("haraka-plugin-").unwrap_or(&name).to_string())
        .collect()
}

/// The Waraka chain for Haraka's plugin list, in Haraka's order.
pub fn chain(plugins: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    for waraka in plugins.iter().filter_map(|p| counterpart(p)).flat_map(|c| c.waraka) {
        if !chain.iter().any(|c| c == waraka) {
            chain.push(waraka.to_string());
        }
    }
    chain
}

/// Carries each plugin's settings (and its `NAME.timeout`), and reports
/// what each plugin became.
pub fn carry(h: &HarakaDir, t: &mut Target, plugins: &[String]) -> Result<()> {
    for name in plugins {
        let Some(counterpart) = counterpart(name) else {
            unknown(h, t, name);
            continue;
        };
        let becomes = if counterpart.waraka.is_empty() {
            "the server".to_string()
        } else {
            counterpart.waraka.join(" and ")
        };
        match &counterpart.settings {
            Settings::Nothing => t.report.carried.push(format!("plugin {name}: {becomes}")),
            Settings::Carried(translate) => {
                t.report.carried.push(format!("plugin {name}: {becomes}"));
                translate(h, t)?;
            }
            Settings::ByHand(files) => {
                let present: Vec<&str> = files.iter().copied().filter(|f| h.path(f).exists()).collect();
                if present.is_empty() {
                    t.report.carried.push(format!(
                        "plugin {name}: {becomes} (with Waraka's defaults; Haraka had no settings of its own for it)"
                    ));
                } else {
                    t.report.review.push(format!(
                        "plugin {name}: {becomes}, with Waraka's defaults: carry the settings of Haraka's {} \
                         by hand (docs/plugins/{}.md)",
                        present
                            .iter()
                            .map(|f| format!("config/{f}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        counterpart.waraka[0]
                    ));
                }
            }
            Settings::NotNeeded(why) => t.report.not_needed.push(format!("plugin {name}: {why}")),
            Settings::Missing(instead) => t.report.review.push(format!("plugin {name}: {instead}")),
        }
        if !counterpart.waraka.is_empty()
            && let Some(timeout) = h.value(&format!("{name}.timeout")).and_then(|v| v.parse().ok())
        {
            plugin_timeout(t, counterpart.waraka, timeout, &format!("config/{name}.timeout"));
        }
    }
    Ok(())
}

/// A plugin the table does not know: the administrator's own, or a package.
fn unknown(h: &HarakaDir, t: &mut Target, name: &str) {
    let own = [format!("plugins/{name}.js"), format!("plugins/{name}/package.json")]
        .into_iter()
        .find(|p| h.install_path(p).exists());
    let line = match own {
        Some(path) => format!(
            "plugin {name} ({path}): a plugin of your own; write it again as a WebAssembly component \
             (`waraka plugin new {name} --lang js` makes a skeleton; docs/plugins-in-js.md)"
        ),
        None => format!(
            "plugin {name}: not one Waraka knows (an npm package?); a WebAssembly component can do its job \
             (docs/plugins-in-js.md)"
        ),
    };
    t.report.review.push(line);
}

/// Haraka's `enable_tls` as Waraka's `tls` setting of a next hop.
fn next_hop_tls(ini: &Ini, section: &str) -> Option<&'static str> {
    ini.bool(section, "enable_tls")
        .map(|on| if on { "opportunistic" } else { "never" })
}

/// Haraka's next-hop settings of `section` (host, port, path, TLS, AUTH) as
/// Waraka's keys.
fn next_hop(ini: &Ini, section: &str) -> Vec<(&'static str, String)> {
    let mut keys = Vec::new();
    for key in ["host", "port", "path", "auth_user", "auth_pass"] {
        if let Some(value) = ini.get(section, key) {
            keys.push((key, value));
        }
    }
    if let Some(tls) = next_hop_tls(ini, section) {
        keys.push(("tls", tls.to_string()));
    }
    ini.get(section, "auth_type");
    keys
}

/// Writes the next hops of Haraka's `from` (its top and its per-domain
/// sections) into Waraka's `to`; returns the default hop's keys.
fn next_hops(h: &HarakaDir, t: &mut Target, from: &str, to: &str) -> Vec<(&'static str, String)> {
    if !h.path(from).is_file() {
        t.report.review.push(format!(
            "no config/{from} (Haraka's own defaults were in use): set the next hop in config/{to}"
        ));
        return Vec::new();
    }
    let ini = h.ini(from);
    let top = next_hop(&ini, "main");
    for (key, value) in &top {
        t.setting(to, key, value);
    }
    let mut domains = Vec::new();
    for section in ini.sections().into_iter().filter(|s| s != "tls") {
        let keys = next_hop(&ini, &section);
        if !keys.is_empty() {
            t.section(to, &section, &keys);
            domains.push(section);
        }
    }
    let shown: Vec<String> = top
        .iter()
        .filter(|(k, _)| *k != "auth_pass")
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    t.report.carried.push(format!(
        "config/{from}: config/{to} ({}{})",
        shown.join(", "),
        if domains.is_empty() {
            String::new()
        } else {
            format!("; sections {}", domains.join(", "))
        }
    ));
    top
}

fn smtp_forward(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let top = next_hops(h, t, "smtp_forward.ini", "queue/smtp_forward.ini");
    let ini = h.ini("smtp_forward.ini");
    if ini.bool("main", "enable_outbound").unwrap_or(true)
        && let Some((_, host)) = top.iter().find(|(k, _)| *k == "host")
    {
        let value = |key: &str| top.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
        let port = value("port").and_then(|p| p.parse::<i64>().ok()).unwrap_or(25);
        t.set(&["outbound", "smarthost"], "host", host.as_str());
        t.set(&["outbound", "smarthost"], "port", port);
        if let (Some(user), Some(password)) = (value("auth_user"), value("auth_pass")) {
            t.set(&["outbound", "smarthost"], "user", user.as_str());
            t.set(&["outbound", "smarthost"], "password", password.as_str());
        }
        t.report.carried.push(format!(
            "smtp_forward.ini enable_outbound (Haraka's default): users' mail leaves through \
             [outbound.smarthost] {host}:{port}"
        ));
    }
    if ini.get("main", "domain_selector").as_deref() == Some("mail_from") {
        t.report.review.push(
            "smtp_forward.ini domain_selector = mail_from: Waraka routes by recipient; next hops by sender \
             are [outbound.senders] in waraka.toml"
                .into(),
        );
    }
    if ini.bool("main", "check_recipient") == Some(true) {
        t.report.review.push(
            "smtp_forward.ini check_recipient: list the domains of its sections in config/host_list \
             (rcpt_to.in_host_list), or set verify_recipients = true in config/queue/smtp_forward.ini"
                .into(),
        );
    }
    Ok(())
}

fn smtp_proxy(h: &HarakaDir, t: &mut Target) -> Result<()> {
    next_hops(h, t, "smtp_proxy.ini", "queue/smtp_proxy.ini");
    t.setting("queue/smtp_proxy.ini", "relaying", "true");
    t.report
        .carried
        .push("queue/smtp_proxy: relaying = true (users' mail is played at the next hop too, as Haraka did)".into());
    Ok(())
}

fn lmtp(h: &HarakaDir, t: &mut Target) -> Result<()> {
    next_hops(h, t, "lmtp.ini", "queue/lmtp.ini");
    let ini = h.ini("lmtp.ini");
    let mut sections = vec!["main".to_string()];
    sections.extend(ini.sections());
    for path in sections.iter().filter_map(|s| ini.get(s, "path")) {
        t.grant("queue/lmtp", &format!("socket:{path}"));
        t.report
            .carried
            .push(format!("lmtp.ini path {path}: grant \"socket:{path}\" for queue/lmtp"));
    }
    t.report.carried.push(
        "queue/lmtp asks the server at RCPT whether each mailbox exists (verify_recipients = true; Haraka \
         bounced unknown ones later)"
            .into(),
    );
    Ok(())
}

fn quarantine(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let path = h
        .ini("quarantine.ini")
        .get("main", "quarantine_path")
        .unwrap_or_else(|| "/var/spool/haraka/quarantine".into());
    t.set(&["dirs"], "quarantine", path.as_str());
    t.report
        .carried
        .push(format!("quarantine.ini quarantine_path: [dirs] quarantine = {path:?}"));
    Ok(())
}

fn flat_file(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("auth_flat_file.ini");
    let users = ini.section("users");
    let mut lines = Vec::new();
    for user in &users {
        lines.push((user.key.as_str(), crate::password::hash(&user.value)?));
    }
    t.section("auth/flat_file.ini", "users", &lines);
    t.report.carried.push(format!(
        "auth_flat_file.ini [users]: config/auth/flat_file.ini, {} users, their passwords hashed with Argon2id",
        users.len()
    ));
    let methods = ini.array("core", "methods");
    if !methods.is_empty() {
        t.report.carried.push(format!(
            "auth_flat_file.ini methods ({}): Waraka offers PLAIN and LOGIN (over TLS); CRAM-MD5 needs \
             passwords in the clear and is not offered",
            methods.join(", ")
        ));
    }
    Ok(())
}

fn auth_proxy(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("auth_proxy.ini");
    for entry in ini.section("domains") {
        let hosts: Vec<&str> = entry.value.split([' ', ',', ';']).filter(|s| !s.is_empty()).collect();
        let Some(first) = hosts.first() else { continue };
        let (host, port) = first.rsplit_once(':').unwrap_or((first, "25"));
        t.section(
            "auth/proxy.ini",
            &entry.key,
            &[("host", host.to_string()), ("port", port.to_string())],
        );
        t.report.carried.push(format!(
            "auth_proxy.ini {}: config/auth/proxy.ini [{}] {host}:{port}",
            entry.key, entry.key
        ));
        if hosts.len() > 1 {
            t.report.review.push(format!(
                "auth_proxy.ini {}: Waraka asks one server per domain ({host}); the others are not carried",
                entry.key
            ));
        }
    }
    t.report.review.push(
        "auth/proxy: STARTTLS is required before a password is passed on (Haraka sent it in the clear to a \
         server without STARTTLS); tls = opportunistic in config/auth/proxy.ini allows that"
            .into(),
    );
    Ok(())
}

fn tls(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("tls.ini");
    let key = ini.get("main", "key").unwrap_or_else(|| "tls_key.pem".into());
    let cert = ini.get("main", "cert").unwrap_or_else(|| "tls_cert.pem".into());
    let (key_file, cert_file) = (h.path(&key), h.path(&cert));
    if key_file.is_file() && cert_file.is_file() {
        t.copy(&key_file, "config/tls/key.pem")?;
        t.copy(&cert_file, "config/tls/cert.pem")?;
        t.set(&["tls"], "cert", "config/tls/cert.pem");
        t.set(&["tls"], "key", "config/tls/key.pem");
        t.report.carried.push(format!(
            "config/{cert}, config/{key}: [tls] cert and key (copied to config/tls/)"
        ));
    } else {
        t.report.review.push(format!(
            "tls: no config/{cert} and config/{key}; set [tls] cert and key (or [acme]) in waraka.toml"
        ));
    }
    if h.path("tls").is_dir() {
        t.report
            .review
            .push("config/tls/ (certificates by name): add each as [[tls.sni]] cert and key in waraka.toml".into());
    }
    let mut no_tls: Vec<String> = ini.section("no_tls_hosts").into_iter().map(|e| e.key).collect();
    no_tls.extend(ini.array("main", "no_tls_hosts"));
    if !no_tls.is_empty() {
        let hosts: toml_edit::Array = no_tls.iter().map(String::as_str).collect();
        t.set(&["tls"], "no_tls_hosts", hosts);
        t.report.carried.push(format!(
            "tls.ini no_tls_hosts: [tls] no_tls_hosts ({})",
            no_tls.join(", ")
        ));
    }
    if ini.bool("main", "requestCert") == Some(true) {
        t.set(&["tls"], "ask_client_cert", true);
        t.report
            .carried
            .push("tls.ini requestCert: [tls] ask_client_cert = true".into());
    }
    Ok(())
}

fn early_talker(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("early_talker.ini");
    let pause = ini.number("main", "pause").unwrap_or(1);
    t.set(&["smtp"], "banner_delay", seconds(pause));
    t.set(&["smtp"], "early_talker", "reject");
    t.report.carried.push(format!(
        "early_talker.ini pause: [smtp] banner_delay = \"{pause}s\", early_talker = \"reject\""
    ));
    if !ini.section("ip_whitelist").is_empty() {
        t.report
            .review
            .push("early_talker.ini [ip_whitelist]: Waraka holds the greeting for every client".into());
    }
    Ok(())
}

fn is_resolvable(h: &HarakaDir, t: &mut Target) -> Result<()> {
    if let Some(no_mx) = h.ini("mail_from.is_resolvable.ini").get("reject", "no_mx") {
        let reject = !matches!(no_mx.to_ascii_lowercase().as_str(), "false" | "0" | "no" | "off");
        t.setting("mail_from.is_resolvable.ini", "reject", &reject.to_string());
        t.report.carried.push(format!(
            "mail_from.is_resolvable.ini [reject] no_mx: config/mail_from.is_resolvable.ini reject = {reject}"
        ));
    }
    Ok(())
}

fn dns_list(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("dns-list.ini");
    let mut zones = ini.array("main", "zones");
    zones.extend(h.list("dnsbl.zones"));
    zones.extend(h.ini("dnsbl.ini").array("main", "zones"));
    let mut allow = h.list("dnswl.zones");
    let mut block = Vec::new();
    for zone in zones {
        let is_allow = ini.get(&zone, "type").is_some_and(|t| t == "allow" || t == "white");
        let list = if is_allow { &mut allow } else { &mut block };
        if !list.contains(&zone) {
            list.push(zone);
        }
    }
    t.setting("dns-list.ini", "zones", &block.join(", "));
    t.setting("dns-list.ini", "allow_zones", &allow.join(", "));
    t.report.carried.push(format!(
        "dns-list zones: config/dns-list.ini zones = {}; allow_zones = {}",
        block.join(", "),
        allow.join(", ")
    ));
    if let Some(reject) = ini.bool("main", "reject") {
        t.setting("dns-list.ini", "reject", &reject.to_string());
    }
    Ok(())
}

fn relay(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("relay.ini");
    let acl = h.list("relay_acl_allow");
    if ini.bool("relay", "acl") != Some(false) && !acl.is_empty() {
        t.write_config("relay.acl_allow", acl.join("\n") + "\n");
        t.report.carried.push(format!(
            "config/relay_acl_allow: config/relay.acl_allow ({} networks)",
            acl.len()
        ));
    }
    if ini.bool("relay", "force_routing") == Some(true) || h.path("relay_dest_domains.ini").exists() {
        t.report.review.push(
            "relay_dest_domains.ini: next hops per domain are [outbound.routes] in waraka.toml; accepted \
             domains are config/host_list"
                .into(),
        );
    }
    if ini.bool("relay", "all") == Some(true) {
        t.report.review.push(
            "relay.ini all = true (every client may relay): Waraka lets only the relay ACL and AUTH relay; \
             add the networks to config/relay.acl_allow"
                .into(),
        );
    }
    ini.get("relay", "dest_domains");
    Ok(())
}

fn greylist(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("greylist.ini");
    for (key, setting) in [
        ("black", "black_timeout"),
        ("grey", "grey_timeout"),
        ("white", "white_timeout"),
    ] {
        if let Some(secs) = ini.number("period", key) {
            t.setting("greylist.ini", setting, &seconds(secs));
            t.report.carried.push(format!(
                "greylist.ini [period] {key}: config/greylist.ini {setting} = {secs}s"
            ));
        }
    }
    let allowed: Vec<String> = ini.section("ip_whitelist").into_iter().map(|e| e.key).collect();
    if !allowed.is_empty() {
        t.setting("greylist.ini", "ip_whitelist", &allowed.join(", "));
        t.report.carried.push(format!(
            "greylist.ini [ip_whitelist]: ip_whitelist = {}",
            allowed.join(", ")
        ));
    }
    if ini.get("redis", "host").is_some() {
        t.report.review.push(
            "greylist.ini [redis]: triplets are kept in the [kv] store named by config/greylist.ini store; \
             add a [kv.NAME] backend = \"redis\" store to share them"
                .into(),
        );
    }
    Ok(())
}

/// Copies the keys of `ini`'s top that Waraka's `file` names alike.
fn same_keys(ini: &Ini, t: &mut Target, from: &str, file: &str, keys: &[&str]) {
    for key in keys {
        if let Some(value) = ini.get("main", key) {
            t.setting(file, key, &value);
            t.report
                .carried
                .push(format!("{from} {key}: config/{file} {key} = {value}"));
        }
    }
}

fn spamassassin(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("spamassassin.ini");
    let spamd = ini
        .get("main", "spamd_socket")
        .unwrap_or_else(|| "127.0.0.1:783".into());
    t.set(&["spamfilter"], "spamd", spamd.as_str());
    t.report
        .carried
        .push(format!("spamassassin.ini spamd_socket: [spamfilter] spamd = {spamd:?}"));
    same_keys(
        &ini,
        t,
        "spamassassin.ini",
        "spamassassin.ini",
        &[
            "reject_threshold",
            "munge_subject_threshold",
            "subject_prefix",
            "spamd_user",
            "max_size",
        ],
    );
    Ok(())
}

fn rspamd(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("rspamd.ini");
    let host = ini.get("main", "host").unwrap_or_else(|| "localhost".into());
    let port = ini.get("main", "port").unwrap_or_else(|| "11333".into());
    let address = format!("{host}:{port}");
    t.set(&["spamfilter"], "rspamd", address.as_str());
    t.report
        .carried
        .push(format!("rspamd.ini host, port: [spamfilter] rspamd = {address:?}"));
    same_keys(&ini, t, "rspamd.ini", "rspamd.ini", &["max_size"]);
    Ok(())
}

fn clamd(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("clamd.ini");
    let socket = ini
        .get("main", "clamd_socket")
        .unwrap_or_else(|| "localhost:3310".into());
    let first = socket
        .split([',', ';', ' '])
        .find(|s| !s.is_empty())
        .unwrap_or("localhost:3310");
    t.set(&["antivirus"], "clamd", first);
    t.report
        .carried
        .push(format!("clamd.ini clamd_socket: [antivirus] clamd = {first:?}"));
    same_keys(&ini, t, "clamd.ini", "clamd.ini", &["max_size"]);
    if let Some(virus) = ini.bool("reject", "virus") {
        t.setting("clamd.ini", "reject_virus", &virus.to_string());
    }
    if let Some(error) = ini.bool("reject", "error") {
        t.setting("clamd.ini", "on_error", if error { "tempfail" } else { "continue" });
    }
    Ok(())
}

fn dkim(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let mut domains = Vec::new();
    if let Ok(entries) = std::fs::read_dir(h.path("dkim")) {
        for entry in entries.flatten() {
            let dir = entry.path();
            let domain = entry.file_name().to_string_lossy().to_string();
            if dir.join("private").is_file() && dir.join("selector").is_file() {
                t.copy(&dir.join("private"), &format!("dkim/{domain}/private"))?;
                t.copy(&dir.join("selector"), &format!("dkim/{domain}/selector"))?;
                domains.push(domain);
            }
        }
    }
    let ini = h.ini("dkim.ini");
    let single = h.path("dkim.private.key");
    if let (Some(domain), Some(selector), true) =
        (ini.get("sign", "domain"), ini.get("sign", "selector"), single.is_file())
        && !domains.contains(&domain)
    {
        t.copy(&single, &format!("dkim/{domain}/private"))?;
        std::fs::write(t.path(&format!("dkim/{domain}/selector")), format!("{selector}\n"))?;
        domains.push(domain);
    }
    domains.sort();
    if !domains.is_empty() {
        t.report.carried.push(format!(
            "DKIM keys of {}: dkim/DOMAIN/private and selector",
            domains.join(", ")
        ));
    }
    if ini.bool("sign", "enabled") == Some(false) {
        t.report.review.push(
            "dkim.ini [sign] enabled = false: dkim_sign signs relayed mail of every domain that has a key in \
             dkim/; take it out of the chain to send unsigned"
                .into(),
        );
    }
    Ok(())
}
