//! Criterion micro-benchmarks of the plugin runtime: a hook dispatched
//! through a chain of N live plugins, a fresh (pooled) instance, and the
//! plugin cost of one whole SMTP connection through the default chain that
//! `waraka init` lays out. `cargo bench -p waraka --bench plugins`.
//!
//! The connection benchmark drives a [`Session`] over byte buffers (no
//! socket) and reports the process's CPU time per connection, not wall time:
//! its DNS lookups go to a dnsmasq the benchmark starts (skipped when
//! `/usr/sbin/dnsmasq` is missing), and waiting for it costs the server
//! nothing. The same conversation through a policy in plain Rust that
//! accepts and drops the message is the baseline; the difference is the
//! per-connection plugin cost (instances, hook calls, host calls, the DNS
//! client and the maildir write on a tmpfs).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use waraka::capabilities::ConfigFiles;
use waraka::capabilities::config_files::ConfigSource;
use waraka::config::{CORE_PLUGINS, Instance};
use waraka::plugins::{Chain, PluginLimits, PluginSource, PluginSpec, Registry, Runtime, Services};
use waraka::policy::{Decision, Hook, HookCall, Policy, Verdict};
use waraka::protocol::Address;
use waraka::server::load_plugins;
use waraka::session::{Connection, Session, SharedConnection};

const PEER: &str = "127.0.0.1:40000";
const LOCAL: &str = "127.0.0.1:25";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn connection(hostname: &str) -> SharedConnection {
    let conn = Connection::new(
        PEER.parse().unwrap(),
        LOCAL.parse().unwrap(),
        hostname,
        Default::default(),
    );
    SharedConnection::new(conn)
}

/// A registry of `n` copies of `rcpt_to.in_host_list` (a recipient that is
/// not local passes on through every one of them).
fn host_list_chain(rt: &tokio::runtime::Runtime, n: usize) -> Arc<Registry> {
    let instance = Instance::embedded().unwrap();
    let bytes = CORE_PLUGINS
        .iter()
        .find(|(name, _)| *name == "rcpt_to.in_host_list")
        .map(|(_, bytes)| *bytes)
        .unwrap();
    let specs: Vec<PluginSpec> = (0..n)
        .map(|i| PluginSpec {
            name: format!("in_host_list.{i}"),
            source: PluginSource::Embedded(bytes),
            limits: PluginLimits::default(),
            dirs: Vec::new(),
            grants: Vec::new(),
        })
        .collect();
    let names = specs.iter().map(|s| s.name.clone()).collect();
    let services = Services::new(
        ConfigFiles::new(instance.config_source.clone(), names),
        Default::default(),
    );
    let runtime = Runtime::new(instance.runtime_settings(&specs), services).unwrap();
    let registry = Arc::new(Registry::new(runtime));
    let summary = rt.block_on(registry.apply(specs));
    assert_eq!(registry.current().plugins.len(), n, "{summary:?}");
    registry
}

fn chain(registry: &Registry, conn: SharedConnection) -> Chain {
    Chain::new(registry.runtime().clone(), registry.current(), conn)
}

fn remote_rcpt() -> HookCall {
    HookCall::Rcpt(Address {
        local_part: "someone".into(),
        domain: "elsewhere.example".into(),
        params: Vec::new(),
    })
}

/// One RCPT hook through N live plugins (instances already created).
fn dispatch(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("dispatch_rcpt");
    for n in [1, 5, 10] {
        let registry = host_list_chain(&rt, n);
        let mut chain = chain(&registry, connection("mx.test"));
        rt.block_on(chain.decide(remote_rcpt()));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| rt.block_on(chain.decide(remote_rcpt())))
        });
    }
    group.finish();
}

/// A fresh instance from the pool and its first hook call, dropped after.
fn instantiate(c: &mut Criterion) {
    let rt = runtime();
    let registry = host_list_chain(&rt, 1);
    c.bench_function("instantiate_and_call", |b| {
        b.iter(|| {
            let mut chain = chain(&registry, connection("mx.test"));
            rt.block_on(chain.decide(remote_rcpt()))
        })
    });
}

/// dnsmasq answering what the default chain asks: the sender domain's MX,
/// the client's name, and NXDOMAIN for the DNS list.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Dnsmasq {
    fn start() -> Option<Dnsmasq> {
        let binary = Path::new("/usr/sbin/dnsmasq");
        if !binary.exists() {
            eprintln!("connection benchmark skipped: no /usr/sbin/dnsmasq");
            return None;
        }
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
            ])
            .args(["--listen-address=127.0.0.1", "--bind-interfaces", "--user=root"])
            .arg(format!("--port={port}"))
            .args([
                "--mx-host=sender.test,mx.sender.test,10",
                "--host-record=mx.sender.test,192.0.2.25",
            ])
            .args(["--host-record=client.bench.test,127.0.0.1", "--address=/bl.bench.test/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        Some(Dnsmasq { child, addr })
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The embedded default instance rooted at `root`, with its DNS at `dns`, the
/// DNS list zone answered by it, and `limit` raised so that one client
/// address is not throttled.
fn default_instance(root: &Path, dns: SocketAddr) -> Instance {
    let mut instance = Instance::embedded().unwrap();
    instance.root = root.to_path_buf();
    instance.config.dns.servers = vec![dns.to_string()];
    let ConfigSource::Embedded(files) = &instance.config_source else {
        unreachable!("the embedded instance")
    };
    let mut files: HashMap<String, String> = (**files).clone();
    let edit = |files: &mut HashMap<String, String>, file: &str, key: &str, value: &str| {
        let text = files.get(file).unwrap();
        let prefix = format!("{key} =");
        assert!(text.lines().any(|l| l.starts_with(&prefix)), "{file} has no {key}");
        let edited: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with(&prefix) {
                    format!("{key} = {value}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        files.insert(file.to_string(), edited.join("\n") + "\n");
    };
    edit(&mut files, "dns-list.ini", "zones", "bl.bench.test");
    edit(&mut files, "limit.ini", "concurrency", "1000");
    edit(&mut files, "limit.ini", "connection_rate", "1000000000/60s");
    edit(&mut files, "limit.ini", "recipient_rate", "1000000000/60s");
    instance.config_source = ConfigSource::Embedded(Arc::new(files));
    instance
}

const CONVERSATION: &[&[u8]] = &[
    b"EHLO client.bench.test\r\n",
    b"MAIL FROM:<bench@sender.test>\r\n",
    b"RCPT TO:<rcpt@example.com>\r\n",
    b"DATA\r\n",
    b"From: bench@sender.test\r\nTo: rcpt@example.com\r\nSubject: bench\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@sender.test>\r\n\r\nA short message.\r\n.\r\n",
    b"QUIT\r\n",
];

/// The baseline: a policy in plain Rust that accepts every recipient and
/// queues by dropping the message, as the discard profile's two plugins do.
struct AcceptAll;

impl Policy for AcceptAll {
    fn implements(&self, _: Hook) -> bool {
        false
    }
    async fn decide(&mut self, call: HookCall) -> Decision {
        let verdict = match call.hook() {
            Hook::Rcpt | Hook::Queue => Verdict::Ok(None),
            _ => Verdict::Cont,
        };
        Decision { verdict, plugin: None }
    }
    async fn capabilities(&mut self) -> Vec<String> {
        Vec::new()
    }
    async fn notify(&mut self, _: HookCall) {}
}

/// One whole connection (greeting to QUIT) through the registry's chain, or
/// through [`AcceptAll`] without one; the replies, for checking.
async fn converse(instance: &Instance, registry: Option<&Registry>) -> String {
    let settings = Arc::new(instance.session_settings());
    let conn = connection(&settings.hostname);
    match registry {
        Some(registry) => run_session(Session::new(chain(registry, conn.clone()), conn, settings)).await,
        None => run_session(Session::new(AcceptAll, conn, settings)).await,
    }
}

async fn run_session<P: Policy>(mut session: Session<P>) -> String {
    session.start(false).await;
    for line in CONVERSATION {
        session.ingest(line).await;
    }
    session.end().await;
    String::from_utf8_lossy(&session.take_output()).into_owned()
}

/// The process's CPU time (every thread: the blocking pool's file writes too).
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn per_connection(c: &mut Criterion) {
    let Some(dns) = Dnsmasq::start() else { return };
    let rt = runtime();
    let shm = Path::new("/dev/shm");
    let root = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let mut group = c.benchmark_group("connection_cpu");
    let instance = default_instance(root.path(), dns.addr);
    let default_chain = rt.block_on(load_plugins(&instance)).unwrap();
    for (name, registry) in [("default_chain", Some(&*default_chain)), ("no_plugins", None)] {
        let replies = rt.block_on(converse(&instance, registry));
        let queued = replies.lines().any(|l| l.starts_with("250 ") && l.contains("queued"));
        assert!(
            queued && replies.contains("\n221 "),
            "{name}: unexpected replies:\n{replies}"
        );
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let started = cpu_time();
                for _ in 0..iters {
                    rt.block_on(converse(&instance, registry));
                }
                cpu_time() - started
            })
        });
    }
    group.finish();
}

criterion_group!(benches, dispatch, instantiate, per_connection);
criterion_main!(benches);
