//! The control socket: a Unix socket in the instance (`queue/control.sock`)
//! through which `waraka queue flush`, `bounce`, `waraka quarantine release`,
//! `waraka kv` and `waraka reload` reach the running server. One request
//! line, one reply line; only the instance's owner can connect.

use crate::capabilities::KvStore;
use crate::delivery::Outbound;
use crate::quarantine::Releases;
use crate::queue::Selection;
use crate::reload::Reloader;
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

/// The longest request line accepted.
const MAX_REQUEST: usize = 1024;

/// Where the control socket of the instance rooted at `root` is.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join("queue").join("control.sock")
}

/// Where the local submission socket (`waraka sendmail`) of the instance
/// rooted at `root` is.
pub fn submit_socket_path(root: &Path) -> PathBuf {
    root.join("queue").join("submit.sock")
}

/// What the control socket's requests act on.
#[derive(Clone)]
pub struct Controls {
    /// The outbound queue, when delivery is enabled.
    pub outbound: Option<Outbound>,
    /// The instance's rescans.
    pub reloader: Reloader,
    /// Quarantine releases, when waraka.toml has `[dirs].quarantine`.
    pub releases: Option<Releases>,
    /// The key/value stores, for `waraka kv` (the memory ones live only here).
    pub kv: HashMap<String, Arc<KvStore>>,
}

/// The most keys `kv STORE list` answers with.
const MAX_LISTED_KEYS: usize = 1000;

/// Answers one request line: `ok …` or `error …`.
async fn answer(controls: &Controls, request: &str) -> String {
    let words: Vec<&str> = request.split_whitespace().collect();
    let reply = match words.as_slice() {
        ["reload"] => match controls.reloader.reload().await {
            Some(report) if report.is_clean() => Ok(report.describe()),
            Some(report) => Err(report.describe()),
            None => Err("the file watcher has stopped".to_string()),
        },
        [
            verb @ ("flush" | "hold" | "release" | "tls-report" | "dmarc-report"),
            rest @ ..,
        ] => match &controls.outbound {
            Some(outbound) => answer_queue(outbound, verb, rest).await,
            None => Err("outbound delivery is disabled".to_string()),
        },
        ["quarantine-release", id] => match &controls.releases {
            Some(releases) => match releases.release(id).await {
                Ok(reply) if reply.code / 100 == 2 => Ok(reply.to_wire().trim_end().to_string()),
                Ok(reply) => Err(format!("not released: {}", reply.to_wire().trim_end())),
                Err(e) => Err(format!("{e:#}")),
            },
            None => Err("waraka.toml has no [dirs].quarantine".to_string()),
        },
        ["bounce", ..] => match &controls.outbound {
            Some(outbound) => answer_bounce(outbound, request).await,
            None => Err("outbound delivery is disabled".to_string()),
        },
        ["kv", store, ..] => match controls.kv.get(*store) {
            Some(kv) => answer_kv(kv, request).await,
            None => Err(format!("waraka.toml has no [kv.{store}]")),
        },
        _ => Err(format!("unknown request {request:?}")),
    };
    match reply {
        Ok(text) => format!("ok {text}"),
        Err(why) => format!("error {why}"),
    }
}

/// Answers `kv STORE get KEY`, `kv STORE delete KEY` or `kv STORE list
/// [PREFIX]` (the key is the rest of the line, spaces and all); values and
/// lists come back as JSON, which keeps them on one line.
async fn answer_kv(kv: &KvStore, request: &str) -> Result<String, String> {
    let mut parts = request.splitn(4, ' ').skip(2);
    let (verb, key) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let failed = |e: crate::capabilities::CapabilityError| e.to_string();
    match verb {
        "get" => {
            let value = kv.get(key).await.map_err(failed)?;
            let text = value.map(|v| String::from_utf8_lossy(&v).into_owned());
            Ok(serde_json::to_string(&text).unwrap_or_default())
        }
        "delete" => {
            let deleted = kv.delete(key).await.map_err(failed)?;
            info!(%key, deleted, "kv key deleted by the administrator");
            Ok(if deleted { "deleted" } else { "absent" }.to_string())
        }
        "list" => {
            let keys = kv.keys(key, MAX_LISTED_KEYS).await.map_err(failed)?;
            Ok(serde_json::to_string(&keys).unwrap_or_default())
        }
        _ => Err(format!("unknown kv request {verb:?} (get, delete or list)")),
    }
}

/// Answers `bounce SELECTION -- REASON`.
async fn answer_bounce(outbound: &Outbound, request: &str) -> Result<String, String> {
    let rest = request.strip_prefix("bounce").unwrap_or_default();
    let (words, reason) = rest.split_once(" -- ").unwrap_or((rest, "delivery given up"));
    let words: Vec<&str> = words.split_whitespace().collect();
    let selection = Selection::parse(&words).ok_or("bounce what? id ID, domain DOMAIN or all")?;
    let (returned, busy) = outbound
        .give_up(selection, reason.trim())
        .await
        .map_err(|e| e.to_string())?;
    Ok(match busy {
        0 => format!("{returned} entries returned to their senders"),
        _ => format!("{returned} entries returned to their senders; {busy} being delivered now, left to their attempt"),
    })
}

/// Answers a request about the outbound queue.
async fn answer_queue(outbound: &Outbound, verb: &str, rest: &[&str]) -> Result<String, String> {
    match (verb, rest) {
        ("flush", [] | [_]) => {
            let domain = rest.first().copied();
            let count = outbound.flush(domain);
            info!(domain = domain.unwrap_or("*"), entries = count, "queue flushed");
            Ok(format!("{count} entries due now"))
        }
        ("hold", selection) => {
            let selection = Selection::parse(selection).ok_or("hold what? id ID, domain DOMAIN or all")?;
            let (now, after) = outbound.hold(selection).await.map_err(|e| e.to_string())?;
            Ok(match after {
                0 => format!("{now} entries held"),
                _ => format!("{now} entries held, {after} more after their attempt in progress"),
            })
        }
        ("tls-report", []) => {
            let sent = outbound.send_tls_reports(true).await;
            let (queued, posted) = sent.ok_or("TLS reports are off ([outbound] tls_reports)")?;
            Ok(format!("{queued} TLS reports queued, {posted} posted"))
        }
        ("dmarc-report", []) => {
            let queued = outbound.send_dmarc_reports(true).await;
            let queued = queued.ok_or("DMARC reports are off ([outbound] dmarc_reports)")?;
            Ok(format!("{queued} DMARC reports queued"))
        }
        ("release", selection) => {
            let selection = Selection::parse(selection).ok_or("release what? id ID, domain DOMAIN or all")?;
            let count = outbound.release(selection).await.map_err(|e| e.to_string())?;
            Ok(format!("{count} entries released, due now"))
        }
        _ => Err(format!("unknown request {verb:?} {rest:?}")),
    }
}

/// Listens on `path` (replacing a socket left by a dead server) until the
/// task is dropped.
pub async fn serve(path: PathBuf, controls: Controls) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    let listener = UnixListener::bind(&path).with_context(|| format!("control socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!("control socket accept failed: {e}");
                continue;
            }
        };
        let controls = controls.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
            if reader.read_line(&mut line).await.is_ok() {
                let reply = answer(&controls, line.trim()).await;
                let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
            }
        });
    }
}

/// Sends `request` to the server running the instance rooted at `root`
/// and returns its reply; an error when no server is running there.
pub async fn request(root: &Path, request: &str) -> Result<String> {
    request_if_running(root, request)
        .await?
        .with_context(|| format!("no running server for this instance ({})", socket_path(root).display()))
}

/// As [`request`], but `None` when no server is running the instance.
pub async fn request_if_running(root: &Path, request: &str) -> Result<Option<String>> {
    let path = socket_path(root);
    let stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("control socket {}", path.display())),
    };
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{request}\n").as_bytes()).await?;
    let mut reply = String::new();
    BufReader::new(read).read_line(&mut reply).await?;
    let reply = reply.trim().to_string();
    match reply.strip_prefix("error ") {
        Some(why) => bail!("the server says: {why}"),
        None => Ok(Some(reply.strip_prefix("ok ").unwrap_or(&reply).to_string())),
    }
}
