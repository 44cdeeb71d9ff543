//! The outbound queue on disk. Each entry is two files in one directory:
//! `ID.eml`, the message exactly as it will be sent (CRLF, not dot-stuffed),
//! and `ID.json`, the envelope and retry state — both readable with `cat`.
//!
//! Durability: a file is written under a `.tmp-` name, `fsync`ed, renamed
//! and the directory `fsync`ed. The message goes first and the JSON last, so
//! the JSON's presence is the commit: at start-up a message without JSON was
//! half-written and is removed, a JSON that cannot be read is moved to
//! `corrupt/` with a log line, and leftover temporary files are removed.
//! Entries of one message (one per destination domain) share the message
//! file through hard links.

use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use waraka_config::NextHopConfig;
use waraka_protocol::{DsnRequests, TlsRequest};

const TMP_PREFIX: &str = ".tmp-";
const CORRUPT_DIR: &str = "corrupt";

/// One queued delivery: a message for the recipients of one domain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Names the entry's files (`ID.eml`, `ID.json`).
    pub id: String,
    /// The destination domain (lower-cased).
    pub domain: String,
    /// The reverse-path as `local@domain`; empty for `<>` (a bounce).
    pub sender: String,
    /// The recipients still to deliver, as `local@domain`.
    pub recipients: Vec<String>,
    /// When the message was queued, in ms since the epoch.
    pub arrival_ms: u64,
    /// Failed delivery attempts so far.
    pub attempts: u32,
    /// When to try next, in ms since the epoch.
    pub next_attempt_ms: u64,
    /// The last temporary failure, for `waraka queue list`.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The id of the inbound transaction the message came from.
    #[serde(default)]
    pub origin: String,
    /// The length of `ID.eml` in bytes, checked at start-up so a truncated
    /// message is never delivered (0 in entries written before it existed).
    #[serde(default)]
    pub message_size: u64,
    /// What the sender asked to be told (RFC 3461), when it asked anything.
    #[serde(default, skip_serializing_if = "DsnRequests::is_empty")]
    pub dsn: DsnRequests,
    /// Whether the sender was told that delivery is late.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delay_notified: bool,
    /// The server a queue plugin chose for it, instead of routing by domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop: Option<NextHopConfig>,
    /// Held by the administrator (`waraka queue hold`): not attempted, not
    /// bounced and not expired until released.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// What the sender asked of TLS on the way on (RFC 8689).
    #[serde(default, skip_serializing_if = "TlsRequest::is_unstated")]
    pub tls_request: TlsRequest,
}

impl Entry {
    /// Who the message is from and for, and what its sender asked.
    pub fn envelope(&self) -> Envelope<'_> {
        Envelope {
            sender: &self.sender,
            recipients: &self.recipients,
            dsn: &self.dsn,
            tls_request: self.tls_request,
        }
    }

    /// Holds the entry, or releases it to be due at `now_ms`.
    pub fn set_held(&mut self, held: bool, now_ms: u64) {
        self.held = held;
        if !held {
            self.next_attempt_ms = now_ms;
        }
    }
}

/// Who a message is from and for, and what its sender asked.
#[derive(Clone, Copy, Debug)]
pub struct Envelope<'a> {
    /// The reverse-path as `local@domain`; empty for `<>`.
    pub sender: &'a str,
    /// The recipients, as `local@domain`.
    pub recipients: &'a [String],
    /// What the sender asked to be told (RFC 3461).
    pub dsn: &'a DsnRequests,
    /// What the sender asked of TLS on the way on (RFC 8689).
    pub tls_request: TlsRequest,
}

/// Which entries an administrator's `hold`, `release`, `bounce` or
/// `delete` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// The entry with this id.
    Id(String),
    /// Every entry for this destination domain.
    Domain(String),
    /// Every entry from this envelope sender (`<>`: bounces).
    Sender(String),
    /// Every entry.
    All,
}

impl Selection {
    /// Whether `entry` is one of those named.
    pub fn matches(&self, entry: &Entry) -> bool {
        match self {
            Selection::Id(wanted) => entry.id == *wanted,
            Selection::Domain(wanted) => entry.domain.eq_ignore_ascii_case(wanted),
            Selection::Sender(wanted) => entry.sender.eq_ignore_ascii_case(wanted.trim_matches(['<', '>'])),
            Selection::All => true,
        }
    }

    /// The selection as the words of a control request (`id ID`,
    /// `domain DOMAIN`, `sender ADDRESS`, `all`); [`Selection::parse`]
    /// reads them back.
    pub fn words(&self) -> String {
        match self {
            Selection::Id(id) => format!("id {id}"),
            Selection::Domain(domain) => format!("domain {domain}"),
            Selection::Sender(sender) => format!("sender <{}>", sender.trim_matches(['<', '>'])),
            Selection::All => "all".to_string(),
        }
    }

    /// The selection that `words` name, if they name one.
    pub fn parse(words: &[&str]) -> Option<Selection> {
        match words {
            ["id", id] => Some(Selection::Id(id.to_string())),
            ["domain", domain] => Some(Selection::Domain(domain.to_string())),
            ["sender", sender] => Some(Selection::Sender(sender.trim_matches(['<', '>']).to_string())),
            ["all"] => Some(Selection::All),
            _ => None,
        }
    }
}

/// What the start-up scan found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Entries to deliver, oldest first.
    pub entries: Vec<Entry>,
    /// Half-written messages and temporary files removed.
    pub discarded: Vec<String>,
    /// Unreadable entries moved to `corrupt/`.
    pub set_aside: Vec<String>,
}

/// The queue directory.
#[derive(Clone, Debug)]
pub struct QueueStore {
    dir: PathBuf,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn new_id(arrival_ms: u64) -> String {
    format!("{arrival_ms:013}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether `name`, from a command line, can name one file in a directory
/// the server keeps: not empty, not hidden (nor `..`), no path separator.
pub fn is_file_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\'])
}

impl QueueStore {
    /// Opens (creating it if needed) the queue in `dir` and recovers it:
    /// see the module documentation.
    pub fn open(dir: &Path) -> io::Result<(QueueStore, Recovery)> {
        fs::create_dir_all(dir)?;
        let store = QueueStore { dir: dir.to_path_buf() };
        let recovery = store.recover()?;
        Ok((store, recovery))
    }

    /// The queue in `dir` as it is, without recovering it (for inspection
    /// while a server may be running).
    pub fn at(dir: &Path) -> QueueStore {
        QueueStore { dir: dir.to_path_buf() }
    }

    /// The queue directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn message_path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.eml"))
    }

    fn entry_path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Where the message of `entry` is.
    pub fn message_path(&self, entry: &Entry) -> PathBuf {
        self.message_path_of(&entry.id)
    }

    fn tmp_path(&self) -> PathBuf {
        self.dir.join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4().simple()))
    }

    fn recover(&self) -> io::Result<Recovery> {
        let mut recovery = Recovery::default();
        let mut names: Vec<String> = fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in &names {
            let path = self.dir.join(name);
            if name.starts_with(TMP_PREFIX) {
                fs::remove_file(&path)?;
                recovery.discarded.push(name.clone());
            } else if let Some(id) = name.strip_suffix(".eml") {
                if !self.entry_path_of(id).exists() {
                    fs::remove_file(&path)?;
                    recovery.discarded.push(name.clone());
                }
            } else if let Some(id) = name.strip_suffix(".json") {
                match self.read_entry(id) {
                    Ok(entry) => recovery.entries.push(entry),
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "unreadable queue entry set aside");
                        self.set_aside(id)?;
                        recovery.set_aside.push(id.to_string());
                    }
                }
            }
        }
        for name in &recovery.discarded {
            tracing::warn!(file = name, "half-written queue file removed");
        }
        sync_dir(&self.dir)?;
        recovery
            .entries
            .sort_by(|a, b| (a.arrival_ms, &a.id).cmp(&(b.arrival_ms, &b.id)));
        Ok(recovery)
    }

    fn read_entry(&self, id: &str) -> io::Result<Entry> {
        let entry: Entry = serde_json::from_slice(&fs::read(self.entry_path_of(id))?).map_err(io::Error::other)?;
        if entry.id != id {
            return Err(io::Error::other(format!("the file names entry {:?}", entry.id)));
        }
        let size = fs::metadata(self.message_path_of(id))
            .map_err(|e| io::Error::other(format!("its message file is missing: {e}")))?
            .len();
        if entry.message_size != 0 && size != entry.message_size {
            return Err(io::Error::other(format!(
                "its message file has {size} bytes, not {}",
                entry.message_size
            )));
        }
        Ok(entry)
    }

    fn set_aside(&self, id: &str) -> io::Result<()> {
        let corrupt = self.dir.join(CORRUPT_DIR);
        fs::create_dir_all(&corrupt)?;
        for path in [self.entry_path_of(id), self.message_path_of(id)] {
            if path.exists() {
                fs::rename(&path, corrupt.join(path.file_name().expect("queue file name")))?;
            }
        }
        sync_dir(&corrupt)
    }

    /// Writes `source` to a temporary file and `fsync`s it; returns its path
    /// and length.
    fn write_tmp(&self, mut source: impl Read) -> io::Result<(PathBuf, u64)> {
        let tmp = self.tmp_path();
        let result = (|| {
            let mut file = File::options().write(true).create_new(true).open(&tmp)?;
            let written = io::copy(&mut source, &mut file)?;
            file.flush()?;
            file.sync_all()?;
            Ok(written)
        })();
        match result {
            Ok(written) => Ok((tmp, written)),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn write_entry_file(&self, entry: &Entry) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(entry).map_err(io::Error::other)?;
        let (tmp, _) = self.write_tmp(json.as_slice())?;
        fs::rename(&tmp, self.entry_path_of(&entry.id)).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }

    /// Queues `message` once per destination domain of the envelope's
    /// recipients (grouped in order of first appearance). Every file is
    /// durable when this returns; on error nothing of this message remains.
    pub fn enqueue(
        &self,
        message: impl Read,
        envelope: Envelope<'_>,
        origin: &str,
        hop: Option<&NextHopConfig>,
    ) -> io::Result<Vec<Entry>> {
        let Envelope {
            sender,
            recipients,
            dsn,
            tls_request,
        } = envelope;
        let arrival_ms = now_ms();
        let mut by_domain: Vec<(String, Vec<String>)> = Vec::new();
        for rcpt in recipients {
            let domain = rcpt.rsplit_once('@').map_or("", |(_, d)| d).to_ascii_lowercase();
            match by_domain.iter_mut().find(|(d, _)| *d == domain) {
                Some((_, list)) => list.push(rcpt.clone()),
                None => by_domain.push((domain, vec![rcpt.clone()])),
            }
        }
        let (tmp, message_size) = self.write_tmp(message)?;
        let mut made: Vec<Entry> = Vec::new();
        let result = (|| {
            for (domain, recipients) in by_domain {
                let entry = Entry {
                    id: new_id(arrival_ms),
                    domain,
                    sender: sender.to_string(),
                    dsn: dsn.for_recipients(&recipients),
                    delay_notified: false,
                    recipients,
                    arrival_ms,
                    attempts: 0,
                    next_attempt_ms: arrival_ms,
                    last_error: None,
                    origin: origin.to_string(),
                    message_size,
                    hop: hop.cloned(),
                    held: false,
                    tls_request,
                };
                fs::hard_link(&tmp, self.message_path(&entry))?;
                made.push(entry.clone());
                self.write_entry_file(&entry)?;
            }
            sync_dir(&self.dir)
        })();
        let _ = fs::remove_file(&tmp);
        if let Err(e) = result {
            for entry in &made {
                let _ = fs::remove_file(self.entry_path_of(&entry.id));
                let _ = fs::remove_file(self.message_path(entry));
            }
            let _ = sync_dir(&self.dir);
            return Err(e);
        }
        Ok(made)
    }

    /// Saves the changed retry state or recipients of `entry`, atomically.
    pub fn update(&self, entry: &Entry) -> io::Result<()> {
        self.write_entry_file(entry)?;
        sync_dir(&self.dir)
    }

    /// Makes a new entry for `recipients` of `entry` (sharing its message),
    /// with the given retry state; the caller updates or removes `entry`.
    pub fn split(&self, entry: &Entry, recipients: Vec<String>) -> io::Result<Entry> {
        let split = Entry {
            id: new_id(entry.arrival_ms),
            dsn: entry.dsn.for_recipients(&recipients),
            recipients,
            ..entry.clone()
        };
        fs::hard_link(self.message_path(entry), self.message_path(&split))?;
        self.write_entry_file(&split).inspect_err(|_| {
            let _ = fs::remove_file(self.message_path(&split));
        })?;
        sync_dir(&self.dir)?;
        Ok(split)
    }

    /// Removes `entry` (delivered, bounced or deleted): the JSON first, so a
    /// crash in between leaves only a message file that start-up removes.
    pub fn remove(&self, entry: &Entry) -> io::Result<()> {
        match fs::remove_file(self.entry_path_of(&entry.id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match fs::remove_file(self.message_path(entry)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        sync_dir(&self.dir)
    }

    /// Whether the entry `id` is still queued (`waraka queue delete` may
    /// remove entries under a running server).
    pub fn contains(&self, id: &str) -> bool {
        self.entry_path_of(id).exists()
    }

    /// The entry `id` as it is on disk now.
    pub fn get(&self, id: &str) -> io::Result<Entry> {
        if !is_file_name(id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a queue id"));
        }
        self.read_entry(id)
    }

    /// Every entry on disk now, oldest first (for `waraka queue list`).
    pub fn list(&self) -> io::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        let dirents = match fs::read_dir(&self.dir) {
            Ok(dirents) => dirents,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(entries),
            Err(e) => return Err(e),
        };
        for dirent in dirents {
            let name = dirent?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json"))
                && !id.starts_with(TMP_PREFIX)
                && let Ok(entry) = self.read_entry(id)
            {
                entries.push(entry);
            }
        }
        entries.sort_by(|a, b| (a.arrival_ms, &a.id).cmp(&(b.arrival_ms, &b.id)));
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waraka_protocol::{MessageRequest, RecipientRequest};

    fn recipients(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn envelope<'a>(sender: &'a str, recipients: &'a [String], dsn: &'a DsnRequests) -> Envelope<'a> {
        Envelope {
            sender,
            recipients,
            dsn,
            tls_request: TlsRequest::Unstated,
        }
    }

    #[test]
    fn one_entry_per_domain_sharing_one_message() {
        let dir = tempfile::tempdir().unwrap();
        let (store, recovery) = QueueStore::open(dir.path()).unwrap();
        assert_eq!(recovery, Recovery::default());
        let rcpts = recipients(&["a@One.test", "b@two.test", "c@one.test"]);
        let address = |text: &str| waraka_protocol::Address::parse_with_params(text, false).unwrap();
        let dsn = DsnRequests {
            message: MessageRequest::from_mail(&address("<s@here.test> RET=HDRS ENVID=e1")).unwrap(),
            recipients: [
                ("b@two.test", "<b@two.test> NOTIFY=NEVER"),
                ("c@one.test", "<c@one.test> NOTIFY=SUCCESS ORCPT=rfc822;c+2B1@one.test"),
            ]
            .into_iter()
            .map(|(r, text)| (r.to_string(), RecipientRequest::from_rcpt(&address(text)).unwrap()))
            .collect(),
        };
        let entries = store
            .enqueue(
                &b"Subject: x\r\n\r\nbody\r\n"[..],
                Envelope {
                    tls_request: TlsRequest::Required,
                    ..envelope("s@here.test", &rcpts, &dsn)
                },
                "T.1",
                None,
            )
            .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].domain, "one.test");
        assert_eq!(entries[0].recipients, recipients(&["a@One.test", "c@one.test"]));
        assert_eq!(entries[1].recipients, recipients(&["b@two.test"]));
        assert_eq!(
            entries[0].dsn.message.envid.as_deref(),
            Some("e1"),
            "each entry keeps the message's requests"
        );
        assert_eq!(entries[1].dsn.message.envid.as_deref(), Some("e1"));
        assert_eq!(entries[1].tls_request, TlsRequest::Required, "and its TLS request");
        let only = |e: &Entry| e.dsn.recipients.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            (only(&entries[0]), only(&entries[1])),
            (recipients(&["c@one.test"]), recipients(&["b@two.test"]))
        );
        assert!(entries[0].dsn.recipient("c@one.test").wants_success());
        assert!(
            entries[0].dsn.recipient("a@One.test").wants_failure(),
            "no NOTIFY: failures are reported"
        );
        assert_eq!(
            fs::read(store.message_path(&entries[1])).unwrap(),
            b"Subject: x\r\n\r\nbody\r\n"
        );
        let files = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 4, "two messages (hard links) and two entries, no temporary file");

        let by_domain = |mut list: Vec<Entry>| {
            list.sort_by(|a, b| a.domain.cmp(&b.domain));
            list
        };
        let (_, recovery) = QueueStore::open(dir.path()).unwrap();
        assert_eq!(by_domain(recovery.entries), entries);
        assert_eq!(by_domain(store.list().unwrap()), entries);
    }

    #[test]
    fn updates_splits_and_removals_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = QueueStore::open(dir.path()).unwrap();
        let rcpts = recipients(&["a@d.test", "b@d.test"]);
        let mut entry = store
            .enqueue(
                &b"m\r\n"[..],
                envelope("", &rcpts, &DsnRequests::default()),
                "T.2",
                None,
            )
            .unwrap()
            .remove(0);
        let mut later = store.split(&entry, recipients(&["b@d.test"])).unwrap();
        later.attempts = 1;
        later.last_error = Some("451 try later".into());
        store.update(&later).unwrap();
        entry.recipients.truncate(1);
        store.remove(&entry).unwrap();
        let (store, recovery) = QueueStore::open(dir.path()).unwrap();
        assert_eq!(recovery.entries, vec![later.clone()]);
        assert_eq!(
            fs::read(store.message_path(&later)).unwrap(),
            b"m\r\n",
            "the split kept the message"
        );
        assert_eq!(store.get(&later.id).unwrap(), later);
        assert!(store.get("../x").is_err());
    }

    #[test]
    fn half_written_and_corrupt_files_are_removed_or_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = QueueStore::open(dir.path()).unwrap();
        let good = store
            .enqueue(
                &b"m\r\n"[..],
                envelope("s@x.test", &recipients(&["a@d.test"]), &DsnRequests::default()),
                "T.3",
                None,
            )
            .unwrap();
        let torn = store
            .enqueue(
                &b"m\r\n"[..],
                envelope("s@x.test", &recipients(&["a@e.test"]), &DsnRequests::default()),
                "T.4",
                None,
            )
            .unwrap();
        let truncated = store
            .enqueue(
                &b"a whole message\r\n"[..],
                envelope("s@x.test", &recipients(&["a@f.test"]), &DsnRequests::default()),
                "T.5",
                None,
            )
            .unwrap();
        let eml = store.message_path(&truncated[0]);
        fs::write(&eml, b"a whole").unwrap();
        let json = store.entry_path_of(&torn[0].id);
        let text = fs::read(&json).unwrap();
        fs::write(&json, &text[..text.len() / 2]).unwrap();
        fs::write(dir.path().join("0000000000001-orphan.eml"), b"half").unwrap();
        fs::write(dir.path().join(".tmp-123"), b"partial").unwrap();

        let (_, recovery) = QueueStore::open(dir.path()).unwrap();
        assert_eq!(recovery.entries, good);
        assert_eq!(
            recovery.discarded,
            vec![".tmp-123".to_string(), "0000000000001-orphan.eml".to_string()]
        );
        let mut set_aside = vec![torn[0].id.clone(), truncated[0].id.clone()];
        set_aside.sort();
        assert_eq!(recovery.set_aside, set_aside, "a torn entry and a truncated message");
        assert!(
            dir.path()
                .join(CORRUPT_DIR)
                .join(format!("{}.json", torn[0].id))
                .exists()
        );
        assert!(!json.exists());
    }
}
