//! Harness for end-to-end tests: lays out instances, starts a real `waraka`
//! process on a free port (the OS picks it; the port is read from the log),
//! and talks SMTP to it over real sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));

/// The `waraka` binary under test (`WARAKA_BIN`, or the one beside the test binary).
pub fn waraka_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("WARAKA_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe.parent().and_then(Path::parent).expect("target dir").join("waraka");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p waraka` first (scripts/test does)",
        bin.display()
    );
    bin
}

/// Runs `waraka` with arguments and returns (success, stdout + stderr).
pub fn waraka(args: &[&str]) -> (bool, String) {
    let out = Command::new(waraka_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running waraka");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A short message from `a@sender.test` to `u@example.com` with this subject.
pub fn body(subject: &str) -> Vec<u8> {
    format!("From: a@sender.test\r\nTo: u@example.com\r\nSubject: {subject}\r\n\r\nhello\r\n").into_bytes()
}

/// A fixture plugin's component bytes.
pub fn fixture(name: &str) -> &'static [u8] {
    FIXTURES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

/// An instance directory made by `waraka init`, removed at the end of the test.
pub struct Instance {
    pub dir: tempfile::TempDir,
}

impl Instance {
    /// `waraka init` with these core plugins, then `extra_toml` appended to waraka.toml.
    pub fn new(plugins: &[&str], extra_toml: &str) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        let (ok, out) = waraka(&["init", path.to_str().unwrap(), "--plugins", &plugins.join(",")]);
        assert!(ok, "init failed: {out}");
        let toml = path.join("waraka.toml");
        let mut text = std::fs::read_to_string(&toml).unwrap();
        text.push('\n');
        text.push_str(extra_toml);
        std::fs::write(&toml, text).unwrap();
        Instance { dir }
    }

    /// The instance directory.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("i")
    }

    /// Installs a fixture plugin as `plugins/<name>.wasm`.
    pub fn add_fixture(&self, name: &str) {
        let path = self.path().join("plugins").join(format!("{name}.wasm"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, fixture(name)).unwrap();
    }

    /// Replaces `from` by `to` in waraka.toml (which must contain `from`).
    pub fn edit(&self, from: &str, to: &str) {
        let toml = self.path().join("waraka.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        assert!(text.contains(from), "waraka.toml has no {from:?}");
        std::fs::write(&toml, text.replace(from, to)).unwrap();
    }

    /// Sets the `plugins = [...]` chain order.
    pub fn set_order(&self, names: &[&str]) {
        let toml = self.path().join("waraka.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        let list = names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
        let text: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with("plugins = ") {
                    format!("plugins = [{list}]")
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(&toml, text.join("\n")).unwrap();
    }

    /// Every file under the instance's maildir, with its bytes.
    pub fn maildir_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        collect(&self.path().join("maildir"), &mut out);
        out.sort();
        out
    }
}

fn collect(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
}

/// A running `waraka run` process; stopped (SIGTERM, then kill) when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `waraka run --config DIR --listen 127.0.0.1:0` and waits until it listens.
    pub fn start(instance: &Instance) -> Server {
        Self::start_with(
            &[
                "run",
                "--config",
                instance.path().to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ],
            None,
        )
    }

    /// Starts `waraka` with these arguments in `cwd`; the port is read from the log.
    pub fn start_with(args: &[&str], cwd: Option<&Path>) -> Server {
        let mut cmd = Command::new(waraka_bin());
        cmd.args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd.spawn().expect("starting waraka");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = line.split("address=127.0.0.1:").nth(1) {
                    let port: String = port.chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(port.parse::<u16>().unwrap());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                panic!("waraka did not start listening:\n{}", log.lock().unwrap().join("\n"));
            }
        };
        Server { child, port, log }
    }

    /// A new SMTP client connected to the server, greeting read.
    pub fn client(&self) -> Client {
        let mut c = Client::connect(self.port);
        let greeting = c.reply();
        assert_eq!(greeting.code, 220, "greeting: {greeting:?}");
        c
    }

    /// Log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle` (panics after `timeout`).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            assert!(
                start.elapsed() < timeout,
                "no log line with {needle:?} in:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Every line without the code and separator, joined by '\n'.
    pub text: String,
}

impl Reply {
    /// `"550 5.1.1"`-style prefix check on the first line.
    pub fn starts(&self, prefix: &str) -> bool {
        format!("{} {}", self.code, self.text).starts_with(prefix)
    }
}

/// A raw-socket SMTP client.
pub struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    /// Connects without reading the greeting.
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client {
            stream: BufReader::new(stream),
        }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).expect("send");
    }

    /// Reads one (possibly multi-line) reply.
    pub fn reply(&mut self) -> Reply {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.stream.read_line(&mut line).expect("read reply");
            assert!(n > 0, "connection closed while waiting for a reply (so far: {text:?})");
            let line = line.trim_end_matches(['\r', '\n']);
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("bad reply line {line:?}"));
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Reply {
                    code,
                    text: text.join("\n"),
                };
            }
        }
    }

    /// Sends a command line (CRLF added) and reads the reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Whether the server closed the connection (reads until EOF or timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).is_ok()
    }

    /// EHLO, MAIL, RCPT (each must succeed), DATA; returns the final reply to `body`.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &[u8]) -> Reply {
        assert_eq!(self.cmd("EHLO client.test").code, 250);
        assert_eq!(self.cmd(&format!("MAIL FROM:<{from}>")).code, 250);
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>"));
            assert_eq!(r.code, 250, "RCPT {rcpt}: {r:?}");
        }
        assert_eq!(self.cmd("DATA").code, 354);
        self.send(body);
        self.send(b".\r\n");
        self.reply()
    }
}
