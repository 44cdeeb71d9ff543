//! The quarantine on disk: the copies `queue/quarantine` keeps in the
//! directory `[dirs].quarantine` (`DAY/NAME.eml`, the envelope in three
//! header fields on top), which `waraka quarantine` lists, shows, deletes and
//! releases. A release hands the copy, without those fields, to the running
//! server's queue hook with the note [`RELEASED_NOTE`], which
//! `queue/quarantine` lets through.

use crate::plugins::Chain;
use crate::protocol::{Address, Reply, parse_path_list};
use crate::queue::is_file_name;
use crate::session::Session;
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tracing::{info, warn};

/// The transaction note a released message carries (the copy's id), so
/// that `queue/quarantine` does not keep it again.
pub const RELEASED_NOTE: &str = "quarantine.released";

/// The `[dirs]` name and grant of the quarantine.
pub const DIR_NAME: &str = "quarantine";

/// The longest envelope field read (a copy for thousands of recipients).
const MAX_FIELD: u64 = 1 << 20;

/// The quarantine directory of an instance.
#[derive(Clone, Debug)]
pub struct Quarantine {
    root: PathBuf,
}

/// One quarantined copy.
#[derive(Clone, Debug)]
pub struct Kept {
    /// `DAY/NAME`: the day's folder and the file's name without `.eml`.
    pub id: String,
    /// The file.
    pub path: PathBuf,
    /// The file's size in bytes.
    pub size: u64,
    /// When the copy was stored.
    pub stored: SystemTime,
    /// Why and for whom it was kept.
    pub envelope: KeptEnvelope,
}

/// The three fields on top of a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptEnvelope {
    /// `X-Quarantine-Reason`: the note that asked for it, or `all`.
    pub reason: String,
    /// `X-Envelope-From`.
    pub sender: Address,
    /// `X-Envelope-To`.
    pub recipients: Vec<Address>,
    /// The bytes the three fields take; the message follows them.
    pub length: u64,
}

impl KeptEnvelope {
    /// Reads the fields from the start of a copy.
    pub fn read(copy: impl Read) -> Result<Self> {
        let mut reader = BufReader::new(copy.take(3 * MAX_FIELD));
        let mut length = 0;
        let mut field = |name: &str| -> Result<String> {
            let mut line = Vec::new();
            length += (&mut reader).take(MAX_FIELD).read_until(b'\n', &mut line)? as u64;
            let line = String::from_utf8(line).context("the envelope is not UTF-8")?;
            let value = line
                .strip_suffix("\r\n")
                .and_then(|line| line.split_once(':'))
                .filter(|(found, _)| found.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.trim().to_string());
            value.with_context(|| format!("no {name} field where the quarantine writes it"))
        };
        let reason = field("X-Quarantine-Reason")?;
        let sender = Address::parse_with_params(&field("X-Envelope-From")?, true)
            .map_err(|e| anyhow::anyhow!("X-Envelope-From: {e}"))?;
        let recipients =
            parse_path_list(&field("X-Envelope-To")?).map_err(|e| anyhow::anyhow!("X-Envelope-To: {e}"))?;
        if recipients.is_empty() {
            bail!("X-Envelope-To names no recipient");
        }
        Ok(KeptEnvelope {
            reason,
            sender,
            recipients,
            length,
        })
    }
}

impl Quarantine {
    /// The quarantine at `root`.
    pub fn at(root: PathBuf) -> Self {
        Quarantine { root }
    }

    /// The quarantine of an instance: its `[dirs].quarantine`.
    pub fn of(instance: &crate::config::Instance) -> Result<Self> {
        match instance.named_dir(DIR_NAME) {
            Some(root) => Ok(Quarantine::at(root)),
            None => bail!("waraka.toml has no [dirs].{DIR_NAME} (the directory queue/quarantine writes to)"),
        }
    }

    /// The day folders, oldest first.
    fn days(&self) -> Result<Vec<String>> {
        let days = match std::fs::read_dir(&self.root) {
            Ok(days) => days,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.root.display())),
        };
        let mut days: Vec<String> = days
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|day| is_file_name(day))
            .collect();
        days.sort();
        Ok(days)
    }

    /// Every copy, oldest day first and by time stored within a day. A file
    /// that is not a quarantine copy is skipped with a warning.
    pub fn list(&self) -> Result<Vec<Kept>> {
        let mut kept = Vec::new();
        for day in self.days()? {
            let mut of_day = Vec::new();
            for entry in std::fs::read_dir(self.root.join(&day))?.filter_map(|entry| entry.ok()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(stem) = name.strip_suffix(".eml").filter(|stem| is_file_name(stem)) else {
                    continue;
                };
                match self.read(&day, stem) {
                    Ok(copy) => of_day.push(copy),
                    Err(e) => warn!("quarantine: skipping {}: {e:#}", entry.path().display()),
                }
            }
            of_day.sort_by(|a, b| a.stored.cmp(&b.stored).then_with(|| a.id.cmp(&b.id)));
            kept.extend(of_day);
        }
        Ok(kept)
    }

    /// The copy `id` names: `DAY/NAME`, or a `NAME` found in one day's folder.
    pub fn find(&self, id: &str) -> Result<Kept> {
        let id = id.trim_end_matches(".eml");
        if let Some((day, name)) = id.split_once('/') {
            if !is_file_name(day) || !is_file_name(name) {
                bail!("{id:?} is not a quarantine id (DAY/NAME or NAME)");
            }
            if !self.root.join(day).join(format!("{name}.eml")).exists() {
                bail!("no quarantined message {id}");
            }
            return self.read(day, name);
        }
        if !is_file_name(id) {
            bail!("{id:?} is not a quarantine id (DAY/NAME or NAME)");
        }
        let file = format!("{id}.eml");
        let days: Vec<String> = self
            .days()?
            .into_iter()
            .filter(|day| self.root.join(day).join(&file).exists())
            .collect();
        match days.as_slice() {
            [day] => self.read(day, id),
            [] => bail!("no quarantined message {id}"),
            _ => {
                let ids: Vec<String> = days.iter().map(|day| format!("{day}/{id}")).collect();
                bail!("{id} is in more than one day's folder: {}", ids.join(", "))
            }
        }
    }

    /// Removes a copy.
    pub fn delete(&self, copy: &Kept) -> Result<()> {
        std::fs::remove_file(&copy.path).with_context(|| format!("removing {}", copy.path.display()))
    }

    fn read(&self, day: &str, name: &str) -> Result<Kept> {
        let path = self.root.join(day).join(format!("{name}.eml"));
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let meta = file.metadata()?;
        Ok(Kept {
            id: format!("{day}/{name}"),
            size: meta.len(),
            stored: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            envelope: KeptEnvelope::read(file)
                .with_context(|| format!("{} is not a quarantine copy", path.display()))?,
            path,
        })
    }
}

/// Opens a session of the running server for a release: a local
/// connection on the current plugin set.
pub type OpenSession = Arc<dyn Fn() -> Session<Chain> + Send + Sync>;

/// Releases quarantined copies through the running server.
#[derive(Clone)]
pub struct Releases {
    /// The instance's quarantine.
    pub quarantine: Quarantine,
    /// A new session for each release.
    pub open: OpenSession,
}

impl Releases {
    /// Hands the copy `id` to the queue hook, without the quarantine's
    /// fields, and removes it once a plugin took it (a `2xx` reply); it stays
    /// otherwise. While it is being released it is renamed to
    /// `DAY/.NAME.releasing`, so that a second release of it finds nothing.
    pub async fn release(&self, id: &str) -> Result<Reply> {
        let copy = self.quarantine.find(id)?;
        let claimed = copy.path.with_file_name(format!(
            ".{}.releasing",
            copy.path.file_stem().unwrap_or_default().to_string_lossy()
        ));
        std::fs::rename(&copy.path, &claimed).with_context(|| format!("claiming {}", copy.path.display()))?;
        let reply = self.hand_over(&copy, &claimed).await;
        let taken = reply.as_ref().is_ok_and(|reply| reply.code / 100 == 2);
        let settled = if taken {
            std::fs::remove_file(&claimed)
        } else {
            std::fs::rename(&claimed, &copy.path)
        };
        if let Err(e) = settled {
            warn!(id = %copy.id, "quarantine: settling {} after the release failed: {e}", claimed.display());
        }
        let reply = reply?;
        let to: Vec<String> = copy.envelope.recipients.iter().map(Address::addr_spec).collect();
        info!(id = %copy.id, to = %to.join(","), reply = %reply.to_wire().trim_end(), "quarantine release");
        Ok(reply)
    }

    async fn hand_over(&self, copy: &Kept, claimed: &Path) -> Result<Reply> {
        let mut file = File::open(claimed).with_context(|| format!("opening {}", claimed.display()))?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(copy.envelope.length))?;
        let mut session = (self.open)();
        let envelope = &copy.envelope;
        let reply = session
            .queue_kept(
                &envelope.sender,
                envelope.recipients.clone(),
                &mut file,
                &[(RELEASED_NOTE, &copy.id)],
            )
            .await;
        session.end().await;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(top: &str) -> String {
        format!("{top}Received: from x\r\nSubject: s\r\n\r\nbody\r\n")
    }

    #[test]
    fn the_envelope_is_read_from_the_three_fields_on_top() {
        let top = "X-Quarantine-Reason: spamassassin.spam=yes\r\nX-Envelope-From: <a@x.test>\r\nX-Envelope-To: <b@y.test>, <\"c d\"@y.test>\r\n";
        let envelope = KeptEnvelope::read(copy(top).as_bytes()).unwrap();
        assert_eq!(envelope.reason, "spamassassin.spam=yes");
        assert_eq!(envelope.sender.addr_spec(), "a@x.test");
        let to: Vec<String> = envelope.recipients.iter().map(Address::addr_spec).collect();
        assert_eq!(to, ["b@y.test", "\"c d\"@y.test"]);
        assert_eq!(envelope.length, top.len() as u64);
        let null = "X-Quarantine-Reason: all\r\nX-Envelope-From: <>\r\nX-Envelope-To: <b@y.test>\r\n";
        assert!(KeptEnvelope::read(copy(null).as_bytes()).unwrap().sender.is_null());
        let dsn = "X-Quarantine-Reason: all\r\nX-Envelope-From: <a@x.test> RET=HDRS ENVID=e1\r\n\
                   X-Envelope-To: <b@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.test, <c@y.test>\r\n";
        let envelope = KeptEnvelope::read(copy(dsn).as_bytes()).unwrap();
        assert_eq!(envelope.sender.param("RET"), Some(Some("HDRS")));
        assert_eq!(envelope.recipients[0].param("NOTIFY"), Some(Some("SUCCESS,FAILURE")));
        assert_eq!(envelope.recipients[0].param("ORCPT"), Some(Some("rfc822;b@y.test")));
        assert!(envelope.recipients[1].params.is_empty());
    }

    #[test]
    fn anything_else_is_not_a_copy() {
        for top in [
            "",
            "Received: from x\r\n",
            "X-Quarantine-Reason: all\r\nX-Envelope-To: <b@y.test>\r\nX-Envelope-From: <a@x.test>\r\n",
            "X-Quarantine-Reason: all\r\nX-Envelope-From: <a@x.test>\r\nX-Envelope-To: \r\n",
            "X-Quarantine-Reason: all\r\nX-Envelope-From: <a@x.test>\r\nX-Envelope-To: b@y.test\r\n",
            "X-Quarantine-Reason: all\nX-Envelope-From: <a@x.test>\nX-Envelope-To: <b@y.test>\n",
        ] {
            assert!(KeptEnvelope::read(copy(top).as_bytes()).is_err(), "{top:?}");
        }
    }

    #[test]
    fn ids_name_a_day_and_a_file_or_a_file_alone() {
        let root = tempfile::tempdir().unwrap();
        let quarantine = Quarantine::at(root.path().to_path_buf());
        assert!(quarantine.list().unwrap().is_empty(), "no directory yet: nothing kept");
        let top = "X-Quarantine-Reason: all\r\nX-Envelope-From: <a@x.test>\r\nX-Envelope-To: <b@y.test>\r\n";
        for (day, name) in [("20261204", "one"), ("20261205", "two"), ("20261205", "one")] {
            std::fs::create_dir_all(root.path().join(day)).unwrap();
            std::fs::write(root.path().join(day).join(format!("{name}.eml")), copy(top)).unwrap();
        }
        std::fs::write(root.path().join("20261205/.three.tmp"), "half written").unwrap();
        std::fs::write(root.path().join("20261205/stray.eml"), "not a copy").unwrap();
        let ids: Vec<String> = quarantine.list().unwrap().into_iter().map(|k| k.id).collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[0], "20261204/one");
        assert_eq!(quarantine.find("two").unwrap().id, "20261205/two");
        assert_eq!(quarantine.find("20261204/one.eml").unwrap().id, "20261204/one");
        let ambiguous = quarantine.find("one").unwrap_err().to_string();
        assert!(ambiguous.contains("20261204/one, 20261205/one"), "{ambiguous}");
        for bad in [
            "../one",
            "20261205/../x",
            ".three",
            "20261205/.three",
            "missing",
            "20261205/missing",
        ] {
            assert!(quarantine.find(bad).is_err(), "{bad}");
        }
        let two = quarantine.find("two").unwrap();
        quarantine.delete(&two).unwrap();
        assert!(quarantine.find("two").is_err());
    }
}
