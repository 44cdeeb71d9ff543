"""queue/smtp_forward end to end: a real waraka forwards accepted mail to
scripted SMTP servers on loopback addresses, answering the client only after
the next hop did; and to a second waraka by host name over STARTTLS."""

import smtplib
import unittest

from harness import SmtpReceiver, Waraka, dnsmasq, enable_tls, free_port, waraka_queue
from test_outbound import message, queue_entries, scripted, wait_until


def forward_setup(port, extra_ini="", extra_toml=""):
    def setup(server):
        server.edit("config/host_list", lambda t: t + "dest.test\nrouted.test\ndown.test\n")
        server.edit("config/queue/smtp_forward.ini", lambda t: t.replace("host = 127.0.0.1", "host = 127.0.0.11")
                    .replace("port = 2526", f"port = {port}") + (
            f"\n[routed.test]\nhost = 127.0.0.12\n\n[down.test]\nhost = 127.0.0.13\n{extra_ini}"))
        server.edit("waraka.toml", lambda t: t + extra_toml)

    return setup


class SmtpForwardTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        port = free_port("127.0.0.11", "127.0.0.12")
        cls.default = SmtpReceiver("127.0.0.11", port, scripted, name="hop.test")
        cls.addClassCleanup(cls.default.stop)
        cls.routed = SmtpReceiver("127.0.0.12", port, scripted, name="routed.hop.test")
        cls.addClassCleanup(cls.routed.stop)
        cls.server = Waraka(["rcpt_to.in_host_list", "queue/smtp_forward"],
                            setup=forward_setup(port, extra_ini="\n[Moved@Dest.test]\nhost = 127.0.0.12\n"))
        cls.addClassCleanup(cls.server.stop)

    def send(self, recipients, subject, sender="a@sender.test"):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            return s.sendmail(sender, recipients, message(subject))

    def with_subject(self, receiver, subject):
        return [m for m in receiver.received() if f"Subject: {subject}\r\n".encode() in m[2]]

    def test_forwarded_by_domain_before_the_client_hears_250(self):
        self.assertEqual(self.send(["one@dest.test", "two@routed.test", "three@dest.test"], "split"), {})
        # The 250 came after the next hops answered: the copies are there already.
        self.assertEqual([m[1] for m in self.with_subject(self.default, "split")], [["one@dest.test", "three@dest.test"]])
        self.assertEqual([m[1] for m in self.with_subject(self.routed, "split")], [["two@routed.test"]])
        sender, _, data = self.with_subject(self.default, "split")[0]
        self.assertEqual(sender, "a@sender.test")
        self.assertTrue(data.startswith(b"Received: from client.test"))

    def test_one_mailbox_of_a_domain_has_its_own_next_hop(self):
        self.assertEqual(self.send(["stays@dest.test", "moved@dest.test"], "one moved"), {})
        self.assertEqual([m[1] for m in self.with_subject(self.default, "one moved")], [["stays@dest.test"]])
        self.assertEqual([m[1] for m in self.with_subject(self.routed, "one moved")], [["moved@dest.test"]],
                         "the [address] section wins over the domain's (any case)")

    def test_a_4xx_at_the_next_hop_is_a_4xx_to_the_client_and_the_retry_goes_through(self):
        with self.assertRaises(smtplib.SMTPDataError) as cm:
            self.send(["temp-f@dest.test"], "again")
        self.assertEqual((cm.exception.smtp_code, cm.exception.smtp_error[:5]), (451, b"4.4.1"))
        self.assertEqual(self.send(["temp-f@dest.test"], "again"), {})
        self.assertEqual(len(self.with_subject(self.default, "again")), 1)

    def test_a_5xx_at_the_next_hop_reaches_the_sender(self):
        with self.assertRaises(smtplib.SMTPDataError) as cm:
            self.send(["bad-f@dest.test"], "rejected")
        self.assertEqual(cm.exception.smtp_code, 550)
        self.assertIn(b"<bad-f@dest.test>: 550 5.1.1 No such user here", cm.exception.smtp_error)

    def test_a_next_hop_that_is_down_is_a_temporary_failure(self):
        with self.assertRaises(smtplib.SMTPDataError) as cm:
            self.send(["x@down.test"], "down")
        self.assertEqual(cm.exception.smtp_code, 451)
        self.server.wait_for_log(r"127\.0\.0\.13")


class RecipientVerificationTest(unittest.TestCase):
    """verify_recipients: the next hop is asked for each local recipient at
    RCPT, its answers kept in a kv store."""

    @classmethod
    def setUpClass(cls):
        port = free_port("127.0.0.11", "127.0.0.12")
        cls.hop = SmtpReceiver("127.0.0.11", port, scripted, name="hop.test")
        cls.addClassCleanup(cls.hop.stop)

        def setup(server):
            forward_setup(port)(server)
            server.edit("config/queue/smtp_forward.ini", lambda t: t.replace(
                "verify_recipients = false", "verify_recipients = true").replace(
                "# verify_cache = default", "verify_cache = default"))
            server.edit("waraka.toml", lambda t: t.replace(
                '[plugin."queue/smtp_forward"]\ngrants = ["forward"]',
                '[plugin."queue/smtp_forward"]\ngrants = ["forward", "kv:default"]'))

        cls.server = Waraka(["queue/smtp_forward", "rcpt_to.in_host_list"], setup=setup)
        cls.addClassCleanup(cls.server.stop)

    def rcpt(self, address):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            s.mail("a@sender.test")
            return s.rcpt(address)

    def asked(self, address):
        with self.hop.lock:
            return sum(1 for c in self.hop.commands if c.upper() == f"RCPT TO:<{address}>".upper())

    def test_an_unknown_mailbox_is_refused_at_rcpt_and_the_answer_is_kept(self):
        code, text = self.rcpt("bad-v@dest.test")
        self.assertEqual((code, text[:5]), (550, b"5.1.1"), text)
        self.assertIn(b"<bad-v@dest.test> does not exist", text)
        self.assertEqual(self.asked("bad-v@dest.test"), 1)
        with self.hop.lock:
            self.assertIn("MAIL FROM:<>", self.hop.commands, "the probe's sender is the null sender")
        self.assertEqual(self.rcpt("bad-v@DEST.test")[0], 550)
        self.assertEqual(self.asked("bad-v@dest.test"), 1, "the second refusal came from the cache")
        self.assertEqual([m for m in self.hop.received() if "bad-v@dest.test" in m[1]], [], "a probe sends no message")

    def test_an_existing_mailbox_is_asked_for_once_and_its_mail_forwarded(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            self.assertEqual(s.sendmail("a@sender.test", ["good-v@dest.test"], message("verified")), {})
            self.assertEqual(s.sendmail("a@sender.test", ["good-v@dest.test"], message("verified again")), {})
        # One probe, then the two messages.
        self.assertEqual(self.asked("good-v@dest.test"), 3)
        self.assertEqual(len([m for m in self.hop.received() if m[1] == ["good-v@dest.test"]]), 2)

    def test_a_temporary_answer_is_a_temporary_refusal_and_is_not_kept(self):
        code, text = self.rcpt("temp-v@dest.test")
        self.assertEqual((code, text[:5]), (450, b"4.2.1"), text)
        self.assertEqual(self.rcpt("temp-v@dest.test")[0], 250, "asked again: the next hop now takes it")
        self.assertEqual(self.asked("temp-v@dest.test"), 2)

    def test_a_next_hop_that_cannot_be_asked_is_never_an_accept(self):
        code, text = self.rcpt("x@down.test")
        self.assertEqual((code, text[:5]), (451, b"4.4.3"), text)
        self.server.wait_for_log(r"cannot verify <x@down\.test>")

    def test_other_domains_are_left_to_the_next_plugin(self):
        self.assertEqual(self.rcpt("someone@elsewhere.test")[0], 550)
        self.assertEqual(self.asked("someone@elsewhere.test"), 0)


class DurableForwardTest(unittest.TestCase):
    """durable = true: mail for a next hop that is down is accepted into the
    outbound queue and forwarded once the hop is back."""

    def test_a_next_hop_that_is_down_gets_the_mail_when_it_is_back(self):
        port = free_port("127.0.0.13", "127.0.0.11")

        def setup(server):
            forward_setup(port)(server)
            server.edit("config/queue/smtp_forward.ini", lambda t: t.replace("durable = false", "durable = true"))
            server.edit("waraka.toml", lambda t: t.replace(
                '[plugin."queue/smtp_forward"]\ngrants = ["forward"]',
                '[plugin."queue/smtp_forward"]\ngrants = ["forward", "outbound-queue"]'))

        server = Waraka(["rcpt_to.in_host_list", "queue/smtp_forward"], setup=setup)
        self.addCleanup(server.stop)
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
            self.assertEqual(s.sendmail("a@sender.test", ["x@down.test"], message("stored")), {},
                             "250 although the next hop is down")

        def deferred():
            return [e for e in queue_entries(server) if e["attempts"] >= 1]

        (entry,) = wait_until(deferred, what="the queued copy's first attempt")
        self.assertEqual((entry["hop"]["host"], entry["hop"]["port"]), ("127.0.0.13", port))
        self.assertIn("127.0.0.13", entry["last_error"])
        hop = SmtpReceiver("127.0.0.13", port, scripted, name="down.hop.test")
        self.addCleanup(hop.stop)
        self.assertEqual(waraka_queue(server, "flush")[0], 0)
        (got,) = hop.wait_for(1, timeout=20)
        self.assertEqual(got[:2], ("a@sender.test", ["x@down.test"]))
        wait_until(lambda: not queue_entries(server), what="an empty queue")


class ForwardByNameTest(unittest.TestCase):
    def test_a_next_hop_by_name_over_starttls_and_without_the_grant(self):
        dns = dnsmasq(["--local=/test/", "--host-record=mailstore.test,127.0.0.14"])
        self.addCleanup(dns.stop)
        port = free_port("127.0.0.14")

        def store_setup(server):
            enable_tls(server, "mailstore.test")
            server.edit("config/host_list", lambda t: t + "dest.test\n")

        store = Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=store_setup, host="127.0.0.14", port=port)
        self.addCleanup(store.stop)

        def front_setup(extra=""):
            def setup(server):
                server.edit("config/host_list", lambda t: t + "dest.test\n")
                server.edit("config/queue/smtp_forward.ini", lambda t: t.replace("host = 127.0.0.1", "host = mailstore.test")
                            .replace("port = 2526", f"port = {store.port}"))
                server.edit("waraka.toml", lambda t: t + f'\n[dns]\nservers = ["127.0.0.1:{dns.port}"]\n' + extra)
                if extra:
                    server.edit("waraka.toml", lambda t: t.replace('[plugin."queue/smtp_forward"]\ngrants = ["forward"]', ""))

            return setup

        front = Waraka(["rcpt_to.in_host_list", "queue/smtp_forward"], setup=front_setup())
        self.addCleanup(front.stop)
        ungranted = Waraka(["rcpt_to.in_host_list", "queue/smtp_forward"], setup=front_setup(extra="\n"))
        self.addCleanup(ungranted.stop)
        with smtplib.SMTP("127.0.0.1", front.port, local_hostname="client.test", timeout=30) as s:
            self.assertEqual(s.sendmail("a@sender.test", ["box@dest.test"], message("by name")), {})
        stored = wait_until(store.maildir, what="the mail store's maildir")[0].read_bytes()
        self.assertIn(b"Subject: by name\r\n", stored)
        self.assertIn(b"(using TLSv1.3 with cipher", stored)
        with smtplib.SMTP("127.0.0.1", ungranted.port, local_hostname="client.test", timeout=30) as s:
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                s.sendmail("a@sender.test", ["box@dest.test"], message("no grant"))
        self.assertEqual(cm.exception.smtp_code, 451, "no forward grant: never a 250")


if __name__ == "__main__":
    unittest.main()
