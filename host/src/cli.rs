//! The `waraka` command line.

use crate::capabilities::dkim_signing::KeyAlgorithm;
use crate::config::{Instance, default_chain, lay_out_instance};
use crate::plugins::{PluginLimits, PluginSource, PluginSpec};
use crate::quarantine::{Kept, Quarantine};
use crate::queue::{QueueStore, Selection, now_ms};
use crate::session::Role;
use crate::status::Status;
use crate::{scaffold, server};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

/// Waraka: an SMTP server whose mail policy runs in sandboxed WebAssembly plugins.
#[derive(Parser, Debug)]
#[command(name = "waraka", version, about)]
pub struct Cli {
    /// Log line format on standard error: text, or json (one object per
    /// line, with the connection and transaction spans).
    #[arg(long, global = true, value_enum, default_value = "text", env = "WARAKA_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Lay out a new instance directory (waraka.toml, plugins/, config/, queue/).
    Init {
        dir: PathBuf,
        /// Core plugins to install, in chain order (default: the standard set).
        #[arg(long, value_delimiter = ',')]
        plugins: Option<Vec<String>>,
    },
    /// Make a new instance in DIR from a Haraka install directory: the
    /// plugin list, listeners, limits, TLS files, outbound settings and the
    /// plugins' settings that have a counterpart; prints what was carried
    /// over, what to look at by hand, and what Waraka does not need.
    ImportHaraka {
        /// Haraka's install directory (the one `haraka -c` runs).
        haraka: PathBuf,
        /// The new instance directory.
        dir: PathBuf,
    },
    /// Serve mail. Without --config, serves the embedded default instance.
    Run {
        /// The instance directory.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen on `[ROLE=]ADDR` instead of the configured listeners
        /// (repeatable; ROLE is mx, submission or submissions; default mx).
        #[arg(long, value_parser = parse_listen)]
        listen: Vec<(String, Role)>,
    },
    /// Print an Argon2id hash of a password (read from standard input) for auth/flat_file.
    PasswordHash,
    /// Make a DKIM signing key for DOMAIN in the instance's dkim/ and print
    /// the DNS record to publish.
    DkimKey {
        domain: String,
        /// The key's selector (default: `w` and this year and month, e.g. w202612).
        #[arg(long)]
        selector: Option<String>,
        /// An Ed25519 key (RFC 8463) instead of RSA-2048.
        #[arg(long)]
        ed25519: bool,
        /// The instance directory (default: the current directory).
        #[arg(long, default_value = ".")]
        config: PathBuf,
    },
    /// Print the DANE TLSA records (RFC 7671) of the `[tls]` certificates,
    /// to publish for the MX host names: `3 1 1` for each certificate's key
    /// and `2 1 1` for its issuer's when the chain file holds it.
    Tlsa {
        /// The instance directory (default: the current directory).
        #[arg(long, default_value = ".")]
        config: PathBuf,
        /// The port the records are for (25: MX; 465 or 587: submission).
        #[arg(long, default_value_t = 25)]
        port: u16,
    },
    /// Inspect and create plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Read and check an instance as `waraka run` would (waraka.toml, TLS
    /// certificates, listeners, plugins with their grants and backends,
    /// delivery settings) without serving it; fails when the server would
    /// not start or would refuse a plugin.
    Check {
        /// The instance directory (default: the current directory).
        #[arg(long, default_value = ".")]
        config: PathBuf,
    },
    /// Make the running server rescan its plugins and waraka.toml and drop
    /// its cached config files now; prints what changed, and fails when
    /// waraka.toml or a plugin file was refused.
    Reload {
        /// The instance directory (default: the current directory).
        #[arg(long, default_value = ".")]
        config: PathBuf,
    },
    /// Submit a message from standard input to the running server, as
    /// Sendmail's and Postfix's `sendmail` (also when this binary is run
    /// through a link named `sendmail`); while no server runs, the message
    /// waits in queue/maildrop for it. `-o…`, `-B`, `-v` and `-bm` are
    /// accepted and ignored; exit codes follow sysexits.h.
    Sendmail {
        /// The instance directory.
        #[arg(long, env = "WARAKA_CONFIG", default_value = "/etc/waraka")]
        config: PathBuf,
        /// Also send to the recipients of the To, Cc and Bcc fields (Bcc is
        /// taken out of the message).
        #[arg(short = 't')]
        extract_recipients: bool,
        /// A line of a lone dot does not end the message (also `-oi`).
        #[arg(short = 'i')]
        ignore_dots: bool,
        /// The envelope sender (default: you at [smtp] hostname).
        #[arg(short = 'f', short_alias = 'r', value_name = "SENDER")]
        sender: Option<String>,
        /// Your full name, for a From field the message lacks.
        #[arg(short = 'F', value_name = "NAME")]
        full_name: Option<String>,
        /// Sendmail options (`-oi` is `-i`; the others are ignored).
        #[arg(short = 'o', value_name = "OPTION")]
        option: Vec<String>,
        /// The body type (ignored: the server finds out).
        #[arg(short = 'B', value_name = "TYPE")]
        body_type: Option<String>,
        /// The mode: only `m` (deliver a message) is known.
        #[arg(short = 'b', value_name = "MODE")]
        mode: Option<String>,
        /// Verbose (ignored).
        #[arg(short = 'v')]
        verbose: bool,
        /// The recipients.
        recipients: Vec<String>,
    },
    /// Inspect the outbound queue.
    Queue {
        /// The instance directory (default: the current directory).
        #[arg(long, default_value = ".")]
        config: PathBuf,
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Look at and clear what plugins keep in the running server's
    /// key/value stores (karma's history, greylisting, limits): the way to
    /// forgive a client a false positive.
    Kv {
        /// The instance directory (default: the current directory).
        #[arg(long, default_value = ".")]
        config: PathBuf,
        /// The store (`[kv.NAME]`).
        #[arg(long, default_value = "default")]
        store: String,
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Inspect and release the messages queue/quarantine kept aside
    /// (`[dirs].quarantine`).
    Quarantine {
        /// The instance directory (default: the current directory).
        #[arg(long, default_value = ".")]
        config: PathBuf,
        #[command(subcommand)]
        command: QuarantineCommand,
    },
}

#[derive(Subcommand, Debug)]
enum QuarantineCommand {
    /// Every kept message: id (DAY/NAME), when it was kept, size, sender,
    /// recipients and why.
    List,
    /// One kept message's envelope and reason, then its message headers.
    Show { id: String },
    /// Remove a kept message.
    Delete { id: String },
    /// Hand kept messages to the running server's queue plugins, as they
    /// would have been delivered had they not been kept (no check runs
    /// again); each is removed once a plugin took it.
    Release {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum KvCommand {
    /// The value of a key (as text), or nothing when it is absent or expired.
    Get { key: String },
    /// Remove a key (`karma:192.0.2.7/32` forgets that client's history).
    Delete { key: String },
    /// The keys that start with PREFIX (all without), sorted, at most 1,000.
    List { prefix: Option<String> },
}

#[derive(Subcommand, Debug)]
enum QueueCommand {
    /// Queued entries: id, sender, recipients, domain, attempts, next
    /// attempt, last error; all, or those of a domain or a sender.
    List {
        /// Only the entries for this destination domain.
        #[arg(long)]
        domain: Option<String>,
        /// Only the entries from this envelope sender (`<>` for bounces).
        #[arg(long)]
        sender: Option<String>,
        /// One JSON object per entry and line (as `show` prints them), for scripts.
        #[arg(long)]
        json: bool,
    },
    /// One entry's envelope and state, then its message headers.
    Show { id: String },
    /// How many entries wait per destination domain and how long (Postfix's
    /// qshape): where a backlog builds up and since when.
    Shape {
        /// The domains shown, those with the most entries first.
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// Remove entries without delivering or bouncing them (a running
    /// server drops them at their next attempt).
    Delete {
        #[command(flatten)]
        chosen: Chosen,
    },
    /// Make queued entries (of DOMAIN, or all) due now, on the running server.
    Flush { domain: Option<String> },
    /// Keep entries from delivery (not attempted, bounced or expired) until
    /// released; on the running server, else in the queue on disk.
    Hold {
        #[command(flatten)]
        chosen: Chosen,
    },
    /// Let held entries go: they are due now.
    Release {
        #[command(flatten)]
        chosen: Chosen,
    },
    /// Give up on entries now: every recipient fails and the sender gets
    /// the bounce, as when the retry schedule runs out; on the running server.
    Bounce {
        #[command(flatten)]
        chosen: Chosen,
        /// Why, for the bounce's diagnostic.
        #[arg(long, default_value = "delivery given up")]
        reason: String,
    },
    /// Send the TLS reports (RFC 8460) of what the running server has
    /// counted so far, now rather than after the day ([outbound] tls_reports).
    TlsReport,
    /// Send the DMARC aggregate reports (RFC 7489) of what the running
    /// server has counted so far, now rather than after the day
    /// ([outbound] dmarc_reports).
    DmarcReport,
    /// How mail for DOMAIN would leave: its MX hosts in order with their
    /// addresses, and what DNSSEC proves of them (DANE's TLSA records).
    Route { domain: String },
}

/// The entries a command names: one id, a domain's, a sender's, or all.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
struct Chosen {
    /// A queue entry's id (see `waraka queue list`).
    id: Option<String>,
    /// Every entry for this destination domain.
    #[arg(long)]
    domain: Option<String>,
    /// Every entry from this envelope sender (`<>` for bounces): the mail of
    /// a stolen account.
    #[arg(long)]
    sender: Option<String>,
    /// Every entry.
    #[arg(long)]
    all: bool,
}

impl Chosen {
    fn selection(self) -> Selection {
        match (self.id, self.domain, self.sender) {
            (Some(id), _, _) => Selection::Id(id),
            (None, Some(domain), _) => Selection::Domain(domain),
            (None, None, Some(sender)) => Selection::Sender(sender),
            (None, None, None) => Selection::All,
        }
    }
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Show the plugins of an instance: order, hooks, limits, grants.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check that a component fits the plugin world and show what it declares.
    Check { file: PathBuf },
    /// Try a plugin alone in an SMTP session on standard input and output
    /// (one command or message line per line), with an instance's config.
    Test {
        /// The plugin component (.wasm).
        file: PathBuf,
        /// The instance directory (default: the embedded instance).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The plugin's name, for its config and grants (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
        /// The client's address the session pretends to come from.
        #[arg(long, default_value = "127.0.0.1")]
        client: std::net::IpAddr,
    },
    /// Write a plugin skeleton (source, doc, config stub) into DIR/NAME.
    New {
        name: String,
        /// Where to create the skeleton.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Source language: rust, js, python or c.
        #[arg(long, default_value = "rust")]
        lang: String,
    },
    /// Build a plugin skeleton's component with its language's toolchain.
    Build {
        /// The plugin directory (with Cargo.toml, app.js, app.py or app.c).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

/// Runs the command line.
pub fn main() -> Result<()> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Run as `sendmail` (a link), it is `waraka sendmail`.
    if args
        .first()
        .and_then(|arg0| Path::new(arg0).file_name())
        .is_some_and(|name| name == "sendmail")
    {
        args.insert(1, "sendmail".into());
    }
    let cli = Cli::parse_from(args);
    let logger = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logger
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none())
            .init(),
        LogFormat::Json => logger.json().with_span_list(true).with_current_span(false).init(),
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Init { dir, plugins } => init(&dir, plugins),
            Command::PasswordHash => password_hash(),
            Command::ImportHaraka { haraka, dir } => import_haraka(&haraka, &dir),
            Command::DkimKey {
                domain,
                selector,
                ed25519,
                config,
            } => dkim_key(&Instance::load(&config)?, &domain, selector, ed25519),
            Command::Run { config, listen } => server::serve(instance(config.as_deref())?, listen).await,
            Command::Plugin {
                command: PluginCommand::List { config },
            } => list(instance(config.as_deref())?).await,
            Command::Queue { config, command } => queue_command(&Instance::load(&config)?, command).await,
            Command::Quarantine { config, command } => quarantine_command(&Instance::load(&config)?, command).await,
            Command::Kv { config, store, command } => kv_command(&config, &store, command).await,
            Command::Check { config } => check_instance(&config).await,
            Command::Tlsa { config, port } => print_tlsa(&Instance::load(&config)?, port),
            Command::Sendmail {
                config,
                extract_recipients,
                ignore_dots,
                sender,
                full_name,
                option,
                mode,
                recipients,
                ..
            } => {
                if mode.as_deref().is_some_and(|m| m != "m") {
                    return Err(crate::sendmail::Failure {
                        status: crate::sendmail::EX_USAGE,
                        message: format!(
                            "-b{}: only -bm (deliver a message) is supported",
                            mode.unwrap_or_default()
                        ),
                    }
                    .into());
                }
                let options = crate::sendmail::Options {
                    extract_recipients,
                    ignore_dots: ignore_dots || option.iter().any(|o| o == "i"),
                    sender,
                    full_name,
                    recipients,
                };
                sendmail(&config, &options).await
            }
            Command::Reload { config } => {
                println!("{}", crate::control::request(&config, "reload").await?);
                Ok(())
            }
            Command::Plugin {
                command: PluginCommand::Check { file },
            } => check(&file).await,
            Command::Plugin {
                command:
                    PluginCommand::Test {
                        file,
                        config,
                        name,
                        client,
                    },
            } => {
                crate::trial::run(
                    &instance(config.as_deref())?,
                    crate::trial::Trial { file, name, client },
                )
                .await
            }
            Command::Plugin {
                command: PluginCommand::New { name, dir, lang },
            } => {
                let path = scaffold::new_plugin(&dir, &name, lang.parse()?)?;
                println!("created {}; see its README.md", path.display());
                Ok(())
            }
            Command::Plugin {
                command: PluginCommand::Build { dir },
            } => {
                let wasm = scaffold::build_plugin(&dir)?;
                println!("built {}", wasm.display());
                Ok(())
            }
        }
    })
}

fn dkim_key(instance: &Instance, domain: &str, selector: Option<String>, ed25519: bool) -> Result<()> {
    let selector = selector.unwrap_or_else(|| chrono::Utc::now().format("w%Y%m").to_string());
    let algorithm = if ed25519 {
        KeyAlgorithm::Ed25519
    } else {
        KeyAlgorithm::Rsa2048
    };
    let record = instance.dkim_keys().create(domain, &selector, algorithm)?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    eprintln!(
        "wrote {}; publish this record, then add dkim_sign to the chain:",
        instance.root.join("dkim").join(&domain).display()
    );
    // A TXT string holds at most 255 bytes; zone files join adjacent strings.
    let strings: Vec<String> = record
        .as_bytes()
        .chunks(255)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect();
    println!("{selector}._domainkey.{domain}. IN TXT ( {} )", strings.join(" "));
    Ok(())
}

fn password_hash() -> Result<()> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("no password on standard input");
    }
    println!("{}", crate::password::hash(password)?);
    Ok(())
}

fn parse_listen(arg: &str) -> Result<(String, Role), String> {
    match arg.split_once('=') {
        None => Ok((arg.to_string(), Role::Mx)),
        Some((role, address)) => {
            let role = match role {
                "mx" => Role::Mx,
                "submission" => Role::Submission,
                "submissions" => Role::Submissions,
                other => return Err(format!("unknown role {other:?} (mx, submission, submissions)")),
            };
            Ok((address.to_string(), role))
        }
    }
}

fn instance(dir: Option<&Path>) -> Result<Instance> {
    match dir {
        Some(dir) => Instance::load(dir),
        None => Instance::embedded(),
    }
}

/// `waraka tlsa`: the TLSA records of each `[tls]` certificate, for the
/// names it is for (the server's name when it names none).
fn print_tlsa(instance: &Instance, port: u16) -> Result<()> {
    let Some(files) = instance.tls_files() else {
        bail!("waraka.toml has no [tls] certificate");
    };
    for (cert, _) in files {
        let (mut names, records) = crate::tls::tlsa_records(&cert)?;
        if names.is_empty() {
            names.push(instance.session_settings().hostname);
        }
        println!("; {}", cert.display());
        for name in &names {
            for record in &records {
                println!("_{port}._tcp.{name}. IN TLSA {record}");
            }
        }
    }
    Ok(())
}

/// `waraka check`: what `waraka run` would read and refuse, without serving.
async fn check_instance(root: &Path) -> Result<()> {
    let instance = Instance::load(root)?;
    let prepared = server::prepare(&instance, &[]).await?;
    print!("{}", Status::of(prepared.registry.as_ref(), None).render());
    for listener in &prepared.listeners {
        println!("listener {} ({})", listener.address, listener.role.name());
    }
    match &prepared.outbound {
        Some((outbound, _)) => println!(
            "outbound delivery: on ({} at once, {} per domain)",
            outbound.concurrency, outbound.limits.per_domain
        ),
        None => println!("outbound delivery: off"),
    }
    // A plugin kept to roles no session can have never runs: say so.
    let mut roles: Vec<Role> = prepared.listeners.iter().map(|l| l.role).collect();
    if instance.config.sendmail.enabled {
        roles.push(Role::Submission);
    }
    for plugin in &prepared.registry.current().plugins {
        if !plugin.roles.is_empty() && !plugin.roles.iter().any(|r| roles.contains(r)) {
            let wanted: Vec<&str> = plugin.roles.iter().map(|r| r.name()).collect();
            println!(
                "warning: plugin {} takes part only in sessions of {}, and no listener has that role",
                plugin.name,
                wanted.join(", ")
            );
        }
    }
    let rejected = prepared.registry.rejected();
    if !rejected.is_empty() {
        let names: Vec<&str> = rejected.keys().map(String::as_str).collect();
        bail!("plugins refused: {}", names.join(", "));
    }
    println!("ok: {} would start with this configuration", instance.root.display());
    Ok(())
}

/// `waraka sendmail`: standard input to the server of the instance at
/// `root`; refused recipients are reported, and fail the command only
/// when none was taken.
async fn sendmail(root: &Path, options: &crate::sendmail::Options) -> Result<()> {
    let mut input = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut input).await?;
    let instance = Instance::load(root);
    let hostname = instance
        .as_ref()
        .map(|instance| instance.session_settings().hostname)
        .or_else(|_| std::fs::read_to_string("/etc/mailname").map(|name| name.trim().to_string()))
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname").map(|name| name.trim().to_string()))
        .unwrap_or_else(|_| "localhost".into());
    // Kept for the server only when it would pick it up.
    let maildrop = match &instance {
        Ok(instance) if instance.config.sendmail.enabled && instance.config.sendmail.maildrop => {
            Some(crate::sendmail::Maildrop {
                dir: crate::maildrop::dir(root),
                allowed_users: instance.config.sendmail.allowed_users.clone(),
            })
        }
        _ => None,
    };
    let refused = crate::sendmail::submit(root, &hostname, options, &input, maildrop.as_ref()).await?;
    for recipient in refused {
        eprintln!("waraka sendmail: recipient refused: {recipient}");
    }
    Ok(())
}

fn init(dir: &Path, plugins: Option<Vec<String>>) -> Result<()> {
    let chosen = plugins.unwrap_or_else(default_chain);
    lay_out_instance(dir, &chosen)?;
    println!(
        "created instance in {} with plugins {}",
        dir.display(),
        chosen.join(", ")
    );
    println!("serve it with: waraka run --config {}", dir.display());
    Ok(())
}

fn import_haraka(haraka: &Path, dir: &Path) -> Result<()> {
    let report = crate::migrate::import_haraka(haraka, dir)?;
    print!("{report}");
    println!(
        "created instance in {}; check it with: waraka check --config {}",
        dir.display(),
        dir.display()
    );
    Ok(())
}

async fn list(instance: Instance) -> Result<()> {
    let live = (!instance.embedded)
        .then(|| Status::read_live(&instance.status_file()))
        .flatten();
    let status = match live {
        Some(status) => status,
        None => Status::of(server::load_plugins(&instance).await?.as_ref(), None),
    };
    print!("{}", status.render());
    Ok(())
}

/// Holds (or releases) the selected entries: through the running server,
/// else in the queue on disk, which the next start schedules as it finds.
async fn hold_or_release(instance: &Instance, store: &QueueStore, selection: Selection, hold: bool) -> Result<()> {
    let verb = if hold { "hold" } else { "release" };
    let request = format!("{verb} {}", selection.words());
    if let Some(reply) = crate::control::request_if_running(&instance.root, &request).await? {
        println!("{reply}");
        return Ok(());
    }
    if let Selection::Id(id) = &selection
        && !store.contains(id)
    {
        bail!("no queued entry {id}");
    }
    let mut count = 0;
    for mut entry in store.list()? {
        if selection.matches(&entry) && entry.held != hold {
            entry.set_held(hold, now_ms());
            store.update(&entry)?;
            count += 1;
        }
    }
    match hold {
        true => println!("{count} entries held (no server is running)"),
        false => println!("{count} entries released (no server is running: due when one starts)"),
    }
    Ok(())
}

async fn check(file: &Path) -> Result<()> {
    let instance = Instance::embedded()?;
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let spec = PluginSpec {
        name: name.clone(),
        source: PluginSource::File(file.to_path_buf()),
        limits: PluginLimits::default(),
        dirs: Vec::new(),
        grants: Vec::new(),
        roles: Vec::new(),
    };
    let runtime = crate::plugins::Runtime::new(
        instance.runtime_settings(std::slice::from_ref(&spec)),
        crate::plugins::Services::new(
            crate::capabilities::ConfigFiles::new(instance.config_source.clone(), vec![name]),
            Default::default(),
        ),
    )?;
    let plugin = runtime
        .load(spec)
        .await
        .with_context(|| format!("{} is not a usable plugin", file.display()))?;
    let hooks = plugin.description.hook_names();
    println!(
        "ok: {} {} ({})",
        plugin.description.declared_name,
        plugin.description.version,
        file.display()
    );
    println!("hooks: {}", hooks.join(", "));
    println!("sha256: {}", plugin.hash);
    if !plugin.description.unknown_hooks.is_empty() {
        println!(
            "unknown hooks (ignored): {}",
            plugin.description.unknown_hooks.join(", ")
        );
    }
    Ok(())
}

/// `waraka kv`: asks the running server, which holds the stores (a memory
/// store exists nowhere else).
async fn kv_command(root: &Path, store: &str, command: KvCommand) -> Result<()> {
    let request = match &command {
        KvCommand::Get { key } => format!("kv {store} get {key}"),
        KvCommand::Delete { key } => format!("kv {store} delete {key}"),
        KvCommand::List { prefix } => format!("kv {store} list {}", prefix.as_deref().unwrap_or_default()),
    };
    let reply = crate::control::request(root, &request).await?;
    match command {
        KvCommand::Get { .. } => {
            if let Some(value) = serde_json::from_str::<Option<String>>(&reply)? {
                println!("{value}");
            }
        }
        KvCommand::Delete { .. } => println!("{reply}"),
        KvCommand::List { .. } => {
            for key in serde_json::from_str::<Vec<String>>(&reply)? {
                println!("{key}");
            }
        }
    }
    Ok(())
}

async fn queue_command(instance: &Instance, command: QueueCommand) -> Result<()> {
    let dir = instance.outbound_queue_dir();
    let store = QueueStore::at(&dir);
    match command {
        QueueCommand::List { domain, sender, json } => {
            let selections: Vec<Selection> = domain
                .map(Selection::Domain)
                .into_iter()
                .chain(sender.map(Selection::Sender))
                .collect();
            let entries: Vec<_> = store
                .list()
                .with_context(|| format!("reading {}", dir.display()))?
                .into_iter()
                .filter(|e| selections.iter().all(|s| s.matches(e)))
                .collect();
            if json {
                for entry in &entries {
                    println!("{}", serde_json::to_string(entry)?);
                }
                return Ok(());
            }
            println!(
                "{:<26} {:<28} {:<22} {:>8} {:<20} {:<32} last error",
                "id", "sender", "domain", "attempts", "next attempt", "recipients"
            );
            for e in &entries {
                let sender = if e.sender.is_empty() { "<>" } else { e.sender.as_str() };
                println!(
                    "{:<26} {:<28} {:<22} {:>8} {:<20} {:<32} {}",
                    e.id,
                    sender,
                    e.domain,
                    e.attempts,
                    if e.held {
                        "held".to_string()
                    } else {
                        time_text(e.next_attempt_ms)
                    },
                    e.recipients.join(","),
                    e.last_error.as_deref().unwrap_or("-")
                );
            }
            println!("{} entries", entries.len());
        }
        QueueCommand::Shape { top } => {
            let entries = store.list().with_context(|| format!("reading {}", dir.display()))?;
            print!("{}", crate::queue::shape(&entries, now_ms(), top));
        }
        QueueCommand::Show { id } => {
            let entry = store.get(&id).with_context(|| format!("queue entry {id}"))?;
            println!("{}", serde_json::to_string_pretty(&entry)?);
            let message = std::fs::read(store.message_path(&entry))?;
            println!();
            print!("{}", headers_text(&message));
        }
        QueueCommand::Flush { domain } => {
            let request = match &domain {
                Some(domain) => format!("flush {domain}"),
                None => "flush".to_string(),
            };
            println!("{}", crate::control::request(&instance.root, &request).await?);
        }
        QueueCommand::Route { domain } => print_route(instance, &domain).await?,
        QueueCommand::TlsReport => println!("{}", crate::control::request(&instance.root, "tls-report").await?),
        QueueCommand::DmarcReport => println!("{}", crate::control::request(&instance.root, "dmarc-report").await?),
        QueueCommand::Hold { chosen } => hold_or_release(instance, &store, chosen.selection(), true).await?,
        QueueCommand::Bounce { chosen, reason } => {
            let request = format!("bounce {} -- {}", chosen.selection().words(), reason.replace('\n', " "));
            println!("{}", crate::control::request(&instance.root, &request).await?);
        }
        QueueCommand::Release { chosen } => hold_or_release(instance, &store, chosen.selection(), false).await?,
        QueueCommand::Delete { chosen } => {
            let selection = chosen.selection();
            if let Selection::Id(id) = &selection {
                store.get(id).with_context(|| format!("queue entry {id}"))?;
            }
            let mut count = 0;
            for entry in store.list()?.iter().filter(|e| selection.matches(e)) {
                store.remove(entry)?;
                println!(
                    "deleted {} ({} recipients for {})",
                    entry.id,
                    entry.recipients.len(),
                    entry.domain
                );
                count += 1;
            }
            println!("{count} entries deleted");
        }
    }
    Ok(())
}

async fn quarantine_command(instance: &Instance, command: QuarantineCommand) -> Result<()> {
    let quarantine = Quarantine::of(instance)?;
    let to_text = |kept: &Kept| -> String {
        let to: Vec<String> = kept.envelope.recipients.iter().map(|r| r.to_string()).collect();
        to.join(",")
    };
    match command {
        QuarantineCommand::List => {
            let kept = quarantine.list()?;
            println!(
                "{:<40} {:<20} {:>9} {:<28} {:<32} reason",
                "id", "kept", "size", "sender", "recipients"
            );
            for k in &kept {
                let since_epoch = k.stored.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                println!(
                    "{:<40} {:<20} {:>9} {:<28} {:<32} {}",
                    k.id,
                    time_text(since_epoch.as_millis() as u64),
                    k.size,
                    k.envelope.sender.to_string(),
                    to_text(k),
                    k.envelope.reason
                );
            }
            println!("{} kept", kept.len());
        }
        QuarantineCommand::Show { id } => {
            let kept = quarantine.find(&id)?;
            println!("id: {}", kept.id);
            println!("reason: {}", kept.envelope.reason);
            println!("sender: {}", kept.envelope.sender);
            println!("recipients: {}", to_text(&kept));
            println!();
            print!(
                "{}",
                headers_text(&std::fs::read(&kept.path)?[kept.envelope.length as usize..])
            );
        }
        QuarantineCommand::Delete { id } => {
            let kept = quarantine.find(&id)?;
            quarantine.delete(&kept)?;
            println!(
                "deleted {} (from {} to {})",
                kept.id,
                kept.envelope.sender,
                to_text(&kept)
            );
        }
        QuarantineCommand::Release { ids } => {
            let mut failed = 0;
            for id in &ids {
                let request = format!("quarantine-release {id}");
                match crate::control::request_if_running(&instance.root, &request).await {
                    Ok(Some(reply)) => println!("released {id}: {reply}"),
                    Ok(None) => bail!("releasing needs the running server (its queue plugins deliver the message)"),
                    Err(e) => {
                        eprintln!("{id}: {e:#}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {} not released", ids.len());
            }
        }
    }
    Ok(())
}

/// A message's header section (up to its blank line), as text.
fn headers_text(message: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(crate::capabilities::mime::split_header(message).0)
}

/// Prints the route of `domain` as the outbound queue would take it, with
/// what DNSSEC proves of it (whether or not `[outbound] dane` is on).
async fn print_route(instance: &Instance, domain: &str) -> Result<()> {
    use crate::delivery::{Route, resolve};
    let outbound = &instance.config.outbound;
    let dns = instance.dns()?;
    let settings = instance.route_settings();
    let targets = match resolve(&dns, domain, &settings)
        .await
        .with_context(|| format!("looking up {domain}"))?
    {
        Route::Targets(targets) => targets,
        Route::NullMx => {
            println!("{domain} accepts no mail (null MX)");
            return Ok(());
        }
        Route::NoMailServer => {
            println!("no mail server found for {domain}");
            return Ok(());
        }
    };
    let proof = match dns.secure_mx(domain).await {
        Ok(Some(_)) => "DNSSEC-proven".to_string(),
        Ok(None) => "not DNSSEC-proven".to_string(),
        Err(e) => format!("failed DNSSEC validation ({e})"),
    };
    let dane = if outbound.dane { "on" } else { "off" };
    println!("{domain}: MX records {proof}; DANE is {dane} ([outbound] dane)");
    for target in &targets {
        let addrs: Vec<String> = target.addrs.iter().map(ToString::to_string).collect();
        println!("{}  {}", target.host, addrs.join(" "));
        match dns.tlsa(&target.host, outbound.port).await {
            Ok(Some(records)) => {
                for r in records {
                    println!("  TLSA {}", r.presentation());
                }
            }
            Ok(None) => println!("  no DNSSEC-proven TLSA records"),
            Err(e) => println!("  TLSA records failed DNSSEC validation ({e})"),
        }
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for a time in ms since the epoch.
fn time_text(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}
