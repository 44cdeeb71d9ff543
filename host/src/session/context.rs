//! What the session knows about a connection and its transaction. It is
//! shared (behind a mutex) with the policy so plugins can read and edit it;
//! nobody holds the lock across an `await`.

use super::message::Message;
use crate::capabilities::{Authentication, NoteLimits, NoteStore};
use crate::protocol::{Address, DsnRequests, MessageRequest, RecipientRequest, TLS_REQUIRED_HEADER, TlsRequest};
use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// TLS facts visible to plugins.
#[derive(Clone, Debug, Default)]
pub struct TlsInfo {
    /// The protocol version (`TLSv1.3`).
    pub version: String,
    /// The cipher suite.
    pub cipher: String,
    /// The server name the client asked for.
    pub sni: Option<String>,
    /// The SHA-256 fingerprint of the certificate the client presented
    /// (`AB:CD:…`), when it was asked for one and sent it.
    pub client_fingerprint: Option<String>,
}

/// One open transaction (MAIL until reset).
pub struct Transaction {
    /// The transaction id, which is also the queue id of its message.
    pub id: String,
    /// The reverse-path from `MAIL FROM`.
    pub sender: Address,
    /// The accepted recipients, in order.
    pub recipients: Vec<Address>,
    /// The message, once DATA has ended.
    pub message: Option<Message>,
    /// Notes with the `transaction` scope.
    pub notes: NoteStore,
    /// SPF/DKIM/DMARC results, once a plugin asked for them.
    pub authentication: Option<Arc<Authentication>>,
    /// Recipients a plugin forwarded to another server (the `forward`
    /// capability), for the success notices they asked for.
    pub handed_on: Vec<HandedOn>,
    /// Recipients (`local@domain`) a plugin marked as forwarded elsewhere
    /// (an alias whose target is in another domain): at queue time they go
    /// to the outbound queue, and the queue hook sees only the others.
    pub forwarded: Vec<String>,
}

/// A recipient a plugin forwarded to another server, which accepted it.
#[derive(Clone, Debug)]
pub struct HandedOn {
    /// The recipient as `local@domain`.
    pub recipient: String,
    /// The server it went to.
    pub host: String,
    /// The server's reply to the message.
    pub reply: String,
    /// Whether the server took the DSN requests on (it offers DSN).
    pub dsn_passed: bool,
}

impl Transaction {
    /// Whether `recipient` was marked as forwarded (by its `local@domain`).
    pub fn is_forwarded(&self, recipient: &Address) -> bool {
        let spec = recipient.addr_spec();
        self.forwarded.contains(&spec)
    }

    /// Drops the recipients from `count` on (a refused candidate and what
    /// plugins added for it), with their forwarding marks.
    pub fn truncate_recipients(&mut self, count: usize) {
        self.recipients.truncate(count);
        let kept: Vec<String> = self.recipients.iter().map(Address::addr_spec).collect();
        self.forwarded.retain(|f| kept.contains(f));
    }

    /// The DSN requests of the sender and the recipients (their parameters
    /// were checked when the commands were accepted).
    pub fn dsn_requests(&self) -> DsnRequests {
        DsnRequests {
            message: MessageRequest::from_mail(&self.sender).unwrap_or_default(),
            recipients: self
                .recipients
                .iter()
                .filter_map(|r| {
                    let request = RecipientRequest::from_rcpt(r).ok().filter(|q| !q.is_empty())?;
                    Some((r.addr_spec(), request))
                })
                .collect(),
        }
    }

    /// What the sender asked of TLS on the way on: `REQUIRETLS` on MAIL, or
    /// a `TLS-Required: No` header field in the message (RFC 8689).
    pub fn tls_request(&self) -> TlsRequest {
        let header = self
            .message
            .as_ref()
            .map(|m| m.header(TLS_REQUIRED_HEADER))
            .unwrap_or_default();
        TlsRequest::of(&self.sender, header.iter().map(String::as_str))
    }
}

/// One client connection.
pub struct Connection {
    /// The connection id, in every log line of it.
    pub id: String,
    /// The role of the listener the client reached.
    pub role: super::Role,
    /// Whether STARTTLS can be offered (the listener has a certificate and is not TLS already).
    pub starttls_available: bool,
    /// Whether the client is a front end the listener trusts to name the
    /// client it speaks for (`XCLIENT`, `xclient_from`); once, until it has.
    pub xclient_allowed: bool,
    /// The client's address.
    pub peer: SocketAddr,
    /// The address the client reached.
    pub local: SocketAddr,
    /// This server's name.
    pub hostname: String,
    /// The HELO/EHLO name, once given.
    pub helo: Option<String>,
    /// Whether the client greeted with EHLO.
    pub esmtp: bool,
    /// Set once TLS is up.
    pub tls: Option<TlsInfo>,
    /// The authenticated user, after a successful AUTH.
    pub auth_user: Option<String>,
    /// The local user whose program submitted the mail over the local
    /// submission socket (`waraka sendmail`); `None` over the network.
    pub local_user: Option<String>,
    /// Whether this session may relay (a plugin said so, or it authenticated).
    pub relaying: bool,
    /// Whether the client talked before the greeting.
    pub early_talker: bool,
    /// Notes with the `connection` scope.
    pub notes: NoteStore,
    /// The open transaction, between MAIL and its end.
    pub transaction: Option<Transaction>,
    /// The limits every note store of this connection has.
    pub note_limits: NoteLimits,
    /// The most recipients a transaction may have (`max_recipients`).
    pub max_recipients: usize,
    /// The host's outbound queue, for relayed mail no plugin queued and for
    /// queue plugins that hand mail to it; `None` when delivery is off.
    pub outbound: Option<Arc<dyn super::OutboundQueue>>,
    /// What capabilities keep for the whole connection (a milter's
    /// conversation), by their own keys; dropped with the connection, and
    /// when XCLIENT names another client.
    pub capability_state: HashMap<String, Box<dyn Any + Send>>,
}

impl Connection {
    /// A fresh connection with a new id.
    pub fn new(peer: SocketAddr, local: SocketAddr, hostname: &str, note_limits: NoteLimits) -> Self {
        Connection {
            id: uuid::Uuid::new_v4().simple().to_string().to_uppercase()[..16].to_string(),
            role: super::Role::Mx,
            starttls_available: false,
            xclient_allowed: false,
            peer,
            local,
            hostname: hostname.to_string(),
            helo: None,
            esmtp: false,
            tls: None,
            auth_user: None,
            local_user: None,
            relaying: false,
            early_talker: false,
            notes: NoteStore::new(note_limits),
            transaction: None,
            note_limits,
            max_recipients: 100,
            outbound: None,
            capability_state: HashMap::new(),
        }
    }
}

/// The connection shared between the session and its policy.
#[derive(Clone)]
pub struct SharedConnection(Arc<Mutex<Connection>>);

impl SharedConnection {
    /// Shares a connection.
    pub fn new(conn: Connection) -> Self {
        SharedConnection(Arc::new(Mutex::new(conn)))
    }

    /// Locks the connection. A poisoned lock (a panic elsewhere) still yields the data.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
