//! SMTP behaviour of a real `waraka` process over TCP.

use std::time::Duration;
use waraka_e2e::{Instance, Server, body};

const CORE: &[&str] = &["rcpt_to.disposable", "rcpt_to.in_host_list", "queue/maildir"];

#[test]
fn local_recipients_are_accepted_and_others_refused() {
    let instance = Instance::new(CORE, "");
    let server = Server::start(&instance);
    let mut c = server.client();
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").code, 250);
    assert!(c.cmd("RCPT TO:<u@example.com>").starts("250 2.1.5"));
    assert!(c.cmd("RCPT TO:<u@LOCALHOST>").starts("250 2.1.5"));
    assert!(c.cmd("RCPT TO:<u@elsewhere.test>").starts("550 5.1.1"));
    assert!(
        c.cmd("RCPT TO:<u%elsewhere.test@example.com>").starts("250"),
        "a %-hack is a local part here"
    );
    assert!(c.cmd("QUIT").starts("221"));
}

#[test]
fn without_a_queue_plugin_data_gets_451() {
    let instance = Instance::new(&["rcpt_to.in_host_list"], "");
    let server = Server::start(&instance);
    let mut c = server.client();
    let reply = c.send_mail("a@sender.test", &["u@example.com"], &body("no queue"));
    assert!(reply.starts("451 4.3.0"), "{reply:?}");
}

#[test]
fn a_mailbox_that_cannot_be_written_tempfails_and_is_logged_in_its_transaction() {
    let instance = Instance::new(CORE, "");
    let server = Server::start(&instance);
    // A file where the domain's folder should be: creating the mailbox fails.
    let domain = instance.path().join("maildir/example.com");
    std::fs::create_dir_all(domain.parent().unwrap()).unwrap();
    std::fs::write(&domain, b"in the way").unwrap();
    let mut c = server.client();
    let reply = c.send_mail("a@sender.test", &["u@example.com"], &body("blocked"));
    assert!(reply.starts("451 4.3.0"), "{reply:?}");
    // The plugin's log line (a host call made on the thread that ran the
    // hook) carries the connection's and the transaction's spans.
    let line = server.wait_for_log("delivery to <u@example.com> failed", Duration::from_secs(5));
    assert!(line.contains("conn{id=") && line.contains("tx{id="), "{line}");
    std::fs::remove_file(&domain).unwrap();
    let reply = c.send_mail("a@sender.test", &["u@example.com"], &body("retried"));
    assert!(reply.starts("250 2.0.0"), "{reply:?}");
    assert_eq!(instance.maildir_files().len(), 1);
}

#[test]
fn an_accepted_message_is_in_the_maildir_byte_for_byte() {
    let instance = Instance::new(CORE, "");
    let server = Server::start(&instance);
    let mut c = server.client();
    // Stuffed dots on the wire, plain dots in the stored message; 8-bit text too.
    let wire = b"From: a@sender.test\r\nSubject: exact\r\n\r\n..leading dot\r\n...\r\nh\xc3\xa9 8bit\r\n";
    let stored = b"From: a@sender.test\r\nSubject: exact\r\n\r\n.leading dot\r\n..\r\nh\xc3\xa9 8bit\r\n";
    let reply = c.send_mail("a@sender.test", &["u@example.com", "v@example.com"], wire);
    assert!(reply.starts("250 2.0.0"), "{reply:?}");
    let files = instance.maildir_files();
    assert_eq!(files.len(), 2, "{files:?}");
    for (path, bytes) in files {
        assert!(path.to_string_lossy().contains("/example.com/"), "{path:?}");
        assert!(path.parent().unwrap().ends_with("new"));
        assert!(
            bytes.starts_with(b"Return-Path: <a@sender.test>\r\nDelivered-To: "),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(bytes.ends_with(stored), "{}", String::from_utf8_lossy(&bytes));
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("\r\nReceived: from client.test ([127.0.0.1])\r\n\tby "),
            "{text}"
        );
    }
}

#[test]
fn concurrent_first_deliveries_to_a_new_mailbox_all_land() {
    let instance = Instance::new(CORE, "");
    let server = Server::start(&instance);
    const SENDERS: usize = 40;
    let start = std::sync::Barrier::new(SENDERS);
    let replies: Vec<_> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..SENDERS)
            .map(|i| {
                let (server, start) = (&server, &start);
                scope.spawn(move || {
                    let mut c = server.client();
                    assert_eq!(c.cmd("EHLO client.test").code, 250);
                    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").code, 250);
                    assert_eq!(c.cmd("RCPT TO:<fresh@example.com>").code, 250);
                    assert_eq!(c.cmd("DATA").code, 354);
                    start.wait();
                    c.send(&body(&format!("racer {i}")));
                    c.cmd(".")
                })
            })
            .collect();
        senders.into_iter().map(|s| s.join().unwrap()).collect()
    });
    for reply in &replies {
        assert!(reply.starts("250 2.0.0"), "{reply:?}");
    }
    assert_eq!(instance.maildir_files().len(), SENDERS);
}

#[test]
fn a_folder_with_tmp_but_no_new_still_takes_mail() {
    let instance = Instance::new(CORE, "");
    std::fs::create_dir_all(instance.path().join("maildir/example.com/half/tmp")).unwrap();
    let server = Server::start(&instance);
    let reply = server
        .client()
        .send_mail("a@sender.test", &["half@example.com"], &body("half a folder"));
    assert!(reply.starts("250 2.0.0"), "{reply:?}");
    let files = instance.maildir_files();
    assert_eq!(files.len(), 1);
    assert!(files[0].0.parent().unwrap().ends_with("half/new"), "{files:?}");
}

#[test]
fn a_mailbox_linked_out_of_the_maildir_gets_no_mail() {
    let instance = Instance::new(CORE, "");
    let outside = tempfile::tempdir().unwrap();
    for (user, linked) in [("newlink", "new"), ("tmplink", "tmp")] {
        let folder = instance.path().join("maildir/example.com").join(user);
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(folder.join(sub)).unwrap();
        }
        std::fs::remove_dir(folder.join(linked)).unwrap();
        std::os::unix::fs::symlink(outside.path(), folder.join(linked)).unwrap();
    }
    let server = Server::start(&instance);
    let mut c = server.client();
    for user in ["newlink", "tmplink"] {
        let reply = c.send_mail("a@sender.test", &[&format!("{user}@example.com")], &body("escape"));
        assert!(reply.starts("451 4.3.0"), "{user}: {reply:?}");
    }
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing written outside"
    );
    server.wait_for_log("delivery to <newlink@example.com> failed", Duration::from_secs(5));
    let reply = c.send_mail("a@sender.test", &["ok@example.com"], &body("fine"));
    assert!(reply.starts("250 2.0.0"), "{reply:?}");
}

#[test]
fn a_large_message_is_spooled_and_stored_whole() {
    let instance = Instance::new(CORE, "");
    let server = Server::start(&instance);
    let mut c = server.client();
    let mut wire = body("large");
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..3000 {
        wire.extend_from_slice(line.as_bytes());
    }
    assert!(c.send_mail("a@sender.test", &["u@example.com"], &wire).starts("250"));
    let (_, bytes) = &instance.maildir_files()[0];
    assert!(bytes.ends_with(&wire));
    // The spool file is gone once the transaction ends.
    let spool = instance.path().join("queue/spool");
    assert_eq!(std::fs::read_dir(spool).map(|d| d.count()).unwrap_or(0), 0);
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let instance = Instance::new(CORE, "");
    let server = Server::start(&instance);
    let mut c = server.client();
    assert!(c.cmd("EHLO client.test").text.contains("PIPELINING"));
    c.send(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@example.com>\r\nRCPT TO:<u@elsewhere.test>\r\nRCPT TO:<v@example.com>\r\nDATA\r\n");
    let codes: Vec<u16> = (0..5).map(|_| c.reply().code).collect();
    assert_eq!(codes, [250, 250, 550, 250, 354]);
    c.send(&body("pipelined"));
    c.send(b".\r\nMAIL FROM:<b@sender.test>\r\nRCPT TO:<w@example.com>\r\nDATA\r\n");
    let codes: Vec<u16> = (0..4).map(|_| c.reply().code).collect();
    assert_eq!(codes, [250, 250, 250, 354]);
    c.send(b"Subject: second\r\n\r\nx\r\n.\r\nQUIT\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(c.reply().code, 221);
    assert_eq!(instance.maildir_files().len(), 3);
}

#[test]
fn commands_sent_ahead_without_pipelining_close_the_connection() {
    let instance = Instance::new(CORE, "");
    let server = Server::start(&instance);
    let mut c = server.client();
    c.send(b"HELO client.test\r\nMAIL FROM:<a@sender.test>\r\n");
    assert!(c.reply().starts("554 5.5.0"));
    assert!(c.is_closed());
}

#[test]
fn size_line_and_recipient_limits() {
    let instance = Instance::new(CORE, "");
    instance.edit("max_message_size = 26214400", "max_message_size = 10000");
    let server = Server::start(&instance);
    let mut c = server.client();
    assert!(c.cmd("EHLO client.test").text.contains("SIZE 10000"));
    assert!(c.cmd("MAIL FROM:<a@sender.test> SIZE=10001").starts("552 5.3.4"));
    assert!(c.cmd("MAIL FROM:<a@sender.test> SIZE=9000").starts("250"));
    for i in 0..100 {
        assert!(
            c.cmd(&format!("RCPT TO:<u{i}@example.com>")).starts("250"),
            "recipient {i}"
        );
    }
    assert!(c.cmd("RCPT TO:<u100@example.com>").starts("452 4.5.3"));
    assert_eq!(c.cmd("DATA").code, 354);
    let mut big = body("too big");
    big.extend_from_slice(format!("{}\r\n", "y".repeat(20_000)).as_bytes());
    c.send(&big);
    c.send(b".\r\n");
    assert!(c.reply().starts("552 5.3.4"));
    assert!(c.cmd(&format!("NOOP {}", "z".repeat(600))).starts("500 5.5.2"));
    assert!(c.cmd("NOOP").starts("250"), "the session survives a long line");
    assert!(instance.maildir_files().is_empty());
}

#[test]
fn idle_clients_are_timed_out() {
    let instance = Instance::new(CORE, "");
    instance.edit("idle_timeout = \"5m\"", "idle_timeout = \"1s\"");
    let server = Server::start(&instance);
    let mut c = server.client();
    assert!(c.reply().starts("421 4.4.2"));
    assert!(c.is_closed());
}

#[test]
fn smuggled_end_of_data_sequences_never_end_data() {
    let instance = Instance::new(CORE, "");
    let server = Server::start(&instance);
    let sequences: &[&[u8]] = &[
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\n",
        b"\r.\r",
        b"\r\n.\r",
        b"\r.\n",
        b"\n.\r",
        b"\r\n\x00.\r\n",
        b"\r\n.\x00\r\n",
    ];
    for seq in sequences {
        let mut c = server.client();
        assert_eq!(c.cmd("EHLO client.test").code, 250);
        assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").code, 250);
        assert_eq!(c.cmd("RCPT TO:<u@example.com>").code, 250);
        assert_eq!(c.cmd("DATA").code, 354);
        let mut wire = b"Subject: first\r\n\r\nfirst".to_vec();
        wire.extend_from_slice(seq);
        wire.extend_from_slice(b"MAIL FROM:<evil@sender.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nsecond\r\n.\r\n");
        c.send(&wire);
        let reply = c.reply();
        assert!(reply.starts("554 5.6.0"), "{seq:?}: {reply:?}");
        assert!(
            c.cmd("NOOP").starts("250"),
            "{seq:?}: exactly one reply for the whole DATA"
        );
    }
    assert!(
        instance.maildir_files().is_empty(),
        "nothing stored, least of all a smuggled message"
    );
}

#[test]
fn disposable_addresses_expire_and_are_rewritten() {
    let instance = Instance::new(CORE, "");
    let server = Server::start(&instance);
    let mut c = server.client();
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").code, 250);
    let expired = c.cmd("RCPT TO:<me-20121015@example.com>");
    assert_eq!(
        expired,
        waraka_e2e::Reply {
            code: 550,
            text: "5.1.1 Expired email address".into()
        }
    );
    assert_eq!(c.cmd("RCPT TO:<me-29991231@example.com>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(&body("disposable"));
    c.send(b".\r\n");
    assert_eq!(c.reply().code, 250);
    let files = instance.maildir_files();
    assert_eq!(files.len(), 1);
    assert!(
        files[0].0.to_string_lossy().contains("/example.com/me/new/"),
        "{:?}",
        files[0].0
    );
    assert!(String::from_utf8_lossy(&files[0].1).contains("Delivered-To: me@example.com\r\n"));
}

#[test]
fn every_hook_reaches_the_recorder_in_order() {
    let instance = Instance::new(CORE, "[plugin.\"test/recorder\"]\ngrants = [\"dir:record\"]\n\n");
    instance.edit("[dirs]\n", "[dirs]\nrecord = \"record\"\n");
    instance.add_fixture("test/recorder");
    instance.set_order(&["test/recorder", "rcpt_to.in_host_list", "queue/maildir"]);
    let server = Server::start(&instance);
    let mut c = server.client();
    assert!(c.cmd("EHLO client.test").text.contains("X-RECORDER"));
    assert!(c.cmd("XPING").starts("250 2.0.0 pong"));
    assert!(c.cmd("MAIL FROM:<a@sender.test> BODY=8BITMIME").starts("250"));
    assert!(c.cmd("RCPT TO:<u@elsewhere.test>").starts("550"));
    assert!(c.cmd("RCPT TO:<u@example.com>").starts("250"));
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: recorded\r\n\r\nbody\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(c.cmd("QUIT").code, 221);
    drop(c);
    let log_path = instance.path().join("record/hooks.log");
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("disconnect")
    {
        assert!(start.elapsed() < Duration::from_secs(10), "no disconnect recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    let hooks: Vec<String> = log
        .lines()
        .map(|l| l.splitn(3, ' ').nth(2).unwrap().to_string())
        .collect();
    let expected = [
        "connect 127.0.0.1",
        "ehlo client.test",
        "capabilities",
        "unrecognized-command XPING",
        "mail <a@sender.test> tls=- sni=- auth=- relaying=false",
        "rcpt <u@elsewhere.test>",
        "rcpt <u@example.com>",
        "rcpt-ok <u@example.com>",
        "data",
    ];
    assert_eq!(&hooks[..expected.len()], expected, "{log}");
    assert!(hooks[expected.len()].starts_with("data-post size="), "{log}");
    assert!(hooks[expected.len()].ends_with("subject=recorded"), "{log}");
    assert_eq!(&hooks[expected.len() + 1..expected.len() + 2], ["queue"]);
    assert!(hooks[expected.len() + 2].starts_with("queue-ok "));
    assert_eq!(&hooks[expected.len() + 3..], ["reset-transaction", "disconnect"]);
    // Notes persist across hooks of one connection: the counter in every line climbs by one.
    let counts: Vec<u32> = log
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts, (1..=counts.len() as u32).collect::<Vec<_>>());
    // The header added at data-post is in the stored message.
    let (_, stored) = &instance.maildir_files()[0];
    assert!(String::from_utf8_lossy(stored).contains("X-Recorded: yes\r\n"));
    server.wait_for_log("message accepted", Duration::from_secs(5));
}
