//! Haraka's plugins and what each becomes in Waraka: one table, from
//! Haraka's names (legacy ones too) to Waraka's plugins and the translation
//! of the plugin's settings.

use super::haraka::HarakaDir;
use super::server::plugin_timeout;
use super::target::Target;
use super::translate::*;
use anyhow::Result;
use std::path::Path;

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
    row(&["dovecot"], &["auth/dovecot"], Settings::Carried(dovecot)),
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
        Settings::Carried(access),
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
        Settings::Carried(limit),
    ),
    row(&["helo.checks"], &["helo.checks"], Settings::Carried(helo_checks)),
    row(
        &[
            "headers",
            "data.headers",
            "data.rfc5322_header_checks",
            "data.noreceived",
        ],
        &["headers"],
        Settings::Carried(headers),
    ),
    row(&["fcrdns", "connect.fcrdns"], &["fcrdns"], Settings::Carried(fcrdns)),
    row(&["karma"], &["karma"], Settings::Carried(karma)),
    row(&["spf"], &["spf"], Settings::Carried(spf)),
    row(&["dmarc"], &["dmarc"], Settings::ByHand(&["dmarc.ini"])),
    row(&["uribl", "data.uribl"], &["uribl"], Settings::Carried(uribl)),
    row(&["asn", "connect.asn"], &["asn"], Settings::ByHand(&["asn.ini"])),
    row(&["geoip", "connect.geoip"], &["geoip"], Settings::Carried(geoip)),
    row(&["p0f", "connect.p0f"], &["p0f"], Settings::Carried(p0f)),
    row(&["bounce"], &["bounce"], Settings::Carried(bounce)),
    row(&["attachment"], &["attachment"], Settings::Carried(attachment)),
    row(&["aliases"], &["aliases"], Settings::Carried(aliases)),
    row(
        &["known-senders"],
        &["known-senders"],
        Settings::ByHand(&["known-senders.ini"]),
    ),
    row(
        &["data.signatures"],
        &["data.signatures"],
        Settings::Carried(data_signatures),
    ),
    row(&["delay_deny"], &["delay_deny"], Settings::Carried(delay_deny)),
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
        &["block_me", "dcc", "messagesniffer", "qmail-deliverable", "avg", "esets"],
        &[],
        Settings::Missing("no such plugin yet"),
    ),
];

fn counterpart(name: &str) -> Option<&'static Counterpart> {
    TABLE.iter().find(|c| c.haraka.contains(&name))
}

/// Waraka's plugins for Haraka's plugin names, in their order, each once
/// (a name's `:hook` part, as `delay_deny` writes it, is dropped; names
/// without a counterpart give none).
pub fn waraka_names(haraka: &[String]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for name in haraka {
        let plugin = name.split(':').next().unwrap_or_default();
        for waraka in counterpart(plugin).map_or(&[][..], |c| c.waraka) {
            if !names.contains(waraka) {
                names.push(waraka);
            }
        }
    }
    names
}

/// Haraka's plugin list (`config/plugins`), names as Haraka takes them.
pub fn haraka_plugins(h: &HarakaDir) -> Vec<String> {
    h.list("plugins")
        .into_iter()
        .map(|name| name.strip_prefix("haraka-plugin-").unwrap_or(&name).to_string())
        .collect()
}

/// The plugins that must be last in Waraka's chain (they score what the
/// others noted), wherever Haraka listed them.
const LAST: &[&str] = &["karma"];

/// The Waraka chain for Haraka's plugin list, in Haraka's order but for
/// the plugins of [`LAST`].
pub fn chain(plugins: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = waraka_names(plugins).into_iter().map(str::to_string).collect();
    for last in LAST {
        if let Some(i) = chain.iter().position(|p| p == last) {
            let plugin = chain.remove(i);
            chain.push(plugin);
        }
    }
    chain
}

/// Carries each plugin's settings (and its `NAME.timeout`), and reports
/// what each plugin became.
pub fn carry(h: &HarakaDir, t: &mut Target, plugins: &[String]) -> Result<()> {
    let mut done: Vec<&str> = Vec::new();
    for name in plugins {
        let Some(counterpart) = counterpart(name) else {
            unknown(h, t, name);
            continue;
        };
        // Two of Haraka's names for one plugin (dnsbl and dnswl): carried once.
        if let Some(first) = counterpart.haraka.iter().find(|n| done.contains(n)) {
            t.report.carried.push(format!(
                "plugin {name}: {} (with {first} above)",
                counterpart.waraka.join(" and ")
            ));
            continue;
        }
        done.push(name.as_str());
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
        if counterpart.waraka.iter().any(|w| LAST.contains(w)) {
            t.report.carried.push(format!(
                "plugin {name}: put last in the chain, after the checks it scores (docs/plugins/{}.md)",
                counterpart.waraka[0]
            ));
        }
        if !counterpart.waraka.is_empty()
            && let Some(timeout) = h.value(&format!("{name}.timeout")).and_then(|v| v.parse().ok())
        {
            plugin_timeout(t, counterpart.waraka, timeout, &format!("config/{name}.timeout"));
        }
    }
    Ok(())
}

/// A Haraka plugin directory (`plugins/NAME/`, an npm-style package).
struct Package {
    /// Its `.js` and `.json` files outside `node_modules` and test
    /// directories: (path relative to the directory, text).
    files: Vec<(String, String)>,
    /// The main module: `package.json`'s `main`, else `index.js`.
    main: String,
    /// The packages it depends on (`dependencies`).
    dependencies: Vec<String>,
}

/// The code of the plugin directory `dir`.
fn package_code(dir: &Path) -> Result<Package> {
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("package.json"))?)?;
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at)? {
            let path = entry?.path();
            let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !["node_modules", "test", "tests"].contains(&file_name) && !file_name.starts_with('.') {
                    pending.push(path);
                }
            } else if (file_name.ends_with(".js") || file_name.ends_with(".json")) && file_name != "package.json" {
                let relative = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
                files.push((relative, std::fs::read_to_string(&path)?));
            }
        }
    }
    files.sort();
    let named = manifest["main"].as_str().unwrap_or("index.js").trim_start_matches("./");
    let main = if files.iter().any(|(path, _)| path == named) {
        named.to_string()
    } else {
        format!("{named}.js")
    };
    let dependencies = manifest["dependencies"]
        .as_object()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default();
    Ok(Package {
        files,
        main,
        dependencies,
    })
}

/// A plugin the table does not know: the administrator's own (a single
/// file, or a directory with a `package.json`, is laid out under `src/` as
/// a JavaScript plugin run by `haraka.js`), or a package.
fn unknown(h: &HarakaDir, t: &mut Target, name: &str) {
    let file = format!("plugins/{name}.js");
    let package = h.install_path(&format!("plugins/{name}"));
    let in_instance = |path: &Path| path.strip_prefix(t.path("")).unwrap_or(path).display().to_string();
    let lay_out = |code: crate::scaffold::HarakaCode| {
        crate::scaffold::port_haraka_plugin(&t.path("src"), name, code).and_then(|root| {
            Ok((
                in_instance(&root),
                in_instance(&crate::scaffold::component_path(&root)?),
            ))
        })
    };
    let (source, laid_out, dependencies) = if let Ok(code) = std::fs::read_to_string(h.install_path(&file)) {
        (
            file,
            Some(lay_out(crate::scaffold::HarakaCode::File(&code))),
            Vec::new(),
        )
    } else if package.join("package.json").exists() {
        let source = format!("plugins/{name}/");
        match package_code(&package) {
            Ok(found) => {
                let code = crate::scaffold::HarakaCode::Package {
                    files: &found.files,
                    main: &found.main,
                };
                (source, Some(lay_out(code)), found.dependencies)
            }
            Err(e) => (source, Some(Err(e)), Vec::new()),
        }
    } else {
        (file, None, Vec::new())
    };
    let line = if let Some(laid_out) = laid_out {
        let needs = if dependencies.is_empty() {
            String::new()
        } else {
            format!(
                "; it depends on {} (npm): haraka.js's require has Haraka's own modules, others must be replaced \
                 with the capabilities it exports",
                dependencies.join(", ")
            )
        };
        match laid_out {
            Ok((dir, wasm)) => format!(
                "plugin {name} ({source}): a plugin of your own; its code is in {dir}/app.js, run by haraka.js: \
                 `waraka plugin build {dir}` (componentize-js), copy {wasm} to plugins/{name}.wasm \
                 and add \"{name}\" to plugins in waraka.toml (docs/plugins-in-js.md#haraka-plugins){needs}"
            ),
            Err(e) => {
                format!("plugin {name} ({source}): a plugin of your own, not laid out ({e:#}); docs/plugins-in-js.md")
            }
        }
    } else {
        format!(
            "plugin {name}: not one Waraka knows (an npm package?); a WebAssembly component can do its job \
             (docs/plugins-in-js.md)"
        )
    };
    t.report.review.push(line);
}
