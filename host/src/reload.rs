//! Hot reload: watches `plugins/` and `waraka.toml` (the `notify` crate),
//! waits for writes to settle, and rescans; `SIGHUP` forces a rescan.
//!
//! A file written in place in several steps may be seen half-written: it then
//! fails to load, the previous version stays live, and the write's later
//! events trigger another rescan. Writing to a temporary name and renaming it
//! into `plugins/` avoids even that.

use crate::capabilities::config_files::is_read_only;
use crate::config::{CONFIG_FILE, Instance};
use crate::plugins::Registry;
use crate::session::SessionSettings;
use crate::status::Status;
use anyhow::Result;
use arc_swap::ArcSwap;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// Quiet time after the last file event before a rescan.
const SETTLE: Duration = Duration::from_millis(200);
/// Longest wait for quiet under a continuous stream of events.
const MAX_SETTLE: Duration = Duration::from_secs(2);

/// Rescans the instance and applies it; returns the instance now in force.
pub async fn rescan(current: &Instance, registry: &Registry, settings: &ArcSwap<SessionSettings>) -> Instance {
    let started = Instant::now();
    let (mut next, toml_error) = current.reread();
    if let Some(e) = &toml_error {
        error!("{CONFIG_FILE} rejected, keeping the last good one: {e:#}");
    }
    let specs = match next.plugin_specs() {
        Ok(specs) => specs,
        Err(e) => {
            error!("{CONFIG_FILE} rejected, keeping the last good one: {e:#}");
            next.config = current.config.clone();
            next.plugin_specs().unwrap_or_default()
        }
    };
    let summary = registry.apply(specs).await;
    if toml_error.is_none() {
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
        took_ms = started.elapsed().as_millis() as u64,
        "rescan done"
    );
    publish_status(&next, registry);
    next
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

/// Starts watching the instance; rescans run on the returned watcher's events
/// and on SIGHUP until the process ends. Keep the watcher alive.
pub fn watch(
    instance: Instance,
    registry: Arc<Registry>,
    settings: Arc<ArcSwap<SessionSettings>>,
) -> Result<RecommendedWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
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
            tokio::select! {
                event = rx.recv() => if event.is_none() { return },
                _ = hangup.recv() => info!("SIGHUP: rescanning"),
            }
            let first = Instant::now();
            while first.elapsed() < MAX_SETTLE {
                match tokio::time::timeout(SETTLE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            instance = rescan(&instance, &registry, &settings).await;
        }
    });
    Ok(watcher)
}
