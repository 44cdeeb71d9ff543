//! The TCP side: listeners, one task per connection feeding the session,
//! idle timeouts, and a graceful stop on SIGINT/SIGTERM.

use crate::capabilities::{ConfigFiles, NoteStore};
use crate::config::Instance;
use crate::plugins::{Chain, Registry, Runtime, Services};
use crate::reload;
use crate::session::{Connection, Flow, Session, SessionSettings, SharedConnection};
use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, error, info, info_span, warn};

/// Everything a connection task needs; each connection snapshots the plugin
/// set and the settings when it starts.
struct Shared {
    registry: Arc<Registry>,
    settings: Arc<ArcSwap<SessionSettings>>,
}

/// How long in-flight sessions may finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Builds the runtime and loads every plugin of the instance, in chain order.
/// A plugin that cannot be loaded is logged and left out (see `Registry`).
pub async fn load_plugins(instance: &Instance) -> Result<Arc<Registry>> {
    let specs = instance.plugin_specs()?;
    let names = specs.iter().map(|s| s.name.clone()).collect();
    let services = Services {
        server_notes: Mutex::new(NoteStore::new(Default::default())),
        config: ConfigFiles::new(instance.config_source.clone(), names),
    };
    let runtime = Runtime::new(instance.runtime_settings(&specs), services)?;
    let registry = Arc::new(Registry::new(runtime));
    registry.apply(specs).await;
    Ok(registry)
}

/// Serves the instance until SIGINT or SIGTERM. `listen` replaces `[smtp] listen` when not empty.
pub async fn serve(instance: Instance, listen: Vec<String>) -> Result<()> {
    let registry = load_plugins(&instance).await?;
    let settings = Arc::new(ArcSwap::from_pointee(instance.session_settings()));
    let shared = Arc::new(Shared {
        registry: registry.clone(),
        settings: settings.clone(),
    });
    let addresses = if listen.is_empty() {
        instance.listen().to_vec()
    } else {
        listen
    };
    reload::publish_status(&instance, &registry);
    let _watcher = if instance.embedded {
        None
    } else {
        Some(reload::watch(instance, registry, settings)?)
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut listeners = JoinSet::new();
    for address in &addresses {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address}"))?;
        info!(address = %listener.local_addr()?, hostname = %shared.settings.load().hostname, "listening");
        listeners.spawn(accept_loop(listener, shared.clone(), stop_rx.clone()));
    }
    wait_for_stop_signal().await;
    info!("stopping: no new connections, letting sessions finish");
    let _ = stop_tx.send(true);
    while listeners.join_next().await.is_some() {}
    info!("stopped");
    Ok(())
}

async fn wait_for_stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let local = stream.local_addr().unwrap_or(peer);
                    sessions.spawn(handle(stream, peer, local, shared.clone(), stop.clone()));
                }
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while sessions.join_next().await.is_some() {} });
    if drained.await.is_err() {
        warn!(
            left = sessions.len(),
            "sessions still open after the grace period; closing them"
        );
        sessions.abort_all();
    }
}

async fn write_out<P: crate::policy::Policy>(stream: &mut TcpStream, session: &mut Session<P>) -> bool {
    let out = session.take_output();
    out.is_empty() || stream.write_all(&out).await.is_ok()
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let settings = shared.settings.load_full();
    let conn = Connection::new(peer, local, &settings.hostname, settings.notes);
    let span = info_span!("conn", id = %conn.id);
    async move {
        info!(%peer, "connected");
        let conn = SharedConnection::new(conn);
        let chain = Chain::new(
            shared.registry.runtime().clone(),
            shared.registry.current(),
            conn.clone(),
        );
        let idle_timeout = settings.idle_timeout;
        let mut session = Session::new(chain, conn, settings);
        // Bytes already waiting before the greeting is sent: an early talker.
        let mut early = vec![0u8; 4096];
        let early_len = stream.try_read(&mut early).unwrap_or_default();
        let mut open = session.start(early_len > 0).await == Flow::Continue;
        open &= write_out(&mut stream, &mut session).await;
        if open && early_len > 0 {
            open = session.ingest(&early[..early_len]).await == Flow::Continue;
            open &= write_out(&mut stream, &mut session).await;
        }
        let mut buf = vec![0u8; 64 * 1024];
        while open {
            tokio::select! {
                read = tokio::time::timeout(idle_timeout, stream.read(&mut buf)) => match read {
                    Err(_) => {
                        session.idle_timeout();
                        open = false;
                    }
                    Ok(Ok(0)) => open = false,
                    Ok(Ok(n)) => open = session.ingest(&buf[..n]).await == Flow::Continue,
                    Ok(Err(e)) => {
                        info!("read failed: {e}");
                        open = false;
                    }
                },
                _ = stop.changed() => {
                    session.shutdown();
                    open = false;
                }
            }
            if !write_out(&mut stream, &mut session).await {
                open = false;
            }
        }
        let _ = stream.shutdown().await;
        session.end().await;
        info!("disconnected");
    }
    .instrument(span)
    .await;
}

/// Logs a fatal error the way the CLI reports it.
pub fn report_fatal(e: &anyhow::Error) {
    error!("{e:#}");
}
