//! Mail filters (milters) over the Sendmail milter protocol, version 6, as
//! Postfix and Sendmail speak it. A milter such as OpenDKIM,
//! clamav-milter or rspamd's proxy is shown a transaction — the client,
//! HELO, sender, recipients, header fields and body, with the Sendmail
//! macros milters read — step by step on a [`Conversation`] that lasts a
//! client's connection, or all at once after DATA ([`Milter::check`]). It
//! answers each step, and the message's end with a [`Decision`] and the
//! [`Change`]s it asks for. Applying them is the caller's business. A
//! milter that cannot be reached or breaks the protocol is an error, never
//! an acceptance.

use super::mime::split_header;
use super::{CapabilityError, ServiceStream, connect};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version offered.
const VERSION: u32 = 6;

/// Changes a milter may ask for (`SMFIF_*`): add header fields (0x01),
/// replace the body (0x02), add recipients (0x04), remove recipients
/// (0x08), change or delete header fields (0x10), quarantine (0x20),
/// change the sender (0x40), and send its list of macros (0x100). Adding
/// recipients with parameters (0x80) is not offered.
const ACTIONS: u32 = 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x20 | 0x40 | 0x100;
/// The largest new body a milter may send, in bytes.
const MAX_NEW_BODY: usize = 64 << 20;
/// The `SMFIF_*` bit of each change a milter sends, by its reply code.
const CHANGE_ACTIONS: [(u8, u32, &str); 8] = [
    (b'b', 0x02, "replace the body"),
    (b'h', 0x01, "add a header field"),
    (b'i', 0x01, "insert a header field"),
    (b'm', 0x10, "change a header field"),
    (b'+', 0x04, "add a recipient"),
    (b'-', 0x08, "remove a recipient"),
    (b'e', 0x40, "change the sender"),
    (b'q', 0x20, "quarantine"),
];

/// Steps a milter may ask not to see (`SMFIP_NOCONNECT` … `SMFIP_NODATA`,
/// with `SMFIP_NR_HDR`), `SMFIP_SKIP`, and the steps it may leave
/// unanswered (`SMFIP_NR_CONN` … `SMFIP_NR_BODY`).
const PROTOCOL: u32 = 0x3ff | 0x400 | 0xff000;
const NO_CONNECT: u32 = 0x01;
const NO_HELO: u32 = 0x02;
const NO_MAIL: u32 = 0x04;
const NO_RCPT: u32 = 0x08;
const NO_BODY: u32 = 0x10;
const NO_HEADERS: u32 = 0x20;
const NO_END_OF_HEADERS: u32 = 0x40;
const NO_REPLY_HEADER: u32 = 0x80;
const NO_DATA: u32 = 0x200;
const NO_REPLY_CONNECT: u32 = 0x1000;
const NO_REPLY_HELO: u32 = 0x2000;
const NO_REPLY_MAIL: u32 = 0x4000;
const NO_REPLY_RCPT: u32 = 0x8000;
const NO_REPLY_DATA: u32 = 0x10000;
const NO_REPLY_END_OF_HEADERS: u32 = 0x40000;
const NO_REPLY_BODY: u32 = 0x80000;

/// The largest body chunk one `SMFIC_BODY` carries.
const BODY_CHUNK: usize = 65_535;
/// The largest reply frame read (replies are a few hundred bytes; a
/// header field a milter adds may be a few KiB).
const MAX_FRAME: usize = 1 << 20;

/// What a milter is told about the transaction besides its message.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// This server's name (macro `j`).
    pub hostname: String,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The address the client connected to (macro `{if_addr}`).
    pub local: SocketAddr,
    /// The HELO/EHLO name, if the client gave one.
    pub helo: Option<String>,
    /// The envelope sender (`local@domain`, empty for `<>`) and its ESMTP
    /// parameters (`SIZE=1234`).
    pub sender: (String, Vec<String>),
    /// The recipients (`local@domain`) with their ESMTP parameters.
    pub recipients: Vec<(String, Vec<String>)>,
    /// The transaction id (macro `i`).
    pub queue_id: String,
    /// The authenticated user (macro `{auth_authen}`), if any.
    pub user: Option<String>,
}

/// A reply a milter asks the client to get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MilterReply {
    /// The SMTP code.
    pub code: u16,
    /// The enhanced status code, if the milter gave one.
    pub enhanced: Option<String>,
    /// The text.
    pub text: String,
}

/// What a milter decided about the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Accept it (`SMFIR_ACCEPT`, or `SMFIR_CONTINUE` at its end).
    Accept,
    /// Accept it and deliver it nowhere (`SMFIR_DISCARD`).
    Discard,
    /// Refuse it for good (`SMFIR_REJECT`, or a 5xx `SMFIR_REPLYCODE`).
    Reject(MilterReply),
    /// Refuse it for now (`SMFIR_TEMPFAIL`, or a 4xx `SMFIR_REPLYCODE`).
    Tempfail(MilterReply),
}

/// A header field a change names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderField {
    /// For an insertion, the position (0 is the top); for a change, which
    /// field of that name (1 is the first); else 0.
    pub index: u32,
    /// The field's name.
    pub name: String,
    /// Its value, folded with CRLF; for a change, empty removes the field.
    pub value: String,
}

/// A change a milter asks for, in the order it sent them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add the field at the end of the header (`SMFIR_ADDHEADER`).
    AddHeader(HeaderField),
    /// Insert the field at its index (`SMFIR_INSHEADER`).
    InsertHeader(HeaderField),
    /// Give the field of that name and index this value, or remove it
    /// (`SMFIR_CHGHEADER`).
    ChangeHeader(HeaderField),
    /// Add this recipient (`SMFIR_ADDRCPT`, without angle brackets).
    AddRecipient(String),
    /// Remove this recipient (`SMFIR_DELRCPT`, without angle brackets).
    RemoveRecipient(String),
    /// Make this the sender (`SMFIR_CHGFROM`, without angle brackets;
    /// empty for `<>`). ESMTP parameters the milter adds are not taken.
    ChangeSender(String),
    /// Hold the message, for this reason (`SMFIR_QUARANTINE`).
    Quarantine(String),
}

/// A milter's answer to a whole transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What it decided.
    pub decision: Decision,
    /// The changes it asked for (only a milter that saw the message's end
    /// sends any).
    pub changes: Vec<Change>,
    /// The body it sent in place of the message's (`SMFIR_REPLBODY`, its
    /// chunks joined), with CRLF lines.
    pub body: Option<Vec<u8>>,
}

/// One milter, by the address it listens on.
#[derive(Clone, Debug)]
pub struct Milter {
    address: String,
}

impl Milter {
    /// The milter at `address`: `HOST:PORT`, or a Unix socket's path.
    /// Postfix's `inet:HOST:PORT` and `unix:PATH`, and the milters' own
    /// `inet:PORT@HOST`, are taken too.
    pub fn new(address: &str) -> Milter {
        let address = match address.strip_prefix("inet:") {
            Some(inet) => match inet.split_once('@') {
                Some((port, host)) => format!("{host}:{port}"),
                None => inet.to_string(),
            },
            None => address.strip_prefix("unix:").unwrap_or(address).to_string(),
        };
        Milter { address }
    }

    /// Opens a conversation about the client of `envelope`: connects,
    /// negotiates, and shows the milter the client and its HELO.
    pub async fn open(&self, envelope: &Envelope) -> Result<Conversation, CapabilityError> {
        let failed = |e: String| backend_error(&self.address, e);
        let stream = connect(&self.address).await.map_err(|e| failed(e.to_string()))?;
        let mut session = Session::negotiate(stream).await.map_err(failed)?;
        let connection = session.open(envelope).await.map_err(failed)?;
        Ok(Conversation {
            address: self.address.clone(),
            session,
            connection,
            tx: None,
        })
    }

    /// Shows the milter the transaction and its `message` (as it will be
    /// queued) on a connection of its own, and returns its answer.
    /// `backend` when the milter cannot be reached, closes the connection
    /// or breaks the protocol.
    pub async fn check(&self, envelope: &Envelope, message: &[u8]) -> Result<Outcome, CapabilityError> {
        let mut conversation = self.open(envelope).await?;
        let outcome = conversation.finish(envelope, message).await?;
        conversation.quit().await;
        Ok(outcome)
    }
}

/// A conversation with a milter that lasts as long as a client's
/// connection, as Postfix's `smtpd_milters` keep one: the milter sees each
/// sender and recipient when the client names it, and answers then.
/// Whatever it was not shown yet (a conversation opened late, or again
/// after a failure) is shown first, in order.
pub struct Conversation {
    address: String,
    session: Session<Box<dyn ServiceStream>>,
    /// What the milter decided for the whole connection (at the client or
    /// its HELO), if it did.
    connection: Option<Decision>,
    /// The transaction it is in, if any.
    tx: Option<InTransaction>,
}

/// What a conversation showed of one transaction.
struct InTransaction {
    /// The transaction's id.
    id: String,
    /// The recipients shown.
    recipients: Vec<String>,
    /// What the milter decided for the whole transaction, if it did.
    decided: Option<Decision>,
    /// Whether the milter saw the message's end.
    ended: bool,
}

/// A failure of the milter at `address` as the capability's error.
fn backend_error(address: &str, e: Failure) -> CapabilityError {
    CapabilityError::Backend(format!("milter {address}: {e}"))
}

impl Conversation {
    /// A protocol failure as the capability's error.
    fn failed(&self, e: Failure) -> CapabilityError {
        backend_error(&self.address, e)
    }

    /// Shows the milter the transaction of `envelope`: ends the one it was
    /// in, then shows the sender and the recipients it has not seen, but
    /// `except`. The decision that stands for the connection or the
    /// transaction, if there is one.
    async fn catch_up(&mut self, envelope: &Envelope, except: Option<&str>) -> Result<Option<Decision>, Failure> {
        if let Some(decision) = &self.connection {
            return Ok(Some(decision.clone()));
        }
        if let Some(tx) = self.tx.take_if(|tx| tx.id != envelope.queue_id)
            && !tx.ended
        {
            self.session.abort().await?;
        }
        let tx = match &mut self.tx {
            Some(tx) => tx,
            None => {
                let decided = self.session.mail(envelope).await?;
                self.tx.insert(InTransaction {
                    id: envelope.queue_id.clone(),
                    recipients: Vec::new(),
                    decided,
                    ended: false,
                })
            }
        };
        for recipient in &envelope.recipients {
            if tx.decided.is_some() || tx.recipients.contains(&recipient.0) || except == Some(recipient.0.as_str()) {
                continue;
            }
            tx.recipients.push(recipient.0.clone());
            // A recipient shown after its RCPT was accepted already: the
            // milter's refusal of it stands for the whole message.
            tx.decided = self.session.rcpt(recipient).await?;
        }
        Ok(tx.decided.clone())
    }

    /// The sender of `envelope`'s transaction: `None` to go on. A refusal
    /// refuses the sender (every sender, when the milter refused the
    /// client); `accept` and `discard` hold for the whole message.
    pub async fn sender(&mut self, envelope: &Envelope) -> Result<Option<Decision>, CapabilityError> {
        self.catch_up(envelope, None).await.map_err(|e| self.failed(e))
    }

    /// `candidate`, one of `envelope`'s recipients, just accepted: `None`
    /// to go on. A refusal refuses this recipient only.
    pub async fn recipient(
        &mut self,
        envelope: &Envelope,
        candidate: &(String, Vec<String>),
    ) -> Result<Option<Decision>, CapabilityError> {
        let step = async {
            if let Some(decision) = self.catch_up(envelope, Some(&candidate.0)).await? {
                return Ok(Some(decision));
            }
            let tx = self.tx.as_mut().expect("catching up opened the transaction");
            tx.recipients.push(candidate.0.clone());
            let answer = self.session.rcpt(candidate).await?;
            if let Some(decision @ (Decision::Accept | Decision::Discard)) = &answer {
                tx.decided = Some(decision.clone());
            }
            Ok(answer)
        };
        step.await.map_err(|e| self.failed(e))
    }

    /// The message's end: shows the milter what it has not seen of the
    /// transaction, then the message (as it will be queued), and returns
    /// its decision and changes.
    pub async fn finish(&mut self, envelope: &Envelope, message: &[u8]) -> Result<Outcome, CapabilityError> {
        let step = async {
            let no_changes = |decision| Outcome {
                decision,
                changes: Vec::new(),
                body: None,
            };
            if let Some(decision) = self.catch_up(envelope, None).await? {
                return Ok(no_changes(decision));
            }
            let outcome = match self.session.message(message).await? {
                Some(decision) => no_changes(decision),
                None => self.session.end(envelope).await?,
            };
            if let Some(tx) = &mut self.tx {
                tx.ended = true;
            }
            Ok(outcome)
        };
        step.await.map_err(|e| self.failed(e))
    }

    /// Ends the conversation politely; a failure here changes nothing.
    pub async fn quit(mut self) {
        self.session.quit().await;
    }
}

/// A protocol failure, as the error's text.
type Failure = String;

/// What a milter answered to one step.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Go on (`SMFIR_CONTINUE`).
    Continue,
    /// Send no more of the body (`SMFIR_SKIP`).
    Skip,
    /// A decision: for the step (a recipient's refusal), the transaction or
    /// the connection, as the step it answers says.
    Decided(Decision),
    /// A change (only before the answer to the message's end).
    Change(Change),
    /// A chunk of a new body (`SMFIR_REPLBODY`; likewise).
    Body(Vec<u8>),
}

/// One connection to a milter, after option negotiation.
struct Session<S> {
    stream: S,
    /// The steps the milter does not want (`SMFIP_NO*`) and does not answer
    /// (`SMFIP_NR_*`).
    protocol: u32,
    /// The changes it said it may ask for.
    actions: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Offers the version, changes and steps, and reads what the milter
    /// takes of them.
    async fn negotiate(mut stream: S) -> Result<Self, Failure> {
        let mut offer = Vec::with_capacity(12);
        for word in [VERSION, ACTIONS, PROTOCOL] {
            offer.extend_from_slice(&word.to_be_bytes());
        }
        write_frame(&mut stream, b'O', &offer).await?;
        let (code, data) = read_frame(&mut stream).await.map_err(|e| {
            format!("{e} during option negotiation (does it need a change waraka does not offer: a new body, or recipients with parameters?)")
        })?;
        if code != b'O' || data.len() < 12 {
            return Err(format!("answered option negotiation with {:?}", code as char));
        }
        let word = |at: usize| u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let (version, actions, protocol) = (word(0), word(4), word(8));
        if !(2..=VERSION).contains(&version) {
            return Err(format!("speaks milter protocol version {version}"));
        }
        if protocol & !PROTOCOL != 0 {
            return Err(format!(
                "asks for protocol steps 0x{:x} waraka does not offer",
                protocol & !PROTOCOL
            ));
        }
        Ok(Session {
            stream,
            protocol,
            actions,
        })
    }

    /// Whether the milter asked for `flag`.
    fn has(&self, flag: u32) -> bool {
        self.protocol & flag != 0
    }

    /// The connection's steps: the client, then its HELO.
    async fn open(&mut self, envelope: &Envelope) -> Result<Option<Decision>, Failure> {
        let client = envelope.client;
        let client_name = format!("[{}]", client.ip());
        let macros = [
            ("j", envelope.hostname.clone()),
            ("{daemon_name}", "waraka".to_string()),
            ("{client_name}", client_name.clone()),
            ("_", format!("{client_name} [{}]", client.ip())),
            ("{client_addr}", client.ip().to_string()),
            ("{client_port}", client.port().to_string()),
            ("{if_addr}", envelope.local.ip().to_string()),
        ];
        self.send_macros(b'C', NO_CONNECT, &macros).await?;
        let mut connect = nul_terminated(&client_name);
        connect.push(if client.is_ipv4() { b'4' } else { b'6' });
        connect.extend_from_slice(&client.port().to_be_bytes());
        connect.extend(nul_terminated(&client.ip().to_string()));
        if let Some(decision) = self.step(b'C', &connect, NO_CONNECT, NO_REPLY_CONNECT).await? {
            return Ok(Some(decision));
        }
        match &envelope.helo {
            Some(helo) => self.step(b'H', &nul_terminated(helo), NO_HELO, NO_REPLY_HELO).await,
            None => Ok(None),
        }
    }

    /// The sender step.
    async fn mail(&mut self, envelope: &Envelope) -> Result<Option<Decision>, Failure> {
        let mut macros = vec![
            ("i", envelope.queue_id.clone()),
            ("{mail_addr}", envelope.sender.0.clone()),
        ];
        if let Some(user) = &envelope.user {
            macros.push(("{auth_authen}", user.clone()));
        }
        self.send_macros(b'M', NO_MAIL, &macros).await?;
        self.step(b'M', &path_args(&envelope.sender), NO_MAIL, NO_REPLY_MAIL)
            .await
    }

    /// One recipient's step.
    async fn rcpt(&mut self, recipient: &(String, Vec<String>)) -> Result<Option<Decision>, Failure> {
        self.send_macros(b'R', NO_RCPT, &[("{rcpt_addr}", recipient.0.clone())])
            .await?;
        self.step(b'R', &path_args(recipient), NO_RCPT, NO_REPLY_RCPT).await
    }

    /// The message's steps: DATA, the header fields, the body.
    async fn message(&mut self, message: &[u8]) -> Result<Option<Decision>, Failure> {
        if let Some(decision) = self.step(b'T', &[], NO_DATA, NO_REPLY_DATA).await? {
            return Ok(Some(decision));
        }
        let (header, body) = split_header(message);
        for (name, value) in header_fields(header) {
            let mut field = nul_terminated(&name);
            field.extend(nul_terminated(&value));
            if let Some(decision) = self.step(b'L', &field, NO_HEADERS, NO_REPLY_HEADER).await? {
                return Ok(Some(decision));
            }
        }
        if let Some(decision) = self.step(b'N', &[], NO_END_OF_HEADERS, NO_REPLY_END_OF_HEADERS).await? {
            return Ok(Some(decision));
        }
        if !self.has(NO_BODY) {
            for chunk in body.chunks(BODY_CHUNK) {
                write_frame(&mut self.stream, b'B', chunk).await?;
                if self.has(NO_REPLY_BODY) {
                    continue;
                }
                match self.answer().await? {
                    Answer::Continue => {}
                    Answer::Skip => break,
                    Answer::Decided(decision) => return Ok(Some(decision)),
                    Answer::Change(_) | Answer::Body(_) => {
                        return Err("sent a change before the message's end".into());
                    }
                }
            }
        }
        Ok(None)
    }

    /// The message's end: the changes the milter asks for, then its
    /// decision.
    async fn end(&mut self, envelope: &Envelope) -> Result<Outcome, Failure> {
        self.send_macros(b'E', 0, &[("i", envelope.queue_id.clone())]).await?;
        write_frame(&mut self.stream, b'E', &[]).await?;
        let mut changes = Vec::new();
        let mut body: Option<Vec<u8>> = None;
        let decision = loop {
            match self.answer().await? {
                Answer::Change(change) => changes.push(change),
                Answer::Body(chunk) => {
                    let body = body.get_or_insert_with(Vec::new);
                    if body.len() + chunk.len() > MAX_NEW_BODY {
                        return Err(format!("sent a new body over {MAX_NEW_BODY} bytes"));
                    }
                    body.extend_from_slice(&chunk);
                }
                Answer::Continue => break Decision::Accept,
                Answer::Decided(decision) => break decision,
                Answer::Skip => return Err("answered the message's end with SMFIR_SKIP".into()),
            }
        };
        Ok(Outcome {
            decision,
            changes,
            body: body.as_deref().map(crlf_lines),
        })
    }

    /// Ends the transaction the milter is in before its message's end
    /// (`SMFIC_ABORT`), so that the next sender starts a new one.
    async fn abort(&mut self) -> Result<(), Failure> {
        write_frame(&mut self.stream, b'A', &[]).await
    }

    /// Sends one step unless the milter asked not to see it (`skip`), and
    /// reads its answer unless it asked not to answer (`no_reply`): `None`
    /// to go on, or the milter's decision.
    async fn step(&mut self, code: u8, data: &[u8], skip: u32, no_reply: u32) -> Result<Option<Decision>, Failure> {
        if self.has(skip) {
            return Ok(None);
        }
        write_frame(&mut self.stream, code, data).await?;
        if self.has(no_reply) {
            return Ok(None);
        }
        match self.answer().await? {
            Answer::Continue => Ok(None),
            Answer::Decided(decision) => Ok(Some(decision)),
            Answer::Skip => Err(format!("answered {:?} with SMFIR_SKIP", code as char)),
            Answer::Change(_) | Answer::Body(_) => Err("sent a change before the message's end".into()),
        }
    }

    /// Sends macros for the step `code` (`SMFIC_MACRO`), unless the milter
    /// asked not to see that step (`skip`).
    async fn send_macros(&mut self, code: u8, skip: u32, macros: &[(&str, String)]) -> Result<(), Failure> {
        if self.has(skip) {
            return Ok(());
        }
        let mut data = vec![code];
        for (name, value) in macros {
            data.extend(nul_terminated(name));
            data.extend(nul_terminated(value));
        }
        write_frame(&mut self.stream, b'D', &data).await
    }

    /// The next answer, past progress reports (`SMFIR_PROGRESS`).
    async fn answer(&mut self) -> Result<Answer, Failure> {
        loop {
            let (code, data) = read_frame(&mut self.stream).await?;
            if code == b'p' {
                continue;
            }
            if let Some((_, action, what)) = CHANGE_ACTIONS.iter().find(|(c, _, _)| *c == code)
                && self.actions & action == 0
            {
                return Err(format!("asked to {what} without saying so in option negotiation"));
            }
            return parse_answer(code, &data);
        }
    }

    /// Ends the conversation politely; a failure here changes nothing.
    async fn quit(&mut self) {
        let _ = write_frame(&mut self.stream, b'Q', &[]).await;
    }
}

/// The NUL-terminated strings of an answer's data.
fn nul_strings(data: &[u8]) -> Result<Vec<String>, Failure> {
    let text = data.strip_suffix(b"\0").ok_or("a string without its NUL")?;
    Ok(text
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// An answer frame: its code and data.
fn parse_answer(code: u8, data: &[u8]) -> Result<Answer, Failure> {
    let strings = || nul_strings(data);
    let indexed = || -> Result<(u32, Vec<String>), Failure> {
        let (index, rest) = data.split_first_chunk::<4>().ok_or("a change without its index")?;
        Ok((u32::from_be_bytes(*index), nul_strings(rest)?))
    };
    let field = |index: u32, strings: Vec<String>| -> Result<HeaderField, Failure> {
        match <[String; 2]>::try_from(strings) {
            Ok([name, value]) => Ok(HeaderField {
                index,
                name,
                value: with_crlf(&value),
            }),
            Err(_) => Err("a header change without a name and a value".into()),
        }
    };
    Ok(match code {
        b'c' => Answer::Continue,
        b's' => Answer::Skip,
        b'a' => Answer::Decided(Decision::Accept),
        b'd' => Answer::Decided(Decision::Discard),
        b'r' => Answer::Decided(Decision::Reject(MilterReply {
            code: 550,
            enhanced: Some("5.7.1".into()),
            text: "Command rejected".into(),
        })),
        b't' => Answer::Decided(Decision::Tempfail(MilterReply {
            code: 451,
            enhanced: Some("4.7.1".into()),
            text: "Service unavailable - try again later".into(),
        })),
        b'y' => Answer::Decided(parse_reply_code(&strings()?.concat())?),
        b'h' => Answer::Change(Change::AddHeader(field(0, strings()?)?)),
        b'i' => {
            let (index, strings) = indexed()?;
            Answer::Change(Change::InsertHeader(field(index, strings)?))
        }
        b'm' => {
            let (index, strings) = indexed()?;
            Answer::Change(Change::ChangeHeader(field(index, strings)?))
        }
        b'+' => Answer::Change(Change::AddRecipient(bare_path(&strings()?.concat()))),
        b'-' => Answer::Change(Change::RemoveRecipient(bare_path(&strings()?.concat()))),
        b'e' => {
            let sender = strings()?.into_iter().next().unwrap_or_default();
            Answer::Change(Change::ChangeSender(bare_path(&sender)))
        }
        b'q' => Answer::Change(Change::Quarantine(strings()?.concat())),
        b'b' => Answer::Body(data.to_vec()),
        other => return Err(format!("sent {:?}, which waraka does not take", other as char)),
    })
}

/// `SMFIR_REPLYCODE`'s SMTP reply (`550 5.7.1 text`, lines of a
/// multi-line one joined with spaces) as a decision, read by the SMTP
/// reply parser the delivery client uses.
fn parse_reply_code(reply: &str) -> Result<Decision, Failure> {
    let unusable = || format!("asked for the reply {reply:?}, which has no 4xx or 5xx code");
    let lines = format!("{}\r\n", reply.trim_end().replace("\r\n", "\n").replace('\n', "\r\n"));
    let response = smtp_proto::response::parser::ResponseReceiver::default()
        .parse(&mut lines.as_bytes().iter())
        .map_err(|_| unusable())?;
    if !(400..600).contains(&response.code) {
        return Err(unusable());
    }
    let [class, subject, detail] = response.esc;
    let reply = MilterReply {
        code: response.code,
        enhanced: (class != 0).then(|| format!("{class}.{subject}.{detail}")),
        text: response.message.lines().map(str::trim).collect::<Vec<_>>().join(" "),
    };
    Ok(if reply.code >= 500 {
        Decision::Reject(reply)
    } else {
        Decision::Tempfail(reply)
    })
}

/// A path a milter names, without its angle brackets.
fn bare_path(path: &str) -> String {
    path.trim().trim_start_matches('<').trim_end_matches('>').to_string()
}

/// A milter's new body with CRLF lines, as messages are kept: a bare LF
/// (libmilter passes what the milter wrote) gets its CR.
fn crlf_lines(body: &[u8]) -> Vec<u8> {
    let mut lines = Vec::with_capacity(body.len() + body.len() / 32);
    let mut previous = 0u8;
    for &byte in body {
        if byte == b'\n' && previous != b'\r' {
            lines.push(b'\r');
        }
        lines.push(byte);
        previous = byte;
    }
    lines
}

/// A milter's `\n` folding as the `\r\n` of a header field.
fn with_crlf(value: &str) -> String {
    value.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// A string with the NUL the protocol ends it with.
fn nul_terminated(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

/// `<path>` and its ESMTP parameters, each NUL-terminated (`SMFIC_MAIL`,
/// `SMFIC_RCPT`).
fn path_args((path, params): &(String, Vec<String>)) -> Vec<u8> {
    let mut data = nul_terminated(&format!("<{path}>"));
    for param in params {
        data.extend(nul_terminated(param));
    }
    data
}

/// The header's fields as (name, value): the value without the space
/// after the colon, its folds as `\n` followed by their white space, as
/// Sendmail and Postfix hand them to milters.
fn header_fields(header: &[u8]) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in header.split(|b| *b == b'\n') {
        let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push('\n');
                value.push_str(&line);
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value);
            fields.push((name.trim_end().to_string(), value.to_string()));
        }
    }
    fields
}

/// Writes one frame: its length, its code and its data.
async fn write_frame(stream: &mut (impl AsyncWrite + Unpin), code: u8, data: &[u8]) -> Result<(), Failure> {
    let mut frame = Vec::with_capacity(5 + data.len());
    frame.extend_from_slice(&(data.len() as u32 + 1).to_be_bytes());
    frame.push(code);
    frame.extend_from_slice(data);
    stream.write_all(&frame).await.map_err(|e| format!("write: {e}"))
}

/// Reads one frame: its code and data.
async fn read_frame(stream: &mut (impl AsyncRead + Unpin)) -> Result<(u8, Vec<u8>), Failure> {
    let mut length = [0; 4];
    stream.read_exact(&mut length).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "closed the connection".to_string(),
        _ => format!("read: {e}"),
    })?;
    let length = u32::from_be_bytes(length) as usize;
    if length == 0 || length > MAX_FRAME {
        return Err(format!("sent a frame of {length} bytes"));
    }
    let mut frame = vec![0; length];
    stream.read_exact(&mut frame).await.map_err(|e| format!("read: {e}"))?;
    let code = frame.remove(0);
    Ok((code, frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_splits_into_fields_as_milters_read_them() {
        let message = b"Subject: hi\r\nTo: a@x.test,\r\n\tb@x.test\r\nX-Empty:\r\n\r\nbody\r\n";
        let (header, body) = split_header(message);
        assert_eq!(body, b"body\r\n");
        assert_eq!(
            header_fields(header),
            [
                ("Subject".to_string(), "hi".to_string()),
                ("To".into(), "a@x.test,\n\tb@x.test".into()),
                ("X-Empty".into(), "".into()),
            ]
        );
        assert_eq!(split_header(b"\r\nonly body"), (&b""[..], &b"only body"[..]));
        assert_eq!(split_header(b"A: b\r\n"), (&b"A: b\r\n"[..], &b""[..]));
    }

    #[test]
    fn answers_become_decisions_and_changes() {
        assert_eq!(parse_answer(b'c', b""), Ok(Answer::Continue));
        assert_eq!(parse_answer(b'a', b""), Ok(Answer::Decided(Decision::Accept)));
        assert_eq!(parse_answer(b'd', b""), Ok(Answer::Decided(Decision::Discard)));
        assert!(matches!(
            parse_answer(b'r', b""),
            Ok(Answer::Decided(Decision::Reject(MilterReply { code: 550, .. })))
        ));
        assert_eq!(
            parse_answer(b'y', b"554 5.7.1 bad signature data\0"),
            Ok(Answer::Decided(Decision::Reject(MilterReply {
                code: 554,
                enhanced: Some("5.7.1".into()),
                text: "bad signature data".into(),
            })))
        );
        assert_eq!(
            parse_answer(b'y', b"451 try later\0"),
            Ok(Answer::Decided(Decision::Tempfail(MilterReply {
                code: 451,
                enhanced: None,
                text: "try later".into(),
            })))
        );
        assert!(parse_answer(b'y', b"250 fine\0").is_err());
        assert_eq!(
            parse_answer(b'h', b"DKIM-Signature\0v=1; a=rsa-sha256;\n\tb=abc\0"),
            Ok(Answer::Change(Change::AddHeader(HeaderField {
                index: 0,
                name: "DKIM-Signature".into(),
                value: "v=1; a=rsa-sha256;\r\n\tb=abc".into(),
            })))
        );
        assert_eq!(
            parse_answer(b'm', b"\0\0\0\x02Subject\0\0"),
            Ok(Answer::Change(Change::ChangeHeader(HeaderField {
                index: 2,
                name: "Subject".into(),
                value: "".into(),
            })))
        );
        assert_eq!(
            parse_answer(b'+', b"<archive@x.test>\0"),
            Ok(Answer::Change(Change::AddRecipient("archive@x.test".into())))
        );
        assert_eq!(
            parse_answer(b'-', b"<gone@x.test>\0"),
            Ok(Answer::Change(Change::RemoveRecipient("gone@x.test".into())))
        );
        assert_eq!(
            parse_answer(b'e', b"<>\0"),
            Ok(Answer::Change(Change::ChangeSender(String::new())))
        );
        assert_eq!(
            parse_answer(b'e', b"<srs@x.test>\0SIZE=10\0"),
            Ok(Answer::Change(Change::ChangeSender("srs@x.test".into())))
        );
        assert!(parse_answer(b'h', b"no value\0").is_err());
        assert!(parse_answer(b'h', b"unterminated").is_err());
        assert_eq!(
            parse_answer(b'b', b"a new body\r\n"),
            Ok(Answer::Body(b"a new body\r\n".to_vec()))
        );
        assert_eq!(crlf_lines(b"one\r\ntwo\nthree"), b"one\r\ntwo\r\nthree");
    }

    /// A frame as a milter writes it.
    fn frame(code: u8, data: &[u8]) -> Vec<u8> {
        let mut bytes = (data.len() as u32 + 1).to_be_bytes().to_vec();
        bytes.push(code);
        bytes.extend_from_slice(data);
        bytes
    }

    /// Every frame the MTA side wrote, as (code, data).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while let Some((length, rest)) = bytes.split_first_chunk::<4>() {
            let length = u32::from_be_bytes(*length) as usize;
            frames.push((rest[0], rest[1..length].to_vec()));
            bytes = &rest[length..];
        }
        frames
    }

    /// A milter's answer to option negotiation.
    fn negotiation(actions: u32, protocol: u32) -> Vec<u8> {
        let words: Vec<u8> = [6, actions, protocol].iter().flat_map(|w| w.to_be_bytes()).collect();
        frame(b'O', &words)
    }

    fn envelope() -> Envelope {
        Envelope {
            hostname: "mx.test".into(),
            client: "192.0.2.7:4321".parse().unwrap(),
            local: "192.0.2.1:25".parse().unwrap(),
            helo: Some("client.test".into()),
            sender: ("a@x.test".into(), vec!["SIZE=42".into()]),
            recipients: vec![("b@y.test".into(), vec![]), ("c@y.test".into(), vec![])],
            queue_id: "Q1".into(),
            user: None,
        }
    }

    /// A conversation with the scripted milter at the other end of `mta`.
    async fn conversation(mta: tokio::io::DuplexStream, envelope: &Envelope) -> Conversation {
        let mut session = Session::negotiate(Box::new(mta) as Box<dyn ServiceStream>)
            .await
            .unwrap();
        let connection = session.open(envelope).await.unwrap();
        Conversation {
            address: "scripted".into(),
            session,
            connection,
            tx: None,
        }
    }

    /// Every frame the scripted milter was sent, once the conversation is over.
    async fn sent(conversation: Conversation, mut milter: tokio::io::DuplexStream) -> Vec<(u8, Vec<u8>)> {
        conversation.quit().await;
        let mut written = Vec::new();
        milter.read_to_end(&mut written).await.unwrap();
        frames(&written)
    }

    fn codes(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
        frames.iter().map(|(code, _)| *code).collect()
    }

    #[tokio::test]
    async fn the_milters_choices_of_steps_and_answers_are_followed() {
        // It skips HELO and the recipients, answers no header, and
        // reports progress before its answers.
        let mut script = negotiation(0x01, NO_HELO | NO_RCPT | NO_REPLY_HEADER);
        for _ in ["connect", "mail", "data", "end of headers", "body"] {
            script.extend(frame(b'p', b""));
            script.extend(frame(b'c', b""));
        }
        script.extend(frame(b'h', b"X-Scanned\0yes\0"));
        script.extend(frame(b'c', b""));
        let (mta, mut milter) = tokio::io::duplex(1 << 20);
        milter.write_all(&script).await.unwrap();
        let mut conversation = conversation(mta, &envelope()).await;
        let outcome = conversation
            .finish(&envelope(), b"Subject: s\r\n\r\nbody\r\n")
            .await
            .unwrap();
        assert_eq!(outcome.decision, Decision::Accept);
        assert_eq!(
            outcome.changes,
            [Change::AddHeader(HeaderField {
                index: 0,
                name: "X-Scanned".into(),
                value: "yes".into(),
            })]
        );
        let sent = sent(conversation, milter).await;
        assert_eq!(
            codes(&sent),
            b"ODCDMTLNBDEQ",
            "no HELO, no RCPT, one of each other step"
        );
        assert_eq!(sent[2].1, b"[192.0.2.7]\x004\x10\xe1192.0.2.7\0");
        assert_eq!(sent[4].1, b"<a@x.test>\0SIZE=42\0");
        assert_eq!(sent[6].1, b"Subject\0s\0");
        assert_eq!(sent[8].1, b"body\r\n");
    }

    #[tokio::test]
    async fn a_live_conversation_answers_each_step_and_aborts_a_transaction_left_unfinished() {
        let mut script = negotiation(0x01, NO_DATA | NO_HEADERS | NO_END_OF_HEADERS | NO_BODY);
        // The client, HELO, sender, two recipients; the second
        // transaction's sender, its recipient and end.
        let answers = [
            &b"c"[..],
            b"c",
            b"c",
            b"y452 4.2.2 Mailbox full\0",
            b"c",
            b"c",
            b"c",
            b"c",
        ];
        for answer in answers {
            script.extend(frame(answer[0], &answer[1..]));
        }
        let (mta, milter) = tokio::io::duplex(1 << 20);
        let (mut milter_reads, mut milter_writes) = tokio::io::split(milter);
        milter_writes.write_all(&script).await.unwrap();
        let mut first = envelope();
        first.recipients.clear();
        let mut conversation = conversation(mta, &first).await;
        assert_eq!(conversation.sender(&first).await.unwrap(), None);
        first.recipients.push(("full@y.test".into(), vec![]));
        assert_eq!(
            conversation
                .recipient(&first, &first.recipients[0].clone())
                .await
                .unwrap(),
            Some(Decision::Tempfail(MilterReply {
                code: 452,
                enhanced: Some("4.2.2".into()),
                text: "Mailbox full".into(),
            })),
            "this recipient only"
        );
        first.recipients.push(("b@y.test".into(), vec![]));
        first.recipients.remove(0);
        assert_eq!(
            conversation
                .recipient(&first, &first.recipients[0].clone())
                .await
                .unwrap(),
            None
        );
        // The client gave up after RCPT and started again: the first
        // transaction is aborted, the second one starts with its sender.
        let second = Envelope {
            queue_id: "Q2".into(),
            ..first.clone()
        };
        let outcome = conversation.finish(&second, b"\r\n").await.unwrap();
        assert_eq!(outcome.decision, Decision::Accept);
        conversation.quit().await;
        let mut written = Vec::new();
        milter_reads.read_to_end(&mut written).await.unwrap();
        let sent = frames(&written);
        assert_eq!(codes(&sent), b"ODCHDMDRDRADMDRDEQ");
    }

    #[tokio::test]
    async fn a_change_it_did_not_declare_is_an_error() {
        let everything = NO_CONNECT | NO_HELO | NO_MAIL | NO_RCPT | NO_DATA | NO_HEADERS | NO_END_OF_HEADERS | NO_BODY;
        let mut script = negotiation(0x01, everything);
        script.extend(frame(b'+', b"<x@y.test>\0"));
        let (mta, mut milter) = tokio::io::duplex(1 << 20);
        milter.write_all(&script).await.unwrap();
        let error = conversation(mta, &envelope())
            .await
            .finish(&envelope(), b"\r\n")
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("add a recipient without saying so"),
            "{error}"
        );
    }

    #[test]
    fn parameters_follow_the_path() {
        let sender = ("a@x.test".to_string(), vec!["SIZE=10".to_string()]);
        assert_eq!(path_args(&sender), b"<a@x.test>\0SIZE=10\0");
        assert_eq!(path_args(&(String::new(), vec![])), b"<>\0");
    }

    #[test]
    fn postfix_style_addresses_are_taken() {
        assert_eq!(Milter::new("inet:127.0.0.1:8891").address, "127.0.0.1:8891");
        assert_eq!(Milter::new("unix:/run/milter.sock").address, "/run/milter.sock");
        assert_eq!(Milter::new("127.0.0.1:8891").address, "127.0.0.1:8891");
        assert_eq!(Milter::new("inet:8891@127.0.0.1").address, "127.0.0.1:8891");
    }
}
