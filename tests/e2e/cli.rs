//! The command line: init, plugin list/check/new, and the embedded default instance.

use std::process::Command;
use waraka_e2e::{Instance, Server, waraka};

#[test]
fn plugin_list_shows_order_hooks_limits_and_grants() {
    let instance = Instance::new(&["rcpt_to.disposable", "rcpt_to.in_host_list", "queue/maildir"], "");
    let (ok, out) = waraka(&["plugin", "list", "--config", instance.path().to_str().unwrap()]);
    assert!(ok, "{out}");
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.split_whitespace().next().is_some_and(|t| t.parse::<u32>().is_ok()))
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows[0].contains("rcpt_to.disposable") && rows[0].ends_with("rcpt"),
        "{out}"
    );
    assert!(
        rows[2].contains("queue/maildir") && rows[2].contains("dir:maildir") && rows[2].ends_with("queue"),
        "{out}"
    );
    assert!(rows[1].contains("30s") && rows[1].contains("tempfail"), "{out}");
}

#[test]
fn plugin_check_accepts_components_and_rejects_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("recorder.wasm");
    std::fs::write(&good, waraka_e2e::fixture("test/recorder")).unwrap();
    let (ok, out) = waraka(&["plugin", "check", good.to_str().unwrap()]);
    assert!(
        ok && out.contains("ok: test/recorder") && out.contains("max-data-exceeded"),
        "{out}"
    );
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm not really").unwrap();
    let (ok, out) = waraka(&["plugin", "check", bad.to_str().unwrap()]);
    assert!(!ok && out.contains("not a valid WebAssembly component"), "{out}");
}

#[test]
fn a_broken_waraka_toml_is_refused_with_a_clear_message() {
    let instance = Instance::new(&["queue/discard"], "[smtp.nonsense]\n");
    let (ok, out) = waraka(&[
        "run",
        "--config",
        instance.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok && out.contains("waraka.toml"), "{out}");
}

#[test]
fn the_embedded_default_delivers_into_a_maildir_in_the_current_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let server = Server::start_with(&["run", "--listen", "127.0.0.1:0"], Some(cwd.path()));
    let out = Command::new("swaks")
        .args([
            "--to",
            "a@example.com",
            "--from",
            "b@sender.test",
            "--server",
            &format!("127.0.0.1:{}", server.port),
        ])
        .output()
        .expect("swaks is installed by scripts/test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("250 2.0.0 Message queued"),
        "{text}"
    );
    let new = cwd.path().join("maildir/example.com/a/new");
    let files: Vec<_> = std::fs::read_dir(&new).unwrap().collect();
    assert_eq!(files.len(), 1);
}

#[test]
fn plugin_new_writes_a_skeleton_that_builds_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = waraka(&[
        "plugin",
        "new",
        "rcpt_to.my_check",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let root = dir.path().join("rcpt_to.my_check");
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "README.md",
        "docs/rcpt_to.my_check.md",
        "config/rcpt_to.my_check.list",
        "wit/world.wit",
    ] {
        assert!(root.join(file).exists(), "{file} missing");
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("target"))
        .join("skeleton");
    let build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stderr));
    let wasm = target.join("wasm32-wasip2/release/rcpt_to_my_check.wasm");
    let (ok, out) = waraka(&["plugin", "check", wasm.to_str().unwrap()]);
    assert!(
        ok && out.contains("ok: rcpt_to.my_check") && out.contains("hooks: rcpt"),
        "{out}"
    );
}

#[test]
fn queue_list_show_and_delete_read_the_documented_files() {
    let instance = Instance::new(&["queue/discard"], "");
    let dir = instance.path().join("queue/outbound");
    std::fs::create_dir_all(&dir).unwrap();
    let id = "1795000000000-0123456789ab";
    std::fs::write(
        dir.join(format!("{id}.json")),
        format!(
            r#"{{"id": "{id}", "domain": "remote.test", "sender": "", "recipients": ["a@remote.test", "b@remote.test"],
               "arrival_ms": 1795000000000, "attempts": 3, "next_attempt_ms": 1795000600000,
               "last_error": "451 4.3.0 try later", "origin": "ABC.1"}}"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{id}.eml")),
        "Subject: queued\r\nFrom: x@y\r\n\r\nbody\r\n",
    )
    .unwrap();
    let path = instance.path();
    let config = path.to_str().unwrap();

    let (ok, out) = waraka(&["queue", "--config", config, "list"]);
    assert!(ok, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("{out}"));
    for part in [
        "<>",
        "remote.test",
        " 3 ",
        "2026-11-18 11:16:40",
        "a@remote.test,b@remote.test",
        "451 4.3.0 try later",
    ] {
        assert!(row.contains(part), "{part:?} in {row:?}");
    }
    assert!(out.contains("1 entries"), "{out}");

    let (ok, out) = waraka(&["queue", "--config", config, "show", id]);
    assert!(
        ok && out.contains("\"attempts\": 3") && out.contains("Subject: queued"),
        "{out}"
    );
    assert!(!out.contains("body"), "only the header is shown: {out}");

    let (ok, out) = waraka(&["queue", "--config", config, "show", "../../etc/passwd"]);
    assert!(!ok, "{out}");
    let (ok, out) = waraka(&["queue", "--config", config, "delete", id]);
    assert!(ok && out.contains("deleted"), "{out}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let (ok, out) = waraka(&["queue", "--config", config, "list"]);
    assert!(ok && out.contains("0 entries"), "{out}");
}
