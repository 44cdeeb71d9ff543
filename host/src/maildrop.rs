//! The maildrop (Postfix's): where `waraka sendmail` leaves a message when
//! no server takes it, and the server's pickup, which hands each one in
//! when it runs — over the local submission path, as the user who left it,
//! through the whole plugin chain.
//!
//! `queue/maildrop` is mode 1733: every local user may create files in it,
//! none may list it or remove another's. A file is written under a hidden
//! name (`.NAME.tmp`) and renamed to `NAME` once synced; the pickup takes
//! only those. Who left a file is its owner as the kernel keeps it (nobody
//! but root can make a file another user owns); a file with more than one
//! link (someone else's file linked in) or that is not a regular file is
//! removed unread. A file holds the envelope in a small header of its own
//! (`X-Waraka-Maildrop: 1`, `X-Envelope-From`, an `X-Envelope-To` per
//! recipient, a blank line), then the message.

use crate::delivery::{ClientError, ClientSettings, Delivery, Outbound, Report, TlsMode, header_of, send_over_local};
use crate::protocol::{DsnRequests, TlsRequest};
use crate::queue::Envelope;
use crate::telemetry;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// The first line of a maildrop file.
const MAGIC: &str = "X-Waraka-Maildrop: 1";
/// The longest envelope read (a message for thousands of recipients).
const MAX_ENVELOPE: u64 = 1 << 20;
/// How long a half-written file (`.NAME.tmp`, its writer gone) is left.
const ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The maildrop's mode: anyone may create files, only the owner list them.
const MODE: u32 = 0o1733;

/// Where the maildrop of the instance rooted at `root` is.
pub fn dir(root: &Path) -> PathBuf {
    root.join("queue").join("maildrop")
}

/// Whether `address` can be written into a maildrop file (no line breaks
/// or other control characters).
pub fn is_storable(address: &str) -> bool {
    !address.chars().any(char::is_control)
}

/// Leaves `message` (CRLF lines) from `sender` for `recipients` in the
/// maildrop `dir`, as the user running this; the name it got.
pub fn post(dir: &Path, sender: &str, recipients: &[String], message: &[u8]) -> io::Result<String> {
    if !is_storable(sender) || !recipients.iter().all(|r| is_storable(r)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an address has a control character",
        ));
    }
    let name = uuid::Uuid::new_v4().simple().to_string();
    let hidden = dir.join(format!(".{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&hidden)?;
    let mut envelope = format!("{MAGIC}\r\nX-Envelope-From: {sender}\r\n");
    for recipient in recipients {
        envelope.push_str(&format!("X-Envelope-To: {recipient}\r\n"));
    }
    envelope.push_str("\r\n");
    // Readable by the server, whatever the user's umask; the directory
    // cannot be listed, so nobody else learns the name.
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|()| file.write_all(envelope.as_bytes()))
        .and_then(|()| file.write_all(message))
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&hidden, dir.join(&name)));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&hidden);
        return Err(e);
    }
    Ok(name)
}

/// A message taken out of the maildrop.
pub struct Dropped {
    /// The file's name.
    pub name: String,
    /// The local user who left it (the file's owner).
    pub user: String,
    /// The envelope sender (empty for `<>`).
    pub sender: String,
    /// The envelope recipients.
    pub recipients: Vec<String>,
    /// The file.
    pub file: File,
    /// Where the message starts in it (after the envelope).
    pub offset: u64,
    /// The message's size in bytes.
    pub size: u64,
    /// When it was left.
    pub left: SystemTime,
}

/// What the pickup found under a name.
pub enum Taken {
    /// A message to hand in.
    Ready(Dropped),
    /// Something no user could have left this way, with why: removed unread.
    Unfit(String),
}

/// The maildrop directory, as the server sees it.
#[derive(Clone, Debug)]
pub struct Maildrop {
    dir: PathBuf,
}

impl Maildrop {
    /// The maildrop at `dir`.
    pub fn at(dir: PathBuf) -> Self {
        Maildrop { dir }
    }

    /// Makes the directory (or gives it back its mode), so that local users
    /// can leave mail in it.
    pub fn prepare(&self) -> io::Result<()> {
        match std::fs::create_dir(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let meta = std::fs::metadata(&self.dir)?;
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            warn!(dir = %self.dir.display(), "the maildrop belongs to another user: picked-up files cannot be removed");
        } else if meta.permissions().mode() & 0o7777 != MODE {
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(MODE))?;
        }
        Ok(())
    }

    /// The names of the complete files, oldest first.
    pub fn ready(&self) -> io::Result<Vec<String>> {
        let mut found: Vec<(SystemTime, String)> = std::fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let left = entry.metadata().and_then(|m| m.modified()).ok()?;
                is_name(&name).then_some((left, name))
            })
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, name)| name).collect())
    }

    /// Opens the file `name` and reads its envelope; an unfit file is
    /// reported, not opened further.
    pub fn take(&self, name: &str) -> io::Result<Taken> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(self.dir.join(name));
        let file = match file {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(Taken::Unfit("a symbolic link".into())),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Ok(Taken::Unfit("not a regular file".into()));
        }
        if meta.nlink() != 1 {
            return Ok(Taken::Unfit(format!("{} links to the file", meta.nlink())));
        }
        let user = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid())) {
            Ok(Some(user)) => user.name,
            _ => return Ok(Taken::Unfit(format!("no user has uid {}", meta.uid()))),
        };
        let mut reader = BufReader::new(file.take(MAX_ENVELOPE));
        let (sender, recipients, length) = match read_envelope(&mut reader)? {
            Ok(envelope) => envelope,
            Err(why) => return Ok(Taken::Unfit(why)),
        };
        Ok(Taken::Ready(Dropped {
            name: name.to_string(),
            user,
            sender,
            recipients,
            file: reader.into_inner().into_inner(),
            offset: length,
            size: meta.len().saturating_sub(length),
            left: meta.modified()?,
        }))
    }

    /// The recipients of `name` handed in already (by an earlier pickup
    /// that left others for later).
    fn handed_in(&self, name: &str) -> HashSet<String> {
        std::fs::read_to_string(self.progress_path(name))
            .map(|text| text.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Notes that `recipients` of `name` were handed in.
    fn note_handed_in(&self, name: &str, recipients: &[String]) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(self.progress_path(name))?;
        for recipient in recipients {
            writeln!(file, "{recipient}")?;
        }
        file.sync_all()
    }

    /// Removes `name` and what was noted of it.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let _ = std::fs::remove_file(self.progress_path(name));
        std::fs::remove_file(self.dir.join(name))
    }

    /// Removes half-written files whose writers are long gone, and notes
    /// of files that are gone.
    fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let abandoned = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|left| left.elapsed().unwrap_or_default() > ABANDONED_AFTER);
            let orphan = name
                .strip_prefix('.')
                .and_then(|rest| rest.strip_suffix(".done"))
                .is_some_and(|of| !self.dir.join(of).exists());
            if name.starts_with('.') && name.ends_with(".tmp") && abandoned {
                warn!(file = %name, "maildrop: removing a file left half-written");
                let _ = std::fs::remove_file(entry.path());
            } else if orphan {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn progress_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}.done"))
    }
}

/// Whether `name` is one [`post`] gives.
fn is_name(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The envelope on top of a maildrop file — sender, recipients, and the
/// bytes it takes — or why it is not one.
type ReadEnvelope = Result<(String, Vec<String>, u64), String>;

fn read_envelope(reader: &mut impl BufRead) -> io::Result<ReadEnvelope> {
    let mut length = 0;
    let mut sender = None;
    let mut recipients = Vec::new();
    let mut first = true;
    loop {
        let mut line = Vec::new();
        let read = reader.read_until(b'\n', &mut line)?;
        length += read as u64;
        let Some(line) = line.strip_suffix(b"\r\n") else {
            return Ok(Err("the envelope does not end".into()));
        };
        let Ok(line) = std::str::from_utf8(line) else {
            return Ok(Err("the envelope is not UTF-8".into()));
        };
        if first {
            if line != MAGIC {
                return Ok(Err("not a maildrop file".into()));
            }
            first = false;
            continue;
        }
        if line.is_empty() {
            break;
        }
        match line.split_once(": ") {
            Some(("X-Envelope-From", value)) if sender.is_none() => sender = Some(value.to_string()),
            Some(("X-Envelope-To", value)) => recipients.push(value.to_string()),
            _ => return Ok(Err(format!("an unknown envelope line: {line:?}"))),
        }
    }
    match sender {
        Some(_) if recipients.is_empty() => Ok(Err("no recipient".into())),
        Some(sender) => Ok(Ok((sender, recipients, length))),
        None => Ok(Err("no sender".into())),
    }
}

/// Opens a server session for a local user on a stream, as the local
/// submission socket does for each connection.
pub type HandIn = Arc<dyn Fn(String, UnixStream) + Send + Sync>;

/// The server's pickup: takes what the maildrop holds at start and then
/// every `interval`, and hands it in.
pub struct Pickup {
    /// The maildrop.
    pub maildrop: Maildrop,
    /// Opens the session each message goes through.
    pub hand_in: HandIn,
    /// Where failure notices go (`None` without an outbound queue: logged).
    pub notices: Option<Outbound>,
    /// How often the maildrop is looked into.
    pub interval: Duration,
    /// How long a message refused for now is kept trying.
    pub lifetime: Duration,
}

/// How one attempt at a dropped message ended.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    /// Recipients the server took.
    taken: Vec<String>,
    /// Recipients refused for good, with why.
    failed: Vec<(String, Report)>,
    /// Recipients refused for now, with the last reason.
    later: Vec<(String, Report)>,
}

impl Outcome {
    /// What the session's replies (or its failure) mean for `recipients`.
    fn of(recipients: &[String], result: Result<Delivery, ClientError>) -> Outcome {
        let mut outcome = Outcome::default();
        match result {
            Ok(delivery) => {
                for (index, (recipient, _)) in delivery.recipients.iter().enumerate() {
                    let reply = delivery.outcome(index);
                    let report = Report::from_reply("localhost", reply);
                    if reply.is_positive() {
                        outcome.taken.push(recipient.clone());
                    } else if reply.is_permanent() {
                        outcome.failed.push((recipient.clone(), report));
                    } else {
                        outcome.later.push((recipient.clone(), report));
                    }
                }
            }
            Err(ClientError::Refused { reply, .. }) => {
                let report = Report::from_reply("localhost", &reply);
                let all = recipients.iter().map(|r| (r.clone(), report.clone())).collect();
                if reply.is_permanent() {
                    outcome.failed = all;
                } else {
                    outcome.later = all;
                }
            }
            Err(other) => {
                let report = Report::local("4.3.0", other.to_string());
                outcome.later = recipients.iter().map(|r| (r.clone(), report.clone())).collect();
            }
        }
        outcome
    }
}

impl Pickup {
    /// Picks up until `stop`; a message being handed in when it comes is
    /// finished first. The maildrop is prepared already (see
    /// [`Maildrop::prepare`]), before the server takes connections.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        info!(dir = %self.maildrop.dir.display(), "maildrop pickup");
        loop {
            self.pick_up_all(&stop).await;
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn pick_up_all(&self, stop: &watch::Receiver<bool>) {
        let names = match self.maildrop.ready() {
            Ok(names) => names,
            Err(e) => {
                warn!(dir = %self.maildrop.dir.display(), "maildrop: cannot list it: {e}");
                return;
            }
        };
        let mut waiting = 0;
        for name in names {
            if *stop.borrow() {
                return;
            }
            match self.pick_up(&name).await {
                Ok(stays) => waiting += usize::from(stays),
                Err(e) => {
                    warn!(file = %name, "maildrop: left for later: {e}");
                    waiting += 1;
                }
            }
        }
        self.maildrop.sweep();
        metrics::gauge!(telemetry::MAILDROP_WAITING).set(waiting as f64);
    }

    /// Hands in the message `name`; whether it stays for another look.
    async fn pick_up(&self, name: &str) -> io::Result<bool> {
        let dropped = match self.maildrop.take(name)? {
            Taken::Ready(dropped) => dropped,
            Taken::Unfit(why) => {
                warn!(file = %name, "maildrop: removed unread: {why}");
                metrics::counter!(telemetry::MAILDROP_UNFIT).increment(1);
                return self.maildrop.remove(name).map(|()| false);
            }
        };
        let done = self.maildrop.handed_in(name);
        let recipients: Vec<String> = dropped
            .recipients
            .iter()
            .filter(|r| !done.contains(*r))
            .cloned()
            .collect();
        (&dropped.file).seek(SeekFrom::Start(dropped.offset))?;
        let header = header_of(&dropped.file)?;
        (&dropped.file).seek(SeekFrom::Start(dropped.offset))?;
        let (client, server) = UnixStream::pair()?;
        (self.hand_in)(dropped.user.clone(), server);
        let settings = ClientSettings {
            tls: TlsMode::Never,
            ..ClientSettings::default()
        };
        let envelope = Envelope {
            sender: &dropped.sender,
            recipients: &recipients,
            dsn: &DsnRequests::default(),
            tls_request: TlsRequest::default(),
        };
        let message = tokio::fs::File::from_std(dropped.file.try_clone()?);
        let result = send_over_local(Box::new(client), &settings, envelope, message, dropped.size).await;
        let mut outcome = Outcome::of(&recipients, result);
        let expired = dropped.left.elapsed().unwrap_or_default() > self.lifetime;
        if expired {
            outcome.failed.append(&mut outcome.later);
        }
        for (result, count) in [
            ("queued", outcome.taken.len()),
            ("refused", outcome.failed.len()),
            ("later", outcome.later.len()),
        ] {
            metrics::counter!(telemetry::MAILDROP_RECIPIENTS, "result" => result).increment(count as u64);
        }
        info!(
            file = %name,
            user = %dropped.user,
            from = %dropped.sender,
            taken = %outcome.taken.join(","),
            refused = outcome.failed.len(),
            later = outcome.later.len(),
            "maildrop: picked up"
        );
        if !outcome.failed.is_empty() {
            self.tell_sender(&dropped, outcome.failed, header).await;
        }
        if outcome.later.is_empty() {
            self.maildrop.remove(name).map(|()| false)
        } else {
            self.maildrop.note_handed_in(name, &outcome.taken).map(|()| true)
        }
    }

    /// Sends the failure notice for `failed` to the message's sender.
    async fn tell_sender(&self, dropped: &Dropped, failed: Vec<(String, Report)>, header: Vec<u8>) {
        let refused = failed.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(",");
        let Some(outbound) = self.notices.as_ref().filter(|_| !dropped.sender.is_empty()) else {
            error!(file = %dropped.name, user = %dropped.user, to = %refused, "maildrop: refused, and nobody to tell");
            return;
        };
        let left_ms = dropped
            .left
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let notice = outbound
            .notify_failure(dropped.name.clone(), dropped.sender.clone(), left_ms, failed, header)
            .await;
        if let Err(e) = notice {
            error!(file = %dropped.name, to = %refused, "maildrop: refused, and the failure notice could not be queued: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::RemoteReply;

    fn reply(code: u16, enhanced: &str) -> RemoteReply {
        RemoteReply::local(code, enhanced, "text")
    }

    fn maildrop() -> (tempfile::TempDir, Maildrop) {
        let root = tempfile::tempdir().unwrap();
        let maildrop = Maildrop::at(root.path().join("maildrop"));
        maildrop.prepare().unwrap();
        (root, maildrop)
    }

    #[test]
    fn a_posted_message_is_taken_back_with_its_envelope_and_owner() {
        let (_root, maildrop) = maildrop();
        let mode = std::fs::metadata(&maildrop.dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, MODE);
        let message = b"Subject: hi\r\n\r\nbody\r\n";
        let name = post(
            &maildrop.dir,
            "ann@example.com",
            &["b@x.test".into(), "c".into()],
            message,
        )
        .unwrap();
        assert_eq!(maildrop.ready().unwrap(), std::slice::from_ref(&name));
        let Taken::Ready(mut dropped) = maildrop.take(&name).unwrap() else {
            panic!("unfit")
        };
        dropped.file.seek(SeekFrom::Start(dropped.offset)).unwrap();
        assert_eq!(dropped.sender, "ann@example.com");
        assert_eq!(dropped.recipients, ["b@x.test", "c"]);
        assert_eq!(dropped.size, message.len() as u64);
        let mut read = Vec::new();
        dropped.file.read_to_end(&mut read).unwrap();
        assert_eq!(read, message);
        let me = nix::unistd::User::from_uid(nix::unistd::getuid()).unwrap().unwrap();
        assert_eq!(dropped.user, me.name);
        let bad = post(
            &maildrop.dir,
            "a@x.test",
            &["b@x.test\r\nX-Envelope-To: c@x.test".into()],
            b"",
        );
        assert_eq!(bad.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn links_and_foreign_files_are_unfit() {
        let (root, maildrop) = maildrop();
        let outside = root.path().join("secret");
        std::fs::write(
            &outside,
            format!("{MAGIC}\r\nX-Envelope-From: a@x.test\r\nX-Envelope-To: b@x.test\r\n\r\nm"),
        )
        .unwrap();
        let linked = "0".repeat(32);
        std::fs::hard_link(&outside, maildrop.dir.join(&linked)).unwrap();
        let symlinked = "1".repeat(32);
        std::os::unix::fs::symlink(&outside, maildrop.dir.join(&symlinked)).unwrap();
        let garbage = "2".repeat(32);
        std::fs::write(maildrop.dir.join(&garbage), "Subject: no envelope\r\n\r\n").unwrap();
        let unending = "3".repeat(32);
        std::fs::write(
            maildrop.dir.join(&unending),
            format!("{MAGIC}\r\nX-Envelope-From: a@x.test\r\n"),
        )
        .unwrap();
        std::fs::write(maildrop.dir.join(".4.tmp"), "half").unwrap();
        for (name, why) in [
            (&linked, "2 links"),
            (&symlinked, "symbolic link"),
            (&garbage, "not a maildrop file"),
            (&unending, "does not end"),
        ] {
            match maildrop.take(name).unwrap() {
                Taken::Unfit(reason) => assert!(reason.contains(why), "{name}: {reason}"),
                Taken::Ready(_) => panic!("{name} taken"),
            }
        }
        assert_eq!(maildrop.ready().unwrap().len(), 4, "hidden files are not ready");
    }

    #[test]
    fn replies_sort_recipients_into_taken_failed_and_later() {
        let recipients: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let delivery = Delivery {
            recipients: vec![
                ("a".into(), reply(250, "2.1.5")),
                ("b".into(), reply(550, "5.1.1")),
                ("c".into(), reply(451, "4.7.1")),
            ],
            data: vec![reply(250, "2.0.0")],
            tls: false,
            dsn_passed: false,
        };
        let outcome = Outcome::of(&recipients, Ok(delivery));
        assert_eq!(outcome.taken, ["a"]);
        assert_eq!(outcome.failed[0].1.status, "5.1.1");
        assert_eq!(outcome.later[0].1.status, "4.7.1");
        let refused = Outcome::of(
            &recipients,
            Err(ClientError::Refused {
                stage: "MAIL",
                reply: reply(553, "5.7.1"),
            }),
        );
        assert_eq!(refused.failed.len(), 3);
        let broken = Outcome::of(&recipients, Err(ClientError::Timeout("greeting")));
        assert_eq!(broken.later.len(), 3);
        assert!(broken.taken.is_empty() && broken.failed.is_empty());
    }

    #[test]
    fn handed_in_recipients_are_remembered_until_the_file_goes() {
        let (_root, maildrop) = maildrop();
        let name = post(
            &maildrop.dir,
            "a@x.test",
            &["b@x.test".into(), "c@x.test".into()],
            b"m\r\n",
        )
        .unwrap();
        maildrop.note_handed_in(&name, &["b@x.test".into()]).unwrap();
        assert!(maildrop.handed_in(&name).contains("b@x.test"));
        assert_eq!(
            maildrop.ready().unwrap(),
            std::slice::from_ref(&name),
            "the progress file is hidden"
        );
        maildrop.remove(&name).unwrap();
        assert!(maildrop.handed_in(&name).is_empty());
        assert!(maildrop.ready().unwrap().is_empty());
    }
}
