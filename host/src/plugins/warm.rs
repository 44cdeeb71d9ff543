//! Plugin instances and the idle ones a plugin keeps for reuse. Creating an
//! instance costs far more than calling one (the pool resets and the guest
//! page-faults its memory back in), so an instance whose connection is done
//! or quiet waits here for the next connection instead of being dropped, as
//! a Haraka plugin's module serves one connection after another.

use super::bindings::Plugin;
use super::chain::Fault;
use super::store::StoreState;
use crate::session::SharedConnection;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Store;

/// An idle instance unused this long is dropped at the next visit to its
/// plugin's pool, so a burst's instances do not stay resident forever.
const WARM_FOR: Duration = Duration::from_secs(60);

/// A plugin instance. Fields drop in order: the store gives its pool slots
/// back before the permit for them goes.
pub(super) struct Live {
    pub store: Store<StoreState>,
    pub plugin: Plugin,
    pub _slot: OwnedSemaphorePermit,
}

impl Live {
    /// Binds the instance to the connection it now serves: its host imports
    /// see that connection and its output is logged in the current span.
    pub fn adopt(&mut self, conn: &SharedConnection) {
        let state = self.store.data_mut();
        state.host.conn = Some(conn.clone());
        *state.output_span.lock().unwrap_or_else(|e| e.into_inner()) = tracing::Span::current();
    }

    /// Whether the instance may serve another connection: not once it has
    /// grown past half its memory cap (a guest that leaks is renewed
    /// before the leak reaches the cap).
    fn reusable(&self) -> bool {
        let limiter = &self.store.data().limiter;
        limiter.largest <= limiter.cap / 2
    }
}

/// The pool's instance slots, one permit each, and the idle instances that
/// hold some of them. Idle instances give way to connections that need a
/// slot: a connection short of slots drops them all before it waits, and
/// nothing is kept idle while one waits.
pub(super) struct InstanceSlots {
    permits: Arc<Semaphore>,
    /// Idle instances each plugin keeps (`[runtime] warm_instances`).
    warm_capacity: usize,
    /// Connections waiting for slots right now.
    waiting: AtomicUsize,
    pools: Mutex<Vec<Weak<WarmInstances>>>,
}

/// Counts a waiting connection while it exists.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl InstanceSlots {
    /// `n` slots, none in use; each plugin keeps up to `warm_capacity` idle
    /// instances.
    pub fn new(n: usize, warm_capacity: usize) -> Arc<Self> {
        Arc::new(InstanceSlots {
            permits: Arc::new(Semaphore::new(n)),
            warm_capacity,
            waiting: AtomicUsize::new(0),
            pools: Mutex::default(),
        })
    }

    /// A new, empty pool for one plugin's idle instances.
    pub fn warm_pool(self: &Arc<Self>) -> Arc<WarmInstances> {
        let pool = Arc::new(WarmInstances {
            slots: self.clone(),
            idle: Mutex::default(),
        });
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
        pool
    }

    /// Takes `n` slots together if they are free now, dropping idle
    /// instances to free them if need be.
    pub fn try_take(&self, n: u32) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_many_owned(n) {
            return Some(permit);
        }
        self.drop_idle();
        self.permits.clone().try_acquire_many_owned(n).ok()
    }

    /// Waits up to `wait` for `n` slots taken together ([`Fault::Busy`] if
    /// they do not come).
    pub async fn take(&self, n: u32, wait: Duration) -> Result<OwnedSemaphorePermit, Fault> {
        if let Some(permit) = self.try_take(n) {
            return Ok(permit);
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        // Instances given back after this are dropped, not kept (see
        // `WarmInstances::give_back`); these are the ones kept before.
        self.drop_idle();
        match tokio::time::timeout(wait, self.permits.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Fault::Busy),
        }
    }

    fn drop_idle(&self) {
        let pools: Vec<Arc<WarmInstances>> = {
            let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            pools.iter().filter_map(Weak::upgrade).collect()
        };
        pools.iter().for_each(|pool| pool.clear());
    }
}

/// The idle instances of one plugin version, most recently used last.
pub(super) struct WarmInstances {
    slots: Arc<InstanceSlots>,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    /// Set when the plugin version leaves the live set: nothing is kept any more.
    retired: bool,
    instances: VecDeque<(Live, Instant)>,
}

impl WarmInstances {
    /// An empty pool like this one (for the same plugin under new settings).
    pub fn fresh(&self) -> Arc<WarmInstances> {
        self.slots.warm_pool()
    }

    /// The most recently used idle instance, if any.
    pub fn take(&self) -> Option<Live> {
        if self.slots.warm_capacity == 0 {
            return None;
        }
        let (live, expired) = {
            let mut idle = self.lock();
            let live = idle.instances.pop_back().map(|(live, _)| live);
            (live, idle.expired())
        };
        drop(expired);
        live
    }

    /// Keeps an instance that finished its work without a fault for the
    /// next connection, or drops it when the pool is full or retired, the
    /// instance has grown too much, or a connection is waiting for a slot.
    pub fn give_back(&self, mut live: Live) {
        if self.slots.warm_capacity == 0 || !live.reusable() {
            return;
        }
        live.store.data_mut().host.conn = None;
        let refused = {
            let mut idle = self.lock();
            let wanted = !idle.retired && idle.instances.len() < self.slots.warm_capacity;
            if !wanted || self.slots.waiting.load(Ordering::SeqCst) > 0 {
                Some(live)
            } else {
                idle.instances.push_back((live, Instant::now()));
                None
            }
        };
        drop(refused);
    }

    /// Drops every idle instance (their slots go back to the pool).
    pub fn clear(&self) {
        let instances = std::mem::take(&mut self.lock().instances);
        drop(instances);
    }

    /// Drops every idle instance and keeps none from now on: this version
    /// of the plugin was replaced or removed.
    pub fn retire(&self) {
        self.lock().retired = true;
        self.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Idle {
    /// Removes the instances idle for longer than [`WARM_FOR`], to be dropped
    /// once the lock is released.
    fn expired(&mut self) -> Vec<Live> {
        let mut expired = Vec::new();
        while let Some((_, since)) = self.instances.front() {
            if since.elapsed() < WARM_FOR {
                break;
            }
            if let Some((live, _)) = self.instances.pop_front() {
                expired.push(live);
            }
        }
        expired
    }
}
