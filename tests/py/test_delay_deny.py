"""`delay_deny` end to end: `dns-list` refuses 127.0.0.2 (listed in a real
dnsmasq's bl.test); the refusal waits until a recipient is accepted, and a
client that logs in first passes it (its relayed mail is kept in the
outbound queue, whose smarthost nothing answers)."""

import json
import smtplib
import unittest

from harness import Waraka, dnsmasq, flat_file_users, waraka_queue
from test_dns_plugins import RECORDS, dns_list_settings, dns_setup

LISTED = "5.7.1 127.0.0.2 is listed in bl.test: Listed for testing"
MESSAGE = b"From: bob@example.com\r\nTo: rcpt@example.com\r\nSubject: roaming\r\n\r\nbody\r\n"


class DelayDenyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = dnsmasq(RECORDS)
        cls.addClassCleanup(cls.dns.stop)

        def setup(server):
            dns_setup(cls.dns.port)(server)
            server.edit("config/dns-list.ini", dns_list_settings(check_private="true", zones="bl.test"))
            flat_file_users(server, {"bob": "bob-pw"})
            server.hold_outbound()

        cls.server = Waraka(["dns-list", "auth/flat_file", "delay_deny", "rcpt_to.in_host_list", "queue/maildir"],
                            setup=setup)
        cls.addClassCleanup(cls.server.stop)

    def client(self, ip):
        return smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30,
                            source_address=(ip, 0))

    def test_a_listed_client_is_refused_at_each_recipient_with_the_lists_reply(self):
        with self.client("127.0.0.2") as s:
            self.assertEqual(s.ehlo()[0], 250, "greeted: the refusal waits")
            self.assertEqual(s.mail("a@sender.test")[0], 250)
            for recipient in ("rcpt@example.com", "other@example.com"):
                code, text = s.rcpt(recipient)
                self.assertEqual((code, text.decode()), (554, LISTED), recipient)
            self.assertEqual(s.rcpt("nobody@elsewhere.test")[0], 550, "an unknown recipient is refused as unknown")
        self.server.wait_for_log(r"delay_deny: other@example\.com refused for dns-list's refusal at connect")

    def test_a_client_that_logs_in_passes_and_its_message_says_what_it_passed(self):
        with self.client("127.0.0.2") as s:
            s.ehlo()
            s.login("bob", "bob-pw")
            s.mail("bob@example.com")
            self.assertEqual(s.rcpt("rcpt@example.com")[0], 250)
            code, text = s.data(MESSAGE)
        self.assertEqual(code, 250, text)
        self.server.wait_for_log(r"delay_deny: rcpt@example\.com: 1 kept refusals passed over \(relaying\)")
        (entry,) = [json.loads(p.read_text()) for p in (self.server.dir / "queue/outbound").glob("*.json")]
        code, shown = waraka_queue(self.server, "show", entry["id"])
        self.assertEqual(code, 0, shown)
        self.assertIn("X-Waraka-Fail-Pre: dns-list", shown)

    def test_a_clean_client_is_not_touched(self):
        with self.client("127.0.0.3") as s:
            s.ehlo()
            self.assertEqual(s.sendmail("a@sender.test", ["rcpt@example.com"], MESSAGE), {})

    def test_an_excluded_plugins_refusal_stands(self):
        settings = (self.server.dir / "config/delay_deny.ini").read_text()
        self.addCleanup(self.server.edit, "config/delay_deny.ini", lambda _: settings)
        self.server.set_settings("delay_deny.ini", excluded_plugins="dns-list")
        with self.assertRaises(smtplib.SMTPConnectError) as refused:
            self.client("127.0.0.2")
        self.assertEqual((refused.exception.smtp_code, refused.exception.smtp_error.decode()), (554, LISTED))


if __name__ == "__main__":
    unittest.main()
