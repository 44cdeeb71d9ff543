//! `waraka import-haraka`: a new instance made from a Haraka install
//! directory. Haraka's plugin list becomes the chain (legacy names too), its
//! server settings (`me`, `smtp.ini`, `connection.ini`, TLS files,
//! `outbound.ini`, plugin timeouts) become `waraka.toml`, and the settings
//! of the plugins that have a counterpart are translated into Waraka's
//! config files. What could not be carried is reported, never dropped in
//! silence: every INI key no translation read is listed, with the reason
//! when Waraka does not need it.

mod haraka;
mod plugins;
mod server;
mod target;
mod translate;

use anyhow::Result;
use std::path::Path;

pub use target::Report;

/// Makes a new instance in `to` from the Haraka install directory `from`
/// (or its `config/`), and tells what was carried over and what was not.
/// Fails before writing anything when `from` is not a Haraka directory or
/// `to` already holds an instance.
pub fn import_haraka(from: &Path, to: &Path) -> Result<Report> {
    let h = haraka::HarakaDir::open(from)?;
    let haraka_plugins = plugins::haraka_plugins(&h);
    crate::config::lay_out_instance(to, &plugins::chain(&haraka_plugins))?;
    let mut t = target::Target::open(to)?;
    let tls = haraka_plugins.iter().any(|p| p == "tls") && translate::has_certificate(&h);
    server::carry(&h, &mut t, tls);
    plugins::carry(&h, &mut t, &haraka_plugins)?;
    for (file, entries) in h.unread() {
        report_unread(&mut t.report, &file, &entries);
    }
    t.save()?;
    Ok(t.report)
}

/// A section with more unread entries than this (a list of names, such as
/// karma's TLD scores) is reported in one line.
const LISTED_ONE_BY_ONE: usize = 5;

/// Reports the settings of Haraka's `file` that no translation read: why
/// Waraka does not need them, or that they were not carried.
fn report_unread(report: &mut Report, file: &str, entries: &[haraka::Entry]) {
    let mut sections: Vec<&str> = Vec::new();
    for entry in entries {
        if !sections.contains(&entry.section.as_str()) {
            sections.push(&entry.section);
        }
    }
    for section in sections {
        let unread: Vec<&haraka::Entry> = entries.iter().filter(|e| e.section == section).collect();
        if section != "main" && unread.len() > LISTED_ONE_BY_ONE {
            report.review.push(format!(
                "{file} [{section}]: {} entries not carried (no Waraka setting says the same)",
                unread.len()
            ));
            continue;
        }
        for entry in unread {
            let key = if section == "main" {
                entry.key.clone()
            } else {
                format!("[{section}] {}", entry.key)
            };
            match server::not_needed(file, section, &entry.key) {
                Some(why) => report.not_needed.push(format!("{file} {key}: {why}")),
                None => report
                    .review
                    .push(format!("{file} {key}: not carried (no Waraka setting says the same)")),
            }
        }
    }
}
