//! The host side of the always-granted imports (`log`, `notes`, `config`,
//! `session`, `envelope`, `message`) and conversions between WIT and core types.

use super::bindings::types::{self, Error, Scope};
use super::bindings::waraka::plugin::{config, envelope, log, message, notes, session};
use super::store::StoreState;
use crate::capabilities::{ConfigError, NoteError, NoteStore};
use crate::policy::Verdict;
use crate::protocol::{Address, Param, Reply};
use crate::session::{Connection, Transaction};

/// Longest log line a plugin may write.
const MAX_LOG_LINE: usize = 4096;
/// Largest chunk `message.read` returns.
const MAX_READ: u32 = 1024 * 1024;

pub fn address_to_wit(a: &Address) -> types::Address {
    types::Address {
        local_part: a.local_part.clone(),
        domain: a.domain.clone(),
        params: a
            .params
            .iter()
            .map(|p| types::Param {
                key: p.key.clone(),
                value: p.value.clone(),
            })
            .collect(),
    }
}

/// An address from a plugin, refused (`invalid`) where the protocol would
/// refuse it (`<>` unless `allow_null`).
fn address_from_wit(a: types::Address, allow_null: bool) -> Result<Address, Error> {
    let address = Address {
        local_part: a.local_part,
        domain: a.domain,
        params: a
            .params
            .into_iter()
            .map(|p| Param {
                key: p.key.to_ascii_uppercase(),
                value: p.value,
            })
            .collect(),
    };
    // Re-parse the rendered path so a plugin cannot store an address the protocol would refuse.
    Address::parse_with_params(&format!("<{}>", address.addr_spec()), allow_null)
        .map_err(|e| Error::Invalid(format!("{address}: {e}")))?;
    Ok(address)
}

fn reply_from_wit(r: Option<types::Reply>) -> Option<Reply> {
    r.map(|r| Reply {
        code: r.code,
        enhanced: r.enhanced,
        lines: r.lines,
    })
}

fn reply_to_wit(r: Option<&Reply>) -> Option<types::Reply> {
    r.map(|r| types::Reply {
        code: r.code,
        enhanced: r.enhanced.clone(),
        lines: r.lines.clone(),
    })
}

pub fn verdict_from_wit(v: types::Verdict) -> Verdict {
    use types::Verdict as W;
    match v {
        W::Cont => Verdict::Cont,
        W::Ok(r) => Verdict::Ok(reply_from_wit(r)),
        W::Deny(r) => Verdict::Deny(reply_from_wit(r)),
        W::Denysoft(r) => Verdict::Denysoft(reply_from_wit(r)),
        W::DenyDisconnect(r) => Verdict::DenyDisconnect(reply_from_wit(r)),
        W::DenysoftDisconnect(r) => Verdict::DenysoftDisconnect(reply_from_wit(r)),
        W::Disconnect(r) => Verdict::Disconnect(reply_from_wit(r)),
    }
}

pub fn verdict_to_wit(v: &Verdict) -> types::Verdict {
    use types::Verdict as W;
    let r = reply_to_wit(v.reply());
    match v {
        Verdict::Cont => W::Cont,
        Verdict::Ok(_) => W::Ok(r),
        Verdict::Deny(_) => W::Deny(r),
        Verdict::Denysoft(_) => W::Denysoft(r),
        Verdict::DenyDisconnect(_) => W::DenyDisconnect(r),
        Verdict::DenysoftDisconnect(_) => W::DenysoftDisconnect(r),
        Verdict::Disconnect(_) => W::Disconnect(r),
    }
}

fn note_error(e: NoteError) -> Error {
    Error::Limit(e.to_string())
}

fn config_error(e: ConfigError) -> Error {
    match e {
        ConfigError::NotOwned(_) => Error::NotGranted,
        ConfigError::BadName(_) => Error::Invalid(e.to_string()),
        ConfigError::Io { .. } => Error::Backend(e.to_string()),
    }
}

impl StoreState {
    /// Runs `f` on the connection, or returns `default` outside a connection.
    fn with_conn<T>(&self, default: T, f: impl FnOnce(&mut Connection) -> T) -> T {
        match &self.host.conn {
            Some(conn) => f(&mut conn.lock()),
            None => default,
        }
    }

    /// Runs `f` on the transaction once its message is in (from `data-post`
    /// on); `invalid` before.
    fn with_message_transaction(&self, f: impl FnOnce(&mut Transaction) -> Result<(), Error>) -> Result<(), Error> {
        let before = || Error::Invalid("there is no message yet (this works from data-post on)".into());
        self.with_conn(Err(before()), |c| match c.transaction.as_mut() {
            Some(tx) if tx.message.is_some() => f(tx),
            _ => Err(before()),
        })
    }

    /// Runs `f` on the note store of a scope.
    fn with_notes<T>(&self, scope: Scope, default: T, f: impl FnOnce(&mut NoteStore) -> T) -> T {
        match scope {
            Scope::Server => f(&mut self
                .host
                .services
                .server_notes
                .lock()
                .unwrap_or_else(|e| e.into_inner())),
            Scope::Connection => self.with_conn(default, |c| f(&mut c.notes)),
            Scope::Transaction => {
                let Some(conn) = &self.host.conn else {
                    return default;
                };
                let mut conn = conn.lock();
                match conn.transaction.as_mut() {
                    Some(tx) => f(&mut tx.notes),
                    None => default,
                }
            }
        }
    }

    fn with_message<T>(&self, default: T, f: impl FnOnce(&mut crate::session::Message) -> T) -> T {
        let Some(conn) = &self.host.conn else {
            return default;
        };
        let mut conn = conn.lock();
        match conn.transaction.as_mut().and_then(|tx| tx.message.as_mut()) {
            Some(m) => f(m),
            None => default,
        }
    }
}

impl types::Host for StoreState {}

impl log::Host for StoreState {
    fn log(&mut self, level: log::Level, message: String) {
        let mut end = message.len().min(MAX_LOG_LINE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let text = &message[..end];
        let plugin = &*self.host.plugin;
        if !self.log_budget.take(plugin) {
            return;
        }
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{text}"),
            log::Level::Debug => tracing::debug!(plugin, "{text}"),
            log::Level::Info => tracing::info!(plugin, "{text}"),
            log::Level::Warn => tracing::warn!(plugin, "{text}"),
            log::Level::Error => tracing::error!(plugin, "{text}"),
        }
    }
}

impl notes::Host for StoreState {
    fn get(&mut self, scope: Scope, key: String) -> Option<String> {
        self.with_notes(scope, None, |n| n.get(&key).map(str::to_string))
    }

    fn set(&mut self, scope: Scope, key: String, value: String) -> Result<(), Error> {
        let none = Err(Error::Invalid("no such scope now".into()));
        self.with_notes(scope, none, |n| n.set(&key, &value).map_err(note_error))
    }

    fn remove(&mut self, scope: Scope, key: String) -> bool {
        self.with_notes(scope, false, |n| n.remove(&key))
    }

    fn keys(&mut self, scope: Scope) -> Vec<String> {
        self.with_notes(scope, Vec::new(), |n| n.keys())
    }
}

impl config::Host for StoreState {
    fn read(&mut self, name: String) -> Result<Option<String>, Error> {
        self.host
            .services
            .config
            .read(&self.host.plugin, &name)
            .map_err(config_error)
    }

    fn lines(&mut self, name: String) -> Result<Vec<String>, Error> {
        self.host
            .services
            .config
            .lines(&self.host.plugin, &name)
            .map_err(config_error)
    }
}

impl session::Host for StoreState {
    fn connection_id(&mut self) -> String {
        self.with_conn(String::new(), |c| c.id.clone())
    }
    fn transaction_id(&mut self) -> Option<String> {
        self.with_conn(None, |c| c.transaction.as_ref().map(|t| t.id.clone()))
    }
    fn peer_ip(&mut self) -> String {
        self.with_conn(String::new(), |c| c.peer.ip().to_string())
    }
    fn peer_port(&mut self) -> u16 {
        self.with_conn(0, |c| c.peer.port())
    }
    fn local_ip(&mut self) -> String {
        self.with_conn(String::new(), |c| c.local.ip().to_string())
    }
    fn local_port(&mut self) -> u16 {
        self.with_conn(0, |c| c.local.port())
    }
    fn hostname(&mut self) -> String {
        self.with_conn(String::new(), |c| c.hostname.clone())
    }
    fn helo(&mut self) -> Option<String> {
        self.with_conn(None, |c| c.helo.clone())
    }
    fn esmtp(&mut self) -> bool {
        self.with_conn(false, |c| c.esmtp)
    }
    fn tls_version(&mut self) -> Option<String> {
        self.with_conn(None, |c| c.tls.as_ref().map(|t| t.version.clone()))
    }
    fn tls_cipher(&mut self) -> Option<String> {
        self.with_conn(None, |c| c.tls.as_ref().map(|t| t.cipher.clone()))
    }
    fn tls_sni(&mut self) -> Option<String> {
        self.with_conn(None, |c| c.tls.as_ref().and_then(|t| t.sni.clone()))
    }
    fn tls_client_fingerprint(&mut self) -> Option<String> {
        self.with_conn(None, |c| c.tls.as_ref().and_then(|t| t.client_fingerprint.clone()))
    }
    fn auth_user(&mut self) -> Option<String> {
        self.with_conn(None, |c| c.auth_user.clone())
    }
    fn relaying(&mut self) -> bool {
        self.with_conn(false, |c| c.relaying)
    }
    fn set_relaying(&mut self, relaying: bool) {
        let plugin = self.host.plugin.clone();
        self.with_conn((), |c| {
            if c.relaying != relaying {
                tracing::info!(plugin = %plugin, relaying, "relaying changed by plugin");
            }
            c.relaying = relaying;
        })
    }
    fn early_talker(&mut self) -> bool {
        self.with_conn(false, |c| c.early_talker)
    }
}

impl envelope::Host for StoreState {
    fn sender(&mut self) -> Option<types::Address> {
        self.with_conn(None, |c| c.transaction.as_ref().map(|t| address_to_wit(&t.sender)))
    }

    fn recipients(&mut self) -> Vec<types::Address> {
        self.with_conn(Vec::new(), |c| {
            c.transaction
                .as_ref()
                .map(|t| t.recipients.iter().map(address_to_wit).collect())
                .unwrap_or_default()
        })
    }

    fn set_recipient(&mut self, index: u32, recipient: types::Address) -> Result<(), Error> {
        let recipient = address_from_wit(recipient, false)?;
        let none = Err(Error::Invalid("no transaction".into()));
        self.with_conn(none, |c| {
            let tx = c.transaction.as_mut().ok_or(Error::Invalid("no transaction".into()))?;
            let slot = tx.recipients.get_mut(index as usize).ok_or(Error::NotFound)?;
            *slot = recipient;
            Ok(())
        })
    }

    fn set_sender(&mut self, sender: types::Address) -> Result<(), Error> {
        let sender = address_from_wit(sender, true)?;
        self.with_message_transaction(|tx| {
            tx.sender = sender;
            Ok(())
        })
    }

    fn remove_recipient(&mut self, index: u32) -> Result<(), Error> {
        self.with_message_transaction(|tx| {
            if index as usize >= tx.recipients.len() {
                return Err(Error::NotFound);
            }
            if tx.recipients.len() == 1 {
                return Err(Error::Invalid(
                    "the last recipient stays: refuse or discard the message instead".into(),
                ));
            }
            tx.recipients.remove(index as usize);
            Ok(())
        })
    }

    fn add_recipient(&mut self, recipient: types::Address) -> Result<(), Error> {
        let recipient = address_from_wit(recipient, false)?;
        let none = Err(Error::Invalid("no transaction".into()));
        self.with_conn(none, |c| {
            let max = c.max_recipients;
            let tx = c.transaction.as_mut().ok_or(Error::Invalid("no transaction".into()))?;
            let spec = recipient.addr_spec();
            if tx.recipients.iter().any(|r| r.addr_spec().eq_ignore_ascii_case(&spec)) {
                return Ok(());
            }
            if tx.recipients.len() >= max {
                return Err(Error::Limit(format!("max_recipients ({max}) reached")));
            }
            tx.recipients.push(recipient);
            Ok(())
        })
    }

    fn forwarded(&mut self) -> Vec<String> {
        self.with_conn(Vec::new(), |c| {
            let Some(tx) = c.transaction.as_ref() else {
                return Vec::new();
            };
            // A mark follows its address: one rewritten since is not forwarded.
            tx.recipients
                .iter()
                .filter(|r| tx.is_forwarded(r))
                .map(|r| r.addr_spec())
                .collect()
        })
    }
}

impl message::Host for StoreState {
    fn size(&mut self) -> u64 {
        self.with_message(0, |m| m.size())
    }

    fn read(&mut self, offset: u64, max: u32) -> Result<Vec<u8>, Error> {
        let chunk = self.with_message(Ok(Vec::new()), |m| {
            m.read(offset, max.min(MAX_READ) as usize)
                .map_err(|e| Error::Backend(e.to_string()))
        })?;
        crate::plugins::trace_guest_bytes("message.read", chunk.len());
        Ok(chunk)
    }

    fn headers(&mut self) -> Vec<(String, String)> {
        self.with_message(Vec::new(), |m| m.headers())
    }

    fn header(&mut self, name: String) -> Vec<String> {
        self.with_message(Vec::new(), |m| m.header(&name))
    }

    fn header_decoded(&mut self, name: String) -> Vec<String> {
        self.with_message(Vec::new(), |m| m.header_decoded(&name))
    }

    fn add_header(&mut self, name: String, value: String) -> Result<(), Error> {
        self.insert_header(0, name, value)
    }

    fn insert_header(&mut self, position: u32, name: String, value: String) -> Result<(), Error> {
        let none = Err(Error::Invalid("no message yet".into()));
        self.with_message(none, |m| {
            m.insert_header(position, &name, &value)
                .map_err(|e| Error::Invalid(e.to_string()))
        })
    }

    fn replace_header_at(&mut self, name: String, index: u32, value: String) -> Result<bool, Error> {
        self.with_message(Ok(false), |m| {
            m.replace_header_at(&name, index, &value)
                .map_err(|e| Error::Invalid(e.to_string()))
        })
    }

    fn remove_header(&mut self, name: String) -> u32 {
        self.with_message(0, |m| m.remove_header(&name))
    }

    fn remove_header_at(&mut self, name: String, index: u32) -> bool {
        self.with_message(false, |m| m.remove_header_at(&name, index))
    }
}
