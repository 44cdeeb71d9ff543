//! The wasmtime engine, linker and store factory shared by every plugin.

use super::bindings::Plugin;
use super::limits::{MemoryLimiter, PluginLimits};
use super::loader::DirGrant;
use super::store::{GuestOutput, HostContext, StoreState};
use crate::capabilities::{ConfigFiles, NoteStore};
use crate::session::SharedConnection;
use anyhow::{Context as _, Result};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// Engine-wide settings.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeSettings {
    /// Plugin instances alive at once (pooling allocator slots).
    pub max_instances: u32,
    /// Largest memory cap of any plugin (the size of a pool slot).
    pub max_memory: usize,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            max_instances: 1000,
            max_memory: 64 * 1024 * 1024,
        }
    }
}

/// Services shared by every plugin and connection.
pub struct Services {
    pub server_notes: Mutex<NoteStore>,
    pub config: ConfigFiles,
}

/// The engine with its pooling allocator, the linker with every host import,
/// and the 1 ms epoch ticker that enforces wall-clock deadlines.
#[derive(Clone)]
pub struct Runtime {
    pub(super) engine: Engine,
    pub(super) linker: Arc<Linker<StoreState>>,
    pub(super) services: Arc<Services>,
}

/// How often the epoch advances (the precision of plugin timeouts).
const EPOCH_TICK: Duration = Duration::from_millis(1);

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
        Plugin::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)?;

        let weak = engine.weak();
        std::thread::Builder::new().name("waraka-epoch".into()).spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            services: Arc::new(services),
        })
    }

    /// The shared services.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Compiles a component (CPU-heavy: call it off the async threads).
    pub fn compile(&self, bytes: &[u8]) -> Result<Component> {
        Component::from_binary(&self.engine, bytes).map_err(anyhow::Error::from)
    }

    /// A fresh store for one plugin and (optionally) one connection.
    pub(super) fn new_store(
        &self,
        plugin: &Arc<str>,
        limits: &PluginLimits,
        dirs: &[DirGrant],
        conn: Option<SharedConnection>,
    ) -> Result<Store<StoreState>> {
        let output = GuestOutput {
            plugin: plugin.clone(),
            span: tracing::Span::current(),
        };
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(output.clone()).stderr(output);
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
            limiter: MemoryLimiter {
                cap: limits.memory,
                hit: false,
            },
            deadline: Instant::now() + limits.timeout,
            host: HostContext {
                plugin: plugin.clone(),
                conn,
                services: self.services.clone(),
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
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

/// Arms a store for one hook call: fresh fuel and a fresh deadline.
pub(super) fn arm(store: &mut Store<StoreState>, limits: &PluginLimits) -> Result<()> {
    store.set_fuel(if limits.fuel == 0 { u64::MAX } else { limits.fuel })?;
    store.data_mut().deadline = Instant::now() + limits.timeout;
    store.data_mut().limiter.hit = false;
    store.set_epoch_deadline(1);
    Ok(())
}
