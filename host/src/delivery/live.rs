//! A session with another SMTP server that follows a client's transaction
//! command by command while the client waits — a before-queue proxy
//! (Postfix's `smtpd_proxy_filter`, Haraka's `queue/smtp_proxy`): the
//! server's replies to MAIL, RCPT and the message are the client's.

use std::time::Duration;

use tokio::io::AsyncRead;
use waraka_protocol::DsnRequests;

use super::client::{Connection, offers};
use super::route::Address;
use super::{ClientError, ClientSettings, RemoteReply};

/// The transaction open at the server: what MAIL and the accepted RCPTs gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Open {
    /// The client's transaction it stands for.
    transaction: String,
    sender: String,
    recipients: Vec<String>,
}

/// The envelope a transaction must have at the server when its message goes.
pub struct LiveEnvelope<'a> {
    /// The client's transaction.
    pub transaction: &'a str,
    /// The sender (`local@domain`, empty for `<>`).
    pub sender: &'a str,
    /// The recipients (`local@domain`), as they are now.
    pub recipients: &'a [String],
    /// DSN requests, passed on when the server offers DSN.
    pub dsn: &'a DsnRequests,
}

/// An open session with the server, between a client's transactions or in one.
pub struct LiveSession {
    /// `None` only while it is being dropped.
    conn: Option<Connection>,
    extensions: Vec<String>,
    data_timeout: Duration,
    open: Option<Open>,
}

impl LiveSession {
    /// Connects to `addr` and opens the session (greeting, EHLO, STARTTLS
    /// and AUTH as `settings` say).
    pub async fn open(addr: &Address, host: &str, settings: &ClientSettings) -> Result<LiveSession, ClientError> {
        let (conn, extensions, _) = Connection::open(addr, host, settings).await?;
        Ok(LiveSession {
            conn: Some(conn),
            extensions,
            data_timeout: settings.data_timeout,
            open: None,
        })
    }

    fn conn(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("the connection is only taken when dropped")
    }

    /// Whether the server takes DSN requests (they were passed on).
    pub fn passes_dsn(&self) -> bool {
        offers(&self.extensions, "DSN")
    }

    /// Whether the server has a transaction open for the client's `transaction`.
    pub fn is_open_for(&self, transaction: &str) -> bool {
        self.open.as_ref().is_some_and(|open| open.transaction == transaction)
    }

    /// Sends `line` and reads its reply.
    async fn ask(&mut self, line: String, stage: &'static str) -> Result<RemoteReply, ClientError> {
        self.conn().write(format!("{line}\r\n").as_bytes(), stage).await?;
        self.conn().reply(stage).await
    }

    /// Starts the client's `transaction` from `sender` at the server (an
    /// open one is reset first); the MAIL reply.
    pub async fn mail(
        &mut self,
        transaction: &str,
        sender: &str,
        dsn: &DsnRequests,
    ) -> Result<RemoteReply, ClientError> {
        self.reset().await?;
        let mut line = format!("MAIL FROM:<{sender}>");
        if !sender.is_ascii() && offers(&self.extensions, "SMTPUTF8") {
            line.push_str(" SMTPUTF8");
        }
        if offers(&self.extensions, "DSN") {
            line.push_str(&dsn.message.mail_params());
        }
        let reply = self.ask(line, "MAIL").await?;
        if reply.is_positive() {
            self.open = Some(Open {
                transaction: transaction.to_string(),
                sender: sender.to_string(),
                recipients: Vec::new(),
            });
        }
        Ok(reply)
    }

    /// Gives the open transaction `recipient`; the RCPT reply.
    pub async fn rcpt(&mut self, recipient: &str, dsn: &DsnRequests) -> Result<RemoteReply, ClientError> {
        let mut line = format!("RCPT TO:<{recipient}>");
        if offers(&self.extensions, "DSN") {
            line.push_str(&dsn.recipient(recipient).rcpt_params());
        }
        let reply = self.ask(line, "RCPT").await?;
        if reply.is_positive()
            && let Some(open) = &mut self.open
        {
            open.recipients.push(recipient.to_string());
        }
        Ok(reply)
    }

    /// Sends `message` for `envelope`; the server's reply to it. When the
    /// open transaction is not that envelope (a plugin changed the sender
    /// or the recipients since), it is started again as the envelope is
    /// now, and a refusal of its MAIL or of any RCPT is the reply: SMTP has
    /// one reply for the whole message.
    pub async fn data(
        &mut self,
        envelope: LiveEnvelope<'_>,
        message: impl AsyncRead + Unpin,
    ) -> Result<RemoteReply, ClientError> {
        let wanted = Open {
            transaction: envelope.transaction.to_string(),
            sender: envelope.sender.to_string(),
            recipients: envelope.recipients.to_vec(),
        };
        let same = |open: &Open| {
            let (mut have, mut want) = (open.recipients.clone(), wanted.recipients.clone());
            have.sort();
            want.sort();
            open.transaction == wanted.transaction && open.sender == wanted.sender && have == want
        };
        if !self.open.as_ref().is_some_and(same) {
            let reply = self.mail(envelope.transaction, envelope.sender, envelope.dsn).await?;
            if !reply.is_positive() {
                return Ok(reply);
            }
            for recipient in envelope.recipients {
                let reply = self.rcpt(recipient, envelope.dsn).await?;
                if !reply.is_positive() {
                    self.reset().await?;
                    return Ok(reply);
                }
            }
        }
        let reply = self.ask("DATA".into(), "DATA").await?;
        if reply.code != 354 {
            self.reset().await?;
            return Ok(reply);
        }
        self.open = None;
        self.conn().send_message(message).await?;
        let timeout = self.data_timeout;
        self.conn().reply_within("message", timeout).await
    }

    /// Ends the open transaction at the server (RSET), if there is one.
    pub async fn reset(&mut self) -> Result<(), ClientError> {
        if self.open.take().is_some() {
            self.ask("RSET".into(), "RSET").await?;
        }
        Ok(())
    }
}

impl Drop for LiveSession {
    /// Says QUIT in the background: the client's connection ended.
    fn drop(&mut self) {
        if let (Some(mut conn), Ok(runtime)) = (self.conn.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move { conn.quit().await });
        }
    }
}
