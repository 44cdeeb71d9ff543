//! `queue/maildir`: durable local delivery into Maildir folders.
//!
//! Each recipient gets its own copy in `<root>/<domain>/<local part>/new/`,
//! with `Return-Path:` and `Delivered-To:` on top. A copy is written under
//! `tmp/`, `fsync`ed, renamed into `new/`, and `new/` itself is `fsync`ed
//! before the next recipient; only when every copy is safe does the plugin
//! answer `ok`, so a `250` after DATA means the message is on disk.
//!
//! The root is the directory granted as `dir:maildir` (seen as `/maildir`).
//! `config/queue/maildir.ini` may set `folder = {domain}/{local}` (the layout
//! below the root; `{local}`, `{domain}` and `{address}` are replaced).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use waraka_plugin::{Address, Hook, Plugin, Verdict, envelope, message, path_segment, session};

const ROOT: &str = "/maildir";
const CHUNK: u32 = 64 * 1024;

struct Maildir;

fn folder_template() -> String {
    waraka_plugin::setting("queue/maildir.ini", "folder").unwrap_or_else(|| "{domain}/{local}".into())
}

fn mailbox(template: &str, rcpt: &Address) -> PathBuf {
    let domain = path_segment(&rcpt.domain.to_ascii_lowercase());
    let local = path_segment(&rcpt.local_part);
    let address = path_segment(&rcpt.to_addr_spec());
    let mut path = PathBuf::from(ROOT);
    for part in template.split('/') {
        let part = part
            .replace("{domain}", &domain)
            .replace("{local}", &local)
            .replace("{address}", &address);
        path.push(path_segment(&part));
    }
    path
}

/// Creates `dir` (and parents) and fsyncs each parent whose entry was new.
fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn deliver(rcpt: &Address, folder: &Path, unique: &str, sender: &str) -> std::io::Result<()> {
    for sub in ["tmp", "new", "cur"] {
        ensure_dir(&folder.join(sub))?;
    }
    let tmp = folder.join("tmp").join(unique);
    let mut file = File::create(&tmp)?;
    write!(
        file,
        "Return-Path: <{sender}>\r\nDelivered-To: {}\r\n",
        rcpt.to_addr_spec()
    )?;
    let mut offset = 0u64;
    loop {
        let chunk = message::read(offset, CHUNK).map_err(|e| std::io::Error::other(e.to_string()))?;
        if chunk.is_empty() {
            break;
        }
        file.write_all(&chunk)?;
        offset += chunk.len() as u64;
    }
    file.sync_all()?;
    drop(file);
    let new_dir = folder.join("new");
    fs::rename(&tmp, new_dir.join(unique))?;
    File::open(&new_dir)?.sync_all()
}

impl Plugin for Maildir {
    const NAME: &'static str = "queue/maildir";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Queue];

    fn queue() -> Verdict {
        let template = folder_template();
        let sender = envelope::sender().map(|s| s.to_addr_spec()).unwrap_or_default();
        let txid = session::transaction_id().unwrap_or_else(session::connection_id);
        let host = path_segment(&session::hostname());
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for (i, rcpt) in envelope::recipients().iter().enumerate() {
            let unique = format!("{secs}.{}_{i}.{host}", path_segment(&txid));
            if let Err(e) = deliver(rcpt, &mailbox(&template, rcpt), &unique, &sender) {
                waraka_plugin::error!("delivery to {rcpt} failed: {e}");
                return Verdict::denysoft_code(451, "4.3.0", "Mailbox temporarily unavailable");
            }
        }
        Verdict::ok_with(&format!("Message queued as {txid}"))
    }
}

waraka_plugin::export!(Maildir);
