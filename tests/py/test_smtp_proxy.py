"""`queue/smtp_proxy` end to end: a second real waraka (with
`rcpt_to.in_host_list` and `queue/maildir`) is the next hop; the front
server, which has no recipient plugin of its own, plays each transaction
there while smtplib waits, and passes on its replies."""

import email
import re
import smtplib
import unittest

from harness import SmtpReceiver, Waraka, free_port, stopped_after_class, wait_until


def message(subject):
    return f"From: a@sender.test\r\nTo: ok@example.com\r\nSubject: {subject}\r\n\r\nHello.\r\n".encode()


class SmtpProxyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = stopped_after_class(cls, Waraka(["rcpt_to.in_host_list", "queue/maildir"]))

        def setup(server, port):
            server.edit("config/queue/smtp_proxy.ini", lambda t: t.replace(
                "port = 10025", f"port = {port}").replace("tls = opportunistic", "tls = never"))
            server.edit("config/bcc.ini", lambda t: t + "\nrecipient.copied@example.com = archive@example.com\n")

        cls.server = stopped_after_class(cls, Waraka(
            ["bcc", "queue/smtp_proxy"], setup=lambda s: setup(s, cls.upstream.port)))
        cls.down = stopped_after_class(cls, Waraka(["queue/smtp_proxy"], setup=lambda s: setup(s, free_port())))

    def client(self, server=None):
        client = smtplib.SMTP("127.0.0.1", (server or self.server).port, local_hostname="client.test", timeout=30)
        self.addCleanup(client.close)
        client.ehlo()
        return client

    def stored(self, subject):
        return wait_until(lambda: [email.message_from_bytes(p.read_bytes()) for p in self.upstream.maildir()
                                   if f"Subject: {subject}\r\n".encode() in p.read_bytes()],
                          what=f"{subject!r} at the next hop")

    def sessions_from_the_proxy(self):
        return sum(1 for line in self.upstream.log if re.search(r"connected peer=127\.0\.0\.1", line))

    def test_the_next_hops_replies_are_the_clients(self):
        s = self.client()
        before = self.sessions_from_the_proxy()
        self.assertEqual(s.mail("a@sender.test")[0], 250)
        self.assertEqual(s.rcpt("ok@example.com")[0], 250)
        self.assertEqual(s.rcpt("someone@elsewhere.test"), (550, b"5.1.1 I cannot deliver mail for <someone@elsewhere.test>"),
                         "the next hop's own refusal, code, status and text")
        self.upstream.wait_for_log(r"refused hook=rcpt .*code=550")
        self.server.wait_for_log(r"refused hook=rcpt plugin=\"queue/smtp_proxy\"")
        code, text = s.data(message("proxied"))
        self.assertEqual(code, 250)
        self.assertRegex(text.decode(), r"^2\.0\.0 Message queued as \S+", "the next hop's reply to the message")
        (stored,) = self.stored("proxied")
        self.assertEqual(stored["Delivered-To"], "ok@example.com")
        self.assertIn("(Waraka) with ESMTP", stored.get_all("Received")[1], "the front server's Received is there")
        # A second transaction on the same connection uses the same session there.
        self.assertEqual(s.sendmail("b@sender.test", ["ok@example.com"], message("second")), {})
        self.stored("second")
        self.assertEqual(self.sessions_from_the_proxy() - before, 1, "one session at the next hop per client")

    def test_a_reset_transaction_is_reset_there(self):
        s = self.client()
        s.mail("a@sender.test")
        s.rcpt("dropped@example.com")
        self.assertEqual(s.rset()[0], 250)
        self.assertEqual(s.sendmail("a@sender.test", ["kept@example.com"], message("after rset")), {})
        (stored,) = self.stored("after rset")
        self.assertEqual(stored["Delivered-To"], "kept@example.com")
        self.assertFalse([p for p in self.upstream.maildir() if b"dropped@example.com" in p.read_bytes()])

    def test_recipients_added_after_rcpt_are_played_again_at_the_end(self):
        s = self.client()
        self.assertEqual(s.sendmail("a@sender.test", ["copied@example.com"], message("with a copy")), {})
        stored = self.stored("with a copy")
        self.assertEqual(sorted(m["Delivered-To"] for m in stored), ["archive@example.com", "copied@example.com"],
                         "bcc's copy, added at rcpt-ok, reached the next hop with the message")

    def test_a_next_hop_that_is_down_defers(self):
        s = self.client(self.down)
        self.assertEqual(s.mail("a@sender.test"), (451, b"4.4.1 Next hop unavailable, try again later"))
        self.down.wait_for_log(r"queue/smtp_proxy: MAIL at the next hop failed")


class RelayingTest(unittest.TestCase):
    def test_users_mail_is_played_at_the_next_hop_only_when_asked(self):
        port = free_port()
        receiver = SmtpReceiver("127.0.0.1", port, name="next.test")
        self.addCleanup(receiver.stop)

        def setup(server):
            server.edit("config/relay.acl_allow", lambda t: t + "127.0.0.1/32\n")
            server.edit("config/queue/smtp_proxy.ini", lambda t: t.replace("port = 10025", f"port = {port}"))
            server.hold_outbound()

        server = Waraka(["relay", "queue/smtp_proxy"], setup=setup)
        self.addCleanup(server.stop)
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
            self.assertEqual(s.sendmail("user@example.com", ["far@elsewhere.test"], message("relayed, queued")), {})
        self.assertEqual(receiver.received(), [], "relaying = false: the outbound queue has it")
        self.assertTrue(list((server.dir / "queue/outbound").glob("*.json")))
        server.set_settings("queue/smtp_proxy.ini", relaying="true")
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            self.assertEqual(s.mail("user@example.com")[0], 250)
            self.assertEqual(s.rcpt("far@elsewhere.test")[0], 250)
            code, text = s.data(message("relayed, proxied"))
        self.assertEqual(code, 250)
        self.assertIn(b"2.0.0 Stored", text, "the next hop's reply")
        ((sender, recipients, _),) = receiver.received()
        self.assertEqual((sender, recipients), ("user@example.com", ["far@elsewhere.test"]))


class DsnTest(unittest.TestCase):
    def test_dsn_requests_go_on_to_a_next_hop_that_takes_them(self):
        port = free_port()
        receiver = SmtpReceiver("127.0.0.1", port, name="next.test", extensions=["DSN"])
        self.addCleanup(receiver.stop)
        server = Waraka(["queue/smtp_proxy"], setup=lambda s: s.edit(
            "config/queue/smtp_proxy.ini", lambda t: t.replace("port = 10025", f"port = {port}")))
        self.addCleanup(server.stop)
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            self.assertEqual(s.mail("a@sender.test", ["RET=HDRS", "ENVID=env1"])[0], 250)
            self.assertEqual(s.rcpt("r@example.com", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;r@example.com"])[0], 250)
            self.assertEqual(s.data(message("with dsn"))[0], 250)
        self.assertEqual(receiver.commands, ["MAIL FROM:<a@sender.test> RET=HDRS ENVID=env1",
                                             "RCPT TO:<r@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r@example.com"])
        self.assertEqual(len(receiver.received()), 1)


if __name__ == "__main__":
    unittest.main()
