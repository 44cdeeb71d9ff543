//! Plugin instances over real sockets: idle instances serve the next
//! connection, instance slots run out without deadlock or blame.

use std::time::{Duration, Instant};
use waraka_e2e::{Client, Instance, Server, body};

/// `test/probe` (granted `kv:default`) before `rcpt_to.in_host_list`,
/// keeping `warm` idle instances.
fn probe_instance(warm: u32) -> Instance {
    let instance = Instance::new(
        &["rcpt_to.in_host_list"],
        &format!(
            "[runtime]\nwarm_instances = {warm}\nfault_delay = \"0s\"\n[plugin.\"test/probe\"]\ngrants = [\"kv:default\"]\n"
        ),
    );
    instance.add_fixture("test/probe");
    instance.set_order(&["test/probe", "rcpt_to.in_host_list"]);
    instance
}

/// Asks the probe which instance serves it: (calls it has served, connection it sees).
fn which_instance(c: &mut Client) -> (u32, String) {
    let reply = c.cmd("XINSTANCE");
    assert!(reply.starts("250"), "{reply:?}");
    let text = reply.text.clone();
    let served = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("served="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reply:?}"));
    let connection = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("connection="))
        .unwrap_or_else(|| panic!("{reply:?}"))
        .to_string();
    (served, connection)
}

/// Says QUIT and waits until the server has finished the connection (its
/// instances are given back after the client sees the socket close).
fn quit(server: &Server, mut c: Client) {
    let ended = server.log().iter().filter(|l| l.contains("disconnected")).count();
    assert_eq!(c.cmd("QUIT").code, 221);
    let start = Instant::now();
    while server.log().iter().filter(|l| l.contains("disconnected")).count() <= ended {
        assert!(start.elapsed() < Duration::from_secs(10), "the connection never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_next_connection_gets_the_instance_the_last_one_gave_back() {
    let instance = probe_instance(32);
    let server = Server::start(&instance);
    let mut first = server.client();
    let (served, first_id) = which_instance(&mut first);
    assert_eq!(served, 1);
    quit(&server, first);
    let mut second = server.client();
    let (served, second_id) = which_instance(&mut second);
    assert_eq!(served, 2, "the idle instance was not reused");
    assert_ne!(first_id, second_id, "the reused instance must see its new connection");
    assert!(
        second
            .send_mail("a@sender.test", &["u@example.com"], &body("reused"))
            .starts("451"),
        "no queue plugin: the chain still runs on the reused instance"
    );
}

#[test]
fn an_instance_that_trapped_or_grew_past_half_its_memory_cap_is_not_reused() {
    let instance = probe_instance(32);
    let server = Server::start(&instance);
    let mut c = server.client();
    assert_eq!(which_instance(&mut c).0, 1);
    // 40 MiB of the default 64 MiB cap, kept by the guest.
    assert!(c.cmd("XGROW 40").starts("250"));
    quit(&server, c);

    let mut c = server.client();
    assert_eq!(which_instance(&mut c).0, 1, "the grown instance was reused");
    assert!(c.cmd("XPANIC").starts("451 4.3.0"));
    assert_eq!(which_instance(&mut c).0, 1, "the trapped instance was entered again");
    assert_eq!(which_instance(&mut c).0, 2);
    quit(&server, c);

    let mut c = server.client();
    assert_eq!(which_instance(&mut c).0, 3, "the healthy instance was not reused");
}

#[test]
fn a_grant_revoked_in_waraka_toml_is_not_kept_by_an_idle_instance() {
    let instance = probe_instance(32);
    let server = Server::start(&instance);
    let mut c = server.client();
    assert!(c.cmd("XKV SET default k v").starts("250"));
    assert_eq!(which_instance(&mut c).0, 1);
    quit(&server, c);
    instance.edit("grants = [\"kv:default\"]", "grants = []");
    server.wait_for_log("rescan done", Duration::from_secs(5));
    let mut c = server.client();
    let reply = c.cmd("XKV GET default k");
    assert!(reply.starts("451") && reply.text.contains("NotGranted"), "{reply:?}");
    assert_eq!(
        which_instance(&mut c).0,
        1,
        "an instance made under the old grants was reused"
    );
}

#[test]
fn warm_instances_0_gives_every_connection_a_new_instance() {
    let instance = probe_instance(0);
    let server = Server::start(&instance);
    for _ in 0..3 {
        let mut c = server.client();
        assert_eq!(which_instance(&mut c).0, 1);
        quit(&server, c);
    }
}

/// Two plugins that run at connect (`access`, `relay`), room for four plugin
/// instances, and a short plugin timeout (how long a hook waits for a slot).
fn four_slot_instance(idle_release: &str) -> Instance {
    let instance = Instance::new(
        &["access", "relay", "rcpt_to.in_host_list", "queue/maildir"],
        &format!("[runtime]\nmax_instances = 4\nidle_release = \"{idle_release}\"\n"),
    );
    instance.edit("timeout = \"30s\"", "timeout = \"2s\"");
    instance
}

#[test]
fn quiet_connections_give_their_plugin_instances_back() {
    // Each greeted connection has run two plugins; twelve would need 24
    // slots. They connect at once: none may hold a slot while it waits for
    // another (or they would wait on each other until the plugins' timeout).
    let instance = four_slot_instance("100ms");
    let server = Server::start(&instance);
    let start = std::sync::Barrier::new(12);
    let mut held: Vec<_> = std::thread::scope(|scope| {
        let connecting: Vec<_> = (0..12)
            .map(|_| {
                let (server, start) = (&server, &start);
                scope.spawn(move || {
                    start.wait();
                    server.client()
                })
            })
            .collect();
        connecting.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for (i, c) in held.iter_mut().enumerate() {
        let reply = c.send_mail("a@sender.test", &["u@example.com"], &body(&format!("held {i}")));
        assert!(reply.starts("250 2.0.0"), "connection {i}: {reply:?}");
    }
    assert_eq!(instance.maildir_files().len(), 12);
}

#[test]
fn a_server_out_of_instance_slots_answers_busy_without_disabling_plugins() {
    // Instances kept for the connection's life: two connections fill the four slots.
    let instance = four_slot_instance("0s");
    let server = Server::start(&instance);
    let first = [server.client(), server.client()];
    let mut third = waraka_e2e::Client::connect(server.port);
    let reply = third.reply();
    assert!(
        reply.code >= 400 && reply.code < 500 && reply.text.contains("4.3.2"),
        "{reply:?}"
    );
    drop(first);
    // The plugins were not blamed: no breaker opened, and the next client is served.
    for i in 0..3 {
        let reply = server
            .client()
            .send_mail("a@sender.test", &["u@example.com"], &body(&format!("after {i}")));
        assert!(reply.starts("250 2.0.0"), "{reply:?}");
    }
    assert!(!server.log().iter().any(|l| l.contains("circuit breaker open")));
}
