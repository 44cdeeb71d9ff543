//! A connection's plugin chain: the [`Policy`] the session consults. Each
//! plugin gets an instance at its first hook on the connection: an idle one
//! another connection left (see [`super::warm`]) or a new one. An instance
//! goes back when the connection ends or goes quiet, and is dropped after
//! any fault (a trapped instance cannot be entered again).

use super::bindings::exports::waraka::plugin::hooks::Guest;
use super::bindings::types;
use super::imports::{address_to_wit, verdict_from_wit, verdict_to_wit};
use super::limits::OnError;
use super::loader::{LoadedPlugin, PluginSet};
use super::runtime::{Runtime, arm, fuel_budget};
use super::store::StoreState;
use super::warm::Live;
use crate::policy::{Decision, Hook, HookCall, HookSet, Policy, Verdict};
use crate::protocol::Reply;
use crate::session::SharedConnection;
use crate::telemetry;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{Instrument, debug, warn};
use wasmtime::{Store, Trap};

/// Why a plugin call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Trap(String),
    OutOfFuel,
    Timeout,
    MemoryCap,
    Instantiate(String),
    /// Not called: its circuit breaker is open after repeated faults.
    Disabled,
    /// Not called: every instance slot (`[runtime] max_instances`) stayed
    /// in use for the plugin's whole timeout. The server's fault, not the
    /// plugin's: no breaker, no tarpit, and always a tempfail.
    Busy,
}

impl Fault {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Trap(_) => "trap",
            Fault::OutOfFuel => "fuel",
            Fault::Timeout => "timeout",
            Fault::MemoryCap => "memory",
            Fault::Instantiate(_) => "instantiate",
            Fault::Disabled => "disabled",
            Fault::Busy => "busy",
        }
    }

    /// Whether the plugin ran and failed: not when its breaker held it back
    /// or the server had no instance slot for it. Only such faults count
    /// toward the breaker and the fault tarpit.
    fn reached_plugin(&self) -> bool {
        !matches!(self, Fault::Disabled | Fault::Busy)
    }

    /// The reply for a hook that ended in this fault.
    fn reply(&self) -> Reply {
        match self {
            Fault::Busy => Reply::new(451, "4.3.2", "Server busy, please try again later"),
            _ => Reply::new(451, "4.3.0", "Temporary local problem, please try again later"),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Trap(why) => write!(f, "trap: {why}"),
            Fault::OutOfFuel => f.write_str("out of fuel (CPU limit)"),
            Fault::Timeout => f.write_str("timed out (wall-clock limit)"),
            Fault::MemoryCap => f.write_str("memory cap reached"),
            Fault::Instantiate(why) => write!(f, "instantiation failed: {why}"),
            Fault::Disabled => f.write_str("disabled by its circuit breaker"),
            Fault::Busy => f.write_str("no free instance slot ([runtime] max_instances) within its timeout"),
        }
    }
}

/// Extra wall-clock time allowed for host imports, which epochs do not interrupt.
pub(super) const HOST_GRACE: Duration = Duration::from_secs(1);

/// Turns the outcome of a guarded call into a value or a classified fault.
pub(super) fn classify<T>(
    outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    memory_hit: bool,
) -> Result<T, Fault> {
    match outcome {
        Err(_) => Err(Fault::Timeout),
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) if memory_hit => Err(Fault::MemoryCap),
        Ok(Err(e)) => Err(match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Fault::OutOfFuel,
            Some(Trap::Interrupt) => Fault::Timeout,
            Some(trap) => {
                // One log line per fault: the wasm backtrace's frames joined with " <- ".
                let backtrace = e
                    .downcast_ref::<wasmtime::WasmBacktrace>()
                    .map(|bt| {
                        let frames: Vec<String> = bt
                            .to_string()
                            .lines()
                            .map(|l| l.trim().to_string())
                            .filter(|l| !l.is_empty() && !l.starts_with("error while executing"))
                            .collect();
                        format!(" (backtrace: {})", frames.join(" <- "))
                    })
                    .unwrap_or_default();
                Fault::Trap(format!("{trap}{backtrace}"))
            }
            None => Fault::Trap(format!("{e:#}").replace('\n', " ")),
        }),
    }
}

/// What a plugin is asked.
enum Call<'a> {
    Hook(&'a HookCall),
    Capabilities,
    Deny(&'a types::Denial),
}

impl Call<'_> {
    /// The WIT name of the function called.
    fn name(&self) -> &'static str {
        match self {
            Call::Hook(call) => call.hook().name(),
            Call::Capabilities => "capabilities",
            Call::Deny(_) => "deny",
        }
    }

    /// The same call owning its arguments.
    fn to_owned(&self) -> OwnedCall {
        match self {
            Call::Hook(call) => OwnedCall::Hook((*call).clone()),
            Call::Capabilities => OwnedCall::Capabilities,
            Call::Deny(denial) => OwnedCall::Deny((*denial).clone()),
        }
    }
}

/// A [`Call`] that owns its arguments, for a call made on another thread.
enum OwnedCall {
    Hook(HookCall),
    Capabilities,
    Deny(types::Denial),
}

impl OwnedCall {
    /// The call, borrowing the arguments.
    fn as_call(&self) -> Call<'_> {
        match self {
            OwnedCall::Hook(call) => Call::Hook(call),
            OwnedCall::Capabilities => Call::Capabilities,
            OwnedCall::Deny(denial) => Call::Deny(denial),
        }
    }
}

/// Calls the guest function `call` names, with its arguments in WIT types.
async fn dispatch(store: &mut Store<StoreState>, hooks: &Guest, call: Call<'_>) -> wasmtime::Result<Answer> {
    use HookCall as H;
    let v = |r: wasmtime::Result<types::Verdict>| r.map(|v| Answer::Verdict(verdict_from_wit(v)));
    let done = |r: wasmtime::Result<()>| r.map(|_| Answer::Done);
    match call {
        Call::Capabilities => hooks.call_capabilities(&mut *store).await.map(Answer::Keywords),
        Call::Deny(denial) => v(hooks.call_deny(&mut *store, denial).await),
        Call::Hook(hook_call) => match hook_call {
            H::Connect => v(hooks.call_connect(&mut *store).await),
            H::Helo(host) => v(hooks.call_helo(&mut *store, host).await),
            H::Ehlo(host) => v(hooks.call_ehlo(&mut *store, host).await),
            H::Auth(a) => {
                let attempt = types::AuthAttempt {
                    mechanism: a.mechanism.clone(),
                    user: a.user.clone(),
                    secret: a.secret.clone(),
                    authzid: a.authzid.clone(),
                    challenge: a.challenge.clone(),
                };
                v(hooks.call_auth(&mut *store, &attempt).await)
            }
            H::UnrecognizedCommand { verb, args } => v(hooks.call_unrecognized_command(&mut *store, verb, args).await),
            H::Mail(a) => v(hooks.call_mail(&mut *store, &address_to_wit(a)).await),
            H::Rcpt(a) => v(hooks.call_rcpt(&mut *store, &address_to_wit(a)).await),
            H::RcptOk(a) => v(hooks.call_rcpt_ok(&mut *store, &address_to_wit(a)).await),
            H::Data => v(hooks.call_data(&mut *store).await),
            H::DataPost => v(hooks.call_data_post(&mut *store).await),
            H::MaxDataExceeded => v(hooks.call_max_data_exceeded(&mut *store).await),
            H::Queue => v(hooks.call_queue(&mut *store).await),
            H::QueueOutbound => v(hooks.call_queue_outbound(&mut *store).await),
            H::QueueOk(id) => done(hooks.call_queue_ok(&mut *store, id).await),
            H::ResetTransaction => done(hooks.call_reset_transaction(&mut *store).await),
            H::Disconnect => done(hooks.call_disconnect(&mut *store).await),
        },
    }
}

enum Answer {
    Verdict(Verdict),
    Keywords(Vec<String>),
    Done,
}

/// The plugin chain of one connection.
pub struct Chain {
    runtime: Runtime,
    set: Arc<PluginSet>,
    conn: SharedConnection,
    /// The hooks each plugin is called for on this connection's listener.
    hooks: Vec<HookSet>,
    live: Vec<Option<Live>>,
    /// Instance slots taken for plugins the current hook has yet to instantiate.
    reserved: Vec<Option<OwnedSemaphorePermit>>,
}

impl Chain {
    /// A chain over a snapshot of the plugin set, for one connection.
    pub fn new(runtime: Runtime, set: Arc<PluginSet>, conn: SharedConnection) -> Self {
        let live = set.plugins.iter().map(|_| None).collect();
        let reserved = set.plugins.iter().map(|_| None).collect();
        let role = conn.lock().role;
        let hooks = set.plugins.iter().map(|plugin| plugin.hooks_for(role)).collect();
        Chain {
            runtime,
            set,
            conn,
            hooks,
            live,
            reserved,
        }
    }

    /// Gives every plugin `hook` will call an instance slot: taken at once
    /// when free; otherwise the connection gives back every instance it holds
    /// and waits for all the hook's slots together, so that no connection
    /// holds slots while it waits for more (connections waiting on each other
    /// would otherwise deadlock once the slots run out).
    async fn reserve(&mut self, hook: Hook) -> Result<(), Fault> {
        let callable =
            |chain: &Chain, i: usize| chain.hooks[i].contains(hook) && !chain.set.plugins[i].breaker.is_open();
        let needs_slot =
            |chain: &Chain, i: usize| callable(chain, i) && chain.live[i].is_none() && chain.reserved[i].is_none();
        let plugins = 0..self.set.plugins.len();
        // Idle instances first; `missing` allocates only when one is needed
        // (the common case, every instance already live, allocates nothing).
        let mut missing = Vec::new();
        for i in plugins.clone() {
            if !needs_slot(self, i) {
                continue;
            }
            match self.set.plugins[i].warm.take() {
                Some(mut live) => {
                    live.adopt(&self.conn);
                    self.live[i] = Some(live);
                }
                None => missing.push(i),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let (mut slots, indexes) = match self.runtime.try_instance_slots(missing.len() as u32) {
            Some(slots) => (slots, missing),
            None => {
                self.park();
                let callable: Vec<usize> = plugins.filter(|&i| callable(self, i)).collect();
                let wait = callable
                    .iter()
                    .map(|&i| self.set.plugins[i].limits.timeout)
                    .max()
                    .unwrap_or_default();
                let slots = self.runtime.instance_slots(callable.len() as u32, wait).await;
                if slots.is_err() {
                    warn!(hook = %hook, "no free plugin instance slots ([runtime] max_instances): server busy");
                    metrics::counter!(telemetry::PLUGIN_FAULTS, "plugin" => "-", "kind" => Fault::Busy.kind())
                        .increment(1);
                }
                (slots?, callable)
            }
        };
        for index in indexes {
            self.reserved[index] = slots.split(1);
        }
        Ok(())
    }

    async fn instantiate(
        runtime: Runtime,
        conn: SharedConnection,
        plugin: &LoadedPlugin,
        reserved: Option<OwnedSemaphorePermit>,
    ) -> Result<Live, Fault> {
        let started = Instant::now();
        let slot = match reserved {
            Some(slot) => slot,
            None => runtime.instance_slots(1, plugin.limits.timeout).await?,
        };
        let mut store = runtime
            .new_store(&plugin.name, &plugin.limits, &plugin.dirs, &plugin.grants, Some(conn))
            .map_err(|e| Fault::Instantiate(format!("{e:#}")))?;
        let _ticking = arm(&mut store, &plugin.limits).map_err(|e| Fault::Instantiate(e.to_string()))?;
        let outcome = tokio::time::timeout(plugin.limits.timeout, plugin.pre.instantiate_async(&mut store)).await;
        let instance = classify(outcome, store.data().limiter.hit)?;
        if telemetry::exporting() {
            metrics::histogram!(telemetry::PLUGIN_INSTANTIATE_SECONDS, "plugin" => plugin.name.clone())
                .record(started.elapsed());
        }
        Ok(Live {
            store,
            plugin: instance,
            _slot: slot,
        })
    }

    /// Calls one plugin through its circuit breaker.
    async fn invoke(&mut self, index: usize, call: Call<'_>) -> Result<Answer, Fault> {
        let loaded = self.set.plugins[index].clone();
        if loaded.breaker.is_open() {
            return Err(Fault::Disabled);
        }
        let result = self.call_plugin(index, &loaded, call).await;
        match &result {
            Ok(_) => loaded.breaker.success(&loaded.name),
            Err(fault) if fault.reached_plugin() => {
                loaded.breaker.fault(&loaded.name, &loaded.limits);
            }
            Err(_) => {}
        }
        result
    }

    async fn call_plugin(&mut self, index: usize, loaded: &LoadedPlugin, call: Call<'_>) -> Result<Answer, Fault> {
        let mut live = match self.live[index].take() {
            Some(live) => live,
            None => {
                let reserved = self.reserved[index].take();
                Self::instantiate(self.runtime.clone(), self.conn.clone(), loaded, reserved).await?
            }
        };
        let _ticking = arm(&mut live.store, &loaded.limits).map_err(|e| Fault::Trap(e.to_string()))?;
        let hook_name = call.name();
        let timeout = loaded.limits.timeout + HOST_GRACE;
        let started = Instant::now();
        let (live, outcome) = if live.store.data().blocking_files {
            // Its file calls block the thread they run on: the whole call
            // runs on a blocking-pool thread, one hand-over for all of them.
            let call = call.to_owned();
            let handle = tokio::runtime::Handle::current();
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                let run = async move {
                    let hooks = live.plugin.waraka_plugin_hooks();
                    let outcome = tokio::time::timeout(timeout, dispatch(&mut live.store, hooks, call.as_call())).await;
                    (live, outcome)
                };
                handle.block_on(run.instrument(span))
            })
            .await
            .map_err(|e| Fault::Trap(format!("the thread of the hook call failed: {e}")))?
        } else {
            let hooks = live.plugin.waraka_plugin_hooks();
            let outcome = tokio::time::timeout(timeout, dispatch(&mut live.store, hooks, call)).await;
            (live, outcome)
        };
        let elapsed = started.elapsed();
        let answer = classify(outcome, live.store.data().limiter.hit)?;
        if telemetry::exporting() {
            let fuel = live
                .store
                .get_fuel()
                .map_or(0, |left| fuel_budget(&loaded.limits).saturating_sub(left));
            telemetry::plugin_call(&loaded.name, hook_name, elapsed, fuel);
        }
        self.live[index] = Some(live);
        Ok(answer)
    }

    fn report(&self, index: usize, hook: Hook, fault: &Fault) {
        let plugin = &self.set.plugins[index];
        if *fault == Fault::Disabled {
            // Logged once when the breaker opened, not at every held-back call.
            debug!(plugin = %plugin.name, hook = %hook, "plugin skipped: {fault}");
            return;
        }
        warn!(plugin = %plugin.name, hook = %hook, on_error = ?plugin.limits.on_error, "plugin fault: {fault}");
        metrics::counter!(telemetry::PLUGIN_FAULTS, "plugin" => plugin.name.clone(), "kind" => fault.kind())
            .increment(1);
    }

    /// How long to hold the session after a fault its client caused, as the
    /// fault tarpit says (nothing when the plugin never ran: that costs the
    /// server nothing, or is not the client's doing).
    fn tarpit_delay(&self, fault: &Fault) -> Duration {
        if !fault.reached_plugin() {
            return Duration::ZERO;
        }
        let client = self.conn.lock().peer.ip();
        let delay = self.runtime.tarpit().fault(client);
        if !delay.is_zero() {
            debug!(%client, ?delay, "fault tarpit: holding the reply");
        }
        delay
    }

    /// Runs the `deny` hook; true when a plugin overrides the rejection.
    async fn deny_overridden(&mut self, hook: Hook, plugin: &str, verdict: &Verdict) -> bool {
        let denial = types::Denial {
            hook: hook.name().into(),
            plugin: plugin.into(),
            verdict: verdict_to_wit(verdict),
        };
        if self.reserve(Hook::Deny).await.is_err() {
            return false;
        }
        for index in 0..self.set.plugins.len() {
            if !self.hooks[index].contains(Hook::Deny) {
                continue;
            }
            match self.invoke(index, Call::Deny(&denial)).await {
                Ok(Answer::Verdict(Verdict::Cont)) => continue,
                Ok(Answer::Verdict(Verdict::Ok(_))) => return true,
                Ok(_) => return false,
                Err(fault) => self.report(index, Hook::Deny, &fault),
            }
        }
        false
    }
}

impl Policy for Chain {
    fn implements(&self, hook: Hook) -> bool {
        self.hooks.iter().any(|hooks| hooks.contains(hook))
    }

    async fn decide(&mut self, mut call: HookCall) -> Decision {
        let hook = call.hook();
        if let Err(fault) = self.reserve(hook).await {
            return Decision {
                verdict: Verdict::Denysoft(Some(fault.reply())),
                plugin: None,
            };
        }
        // Whether a plugin has run this hook: the candidate of `rcpt` is read
        // back only then, so a chain with one recipient plugin pays nothing.
        let mut ran = false;
        for index in 0..self.set.plugins.len() {
            if !self.hooks[index].contains(hook) {
                continue;
            }
            if let HookCall::Rcpt(candidate) = &mut call
                && std::mem::replace(&mut ran, true)
            {
                // An earlier plugin may have rewritten it (set-recipient): each sees it as it is now.
                let current = self
                    .conn
                    .lock()
                    .transaction
                    .as_ref()
                    .and_then(|tx| tx.recipients.last().cloned());
                if let Some(current) = current {
                    *candidate = current;
                }
            }
            let verdict = match self.invoke(index, Call::Hook(&call)).await {
                Ok(Answer::Verdict(v)) => v,
                Ok(_) => Verdict::Cont,
                Err(fault) => {
                    self.report(index, hook, &fault);
                    let hold = self.tarpit_delay(&fault);
                    if !hold.is_zero() {
                        tokio::time::sleep(hold).await;
                    }
                    // A plugin skipped because the server is busy would let
                    // mail past its check: that is always a tempfail.
                    if fault != Fault::Busy && self.set.plugins[index].limits.on_error == OnError::Continue {
                        continue;
                    }
                    // A fault never reaches the deny hook: nothing may turn it into a 250.
                    return Decision {
                        verdict: Verdict::Denysoft(Some(fault.reply())),
                        plugin: Some(self.set.plugins[index].name.to_string()),
                    };
                }
            };
            if verdict == Verdict::Cont {
                continue;
            }
            let name = self.set.plugins[index].name.clone();
            if verdict.is_rejection() && self.deny_overridden(hook, &name, &verdict).await {
                continue;
            }
            return Decision {
                verdict,
                plugin: Some(name.to_string()),
            };
        }
        Decision::cont()
    }

    async fn capabilities(&mut self) -> Vec<String> {
        if self.reserve(Hook::Capabilities).await.is_err() {
            return Vec::new();
        }
        let mut keywords = Vec::new();
        for index in 0..self.set.plugins.len() {
            if !self.hooks[index].contains(Hook::Capabilities) {
                continue;
            }
            match self.invoke(index, Call::Capabilities).await {
                Ok(Answer::Keywords(k)) => keywords.extend(k.into_iter().take(32)),
                Ok(_) => {}
                Err(fault) => self.report(index, Hook::Capabilities, &fault),
            }
        }
        keywords
    }

    async fn notify(&mut self, call: HookCall) {
        let hook = call.hook();
        if self.reserve(hook).await.is_err() {
            return;
        }
        for index in 0..self.set.plugins.len() {
            if !self.hooks[index].contains(hook) {
                continue;
            }
            if let Err(fault) = self.invoke(index, Call::Hook(&call)).await {
                self.report(index, hook, &fault);
            }
        }
        if hook == Hook::Disconnect {
            self.park();
        }
    }

    /// Gives the connection's instances back: to their plugins' idle
    /// instances for the next connection, or to the pool. The next hook
    /// takes an idle instance or a new one.
    fn park(&mut self) {
        for (plugin, live) in self.set.plugins.iter().zip(&mut self.live) {
            if let Some(live) = live.take() {
                plugin.warm.give_back(live);
            }
        }
        self.reserved.iter_mut().for_each(|r| *r = None);
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        self.park();
    }
}
