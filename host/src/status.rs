//! The plugin status a running server publishes (`queue/plugins.status.json`)
//! and `waraka plugin list` prints: the live chain, and the last rejected file
//! of each plugin with its error.

use crate::plugins::{Registry, Rejection};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One live plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginRow {
    /// The plugin's name in the chain.
    pub name: String,
    /// The version it declares.
    pub version: String,
    /// SHA-256 of its component.
    pub hash: String,
    /// The hooks it implements.
    pub hooks: Vec<String>,
    /// Wall-clock limit per hook call, in ms.
    pub timeout_ms: u64,
    /// Fuel per hook call.
    pub fuel: u64,
    /// Linear memory cap in bytes.
    pub memory: usize,
    /// What a fault answers (`tempfail` or `continue`).
    pub on_error: String,
    /// Its capability grants.
    pub grants: Vec<String>,
}

/// The whole status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The server process, when published by one.
    pub pid: Option<u32>,
    /// Plugin versions loaded since the server started.
    pub reloads: u64,
    /// The chain, in order.
    pub plugins: Vec<PluginRow>,
    /// Plugin files refused, by plugin name.
    pub rejected: BTreeMap<String, Rejection>,
}

impl Status {
    /// The registry's current state.
    pub fn of(registry: &Registry, pid: Option<u32>) -> Status {
        let plugins = registry
            .current()
            .plugins
            .iter()
            .map(|p| PluginRow {
                name: p.name.to_string(),
                version: p.description.version.clone(),
                hash: p.hash.clone(),
                hooks: p.description.hooks.iter().map(|h| h.name().to_string()).collect(),
                timeout_ms: p.limits.timeout.as_millis() as u64,
                fuel: p.limits.fuel,
                memory: p.limits.memory,
                on_error: format!("{:?}", p.limits.on_error).to_lowercase(),
                grants: p.grants.to_vec(),
            })
            .collect();
        Status {
            pid,
            reloads: registry.reloads(),
            plugins,
            rejected: registry.rejected(),
        }
    }

    /// Writes the status file atomically.
    pub fn publish(&self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(path.parent().expect("status file has a directory"))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// The status published by a server that is still running, if any.
    pub fn read_live(path: &Path) -> Option<Status> {
        let status: Status = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let pid = status.pid?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(status)
    }

    /// The table `waraka plugin list` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match self.pid {
            Some(pid) => out.push_str(&format!(
                "live plugins of the running server (pid {pid}, {} reloads)\n",
                self.reloads
            )),
            None => out.push_str("plugins as loaded now (no server running for this instance)\n"),
        }
        out.push_str(&format!(
            "{:<3} {:<24} {:<8} {:<12} {:<8} {:<10} {:<8} {:<9} {:<20} hooks\n",
            "#", "plugin", "version", "hash", "timeout", "fuel", "memory", "on_error", "grants"
        ));
        for (i, p) in self.plugins.iter().enumerate() {
            out.push_str(&format!(
                "{:<3} {:<24} {:<8} {:<12} {:<8} {:<10} {:<8} {:<9} {:<20} {}\n",
                i + 1,
                p.name,
                p.version,
                &p.hash[..12.min(p.hash.len())],
                humantime::format_duration(std::time::Duration::from_millis(p.timeout_ms)).to_string(),
                p.fuel,
                format!("{}M", p.memory / (1024 * 1024)),
                p.on_error,
                if p.grants.is_empty() {
                    "-".to_string()
                } else {
                    p.grants.join(",")
                },
                p.hooks.join(",")
            ));
        }
        for (name, r) in &self.rejected {
            let hash = if r.hash.is_empty() {
                "-"
            } else {
                &r.hash[..12.min(r.hash.len())]
            };
            out.push_str(&format!("rejected {name} ({hash}): {}\n", r.error));
        }
        out
    }
}
