//! Delivery status notifications (RFC 3464): the `multipart/report` sent
//! back to the sender for recipients that could not be delivered.

use crate::capabilities::{CapabilityError, DkimKeys};
use crate::queue::Entry;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The most of the original header a bounce quotes.
const MAX_QUOTED_HEADER: usize = 64 * 1024;

/// What went wrong for one recipient, as a DSN reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The enhanced status code (`5.1.1`, `4.4.1`).
    pub status: String,
    /// The remote server's reply, or what happened locally.
    pub diagnostic: String,
    /// The server that answered, when one did.
    pub remote: Option<String>,
    /// Whether `diagnostic` is a reply of the remote server (`smtp;`) rather
    /// than a local explanation (`x-local;`).
    pub from_remote: bool,
}

impl Failure {
    /// A failure found locally (DNS, connection, policy), not said by a server.
    pub fn local(status: &str, diagnostic: impl Into<String>) -> Failure {
        Failure {
            status: status.to_string(),
            diagnostic: diagnostic.into(),
            remote: None,
            from_remote: false,
        }
    }
}

/// One line of printable ASCII: DSN fields allow nothing else.
fn field_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .collect::<String>()
        .trim()
        .to_string()
}

/// The header of the queued message at `path` (up to the blank line, at most 64 KiB).
pub fn original_header(path: &Path) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    File::open(path)?
        .take(MAX_QUOTED_HEADER as u64)
        .read_to_end(&mut head)?;
    if let Some(end) = memchr::memmem::find(&head, b"\r\n\r\n") {
        head.truncate(end + 2);
    } else if let Some(cut) = memchr::memrchr(b'\n', &head) {
        head.truncate(cut + 1);
    }
    Ok(head)
}

fn rfc2822(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc2822()
}

/// `message` with a DKIM signature on top, made with the key of
/// `hostname`'s domain or a parent (the DSN's `From` is
/// `MAILER-DAEMON@hostname`, so it aligns). Unsigned when there is no key,
/// and when signing fails (logged): a bounce is never held back for want of
/// a signature.
pub fn signed(message: Vec<u8>, hostname: &str, keys: &DkimKeys) -> Vec<u8> {
    match keys.sign(hostname, &message) {
        Ok(signature) => {
            let mut out = format!("DKIM-Signature: {}\r\n", signature.value).into_bytes();
            out.extend_from_slice(&message);
            out
        }
        Err(CapabilityError::NotFound | CapabilityError::Invalid(_)) => message,
        Err(e) => {
            tracing::warn!(hostname, error = %e, "bounce sent unsigned: DKIM signing failed");
            message
        }
    }
}

/// The DSN for `failed` recipients of `entry`, as a message ready to queue
/// (CRLF lines) from `<>` to the entry's sender. `header` is the original
/// message's header, quoted as `text/rfc822-headers`.
pub fn dsn(hostname: &str, entry: &Entry, failed: &[(String, Failure)], header: &[u8]) -> Vec<u8> {
    let boundary = format!("{}/{hostname}", uuid::Uuid::new_v4().simple());
    let now = crate::queue::now_ms();
    let mut out = String::new();
    let mut line = |text: &str| {
        out.push_str(text);
        out.push_str("\r\n");
    };
    line(&format!("From: Mail Delivery System <MAILER-DAEMON@{hostname}>"));
    line(&format!("To: <{}>", entry.sender));
    line("Subject: Undelivered Mail Returned to Sender");
    line(&format!("Date: {}", rfc2822(now)));
    line(&format!("Message-ID: <{}@{hostname}>", uuid::Uuid::new_v4().simple()));
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\""
    ));
    line("");
    line("This is a MIME-encapsulated message.");
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/plain; charset=us-ascii");
    line("");
    line(&format!("This is the mail system at host {hostname}."));
    line("");
    line("Your message could not be delivered to one or more recipients.");
    line("It is attached below.");
    line("");
    for (recipient, failure) in failed {
        line(&format!(
            "<{}>: {}",
            field_text(recipient),
            field_text(&failure.diagnostic)
        ));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: message/delivery-status");
    line("");
    line(&format!("Reporting-MTA: dns; {hostname}"));
    line(&format!("X-Waraka-Queue-ID: {}", entry.id));
    line(&format!("Arrival-Date: {}", rfc2822(entry.arrival_ms)));
    for (recipient, failure) in failed {
        line("");
        line(&format!("Final-Recipient: rfc822; {}", field_text(recipient)));
        line("Action: failed");
        line(&format!("Status: {}", field_text(&failure.status)));
        if let Some(remote) = &failure.remote {
            line(&format!("Remote-MTA: dns; {}", field_text(remote)));
        }
        let kind = if failure.from_remote { "smtp" } else { "x-local" };
        line(&format!("Diagnostic-Code: {kind}; {}", field_text(&failure.diagnostic)));
        line(&format!("Last-Attempt-Date: {}", rfc2822(now)));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/rfc822-headers");
    line("");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(header);
    if !header.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dsn_names_each_failed_recipient_and_quotes_the_header() {
        let entry = Entry {
            id: "0000000000001-abc".into(),
            domain: "d.test".into(),
            sender: "alice@s.test".into(),
            recipients: vec!["bob@d.test".into()],
            arrival_ms: 1_700_000_000_000,
            attempts: 0,
            next_attempt_ms: 0,
            last_error: None,
            origin: "T".into(),
            message_size: 0,
        };
        let failed = vec![(
            "bob@d.test".to_string(),
            Failure {
                status: "5.1.1".into(),
                diagnostic: "550 5.1.1 No such user\r\nhere".into(),
                remote: Some("mx.d.test".into()),
                from_remote: true,
            },
        )];
        let text = String::from_utf8(dsn("me.test", &entry, &failed, b"Subject: hi\r\nFrom: a@s.test\r\n")).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text.contains("Final-Recipient: rfc822; bob@d.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 No such user??here\r\n"));
        assert!(text.contains("Remote-MTA: dns; mx.d.test\r\n"));
        assert!(text.contains("text/rfc822-headers\r\n\r\nSubject: hi\r\nFrom: a@s.test\r\n\r\n--"));
        assert!(text.ends_with("--\r\n"));
        assert!(text.lines().all(|l| !l.contains('\n')));
    }

    #[test]
    fn the_quoted_header_stops_at_the_blank_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.eml");
        std::fs::write(&path, b"A: 1\r\nB: 2\r\n\r\nbody\r\n").unwrap();
        assert_eq!(original_header(&path).unwrap(), b"A: 1\r\nB: 2\r\n");
    }
}
