//! Metrics: the names Waraka records through the `metrics` facade, and the
//! Prometheus exporter that serves them on `[metrics] listen` at `/metrics`.
//! Without an exporter, recording costs next to nothing.

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set once an exporter is installed: per-call metrics (hook dispatch)
/// are not even built without one.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether a metrics exporter is installed.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Records one plugin hook call: its wall-clock time and the fuel it used.
pub fn plugin_call(plugin: &Arc<str>, hook: &'static str, elapsed: Duration, fuel: u64) {
    metrics::counter!(PLUGIN_FUEL, "plugin" => plugin.clone()).increment(fuel);
    metrics::histogram!(PLUGIN_HOOK_SECONDS, "plugin" => plugin.clone(), "hook" => hook).record(elapsed);
}

/// Queue entries waiting or being delivered (gauge).
pub const OUTBOUND_QUEUE_DEPTH: &str = "waraka_outbound_queue_depth";
/// Destination domains suspended because none of their servers could be
/// reached (gauge).
pub const OUTBOUND_SUSPENDED_DOMAINS: &str = "waraka_outbound_suspended_domains";
/// Recipients by delivery result (`delivered`, `deferred`, `bounced`, `dropped`).
pub const OUTBOUND_RECIPIENTS: &str = "waraka_outbound_recipients_total";
/// Outbound SMTP sessions by TLS (`check`: `dane`, `verified`,
/// `unverified`, `none` for plain text; `result`: `ok`, `failed`).
pub const OUTBOUND_TLS: &str = "waraka_outbound_tls_total";
/// From queueing to acceptance by the remote server, per delivered recipient.
pub const OUTBOUND_DELIVERY_SECONDS: &str = "waraka_outbound_delivery_seconds";
/// Recipients forwarded to their own domains through the outbound queue
/// (an alias elsewhere, the bounce of forwarded mail).
pub const FORWARDED_RECIPIENTS: &str = "waraka_forwarded_recipients_total";
/// SRS addresses of this server checked on their way back (`result`:
/// `valid`, `invalid` for forged, altered or expired ones).
pub const SRS_REVERSALS: &str = "waraka_srs_reversals_total";
/// Client connections accepted.
pub const CONNECTIONS: &str = "waraka_connections_total";
/// Gauge: when each `[tls]` certificate expires, in seconds since the
/// epoch, by `cert` (its file); set at start and at each reload of it.
pub const TLS_CERTIFICATE_EXPIRY: &str = "waraka_tls_certificate_expiry_timestamp_seconds";
/// Client connections open now (gauge).
pub const CONNECTIONS_OPEN: &str = "waraka_connections_open";
/// Client connections refused by a connection cap (`cap`: `server` or
/// `client`), or closed for a missing or untrusted PROXY header (`proxy`).
pub const CONNECTIONS_REFUSED: &str = "waraka_connections_refused_total";

/// AUTH attempts by result (`result`: `success`; `refused` credentials;
/// `locked` out by `auth_lockout_failures`; `error`, a backend that failed
/// for now).
pub const AUTH_ATTEMPTS: &str = "waraka_auth_attempts_total";

/// Transactions by how they ended (`outcome`: `accepted`, `refused` after
/// DATA, or `abandoned` before the end of DATA).
pub const TRANSACTIONS: &str = "waraka_transactions_total";
/// Replies sent to clients (`class`: `2xx`, `3xx`, `4xx`, `5xx`).
pub const REPLIES: &str = "waraka_replies_total";
/// Times a plugin's circuit breaker opened (`plugin`).
pub const PLUGIN_BREAKER_TRIPS: &str = "waraka_plugin_breaker_trips_total";
/// Plugin versions loaded (`plugin`), at start-up and by hot reloads.
pub const PLUGIN_LOADS: &str = "waraka_plugin_loads_total";

/// Records one reply by its code's class.
pub fn reply(code: u16) {
    let class = match code / 100 {
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    };
    metrics::counter!(REPLIES, "class" => class).increment(1);
}

/// Wall-clock time of one plugin hook call (`plugin`, `hook`), in seconds.
pub const PLUGIN_HOOK_SECONDS: &str = "waraka_plugin_hook_seconds";
/// Time to create a plugin instance for a connection (`plugin`), in seconds.
pub const PLUGIN_INSTANTIATE_SECONDS: &str = "waraka_plugin_instantiate_seconds";
/// Fuel (about one unit per wasm instruction) plugins used (`plugin`).
pub const PLUGIN_FUEL: &str = "waraka_plugin_fuel_total";
/// Plugin faults (`plugin`, `kind`: trap, fuel, timeout, memory, instantiate).
pub const PLUGIN_FAULTS: &str = "waraka_plugin_faults_total";
/// Virus scans by `result`: `clean`, `infected`, `error`.
pub const ANTIVIRUS_SCANS: &str = "waraka_antivirus_scans_total";
/// Spam checks by rspamd's `action` (`no action`, `reject`, …) or `error`.
pub const SPAM_CHECKS: &str = "waraka_spam_checks_total";
/// Milter checks by `milter` (its name) and `decision`: `accept`,
/// `discard`, `reject`, `tempfail`, `error`.
pub const MILTER_CHECKS: &str = "waraka_milter_checks_total";
/// DKIM signing requests by `result`: `signed`, `no_key`, `error`.
pub const DKIM_SIGNATURES: &str = "waraka_dkim_signatures_total";
/// Counter of ARC sealing requests (`result`: sealed, no_key, error).
pub const ARC_SEALS: &str = "waraka_arc_seals_total";
/// Syncs of files and directories plugins asked for (counter).
pub const FSYNC_REQUESTS: &str = "waraka_fsync_requests_total";
/// `fsync` calls made for them (counter): fewer than the requests when
/// concurrent requests shared one (see `capabilities::GroupSync`).
pub const FSYNCS: &str = "waraka_fsyncs_total";
/// Recipients of messages the maildrop's pickup handed in, by `result`:
/// `queued`, `refused` (the sender told), `later` (kept for a retry).
pub const MAILDROP_RECIPIENTS: &str = "waraka_maildrop_recipients_total";
/// Files the pickup removed unread (not a regular file, linked, no such user, no envelope).
pub const MAILDROP_UNFIT: &str = "waraka_maildrop_unfit_total";
/// Messages in the maildrop after the pickup's last look (gauge).
pub const MAILDROP_WAITING: &str = "waraka_maildrop_waiting";

/// One unit of a gauge, held until dropped (an open connection).
pub struct Held(metrics::Gauge);

impl Held {
    /// Adds one to `gauge` until the returned value is dropped.
    pub fn new(gauge: metrics::Gauge) -> Held {
        gauge.increment(1.0);
        Held(gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Bucket bounds of the delivery latency histogram, in seconds (1 s … 3 days).
const DELIVERY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0, 259200.0,
];

/// Bucket bounds of the plugin latency histograms, in seconds (1 µs … 10 s).
const PLUGIN_BUCKETS: &[f64] = &[
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
];

/// Installs the Prometheus exporter, listening on `listen` (`/metrics`).
/// Call once, inside the Tokio runtime.
pub fn serve_prometheus(listen: SocketAddr) -> Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(Matcher::Full(OUTBOUND_DELIVERY_SECONDS.into()), DELIVERY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Prefix("waraka_plugin_".into()), PLUGIN_BUCKETS)?
        .install()
        .with_context(|| format!("metrics listener on {listen}"))?;
    EXPORTING.store(true, Ordering::Relaxed);
    metrics::describe_gauge!(
        OUTBOUND_QUEUE_DEPTH,
        "Outbound queue entries waiting or being delivered"
    );
    metrics::describe_counter!(OUTBOUND_RECIPIENTS, "Outbound recipients by delivery result");
    metrics::describe_gauge!(
        OUTBOUND_SUSPENDED_DOMAINS,
        "Destination domains whose mail waits because none of their servers could be reached"
    );
    metrics::describe_counter!(
        OUTBOUND_TLS,
        "Outbound SMTP sessions by certificate check and TLS result"
    );
    metrics::describe_histogram!(
        OUTBOUND_DELIVERY_SECONDS,
        metrics::Unit::Seconds,
        "Time from queueing to delivery, per delivered recipient"
    );
    metrics::describe_counter!(FSYNC_REQUESTS, "Syncs of files and directories plugins asked for");
    metrics::describe_counter!(
        FSYNCS,
        "fsync calls made for them (fewer when concurrent requests shared one)"
    );
    metrics::describe_counter!(CONNECTIONS, "Client connections accepted");
    metrics::describe_gauge!(
        TLS_CERTIFICATE_EXPIRY,
        "When each TLS certificate expires (seconds since the epoch), by file"
    );
    metrics::describe_counter!(
        CONNECTIONS_REFUSED,
        "Client connections refused by a connection cap, or for their PROXY header"
    );
    metrics::describe_counter!(TRANSACTIONS, "Transactions by outcome");
    metrics::describe_counter!(REPLIES, "Replies sent by code class");
    metrics::describe_counter!(AUTH_ATTEMPTS, "AUTH attempts by result");
    metrics::describe_counter!(PLUGIN_BREAKER_TRIPS, "Times a plugin circuit breaker opened");
    metrics::describe_counter!(PLUGIN_LOADS, "Plugin versions loaded, at start-up and by hot reloads");
    metrics::describe_histogram!(
        PLUGIN_HOOK_SECONDS,
        metrics::Unit::Seconds,
        "Wall-clock time of one plugin hook call"
    );
    metrics::describe_histogram!(
        PLUGIN_INSTANTIATE_SECONDS,
        metrics::Unit::Seconds,
        "Time to create a plugin instance for a connection"
    );
    metrics::describe_counter!(
        PLUGIN_FUEL,
        "Fuel used by plugin hook calls (about one unit per instruction)"
    );
    metrics::describe_counter!(PLUGIN_FAULTS, "Plugin faults by kind");
    metrics::describe_counter!(ANTIVIRUS_SCANS, "Virus scans by result");
    metrics::describe_counter!(SPAM_CHECKS, "Spam checks by rspamd's action, or error");
    metrics::describe_counter!(MILTER_CHECKS, "Milter checks by milter and decision");
    metrics::describe_counter!(DKIM_SIGNATURES, "DKIM signing requests by result");
    metrics::describe_counter!(ARC_SEALS, "ARC sealing requests by result");
    metrics::describe_counter!(
        FORWARDED_RECIPIENTS,
        "Recipients forwarded to their own domains through the outbound queue"
    );
    metrics::describe_counter!(SRS_REVERSALS, "SRS addresses checked on their way back, by result");
    metrics::describe_gauge!(CONNECTIONS_OPEN, "Client connections open");
    metrics::describe_counter!(
        MAILDROP_RECIPIENTS,
        "Recipients of messages picked up from the maildrop, by result"
    );
    metrics::describe_counter!(MAILDROP_UNFIT, "Maildrop files removed unread");
    metrics::describe_gauge!(
        MAILDROP_WAITING,
        "Messages waiting in the maildrop after the pickup's last look"
    );
    Ok(())
}
