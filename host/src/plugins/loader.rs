//! Turning `.wasm` bytes into a loaded plugin: compile (off the async
//! threads), check against the world, ask the plugin what it implements.

use super::bindings::outbound::OutboundExportsIndices;
use super::bindings::{Plugin, PluginPre};
use super::breaker::Breaker;
use super::chain::{Fault, classify};
use super::limits::PluginLimits;
use super::runtime::{Runtime, arm, run_guest};
use super::store::StoreState;
use super::warm::WarmInstances;
use crate::policy::{Hook, HookSet};
use anyhow::{Context as _, Result, anyhow};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use waraka_config::Role;

/// A host directory a plugin may use, seen by the guest at `guest` (e.g. `/maildir`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on this machine.
    pub host: PathBuf,
    /// Where the plugin sees it (`/NAME`).
    pub guest: String,
}

/// Where a plugin's component comes from.
#[derive(Clone, Debug)]
pub enum PluginSource {
    /// A `.wasm` file in the instance's `plugins/`.
    File(PathBuf),
    /// A component built into the binary (the embedded default).
    Embedded(&'static [u8]),
}

/// Everything needed to load one plugin.
#[derive(Clone, Debug)]
pub struct PluginSpec {
    /// The plugin's identity: its file name without `.wasm`, relative to `plugins/`.
    pub name: String,
    /// Where its component comes from.
    pub source: PluginSource,
    /// Its CPU, memory and time limits.
    pub limits: PluginLimits,
    /// The directories its `dir:NAME` grants give it.
    pub dirs: Vec<DirGrant>,
    /// Capability grants as written in `waraka.toml`.
    pub grants: Vec<String>,
    /// The listener roles whose sessions it takes part in; empty: all.
    pub roles: Vec<Role>,
}

/// A plugin ready to be instantiated for connections.
pub struct LoadedPlugin {
    /// Its name in the chain (the file name without `.wasm`).
    pub name: Arc<str>,
    /// What its `describe` answered, at load or at the last rescan.
    pub description: Description,
    /// Its CPU, memory and time limits.
    pub limits: PluginLimits,
    /// The directories its `dir:NAME` grants give it.
    pub dirs: Vec<DirGrant>,
    /// Capability grants as written in `waraka.toml`.
    pub grants: Arc<[String]>,
    /// The listener roles whose sessions it takes part in; empty: all.
    pub roles: Vec<Role>,
    /// SHA-256 of the component bytes.
    pub hash: String,
    /// Where it was loaded from, for logs.
    pub source: String,
    /// Milliseconds spent compiling (or loading from the cache).
    pub compile_ms: u128,
    /// Whether it was compiled (false: loaded from the compile cache).
    pub compiled: bool,
    pub(super) pre: PluginPre<StoreState>,
    /// Shared by every connection using this version of the plugin.
    pub(super) breaker: Arc<Breaker>,
    /// Where the `outbound-hooks` export is, when the component has it.
    pub(super) outbound: Option<OutboundExportsIndices>,
    /// Idle instances of this version, with these settings, for reuse.
    pub(super) warm: Arc<WarmInstances>,
}

/// What a plugin's `describe` answered, as this host reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// The name the plugin declares.
    pub declared_name: String,
    /// The version the plugin declares.
    pub version: String,
    /// The hooks it implements and this host knows.
    pub hooks: HookSet,
    /// Hook names it declared that this host does not know.
    pub unknown_hooks: Vec<String>,
}

impl Description {
    /// The WIT names of its hooks, in session order, for logs.
    pub fn hook_names(&self) -> Vec<&'static str> {
        self.hooks.iter().map(|h| h.name()).collect()
    }
}

/// The ordered chain of plugins a connection runs with (a snapshot).
#[derive(Default)]
pub struct PluginSet {
    /// The plugins, in chain order.
    pub plugins: Vec<Arc<LoadedPlugin>>,
}

impl PluginSource {
    /// The component bytes, their SHA-256 (hex) and a label for logs.
    pub fn read(&self) -> Result<(Arc<[u8]>, String, String)> {
        let (bytes, label): (Arc<[u8]>, String) = match self {
            PluginSource::File(path) => (
                std::fs::read(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .into(),
                path.display().to_string(),
            ),
            PluginSource::Embedded(bytes) => ((*bytes).into(), "embedded".into()),
        };
        let hash = hex::encode(Sha256::digest(&bytes));
        Ok((bytes, hash, label))
    }
}

impl LoadedPlugin {
    /// The same compiled plugin under new settings (order, limits, grants), without recompiling.
    pub fn with_spec(&self, spec: &PluginSpec) -> LoadedPlugin {
        LoadedPlugin {
            name: self.name.clone(),
            description: self.description.clone(),
            limits: spec.limits,
            dirs: spec.dirs.clone(),
            grants: spec.grants.as_slice().into(),
            roles: spec.roles.clone(),
            hash: self.hash.clone(),
            source: self.source.clone(),
            compile_ms: 0,
            compiled: false,
            pre: self.pre.clone(),
            breaker: self.breaker.clone(),
            outbound: self.outbound.clone(),
            warm: self.warm.fresh(),
        }
    }

    /// The same compiled plugin under `spec`'s settings, implementing what
    /// `description` says (its `describe` answered differently this time).
    pub fn described(&self, spec: &PluginSpec, description: Description) -> LoadedPlugin {
        LoadedPlugin {
            description,
            ..self.with_spec(spec)
        }
    }

    /// Whether `spec` asks for exactly the settings this plugin runs with.
    pub fn same_settings(&self, spec: &PluginSpec) -> bool {
        self.limits == spec.limits && self.dirs == spec.dirs && *self.grants == *spec.grants && self.roles == spec.roles
    }

    /// The hooks it is called for in a session on a listener of `role`.
    pub fn hooks_for(&self, role: Role) -> HookSet {
        if self.roles.is_empty() || self.roles.contains(&role) {
            self.description.hooks
        } else {
            HookSet::default()
        }
    }
}

impl Runtime {
    /// Loads one plugin: compile, link against the world, call `describe`.
    pub async fn load(&self, spec: PluginSpec) -> Result<LoadedPlugin> {
        let (bytes, hash, source) = spec.source.read()?;
        self.load_bytes(spec, bytes, hash, source).await
    }

    /// Loads one plugin from bytes already read and hashed.
    pub async fn load_bytes(
        &self,
        spec: PluginSpec,
        bytes: Arc<[u8]>,
        hash: String,
        source: String,
    ) -> Result<LoadedPlugin> {
        if spec.limits.memory > self.max_memory {
            anyhow::bail!(
                "memory = {} is above the engine's slot size {} ([runtime] max_memory; needs a restart)",
                spec.limits.memory,
                self.max_memory
            );
        }
        let started = Instant::now();
        let runtime = self.clone();
        let key = hash.clone();
        let (component, compiled) = tokio::task::spawn_blocking(move || runtime.compile(&bytes, &key))
            .await
            .map_err(|e| anyhow!("compiler task failed: {e}"))?
            .context("not a valid WebAssembly component")?;
        let compile_ms = started.elapsed().as_millis();
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the component does not fit the waraka:plugin world (imports)")?;
        let outbound = OutboundExportsIndices::new(&instance_pre).ok();
        let pre = PluginPre::new(instance_pre)
            .map_err(anyhow::Error::from)
            .context("the component does not export the waraka:plugin hooks")?;

        let description = self.describe(&spec, &pre, outbound.is_some()).await?;
        Ok(LoadedPlugin {
            name: spec.name.as_str().into(),
            description,
            limits: spec.limits,
            dirs: spec.dirs,
            grants: spec.grants.into(),
            roles: spec.roles,
            hash,
            source,
            compile_ms,
            compiled,
            pre,
            breaker: Arc::default(),
            outbound,
            warm: self.warm_pool(),
        })
    }

    /// Asks a fresh instance of `pre`, under `spec`'s limits and grants,
    /// what the plugin implements (its `describe`), checked against this
    /// host's hooks.
    pub(super) async fn describe(
        &self,
        spec: &PluginSpec,
        pre: &PluginPre<StoreState>,
        exports_outbound: bool,
    ) -> Result<Description> {
        let name: Arc<str> = spec.name.as_str().into();
        let _slot = self
            .instance_slots(1, spec.limits.timeout)
            .await
            .map_err(|fault| anyhow!("describe failed: {fault}"))?;
        let mut store = self.new_store(&name, &spec.limits, &spec.dirs, &spec.grants.as_slice().into(), None)?;
        let _ticking = arm(&mut store, &spec.limits)?;
        let blocking_files = store.data().blocking_files;
        let describe = tokio::time::timeout(spec.limits.timeout, async {
            let plugin: Plugin = pre.instantiate_async(&mut store).await?;
            plugin.waraka_plugin_hooks().call_describe(&mut store).await
        });
        let info = classify(run_guest(blocking_files, describe).await, store.data().limiter.hit)
            .map_err(|fault: Fault| anyhow!("describe failed: {fault}"))?;

        let mut hooks = HookSet::default();
        let mut unknown_hooks = Vec::new();
        for h in &info.hooks {
            match Hook::from_name(h) {
                Some(hook) if hook.is_outbound() && !exports_outbound => {
                    anyhow::bail!("it lists the outbound hook {h} but does not export waraka:plugin/outbound-hooks")
                }
                Some(hook) => hooks.insert(hook),
                None => unknown_hooks.push(h.clone()),
            }
        }
        Ok(Description {
            declared_name: info.name,
            version: info.version,
            hooks,
            unknown_hooks,
        })
    }
}
