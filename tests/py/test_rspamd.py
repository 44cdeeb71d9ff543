"""rspamd end to end: a real rspamd, started here with its packaged rules
and its GTUBE test patterns, judges what smtplib sends to a real waraka; the
host sends the message and envelope, the plugin acts on rspamd's action."""

import email
import unittest

from harness import Waraka, free_port, prometheus, rspamd

GTUBE = "JS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def message(subject, pattern=None, extra=""):
    """A message whose body holds rspamd's test pattern of kind `pattern`
    (X reject, Y add header, Z rewrite subject, A no action)."""
    body = f"{pattern}{GTUBE}" if pattern else "Lunch tomorrow?"
    return (f"From: a@sender.test\r\nTo: rcpt@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@sender.test>\r\nDate: Fri, 04 Dec 2026 08:00:00 +0000\r\n"
            f"{extra}\r\n{body}\r\n").encode()


def instance(address, metrics_port=None, scanner="rspamd", settings=""):
    """A server whose `[spamfilter]` names `scanner` (rspamd or spamd) at
    `address`, with the plugin for it in its chain and `settings` lines
    added to the plugin's config file before it starts."""
    plugin = {"rspamd": "rspamd", "spamd": "spamassassin"}[scanner]

    def setup(server):
        server.edit("waraka.toml", lambda t: t + f'\n[spamfilter]\n{scanner} = "{address}"\n')
        server.edit(f"config/{plugin}.ini", lambda t: t + settings)
        if metrics_port:
            server.enable_metrics(metrics_port)
        server.edit("config/host_list", lambda t: t + "example.com\n")

    return Waraka(["rcpt_to.in_host_list", plugin, "queue/maildir"], setup=setup)


class RspamdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rspamd = rspamd()
        cls.metrics_port = free_port()
        cls.server = instance(f"127.0.0.1:{cls.rspamd.port}", cls.metrics_port)
        cls.down = instance(f"127.0.0.1:{free_port()}")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.down.stop()
        cls.rspamd.stop()

    def send(self, raw, server=None):
        code, text, stored = (server or self.server).deliver(raw)
        return code, text, [email.message_from_bytes(data) for data in stored]

    def test_rspamds_reject_is_a_550_with_its_reason(self):
        code, text, stored = self.send(message("reject me", "X"))
        self.assertEqual((code, text), (550, "5.7.1 Gtube pattern"))
        self.assertEqual(stored, [])
        self.server.wait_for_log(r'action="reject" score=15\.00/15\.00 symbols=GTUBE')
        self.assertGreaterEqual(prometheus(self.metrics_port).get('waraka_spam_checks_total{action="reject"}'), 1)

    def test_add_header_marks_the_message_and_replaces_a_forged_status(self):
        code, _, stored = self.send(message("mark me", "Y", extra="X-Spam-Status: No, forged\r\n"))
        self.assertEqual(code, 250)
        self.assertEqual(stored[0]["X-Spam"], "Yes")
        self.assertEqual(stored[0].get_all("X-Spam-Status"), ['Yes, score=6.00 required=15.00 action="add header"'])

    def test_rewrite_subject_uses_rspamds_subject(self):
        code, _, stored = self.send(message("rewrite me", "Z"))
        self.assertEqual(code, 250)
        self.assertEqual(stored[0]["Subject"], "*** SPAM *** rewrite me")
        self.assertEqual(stored[0]["X-Spam"], "Yes")

    def test_no_action_passes_with_its_status(self):
        code, _, stored = self.send(message("fine", "A"))
        self.assertEqual(code, 250)
        self.assertIsNone(stored[0]["X-Spam"])
        self.assertTrue(stored[0]["X-Spam-Status"].startswith("No, score="), stored[0]["X-Spam-Status"])

    def test_an_unreachable_rspamd_lets_mail_through_unscanned_and_logged(self):
        code, _, stored = self.send(message("unscanned"), server=self.down)
        self.assertEqual(code, 250)
        self.assertIsNone(stored[0]["X-Spam-Status"])
        self.down.wait_for_log(r"scan failed")


if __name__ == "__main__":
    unittest.main()
