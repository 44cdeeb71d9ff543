//! The translations of Haraka plugins' settings into Waraka's config files
//! and `waraka.toml`, one function per plugin (the table in `plugins` says
//! which), each reporting what it carried.

use super::haraka::{HarakaDir, Ini};
use super::server::seconds;
use super::target::Target;
use anyhow::Result;

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

/// `queue/smtp_forward`: its next hops, and with `enable_outbound` the smarthost for users' mail.
pub fn smtp_forward(h: &HarakaDir, t: &mut Target) -> Result<()> {
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

/// `queue/smtp_proxy`: its next hop, playing users' mail there too as Haraka does.
pub fn smtp_proxy(h: &HarakaDir, t: &mut Target) -> Result<()> {
    next_hops(h, t, "smtp_proxy.ini", "queue/smtp_proxy.ini");
    t.setting("queue/smtp_proxy.ini", "relaying", "true");
    t.report
        .carried
        .push("queue/smtp_proxy: relaying = true (users' mail is played at the next hop too, as Haraka did)".into());
    Ok(())
}

/// `queue/lmtp`: its servers, with a `socket:` grant for each socket path.
pub fn lmtp(h: &HarakaDir, t: &mut Target) -> Result<()> {
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

/// `queue/quarantine`: its directory.
pub fn quarantine(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let path = h
        .ini("quarantine.ini")
        .get("main", "quarantine_path")
        .unwrap_or_else(|| "/var/spool/haraka/quarantine".into());
    t.carry_toml("quarantine.ini quarantine_path", &["dirs"], "quarantine", path);
    Ok(())
}

/// `auth/flat_file`: its users, their passwords hashed.
pub fn flat_file(h: &HarakaDir, t: &mut Target) -> Result<()> {
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
    if ini.bool("core", "constrain_sender") != Some(false) && users.iter().any(|u| u.key.contains('@')) {
        t.report.review.push(
            "auth_flat_file.ini constrain_sender (Haraka's default): users may send only from their own \
             domain; add mail_from.auth_match with a line `user: @domain` per user in \
             config/mail_from.auth_match.map to keep that"
                .into(),
        );
    }
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

/// `auth/auth_proxy`: the server of each domain.
pub fn auth_proxy(h: &HarakaDir, t: &mut Target) -> Result<()> {
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

/// The key and certificate files `tls.ini` names (Haraka's defaults:
/// `tls_key.pem`, `tls_cert.pem`), as names in Haraka's `config/`.
fn tls_files(h: &HarakaDir) -> (String, String) {
    let ini = h.ini("tls.ini");
    let key = ini.get("main", "key").unwrap_or_else(|| "tls_key.pem".into());
    let cert = ini.get("main", "cert").unwrap_or_else(|| "tls_cert.pem".into());
    (key, cert)
}

/// Whether Haraka's TLS has a certificate to carry: the files `tls.ini`
/// names, or one of `config/tls/` (without one, Waraka's `[tls]`, its
/// STARTTLS and its implicit-TLS listener cannot be).
pub fn has_certificate(h: &HarakaDir) -> bool {
    let (key, cert) = tls_files(h);
    (h.path(&key).is_file() && h.path(&cert).is_file()) || tls_dir_files(h).iter().any(|(_, pem)| pem.is_some())
}

/// `tls`: the certificate and key, `no_tls_hosts`, `requestCert`.
pub fn tls(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("tls.ini");
    let (key, cert) = tls_files(h);
    let (key_file, cert_file) = (h.path(&key), h.path(&cert));
    let named = key_file.is_file() && cert_file.is_file();
    if named {
        t.copy(&key_file, "config/tls/key.pem")?;
        t.copy(&cert_file, "config/tls/cert.pem")?;
        t.set(&["tls"], "cert", "config/tls/cert.pem");
        t.set(&["tls"], "key", "config/tls/key.pem");
        t.report.carried.push(format!(
            "config/{cert}, config/{key}: [tls] cert and key (copied to config/tls/)"
        ));
    }
    let has_certificate = certificates_by_name(h, t, named)?;
    let mut no_tls: Vec<String> = ini.section("no_tls_hosts").into_iter().map(|e| e.key).collect();
    no_tls.extend(ini.array("main", "no_tls_hosts"));
    let ask_client_cert = ini.bool("main", "requestCert") == Some(true);
    if !has_certificate {
        t.report.review.push(format!(
            "tls: no config/{cert} and config/{key}, nor config/tls/: no STARTTLS until [tls] has a \
             certificate (cert and key, or [acme]) in waraka.toml{}",
            if no_tls.is_empty() && !ask_client_cert {
                String::new()
            } else {
                "; then carry tls.ini's no_tls_hosts and requestCert by hand".to_string()
            }
        ));
        return Ok(());
    }
    if !no_tls.is_empty() {
        let hosts: toml_edit::Array = no_tls.iter().map(String::as_str).collect();
        t.carry_toml("tls.ini no_tls_hosts", &["tls"], "no_tls_hosts", hosts);
    }
    if ask_client_cert {
        t.carry_toml("tls.ini requestCert", &["tls"], "ask_client_cert", true);
    }
    Ok(())
}

/// Haraka's `config/tls/` files (each a private key and its certificate
/// chain in one PEM file, chosen by the names the certificate is for) as
/// `[[tls.sni]]` pairs; the first is `[tls]`'s own when `has_default` is
/// false (Haraka named no `key` and `cert`).
/// Returns whether `[tls]` has its own certificate then.
fn certificates_by_name(h: &HarakaDir, t: &mut Target, mut has_default: bool) -> Result<bool> {
    for (file, pem) in tls_dir_files(h) {
        let Some((name, key, chain)) = pem else {
            t.report.review.push(format!(
                "config/tls/{}: not a private key and a certificate in one PEM file; not carried",
                file.file_name().unwrap_or_default().to_string_lossy()
            ));
            continue;
        };
        let (key_path, cert_path) = (
            format!("config/tls/sni/{name}.key.pem"),
            format!("config/tls/sni/{name}.cert.pem"),
        );
        t.write_private(&key_path, key.as_bytes())?;
        t.write_private(&cert_path, chain.as_bytes())?;
        if has_default {
            let mut pair = toml_edit::Table::new();
            pair["cert"] = toml_edit::value(cert_path.as_str());
            pair["key"] = toml_edit::value(key_path.as_str());
            t.push(&["tls"], "sni", pair);
            t.report
                .carried
                .push(format!("config/tls/{name}: [[tls.sni]] {cert_path} and {key_path}"));
        } else {
            t.carry_toml(&format!("config/tls/{name}"), &["tls"], "cert", cert_path.as_str());
            t.carry_toml(&format!("config/tls/{name}"), &["tls"], "key", key_path.as_str());
            has_default = true;
        }
    }
    Ok(has_default)
}

/// A file of Haraka's `config/tls/`, with its name (the file's stem), key
/// and chain when it holds both.
type TlsFile = (std::path::PathBuf, Option<(String, String, String)>);

/// Every file of Haraka's `config/tls/`, in name order.
fn tls_dir_files(h: &HarakaDir) -> Vec<TlsFile> {
    let Ok(entries) = std::fs::read_dir(h.path("tls")) else {
        return Vec::new();
    };
    let mut files: Vec<std::path::PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let name = file.file_stem().unwrap_or_default().to_string_lossy().to_string();
            let (key, chain) = split_pem(&std::fs::read_to_string(&file).unwrap_or_default());
            let pem = (!key.is_empty() && !chain.is_empty()).then_some((name, key, chain));
            (file, pem)
        })
        .collect()
}

/// The private key blocks and the certificate blocks of a PEM text, each
/// as PEM text.
fn split_pem(text: &str) -> (String, String) {
    let (mut key, mut chain) = (String::new(), String::new());
    let mut block: Option<(bool, String)> = None;
    for line in text.lines() {
        if let Some(label) = line.strip_prefix("-----BEGIN ") {
            block = Some((label.contains("PRIVATE KEY"), String::new()));
        }
        if let Some((_, lines)) = block.as_mut() {
            lines.push_str(line);
            lines.push('\n');
        }
        if line.starts_with("-----END ")
            && let Some((is_key, lines)) = block.take()
        {
            if is_key { &mut key } else { &mut chain }.push_str(&lines);
        }
    }
    (key, chain)
}

/// `early_talker`: the greeting's delay.
pub fn early_talker(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("early_talker.ini");
    let pause = ini.number("main", "pause").unwrap_or(1);
    t.carry_toml("early_talker.ini pause", &["smtp"], "banner_delay", seconds(pause));
    t.carry_toml("early_talker", &["smtp"], "early_talker", "reject");
    if !ini.section("ip_whitelist").is_empty() {
        t.report
            .review
            .push("early_talker.ini [ip_whitelist]: Waraka holds the greeting for every client".into());
    }
    Ok(())
}

/// `mail_from.is_resolvable`: whether a sender domain without MX is refused.
pub fn is_resolvable(h: &HarakaDir, t: &mut Target) -> Result<()> {
    if let Some(no_mx) = h.ini("mail_from.is_resolvable.ini").get("reject", "no_mx") {
        let reject = !matches!(no_mx.to_ascii_lowercase().as_str(), "false" | "0" | "no" | "off");
        t.carry_setting(
            "mail_from.is_resolvable.ini [reject] no_mx",
            "mail_from.is_resolvable.ini",
            "reject",
            &reject.to_string(),
        );
    }
    Ok(())
}

/// `dns-list` (and `dnsbl`, `dnswl`): block and allow zones.
pub fn dns_list(h: &HarakaDir, t: &mut Target) -> Result<()> {
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
    t.carry_setting("dns-list block zones", "dns-list.ini", "zones", &block.join(", "));
    t.carry_setting("dns-list allow zones", "dns-list.ini", "allow_zones", &allow.join(", "));
    if let Some(reject) = ini.bool("main", "reject") {
        t.carry_setting("dns-list.ini reject", "dns-list.ini", "reject", &reject.to_string());
    }
    Ok(())
}

/// `relay`: the relay ACL.
pub fn relay(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("relay.ini");
    if ini.bool("relay", "acl") != Some(false) {
        same_list(h, t, "relay_acl_allow", "relay.acl_allow");
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
    Ok(())
}

/// `greylist`: its periods and the addresses never greylisted.
pub fn greylist(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("greylist.ini");
    for (key, setting) in [
        ("black", "black_timeout"),
        ("grey", "grey_timeout"),
        ("white", "white_timeout"),
    ] {
        if let Some(secs) = ini.number("period", key) {
            t.carry_setting(
                &format!("greylist.ini [period] {key}"),
                "greylist.ini",
                setting,
                &seconds(secs),
            );
        }
    }
    let allowed: Vec<String> = ini.section("ip_whitelist").into_iter().map(|e| e.key).collect();
    if !allowed.is_empty() {
        t.carry_setting(
            "greylist.ini [ip_whitelist]",
            "greylist.ini",
            "ip_whitelist",
            &allowed.join(", "),
        );
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
            t.carry_setting(&format!("{from} {key}"), file, key, &value);
        }
    }
}

/// `spamassassin`: spamd's address and the thresholds.
pub fn spamassassin(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("spamassassin.ini");
    let spamd = ini
        .get("main", "spamd_socket")
        .unwrap_or_else(|| "127.0.0.1:783".into());
    t.carry_toml("spamassassin.ini spamd_socket", &["spamfilter"], "spamd", spamd);
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

/// `rspamd`: rspamd's address.
pub fn rspamd(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("rspamd.ini");
    let host = ini.get("main", "host").unwrap_or_else(|| "localhost".into());
    let port = ini.get("main", "port").unwrap_or_else(|| "11333".into());
    let address = format!("{host}:{port}");
    t.carry_toml("rspamd.ini host, port", &["spamfilter"], "rspamd", address);
    same_keys(&ini, t, "rspamd.ini", "rspamd.ini", &["max_size"]);
    Ok(())
}

/// `clamd`: clamd's address, size limit and what a virus or an error does.
pub fn clamd(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("clamd.ini");
    let socket = ini
        .get("main", "clamd_socket")
        .unwrap_or_else(|| "localhost:3310".into());
    let first = socket
        .split([',', ';', ' '])
        .find(|s| !s.is_empty())
        .unwrap_or("localhost:3310");
    t.carry_toml("clamd.ini clamd_socket", &["antivirus"], "clamd", first);
    same_keys(&ini, t, "clamd.ini", "clamd.ini", &["max_size"]);
    if let Some(virus) = ini.bool("reject", "virus") {
        t.carry_setting(
            "clamd.ini [reject] virus",
            "clamd.ini",
            "reject_virus",
            &virus.to_string(),
        );
    }
    if let Some(error) = ini.bool("reject", "error") {
        let on_error = if error { "tempfail" } else { "continue" };
        t.carry_setting("clamd.ini [reject] error", "clamd.ini", "on_error", on_error);
    }
    Ok(())
}

/// `dkim`: the signing keys of `config/dkim/DOMAIN/` (or `dkim.private.key`).
pub fn dkim(h: &HarakaDir, t: &mut Target) -> Result<()> {
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

/// Copies Haraka's list file `from` (comments and blank lines left out) to
/// Waraka's `to`, when Haraka has it.
pub fn same_list(h: &HarakaDir, t: &mut Target, from: &str, to: &str) {
    if h.path(from).is_file() {
        let lines = h.list(from);
        t.write_config(to, lines.join("\n") + "\n");
        t.report
            .carried
            .push(format!("config/{from}: config/{to} ({} lines)", lines.len()));
    }
}

/// `helo.checks`: which checks run and which refuse (Haraka refuses none by
/// default), whether private clients and relaying ones are checked, and the
/// patterns of `helo.checks.regexps`.
pub fn helo_checks(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("helo.checks.ini");
    let mut refused = Vec::new();
    for check in ["bare_ip", "literal_mismatch", "valid_hostname", "match_re", "dynamic"] {
        let on = ini
            .get("check", check)
            .is_none_or(|v| !matches!(v.to_ascii_lowercase().as_str(), "false" | "0" | "no" | "off"));
        t.setting("helo.checks.ini", check, &on.to_string());
        if on && ini.bool("reject", check) == Some(true) {
            refused.push(check);
        }
    }
    refused.push("forged_local");
    t.setting("helo.checks.ini", "reject", &refused.join(", "));
    t.report.carried.push(format!(
        "helo.checks.ini [check], [reject]: config/helo.checks.ini reject = {} (forged_local, this server's \
         name from another machine, has no Haraka counterpart)",
        refused.join(", ")
    ));
    if let Some(private) = ini.bool("skip", "private_ip") {
        t.carry_setting(
            "helo.checks.ini [skip] private_ip",
            "helo.checks.ini",
            "check_private",
            &(!private).to_string(),
        );
    }
    if let Some(relaying) = ini.bool("skip", "relaying") {
        t.carry_setting(
            "helo.checks.ini [skip] relaying",
            "helo.checks.ini",
            "skip_relaying",
            &relaying.to_string(),
        );
    }
    same_list(h, t, "helo.checks.regexps", "helo.checks.regexps");
    Ok(())
}

/// `fcrdns`: which findings refuse the client.
pub fn fcrdns(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("fcrdns.ini");
    for (haraka, waraka) in [
        ("no_rdns", "reject_no_rdns"),
        ("no_fcrdns", "reject_no_fcrdns"),
        ("generic_rdns", "reject_generic_rdns"),
    ] {
        if let Some(reject) = ini.bool("reject", haraka) {
            t.carry_setting(
                &format!("fcrdns.ini [reject] {haraka}"),
                "fcrdns.ini",
                waraka,
                &reject.to_string(),
            );
        }
    }
    Ok(())
}

/// `headers`: the required and singular fields and the date window (the
/// same keys).
pub fn headers(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("headers.ini");
    same_keys(
        &ini,
        t,
        "headers.ini",
        "headers.ini",
        &["required", "singular", "date_future_days", "date_past_days"],
    );
    Ok(())
}

/// `attachment`: the refused extensions, the archive depth, encrypted
/// archives, and the pattern files (the same names).
pub fn attachment(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("attachment.ini");
    same_keys(&ini, t, "attachment.ini", "attachment.ini", &["disallowed_extensions"]);
    if let Some(depth) = ini.number("archive", "max_depth") {
        t.carry_setting(
            "attachment.ini [archive] max_depth",
            "attachment.ini",
            "archive_max_depth",
            &depth.to_string(),
        );
    }
    if let Some(allow) = ini.bool("archive", "allow_encrypted") {
        let value = if allow { "accept" } else { "reject" };
        t.carry_setting(
            "attachment.ini [archive] allow_encrypted",
            "attachment.ini",
            "encrypted_archives",
            value,
        );
    }
    for list in [
        "attachment.filename.regex",
        "attachment.archive.filename.regex",
        "attachment.ctype.regex",
    ] {
        same_list(h, t, list, list);
    }
    Ok(())
}

/// `data.signatures`: the same list.
pub fn data_signatures(h: &HarakaDir, t: &mut Target) -> Result<()> {
    same_list(h, t, "data.signatures", "data.signatures");
    Ok(())
}

/// `bounce`: each check as `reject`, `tag` or `off` from Haraka's `[check]`
/// and `[reject]` (with Haraka's defaults), and the addresses that never
/// send mail.
pub fn bounce(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("bounce.ini");
    for (check, checked, refused) in [
        ("single_recipient", true, true),
        ("empty_return_path", false, false),
        ("bad_rcpt", true, true),
    ] {
        let value = match (
            ini.bool("check", check).unwrap_or(checked),
            ini.bool("reject", check).unwrap_or(refused),
        ) {
            (false, _) => "off",
            (true, true) => "reject",
            (true, false) => "tag",
        };
        t.carry_setting(&format!("bounce.ini {check}"), "bounce.ini", check, value);
    }
    let all = ini.bool("reject", "all_bounces").unwrap_or(false);
    t.carry_setting(
        "bounce.ini [reject] all_bounces",
        "bounce.ini",
        "reject_all",
        &all.to_string(),
    );
    same_list(h, t, "bounce_bad_rcpt", "bounce.bad_rcpt");
    Ok(())
}

/// `access`: the allow and block lists of the connection, the sender and
/// the recipient (Haraka's file names, or those `access.ini` gives), the
/// pattern files as `/pattern/` lines.
pub fn access(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("access.ini");
    for (phase, prefix, ours) in [
        ("conn", "connect.rdns_access", "connect"),
        ("mail", "mail_from.access", "mail"),
        ("rcpt", "rcpt_to.access", "rcpt"),
    ] {
        if ini.bool("check", phase) == Some(false) {
            continue;
        }
        for (haraka_list, section, waraka_list) in [("whitelist", "white", "allow"), ("blacklist", "black", "deny")] {
            let plain = ini
                .get(section, phase)
                .unwrap_or_else(|| format!("{prefix}.{haraka_list}"));
            let patterns = ini
                .get(&format!("re.{section}"), phase)
                .unwrap_or_else(|| format!("{prefix}.{haraka_list}_regex"));
            let mut lines = h.list(&plain);
            lines.extend(h.list(&patterns).into_iter().map(|re| format!("/{re}/")));
            if !lines.is_empty() {
                let to = format!("access.{ours}.{waraka_list}");
                t.report.carried.push(format!(
                    "config/{plain}, config/{patterns}: config/{to} ({} entries)",
                    lines.len()
                ));
                t.write_config(&to, lines.join("\n") + "\n");
            }
        }
    }
    if h.path("access.domains").is_file() {
        t.report.review.push(
            "config/access.domains: put its domains in config/access.mail.allow (the ones marked !) or \
             config/access.mail.deny"
                .into(),
        );
    }
    Ok(())
}

/// Haraka's rate (`LIMIT[/TIME]`, TIME in seconds or with a unit; 60 s
/// when missing; a limit of 0 turns it off) as Waraka's `N/PERIOD`.
fn rate(haraka: &str) -> String {
    let (limit, period) = haraka.split_once('/').unwrap_or((haraka, "60"));
    match limit.trim() {
        "0" => String::new(),
        limit => {
            let period = period.trim();
            let unit = if period.ends_with(|c: char| c.is_ascii_digit()) {
                "s"
            } else {
                ""
            };
            format!("{limit}/{period}{unit}")
        }
    }
}

/// `limit`: the default concurrency, rates and unrecognized commands (per
/// address entries are listed for a look).
pub fn limit(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("limit.ini");
    for (section, waraka, is_rate) in [
        ("concurrency", "concurrency", false),
        ("unrecognized_commands", "max_unrecognized", false),
        ("rate_conn", "connection_rate", true),
        ("rate_rcpt_host", "recipient_rate", true),
        ("rate_rcpt_sender", "sender_recipient_rate", true),
    ] {
        let key = if is_rate { "default" } else { "max" };
        if let Some(value) = ini.get(section, key) {
            let value = if is_rate { rate(&value) } else { value };
            t.carry_setting(&format!("limit.ini [{section}] {key}"), "limit.ini", waraka, &value);
        }
    }
    Ok(())
}

/// `aliases`: Haraka's JSON (`{"sales": {"action": "alias", "to": [...]}}`)
/// as Waraka's `KEY: TARGET, ...` lines. A target without `@` is at the
/// key's domain; what Waraka's aliases cannot say (`drop`, `*`, a bare
/// local part as the key's target) is listed for a look.
pub fn aliases(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(h.path("aliases")) else {
        return Ok(());
    };
    let json: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(&text) {
        Ok(json) => json,
        Err(e) => {
            t.report.review.push(format!(
                "config/aliases: not JSON as Haraka reads it ({e}); not carried"
            ));
            return Ok(());
        }
    };
    let mut lines = vec!["# from Haraka's config/aliases (waraka import-haraka)".to_string()];
    let mut left = Vec::new();
    for (key, alias) in &json {
        let action = alias["action"].as_str().unwrap_or_default().to_ascii_lowercase();
        let targets: Vec<String> = match &alias["to"] {
            serde_json::Value::String(one) => vec![one.clone()],
            serde_json::Value::Array(many) => many.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        };
        let domain = key.split_once('@').map(|(_, d)| d).filter(|d| !d.is_empty());
        let targets: Option<Vec<String>> = targets
            .iter()
            .map(|target| match (target.contains('@'), domain) {
                (true, _) => Some(target.clone()),
                (false, Some(domain)) => Some(format!("{target}@{domain}")),
                (false, None) => None,
            })
            .collect();
        match (action.as_str(), targets) {
            ("alias", Some(targets)) if key != "*" && !targets.is_empty() => {
                lines.push(format!("{key}: {}", targets.join(", ")))
            }
            _ => left.push(key.clone()),
        }
    }
    t.report.carried.push(format!(
        "config/aliases (JSON): config/aliases, {} aliases",
        lines.len() - 1
    ));
    if !left.is_empty() {
        t.report.review.push(format!(
            "config/aliases: {} not carried (drop, *, or a local part for every domain: Waraka's targets are \
             addresses, @domain or :reject; docs/plugins/aliases.md)",
            left.join(", ")
        ));
    }
    t.write_config("aliases", lines.join("\n") + "\n");
    Ok(())
}

/// `spf`: what refuses (`[deny]`) and what defers (`[defer]`) at HELO and
/// MAIL FROM — Haraka refuses and defers nothing by default, and so does
/// the import — and whether relaying clients are checked.
pub fn spf(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("spf.ini");
    let mut refused = Vec::new();
    for (haraka, ours) in [("helo", "helo"), ("mfrom", "mail")] {
        for result in ["none", "softfail", "fail", "permerror"] {
            let on = ini.bool("deny", &format!("{haraka}_{result}")).unwrap_or(false);
            t.setting("spf.ini", &format!("reject_{ours}_{result}"), &on.to_string());
            if on {
                refused.push(format!("{ours} {result}"));
            }
        }
        let defer = ini.bool("defer", &format!("{haraka}_temperror")).unwrap_or(false);
        t.setting("spf.ini", &format!("defer_{ours}_temperror"), &defer.to_string());
        if defer {
            refused.push(format!("{ours} temperror (451)"));
        }
    }
    t.report.carried.push(format!(
        "spf.ini [deny], [defer]: config/spf.ini refuses {}",
        if refused.is_empty() {
            "nothing (Haraka's default: the results are only noted)".to_string()
        } else {
            refused.join(", ")
        }
    ));
    if let Some(skip) = ini.bool("skip", "relaying") {
        t.carry_setting("spf.ini [skip] relaying", "spf.ini", "skip_relaying", &skip.to_string());
    }
    Ok(())
}

/// `delay_deny`: the plugins whose refusals wait, or do not (Haraka's
/// names, with their `:hook` parts dropped, as Waraka's).
pub fn delay_deny(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("delay_deny.ini");
    for key in ["included_plugins", "excluded_plugins"] {
        let haraka = ini.array("main", key);
        if haraka.is_empty() {
            continue;
        }
        let names = super::plugins::waraka_names(&haraka);
        t.carry_setting(
            &format!("delay_deny.ini {key}"),
            "delay_deny.ini",
            key,
            &names.join(", "),
        );
    }
    Ok(())
}

/// `uribl`: the zones (Haraka's sections) and where names are taken from —
/// Haraka chooses per zone, Waraka for all zones, so a place any zone
/// looks at is looked at for every zone (said in the report).
pub fn uribl(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("uribl.ini");
    let zones = ini.sections();
    if zones.is_empty() {
        return Ok(());
    }
    t.carry_setting("uribl.ini sections", "uribl.ini", "zones", &zones.join(", "));
    for (haraka, ours) in [
        (&["helo"][..], "check_helo"),
        (&["envfrom"], "check_mail_from"),
        (&["from", "msgid"], "check_headers"),
        (&["body"], "check_body"),
    ] {
        let any = zones
            .iter()
            .flat_map(|zone| haraka.iter().map(move |key| (zone, key)))
            .any(|(zone, key)| ini.bool(zone, key) == Some(true));
        let source = format!("uribl.ini {} (any zone)", haraka.join(", "));
        t.carry_setting(&source, "uribl.ini", ours, &any.to_string());
    }
    t.report.review.push(
        "uribl.ini: Haraka chose per zone where names are looked up; Waraka looks them up in every zone \
         for each place any zone asked for"
            .into(),
    );
    Ok(())
}

/// Haraka's hook names (`data_post`) as Waraka's (`data-post`).
fn hook_names(haraka: &[String]) -> String {
    haraka
        .iter()
        .map(|h| h.replace('_', "-"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `karma`: the thresholds, the tarpit, which hooks refuse and which
/// plugins' refusals it leaves alone, how long history is kept. Haraka's
/// awards and TLD scores are written differently (`award.NOTE` lines) and
/// are listed for a look.
pub fn karma(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("karma.ini");
    for (section, key, ours) in [
        ("thresholds", "negative", "negative"),
        ("thresholds", "positive", "positive"),
        ("tarpit", "delay", "tarpit_delay"),
        ("tarpit", "max", "tarpit_max"),
    ] {
        if let Some(value) = ini.get(section, key) {
            t.carry_setting(&format!("karma.ini [{section}] {key}"), "karma.ini", ours, &value);
        }
    }
    for (section, key, ours) in [
        ("deny", "hooks", "deny_hooks"),
        ("deny_excludes", "hooks", "deny_excludes_hooks"),
    ] {
        let hooks = ini.array(section, key);
        if !hooks.is_empty() {
            t.carry_setting(
                &format!("karma.ini [{section}] {key}"),
                "karma.ini",
                ours,
                &hook_names(&hooks),
            );
        }
    }
    let excluded = ini.array("deny_excludes", "plugins");
    if !excluded.is_empty() {
        let names = super::plugins::waraka_names(&excluded);
        let source = "karma.ini [deny_excludes] plugins";
        t.carry_setting(source, "karma.ini", "deny_excludes_plugins", &names.join(", "));
    }
    if let Some(days) = ini.number("redis", "expire_days") {
        t.carry_setting(
            "karma.ini [redis] expire_days",
            "karma.ini",
            "history_expiry",
            &format!("{days}d"),
        );
    }
    let scored: Vec<String> = ini
        .sections()
        .into_iter()
        .filter(|s| s.ends_with("_tlds") || s == "asn_awards" || s == "awards")
        .collect();
    for section in &scored {
        ini.section(section);
    }
    if !scored.is_empty() {
        t.report.review.push(format!(
            "karma.ini [{}]: Waraka's awards are award.NOTE = POINTS lines in config/karma.ini \
             (docs/plugins/karma.md)",
            scored.join("], [")
        ));
    }
    Ok(())
}

/// `geoip`: the MaxMind databases of Haraka's `dbdir` (its default
/// `/usr/local/share/GeoIP/`) as `[geoip] databases`, which the plugin's
/// grant needs; `public_ip` and `too_far` (the same keys).
pub fn geoip(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("geoip.ini");
    let dir = ini
        .get("main", "dbdir")
        .unwrap_or_else(|| "/usr/local/share/GeoIP/".into());
    let mut databases: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "mmdb"))
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    databases.sort();
    if databases.is_empty() {
        let base = std::path::Path::new(&dir);
        databases = ["GeoLite2-City.mmdb", "GeoLite2-ASN.mmdb"]
            .iter()
            .map(|f| base.join(f).display().to_string())
            .collect();
        t.report.review.push(format!(
            "geoip: no .mmdb files in {dir} on this machine; [geoip] databases names the usual two there — \
             put them there (geoipupdate) or name yours"
        ));
    }
    let list: toml_edit::Array = databases.iter().map(String::as_str).collect();
    t.carry_toml("geoip.ini dbdir", &["geoip"], "databases", list);
    same_keys(&ini, t, "geoip.ini", "geoip.ini", &["public_ip", "too_far"]);
    Ok(())
}

/// `dovecot`: Dovecot's authentication service (its socket `path`, or
/// `host` and `port`; Debian's `/run/dovecot/auth-client` when unset) as
/// `[sasl] dovecot`, which `auth/dovecot`'s grant needs.
pub fn dovecot(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("dovecot.ini");
    let address = match (
        ini.get("main", "path"),
        ini.get("main", "host"),
        ini.get("main", "port"),
    ) {
        (Some(path), _, _) => path,
        (None, Some(host), Some(port)) => format!("{host}:{port}"),
        _ => "/run/dovecot/auth-client".into(),
    };
    t.carry_toml("dovecot.ini path, or host and port", &["sasl"], "dovecot", address);
    Ok(())
}

/// `p0f`: the daemon's API socket (`socket_path`, Haraka's default
/// `/tmp/.p0f_socket`) as `[p0f] socket`, which the plugin's grant needs.
pub fn p0f(h: &HarakaDir, t: &mut Target) -> Result<()> {
    let ini = h.ini("p0f.ini");
    let socket = ini
        .get("main", "socket_path")
        .unwrap_or_else(|| "/tmp/.p0f_socket".into());
    t.carry_toml("p0f.ini socket_path", &["p0f"], "socket", socket);
    same_keys(&ini, t, "p0f.ini", "p0f.ini", &["add_header"]);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pem_blocks_split_into_key_and_chain() {
        let text = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\
                    -----BEGIN PRIVATE KEY-----\nKKK\n-----END PRIVATE KEY-----\n\
                    -----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        let (key, chain) = super::split_pem(text);
        assert_eq!(key, "-----BEGIN PRIVATE KEY-----\nKKK\n-----END PRIVATE KEY-----\n");
        assert_eq!(
            chain,
            "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n"
        );
    }

    #[test]
    fn rates_in_harakas_words() {
        assert_eq!(super::rate("50/5m"), "50/5m");
        assert_eq!(super::rate("5"), "5/60s");
        assert_eq!(super::rate("10/30"), "10/30s");
        assert_eq!(super::rate("0"), "");
    }
}
