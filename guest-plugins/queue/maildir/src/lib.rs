//! `queue/maildir`: durable local delivery into Maildir folders.
//!
//! Each recipient gets its own copy in `<root>/<domain>/<local part>/new/`,
//! with `Return-Path:` and `Delivered-To:` on top. A copy is written under
//! `tmp/`, `fsync`ed, renamed into `new/`, and `new/` itself is `fsync`ed
//! before the next recipient; only when every copy is safe does the plugin
//! answer `ok`, so a `250` after DATA means the message is on disk.
//!
//! Each copy is one host call, `files::save-message`: the host streams the
//! message from its spool into `tmp/`, fsyncs it, renames it into `new/`
//! and fsyncs `new/` (shared with concurrent deliveries into the same
//! folder), so the plugin never copies the message and a copy costs one
//! trip to the file system instead of six WASI calls. Only a folder's first
//! delivery uses the WASI file-system interface, to create `new/`, `cur/`
//! and `tmp/`.
//!
//! The root is the directory granted as `dir:maildir` (seen as `/maildir`).
//! `config/queue/maildir.ini` may set `folder = {domain}/{local}` (the layout
//! below the root; `{local}`, `{domain}` and `{address}` are replaced).

use std::time::{SystemTime, UNIX_EPOCH};
use waraka_plugin::{Address, Error, Hook, Plugin, Verdict, envelope, files, path_segment, session};
use wasip2::filesystem::preopens::get_directories;
use wasip2::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};

/// The grant's name, and where WASI mounts it.
const GRANT: &str = "maildir";
const ROOT: &str = "/maildir";

struct Maildir;

fn folder_template() -> String {
    waraka_plugin::setting("queue/maildir.ini", "folder").unwrap_or_else(|| "{domain}/{local}".into())
}

/// The recipient's folder, relative to the root.
fn mailbox(template: &str, rcpt: &Address) -> String {
    let domain = path_segment(&rcpt.domain.to_ascii_lowercase());
    let local = path_segment(&rcpt.local_part);
    let address = path_segment(&rcpt.to_addr_spec());
    let parts: Vec<String> = template
        .split('/')
        .map(|part| {
            path_segment(
                &part
                    .replace("{domain}", &domain)
                    .replace("{local}", &local)
                    .replace("{address}", &address),
            )
        })
        .collect();
    parts.join("/")
}

/// A file-system error with what was being done, for the log.
fn failed(what: &str, path: &str) -> impl FnOnce(ErrorCode) -> String {
    move |e| format!("{what} {path}: {e}")
}

fn open_dir(root: &Descriptor, path: &str) -> Result<Descriptor, String> {
    root.open_at(PathFlags::empty(), path, OpenFlags::DIRECTORY, DescriptorFlags::READ)
        .map_err(failed("opening", path))
}

/// The directory `path` (below `root`) fsynced, so its new entries survive a crash.
fn sync_dir(root: &Descriptor, path: &str) -> Result<(), String> {
    let dir = if path.is_empty() {
        None
    } else {
        Some(open_dir(root, path)?)
    };
    dir.as_ref().unwrap_or(root).sync().map_err(failed("syncing", path))
}

/// Creates `dir` and its missing parents below `root`, fsyncing each parent
/// that got a new entry.
fn ensure_dir(root: &Descriptor, dir: &str) -> Result<(), String> {
    let mut end = 0;
    while end < dir.len() {
        end = dir[end + 1..].find('/').map_or(dir.len(), |i| end + 1 + i);
        let path = &dir[..end];
        match root.create_directory_at(path) {
            Ok(()) => sync_dir(root, path.rsplit_once('/').map_or("", |(parent, _)| parent))?,
            Err(ErrorCode::Exist) => {}
            Err(e) => return Err(failed("creating", path)(e)),
        }
    }
    Ok(())
}

/// The granted root, through WASI.
fn root() -> Result<Descriptor, String> {
    get_directories()
        .into_iter()
        .find(|(_, name)| name == ROOT)
        .map(|(dir, _)| dir)
        .ok_or_else(|| format!("no directory granted as {ROOT} (grant dir:{GRANT})"))
}

/// One copy into `folder` (relative to the root), stored by the host under
/// `tmp/` and renamed into `new/`, both made durable. A folder that does not
/// exist yet is created first.
fn deliver(rcpt: &Address, folder: &str, unique: &str, sender: &str) -> Result<(), String> {
    let tmp = format!("{folder}/tmp/{unique}");
    let target = format!("{folder}/new/{unique}");
    let prefix = format!("Return-Path: <{sender}>\r\nDelivered-To: {}\r\n", rcpt.to_addr_spec());
    let save = || files::save_message(GRANT, &tmp, &target, prefix.as_bytes());
    match save() {
        Err(Error::NotFound) => {
            let root = root()?;
            // `tmp/` last: a copy that finds `tmp/` finds `new/` too, even
            // while another session is still creating the folder.
            for sub in ["new", "cur", "tmp"] {
                ensure_dir(&root, &format!("{folder}/{sub}"))?;
            }
            save()
        }
        other => other,
    }
    .map(drop)
    .map_err(|e| match e {
        Error::NotGranted => format!("no directory granted as {ROOT} (grant dir:{GRANT})"),
        e => format!("storing {target}: {e:?}"),
    })
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
