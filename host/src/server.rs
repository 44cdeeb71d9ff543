//! The TCP side: listeners, one task per connection feeding the session,
//! idle timeouts, and a graceful stop on SIGINT/SIGTERM; and the local
//! submission socket that `waraka sendmail` speaks SMTP to.

use crate::admission::{Admission, Refusal, Ticket};
use crate::capabilities::{ConfigFiles, Dns, KvStore, MemoryKv};
use crate::config::{Instance, Listener};
use crate::control;
use crate::delivery::{Outbound, OutboundSettings};
use crate::lockout::AuthLockout;
use crate::maildrop;
use crate::plugins::{Chain, PluginOutbound, PluginSpec, Registry, Runtime, Services};
use crate::policy::OutboundPolicy;
use crate::proxy;
use crate::quarantine::{Quarantine, Releases};
use crate::reload;
use crate::session::{Connection, Flow, OutboundQueue, Role, Session, SessionSettings, SharedConnection, TlsInfo};
use crate::telemetry;
use crate::tls::Tls;
use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, error, info, info_span, warn};

/// Everything a connection task needs; each connection snapshots the plugin
/// set and the settings when it starts.
struct Shared {
    registry: Arc<Registry>,
    settings: Arc<ArcSwap<SessionSettings>>,
    tls: Option<Tls>,
    /// The host's outbound queue (`None` when `[outbound] enabled = false`).
    outbound: Option<Arc<dyn OutboundQueue>>,
    /// The connection caps, shared by every listener.
    admission: Arc<Admission>,
    /// Refused AUTH attempts across connections (`[smtp] auth_lockout_failures`).
    auth_lockout: Option<Arc<AuthLockout>>,
}

impl Shared {
    /// A session for `conn` on the current plugin set.
    fn session(&self, conn: Connection, settings: Arc<SessionSettings>) -> Session<Chain> {
        let conn = SharedConnection::new(conn);
        let chain = Chain::new(self.registry.runtime().clone(), self.registry.current(), conn.clone());
        Session::new(chain, conn, settings)
            .with_outbound_queue(self.outbound.clone())
            .with_auth_lockout(self.auth_lockout.clone())
    }

    /// A session of the server with itself, for messages the administrator
    /// releases from the quarantine.
    fn local_session(&self) -> Session<Chain> {
        let (conn, settings) = self.loopback_connection(None);
        self.session(conn, settings)
    }

    /// A connection of the server with itself, and the settings now; with
    /// `user`, the local user submitting mail, who relays as if logged in
    /// on a submission listener (the plugins of that role run).
    fn loopback_connection(&self, user: Option<String>) -> (Connection, Arc<SessionSettings>) {
        let settings = self.settings.load_full();
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut conn = Connection::new(loopback, loopback, &settings.hostname, settings.notes);
        conn.max_recipients = settings.max_recipients;
        conn.relaying = user.is_some();
        if user.is_some() {
            conn.role = Role::Submission;
        }
        conn.local_user = user.clone();
        conn.auth_user = user;
        (conn, settings)
    }
}

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The client connection, before or after TLS; or a local program's.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Local(UnixStream),
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Local(s) => s.read(buf).await,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(bytes).await,
            Stream::Local(s) => s.write_all(bytes).await,
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
            Stream::Local(s) => s.shutdown().await,
        };
    }

    /// Performs the server side of a TLS handshake on a plain stream.
    async fn start_tls(self, tls: &Tls) -> Result<(Stream, TlsInfo)> {
        let Stream::Plain(tcp) = self else {
            anyhow::bail!("TLS is already active, or the stream is local");
        };
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(tcp))
            .await
            .map_err(|_| anyhow::anyhow!("TLS handshake timed out"))??;
        let (_, session) = stream.get_ref();
        let version = match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            other => format!("{other:?}"),
        };
        let cipher = session
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default();
        let sni = session.server_name().map(str::to_string);
        let client_fingerprint = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| crate::tls::fingerprint(cert));
        let info = TlsInfo {
            version,
            cipher,
            sni,
            client_fingerprint,
        };
        Ok((Stream::Tls(Box::new(stream)), info))
    }
}

/// Builds the runtime and loads every plugin of the instance, in chain order.
/// A plugin that cannot be loaded is logged and left out (see `Registry`).
pub async fn load_plugins(instance: &Instance) -> Result<Arc<Registry>> {
    registry_of(instance, instance.plugin_specs()?).await
}

/// Builds the runtime with the instance's settings and back-ends and loads
/// `specs` (a plugin that cannot be loaded is left out and listed in
/// `Registry::rejected`).
pub async fn registry_of(instance: &Instance, specs: Vec<PluginSpec>) -> Result<Arc<Registry>> {
    let names = specs.iter().map(|s| s.name.clone()).collect();
    let services = Services::new(
        ConfigFiles::new(instance.config_source.clone(), names),
        instance.capability_backends()?,
    );
    let runtime = Runtime::new(instance.runtime_settings(&specs), services)?;
    let registry = Arc::new(Registry::new(runtime));
    registry.apply(specs).await;
    Ok(registry)
}

/// What serving an instance needs, read and checked: the TLS set-up, the
/// listeners, the plugins with their backends and the delivery settings.
pub struct Prepared {
    /// The certificates, when `[tls]` names them.
    tls: Option<Tls>,
    /// Where to listen, and as what.
    pub listeners: Vec<Listener>,
    /// The plugins, loaded (or refused) against their backends.
    pub registry: Arc<Registry>,
    /// How outbound mail is delivered, and the resolver it uses; `None`
    /// when that is off.
    pub outbound: Option<(OutboundSettings, Dns)>,
    /// Refused AUTH attempts across connections, when counted.
    auth_lockout: Option<Arc<AuthLockout>>,
}

/// Reads and checks what serving `instance` needs — everything but binding
/// the sockets and opening the queue: `waraka check` is this. `listen`
/// (address and role) replaces the configured listeners when not empty.
pub async fn prepare(instance: &Instance, listen: &[(String, Role)]) -> Result<Prepared> {
    let ask_client_cert = instance.config.tls.as_ref().is_some_and(|t| t.ask_client_cert);
    let no_tls_hosts = instance.no_tls_hosts()?;
    // A certificate ACME has yet to order is no error for `waraka check`:
    // `waraka run` orders it before it gets here.
    let acme_pending = instance.acme()?.is_some_and(|acme| acme.expiry().is_none());
    let tls = instance
        .tls_files()
        .filter(|_| !acme_pending)
        .map(|files| Tls::load(files, ask_client_cert, no_tls_hosts))
        .transpose()?;
    let listeners = if listen.is_empty() {
        instance.listeners()?
    } else {
        listen
            .iter()
            .map(|(address, role)| Listener::plain(address, *role))
            .collect()
    };
    if tls.is_none() && !acme_pending && listeners.iter().any(|l| l.role == Role::Submissions) {
        anyhow::bail!("a submissions (implicit TLS) listener needs [tls] cert and key");
    }
    let registry = load_plugins(instance).await?;
    let auth_lockout = auth_lockout(instance, &registry)?;
    let outbound = match instance.outbound_settings()? {
        Some(settings) => Some((settings, instance.dns()?)),
        None => None,
    };
    Ok(Prepared {
        tls,
        listeners,
        registry,
        outbound,
        auth_lockout,
    })
}

/// Serves the instance until SIGINT or SIGTERM. `listen` (address and role)
/// replaces the configured listeners when not empty.
pub async fn serve(instance: Instance, listen: Vec<(String, Role)>) -> Result<()> {
    raise_open_file_limit();
    // Before the plugins load: their loads are counted.
    if let Some(listen) = instance.config.metrics.listen {
        telemetry::serve_prometheus(listen)?;
        info!(address = %listen, "metrics at /metrics");
    }
    // Before the certificate is read: it may be ordered now.
    if let Some(acme) = instance.acme()? {
        if acme.due() {
            // The order waits on the CA (seconds, at most a few minutes).
            tell_service_manager(&[sd_notify::NotifyState::Status("ordering the TLS certificate over ACME")]);
        }
        acme.at_start().await?;
        tokio::spawn(Arc::new(acme).keep_renewed());
    }
    let Prepared {
        tls,
        listeners: addresses,
        registry,
        outbound,
        auth_lockout,
    } = prepare(&instance, &listen).await?;
    let settings = Arc::new(ArcSwap::from_pointee(instance.session_settings()));
    clear_spool(&settings.load().spool.dir);
    let outbound = match outbound {
        Some((mut outbound_settings, dns)) => {
            // Reported from the counts the `authentication` capability keeps.
            let backends = &registry.runtime().services().backends;
            outbound_settings.dmarc_reports = backends.dmarc_reports.clone();
            outbound_settings.dmarc_failures = backends.dmarc_failures.clone();
            let dir = instance.outbound_queue_dir();
            let hooks: Arc<dyn OutboundPolicy> = Arc::new(PluginOutbound::new(registry.clone()));
            let outbound = Outbound::open(&dir, outbound_settings, dns, Some(hooks))
                .with_context(|| format!("outbound queue {}", dir.display()))?;
            Some(outbound)
        }
        None => None,
    };
    let delivery = outbound.clone().map(|o| (tokio::spawn(o.clone().run()), o));
    let shared = Arc::new(Shared {
        registry: registry.clone(),
        settings: settings.clone(),
        tls,
        outbound: outbound.clone().map(|o| Arc::new(o) as Arc<dyn OutboundQueue>),
        admission: Arc::new(Admission::default()),
        auth_lockout,
    });
    reload::publish_status(&instance, &registry);
    let control_path = (!instance.embedded).then(|| control::socket_path(&instance.root));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Local users' mail, from the submission socket and from the maildrop.
    let sendmail = &instance.config.sendmail;
    let local_mail = (!instance.embedded && sendmail.enabled).then(|| {
        let hand_in = local_submissions(shared.clone(), sendmail.allowed_users.clone(), stop_rx.clone());
        // The maildrop is made here, before any listener, so that it is
        // there for `sendmail` once the server is seen to be up.
        let maildrop = sendmail
            .maildrop
            .then(|| maildrop::dir(&instance.root))
            .and_then(|dir| {
                let maildrop = maildrop::Maildrop::at(dir.clone());
                let prepared = maildrop.prepare().inspect_err(|e| {
                    error!(
                        "maildrop {}: {e}; mail left while the server is down is not kept",
                        dir.display()
                    )
                });
                prepared.ok().map(|()| maildrop)
            });
        let pickup = maildrop.map(|maildrop| maildrop::Pickup {
            maildrop,
            hand_in: hand_in.clone(),
            notices: outbound.clone(),
            interval: sendmail.pickup_interval,
            lifetime: sendmail.maildrop_lifetime,
        });
        (control::submit_socket_path(&instance.root), hand_in, pickup)
    });
    let (_watcher, control) = match &control_path {
        Some(path) => {
            let releases = Quarantine::of(&instance).ok().map(|quarantine| {
                let shared = shared.clone();
                Releases {
                    quarantine,
                    open: Arc::new(move || shared.local_session()),
                }
            });
            let kv = registry.runtime().services().backends.kv.clone();
            let (watcher, reloader) = reload::watch(instance, registry, settings)?;
            let controls = control::Controls {
                outbound,
                reloader,
                releases,
                kv,
            };
            let path = path.clone();
            let control = tokio::spawn(async move {
                if let Err(e) = control::serve(path, controls).await {
                    error!("control socket: {e:#}");
                }
            });
            (Some(watcher), Some(control))
        }
        None => (None, None),
    };
    let (submit_path, pickup) = match local_mail {
        Some((path, hand_in, pickup)) => {
            let task = tokio::spawn(serve_submissions(path.clone(), hand_in));
            let pickup = pickup.map(|pickup| tokio::spawn(pickup.run(stop_rx.clone())));
            (Some((path, task)), pickup)
        }
        None => (None, None),
    };
    let mut listeners = JoinSet::new();
    let mut listening = Vec::new();
    let mut inherited = inherited_listeners();
    for spec in addresses {
        let listener = match take_inherited(&mut inherited, &spec.address) {
            Some(socket) => TcpListener::from_std(socket)?,
            None => TcpListener::bind(&spec.address)
                .await
                .with_context(|| format!("listening on {}", spec.address))?,
        };
        let proxy = !spec.proxy_from.is_empty();
        let address = listener.local_addr()?;
        info!(%address, role = %spec.role.name(), proxy, hostname = %shared.settings.load().hostname, "listening");
        listening.push(format!("{address} ({})", spec.role.name()));
        listeners.spawn(accept_loop(listener, spec, shared.clone(), stop_rx.clone()));
    }
    for socket in inherited {
        let address = socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
        warn!(%address, "a socket the service manager passed matches no listener of waraka.toml; closed");
    }
    tell_service_manager(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("listening on {}", listening.join(", "))),
    ]);
    wait_for_stop_signal().await;
    tell_service_manager(&[sd_notify::NotifyState::Stopping]);
    info!("stopping: no new connections, letting sessions finish");
    let _ = stop_tx.send(true);
    while listeners.join_next().await.is_some() {}
    if let Some(pickup) = pickup {
        // It stops between messages: the one being handed in is finished.
        let _ = pickup.await;
    }
    if let Some((delivery, outbound)) = delivery {
        // Deliveries in flight stay queued on disk and are retried at start-up.
        delivery.abort();
        outbound.save_report_counts();
    }
    if let (Some(control), Some(path)) = (control, control_path) {
        control.abort();
        let _ = std::fs::remove_file(path);
    }
    if let Some((path, task)) = submit_path {
        task.abort();
        let _ = std::fs::remove_file(path);
    }
    info!("stopped");
    Ok(())
}

/// The AUTH lockout of `[smtp]`, counting in its `[kv]` store or in memory;
/// `None` when `auth_lockout_failures` is 0.
fn auth_lockout(instance: &Instance, registry: &Registry) -> Result<Option<Arc<AuthLockout>>> {
    let smtp = &instance.config.smtp;
    if smtp.auth_lockout_failures == 0 {
        return Ok(None);
    }
    let store = match &smtp.auth_lockout_store {
        Some(name) => registry
            .runtime()
            .services()
            .backends
            .kv
            .get(name)
            .cloned()
            .with_context(|| format!("[smtp] auth_lockout_store names no [kv.{name}]"))?,
        None => Arc::new(KvStore::Memory(MemoryKv::new(100_000))),
    };
    Ok(Some(Arc::new(AuthLockout::new(
        store,
        smtp.auth_lockout_failures,
        smtp.auth_lockout_period,
    ))))
}

/// Removes what a previous run left in the spool: messages of sessions cut
/// off by a crash, never acknowledged, so nobody waits for them.
fn clear_spool(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let removed = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count();
    if removed > 0 {
        warn!(removed, dir = %dir.display(), "removed unacknowledged spool files left by a previous run");
    }
}

/// Raises the soft open-file limit to the hard one: every connection holds a
/// file descriptor, and the default soft limit (often 1024) would cap
/// connections far below `max_connections`.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            warn!("could not raise the open-file limit from {:?}: {e}", limit.current);
        }
    }
}

/// The listening sockets the service manager passed (socket activation:
/// `LISTEN_FDS`, checked against `LISTEN_PID`). With them, a restart keeps
/// the ports open: clients wait in the backlog instead of being refused.
fn inherited_listeners() -> Vec<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let fds = match sd_notify::listen_fds() {
        Ok(fds) => fds,
        Err(e) => {
            warn!("sockets passed by the service manager ignored: {e}");
            return Vec::new();
        }
    };
    fds.filter_map(|fd| {
        // SAFETY: sd_listen_fds(3)'s protocol gives this process (LISTEN_PID
        // was checked) the descriptors from 3 on; nothing else in it owns
        // or closes them, and each is taken once.
        let socket = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        match socket.local_addr().and_then(|_| socket.set_nonblocking(true)) {
            Ok(()) => Some(socket),
            Err(e) => {
                warn!(fd, "a socket passed by the service manager is not a TCP listener: {e}");
                None
            }
        }
    })
    .collect()
}

/// The inherited socket bound to `address`, taken out of `inherited`.
fn take_inherited(inherited: &mut Vec<std::net::TcpListener>, address: &str) -> Option<std::net::TcpListener> {
    let wanted: std::net::SocketAddr = address.parse().ok()?;
    let at = inherited
        .iter()
        .position(|socket| socket.local_addr().is_ok_and(|bound| bound == wanted))?;
    info!(%address, "listening on the socket the service manager passed");
    Some(inherited.remove(at))
}

/// Tells systemd (`Type=notify`, `notify-reload`) how the server is, when
/// it runs the server; a failure is logged and nothing else.
pub fn tell_service_manager(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("could not tell the service manager: {e}");
    }
}

async fn wait_for_stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn accept_loop(listener: TcpListener, spec: Listener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut sessions = JoinSet::new();
    let spec = Arc::new(spec);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if !spec.proxy_from.is_empty() => {
                    sessions.spawn(proxied(stream, peer, spec.clone(), shared.clone(), stop.clone()));
                }
                Ok((stream, peer)) => {
                    if let Some(ticket) = admit(&shared, &stream, peer) {
                        let local = stream.local_addr().unwrap_or(peer);
                        sessions.spawn(handle(stream, peer, local, spec.clone(), shared.clone(), stop.clone(), ticket));
                    }
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
    let grace = shared.settings.load().shutdown_grace;
    let drained = tokio::time::timeout(grace, async { while sessions.join_next().await.is_some() {} });
    if drained.await.is_err() {
        warn!(
            left = sessions.len(),
            "sessions still open after the grace period; closing them"
        );
        sessions.abort_all();
    }
}

/// Lets a connection from `peer` in within the connection limits: its
/// ticket, or `None` once it has been turned away.
fn admit(shared: &Shared, stream: &TcpStream, peer: SocketAddr) -> Option<Ticket> {
    let limits = shared.settings.load();
    match shared
        .admission
        .admit(peer.ip(), limits.max_connections, limits.max_connections_per_ip)
    {
        Ok(ticket) => Some(ticket),
        Err(refusal) => {
            refuse(stream, peer, refusal, shared.admission.open());
            None
        }
    }
}

/// A connection from a load balancer: its PROXY header names the client,
/// who is then admitted and served as if it had connected itself. A
/// balancer not in `proxy_from`, or a missing or broken header, closes the
/// connection without a word (what follows is no SMTP client).
async fn proxied(
    mut stream: TcpStream,
    balancer: SocketAddr,
    spec: Arc<Listener>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let own_local = stream.local_addr().unwrap_or(balancer);
    let (peer, local) = match proxy::read_header(&mut stream, balancer, &spec.proxy_from).await {
        Ok(Some(addresses)) => addresses,
        Ok(None) => (balancer, own_local),
        Err(e) => {
            metrics::counter!(telemetry::CONNECTIONS_REFUSED, "cap" => "proxy").increment(1);
            warn!(%balancer, "connection closed: {e}");
            return;
        }
    };
    info!(client = %peer, %balancer, "PROXY protocol header read");
    if let Some(ticket) = admit(&shared, &stream, peer) {
        handle(stream, peer, local, spec, shared, stop, ticket).await;
    }
}

/// Turns a connection away before any session exists: one `421` line,
/// written without waiting (a fresh socket's buffer has room), then close.
fn refuse(stream: &TcpStream, peer: SocketAddr, refusal: Refusal, open: usize) {
    let cap = refusal.cap();
    metrics::counter!(telemetry::CONNECTIONS_REFUSED, "cap" => cap).increment(1);
    info!(%peer, cap, open, "connection refused: too many connections");
    let _ = stream.try_write(refusal.reply().to_wire().as_bytes());
}

async fn write_out<P: crate::policy::Policy>(stream: &mut Stream, session: &mut Session<P>) -> bool {
    let out = session.take_output();
    out.is_empty() || stream.write_all(&out).await.is_ok()
}

/// What the client sent before the greeting: what is already there, or
/// arrives within `delay`.
async fn early_bytes(tcp: &TcpStream, delay: Duration) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        match tcp.try_read(&mut buf) {
            Ok(n) => return buf[..n].to_vec(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Vec::new(),
        }
        // Readiness may be reported spuriously: read again until the deadline.
        if tokio::time::timeout_at(deadline, tcp.readable()).await.is_err() {
            return Vec::new();
        }
    }
}

async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    spec: Arc<Listener>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    ticket: Ticket,
) {
    let _ = tcp.set_nodelay(true);
    let settings = shared.settings.load_full();
    let role = spec.role;
    let hostname = spec.hostname.as_deref().unwrap_or(&settings.hostname);
    let mut conn = Connection::new(peer, local, hostname, settings.notes);
    conn.role = role;
    conn.xclient_allowed = spec.xclient_from.iter().any(|net| net.contains(&peer.ip()));
    conn.max_recipients = settings.max_recipients;
    conn.starttls_available = shared.tls.as_ref().is_some_and(|t| t.offered_to(peer.ip())) && role != Role::Submissions;
    let span = info_span!("conn", id = %conn.id);
    metrics::counter!(telemetry::CONNECTIONS).increment(1);
    let open = telemetry::Held::new(metrics::gauge!(telemetry::CONNECTIONS_OPEN));
    async move {
        info!(%peer, role = role.name(), "connected");
        let banner_delay = settings.banner_delay;
        let mut session = shared.session(conn, settings);
        let mut early = Vec::new();
        let stream = if role == Role::Submissions {
            let tls = shared.tls.as_ref().expect("checked at start-up");
            match Stream::Plain(tcp).start_tls(tls).await {
                Ok((stream, info)) => {
                    session.tls_established(info).await;
                    stream
                }
                Err(e) => {
                    info!("implicit TLS failed: {e:#}");
                    session.end().await;
                    return;
                }
            }
        } else {
            // Bytes already waiting before the greeting is sent (within
            // `banner_delay`, if set): an early talker.
            early = early_bytes(&tcp, banner_delay).await;
            Stream::Plain(tcp)
        };
        let mut flow = session.start(!early.is_empty()).await;
        let mut stream = stream;
        if write_out(&mut stream, &mut session).await && flow == Flow::Continue && !early.is_empty() {
            flow = session.ingest(&early).await;
        }
        if let Some(mut stream) = converse(stream, &mut session, flow, shared.tls.as_ref(), stop).await {
            stream.shutdown().await;
        }
        session.end().await;
        info!("disconnected");
        drop((open, ticket));
    }
    .instrument(span)
    .await;
}

/// Local users' submissions: a session of the user on a stream, relaying
/// as if logged in, unless `allowed_users` names others.
fn local_submissions(shared: Arc<Shared>, allowed_users: Vec<String>, stop: watch::Receiver<bool>) -> maildrop::HandIn {
    let allowed_users = Arc::new(allowed_users);
    Arc::new(move |user, stream| {
        let (shared, stop, allowed_users) = (shared.clone(), stop.clone(), allowed_users.clone());
        tokio::spawn(async move { submit_as(stream, user, &allowed_users, shared, stop).await });
    })
}

/// Serves the local submission socket at `path`, which every local user
/// may reach (mode 0666): each connection is handed in as the user the
/// kernel names as its peer.
async fn serve_submissions(path: PathBuf, hand_in: maildrop::HandIn) {
    let listener = match bind_world_socket(&path) {
        Ok(listener) => listener,
        Err(e) => {
            error!("local submission socket {}: {e:#}", path.display());
            return;
        }
    };
    info!(path = %path.display(), "local submission (waraka sendmail)");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!("local submission accept failed: {e}");
                continue;
            }
        };
        let hand_in = hand_in.clone();
        tokio::spawn(async move {
            match local_user(&stream).await {
                Ok(user) => hand_in(user, stream),
                Err(e) => warn!("local submission: the caller is unknown: {e:#}"),
            }
        });
    }
}

/// Binds a Unix socket at `path` that every local user may connect to,
/// replacing one a dead server left.
fn bind_world_socket(path: &std::path::Path) -> Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// The name of the local user at the other end of `stream`, from the
/// kernel's credentials of the socket.
async fn local_user(stream: &UnixStream) -> Result<String> {
    let uid = stream.peer_cred()?.uid();
    tokio::task::spawn_blocking(move || {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))?
            .map(|user| user.name)
            .with_context(|| format!("no user has uid {uid}"))
    })
    .await?
}

/// One local submission by `user`: the SMTP session of a client that
/// logged in as them, over the socket.
async fn submit_as(
    stream: UnixStream,
    user: String,
    allowed_users: &[String],
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let (conn, settings) = shared.loopback_connection(Some(user.clone()));
    let span = info_span!("conn", id = %conn.id);
    let mut session = shared.session(conn, settings);
    async move {
        let mut stream = Stream::Local(stream);
        if !allowed_users.is_empty() && !allowed_users.contains(&user) {
            warn!(%user, "local submission refused: the user is not in [sendmail] allowed_users");
            let refusal = format!("554 5.7.1 {}\r\n", crate::sendmail::not_allowed(&user));
            let _ = stream.write_all(refusal.as_bytes()).await;
            stream.shutdown().await;
            return;
        }
        info!(%user, "local submission");
        let flow = session.start(false).await;
        if let Some(mut stream) = converse(stream, &mut session, flow, None, stop).await {
            stream.shutdown().await;
        }
        session.end().await;
        info!("disconnected");
    }
    .instrument(span)
    .await;
}

/// Bytes read at once from an active client.
const READ_BUFFER: usize = 64 * 1024;
/// Bytes read at once from a client that went quiet (it grows back after).
const PARKED_READ_BUFFER: usize = 1024;

/// Reads from the client and feeds the session until either side closes;
/// returns the stream unless it was lost (a failed TLS handshake).
async fn converse<P: crate::policy::Policy>(
    mut stream: Stream,
    session: &mut Session<P>,
    mut flow: Flow,
    tls: Option<&Tls>,
    mut stop: watch::Receiver<bool>,
) -> Option<Stream> {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut stopping = false;
    // The read deadline of a wait that a park interrupted (a park is not activity).
    let mut pending_deadline = None;
    let park_after = session.park_after();
    loop {
        // After a stop signal, a session is closed as soon as it has no
        // transaction open: the one in progress is allowed to finish.
        if stopping && flow == Flow::Continue && !session.in_transaction() {
            flow = session.shutdown();
        }
        if !write_out(&mut stream, session).await {
            return Some(stream);
        }
        match flow {
            Flow::Close => return Some(stream),
            Flow::StartTls => {
                // Whatever the client sent after STARTTLS was discarded by the
                // session; the handshake starts on a clean stream.
                let tls = tls?;
                match stream.start_tls(tls).await {
                    Ok((encrypted, info)) => {
                        stream = encrypted;
                        session.tls_established(info).await;
                    }
                    Err(e) => {
                        info!("STARTTLS handshake failed: {e:#}");
                        return None;
                    }
                }
                flow = Flow::Continue;
                continue;
            }
            Flow::Continue => {}
        }
        let deadline = pending_deadline
            .take()
            .unwrap_or_else(|| session.read_deadline(std::time::Instant::now()));
        // One timer per wait: the park, when it comes before the deadline.
        let parked = buf.len() == PARKED_READ_BUFFER;
        let park_at = (!parked && !park_after.is_zero())
            .then(|| std::time::Instant::now() + park_after)
            .filter(|&at| at < deadline);
        flow = tokio::select! {
            read = tokio::time::timeout_at(park_at.unwrap_or(deadline).into(), stream.read(&mut buf)) => match read {
                // A quiet client holds no plugin instances and only a small buffer.
                Err(_) if park_at.is_some() => {
                    session.park();
                    buf = vec![0u8; PARKED_READ_BUFFER];
                    pending_deadline = Some(deadline);
                    Flow::Continue
                }
                Err(_) => session.deadline_passed(),
                Ok(Ok(0)) => return Some(stream),
                Ok(Ok(n)) => {
                    let flow = session.ingest(&buf[..n]).await;
                    if parked {
                        buf = vec![0u8; READ_BUFFER];
                    }
                    flow
                }
                Ok(Err(e)) => {
                    info!("read failed: {e}");
                    return Some(stream);
                }
            },
            _ = stop.changed(), if !stopping => {
                stopping = true;
                Flow::Continue
            }
        };
    }
}

/// Logs a fatal error the way the CLI reports it.
pub fn report_fatal(e: &anyhow::Error) {
    error!("{e:#}");
}
