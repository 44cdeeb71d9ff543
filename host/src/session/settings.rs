use super::message::SpoolSettings;
use crate::capabilities::NoteLimits;
use crate::protocol::BareNewlines;

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
    pub bare_newlines: BareNewlines,
    pub early_talker: EarlyTalker,
    /// How long the greeting waits for a client that talks first (0: not at all).
    pub banner_delay: std::time::Duration,
    /// Refuse commands sent ahead of their reply where RFC 2920 forbids it.
    pub strict_pipelining: bool,
    pub spool: SpoolSettings,
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
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            hostname: "localhost".into(),
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
            bare_newlines: BareNewlines::Reject,
            early_talker: EarlyTalker::Reject,
            banner_delay: std::time::Duration::ZERO,
            strict_pipelining: true,
            spool: SpoolSettings {
                dir: std::env::temp_dir().join("waraka-spool"),
                memory_threshold: 128 * 1024,
            },
            notes: NoteLimits::default(),
            shutdown_grace: std::time::Duration::from_secs(30),
            idle_timeout: std::time::Duration::from_secs(300),
            auth_max_failures: 3,
            auth_failure_delay: std::time::Duration::from_secs(1),
            auth_plaintext_loopback: true,
        }
    }
}
