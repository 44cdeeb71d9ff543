//! Criterion micro-benchmarks of the plugin runtime: a hook dispatched
//! through a chain of N live plugins, a new (pooled) instance against an
//! idle one another connection left, and the plugin cost of one whole SMTP
//! connection through the default chain that `waraka init` lays out, with
//! and without idle instances kept. `cargo bench -p waraka --bench plugins`.
//!
//! The connection benchmark drives a [`Session`] over byte buffers (no
//! socket) and reports the process's CPU time per connection, not wall time:
//! its DNS lookups go to a dnsmasq the benchmark starts (skipped when
//! `/usr/sbin/dnsmasq` is missing), and waiting for it costs the server
//! nothing. The same conversation is also decided by native Rust doing the
//! chain's capability work ([`NativeWork`]: its DNS lookups and its maildir
//! copy, on a tmpfs) and by a policy that accepts and drops the message;
//! the chain minus `NativeWork` is the per-connection plugin cost
//! (instances, hook calls, host calls, the guests' own work).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hickory_resolver::proto::rr::RecordType;
use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use waraka::capabilities::config_files::ConfigSource;
use waraka::capabilities::{ConfigFiles, Dns, DnsSettings};
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
/// not local passes on through every one of them), keeping `warm` idle
/// instances of each.
fn host_list_chain(rt: &tokio::runtime::Runtime, n: usize, warm: u32) -> Arc<Registry> {
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
            roles: Vec::new(),
        })
        .collect();
    let names = specs.iter().map(|s| s.name.clone()).collect();
    let services = Services::new(
        ConfigFiles::new(instance.config_source.clone(), names),
        Default::default(),
    );
    let mut settings = instance.runtime_settings(&specs);
    settings.warm_instances = warm;
    let runtime = Runtime::new(settings, services).unwrap();
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
        let registry = host_list_chain(&rt, n, 0);
        let mut chain = chain(&registry, connection("mx.test"));
        rt.block_on(chain.decide(remote_rcpt()));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| rt.block_on(chain.decide(remote_rcpt())))
        });
    }
    group.finish();
}

/// A connection's first hook call: on a new instance from the pool (`new`,
/// no idle instances kept) or on the idle instance the previous connection
/// gave back (`idle`).
fn instantiate(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("first_call");
    for (name, warm) in [("new", 0), ("idle", 32)] {
        let registry = host_list_chain(&rt, 1, warm);
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut chain = chain(&registry, connection("mx.test"));
                rt.block_on(chain.decide(remote_rcpt()))
            })
        });
    }
    group.finish();
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

/// The default chain's capability work done by native code: the DNS
/// lookups its plugins make (through the same resolver and its cache) and the maildir
/// copy `queue/maildir` writes (the same six file-system calls, each on the
/// blocking pool as WASI runs them). What the chain costs above this is
/// what running the policy as plugins costs.
struct NativeWork {
    dns: Arc<Dns>,
    maildir: PathBuf,
    conn: SharedConnection,
}

impl NativeWork {
    async fn deliver(&self) {
        let (bytes, unique) = {
            let conn = self.conn.lock();
            let tx = conn.transaction.as_ref().expect("a transaction");
            let message = tx.message.as_ref().expect("a message");
            (message.read(0, 64 * 1024).unwrap(), tx.id.clone())
        };
        let folder = self.maildir.join("example.com").join("rcpt");
        let (tmp, new) = (folder.join("tmp").join(&unique), folder.join("new"));
        let target = new.join(&unique);
        // Each file call on the blocking pool, as WASI makes it.
        async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
            tokio::task::spawn_blocking(call).await.unwrap()
        }
        let path = tmp.clone();
        let file = Arc::new(
            blocking(move || {
                File::create_new(&path).or_else(|_| {
                    std::fs::create_dir_all(path.parent().unwrap())?;
                    File::create_new(&path)
                })
            })
            .await
            .unwrap(),
        );
        let f = file.clone();
        blocking(move || f.write_all_at(&bytes, 0)).await.unwrap();
        blocking(move || file.sync_all()).await.unwrap();
        let dir = new.clone();
        blocking(move || {
            std::fs::rename(&tmp, &target).or_else(|_| {
                std::fs::create_dir_all(&dir)?;
                std::fs::rename(&tmp, &target)
            })
        })
        .await
        .unwrap();
        let dir = blocking(move || File::open(&new)).await.unwrap();
        blocking(move || dir.sync_all()).await.unwrap();
    }
}

impl Policy for NativeWork {
    fn implements(&self, _: Hook) -> bool {
        false
    }
    async fn decide(&mut self, call: HookCall) -> Decision {
        let verdict = match call {
            HookCall::Connect => {
                let listed = self.dns.addresses("1.0.0.127.bl.bench.test", RecordType::A).await;
                assert!(listed.unwrap().is_empty());
                Verdict::Cont
            }
            HookCall::Mail(sender) => {
                let hosts = self.dns.mx(&sender.domain).await.unwrap();
                let usable = self.dns.addresses(&hosts[0].exchange, RecordType::A).await;
                assert!(!usable.unwrap().is_empty());
                Verdict::Cont
            }
            HookCall::Rcpt(_) => Verdict::Ok(None),
            HookCall::Queue => {
                self.deliver().await;
                Verdict::Ok(None)
            }
            _ => Verdict::Cont,
        };
        Decision { verdict, plugin: None }
    }
    async fn capabilities(&mut self) -> Vec<String> {
        Vec::new()
    }
    async fn notify(&mut self, _: HookCall) {}
}

/// Who decides a benchmarked conversation.
#[derive(Clone, Copy)]
enum Decider<'a> {
    Chain(&'a Registry),
    NativeWork(&'a Arc<Dns>),
    AcceptAll,
}

/// One whole connection (greeting to QUIT) through `decider`; the replies,
/// for checking.
async fn converse(instance: &Instance, decider: Decider<'_>) -> String {
    let settings = Arc::new(instance.session_settings());
    let conn = connection(&settings.hostname);
    match decider {
        Decider::Chain(registry) => run_session(Session::new(chain(registry, conn.clone()), conn, settings)).await,
        Decider::NativeWork(dns) => {
            let work = NativeWork {
                dns: dns.clone(),
                maildir: instance.root.join("native-maildir"),
                conn: conn.clone(),
            };
            run_session(Session::new(work, conn, settings)).await
        }
        Decider::AcceptAll => run_session(Session::new(AcceptAll, conn, settings)).await,
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
    let mut without_idle = default_instance(root.path(), dns.addr);
    without_idle.config.runtime.warm_instances = 0;
    let new_instances = rt.block_on(load_plugins(&without_idle)).unwrap();
    let resolver = Arc::new(Dns::new(DnsSettings {
        servers: vec![dns.addr],
        ..DnsSettings::default()
    }));
    for (name, decider) in [
        ("default_chain", Decider::Chain(&default_chain)),
        ("default_chain_new_instances", Decider::Chain(&new_instances)),
        ("native_work", Decider::NativeWork(&resolver)),
        ("no_plugins", Decider::AcceptAll),
    ] {
        let replies = rt.block_on(converse(&instance, decider));
        let queued = replies.lines().any(|l| l.starts_with("250 ") && l.contains("queued"));
        assert!(
            queued && replies.contains("\n221 "),
            "{name}: unexpected replies:\n{replies}"
        );
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let started = cpu_time();
                for _ in 0..iters {
                    rt.block_on(converse(&instance, decider));
                }
                cpu_time() - started
            })
        });
    }
    group.finish();
}

criterion_group!(benches, dispatch, instantiate, per_connection);
criterion_main!(benches);
