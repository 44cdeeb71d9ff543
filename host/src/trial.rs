//! `waraka plugin test`: one plugin in an SMTP session on standard input and
//! output, with an instance's settings and config files — Haraka's `-t`
//! test mode. Commands (and message lines) are read one per line, the
//! replies written as a client would read them, the plugin's log lines go
//! to standard error. No listener, no other plugin and no outbound queue:
//! when the plugin does not check recipients (or queue), the trial accepts
//! them (and takes the message, keeping it nowhere), so that its later
//! hooks run too.

use crate::config::Instance;
use crate::plugins::{Chain, PluginSource};
use crate::policy::{Decision, Hook, HookCall, Policy, Verdict};
use crate::protocol::Reply;
use crate::session::{Connection, Flow, Session, SharedConnection};
use anyhow::{Result, bail};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// What to try: the component, the name it runs under (its config and
/// `[plugin."NAME"]` table), and the client the session pretends to be.
pub struct Trial {
    /// The plugin component.
    pub file: PathBuf,
    /// The plugin's name in the instance (default: the file's stem).
    pub name: Option<String>,
    /// The client's address.
    pub client: IpAddr,
}

/// Runs the session until the client's `QUIT`, a closing reply or the end
/// of standard input.
pub async fn run(instance: &Instance, trial: Trial) -> Result<()> {
    let name = match trial.name {
        Some(name) => name,
        None => trial
            .file
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let spec = instance.plugin_spec(name.clone(), PluginSource::File(trial.file.clone()))?;
    let registry = crate::server::registry_of(instance, vec![spec]).await?;
    if let Some(rejection) = registry.rejected().get(&name) {
        bail!("{} cannot run as {name}: {rejection:?}", trial.file.display());
    }
    let settings = Arc::new(instance.session_settings());
    let peer = SocketAddr::new(trial.client, 0);
    let local = SocketAddr::from(([127, 0, 0, 1], 25));
    let conn = SharedConnection::new(Connection::new(peer, local, &settings.hostname, settings.notes));
    let chain = Chain::new(registry.runtime().clone(), registry.current(), conn.clone());
    let mut session = Session::new(Alone(chain), conn, settings);
    let mut stdout = tokio::io::stdout();
    let mut flow = session.start(false).await;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        stdout.write_all(&session.take_output()).await?;
        stdout.flush().await?;
        if flow == Flow::Close {
            break;
        }
        let Some(line) = lines.next_line().await? else {
            break;
        };
        flow = session
            .ingest(format!("{}\r\n", line.trim_end_matches('\r')).as_bytes())
            .await;
    }
    session.end().await;
    Ok(())
}

/// The plugin's chain, with the trial standing in for the plugins that are
/// not there: when the plugin does not implement `rcpt` (or `queue`), the
/// recipients (and the message) are accepted, so that its later hooks run.
struct Alone(Chain);

impl Policy for Alone {
    fn implements(&self, hook: Hook) -> bool {
        self.0.implements(hook)
    }

    async fn decide(&mut self, call: HookCall) -> Decision {
        let hook = call.hook();
        let decision = self.0.decide(call).await;
        let taken = matches!(hook, Hook::Rcpt | Hook::Queue | Hook::QueueOutbound) && !self.0.implements(hook);
        if !taken || decision.verdict != Verdict::Cont {
            return decision;
        }
        let text = match hook {
            Hook::Rcpt => "Recipient accepted by the trial (no plugin decided)",
            _ => "Message taken by the trial (kept nowhere)",
        };
        let code = if hook == Hook::Rcpt { "2.1.5" } else { "2.0.0" };
        Decision {
            verdict: Verdict::Ok(Some(Reply::new(250, code, text))),
            plugin: None,
        }
    }

    async fn capabilities(&mut self) -> Vec<String> {
        self.0.capabilities().await
    }

    async fn notify(&mut self, call: HookCall) {
        self.0.notify(call).await
    }

    fn park(&mut self) {
        self.0.park()
    }
}
