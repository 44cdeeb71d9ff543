"""`header_checks` end to end over smtplib: Postfix-style rules refuse,
remove, rewrite and add header fields, hold a message in the quarantine,
and — for a user's own mail only — strip what their mail program says."""

import email
import json
import smtplib
import unittest

from harness import Waraka, flat_file_users, stopped_after_class, waraka_queue

RULES = r"""
/^Subject:.*lottery/ REJECT Lottery mail is not welcome
/^X-Mailer:/ IGNORE
/^Subject: (.*)/ REPLACE Subject: [EXT] ${1}
/^X-Spam-Flag: YES/ HOLD flagged upstream
/^X-Tag: (.*)/ PREPEND X-Seen-Tag: $1
/^X-Old: (.*)/ REPLACE X-New: $1
/^X-Bad:/ FROB
"""


def setup(server):
    server.edit("config/header_checks", lambda t: t + RULES)
    server.edit("config/header_checks.relaying",
                lambda t: t + "/^User-Agent:/ IGNORE\n/^Received: from .* with ESMTPS?A/ IGNORE\n")
    flat_file_users(server, {"bob": "bob-pw"})
    server.hold_outbound()


class HeaderChecksTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = stopped_after_class(cls, Waraka(
            ["auth/flat_file", "rcpt_to.in_host_list", "header_checks", "queue/quarantine", "queue/maildir"],
            setup=setup))

    def send(self, header, login=False):
        """DATA's reply and the stored copy (None when there is none)."""
        before = set(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            if login:
                s.login("bob", "bob-pw")
            s.mail("bob@example.com")
            s.rcpt("rcpt@example.com")
            code, text = s.data(f"{header}\r\n\r\nbody\r\n".encode())
        stored = [p for p in self.server.maildir() if p not in before]
        return code, text.decode(), email.message_from_bytes(stored[0].read_bytes()) if stored else None

    def test_a_matching_field_refuses_the_message(self):
        code, text, stored = self.send("Subject: You won the LOTTERY")
        self.assertEqual((code, text), (550, "5.7.1 Lottery mail is not welcome"))
        self.assertIsNone(stored)
        self.server.wait_for_log(r"header_checks: refused for \"Subject: You won the LOTTERY\"")

    def test_fields_are_removed_rewritten_and_added(self):
        code, text, stored = self.send(
            "Subject: hello\r\nX-Mailer: Mailer 1\r\nX-Tag: blue\r\nX-Old: was\r\nX-Mailer: Mailer 2\r\n"
            "User-Agent: Mutt")
        self.assertEqual(code, 250, text)
        self.assertEqual(stored.keys()[-5:], ["Subject", "X-Seen-Tag", "X-Tag", "X-New", "User-Agent"],
                         "replaced fields keep their place, prepended ones go just above theirs")
        self.assertEqual(stored["X-New"], "was")
        self.assertIsNone(stored["X-Mailer"], "both copies removed")
        self.assertEqual(stored.get_all("Subject"), ["[EXT] hello"])
        self.assertEqual((stored["X-Tag"], stored["X-Seen-Tag"]), ("blue", "blue"))
        self.assertEqual(stored["User-Agent"], "Mutt", "the relaying rules are not for inbound mail")
        self.server.wait_for_log(r"header_checks: header_checks: \"/\^X-Bad:/ FROB\" ignored: unknown action FROB")

    def test_hold_keeps_the_message_in_the_quarantine(self):
        before = set((self.server.dir / "quarantine").rglob("*.eml"))
        code, text, stored = self.send("Subject: s\r\nX-Spam-Flag: YES")
        self.assertEqual(code, 250, text)
        self.assertIsNone(stored, "kept aside, not delivered")
        (kept,) = [p for p in (self.server.dir / "quarantine").rglob("*.eml") if p not in before]
        self.assertIn(b"X-Quarantine-Reason: quarantine=header_checks: flagged upstream", kept.read_bytes())

    def test_a_users_own_mail_loses_what_its_mail_program_says(self):
        code, text, _ = self.send("Subject: from bob\r\nUser-Agent: Mutt/2.2", login=True)
        self.assertEqual(code, 250, text)
        entries = [json.loads(p.read_text()) for p in (self.server.dir / "queue/outbound").glob("*.json")]
        (entry,) = [e for e in entries if e["recipients"] == ["rcpt@example.com"]]
        code, shown = waraka_queue(self.server, "show", entry["id"])
        self.assertEqual(code, 0, shown)
        self.assertIn("Subject: [EXT] from bob", shown)
        self.assertNotIn("User-Agent", shown)
        self.assertNotIn("with ESMTPA", shown, "the hop of the user's own client is not told")


if __name__ == "__main__":
    unittest.main()
