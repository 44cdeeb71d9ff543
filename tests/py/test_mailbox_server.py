"""The inbound chain of docs/mailbox-server.md end to end: a real Dovecot
(its LMTP Unix socket), a real spamd and a dnsmasq behind a real waraka with
the guide's plugins in the guide's order."""

import smtplib
import unittest

from harness import SmtpReceiver, Waraka, dnsmasq, dovecot, free_port, spamd, waraka_admin
from test_forwarding import srs0
from test_outbound import wait_until
from test_rspamd import message
from test_spamassassin import gtube
from test_uribl import mime_message

CHAIN = ["access", "dns-list", "helo.checks", "limit", "relay", "spf", "uribl", "mail_from.is_resolvable",
         "srs", "aliases", "queue/quarantine", "queue/lmtp", "rcpt_to.in_host_list", "headers", "spamassassin"]


class MailboxServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = dnsmasq(["--local=/test/", "--host-record=spam.test.dbl.test,127.0.1.2",
                           "--mx-host=elsewhere.test,mx.elsewhere.test,10",
                           "--host-record=mx.elsewhere.test,127.0.0.2"])
        cls.addClassCleanup(cls.dns.stop)
        port = free_port("127.0.0.2")
        cls.elsewhere = SmtpReceiver("127.0.0.2", port, name="mx.elsewhere.test")
        cls.addClassCleanup(cls.elsewhere.stop)
        cls.dovecot = dovecot({"alice@example.com": 0})
        cls.addClassCleanup(cls.dovecot.stop)
        cls.spamd = spamd()
        cls.addClassCleanup(cls.spamd.stop)
        socket = cls.dovecot.lmtp_socket()

        def setup(server):
            server.edit("waraka.toml", lambda t: t.replace(
                'grants = ["outbound-queue", "forward"]', f'grants = ["outbound-queue", "forward", "socket:{socket}"]')
                + f'\n[spamfilter]\nspamd = "127.0.0.1:{cls.spamd.port}"\n'
                + f'\n[dns]\nservers = ["127.0.0.1:{cls.dns.port}"]\ntimeout = "1s"\n'
                + f'\n[outbound]\nallow_local = true\nretry = "1h"\nport = {port}\n'
                + '\n[srs]\nsecrets = ["forwarding-test-secret"]\ndomain = "fwd.example.com"\n')
            server.edit("config/host_list", lambda t: t + "example.com\n")
            server.edit("config/aliases", lambda t: t + "team@example.com: alice@example.com, friend@elsewhere.test\n"
                        "ghost@example.com: nobody@example.com\n")
            server.edit("config/queue/lmtp.ini", lambda t: t + f"path = {socket}\n")
            server.set_settings("queue/quarantine.ini", note="spamassassin.spam")
            server.edit("config/uribl.ini", lambda t: t.replace("\nzones =\n", "\nzones = dbl.test\n"))

        cls.server = Waraka(CHAIN, setup=setup)
        cls.addClassCleanup(cls.server.stop)

    def inbox(self, subject):
        """alice's copies with `subject`, once Dovecot has stored one."""
        return wait_until(lambda: [c.read_bytes() for c in self.dovecot.mailbox("alice@example.com")
                                   if f"Subject: {subject}\n".encode() in c.read_bytes()], what=f"{subject!r}")

    def test_clean_mail_reaches_the_mailbox_marked_clean(self):
        code, _, _ = self.server.deliver(message("lunch"), recipient="alice@example.com")
        self.assertEqual(code, 250)
        copy = self.inbox("lunch")[0]
        self.assertIn(b"X-Spam-Flag: NO\n", copy)
        self.assertIn(b"with LMTP", copy, "delivered by Dovecot's LMTP service")

    def test_spam_is_quarantined_not_delivered_until_released(self):
        code, text, _ = self.server.deliver(gtube("win"), recipient="alice@example.com")
        self.assertRegex(f"{code} {text}", r"^250 2\.0\.0 Message quarantined as \S+$")
        kept = list((self.server.dir / "quarantine").rglob("*.eml"))
        self.assertEqual(len(kept), 1)
        self.assertIn(b"X-Envelope-To: <alice@example.com>", kept[0].read_bytes())
        self.assertFalse([c for c in self.dovecot.mailbox("alice@example.com") if b"Subject: win\n" in c.read_bytes()])
        code, out = waraka_admin(self.server, "quarantine", "release", kept[0].stem)
        self.assertEqual(code, 0, out)
        self.assertRegex(out, r": 250 2\.0\.0 ")
        (copy,) = self.inbox("win")
        self.assertIn(b"X-Spam-Flag: YES\n", copy, "delivered as judged, marked as spam")
        self.assertIn(b"with LMTP", copy, "through queue/lmtp and Dovecot's LMTP service")
        self.assertNotIn(b"X-Quarantine-Reason", copy)
        self.assertFalse(kept[0].exists())

    def test_an_unknown_mailbox_is_refused_before_the_message(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            self.assertEqual(s.mail("a@sender.test")[0], 250)
            self.assertEqual(s.rcpt("nobody@example.com"), (550, b"5.1.1 Mailbox <nobody@example.com> does not exist here"))

    def test_an_alias_reaches_the_local_mailbox_and_forwards_to_another_domain(self):
        code, _, _ = self.server.deliver(message("team news"), sender="bob@origin.test", recipient="team@example.com")
        self.assertEqual(code, 250)
        self.assertIn(b"X-Spam-Flag: NO\n", self.inbox("team news")[0])
        (sender, recipients), = wait_until(lambda: [(m[0], m[1]) for m in self.elsewhere.received()
                                                     if b"Subject: team news\r\n" in m[2]], what="the forwarded copy")
        self.assertEqual((sender, recipients), (srs0("bob", "origin.test"), ["friend@elsewhere.test"]))

    def test_an_alias_of_a_mailbox_dovecot_does_not_have_is_refused(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            self.assertEqual(s.mail("a@sender.test")[0], 250)
            self.assertEqual(s.rcpt("ghost@example.com")[0], 550, "the target is asked for, not the alias")

    def test_a_block_listed_link_is_refused(self):
        code, text, _ = self.server.deliver(mime_message("http://spam.test/"), recipient="alice@example.com")
        self.assertEqual((code, text), (550, "5.7.1 spam.test is listed in dbl.test"))


if __name__ == "__main__":
    unittest.main()
