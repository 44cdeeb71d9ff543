//! The data each plugin store carries: WASI (nothing granted but the plugin's
//! directories), the memory limiter, the call deadline and the host context.

use super::bindings::types::Error;
use super::limits::MemoryLimiter;
use super::loader::DirGrant;
use super::runtime::Services;
use crate::capabilities::DeliveryDir;
use crate::session::SharedConnection;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What host imports can reach: the plugin's identity and grants, its
/// connection (none while it is loaded) and the shared services.
pub struct HostContext {
    pub plugin: Arc<str>,
    /// Capability grants from `waraka.toml` (`dns`, `kv:NAME`, ...).
    pub grants: Arc<[String]>,
    pub conn: Option<SharedConnection>,
    pub services: Arc<Services>,
}

/// The `T` of every plugin `Store<T>`.
pub struct StoreState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: MemoryLimiter,
    /// The span guest output is logged in (the connection's), shared with
    /// the store's stdout/stderr.
    pub output_span: Arc<Mutex<tracing::Span>>,
    /// Whether WASI file calls block the calling thread, so that guest calls
    /// must run off the runtime's workers (on a blocking-pool thread, or in
    /// `block_in_place`).
    pub blocking_files: bool,
    /// The plugin's `dir:NAME` directories, for the `files` capability.
    pub dirs: GrantedDirs,
    /// When the running hook call must stop.
    pub deadline: Instant,
    /// The engine's epoch ticker, kept awake by armed calls.
    pub(super) ticker: Arc<super::epoch::EpochTicker>,
    /// Log lines the running hook call may still write.
    pub log_budget: LogBudget,
    pub host: HostContext,
}

/// The directories granted to a plugin (`dir:NAME`), each opened for the
/// `files` capability the first time a call names it.
pub struct GrantedDirs(Vec<GrantedDir>);

struct GrantedDir {
    name: String,
    host: PathBuf,
    opened: Option<Arc<DeliveryDir>>,
}

impl GrantedDirs {
    /// The directories of `grants` (none opened yet).
    pub fn new(grants: &[DirGrant]) -> GrantedDirs {
        let dir = |grant: &DirGrant| GrantedDir {
            name: grant.guest.trim_start_matches('/').to_owned(),
            host: grant.host.clone(),
            opened: None,
        };
        GrantedDirs(grants.iter().map(dir).collect())
    }

    /// The directory granted as `dir:NAME`; `not-granted` for any other name.
    pub fn open(&mut self, name: &str) -> Result<Arc<DeliveryDir>, Error> {
        let dir = self.0.iter_mut().find(|d| d.name == name).ok_or(Error::NotGranted)?;
        if let Some(opened) = &dir.opened {
            return Ok(opened.clone());
        }
        let opened = DeliveryDir::open(&dir.host)
            .map(Arc::new)
            .map_err(|e| Error::Backend(format!("opening [dirs].{name} ({}): {e}", dir.host.display())))?;
        dir.opened = Some(opened.clone());
        Ok(opened)
    }
}

/// Log lines a plugin may write in one hook call (`log` calls and
/// stdout/stderr lines together); the rest are dropped, with one line saying
/// so, so a plugin cannot flood the server's log.
pub const MAX_LOG_LINES: u32 = 200;

/// The log lines left to the running hook call of one store, shared with its
/// stdout/stderr streams.
#[derive(Clone, Debug)]
pub struct LogBudget(Arc<AtomicU32>);

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget(Arc::new(AtomicU32::new(MAX_LOG_LINES)))
    }
}

impl LogBudget {
    /// A new hook call starts with the whole budget.
    pub fn refill(&self) {
        self.0.store(MAX_LOG_LINES, Ordering::Relaxed);
    }

    /// Whether one more line may be written; the last one allowed is
    /// followed by a notice that the rest of the call's lines are dropped.
    pub fn take(&self, plugin: &str) -> bool {
        match self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        {
            Ok(1) => {
                tracing::warn!(
                    plugin,
                    "log limit of {MAX_LOG_LINES} lines per hook call reached: the call's further lines are dropped"
                );
                true
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Guest stdout/stderr, turned into log lines tagged with the plugin and the
/// span of the connection the instance serves; a Rust panic message arrives this way.
#[derive(Clone)]
pub struct GuestOutput {
    pub plugin: Arc<str>,
    pub span: Arc<Mutex<tracing::Span>>,
    pub budget: LogBudget,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(GuestLineWriter {
            plugin: self.plugin.clone(),
            span: self.span.clone(),
            budget: self.budget.clone(),
            pending: Vec::new(),
        })
    }
}

struct GuestLineWriter {
    plugin: Arc<str>,
    span: Arc<Mutex<tracing::Span>>,
    budget: LogBudget,
    pending: Vec<u8>,
}

const MAX_GUEST_LINE: usize = 4096;

impl GuestLineWriter {
    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        if !text.is_empty() {
            let span = self.span.lock().unwrap_or_else(|e| e.into_inner()).clone();
            span.in_scope(|| {
                if self.budget.take(&self.plugin) {
                    tracing::warn!(plugin = %self.plugin, "guest output: {text}");
                }
            });
        }
    }
}

impl AsyncWrite for GuestLineWriter {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        while let Some(eol) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=eol).collect();
            self.emit(&line);
        }
        if self.pending.len() > MAX_GUEST_LINE {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for GuestLineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
    }
}
