"""spamassassin end to end: a real SpamAssassin spamd, started here with its
packaged rules, judges what smtplib sends to a real waraka; the host speaks
spamd's protocol, the plugin marks, tags or refuses by score."""

import email
import unittest

from harness import free_port, prometheus, spamd
from test_rspamd import instance, message

# GTUBE scores 1000; the packaged rules move it a few points either way
# (ALL_TRUSTED, the Date header's age against today), so any score near it.
GTUBE_SCORE = r"(?:9[5-9]\d|10[0-4]\d)\.\d"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def gtube(subject):
    return message(subject).replace(b"Lunch tomorrow?", GTUBE.encode())


class SpamAssassinTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.spamd = spamd(user_prefs={"rcpt@example.com": "required_score 42\n"})
        cls.metrics_port = free_port()
        cls.server = instance(f"127.0.0.1:{cls.spamd.port}", cls.metrics_port, scanner="spamd")
        cls.down = instance(f"127.0.0.1:{free_port()}", scanner="spamd")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.down.stop()
        cls.spamd.stop()

    def send(self, raw, server=None):
        code, text, stored = (server or self.server).deliver(raw)
        return code, text, [email.message_from_bytes(data) for data in stored]

    def test_spam_is_marked_with_spamassassins_fields_by_default(self):
        code, _, stored = self.send(gtube("mark me").replace(b"\r\n\r\n", b"\r\nX-Spam-Flag: NO\r\n\r\n", 1))
        self.assertEqual(code, 250)
        self.assertEqual(stored[0].get_all("X-Spam-Flag"), ["YES"], "the client's copy is replaced")
        self.assertRegex(stored[0]["X-Spam-Status"], rf"^Yes, score={GTUBE_SCORE} required=5\.0 tests=.*\bGTUBE\b")
        self.assertEqual(stored[0]["X-Spam-Level"], "*" * 50)
        self.assertEqual(stored[0]["Subject"], "mark me", "no subject threshold set")
        self.server.wait_for_log(rf"Yes, score={GTUBE_SCORE} required=5\.0 tests=.*GTUBE")
        self.assertGreaterEqual(prometheus(self.metrics_port).get('waraka_spam_checks_total{action="add header"}'), 1)

    def test_clean_mail_is_marked_no(self):
        code, _, stored = self.send(message("lunch"))
        self.assertEqual(code, 250)
        self.assertEqual(stored[0]["X-Spam-Flag"], "NO")
        self.assertRegex(stored[0]["X-Spam-Status"], r"^No, score=-?\d+\.\d required=5\.0 tests=")

    def test_spamd_user_names_whose_preferences_apply(self):
        _, _, stored = self.send(message("spamd's own"))
        self.assertRegex(stored[0]["X-Spam-Status"], r" required=5\.0 ")
        for user in ("first-recipient", "rcpt@example.com"):
            # Set before the server starts: no cached copy of the file to outrun.
            server = instance(f"127.0.0.1:{self.spamd.port}", scanner="spamd", settings=f"spamd_user = {user}\n")
            try:
                code, _, stored = self.send(message(f"as {user}"), server=server)
            finally:
                server.stop()
            self.assertEqual(code, 250)
            self.assertRegex(stored[0]["X-Spam-Status"], r" required=42\.0 ", f"{user}: the recipient's required_score")

    def test_thresholds_refuse_and_tag_by_score(self):
        self.server.edit("config/spamassassin.ini",
                         lambda t: t + "# by the test\nreject_threshold = 2000\nmunge_subject_threshold = 5\n")
        try:
            code, _, stored = self.send(gtube("tag me"))
            self.assertEqual(code, 250)
            self.assertEqual(stored[0]["Subject"], "*** SPAM *** tag me")
            self.server.edit("config/spamassassin.ini", lambda t: t.replace("reject_threshold = 2000", "reject_threshold = 10"))
            code, text, stored = self.send(gtube("refuse me"))
            self.assertEqual(code, 550)
            self.assertRegex(text, rf"^5\.7\.1 Message rejected as spam \(score {GTUBE_SCORE}, limit 10\.0\)$")
            self.assertEqual(stored, [])
        finally:
            self.server.edit("config/spamassassin.ini", lambda t: t.split("# by the test\n")[0])

    def test_an_unreachable_spamd_lets_mail_through_unscanned_or_tempfails(self):
        code, _, stored = self.send(gtube("unscanned"), server=self.down)
        self.assertEqual(code, 250)
        self.assertIsNone(stored[0]["X-Spam-Flag"])
        self.down.wait_for_log(r"scan failed: .*spamd \(127\.0\.0\.1:\d+\)")
        self.down.set_settings("spamassassin.ini", on_error="tempfail")
        try:
            code, text, stored = self.send(gtube("later"), server=self.down)
        finally:
            self.down.set_settings("spamassassin.ini", on_error="continue")
        self.assertEqual((code, text, stored), (451, "4.3.0 Unable to scan the message for spam now, try later", []))


if __name__ == "__main__":
    unittest.main()
