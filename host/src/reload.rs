//! Hot reload: watches `plugins/` and `waraka.toml` (the `notify` crate),
//! waits for writes to settle, and rescans; `SIGHUP` forces a rescan, and a
//! [`Reloader`] (the control socket's `reload`) runs one at once and hears
//! how it went. Every rescan also drops the cached texts of `config/`.
//!
//! A file written in place in several steps may be seen half-written: it then
//! fails to load, the previous version stays live, and the write's later
//! events trigger another rescan. Writing to a temporary name and renaming it
//! into `plugins/` avoids even that.

use crate::capabilities::config_files::is_read_only;
use crate::config::{CONFIG_FILE, Instance};
use crate::plugins::{Registry, ReloadSummary};
use crate::session::SessionSettings;
use crate::status::Status;
use anyhow::Result;
use arc_swap::ArcSwap;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

/// Quiet time after the last file event before a rescan.
const SETTLE: Duration = Duration::from_millis(200);
/// Longest wait for quiet under a continuous stream of events.
const MAX_SETTLE: Duration = Duration::from_secs(2);

/// How one rescan went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RescanReport {
    /// What the plugin set changed.
    pub summary: ReloadSummary,
    /// Why `waraka.toml` was rejected (the last good one stays), if it was.
    pub config_error: Option<String>,
    /// Plugins whose current file is refused, with why (their previous
    /// version, if any, stays live).
    pub rejected: Vec<(String, String)>,
}

impl RescanReport {
    /// Whether everything the instance asks for is in force.
    pub fn is_clean(&self) -> bool {
        self.config_error.is_none() && self.rejected.is_empty()
    }

    /// One line for an administrator: the counts, then what was refused.
    pub fn describe(&self) -> String {
        let ReloadSummary {
            loaded,
            compiled,
            rejected,
            removed,
            described,
        } = self.summary;
        let mut line =
            format!("loaded={loaded} compiled={compiled} rejected={rejected} removed={removed} described={described}");
        if let Some(e) = &self.config_error {
            line += &format!("; {CONFIG_FILE} rejected, keeping the last good one: {e}");
        }
        for (plugin, why) in &self.rejected {
            line += &format!("; plugin {plugin} rejected: {why}");
        }
        // One line: errors such as TOML's quote the offending lines.
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Rescans the instance, applies it, drops the cached config texts and
/// has the GeoIP databases looked at for newer files; returns the instance
/// now in force and how it went.
pub async fn rescan(
    current: &Instance,
    registry: &Registry,
    settings: &ArcSwap<SessionSettings>,
) -> (Instance, RescanReport) {
    let started = Instant::now();
    crate::server::tell_service_manager(&[
        sd_notify::NotifyState::Reloading,
        sd_notify::NotifyState::monotonic_usec_now().unwrap_or(sd_notify::NotifyState::MonotonicUsec(0)),
    ]);
    let services = registry.runtime().services();
    services.config.forget();
    if let Some(geoip) = &services.backends.geoip {
        geoip.recheck();
    }
    let (mut next, toml_error) = current.reread();
    let mut config_error = toml_error.map(|e| format!("{e:#}"));
    let specs = match next.plugin_specs() {
        Ok(specs) => specs,
        Err(e) => {
            config_error = Some(format!("{e:#}"));
            next.config = current.config.clone();
            next.plugin_specs().unwrap_or_default()
        }
    };
    if let Some(e) = &config_error {
        error!("{CONFIG_FILE} rejected, keeping the last good one: {e}");
    }
    let summary = registry.apply(specs).await;
    if config_error.is_none() {
        if next.config.smtp.listen != current.config.smtp.listen {
            warn!("[smtp] listen changed: it applies at the next restart");
        }
        settings.store(Arc::new(next.session_settings()));
    }
    info!(
        loaded = summary.loaded,
        compiled = summary.compiled,
        rejected = summary.rejected,
        removed = summary.removed,
        described = summary.described,
        took_ms = started.elapsed().as_millis() as u64,
        "rescan done"
    );
    publish_status(&next, registry);
    crate::server::tell_service_manager(&[sd_notify::NotifyState::Ready]);
    let rejected = registry
        .rejected()
        .into_iter()
        .map(|(plugin, rejection)| (plugin, rejection.error))
        .collect();
    let report = RescanReport {
        summary,
        config_error,
        rejected,
    };
    (next, report)
}

/// Writes the status file of a directory instance.
pub fn publish_status(instance: &Instance, registry: &Registry) {
    if instance.embedded {
        return;
    }
    if let Err(e) = Status::of(registry, Some(std::process::id())).publish(&instance.status_file()) {
        warn!("could not write {}: {e:#}", instance.status_file().display());
    }
}

/// Asks the watcher for a rescan now and hears how it went (the control
/// socket's `reload`).
#[derive(Clone, Debug)]
pub struct Reloader(mpsc::UnboundedSender<oneshot::Sender<RescanReport>>);

impl Reloader {
    /// Rescans at once (after a rescan already running) and returns its
    /// report; `None` when the watcher has stopped.
    pub async fn reload(&self) -> Option<RescanReport> {
        info!("reload asked: rescanning");
        let (reply, report) = oneshot::channel();
        self.0.send(reply).ok()?;
        report.await.ok()
    }
}

/// Starts watching the instance; rescans run on the returned watcher's
/// events, on SIGHUP and on the returned reloader's requests until the
/// process ends. Keep the watcher alive.
pub fn watch(
    instance: Instance,
    registry: Arc<Registry>,
    settings: Arc<ArcSwap<SessionSettings>>,
) -> Result<(RecommendedWatcher, Reloader)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let (ask, mut asked) = mpsc::unbounded_channel::<oneshot::Sender<RescanReport>>();
    let plugins_dir = instance.root.join("plugins");
    let toml = instance.root.join(CONFIG_FILE);
    std::fs::create_dir_all(&plugins_dir)?;
    let (watched_plugins, watched_toml) = (plugins_dir.clone(), toml.clone());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event)
            if !is_read_only(&event.kind)
                && event
                    .paths
                    .iter()
                    .any(|p| p.starts_with(&watched_plugins) || *p == watched_toml) =>
        {
            let _ = tx.send(());
        }
        Ok(_) => {}
        Err(e) => warn!("file watcher: {e}"),
    })?;
    watcher.watch(&plugins_dir, RecursiveMode::Recursive)?;
    watcher.watch(&instance.root, RecursiveMode::NonRecursive)?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut instance = instance;
        loop {
            let mut reply = tokio::select! {
                event = rx.recv() => if event.is_none() { return } else { None },
                _ = hangup.recv() => {
                    info!("SIGHUP: rescanning");
                    None
                }
                Some(reply) = asked.recv() => Some(reply),
            };
            // Let a burst of writes settle, unless a reload is asked for.
            let first = Instant::now();
            while reply.is_none() && first.elapsed() < MAX_SETTLE {
                tokio::select! {
                    event = tokio::time::timeout(SETTLE, rx.recv()) => match event {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_) => break,
                    },
                    Some(asking) = asked.recv() => reply = Some(asking),
                }
            }
            let report;
            (instance, report) = rescan(&instance, &registry, &settings).await;
            if let Some(reply) = reply {
                let _ = reply.send(report);
            }
        }
    });
    Ok((watcher, Reloader(ask)))
}
