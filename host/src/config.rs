//! The instance: `waraka.toml`, the plugins in `plugins/`, the files in
//! `config/` — or the embedded default instance when no directory is given.

use crate::capabilities::config_files::ConfigSource;
use crate::capabilities::{
    BlobStore, Database, DirStore, Dns, DnsSettings, KvStore, MemoryKv, NoteLimits, PgDatabase, PgSettings, RedisKv,
    S3Settings, S3Store, SqliteDatabase,
};
use crate::delivery::{ClientSettings, NextHop, OutboundSettings, RouteSettings, TlsMode};
use crate::plugins::Backends;
use crate::plugins::{DirGrant, OnError, PluginLimits, PluginSource, PluginSpec, RuntimeSettings};
use crate::protocol::BareNewlines;
use crate::queue::RetrySchedule;
use crate::session::{EarlyTalker, Role, SessionSettings, SpoolSettings};
use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/core_plugins.rs"));
    include!(concat!(env!("OUT_DIR"), "/default_config.rs"));
}

pub use embedded::{CORE_PLUGINS, DEFAULT_CONFIG};

/// The file name of the instance configuration.
pub const CONFIG_FILE: &str = "waraka.toml";

/// `waraka.toml`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Chain order of plugins.
    #[serde(default)]
    pub plugins: Vec<String>,
    #[serde(default)]
    pub smtp: SmtpConfig,
    #[serde(default)]
    pub plugin_defaults: PluginTable,
    #[serde(default)]
    pub plugin: BTreeMap<String, PluginTable>,
    /// Named host directories that `dir:NAME` grants give to plugins.
    #[serde(default)]
    pub dirs: BTreeMap<String, PathBuf>,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// More listeners, each with a role (`[[listener]]`).
    #[serde(default)]
    pub listener: Vec<ListenerConfig>,
    /// Certificate and key for STARTTLS and implicit TLS.
    pub tls: Option<TlsConfig>,
    /// Named key/value stores that `kv:NAME` grants give to plugins.
    #[serde(default)]
    pub kv: BTreeMap<String, KvConfig>,
    /// The resolver behind the `dns` grant.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Named blob stores that `blobstore:NAME` grants give to plugins.
    #[serde(default)]
    pub blobstore: BTreeMap<String, BlobstoreConfig>,
    /// Named databases that `sql:NAME` grants give to plugins.
    #[serde(default)]
    pub sql: BTreeMap<String, SqlConfig>,
    /// Delivery of relayed mail from the host's outbound queue.
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// `[metrics]`.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where to serve `/metrics` (e.g. `127.0.0.1:9464`); off when absent.
    pub listen: Option<SocketAddr>,
}

/// `[outbound]`: how the host delivers the mail relaying sessions queue.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Whether relayed mail goes to the host's queue when no `queue-outbound`
    /// plugin takes it (off: such mail gets `451 4.3.0`).
    pub enabled: bool,
    /// Deliveries in progress at once.
    pub concurrency: usize,
    /// Deliveries in progress at once to one destination domain.
    pub per_domain: usize,
    /// The port of MX hosts (25; tests use others).
    pub port: u16,
    /// Whether MX records may point at loopback or link-local addresses.
    pub allow_local: bool,
    /// `never`, `opportunistic` (STARTTLS when offered, any certificate),
    /// `verify` (when offered, verified) or `required` (verified, else no delivery).
    pub tls: OutboundTls,
    /// Haraka's `temp_fail_intervals` text; the default doubles from 64 s to about 36 h.
    pub retry: Option<String>,
    /// The name sent with EHLO (default: `[smtp] hostname`).
    pub helo: Option<String>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// Every domain goes to this next hop instead of its MX hosts.
    pub smarthost: Option<NextHopConfig>,
    /// Per destination domain, a next hop instead of its MX hosts.
    pub routes: BTreeMap<String, NextHopConfig>,
}

/// The certificate policy of outbound STARTTLS.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutboundTls {
    Never,
    Opportunistic,
    Verify,
    Required,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        let client = ClientSettings::default();
        OutboundConfig {
            enabled: true,
            concurrency: 100,
            per_domain: 10,
            port: 25,
            allow_local: false,
            tls: OutboundTls::Opportunistic,
            retry: None,
            helo: None,
            connect_timeout: client.connect_timeout,
            command_timeout: client.command_timeout,
            data_timeout: client.data_timeout,
            smarthost: None,
            routes: BTreeMap::new(),
        }
    }
}

/// A configured next hop: a host (name or IP) and port, with optional AUTH.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NextHopConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Overrides `[outbound] tls` for this hop.
    pub tls: Option<OutboundTls>,
}

fn default_smtp_port() -> u16 {
    25
}

fn tls_mode(tls: OutboundTls) -> TlsMode {
    match tls {
        OutboundTls::Never => TlsMode::Never,
        OutboundTls::Opportunistic => TlsMode::Opportunistic { verify: false },
        OutboundTls::Verify => TlsMode::Opportunistic { verify: true },
        OutboundTls::Required => TlsMode::Required,
    }
}

/// `[blobstore.NAME]`: where a blob store keeps its objects.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum BlobstoreConfig {
    /// Files under a directory (relative to the instance directory).
    Dir { path: PathBuf },
    /// An S3 bucket (AWS or any S3-compatible server).
    S3(S3Settings),
}

/// `[sql.NAME]`: a database that `sql:NAME` grants give to plugins.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum SqlConfig {
    /// A PostgreSQL server, through a connection pool.
    Postgres {
        /// `postgres://user:password@host:port/db` or `host=… user=… dbname=…`.
        url: String,
        #[serde(default = "default_pool_size")]
        pool_size: usize,
        #[serde(default = "default_idle_timeout", with = "humantime_serde")]
        idle_timeout: Duration,
        #[serde(default = "default_connect_timeout", with = "humantime_serde")]
        connect_timeout: Duration,
    },
    /// An SQLite file in this process (relative to the instance directory).
    Sqlite { path: PathBuf },
}

fn default_pool_size() -> usize {
    16
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `[kv.NAME]`: where a key/value store lives.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum KvConfig {
    /// In this process; gone at restart.
    Memory {
        #[serde(default = "default_max_keys")]
        max_keys: usize,
    },
    /// In Redis, shared by every server using it.
    Redis {
        url: String,
        /// Prepended to every key (default `waraka:NAME:`).
        prefix: Option<String>,
    },
}

fn default_max_keys() -> usize {
    100_000
}

/// `[dns]`.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers (`IP` or `IP:PORT`); empty: those of /etc/resolv.conf.
    pub servers: Vec<String>,
    /// Per query, before the next attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// `[[listener]]`: an address and what it is for.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: String,
    #[serde(default)]
    pub role: Role,
}

/// `[tls]`: PEM files, relative to the instance directory.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[smtp]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub listen: Vec<String>,
    pub hostname: Option<String>,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_errors: u32,
    pub max_junk_commands: u32,
    pub min_data_rate: u64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_data_line: usize,
    pub max_header_size: usize,
    pub max_received: usize,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub bare_newlines: BareNewlines,
    pub early_talker: EarlyTalker,
    #[serde(with = "humantime_serde")]
    pub banner_delay: Duration,
    pub strict_pipelining: bool,
    pub spool_dir: Option<PathBuf>,
    pub spool_memory_threshold: usize,
    pub auth_max_failures: u32,
    #[serde(with = "humantime_serde")]
    pub auth_failure_delay: Duration,
    pub auth_plaintext_loopback: bool,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        let s = SessionSettings::default();
        SmtpConfig {
            listen: vec!["127.0.0.1:2525".into()],
            hostname: None,
            max_message_size: s.max_message_size,
            max_recipients: s.max_recipients,
            max_errors: s.max_errors,
            max_junk_commands: s.max_junk_commands,
            min_data_rate: s.min_data_rate,
            max_connections: s.max_connections,
            max_connections_per_ip: s.max_connections_per_ip,
            max_data_line: s.max_data_line,
            max_header_size: s.max_header_size,
            max_received: s.max_received,
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: s.shutdown_grace,
            bare_newlines: s.bare_newlines,
            early_talker: s.early_talker,
            banner_delay: s.banner_delay,
            strict_pipelining: s.strict_pipelining,
            spool_dir: None,
            spool_memory_threshold: s.spool.memory_threshold,
            auth_max_failures: s.auth_max_failures,
            auth_failure_delay: s.auth_failure_delay,
            auth_plaintext_loopback: s.auth_plaintext_loopback,
        }
    }
}

/// `[plugin_defaults]` and `[plugin."NAME"]`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct PluginTable {
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub fuel: Option<u64>,
    pub memory: Option<usize>,
    pub on_error: Option<OnError>,
    pub breaker_faults: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub breaker_backoff: Option<Duration>,
    pub grants: Option<Vec<String>>,
}

/// `[runtime]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Plugin instances alive at once.
    pub max_instances: u32,
    /// The largest memory cap a plugin may get without a restart (bytes).
    pub max_memory: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: RuntimeSettings::default().max_instances,
            max_memory: 256 * 1024 * 1024,
        }
    }
}

/// A loaded instance, ready to serve.
pub struct Instance {
    /// The directory relative paths start from (the current directory for the embedded default).
    pub root: PathBuf,
    pub config: InstanceConfig,
    pub config_source: ConfigSource,
    /// (name, source) of every plugin found, unordered.
    plugin_sources: Vec<(String, PluginSource)>,
    pub embedded: bool,
}

fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Every `*.wasm` below `dir`, named by its relative path without `.wasm`.
fn scan_plugins(dir: &Path, base: &Path, out: &mut Vec<(String, PluginSource)>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            scan_plugins(&path, base, out)?;
        } else if path.extension().is_some_and(|e| e == "wasm") {
            let rel = path.strip_prefix(base).expect("below base").with_extension("");
            out.push((rel.to_string_lossy().into_owned(), PluginSource::File(path)));
        }
    }
    Ok(())
}

/// Parses `waraka.toml` text.
pub fn parse_config(text: &str) -> Result<InstanceConfig> {
    toml::from_str(text).map_err(|e| anyhow::anyhow!("{CONFIG_FILE}: {e}"))
}

impl Instance {
    /// Loads the instance in `dir`.
    pub fn load(dir: &Path) -> Result<Instance> {
        let root = dir
            .canonicalize()
            .with_context(|| format!("instance directory {}", dir.display()))?;
        let path = root.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let config = parse_config(&text)?;
        let mut plugin_sources = Vec::new();
        scan_plugins(&root.join("plugins"), &root.join("plugins"), &mut plugin_sources)?;
        Ok(Instance {
            config_source: ConfigSource::Dir(root.join("config")),
            root,
            config,
            plugin_sources,
            embedded: false,
        })
    }

    /// The embedded default instance, rooted at the current directory.
    pub fn embedded() -> Result<Instance> {
        let files: HashMap<String, String> = DEFAULT_CONFIG
            .iter()
            .filter(|(n, _)| *n != CONFIG_FILE)
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        let text = DEFAULT_CONFIG
            .iter()
            .find(|(n, _)| *n == CONFIG_FILE)
            .map(|(_, t)| *t)
            .unwrap_or_default();
        let config = parse_config(text)?;
        Ok(Instance {
            root: std::env::current_dir()?,
            config_source: ConfigSource::Embedded(Arc::new(files)),
            plugin_sources: CORE_PLUGINS
                .iter()
                .filter(|(name, _)| config.plugins.iter().any(|p| p == name))
                .map(|(n, b)| (n.to_string(), PluginSource::Embedded(b)))
                .collect(),
            config,
            embedded: true,
        })
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.root.join(path)
        }
    }

    /// The session settings from `[smtp]`.
    pub fn session_settings(&self) -> SessionSettings {
        let s = &self.config.smtp;
        let spool_dir = match &s.spool_dir {
            Some(dir) => self.resolve(dir),
            None if self.embedded => std::env::temp_dir().join(format!("waraka-spool-{}", std::process::id())),
            None => self.root.join("queue").join("spool"),
        };
        SessionSettings {
            hostname: s.hostname.clone().unwrap_or_else(machine_hostname),
            max_message_size: s.max_message_size,
            max_recipients: s.max_recipients,
            max_errors: s.max_errors,
            max_junk_commands: s.max_junk_commands,
            min_data_rate: s.min_data_rate,
            max_connections: s.max_connections,
            max_connections_per_ip: s.max_connections_per_ip,
            max_data_line: s.max_data_line,
            max_header_size: s.max_header_size,
            max_received: s.max_received,
            bare_newlines: s.bare_newlines,
            early_talker: s.early_talker,
            banner_delay: s.banner_delay,
            strict_pipelining: s.strict_pipelining,
            spool: SpoolSettings {
                dir: spool_dir,
                memory_threshold: s.spool_memory_threshold,
            },
            notes: NoteLimits::default(),
            idle_timeout: s.idle_timeout,
            shutdown_grace: s.shutdown_grace,
            auth_max_failures: s.auth_max_failures,
            auth_failure_delay: s.auth_failure_delay,
            auth_plaintext_loopback: s.auth_plaintext_loopback,
        }
    }

    /// The plugins to load, in chain order: the `plugins` list, then the rest by name.
    pub fn plugin_specs(&self) -> Result<Vec<PluginSpec>> {
        let mut sources: BTreeMap<&str, &PluginSource> =
            self.plugin_sources.iter().map(|(n, s)| (n.as_str(), s)).collect();
        let mut order: Vec<String> = Vec::new();
        for name in &self.config.plugins {
            if sources.contains_key(name.as_str()) && !order.contains(name) {
                order.push(name.clone());
            } else if !sources.contains_key(name.as_str()) {
                tracing::warn!(plugin = %name, "listed in {CONFIG_FILE} but no plugins/{name}.wasm");
            }
        }
        let rest: Vec<String> = sources
            .keys()
            .filter(|n| !order.iter().any(|o| o == *n))
            .map(|n| n.to_string())
            .collect();
        order.extend(rest);
        for name in self.config.plugin.keys() {
            // The default waraka.toml has tables for core plugins an instance may not install.
            let core = CORE_PLUGINS.iter().any(|(core, _)| core == name);
            if !sources.contains_key(name.as_str()) && !core {
                tracing::warn!(plugin = %name, "[plugin.\"{name}\"] in {CONFIG_FILE} matches no plugin");
            }
        }
        order
            .into_iter()
            .map(|name| {
                let source = sources.remove(name.as_str()).expect("listed").clone();
                self.spec(name, source)
            })
            .collect()
    }

    fn spec(&self, name: String, source: PluginSource) -> Result<PluginSpec> {
        let defaults = &self.config.plugin_defaults;
        let own = self.config.plugin.get(&name).cloned().unwrap_or_default();
        let base = PluginLimits::default();
        let limits = PluginLimits {
            timeout: own.timeout.or(defaults.timeout).unwrap_or(base.timeout),
            fuel: own.fuel.or(defaults.fuel).unwrap_or(base.fuel),
            memory: own.memory.or(defaults.memory).unwrap_or(base.memory),
            on_error: own.on_error.or(defaults.on_error).unwrap_or(base.on_error),
            breaker_faults: own
                .breaker_faults
                .or(defaults.breaker_faults)
                .unwrap_or(base.breaker_faults),
            breaker_backoff: own
                .breaker_backoff
                .or(defaults.breaker_backoff)
                .unwrap_or(base.breaker_backoff),
        };
        let grants = own.grants.or(defaults.grants.clone()).unwrap_or_default();
        let mut dirs = Vec::new();
        for grant in &grants {
            match grant.split_once(':') {
                Some(("dir", dir)) => {
                    let Some(host) = self.config.dirs.get(dir) else {
                        bail!("plugin {name}: grant {grant:?} names no [dirs].{dir}");
                    };
                    dirs.push(DirGrant {
                        host: self.resolve(host),
                        guest: format!("/{dir}"),
                    });
                }
                Some((kind @ ("kv" | "blobstore" | "sql"), backend)) => {
                    if !self.has_backend(kind, backend) {
                        bail!("plugin {name}: grant {grant:?} names no [{kind}.{backend}]");
                    }
                }
                None if ["dns", "forward", "authentication"].contains(&grant.as_str()) => {}
                _ => bail!(
                    "plugin {name}: unknown grant {grant:?} (known: dir:NAME, kv:NAME, blobstore:NAME, sql:NAME, dns, forward, authentication)"
                ),
            }
        }
        Ok(PluginSpec {
            name,
            source,
            limits,
            dirs,
            grants,
        })
    }

    /// Whether `[KIND.NAME]` is configured (for `KIND:NAME` grants).
    fn has_backend(&self, kind: &str, name: &str) -> bool {
        match kind {
            "kv" => self.config.kv.contains_key(name),
            "blobstore" => self.config.blobstore.contains_key(name),
            "sql" => self.config.sql.contains_key(name),
            _ => false,
        }
    }

    /// The capability backends: key/value stores and the resolver. Backends
    /// connect on first use, so a server whose Redis is down still starts.
    pub fn capability_backends(&self) -> Result<Backends> {
        let mut kv = HashMap::new();
        for (name, config) in &self.config.kv {
            let store = match config {
                KvConfig::Memory { max_keys } => KvStore::Memory(MemoryKv::new(*max_keys)),
                KvConfig::Redis { url, prefix } => {
                    let prefix = prefix.clone().unwrap_or_else(|| format!("waraka:{name}:"));
                    KvStore::Redis(RedisKv::new(url, prefix).with_context(|| format!("[kv.{name}]"))?)
                }
            };
            kv.insert(name.clone(), Arc::new(store));
        }
        let dns = self.dns()?;
        let blobstore = self
            .config
            .blobstore
            .iter()
            .map(|(name, config)| {
                let store = match config.clone() {
                    BlobstoreConfig::Dir { path } => BlobStore::Dir(DirStore::new(self.resolve(&path))),
                    BlobstoreConfig::S3(settings) => BlobStore::S3(S3Store::new(settings)),
                };
                (name.clone(), Arc::new(store))
            })
            .collect();
        let mut sql = HashMap::new();
        for (name, config) in &self.config.sql {
            let database = match config {
                SqlConfig::Postgres {
                    url,
                    pool_size,
                    idle_timeout,
                    connect_timeout,
                } => Database::Postgres(
                    PgDatabase::new(&PgSettings {
                        url: url.clone(),
                        pool_size: *pool_size,
                        idle_timeout: *idle_timeout,
                        connect_timeout: *connect_timeout,
                    })
                    .map_err(|e| anyhow!("[sql.{name}] {e}"))?,
                ),
                SqlConfig::Sqlite { path } => Database::Sqlite(SqliteDatabase::new(self.resolve(path))),
            };
            sql.insert(name.clone(), Arc::new(database));
        }
        Ok(Backends {
            kv,
            dns: Arc::new(dns),
            blobstore,
            sql,
            smtp_client: self.client_settings(),
        })
    }

    /// The resolver of `[dns]`.
    pub fn dns(&self) -> Result<Dns> {
        let servers = self
            .config
            .dns
            .servers
            .iter()
            .map(|s| {
                s.parse::<SocketAddr>()
                    .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .with_context(|| format!("[dns] servers: {s:?} is not IP or IP:PORT"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Dns::new(DnsSettings {
            servers,
            timeout: self.config.dns.timeout,
        }))
    }

    /// The SMTP client's defaults from `[outbound]`: EHLO name, timeouts, TLS policy.
    pub fn client_settings(&self) -> ClientSettings {
        let o = &self.config.outbound;
        ClientSettings {
            helo: o.helo.clone().unwrap_or_else(|| self.session_settings().hostname),
            connect_timeout: o.connect_timeout,
            command_timeout: o.command_timeout,
            data_timeout: o.data_timeout,
            tls: tls_mode(o.tls),
            auth: None,
        }
    }

    /// `[outbound]` as delivery settings; `None` when outbound delivery is off.
    pub fn outbound_settings(&self) -> Result<Option<OutboundSettings>> {
        let o = &self.config.outbound;
        if !o.enabled {
            return Ok(None);
        }
        if o.concurrency == 0 || o.per_domain == 0 {
            bail!("[outbound] concurrency and per_domain must be at least 1");
        }
        let schedule = match &o.retry {
            Some(text) => text.parse::<RetrySchedule>().context("[outbound] retry")?,
            None => RetrySchedule::default(),
        };
        let hostname = self.session_settings().hostname;
        let client = self.client_settings();
        let next_hop = |hop: &NextHopConfig, what: &str| -> Result<NextHop> {
            if hop.user.is_some() != hop.password.is_some() {
                bail!("{what}: user and password go together");
            }
            Ok(NextHop {
                host: hop.host.clone(),
                port: hop.port,
                auth: hop.user.clone().zip(hop.password.clone()),
                tls: hop.tls.map(tls_mode),
            })
        };
        let routes = o
            .routes
            .iter()
            .map(|(domain, hop)| {
                Ok((
                    domain.to_ascii_lowercase(),
                    next_hop(hop, &format!("[outbound.routes.{domain:?}]"))?,
                ))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(Some(OutboundSettings {
            client,
            hostname,
            route: RouteSettings {
                port: o.port,
                allow_local: o.allow_local,
            },
            schedule,
            concurrency: o.concurrency,
            per_domain: o.per_domain,
            smarthost: o
                .smarthost
                .as_ref()
                .map(|hop| next_hop(hop, "[outbound.smarthost]"))
                .transpose()?,
            routes,
        }))
    }

    /// Engine settings: pool size, the largest memory cap, the compile cache.
    pub fn runtime_settings(&self, specs: &[PluginSpec]) -> RuntimeSettings {
        let largest = specs.iter().map(|s| s.limits.memory).max().unwrap_or(0);
        RuntimeSettings {
            max_instances: self.config.runtime.max_instances,
            max_memory: largest.max(self.config.runtime.max_memory),
            cache_dir: (!self.embedded).then(|| self.root.join("queue").join("cache")),
        }
    }

    /// The outbound queue directory (`queue/outbound`).
    pub fn outbound_queue_dir(&self) -> PathBuf {
        self.root.join("queue").join("outbound")
    }

    /// Where the running server publishes its plugin status for `waraka plugin list`.
    pub fn status_file(&self) -> PathBuf {
        self.root.join("queue").join("plugins.status.json")
    }

    /// Re-reads the instance: the new `waraka.toml` when it is valid, else the
    /// current configuration (the error is returned beside it), and always a
    /// fresh scan of `plugins/`.
    pub fn reread(&self) -> (Instance, Option<anyhow::Error>) {
        match Instance::load(&self.root) {
            Ok(instance) => (instance, None),
            Err(e) => {
                let mut plugin_sources = Vec::new();
                let plugins = self.root.join("plugins");
                if scan_plugins(&plugins, &plugins, &mut plugin_sources).is_err() {
                    plugin_sources = self.plugin_sources.clone();
                }
                let instance = Instance {
                    root: self.root.clone(),
                    config: self.config.clone(),
                    config_source: self.config_source.clone(),
                    plugin_sources,
                    embedded: self.embedded,
                };
                (instance, Some(e))
            }
        }
    }

    /// The listeners: `[smtp] listen` (role mx) and every `[[listener]]`.
    pub fn listeners(&self) -> Vec<(String, Role)> {
        let mut all: Vec<(String, Role)> = self.config.smtp.listen.iter().map(|a| (a.clone(), Role::Mx)).collect();
        all.extend(self.config.listener.iter().map(|l| (l.address.clone(), l.role)));
        all
    }

    /// The TLS certificate and key files, when `[tls]` is configured.
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf)> {
        self.config
            .tls
            .as_ref()
            .map(|t| (self.resolve(&t.cert), self.resolve(&t.key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_parses_and_unknown_keys_are_errors() {
        let default = DEFAULT_CONFIG.iter().find(|(n, _)| *n == CONFIG_FILE).unwrap().1;
        let c = parse_config(default).unwrap();
        assert_eq!(c.plugins.len(), 10);
        assert_eq!(c.smtp.idle_timeout, Duration::from_secs(300));
        assert!(parse_config("[smtp]\nlisten_on = []\n").is_err());
        assert!(parse_config("[plugin_defaults]\non_error = \"explode\"\n").is_err());
        assert_eq!(c.kv["default"], KvConfig::Memory { max_keys: 100_000 });
    }

    #[test]
    fn kv_stores_and_dns_servers_are_checked() {
        let c = parse_config("[kv.r]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\n").unwrap();
        assert_eq!(
            c.kv["r"],
            KvConfig::Redis {
                url: "redis://127.0.0.1:1/0".into(),
                prefix: None
            }
        );
        assert!(
            parse_config("[kv.r]\nbackend = \"redis\"\n").is_err(),
            "redis needs a url"
        );
        assert!(
            parse_config("[kv.m]\nbackend = \"memory\"\nurl = \"x\"\n").is_err(),
            "unknown key"
        );
        assert!(parse_config("[kv.m]\nbackend = \"etcd\"\n").is_err());
        let mut instance = Instance::embedded().unwrap();
        instance.config.dns.servers = vec!["127.0.0.1:5353".into(), "192.0.2.1".into()];
        assert!(instance.capability_backends().is_ok());
        assert!(
            parse_config("[blobstore.b]\nbackend = \"s3\"\n").is_err(),
            "s3 needs a bucket"
        );
        assert!(parse_config("[blobstore.b]\nbackend = \"dir\"\npath = \"blobs\"\n").is_ok());
        let s3 = parse_config(
            "[blobstore.b]\nbackend = \"s3\"\nbucket = \"mail\"\nendpoint = \"http://127.0.0.1:9\"\npath_style = true\n",
        )
        .unwrap();
        assert_eq!(
            s3.blobstore["b"],
            BlobstoreConfig::S3(S3Settings {
                bucket: "mail".into(),
                endpoint: Some("http://127.0.0.1:9".into()),
                path_style: true,
                ..S3Settings::default()
            })
        );
        assert!(
            parse_config("[blobstore.b]\nbackend = \"s3\"\nbucket = \"m\"\nbukcet = \"typo\"\n").is_err(),
            "unknown keys are refused"
        );
        instance.config.dns.servers = vec!["dns.example".into()];
        assert!(instance.capability_backends().is_err());
    }

    #[test]
    fn the_embedded_instance_orders_plugins_and_grants_dirs() {
        let instance = Instance::embedded().unwrap();
        let specs = instance.plugin_specs().unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "access",
                "dns-list",
                "helo.checks",
                "limit",
                "relay",
                "mail_from.is_resolvable",
                "rcpt_to.disposable",
                "rcpt_to.in_host_list",
                "headers",
                "queue/maildir"
            ]
        );
        assert_eq!(specs[9].dirs[0].guest, "/maildir");
        assert_eq!(specs[1].grants, ["dns"]);
        assert_eq!(specs[0].limits.timeout, Duration::from_secs(30));
    }
}
