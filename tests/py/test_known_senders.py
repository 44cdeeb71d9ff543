"""`known-senders` end to end, with `karma` scoring it: a user who logs in
writes to partner.test (the message waits in the outbound queue, whose
smarthost nothing answers); mail from partner.test back, proven by SPF
against a real dnsmasq's records, is marked and rewarded; mail from a
stranger, or forged in the partner's name, is not."""

import email
import smtplib
import unittest

from harness import Waraka, dnsmasq, flat_file_users
from test_dns_plugins import dns_setup

RECORDS = [
    "--local=/test/",
    # partner.test and stranger.test send from 127.0.0.5 only.
    "--txt-record=partner.test,v=spf1 ip4:127.0.0.5 -all",
    "--txt-record=stranger.test,v=spf1 ip4:127.0.0.5 -all",
]


class KnownSendersTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = dnsmasq(RECORDS)
        cls.addClassCleanup(cls.dns.stop)

        def setup(server):
            dns_setup(cls.dns.port)(server)
            flat_file_users(server, {"bob@example.com": "bob-pw"})
            server.hold_outbound()
            server.set_settings("karma.ini", check_private="true")

        cls.server = Waraka(["auth/flat_file", "known-senders", "rcpt_to.in_host_list", "karma", "queue/maildir"],
                            setup=setup)
        cls.addClassCleanup(cls.server.stop)
        with smtplib.SMTP("127.0.0.1", cls.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            s.login("bob@example.com", "bob-pw")
            s.sendmail("bob@example.com", ["friend@partner.test"], b"Subject: hello\r\n\r\nhi\r\n")

    def karma_from(self, ip, sender):
        """Sends a message from `sender` at `ip` to bob@example.com: its X-Waraka-Karma field."""
        before = set(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="mx.client.test", timeout=30,
                          source_address=(ip, 0)) as s:
            s.sendmail(sender, ["bob@example.com"], f"From: {sender}\r\nSubject: re\r\n\r\nreply\r\n".encode())
        (stored,) = [p for p in self.server.maildir() if p not in before]
        return email.message_from_bytes(stored.read_bytes())["X-Waraka-Karma"]

    def test_mail_back_from_a_domain_users_write_to_is_marked(self):
        self.assertEqual(self.karma_from("127.0.0.5", "friend@partner.test"), "score=3; pass=known-senders")
        self.server.wait_for_log(r"known-senders: partner\.test is written to by a local domain")

    def test_a_stranger_is_not(self):
        self.assertEqual(self.karma_from("127.0.0.5", "someone@stranger.test"), "score=0")

    def test_a_forger_naming_the_partner_is_not(self):
        self.assertEqual(self.karma_from("127.0.0.6", "friend@partner.test"), "score=0", "SPF fails from .6")


if __name__ == "__main__":
    unittest.main()
