//! Delivery status notifications (RFC 3464): the `multipart/report` sent
//! back to the sender for recipients that could not be delivered, are late,
//! or were delivered or relayed when the sender asked (RFC 3461 `NOTIFY`).

use super::RemoteReply;
use crate::capabilities::{CapabilityError, DkimKeys};
use crate::protocol::{DsnRequests, Return};
use crate::queue::Entry;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The most of the original header a notice quotes.
const MAX_QUOTED_HEADER: usize = 64 * 1024;
/// The largest message a failure notice returns whole (`RET=FULL`); a larger
/// one is returned as its header.
pub const MAX_RETURNED_MESSAGE: u64 = 1024 * 1024;

/// What went wrong for one recipient, as a DSN reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
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

impl Report {
    /// What the server `host` said for a recipient: its `reply`, with the
    /// reply's enhanced status (or its class's generic one).
    pub fn from_reply(host: &str, reply: &RemoteReply) -> Report {
        Report {
            status: status_of(reply),
            diagnostic: reply.to_string(),
            remote: Some(host.to_string()),
            from_remote: true,
        }
    }

    /// A recipient whose mail was delivered here.
    pub fn delivered() -> Report {
        Report::local("2.0.0", "delivered")
    }

    /// A recipient handed to `host`, which answered `reply` (`250 2.0.0 …`).
    pub fn handed_on(host: &str, reply: &str) -> Report {
        let status = reply
            .split_whitespace()
            .nth(1)
            .filter(|s| s.starts_with("2.") && s.split('.').count() == 3)
            .unwrap_or("2.0.0");
        Report {
            status: status.to_string(),
            diagnostic: reply.to_string(),
            remote: Some(host.to_string()),
            from_remote: true,
        }
    }

    /// Whether retrying will not help (a `5.x.x` status).
    pub fn is_permanent(&self) -> bool {
        self.status.starts_with('5')
    }

    /// A failure found locally (DNS, connection, policy), not said by a server.
    pub fn local(status: &str, diagnostic: impl Into<String>) -> Report {
        Report {
            status: status.to_string(),
            diagnostic: diagnostic.into(),
            remote: None,
            from_remote: false,
        }
    }
}

/// The enhanced status of a reply, or the class's generic one.
pub fn status_of(reply: &RemoteReply) -> String {
    reply
        .enhanced
        .clone()
        .unwrap_or_else(|| format!("{}.0.0", reply.code / 100))
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
    header_of(File::open(path)?)
}

/// The header of the message `source` reads (up to the blank line, at most 64 KiB).
pub fn header_of(source: impl Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    source.take(MAX_QUOTED_HEADER as u64).read_to_end(&mut head)?;
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

/// What a notice reports for its recipients (RFC 3464 `Action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Could not be delivered and will not be tried again.
    Failed,
    /// Not delivered yet; still being tried.
    Delayed,
    /// Handed to a server that does not send notices itself.
    Relayed,
    /// Delivered here, into the recipient's mailbox or store.
    Delivered,
}

impl Action {
    fn keyword(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Relayed => "relayed",
            Action::Delivered => "delivered",
        }
    }

    fn subject(self) -> &'static str {
        match self {
            Action::Failed => "Undelivered Mail Returned to Sender",
            Action::Delayed => "Delayed Mail (still being retried)",
            Action::Relayed | Action::Delivered => "Successful Mail Delivery Report",
        }
    }

    fn explanation(self) -> &'static str {
        match self {
            Action::Failed => "Your message could not be delivered to one or more recipients.",
            Action::Delayed => {
                "Your message could not be delivered yet to one or more recipients.\r\n\
                 It will be tried again; you do not need to send it again."
            }
            Action::Relayed => {
                "Your message was handed on to the mail servers of the recipients below,\r\n\
                 which send no delivery notices: this is the last notice for them."
            }
            Action::Delivered => "Your message was delivered to the recipients below.",
        }
    }
}

/// The message a notice is about.
#[derive(Clone, Copy, Debug)]
pub struct About<'a> {
    /// Its queue id (or the inbound transaction's id).
    pub id: &'a str,
    /// Who the notice goes to (never empty: `<>` gets no notices).
    pub sender: &'a str,
    /// When it arrived, in ms since the epoch.
    pub arrival_ms: u64,
    /// What the sender asked (`ENVID`, `ORCPT`).
    pub dsn: &'a DsnRequests,
    /// Until when it is retried, for delay notices.
    pub retry_until_ms: Option<u64>,
}

impl<'a> About<'a> {
    /// The message of a queue entry.
    pub fn entry(entry: &'a Entry) -> About<'a> {
        About {
            id: &entry.id,
            sender: &entry.sender,
            arrival_ms: entry.arrival_ms,
            dsn: &entry.dsn,
            retry_until_ms: None,
        }
    }
}

/// What a notice quotes of the original message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Returned {
    /// Its header, as `text/rfc822-headers`.
    Header(Vec<u8>),
    /// The whole message, as `message/rfc822` (`RET=FULL` on a failure).
    Message(Vec<u8>),
}

impl Returned {
    /// What to return of the message at `path` in a notice of `action`: the
    /// whole message for a failure when the sender asked `RET=FULL` and it
    /// is at most [`MAX_RETURNED_MESSAGE`], else its header.
    pub fn choose(path: &Path, action: Action, ret: Option<Return>) -> io::Result<Returned> {
        if action == Action::Failed
            && ret == Some(Return::Full)
            && std::fs::metadata(path)?.len() <= MAX_RETURNED_MESSAGE
        {
            return Ok(Returned::Message(std::fs::read(path)?));
        }
        Ok(Returned::Header(original_header(path)?))
    }
}

/// The DSN of `action` for the `reports` of the message `about`, as a
/// message ready to queue (CRLF lines) from `<>` to its sender.
pub fn dsn(
    hostname: &str,
    about: About<'_>,
    action: Action,
    reports: &[(String, Report)],
    returned: &Returned,
) -> Vec<u8> {
    let boundary = format!("{}/{hostname}", uuid::Uuid::new_v4().simple());
    let now = crate::queue::now_ms();
    let mut out = String::new();
    let mut line = |text: &str| {
        out.push_str(text);
        out.push_str("\r\n");
    };
    line(&format!("From: Mail Delivery System <MAILER-DAEMON@{hostname}>"));
    line(&format!("To: <{}>", about.sender));
    line(&format!("Subject: {}", action.subject()));
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
    line(action.explanation());
    if let Some(until) = about.retry_until_ms.filter(|_| action == Action::Delayed) {
        line(&format!("The last attempt will be made by {}.", rfc2822(until)));
    }
    line("");
    for (recipient, report) in reports {
        line(&format!(
            "<{}>: {}",
            field_text(recipient),
            field_text(&report.diagnostic)
        ));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: message/delivery-status");
    line("");
    if let Some(envid) = &about.dsn.message.envid {
        line(&format!("Original-Envelope-Id: {}", field_text(envid)));
    }
    line(&format!("Reporting-MTA: dns; {hostname}"));
    line(&format!("X-Waraka-Queue-ID: {}", about.id));
    line(&format!("Arrival-Date: {}", rfc2822(about.arrival_ms)));
    for (recipient, report) in reports {
        line("");
        if let Some((kind, original)) = &about.dsn.recipient(recipient).orcpt {
            line(&format!(
                "Original-Recipient: {}; {}",
                field_text(kind),
                field_text(original)
            ));
        }
        line(&format!("Final-Recipient: rfc822; {}", field_text(recipient)));
        line(&format!("Action: {}", action.keyword()));
        line(&format!("Status: {}", field_text(&report.status)));
        if let Some(remote) = &report.remote {
            // A mailbox server on a Unix socket has a path, not a DNS name.
            let kind = if crate::capabilities::is_socket_path(remote) {
                "x-unix"
            } else {
                "dns"
            };
            line(&format!("Remote-MTA: {kind}; {}", field_text(remote)));
        }
        let kind = if report.from_remote { "smtp" } else { "x-local" };
        line(&format!("Diagnostic-Code: {kind}; {}", field_text(&report.diagnostic)));
        line(&format!("Last-Attempt-Date: {}", rfc2822(now)));
        if let Some(until) = about.retry_until_ms.filter(|_| action == Action::Delayed) {
            line(&format!("Will-Retry-Until: {}", rfc2822(until)));
        }
    }
    line("");
    line(&format!("--{boundary}"));
    let (content_type, quoted) = match returned {
        Returned::Header(header) => ("text/rfc822-headers", header),
        Returned::Message(message) => ("message/rfc822", message),
    };
    line(&format!("Content-Type: {content_type}"));
    line("");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(quoted);
    if !quoted.ends_with(b"\r\n") {
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
            dsn: DsnRequests::default(),
            delay_notified: false,
            hop: None,
            held: false,
            tls_request: Default::default(),
        };
        let failed = vec![(
            "bob@d.test".to_string(),
            Report {
                status: "5.1.1".into(),
                diagnostic: "550 5.1.1 No such user\r\nhere".into(),
                remote: Some("mx.d.test".into()),
                from_remote: true,
            },
        )];
        let header = Returned::Header(b"Subject: hi\r\nFrom: a@s.test\r\n".to_vec());
        let text = String::from_utf8(dsn("me.test", About::entry(&entry), Action::Failed, &failed, &header)).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text.contains("Final-Recipient: rfc822; bob@d.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 No such user??here\r\n"));
        assert!(text.contains("Remote-MTA: dns; mx.d.test\r\n"));
        let over_socket = vec![(
            "bob@d.test".to_string(),
            Report {
                remote: Some("/run/dovecot/lmtp".into()),
                ..failed[0].1.clone()
            },
        )];
        let socket_text = String::from_utf8(dsn(
            "me.test",
            About::entry(&entry),
            Action::Failed,
            &over_socket,
            &header,
        ));
        assert!(
            socket_text
                .unwrap()
                .contains("Remote-MTA: x-unix; /run/dovecot/lmtp\r\n")
        );
        assert!(text.contains("text/rfc822-headers\r\n\r\nSubject: hi\r\nFrom: a@s.test\r\n\r\n--"));
        assert!(text.ends_with("--\r\n"));
        assert!(text.lines().all(|l| !l.contains('\n')));
        assert!(!text.contains("Original-"), "nothing asked, nothing quoted");
    }

    #[test]
    fn a_delay_notice_quotes_envid_and_orcpt_and_says_until_when() {
        let address = |text: &str| crate::protocol::Address::parse_with_params(text, false).unwrap();
        let requests = DsnRequests {
            message: crate::protocol::MessageRequest::from_mail(&address("<a@s.test> ENVID=id+2B7")).unwrap(),
            recipients: [(
                "bob@d.test".to_string(),
                crate::protocol::RecipientRequest::from_rcpt(&address("<bob@d.test> ORCPT=rfc822;Robert+40d.test"))
                    .unwrap(),
            )]
            .into(),
        };
        let about = About {
            id: "Q1",
            sender: "a@s.test",
            arrival_ms: 1_700_000_000_000,
            dsn: &requests,
            retry_until_ms: Some(1_700_300_000_000),
        };
        let late = vec![("bob@d.test".to_string(), Report::local("4.4.1", "connection refused"))];
        let message = Returned::Message(b"Subject: hi\r\n\r\nbody\r\n".to_vec());
        let text = String::from_utf8(dsn("me.test", about, Action::Delayed, &late, &message)).unwrap();
        assert!(text.contains("Subject: Delayed Mail (still being retried)\r\n"));
        assert!(
            text.contains("Original-Envelope-Id: id+7\r\nReporting-MTA: dns; me.test\r\n"),
            "{text}"
        );
        assert!(text.contains("Original-Recipient: rfc822; Robert@d.test\r\nFinal-Recipient: rfc822; bob@d.test\r\nAction: delayed\r\nStatus: 4.4.1\r\n"));
        assert!(text.contains("Diagnostic-Code: x-local; connection refused\r\n"));
        assert!(
            text.contains("Will-Retry-Until: Sat, 18 Nov 2023 09:33:20 +0000\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Type: message/rfc822\r\n\r\nSubject: hi\r\n\r\nbody\r\n\r\n--"));
    }

    #[test]
    fn the_whole_message_is_returned_only_for_a_failure_with_ret_full_and_not_too_big() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.eml");
        std::fs::write(&path, b"A: 1\r\n\r\nbody\r\n").unwrap();
        let header = Returned::Header(b"A: 1\r\n".to_vec());
        let full = Returned::Message(b"A: 1\r\n\r\nbody\r\n".to_vec());
        assert_eq!(
            Returned::choose(&path, Action::Failed, Some(Return::Full)).unwrap(),
            full
        );
        assert_eq!(Returned::choose(&path, Action::Failed, None).unwrap(), header);
        assert_eq!(
            Returned::choose(&path, Action::Failed, Some(Return::Headers)).unwrap(),
            header
        );
        assert_eq!(
            Returned::choose(&path, Action::Delayed, Some(Return::Full)).unwrap(),
            header
        );
        let big = format!("A: 1\r\n\r\n{}", "x".repeat(MAX_RETURNED_MESSAGE as usize));
        std::fs::write(&path, big).unwrap();
        assert_eq!(
            Returned::choose(&path, Action::Failed, Some(Return::Full)).unwrap(),
            header
        );
    }

    #[test]
    fn the_quoted_header_stops_at_the_blank_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.eml");
        std::fs::write(&path, b"A: 1\r\nB: 2\r\n\r\nbody\r\n").unwrap();
        assert_eq!(original_header(&path).unwrap(), b"A: 1\r\nB: 2\r\n");
    }
}
