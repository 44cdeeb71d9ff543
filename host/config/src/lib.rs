//! The schema of `waraka.toml`: what an administrator may write, with every
//! default, and [`parse_config`]. Plain data: turning it into running
//! listeners, sessions, plugins and stores is the server's job (`waraka::config`).
//! Kept in its own crate, free of the server, so the config loader can be
//! fuzzed on its own.
#![warn(missing_docs)]

use anyhow::{Result, anyhow};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use waraka_protocol::BareNewlines;

/// What a listener is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Port 25: mail from the world; no AUTH required.
    #[default]
    Mx,
    /// Port 587: AUTH required before MAIL.
    Submission,
    /// Port 465: implicit TLS, AUTH required before MAIL.
    Submissions,
}

impl Role {
    /// The role's name in configuration and logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::Mx => "mx",
            Role::Submission => "submission",
            Role::Submissions => "submissions",
        }
    }
}

/// What to do with a client that talks before the greeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EarlyTalker {
    /// `554 5.5.0` and close.
    #[default]
    Reject,
    /// Only flag it (`session.early-talker()`), so a plugin decides (Haraka's way).
    Flag,
}

/// Which messages get the `Date` and `Message-ID` they lack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AddMissingHeaders {
    /// None: every message leaves as it came.
    Never,
    /// Those of relaying sessions (users' own mail, local programs'), as
    /// Postfix does for its `local_header_rewrite_clients`.
    #[default]
    Relaying,
    /// Every message (Postfix's `always_add_missing_headers`).
    Always,
}

/// What a plugin fault turns into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The hook answers `451 4.3.0` (a temporary failure).
    #[default]
    Tempfail,
    /// The chain goes on as if the plugin said `cont`.
    Continue,
}

/// Settings of an S3 store (`[blobstore.NAME]` with `backend = "s3"`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// The bucket every object goes to.
    pub bucket: String,
    /// The AWS region (default: the SDK's lookup in the environment and profile).
    pub region: Option<String>,
    /// A non-AWS endpoint (e.g. `http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible servers need.
    #[serde(default)]
    pub path_style: bool,
    /// Prepended to every key.
    #[serde(default)]
    pub prefix: String,
    /// Static credentials; without them the standard AWS chain (environment, profile, web identity, IMDS).
    pub access_key_id: Option<String>,
    /// The secret that goes with `access_key_id`.
    pub secret_access_key: Option<String>,
}

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
    /// `[smtp]`: listeners, limits and timeouts of every session.
    pub smtp: SmtpConfig,
    #[serde(default)]
    /// `[plugin_defaults]`: limits every plugin gets unless its own table says otherwise.
    pub plugin_defaults: PluginTable,
    #[serde(default)]
    /// `[plugin."NAME"]`: one plugin's limits and grants, by plugin name.
    pub plugin: BTreeMap<String, PluginTable>,
    /// Named host directories that `dir:NAME` grants give to plugins.
    #[serde(default)]
    pub dirs: BTreeMap<String, PathBuf>,
    #[serde(default)]
    /// `[runtime]`: the WebAssembly engine's settings.
    pub runtime: RuntimeConfig,
    /// More listeners, each with a role (`[[listener]]`).
    #[serde(default)]
    pub listener: Vec<ListenerConfig>,
    /// Certificate and key for STARTTLS and implicit TLS.
    pub tls: Option<TlsConfig>,
    /// Certificates for `[tls]` obtained and renewed over ACME (RFC 8555).
    pub acme: Option<AcmeConfig>,
    /// Named key/value stores that `kv:NAME` grants give to plugins.
    #[serde(default)]
    pub kv: BTreeMap<String, KvConfig>,
    /// The resolver behind the `dns` grant.
    #[serde(default)]
    pub dns: DnsConfig,
    /// The virus scanner behind the `antivirus` grant.
    #[serde(default)]
    pub antivirus: AntivirusConfig,
    /// The spam scanner behind the `spamfilter` grant.
    #[serde(default)]
    pub spamfilter: SpamfilterConfig,
    /// Local submission: `waraka sendmail` (and a `sendmail` link to it).
    #[serde(default)]
    pub sendmail: SendmailConfig,
    /// The location databases behind the `geoip` grant.
    #[serde(default)]
    pub geoip: GeoipConfig,
    /// The p0f daemon behind the `p0f` grant.
    #[serde(default)]
    pub p0f: P0fConfig,
    /// The password authority behind the `sasl` grant.
    #[serde(default)]
    pub sasl: SaslConfig,
    /// Named mail filters that `milter:NAME` grants give to plugins.
    #[serde(default)]
    pub milter: BTreeMap<String, MilterConfig>,
    /// Named LDAP directories that `ldap:NAME` grants give to plugins.
    #[serde(default)]
    pub ldap: BTreeMap<String, LdapConfig>,
    /// Named HTTP services that `http:NAME` grants give to plugins.
    #[serde(default)]
    pub http: BTreeMap<String, HttpConfig>,
    /// Named blob stores that `blobstore:NAME` grants give to plugins.
    #[serde(default)]
    pub blobstore: BTreeMap<String, BlobstoreConfig>,
    /// Named databases that `sql:NAME` grants give to plugins.
    #[serde(default)]
    pub sql: BTreeMap<String, SqlConfig>,
    /// Delivery of relayed mail from the host's outbound queue.
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// The Sender Rewriting Scheme for mail forwarded to other domains.
    #[serde(default)]
    pub srs: SrsConfig,
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
    /// Which IP versions deliveries use (Postfix's `inet_protocols`): a
    /// host whose IPv6 has no route, or no PTR records the big receivers
    /// insist on, sends over IPv4 only.
    pub inet_protocols: InetProtocols,
    /// `never`, `opportunistic` (STARTTLS when offered, any certificate),
    /// `verify` (when offered, verified) or `required` (verified, else no delivery).
    pub tls: OutboundTls,
    /// Haraka's `temp_fail_intervals` text; the default doubles from 64 s to about 36 h.
    pub retry: Option<String>,
    /// Whether the MTA-STS policies (RFC 8461) of destination domains are
    /// looked up and, in `enforce` mode, obeyed.
    pub mta_sts: bool,
    /// The HTTPS port of MTA-STS policy hosts (443; tests use others).
    pub mta_sts_port: u16,
    /// Whether DANE (RFC 7672) is obeyed: a destination whose MX records
    /// and TLSA records DNSSEC proves gets TLS with a certificate those
    /// records match, or no delivery. Off by default: it needs DNS servers
    /// that pass DNSSEC records (the host validates them itself).
    pub dane: bool,
    /// Whether TLS reports (RFC 8460) are sent: each day, every destination
    /// domain that publishes `_smtp._tls` is mailed how TLS went with it.
    pub tls_reports: bool,
    /// The reports' sender (default: `tls-reports@` and `[smtp] hostname`).
    pub tls_report_from: Option<String>,
    /// Whether DMARC aggregate reports (RFC 7489 §7.2) are sent: each day,
    /// every author domain whose DMARC record has `rua` addresses is mailed
    /// what the `authentication` capability verified of its mail.
    pub dmarc_reports: bool,
    /// The reports' sender (default: `dmarc-reports@` and `[smtp] hostname`).
    pub dmarc_report_from: Option<String>,
    /// Whether DMARC failure reports (RFC 7489 §7.3) are sent: a message
    /// whose DMARC checks failed as its author domain's record asks to hear
    /// of (`ruf`, `fo`) is reported with its header, from `dmarc_report_from`.
    pub dmarc_failure_reports: bool,
    /// The most failure reports one author domain gets in an hour.
    pub dmarc_failure_report_limit: u32,
    #[serde(with = "humantime_serde")]
    /// How long a message may wait in the queue before its sender is told,
    /// once, that it is late (a DSN with `Action: delayed`); `0s`: never.
    pub delay_warning: Duration,
    /// The name sent with EHLO (default: `[smtp] hostname`).
    pub helo: Option<String>,
    /// The local IPv4 address outbound connections to IPv4 servers come
    /// from (Postfix's `smtp_bind_address`); default: the system's choice.
    pub bind_address: Option<std::net::Ipv4Addr>,
    /// The local IPv6 address outbound connections to IPv6 servers come from.
    pub bind_address6: Option<std::net::Ipv6Addr>,
    #[serde(with = "humantime_serde")]
    /// How long to wait for a next hop's TCP connection.
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    /// How long to wait for each reply to a command.
    pub command_timeout: Duration,
    #[serde(with = "humantime_serde")]
    /// How long to wait for the reply after the message data.
    pub data_timeout: Duration,
    /// Every domain goes to this next hop instead of its MX hosts.
    pub smarthost: Option<NextHopConfig>,
    /// Per destination domain, a next hop instead of its MX hosts.
    pub routes: BTreeMap<String, NextHopConfig>,
    /// Per sender — an address, `@domain`, or `<>` for bounces — a next
    /// hop instead of the smarthost and the MX hosts (Postfix's
    /// `sender_dependent_relayhost_maps`, with that hop's own AUTH).
    pub senders: BTreeMap<String, NextHopConfig>,
    /// Per sender (as `senders`), the local address connections come from
    /// and the name they greet with, whatever the route.
    pub sources: BTreeMap<String, SourceConfig>,
    /// Per destination domain, its own pace and TLS policy.
    pub domains: BTreeMap<String, DomainConfig>,
    /// Whether a domain none of whose servers could be reached (no
    /// connection, no greeting, or a 4xx greeting such as `421 too many
    /// connections`) has its other mail deferred without trying until the
    /// failed attempt's retry, as Postfix suspends a dead destination.
    pub suspend_unreachable: bool,
}

/// `[outbound.sources."SENDER"]`: where one sender's mail leaves from —
/// Postfix's `smtp_bind_address` and `smtp_helo_name` of a transport chosen
/// by sender, Haraka's `bind` and `bind_helo` of `get_mx`.
#[derive(Debug, Deserialize, serde::Serialize, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The local IPv4 address connections to IPv4 servers come from.
    pub bind_address: Option<std::net::Ipv4Addr>,
    /// The local IPv6 address connections to IPv6 servers come from.
    pub bind_address6: Option<std::net::Ipv6Addr>,
    /// The name sent with EHLO/HELO.
    pub helo: Option<String>,
}

/// `[outbound.domains."DOMAIN"]`: how mail for one destination domain is
/// delivered — how hard it is pushed, for receivers that throttle senders,
/// and its TLS policy (Postfix's `smtp_tls_policy_maps`).
#[derive(Debug, Deserialize, serde::Serialize, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// Deliveries in progress at once to the domain (instead of
    /// `[outbound] per_domain`).
    pub concurrency: Option<usize>,
    /// Delivery attempts started per period, as `COUNT/DURATION`
    /// (`"100/1m"`, `"2000/1h"`); none: no limit.
    pub rate: Option<String>,
    /// STARTTLS to its MX hosts, instead of `[outbound] tls`.
    pub tls: Option<OutboundTls>,
}

/// The IP versions outbound connections use.
#[derive(Debug, Deserialize, serde::Serialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum InetProtocols {
    /// IPv4 and IPv6 (A records first).
    #[default]
    All,
    /// IPv4 only.
    Ipv4,
    /// IPv6 only.
    Ipv6,
}

/// The certificate policy of outbound STARTTLS.
#[derive(Debug, Deserialize, serde::Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutboundTls {
    /// Plain text always.
    Never,
    /// STARTTLS when offered, accepting any certificate.
    Opportunistic,
    /// STARTTLS when offered, and only with a verified certificate.
    Verify,
    /// STARTTLS with a verified certificate, or no delivery.
    Required,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            enabled: true,
            concurrency: 100,
            per_domain: 10,
            port: 25,
            allow_local: false,
            inet_protocols: InetProtocols::All,
            tls: OutboundTls::Opportunistic,
            retry: None,
            delay_warning: Duration::from_secs(4 * 3600),
            mta_sts: true,
            mta_sts_port: 443,
            dane: false,
            tls_reports: false,
            tls_report_from: None,
            dmarc_reports: false,
            dmarc_report_from: None,
            dmarc_failure_reports: false,
            dmarc_failure_report_limit: 10,
            helo: None,
            bind_address: None,
            bind_address6: None,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            smarthost: None,
            routes: BTreeMap::new(),
            senders: BTreeMap::new(),
            sources: BTreeMap::new(),
            domains: BTreeMap::new(),
            suspend_unreachable: true,
        }
    }
}

/// A next hop: a host (name or IP) and port, with optional AUTH. Configured
/// in `[outbound]`, or chosen by a queue plugin and then kept with the
/// queue entry (without AUTH).
#[derive(Debug, Deserialize, serde::Serialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NextHopConfig {
    /// The host name or IP address, or (for an LMTP hop) the path of a
    /// Unix socket, such as Dovecot's `/run/dovecot/lmtp`.
    pub host: String,
    #[serde(default = "default_smtp_port")]
    /// The port (default 25).
    pub port: u16,
    /// The AUTH user, if the hop wants one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The AUTH password for `user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Overrides `[outbound] tls` for this hop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<OutboundTls>,
    /// Speak LMTP (RFC 2033) to this hop — a mailbox server such as
    /// Dovecot's `lmtp` service, which answers for each recipient after the
    /// message — instead of SMTP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lmtp: bool,
}

fn default_smtp_port() -> u16 {
    25
}

/// `[blobstore.NAME]`: where a blob store keeps its objects.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum BlobstoreConfig {
    /// Files under a directory.
    Dir {
        /// The directory, relative to the instance directory.
        path: PathBuf,
    },
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
        /// Most connections the pool keeps open.
        pool_size: usize,
        #[serde(default = "default_idle_timeout", with = "humantime_serde")]
        /// How long an unused connection stays open.
        idle_timeout: Duration,
        #[serde(default = "default_connect_timeout", with = "humantime_serde")]
        /// How long to wait for a new connection.
        connect_timeout: Duration,
    },
    /// An SQLite file in this process.
    Sqlite {
        /// The file, relative to the instance directory.
        path: PathBuf,
    },
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
        /// Most keys held; a new key beyond that is refused (expired keys make room).
        max_keys: usize,
    },
    /// In Redis, shared by every server using it.
    Redis {
        /// `redis://host:port/db`.
        url: String,
        /// Prepended to every key (default `waraka:NAME:`).
        prefix: Option<String>,
    },
}

fn default_max_keys() -> usize {
    100_000
}

/// `[srs]`: how the sender of mail forwarded to another domain (an alias
/// whose target is elsewhere) is rewritten, so that it passes the receiver's
/// SPF check and its bounces come back here.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct SrsConfig {
    /// The secrets: the first makes new addresses, each one checks returning
    /// ones (to rotate, put the new secret first and keep the old one for
    /// `max_age` days). None: forwarded mail keeps its sender.
    pub secrets: Vec<String>,
    /// The domain of the rewritten senders: this server must be its MX and
    /// allowed by its SPF record (default: `[smtp] hostname`).
    pub domain: Option<String>,
    /// Days a rewritten sender is accepted back (PostSRSd's default, 21).
    pub max_age: u32,
}

impl Default for SrsConfig {
    fn default() -> Self {
        SrsConfig {
            secrets: Vec::new(),
            domain: None,
            max_age: 21,
        }
    }
}

/// `[antivirus]`.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AntivirusConfig {
    /// The ClamAV daemon: `HOST:PORT` (its `TCPSocket`) or the path of its
    /// `LocalSocket`; no scanner when absent.
    pub clamd: Option<String>,
}

/// `[sendmail]`: the socket local programs submit mail through
/// (`queue/submit.sock`, which any local user may reach; the server knows
/// each caller's user from the kernel).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct SendmailConfig {
    /// Whether the socket is served.
    pub enabled: bool,
    /// The local users who may submit mail (Postfix's
    /// `authorized_submit_users`); empty: every user.
    pub allowed_users: Vec<String>,
    /// Whether `waraka sendmail` leaves a message in `queue/maildrop` when
    /// no server takes it (Postfix's maildrop), for the server to pick up
    /// when it runs.
    pub maildrop: bool,
    #[serde(with = "humantime_serde")]
    /// How often the server looks into the maildrop (it also does at start).
    pub pickup_interval: Duration,
    #[serde(with = "humantime_serde")]
    /// How long a message the server refuses for now stays in the maildrop
    /// before its sender is told it failed.
    pub maildrop_lifetime: Duration,
}

impl Default for SendmailConfig {
    fn default() -> Self {
        SendmailConfig {
            enabled: true,
            allowed_users: Vec::new(),
            maildrop: true,
            pickup_interval: Duration::from_secs(60),
            maildrop_lifetime: Duration::from_secs(5 * 24 * 3600),
        }
    }
}

/// `[acme]`: the certificate of `[tls]` (`cert`, `key`) obtained from an
/// ACME certificate authority (Let's Encrypt by default) with HTTP-01
/// challenges (or DNS-01 ones, with `dns_update`), and renewed before it
/// expires.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The CA's directory URL.
    #[serde(default = "lets_encrypt")]
    pub directory: String,
    /// Where the CA writes about the account (`mailto:` is added to a bare
    /// address).
    #[serde(default)]
    pub contact: Vec<String>,
    /// The names the certificate is for; default: `[smtp] hostname`.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Where the HTTP-01 responder listens while an order waits for the
    /// CA: port 80 of the names, as the CA reaches them.
    #[serde(default = "acme_http_listen")]
    pub http_listen: SocketAddr,
    /// How long before the certificate expires a new one is ordered.
    #[serde(default = "acme_renew_before", with = "humantime_serde")]
    pub renew_before: Duration,
    /// Whether a renewal keeps the private key in place (certbot's
    /// `--reuse-key`), so that DANE `3 1 1` records stay true.
    #[serde(default)]
    pub reuse_key: bool,
    /// DNS-01 challenges instead of HTTP-01: the answers are put into the
    /// names' zone by dynamic update (RFC 2136) signed with a TSIG key, so
    /// no port 80 is needed.
    pub dns_update: Option<DnsUpdateConfig>,
}

/// `[acme.dns_update]`: the primary server of the zone the certificate's
/// names are in, and the TSIG key it takes updates signed with (BIND's
/// `tsig-keygen`, Knot's `keymgr -t`).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct DnsUpdateConfig {
    /// The server: `HOST:PORT` (port 53 when left out) or an IP address.
    pub server: String,
    /// The zone updated (`example.com`); the names must be in it.
    pub zone: String,
    /// The key's name.
    pub key_name: String,
    /// The key's secret, base64 as the key files write it.
    pub key_secret: String,
    /// `hmac-sha256` (the default), `hmac-sha384` or `hmac-sha512`.
    #[serde(default = "hmac_sha256")]
    pub algorithm: String,
    /// How long to wait after the update before telling the CA to look,
    /// for the zone's other servers to catch up.
    #[serde(default, with = "humantime_serde")]
    pub propagation_delay: Duration,
}

fn hmac_sha256() -> String {
    "hmac-sha256".into()
}

fn lets_encrypt() -> String {
    "https://acme-v02.api.letsencrypt.org/directory".into()
}

fn acme_http_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 80))
}

fn acme_renew_before() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

/// `[geoip]`.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GeoipConfig {
    /// MaxMind DB files (GeoLite2/GeoIP2 City, Country or ASN, DB-IP
    /// Lite…), relative to the instance directory or absolute; a lookup
    /// asks each in turn and merges what they know.
    pub databases: Vec<std::path::PathBuf>,
}

/// `[p0f]`.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub struct P0fConfig {
    /// The API socket of the p0f daemon (`p0f -s PATH`), relative to the
    /// instance directory or absolute; no `p0f` capability without it.
    pub socket: Option<std::path::PathBuf>,
}

/// `[sasl]`.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SaslConfig {
    /// Dovecot's authentication service: `HOST:PORT` (an `inet_listener`
    /// of `service auth`) or a socket path such as `/run/dovecot/auth-client`;
    /// none when absent.
    pub dovecot: Option<String>,
}

/// `[milter.NAME]`: one mail filter spoken to with the milter protocol.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct MilterConfig {
    /// Where it listens: `HOST:PORT` or a Unix socket's path (also
    /// `inet:HOST:PORT`, `unix:PATH` and `inet:PORT@HOST`).
    pub address: String,
}

/// `[ldap.NAME]`: an LDAP directory (OpenLDAP, 389 Directory Server,
/// Active Directory) that plugins search and check passwords against.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://HOST[:PORT]`, `ldaps://HOST[:PORT]` (TLS, certificates checked
    /// against the system's roots) or `ldapi://` with a socket path.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS first.
    #[serde(default)]
    pub starttls: bool,
    /// The account searches are made as; anonymous when absent.
    pub bind_dn: Option<String>,
    /// Its password.
    pub bind_password: Option<String>,
    /// Where searches start when a plugin names no base (`dc=example,dc=com`).
    #[serde(default)]
    pub base: String,
    /// How long connecting and each operation may take.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Most entries one search returns (more are left out, logged).
    #[serde(default = "default_ldap_max_entries")]
    pub max_entries: u32,
}

/// `[http.NAME]`: an HTTP service (a webhook, a REST API) plugins may call.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `https://HOST[:PORT]/PATH/` or `http://…`: plugins name paths under
    /// it, never another host.
    pub url: String,
    /// Header fields sent with every request (`Authorization = "Bearer …"`):
    /// credentials stay here, out of the plugins' reach.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How long connecting and the whole exchange may take.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_http_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_ldap_max_entries() -> u32 {
    100
}

/// `[spamfilter]`.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SpamfilterConfig {
    /// rspamd's normal worker, `HOST:PORT` (its `bind_socket`, usually
    /// `127.0.0.1:11333`).
    pub rspamd: Option<String>,
    /// SpamAssassin's `spamd`, `HOST:PORT` (usually `127.0.0.1:783`) or
    /// the path of its Unix socket; instead of `rspamd`. No scanner when
    /// neither is set.
    pub spamd: Option<String>,
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
    /// A file of DNSKEY records to trust for DNSSEC instead of the root's
    /// keys (relative to the instance; for tests and private roots).
    pub trust_anchor: Option<PathBuf>,
}

/// `[[listener]]`: an address and what it is for.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `IP:PORT` to listen on.
    pub address: String,
    #[serde(default)]
    /// What its sessions are for (default `mx`).
    pub role: Role,
    /// Networks of the load balancers in front of this listener (`CIDR`s):
    /// when set, every connection must come from one of them and begin with
    /// a PROXY protocol header (v1 or v2) naming the real client.
    #[serde(default)]
    pub proxy_from: Vec<String>,
    /// Networks of the front ends (nginx's mail proxy, a Postfix relay)
    /// trusted to name the client they speak for with Postfix's `XCLIENT`.
    #[serde(default)]
    pub xclient_from: Vec<String>,
    /// This listener's name in its greeting, replies and `Received:` fields
    /// (e.g. `smtp.example.com` for submission), instead of `[smtp] hostname`.
    pub hostname: Option<String>,
}

/// `[tls]`: PEM files, relative to the instance directory.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (PEM): for clients that send no server name
    /// (SNI) or one no `[[tls.sni]]` certificate is valid for.
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
    /// More certificates, each chosen for the server names (SNI) it is
    /// valid for (its subjectAltName DNS names, wildcards included).
    #[serde(default)]
    pub sni: Vec<CertificateFiles>,
    /// Ask clients for a certificate (never require one), as Postfix's
    /// `smtpd_tls_ask_ccert`: plugins see its fingerprint (the `relay`
    /// plugin's `relay.clientcerts`). Off by default: a few clients fail
    /// a handshake that asks.
    #[serde(default)]
    pub ask_client_cert: bool,
    /// Clients (addresses or CIDR ranges) STARTTLS is not offered to, as
    /// Haraka's `no_tls_hosts`: for the few whose TLS is broken and who
    /// would otherwise never get their mail through.
    #[serde(default)]
    pub no_tls_hosts: Vec<String>,
}

/// `[[tls.sni]]`: a certificate chain and its key (PEM files).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
}

/// `[smtp]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Listeners with the role `mx` (`IP:PORT`).
    pub listen: Vec<String>,
    /// This server's name in the greeting and replies (default: the machine's name).
    pub hostname: Option<String>,
    /// Largest message in bytes, advertised as SIZE; `552 5.3.4` beyond.
    pub max_message_size: u64,
    /// Recipients per transaction; `452 4.5.3` beyond.
    pub max_recipients: usize,
    /// Client errors before `421 4.7.0` and close.
    pub max_errors: u32,
    /// NOOP, VRFY, HELP and RSET outside a transaction before `421 4.7.0` (0: no limit).
    pub max_junk_commands: u32,
    /// Least bytes per second during DATA after a grace, else `421 4.4.2` (0: no minimum).
    pub min_data_rate: u64,
    /// Connections held at once; beyond, `421 4.7.0` (0: no limit).
    pub max_connections: usize,
    /// Connections per client address (IPv6: per /64); beyond, `421 4.7.0` (0: no limit).
    pub max_connections_per_ip: usize,
    /// Longest DATA line; `552 5.3.4` beyond (0: no limit).
    pub max_data_line: usize,
    /// Largest header section in bytes; `552 5.3.4` beyond.
    pub max_header_size: usize,
    /// Most `Received:` fields; beyond, `554 5.4.6` (a mail loop).
    pub max_received: usize,
    #[serde(with = "humantime_serde")]
    /// How long the server waits for a command line before `421 4.4.2`.
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    /// At SIGTERM, how long open transactions may go on.
    pub shutdown_grace: Duration,
    /// What to do with a bare CR or LF in DATA.
    pub bare_newlines: BareNewlines,
    /// What to do with a client that talks before the greeting.
    pub early_talker: EarlyTalker,
    #[serde(with = "humantime_serde")]
    /// How long the greeting is held back.
    pub banner_delay: Duration,
    /// The greeting's text after this server's name (Postfix's
    /// `smtpd_banner`): `220 mx.example.com BANNER`.
    pub banner: String,
    /// Which messages get a `Date` and a `Message-ID` when they have none
    /// (receivers such as Gmail refuse mail without a `Message-ID`).
    pub add_missing_headers: AddMissingHeaders,
    /// Whether commands sent ahead without PIPELINING get `554 5.5.0`.
    pub strict_pipelining: bool,
    /// Where large messages are written while they arrive.
    pub spool_dir: Option<PathBuf>,
    /// Messages up to this many bytes stay in memory.
    pub spool_memory_threshold: usize,
    /// Failed AUTH attempts before `421 4.7.0` and close.
    pub auth_max_failures: u32,
    #[serde(with = "humantime_serde")]
    /// The wait before answering a failed AUTH; doubles with each failure.
    pub auth_failure_delay: Duration,
    /// Whether AUTH is offered without TLS to loopback clients (never to others).
    pub auth_plaintext_loopback: bool,
    /// Refused AUTH attempts from one client address, or for one user name,
    /// within `auth_lockout_period`, after which AUTH gets `454 4.7.0` until
    /// the period is over; 0: no lockout.
    pub auth_lockout_failures: u32,
    #[serde(with = "humantime_serde")]
    /// The window `auth_lockout_failures` are counted in.
    pub auth_lockout_period: Duration,
    /// The `[kv.NAME]` store the lockout counts in (a Redis store shares
    /// them between servers); default: this server's memory.
    pub auth_lockout_store: Option<String>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            listen: vec!["127.0.0.1:2525".into()],
            hostname: None,
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            max_junk_commands: 100,
            min_data_rate: 500,
            max_connections: 10_000,
            max_connections_per_ip: 100,
            max_data_line: 65_536,
            max_header_size: 256 * 1024,
            max_received: 100,
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
            bare_newlines: BareNewlines::Reject,
            early_talker: EarlyTalker::Reject,
            banner_delay: Duration::ZERO,
            banner: "ESMTP Waraka ready".into(),
            add_missing_headers: AddMissingHeaders::Relaying,
            strict_pipelining: true,
            spool_dir: None,
            spool_memory_threshold: 128 * 1024,
            auth_max_failures: 3,
            auth_failure_delay: Duration::from_secs(1),
            auth_plaintext_loopback: true,
            auth_lockout_failures: 10,
            auth_lockout_period: Duration::from_secs(3600),
            auth_lockout_store: None,
        }
    }
}

/// `[plugin_defaults]` and `[plugin."NAME"]`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct PluginTable {
    #[serde(default, with = "humantime_serde")]
    /// Wall-clock limit per hook call.
    pub timeout: Option<Duration>,
    /// CPU limit per hook call, in fuel units (0: unlimited).
    pub fuel: Option<u64>,
    /// Linear memory cap in bytes.
    pub memory: Option<usize>,
    /// What a plugin fault answers: `451 4.3.0`, or skip the plugin.
    pub on_error: Option<OnError>,
    /// Faults in a row (all connections) that disable the plugin (0: never).
    pub breaker_faults: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    /// How long a disabled plugin waits before a trial call; doubles on each failed trial.
    pub breaker_backoff: Option<Duration>,
    /// The capabilities the plugin may use (`dir:NAME`, `kv:NAME`, `dns`…).
    pub grants: Option<Vec<String>>,
    /// The roles of the listeners whose sessions the plugin takes part in
    /// (every role when unset), as Postfix's per-service restrictions.
    pub roles: Option<Vec<Role>>,
}

/// `[runtime]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Plugin instances alive at once.
    pub max_instances: u32,
    /// The largest memory cap a plugin may get without a restart (bytes).
    pub max_memory: usize,
    /// How long the first reply after a plugin fault a client caused is
    /// held; doubled for each further fault of that client (up to 30 s,
    /// forgotten after a quiet minute); `0s` turns the tarpit off.
    #[serde(with = "humantime_serde")]
    pub fault_delay: Duration,
    /// How long a client may stay silent before its connection's plugin
    /// instances go back to the pool (the next hook gets fresh ones); `0s`
    /// keeps them for the connection's life.
    #[serde(with = "humantime_serde")]
    pub idle_release: Duration,
    /// Idle instances kept per plugin for the next connection to reuse
    /// instead of instantiating afresh; `0`: a fresh instance for every
    /// connection.
    pub warm_instances: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: 1000,
            max_memory: 256 * 1024 * 1024,
            fault_delay: Duration::from_secs(1),
            idle_release: Duration::from_secs(1),
            warm_instances: 32,
        }
    }
}

/// Parses `waraka.toml` text.
pub fn parse_config(text: &str) -> Result<InstanceConfig> {
    let config: InstanceConfig = toml::from_str(text).map_err(|e| anyhow!("{CONFIG_FILE}: {e}"))?;
    let banner = &config.smtp.banner;
    if banner.is_empty() || banner.chars().any(|c| c.is_control()) {
        return Err(anyhow!("{CONFIG_FILE}: [smtp] banner must be one line of text"));
    }
    Ok(config)
}
