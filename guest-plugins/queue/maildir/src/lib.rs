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
//! trip to the file system instead of six WASI calls. A folder's first
//! delivery creates `new/`, `cur/` and `tmp/` (`files::make-dirs`, each
//! new directory made durable).
//!
//! The root is the directory granted as `dir:maildir`.
//! `config/queue/maildir.ini` may set `folder = {domain}/{user}` (the layout
//! below the root; `{user}` (the local part without a subaddress's detail,
//! see `config/recipient_delimiter`), `{local}` (all of it), `{detail}`,
//! `{domain}` and `{address}` are replaced).

use std::time::{SystemTime, UNIX_EPOCH};
use waraka_plugin::{Address, Error, Hook, Plugin, Verdict, envelope, path_segment, session, subaddress};

/// The grant's name (`dir:maildir`).
const GRANT: &str = "maildir";

struct Maildir;

fn folder_template() -> String {
    waraka_plugin::setting("queue/maildir.ini", "folder").unwrap_or_else(|| "{domain}/{user}".into())
}

/// The recipient's folder, relative to the root; `delimiters` split the
/// local part into user and detail.
fn mailbox(template: &str, rcpt: &Address, delimiters: &str) -> String {
    let (user, detail) = subaddress::split(&rcpt.local_part, delimiters);
    let fields = [
        ("{domain}", rcpt.domain.to_ascii_lowercase()),
        ("{local}", rcpt.local_part.clone()),
        ("{user}", user.to_string()),
        ("{detail}", detail.unwrap_or_default().to_string()),
        ("{address}", rcpt.to_addr_spec()),
    ]
    .map(|(name, value)| (name, path_segment(&value)));
    let parts: Vec<String> = template
        .split('/')
        .map(|part| {
            let filled = fields
                .iter()
                .fold(part.to_string(), |text, (name, value)| text.replace(name, value));
            path_segment(&filled)
        })
        .collect();
    parts.join("/")
}

/// One copy into `folder` (relative to the root), stored by the host under
/// `tmp/` and renamed into `new/`, both made durable. A folder that does not
/// exist yet is created first.
fn deliver(rcpt: &Address, folder: &str, unique: &str, sender: &str) -> Result<(), String> {
    let tmp = format!("{folder}/tmp/{unique}");
    let target = format!("{folder}/new/{unique}");
    let prefix = format!("Return-Path: <{sender}>\r\nDelivered-To: {}\r\n", rcpt.to_addr_spec());
    // `tmp/` last: a copy that finds `tmp/` finds `new/` too, even while
    // another session is still creating the folder.
    let folders = ["new", "cur", "tmp"].map(|sub| format!("{folder}/{sub}"));
    waraka_plugin::save_message_making(GRANT, &tmp, &target, prefix.as_bytes(), &folders)
        .map(drop)
        .map_err(|e| match e {
            Error::NotGranted => format!("no directory granted as dir:{GRANT}"),
            e => format!("storing {target}: {e:?}"),
        })
}

impl Plugin for Maildir {
    const NAME: &'static str = "queue/maildir";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Queue];

    fn queue() -> Verdict {
        let template = folder_template();
        let delimiters = subaddress::delimiters();
        let sender = envelope::sender().map(|s| s.to_addr_spec()).unwrap_or_default();
        let txid = session::transaction_id().unwrap_or_else(session::connection_id);
        let host = path_segment(&session::hostname());
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for (i, rcpt) in envelope::recipients().iter().enumerate() {
            let unique = format!("{secs}.{}_{i}.{host}", path_segment(&txid));
            if let Err(e) = deliver(rcpt, &mailbox(&template, rcpt, &delimiters), &unique, &sender) {
                waraka_plugin::error!("delivery to {rcpt} failed: {e}");
                return Verdict::denysoft_code(451, "4.3.0", "Mailbox temporarily unavailable");
            }
        }
        Verdict::ok_with(&format!("Message queued as {txid}"))
    }
}

waraka_plugin::export!(Maildir);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subaddress_shares_its_users_folder() {
        let rcpt = |local: &str| Address {
            local_part: local.into(),
            domain: "Example.COM".into(),
            params: Vec::new(),
        };
        assert_eq!(
            mailbox("{domain}/{user}", &rcpt("alice+news"), "+"),
            "example.com/alice"
        );
        assert_eq!(
            mailbox("{domain}/{user}", &rcpt("alice+news"), ""),
            "example.com/alice+news"
        );
        assert_eq!(
            mailbox("{domain}/{local}", &rcpt("alice+news"), "+"),
            "example.com/alice+news"
        );
        assert_eq!(mailbox("{user}/{detail}", &rcpt("alice+news"), "+"), "alice/news");
        assert_eq!(mailbox("{domain}/{user}", &rcpt("../x"), "+"), "example.com/_x");
    }
}
