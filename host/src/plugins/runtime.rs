//! The wasmtime engine, linker and store factory shared by every plugin.

use super::bindings::Plugin;
use super::chain::Fault;
use super::epoch::{EpochTicker, Ticking};
use super::limits::{MemoryLimiter, PluginLimits};
use super::loader::DirGrant;
use super::store::{GrantedDirs, GuestOutput, HostContext, LogBudget, StoreState};
use super::tarpit::FaultTarpit;
use super::warm::{InstanceSlots, WarmInstances};
use crate::capabilities::{
    Antivirus, BlobStore, ConfigFiles, Database, Directory, DkimKeys, Dns, DovecotAuth, GeoIp, GroupSync, HttpService,
    KvStore, Milter, NoteStore, P0f, SpamScanner, Srs,
};
use crate::delivery::{ClientSettings, DmarcFailureReports, DmarcReports};
use crate::session::SharedConnection;
use anyhow::{Context as _, Result};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    CallHook, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// Fuel every call from a guest into the host costs: about what a typical
/// host call (a note, a config read, a log line: 5–15 µs) costs the host in
/// time, counted in WebAssembly instructions. A guest looping over cheap host
/// calls runs out of fuel like any other loop.
pub const HOST_CALL_FUEL: u64 = 10_000;

/// Engine-wide settings.
#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    /// Plugin instances alive at once (pooling allocator slots).
    pub max_instances: u32,
    /// Largest memory cap of any plugin (the size of a pool slot).
    pub max_memory: usize,
    /// Where compiled components are cached (none: always compile).
    pub cache_dir: Option<PathBuf>,
    /// How long the first reply after a plugin fault a client caused is
    /// held (doubled per further fault; zero: never). See [`FaultTarpit`].
    pub fault_delay: Duration,
    /// Idle instances kept per plugin for reuse (see `plugins::warm`).
    pub warm_instances: u32,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        let config = waraka_config::RuntimeConfig::default();
        RuntimeSettings {
            max_instances: config.max_instances,
            max_memory: 64 * 1024 * 1024,
            cache_dir: None,
            fault_delay: config.fault_delay,
            warm_instances: config.warm_instances,
        }
    }
}

/// The capability backends, by grant.
#[derive(Default)]
pub struct Backends {
    /// Key/value stores by name (`kv:NAME` grants).
    pub kv: HashMap<String, Arc<KvStore>>,
    /// The resolver (`dns` grant).
    pub dns: Arc<Dns>,
    /// Blob stores by name (`blobstore:NAME` grants).
    pub blobstore: HashMap<String, Arc<BlobStore>>,
    /// Databases by name (`sql:NAME` grants).
    pub sql: HashMap<String, Arc<Database>>,
    /// How the `forward` capability's SMTP client presents itself and waits.
    pub smtp_client: ClientSettings,
    /// The DKIM signing keys (`dkim` grant).
    pub dkim: Arc<DkimKeys>,
    /// The sender rewriting of `[srs]`, when it has a secret
    /// (`outbound-queue` grant: reversing the senders of forwarded mail).
    pub srs: Option<Arc<Srs>>,
    /// The virus scanner (`antivirus` grant), when `[antivirus]` names one.
    pub antivirus: Option<Arc<Antivirus>>,
    /// The spam scanner (`spamfilter` grant), when `[spamfilter]` names one.
    pub spamfilter: Option<Arc<SpamScanner>>,
    /// The location databases (`geoip` grant), when `[geoip]` names some.
    pub geoip: Option<Arc<GeoIp>>,
    /// The p0f daemon (`p0f` grant), when `[p0f]` names its socket.
    pub p0f: Option<Arc<P0f>>,
    /// The password authority (`sasl` grant), when `[sasl]` names one.
    pub sasl: Option<Arc<DovecotAuth>>,
    /// Where the `authentication` grant's DMARC results are counted for
    /// aggregate reports, when they are sent.
    pub dmarc_reports: Option<Arc<DmarcReports>>,
    /// Where the `authentication` grant's DMARC failures wait to be
    /// reported, when they are.
    pub dmarc_failures: Option<Arc<DmarcFailureReports>>,
    /// Mail filters by name (`milter:NAME` grants).
    pub milter: HashMap<String, Arc<Milter>>,
    /// LDAP directories by name (`ldap:NAME` grants).
    pub ldap: HashMap<String, Arc<Directory>>,
    /// HTTP services by name (`http:NAME` grants).
    pub http: HashMap<String, Arc<HttpService>>,
}

/// Services shared by every plugin and connection.
pub struct Services {
    /// Notes with the `server` scope, shared by every connection.
    pub server_notes: Mutex<NoteStore>,
    /// Every plugin's config files.
    pub config: ConfigFiles,
    /// The stores and databases grants refer to.
    pub backends: Backends,
    /// Shares the fsyncs plugins make through WASI (see `plugins::wasi_sync`).
    pub group_sync: GroupSync,
}

impl Services {
    /// Services over these plugin config files and capability backends.
    pub fn new(config: ConfigFiles, backends: Backends) -> Services {
        Services {
            server_notes: Mutex::new(NoteStore::new(Default::default())),
            config,
            backends,
            group_sync: GroupSync::default(),
        }
    }
}

/// The engine with its pooling allocator, the linker with every host import,
/// and the epoch ticker that enforces wall-clock deadlines.
#[derive(Clone)]
pub struct Runtime {
    pub(super) engine: Engine,
    pub(super) linker: Arc<Linker<StoreState>>,
    pub(super) services: Arc<Services>,
    cache_dir: Option<PathBuf>,
    /// Identifies the engine's code generation settings in cache file names.
    engine_key: String,
    /// The largest memory cap a plugin can have (the pool slot size).
    pub max_memory: usize,
    tarpit: Arc<FaultTarpit>,
    /// One permit per pool slot for a component instance: an instance waits
    /// for a free slot instead of failing when every one is in use.
    slots: Arc<InstanceSlots>,
    ticker: Arc<EpochTicker>,
}

impl Runtime {
    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(settings: RuntimeSettings, services: Services) -> Result<Runtime> {
        let mut pool = PoolingAllocationConfig::new();
        let n = settings.max_instances;
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(32)
            .max_memory_size(settings.max_memory);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("creating the wasmtime engine")?;

        let mut linker = Linker::<StoreState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        super::wasi_sync::add_to_linker(&mut linker)?;
        Plugin::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)?;

        let ticker = EpochTicker::start(engine.weak())?;
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{:016x}", hasher.finish());
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            services: Arc::new(services),
            cache_dir: settings.cache_dir,
            engine_key,
            max_memory: settings.max_memory,
            tarpit: Arc::new(FaultTarpit::new(settings.fault_delay)),
            slots: InstanceSlots::new(n as usize, settings.warm_instances as usize),
            ticker,
        })
    }

    /// Takes `n` instance slots at once if they are free now (idle
    /// instances are dropped to free them if need be).
    pub(super) fn try_instance_slots(&self, n: u32) -> Option<OwnedSemaphorePermit> {
        self.slots.try_take(n)
    }

    /// Waits up to `wait` for `n` instance slots taken together
    /// ([`Fault::Busy`] if they do not come). Hold each slot until the store
    /// that uses it is dropped: a store gives its pool slots back when it is
    /// dropped, not before.
    pub(super) async fn instance_slots(&self, n: u32, wait: Duration) -> Result<OwnedSemaphorePermit, Fault> {
        self.slots.take(n, wait).await
    }

    /// An empty pool for a plugin's idle instances (`[runtime] warm_instances`).
    pub(super) fn warm_pool(&self) -> Arc<WarmInstances> {
        self.slots.warm_pool()
    }

    /// The fault tarpit shared by every connection.
    pub fn tarpit(&self) -> &FaultTarpit {
        &self.tarpit
    }

    /// The shared services.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Compiles a component, or loads it from the on-disk cache keyed by the
    /// content hash and the engine settings. Returns whether it was compiled
    /// now. CPU-heavy: call it off the async threads.
    pub fn compile(&self, bytes: &[u8], hash: &str) -> Result<(Component, bool)> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{hash}-{}.cwasm", self.engine_key)));
        if let Some(path) = cached.as_ref().filter(|p| p.exists()) {
            // SAFETY: the cache directory is written only by this runtime
            // (below), with artifacts of this engine configuration.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(component) => return Ok((component, false)),
                Err(e) => tracing::warn!(path = %path.display(), "ignoring unusable cached component: {e}"),
            }
        }
        let component = Component::from_binary(&self.engine, bytes).map_err(anyhow::Error::from)?;
        if let Some(path) = cached
            && let Err(e) = write_atomically(&path, &component.serialize().map_err(anyhow::Error::from)?)
        {
            tracing::warn!(path = %path.display(), "could not cache the compiled component: {e:#}");
        }
        Ok((component, true))
    }

    /// A fresh store for one plugin and (optionally) one connection.
    pub(super) fn new_store(
        &self,
        plugin: &Arc<str>,
        limits: &PluginLimits,
        dirs: &[DirGrant],
        grants: &Arc<[String]>,
        conn: Option<SharedConnection>,
    ) -> Result<Store<StoreState>> {
        let log_budget = LogBudget::default();
        let output = GuestOutput {
            plugin: plugin.clone(),
            span: Arc::new(Mutex::new(tracing::Span::current())),
            budget: log_budget.clone(),
        };
        let output_span = output.span.clone();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(output.clone()).stderr(output);
        // A plugin with directories makes several file calls per hook
        // (queue/maildir: create, write, fsync, rename, open, fsync), each a
        // trip to the blocking pool and back. On a multi-threaded runtime its
        // hook calls run on a blocking-pool thread instead (one hand-over per
        // call), and file calls block that thread directly.
        let blocking_files = !dirs.is_empty()
            && tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        wasi.allow_blocking_current_thread(blocking_files);
        for dir in dirs {
            std::fs::create_dir_all(&dir.host)
                .with_context(|| format!("creating granted directory {}", dir.host.display()))?;
            wasi.preopened_dir(&dir.host, &dir.guest, FsPerms::ReadWrite)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("opening granted directory {}", dir.host.display()))?;
        }
        let state = StoreState {
            wasi: wasi.build(),
            table: Default::default(),
            limiter: MemoryLimiter::new(limits.memory),
            output_span,
            blocking_files,
            dirs: GrantedDirs::new(dirs),
            deadline: Instant::now() + limits.timeout,
            ticker: self.ticker.clone(),
            log_budget,
            host: HostContext {
                plugin: plugin.clone(),
                grants: grants.clone(),
                conn,
                services: self.services.clone(),
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.call_hook(|mut ctx, hook| {
            if matches!(hook, CallHook::CallingHost) {
                let fuel = ctx.get_fuel()?;
                if fuel < HOST_CALL_FUEL {
                    return Err(Trap::OutOfFuel.into());
                }
                ctx.set_fuel(fuel - HOST_CALL_FUEL)?;
            }
            Ok(())
        });
        // Yield to other tasks every tick while the guest runs; stop it at the deadline.
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok(store)
    }
}

/// Writes a file under a temporary name, fsyncs it and renames it into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("cache files live in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Runs a guest call on this task; in `block_in_place` when the store's
/// WASI file calls block the calling thread (see `Runtime::new_store`), so
/// that the runtime's other tasks move to another thread meanwhile. For the
/// rare calls (a plugin's `describe` at load, outbound hooks); the chain's
/// hook calls move their store to a blocking-pool thread instead, which
/// costs less per call (see `Chain::call_plugin`).
pub(super) async fn run_guest<F: std::future::Future>(blocking_files: bool, call: F) -> F::Output {
    if blocking_files {
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(call))
    } else {
        call.await
    }
}

/// The fuel one hook call starts with (`fuel = 0`: unlimited).
pub(super) fn fuel_budget(limits: &PluginLimits) -> u64 {
    if limits.fuel == 0 { u64::MAX } else { limits.fuel }
}

/// Arms a store for one hook call: fresh fuel and a fresh deadline, and the
/// epoch ticking (to enforce it) until the returned guard is dropped after
/// the call.
pub(super) fn arm(store: &mut Store<StoreState>, limits: &PluginLimits) -> Result<Ticking> {
    store.set_fuel(fuel_budget(limits))?;
    store.data_mut().deadline = Instant::now() + limits.timeout;
    store.data_mut().limiter.hit = false;
    store.data_mut().log_budget.refill();
    store.set_epoch_deadline(1);
    Ok(store.data().ticker.ticking())
}
