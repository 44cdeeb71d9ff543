//! The instance: `waraka.toml`, the plugins in `plugins/`, the files in
//! `config/` — or the embedded default instance when no directory is given.

use crate::capabilities::config_files::ConfigSource;
use crate::capabilities::{
    Antivirus, BlobStore, Clamd, Database, DirStore, Directory, DkimKeys, Dns, DnsSettings, DovecotAuth, GeoIp,
    HttpService, KvStore, MemoryKv, Milter, P0f, PgDatabase, PgSettings, RedisKv, Rspamd, S3Store, SpamScanner, Spamd,
    SqliteDatabase, Srs, is_socket_path,
};
use crate::delivery::{
    BindAddresses, ClientSettings, DmarcFailureReports, DmarcReports, DomainLimit, Limits, NextHop, OutboundSettings,
    Rate, RouteSettings, Submitter,
};
use crate::plugins::Backends;
use crate::plugins::{DirGrant, PluginLimits, PluginSource, PluginSpec, RuntimeSettings};
use crate::queue::RetrySchedule;
use crate::session::SessionSettings;
use anyhow::{Context, Result, anyhow, bail};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use waraka_config::*;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/core_plugins.rs"));
    include!(concat!(env!("OUT_DIR"), "/default_config.rs"));
}

pub use embedded::{CORE_PLUGINS, DEFAULT_CONFIG};

/// The chain of the embedded default instance (Haraka's default list).
pub fn default_chain() -> Vec<String> {
    parse_config(default_config_text())
        .map(|c| c.plugins)
        .unwrap_or_default()
}

/// The embedded default `waraka.toml`.
fn default_config_text() -> &'static str {
    DEFAULT_CONFIG
        .iter()
        .find(|(n, _)| *n == CONFIG_FILE)
        .map(|(_, t)| *t)
        .unwrap_or_default()
}

/// Lays out a new instance in `dir` (`waraka init`): `waraka.toml` with
/// `chain` as its plugin list, the core plugins of the chain in `plugins/`,
/// every default file of `config/`, and `queue/`. Fails when `dir` already
/// holds an instance or the chain names a plugin that is not a core one.
pub fn lay_out_instance(dir: &Path, chain: &[String]) -> Result<()> {
    if dir.join(CONFIG_FILE).exists() {
        bail!("{} already holds an instance", dir.display());
    }
    for name in chain {
        if !CORE_PLUGINS.iter().any(|(n, _)| n == name) {
            let known: Vec<&str> = CORE_PLUGINS.iter().map(|(n, _)| *n).collect();
            bail!("unknown core plugin {name:?} (known: {})", known.join(", "));
        }
    }
    for sub in ["plugins", "config", "queue"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    for (name, bytes) in CORE_PLUGINS.iter().filter(|(n, _)| chain.iter().any(|c| c == n)) {
        let path = dir.join("plugins").join(format!("{name}.wasm"));
        std::fs::create_dir_all(path.parent().expect("has parent"))?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    for (name, text) in DEFAULT_CONFIG {
        let path = if *name == CONFIG_FILE {
            dir.join(name)
        } else {
            dir.join("config").join(name)
        };
        std::fs::create_dir_all(path.parent().expect("has parent"))?;
        let text = if *name == CONFIG_FILE {
            with_plugin_list(text, chain)
        } else {
            text.to_string()
        };
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Replaces the `plugins = [...]` line of the default waraka.toml.
fn with_plugin_list(text: &str, plugins: &[String]) -> String {
    let list = plugins.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", ");
    text.lines()
        .map(|line| {
            if line.starts_with("plugins = ") {
                format!("plugins = [{list}]")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// One address to listen on, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// `IP:PORT`.
    pub address: String,
    /// What its sessions are for.
    pub role: Role,
    /// The load balancers trusted to send a PROXY protocol header; empty:
    /// clients connect directly.
    pub proxy_from: Vec<IpNet>,
    /// The front ends trusted to name their client with `XCLIENT`.
    pub xclient_from: Vec<IpNet>,
    /// Its own name instead of `[smtp] hostname`.
    pub hostname: Option<String>,
}

impl Listener {
    /// A listener that clients connect to directly.
    pub fn plain(address: &str, role: Role) -> Listener {
        Listener {
            address: address.to_string(),
            role,
            proxy_from: Vec::new(),
            xclient_from: Vec::new(),
            hostname: None,
        }
    }
}

/// A loaded instance, ready to serve.
pub struct Instance {
    /// The directory relative paths start from (the current directory for the embedded default).
    pub root: PathBuf,
    /// `waraka.toml`, parsed.
    pub config: InstanceConfig,
    /// Where plugins' config files are read from (`config/`, or the embedded set).
    pub config_source: ConfigSource,
    /// (name, source) of every plugin found, unordered.
    plugin_sources: Vec<(String, PluginSource)>,
    /// Whether this is the default instance built into the binary.
    pub embedded: bool,
}

/// Addresses and CIDR ranges of the setting `key` of `section`.
fn networks(section: &str, key: &str, nets: &[String]) -> Result<Vec<IpNet>> {
    nets.iter()
        .map(|net| {
            net.parse::<IpNet>()
                .or_else(|_| net.parse::<IpAddr>().map(IpNet::from))
                .with_context(|| format!("{section}: {key} {net:?} is not a network"))
        })
        .collect()
}

/// The grants that name a backend (`kv:NAME`, besides `dir:NAME`), and
/// those that name none.
const BACKEND_GRANTS: [&str; 6] = ["kv", "blobstore", "sql", "milter", "ldap", "http"];
const UNNAMED_GRANTS: [&str; 11] = [
    "dns",
    "forward",
    "outbound-queue",
    "authentication",
    "dkim",
    "antivirus",
    "spamfilter",
    "sasl",
    "geoip",
    "imap",
    "p0f",
];

/// Every grant, for the error that names an unknown one.
fn known_grants() -> String {
    let named = std::iter::once(&"dir")
        .chain(&BACKEND_GRANTS)
        .map(|kind| format!("{kind}:NAME"));
    named
        .chain(std::iter::once("socket:PATH".to_string()))
        .chain(UNNAMED_GRANTS.iter().map(|g| g.to_string()))
        .collect::<Vec<_>>()
        .join(", ")
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
        let config = parse_config(default_config_text())?;
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

    /// The server's name in Haraka's `config/me` (its first line), for an
    /// instance carried over from Haraka that sets no `[smtp] hostname`.
    fn haraka_me(&self) -> Option<String> {
        let text = match &self.config_source {
            ConfigSource::Dir(dir) => std::fs::read_to_string(dir.join("me")).ok()?,
            ConfigSource::Embedded(files) => files.get("me")?.clone(),
        };
        let name = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))?;
        Some(name.to_string())
    }

    /// Where the directory `[dirs].NAME` is, when waraka.toml names one.
    pub fn named_dir(&self, name: &str) -> Option<PathBuf> {
        self.config.dirs.get(name).map(|dir| self.resolve(dir))
    }

    /// The session settings from `[smtp]`.
    pub fn session_settings(&self) -> SessionSettings {
        let s = &self.config.smtp;
        let spool_dir = match &s.spool_dir {
            Some(dir) => self.resolve(dir),
            None if self.embedded => std::env::temp_dir().join(format!("waraka-spool-{}", std::process::id())),
            None => self.root.join("queue").join("spool"),
        };
        let hostname = s
            .hostname
            .clone()
            .or_else(|| self.haraka_me())
            .unwrap_or_else(machine_hostname);
        let mut settings = SessionSettings::from_config(s, hostname, spool_dir);
        settings.park_after = self.config.runtime.idle_release;
        settings
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

    /// The spec of plugin `name` loaded from `source`, with the limits and
    /// grants the instance gives that name.
    pub fn plugin_spec(&self, name: String, source: PluginSource) -> Result<PluginSpec> {
        self.spec(name, source)
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
                    let Some(host) = self.named_dir(dir) else {
                        bail!("plugin {name}: grant {grant:?} names no [dirs].{dir}");
                    };
                    dirs.push(DirGrant {
                        host,
                        guest: format!("/{dir}"),
                    });
                }
                Some(("socket", path)) => {
                    if !is_socket_path(path) {
                        bail!("plugin {name}: grant {grant:?} names no absolute socket path");
                    }
                }
                Some((kind, backend)) if BACKEND_GRANTS.contains(&kind) => {
                    if !self.has_backend(kind, backend) {
                        bail!("plugin {name}: grant {grant:?} names no [{kind}.{backend}]");
                    }
                }
                None => match self.unnamed_grant(grant) {
                    Some(Ok(())) => {}
                    Some(Err(needs)) => bail!("plugin {name}: grant {grant:?} needs {needs}"),
                    None => bail!("plugin {name}: unknown grant {grant:?} (known: {})", known_grants()),
                },
                _ => bail!("plugin {name}: unknown grant {grant:?} (known: {})", known_grants()),
            }
        }
        Ok(PluginSpec {
            name,
            source,
            limits,
            dirs,
            grants,
            roles: own.roles.or(defaults.roles.clone()).unwrap_or_default(),
        })
    }

    /// A grant without a backend name: `Ok` when it can be used, `Err` with
    /// the section it needs when that is missing, `None` when unknown.
    fn unnamed_grant(&self, grant: &str) -> Option<Result<(), &'static str>> {
        if !UNNAMED_GRANTS.contains(&grant) {
            return None;
        }
        let needs = |configured: bool, section: &'static str| if configured { Ok(()) } else { Err(section) };
        Some(match grant {
            "antivirus" => needs(
                self.config.antivirus.clamd.is_some(),
                "[antivirus] clamd = \"HOST:PORT\" or a socket path",
            ),
            "spamfilter" => needs(
                self.config.spamfilter.rspamd.is_some() || self.config.spamfilter.spamd.is_some(),
                "[spamfilter] rspamd = \"HOST:PORT\" or spamd = \"HOST:PORT\" (or a socket path)",
            ),
            "sasl" => needs(
                self.config.sasl.dovecot.is_some(),
                "[sasl] dovecot = \"HOST:PORT\" or a socket path",
            ),
            "geoip" => needs(
                !self.config.geoip.databases.is_empty(),
                "[geoip] databases = [\"GeoLite2-City.mmdb\", …]",
            ),
            "p0f" => needs(self.config.p0f.socket.is_some(), "[p0f] socket = \"/run/p0f.sock\""),
            _ => Ok(()),
        })
    }

    /// The `[geoip]` databases, read now; none when it names none.
    fn geoip(&self) -> Result<Option<Arc<GeoIp>>> {
        let databases = &self.config.geoip.databases;
        if databases.is_empty() {
            return Ok(None);
        }
        let paths: Vec<PathBuf> = databases.iter().map(|p| self.resolve(p)).collect();
        let geoip = GeoIp::open(&paths).map_err(|e| anyhow!("[geoip] {e}"))?;
        Ok(Some(Arc::new(geoip)))
    }

    /// The scanner `[spamfilter]` names: rspamd or spamd, not both.
    fn spam_scanner(&self) -> Result<Option<SpamScanner>> {
        let config = &self.config.spamfilter;
        Ok(match (&config.rspamd, &config.spamd) {
            (Some(_), Some(_)) => bail!("[spamfilter] names rspamd and spamd: choose one"),
            (Some(rspamd), None) => Some(SpamScanner::Rspamd(Rspamd::new(rspamd.clone()))),
            (None, Some(spamd)) => Some(SpamScanner::Spamd(Spamd::new(spamd.clone()))),
            (None, None) => None,
        })
    }

    /// Whether `[KIND.NAME]` is configured (for `KIND:NAME` grants).
    fn has_backend(&self, kind: &str, name: &str) -> bool {
        match kind {
            "kv" => self.config.kv.contains_key(name),
            "blobstore" => self.config.blobstore.contains_key(name),
            "sql" => self.config.sql.contains_key(name),
            "milter" => self.config.milter.contains_key(name),
            "ldap" => self.config.ldap.contains_key(name),
            "http" => self.config.http.contains_key(name),
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
        let mut http = HashMap::new();
        for (name, config) in &self.config.http {
            let service = HttpService::new(config).map_err(|e| anyhow!("[http.{name}] {e}"))?;
            http.insert(name.clone(), Arc::new(service));
        }
        Ok(Backends {
            kv,
            dns: Arc::new(dns),
            blobstore,
            sql,
            smtp_client: self.client_settings(),
            dkim: self.dkim_keys(),
            srs: self.srs(),
            antivirus: self
                .config
                .antivirus
                .clamd
                .as_deref()
                .map(|address| Arc::new(Antivirus::new(Clamd::parse(address)))),
            spamfilter: self.spam_scanner()?.map(Arc::new),
            sasl: self
                .config
                .sasl
                .dovecot
                .clone()
                .map(|address| Arc::new(DovecotAuth::new(address))),
            geoip: self.geoip()?,
            p0f: self
                .config
                .p0f
                .socket
                .as_ref()
                .map(|socket| Arc::new(P0f::new(self.resolve(socket)))),
            dmarc_reports: self.dmarc_reports(),
            dmarc_failures: self.dmarc_failure_reports(),
            milter: self
                .config
                .milter
                .iter()
                .map(|(name, config)| (name.clone(), Arc::new(Milter::new(&config.address))))
                .collect(),
            ldap: self
                .config
                .ldap
                .iter()
                .map(|(name, config)| (name.clone(), Arc::new(Directory::new(config.clone()))))
                .collect(),
            http,
        })
    }

    /// Who sends the daily reports: the hostname, from `from` or else
    /// `LOCAL@` the hostname.
    fn report_submitter(&self, from: Option<&str>, local: &str) -> Submitter {
        let hostname = self.session_settings().hostname;
        Submitter {
            from: from.map_or_else(|| format!("{local}@{hostname}"), str::to_string),
            name: hostname,
        }
    }

    /// The DMARC aggregate report counts (`queue/dmarc-reports.json`), when
    /// outbound delivery and `[outbound] dmarc_reports` are on.
    pub fn dmarc_reports(&self) -> Option<Arc<DmarcReports>> {
        let o = &self.config.outbound;
        if self.embedded || !o.enabled || !o.dmarc_reports {
            return None;
        }
        let submitter = self.report_submitter(o.dmarc_report_from.as_deref(), "dmarc-reports");
        let path = self.outbound_queue_dir().with_file_name("dmarc-reports.json");
        Some(Arc::new(DmarcReports::open(&path, submitter, crate::queue::now_ms())))
    }

    /// Where DMARC failure reports wait to be sent, when outbound delivery
    /// and `[outbound] dmarc_failure_reports` are on.
    pub fn dmarc_failure_reports(&self) -> Option<Arc<DmarcFailureReports>> {
        let o = &self.config.outbound;
        if self.embedded || !o.enabled || !o.dmarc_failure_reports {
            return None;
        }
        let submitter = self.report_submitter(o.dmarc_report_from.as_deref(), "dmarc-reports");
        Some(Arc::new(DmarcFailureReports::new(
            submitter,
            o.dmarc_failure_report_limit,
        )))
    }

    /// The DKIM signing keys: the instance's `dkim/` (none when embedded).
    pub fn dkim_keys(&self) -> Arc<DkimKeys> {
        Arc::new(DkimKeys::new((!self.embedded).then(|| self.root.join("dkim"))))
    }

    /// The sender rewriting of `[srs]`; none without a secret.
    pub fn srs(&self) -> Option<Arc<Srs>> {
        let config = &self.config.srs;
        let domain = config
            .domain
            .clone()
            .unwrap_or_else(|| self.session_settings().hostname);
        Srs::new(&domain, &config.secrets, config.max_age).map(Arc::new)
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
            trust_anchor: self.config.dns.trust_anchor.as_deref().map(|p| self.resolve(p)),
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
            tls: o.tls.into(),
            bind: BindAddresses {
                v4: o.bind_address,
                v6: o.bind_address6,
            },
            ..ClientSettings::default()
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
            if is_socket_path(&hop.host) && !hop.lmtp {
                bail!(
                    "{what}: host {:?} is a Unix socket, which is for LMTP hops (lmtp = true)",
                    hop.host
                );
            }
            Ok(NextHop::from(hop))
        };
        let hops = |table: &BTreeMap<String, NextHopConfig>, section: &str| {
            table
                .iter()
                .map(|(key, hop)| {
                    Ok((
                        key.to_ascii_lowercase(),
                        next_hop(hop, &format!("[outbound.{section}.{key:?}]"))?,
                    ))
                })
                .collect::<Result<HashMap<_, _>>>()
        };
        // A sender key is an address, `@domain` or `<>`: a bare domain
        // would match no sender, silently.
        for (section, key) in o
            .senders
            .keys()
            .map(|k| ("senders", k))
            .chain(o.sources.keys().map(|k| ("sources", k)))
        {
            if key != "<>" && !key.contains('@') {
                bail!(
                    "[outbound.{section}.{key:?}]: a sender is an address, @domain or <> (write \"@{key}\" for the domain)"
                );
            }
        }
        let routes = hops(&o.routes, "routes")?;
        let senders = hops(&o.senders, "senders")?;
        let sources = o
            .sources
            .iter()
            .map(|(key, source)| {
                let bind = crate::delivery::BindAddresses {
                    v4: source.bind_address,
                    v6: source.bind_address6,
                };
                let helo = source.helo.clone();
                (key.to_ascii_lowercase(), crate::delivery::Source { bind, helo })
            })
            .collect();
        let domains = o
            .domains
            .iter()
            .map(|(domain, limit)| {
                let what = format!("[outbound.domains.{domain:?}]");
                if limit.concurrency == Some(0) {
                    bail!("{what} concurrency must be at least 1");
                }
                let rate = limit
                    .rate
                    .as_deref()
                    .map(|text| text.parse::<Rate>().map_err(|e| anyhow::anyhow!("{what} rate: {e}")))
                    .transpose()?;
                Ok((
                    domain.to_ascii_lowercase(),
                    DomainLimit {
                        concurrency: limit.concurrency,
                        rate,
                        tls: limit.tls.map(Into::into),
                    },
                ))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(Some(OutboundSettings {
            client,
            hostname: hostname.clone(),
            dkim: self.dkim_keys(),
            srs: self.srs(),
            delay_warning: o.delay_warning,
            mta_sts: o.mta_sts.then_some(o.mta_sts_port),
            dane: o.dane,
            tls_reports: o
                .tls_reports
                .then(|| self.report_submitter(o.tls_report_from.as_deref(), "tls-reports")),
            dmarc_reports: None,
            dmarc_failures: None,
            route: self.route_settings(),
            schedule,
            concurrency: o.concurrency,
            limits: Limits {
                per_domain: o.per_domain,
                domains,
                suspend_unreachable: o.suspend_unreachable,
            },
            smarthost: o
                .smarthost
                .as_ref()
                .map(|hop| next_hop(hop, "[outbound.smarthost]"))
                .transpose()?,
            routes,
            senders,
            sources,
        }))
    }

    /// Engine settings: pool size, the largest memory cap, the compile cache.
    pub fn runtime_settings(&self, specs: &[PluginSpec]) -> RuntimeSettings {
        let largest = specs.iter().map(|s| s.limits.memory).max().unwrap_or(0);
        RuntimeSettings {
            max_instances: self.config.runtime.max_instances,
            max_memory: largest.max(self.config.runtime.max_memory),
            cache_dir: (!self.embedded).then(|| self.root.join("queue").join("cache")),
            fault_delay: self.config.runtime.fault_delay,
            warm_instances: self.config.runtime.warm_instances,
        }
    }

    /// The outbound queue directory (`queue/outbound`).
    pub fn outbound_queue_dir(&self) -> PathBuf {
        self.root.join("queue").join("outbound")
    }

    /// How outbound delivery finds and reaches a domain's servers.
    pub fn route_settings(&self) -> RouteSettings {
        let o = &self.config.outbound;
        RouteSettings {
            port: o.port,
            allow_local: o.allow_local,
            protocols: o.inet_protocols,
        }
    }

    /// The ACME ordering of `[acme]` for `[tls]`'s default certificate,
    /// when configured; its account is kept in `queue/acme/`.
    pub fn acme(&self) -> Result<Option<crate::acme::Acme>> {
        let Some(settings) = self.config.acme.clone() else {
            return Ok(None);
        };
        let Some(tls) = &self.config.tls else {
            bail!("[acme] writes the certificate of [tls]: give [tls] cert and key paths");
        };
        let domains = if settings.domains.is_empty() {
            vec![self.session_settings().hostname]
        } else {
            settings.domains.clone()
        };
        crate::acme::Acme::new(
            settings,
            domains,
            self.resolve(&tls.cert),
            self.resolve(&tls.key),
            &self.root.join("queue").join("acme"),
        )
        .map(Some)
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
    pub fn listeners(&self) -> Result<Vec<Listener>> {
        let mut all: Vec<Listener> = self
            .config
            .smtp
            .listen
            .iter()
            .map(|address| Listener::plain(address, Role::Mx))
            .collect();
        for l in &self.config.listener {
            let section = format!("[[listener]] {}", l.address);
            all.push(Listener {
                address: l.address.clone(),
                role: l.role,
                proxy_from: networks(&section, "proxy_from", &l.proxy_from)?,
                xclient_from: networks(&section, "xclient_from", &l.xclient_from)?,
                hostname: l.hostname.clone(),
            });
        }
        Ok(all)
    }

    /// The clients STARTTLS is not offered to (`[tls] no_tls_hosts`).
    pub fn no_tls_hosts(&self) -> Result<Vec<IpNet>> {
        let hosts = self.config.tls.as_ref().map_or(&[][..], |t| &t.no_tls_hosts);
        networks("[tls]", "no_tls_hosts", hosts)
    }

    /// The TLS certificate and key files, when `[tls]` is configured: the
    /// default pair first, then those of `[[tls.sni]]`.
    pub fn tls_files(&self) -> Option<Vec<(PathBuf, PathBuf)>> {
        self.config.tls.as_ref().map(|t| {
            std::iter::once((&t.cert, &t.key))
                .chain(t.sni.iter().map(|files| (&files.cert, &files.key)))
                .map(|(cert, key)| (self.resolve(cert), self.resolve(key)))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_core_plugin_ships_its_docs_and_config() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (name, _) in CORE_PLUGINS {
            assert!(
                root.join(format!("docs/plugins/{name}.md")).is_file(),
                "docs/plugins/{name}.md is missing"
            );
            // rcpt_to.in_host_list reads Haraka's config/host_list.
            let base = if *name == "rcpt_to.in_host_list" {
                "host_list"
            } else {
                name
            };
            let (dir, file) = base.rsplit_once('/').unwrap_or(("", base));
            let configs = std::fs::read_dir(root.join("config").join(dir)).unwrap();
            assert!(
                configs
                    .flatten()
                    .any(|f| f.file_name().to_string_lossy().starts_with(file)),
                "no config file for {name}"
            );
        }
    }

    #[test]
    fn the_default_config_parses_and_unknown_keys_are_errors() {
        let default = DEFAULT_CONFIG.iter().find(|(n, _)| *n == CONFIG_FILE).unwrap().1;
        let c = parse_config(default).unwrap();
        assert_eq!(c.plugins.len(), 10);
        assert_eq!(c.smtp.idle_timeout, Duration::from_secs(300));
        assert!(parse_config("[smtp]\nlisten_on = []\n").is_err());
        assert!(parse_config("[smtp]\nbanner = \"two\\r\\n220 lines\"\n").is_err());
        assert_eq!(
            parse_config("[smtp]\nbanner = \"ESMTP\"\n").unwrap().smtp.banner,
            "ESMTP"
        );
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
    fn one_spam_scanner_at_most() {
        let mut instance = Instance::embedded().unwrap();
        instance.config.spamfilter.spamd = Some("/run/spamd.sock".into());
        assert!(matches!(instance.spam_scanner(), Ok(Some(SpamScanner::Spamd(_)))));
        instance.config.spamfilter.rspamd = Some("127.0.0.1:11333".into());
        assert!(instance.spam_scanner().unwrap_err().to_string().contains("choose one"));
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

    #[test]
    fn grants_are_checked_against_what_is_configured() {
        let with_grants = |grants: &[&str]| {
            let mut instance = Instance::embedded().unwrap();
            let table = instance.config.plugin.entry("headers".into()).or_default();
            table.grants = Some(grants.iter().map(|g| g.to_string()).collect());
            instance.plugin_specs().map(|_| ()).map_err(|e| e.to_string())
        };
        assert_eq!(
            with_grants(&[
                "dns",
                "forward",
                "kv:default",
                "dir:maildir",
                "socket:/run/dovecot/lmtp"
            ]),
            Ok(())
        );
        assert_eq!(
            with_grants(&["magic"]),
            Err(
                "plugin headers: unknown grant \"magic\" (known: dir:NAME, kv:NAME, blobstore:NAME, sql:NAME, \
                 milter:NAME, ldap:NAME, http:NAME, socket:PATH, dns, forward, outbound-queue, authentication, dkim, antivirus, spamfilter, sasl, geoip, imap, p0f)"
                    .into()
            )
        );
        assert!(
            with_grants(&["socket:run/lmtp"])
                .unwrap_err()
                .contains("names no absolute socket path")
        );
        assert!(
            with_grants(&["kv:nowhere"])
                .unwrap_err()
                .contains("names no [kv.nowhere]")
        );
        assert!(
            with_grants(&["milter:nowhere"])
                .unwrap_err()
                .contains("names no [milter.nowhere]")
        );
        assert!(
            with_grants(&["antivirus"])
                .unwrap_err()
                .contains("needs [antivirus] clamd")
        );
        assert!(with_grants(&["web:x"]).unwrap_err().contains("unknown grant"));
    }

    #[test]
    fn only_lmtp_hops_may_be_unix_sockets() {
        let with_route = |route: &str| {
            let mut instance = Instance::embedded().unwrap();
            let text = format!("[outbound.routes.\"mail.test\"]\nhost = \"/run/dovecot/lmtp\"\n{route}");
            instance.config.outbound = parse_config(&text).unwrap().outbound;
            instance.outbound_settings().map(|_| ()).map_err(|e| e.to_string())
        };
        assert_eq!(with_route("lmtp = true\n"), Ok(()));
        assert!(
            with_route("")
                .unwrap_err()
                .contains("is a Unix socket, which is for LMTP hops (lmtp = true)")
        );
    }

    #[test]
    fn senders_pick_their_relay_after_the_recipient_domains_routes() {
        let text = r#"
            [outbound.smarthost]
            host = "smarthost.test"
            [outbound.routes."Routed.test"]
            host = "routed.test"
            [outbound.senders."@Tenant.test"]
            host = "tenant-relay.test"
            [outbound.senders."boss@tenant.test"]
            host = "boss-relay.test"
            user = "boss"
            password = "secret"
            [outbound.senders."<>"]
            host = "bounce-relay.test"
        "#;
        let mut instance = Instance::embedded().unwrap();
        instance.config.outbound = parse_config(text).unwrap().outbound;
        let settings = instance.outbound_settings().unwrap().unwrap();
        let hop = |domain: &str, sender: &str| settings.fixed_hop(domain, sender).map(|hop| hop.host.clone());
        assert_eq!(hop("far.test", "a@tenant.test").as_deref(), Some("tenant-relay.test"));
        assert_eq!(
            hop("far.test", "Boss@Tenant.test").as_deref(),
            Some("boss-relay.test"),
            "the address wins"
        );
        assert_eq!(hop("far.test", "").as_deref(), Some("bounce-relay.test"));
        assert_eq!(hop("far.test", "a@other.test").as_deref(), Some("smarthost.test"));
        assert_eq!(
            hop("routed.test", "a@tenant.test").as_deref(),
            Some("routed.test"),
            "the recipient's route wins"
        );
        let sourced = r#"
            [outbound]
            helo = "mx.example.com"
            bind_address = "192.0.2.1"
            [outbound.sources."@Tenant.test"]
            bind_address6 = "2001:db8::10"
            helo = "mail.tenant.test"
        "#;
        instance.config.outbound = parse_config(sourced).unwrap().outbound;
        let settings = instance.outbound_settings().unwrap().unwrap();
        let tenant = settings.client_for("a@TENANT.test");
        assert_eq!(tenant.helo, "mail.tenant.test");
        assert_eq!(
            (tenant.bind.v4, tenant.bind.v6),
            (
                Some("192.0.2.1".parse().unwrap()),
                Some("2001:db8::10".parse().unwrap())
            ),
            "what the source leaves out is [outbound]'s"
        );
        assert_eq!(settings.client_for("").helo, "mx.example.com", "no entry for <>");
        instance.config.outbound = parse_config("[outbound.senders.\"tenant.test\"]\nhost = \"x\"\n")
            .unwrap()
            .outbound;
        let refused = instance.outbound_settings().map(|_| ()).unwrap_err().to_string();
        assert!(refused.contains(r#"write "@tenant.test" for the domain"#), "{refused}");
    }
}
