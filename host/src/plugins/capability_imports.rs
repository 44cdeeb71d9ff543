//! The host side of the granted capabilities (`kv`, `dns`, `blobstore`,
//! `files`, `sql`, `forward`, `outbound-queue`, `authentication`, …): every call checks
//! the plugin's grants first (`not-granted` otherwise, never a trap) and is
//! cut off at the plugin's deadline (`timeout`), so a slow backend costs the
//! calling plugin its own time budget and nothing more.

use super::Backends;
use super::bindings::types::{self, Error};
use super::bindings::waraka::plugin::{
    antivirus, authentication, blobstore, dkim, dns, files, forward, geoip, http, imap, kv, ldap, mime, outbound_queue,
    p0f, sasl, spamfilter, sql,
};
use super::store::StoreState;
use super::wasi_sync::{file_work, shared_sync};
use crate::capabilities::authentication::{
    ArcChain, Client, DmarcPolicy, Outcome, SpfIdentity, Subject, check_spf, seal_arc,
};
use crate::capabilities::spamfilter::Envelope;
use crate::capabilities::{
    Authentication, BlobSource, BlobStore, CapabilityError, Database, GroupSync, KvStore, RelativePath, SqlRows,
    SqlValue, authenticate, is_socket_path,
};
use crate::capabilities::{ClientInfo, Scan};
use crate::delivery::{
    Address, ClientError, ClientSettings, LiveEnvelope, LiveSession, RemoteReply, check_credentials, hop_target, probe,
    send,
};
use crate::session::{Connection, HandedOn, Handoff, Message, MessageReader, Transaction};
use crate::telemetry;
use flate2::Compression;
use flate2::read::GzEncoder;
use futures_util::StreamExt;
use hickory_resolver::proto::rr::RecordType;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use waraka_config::{NextHopConfig, OutboundTls};

impl From<CapabilityError> for Error {
    fn from(e: CapabilityError) -> Error {
        match e {
            CapabilityError::Invalid(m) => Error::Invalid(m),
            CapabilityError::Limit(m) => Error::Limit(m),
            CapabilityError::Backend(m) => Error::Backend(m),
            CapabilityError::NotFound => Error::NotFound,
            CapabilityError::Timeout => Error::Timeout,
        }
    }
}

impl From<sql::Value> for SqlValue {
    fn from(v: sql::Value) -> SqlValue {
        match v {
            sql::Value::Null => SqlValue::Null,
            sql::Value::Boolean(b) => SqlValue::Bool(b),
            sql::Value::Int(i) => SqlValue::Int(i),
            sql::Value::Float(f) => SqlValue::Float(f),
            sql::Value::Text(t) => SqlValue::Text(t),
            sql::Value::Bytes(b) => SqlValue::Bytes(b),
            sql::Value::Timestamp(t) => SqlValue::Timestamp(t),
        }
    }
}

impl From<SqlValue> for sql::Value {
    fn from(v: SqlValue) -> sql::Value {
        match v {
            SqlValue::Null => sql::Value::Null,
            SqlValue::Bool(b) => sql::Value::Boolean(b),
            SqlValue::Int(i) => sql::Value::Int(i),
            SqlValue::Float(f) => sql::Value::Float(f),
            SqlValue::Text(t) => sql::Value::Text(t),
            SqlValue::Bytes(b) => sql::Value::Bytes(b),
            SqlValue::Timestamp(t) => sql::Value::Timestamp(t),
        }
    }
}

impl StoreState {
    /// Whether the plugin holds `grant` (e.g. `dns`, `kv:rate`).
    fn granted(&self, grant: &str) -> bool {
        self.host.grants.iter().any(|g| g == grant)
    }

    /// The one backend of the unnamed grant `grant` (`antivirus`, `geoip`…),
    /// when granted and configured.
    fn service<T>(&self, grant: &str, pick: impl FnOnce(&Backends) -> &Option<Arc<T>>) -> Result<Arc<T>, Error> {
        if !self.granted(grant) {
            return Err(Error::NotGranted);
        }
        pick(&self.host.services.backends).clone().ok_or(Error::NotGranted)
    }

    /// The backend `name` of capability `kind` (`kv:NAME`, …), when granted.
    pub(super) fn backend<T>(
        &self,
        kind: &str,
        name: &str,
        by_name: impl FnOnce(&Backends) -> &HashMap<String, Arc<T>>,
    ) -> Result<Arc<T>, Error> {
        if !self.granted(&format!("{kind}:{name}")) {
            return Err(Error::NotGranted);
        }
        by_name(&self.host.services.backends)
            .get(name)
            .cloned()
            .ok_or(Error::NotGranted)
    }

    fn kv_store(&self, name: &str) -> Result<Arc<KvStore>, Error> {
        self.backend("kv", name, |b| &b.kv)
    }

    fn blob_store(&self, name: &str) -> Result<Arc<BlobStore>, Error> {
        self.backend("blobstore", name, |b| &b.blobstore)
    }

    fn database(&self, name: &str) -> Result<Arc<Database>, Error> {
        self.backend("sql", name, |b| &b.sql)
    }

    /// A reader of the current message, for `call`; `invalid` before there is one.
    fn message_reader(&self, call: &str) -> Result<MessageReader, Error> {
        self.message_and(call, |_, _| ()).map(|(reader, ())| reader)
    }

    /// A reader of the current message and what `facts` takes from its
    /// connection and transaction under the same lock, for `call`; `invalid`
    /// before there is a message.
    pub(super) fn message_and<T>(
        &self,
        call: &str,
        facts: impl FnOnce(&Connection, &Transaction) -> T,
    ) -> Result<(MessageReader, T), Error> {
        let no_message = || Error::Invalid(format!("there is no message yet ({call} works from data-post on)"));
        let conn = self.host.conn.as_ref().ok_or_else(no_message)?.lock();
        let tx = conn.transaction.as_ref().ok_or_else(no_message)?;
        let reader = tx.message.as_ref().ok_or_else(no_message)?.reader();
        Ok((reader, facts(&conn, tx)))
    }

    fn dns_granted(&self) -> Result<(), Error> {
        if self.granted("dns") {
            Ok(())
        } else {
            Err(Error::NotGranted)
        }
    }
}

/// Runs a backend call, stopping it at the plugin's deadline.
pub(super) async fn bounded<T, E: Into<Error>>(
    deadline: Instant,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, Error> {
    match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), call).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(Error::Timeout),
    }
}

/// The whole message, read from the spool off the async threads; the bytes
/// stay in host memory.
pub(super) async fn read_whole(reader: MessageReader) -> Result<Vec<u8>, Error> {
    read_then(reader, |bytes| bytes).await
}

/// What `then` makes of the whole message, read from the spool and handed
/// to it in one trip to the blocking pool.
async fn read_then<T: Send + 'static>(
    reader: MessageReader,
    then: impl FnOnce(Vec<u8>) -> T + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut { reader }, &mut bytes).map(|_| then(bytes))
    })
    .await
    .map_err(|e| Error::Backend(e.to_string()))?
    .map_err(|e| Error::Backend(format!("reading the message: {e}")))
}

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.filter(|&ms| ms > 0).map(Duration::from_millis)
}

impl kv::Host for StoreState {
    async fn get(&mut self, store: String, key: String) -> Result<Option<Vec<u8>>, Error> {
        let kv = self.kv_store(&store)?;
        bounded(self.deadline, kv.get(&key)).await
    }

    async fn set(&mut self, store: String, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), Error> {
        let kv = self.kv_store(&store)?;
        bounded(self.deadline, kv.set(&key, value, ttl(ttl_ms))).await
    }

    async fn incr(&mut self, store: String, key: String, delta: i64, ttl_ms: Option<u64>) -> Result<i64, Error> {
        let kv = self.kv_store(&store)?;
        bounded(self.deadline, kv.incr(&key, delta, ttl(ttl_ms))).await
    }

    async fn delete(&mut self, store: String, key: String) -> Result<bool, Error> {
        let kv = self.kv_store(&store)?;
        bounded(self.deadline, kv.delete(&key)).await
    }
}

/// The most names one `lookup-a-each` takes, and how many of them are asked
/// at once.
const MAX_LOOKUPS: usize = 256;
const LOOKUPS_AT_ONCE: usize = 32;

impl dns::Host for StoreState {
    async fn lookup_a(&mut self, name: String) -> Result<Vec<String>, Error> {
        self.dns_granted()?;
        let dns = self.host.services.backends.dns.clone();
        let ips = bounded(self.deadline, dns.addresses(&name, RecordType::A)).await?;
        Ok(ips.iter().map(ToString::to_string).collect())
    }

    async fn lookup_a_each(&mut self, names: Vec<String>) -> Result<Vec<Result<Vec<String>, Error>>, Error> {
        self.dns_granted()?;
        if names.len() > MAX_LOOKUPS {
            return Err(Error::Invalid(format!("{} names: at most {MAX_LOOKUPS}", names.len())));
        }
        let (dns, deadline) = (self.host.services.backends.dns.clone(), self.deadline);
        let lookups = names.into_iter().map(|name| {
            let dns = dns.clone();
            async move {
                let ips = bounded(deadline, dns.addresses(&name, RecordType::A)).await?;
                Ok(ips.iter().map(ToString::to_string).collect())
            }
        });
        Ok(futures_util::stream::iter(lookups)
            .buffered(LOOKUPS_AT_ONCE)
            .collect()
            .await)
    }

    async fn lookup_aaaa(&mut self, name: String) -> Result<Vec<String>, Error> {
        self.dns_granted()?;
        let dns = self.host.services.backends.dns.clone();
        let ips = bounded(self.deadline, dns.addresses(&name, RecordType::AAAA)).await?;
        Ok(ips.iter().map(ToString::to_string).collect())
    }

    async fn lookup_mx(&mut self, name: String) -> Result<Vec<dns::MxHost>, Error> {
        self.dns_granted()?;
        let dns = self.host.services.backends.dns.clone();
        let hosts = bounded(self.deadline, dns.mx(&name)).await?;
        Ok(hosts
            .into_iter()
            .map(|h| dns::MxHost {
                preference: h.preference,
                exchange: h.exchange,
            })
            .collect())
    }

    async fn lookup_txt(&mut self, name: String) -> Result<Vec<String>, Error> {
        self.dns_granted()?;
        let dns = self.host.services.backends.dns.clone();
        bounded(self.deadline, dns.txt(&name)).await
    }

    async fn lookup_ptr(&mut self, ip: String) -> Result<Vec<String>, Error> {
        self.dns_granted()?;
        let dns = self.host.services.backends.dns.clone();
        bounded(self.deadline, dns.ptr(&ip)).await
    }
}

impl files::Host for StoreState {
    async fn save_message(&mut self, dir: String, temp: String, path: String, prefix: Vec<u8>) -> Result<u64, Error> {
        let target = self.dirs.open(&dir)?;
        let (temp, path) = (RelativePath::new(temp)?, RelativePath::new(path)?);
        let mut reader = self.message_reader("save-message")?;
        super::trace_guest_bytes("files.save-message", prefix.len());
        let (blocking, services) = (self.blocking_files, self.host.services.clone());
        let save = async move {
            let deliver = move || target.deliver(&temp, &path, &prefix, &mut reader, GroupSync::sync_alone);
            let delivered = file_work(blocking, deliver)
                .await
                .map_err(|e| CapabilityError::Backend(format!("blocking task: {e}")))??;
            shared_sync(&services, Arc::new(delivered.dir), blocking)
                .await
                .map_err(|e| CapabilityError::Backend(format!("syncing the directory of the delivered file: {e}")))?;
            Ok::<_, CapabilityError>(delivered.bytes)
        };
        bounded(self.deadline, save).await
    }

    async fn make_dirs(&mut self, dir: String, path: String) -> Result<(), Error> {
        let target = self.dirs.open(&dir)?;
        let path = RelativePath::new(path)?;
        let make = file_work(self.blocking_files, move || {
            target.make_dirs(&path, GroupSync::sync_alone)
        });
        let made = async {
            make.await
                .map_err(|e| CapabilityError::Backend(format!("blocking task: {e}")))?
        };
        bounded(self.deadline, made).await
    }
}

/// Largest object `blobstore.get` hands to a plugin.
const MAX_BLOB_GET: usize = 16 * 1024 * 1024;

impl blobstore::Host for StoreState {
    async fn put(&mut self, store: String, key: String, data: Vec<u8>) -> Result<(), Error> {
        let blobs = self.blob_store(&store)?;
        super::trace_guest_bytes("blobstore.put", data.len());
        bounded(self.deadline, blobs.put(&key, Box::new(std::io::Cursor::new(data))))
            .await
            .map(drop)
    }

    async fn put_message(&mut self, store: String, key: String, gzip: bool) -> Result<u64, Error> {
        let blobs = self.blob_store(&store)?;
        let reader = self.message_reader("put-message")?;
        let source: BlobSource = if gzip {
            Box::new(GzEncoder::new(reader, Compression::default()))
        } else {
            Box::new(reader)
        };
        bounded(self.deadline, blobs.put(&key, source)).await
    }

    async fn copy(&mut self, store: String, source: String, key: String) -> Result<(), Error> {
        let blobs = self.blob_store(&store)?;
        bounded(self.deadline, blobs.copy(&source, &key)).await
    }

    async fn get(&mut self, store: String, key: String) -> Result<Option<Vec<u8>>, Error> {
        let blobs = self.blob_store(&store)?;
        let object = bounded(self.deadline, blobs.get(&key, MAX_BLOB_GET)).await?;
        super::trace_guest_bytes("blobstore.get", object.as_ref().map_or(0, Vec::len));
        Ok(object)
    }

    async fn exists(&mut self, store: String, key: String) -> Result<bool, Error> {
        let blobs = self.blob_store(&store)?;
        bounded(self.deadline, blobs.exists(&key)).await
    }

    async fn delete(&mut self, store: String, key: String) -> Result<(), Error> {
        let blobs = self.blob_store(&store)?;
        bounded(self.deadline, blobs.delete(&key)).await
    }
}

impl sql::Host for StoreState {
    async fn query(&mut self, db: String, statement: String, params: Vec<sql::Value>) -> Result<sql::Rows, Error> {
        let database = self.database(&db)?;
        let params = params.into_iter().map(SqlValue::from).collect();
        let SqlRows { columns, rows } = database.query(&statement, params, self.deadline).await?;
        Ok(sql::Rows {
            columns,
            rows: rows
                .into_iter()
                .map(|row| row.into_iter().map(sql::Value::from).collect())
                .collect(),
        })
    }

    async fn execute(&mut self, db: String, statement: String, params: Vec<sql::Value>) -> Result<u64, Error> {
        let database = self.database(&db)?;
        let params = params.into_iter().map(SqlValue::from).collect();
        Ok(database.execute(&statement, params, self.deadline).await?)
    }

    async fn transaction(&mut self, db: String, statements: Vec<(String, Vec<sql::Value>)>) -> Result<Vec<u64>, Error> {
        let database = self.database(&db)?;
        let statements = statements
            .into_iter()
            .map(|(sql, params)| (sql, params.into_iter().map(SqlValue::from).collect()))
            .collect();
        Ok(database.transaction(statements, self.deadline).await?)
    }
}

/// A plugin's STARTTLS policy name (empty: `opportunistic`).
fn tls_policy(policy: &str) -> Result<OutboundTls, Error> {
    match policy {
        "never" => Ok(OutboundTls::Never),
        "opportunistic" | "" => Ok(OutboundTls::Opportunistic),
        "verify" => Ok(OutboundTls::Verify),
        "required" => Ok(OutboundTls::Required),
        other => Err(Error::Invalid(format!(
            "tls {other:?}: use never, opportunistic, verify or required"
        ))),
    }
}

impl StoreState {
    /// Whether the plugin may name `host` as a next hop: a Unix socket
    /// (an absolute path) needs the `socket:PATH` grant and LMTP (mailbox
    /// servers listen on local sockets; the client would otherwise write
    /// SMTP into any socket the server can reach).
    fn check_socket(&self, host: &str, lmtp: bool) -> Result<(), Error> {
        if !is_socket_path(host) {
            return Ok(());
        }
        if !lmtp {
            return Err(Error::Invalid(format!("{host}: a Unix socket is for LMTP hops only")));
        }
        if self.granted(&format!("socket:{host}")) {
            Ok(())
        } else {
            Err(Error::NotGranted)
        }
    }

    /// Records that `recipients` went to `host` (its `reply`), so the
    /// session's success notices leave them to `host` when it took the
    /// DSN requests on (`dsn_passed`) and say `relayed` otherwise.
    fn hand_on<'a>(&self, recipients: impl Iterator<Item = (&'a str, &'a str)>, host: &str, dsn_passed: bool) {
        if let Some(conn) = &self.host.conn
            && let Some(tx) = conn.lock().transaction.as_mut()
        {
            for (recipient, reply) in recipients {
                tx.handed_on.push(HandedOn {
                    recipient: recipient.to_string(),
                    host: host.to_string(),
                    reply: reply.to_string(),
                    dsn_passed,
                });
            }
        }
    }
}

impl outbound_queue::Host for StoreState {
    async fn enqueue(&mut self, hop: outbound_queue::Hop, recipients: Vec<String>) -> Result<Vec<String>, Error> {
        if !self.granted("outbound-queue") {
            return Err(Error::NotGranted);
        }
        let tls = tls_policy(&hop.tls)?;
        self.check_socket(&hop.host, hop.lmtp)?;
        let (message, (queue, sender, dsn, origin, tls_request, unknown)) =
            self.message_and("enqueue", |conn, tx| {
                let known: Vec<String> = tx.recipients.iter().map(|r| r.addr_spec()).collect();
                let unknown = recipients.iter().find(|r| !known.contains(r)).cloned();
                (
                    conn.outbound.clone(),
                    tx.sender.addr_spec(),
                    tx.dsn_requests(),
                    tx.id.clone(),
                    tx.tls_request(),
                    unknown,
                )
            })?;
        let handoff = Handoff {
            message,
            sender,
            recipients: recipients.clone(),
            dsn,
            origin,
            tls_request,
        };
        if let Some(unknown) = unknown {
            return Err(Error::Invalid(format!(
                "{unknown} is not a recipient of the transaction"
            )));
        }
        let queue = queue.ok_or_else(delivery_off)?;
        let target = NextHopConfig {
            host: hop.host.clone(),
            port: hop.port,
            user: None,
            password: None,
            tls: Some(tls),
            lmtp: hop.lmtp,
        };
        let ids = bounded(self.deadline, async {
            queue
                .enqueue(handoff, Some(target))
                .await
                .map_err(|e| Error::Backend(format!("the outbound queue could not store the message: {e}")))
        })
        .await?;
        // Delivery reports to the sender from now on, as it asked.
        let queued = format!("queued as {}", ids.join(","));
        self.hand_on(
            recipients.iter().map(|r| (r.as_str(), queued.as_str())),
            &hop.host,
            true,
        );
        Ok(ids)
    }

    async fn forward_recipient(&mut self, recipient: String) -> Result<(), Error> {
        if !self.granted("outbound-queue") {
            return Err(Error::NotGranted);
        }
        self.mark_forwarded(&recipient)
    }

    async fn reverse_srs(&mut self, address: String) -> Result<Option<String>, Error> {
        if !self.granted("outbound-queue") {
            return Err(Error::NotGranted);
        }
        let Some(srs) = &self.host.services.backends.srs else {
            return Ok(None);
        };
        let reversed = srs.reverse(&address);
        let result = match &reversed {
            Ok(None) => return Ok(None),
            Ok(Some(_)) => "valid",
            Err(_) => "invalid",
        };
        metrics::counter!(telemetry::SRS_REVERSALS, "result" => result).increment(1);
        reversed.map_err(|e| Error::Invalid(e.to_string()))
    }
}

/// The error of a call that needs the host's outbound queue when it is off.
fn delivery_off() -> Error {
    Error::Backend("outbound delivery is off ([outbound] enabled = false)".into())
}

impl StoreState {
    /// Marks the recipient `recipient` of the open transaction as forwarded.
    fn mark_forwarded(&self, recipient: &str) -> Result<(), Error> {
        let none = || Error::Invalid("no transaction".into());
        let conn = self.host.conn.as_ref().ok_or_else(none)?;
        let mut conn = conn.lock();
        if conn.outbound.is_none() {
            return Err(delivery_off());
        }
        let tx = conn.transaction.as_mut().ok_or_else(none)?;
        let spec = tx
            .recipients
            .iter()
            .map(|r| r.addr_spec())
            .find(|spec| spec.eq_ignore_ascii_case(recipient))
            .ok_or_else(|| Error::Invalid(format!("{recipient} is not a recipient of the transaction")))?;
        if !tx.forwarded.contains(&spec) {
            tx.forwarded.push(spec);
        }
        Ok(())
    }
}

/// Runs `attempt` on each address of `hop` in turn until one answers: a
/// failure another address may not have (see [`ClientError::try_next_host`])
/// moves on, and the last one becomes the `backend` error.
async fn each_address<T, F: Future<Output = Result<T, ClientError>>>(
    dns: &crate::capabilities::Dns,
    hop: &forward::NextHop,
    mut attempt: impl FnMut(Address) -> F,
) -> Result<T, Error> {
    let server = hop_target(dns, &hop.host, hop.port).await?;
    let mut last = format!("{} has no address", hop.host);
    for addr in server.addrs {
        match attempt(addr.clone()).await {
            Ok(answer) => return Ok(answer),
            Err(e) if e.try_next_host() => last = format!("{addr}: {e}"),
            Err(e) => return Err(Error::Backend(format!("{addr}: {e}"))),
        }
    }
    Err(Error::Backend(last))
}

impl StoreState {
    /// The client settings for a plugin's `hop`, when `forward` is granted.
    fn forward_settings(&self, hop: &forward::NextHop, lmtp: bool) -> Result<ClientSettings, Error> {
        if !self.granted("forward") {
            return Err(Error::NotGranted);
        }
        self.check_socket(&hop.host, lmtp)?;
        let mut settings = self.host.services.backends.smtp_client.clone();
        settings.tls = tls_policy(&hop.tls)?.into();
        settings.auth = hop.auth.clone();
        Ok(settings)
    }
}

/// Where a connection keeps its proxy session (`forward.proxy-*`).
const PROXY_SESSION: &str = "forward.proxy";

/// A connection's proxy session, with the hop it is with.
struct KeptProxy {
    hop: String,
    session: LiveSession,
}

/// A server's reply as the plugin sees it.
fn wit_reply(reply: RemoteReply) -> types::Reply {
    types::Reply {
        code: reply.code,
        enhanced: reply.enhanced,
        lines: reply.lines,
    }
}

impl StoreState {
    /// The connection's proxy session with `hop`; one with another hop is
    /// dropped (and says QUIT).
    fn take_proxy(&self, hop: &str) -> Option<LiveSession> {
        let kept = self.take_kept_proxy()?;
        (kept.hop == hop).then_some(kept.session)
    }

    /// The connection's proxy session, taken out while a step uses it.
    fn take_kept_proxy(&self) -> Option<KeptProxy> {
        let kept = self.host.conn.as_ref()?.lock().capability_state.remove(PROXY_SESSION)?;
        kept.downcast::<KeptProxy>().ok().map(|kept| *kept)
    }

    /// Keeps the proxy session for the connection's next step.
    fn keep_proxy(&self, kept: KeptProxy) {
        if let Some(conn) = &self.host.conn {
            conn.lock()
                .capability_state
                .insert(PROXY_SESSION.into(), Box::new(kept));
        }
    }

    /// Runs `step` on the connection's proxy session with `hop` (opened
    /// when it has none), and keeps the session for the next step unless
    /// the step failed.
    async fn proxy_step<T>(
        &mut self,
        hop: forward::NextHop,
        step: impl AsyncFnOnce(&mut LiveSession) -> Result<T, ClientError>,
    ) -> Result<T, Error> {
        let settings = self.forward_settings(&hop, false)?;
        let key = format!("{}:{}:{}:{:?}", hop.host, hop.port, hop.tls, hop.auth);
        let kept = self.take_proxy(&key);
        let dns = self.host.services.backends.dns.clone();
        let (session, answer) = bounded(self.deadline, async move {
            let mut session = match kept {
                Some(session) => session,
                None => {
                    let (host, settings) = (&hop.host, &settings);
                    each_address(&dns, &hop, |addr| async move {
                        LiveSession::open(&addr, host, settings).await
                    })
                    .await?
                }
            };
            let answer = step(&mut session)
                .await
                .map_err(|e| Error::Backend(format!("{}: {e}", hop.host)))?;
            Ok::<_, Error>((session, answer))
        })
        .await?;
        self.keep_proxy(KeptProxy { hop: key, session });
        Ok(answer)
    }

    /// The current transaction's id, sender and DSN requests.
    fn transaction_envelope(&self, call: &str) -> Result<(String, String, waraka_protocol::DsnRequests), Error> {
        let none = || Error::Invalid(format!("{call} works inside a transaction"));
        let conn = self.host.conn.as_ref().ok_or_else(none)?.lock();
        let tx = conn.transaction.as_ref().ok_or_else(none)?;
        Ok((tx.id.clone(), tx.sender.addr_spec(), tx.dsn_requests()))
    }
}

impl forward::Host for StoreState {
    async fn proxy_mail(&mut self, hop: forward::NextHop) -> Result<types::Reply, Error> {
        let (transaction, sender, dsn) = self.transaction_envelope("proxy-mail")?;
        let reply = self
            .proxy_step(hop, async move |session: &mut LiveSession| {
                session.mail(&transaction, &sender, &dsn).await
            })
            .await?;
        Ok(wit_reply(reply))
    }

    async fn proxy_rcpt(&mut self, hop: forward::NextHop, recipient: String) -> Result<types::Reply, Error> {
        let (transaction, sender, dsn) = self.transaction_envelope("proxy-rcpt")?;
        let reply = self
            .proxy_step(hop, async move |session: &mut LiveSession| {
                if !session.is_open_for(&transaction) {
                    let reply = session.mail(&transaction, &sender, &dsn).await?;
                    if !reply.is_positive() {
                        return Ok(reply);
                    }
                }
                session.rcpt(&recipient, &dsn).await
            })
            .await?;
        Ok(wit_reply(reply))
    }

    async fn proxy_data(&mut self, hop: forward::NextHop) -> Result<types::Reply, Error> {
        let (reader, (transaction, sender, recipients, dsn)) = self.message_and("proxy-data", |_, tx| {
            let recipients: Vec<String> = tx.recipients.iter().map(|r| r.addr_spec()).collect();
            (tx.id.clone(), tx.sender.addr_spec(), recipients, tx.dsn_requests())
        })?;
        let host = hop.host.clone();
        let sent = recipients.clone();
        let reply = self
            .proxy_step(hop, async move |session: &mut LiveSession| {
                let message = read_whole(reader).await.map_err(|e| ClientError::Protocol {
                    stage: "message",
                    detail: format!("reading the spool: {e:?}"),
                })?;
                let envelope = LiveEnvelope {
                    transaction: &transaction,
                    sender: &sender,
                    recipients: &recipients,
                    dsn: &dsn,
                };
                let reply = session.data(envelope, message.as_slice()).await?;
                Ok((reply, session.passes_dsn()))
            })
            .await?;
        let (reply, dsn_passed) = reply;
        if reply.is_positive() {
            let text = reply.to_string();
            self.hand_on(sent.iter().map(|r| (r.as_str(), text.as_str())), &host, dsn_passed);
        }
        Ok(wit_reply(reply))
    }

    async fn proxy_reset(&mut self) {
        let Some(mut kept) = self.take_kept_proxy() else {
            return;
        };
        let reset = bounded(self.deadline, async {
            kept.session.reset().await.map_err(|e| Error::Backend(e.to_string()))
        })
        .await;
        if reset.is_ok() {
            self.keep_proxy(kept);
        }
    }

    async fn check_credentials(
        &mut self,
        hop: forward::NextHop,
        user: String,
        password: String,
    ) -> Result<bool, Error> {
        let settings = ClientSettings {
            auth: Some((user, password)),
            ..self.forward_settings(&hop, false)?
        };
        let dns = self.host.services.backends.dns.clone();
        bounded(self.deadline, async move {
            let (host, settings) = (&hop.host, &settings);
            each_address(&dns, &hop, |addr| async move {
                check_credentials(&addr, host, settings).await
            })
            .await
        })
        .await
    }

    async fn verify_recipient(
        &mut self,
        hop: forward::NextHop,
        lmtp: bool,
        recipient: String,
    ) -> Result<forward::RecipientReply, Error> {
        let settings = ClientSettings {
            lmtp,
            ..self.forward_settings(&hop, lmtp)?
        };
        let dns = self.host.services.backends.dns.clone();
        bounded(self.deadline, async move {
            let (host, settings, asked) = (&hop.host, &settings, &recipient);
            let reply = each_address(&dns, &hop, |addr| async move {
                probe(&addr, host, settings, "", asked).await
            })
            .await?;
            Ok::<_, Error>(forward::RecipientReply {
                recipient,
                code: reply.code,
                text: reply.to_string(),
            })
        })
        .await
    }

    async fn send(
        &mut self,
        hop: forward::NextHop,
        recipients: Vec<String>,
    ) -> Result<Vec<forward::RecipientReply>, Error> {
        let settings = self.forward_settings(&hop, false)?;
        let (reader, (sender, dsn, tls_request)) = self.message_and("forward", |_, tx| {
            (tx.sender.addr_spec(), tx.dsn_requests(), tx.tls_request())
        })?;
        let dns = self.host.services.backends.dns.clone();
        let host = hop.host.clone();
        let (replies, dsn_passed) = bounded(self.deadline, async move {
            let message = read_whole(reader).await?;
            let reply_for = |i: usize, reply: &crate::delivery::RemoteReply| forward::RecipientReply {
                recipient: recipients[i].clone(),
                code: reply.code,
                text: reply.to_string(),
            };
            // Borrowed by each attempt.
            let (hop, settings, message) = (&hop, &settings, &message);
            let (sender, recipients, dsn, reply_for) = (&sender, &recipients, &dsn, &reply_for);
            each_address(&dns, hop, |addr| async move {
                let envelope = crate::queue::Envelope {
                    sender,
                    recipients,
                    dsn,
                    tls_request,
                };
                match send(
                    &addr,
                    &hop.host,
                    settings,
                    envelope,
                    message.as_slice(),
                    message.len() as u64,
                )
                .await
                {
                    Ok(delivery) => {
                        let replies = (0..recipients.len()).map(|i| reply_for(i, delivery.outcome(i)));
                        Ok((replies.collect::<Vec<_>>(), delivery.dsn_passed))
                    }
                    Err(e) if e.try_next_host() => Err(e),
                    // The server answered for the whole message (MAIL, DATA, end of data).
                    Err(ClientError::Refused { reply, .. }) => {
                        Ok(((0..recipients.len()).map(|i| reply_for(i, &reply)).collect(), false))
                    }
                    Err(e) => Err(e),
                }
            })
            .await
        })
        .await?;
        let accepted = replies.iter().filter(|r| (200..300).contains(&r.code));
        self.hand_on(
            accepted.map(|r| (r.recipient.as_str(), r.text.as_str())),
            &host,
            dsn_passed,
        );
        Ok(replies)
    }
}

impl From<Outcome> for authentication::Outcome {
    fn from(o: Outcome) -> authentication::Outcome {
        match o {
            Outcome::Pass => authentication::Outcome::Pass,
            Outcome::Fail => authentication::Outcome::Fail,
            Outcome::SoftFail => authentication::Outcome::SoftFail,
            Outcome::Neutral => authentication::Outcome::Neutral,
            Outcome::TempError => authentication::Outcome::TempError,
            Outcome::PermError => authentication::Outcome::PermError,
            Outcome::None => authentication::Outcome::None,
        }
    }
}

impl From<&Authentication> for authentication::Results {
    fn from(a: &Authentication) -> authentication::Results {
        authentication::Results {
            spf: a.spf.into(),
            spf_domain: a.spf_domain.clone(),
            dkim: a
                .dkim
                .iter()
                .map(|s| authentication::Signature {
                    domain: s.domain.clone(),
                    selector: s.selector.clone(),
                    outcome: s.outcome.into(),
                    reason: s.reason.clone(),
                })
                .collect(),
            dmarc: a.dmarc.into(),
            dmarc_domain: a.dmarc_domain.clone(),
            dmarc_policy: match a.dmarc_policy {
                DmarcPolicy::None => authentication::Policy::None,
                DmarcPolicy::Quarantine => authentication::Policy::Quarantine,
                DmarcPolicy::Reject => authentication::Policy::Reject,
            },
            header: a.header.clone(),
        }
    }
}

/// Who the client of `conn` is, with the sender of `tx` when there is one
/// (taken under the session's lock).
fn client_of(conn: &Connection, tx: Option<&Transaction>) -> Client {
    Client {
        client_ip: conn.peer.ip(),
        helo: conn.helo.clone().unwrap_or_default(),
        mail_from: tx.map(|tx| tx.sender.addr_spec()).unwrap_or_default(),
        hostname: conn.hostname.clone(),
    }
}

impl From<&ArcChain> for authentication::ArcChain {
    fn from(chain: &ArcChain) -> authentication::ArcChain {
        authentication::ArcChain {
            outcome: chain.outcome.into(),
            hops: chain
                .hops
                .iter()
                .map(|hop| authentication::ArcHop {
                    sealer: hop.sealer.clone(),
                    results: hop.results.clone(),
                })
                .collect(),
        }
    }
}

impl StoreState {
    /// The transaction's authentication, verified on the first call and
    /// kept for every later one (by any plugin).
    async fn authentication(&mut self) -> Result<Arc<Authentication>, Error> {
        if !self.granted("authentication") {
            return Err(Error::NotGranted);
        }
        let (reader, (transaction, client, done, relaying)) = self.message_and("authentication", |conn, tx| {
            (
                tx.id.clone(),
                client_of(conn, Some(tx)),
                tx.authentication.clone(),
                conn.relaying,
            )
        })?;
        if let Some(done) = done {
            return Ok(done);
        }
        let dns = self.host.services.backends.dns.clone();
        // Mail received from others is reported: a relaying client's is our own.
        let reports = self.host.services.backends.dmarc_reports.clone().filter(|_| !relaying);
        let failures = self.host.services.backends.dmarc_failures.clone().filter(|_| !relaying);
        let (dmarc_report, dmarc_failure) = (reports.is_some(), failures.is_some());
        let verified = bounded(self.deadline, async move {
            let message = read_whole(reader).await?;
            let subject = Subject {
                message: &message,
                client,
                dmarc_report,
                dmarc_failure,
            };
            authenticate(&dns, subject).await.map_err(Error::from)
        })
        .await?;
        let verified = Arc::new(verified);
        if let (Some(reports), Some(seen)) = (reports, &verified.dmarc_report) {
            reports.record(seen, crate::queue::now_ms());
        }
        if let (Some(failures), Some(failure)) = (failures, &verified.dmarc_failure)
            && let Err(refused) = failures.push(failure.clone(), crate::queue::now_ms())
        {
            tracing::info!(domain = %failure.domain, ?refused, "DMARC failure not reported");
        }
        if let Some(conn) = &self.host.conn
            && let Some(tx) = conn.lock().transaction.as_mut().filter(|tx| tx.id == transaction)
        {
            tx.authentication = Some(verified.clone());
        }
        Ok(verified)
    }
}

impl authentication::Host for StoreState {
    async fn verify(&mut self) -> Result<authentication::Results, Error> {
        Ok(self.authentication().await?.as_ref().into())
    }

    async fn verify_arc(&mut self) -> Result<authentication::ArcChain, Error> {
        Ok((&self.authentication().await?.arc).into())
    }

    async fn check_spf(&mut self, identity: authentication::SpfIdentity) -> Result<authentication::SpfCheck, Error> {
        if !self.granted("authentication") {
            return Err(Error::NotGranted);
        }
        let identity = match identity {
            authentication::SpfIdentity::Helo => SpfIdentity::Helo,
            authentication::SpfIdentity::MailFrom => SpfIdentity::MailFrom,
        };
        let client = {
            let conn = self
                .host
                .conn
                .as_ref()
                .ok_or_else(|| Error::Invalid("there is no client".into()))?;
            let conn = conn.lock();
            let tx = conn.transaction.as_ref();
            if identity == SpfIdentity::MailFrom && tx.is_none() {
                return Err(Error::Invalid(
                    "there is no transaction (check-spf mail-from works from mail on)".into(),
                ));
            }
            client_of(&conn, tx)
        };
        let dns = self.host.services.backends.dns.clone();
        let check = bounded(self.deadline, async move {
            check_spf(&dns, &client, identity).await.map_err(Error::from)
        })
        .await?;
        Ok(authentication::SpfCheck {
            outcome: check.outcome.into(),
            domain: check.domain,
            explanation: check.explanation,
        })
    }
}

/// Counts a call of the `dkim` capability in `metric` by result: `done`,
/// `no_key` or `error`.
fn count_signing<T>(metric: &'static str, done: &'static str, outcome: &Result<T, Error>) {
    let result = match outcome {
        Ok(_) => done,
        Err(Error::NotFound) => "no_key",
        Err(_) => "error",
    };
    metrics::counter!(metric, "result" => result).increment(1);
}

impl dkim::Host for StoreState {
    async fn sign(&mut self, domain: String) -> Result<dkim::Signer, Error> {
        if !self.granted("dkim") {
            return Err(Error::NotGranted);
        }
        let (reader, transaction) = self.message_and("sign", |_, tx| tx.id.clone())?;
        let keys = self.host.services.backends.dkim.clone();
        let signature = bounded(self.deadline, async move {
            let message = read_whole(reader).await?;
            // Reading the key and an RSA signature are blocking work.
            tokio::task::spawn_blocking(move || keys.sign(&domain, &message))
                .await
                .map_err(|e| Error::Backend(e.to_string()))?
                .map_err(Error::from)
        })
        .await;
        count_signing(telemetry::DKIM_SIGNATURES, "signed", &signature);
        let signature = signature?;
        self.add_headers_to(&transaction, &[("DKIM-Signature".into(), signature.value)])?;
        Ok(dkim::Signer {
            domain: signature.domain,
            selector: signature.selector,
        })
    }

    async fn seal_arc(&mut self, domain: String) -> Result<dkim::Signer, Error> {
        if !self.granted("dkim") {
            return Err(Error::NotGranted);
        }
        let (reader, (transaction, client)) =
            self.message_and("seal-arc", |conn, tx| (tx.id.clone(), client_of(conn, Some(tx))))?;
        let keys = self.host.services.backends.dkim.clone();
        let dns = self.host.services.backends.dns.clone();
        let sealed = bounded(self.deadline, async move {
            let message = read_whole(reader).await?;
            // Reading the key is blocking work.
            let key = tokio::task::spawn_blocking(move || keys.key_for(&domain))
                .await
                .map_err(|e| Error::Backend(e.to_string()))??;
            let signer = dkim::Signer {
                domain: key.domain.clone(),
                selector: key.selector.clone(),
            };
            let fields = seal_arc(
                &dns,
                Subject {
                    message: &message,
                    client,
                    dmarc_report: false,
                    dmarc_failure: false,
                },
                key,
            )
            .await?;
            Ok::<_, Error>((signer, fields))
        })
        .await;
        count_signing(telemetry::ARC_SEALS, "sealed", &sealed);
        let (signer, fields) = sealed?;
        self.add_headers_to(&transaction, &fields)?;
        Ok(signer)
    }
}

impl StoreState {
    /// Puts `fields` (name, folded value) on top of the message of the
    /// transaction `transaction`, in their order.
    fn add_headers_to(&self, transaction: &str, fields: &[(String, String)]) -> Result<(), Error> {
        self.edit_message_of(transaction, |message| {
            // Each field goes on top, so the last one goes first.
            for (name, value) in fields.iter().rev() {
                message
                    .add_header(name, value)
                    .map_err(|e| Error::Backend(format!("{name} does not fit the header: {e}")))?;
            }
            Ok(())
        })
    }

    /// Puts a `mime` edit's message in place of the transaction's: its
    /// top-level MIME fields and body. How many parts it changed.
    fn put_rewritten(
        &self,
        transaction: &str,
        rewritten: Option<crate::capabilities::mime::Rewritten>,
    ) -> Result<u32, Error> {
        let Some(rewritten) = rewritten else {
            return Ok(0);
        };
        self.edit_message_of(transaction, |message| {
            for (name, value) in &rewritten.header_fields {
                message.remove_header(name);
                message
                    .insert_header(u32::MAX, name, value)
                    .map_err(|e| Error::Backend(format!("{name} does not fit the header: {e}")))?;
            }
            message.replace_body(&rewritten.body);
            Ok(())
        })?;
        Ok(rewritten.parts)
    }

    /// Runs `edit` on the message of the transaction `transaction` — the
    /// one a call read before it waited; `invalid` when that transaction
    /// has ended since.
    fn edit_message_of(
        &self,
        transaction: &str,
        edit: impl FnOnce(&mut Message) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let gone = || Error::Invalid("the transaction ended during the call".into());
        let mut conn = self.host.conn.as_ref().ok_or_else(gone)?.lock();
        let message = conn
            .transaction
            .as_mut()
            .filter(|tx| tx.id == transaction)
            .and_then(|tx| tx.message.as_mut())
            .ok_or_else(gone)?;
        edit(message)
    }
}

impl antivirus::Host for StoreState {
    async fn scan(&mut self) -> Result<antivirus::ScanResult, Error> {
        let scanner = self.service("antivirus", |b| &b.antivirus)?;
        let reader = self.message_reader("scan")?;
        let scan = bounded(self.deadline, async move {
            let message = read_whole(reader).await?;
            scanner.scan(&message).await.map_err(Error::from)
        })
        .await;
        let result = match &scan {
            Ok(Scan::Clean) => "clean",
            Ok(Scan::Infected(_)) => "infected",
            Err(_) => "error",
        };
        metrics::counter!(telemetry::ANTIVIRUS_SCANS, "result" => result).increment(1);
        let scan = scan?;
        Ok(match scan {
            Scan::Clean => antivirus::ScanResult::Clean,
            Scan::Infected(names) => antivirus::ScanResult::Infected(names),
        })
    }
}

impl mime::Host for StoreState {
    async fn texts(&mut self, max_bytes: u32) -> Result<Vec<mime::Text>, Error> {
        let reader = self.message_reader("texts")?;
        let texts = read_then(reader, move |m| {
            crate::capabilities::mime::texts(&m, max_bytes as usize)
        });
        let found = bounded(self.deadline, texts).await?;
        super::trace_guest_bytes("mime.texts", found.iter().map(|t| t.text.len()).sum());
        Ok(found
            .into_iter()
            .map(|t| mime::Text {
                content_type: t.content_type.to_string(),
                text: t.text,
            })
            .collect())
    }

    async fn add_banner(&mut self, text: String, html: Option<String>) -> Result<u32, Error> {
        let (reader, transaction) = self.message_and("add-banner", |_, tx| tx.id.clone())?;
        let bannered = read_then(reader, move |m| {
            crate::capabilities::mime::add_banner(&m, &text, html.as_deref())
        });
        let bannered = bounded(self.deadline, bannered).await?;
        self.put_rewritten(&transaction, bannered)
    }

    async fn remove_parts(&mut self, removals: Vec<(u32, String)>) -> Result<u32, Error> {
        let (reader, transaction) = self.message_and("remove-parts", |_, tx| tx.id.clone())?;
        let stripped = read_then(reader, move |m| crate::capabilities::mime::remove_parts(&m, &removals));
        let stripped = bounded(self.deadline, stripped).await?;
        self.put_rewritten(&transaction, stripped)
    }

    async fn parts(&mut self, archive_depth: u32) -> Result<Vec<mime::Part>, Error> {
        let reader = self.message_reader("parts")?;
        let parts = read_then(reader, move |m| crate::capabilities::mime::parts(&m, archive_depth));
        let found = bounded(self.deadline, parts).await?;
        Ok(found
            .into_iter()
            .map(|part| mime::Part {
                content_type: part.content_type,
                filename: part.filename,
                attachment: part.attachment,
                size: part.size,
                archive: part.archive.map(|a| mime::Archive {
                    names: a.names,
                    encrypted: a.encrypted,
                    incomplete: a.incomplete,
                }),
            })
            .collect())
    }
}

/// rspamd's action as a metric label: one of its six, else `other`, so a
/// scanner cannot grow the label set.
fn spam_action_label(action: &str) -> &'static str {
    const ACTIONS: [&str; 6] = [
        "no action",
        "greylist",
        "add header",
        "rewrite subject",
        "soft reject",
        "reject",
    ];
    ACTIONS.into_iter().find(|a| *a == action).unwrap_or("other")
}

impl StoreState {
    /// Asks the `[spamfilter]` scanner about the current message, with the
    /// preferences of `scanned_for` when given.
    async fn scan_for_spam(&mut self, scanned_for: Option<String>) -> Result<spamfilter::SpamReport, Error> {
        let scanner = self.service("spamfilter", |b| &b.spamfilter)?;
        let (reader, envelope) = self.message_and("check", |conn, tx| Envelope {
            client_ip: conn.peer.ip().to_string(),
            helo: conn.helo.clone().unwrap_or_default(),
            sender: tx.sender.addr_spec(),
            recipients: tx.recipients.iter().map(|r| r.addr_spec()).collect(),
            user: conn.auth_user.clone(),
            scanned_for,
            queue_id: tx.id.clone(),
            hostname: conn.hostname.clone(),
        })?;
        let report = bounded(self.deadline, async move {
            let message = read_whole(reader).await?;
            scanner.check(message, &envelope).await.map_err(Error::from)
        })
        .await;
        let action = report.as_ref().map_or("error", |r| spam_action_label(&r.action));
        metrics::counter!(telemetry::SPAM_CHECKS, "action" => action).increment(1);
        let report = report?;
        Ok(spamfilter::SpamReport {
            action: report.action,
            score: report.score,
            required_score: report.required_score,
            symbols: report.symbols,
            smtp_message: report.smtp_message,
            subject: report.subject,
        })
    }
}

impl spamfilter::Host for StoreState {
    async fn check(&mut self) -> Result<spamfilter::SpamReport, Error> {
        self.scan_for_spam(None).await
    }

    async fn check_for(&mut self, user: String) -> Result<spamfilter::SpamReport, Error> {
        self.scan_for_spam(Some(user)).await
    }
}

impl sasl::Host for StoreState {
    async fn check_password(&mut self, user: String, password: String) -> Result<Option<String>, Error> {
        let authority = self.service("sasl", |b| &b.sasl)?;
        let conn = self
            .host
            .conn
            .as_ref()
            .ok_or_else(|| Error::Invalid("there is no client".into()))?;
        let client = {
            let conn = conn.lock();
            ClientInfo {
                remote: conn.peer.ip(),
                local: conn.local.ip(),
                secured: conn.tls.is_some(),
            }
        };
        bounded(self.deadline, authority.check(&user, &password, client)).await
    }
}

impl ldap::Host for StoreState {
    async fn search(
        &mut self,
        name: String,
        base: String,
        filter: String,
        attributes: Vec<String>,
    ) -> Result<Vec<ldap::Entry>, Error> {
        let directory = self.backend("ldap", &name, |b| &b.ldap)?;
        let entries = bounded(self.deadline, directory.search(&base, &filter, &attributes)).await?;
        Ok(entries
            .into_iter()
            .map(|e| ldap::Entry {
                dn: e.dn,
                attributes: e.attributes,
            })
            .collect())
    }

    async fn check_password(&mut self, name: String, dn: String, password: String) -> Result<bool, Error> {
        let directory = self.backend("ldap", &name, |b| &b.ldap)?;
        bounded(self.deadline, directory.check_password(&dn, &password)).await
    }
}

impl From<crate::capabilities::HttpResponse> for http::Response {
    fn from(r: crate::capabilities::HttpResponse) -> Self {
        http::Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl http::Host for StoreState {
    async fn request(
        &mut self,
        service: String,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<http::Response, Error> {
        let service = self.backend("http", &service, |b| &b.http)?;
        let response = bounded(self.deadline, service.request(&method, &path, &headers, body)).await?;
        Ok(response.into())
    }

    async fn post_message(
        &mut self,
        service: String,
        path: String,
        mut headers: Vec<(String, String)>,
    ) -> Result<http::Response, Error> {
        let service = self.backend("http", &service, |b| &b.http)?;
        let reader = self.message_reader("post-message")?;
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        headers.push(("Content-Type".into(), "message/rfc822".into()));
        let response = bounded(self.deadline, async move {
            let message = read_whole(reader).await?;
            service
                .request("POST", &path, &headers, message)
                .await
                .map_err(Error::from)
        })
        .await?;
        Ok(response.into())
    }
}

impl imap::Host for StoreState {
    async fn check_credentials(&mut self, server: imap::Server, user: String, password: String) -> Result<bool, Error> {
        if !self.granted("imap") {
            return Err(Error::NotGranted);
        }
        let tls: crate::capabilities::ImapTls = server.tls.parse()?;
        let dns = self.host.services.backends.dns.clone();
        bounded(self.deadline, async move {
            let target = hop_target(&dns, &server.host, server.port).await?;
            let addrs: Vec<_> = target
                .addrs
                .iter()
                .filter_map(|addr| match addr {
                    Address::Inet(addr) => Some(*addr),
                    Address::Unix(_) => None,
                })
                .collect();
            let config = crate::tls::client_config();
            crate::capabilities::imap::check_login(&addrs, &server.host, tls, config, &user, &password).await
        })
        .await
    }
}

/// A plugin's IP address argument (text, IPv4 or IPv6); `invalid` when it is none.
fn ip_argument(ip: &str) -> Result<std::net::IpAddr, Error> {
    ip.trim()
        .parse()
        .map_err(|_| Error::Invalid(format!("{ip:?} is not an IP address")))
}

impl p0f::Host for StoreState {
    async fn query(&mut self, ip: String) -> Result<Option<p0f::Fingerprint>, Error> {
        let daemon = self.service("p0f", |b| &b.p0f)?;
        let ip = ip_argument(&ip)?;
        let found = bounded(self.deadline, async move { daemon.query(ip).await }).await?;
        Ok(found.map(|f| p0f::Fingerprint {
            os_name: f.os_name,
            os_flavor: f.os_flavor,
            os_match: f.os_match,
            distance: f.distance,
            link_type: f.link_type,
            total_connections: f.total_connections,
            uptime_minutes: f.uptime_minutes,
            last_nat: f.last_nat,
        }))
    }
}

impl geoip::Host for StoreState {
    async fn lookup(&mut self, ip: String) -> Result<Option<geoip::Location>, Error> {
        let databases = self.service("geoip", |b| &b.geoip)?;
        let ip = ip_argument(&ip)?;
        let found = bounded(self.deadline, async move { databases.lookup(ip).await }).await?;
        Ok(found.map(|l| geoip::Location {
            country: l.country,
            continent: l.continent,
            region: l.region,
            city: l.city,
            latitude: l.coordinates.map(|c| c.0),
            longitude: l.coordinates.map(|c| c.1),
            asn: l.asn,
            as_organization: l.as_organization,
        }))
    }
}
