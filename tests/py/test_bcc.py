"""`bcc` end to end: every message, a sender's and a recipient's get their
blind copies — in the maildir for a local archive, through the outbound
queue to an MX served by dnsmasq for another domain's — and the copies'
recipients are not shown to the original ones."""

import smtplib
import unittest

from test_outbound import message, mx_and_relay, wait_until

SETTINGS = """
always = archive@example.com
sender.boss@sender.test = audit@example.com
sender.partner.test = partners@example.com
recipient.legal@example.com = vault@dest.test
recipient.example.org = org-archive@example.com
"""


class BccTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mx, cls.server = mx_and_relay(cls, ["rcpt_to.in_host_list", "bcc", "queue/maildir"],
                                          lambda server: server.edit("config/bcc.ini", lambda t: t + SETTINGS))

    def send(self, sender, recipients, subject):
        before = set(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            self.assertEqual(s.sendmail(sender, recipients, message(subject)), {})
        return {p.parent.parent.name: p.read_bytes() for p in self.server.maildir() if p not in before}

    def test_every_message_is_archived_once(self):
        stored = self.send("a@sender.test", ["bob@example.com", "carol@example.com"], "archived")
        self.assertEqual(sorted(stored), ["archive", "bob", "carol"], "one archive copy for two recipients")
        self.assertNotIn(b"archive@example.com", stored["bob"], "a blind copy")

    def test_a_senders_and_a_recipients_copies(self):
        self.assertEqual(sorted(self.send("boss@sender.test", ["bob@example.com"], "from the boss")),
                         ["archive", "audit", "bob"])
        stored = self.send("a@sender.test", ["legal@example.com"], "for legal")
        self.assertEqual(sorted(stored), ["archive", "legal"])
        got = wait_until(lambda: [m for m in self.mx.received() if b"Subject: for legal" in m[2]],
                         what="the copy for another domain at its MX")
        self.assertEqual(got[0][1], ["vault@dest.test"])
        self.server.wait_for_log(r"bcc: vault@dest\.test gets a copy \(for <legal@example\.com>\)")

    def test_a_senders_and_a_recipients_domain_have_their_copies(self):
        self.assertEqual(sorted(self.send("anyone@partner.test", ["bob@example.com"], "from a partner")),
                         ["archive", "bob", "partners"])
        self.server.edit("config/host_list", lambda t: t + "example.org\n")
        stored = self.send("a@sender.test", ["zed@example.org"], "to the org")
        self.assertEqual(sorted(stored), ["archive", "org-archive", "zed"])


if __name__ == "__main__":
    unittest.main()
