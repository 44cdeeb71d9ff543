use super::message::SpoolSettings;
use crate::capabilities::NoteLimits;
use crate::protocol::BareNewlines;
use std::path::PathBuf;
use waraka_config::SmtpConfig;

pub use waraka_config::{AddMissingHeaders, EarlyTalker, Role};

/// The limits and switches one session runs with.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// This server's name in the greeting and replies.
    pub hostname: String,
    /// Largest message in bytes (advertised as SIZE).
    pub max_message_size: u64,
    /// Recipients accepted per transaction before `452 4.5.3`.
    pub max_recipients: usize,
    /// Client errors tolerated before `421` and close.
    pub max_errors: u32,
    /// NOOP, VRFY, HELP and RSET outside a transaction tolerated between
    /// accepted messages before `421 4.7.0` and close (0: no limit).
    pub max_junk_commands: u32,
    /// Least bytes per second during DATA, after a grace of
    /// [`super::DATA_RATE_GRACE`], before `421 4.4.2` and close (0: no minimum).
    pub min_data_rate: u64,
    /// Connections the server holds at once before `421 4.7.0` (0: no limit).
    pub max_connections: usize,
    /// Connections one client address (IPv6: one /64) holds at once before
    /// `421 4.7.0` (0: no limit).
    pub max_connections_per_ip: usize,
    /// Longest DATA line (CRLF excluded); 0 means no limit.
    pub max_data_line: usize,
    /// Largest header section in bytes.
    pub max_header_size: usize,
    /// Most `Received:` fields before the message counts as a loop.
    pub max_received: usize,
    /// What to do with a bare CR or LF in DATA.
    pub bare_newlines: BareNewlines,
    /// What to do with a client that talks before the greeting.
    pub early_talker: EarlyTalker,
    /// How long the greeting waits for a client that talks first (0: not at all).
    pub banner_delay: std::time::Duration,
    /// The greeting's text after the server's name.
    pub banner: String,
    /// Which messages get the `Date` and `Message-ID` they lack.
    pub add_missing_headers: AddMissingHeaders,
    /// Refuse commands sent ahead of their reply where RFC 2920 forbids it.
    pub strict_pipelining: bool,
    /// Where message data goes to disk.
    pub spool: SpoolSettings,
    /// The size limits of note stores.
    pub notes: NoteLimits,
    /// How long open transactions may take to finish after a stop signal
    /// before their connections are closed.
    pub shutdown_grace: std::time::Duration,
    /// How long a client may stay silent before `421 4.4.2`.
    pub idle_timeout: std::time::Duration,
    /// Failed AUTH attempts before `421 4.7.0` and close.
    pub auth_max_failures: u32,
    /// Delay after the first failed AUTH; it doubles with each further failure.
    pub auth_failure_delay: std::time::Duration,
    /// Whether AUTH is offered without TLS to loopback clients.
    pub auth_plaintext_loopback: bool,
    /// How long a client may stay silent before the session parks: its
    /// policy gives back what it holds between hooks (zero: never).
    pub park_after: std::time::Duration,
}

impl SessionSettings {
    /// The settings `[smtp]` gives, with this server name and spool directory.
    pub fn from_config(smtp: &SmtpConfig, hostname: String, spool_dir: PathBuf) -> SessionSettings {
        SessionSettings {
            hostname,
            max_message_size: smtp.max_message_size,
            max_recipients: smtp.max_recipients,
            max_errors: smtp.max_errors,
            max_junk_commands: smtp.max_junk_commands,
            min_data_rate: smtp.min_data_rate,
            max_connections: smtp.max_connections,
            max_connections_per_ip: smtp.max_connections_per_ip,
            max_data_line: smtp.max_data_line,
            max_header_size: smtp.max_header_size,
            max_received: smtp.max_received,
            bare_newlines: smtp.bare_newlines,
            early_talker: smtp.early_talker,
            banner_delay: smtp.banner_delay,
            banner: smtp.banner.clone(),
            add_missing_headers: smtp.add_missing_headers,
            strict_pipelining: smtp.strict_pipelining,
            spool: SpoolSettings {
                dir: spool_dir,
                memory_threshold: smtp.spool_memory_threshold,
            },
            notes: NoteLimits::default(),
            idle_timeout: smtp.idle_timeout,
            shutdown_grace: smtp.shutdown_grace,
            auth_max_failures: smtp.auth_max_failures,
            auth_failure_delay: smtp.auth_failure_delay,
            auth_plaintext_loopback: smtp.auth_plaintext_loopback,
            // A `[runtime]` setting: the instance puts the configured one in.
            park_after: waraka_config::RuntimeConfig::default().idle_release,
        }
    }
}

impl Default for SessionSettings {
    /// `[smtp]`'s defaults, as `localhost`, spooling under the temporary directory.
    fn default() -> Self {
        SessionSettings::from_config(
            &SmtpConfig::default(),
            "localhost".into(),
            std::env::temp_dir().join("waraka-spool"),
        )
    }
}
