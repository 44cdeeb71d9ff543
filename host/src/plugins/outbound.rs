//! The outbound hooks of the loaded plugins, as the delivery worker's
//! [`OutboundPolicy`]. Each call instantiates, under the plugin's limits,
//! only the plugins that list the hook, with no connection: their imports
//! see server notes and config, never a session.

use super::bindings::outbound::{
    Delivery, NextHop, OutboundExports, RecipientFailure as WitFailure, SendDecision as WitSend,
};
use super::chain::{Fault, HOST_GRACE, classify};
use super::loader::LoadedPlugin;
use super::registry::Registry;
use super::runtime::{Runtime, arm, run_guest};
use super::store::StoreState;
use crate::policy::{DeliveryInfo, Hook, HookFault, NextHopSpec, OutboundPolicy, RecipientFailure, SendDecision};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;
use wasmtime::Store;

/// The shortest wait a plugin may set (a `delay` or `deferred` of 0 s).
const MIN_WAIT: Duration = Duration::from_secs(1);

/// The plugins' outbound hooks, over the registry's current plugin set.
pub struct PluginOutbound {
    registry: Arc<Registry>,
}

/// One outbound hook call with its (WIT) arguments.
#[derive(Clone, Copy)]
enum Call<'a> {
    SendEmail(&'a Delivery),
    GetMx(&'a Delivery),
    Deferred(&'a Delivery, &'a [WitFailure], u32),
    Bounce(&'a Delivery, &'a [WitFailure]),
    Delivered(&'a Delivery, &'a [String], &'a str, &'a str),
}

/// What a plugin answered.
enum Answer {
    Send(WitSend),
    Hops(Option<Vec<NextHop>>),
    Wait(Option<u32>),
    Suppress(bool),
    Done,
}

impl Call<'_> {
    fn hook(&self) -> Hook {
        match self {
            Call::SendEmail(_) => Hook::SendEmail,
            Call::GetMx(_) => Hook::GetMx,
            Call::Deferred(..) => Hook::Deferred,
            Call::Bounce(..) => Hook::Bounce,
            Call::Delivered(..) => Hook::Delivered,
        }
    }
}

fn delivery_to_wit(d: &DeliveryInfo) -> Delivery {
    Delivery {
        id: d.id.clone(),
        domain: d.domain.clone(),
        sender: d.sender.clone(),
        recipients: d.recipients.clone(),
        attempts: d.attempts,
        arrival_ms: d.arrival_ms,
    }
}

fn failures_to_wit(failures: &[RecipientFailure]) -> Vec<WitFailure> {
    failures
        .iter()
        .map(|f| WitFailure {
            recipient: f.recipient.clone(),
            status: f.status.clone(),
            diagnostic: f.diagnostic.clone(),
        })
        .collect()
}

fn seconds(wait: u32) -> Duration {
    Duration::from_secs(wait.into()).max(MIN_WAIT)
}

/// Instantiates `plugin` without a connection and makes one outbound call.
async fn invoke(runtime: &Runtime, plugin: &LoadedPlugin, call: Call<'_>) -> Result<Answer, Fault> {
    let indices = plugin
        .outbound
        .as_ref()
        .ok_or_else(|| Fault::Instantiate("no outbound-hooks export".into()))?;
    let _slot = runtime.instance_slots(1, plugin.limits.timeout).await?;
    let mut store: Store<StoreState> = runtime
        .new_store(&plugin.name, &plugin.limits, &plugin.dirs, &plugin.grants, None)
        .map_err(|e| Fault::Instantiate(format!("{e:#}")))?;
    let _instantiating = arm(&mut store, &plugin.limits).map_err(|e| Fault::Instantiate(e.to_string()))?;
    let instantiated = tokio::time::timeout(plugin.limits.timeout, async {
        let instance = plugin.pre.instance_pre().instantiate_async(&mut store).await?;
        indices.load(&mut store, &instance)
    })
    .await;
    let exports: OutboundExports = classify(instantiated, store.data().limiter.hit)?;
    let _ticking = arm(&mut store, &plugin.limits).map_err(|e| Fault::Trap(e.to_string()))?;
    let hooks = exports.waraka_plugin_outbound_hooks();
    let blocking_files = store.data().blocking_files;
    let run = async {
        let store = &mut store;
        match call {
            Call::SendEmail(d) => hooks.call_send_email(store, d).await.map(Answer::Send),
            Call::GetMx(d) => hooks.call_get_mx(store, d).await.map(Answer::Hops),
            Call::Deferred(d, failures, retry_in) => hooks
                .call_deferred(store, d, failures, retry_in)
                .await
                .map(Answer::Wait),
            Call::Bounce(d, failures) => hooks.call_bounce(store, d, failures).await.map(Answer::Suppress),
            Call::Delivered(d, recipients, host, reply) => hooks
                .call_delivered(store, d, recipients, host, reply)
                .await
                .map(|()| Answer::Done),
        }
    };
    let outcome = run_guest(
        blocking_files,
        tokio::time::timeout(plugin.limits.timeout + HOST_GRACE, run),
    )
    .await;
    classify(outcome, store.data().limiter.hit)
}

impl PluginOutbound {
    /// The outbound hooks of whatever plugin set `registry` holds at each call.
    pub fn new(registry: Arc<Registry>) -> PluginOutbound {
        PluginOutbound { registry }
    }

    /// Asks each plugin that lists the hook, in chain order, until `decides`
    /// accepts an answer; `None` when none did. A fault ends the chain.
    async fn ask(&self, call: Call<'_>, decides: impl Fn(&Answer) -> bool) -> Result<Option<Answer>, HookFault> {
        let hook = call.hook();
        let set = self.registry.current();
        for plugin in set.plugins.iter().filter(|p| p.description.hooks.contains(hook)) {
            match invoke(self.registry.runtime(), plugin, call).await {
                Ok(answer) if decides(&answer) => return Ok(Some(answer)),
                Ok(_) => {}
                Err(fault) => {
                    warn!(plugin = %plugin.name, hook = %hook, "plugin fault: {fault}");
                    return Err(HookFault {
                        plugin: plugin.name.to_string(),
                        hook: hook.name(),
                        fault: fault.to_string(),
                    });
                }
            }
        }
        Ok(None)
    }
}

impl OutboundPolicy for PluginOutbound {
    fn send_email<'a>(&'a self, delivery: &'a DeliveryInfo) -> BoxFuture<'a, Result<SendDecision, HookFault>> {
        Box::pin(async move {
            let d = delivery_to_wit(delivery);
            let answer = self
                .ask(Call::SendEmail(&d), |a| !matches!(a, Answer::Send(WitSend::Deliver)))
                .await?;
            Ok(match answer {
                Some(Answer::Send(WitSend::Delay(wait))) => SendDecision::Delay(seconds(wait)),
                Some(Answer::Send(WitSend::Drop)) => SendDecision::Drop,
                _ => SendDecision::Deliver,
            })
        })
    }

    fn get_mx<'a>(&'a self, delivery: &'a DeliveryInfo) -> BoxFuture<'a, Result<Option<Vec<NextHopSpec>>, HookFault>> {
        Box::pin(async move {
            let d = delivery_to_wit(delivery);
            let answer = self
                .ask(Call::GetMx(&d), |a| matches!(a, Answer::Hops(Some(_))))
                .await?;
            Ok(match answer {
                Some(Answer::Hops(Some(hops))) => Some(
                    hops.into_iter()
                        .map(|h| NextHopSpec {
                            host: h.host,
                            port: h.port,
                        })
                        .collect(),
                ),
                _ => None,
            })
        })
    }

    fn deferred<'a>(
        &'a self,
        delivery: &'a DeliveryInfo,
        failures: &'a [RecipientFailure],
        retry_in: Duration,
    ) -> BoxFuture<'a, Result<Option<Duration>, HookFault>> {
        Box::pin(async move {
            let d = delivery_to_wit(delivery);
            let f = failures_to_wit(failures);
            let retry_in = u32::try_from(retry_in.as_secs()).unwrap_or(u32::MAX);
            let answer = self
                .ask(Call::Deferred(&d, &f, retry_in), |a| matches!(a, Answer::Wait(Some(_))))
                .await?;
            Ok(match answer {
                Some(Answer::Wait(Some(wait))) => Some(seconds(wait)),
                _ => None,
            })
        })
    }

    fn bounce<'a>(
        &'a self,
        delivery: &'a DeliveryInfo,
        failures: &'a [RecipientFailure],
    ) -> BoxFuture<'a, Result<bool, HookFault>> {
        Box::pin(async move {
            let d = delivery_to_wit(delivery);
            let f = failures_to_wit(failures);
            let answer = self
                .ask(Call::Bounce(&d, &f), |a| matches!(a, Answer::Suppress(true)))
                .await?;
            Ok(answer.is_some())
        })
    }

    fn delivered<'a>(
        &'a self,
        delivery: &'a DeliveryInfo,
        recipients: &'a [String],
        host: &'a str,
        reply: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let d = delivery_to_wit(delivery);
            let set = self.registry.current();
            for plugin in set
                .plugins
                .iter()
                .filter(|p| p.description.hooks.contains(Hook::Delivered))
            {
                let call = Call::Delivered(&d, recipients, host, reply);
                if let Err(fault) = invoke(self.registry.runtime(), plugin, call).await {
                    warn!(plugin = %plugin.name, hook = "delivered", "plugin fault: {fault}");
                }
            }
        })
    }
}
