//! `queue/maildir`: durable local delivery into Maildir folders.
//!
//! Each recipient gets its own copy in `<root>/<domain>/<local part>/new/`,
//! with `Return-Path:` and `Delivered-To:` on top. A copy is written under
//! `tmp/`, `fsync`ed, renamed into `new/`, and `new/` itself is `fsync`ed
//! before the next recipient; only when every copy is safe does the plugin
//! answer `ok`, so a `250` after DATA means the message is on disk.
//!
//! It uses the WASI file-system interface directly (the `wasip2` crate)
//! rather than `std::fs`: every file-system call is a trip to one of the
//! host's blocking threads, and `std` would make about twenty per copy
//! (existence checks, a write per formatted piece, 4 KiB writes); this way
//! a small message costs six (create, write, fsync, rename, open and fsync
//! `new/`).
//!
//! The root is the directory granted as `dir:maildir` (seen as `/maildir`).
//! `config/queue/maildir.ini` may set `folder = {domain}/{local}` (the layout
//! below the root; `{local}`, `{domain}` and `{address}` are replaced).

use std::time::{SystemTime, UNIX_EPOCH};
use waraka_plugin::{Address, Hook, Plugin, Verdict, envelope, message, path_segment, session};
use wasip2::filesystem::preopens::get_directories;
use wasip2::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};

const ROOT: &str = "/maildir";
const CHUNK: u32 = 64 * 1024;

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

/// Writes all of `bytes` at `*offset`, advancing it.
fn write_all(file: &Descriptor, mut bytes: &[u8], offset: &mut u64, path: &str) -> Result<(), String> {
    while !bytes.is_empty() {
        let n = file.write(bytes, *offset).map_err(failed("writing", path))?;
        *offset += n;
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// One copy into `folder` (relative to `root`): written under `tmp/` in as
/// few host calls as the message allows (each is a trip to a blocking
/// thread), fsynced, renamed into `new/`, and `new/` fsynced.
fn deliver(root: &Descriptor, rcpt: &Address, folder: &str, unique: &str, sender: &str) -> Result<(), String> {
    let tmp = format!("{folder}/tmp/{unique}");
    let create = || {
        root.open_at(
            PathFlags::empty(),
            &tmp,
            OpenFlags::CREATE | OpenFlags::EXCLUSIVE,
            DescriptorFlags::WRITE,
        )
    };
    let file = match create() {
        Err(ErrorCode::NoEntry) => {
            // `tmp/` last: a copy that finds `tmp/` finds `new/` too, even
            // while another session is still creating the folder.
            for sub in ["new", "cur", "tmp"] {
                ensure_dir(root, &format!("{folder}/{sub}"))?;
            }
            create()
        }
        other => other,
    }
    .map_err(failed("creating", &tmp))?;
    let mut pending = format!("Return-Path: <{sender}>\r\nDelivered-To: {}\r\n", rcpt.to_addr_spec()).into_bytes();
    let (mut read, mut written) = (0u64, 0u64);
    loop {
        let chunk = message::read(read, CHUNK).map_err(|e| format!("reading the message: {e}"))?;
        if chunk.is_empty() {
            break;
        }
        read += chunk.len() as u64;
        pending.extend_from_slice(&chunk);
        write_all(&file, &pending, &mut written, &tmp)?;
        pending.clear();
    }
    write_all(&file, &pending, &mut written, &tmp)?;
    file.sync().map_err(failed("syncing", &tmp))?;
    drop(file);
    let new = format!("{folder}/new");
    let target = format!("{new}/{unique}");
    let rename = || root.rename_at(&tmp, root, &target);
    match rename() {
        Err(ErrorCode::NoEntry) => {
            ensure_dir(root, &new).and_then(|()| rename().map_err(failed("renaming to", &target)))
        }
        other => other.map_err(failed("renaming to", &target)),
    }?;
    sync_dir(root, &new)
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
        let Some(root) = get_directories()
            .into_iter()
            .find(|(_, name)| name == ROOT)
            .map(|(dir, _)| dir)
        else {
            waraka_plugin::error!("no directory granted as {ROOT} (grant dir:maildir)");
            return Verdict::denysoft_code(451, "4.3.0", "Mailbox temporarily unavailable");
        };
        for (i, rcpt) in envelope::recipients().iter().enumerate() {
            let unique = format!("{secs}.{}_{i}.{host}", path_segment(&txid));
            if let Err(e) = deliver(&root, rcpt, &mailbox(&template, rcpt), &unique, &sender) {
                waraka_plugin::error!("delivery to {rcpt} failed: {e}");
                return Verdict::denysoft_code(451, "4.3.0", "Mailbox temporarily unavailable");
            }
        }
        Verdict::ok_with(&format!("Message queued as {txid}"))
    }
}

waraka_plugin::export!(Maildir);
