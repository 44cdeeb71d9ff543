//! The SMTP session: a state machine fed with bytes, producing reply bytes,
//! and consulting its [`Policy`] at every hook. It owns no socket, so it is
//! driven the same way by the TCP server and by unit tests.

mod context;
mod message;
mod settings;
#[cfg(test)]
mod tests;

pub use context::{Connection, HandedOn, SharedConnection, TlsInfo, Transaction};
pub use message::{HeaderError, Message, MessageReader, SpoolSettings, SpoolWriter};
pub use settings::{AddMissingHeaders, EarlyTalker, Role, SessionSettings};

use crate::lockout::AuthLockout;
use crate::policy::{AuthAttempt, Decision, Effect, HOST_QUEUE_FAILED, Hook, HookCall, Policy, Verdict, rule};
use crate::protocol::{
    Address, Attribute, BareNewlines, Command, DataEvent, DataReceiver, DsnRequests, MAX_COMMAND_LINE, MessageRequest,
    RecipientRequest, Reply, TlsRequest, XCLIENT_KEYWORD, Xclient, codes, inherit_requests, parse_command,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{Instrument, Span, debug, error, info, info_span, warn};

/// The host's durable outbound queue (implemented outside the session):
/// where relayed mail goes when no `queue-outbound` plugin took it, and
/// where queue plugins with the `outbound-queue` grant hand mail.
pub trait OutboundQueue: Send + Sync {
    /// Stores `handoff` for delivery to `hop` when given (else routed by
    /// domain); resolves to the queue ids only once it is durable.
    fn enqueue(
        &self,
        handoff: Handoff,
        hop: Option<waraka_config::NextHopConfig>,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<String>>>;

    /// Stores `handoff` for the recipients it is forwarded to (an alias
    /// whose target is in another domain, the bounce of mail forwarded
    /// before), routed by domain, from its sender rewritten as `[srs]`
    /// says; resolves once it is durable, to a copy held back from delivery
    /// until [`OutboundQueue::release`] (or removed by
    /// [`OutboundQueue::discard`]), so that it leaves only with the
    /// transaction's `250`.
    fn forward(&self, handoff: Handoff) -> futures_util::future::BoxFuture<'static, std::io::Result<HeldCopy>>;

    /// Lets a copy [`OutboundQueue::forward`] stored go to delivery.
    fn release(&self, held: HeldCopy);

    /// Removes a copy [`OutboundQueue::forward`] stored, undelivered.
    fn discard(&self, held: HeldCopy) -> futures_util::future::BoxFuture<'static, std::io::Result<()>>;

    /// Queues the success `notice` about `message`; resolves once it is durable.
    fn notify_success(
        &self,
        message: MessageReader,
        notice: SuccessNotice,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<()>>;
}

/// The success notices (RFC 3461 `NOTIFY=SUCCESS`) for a message accepted
/// here that did not go to the outbound queue, whose delivery reports its own.
#[derive(Clone, Debug)]
pub struct SuccessNotice {
    /// The transaction id.
    pub id: String,
    /// Who the notices go to.
    pub sender: String,
    /// What the sender asked (`ENVID`, `ORCPT`).
    pub dsn: DsnRequests,
    /// Recipients whose mail the queue plugin took: delivered here.
    pub delivered: Vec<String>,
    /// Recipients a plugin forwarded to a server that sends no notices.
    pub relayed: Vec<HandedOn>,
}

/// A forwarded copy the outbound queue stored but holds back from delivery.
pub struct HeldCopy {
    /// Its queue ids.
    pub ids: Vec<String>,
    /// The recipients it goes to (`local@domain`).
    pub recipients: Vec<String>,
    /// What the queue needs to release or discard it.
    pub token: Box<dyn std::any::Any + Send>,
}

/// A message of a transaction handed to the outbound queue, with its envelope.
pub struct Handoff {
    /// The message as it was accepted.
    pub message: MessageReader,
    /// The sender, empty for `<>`.
    pub sender: String,
    /// The recipients it goes to (`local@domain`).
    pub recipients: Vec<String>,
    /// What the sender asked to be told of it.
    pub dsn: DsnRequests,
    /// The transaction's id, for the log.
    pub origin: String,
    /// What the sender asked of TLS on the way on (RFC 8689).
    pub tls_request: TlsRequest,
}

impl Handoff {
    /// `message` of `tx`, for `recipients`.
    pub fn of(tx: &Transaction, message: &Message, recipients: &[Address]) -> Handoff {
        Handoff {
            message: message.reader(),
            sender: tx.sender.addr_spec(),
            recipients: recipients.iter().map(Address::addr_spec).collect(),
            dsn: tx.dsn_requests(),
            origin: tx.id.clone(),
            tls_request: tx.tls_request(),
        }
    }
}

/// Whether the connection stays open after feeding bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Close the connection (the last reply is sent).
    Close,
    /// Reply sent (220): the driver must start TLS now, discarding any byte
    /// the client sent after STARTTLS, then call [`Session::tls_established`].
    StartTls,
}

/// Where a SASL exchange stands (AUTH's continuation lines).
enum Sasl {
    Plain,
    LoginUser,
    LoginPassword(String),
}

enum State {
    Command,
    Auth(Sasl),
    Data(Box<DataInProgress>),
    /// A BDAT chunk's octets are arriving.
    Chunk(ChunkInProgress),
    /// The greeting was a 554: every command but QUIT gets this reply.
    Refused(Reply),
    Closed,
}

/// The BDAT chunk being read.
struct ChunkInProgress {
    /// Octets still to come.
    remaining: u64,
    /// Octets the chunk announced.
    size: u64,
    /// Whether it ends the message.
    last: bool,
    /// Whether its octets go into the message; false when the BDAT command
    /// was already answered with a refusal and the chunk is only skipped.
    keep: bool,
    /// When the chunk began: a skipped chunk meets the minimum data rate on
    /// its own (a kept one as part of its message).
    started: Instant,
}

/// A message arriving in BDAT chunks, between and during them.
struct ChunkedMessage {
    writer: SpoolWriter,
    oversize: bool,
    io_error: bool,
    /// When the first chunk began, for the minimum data rate.
    started: Instant,
    /// Octets received in chunks since.
    received: u64,
}

struct DataInProgress {
    receiver: DataReceiver,
    writer: SpoolWriter,
    buf: Vec<u8>,
    oversize: bool,
    io_error: bool,
    /// When DATA began (after the 354), for the minimum data rate.
    started: Instant,
    /// Bytes received since.
    received: u64,
}

/// How long DATA may take before the minimum data rate applies.
pub const DATA_RATE_GRACE: Duration = Duration::from_secs(10);

/// The transaction note a queue plugin sets when it keeps the message
/// aside instead of delivering it (`queue/quarantine`): no `delivered`
/// notice is sent then; the message's release sends it.
pub const HELD_NOTE: &str = "queue.held";

/// The connection note a plugin sets to hold each reply the client waits
/// for this many seconds (a decimal number; Haraka's `notes.tarpit`, which
/// its `karma` sets for clients with a bad score). Removing it ends the hold.
pub const TARPIT_NOTE: &str = "tarpit";

/// The longest one reply is held for the [`TARPIT_NOTE`].
pub const MAX_TARPIT: Duration = Duration::from_secs(30);

/// Verbs of other protocols sent to an SMTP port (HTTP, proxies).
const FOREIGN_VERBS: &[&str] = &[
    "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "CONNECT", "TRACE", "PATCH",
];

/// How long the [`TARPIT_NOTE`]'s `value` holds a reply: its seconds, at
/// most [`MAX_TARPIT`]; zero when missing, not a number or not positive.
fn tarpit_hold(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::ZERO, |s| {
            Duration::from_secs_f64(s.min(MAX_TARPIT.as_secs_f64()))
        })
}

/// One client's SMTP session.
pub struct Session<P: Policy> {
    policy: P,
    conn: SharedConnection,
    settings: Arc<SessionSettings>,
    state: State,
    out: Vec<u8>,
    line: Vec<u8>,
    /// When the first bytes of the partial command line in `line` came.
    line_started: Option<Instant>,
    discarding_line: bool,
    errors: u32,
    /// NOOP, VRFY, HELP and RSET outside a transaction since the last accepted message.
    junk_commands: u32,
    /// How the open transaction ended, once its DATA did: `accepted` or
    /// `refused` (a transaction reset before that was `abandoned`).
    tx_outcome: Option<&'static str>,
    extra_keywords: Vec<String>,
    transactions: u32,
    auth_failures: u32,
    /// Refused AUTH attempts counted across connections, when on.
    auth_lockout: Option<Arc<AuthLockout>>,
    /// The span of the open transaction: hooks run inside it, so every log
    /// line carries the transaction id.
    tx_span: Span,
    /// The message of the open transaction while it arrives in BDAT chunks.
    chunked: Option<Box<ChunkedMessage>>,
}

/// Sets the address and the port XCLIENT names, when it names them
/// (`[UNAVAILABLE]`: the unspecified address of the same family, port 0).
fn named_address(address: &mut SocketAddr, ip: Attribute<std::net::IpAddr>, port: Attribute<u16>) {
    if let Some(ip) = ip {
        let unknown = match address {
            SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        address.set_ip(ip.unwrap_or(unknown));
    }
    if let Some(port) = port {
        address.set_port(port.unwrap_or(0));
    }
}

impl<P: Policy> Session<P> {
    /// A session for `conn`, not yet greeted.
    pub fn new(policy: P, conn: SharedConnection, settings: Arc<SessionSettings>) -> Self {
        Session {
            policy,
            conn,
            settings,
            state: State::Command,
            out: Vec::new(),
            line: Vec::new(),
            line_started: None,
            discarding_line: false,
            errors: 0,
            junk_commands: 0,
            tx_outcome: None,
            extra_keywords: Vec::new(),
            transactions: 0,
            tx_span: Span::none(),
            auth_failures: 0,
            auth_lockout: None,
            chunked: None,
        }
    }

    /// Gives the session the server's AUTH lockout: refused attempts count
    /// across connections, and AUTH from a locked-out address or for a
    /// locked-out user gets `454 4.7.0`.
    pub fn with_auth_lockout(mut self, lockout: Option<Arc<AuthLockout>>) -> Self {
        self.auth_lockout = lockout;
        self
    }

    /// Gives the session the host's outbound queue (otherwise relayed mail
    /// that no plugin queues gets `451`).
    pub fn with_outbound_queue(self, queue: Option<Arc<dyn OutboundQueue>>) -> Self {
        self.conn.lock().outbound = queue;
        self
    }

    fn outbound(&self) -> Option<Arc<dyn OutboundQueue>> {
        self.conn.lock().outbound.clone()
    }

    /// The shared connection state.
    pub fn connection(&self) -> &SharedConnection {
        &self.conn
    }

    /// Takes the reply bytes produced so far.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The client has been silent for [`SessionSettings::park_after`]: the
    /// policy gives back what it holds between hooks (plugin instances).
    pub fn park(&mut self) {
        self.policy.park();
    }

    /// How long the client may stay silent before [`Session::park`].
    pub fn park_after(&self) -> std::time::Duration {
        self.settings.park_after
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    fn reply(&mut self, reply: &Reply) {
        if crate::telemetry::exporting() {
            crate::telemetry::reply(reply.code);
        }
        if reply.is_error() {
            debug!(code = reply.code, "reply {}", reply.to_wire().trim_end());
        }
        reply.write_to(&mut self.out);
    }

    fn close_with(&mut self, reply: &Reply) -> Flow {
        self.reply(reply);
        self.state = State::Closed;
        Flow::Close
    }

    /// This server's name on the connection's listener.
    fn hostname(&self) -> String {
        self.conn.lock().hostname.clone()
    }

    /// Runs the `connect` hook and sends the greeting. `early_talker` says
    /// whether the client sent bytes before the greeting.
    pub async fn start(&mut self, early_talker: bool) -> Flow {
        if early_talker {
            self.conn.lock().early_talker = true;
            if self.settings.early_talker == EarlyTalker::Reject {
                warn!("client talked before the greeting");
                return self.close_with(&Reply::new(554, "5.5.0", "Error: talking before the greeting"));
            }
        }
        let decision = self.policy.decide(HookCall::Connect).await;
        self.tarpit(Hook::Connect).await;
        let host = self.hostname();
        let rule = rule(Hook::Connect, &decision.verdict, false);
        // The subject of the greeting: the server's name and `[smtp] banner`.
        let reply = rule.reply(decision.verdict.reply(), &format!("{host} {}", self.settings.banner));
        match rule.effect {
            Effect::Proceed | Effect::Reject | Effect::HostQueue => {
                self.reply(&reply);
                Flow::Continue
            }
            Effect::Refuse => {
                info!(plugin = ?decision.plugin, "connection refused at greeting");
                self.reply(&reply);
                self.state = State::Refused(reply);
                Flow::Continue
            }
            Effect::Close => self.close_with(&reply),
        }
    }

    /// When DATA (or a BDAT chunk) in progress falls below the minimum data
    /// rate: the first [`DATA_RATE_GRACE`] is free, then every byte buys
    /// `1 / min_data_rate` seconds. `None` outside DATA and chunks or without
    /// a minimum.
    fn data_rate_deadline(&self) -> Option<Instant> {
        let (started, received) = match (&self.state, &self.chunked) {
            (State::Data(data), _) => (data.started, data.received),
            (State::Chunk(chunk), Some(message)) if chunk.keep => (message.started, message.received),
            (State::Chunk(chunk), _) => (chunk.started, chunk.size - chunk.remaining),
            _ => return None,
        };
        let rate = self.settings.min_data_rate;
        (rate > 0).then(|| started + DATA_RATE_GRACE + Duration::from_secs_f64(received as f64 / rate as f64))
    }

    /// When the client must have sent more: `idle_timeout` from `now`; sooner
    /// when a command line has been arriving for `idle_timeout` already (a
    /// client trickling bytes), or when DATA falls below the minimum rate.
    pub fn read_deadline(&self, now: Instant) -> Instant {
        let idle = now + self.settings.idle_timeout;
        let sooner = match self.state {
            State::Data(_) | State::Chunk(_) => self.data_rate_deadline(),
            _ => self.line_started.map(|started| started + self.settings.idle_timeout),
        };
        sooner.map_or(idle, |s| s.min(idle))
    }

    /// The read deadline passed: closes with the reply that says why.
    pub fn deadline_passed(&mut self) -> Flow {
        let host = self.hostname();
        if self.data_rate_deadline().is_some_and(|d| Instant::now() >= d) {
            warn!(min_data_rate = self.settings.min_data_rate, "data rate too low");
            return self.close_with(&codes::data_rate_too_low(&host));
        }
        info!("idle timeout");
        self.close_with(&codes::idle_timeout(&host))
    }

    /// Whether a transaction is open (from MAIL until it is queued or reset),
    /// which a graceful stop lets finish.
    pub fn in_transaction(&self) -> bool {
        self.conn.lock().transaction.is_some()
    }

    /// The server is shutting down.
    pub fn shutdown(&mut self) -> Flow {
        let reply = codes::shutting_down(&self.hostname());
        self.close_with(&reply)
    }

    /// The connection ended: ends the transaction and tells the plugins.
    pub async fn end(&mut self) {
        self.state = State::Closed;
        self.reset_transaction().await;
        self.policy.notify(HookCall::Disconnect).await;
    }

    /// Feeds bytes from the client; replies accumulate for [`Self::take_output`].
    pub async fn ingest(&mut self, bytes: &[u8]) -> Flow {
        let mut i = 0;
        while i < bytes.len() {
            match &mut self.state {
                State::Closed => return Flow::Close,
                State::Data(_) => {
                    let (consumed, ended) = self.feed_data(&bytes[i..]);
                    i += consumed;
                    if ended && self.finish_data().await == Flow::Close {
                        return Flow::Close;
                    }
                }
                State::Chunk(_) => {
                    i += self.feed_chunk(&bytes[i..]);
                    if matches!(self.state, State::Chunk(ChunkInProgress { remaining: 0, .. }))
                        && self.finish_chunk().await == Flow::Close
                    {
                        return Flow::Close;
                    }
                }
                State::Command | State::Refused(_) | State::Auth(_) => {
                    let rest = &bytes[i..];
                    let Some(eol) = memchr::memchr(b'\n', rest) else {
                        self.buffer_line(rest);
                        self.line_started.get_or_insert_with(Instant::now);
                        break;
                    };
                    self.buffer_line(&rest[..eol]);
                    i += eol + 1;
                    let more = i < bytes.len();
                    match self.command_line(more).await {
                        Flow::Continue => {}
                        Flow::StartTls => {
                            if more {
                                warn!(discarded = bytes.len() - i, "bytes pipelined after STARTTLS discarded");
                            }
                            return Flow::StartTls;
                        }
                        Flow::Close => return Flow::Close,
                    }
                }
            }
        }
        if self.is_closed() { Flow::Close } else { Flow::Continue }
    }

    /// Adds bytes of a command line, never holding more than the limit.
    fn buffer_line(&mut self, part: &[u8]) {
        if self.discarding_line {
            return;
        }
        if self.line.len() + part.len() >= MAX_COMMAND_LINE {
            self.line.clear();
            self.discarding_line = true;
        } else {
            self.line.extend_from_slice(part);
        }
    }

    async fn command_line(&mut self, more: bool) -> Flow {
        self.line_started = None;
        let mut line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.discarding_line) {
            return self.error(codes::line_too_long());
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        } else if self.settings.bare_newlines == BareNewlines::Reject {
            return self.error(Reply::new(500, "5.5.2", "Command lines must end with CRLF"));
        }
        if matches!(self.state, State::Auth(_)) {
            return self.sasl_line(&line).await;
        }
        let command = match parse_command(&line) {
            Ok(c) => c,
            // The chunk's octets follow, of a size unknown: never read them as commands.
            Err(e) if line.get(..4).is_some_and(|verb| verb.eq_ignore_ascii_case(b"BDAT")) => {
                warn!("unreadable BDAT command");
                return self.close_with(&e.0);
            }
            Err(e) => return self.error(e.0),
        };
        if let State::Refused(reply) = &self.state {
            let reply = reply.clone();
            if command == Command::Quit {
                let bye = Reply::new(221, "2.0.0", format!("{} closing connection", self.hostname()));
                return self.close_with(&bye);
            }
            self.reply(&reply);
            return Flow::Continue;
        }
        let esmtp = self.conn.lock().esmtp;
        if more && self.settings.strict_pipelining && !(esmtp && command.may_be_pipelined()) {
            warn!(command = ?command, "client pipelined without permission");
            return self.close_with(&codes::sync_error());
        }
        self.command(command).await
    }

    /// Counts a client error and sends its reply, or closes after too many.
    fn error(&mut self, reply: Reply) -> Flow {
        info!("command refused: {}", reply.to_wire().trim_end());
        self.errors += 1;
        if self.errors > self.settings.max_errors {
            warn!(errors = self.errors, "too many errors");
            return self.close_with(&codes::too_many_errors());
        }
        self.reply(&reply);
        Flow::Continue
    }

    async fn command(&mut self, command: Command) -> Flow {
        match command {
            Command::Helo(host) => self.helo(host, false).await,
            Command::Ehlo(host) => self.helo(host, true).await,
            Command::Mail(sender) => self.mail(sender).await,
            Command::Rcpt(recipient) => self.rcpt(recipient).await,
            Command::Data => self.data().await,
            Command::Bdat { size, last } => self.bdat(size, last).await,
            Command::Rset | Command::Noop | Command::Vrfy(_) | Command::Help if self.junk_limit_reached(&command) => {
                warn!(commands = self.junk_commands, "too many commands without mail");
                self.close_with(&codes::too_many_junk_commands())
            }
            Command::Rset => {
                self.reset_transaction().await;
                self.reply(&codes::ok());
                Flow::Continue
            }
            Command::Noop => {
                self.reply(&codes::ok());
                Flow::Continue
            }
            Command::Quit => {
                let bye = Reply::new(221, "2.0.0", format!("{} closing connection", self.hostname()));
                self.close_with(&bye)
            }
            Command::Vrfy(_) => {
                self.reply(&Reply::new(
                    252,
                    "2.0.0",
                    "Cannot VRFY user, but will accept message and attempt delivery",
                ));
                Flow::Continue
            }
            Command::Help => {
                self.reply(&Reply::new(
                    214,
                    "2.0.0",
                    "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
                ));
                Flow::Continue
            }
            Command::StartTls => self.starttls(),
            Command::Auth(args) => self.auth(&args).await,
            Command::Xclient(xclient) => self.xclient(xclient).await,
            Command::Unknown { verb, args } => self.unrecognized(verb, args).await,
        }
    }

    /// `XCLIENT` from a trusted front end: the client it names takes the
    /// connection's place, which starts afresh as if that client had
    /// connected (notes cleared, authenticated only by `LOGIN`, the
    /// `connect` hook and the greeting again). Allowed once per connection.
    async fn xclient(&mut self, xclient: Xclient) -> Flow {
        let (allowed, in_transaction) = {
            let conn = self.conn.lock();
            (conn.xclient_allowed, conn.transaction.is_some())
        };
        if !allowed {
            return self.error(Reply::new(550, "5.7.0", "Error: insufficient authorization"));
        }
        if in_transaction {
            return self.error(codes::bad_sequence("MAIL transaction in progress"));
        }
        self.reset_transaction().await;
        let (front, client, login) = {
            let mut conn = self.conn.lock();
            let front = conn.peer;
            named_address(&mut conn.peer, xclient.addr, xclient.port);
            named_address(&mut conn.local, xclient.dest_addr, xclient.dest_port);
            conn.helo = xclient.helo.flatten();
            conn.esmtp = conn.helo.is_some() && xclient.esmtp.flatten().unwrap_or(false);
            conn.auth_user = xclient.login.flatten();
            conn.relaying = conn.auth_user.is_some();
            conn.early_talker = false;
            conn.notes = crate::capabilities::NoteStore::new(conn.note_limits);
            conn.capability_state.clear();
            conn.xclient_allowed = false;
            (front, conn.peer, conn.auth_user.clone())
        };
        self.errors = 0;
        self.auth_failures = 0;
        self.junk_commands = 0;
        self.extra_keywords.clear();
        let name = xclient.name.flatten();
        info!(%client, %front, name = %name.as_deref().unwrap_or("-"), login = %login.as_deref().unwrap_or("-"), "XCLIENT: serving the client the front end names");
        self.start(false).await
    }

    /// Counts a junk command (NOOP, VRFY, HELP, and RSET outside a
    /// transaction: an RSET that abandons a transaction is not junk); true
    /// past the limit.
    fn junk_limit_reached(&mut self, command: &Command) -> bool {
        if *command == Command::Rset && self.in_transaction() {
            return false;
        }
        self.junk_commands += 1;
        self.settings.max_junk_commands > 0 && self.junk_commands > self.settings.max_junk_commands
    }

    /// Runs a deciding hook's chain and looks its verdict up in the table.
    async fn decide(&mut self, call: HookCall) -> (Decision, crate::policy::Rule) {
        let hook = call.hook();
        let span = self.tx_span.clone();
        let decision = self.policy.decide(call).instrument(span.clone()).await;
        self.tarpit(hook).await;
        let relaying = self.conn.lock().relaying;
        let rule = rule(hook, &decision.verdict, relaying);
        if !matches!(rule.effect, Effect::Proceed | Effect::HostQueue) {
            let code = rule.reply(decision.verdict.reply(), "").code;
            span.in_scope(|| {
                info!(hook = %hook, plugin = decision.plugin.as_deref().unwrap_or("-"), verdict = decision.verdict.name(), code, "refused")
            });
        }
        (decision, rule)
    }

    /// Holds the reply after `hook`'s chain as the connection's
    /// [`TARPIT_NOTE`] says (at most [`MAX_TARPIT`]). Only replies to a
    /// client's command are held, once per command: not `rcpt-ok` (its
    /// `rcpt` was), the queue hooks or `max-data-exceeded`. A hold longer
    /// than [`SessionSettings::park_after`] gives the plugin instances back
    /// first, so a tarpitted client holds no more than an idle one.
    async fn tarpit(&mut self, hook: Hook) {
        if matches!(
            hook,
            Hook::RcptOk | Hook::Queue | Hook::QueueOutbound | Hook::MaxDataExceeded
        ) {
            return;
        }
        let hold = tarpit_hold(self.conn.lock().notes.get(TARPIT_NOTE));
        if hold.is_zero() {
            return;
        }
        debug!(hook = %hook, ?hold, "tarpit: holding the reply");
        if hold >= self.settings.park_after {
            self.park();
        }
        tokio::time::sleep(hold).await;
    }

    /// Sends a non-proceeding rule's reply; closes when the rule says so.
    fn refuse(&mut self, rule: crate::policy::Rule, decision: &Decision, subject: &str) -> Flow {
        let reply = rule.reply(decision.verdict.reply(), subject);
        match rule.effect {
            Effect::Close | Effect::Refuse => self.close_with(&reply),
            Effect::Reject | Effect::Proceed | Effect::HostQueue => {
                self.reply(&reply);
                Flow::Continue
            }
        }
    }

    fn starttls(&mut self) -> Flow {
        let (available, active) = {
            let conn = self.conn.lock();
            (conn.starttls_available, conn.tls.is_some())
        };
        if active {
            return self.error(codes::bad_sequence("TLS is already active"));
        }
        if !available {
            return self.error(Reply::new(502, "5.5.1", "STARTTLS not available"));
        }
        self.reply(&Reply::new(220, "2.0.0", "Ready to start TLS"));
        Flow::StartTls
    }

    /// The TLS handshake after STARTTLS (or on an implicit-TLS listener)
    /// succeeded: the session starts over (RFC 3207), a new EHLO is needed.
    pub async fn tls_established(&mut self, tls: TlsInfo) {
        info!(version = %tls.version, cipher = %tls.cipher, sni = tls.sni.as_deref().unwrap_or("-"), "TLS established");
        self.reset_transaction().await;
        let mut conn = self.conn.lock();
        conn.tls = Some(tls);
        conn.helo = None;
        conn.esmtp = false;
        conn.starttls_available = false;
    }

    /// Whether AUTH may be offered now: a plugin verifies credentials, and the
    /// connection is encrypted (or from loopback, when allowed).
    fn auth_offered(&self) -> bool {
        let conn = self.conn.lock();
        let private = conn.tls.is_some() || (self.settings.auth_plaintext_loopback && conn.peer.ip().is_loopback());
        drop(conn);
        private && self.policy.implements(Hook::Auth)
    }

    async fn auth(&mut self, args: &str) -> Flow {
        let (helo, authed, in_tx, encrypted) = {
            let conn = self.conn.lock();
            (
                conn.helo.is_some(),
                conn.auth_user.is_some(),
                conn.transaction.is_some(),
                conn.tls.is_some(),
            )
        };
        if !helo {
            return self.error(codes::bad_sequence("send EHLO first"));
        }
        if authed {
            return self.error(codes::bad_sequence("already authenticated"));
        }
        if in_tx {
            return self.error(codes::bad_sequence("AUTH is not allowed during a transaction"));
        }
        if !self.policy.implements(Hook::Auth) {
            return self.error(Reply::new(502, "5.5.1", "AUTH not available"));
        }
        if !self.auth_offered() && !encrypted {
            return self.error(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ));
        }
        let (mechanism, initial) = match args.split_once(' ') {
            Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim())),
            None => (args.to_ascii_uppercase(), None),
        };
        match (mechanism.as_str(), initial) {
            ("PLAIN", None) => self.challenge(Sasl::Plain, ""),
            ("PLAIN", Some(response)) => {
                self.state = State::Auth(Sasl::Plain);
                let response = if response == "=" { "" } else { response };
                self.sasl_line(response.as_bytes()).await
            }
            ("LOGIN", None) => self.challenge(Sasl::LoginUser, "VXNlcm5hbWU6"),
            ("LOGIN", Some(user)) => {
                self.state = State::Auth(Sasl::LoginUser);
                self.sasl_line(user.as_bytes()).await
            }
            _ => self.error(Reply::new(504, "5.5.4", "Unrecognized authentication type")),
        }
    }

    fn challenge(&mut self, next: Sasl, text: &str) -> Flow {
        self.state = State::Auth(next);
        self.reply(&Reply::plain(334, text));
        Flow::Continue
    }

    /// One client response of a SASL exchange (base64, or `*` to cancel).
    async fn sasl_line(&mut self, line: &[u8]) -> Flow {
        use base64::Engine as _;
        let step = match std::mem::replace(&mut self.state, State::Command) {
            State::Auth(step) => step,
            _ => Sasl::Plain,
        };
        if line == b"*" {
            return self.error(Reply::new(501, "5.0.0", "Authentication cancelled"));
        }
        let decoded = match base64::engine::general_purpose::STANDARD.decode(line) {
            Ok(d) => String::from_utf8_lossy(&d).into_owned(),
            Err(_) => return self.error(Reply::new(501, "5.5.2", "Invalid base64 in AUTH response")),
        };
        let attempt = |mechanism: &str, authzid: Option<String>, user: String, secret: String| AuthAttempt {
            mechanism: mechanism.into(),
            user,
            secret,
            authzid,
            challenge: None,
        };
        match step {
            Sasl::LoginUser => self.challenge(Sasl::LoginPassword(decoded), "UGFzc3dvcmQ6"),
            Sasl::LoginPassword(user) => self.authenticate(attempt("LOGIN", None, user, decoded)).await,
            Sasl::Plain => {
                let mut parts = decoded.splitn(3, '\0');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(authzid), Some(user), Some(secret)) => {
                        let authzid = (!authzid.is_empty()).then(|| authzid.to_string());
                        self.authenticate(attempt("PLAIN", authzid, user.into(), secret.into()))
                            .await
                    }
                    _ => self.error(Reply::new(501, "5.5.2", "Malformed PLAIN response")),
                }
            }
        }
    }

    /// Asks the `auth` hook; success makes the session relaying, failures are
    /// slowed down and end the connection after too many.
    async fn authenticate(&mut self, attempt: AuthAttempt) -> Flow {
        let user = attempt.user.clone();
        let ip = self.conn.lock().peer.ip();
        let lockout = self.auth_lockout.clone();
        if let Some(lockout) = &lockout
            && lockout.is_locked(ip, &user).await
        {
            warn!(user = %user, "AUTH refused: too many authentication failures from this address or for this user");
            metrics::counter!(crate::telemetry::AUTH_ATTEMPTS, "result" => "locked").increment(1);
            if let Some(closed) = self.auth_failed(&user).await {
                return closed;
            }
            self.reply(&Reply::new(454, "4.7.0", "Too many authentication failures, try later"));
            return Flow::Continue;
        }
        let (decision, rule) = self.decide(HookCall::Auth(attempt)).await;
        // Credentials refused, not a backend that failed for now.
        let refused = matches!(
            decision.verdict,
            Verdict::Cont | Verdict::Deny(_) | Verdict::DenyDisconnect(_)
        );
        let result = match (rule.effect, refused) {
            (Effect::Proceed, _) => "success",
            (_, true) => "refused",
            (_, false) => "error",
        };
        metrics::counter!(crate::telemetry::AUTH_ATTEMPTS, "result" => result).increment(1);
        if rule.effect == Effect::Proceed {
            info!(user = %user, plugin = decision.plugin.as_deref().unwrap_or("-"), "authenticated");
            let mut conn = self.conn.lock();
            conn.auth_user = Some(user);
            conn.relaying = true;
            drop(conn);
            self.reply(&rule.reply(decision.verdict.reply(), ""));
            return Flow::Continue;
        }
        if let Some(lockout) = &lockout
            && refused
        {
            lockout.failed(ip, &user).await;
        }
        if let Some(closed) = self.auth_failed(&user).await {
            return closed;
        }
        self.refuse(rule, &decision, "")
    }

    /// Counts a failed AUTH in this connection and waits the growing
    /// delay; the connection closed once `auth_max_failures` is reached.
    async fn auth_failed(&mut self, user: &str) -> Option<Flow> {
        self.auth_failures += 1;
        warn!(user = %user, failures = self.auth_failures, "authentication failed");
        let delay = self.settings.auth_failure_delay * 2u32.saturating_pow(self.auth_failures - 1).min(64);
        tokio::time::sleep(delay).await;
        (self.auth_failures >= self.settings.auth_max_failures).then(|| {
            self.close_with(&Reply::new(
                421,
                "4.7.0",
                "Too many authentication failures, closing connection",
            ))
        })
    }

    async fn helo(&mut self, host: String, esmtp: bool) -> Flow {
        self.reset_transaction().await;
        let call = if esmtp {
            HookCall::Ehlo(host.clone())
        } else {
            HookCall::Helo(host.clone())
        };
        let (decision, rule) = self.decide(call).await;
        if rule.effect != Effect::Proceed {
            let mut conn = self.conn.lock();
            conn.helo = None;
            conn.esmtp = false;
            drop(conn);
            return self.refuse(rule, &decision, &host);
        }
        let (ours, peer_ip, starttls_available, encrypted, xclient) = {
            let mut conn = self.conn.lock();
            conn.helo = Some(host.clone());
            conn.esmtp = esmtp;
            (
                conn.hostname.clone(),
                conn.peer.ip(),
                conn.starttls_available,
                conn.tls.is_some(),
                conn.xclient_allowed,
            )
        };
        let greeting = format!("{ours} Hello {host} [{peer_ip}]");
        if !esmtp {
            self.reply(&Reply::plain(250, greeting));
            return Flow::Continue;
        }
        let mut lines = vec![greeting];
        if starttls_available {
            lines.push("STARTTLS".into());
        }
        lines.push("PIPELINING".into());
        lines.push("8BITMIME".into());
        lines.push("CHUNKING".into());
        lines.push(format!("SIZE {}", self.settings.max_message_size));
        lines.push("ENHANCEDSTATUSCODES".into());
        lines.push("SMTPUTF8".into());
        lines.push("DSN".into());
        if encrypted {
            lines.push("REQUIRETLS".into());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        if xclient {
            lines.push(XCLIENT_KEYWORD.into());
        }
        self.extra_keywords = self
            .policy
            .capabilities()
            .await
            .into_iter()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_graphic() || c == ' '))
            .collect();
        lines.extend(self.extra_keywords.iter().cloned());
        self.reply(&Reply {
            code: 250,
            enhanced: None,
            lines,
        });
        Flow::Continue
    }

    /// Checks the ESMTP parameters of MAIL or RCPT; `known` are the ones the core handles.
    fn check_params(&self, address: &Address, known: &[&str]) -> Result<(), Reply> {
        if !address.params.is_empty() && !self.conn.lock().esmtp {
            return Err(Reply::new(555, "5.5.4", "Parameters require EHLO"));
        }
        for p in &address.params {
            let by_plugin = self
                .extra_keywords
                .iter()
                .any(|k| k.split(' ').next().is_some_and(|kw| kw.eq_ignore_ascii_case(&p.key)));
            if !known.contains(&p.key.as_str()) && !by_plugin {
                return Err(Reply::new(555, "5.5.4", format!("Unsupported parameter {}", p.key)));
            }
        }
        Ok(())
    }

    async fn mail(&mut self, sender: Address) -> Flow {
        let (has_helo, has_tx) = {
            let conn = self.conn.lock();
            (conn.helo.is_some(), conn.transaction.is_some())
        };
        if !has_helo {
            return self.error(codes::bad_sequence("send HELO/EHLO first"));
        }
        if has_tx {
            return self.error(codes::bad_sequence("nested MAIL command"));
        }
        let (needs_auth, encrypted) = {
            let conn = self.conn.lock();
            (conn.role != Role::Mx && conn.auth_user.is_none(), conn.tls.is_some())
        };
        if needs_auth {
            return self.error(Reply::new(530, "5.7.0", "Authentication required"));
        }
        if let Err(reply) = self.check_params(
            &sender,
            &["SIZE", "BODY", "SMTPUTF8", "AUTH", "RET", "ENVID", "REQUIRETLS"],
        ) {
            return self.error(reply);
        }
        if let Err(reply) = MessageRequest::from_mail(&sender) {
            return self.error(reply);
        }
        if let Err(reply) = TlsRequest::check_mail(&sender, encrypted) {
            return self.error(reply);
        }
        if let Some(size) = sender.param("SIZE") {
            match size.and_then(|s| s.parse::<u64>().ok()) {
                None => return self.error(codes::syntax("SIZE=<number>")),
                Some(n) if n > self.settings.max_message_size => {
                    self.reply(&codes::too_big());
                    return Flow::Continue;
                }
                Some(_) => {}
            }
        }
        match sender.param("BODY") {
            None => {}
            Some(Some(b)) if b.eq_ignore_ascii_case("7BIT") || b.eq_ignore_ascii_case("8BITMIME") => {}
            Some(_) => return self.error(Reply::new(555, "5.5.4", "BODY must be 7BIT or 8BITMIME")),
        }
        if sender.param("SMTPUTF8").is_some_and(|v| v.is_some()) {
            return self.error(Reply::new(555, "5.5.4", "SMTPUTF8 takes no value"));
        }
        if sender.needs_utf8() && sender.param("SMTPUTF8").is_none() {
            return self.error(Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8"));
        }
        self.open_transaction(&sender);
        let subject = sender.to_string();
        let (decision, rule) = self.decide(HookCall::Mail(sender)).await;
        if rule.effect == Effect::Proceed {
            self.reply(&rule.reply(decision.verdict.reply(), &subject));
            return Flow::Continue;
        }
        self.reset_transaction().await;
        self.refuse(rule, &decision, &subject)
    }

    async fn rcpt(&mut self, recipient: Address) -> Flow {
        let (count, utf8) = {
            let conn = self.conn.lock();
            match &conn.transaction {
                None => (None, false),
                Some(tx) => (Some(tx.recipients.len()), tx.sender.param("SMTPUTF8").is_some()),
            }
        };
        let Some(count) = count else {
            return self.error(codes::bad_sequence("send MAIL first"));
        };
        if let Err(reply) = self.check_params(&recipient, &["NOTIFY", "ORCPT"]) {
            return self.error(reply);
        }
        if let Err(reply) = RecipientRequest::from_rcpt(&recipient) {
            return self.error(reply);
        }
        if recipient.needs_utf8() && !utf8 {
            return self.error(Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8"));
        }
        if count >= self.settings.max_recipients {
            self.reply(&codes::too_many_recipients());
            return Flow::Continue;
        }
        let subject = recipient.to_string();
        self.with_transaction(|tx| tx.recipients.push(recipient.clone()));
        let (decision, rule) = self.decide(HookCall::Rcpt(recipient.clone())).await;
        if rule.effect != Effect::Proceed {
            self.with_transaction(|tx| tx.truncate_recipients(count));
            return self.refuse(rule, &decision, &subject);
        }
        let accepted = self
            .with_transaction(|tx| tx.recipients.get(count).cloned())
            .flatten()
            .unwrap_or_else(|| recipient.clone());
        let (ok_decision, ok_rule) = self.decide(HookCall::RcptOk(accepted)).await;
        if ok_rule.effect != Effect::Proceed {
            self.with_transaction(|tx| tx.truncate_recipients(count));
            return self.refuse(ok_rule, &ok_decision, &subject);
        }
        // What plugins put in place of the address (an alias's targets) keeps the client's DSN requests.
        self.with_transaction(|tx| {
            for derived in tx.recipients.iter_mut().skip(count) {
                inherit_requests(&recipient, derived);
            }
        });
        let reply = match ok_decision.verdict.reply() {
            Some(r) => ok_rule.reply(Some(r), &subject),
            None => rule.reply(decision.verdict.reply(), &subject),
        };
        self.reply(&reply);
        Flow::Continue
    }

    fn with_transaction<T>(&self, f: impl FnOnce(&mut Transaction) -> T) -> Option<T> {
        self.conn.lock().transaction.as_mut().map(f)
    }

    async fn data(&mut self) -> Flow {
        let state = self.with_transaction(|tx| (tx.id.clone(), tx.recipients.len()));
        let Some((tx_id, recipients)) = state else {
            return self.error(codes::bad_sequence("send MAIL first"));
        };
        if recipients == 0 {
            return self.error(codes::bad_sequence("send RCPT first"));
        }
        if self.chunked.is_some() {
            return self.error(codes::bad_sequence("DATA cannot follow BDAT"));
        }
        let (decision, rule) = self.decide(HookCall::Data).await;
        if rule.effect != Effect::Proceed {
            self.reset_transaction().await;
            return self.refuse(rule, &decision, "");
        }
        self.reply(&rule.reply(None, ""));
        self.state = State::Data(Box::new(DataInProgress {
            receiver: DataReceiver::new(self.settings.bare_newlines, self.settings.max_data_line),
            writer: SpoolWriter::new(&self.settings.spool, &tx_id),
            buf: Vec::with_capacity(16 * 1024),
            oversize: false,
            io_error: false,
            started: Instant::now(),
            received: 0,
        }));
        Flow::Continue
    }

    /// `BDAT size [LAST]`: its first chunk runs the `data` hook. A refused
    /// BDAT is answered at once and its octets are skipped, so they are never
    /// read as commands.
    async fn bdat(&mut self, size: u64, last: bool) -> Flow {
        let state = self.with_transaction(|tx| (tx.id.clone(), tx.recipients.len()));
        let refusal = match state {
            None => Some(codes::bad_sequence("send MAIL first")),
            Some((_, 0)) => Some(codes::bad_sequence("send RCPT first")),
            Some((tx_id, _)) if self.chunked.is_none() => {
                let (decision, rule) = self.decide(HookCall::Data).await;
                if rule.effect != Effect::Proceed {
                    let flow = self.refuse(rule, &decision, "");
                    self.reset_transaction().await;
                    if flow == Flow::Close {
                        return flow;
                    }
                    return self.start_chunk(size, last, false).await;
                }
                self.chunked = Some(Box::new(ChunkedMessage {
                    writer: SpoolWriter::new(&self.settings.spool, &tx_id),
                    oversize: false,
                    io_error: false,
                    started: Instant::now(),
                    received: 0,
                }));
                None
            }
            Some(_) => None,
        };
        let keep = refusal.is_none();
        if let Some(reply) = refusal
            && self.error(reply) == Flow::Close
        {
            return Flow::Close;
        }
        self.start_chunk(size, last, keep).await
    }

    /// Reads the next `size` octets as a chunk (an empty one is done at once).
    async fn start_chunk(&mut self, size: u64, last: bool, keep: bool) -> Flow {
        self.state = State::Chunk(ChunkInProgress {
            remaining: size,
            size,
            last,
            keep,
            started: Instant::now(),
        });
        if size == 0 {
            self.finish_chunk().await
        } else {
            Flow::Continue
        }
    }

    /// Feeds chunk octets (spooled as they are); returns how many were used.
    fn feed_chunk(&mut self, bytes: &[u8]) -> usize {
        let State::Chunk(chunk) = &mut self.state else {
            return 0;
        };
        let n = bytes.len().min(usize::try_from(chunk.remaining).unwrap_or(usize::MAX));
        chunk.remaining -= n as u64;
        if chunk.keep
            && let Some(message) = self.chunked.as_mut()
        {
            message.received += n as u64;
            if message.writer.len() + n as u64 > self.settings.max_message_size {
                message.oversize = true;
            }
            if !message.oversize
                && !message.io_error
                && let Err(e) = message.writer.write(&bytes[..n])
            {
                warn!("spooling the message failed: {e}");
                message.io_error = true;
            }
        }
        n
    }

    /// A chunk has arrived whole: `250` for a middle one, the message's
    /// outcome for the last; an oversize message ends at the chunk that
    /// overflowed it.
    async fn finish_chunk(&mut self) -> Flow {
        let State::Chunk(chunk) = std::mem::replace(&mut self.state, State::Command) else {
            return Flow::Continue;
        };
        if !chunk.keep {
            return Flow::Continue;
        }
        let Some(message) = self.chunked.take() else {
            return Flow::Continue;
        };
        if message.oversize {
            return self.refuse_oversize().await;
        }
        if !chunk.last {
            self.chunked = Some(message);
            self.reply(&Reply::new(250, "2.0.0", format!("{} octets received", chunk.size)));
            return Flow::Continue;
        }
        let problem = message.io_error.then(codes::local_error);
        self.complete_message(message.writer, problem).await
    }

    /// Feeds DATA bytes; returns how many were used and whether the message ended.
    fn feed_data(&mut self, bytes: &[u8]) -> (usize, bool) {
        let max = self.settings.max_message_size;
        let State::Data(data) = &mut self.state else {
            return (0, false);
        };
        let event = data.receiver.feed(bytes, &mut data.buf);
        let (consumed, ended) = match event {
            DataEvent::End { consumed } => (consumed, true),
            DataEvent::NeedMore => (bytes.len(), false),
        };
        data.received += consumed as u64;
        if ended || data.buf.len() >= 64 * 1024 {
            if data.writer.len() + data.buf.len() as u64 > max {
                data.oversize = true;
            }
            if !data.oversize
                && !data.io_error
                && let Err(e) = data.writer.write(&data.buf)
            {
                warn!("spooling the message failed: {e}");
                data.io_error = true;
            }
            data.buf.clear();
        }
        (consumed, ended)
    }

    /// The end of data arrived: checks the message, then data-post and queue.
    async fn finish_data(&mut self) -> Flow {
        let State::Data(data) = std::mem::replace(&mut self.state, State::Command) else {
            return Flow::Continue;
        };
        let DataInProgress {
            receiver,
            writer,
            oversize,
            io_error,
            ..
        } = *data;
        let problem = if io_error {
            Some(codes::local_error())
        } else if receiver.saw_nul {
            Some(Reply::new(554, "5.6.0", "Message contains NUL characters"))
        } else if receiver.saw_bare_newline && self.settings.bare_newlines == BareNewlines::Reject {
            Some(Reply::new(554, "5.6.0", "Message contains bare CR or LF characters"))
        } else if receiver.saw_long_line {
            Some(Reply::new(
                552,
                "5.3.4",
                format!("Message has lines longer than {} bytes", self.settings.max_data_line),
            ))
        } else {
            None
        };
        if oversize {
            return self.refuse_oversize().await;
        }
        self.complete_message(writer, problem).await
    }

    /// The message outgrew `max_message_size` (by DATA or BDAT): the
    /// `max-data-exceeded` hook's refusal, and the transaction ends.
    async fn refuse_oversize(&mut self) -> Flow {
        self.tx_outcome = Some("refused");
        let (decision, rule) = self.decide(HookCall::MaxDataExceeded).await;
        let flow = self.refuse(rule, &decision, "");
        self.reset_transaction().await;
        flow
    }

    /// The whole message has arrived (by DATA or BDAT): unless `problem`
    /// refuses it, checks it, then runs data-post and queue.
    async fn complete_message(&mut self, writer: SpoolWriter, problem: Option<Reply>) -> Flow {
        self.tx_outcome = Some("refused");
        if let Some(reply) = problem {
            warn!("message rejected: {}", reply.to_wire().trim_end());
            self.reply(&reply);
            self.reset_transaction().await;
            return Flow::Continue;
        }
        let message = match writer.finish(self.settings.max_header_size) {
            Ok(m) => m,
            Err(e) => {
                warn!("reading the spooled message failed: {e}");
                self.reply(&codes::local_error());
                self.reset_transaction().await;
                return Flow::Continue;
            }
        };
        if let Some(reply) = self.check_message(&message) {
            warn!("message rejected: {}", reply.to_wire().trim_end());
            self.reply(&reply);
            self.reset_transaction().await;
            return Flow::Continue;
        }
        let tx_id = self.attach_message(message);
        let (decision, rule) = self.decide(HookCall::DataPost).await;
        if rule.effect != Effect::Proceed {
            let flow = self.refuse(rule, &decision, "");
            self.reset_transaction().await;
            return flow;
        }
        let (decision, rule) = self.queue_message(&tx_id).await;
        let flow = self.refuse(rule, &decision, &tx_id);
        self.reset_transaction().await;
        flow
    }

    /// Hands a message accepted earlier and kept aside (a quarantined copy,
    /// read from `content`) to the queue hook, as its transaction would have
    /// been: no hook before `queue` runs again and no `Received:` field is
    /// added. `notes` are set on the transaction first. The reply a client
    /// would have got.
    pub async fn queue_kept(
        &mut self,
        sender: &Address,
        recipients: Vec<Address>,
        content: &mut (dyn std::io::Read + Send),
        notes: &[(&str, &str)],
    ) -> Reply {
        let tx_id = self.open_transaction(sender);
        let prepared = self
            .spool_kept(&tx_id, content)
            .map_err(|e| e.to_string())
            .and_then(|message| {
                self.with_transaction(|tx| {
                    tx.recipients = recipients;
                    tx.message = Some(message);
                    notes.iter().try_for_each(|(key, value)| tx.notes.set(key, value))
                })
                .expect("the transaction was just opened")
                .map_err(|e| e.to_string())
            });
        let reply = match prepared {
            Ok(()) => {
                let (decision, rule) = self.queue_message(&tx_id).await;
                rule.reply(decision.verdict.reply(), &tx_id)
            }
            Err(e) => {
                self.tx_span
                    .in_scope(|| warn!("the kept message could not be prepared: {e}"));
                codes::local_error()
            }
        };
        self.reset_transaction().await;
        reply
    }

    /// Copies a kept message into the spool, as DATA would have.
    fn spool_kept(&self, tx_id: &str, content: &mut dyn std::io::Read) -> std::io::Result<Message> {
        let mut writer = SpoolWriter::new(&self.settings.spool, tx_id);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match content.read(&mut buf)? {
                0 => break,
                n => writer.write(&buf[..n])?,
            }
        }
        writer.finish(self.settings.max_header_size)
    }

    /// Hands the transaction's message to the queue hook (or the host's
    /// queue) and, when it is taken, logs it and tells the plugins; the
    /// decision and the rule to reply by.
    async fn queue_message(&mut self, tx_id: &str) -> (Decision, crate::policy::Rule) {
        let relaying = self.conn.lock().relaying;
        // Relayed mail leaves by domain anyway; otherwise the queue hook
        // sees only the recipients that are not forwarded elsewhere.
        let (forwarding, local_left) = if relaying { (None, true) } else { self.take_forwarded() };
        // The forwarded copy is stored first and released only once the
        // queue hook took the rest: a client retrying after a refusal or a
        // failed store gets no recipient a second copy.
        let held = match forwarding {
            Some(handoff) => match self.hold_forwarded(handoff).await {
                Ok(held) => Some(held),
                Err(rule) => return (Decision::cont(), rule),
            },
            None => None,
        };
        let (decision, mut rule) = if relaying {
            self.decide(HookCall::QueueOutbound).await
        } else if local_left {
            self.decide(HookCall::Queue).await
        } else {
            // Every recipient is forwarded: nothing for the queue plugins.
            (
                Decision::cont(),
                crate::policy::rule(Hook::QueueOutbound, &Verdict::Ok(None), false),
            )
        };
        let host_queued = rule.effect == Effect::HostQueue;
        if host_queued {
            let handoff = self.with_transaction(|tx| tx.message.as_ref().map(|m| Handoff::of(tx, m, &tx.recipients)));
            rule = self.host_enqueue(rule, handoff.flatten()).await;
        }
        if let Some(held) = held {
            self.settle_forwarded(held, rule.effect == Effect::Proceed).await;
        }
        if rule.effect == Effect::Proceed {
            let size = self
                .with_transaction(|tx| tx.message.as_ref().map_or(0, Message::size))
                .unwrap_or(0);
            self.tx_span.in_scope(|| {
                info!(queue_id = %tx_id, size, plugin = decision.plugin.as_deref().unwrap_or("-"), "message accepted")
            });
            if !host_queued {
                self.notify_success().await;
            }
            self.junk_commands = 0;
            self.tx_outcome = Some("accepted");
            self.policy
                .notify(HookCall::QueueOk(tx_id.to_string()))
                .instrument(self.tx_span.clone())
                .await;
        }
        (decision, rule)
    }

    /// Queues the success notices the recipients of an accepted message
    /// asked for (none for `<>`, none while a queue plugin holds it:
    /// [`HELD_NOTE`]): `delivered` for what the queue plugin took,
    /// `relayed` for what a plugin forwarded to a server without DSN.
    /// A failure is logged; the message stays accepted.
    async fn notify_success(&mut self) {
        let found = self
            .with_transaction(|tx| {
                // Most mail asks nothing: no work beyond this scan.
                if tx.sender.is_null() || !tx.recipients.iter().any(|r| r.param("NOTIFY").is_some()) {
                    return None;
                }
                if let Some(held) = tx.notes.get(HELD_NOTE) {
                    return Some(Err(held.to_string()));
                }
                let dsn = tx.dsn_requests();
                let mut notice = SuccessNotice {
                    id: tx.id.clone(),
                    sender: tx.sender.addr_spec(),
                    delivered: Vec::new(),
                    relayed: Vec::new(),
                    dsn: DsnRequests::default(),
                };
                for recipient in tx.recipients.iter().map(Address::addr_spec) {
                    if !dsn.recipient(&recipient).wants_success() {
                        continue;
                    }
                    match tx.handed_on.iter().find(|h| h.recipient == recipient) {
                        Some(handed) if handed.dsn_passed => {}
                        Some(handed) => notice.relayed.push(handed.clone()),
                        None => notice.delivered.push(recipient),
                    }
                }
                if notice.delivered.is_empty() && notice.relayed.is_empty() {
                    return None;
                }
                notice.dsn = dsn;
                Some(Ok((tx.message.as_ref()?.reader(), notice)))
            })
            .flatten();
        let (reader, notice) = match found {
            Some(Ok(found)) => found,
            Some(Err(held)) => {
                self.tx_span
                    .in_scope(|| info!(held, "no delivered notice while the message is held"));
                return;
            }
            None => return,
        };
        let Some(queue) = self.outbound() else {
            self.tx_span
                .in_scope(|| warn!("no success notice sent: outbound delivery is disabled"));
            return;
        };
        if let Err(e) = queue.notify_success(reader, notice).await {
            self.tx_span
                .in_scope(|| error!(error = %e, "the success notice could not be queued"));
        }
    }

    /// Takes the recipients that plugins marked as forwarded out of the
    /// transaction, so that the queue hook and the success notices see only
    /// those delivered here: what the outbound queue needs to forward the
    /// message to them, when there are any, and whether any recipient is
    /// left to deliver here.
    fn take_forwarded(&mut self) -> (Option<Handoff>, bool) {
        self.with_transaction(|tx| {
            // Most mail forwards nothing: no work beyond this check.
            if tx.forwarded.is_empty() {
                return (None, true);
            }
            let Some(message) = tx.message.as_ref() else {
                return (None, true);
            };
            let (forwarded, local): (Vec<Address>, Vec<Address>) =
                tx.recipients.iter().cloned().partition(|r| tx.is_forwarded(r));
            if forwarded.is_empty() {
                return (None, true);
            }
            let handoff = Handoff::of(tx, message, &forwarded);
            tx.recipients = local;
            (Some(handoff), !tx.recipients.is_empty())
        })
        .unwrap_or((None, true))
    }

    /// Stores the message in the host's outbound queue: `rule` proceeding
    /// once it is durable, [`HOST_QUEUE_FAILED`] otherwise.
    async fn host_enqueue(&mut self, rule: crate::policy::Rule, handoff: Option<Handoff>) -> crate::policy::Rule {
        let stored = match (self.outbound_or_log(), handoff) {
            (Some(queue), Some(handoff)) => queue.enqueue(handoff, None).await,
            _ => return HOST_QUEUE_FAILED,
        };
        match stored {
            Ok(ids) => {
                self.tx_span
                    .in_scope(|| info!(outbound = %ids.join(","), "queued for delivery"));
                crate::policy::Rule {
                    effect: Effect::Proceed,
                    ..rule
                }
            }
            Err(e) => {
                self.tx_span
                    .in_scope(|| error!(error = %e, "the outbound queue could not store the message"));
                HOST_QUEUE_FAILED
            }
        }
    }

    /// Stores the copy for the forwarded recipients in the outbound queue,
    /// held back from delivery (the queue, with the copy):
    /// [`HOST_QUEUE_FAILED`] when it cannot be.
    async fn hold_forwarded(
        &mut self,
        handoff: Handoff,
    ) -> Result<(Arc<dyn OutboundQueue>, HeldCopy), crate::policy::Rule> {
        let queue = self.outbound_or_log().ok_or(HOST_QUEUE_FAILED)?;
        match queue.forward(handoff).await {
            Ok(held) => Ok((queue, held)),
            Err(e) => {
                self.tx_span
                    .in_scope(|| error!(error = %e, "the outbound queue could not store the forwarded copy"));
                Err(HOST_QUEUE_FAILED)
            }
        }
    }

    /// Releases the copy `queue` holds when the message is `accepted`, else
    /// removes it.
    async fn settle_forwarded(&mut self, (queue, held): (Arc<dyn OutboundQueue>, HeldCopy), accepted: bool) {
        let (ids, to, count) = (held.ids.join(","), held.recipients.join(","), held.recipients.len());
        if accepted {
            queue.release(held);
            metrics::counter!(crate::telemetry::FORWARDED_RECIPIENTS).increment(count as u64);
            self.tx_span
                .in_scope(|| info!(outbound = %ids, %to, "queued for forwarding"));
        } else if let Err(e) = queue.discard(held).await {
            self.tx_span.in_scope(|| {
                error!(outbound = %ids, error = %e, "the forwarded copy of a refused message could not be removed; it stays queued until a restart delivers it")
            });
        }
    }

    /// The outbound queue, or `None` with a log line that delivery is off.
    fn outbound_or_log(&self) -> Option<Arc<dyn OutboundQueue>> {
        let queue = self.outbound();
        if queue.is_none() {
            self.tx_span
                .in_scope(|| warn!("relayed or forwarded message refused: outbound delivery is disabled"));
        }
        queue
    }

    fn check_message(&self, message: &Message) -> Option<Reply> {
        if message.header_too_large {
            return Some(Reply::new(552, "5.3.4", "Message header too large"));
        }
        if message.count("Received") > self.settings.max_received {
            return Some(Reply::new(
                554,
                "5.4.6",
                "Too many hops (Received headers), possible mail loop",
            ));
        }
        None
    }

    /// Starts a transaction from `sender` (no recipients, no message yet);
    /// its id.
    fn open_transaction(&mut self, sender: &Address) -> String {
        self.transactions += 1;
        let tx_id = {
            let mut conn = self.conn.lock();
            let id = format!("{}.{}", conn.id, self.transactions);
            let notes = crate::capabilities::NoteStore::new(conn.note_limits);
            conn.transaction = Some(Transaction {
                id: id.clone(),
                sender: sender.clone(),
                recipients: Vec::new(),
                message: None,
                notes,
                authentication: None,
                handed_on: Vec::new(),
                forwarded: Vec::new(),
            });
            id
        };
        self.tx_span = info_span!("tx", id = %tx_id);
        tx_id
    }

    /// Stores the message in the transaction with our `Received:` field on top.
    fn attach_message(&mut self, mut message: Message) -> String {
        let mut conn = self.conn.lock();
        let helo: String = conn
            .helo
            .as_deref()
            .unwrap_or("unknown")
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && !"()[];\\\"".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let proto = format!(
            "{}{}{}",
            if conn.esmtp { "ESMTP" } else { "SMTP" },
            if conn.tls.is_some() { "S" } else { "" },
            if conn.auth_user.is_some() { "A" } else { "" }
        );
        // A local program's mail came from no host: it is told by whom, as
        // Postfix's `(Postfix, from userid N)`.
        let (from, by) = match &conn.local_user {
            Some(user) => (None, format!("by {} (Waraka, from local user {user})", conn.hostname)),
            None => (
                Some(format!("from {helo} ([{}])", conn.peer.ip())),
                format!("by {} (Waraka)", conn.hostname),
            ),
        };
        let tls = conn.tls.clone();
        let add_missing = match self.settings.add_missing_headers {
            AddMissingHeaders::Never => None,
            AddMissingHeaders::Relaying => conn.relaying.then(|| conn.hostname.clone()),
            AddMissingHeaders::Always => Some(conn.hostname.clone()),
        };
        let tx = conn.transaction.as_mut().expect("DATA runs inside a transaction");
        let mut value = from.map(|from| from + "\r\n\t").unwrap_or_default();
        if let Some(tls) = &tls {
            value.push_str(&format!("(using {} with cipher {})\r\n\t", tls.version, tls.cipher));
        }
        value.push_str(&format!("{by} with {proto} id {}", tx.id));
        if let [single] = tx.recipients.as_slice() {
            value.push_str(&format!("\r\n\tfor {single}"));
        }
        value.push_str(&format!(";\r\n\t{}", chrono::Utc::now().to_rfc2822()));
        if let Err(e) = message.add_header("Received", &value) {
            warn!("could not add Received: {e}");
        }
        if let Some(hostname) = add_missing {
            add_missing_headers(&mut message, &tx.id, &hostname);
        }
        tx.message = Some(message);
        tx.id.clone()
    }

    async fn unrecognized(&mut self, verb: String, args: String) -> Flow {
        if FOREIGN_VERBS.contains(&verb.as_str()) || verb.ends_with(':') {
            warn!(verb = %verb, "not an SMTP client");
            return self.close_with(&Reply::new(554, "5.7.0", "This is an SMTP server, closing connection"));
        }
        let subject = verb.clone();
        let (decision, rule) = self.decide(HookCall::UnrecognizedCommand { verb, args }).await;
        if rule.effect == Effect::Proceed {
            self.reply(&rule.reply(decision.verdict.reply(), &subject));
            return Flow::Continue;
        }
        if decision.verdict == Verdict::Cont {
            return self.error(rule.reply(None, &subject));
        }
        self.refuse(rule, &decision, &subject)
    }

    /// Ends the open transaction, if any, and tells the plugins.
    async fn reset_transaction(&mut self) {
        let had = self.conn.lock().transaction.is_some();
        if had {
            let outcome = self.tx_outcome.take().unwrap_or("abandoned");
            metrics::counter!(crate::telemetry::TRANSACTIONS, "outcome" => outcome).increment(1);
            self.policy
                .notify(HookCall::ResetTransaction)
                .instrument(self.tx_span.clone())
                .await;
            self.conn.lock().transaction = None;
            self.tx_span = Span::none();
        }
        self.chunked = None;
    }
}

/// Gives `message` the `Date` and `Message-ID` (`<TRANSACTION@HOSTNAME>`)
/// it lacks, at the end of its header, as Postfix's cleanup does.
fn add_missing_headers(message: &mut Message, transaction: &str, hostname: &str) {
    let end = u32::MAX;
    if message.count("Date") == 0 {
        let _ = message.insert_header(end, "Date", &chrono::Utc::now().to_rfc2822());
    }
    if message.count("Message-ID") == 0
        && let Err(e) = message.insert_header(end, "Message-ID", &format!("<{transaction}@{hostname}>"))
    {
        warn!("could not add Message-ID: {e}");
    }
}
