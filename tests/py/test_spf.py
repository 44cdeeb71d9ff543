"""spf end to end: SPF records served by a real dnsmasq (and a forward to a
dead server for DNS failures), clients speaking smtplib to a real waraka,
the results read back from replies, the log and the stored message."""

import email
import smtplib
import unittest

from harness import Waraka, dnsmasq, free_port
from test_auth_results import txt
from test_dns_plugins import dns_setup

RECORDS = [
    "--local=/test/",  # names not listed here are NXDOMAIN
    txt("pass.test", "v=spf1 ip4:127.0.0.0/8 -all"),
    txt("fail.test", "v=spf1 ip4:192.0.2.1 -all"),
    txt("explained.test", "v=spf1 ip4:192.0.2.1 exp=why.explained.test -all"),
    txt("why.explained.test", "Mail for %{d} leaves from 192.0.2.1 only"),
    txt("soft.test", "v=spf1 ip4:192.0.2.1 ~all"),
    txt("broken.test", "v=spf1 redirect=nospf.test"),  # to a domain without SPF: permerror (RFC 7208 §6.1)
    txt("nospf.test", "just some text"),
    txt("helo-fail.test", "v=spf1 ip4:192.0.2.1 -all"),
    txt("helo-pass.test", "v=spf1 ip4:127.0.0.1 -all"),
]


class SpfTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        dead = free_port()  # nothing answers there: lookups forwarded to it fail
        cls.dns = dnsmasq(RECORDS + [f"--server=/servfail.test/127.0.0.1#{dead}"])

        def setup(server):
            dns_setup(cls.dns.port)(server)
            server.set_settings("spf.ini", check_private="true")

        cls.server = Waraka(["spf", "rcpt_to.in_host_list", "queue/maildir"], setup=setup)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.dns.stop()

    def mail(self, sender, helo="client.test", server=None):
        with smtplib.SMTP("127.0.0.1", (server or self.server).port, local_hostname=helo, timeout=30) as s:
            s.ehlo()
            code, text = s.mail(sender)
            return code, text.decode()

    def stored(self, sender, helo="client.test"):
        """Sends a message from `sender`: the stored copy, parsed."""
        before = set(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname=helo, timeout=30) as s:
            s.ehlo()
            self.assertEqual(s.mail(sender)[0], 250)
            self.assertEqual(s.rcpt("rcpt@example.com")[0], 250)
            self.assertEqual(s.data(b"Subject: spf\r\n\r\nHi.\r\n")[0], 250)
        added = [p for p in self.server.maildir() if p not in before]
        self.assertEqual(len(added), 1)
        return email.message_from_bytes(added[0].read_bytes())

    def assertRefused(self, sender, code, text, helo="client.test"):
        got = self.mail(sender, helo)
        self.assertEqual(got, (code, text), sender)

    def test_a_permitted_client_is_accepted_and_the_result_recorded(self):
        stored = self.stored("a@pass.test")
        received = " ".join(stored["Received-SPF"].split())
        self.assertTrue(received.startswith("pass ("), received)
        self.assertIn("domain of a@pass.test designates 127.0.0.1 as permitted sender", received)
        self.assertIn('client-ip=127.0.0.1; envelope-from="a@pass.test"; helo=client.test; identity=mailfrom;', received)

    def test_a_hard_fail_is_refused_at_mail_from(self):
        self.assertRefused("a@fail.test", 550,
                           "5.7.23 SPF fail: sender domain fail.test does not designate 127.0.0.1 as a permitted sender")
        self.server.wait_for_log(r"<a@fail\.test> from 127\.0\.0\.1: SPF helo=none mail=fail \(fail\.test\): refused")

    def test_the_domains_explanation_is_given_with_the_refusal(self):
        self.assertRefused("a@explained.test", 550,
                           "5.7.23 SPF fail: sender domain explained.test does not designate 127.0.0.1 as a "
                           "permitted sender (Mail for explained.test leaves from 192.0.2.1 only)")

    def test_softfail_none_and_permerror_pass_unless_configured(self):
        for sender, result in (("a@soft.test", "softfail"), ("a@nospf.test", "none"), ("a@nowhere.test", "none"),
                               ("a@broken.test", "permerror")):
            received = self.stored(sender)["Received-SPF"]
            self.assertTrue(received.startswith(result + " "), f"{sender}: {received}")
        self.server.set_settings("spf.ini", reject_mail_softfail="true", reject_mail_none="true",
                                 reject_mail_permerror="true")
        try:
            self.assertRefused("a@soft.test", 550, "5.7.23 SPF softfail: sender domain soft.test does not designate "
                                                   "127.0.0.1 as a permitted sender")
            self.assertRefused("a@nospf.test", 550, "5.7.23 sender domain nospf.test publishes no SPF record")
            self.assertRefused("a@broken.test", 550,
                               "5.7.24 SPF record of sender domain broken.test is broken (permerror)")
        finally:
            self.server.set_settings("spf.ini", reject_mail_softfail="false", reject_mail_none="false",
                                     reject_mail_permerror="false")

    def test_a_dns_failure_defers_instead_of_accepting(self):
        self.assertRefused("a@x.servfail.test", 451,
                           "4.7.24 SPF record of sender domain x.servfail.test could not be checked, try again later")

    def test_the_null_sender_is_judged_by_the_helo_name(self):
        self.assertRefused("", 550, "5.7.23 SPF fail: sender domain helo-fail.test does not designate 127.0.0.1 "
                                    "as a permitted sender", helo="helo-fail.test")
        stored = self.stored("", helo="helo-pass.test")
        received = " ".join(stored["Received-SPF"].split())
        self.assertTrue(received.startswith("pass ("), received)
        self.assertIn("identity=helo;", received)
        self.assertEqual(self.mail("", helo="[127.0.0.1]")[0], 250, "an address literal is not checked")

    def test_a_failing_helo_name_is_refused_only_when_configured(self):
        self.assertEqual(self.mail("a@pass.test", helo="helo-fail.test")[0], 250)
        self.server.set_settings("spf.ini", reject_helo_fail="true")
        try:
            self.assertRefused("a@pass.test", 550, "5.7.23 SPF fail: HELO name helo-fail.test does not designate "
                                                   "127.0.0.1 as a permitted sender", helo="helo-fail.test")
            self.assertEqual(self.mail("a@pass.test", helo="helo-pass.test")[0], 250)
        finally:
            self.server.set_settings("spf.ini", reject_helo_fail="false")

    def test_private_clients_are_skipped_unless_checked(self):
        self.server.set_settings("spf.ini", check_private="false")
        try:
            stored = self.stored("a@fail.test")
        finally:
            self.server.set_settings("spf.ini", check_private="true")
        self.assertIsNone(stored["Received-SPF"], "an unchecked client gets no result")

    def test_without_the_grant_mail_is_deferred_not_accepted(self):
        def setup(server):
            server.edit("waraka.toml", lambda t: t.replace('[plugin.spf]\ngrants = ["authentication"]', ""))
            server.set_settings("spf.ini", check_private="true")

        server = Waraka(["spf", "rcpt_to.in_host_list", "queue/maildir"], setup=setup)
        try:
            self.assertEqual(self.mail("a@pass.test", server=server)[0], 451)
            server.wait_for_log(r"SPF check of the sender domain failed: Error::NotGranted")
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main()
