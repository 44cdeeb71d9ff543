//! Plugin faults over real sockets: every fault answers 451 4.3.0 within the
//! plugin's limit, is logged with plugin, hook and reason, and never disturbs
//! other connections or the server.

use std::thread;
use std::time::{Duration, Instant};
use waraka_e2e::{Instance, Server};

const CORE: &[&str] = &["rcpt_to.in_host_list", "queue/maildir"];

/// An instance with `test/faulty` first in the chain under these limits,
/// without the fault tarpit (every test client here is the same address).
fn faulty_instance(limits: &str) -> Instance {
    faulty_instance_with("fault_delay = \"0s\"", limits)
}

/// The same with these `[runtime]` settings.
fn faulty_instance_with(runtime: &str, limits: &str) -> Instance {
    let instance = Instance::new(
        CORE,
        &format!("[runtime]\n{runtime}\n[plugin.\"test/faulty\"]\n{limits}\n"),
    );
    instance.add_fixture("test/faulty");
    instance.set_order(&["test/faulty", "rcpt_to.in_host_list", "queue/maildir"]);
    instance
}

/// A client that has said EHLO and MAIL FROM.
fn in_transaction(server: &Server) -> waraka_e2e::Client {
    let mut c = server.client();
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").code, 250);
    c
}

/// Sends `RCPT TO:<{local}@example.com>` and checks a 451 4.3.0 within `limit`,
/// while a parallel connection delivers a message normally.
fn assert_fault(server: &Server, local: &str, limit: Duration, reason: &str) {
    let port = server.port;
    let healthy = thread::spawn(move || {
        let mut c = waraka_e2e::Client::connect(port);
        assert_eq!(c.reply().code, 220);
        c.send_mail(
            "a@sender.test",
            &["healthy@example.com"],
            b"Subject: healthy\r\n\r\nok\r\n",
        )
    });
    let mut c = in_transaction(server);
    let started = Instant::now();
    let reply = c.cmd(&format!("RCPT TO:<{local}@example.com>"));
    let took = started.elapsed();
    assert!(reply.starts("451 4.3.0"), "{local}: {reply:?}");
    assert!(took < limit, "{local}: answered after {took:?}");
    // The same connection goes on with a fresh instance of the plugin.
    assert!(
        c.cmd("RCPT TO:<after@example.com>").starts("250"),
        "{local}: session unusable after the fault"
    );
    assert_eq!(c.cmd("QUIT").code, 221);
    let healthy = healthy.join().unwrap();
    assert!(
        healthy.starts("250"),
        "{local}: the parallel connection got {healthy:?}"
    );
    let line = server.wait_for_log(&format!("plugin fault: {reason}"), Duration::from_secs(5));
    assert!(
        line.contains("plugin=test/faulty") && line.contains("hook=rcpt"),
        "{line}"
    );
}

#[test]
fn traps_panics_fuel_and_memory_faults_tempfail_within_their_limits() {
    let instance = faulty_instance("timeout = \"20s\"\nfuel = 300000000\nmemory = 16777216");
    let server = Server::start(&instance);
    assert_fault(&server, "trap", Duration::from_secs(5), "trap:");
    assert_fault(&server, "panic", Duration::from_secs(5), "trap:");
    server.wait_for_log("fixture panic for <panic@example.com>", Duration::from_secs(5));
    assert_fault(&server, "loop", Duration::from_secs(15), "out of fuel");
    assert_fault(&server, "oom", Duration::from_secs(15), "memory cap reached");
    assert_eq!(instance.maildir_files().len(), 4, "the four healthy messages");
}

#[test]
fn host_calls_cost_fuel_so_a_storm_of_them_runs_out() {
    // Each round of the host loop is one cheap host call and a few guest
    // instructions: at 10,000 fuel per host call, 3,000,000 fuel allows at
    // most 300 rounds (uncharged, the same fuel lasts over 30,000 rounds).
    let instance = faulty_instance("timeout = \"20s\"\nfuel = 3000000");
    let server = Server::start(&instance);
    let mut c = in_transaction(&server);
    assert!(c.cmd("RCPT TO:<host-loop@example.com>").starts("451 4.3.0"));
    server.wait_for_log("plugin fault: out of fuel", Duration::from_secs(5));
    let reply = c.cmd("RCPT TO:<storm-rounds@example.com>");
    let rounds: u64 = reply
        .text
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reply:?}"));
    assert!(
        (64..=300).contains(&rounds),
        "{rounds} host-loop rounds on 3,000,000 fuel"
    );
}

#[test]
fn a_client_that_keeps_making_plugins_fault_waits_longer_each_time() {
    let instance = faulty_instance_with("fault_delay = \"400ms\"", "timeout = \"5s\"");
    let server = Server::start(&instance);
    let mut c = in_transaction(&server);
    let timed = |c: &mut waraka_e2e::Client, rcpt: &str| {
        let started = Instant::now();
        let reply = c.cmd(&format!("RCPT TO:<{rcpt}@example.com>"));
        (reply, started.elapsed())
    };
    let (first, first_took) = timed(&mut c, "trap");
    let (second, second_took) = timed(&mut c, "trap");
    assert!(first.starts("451 4.3.0") && second.starts("451 4.3.0"));
    assert!(first_took >= Duration::from_millis(400), "{first_took:?}");
    assert!(second_took >= Duration::from_millis(800), "{second_took:?}");
    // Commands that fault nothing are not held.
    let (healthy, healthy_took) = timed(&mut c, "healthy");
    assert!(healthy.starts("250"), "{healthy:?}");
    assert!(healthy_took < Duration::from_millis(400), "{healthy_took:?}");
    // The count belongs to the client, not the connection.
    let mut other = in_transaction(&server);
    let (third, third_took) = timed(&mut other, "panic");
    assert!(third.starts("451 4.3.0"));
    assert!(third_took >= Duration::from_millis(1600), "{third_took:?}");
}

#[test]
fn spinning_and_sleeping_plugins_are_stopped_at_the_deadline() {
    let instance = faulty_instance("timeout = \"2s\"\nfuel = 0");
    let server = Server::start(&instance);
    // Idle past the epoch ticker's linger, so that it sleeps: the call must wake it.
    thread::sleep(Duration::from_millis(500));
    // A guest spinning without fuel limit is interrupted by the epoch deadline;
    // a guest asleep in a host call is stopped by the outer timeout (+1 s grace).
    assert_fault(&server, "loop", Duration::from_millis(4500), "timed out");
    assert_fault(&server, "sleep", Duration::from_millis(4500), "timed out");
}

#[test]
fn a_plugin_with_a_directory_faults_the_same_way() {
    // Hook calls of a plugin with a directory run on a blocking-pool thread.
    let instance = faulty_instance("timeout = \"2s\"\nfuel = 0\ngrants = [\"dir:scratch\"]");
    instance.edit("[dirs]\n", "[dirs]\nscratch = \"scratch\"\n");
    let server = Server::start(&instance);
    assert_fault(&server, "trap", Duration::from_secs(5), "trap:");
    assert_fault(&server, "loop", Duration::from_millis(4500), "timed out");
    assert_fault(&server, "sleep", Duration::from_millis(4500), "timed out");
    assert_eq!(instance.maildir_files().len(), 3, "the three healthy messages");
}

#[test]
fn on_error_continue_skips_the_faulty_plugin() {
    let instance = faulty_instance("on_error = \"continue\"\nfuel = 300000000");
    let server = Server::start(&instance);
    let mut c = in_transaction(&server);
    // The fault is skipped, so in_host_list decides: example.com is local.
    assert!(c.cmd("RCPT TO:<trap@example.com>").starts("250"));
    server.wait_for_log("plugin fault: trap", Duration::from_secs(5));
}

#[test]
fn a_plugin_that_keeps_failing_is_disabled_then_tried_again() {
    let instance = faulty_instance("breaker_faults = 3\nbreaker_backoff = \"2s\"");
    let server = Server::start(&instance);
    let mut c = in_transaction(&server);
    for _ in 0..3 {
        assert!(c.cmd("RCPT TO:<trap@example.com>").starts("451 4.3.0"));
    }
    let opened = server.wait_for_log("circuit breaker open", Duration::from_secs(5));
    assert!(
        opened.contains("plugin=\"test/faulty\"") || opened.contains("plugin=test/faulty"),
        "{opened}"
    );
    // Open: the plugin is not called (no new fault), and on_error answers for it.
    assert!(c.cmd("RCPT TO:<trap@example.com>").starts("451 4.3.0"));
    assert!(c.cmd("RCPT TO:<fine@example.com>").starts("451 4.3.0"));
    let faults = |server: &Server| server.log().iter().filter(|l| l.contains("plugin fault:")).count();
    assert_eq!(faults(&server), 3);
    // After the backoff a trial call goes through; its success closes the breaker.
    thread::sleep(Duration::from_millis(2200));
    assert!(c.cmd("RCPT TO:<fine@example.com>").starts("250"));
    server.wait_for_log("circuit breaker closed: plugin re-enabled", Duration::from_secs(5));
    assert_eq!(faults(&server), 3);
}
