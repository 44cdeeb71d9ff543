"""`batv` end to end: a real waraka relays a local user's mail through its
outbound queue to an MX served by dnsmasq, from a `prvs=` sender whose hash
the test checks with Python's own HMAC-SHA1; bounces come back from another
loopback address (not relaying) to good, forged, expired and missing tags."""

import email
import hmac
import smtplib
import time
import unittest

from harness import wait_until
from test_outbound import message, mx_and_relay

SECRET = "batv test secret"
BOUNCER = "127.0.0.3"  # not in relay.acl_allow: an outside server


def tag(local, domain, day, key=0, secret=SECRET):
    """`prvs=KDDDSSSSSS=local@domain`, as the draft has it."""
    stamp = f"{key}{day % 1000:03d}"
    digest = hmac.new(secret.encode(), f"{stamp}{local}@{domain}".encode(), "sha1").hexdigest()[:6]
    return f"prvs={stamp}{digest}={local}@{domain}"


def today():
    return int(time.time()) // 86400


class BatvTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        def setup(server):
            server.edit("config/batv.ini", lambda t: t.replace(
                "# key.0 = change-me-to-a-long-random-string", f"key.0 = {SECRET}"))

        cls.mx, cls.server = mx_and_relay(cls, ["relay", "batv", "rcpt_to.in_host_list", "queue/maildir"], setup)

    def relay(self, sender, subject):
        """Sends from a relaying client; the MAIL FROM the MX saw."""
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            self.assertEqual(s.sendmail(sender, ["bob@dest.test"], message(subject)), {})
        got = wait_until(lambda: [m for m in self.mx.received() if f"Subject: {subject}\r\n".encode() in m[2]],
                         what="delivery to the MX")
        return got[0][0]

    def bounce(self, recipient, sender=""):
        """Offers a message to `recipient` from an outside server: the RCPT
        reply, and the stored copy if it was accepted."""
        before = set(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="mx.dest.test", timeout=30,
                          source_address=(BOUNCER, 0)) as s:
            s.ehlo()
            self.assertEqual(s.mail(sender)[0], 250)
            code, text = s.rcpt(recipient)
            if code != 250:
                return code, text.decode(), None
            self.assertEqual(s.data(b"Subject: Undelivered Mail\r\n\r\nIt bounced.\r\n")[0], 250)
        (stored,) = [p for p in self.server.maildir() if p not in before]
        return code, text.decode(), email.message_from_bytes(stored.read_bytes())

    def test_mail_leaves_tagged_and_its_bounce_comes_back_to_the_user(self):
        sender = self.relay("alice@example.com", "tagged")
        self.assertEqual(sender, tag("alice", "example.com", today() + 7), "the draft's tag, for key 0 and 7 days")
        code, _, stored = self.bounce(sender)
        self.assertEqual(code, 250)
        self.assertEqual(stored["Delivered-To"], "alice@example.com", "the tag was taken off")
        self.assertIsNone(stored["X-Bounce-Validation"])
        self.server.wait_for_log(r"batv: <prvs=0\d{3}[0-9a-f]{6}=alice@example\.com> is a good tag of <alice@example\.com>")

    def test_other_domains_senders_leave_untagged(self):
        self.assertEqual(self.relay("carol@elsewhere.test", "untagged"), "carol@elsewhere.test")

    def test_forged_and_expired_tags_are_refused_for_bounces(self):
        forged = tag("alice", "example.com", today() + 7, secret="a spammer's guess")
        code, text, _ = self.bounce(forged)
        self.assertEqual((code, text), (550, "5.7.1 Invalid bounce: the address tag is not one of ours"))
        expired = tag("alice", "example.com", today() - 1)
        code, text, _ = self.bounce(expired)
        self.assertEqual((code, text), (550, "5.7.1 Invalid bounce: the address tag has expired"))
        # A person replying late to the return path is no bounce.
        code, _, stored = self.bounce(expired, sender="dave@dest.test")
        self.assertEqual((code, stored["Delivered-To"]), (250, "alice@example.com"))

    def test_a_new_signing_key_keeps_the_old_ones_tags_good(self):
        old = self.relay("alice@example.com", "before rotation")
        self.server.edit("config/batv.ini", lambda t: t + "key.1 = the next secret\n")
        self.server.set_settings("batv.ini", sign_with="1")
        try:
            new = self.relay("alice@example.com", "after rotation")
            self.assertEqual(new, tag("alice", "example.com", today() + 7, key=1, secret="the next secret"))
            for sender in (old, new):
                code, _, stored = self.bounce(sender)
                self.assertEqual((code, stored["Delivered-To"]), (250, "alice@example.com"), sender)
        finally:
            self.server.set_settings("batv.ini", sign_with="0")

    def test_an_untagged_bounce_is_marked_or_refused(self):
        code, _, stored = self.bounce("alice@example.com")
        self.assertEqual((code, stored["X-Bounce-Validation"]), (250, "fail (batv)"))
        self.server.set_settings("batv.ini", untagged_bounces="reject")
        try:
            code, text, _ = self.bounce("alice@example.com")
            self.assertEqual(code, 550, text)
            self.assertEqual(self.bounce("alice@example.com", sender="dave@dest.test")[0], 250,
                             "mail with a sender needs no tag")
        finally:
            self.server.set_settings("batv.ini", untagged_bounces="tag")


if __name__ == "__main__":
    unittest.main()
