"""Outbound delivery end to end: a relaying client hands mail to a real
waraka, whose outbound queue delivers it through MX records served by a real
dnsmasq to SMTP servers on loopback addresses — scripted receivers that
answer 250, 451 or 550 per recipient, and a second waraka with STARTTLS.
"""

import email
import email.policy
import json
import shutil
import smtplib
import subprocess
import time
import unittest

from harness import (
    BIN, GUESTS, SmtpReceiver, Waraka, dnsmasq, enable_tls, free_port, prometheus, wait_until, waraka_queue,
)

RECORDS = [
    "--local=/test/",  # authoritative: unknown names are NXDOMAIN
    "--mx-host=dest.test,mx1.dest.test,10",
    "--mx-host=dest.test,mx2.dest.test,20",
    "--host-record=mx1.dest.test,127.0.0.2",
    "--host-record=mx2.dest.test,127.0.0.3",
    "--mx-host=fallback.test,down.fallback.test,10",
    "--mx-host=fallback.test,mx2.dest.test,20",
    "--host-record=down.fallback.test,127.0.0.4",
    "--host-record=implicit.test,127.0.0.3",
    "--mx-host=sender.test,mailbox.sender.test,10",
    "--host-record=mailbox.sender.test,127.0.0.5",
    "--mx-host=bulk.test,mx.bulk.test,10",
    "--host-record=mx.bulk.test,127.0.0.6",
    "--mx-host=real.test,mx.real.test,10",
    "--host-record=mx.real.test,127.0.0.7",
    "--mx-host=late.test,mx.late.test,10",
    "--mx-host=gone.test,mx.late.test,10",
    "--host-record=mx.late.test,127.0.0.8",
    "--mx-host=nullmx.test,.,0",  # RFC 7505: the domain accepts no mail
]


def scripted(address, attempt):
    """`temp-…` is refused once with 451, `bad-…` always with 550; the rest is accepted."""
    local = address.split("@")[0]
    if local.startswith("temp-") and attempt == 1:
        return "451 4.2.1 Mailbox busy, try later"
    if local.startswith("bad-"):
        return "550 5.1.1 No such user here"
    return "250 2.1.5 OK"


def relay_setup(dns_port, port, extra="", retry="5s, 5s"):
    """An instance that relays for 127.0.0.1 and delivers through the test's DNS to `port`."""

    def setup(server):
        server.edit("config/relay.acl_allow", lambda t: t + "127.0.0.1/32\n")
        server.edit("waraka.toml", lambda t: t + (
            f'\n[dns]\nservers = ["127.0.0.1:{dns_port}"]\ntimeout = "2s"\n'
            f'\n[outbound]\nport = {port}\nallow_local = true\nretry = "{retry}"\n{extra}'
        ))

    return setup


def message(subject, message_id=None):
    mid = message_id or f"<{subject.replace(' ', '.')}@sender.test>"
    return (f"From: Sender <sender@sender.test>\r\nTo: someone\r\nSubject: {subject}\r\n"
            f"Message-ID: {mid}\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\nHello.\r\n").encode()


def queue_entries(server):
    """The outbound queue's entries now (one removed while being read is left out)."""
    entries = []
    for path in sorted((server.dir / "queue/outbound").glob("*.json")):
        try:
            entries.append(json.loads(path.read_text()))
        except FileNotFoundError:
            pass
    return entries


def queue_late_and_gone(server, sender, late_subject, gone_subject):
    """Sends one message to r@late.test and one to r@gone.test (whose MX,
    mx.late.test, nothing answers yet) and waits until both were deferred
    once: their queue entries by domain."""
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
        s.sendmail(sender, ["r@late.test"], message(late_subject))
        s.sendmail(sender, ["r@gone.test"], message(gone_subject))

    def deferred():
        entries = [e for e in queue_entries(server) if e["attempts"] == 1]
        return entries if len(entries) == 2 else None

    return {e["domain"]: e for e in wait_until(deferred, what="two deferred entries")}


def mx_and_relay(test_class, plugins, setup=None):
    """For `test_class`: the test's DNS, a receiver as mx1.dest.test
    (127.0.0.2) and a waraka with `plugins` delivering through them
    (`relay_setup`, then `setup`), all stopped after the class:
    (receiver, server)."""
    dns = dnsmasq(RECORDS)
    test_class.addClassCleanup(dns.stop)
    port = free_port("127.0.0.2")
    mx = SmtpReceiver("127.0.0.2", port, name="mx1.dest.test")
    test_class.addClassCleanup(mx.stop)

    def configure(server):
        relay_setup(dns.port, port)(server)
        if setup:
            setup(server)

    server = Waraka(plugins, setup=configure)
    test_class.addClassCleanup(server.stop)
    return mx, server


def late_relay(retry="1h"):
    """The test's DNS, a free port on 127.0.0.8 (mx.late.test, which
    late.test and gone.test name), and a relaying waraka delivering there."""
    dns = dnsmasq(RECORDS)
    port = free_port("127.0.0.8")
    try:
        server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"],
                        setup=relay_setup(dns.port, port, retry=retry))
    except BaseException:
        dns.stop()
        raise
    return dns, port, server


class OutboundTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = dnsmasq(RECORDS)
        cls.addClassCleanup(cls.dns.stop)
        cls.port = free_port("127.0.0.2", "127.0.0.3", "127.0.0.5")
        cls.mx1 = SmtpReceiver("127.0.0.2", cls.port, scripted, name="mx1.dest.test")
        cls.addClassCleanup(cls.mx1.stop)
        cls.mx2 = SmtpReceiver("127.0.0.3", cls.port, scripted, name="mx2.dest.test")
        cls.addClassCleanup(cls.mx2.stop)
        cls.mailbox = SmtpReceiver("127.0.0.5", cls.port, name="mailbox.sender.test")
        cls.addClassCleanup(cls.mailbox.stop)
        cls.metrics_port = free_port()
        cls.server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"],
                            setup=relay_setup(cls.dns.port, cls.port,
                                              extra=f'\n[metrics]\nlisten = "127.0.0.1:{cls.metrics_port}"\n'))
        cls.addClassCleanup(cls.server.stop)

    def send(self, recipients, subject, sender="sender@sender.test"):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            refused = s.sendmail(sender, recipients, message(subject))
        self.assertEqual(refused, {})

    def delivered(self, receiver, subject):
        return [m for m in receiver.received() if f"Subject: {subject}\r\n".encode() in m[2]]

    def bounces_for(self, subject):
        return [m for m in self.mailbox.received() if m[0] == "" and f"Subject: {subject}\r\n".encode() in m[2]]

    def test_delivered_to_the_preferred_mx(self):
        self.send(["one@dest.test", "two@Dest.test"], "first mx")
        got = wait_until(lambda: self.delivered(self.mx1, "first mx"), what="delivery")
        self.assertEqual(len(got), 1, "one transaction for both recipients of the domain")
        sender, recipients, data = got[0]
        self.assertEqual(sender, "sender@sender.test")
        self.assertEqual(recipients, ["one@dest.test", "two@Dest.test"])
        self.assertTrue(data.startswith(b"Received: from client.test"), "our trace header first")
        self.assertIn(b"\r\nHello.\r\n", data)
        self.assertEqual(self.delivered(self.mx2, "first mx"), [])
        wait_until(lambda: not queue_entries(self.server), what="an empty queue")

    def test_falls_back_to_the_next_mx_and_to_the_address_of_a_domain_without_mx(self):
        self.send(["x@fallback.test"], "fallback")
        self.send(["y@implicit.test"], "implicit")
        self.assertEqual(len(wait_until(lambda: self.delivered(self.mx2, "fallback"), what="fallback")), 1)
        self.assertEqual(len(wait_until(lambda: self.delivered(self.mx2, "implicit"), what="implicit MX")), 1)
        self.server.wait_for_log(r"trying the next address.*host=down\.fallback\.test addr=127\.0\.0\.4")

    def test_a_451_is_retried_on_schedule_and_then_delivered(self):
        self.send(["temp-a@dest.test"], "retried")
        entry = wait_until(lambda: [e for e in queue_entries(self.server)
                                    if e["recipients"] == ["temp-a@dest.test"] and e["attempts"] == 1],
                           what="a deferred entry")[0]
        self.assertIn("451 4.2.1 Mailbox busy", entry["last_error"])
        self.assertGreater(entry["next_attempt_ms"], time.time() * 1000 + 2000, "waits the 5 s of the schedule")
        code, listing = waraka_queue(self.server, "list")
        self.assertEqual(code, 0)
        self.assertIn("temp-a@dest.test", listing)
        got = wait_until(lambda: self.delivered(self.mx1, "retried"), timeout=20, what="the retry")
        self.assertEqual([m[1] for m in got], [["temp-a@dest.test"]])
        self.assertEqual(self.mx1.attempts["temp-a@dest.test"], 2)
        wait_until(lambda: not any(e["recipients"] == ["temp-a@dest.test"] for e in queue_entries(self.server)),
                   what="the entry to go")

    def test_a_550_bounces_with_a_dsn_to_the_sender(self):
        self.send(["bad-b@dest.test"], "rejected")
        bounce = wait_until(lambda: self.bounces_for("rejected"), what="the bounce")
        self.assertEqual(len(bounce), 1)
        _, recipients, data = bounce[0]
        self.assertEqual(recipients, ["sender@sender.test"])
        dsn = email.message_from_bytes(data, policy=email.policy.compat32)
        self.assertEqual(dsn.get_content_type(), "multipart/report")
        self.assertEqual(dsn.get_param("report-type"), "delivery-status")
        self.assertEqual(dsn["Auto-Submitted"], "auto-replied")
        text, status, headers = dsn.get_payload()
        self.assertEqual(status.get_content_type(), "message/delivery-status")
        per_message, per_recipient = status.get_payload()
        self.assertTrue(per_message["Reporting-MTA"].startswith("dns; "))
        self.assertEqual(per_recipient["Final-Recipient"], "rfc822; bad-b@dest.test")
        self.assertEqual(per_recipient["Action"], "failed")
        self.assertEqual(per_recipient["Status"], "5.1.1")
        self.assertEqual(per_recipient["Remote-MTA"], "dns; mx1.dest.test")
        self.assertIn("smtp; 550 5.1.1 No such user here", per_recipient["Diagnostic-Code"])
        self.assertEqual(headers.get_content_type(), "text/rfc822-headers")
        self.assertIn("Subject: rejected", headers.get_payload())
        self.assertIn("bad-b@dest.test", text.get_payload())

    def test_per_recipient_results_split_the_entry(self):
        self.send(["ok-c@dest.test", "temp-c@dest.test", "bad-c@dest.test"], "mixed")
        first = wait_until(lambda: self.delivered(self.mx1, "mixed"), what="the first delivery")
        self.assertEqual(first[0][1], ["ok-c@dest.test"])
        bounce = wait_until(lambda: self.bounces_for("mixed"), what="the bounce")
        _, status, _ = email.message_from_bytes(bounce[0][2], policy=email.policy.compat32).get_payload()
        failed = [group["Final-Recipient"] for group in status.get_payload()[1:]]
        self.assertEqual(failed, ["rfc822; bad-c@dest.test"], "only the 550 recipient is bounced")
        both = wait_until(lambda: len(self.delivered(self.mx1, "mixed")) == 2 and self.delivered(self.mx1, "mixed"),
                          timeout=20, what="the retry")
        self.assertEqual(both[1][1], ["temp-c@dest.test"], "the retry carries only the deferred recipient")
        self.assertEqual(self.mx1.attempts["ok-c@dest.test"], 1, "a delivered recipient is never sent again")
        self.assertEqual(self.mx1.attempts["bad-c@dest.test"], 1, "a bounced recipient is never tried again")

    def test_a_bounce_that_fails_is_dropped_not_bounced(self):
        self.send(["bad-d@dest.test"], "double", sender="")
        self.server.wait_for_log(r"double bounce dropped.*bad-d@dest\.test")
        wait_until(lambda: not any(e["recipients"] == ["bad-d@dest.test"] for e in queue_entries(self.server)),
                   what="the entry to go")
        self.assertEqual(self.bounces_for("double"), [])

    def metrics(self):
        return prometheus(self.metrics_port)

    def test_metrics_count_results_latency_and_depth(self):
        delivered = 'waraka_outbound_recipients_total{result="delivered"}'
        latency = "waraka_outbound_delivery_seconds_count"
        before = self.metrics()
        self.send(["m1@dest.test", "m2@dest.test"], "metered")
        wait_until(lambda: self.delivered(self.mx1, "metered"), what="delivery")
        after = wait_until(lambda: (m := self.metrics()).get(delivered, 0) >= before.get(delivered, 0) + 2 and m,
                           what="the delivered counter")
        self.assertEqual(after[delivered] - before.get(delivered, 0), 2)
        self.assertGreaterEqual(after[latency] - before.get(latency, 0), 2)
        self.assertIn('waraka_outbound_delivery_seconds_bucket{le="1"}', after)
        self.assertIn("waraka_outbound_queue_depth", after)
        self.assertGreaterEqual(after["waraka_connections_total"], 1)

    def test_mail_to_an_unknown_domain_or_a_null_mx_bounces(self):
        self.send(["z@nowhere.test"], "no such domain")
        self.send(["z@nullmx.test"], "null mx")
        for subject, status in (("no such domain", "5.1.2"), ("null mx", "5.1.10")):
            bounce = wait_until(lambda: self.bounces_for(subject), what="the bounce")
            _, report, _ = email.message_from_bytes(bounce[0][2], policy=email.policy.compat32).get_payload()
            self.assertEqual(report.get_payload()[1]["Status"], status)


class TlsDeliveryTest(unittest.TestCase):
    def test_delivered_to_a_second_waraka_over_starttls_from_the_bind_address(self):
        dns = dnsmasq(RECORDS)
        self.addCleanup(dns.stop)
        port = free_port("127.0.0.7")

        def receiver_setup(server):
            enable_tls(server, "mx.real.test")
            server.edit("config/host_list", lambda t: t + "real.test\n")

        receiver = Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=receiver_setup, host="127.0.0.7", port=port)
        self.addCleanup(receiver.stop)
        sender = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"],
                        setup=relay_setup(dns.port, port, extra='bind_address = "127.0.0.9"\n'))
        self.addCleanup(sender.stop)
        with smtplib.SMTP("127.0.0.1", sender.port, local_hostname="client.test", timeout=30) as s:
            self.assertEqual(s.sendmail("a@sender.test", ["rcpt@real.test"], message("over tls")), {})
        stored = wait_until(receiver.maildir, what="the receiver's maildir")[0].read_bytes()
        self.assertIn(b"Subject: over tls\r\n", stored)
        self.assertIn(b" ([127.0.0.9])", stored, "the connection came from [outbound] bind_address")
        self.assertIn(b"(using TLSv1.3 with cipher", stored, "opportunistic STARTTLS was used")
        self.assertIn(b"with ESMTPS id", stored)
        sender.wait_for_log(r"delivered.*recipient=rcpt@real\.test.*host=mx\.real\.test")

    def test_relayed_mail_is_refused_when_outbound_delivery_is_off(self):
        dns = dnsmasq(RECORDS)
        self.addCleanup(dns.stop)
        sender = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"],
                        setup=relay_setup(dns.port, 25, extra="enabled = false\n"))
        self.addCleanup(sender.stop)
        with smtplib.SMTP("127.0.0.1", sender.port, local_hostname="client.test", timeout=30) as s:
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                s.sendmail("a@sender.test", ["rcpt@real.test"], message("off"))
        self.assertEqual((cm.exception.smtp_code, cm.exception.smtp_error[:5]), (451, b"4.3.0"))


class OutboundHooksTest(unittest.TestCase):
    """The `test/outbound` fixture (tests/fixtures/outbound) drives each outbound hook."""

    @classmethod
    def setUpClass(cls):
        cls.dns = dnsmasq(RECORDS)
        cls.addClassCleanup(cls.dns.stop)
        port = free_port("127.0.0.9", "127.0.0.5")
        cls.hop = SmtpReceiver("127.0.0.9", port, scripted, name="hop.test")
        cls.addClassCleanup(cls.hop.stop)
        cls.mailbox = SmtpReceiver("127.0.0.5", port, name="mailbox.sender.test")
        cls.addClassCleanup(cls.mailbox.stop)

        def setup(server):
            relay_setup(cls.dns.port, port, retry="1h")(server)
            (server.dir / "plugins/test").mkdir()
            shutil.copy(GUESTS / "fixture_outbound.wasm", server.dir / "plugins/test/outbound.wasm")
            (server.dir / "config/test").mkdir()
            (server.dir / "config/test/outbound.ini").write_text(f"next_hop = 127.0.0.9:{port}\n")

        cls.server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"], setup=setup)
        cls.addClassCleanup(cls.server.stop)

    def send(self, sender, recipients, subject):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            self.assertEqual(s.sendmail(sender, recipients, message(subject)), {})

    def entry_for(self, recipient):
        return [e for e in queue_entries(self.server) if recipient in e["recipients"]]

    def test_get_mx_routes_a_domain_without_dns_and_delivered_is_told(self):
        self.send("a@sender.test", ["ok@hooked.test"], "hooked")
        wait_until(lambda: [m for m in self.hop.received() if m[1] == ["ok@hooked.test"]], what="the delivery")
        self.server.wait_for_log(r"delivered hook #\d+: id=\S+ recipients=ok@hooked\.test host=127\.0\.0\.9 "
                                 r"reply=250 2\.0\.0 Stored")

    def test_deferred_shortens_the_wait(self):
        self.send("a@sender.test", ["temp-q@quick.test"], "quick")
        got = wait_until(lambda: [m for m in self.hop.received() if m[1] == ["temp-q@quick.test"]],
                         timeout=15, what="the retry after the plugin's 1 s instead of the schedule's hour")
        self.assertEqual(len(got), 1)
        self.assertEqual(self.hop.attempts["temp-q@quick.test"], 2)

    def test_send_email_delays_and_drops(self):
        self.send("delay-me@sender.test", ["d@hooked.test"], "delayed")
        self.send("drop-me@sender.test", ["x@hooked.test"], "dropped")
        self.server.wait_for_log(r"delivery delayed by a plugin")
        self.server.wait_for_log(r"dropped by a plugin.*recipients=x@hooked\.test")
        delayed = wait_until(lambda: self.entry_for("d@hooked.test"), what="the delayed entry")[0]
        self.assertEqual(delayed["attempts"], 0, "a delay is not a failed attempt")
        self.assertGreater(delayed["next_attempt_ms"], time.time() * 1000 + 3000_000)
        # The drop is logged, then the entry removed.
        wait_until(lambda: not self.entry_for("x@hooked.test"), what="the dropped entry's removal")
        self.assertFalse(any("x@hooked.test" in m[1] for m in self.hop.received()))

    def test_bounce_can_suppress_the_dsn(self):
        self.send("quiet@sender.test", ["bad-q@hooked.test"], "quiet")
        self.send("loud@sender.test", ["bad-l@hooked.test"], "loud")
        wait_until(lambda: [m for m in self.mailbox.received() if m[1] == ["loud@sender.test"]], what="the DSN")
        self.server.wait_for_log(r"bounce suppressed by a plugin")
        time.sleep(0.5)
        bounced_to = [m[1] for m in self.mailbox.received()]
        self.assertIn(["loud@sender.test"], bounced_to)
        self.assertNotIn(["quiet@sender.test"], bounced_to)

    def test_a_fault_in_send_email_keeps_the_mail_queued(self):
        self.send("a@sender.test", ["trap@hooked.test"], "trapped")
        entry = wait_until(lambda: [e for e in self.entry_for("trap@hooked.test") if e["attempts"] == 1],
                           what="the entry deferred after the fault")[0]
        self.assertIn("plugin test/outbound failed in send-email", entry["last_error"])
        self.server.wait_for_log(r"plugin fault: trap.*asked to trap|plugin=test/outbound hook=send-email")


class NextHopTest(unittest.TestCase):
    def test_a_route_and_a_smarthost_with_starttls_and_auth(self):
        """`routed.test` goes to its route; everything else to a smarthost
        (a second waraka's submission port, AUTH required) over STARTTLS."""
        dns = dnsmasq(RECORDS)
        self.addCleanup(dns.stop)
        port = free_port("127.0.0.10")
        routed = SmtpReceiver("127.0.0.10", port, name="routed.test")
        self.addCleanup(routed.stop)

        def smarthost_setup(server):
            enable_tls(server, "smarthost")
            hashed = subprocess.run([BIN, "password-hash"], input="relay-secret\n", capture_output=True, text=True,
                                    check=True).stdout.strip()
            server.edit("config/auth/flat_file.ini", lambda t: t + f"relay-user = {hashed}\n")
            server.edit("waraka.toml", lambda t: t + (
                '\n[outbound]\nsmarthost = { host = "127.0.0.1", port = 1 }  # keep what it relays queued\n'))

        smarthost = Waraka(["auth/flat_file", "rcpt_to.in_host_list", "queue/maildir"], roles=("submission",),
                           setup=smarthost_setup)
        self.addCleanup(smarthost.stop)
        hops = (f'\n[outbound.smarthost]\nhost = "127.0.0.1"\nport = {smarthost.port}\n'
                f'user = "relay-user"\npassword = "relay-secret"\n'
                f'\n[outbound.routes."routed.test"]\nhost = "127.0.0.10"\nport = {port}\n')
        sender = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"], setup=relay_setup(dns.port, port, extra=hops))
        self.addCleanup(sender.stop)
        with smtplib.SMTP("127.0.0.1", sender.port, local_hostname="client.test", timeout=30) as s:
            self.assertEqual(s.sendmail("a@sender.test", ["x@routed.test"], message("routed")), {})
            self.assertEqual(s.sendmail("a@sender.test", ["y@far.example"], message("smarthost")), {})
        got = routed.wait_for(1)
        self.assertEqual(got[0][1], ["x@routed.test"])
        relayed = wait_until(lambda: queue_entries(smarthost), what="the smarthost to queue the mail")
        self.assertEqual([(e["sender"], e["recipients"]) for e in relayed], [("a@sender.test", ["y@far.example"])])
        stored = (smarthost.dir / "queue/outbound" / f"{relayed[0]['id']}.eml").read_bytes()
        self.assertIn(b"(using TLSv1.3 with cipher", stored)
        self.assertIn(b"with ESMTPSA id", stored, "over TLS (S) and authenticated (A)")
        sender.wait_for_log(r"delivered.*recipient=y@far\.example host=127\.0\.0\.1")
        wait_until(lambda: not queue_entries(sender), what="the delivered entry's removal")


    def test_senders_relay_through_their_own_next_hops(self):
        """`[outbound.senders]`: a tenant's domain and one of its addresses
        have their own relays, bounces another, everyone else the
        smarthost; a recipient domain's route still comes first."""
        ports = {name: free_port() for name in ("tenant", "boss", "bounces", "smarthost", "routed")}
        hops = "".join(f'\n[outbound.{table}]\nhost = "127.0.0.1"\nport = {ports[name]}\n' for table, name in (
            ('senders."@tenant.test"', "tenant"), ('senders."Boss@tenant.test"', "boss"),
            ('senders."<>"', "bounces"), ("smarthost", "smarthost"), ('routes."routed.test"', "routed")))
        dns = dnsmasq(RECORDS)
        self.addCleanup(dns.stop)
        relays = {}
        for name, port in ports.items():
            relays[name] = SmtpReceiver("127.0.0.1", port, name=f"{name}.test")
            self.addCleanup(relays[name].stop)
        sender = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"], setup=relay_setup(dns.port, 1, extra=hops))
        self.addCleanup(sender.stop)
        sent = {"tenant": ("a@tenant.test", "y@far.example"), "boss": ("boss@TENANT.test", "y@far.example"),
                "bounces": ("", "y@far.example"), "smarthost": ("a@sender.test", "y@far.example"),
                "routed": ("a@tenant.test", "x@routed.test")}
        with smtplib.SMTP("127.0.0.1", sender.port, local_hostname="client.test", timeout=30) as s:
            for name, (from_, to) in sent.items():
                self.assertEqual(s.sendmail(from_, [to], message(f"for {name}")), {})
        for name, (from_, to) in sent.items():
            (got,) = relays[name].wait_for(1)
            self.assertEqual((got[0].lower(), got[1]), (from_.lower(), [to]), name)


    def test_a_senders_mail_leaves_from_its_own_address_and_name(self):
        """`[outbound.sources]`: a tenant's mail comes from 127.0.0.31 and
        greets as its own host, whatever the route; others keep `[outbound]`'s."""
        dns = dnsmasq(RECORDS)
        self.addCleanup(dns.stop)
        port = free_port("127.0.0.30")
        receiver = SmtpReceiver("127.0.0.30", port, name="relay.test")
        self.addCleanup(receiver.stop)
        hops = (f'\n[outbound.smarthost]\nhost = "127.0.0.30"\nport = {port}\n'
                '\n[outbound.sources."@tenant.test"]\nbind_address = "127.0.0.31"\nhelo = "mail.tenant.test"\n')
        sender = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"], setup=relay_setup(dns.port, 1, extra=hops))
        self.addCleanup(sender.stop)
        # One after the other: each delivery is one session, one greeting.
        for count, (from_, subject) in enumerate((("a@Tenant.test", "tenant"), ("a@sender.test", "other")), 1):
            with smtplib.SMTP("127.0.0.1", sender.port, local_hostname="client.test", timeout=30) as s:
                self.assertEqual(s.sendmail(from_, ["y@far.example"], message(subject)), {})
            receiver.wait_for(count)
        self.assertEqual([m[0] for m in receiver.received()], ["a@Tenant.test", "a@sender.test"])
        tenant, other = receiver.greetings
        self.assertEqual(tenant, ("127.0.0.31", "mail.tenant.test"))
        self.assertNotEqual(other[0], "127.0.0.31")
        self.assertNotEqual(other[1], "mail.tenant.test")


class InetProtocolsTest(unittest.TestCase):
    def test_deliveries_use_the_ip_versions_allowed(self):
        """`[outbound] inet_protocols`: the MX of dual.test has an IPv4 and
        an IPv6 address, each with a receiver; v4only.test has IPv4 only."""
        dns = dnsmasq(["--local=/test/", "--mx-host=dual.test,mx.dual.test,10", "--mx-host=v4only.test,mx.v4only.test,10",
                       "--host-record=mx.dual.test,127.0.0.40,::1", "--host-record=mx.v4only.test,127.0.0.40"])
        self.addCleanup(dns.stop)
        port = free_port("127.0.0.40")
        v4, v6 = SmtpReceiver("127.0.0.40", port, name="v4.test"), SmtpReceiver("::1", port, name="v6.test")
        self.addCleanup(v4.stop)
        self.addCleanup(v6.stop)
        servers = {}
        for protocols in ("ipv4", "ipv6", "all"):
            servers[protocols] = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"], setup=relay_setup(
                dns.port, port, extra=f'inet_protocols = "{protocols}"\n'))
            self.addCleanup(servers[protocols].stop)
        for protocols, server in servers.items():
            with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
                self.assertEqual(s.sendmail(f"{protocols}@sender.test", ["r@dual.test"], message(protocols)), {})
        wait_until(lambda: len(v4.received()) + len(v6.received()) == 3, what="three deliveries")
        self.assertEqual(sorted(m[0] for m in v4.received()), ["all@sender.test", "ipv4@sender.test"],
                         "IPv4 first when both are allowed")
        self.assertEqual([m[0] for m in v6.received()], ["ipv6@sender.test"])
        ipv6 = servers["ipv6"]
        with smtplib.SMTP("127.0.0.1", ipv6.port, local_hostname="client.test", timeout=30) as s:
            self.assertEqual(s.sendmail("ipv6@sender.test", ["r@v4only.test"], message("unreachable")), {})
        ipv6.wait_for_log(r"mail servers of v4only\.test have no address of the IP version")


class FlushTest(unittest.TestCase):
    def test_flush_delivers_now_and_delete_takes_an_entry_from_a_running_server(self):
        dns, port, server = late_relay()
        self.addCleanup(dns.stop)
        self.addCleanup(server.stop)

        def queue(*args):
            return waraka_queue(server, *args)

        gone = queue_late_and_gone(server, "a@sender.test", "late", "gone")["gone.test"]
        self.assertEqual(queue("delete", gone["id"])[0], 0)
        receiver = SmtpReceiver("127.0.0.8", port, name="mx.late.test")
        self.addCleanup(receiver.stop)
        self.assertEqual(queue("flush", "late.test"), (0, "1 entries due now"))
        got = receiver.wait_for(1, timeout=10)
        self.assertEqual(got[0][1], ["r@late.test"])
        self.assertEqual(queue("flush"), (0, "1 entries due now"), "the deleted entry is still in memory")
        server.wait_for_log(r"deleted before its attempt; dropped id=" + gone["id"])
        self.assertEqual(queue_entries(server), [], "the deleted entry did not come back")
        self.assertEqual(len(receiver.received()), 1)
        server.proc.terminate()
        server.proc.wait(timeout=15)
        code, text = queue("flush")
        self.assertEqual(code, 1)
        self.assertIn("no running server", text)


class GiveUpTest(unittest.TestCase):
    def test_bounce_returns_waiting_and_held_entries_to_their_senders_now(self):
        dns = dnsmasq(RECORDS)
        self.addCleanup(dns.stop)
        port = free_port("127.0.0.8", "127.0.0.5")
        mailbox = SmtpReceiver("127.0.0.5", port, name="mailbox.sender.test")
        self.addCleanup(mailbox.stop)
        server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"], setup=relay_setup(dns.port, port, retry="1h"))
        self.addCleanup(server.stop)
        gone = queue_late_and_gone(server, "sender@sender.test", "given up", "held and given up")["gone.test"]
        self.assertEqual(waraka_queue(server, "hold", gone["id"])[0], 0)
        code, shape = waraka_queue(server, "shape")
        self.assertEqual(code, 0, shape)
        rows = {line.split()[0]: [int(n) for n in line.split()[1:]] for line in shape.splitlines()[1:]}
        # total, held, then by age: both arrived within five minutes
        self.assertEqual(rows["TOTAL"][:3], [2, 1, 2])
        self.assertEqual((rows["late.test"][:3], rows["gone.test"][:3]), ([1, 0, 1], [1, 1, 1]))

        code, text = waraka_queue(server, "bounce", "--domain", "late.test", "--reason", "the domain is gone")
        self.assertEqual((code, text), (0, "1 entries returned to their senders"))
        dsn = wait_until(lambda: [m for m in mailbox.received() if b"Subject: given up" in m[2]], what="the bounce")
        report = email.message_from_bytes(dsn[0][2], policy=email.policy.compat32)
        per_recipient = report.get_payload()[1].get_payload()[1]
        self.assertEqual((per_recipient["Action"], per_recipient["Status"]), ("failed", "5.0.0"))
        self.assertIn("returned to the sender by the administrator: the domain is gone",
                      per_recipient["Diagnostic-Code"])

        self.assertEqual(waraka_queue(server, "bounce", gone["id"])[0], 0, "a held entry too")
        wait_until(lambda: [m for m in mailbox.received() if b"Subject: held and given up" in m[2]],
                   what="the held entry's bounce")
        wait_until(lambda: not queue_entries(server), what="an empty queue")
        code, text = waraka_queue(server, "bounce", gone["id"])
        self.assertNotEqual(code, 0)
        self.assertIn(f"no queued entry {gone['id']}", text)


class SenderSelectionTest(unittest.TestCase):
    def test_a_stolen_accounts_mail_is_held_and_deleted_by_sender(self):
        dns, _, server = late_relay()
        self.addCleanup(dns.stop)
        self.addCleanup(server.stop)
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
            for n in range(3):
                s.sendmail("Spammer@sender.test", [f"r{n}@late.test"], message(f"spam {n}"))
            s.sendmail("good@sender.test", ["r@late.test"], message("good"))
        wait_until(lambda: len([e for e in queue_entries(server) if e["attempts"] == 1]) == 4,
                   what="four deferred entries")
        self.assertEqual(waraka_queue(server, "hold", "--sender", "spammer@sender.test"), (0, "3 entries held"))
        code, text = waraka_queue(server, "delete", "--sender", "<spammer@sender.test>")
        self.assertEqual(code, 0, text)
        self.assertTrue(text.endswith("3 entries deleted"), text)
        self.assertEqual([e["sender"] for e in queue_entries(server)], ["good@sender.test"])
        code, listed = waraka_queue(server, "list", "--sender", "good@sender.test", "--domain", "late.test", "--json")
        self.assertEqual(code, 0, listed)
        self.assertEqual([json.loads(line)["recipients"] for line in listed.splitlines()], [["r@late.test"]])
        self.assertEqual(waraka_queue(server, "list", "--sender", "spammer@sender.test", "--json"), (0, ""))


class HoldTest(unittest.TestCase):
    def test_held_entries_wait_across_a_restart_until_released(self):
        dns, port, server = late_relay()
        self.addCleanup(dns.stop)
        self.addCleanup(server.stop)

        def queue(*args):
            return waraka_queue(server, *args)

        def held():
            return {e["domain"]: e.get("held", False) for e in queue_entries(server)}

        late = queue_late_and_gone(server, "a@sender.test", "held late", "held gone")["late.test"]
        self.assertEqual(queue("hold", late["id"]), (0, "1 entries held"))
        self.assertEqual(queue("hold", "--domain", "gone.test"), (0, "1 entries held"))
        self.assertEqual(queue("hold", "--all"), (0, "0 entries held"), "held already")
        for verb in ["hold", "release"]:
            code, text = queue(verb, "0000000000000-nosuchentry")
            self.assertEqual(code, 1, verb)
            self.assertIn("no queued entry 0000000000000-nosuchentry", text)
        self.assertEqual(held(), {"late.test": True, "gone.test": True})
        listed = queue("list")[1].splitlines()
        self.assertEqual(len([line for line in listed if " held " in line]), 2, listed)

        receiver = SmtpReceiver("127.0.0.8", port, name="mx.late.test")
        self.addCleanup(receiver.stop)
        self.assertEqual(queue("flush"), (0, "0 entries due now"), "a flush passes held entries by")
        server.kill_and_restart()
        self.assertEqual(queue("flush"), (0, "0 entries due now"), "still held after kill -9")
        self.assertEqual(queue("release", late["id"]), (0, "1 entries released, due now"))
        got = receiver.wait_for(1, timeout=10)
        self.assertEqual(got[0][1], ["r@late.test"])

        code, text = queue("tls-report")
        self.assertEqual(code, 1)
        self.assertIn("TLS reports are off ([outbound] tls_reports)", text)
        # Without a server, hold and release change the queue on disk.
        server.proc.terminate()
        server.proc.wait(timeout=15)
        self.assertEqual(queue("release", "--all"),
                         (0, "1 entries released (no server is running: due when one starts)"))
        self.assertEqual(held(), {"gone.test": False})
        self.assertEqual(queue("hold", "--domain", "gone.test"), (0, "1 entries held (no server is running)"))
        self.assertEqual(held(), {"gone.test": True})
        self.assertEqual(queue("release", "--domain", "gone.test")[0], 0)
        server.kill_and_restart()
        got = receiver.wait_for(2, timeout=10)
        self.assertEqual(sorted(m[1][0] for m in got), ["r@gone.test", "r@late.test"])
        wait_until(lambda: not queue_entries(server), what="an empty queue")

    def test_an_entry_held_during_its_attempt_is_held_after_it(self):
        dns, port, server = late_relay(retry="5s")
        self.addCleanup(dns.stop)
        self.addCleanup(server.stop)
        attempts = []

        def slow_refusal(address, attempt):
            attempts.append(address)
            time.sleep(3)
            return "451 4.2.1 Busy, try later"

        receiver = SmtpReceiver("127.0.0.8", port, slow_refusal, name="mx.late.test")
        self.addCleanup(receiver.stop)
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
            s.sendmail("a@sender.test", ["r@late.test"], message("held in flight"))
        wait_until(lambda: attempts, what="the attempt")
        self.assertEqual(waraka_queue(server, "hold", "--domain", "late.test"),
                         (0, "0 entries held, 1 more after their attempt in progress"))
        server.wait_for_log(r"queue entry held after its attempt")
        entry, = queue_entries(server)
        self.assertEqual((entry["held"], entry["attempts"]), (True, 1))
        time.sleep(6)  # past the 5 s retry: a held entry is not attempted
        self.assertEqual(len(attempts), 1)
        # Deleted while held: a release does not bring it back.
        self.assertEqual(waraka_queue(server, "delete", entry["id"])[0], 0)
        self.assertEqual(waraka_queue(server, "release", "--all"), (0, "0 entries released, due now"))
        server.wait_for_log(r"queue entry deleted while waiting; dropped")
        self.assertEqual(queue_entries(server), [])


class CrashTest(unittest.TestCase):
    def test_kill_9_with_500_queued_loses_nothing(self):
        count = 500
        dns = dnsmasq(RECORDS)
        self.addCleanup(dns.stop)
        port = free_port("127.0.0.6")
        receiver = SmtpReceiver("127.0.0.6", port, delay=0.02, name="mx.bulk.test")
        self.addCleanup(receiver.stop)
        server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"],
                        setup=relay_setup(dns.port, port, extra="per_domain = 2\n"))
        self.addCleanup(server.stop)
        acked = []
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
            for n in range(count):
                mid = f"<bulk-{n}@sender.test>"
                s.sendmail("sender@sender.test", [f"r{n % 7}@bulk.test"], message(f"bulk {n}", mid))
                acked.append(mid)
        before = len(receiver.received())
        server.kill_and_restart()
        self.assertLess(before, count, "the kill came while mail was still queued")
        server.wait_for_log(r"outbound queue recovered")

        def ids():
            return [line.split(b": ", 1)[1].strip().decode()
                    for _, _, data in receiver.received()
                    for line in data.split(b"\r\n") if line.startswith(b"Message-ID: ")]

        wait_until(lambda: set(ids()) >= set(acked), timeout=120, what="every acknowledged message")
        wait_until(lambda: not queue_entries(server), what="an empty queue")
        got = ids()
        duplicates = len(got) - len(set(got))
        print(f"\n  kill -9: {count} acknowledged, {before} delivered before the kill, "
              f"{len(set(got))} delivered in all, {duplicates} duplicated, "
              f"{len(set(acked) - set(got))} lost", flush=True)
        self.assertEqual(set(acked) - set(got), set())
        self.assertLessEqual(duplicates, 2, "only deliveries in flight at the kill may repeat")
        self.assertEqual(receiver.most_open, 2, "per_domain = 2 bounds the sessions to one domain")


if __name__ == "__main__":
    unittest.main()
