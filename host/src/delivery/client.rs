//! An SMTP client for delivering one queue entry to one server: EHLO (HELO
//! when EHLO is refused), opportunistic or required STARTTLS, AUTH PLAIN or
//! LOGIN to a smarthost, then the envelope — pipelined (RFC 2920) when the
//! server offers PIPELINING — and the message streamed from its file with
//! dot-stuffing. Every recipient gets its own reply. LMTP (LHLO, a reply per
//! recipient after the message) for mailbox servers, also over a Unix socket.
//!
//! Replies are read with `smtp-proto`'s response parser. The client is
//! written here rather than taken from `mail-send` or `lettre` because
//! delivery needs per-recipient results from one pipelined envelope and a
//! message streamed from disk, which neither offers.

use super::route::Address;
use super::tls_report::TlsFailure;
use crate::capabilities::ServiceStream;
use crate::protocol::TlsRequest;
use crate::queue::Envelope;
use base64::Engine;
use rustls::pki_types::ServerName;
use smtp_proto::response::parser::ResponseReceiver;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Largest chunk read from the message file at once.
const CHUNK: usize = 64 * 1024;

/// A reply read from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteReply {
    /// The three-digit code.
    pub code: u16,
    /// The enhanced status code (`4.2.1`), when the server sent one.
    pub enhanced: Option<String>,
    /// The text of each line.
    pub lines: Vec<String>,
}

impl RemoteReply {
    fn from_response(response: smtp_proto::Response<String>) -> RemoteReply {
        let [class, subject, detail] = response.esc;
        RemoteReply {
            code: response.code,
            enhanced: (class != 0).then(|| format!("{class}.{subject}.{detail}")),
            lines: response.message.lines().map(|l| l.trim_end().to_string()).collect(),
        }
    }

    /// A reply made up locally for a refusal the server did not give.
    pub fn local(code: u16, enhanced: &str, text: &str) -> RemoteReply {
        RemoteReply {
            code,
            enhanced: Some(enhanced.to_string()),
            lines: vec![text.to_string()],
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 5xx: retrying will not help.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

impl fmt::Display for RemoteReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = &self.enhanced {
            write!(f, " {enhanced}")?;
        }
        write!(f, " {}", self.lines.join(" "))
    }
}

/// When to encrypt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Never (e.g. a smarthost on a trusted network).
    Never,
    /// STARTTLS when offered; `verify` checks the certificate against the
    /// system's roots and the server name (otherwise any certificate does).
    Opportunistic {
        /// Whether the certificate must verify.
        verify: bool,
    },
    /// STARTTLS or no delivery, with the certificate verified.
    Required,
}

impl From<waraka_config::OutboundTls> for TlsMode {
    fn from(tls: waraka_config::OutboundTls) -> TlsMode {
        use waraka_config::OutboundTls;
        match tls {
            OutboundTls::Never => TlsMode::Never,
            OutboundTls::Opportunistic => TlsMode::Opportunistic { verify: false },
            OutboundTls::Verify => TlsMode::Opportunistic { verify: true },
            OutboundTls::Required => TlsMode::Required,
        }
    }
}

/// How the client presents itself and how long it waits.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// The name sent with EHLO/HELO.
    pub helo: String,
    /// For the TCP connection.
    pub connect_timeout: Duration,
    /// The local addresses connections come from.
    pub bind: BindAddresses,
    /// For every reply but the one after the message.
    pub command_timeout: Duration,
    /// For writing the message and the reply after it.
    pub data_timeout: Duration,
    /// When to use STARTTLS and how to check the certificate.
    pub tls: TlsMode,
    /// The DNSSEC-proven TLSA records of the server (DANE): STARTTLS is
    /// then required and the certificate must match them, whatever `tls` says.
    pub dane: Option<Arc<[crate::capabilities::Tlsa]>>,
    /// User and password for AUTH (PLAIN, else LOGIN).
    pub auth: Option<(String, String)>,
    /// Speak LMTP (RFC 2033) instead of SMTP: `LHLO`, and one reply per
    /// accepted recipient after the message.
    pub lmtp: bool,
    /// Told how the session's TLS went (for TLS reports).
    pub tls_seen: Option<TlsSeen>,
    /// With opportunistic TLS that takes any certificate, still check it
    /// against the system's roots and tell `tls_seen` (MTA-STS `testing`
    /// mode, reported but not enforced).
    pub audit: bool,
}

/// The local addresses outbound TCP connections come from, by the server's
/// address family; `None`: the system's choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BindAddresses {
    /// For IPv4 servers.
    pub v4: Option<std::net::Ipv4Addr>,
    /// For IPv6 servers.
    pub v6: Option<std::net::Ipv6Addr>,
}

impl BindAddresses {
    /// Connects to `server` from the address for its family, if one is set.
    pub async fn connect(&self, server: SocketAddr) -> std::io::Result<TcpStream> {
        let (socket, local) = match server {
            SocketAddr::V4(_) => (tokio::net::TcpSocket::new_v4()?, self.v4.map(IpAddr::V4)),
            SocketAddr::V6(_) => (tokio::net::TcpSocket::new_v6()?, self.v6.map(IpAddr::V6)),
        };
        if let Some(local) = local {
            socket.bind(SocketAddr::new(local, 0))?;
        }
        socket.connect(server).await
    }
}

/// Told how a session's TLS went: `None` when it had the TLS asked for,
/// else why not. Plain text by choice (`never`, a local socket) is not told.
#[derive(Clone)]
pub struct TlsSeen(pub Arc<dyn Fn(Option<TlsFailure>) + Send + Sync>);

impl fmt::Debug for TlsSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsSeen")
    }
}

impl Default for ClientSettings {
    /// RFC 5321 §4.5.3.2-minded waits, opportunistic STARTTLS, no AUTH.
    fn default() -> Self {
        let outbound = waraka_config::OutboundConfig::default();
        ClientSettings {
            helo: "localhost".into(),
            connect_timeout: outbound.connect_timeout,
            bind: BindAddresses::default(),
            command_timeout: outbound.command_timeout,
            data_timeout: outbound.data_timeout,
            tls: TlsMode::Opportunistic { verify: false },
            dane: None,
            auth: None,
            lmtp: false,
            tls_seen: None,
            audit: false,
        }
    }
}

/// What the server said about one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Each recipient with its RCPT reply, in order.
    pub recipients: Vec<(String, RemoteReply)>,
    /// The replies after the message: one for all (SMTP) or one per
    /// accepted recipient, in order (LMTP); none when no recipient was accepted.
    pub data: Vec<RemoteReply>,
    /// Whether the message went over TLS.
    pub tls: bool,
    /// Whether the server offered DSN, so the requests went on with the
    /// message and notices are now its job.
    pub dsn_passed: bool,
}

impl Delivery {
    /// The final word for `index`: the reply to the message when the
    /// recipient was accepted (its own, from an LMTP server), else its RCPT reply.
    pub fn outcome(&self, index: usize) -> &RemoteReply {
        let rcpt = &self.recipients[index].1;
        if !rcpt.is_positive() {
            return rcpt;
        }
        match self.data.as_slice() {
            [] => rcpt,
            [one] => one,
            per_recipient => {
                let accepted_before = self.recipients[..index].iter().filter(|(_, r)| r.is_positive()).count();
                per_recipient.get(accepted_before).unwrap_or(rcpt)
            }
        }
    }
}

/// Why a delivery attempt ended before per-recipient results.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed or broke; try the next host.
    #[error("{detail}")]
    Network {
        /// The step it happened at (`connect`, `greeting`, `MAIL`…).
        stage: &'static str,
        /// What failed.
        detail: String,
    },
    /// The server did not answer in time.
    #[error("timed out waiting for the {0} reply")]
    Timeout(&'static str),
    /// The server spoke something that is not SMTP.
    #[error("protocol error after {stage}: {detail}")]
    Protocol {
        /// The step it happened after (`greeting`, `EHLO`, `MAIL`…).
        stage: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// TLS could not be set up as required.
    #[error("TLS: {0}")]
    Tls(String),
    /// The message asked for REQUIRETLS and the server does not offer it.
    #[error("{0} does not offer REQUIRETLS, which the sender asked for")]
    NoRequireTls(String),
    /// The server refused at this stage for the whole message.
    #[error("{stage} refused: {reply}")]
    Refused {
        /// The step that was refused (`greeting`, `MAIL`, `DATA`, `message`…).
        stage: &'static str,
        /// The server's reply.
        reply: RemoteReply,
    },
}

impl ClientError {
    /// Whether another host of the domain may do better: the session ended
    /// before the envelope was refused.
    pub fn try_next_host(&self) -> bool {
        !matches!(
            self,
            ClientError::Refused {
                stage: "MAIL" | "DATA" | "message",
                ..
            }
        )
    }

    /// Whether the server was out of reach: no connection, or no session
    /// (no greeting, or a temporary refusal such as `421 too many
    /// connections` in its place).
    pub fn is_unreachable(&self) -> bool {
        match self {
            ClientError::Network { stage, .. } | ClientError::Timeout(stage) => {
                matches!(*stage, "connect" | "greeting")
            }
            ClientError::Refused {
                stage: "greeting",
                reply,
            } => !reply.is_permanent(),
            _ => false,
        }
    }

    /// Whether this is final for every recipient (a 5xx to the envelope or message).
    pub fn is_permanent(&self) -> bool {
        matches!(self, ClientError::Refused { stage: "MAIL" | "DATA" | "message", reply } if reply.is_permanent())
    }
}

/// Delivers `message` (of `size` bytes, CRLF lines, not dot-stuffed) for
/// `envelope` to the server `addr`, whose name `host` is used for TLS.
/// DSN requests go on to a server that offers DSN. A message that asked for
/// REQUIRETLS (RFC 8689) is relayed only over verified TLS (DANE's, when
/// `settings` has TLSA records) to a server that offers REQUIRETLS; LMTP
/// and Unix sockets are final delivery on this side, and exempt.
/// Per-recipient results come back in [`Delivery`]; a failure for the
/// whole attempt is a [`ClientError`].
pub async fn send(
    addr: &Address,
    host: &str,
    settings: &ClientSettings,
    envelope: Envelope<'_>,
    message: impl AsyncRead + Unpin,
    size: u64,
) -> Result<Delivery, ClientError> {
    // REQUIRETLS binds relaying: not LMTP's final delivery to a mailbox
    // server, nor a socket on this machine, which is not on the wire.
    let require_tls =
        envelope.tls_request == TlsRequest::Required && !settings.lmtp && !matches!(addr, Address::Unix(_));
    let verified;
    let settings = if require_tls && settings.tls != TlsMode::Required {
        verified = ClientSettings {
            tls: TlsMode::Required,
            ..settings.clone()
        };
        &verified
    } else {
        settings
    };
    let opened = Connection::open(addr, host, settings).await?;
    transact(opened, require_tls, host, settings, envelope, message, size).await
}

/// [`send`] over `io`, a stream already connected to a server on this
/// machine (the server's own session, for the maildrop's pickup): no TLS,
/// as over a Unix socket.
pub async fn send_over_local(
    io: Box<dyn ServiceStream>,
    settings: &ClientSettings,
    envelope: Envelope<'_>,
    message: impl AsyncRead + Unpin,
    size: u64,
) -> Result<Delivery, ClientError> {
    let opened = Connection::start(io, false, "localhost", settings).await?;
    transact(opened, false, "localhost", settings, envelope, message, size).await
}

/// The envelope and message of [`send`] on an opened connection.
async fn transact(
    (mut conn, ext, tls): (Connection, Vec<String>, bool),
    require_tls: bool,
    host: &str,
    settings: &ClientSettings,
    envelope: Envelope<'_>,
    message: impl AsyncRead + Unpin,
    size: u64,
) -> Result<Delivery, ClientError> {
    let Envelope {
        sender,
        recipients,
        dsn,
        tls_request,
    } = envelope;
    let utf8 = !sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii());
    if utf8 && !offers(&ext, "SMTPUTF8") {
        return Err(ClientError::Refused {
            stage: "MAIL",
            reply: RemoteReply::local(
                553,
                "5.6.7",
                "the server does not accept internationalised addresses (SMTPUTF8)",
            ),
        });
    }
    let mut mail = format!("MAIL FROM:<{sender}>");
    if offers(&ext, "SIZE") {
        mail.push_str(&format!(" SIZE={size}"));
    }
    if utf8 {
        mail.push_str(" SMTPUTF8");
    }
    if require_tls && !(tls && offers(&ext, "REQUIRETLS")) {
        conn.quit().await;
        return Err(ClientError::NoRequireTls(host.to_string()));
    }
    if tls_request == TlsRequest::Required && offers(&ext, "REQUIRETLS") {
        mail.push_str(" REQUIRETLS");
    }
    let dsn_passed = offers(&ext, "DSN");
    if dsn_passed {
        mail.push_str(&dsn.message.mail_params());
    }
    let rcpt_line = |rcpt: &str| {
        let params = if dsn_passed {
            dsn.recipient(rcpt).rcpt_params()
        } else {
            String::new()
        };
        format!("RCPT TO:<{rcpt}>{params}\r\n")
    };
    let mut results = Vec::with_capacity(recipients.len());
    if offers(&ext, "PIPELINING") {
        let mut batch = format!("{mail}\r\n");
        for rcpt in recipients {
            batch.push_str(&rcpt_line(rcpt));
        }
        batch.push_str("DATA\r\n");
        conn.write(batch.as_bytes(), "MAIL").await?;
        let mail_reply = conn.reply("MAIL").await?;
        for rcpt in recipients {
            results.push((rcpt.clone(), conn.reply("RCPT").await?));
        }
        let data_reply = conn.reply("DATA").await?;
        if !mail_reply.is_positive() {
            conn.quit().await;
            return Err(ClientError::Refused {
                stage: "MAIL",
                reply: mail_reply,
            });
        }
        let accepted = results.iter().any(|(_, r)| r.is_positive());
        match (data_reply.code, accepted) {
            (354, true) => {}
            (code, false) => {
                if code == 354 {
                    // RFC 2920: DATA went ahead with no recipient; end it empty.
                    conn.write(b".\r\n", "message").await?;
                    let _ = conn.reply("message").await;
                }
                conn.quit().await;
                return Ok(Delivery {
                    recipients: results,
                    data: Vec::new(),
                    tls,
                    dsn_passed,
                });
            }
            (_, true) => {
                conn.quit().await;
                return Err(ClientError::Refused {
                    stage: "DATA",
                    reply: data_reply,
                });
            }
        }
    } else {
        conn.command(&mail, "MAIL", 250).await?;
        for rcpt in recipients {
            conn.write(rcpt_line(rcpt).as_bytes(), "RCPT").await?;
            results.push((rcpt.clone(), conn.reply("RCPT").await?));
        }
        if !results.iter().any(|(_, r)| r.is_positive()) {
            conn.quit().await;
            return Ok(Delivery {
                recipients: results,
                data: Vec::new(),
                tls,
                dsn_passed,
            });
        }
        conn.command("DATA", "DATA", 354).await?;
    }
    conn.send_message(message).await?;
    // LMTP answers for each accepted recipient, SMTP once for all.
    let replies = if settings.lmtp {
        results.iter().filter(|(_, r)| r.is_positive()).count()
    } else {
        1
    };
    let mut data = Vec::with_capacity(replies);
    for _ in 0..replies {
        data.push(conn.reply_within("message", settings.data_timeout).await?);
    }
    conn.quit().await;
    Ok(Delivery {
        recipients: results,
        data,
        tls,
        dsn_passed,
    })
}

/// Asks the server `addr` whether it would take mail from `sender` (empty
/// for `<>`) for `recipient`: the opening of a delivery (greeting, EHLO or
/// LHLO, STARTTLS and AUTH as `settings` say), MAIL and RCPT, then QUIT
/// without a message. The RCPT reply; a refused MAIL is a [`ClientError`].
pub async fn probe(
    addr: &Address,
    host: &str,
    settings: &ClientSettings,
    sender: &str,
    recipient: &str,
) -> Result<RemoteReply, ClientError> {
    let (mut conn, _, _) = Connection::open(addr, host, settings).await?;
    conn.command(&format!("MAIL FROM:<{sender}>"), "MAIL", 250).await?;
    conn.write(format!("RCPT TO:<{recipient}>\r\n").as_bytes(), "RCPT")
        .await?;
    let reply = conn.reply("RCPT").await?;
    conn.quit().await;
    Ok(reply)
}

/// Whether the server at `addr` takes `settings.auth`'s credentials: the
/// opening of a session up to AUTH, then QUIT, with no mail. `Ok(false)`
/// when it refuses them for good (5xx).
pub async fn check_credentials(addr: &Address, host: &str, settings: &ClientSettings) -> Result<bool, ClientError> {
    match Connection::open(addr, host, settings).await {
        Ok((mut conn, _, _)) => {
            conn.quit().await;
            Ok(true)
        }
        Err(ClientError::Refused { stage: "AUTH", reply }) if reply.code / 100 == 5 => Ok(false),
        Err(e) => Err(e),
    }
}

/// One SMTP connection.
pub(super) struct Connection {
    io: Box<dyn ServiceStream>,
    unread: Vec<u8>,
    receiver: ResponseReceiver,
    settings: ClientSettings,
}

impl Connection {
    /// Connects to `addr` and opens the session as `settings` say: the
    /// greeting, EHLO (or LHLO), STARTTLS with `host` as the server name,
    /// AUTH. The connection, the extensions offered, and whether TLS is up.
    pub(super) async fn open(
        addr: &Address,
        host: &str,
        settings: &ClientSettings,
    ) -> Result<(Connection, Vec<String>, bool), ClientError> {
        let connect = async {
            Ok::<Box<dyn ServiceStream>, std::io::Error>(match addr {
                Address::Inet(inet) => {
                    let tcp = settings.bind.connect(*inet).await?;
                    let _ = tcp.set_nodelay(true);
                    Box::new(tcp)
                }
                Address::Unix(path) => Box::new(UnixStream::connect(path).await?),
            })
        };
        let io = tokio::time::timeout(settings.connect_timeout, connect)
            .await
            .map_err(|_| ClientError::Timeout("connect"))?
            .map_err(|e| ClientError::Network {
                stage: "connect",
                detail: format!("connecting to {addr}: {e}"),
            })?;
        // A socket on this machine is not on the wire.
        Connection::start(io, !matches!(addr, Address::Unix(_)), host, settings).await
    }

    /// Opens the session on `io` as [`Connection::open`] does; TLS only
    /// `on_wire` (not on a socket on this machine).
    async fn start(
        io: Box<dyn ServiceStream>,
        on_wire: bool,
        host: &str,
        settings: &ClientSettings,
    ) -> Result<(Connection, Vec<String>, bool), ClientError> {
        let mut conn = Connection {
            io,
            unread: Vec::new(),
            receiver: ResponseReceiver::default(),
            settings: settings.clone(),
        };
        let greeting = conn.reply("greeting").await?;
        if !greeting.is_positive() {
            conn.quit().await;
            return Err(ClientError::Refused {
                stage: "greeting",
                reply: greeting,
            });
        }
        let mut ext = conn.greet().await?;
        let mut tls = false;
        let check = match (&settings.dane, settings.tls) {
            _ if !on_wire => None,
            (Some(records), _) if offers(&ext, "STARTTLS") => Some(CertCheck::Dane(records.clone())),
            (Some(_), _) => {
                tls_result(settings, "dane", Some(TlsFailure::StarttlsNotSupported));
                return Err(ClientError::Tls(
                    "DANE: the MX host has TLSA records but does not offer STARTTLS".into(),
                ));
            }
            (None, TlsMode::Never) => None,
            (None, TlsMode::Opportunistic { verify: false }) if settings.audit => {
                offers(&ext, "STARTTLS").then(|| CertCheck::Audit(Arc::default()))
            }
            (None, TlsMode::Opportunistic { verify }) => offers(&ext, "STARTTLS").then_some(CertCheck::roots(verify)),
            (None, TlsMode::Required) if offers(&ext, "STARTTLS") => Some(CertCheck::Roots),
            (None, TlsMode::Required) => {
                tls_result(settings, "verified", Some(TlsFailure::StarttlsNotSupported));
                return Err(ClientError::Tls("the server does not offer STARTTLS".into()));
            }
        };
        if let Some(check) = check {
            let kind = check.label();
            let audit = match &check {
                CertCheck::Audit(noted) => Some(noted.clone()),
                _ => None,
            };
            conn = match conn.start_tls(host, check).await {
                Ok(conn) => conn,
                Err((e, failure)) => {
                    tls_result(settings, kind, Some(failure));
                    return Err(e);
                }
            };
            let noted = audit.and_then(|noted| *noted.lock().unwrap_or_else(|e| e.into_inner()));
            tls_result(settings, kind, noted);
            ext = conn.greet().await?;
            tls = true;
        } else if on_wire {
            count_tls("none", "ok");
            if settings.tls != TlsMode::Never {
                tell_tls(settings, Some(TlsFailure::StarttlsNotSupported));
            }
        }
        if let Some((user, password)) = &settings.auth {
            conn.authenticate(&ext, user, password).await?;
        }
        Ok((conn, ext, tls))
    }

    pub(super) async fn write(&mut self, bytes: &[u8], stage: &'static str) -> Result<(), ClientError> {
        let timeout = self.settings.command_timeout;
        match tokio::time::timeout(timeout, async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ClientError::Network {
                stage,
                detail: format!("writing {stage}: {e}"),
            }),
            Err(_) => Err(ClientError::Timeout(stage)),
        }
    }

    pub(super) async fn reply_within(
        &mut self,
        stage: &'static str,
        timeout: Duration,
    ) -> Result<RemoteReply, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if !self.unread.is_empty() {
                let mut bytes = self.unread.iter();
                let parsed = self.receiver.parse(&mut bytes);
                let consumed = self.unread.len() - bytes.len();
                self.unread.drain(..consumed);
                match parsed {
                    Ok(response) => {
                        self.receiver.reset();
                        return Ok(RemoteReply::from_response(response));
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(e) => {
                        return Err(ClientError::Protocol {
                            stage,
                            detail: format!("{e:?}"),
                        });
                    }
                }
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) => return Err(ClientError::Timeout(stage)),
                Ok(Ok(0)) => {
                    return Err(ClientError::Network {
                        stage,
                        detail: format!("connection closed before the {stage} reply"),
                    });
                }
                Ok(Ok(n)) => self.unread.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => {
                    return Err(ClientError::Network {
                        stage,
                        detail: format!("reading the {stage} reply: {e}"),
                    });
                }
            }
        }
    }

    pub(super) async fn reply(&mut self, stage: &'static str) -> Result<RemoteReply, ClientError> {
        self.reply_within(stage, self.settings.command_timeout).await
    }

    /// Sends `line` and expects a 2xx (or `expect`) reply.
    async fn command(&mut self, line: &str, stage: &'static str, expect: u16) -> Result<RemoteReply, ClientError> {
        self.write(format!("{line}\r\n").as_bytes(), stage).await?;
        let reply = self.reply(stage).await?;
        if reply.code / 100 == expect / 100 {
            Ok(reply)
        } else {
            // End politely: servers may count sessions that just vanish.
            self.quit().await;
            Err(ClientError::Refused { stage, reply })
        }
    }

    /// EHLO, falling back to HELO; returns the upper-cased extension lines.
    async fn greet(&mut self) -> Result<Vec<String>, ClientError> {
        let helo = self.settings.helo.clone();
        if self.settings.lmtp {
            self.write(format!("LHLO {helo}\r\n").as_bytes(), "LHLO").await?;
            let reply = self.reply("LHLO").await?;
            if !reply.is_positive() {
                return Err(ClientError::Refused { stage: "LHLO", reply });
            }
            return Ok(extensions(&reply));
        }
        self.write(format!("EHLO {helo}\r\n").as_bytes(), "EHLO").await?;
        let reply = self.reply("EHLO").await?;
        if reply.is_positive() {
            return Ok(extensions(&reply));
        }
        self.command(&format!("HELO {helo}"), "HELO", 250).await?;
        Ok(Vec::new())
    }

    /// STARTTLS and the handshake, with `check` on the certificate; a
    /// failure comes with its kind for TLS reports.
    async fn start_tls(mut self, host: &str, check: CertCheck) -> Result<Connection, (ClientError, TlsFailure)> {
        let other = |e: ClientError| (e, TlsFailure::ValidationFailure);
        match self.command("STARTTLS", "STARTTLS", 220).await {
            Err(refused @ ClientError::Refused { .. }) => return Err((refused, TlsFailure::StarttlsNotSupported)),
            Err(e) => return Err(other(e)),
            Ok(_) => {}
        }
        if !self.unread.is_empty() {
            return Err(other(ClientError::Protocol {
                stage: "STARTTLS",
                detail: "data after the 220 (possible injection)".into(),
            }));
        }
        let dane = matches!(check, CertCheck::Dane(_));
        let config = tls_config(check).map_err(other)?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| other(ClientError::Tls(format!("{host:?} is not a server name: {e}"))))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let stream = tokio::time::timeout(self.settings.command_timeout, connector.connect(name, self.io))
            .await
            .map_err(|_| other(ClientError::Timeout("TLS handshake")))?
            .map_err(|e| (ClientError::Tls(e.to_string()), handshake_failure(&e, dane)))?;
        Ok(Connection {
            io: Box::new(stream),
            unread: Vec::new(),
            receiver: ResponseReceiver::default(),
            settings: self.settings,
        })
    }

    async fn authenticate(&mut self, extensions: &[String], user: &str, password: &str) -> Result<(), ClientError> {
        let mechanisms: Vec<&str> = extensions
            .iter()
            .filter_map(|e| e.strip_prefix("AUTH "))
            .flat_map(str::split_whitespace)
            .collect();
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        if mechanisms.contains(&"PLAIN") {
            let token = b64(format!("\0{user}\0{password}").as_bytes());
            self.command(&format!("AUTH PLAIN {token}"), "AUTH", 235).await?;
        } else if mechanisms.contains(&"LOGIN") {
            self.command("AUTH LOGIN", "AUTH", 334).await?;
            self.command(&b64(user.as_bytes()), "AUTH", 334).await?;
            self.command(&b64(password.as_bytes()), "AUTH", 235).await?;
        } else {
            return Err(ClientError::Protocol {
                stage: "EHLO",
                detail: "the server offers neither AUTH PLAIN nor LOGIN".into(),
            });
        }
        Ok(())
    }

    /// Ends the session politely; failures no longer matter.
    pub(super) async fn quit(&mut self) {
        if self.write(b"QUIT\r\n", "QUIT").await.is_ok() {
            let _ = self.reply_within("QUIT", Duration::from_secs(5)).await;
        }
    }

    /// Writes the message dot-stuffed, then `.`.
    pub(super) async fn send_message(&mut self, mut message: impl AsyncRead + Unpin) -> Result<(), ClientError> {
        let timeout = self.settings.data_timeout;
        let io = &mut self.io;
        let result = tokio::time::timeout(timeout, async move {
            let mut chunk = vec![0u8; CHUNK];
            let mut out = Vec::with_capacity(CHUNK + CHUNK / 8);
            let mut at_line_start = true;
            let mut last_two = [b'\r', b'\n'];
            loop {
                let n = message.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                out.clear();
                for &byte in &chunk[..n] {
                    if at_line_start && byte == b'.' {
                        out.push(b'.');
                    }
                    out.push(byte);
                    at_line_start = byte == b'\n';
                    last_two = [last_two[1], byte];
                }
                io.write_all(&out).await?;
            }
            let end: &[u8] = if last_two == [b'\r', b'\n'] {
                b".\r\n"
            } else {
                b"\r\n.\r\n"
            };
            io.write_all(end).await?;
            io.flush().await
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ClientError::Network {
                stage: "message",
                detail: format!("sending the message: {e}"),
            }),
            Err(_) => Err(ClientError::Timeout("message")),
        }
    }
}

/// The extension lines of an EHLO reply, upper-cased (`PIPELINING`, `SIZE 1000`, `AUTH PLAIN LOGIN`).
fn extensions(reply: &RemoteReply) -> Vec<String> {
    reply
        .lines
        .iter()
        .skip(1)
        .map(|l| l.trim().to_ascii_uppercase())
        .collect()
}

/// Whether the server offers the extension `keyword`.
pub(super) fn offers(extensions: &[String], keyword: &str) -> bool {
    extensions
        .iter()
        .any(|e| e == keyword || e.strip_prefix(keyword).is_some_and(|rest| rest.starts_with(' ')))
}

/// How a server's certificate is checked after STARTTLS.
pub(super) enum CertCheck {
    /// Any certificate does.
    Any,
    /// Against the system's roots and the server's name.
    Roots,
    /// Against the server's TLSA records.
    Dane(Arc<[crate::capabilities::Tlsa]>),
    /// Any certificate does, but whether the system's roots would verify
    /// it (for the server's name) is noted here.
    Audit(Arc<Mutex<Option<TlsFailure>>>),
}

impl CertCheck {
    /// `Roots` when the certificate must `verify`, else `Any`.
    fn roots(verify: bool) -> CertCheck {
        if verify { CertCheck::Roots } else { CertCheck::Any }
    }

    /// Its `check` label in the outbound TLS metric.
    fn label(&self) -> &'static str {
        match self {
            CertCheck::Any | CertCheck::Audit(_) => "unverified",
            CertCheck::Roots => "verified",
            CertCheck::Dane(_) => "dane",
        }
    }
}

/// Counts an outbound session's TLS: how the certificate was checked
/// (`none` for plain text) and whether TLS was had.
fn count_tls(check: &'static str, result: &'static str) {
    metrics::counter!(crate::telemetry::OUTBOUND_TLS, "check" => check, "result" => result).increment(1);
}

/// Counts a session that asked for TLS with `check`, and tells
/// `settings.tls_seen` how it went.
fn tls_result(settings: &ClientSettings, check: &'static str, failure: Option<TlsFailure>) {
    count_tls(check, if failure.is_none() { "ok" } else { "failed" });
    tell_tls(settings, failure);
}

/// Tells `settings.tls_seen`, if any, how the session's TLS went.
fn tell_tls(settings: &ClientSettings, failure: Option<TlsFailure>) {
    if let Some(seen) = &settings.tls_seen {
        (seen.0)(failure);
    }
}

/// What a failed handshake says about the server (RFC 8460's result
/// types): under DANE, a refused certificate matched no TLSA record.
fn handshake_failure(error: &std::io::Error, dane: bool) -> TlsFailure {
    let rustls_error = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::General(_)) if dane => TlsFailure::TlsaInvalid,
        Some(error) => certificate_failure(error),
        None => TlsFailure::ValidationFailure,
    }
}

/// The RFC 8460 result type of a certificate the system's roots refuse.
fn certificate_failure(error: &rustls::Error) -> TlsFailure {
    use rustls::CertificateError as Cert;
    match error {
        rustls::Error::InvalidCertificate(
            Cert::Expired | Cert::ExpiredContext { .. } | Cert::NotValidYet | Cert::NotValidYetContext { .. },
        ) => TlsFailure::CertificateExpired,
        rustls::Error::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            TlsFailure::CertificateHostMismatch
        }
        rustls::Error::InvalidCertificate(_) => TlsFailure::CertificateNotTrusted,
        _ => TlsFailure::ValidationFailure,
    }
}

/// The client's TLS settings for a certificate `check`: against the
/// system's roots (`SSL_CERT_FILE` when set), any certificate, or the
/// server's TLSA records.
pub(super) fn tls_config(check: CertCheck) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rule = match check {
        CertCheck::Roots => return Ok(crate::tls::client_config()),
        CertCheck::Any => OwnRule::Any,
        CertCheck::Dane(records) => OwnRule::Dane(records),
        CertCheck::Audit(noted) => {
            let roots = rustls::client::WebPkiServerVerifier::builder_with_provider(
                crate::tls::system_roots(),
                provider.clone(),
            )
            .build()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
            OwnRule::Audit { roots, noted }
        }
    };
    let verifier = OwnCheck {
        rule,
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificate checks that are not the system roots': any certificate
/// (opportunistic TLS without verification, as most MTAs do for MX
/// delivery), or the server's TLSA records (DANE). The handshake's
/// signatures are verified either way.
#[derive(Debug)]
struct OwnCheck {
    rule: OwnRule,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

/// What [`OwnCheck`] asks of a certificate.
#[derive(Debug)]
enum OwnRule {
    /// Nothing.
    Any,
    /// A match with one of the server's TLSA records (DANE).
    Dane(Arc<[crate::capabilities::Tlsa]>),
    /// Nothing, but what the system's roots say of it is noted.
    Audit {
        roots: Arc<rustls::client::WebPkiServerVerifier>,
        noted: Arc<Mutex<Option<TlsFailure>>>,
    },
}

impl rustls::client::danger::ServerCertVerifier for OwnCheck {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match &self.rule {
            OwnRule::Any => {}
            OwnRule::Dane(records) => {
                super::dane::verify(records, &self.provider, end_entity, intermediates, server_name, now)?;
            }
            OwnRule::Audit { roots, noted } => {
                let verdict = roots.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
                *noted.lock().unwrap_or_else(|e| e.into_inner()) = verdict.err().map(|e| certificate_failure(&e));
            }
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DsnRequests;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpListener;

    fn settings() -> ClientSettings {
        ClientSettings {
            helo: "client.test".into(),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            data_timeout: Duration::from_secs(5),
            ..ClientSettings::default()
        }
    }

    /// A scripted server: answers each line it reads with the next reply
    /// whose command prefix matches (`""` matches the message's end), and
    /// records everything the client wrote.
    async fn scripted(
        ehlo: &'static str,
        answers: Vec<(&'static str, &'static str)>,
    ) -> (Address, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (read, mut write) = socket.into_split();
            let mut lines = BufReader::new(read);
            let mut seen = String::new();
            write.write_all(b"220 mx.test ESMTP\r\n").await.unwrap();
            let mut answers = answers.into_iter();
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if lines.read_line(&mut line).await.unwrap() == 0 {
                    break;
                }
                seen.push_str(&line);
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        let (_, reply) = answers.next().unwrap();
                        write.write_all(reply.as_bytes()).await.unwrap();
                    }
                    continue;
                }
                let upper = line.to_ascii_uppercase();
                if upper.starts_with("EHLO") {
                    write.write_all(ehlo.as_bytes()).await.unwrap();
                } else if upper.starts_with("QUIT") {
                    write.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                } else {
                    let (expected, reply) = answers.next().unwrap_or(("", "500 unexpected\r\n"));
                    assert!(upper.starts_with(expected), "expected {expected:?}, got {line:?}");
                    write.write_all(reply.as_bytes()).await.unwrap();
                    in_data = upper.starts_with("DATA") && reply.starts_with("354");
                }
            }
            seen
        });
        (Address::Inet(addr), task)
    }

    /// Sends `message` from s@x.test to a@d.test.
    async fn to_alice(addr: &Address, settings: &ClientSettings, message: &[u8]) -> Result<Delivery, ClientError> {
        send(
            addr,
            "mx.test",
            settings,
            Envelope {
                sender: "s@x.test",
                recipients: &rcpts(&["a@d.test"]),
                dsn: &DsnRequests::default(),
                tls_request: TlsRequest::Unstated,
            },
            message,
            message.len() as u64,
        )
        .await
    }

    fn rcpts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn pipelined_envelope_gives_each_recipient_its_reply_and_stuffs_dots() {
        let (addr, server) = scripted(
            "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100000\r\n",
            vec![
                ("MAIL FROM:<S@X.TEST> SIZE=22", "250 2.1.0 ok\r\n"),
                ("RCPT TO:<A@D.TEST>", "250 2.1.5 ok\r\n"),
                ("RCPT TO:<B@D.TEST>", "550 5.1.1 no such user\r\n"),
                ("RCPT TO:<C@D.TEST>", "451 4.2.0 later\r\n"),
                ("DATA", "354 go\r\n"),
                ("", "250 2.0.0 queued as 42\r\n"),
            ],
        )
        .await;
        let message: &[u8] = b"Subject: x\r\n\r\n.dot\r\nend";
        let delivery = send(
            &addr,
            "mx.test",
            &settings(),
            Envelope {
                sender: "s@x.test",
                recipients: &rcpts(&["a@d.test", "b@d.test", "c@d.test"]),
                dsn: &DsnRequests::default(),
                tls_request: TlsRequest::Unstated,
            },
            message,
            22,
        )
        .await
        .unwrap();
        let seen = server.await.unwrap();
        assert!(
            seen.contains("MAIL FROM:<s@x.test> SIZE=22\r\nRCPT TO:<a@d.test>\r\nRCPT TO:<b@d.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n"),
            "{seen}"
        );
        assert!(
            seen.contains("Subject: x\r\n\r\n..dot\r\nend\r\n.\r\n"),
            "dot-stuffed and terminated: {seen}"
        );
        assert_eq!(delivery.outcome(0).to_string(), "250 2.0.0 queued as 42");
        assert_eq!(delivery.outcome(1).to_string(), "550 5.1.1 no such user");
        assert!(delivery.outcome(1).is_permanent());
        assert_eq!(delivery.outcome(2).code, 451);
        assert!(!delivery.tls);
    }

    #[tokio::test]
    async fn dsn_requests_go_on_only_to_a_server_that_offers_dsn() {
        let address = |text: &str| crate::protocol::Address::parse_with_params(text, false).unwrap();
        let dsn = DsnRequests {
            message: crate::protocol::MessageRequest::from_mail(&address("<s@x.test> RET=HDRS ENVID=E+2B1")).unwrap(),
            recipients: [(
                "a@d.test".to_string(),
                crate::protocol::RecipientRequest::from_rcpt(&address(
                    "<a@d.test> NOTIFY=SUCCESS ORCPT=rfc822;o@d.test",
                ))
                .unwrap(),
            )]
            .into(),
        };
        let envelope = |recipients| Envelope {
            sender: "s@x.test",
            recipients,
            dsn: &dsn,
            tls_request: TlsRequest::Unstated,
        };
        let both = rcpts(&["a@d.test", "b@d.test"]);
        for offered in [true, false] {
            let ehlo = if offered {
                "250-mx.test\r\n250-PIPELINING\r\n250 DSN\r\n"
            } else {
                "250-mx.test\r\n250 PIPELINING\r\n"
            };
            let answers = vec![
                ("MAIL", "250 ok\r\n"),
                ("RCPT", "250 ok\r\n"),
                ("RCPT", "250 ok\r\n"),
                ("DATA", "354 go\r\n"),
                ("", "250 done\r\n"),
            ];
            let (addr, server) = scripted(ehlo, answers).await;
            let delivery = send(&addr, "mx.test", &settings(), envelope(&both), &b"x\r\n"[..], 3)
                .await
                .unwrap();
            let seen = server.await.unwrap();
            assert_eq!(delivery.dsn_passed, offered);
            let expected = if offered {
                "MAIL FROM:<s@x.test> RET=HDRS ENVID=E+2B1\r\nRCPT TO:<a@d.test> NOTIFY=SUCCESS ORCPT=rfc822;o@d.test\r\nRCPT TO:<b@d.test>\r\n"
            } else {
                "MAIL FROM:<s@x.test>\r\nRCPT TO:<a@d.test>\r\nRCPT TO:<b@d.test>\r\n"
            };
            assert!(seen.contains(expected), "{seen}");
        }
    }

    #[tokio::test]
    async fn without_pipelining_and_with_helo_fallback_one_command_at_a_time() {
        let (addr, server) = scripted(
            "502 5.5.2 no EHLO here\r\n",
            vec![
                ("HELO CLIENT.TEST", "250 hi\r\n"),
                ("MAIL FROM:<>", "250 ok\r\n"),
                ("RCPT TO:<A@D.TEST>", "250 ok\r\n"),
                ("DATA", "354 go\r\n"),
                ("", "250 done\r\n"),
            ],
        )
        .await;
        let delivery = send(
            &addr,
            "mx.test",
            &settings(),
            Envelope {
                sender: "",
                recipients: &rcpts(&["a@d.test"]),
                dsn: &DsnRequests::default(),
                tls_request: TlsRequest::Unstated,
            },
            &b"x\r\n"[..],
            3,
        )
        .await
        .unwrap();
        assert!(
            server.await.unwrap().contains("MAIL FROM:<>\r\n"),
            "no SIZE without the extension"
        );
        assert_eq!(delivery.data[0].code, 250);
    }

    #[tokio::test]
    async fn envelope_refusals_and_dead_servers_are_errors_that_say_what_to_do() {
        let (addr, _server) = scripted("250 mx.test\r\n", vec![("MAIL", "452 4.3.1 insufficient storage\r\n")]).await;
        let err = to_alice(&addr, &settings(), &b"x\r\n"[..]).await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Refused { stage: "MAIL", reply } if reply.code == 452),
            "{err}"
        );
        assert!(!err.try_next_host() && !err.is_permanent());

        let closed = Address::Inet(TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap());
        let err = to_alice(&closed, &settings(), &b"x\r\n"[..]).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Network { .. }) && err.try_next_host(),
            "{err}"
        );

        let (addr, _server) = scripted("250 mx.test\r\n", vec![]).await;
        let strict = ClientSettings {
            tls: TlsMode::Required,
            ..settings()
        };
        let err = to_alice(&addr, &strict, &b"x\r\n"[..]).await.unwrap_err();
        assert!(matches!(err, ClientError::Tls(_)), "{err}");
    }

    #[tokio::test]
    async fn a_requiretls_message_is_not_sent_in_the_clear_whatever_the_server_offers() {
        let (addr, server) = scripted("250-mx.test\r\n250 REQUIRETLS\r\n", vec![]).await;
        let envelope = Envelope {
            sender: "s@x.test",
            recipients: &rcpts(&["a@d.test"]),
            dsn: &DsnRequests::default(),
            tls_request: TlsRequest::Required,
        };
        let err = send(&addr, "mx.test", &settings(), envelope, &b"secret\r\n"[..], 8)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Tls(_)), "{err}");
        assert!(!server.await.unwrap().contains("MAIL"), "the envelope was not sent");
    }

    #[tokio::test]
    async fn lmtp_greets_with_lhlo_and_takes_a_reply_per_accepted_recipient() {
        let (addr, server) = scripted(
            "",
            vec![
                ("LHLO CLIENT.TEST", "250-mx.test\r\n250 PIPELINING\r\n"),
                ("MAIL", "250 2.1.0 ok\r\n"),
                ("RCPT TO:<A@D.TEST>", "250 2.1.5 ok\r\n"),
                ("RCPT TO:<B@D.TEST>", "550 5.1.1 no such user\r\n"),
                ("RCPT TO:<C@D.TEST>", "250 2.1.5 ok\r\n"),
                ("DATA", "354 go\r\n"),
                ("", "250 2.0.0 <a@d.test> saved\r\n452 4.2.2 <c@d.test> over quota\r\n"),
            ],
        )
        .await;
        let lmtp = ClientSettings {
            lmtp: true,
            ..settings()
        };
        // Final delivery to the mailbox server: REQUIRETLS does not bind it.
        let envelope = Envelope {
            sender: "s@x.test",
            recipients: &rcpts(&["a@d.test", "b@d.test", "c@d.test"]),
            dsn: &DsnRequests::default(),
            tls_request: TlsRequest::Required,
        };
        let delivery = send(&addr, "mx.test", &lmtp, envelope, &b"hi\r\n"[..], 4)
            .await
            .unwrap();
        assert_eq!(delivery.outcome(0).to_string(), "250 2.0.0 <a@d.test> saved");
        assert_eq!(delivery.outcome(1).code, 550);
        assert_eq!(delivery.outcome(2).to_string(), "452 4.2.2 <c@d.test> over quota");
        assert!(!server.await.unwrap().contains("EHLO"));
    }

    #[tokio::test]
    async fn a_probe_asks_for_one_recipient_and_sends_no_message() {
        let (addr, server) = scripted(
            "",
            vec![
                ("LHLO CLIENT.TEST", "250 mx.test\r\n"),
                ("MAIL FROM:<>", "250 2.1.0 ok\r\n"),
                (
                    "RCPT TO:<NOBODY@D.TEST>",
                    "550 5.1.1 <nobody@d.test> User doesn't exist\r\n",
                ),
            ],
        )
        .await;
        let lmtp = ClientSettings {
            lmtp: true,
            ..settings()
        };
        let reply = probe(&addr, "mx.test", &lmtp, "", "nobody@d.test").await.unwrap();
        assert_eq!(reply.to_string(), "550 5.1.1 <nobody@d.test> User doesn't exist");
        let seen = server.await.unwrap();
        assert!(seen.ends_with("QUIT\r\n") && !seen.contains("DATA"), "{seen}");
    }

    #[tokio::test]
    async fn all_recipients_refused_sends_no_message() {
        let (addr, server) = scripted(
            "250-mx.test\r\n250 PIPELINING\r\n",
            vec![
                ("MAIL", "250 ok\r\n"),
                ("RCPT", "550 5.1.1 unknown\r\n"),
                ("DATA", "554 5.5.1 no valid recipients\r\n"),
            ],
        )
        .await;
        let delivery = to_alice(&addr, &settings(), &b"secret\r\n"[..]).await.unwrap();
        assert!(delivery.data.is_empty());
        assert_eq!(delivery.outcome(0).code, 550);
        assert!(!server.await.unwrap().contains("secret"));
    }
}
