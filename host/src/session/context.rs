//! What the session knows about a connection and its transaction. It is
//! shared (behind a mutex) with the policy so plugins can read and edit it;
//! nobody holds the lock across an `await`.

use super::message::Message;
use crate::capabilities::{Authentication, NoteLimits, NoteStore};
use crate::protocol::Address;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// TLS facts visible to plugins.
#[derive(Clone, Debug, Default)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
    pub sni: Option<String>,
}

/// One open transaction (MAIL until reset).
pub struct Transaction {
    pub id: String,
    pub sender: Address,
    pub recipients: Vec<Address>,
    pub message: Option<Message>,
    pub notes: NoteStore,
    /// SPF/DKIM/DMARC results, once a plugin asked for them.
    pub authentication: Option<Arc<Authentication>>,
}

/// One client connection.
pub struct Connection {
    pub id: String,
    /// The role of the listener the client reached.
    pub role: super::Role,
    /// Whether STARTTLS can be offered (the listener has a certificate and is not TLS already).
    pub starttls_available: bool,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub hostname: String,
    pub helo: Option<String>,
    pub esmtp: bool,
    pub tls: Option<TlsInfo>,
    pub auth_user: Option<String>,
    pub relaying: bool,
    pub early_talker: bool,
    pub notes: NoteStore,
    pub transaction: Option<Transaction>,
    pub note_limits: NoteLimits,
}

impl Connection {
    /// A fresh connection with a new id.
    pub fn new(peer: SocketAddr, local: SocketAddr, hostname: &str, note_limits: NoteLimits) -> Self {
        Connection {
            id: uuid::Uuid::new_v4().simple().to_string().to_uppercase()[..16].to_string(),
            role: super::Role::Mx,
            starttls_available: false,
            peer,
            local,
            hostname: hostname.to_string(),
            helo: None,
            esmtp: false,
            tls: None,
            auth_user: None,
            relaying: false,
            early_talker: false,
            notes: NoteStore::new(note_limits),
            transaction: None,
            note_limits,
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
