//! `waraka sendmail`: the `sendmail` command that local programs (cron,
//! web applications, monitoring) hand mail to, with Sendmail's and
//! Postfix's options. It reads a message from standard input and submits
//! it to the running server over the local submission socket
//! (`queue/submit.sock`) in an SMTP session that runs the whole plugin
//! chain; the server knows the caller's user from the kernel and relays
//! for them as for a client that logged in. When no server is running, the
//! message is left in the maildrop for the server to pick up when it
//! starts. The exit status follows `sysexits.h`, as callers of `sendmail`
//! expect.

use crate::control::submit_socket_path;
use crate::delivery::{Address, ClientError, ClientSettings, TlsMode, send};
use crate::protocol::{DsnRequests, TlsRequest};
use crate::queue::Envelope;
use std::path::Path;

/// `EX_USAGE`: a wrong command line, or no recipients.
pub const EX_USAGE: u8 = 64;
/// `EX_NOUSER`: every recipient was refused.
pub const EX_NOUSER: u8 = 67;
/// `EX_UNAVAILABLE`: the server refused the message for good.
pub const EX_UNAVAILABLE: u8 = 69;
/// `EX_TEMPFAIL`: no server to take it now, or a temporary refusal: try later.
pub const EX_TEMPFAIL: u8 = 75;

/// Why a submission failed, with the exit status to give.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// The `sysexits.h` status.
    pub status: u8,
    /// What went wrong, for standard error.
    pub message: String,
}

fn failure(status: u8, message: impl Into<String>) -> Failure {
    Failure {
        status,
        message: message.into(),
    }
}

/// What the command line asks for.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `-t`: the recipients are also those of the `To`, `Cc` and `Bcc`
    /// fields (and `Bcc` is taken out).
    pub extract_recipients: bool,
    /// `-i` / `-oi`: a line of a lone dot does not end the message.
    pub ignore_dots: bool,
    /// `-f`: the envelope sender (default: the user at `[smtp] hostname`).
    pub sender: Option<String>,
    /// `-F`: the sender's full name, for a `From` field the message lacks.
    pub full_name: Option<String>,
    /// The recipients named on the command line.
    pub recipients: Vec<String>,
}

/// Where a message goes while no server is running: the instance's
/// maildrop, for the users the server would take mail from (as Postfix's
/// `postdrop` checks).
#[derive(Clone, Debug)]
pub struct Maildrop {
    /// The directory.
    pub dir: std::path::PathBuf,
    /// `[sendmail] allowed_users`.
    pub allowed_users: Vec<String>,
}

/// The message as read, split into its header lines and its body, each
/// line without its line end; the body's bytes as they came (8-bit text of
/// any charset passes untouched).
struct Message {
    header: Vec<String>,
    body: Vec<Vec<u8>>,
}

impl Message {
    /// Reads `input` (LF or CRLF lines) up to its end, or up to a line of a
    /// lone dot unless `ignore_dots`.
    fn read(input: &[u8], ignore_dots: bool) -> Message {
        let mut lines: Vec<&[u8]> = Vec::new();
        for line in input.split_inclusive(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !ignore_dots && line == b"." {
                break;
            }
            lines.push(line);
        }
        // The header is the lines up to the first empty one, if the first
        // line is a field at all.
        let is_field = |line: &[u8]| field_name(&String::from_utf8_lossy(line)).is_some();
        let header_len = match lines.first() {
            Some(first) if is_field(first) => lines.iter().position(|l| l.is_empty()).unwrap_or(lines.len()),
            _ => 0,
        };
        let (header, body) = lines.split_at(header_len);
        let body = match body.first() {
            Some(blank) if blank.is_empty() && header_len > 0 => &body[1..],
            _ => body,
        };
        Message {
            header: header.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect(),
            body: body.iter().map(|l| l.to_vec()).collect(),
        }
    }

    /// Whether the header has a field `name`.
    fn has(&self, name: &str) -> bool {
        self.header
            .iter()
            .any(|line| field_name(line).is_some_and(|n| n.eq_ignore_ascii_case(name)))
    }

    /// Removes every field named `name`, with its continuation lines.
    fn remove(&mut self, name: &str) {
        let mut removing = false;
        self.header.retain(|line| {
            if line.starts_with([' ', '\t']) {
                return !removing;
            }
            removing = field_name(line).is_some_and(|n| n.eq_ignore_ascii_case(name));
            !removing
        });
    }

    /// The addresses of the `To`, `Cc` and `Bcc` fields.
    fn header_recipients(&self) -> Vec<String> {
        let text = self.header.join("\r\n") + "\r\n\r\n";
        let Some(parsed) = mail_parser::MessageParser::default().parse_headers(text.as_bytes()) else {
            return Vec::new();
        };
        [parsed.to(), parsed.cc(), parsed.bcc()]
            .into_iter()
            .flatten()
            .flat_map(|list| list.iter())
            .filter_map(|addr| addr.address().map(str::to_string))
            .collect()
    }

    /// The message as CRLF lines, not dot-stuffed.
    fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for line in &self.header {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        for line in &self.body {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

fn field_name(line: &str) -> Option<&str> {
    line.split_once(':')
        .map(|(name, _)| name)
        .filter(|name| is_field_name(name))
}

/// Why `user`, not in `[sendmail] allowed_users`, gets no mail through:
/// the same words from the server's session and from the maildrop.
pub fn not_allowed(user: &str) -> String {
    format!("Local user {user} may not submit mail here")
}

/// The name of the user running this command.
fn login_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|user| user.name)
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "nobody".into())
}

/// Prepares the message of `input` as `options` ask: the sender, the
/// recipients, and the `From`, `Date` and `Message-ID` fields it lacks.
fn prepare(input: &[u8], options: &Options, hostname: &str) -> (String, Vec<String>, Message) {
    let mut message = Message::read(input, options.ignore_dots);
    let sender = options
        .sender
        .clone()
        .unwrap_or_else(|| format!("{}@{hostname}", login_name()));
    let mut recipients = options.recipients.clone();
    if options.extract_recipients {
        recipients.extend(message.header_recipients());
        message.remove("Bcc");
    }
    let mut added = Vec::new();
    if !message.has("From") && !sender.is_empty() {
        added.push(match &options.full_name {
            Some(name) => format!("From: \"{}\" <{sender}>", name.replace(['"', '\\'], "")),
            None => format!("From: {sender}"),
        });
    }
    if !message.has("Date") {
        added.push(format!("Date: {}", chrono::Utc::now().to_rfc2822()));
    }
    if !message.has("Message-ID") {
        added.push(format!("Message-ID: <{}@{hostname}>", uuid::Uuid::new_v4().simple()));
    }
    message.header.extend(added);
    (sender, recipients, message)
}

/// Submits the message of `input` to the server running the instance at
/// `root` (whose name is `hostname`); `Ok` with the refused recipients
/// (reported on standard error) once the server took it for the others.
/// With no server running, the message is left in `maildrop` when there is
/// one (`Ok`, nothing refused).
pub async fn submit(
    root: &Path,
    hostname: &str,
    options: &Options,
    input: &[u8],
    maildrop: Option<&Maildrop>,
) -> Result<Vec<String>, Failure> {
    let (sender, recipients, message) = prepare(input, options, hostname);
    if recipients.is_empty() {
        return Err(failure(EX_USAGE, "no recipients: name them, or use -t"));
    }
    if let Some(bad) = std::iter::once(&sender)
        .chain(&recipients)
        .find(|address| !crate::maildrop::is_storable(address))
    {
        return Err(failure(EX_USAGE, format!("{bad:?} is not an address")));
    }
    let socket = submit_socket_path(root);
    let settings = ClientSettings {
        tls: TlsMode::Never,
        ..ClientSettings::default()
    };
    let wire = message.to_wire();
    let envelope = Envelope {
        sender: &sender,
        recipients: &recipients,
        dsn: &DsnRequests::default(),
        tls_request: TlsRequest::default(),
    };
    let delivery = send(
        &Address::Unix(socket.clone()),
        "localhost",
        &settings,
        envelope,
        wire.as_slice(),
        wire.len() as u64,
    )
    .await;
    let delivery = match delivery {
        Err(ClientError::Network { stage: "connect", .. }) => {
            let no_server = format!(
                "no server takes local mail at {} (is it running, with [sendmail] enabled?)",
                socket.display()
            );
            let Some(maildrop) = maildrop else {
                return Err(failure(EX_TEMPFAIL, no_server));
            };
            let user = login_name();
            if !maildrop.allowed_users.is_empty() && !maildrop.allowed_users.contains(&user) {
                return Err(failure(EX_UNAVAILABLE, not_allowed(&user)));
            }
            return match crate::maildrop::post(&maildrop.dir, &sender, &recipients, &wire) {
                Ok(_) => Ok(Vec::new()),
                Err(e) => Err(failure(
                    EX_TEMPFAIL,
                    format!(
                        "{no_server}, and the maildrop {} did not take it: {e}",
                        maildrop.dir.display()
                    ),
                )),
            };
        }
        other => other,
    }
    .map_err(|e| match e {
        ClientError::Refused { reply, .. } if reply.is_permanent() => failure(EX_UNAVAILABLE, reply.to_string()),
        other => failure(EX_TEMPFAIL, other.to_string()),
    })?;
    let mut refused = Vec::new();
    let mut temporary = false;
    for (index, (recipient, _)) in delivery.recipients.iter().enumerate() {
        let reply = delivery.outcome(index);
        if !reply.is_positive() {
            temporary |= !reply.is_permanent();
            refused.push(format!("{recipient}: {reply}"));
        }
    }
    if refused.len() == recipients.len() {
        let status = if temporary { EX_TEMPFAIL } else { EX_NOUSER };
        return Err(failure(status, refused.join("; ")));
    }
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(extract: bool, ignore_dots: bool) -> Options {
        Options {
            extract_recipients: extract,
            ignore_dots,
            sender: Some("app@example.com".into()),
            ..Options::default()
        }
    }

    #[test]
    fn recipients_come_from_the_header_and_bcc_is_taken_out() {
        let input = b"To: Ann <ann@example.com>, bob@example.org\nCc: carol@example.net\nBcc: dave@example.com,\n  erin@example.com\nSubject: hi\n\nbody\n";
        let (sender, recipients, message) = prepare(input, &options(true, true), "mx.example.com");
        assert_eq!(sender, "app@example.com");
        assert_eq!(
            recipients,
            [
                "ann@example.com",
                "bob@example.org",
                "carol@example.net",
                "dave@example.com",
                "erin@example.com"
            ]
        );
        let wire = String::from_utf8(message.to_wire()).unwrap();
        assert!(!wire.contains("Bcc") && !wire.contains("erin"), "{wire}");
        assert!(wire.contains("Subject: hi\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\nbody\r\n"), "{wire:?}");
    }

    #[test]
    fn missing_fields_are_added_and_present_ones_kept() {
        let mut with_name = options(false, true);
        with_name.full_name = Some("Cron \"Daemon\"".into());
        let (_, _, message) = prepare(b"Subject: report\n\nall well\n", &with_name, "mx.example.com");
        let wire = String::from_utf8(message.to_wire()).unwrap();
        assert!(wire.contains("From: \"Cron Daemon\" <app@example.com>\r\n"), "{wire}");
        assert!(wire.contains("\r\nDate: "), "{wire}");
        assert!(wire.contains("@mx.example.com>\r\n"), "{wire}");
        let (_, _, kept) = prepare(
            b"From: me@example.com\nDate: Sat, 5 Dec 2026 10:00:00 +0000\nMessage-ID: <x@y>\n\nb\n",
            &options(false, true),
            "h",
        );
        assert_eq!(kept.header.len(), 3);
    }

    #[test]
    fn a_lone_dot_ends_the_message_unless_told_otherwise() {
        let input = b"Subject: s\n\nline\n.\nafter\n";
        assert_eq!(Message::read(input, false).body, [b"line".to_vec()]);
        assert_eq!(
            Message::read(input, true).body,
            [b"line".to_vec(), b".".to_vec(), b"after".to_vec()]
        );
        let headless = Message::read(b"just text\n", true);
        assert!(headless.header.is_empty());
        assert_eq!(headless.body, [b"just text".to_vec()]);
        let latin1 = Message::read(b"Subject: s\r\n\r\ncaf\xe9\r\n", true);
        assert_eq!(
            latin1.to_wire(),
            b"Subject: s\r\n\r\ncaf\xe9\r\n",
            "8-bit bytes pass untouched"
        );
    }
}
