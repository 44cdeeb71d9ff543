//! The live plugin set and its reloads. Connections take a snapshot
//! ([`Registry::current`]) when they start, so a reload only affects new
//! connections. A plugin file that cannot be loaded is recorded as rejected
//! and the previous version of that plugin stays live.

use super::loader::{LoadedPlugin, PluginSet, PluginSpec};
use super::runtime::Runtime;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;
use tracing::{error, info};

/// A plugin file that was refused, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rejection {
    /// SHA-256 of the refused file.
    pub hash: String,
    /// Why it was refused.
    pub error: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// What one reload changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Plugins loaded from new or changed files.
    pub loaded: usize,
    /// Of those, how many were compiled (not found in the compile cache).
    pub compiled: usize,
    /// Files refused; the old version of each, if any, stays.
    pub rejected: usize,
    /// Plugins no longer in the chain.
    pub removed: usize,
    /// Unchanged files whose `describe` now answers differently (their
    /// hooks follow their config).
    pub described: usize,
}

/// The live plugin set, the rejected files, and a reload counter.
pub struct Registry {
    runtime: Runtime,
    live: ArcSwap<PluginSet>,
    rejected: std::sync::Mutex<BTreeMap<String, Rejection>>,
    /// Serialises reloads.
    reloading: tokio::sync::Mutex<()>,
    reloads: AtomicU64,
}

impl Registry {
    /// An empty registry.
    pub fn new(runtime: Runtime) -> Self {
        Registry {
            runtime,
            live: ArcSwap::from_pointee(PluginSet::default()),
            rejected: Default::default(),
            reloading: Default::default(),
            reloads: AtomicU64::new(0),
        }
    }

    /// The runtime plugins run in.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The plugin set new connections run with.
    pub fn current(&self) -> Arc<PluginSet> {
        self.live.load_full()
    }

    /// How many plugin versions were (re)loaded since start.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// The last rejection of every plugin whose current file was refused.
    pub fn rejected(&self) -> BTreeMap<String, Rejection> {
        self.rejected.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `specs` (in chain order) the live set: unchanged plugins are
    /// reused, changed files are loaded (compilation runs on the blocking
    /// pool), refused files keep their previous version, and plugins no
    /// longer present are dropped.
    pub async fn apply(&self, specs: Vec<PluginSpec>) -> ReloadSummary {
        let _one_at_a_time = self.reloading.lock().await;
        let previous: BTreeMap<Arc<str>, Arc<LoadedPlugin>> = self
            .current()
            .plugins
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        let in_chain: BTreeSet<String> = specs.iter().map(|s| s.name.clone()).collect();
        let mut summary = ReloadSummary::default();
        let mut next = PluginSet::default();
        for spec in specs {
            let old = previous.get(spec.name.as_str());
            if let Some(plugin) = self.load_one(&spec, old, &mut summary).await {
                next.plugins.push(plugin);
            }
        }
        for name in previous.keys() {
            if !next.plugins.iter().any(|p| &p.name == name) {
                info!(plugin = %name, "plugin unloaded");
                summary.removed += 1;
            }
        }
        let names: Vec<String> = next.plugins.iter().map(|p| p.name.to_string()).collect();
        // A refused file of a plugin that left the chain is no longer news.
        self.rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| in_chain.contains(name));
        self.runtime.services().config.set_plugin_names(names);
        let next = Arc::new(next);
        self.live.store(next.clone());
        for old in previous.values() {
            if !next.plugins.iter().any(|p| Arc::ptr_eq(p, old)) {
                old.warm.retire();
            }
        }
        summary
    }

    async fn load_one(
        &self,
        spec: &PluginSpec,
        old: Option<&Arc<LoadedPlugin>>,
        summary: &mut ReloadSummary,
    ) -> Option<Arc<LoadedPlugin>> {
        let keep_old = |old: Option<&Arc<LoadedPlugin>>| {
            old.map(|o| {
                if o.same_settings(spec) {
                    o.clone()
                } else {
                    Arc::new(o.with_spec(spec))
                }
            })
        };
        let (bytes, hash, source) = match spec.source.read() {
            Ok(read) => read,
            Err(e) => {
                self.reject(spec, String::new(), &format!("{e:#}"), old);
                summary.rejected += 1;
                return keep_old(old);
            }
        };
        if let Some(unchanged) = old.filter(|o| o.hash == hash) {
            // Asked again: what a plugin implements may follow its config
            // (a Haraka plugin's register() reading a setting).
            let description = match self
                .runtime
                .describe(spec, &unchanged.pre, unchanged.outbound.is_some())
                .await
            {
                Ok(description) => description,
                Err(e) => {
                    self.reject(spec, hash, &format!("{e:#}"), old);
                    summary.rejected += 1;
                    return keep_old(old);
                }
            };
            self.forget_rejection(&spec.name);
            if description == unchanged.description {
                return keep_old(old);
            }
            let plugin = unchanged.described(spec, description);
            let hooks = plugin.description.hook_names();
            info!(plugin = %plugin.name, version = %plugin.description.version, hooks = ?hooks, "plugin described anew");
            summary.described += 1;
            return Some(Arc::new(plugin));
        }
        match self.runtime.load_bytes(spec.clone(), bytes, hash.clone(), source).await {
            Ok(plugin) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::telemetry::PLUGIN_LOADS, "plugin" => plugin.name.to_string()).increment(1);
                summary.loaded += 1;
                summary.compiled += usize::from(plugin.compiled);
                let hooks = plugin.description.hook_names();
                info!(
                    plugin = %plugin.name,
                    version = %plugin.description.version,
                    old_hash = old.map_or("-", |o| &o.hash[..12]),
                    new_hash = &plugin.hash[..12],
                    compile_ms = plugin.compile_ms as u64,
                    compiled = plugin.compiled,
                    hooks = ?hooks,
                    "plugin loaded"
                );
                if !plugin.description.unknown_hooks.is_empty() {
                    tracing::warn!(plugin = %plugin.name, unknown = ?plugin.description.unknown_hooks, "plugin declares hooks this host does not know");
                }
                self.forget_rejection(&spec.name);
                Some(Arc::new(plugin))
            }
            Err(e) => {
                self.reject(spec, hash, &format!("{e:#}"), old);
                summary.rejected += 1;
                keep_old(old)
            }
        }
    }

    /// A plugin's current file is in force again: its last refusal is no longer news.
    fn forget_rejection(&self, name: &str) {
        self.rejected.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
    }

    fn reject(&self, spec: &PluginSpec, hash: String, reason: &str, old: Option<&Arc<LoadedPlugin>>) {
        let reason = reason.replace('\n', " ");
        let file = match &spec.source {
            super::PluginSource::File(path) => path.display().to_string(),
            super::PluginSource::Embedded(_) => "embedded".into(),
        };
        error!(
            plugin = %spec.name,
            file = %file,
            keeping = old.map_or("nothing", |o| &o.hash[..12]),
            "plugin rejected: {reason}"
        );
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.rejected.lock().unwrap_or_else(|e| e.into_inner()).insert(
            spec.name.clone(),
            Rejection {
                hash,
                error: reason,
                at,
            },
        );
    }
}
