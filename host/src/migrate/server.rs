//! Haraka's server-wide settings: `me`, `host_list`, `smtp.ini`,
//! `connection.ini` (and the older `databytes`), `plugin_timeout` and
//! `outbound.ini`, and the reasons for the keys Waraka does not need.

use super::haraka::HarakaDir;
use super::target::Target;
use toml_edit::{Array, Table};

/// Haraka's settings that Waraka does not need, with the reason: (file,
/// section — `*` for any —, key, why).
const NOT_NEEDED: &[(&str, &str, &str, &str)] = &[
    (
        "smtp_forward.ini",
        "*",
        "auth_type",
        "Waraka logs in with PLAIN or LOGIN, whichever the next hop offers",
    ),
    (
        "smtp_proxy.ini",
        "*",
        "auth_type",
        "Waraka logs in with PLAIN or LOGIN, whichever the next hop offers",
    ),
    (
        "relay.ini",
        "relay",
        "dest_domains",
        "relay_dest_domains.ini is listed above when there is one",
    ),
    (
        "smtp.ini",
        "main",
        "nodes",
        "Waraka is one process that uses every core (tokio's threads)",
    ),
    (
        "smtp.ini",
        "main",
        "user",
        "run Waraka as its own user from the start (examples/systemd/waraka.service)",
    ),
    (
        "smtp.ini",
        "main",
        "group",
        "run Waraka as its own user from the start (examples/systemd/waraka.service)",
    ),
    (
        "smtp.ini",
        "main",
        "daemonize",
        "systemd runs Waraka in the foreground (examples/systemd/)",
    ),
    (
        "smtp.ini",
        "main",
        "daemon_log_file",
        "Waraka logs to standard error (the journal)",
    ),
    (
        "smtp.ini",
        "main",
        "daemon_pid_file",
        "systemd keeps the process; no PID file",
    ),
    (
        "smtp.ini",
        "main",
        "ignore_bad_plugins",
        "Waraka refuses a plugin that fails its checks and serves with the others",
    ),
    (
        "smtp.ini",
        "main",
        "graceful_shutdown",
        "Waraka always lets open transactions finish ([smtp] shutdown_grace)",
    ),
    (
        "connection.ini",
        "headers",
        "max_lines",
        "Waraka limits the header by its size ([smtp] max_header_size)",
    ),
    (
        "connection.ini",
        "headers",
        "show_version",
        "Waraka's Received field never names a version",
    ),
    (
        "connection.ini",
        "headers",
        "clean_auth_results",
        "the auth-results plugin replaces forged Authentication-Results of this server's name",
    ),
    (
        "connection.ini",
        "max",
        "mime_parts",
        "the MIME parser has its own limits",
    ),
    (
        "connection.ini",
        "max",
        "line_length",
        "Waraka keeps RFC 5321's 512-byte command line",
    ),
    (
        "connection.ini",
        "max",
        "data_line_length",
        "Waraka takes DATA lines up to [smtp] max_data_line and does not fold longer ones",
    ),
    (
        "connection.ini",
        "message",
        "helo",
        "Waraka's EHLO reply names the server and the client",
    ),
    (
        "connection.ini",
        "message",
        "close",
        "Waraka's QUIT reply is 221 2.0.0 with the server's name",
    ),
    (
        "connection.ini",
        "uuid",
        "banner_chars",
        "Waraka's replies carry the transaction ID where it helps (250 after DATA)",
    ),
    (
        "connection.ini",
        "uuid",
        "deny_chars",
        "Waraka's replies carry the transaction ID where it helps (250 after DATA)",
    ),
    (
        "outbound.ini",
        "main",
        "maxTempFailures",
        "the default retries are Haraka's (12 doubling waits from 64 s); [outbound] retry sets others",
    ),
    (
        "tls.ini",
        "main",
        "ciphers",
        "rustls offers only TLS 1.2 and 1.3 with its safe cipher suites",
    ),
    ("tls.ini", "main", "minVersion", "rustls offers only TLS 1.2 and 1.3"),
    (
        "tls.ini",
        "main",
        "honorCipherOrder",
        "rustls chooses among safe cipher suites only",
    ),
    (
        "tls.ini",
        "main",
        "dhparam",
        "rustls does not use finite-field Diffie-Hellman",
    ),
    (
        "tls.ini",
        "main",
        "rejectUnauthorized",
        "clients are never required to show a certificate ([tls] ask_client_cert asks)",
    ),
];

/// The reason Haraka's `key` in `section` of `file` is not needed, if known.
pub fn not_needed(file: &str, section: &str, key: &str) -> Option<&'static str> {
    NOT_NEEDED
        .iter()
        .find(|(f, s, k, _)| *f == file && (*s == section || *s == "*") && *k == key)
        .map(|(_, _, _, why)| *why)
}

/// Seconds as a duration setting (`300s`).
pub fn seconds(value: i64) -> String {
    format!("{value}s")
}

/// Carries every server-wide setting; `tls` says whether Haraka's `tls`
/// plugin is on with a certificate (and so whether its implicit-TLS port
/// is carried).
pub fn carry(h: &HarakaDir, t: &mut Target, tls: bool) {
    if let Some(me) = h.value("me") {
        t.carry_toml("config/me", &["smtp"], "hostname", me.as_str());
    }
    for list in ["host_list", "host_list_regex"] {
        super::translate::same_list(h, t, list, list);
    }
    listeners(h, t, tls);
    connection(h, t);
    if let Some(timeout) = h.value("plugin_timeout").and_then(|v| v.parse().ok()) {
        plugin_timeout(t, &[], timeout, "config/plugin_timeout");
    }
    outbound(h, t);
    for single in ["smtp.json", "smtp.yaml"] {
        if h.path(single).is_file() {
            t.report.review.push(format!(
                "config/{single}: Haraka's single-file configuration is not read; its \"!FILE\" entries \
                 override the files above, so carry them by hand"
            ));
        }
    }
}

/// Sets a plugin's `timeout` (`plugins` empty: `[plugin_defaults]`) from
/// Haraka's seconds, where 0 meant "no timer".
pub fn plugin_timeout(t: &mut Target, plugins: &[&str], value: i64, source: &str) {
    if value <= 0 {
        t.report.review.push(format!(
            "{source}: 0 turned Haraka's timer off; Waraka always has one (the default is 30s)"
        ));
        return;
    }
    if plugins.is_empty() {
        t.carry_toml(source, &["plugin_defaults"], "timeout", seconds(value));
    }
    for plugin in plugins {
        t.carry_toml(source, &["plugin", plugin], "timeout", seconds(value));
    }
}

/// `smtp.ini`'s listeners (Haraka's implicit-TLS port becomes a
/// `submissions` listener) and timeouts.
fn listeners(h: &HarakaDir, t: &mut Target, tls: bool) {
    let smtp = h.ini("smtp.ini");
    let mut listen = smtp.array("main", "listen");
    if let Some(host) = smtp.get("main", "listen_host") {
        let port = smtp.get("main", "port").unwrap_or_else(|| "25".into());
        listen.insert(0, format!("{host}:{port}"));
    }
    if listen.is_empty() {
        listen.push("[::0]:25".into());
    }
    let smtps_port = smtp.number("main", "smtps_port").unwrap_or(465);
    let mut mx = Array::new();
    for entry in &listen {
        if entry.starts_with('/') {
            t.report
                .review
                .push(format!("smtp.ini listen {entry}: Waraka listens on TCP only"));
            continue;
        }
        let address = if entry.parse::<u16>().is_ok() {
            format!("[::]:{entry}")
        } else {
            entry.replace("[::0]", "[::]")
        };
        let port = address.rsplit_once(':').and_then(|(_, p)| p.parse::<i64>().ok());
        if port == Some(smtps_port) {
            if tls {
                let mut listener = Table::new();
                listener["address"] = toml_edit::value(address.as_str());
                listener["role"] = toml_edit::value("submissions");
                t.push(&[], "listener", listener);
                t.report.carried.push(format!(
                    "smtp.ini listen {entry} (implicit TLS): [[listener]] {address} with role \"submissions\" \
                     (AUTH before MAIL, as RFC 8314 asks; Haraka left that to plugins)"
                ));
            } else {
                t.report.review.push(format!(
                    "smtp.ini listen {entry}: implicit TLS without Haraka's tls plugin and a certificate; \
                     not carried"
                ));
            }
            continue;
        }
        mx.push(address.as_str());
    }
    if !mx.is_empty() {
        t.carry_toml("smtp.ini listen", &["smtp"], "listen", mx);
    }
    for (key, setting) in [
        ("inactivity_timeout", "idle_timeout"),
        ("force_shutdown_timeout", "shutdown_grace"),
    ] {
        if let Some(value) = smtp.number("main", key) {
            t.carry_toml(&format!("smtp.ini {key}"), &["smtp"], setting, seconds(value));
        }
    }
    if let Some(ip) = smtp.get("main", "public_ip") {
        t.carry_setting("smtp.ini public_ip", "geoip.ini", "public_ip", &ip);
    }
}

/// `connection.ini` (and `databytes`): size limits, spooling, the greeting.
fn connection(h: &HarakaDir, t: &mut Target) {
    let conn = h.ini("connection.ini");
    let bytes = conn
        .number("max", "bytes")
        .map(|b| (b, "connection.ini [max] bytes"))
        .or_else(|| {
            h.value("databytes")
                .and_then(|v| v.parse().ok())
                .map(|b| (b, "config/databytes"))
        });
    if let Some((bytes, source)) = bytes {
        t.carry_toml(source, &["smtp"], "max_message_size", bytes);
    }
    if let Some(max) = conn.number("headers", "max_received") {
        t.carry_toml("connection.ini [headers] max_received", &["smtp"], "max_received", max);
    }
    if let Some(dir) = conn.get("main", "spool_dir") {
        t.carry_toml("connection.ini spool_dir", &["smtp"], "spool_dir", dir.as_str());
    }
    if let Some(after) = conn.number("main", "spool_after").filter(|a| *a >= 0) {
        t.carry_toml("connection.ini spool_after", &["smtp"], "spool_memory_threshold", after);
    }
    let greeting = conn.array("message", "greeting");
    if !greeting.is_empty() {
        t.carry_toml(
            "connection.ini [message] greeting",
            &["smtp"],
            "banner",
            greeting.join(" "),
        );
    }
    if conn.bool("headers", "add_received") == Some(false) {
        t.report.review.push(
            "connection.ini add_received = false: Waraka always adds its Received field (loops are found by it)".into(),
        );
    }
    let proxies = conn.array("haproxy", "hosts");
    if !proxies.is_empty() {
        t.report.review.push(format!(
            "connection.ini [haproxy] hosts ({}): give the listeners behind HAProxy proxy_from = [...] in \
             [[listener]]; Waraka then requires the PROXY header from them (Haraka took it or not)",
            proxies.join(", ")
        ));
    }
}

/// `outbound.ini`: the delivery queue's switch, concurrency, retries, TLS.
fn outbound(h: &HarakaDir, t: &mut Target) {
    let out = h.ini("outbound.ini");
    if out.bool("main", "disabled") == Some(true) {
        t.carry_toml("outbound.ini disabled", &["outbound"], "enabled", false);
    }
    if let Some(max) = out.number("main", "concurrency_max") {
        t.carry_toml("outbound.ini concurrency_max", &["outbound"], "concurrency", max);
    }
    if let Some(intervals) = out.get("main", "temp_fail_intervals") {
        match intervals.parse::<crate::queue::RetrySchedule>() {
            Ok(_) => t.carry_toml("outbound.ini temp_fail_intervals", &["outbound"], "retry", intervals),
            Err(e) => t
                .report
                .review
                .push(format!("outbound.ini temp_fail_intervals {intervals:?}: {e}")),
        }
    }
    if out.bool("main", "enable_tls") == Some(false) {
        t.carry_toml("outbound.ini enable_tls = false", &["outbound"], "tls", "never");
    }
    for template in ["outbound.bounce_message", "outbound.bounce_message_html"] {
        if h.path(template).is_file() {
            t.report.review.push(format!(
                "config/{template}: Waraka writes its own RFC 3464 bounces; the template is not used"
            ));
        }
    }
}
