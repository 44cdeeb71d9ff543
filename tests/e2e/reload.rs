//! Hot reload over real sockets: replacing, breaking and removing plugins and
//! editing waraka.toml while mail flows.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use waraka_e2e::{Client, Instance, Server, waraka};

/// `test/versioned` with its marker patched to version `n`.
fn versioned(n: u32) -> Vec<u8> {
    let mut bytes = waraka_e2e::fixture("test/versioned").to_vec();
    let marker = b"VERSION=0000";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("marker in the data section");
    bytes[at..at + marker.len()].copy_from_slice(format!("VERSION={n:04}").as_bytes());
    bytes
}

fn plugin_path(instance: &Instance) -> PathBuf {
    instance.path().join("plugins/test/versioned.wasm")
}

/// Writes to a temporary name and renames into place (the safe way).
fn install(instance: &Instance, bytes: &[u8]) {
    let path = plugin_path(instance);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("wasm.part");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// Writes in place in two steps with a pause longer than the settle time in
/// between, so the server sees the half-written file (the unsafe way).
fn install_slowly(instance: &Instance, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::File::create(plugin_path(instance)).unwrap();
    file.write_all(&bytes[..bytes.len() / 2]).unwrap();
    file.sync_all().unwrap();
    thread::sleep(Duration::from_millis(600));
    file.write_all(&bytes[bytes.len() / 2..]).unwrap();
}

fn versioned_instance() -> Instance {
    let instance = Instance::new(&["queue/maildir"], "");
    install(&instance, &versioned(0));
    instance.set_order(&["test/versioned", "queue/maildir"]);
    instance
}

/// One transaction on a new connection; returns the version that answered RCPT.
fn one_message(port: u16, tag: &str) -> Result<u32, String> {
    let mut c = Client::connect(port);
    let step = |r: waraka_e2e::Reply, want: u16| {
        if r.code == want {
            Ok(r)
        } else {
            Err(format!("{tag}: {r:?}"))
        }
    };
    step(c.reply(), 220)?;
    step(c.cmd("EHLO load.test"), 250)?;
    step(c.cmd("MAIL FROM:<load@sender.test>"), 250)?;
    let rcpt = step(c.cmd("RCPT TO:<u@example.com>"), 250)?;
    let version: u32 = rcpt
        .text
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or(format!("{tag}: {rcpt:?}"))?;
    step(c.cmd("DATA"), 354)?;
    c.send(format!("Subject: v{version:04} {tag}\r\n\r\nx\r\n.\r\n").as_bytes());
    step(c.reply(), 250)?;
    step(c.cmd("QUIT"), 221)?;
    Ok(version)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn replacing_a_plugin_under_load_switches_versions_without_a_failed_transaction() {
    let instance = versioned_instance();
    let server = Server::start(&instance);
    let port = server.port;
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(u32, Instant, Duration)>>> = Default::default();
    let failures: Arc<Mutex<Vec<String>>> = Default::default();
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (stop, seen, failures) = (stop.clone(), seen.clone(), failures.clone());
            thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    match one_message(port, &format!("c{t}-{i}")) {
                        Ok(v) => seen.lock().unwrap().push((v, Instant::now(), started.elapsed())),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                    i += 1;
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let quiet_end = Instant::now();
    let mut switch_times = Vec::new();
    for n in 1..=20 {
        if n % 4 == 0 {
            install_slowly(&instance, &versioned(n));
        } else {
            install(&instance, &versioned(n));
        }
        let landed = Instant::now();
        loop {
            let first = seen
                .lock()
                .unwrap()
                .iter()
                .find(|(v, at, _)| *v == n && *at >= landed)
                .map(|(_, at, _)| *at);
            if let Some(at) = first {
                switch_times.push(at - landed);
                break;
            }
            assert!(
                landed.elapsed() < Duration::from_secs(2),
                "version {n} not served within 2 s"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
    stop.store(true, Ordering::Relaxed);
    clients.into_iter().for_each(|c| c.join().unwrap());
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "failed transactions: {failures:?}");

    // Every stored message carries one consistent version: RCPT's and data-post's agree.
    let files = instance.maildir_files();
    assert!(files.len() >= 40, "only {} messages", files.len());
    for (path, bytes) in &files {
        let text = String::from_utf8_lossy(bytes);
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: v"))
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        let stamped = text.lines().find_map(|l| l.strip_prefix("X-Plugin-Version: ")).unwrap();
        assert_eq!(subject, stamped, "{path:?}");
    }

    // Figures for the closing note (not assertions): switch time and latency with and without reloads.
    let seen = seen.lock().unwrap();
    let mut quiet: Vec<Duration> = seen.iter().filter(|(_, at, _)| *at < quiet_end).map(|s| s.2).collect();
    let mut storm: Vec<Duration> = seen.iter().filter(|(_, at, _)| *at >= quiet_end).map(|s| s.2).collect();
    quiet.sort();
    storm.sort();
    switch_times.sort();
    eprintln!(
        "reload figures: switch median {:?} max {:?}; transaction p50/p99 quiet {:?}/{:?} ({} tx), during reloads {:?}/{:?} ({} tx)",
        percentile(&switch_times, 0.5),
        switch_times.last().unwrap(),
        percentile(&quiet, 0.5),
        percentile(&quiet, 0.99),
        quiet.len(),
        percentile(&storm, 0.5),
        percentile(&storm, 0.99),
        storm.len()
    );
    let line = server.wait_for_log("old_hash=", Duration::from_secs(1));
    assert!(line.contains("new_hash=") && line.contains("compile_ms="), "{line}");
}

#[test]
fn broken_truncated_and_non_component_files_leave_the_old_version_serving() {
    let instance = versioned_instance();
    install(&instance, &versioned(1));
    let server = Server::start(&instance);
    assert_eq!(one_message(server.port, "before"), Ok(1));
    let good = versioned(2);
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    for (i, bad) in [
        b"not wasm at all".to_vec(),
        good[..good.len() / 3].to_vec(),
        core_module,
    ]
    .into_iter()
    .enumerate()
    {
        let before = server.log().iter().filter(|l| l.contains("plugin rejected")).count();
        install(&instance, &bad);
        let start = Instant::now();
        while server.log().iter().filter(|l| l.contains("plugin rejected")).count() == before {
            assert!(start.elapsed() < Duration::from_secs(5), "bad file {i} not rejected");
            thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(one_message(server.port, &format!("bad{i}")), Ok(1), "bad file {i}");
        let (ok, list) = waraka(&["plugin", "list", "--config", instance.path().to_str().unwrap()]);
        assert!(ok && list.contains("rejected test/versioned"), "{list}");
        assert!(list.contains("live plugins of the running server"), "{list}");
    }
    let line = server
        .log()
        .into_iter()
        .rfind(|l| l.contains("plugin rejected"))
        .unwrap();
    assert!(
        line.contains("plugin=test/versioned") && line.contains("versioned.wasm") && line.contains("keeping="),
        "{line}"
    );
    // A good file again replaces it, and the rejection is cleared.
    install(&instance, &good);
    let start = Instant::now();
    while one_message(server.port, "after") != Ok(2) {
        assert!(start.elapsed() < Duration::from_secs(5), "good file not loaded");
    }
    let (_, list) = waraka(&["plugin", "list", "--config", instance.path().to_str().unwrap()]);
    assert!(!list.contains("rejected"), "{list}");
}

#[test]
fn waraka_toml_edits_apply_and_a_broken_one_is_ignored() {
    let instance = versioned_instance();
    let server = Server::start(&instance);
    let recipients = |server: &Server| {
        let mut c = server.client();
        c.cmd("EHLO t.test");
        c.cmd("MAIL FROM:<a@sender.test>");
        (
            c.cmd("RCPT TO:<a@example.com>").code,
            c.cmd("RCPT TO:<b@example.com>").code,
        )
    };
    assert_eq!(recipients(&server), (250, 250));
    instance.edit("max_recipients = 100", "max_recipients = 1");
    server.wait_for_log("rescan done", Duration::from_secs(5));
    assert_eq!(recipients(&server), (250, 452));
    // A broken waraka.toml is rejected; the last good one stays.
    instance.edit("max_recipients = 1", "max_recipients = \"many\"");
    server.wait_for_log(
        "waraka.toml rejected, keeping the last good one",
        Duration::from_secs(5),
    );
    assert_eq!(recipients(&server), (250, 452));
    // Removing the plugin: nobody accepts recipients any more.
    std::fs::remove_file(plugin_path(&instance)).unwrap();
    server.wait_for_log("plugin unloaded", Duration::from_secs(5));
    assert_eq!(recipients(&server).0, 550);
    // SIGHUP forces a rescan.
    let pid = std::fs::read_to_string(instance.path().join("queue/plugins.status.json")).unwrap();
    let pid = pid
        .split("\"pid\":")
        .nth(1)
        .unwrap()
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    server.wait_for_log("SIGHUP: rescanning", Duration::from_secs(5));
}

#[test]
fn waraka_reload_puts_a_replaced_plugin_in_force_before_it_returns() {
    let instance = versioned_instance();
    let server = Server::start(&instance);
    let dir = instance.path();
    let dir = dir.to_str().unwrap();
    assert_eq!(one_message(server.port, "first"), Ok(0));
    for version in 1..=3 {
        install(&instance, &versioned(version));
        let (ok, out) = waraka(&["reload", "--config", dir]);
        assert!(ok && out.contains("rejected=0 removed=0"), "{out}");
        // No waiting: the watcher's 200 ms of settling is cut short.
        assert_eq!(one_message(server.port, "reloaded"), Ok(version));
    }
    assert!(server.log().iter().any(|l| l.contains("reload asked")));
}

#[test]
fn a_restart_with_a_warm_cache_compiles_nothing() {
    let instance = versioned_instance();
    let first = Server::start(&instance);
    assert!(first.log().iter().any(|l| l.contains("compiled=true")));
    drop(first);
    let second = Server::start(&instance);
    let loaded: Vec<String> = second
        .log()
        .into_iter()
        .filter(|l| l.contains("plugin loaded"))
        .collect();
    assert_eq!(loaded.len(), 2, "{loaded:?}");
    assert!(loaded.iter().all(|l| l.contains("compiled=false")), "{loaded:?}");
    assert_eq!(one_message(second.port, "warm"), Ok(0));
}
