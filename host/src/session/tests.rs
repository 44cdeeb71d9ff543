//! Protocol tests over byte buffers: no socket, no WebAssembly.

use super::*;
use crate::policy::{Decision, Hook, HookCall, Policy, Verdict};
use std::collections::HashMap;
use std::sync::Mutex as StdMutex;

/// A policy answering fixed verdicts per hook and recording what it saw.
#[derive(Clone, Default)]
struct Scripted {
    verdicts: HashMap<Hook, Verdict>,
    seen: Arc<StdMutex<Vec<Hook>>>,
    queued: Arc<StdMutex<Vec<Vec<u8>>>>,
    /// The recipients the `queue` hook saw, per call.
    queued_for: Arc<StdMutex<Vec<Vec<String>>>>,
    conn: Option<SharedConnection>,
}

impl Policy for Scripted {
    fn implements(&self, hook: Hook) -> bool {
        self.verdicts.contains_key(&hook)
    }

    async fn decide(&mut self, call: HookCall) -> Decision {
        let hook = call.hook();
        self.seen.lock().unwrap().push(hook);
        if hook == Hook::Queue {
            let conn = self.conn.as_ref().unwrap().lock();
            let tx = conn.transaction.as_ref().unwrap();
            let m = tx.message.as_ref().unwrap();
            let bytes = m.read(0, m.size() as usize).unwrap();
            self.queued.lock().unwrap().push(bytes);
            let recipients = tx.recipients.iter().map(Address::addr_spec).collect();
            self.queued_for.lock().unwrap().push(recipients);
        }
        match self.verdicts.get(&hook) {
            Some(v) => Decision {
                verdict: v.clone(),
                plugin: Some("scripted".into()),
            },
            None => Decision::cont(),
        }
    }
    async fn capabilities(&mut self) -> Vec<String> {
        vec!["XTEST".into()]
    }
    async fn notify(&mut self, call: HookCall) {
        self.seen.lock().unwrap().push(call.hook());
    }
}

struct Harness {
    session: Session<Scripted>,
    policy: Scripted,
}

fn harness(verdicts: &[(Hook, Verdict)], tweak: impl FnOnce(&mut SessionSettings)) -> Harness {
    let mut settings = SessionSettings {
        hostname: "mx.test".into(),
        ..Default::default()
    };
    tweak(&mut settings);
    let conn = SharedConnection::new(Connection::new(
        "127.0.0.1:40000".parse().unwrap(),
        "127.0.0.1:25".parse().unwrap(),
        "mx.test",
        settings.notes,
    ));
    let policy = Scripted {
        verdicts: verdicts.iter().cloned().collect(),
        conn: Some(conn.clone()),
        ..Default::default()
    };
    Harness {
        session: Session::new(policy.clone(), conn, Arc::new(settings)),
        policy,
    }
}

fn accepting() -> Vec<(Hook, Verdict)> {
    vec![(Hook::Rcpt, Verdict::Ok(None)), (Hook::Queue, Verdict::Ok(None))]
}

impl Harness {
    async fn start(&mut self) -> String {
        self.session.start(false).await;
        String::from_utf8(self.session.take_output()).unwrap()
    }
    async fn send(&mut self, bytes: &[u8]) -> String {
        self.session.ingest(bytes).await;
        String::from_utf8_lossy(&self.session.take_output()).into_owned()
    }
    /// Codes of every reply line that ends a reply.
    async fn codes(&mut self, bytes: &[u8]) -> Vec<String> {
        let out = self.send(bytes).await;
        out.lines()
            .filter(|l| l.as_bytes().get(3) == Some(&b' '))
            .map(|l| l[..3].to_string())
            .collect()
    }
    async fn greeted(verdicts: &[(Hook, Verdict)]) -> Harness {
        let mut h = harness(verdicts, |_| {});
        h.start().await;
        h.send(b"EHLO client.test\r\n").await;
        h
    }
}

#[tokio::test]
async fn greeting_and_ehlo_advertise_the_extensions() {
    let mut h = harness(&[], |_| {});
    assert_eq!(h.start().await, "220 mx.test ESMTP Waraka ready\r\n");
    let ehlo = h.send(b"EHLO client.test\r\n").await;
    for kw in [
        "PIPELINING",
        "8BITMIME",
        "CHUNKING",
        "SIZE 26214400",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "DSN",
        "XTEST",
    ] {
        assert!(ehlo.contains(kw), "{kw} missing in {ehlo}");
    }
    assert!(ehlo.starts_with("250-mx.test Hello client.test [127.0.0.1]\r\n"));
}

#[tokio::test]
async fn bad_sequences_get_503() {
    let mut h = harness(&accepting(), |_| {});
    h.start().await;
    assert_eq!(
        h.send(b"MAIL FROM:<a@b.test>\r\n").await,
        "503 5.5.1 Bad sequence of commands: send HELO/EHLO first\r\n"
    );
    h.send(b"EHLO c\r\n").await;
    assert_eq!(h.codes(b"RCPT TO:<x@y.test>\r\n").await, ["503"]);
    assert_eq!(h.codes(b"DATA\r\n").await, ["503"]);
    assert_eq!(h.codes(b"MAIL FROM:<a@b.test>\r\n").await, ["250"]);
    assert_eq!(h.codes(b"MAIL FROM:<a@b.test>\r\n").await, ["503"]);
    assert_eq!(
        h.send(b"DATA\r\n").await,
        "503 5.5.1 Bad sequence of commands: send RCPT first\r\n"
    );
}

#[tokio::test]
async fn rcpt_needs_ok_and_queue_needs_ok() {
    let mut h = Harness::greeted(&[]).await;
    h.send(b"MAIL FROM:<a@b.test>\r\n").await;
    assert_eq!(
        h.send(b"RCPT TO:<x@y.test>\r\n").await,
        "550 5.1.1 I cannot deliver mail for <x@y.test>\r\n"
    );
    let mut h = Harness::greeted(&[(Hook::Rcpt, Verdict::Ok(None))]).await;
    h.send(b"MAIL FROM:<a@b.test>\r\n").await;
    assert_eq!(h.codes(b"RCPT TO:<x@y.test>\r\n").await, ["250"]);
    assert_eq!(h.codes(b"DATA\r\n").await, ["354"]);
    assert_eq!(
        h.send(b"Subject: t\r\n\r\nhi\r\n.\r\n").await,
        "451 4.3.0 Queuing declined or disabled, try later\r\n"
    );
}

#[tokio::test]
async fn a_relaying_session_needs_no_rcpt_ok() {
    let mut h = Harness::greeted(&[]).await;
    h.session.connection().lock().relaying = true;
    h.send(b"MAIL FROM:<a@b.test>\r\n").await;
    assert_eq!(h.codes(b"RCPT TO:<x@elsewhere.test>\r\n").await, ["250"]);
}

/// Sender, recipients and message bytes.
type StoredMessage = (String, Vec<String>, Vec<u8>);

/// An outbound queue that keeps envelopes in memory, or fails every store.
struct MemoryOutbound {
    fail: bool,
    stored: StdMutex<Vec<StoredMessage>>,
    /// Forwarded copies removed unreleased.
    discarded: StdMutex<Vec<StoredMessage>>,
}

impl MemoryOutbound {
    /// An empty queue; `fail`: every store fails.
    fn new(fail: bool) -> Arc<MemoryOutbound> {
        Arc::new(MemoryOutbound {
            fail,
            stored: StdMutex::new(Vec::new()),
            discarded: StdMutex::new(Vec::new()),
        })
    }

    /// What storing `handoff` keeps, unless every store fails.
    fn store(&self, mut handoff: Handoff) -> std::io::Result<StoredMessage> {
        if self.fail {
            return Err(std::io::Error::other("disk full"));
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut handoff.message, &mut bytes).unwrap();
        Ok((handoff.sender, handoff.recipients, bytes))
    }
}

impl OutboundQueue for MemoryOutbound {
    fn enqueue(
        &self,
        handoff: Handoff,
        _hop: Option<waraka_config::NextHopConfig>,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<String>>> {
        let result = self.store(handoff).map(|stored| {
            self.stored.lock().unwrap().push(stored);
            vec!["Q1".to_string()]
        });
        Box::pin(async move { result })
    }

    fn forward(&self, mut handoff: Handoff) -> futures_util::future::BoxFuture<'static, std::io::Result<HeldCopy>> {
        handoff.sender = format!("forwarded from {}", handoff.sender);
        let result = self.store(handoff).map(|stored| HeldCopy {
            ids: vec!["F1".to_string()],
            recipients: stored.1.clone(),
            token: Box::new(stored),
        });
        Box::pin(async move { result })
    }

    fn release(&self, held: HeldCopy) {
        let stored = held.token.downcast::<StoredMessage>().unwrap();
        self.stored.lock().unwrap().push(*stored);
    }

    fn discard(&self, held: HeldCopy) -> futures_util::future::BoxFuture<'static, std::io::Result<()>> {
        let stored = held.token.downcast::<StoredMessage>().unwrap();
        self.discarded.lock().unwrap().push(*stored);
        Box::pin(async { Ok(()) })
    }

    fn notify_success(
        &self,
        _message: MessageReader,
        notice: crate::session::SuccessNotice,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<()>> {
        self.stored
            .lock()
            .unwrap()
            .push((String::new(), notice.delivered, b"success notice".to_vec()));
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn relayed_mail_goes_to_the_host_queue_unless_a_plugin_took_it() {
    async fn relay(outbound: Option<Arc<MemoryOutbound>>, verdicts: &[(Hook, Verdict)]) -> String {
        let mut h = Harness::greeted(verdicts).await;
        h.session.connection().lock().outbound = outbound.map(|o| o as Arc<dyn OutboundQueue>);
        h.session.connection().lock().relaying = true;
        h.send(b"MAIL FROM:<>\r\nRCPT TO:<x@far.test>\r\nRCPT TO:<y@far.test>\r\nDATA\r\n")
            .await;
        h.send(b"Subject: out\r\n\r\nhi\r\n.\r\n").await
    }
    let queue = MemoryOutbound::new(false);
    assert!(
        relay(Some(queue.clone()), &[])
            .await
            .starts_with("250 2.0.0 Message queued as ")
    );
    let stored = queue.stored.lock().unwrap().clone();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].0.as_str(), stored[0].1.clone()),
        ("", vec!["x@far.test".to_string(), "y@far.test".to_string()])
    );
    let text = String::from_utf8_lossy(&stored[0].2);
    assert!(
        text.contains("Subject: out\r\nDate: ")
            && text.contains("\r\nMessage-ID: <")
            && text.ends_with("\r\n\r\nhi\r\n"),
        "relayed mail gets the Date and Message-ID it lacked, after its own fields: {text}"
    );

    let failing = MemoryOutbound::new(true);
    let refused = "451 4.3.0 Outbound queuing failed or disabled, try later\r\n";
    assert_eq!(relay(Some(failing), &[]).await, refused);
    assert_eq!(relay(None, &[]).await, refused, "no host queue: never a 250");

    let untouched = MemoryOutbound::new(false);
    let reply = relay(Some(untouched.clone()), &[(Hook::QueueOutbound, Verdict::Ok(None))]).await;
    assert!(reply.starts_with("250 "));
    assert!(
        untouched.stored.lock().unwrap().is_empty(),
        "a plugin's ok queues instead of the host"
    );
}

impl Harness {
    /// Sends a transaction from a@b.test to `recipients`, the first of
    /// them marked as forwarded (as `aliases` marks one), with a message of
    /// `subject`; the reply to the message.
    async fn send_forwarding(&mut self, recipients: &[&str], subject: &str) -> String {
        let rcpts: String = recipients.iter().map(|r| format!("RCPT TO:<{r}>\r\n")).collect();
        self.send(format!("MAIL FROM:<a@b.test>\r\n{rcpts}DATA\r\n").as_bytes())
            .await;
        let conn = self.session.connection();
        conn.lock()
            .transaction
            .as_mut()
            .unwrap()
            .forwarded
            .push(recipients[0].into());
        self.send(format!("Subject: {subject}\r\n\r\nhi\r\n.\r\n").as_bytes())
            .await
    }
}

#[tokio::test]
async fn forwarded_recipients_go_to_the_outbound_queue_and_the_queue_hook_gets_the_others() {
    let queue = MemoryOutbound::new(false);
    let mut h = Harness::greeted(&accepting()).await;
    h.session.connection().lock().outbound = Some(queue.clone());
    assert!(
        h.send_forwarding(&["far@y.test", "here@x.test"], "f")
            .await
            .starts_with("250 2.0.0 Message queued as ")
    );
    let stored = queue.stored.lock().unwrap().clone();
    assert_eq!(
        stored.iter().map(|m| (m.0.as_str(), m.1.clone())).collect::<Vec<_>>(),
        [("forwarded from a@b.test", vec!["far@y.test".to_string()])]
    );
    assert_eq!(*h.policy.queued_for.lock().unwrap(), [vec!["here@x.test".to_string()]]);

    // Every recipient forwarded: no queue plugin is asked.
    assert!(
        h.send_forwarding(&["far@y.test"], "g")
            .await
            .starts_with("250 2.0.0 Message queued as ")
    );
    assert_eq!(queue.stored.lock().unwrap().len(), 2);
    assert_eq!(h.policy.queued_for.lock().unwrap().len(), 1);

    // A forwarded copy that cannot be stored is never a 250, and the queue
    // plugins are not asked: the client's retry gives no one a second copy.
    h.session.connection().lock().outbound = Some(MemoryOutbound::new(true));
    assert_eq!(
        h.send_forwarding(&["far@y.test", "here@x.test"], "h").await,
        "451 4.3.0 Outbound queuing failed or disabled, try later\r\n"
    );
    assert_eq!(h.policy.queued_for.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_forwarded_copy_of_a_message_the_queue_hook_refuses_is_removed() {
    let queue = MemoryOutbound::new(false);
    let mut h = Harness::greeted(&[(Hook::Rcpt, Verdict::Ok(None)), (Hook::Queue, Verdict::Denysoft(None))]).await;
    h.session.connection().lock().outbound = Some(queue.clone());
    assert!(
        h.send_forwarding(&["far@y.test", "here@x.test"], "r")
            .await
            .starts_with("451 ")
    );
    assert!(
        queue.stored.lock().unwrap().is_empty(),
        "nothing leaves for a refused message"
    );
    let discarded = queue.discarded.lock().unwrap().clone();
    assert_eq!(
        discarded
            .iter()
            .map(|m| (m.0.as_str(), m.1.clone()))
            .collect::<Vec<_>>(),
        [("forwarded from a@b.test", vec!["far@y.test".to_string()])]
    );
}

#[test]
fn a_refused_candidate_takes_its_forwarding_mark_along() {
    let address = |text: &str| Address::parse_with_params(text, false).unwrap();
    let mut tx = Transaction {
        id: "T".into(),
        sender: address("<a@b.test>"),
        recipients: vec![address("<kept@y.test>"), address("<gone@y.test>")],
        message: None,
        notes: crate::capabilities::NoteStore::new(Default::default()),
        authentication: None,
        handed_on: Vec::new(),
        forwarded: vec!["kept@y.test".into(), "gone@y.test".into()],
    };
    tx.truncate_recipients(1);
    assert_eq!(tx.forwarded, ["kept@y.test"]);
}

#[tokio::test]
async fn dsn_parameters_are_checked_and_success_notices_asked_for_are_queued() {
    let queue = MemoryOutbound::new(false);
    let mut h = Harness::greeted(&accepting()).await;
    h.session.connection().lock().outbound = Some(queue.clone());
    let refused = h
        .send(b"MAIL FROM:<a@b.test> RET=ALL\r\nMAIL FROM:<a@b.test> ENVID=x+zz\r\n")
        .await;
    assert_eq!(
        refused,
        "501 5.5.4 Invalid RET parameter\r\n501 5.5.4 Invalid ENVID parameter\r\n"
    );
    let codes = h
        .codes(
            b"MAIL FROM:<a@b.test> RET=HDRS ENVID=e1\r\n\
              RCPT TO:<x@y.test> NOTIFY=NEVER,SUCCESS\r\n\
              RCPT TO:<x@y.test> NOTIFY=SUCCESS ORCPT=rfc822;o@y.test\r\n\
              RCPT TO:<z@y.test> NOTIFY=FAILURE\r\n\
              DATA\r\n",
        )
        .await;
    assert_eq!(codes, ["250", "501", "250", "250", "354"]);
    assert_eq!(h.codes(b"Subject: t\r\n\r\nhi\r\n.\r\n").await, ["250"]);
    let stored = queue.stored.lock().unwrap().clone();
    assert_eq!(stored.len(), 1, "one notice, for the one recipient that asked");
    assert_eq!(stored[0].1, ["x@y.test"]);

    let codes = h
        .codes(b"MAIL FROM:<>\r\nRCPT TO:<x@y.test> NOTIFY=SUCCESS\r\nDATA\r\n")
        .await;
    assert_eq!(codes, ["250", "250", "354"]);
    assert_eq!(h.codes(b"Subject: t\r\n\r\n.\r\n").await, ["250"]);
    assert_eq!(queue.stored.lock().unwrap().len(), 1, "no notice to <>");
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order_and_the_message_is_byte_exact() {
    let mut h = Harness::greeted(&accepting()).await;
    let codes = h
        .codes(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<z@y.test>\r\nDATA\r\n")
        .await;
    assert_eq!(codes, ["250", "250", "250", "354"]);
    let body = b"Subject: t\r\n\r\n..dot\r\nline\r\n";
    let mut data = body.to_vec();
    data.extend_from_slice(b".\r\nQUIT\r\n");
    assert_eq!(h.codes(&data).await, ["250", "221"]);
    let queued = h.policy.queued.lock().unwrap()[0].clone();
    assert!(queued.starts_with(b"Received: from client.test ([127.0.0.1])\r\n\tby mx.test (Waraka) with ESMTP id "));
    assert!(
        queued.ends_with(b"Subject: t\r\n\r\n.dot\r\nline\r\n"),
        "{}",
        String::from_utf8_lossy(&queued)
    );
}

#[tokio::test]
async fn pipelining_without_permission_closes_the_connection() {
    let mut h = harness(&accepting(), |_| {});
    h.start().await;
    assert_eq!(
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n").await,
        "554 5.5.0 Error: SMTP protocol synchronization\r\n"
    );
    assert!(h.session.is_closed());
    let mut h = Harness::greeted(&accepting()).await;
    h.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n").await;
    assert_eq!(h.codes(b"DATA\r\nSubject: early\r\n").await, ["554"]);
    assert!(h.session.is_closed());
}

#[tokio::test]
async fn smuggled_end_of_data_never_starts_a_second_transaction() {
    for seq in [
        &b"\n.\n"[..],
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\n",
        b"\r.\r",
        b"\r\n.\r",
        b"\r\n\x00.\r\n",
        b"\r\n.\x00\r\n",
    ] {
        let mut h = Harness::greeted(&accepting()).await;
        h.send(b"MAIL FROM:<a@b.test>\r\n").await;
        h.send(b"RCPT TO:<x@y.test>\r\n").await;
        h.send(b"DATA\r\n").await;
        let mut data = b"Subject: a\r\n\r\nfirst".to_vec();
        data.extend_from_slice(seq);
        data.extend_from_slice(
            b"MAIL FROM:<evil@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nSubject: b\r\n\r\nsecond\r\n.\r\n",
        );
        let codes = h.codes(&data).await;
        assert_eq!(codes, ["554"], "sequence {seq:?}");
        let seen = h.policy.seen.lock().unwrap().clone();
        assert_eq!(seen.iter().filter(|h| **h == Hook::Mail).count(), 1, "sequence {seq:?}");
        assert!(h.policy.queued.lock().unwrap().is_empty());
    }
}

#[tokio::test]
async fn bare_newlines_can_be_normalised() {
    let mut h = harness(&accepting(), |s| s.bare_newlines = BareNewlines::Normalize);
    h.start().await;
    h.send(b"EHLO c\r\n").await;
    h.send(b"MAIL FROM:<a@b.test>\r\n").await;
    h.send(b"RCPT TO:<x@y.test>\r\n").await;
    h.send(b"DATA\r\n").await;
    assert_eq!(h.codes(b"Subject: a\n\nbody\n.\r\n").await, Vec::<String>::new());
    assert_eq!(h.codes(b"\r\n.\r\n").await, ["250"]);
    let queued = h.policy.queued.lock().unwrap()[0].clone();
    // The bare-LF "dot line" stays content: only CRLF.CRLF ends DATA, even when normalising.
    assert!(queued.ends_with(b"Subject: a\r\n\r\nbody\r\n.\r\n\r\n"));
}

#[tokio::test]
async fn size_limits_at_mail_and_while_receiving() {
    let mut h = harness(&accepting(), |s| s.max_message_size = 100);
    h.start().await;
    h.send(b"EHLO c\r\n").await;
    assert_eq!(
        h.send(b"MAIL FROM:<a@b.test> SIZE=101\r\n").await,
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert_eq!(h.codes(b"MAIL FROM:<a@b.test> SIZE=100\r\n").await, ["250"]);
    h.send(b"RCPT TO:<x@y.test>\r\n").await;
    h.send(b"DATA\r\n").await;
    let big = format!("Subject: big\r\n\r\n{}\r\n.\r\n", "x".repeat(200));
    assert_eq!(
        h.send(big.as_bytes()).await,
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert!(h.policy.seen.lock().unwrap().contains(&Hook::MaxDataExceeded));
    assert!(h.policy.queued.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_hundred_recipients_then_452() {
    let mut h = Harness::greeted(&accepting()).await;
    h.send(b"MAIL FROM:<a@b.test>\r\n").await;
    for i in 0..100 {
        assert_eq!(h.codes(format!("RCPT TO:<u{i}@y.test>\r\n").as_bytes()).await, ["250"]);
    }
    assert_eq!(
        h.send(b"RCPT TO:<one-more@y.test>\r\n").await,
        "452 4.5.3 Too many recipients\r\n"
    );
}

#[tokio::test]
async fn long_lines_nul_and_error_limits() {
    let mut h = harness(&[], |s| s.max_errors = 3);
    h.start().await;
    let long = format!("EHLO {}\r\n", "a".repeat(600));
    assert_eq!(h.send(long.as_bytes()).await, "500 5.5.2 Line too long\r\n");
    assert_eq!(h.codes(b"NOOP \0\r\n").await, ["500"]);
    assert_eq!(h.codes(b"BOGUS\r\n").await, ["500"]);
    assert_eq!(
        h.send(b"BOGUS\r\n").await,
        "421 4.7.0 Too many errors, closing connection\r\n"
    );
    assert!(h.session.is_closed());
}

#[tokio::test]
async fn nul_in_data_is_rejected() {
    let mut h = Harness::greeted(&accepting()).await;
    h.send(b"MAIL FROM:<a@b.test>\r\n").await;
    h.send(b"RCPT TO:<x@y.test>\r\n").await;
    h.send(b"DATA\r\n").await;
    assert_eq!(
        h.send(b"Subject: a\r\n\r\nnul\0here\r\n.\r\n").await,
        "554 5.6.0 Message contains NUL characters\r\n"
    );
}

#[tokio::test]
async fn a_connect_deny_refuses_everything_but_quit() {
    let mut h = harness(&[(Hook::Connect, Verdict::Deny(None))], |_| {});
    assert_eq!(h.start().await, "554 5.7.1 Your mail is not welcome here\r\n");
    assert_eq!(h.codes(b"EHLO c\r\n").await, ["554"]);
    assert_eq!(h.codes(b"QUIT\r\n").await, ["221"]);
}

#[tokio::test]
async fn http_requests_are_turned_away() {
    let mut h = harness(&[], |_| {});
    h.start().await;
    assert_eq!(h.codes(b"GET / HTTP/1.1\r\n").await, ["554"]);
    assert!(h.session.is_closed());
}

#[tokio::test]
async fn too_many_received_headers_is_a_loop() {
    let mut h = harness(&accepting(), |s| s.max_received = 2);
    h.start().await;
    h.send(b"EHLO c\r\n").await;
    h.send(b"MAIL FROM:<a@b.test>\r\n").await;
    h.send(b"RCPT TO:<x@y.test>\r\n").await;
    h.send(b"DATA\r\n").await;
    let msg = b"Received: a\r\nReceived: b\r\nReceived: c\r\n\r\nx\r\n.\r\n";
    assert_eq!(h.codes(msg).await, ["554"]);
}

#[tokio::test]
async fn early_talkers_are_refused_or_flagged() {
    let mut h = harness(&[], |_| {});
    assert_eq!(h.session.start(true).await, Flow::Close);
    assert_eq!(
        String::from_utf8(h.session.take_output()).unwrap(),
        "554 5.5.0 Error: talking before the greeting\r\n"
    );
    let mut h = harness(&[], |s| s.early_talker = EarlyTalker::Flag);
    assert_eq!(h.session.start(true).await, Flow::Continue);
    assert!(h.session.connection().lock().early_talker);
    assert!(String::from_utf8(h.session.take_output()).unwrap().starts_with("220 "));
    assert_eq!(h.codes(b"EHLO c\r\n").await, ["250"]);
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn auth_plain_and_login_succeed_and_make_the_session_relaying() {
    let mut h = Harness::greeted(&[(Hook::Auth, Verdict::Ok(None))]).await;
    let out = h
        .send(format!("AUTH PLAIN {}\r\n", b64("\0alice\0secret")).as_bytes())
        .await;
    assert_eq!(out, "235 2.7.0 Authentication successful\r\n");
    assert_eq!(h.session.connection().lock().auth_user.as_deref(), Some("alice"));
    assert!(h.session.connection().lock().relaying);
    assert_eq!(h.codes(b"AUTH LOGIN\r\n").await, ["503"], "AUTH twice");

    let mut h = Harness::greeted(&[(Hook::Auth, Verdict::Ok(None))]).await;
    assert_eq!(h.send(b"AUTH LOGIN\r\n").await, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        h.send(format!("{}\r\n", b64("bob")).as_bytes()).await,
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert_eq!(h.codes(format!("{}\r\n", b64("pw")).as_bytes()).await, ["235"]);
}

#[tokio::test]
async fn auth_failures_are_refused_then_disconnected() {
    let mut h = harness(&[(Hook::Auth, Verdict::Deny(None))], |s| {
        s.auth_failure_delay = std::time::Duration::from_millis(1);
        s.auth_max_failures = 2;
    });
    h.start().await;
    h.send(b"EHLO c\r\n").await;
    let line = format!("AUTH PLAIN {}\r\n", b64("\0alice\0wrong"));
    assert_eq!(
        h.send(line.as_bytes()).await,
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    assert_eq!(
        h.send(line.as_bytes()).await,
        "421 4.7.0 Too many authentication failures, closing connection\r\n"
    );
    assert!(h.session.is_closed());
}

#[tokio::test]
async fn auth_needs_tls_off_loopback_and_can_be_cancelled() {
    let mut h = harness(&[(Hook::Auth, Verdict::Ok(None))], |s| {
        s.auth_plaintext_loopback = false
    });
    h.start().await;
    assert!(!h.send(b"EHLO c\r\n").await.contains("AUTH"));
    assert!(h.send(b"AUTH PLAIN\r\n").await.starts_with("538 5.7.11"));
    let mut h = Harness::greeted(&[(Hook::Auth, Verdict::Ok(None))]).await;
    assert_eq!(h.send(b"AUTH PLAIN\r\n").await, "334 \r\n");
    assert_eq!(h.codes(b"*\r\n").await, ["501"]);
    assert_eq!(h.codes(b"MAIL FROM:<a@b.test>\r\n").await, ["250"], "back to commands");
    assert_eq!(h.codes(b"AUTH PLAIN\r\n").await, ["503"], "not inside a transaction");
    let mut h = Harness::greeted(&[]).await;
    assert_eq!(h.codes(b"AUTH PLAIN\r\n").await, ["502"], "no auth plugin, no AUTH");
}

#[tokio::test]
async fn submission_requires_auth_before_mail() {
    let mut h = harness(&[(Hook::Auth, Verdict::Ok(None))], |_| {});
    h.session.connection().lock().role = Role::Submission;
    h.start().await;
    h.send(b"EHLO c\r\n").await;
    assert_eq!(
        h.send(b"MAIL FROM:<a@b.test>\r\n").await,
        "530 5.7.0 Authentication required\r\n"
    );
    h.send(format!("AUTH PLAIN {}\r\n", b64("\0u\0p")).as_bytes()).await;
    assert_eq!(h.codes(b"MAIL FROM:<a@b.test>\r\n").await, ["250"]);
}

#[tokio::test]
async fn starttls_stops_reading_and_resets_the_session() {
    let mut h = harness(&[], |s| s.strict_pipelining = false);
    h.session.connection().lock().starttls_available = true;
    h.start().await;
    assert!(h.send(b"EHLO c\r\n").await.contains("STARTTLS"));
    assert_eq!(h.session.ingest(b"STARTTLS\r\nRSET\r\n").await, Flow::StartTls);
    assert_eq!(
        String::from_utf8(h.session.take_output()).unwrap(),
        "220 2.0.0 Ready to start TLS\r\n",
        "RSET never answered"
    );
    let tls = TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "X".into(),
        sni: None,
        client_fingerprint: None,
    };
    h.session.tls_established(tls).await;
    assert_eq!(
        h.codes(b"MAIL FROM:<a@b.test>\r\n").await,
        ["503"],
        "EHLO required again"
    );
    let ehlo = h.send(b"EHLO c\r\n").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(h.codes(b"STARTTLS\r\n").await, ["503"]);
}

#[tokio::test]
async fn junk_command_floods_are_cut_off_and_mail_resets_the_count() {
    let mut h = harness(&accepting(), |s| s.max_junk_commands = 3);
    h.start().await;
    h.send(b"EHLO client.test\r\n").await;
    assert_eq!(h.codes(b"NOOP\r\n").await, ["250"]);
    assert_eq!(h.codes(b"RSET\r\n").await, ["250"]);
    // An RSET that abandons a transaction is not junk.
    for _ in 0..5 {
        h.send(b"MAIL FROM:<a@b.test>\r\n").await;
        assert_eq!(h.codes(b"RSET\r\n").await, ["250"]);
    }
    h.send(b"MAIL FROM:<a@b.test>\r\n").await;
    h.send(b"RCPT TO:<x@y.test>\r\n").await;
    h.send(b"DATA\r\n").await;
    assert_eq!(h.codes(b"Subject: a\r\n\r\nx\r\n.\r\n").await, ["250"]);
    // The accepted message reset the count: three more are fine, the fourth is not.
    assert_eq!(h.codes(b"NOOP\r\n").await, ["250"]);
    assert_eq!(h.codes(b"VRFY x\r\n").await, ["252"]);
    assert_eq!(h.codes(b"HELP\r\n").await, ["214"]);
    assert_eq!(
        h.send(b"NOOP\r\n").await,
        "421 4.7.0 Too many commands without mail, closing connection\r\n"
    );
    assert!(h.session.is_closed());
}

#[tokio::test]
async fn trickled_command_lines_and_slow_data_meet_their_deadlines() {
    let idle = std::time::Duration::from_secs(300);
    let mut h = harness(&accepting(), |s| {
        s.idle_timeout = idle;
        s.min_data_rate = 100;
    });
    h.start().await;
    let now = Instant::now();
    assert!(h.session.read_deadline(now) >= now + idle);
    // A partial line: its deadline counts from its first byte, not from the last read.
    h.send(b"EH").await;
    let later = now + std::time::Duration::from_secs(200);
    assert!(h.session.read_deadline(later) <= now + idle + std::time::Duration::from_secs(1));
    h.send(b"LO client.test\r\n").await;
    assert!(h.session.read_deadline(later) >= later + idle);
    h.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n").await;
    // In DATA: the grace period, then one second per 100 bytes.
    let start = Instant::now();
    assert!(h.session.read_deadline(start) <= start + DATA_RATE_GRACE);
    h.send(&[b'x'; 1000]).await;
    let deadline = h.session.read_deadline(Instant::now());
    assert!(deadline >= start + DATA_RATE_GRACE + std::time::Duration::from_millis(9_900));
    assert!(deadline <= Instant::now() + DATA_RATE_GRACE + std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn bdat_chunks_arrive_as_they_are_even_split_across_reads() {
    let mut h = Harness::greeted(&accepting()).await;
    let codes = h
        .codes(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nBDAT 21\r\nSubject: t\r\n\r\n..dot\r\n")
        .await;
    assert_eq!(codes, ["250", "250", "250"]);
    let mut rest = b"BDAT 15 LAST\r\n.\r\nline\r\nQUIT\r\nQUIT\r\n".to_vec();
    let tail = rest.split_off(20);
    assert_eq!(h.codes(&rest).await, Vec::<String>::new(), "the chunk is not whole yet");
    assert_eq!(h.codes(&tail).await, ["250", "221"], "the last chunk, then QUIT");
    let queued = h.policy.queued.lock().unwrap()[0].clone();
    assert!(
        queued.ends_with(b"Subject: t\r\n\r\n..dot\r\n.\r\nline\r\nQUIT\r\n"),
        "no dot-unstuffing, no end-of-data sequence: {}",
        String::from_utf8_lossy(&queued)
    );
}

#[tokio::test]
async fn a_refused_bdat_skips_its_chunk_instead_of_running_it_as_commands() {
    let mut h = Harness::greeted(&accepting()).await;
    let codes = h.codes(b"BDAT 31\r\nMAIL FROM:<evil@b.test>\r\nQUIT\r\nNOOP\r\n").await;
    assert_eq!(
        codes,
        ["503", "250"],
        "503 for BDAT without MAIL, the chunk skipped, then NOOP"
    );
    assert!(!h.session.is_closed());
    let mut h = Harness::greeted(&[(Hook::Data, Verdict::Deny(None)), (Hook::Rcpt, Verdict::Ok(None))]).await;
    let codes = h
        .codes(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nBDAT 6\r\nQUIT\r\nBDAT 0 LAST\r\n")
        .await;
    assert_eq!(
        codes,
        ["250", "250", "554", "503"],
        "the data hook refused; the transaction is over"
    );
    assert!(h.policy.queued.lock().unwrap().is_empty());
}

#[tokio::test]
async fn bdat_limits_sequence_and_syntax() {
    let mut h = harness(&accepting(), |s| s.max_message_size = 15);
    h.start().await;
    h.send(b"EHLO client.test\r\n").await;
    let codes = h
        .codes(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nBDAT 10\r\n0123456789BDAT 10 LAST\r\n0123456789")
        .await;
    assert_eq!(
        codes,
        ["250", "250", "250", "552"],
        "the chunk that overflows the size ends the message"
    );
    assert!(h.policy.queued.lock().unwrap().is_empty());
    let mut h = Harness::greeted(&accepting()).await;
    let codes = h
        .codes(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nBDAT 3\r\nabc")
        .await;
    assert_eq!(codes, ["250", "250", "250"]);
    assert_eq!(h.codes(b"DATA\r\n").await, ["503"], "DATA cannot follow BDAT");
    assert_eq!(h.codes(b"BDAT 0 LAST\r\n").await, ["250"], "the message still ends");
    assert_eq!(h.policy.queued.lock().unwrap().len(), 1);
    assert_eq!(h.codes(b"BDAT ten\r\nSubject: x\r\n").await, ["501"]);
    assert!(
        h.session.is_closed(),
        "an unreadable size leaves no way to find the next command"
    );
}

#[tokio::test]
async fn bdat_chunks_meet_the_minimum_data_rate_too() {
    let idle = std::time::Duration::from_secs(300);
    let mut h = harness(&accepting(), |s| {
        s.idle_timeout = idle;
        s.min_data_rate = 100;
    });
    h.start().await;
    h.send(b"EHLO client.test\r\n").await;
    h.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n").await;
    let start = Instant::now();
    h.send(b"BDAT 100000\r\n").await;
    assert!(
        h.session.read_deadline(start) <= Instant::now() + DATA_RATE_GRACE,
        "the grace period, not the idle timeout"
    );
    h.send(&[b'x'; 1000]).await;
    let deadline = h.session.read_deadline(Instant::now());
    assert!(deadline >= start + DATA_RATE_GRACE + std::time::Duration::from_millis(9_900));
    assert!(deadline <= Instant::now() + DATA_RATE_GRACE + std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn a_skipped_bdat_chunk_meets_the_minimum_data_rate_on_its_own() {
    let mut h = harness(&accepting(), |s| s.min_data_rate = 100);
    h.start().await;
    let start = Instant::now();
    assert_eq!(h.codes(b"BDAT 1000000\r\n").await, ["503"]);
    assert!(
        h.session.read_deadline(Instant::now()) <= start + DATA_RATE_GRACE + std::time::Duration::from_secs(1),
        "a refused chunk cannot hold the connection at the idle timeout's pace"
    );
}

#[tokio::test]
async fn a_kept_message_goes_to_the_queue_hook_alone_as_it_was() {
    let address = |text: &str| Address::parse_with_params(text, true).unwrap();
    let mut h = harness(&accepting(), |_| {});
    let message = b"Received: from x\r\nSubject: kept\r\n\r\nbody\r\n".to_vec();
    let reply = h
        .session
        .queue_kept(
            &address("<a@b.test>"),
            vec![address("<x@y.test>"), address("<z@y.test>")],
            &mut message.as_slice(),
            &[("quarantine.released", "20261205/abc.1")],
        )
        .await;
    assert!(reply.to_wire().starts_with("250 2.0.0 Message queued as "), "{reply:?}");
    assert_eq!(*h.policy.queued.lock().unwrap(), [message], "no Received: field added");
    assert_eq!(*h.policy.queued_for.lock().unwrap(), [vec!["x@y.test", "z@y.test"]]);
    assert_eq!(
        *h.policy.seen.lock().unwrap(),
        [Hook::Queue, Hook::QueueOk, Hook::ResetTransaction],
        "no hook before queue runs again"
    );

    let mut refused = harness(&[(Hook::Queue, Verdict::Denysoft(None))], |_| {});
    let reply = refused
        .session
        .queue_kept(
            &address("<>"),
            vec![address("<x@y.test>")],
            &mut &b"\r\nbody\r\n"[..],
            &[],
        )
        .await;
    assert_eq!(reply.code, 451);
    assert_eq!(
        *refused.policy.seen.lock().unwrap(),
        [Hook::Queue, Hook::ResetTransaction]
    );
}

#[tokio::test]
async fn xclient_is_for_trusted_front_ends_only() {
    let mut h = harness(&accepting(), |_| {});
    h.start().await;
    assert!(!h.send(b"EHLO front.test\r\n").await.contains("XCLIENT"));
    assert_eq!(
        h.send(b"XCLIENT ADDR=192.0.2.7\r\n").await,
        "550 5.7.0 Error: insufficient authorization\r\n"
    );
    assert_eq!(h.session.conn.lock().peer.ip().to_string(), "127.0.0.1");
}

#[tokio::test]
async fn xclient_starts_the_session_afresh_for_the_client_it_names() {
    let mut h = harness(&accepting(), |_| {});
    h.session.conn.lock().xclient_allowed = true;
    h.start().await;
    let ehlo = h.send(b"EHLO front.test\r\n").await;
    assert!(
        ehlo.contains("250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT\r\n"),
        "{ehlo}"
    );
    h.session.conn.lock().notes.set("front", "x").unwrap();
    h.send(b"MAIL FROM:<a@b.test>\r\n").await;
    assert_eq!(
        h.send(b"XCLIENT ADDR=192.0.2.7\r\n").await,
        "503 5.5.1 Bad sequence of commands: MAIL transaction in progress\r\n"
    );
    h.send(b"RSET\r\n").await;
    h.policy.seen.lock().unwrap().clear();
    assert_eq!(
        h.send(b"XCLIENT ADDR=IPV6:2001:db8::7 PORT=4242 LOGIN=alice NAME=c.example\r\n")
            .await,
        "220 mx.test ESMTP Waraka ready\r\n"
    );
    assert_eq!(
        h.policy.seen.lock().unwrap()[0],
        Hook::Connect,
        "the connect hook runs again"
    );
    {
        let conn = h.session.conn.lock();
        assert_eq!(conn.peer.to_string(), "[2001:db8::7]:4242");
        assert_eq!(conn.auth_user.as_deref(), Some("alice"));
        assert!(conn.relaying && conn.helo.is_none() && conn.notes.get("front").is_none());
    }
    assert_eq!(
        h.codes(b"MAIL FROM:<a@b.test>\r\n").await,
        ["503"],
        "the client greets again"
    );
    let ehlo = h.send(b"EHLO client.example\r\n").await;
    assert!(
        ehlo.starts_with("250-mx.test Hello client.example [2001:db8::7]\r\n"),
        "{ehlo}"
    );
    assert!(!ehlo.contains("XCLIENT"), "once per connection: {ehlo}");
    assert_eq!(h.codes(b"XCLIENT ADDR=192.0.2.8\r\n").await, ["550"]);
    assert_eq!(h.codes(b"XCLIENT COLOR=blue\r\n").await, ["501"]);
}

#[test]
fn the_tarpit_note_is_seconds_up_to_a_cap() {
    assert_eq!(tarpit_hold(None), Duration::ZERO);
    assert_eq!(tarpit_hold(Some("1.5")), Duration::from_millis(1500));
    assert_eq!(tarpit_hold(Some(" 2 ")), Duration::from_secs(2));
    assert_eq!(tarpit_hold(Some("3600")), MAX_TARPIT);
    for ignored in ["0", "-3", "x", "NaN", "inf", ""] {
        assert_eq!(tarpit_hold(Some(ignored)), Duration::ZERO, "{ignored}");
    }
}

#[tokio::test]
async fn a_tarpit_note_holds_each_reply() {
    let mut h = harness(&accepting(), |_| {});
    h.start().await;
    let started = Instant::now();
    h.send(b"EHLO client.test\r\n").await;
    assert!(started.elapsed() < Duration::from_millis(300), "no note, no hold");
    h.session.connection().lock().notes.set(TARPIT_NOTE, "0.3").unwrap();
    for command in [
        &b"EHLO client.test\r\n"[..],
        b"MAIL FROM:<a@b.test>\r\n",
        b"RCPT TO:<x@y.test>\r\n",
    ] {
        let started = Instant::now();
        let codes = h.codes(command).await;
        assert_eq!(codes, ["250"]);
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            String::from_utf8_lossy(command)
        );
    }
    h.session.connection().lock().notes.remove(TARPIT_NOTE);
    let started = Instant::now();
    h.send(b"EHLO client.test\r\n").await;
    assert!(started.elapsed() < Duration::from_millis(300), "removed: no hold");
}
