"""`body_checks` end to end over smtplib: Postfix-style rules over body
lines refuse a message, log a line, hold a message in the quarantine, read
no further than the size limit, and — for a user's own mail only — keep a
project's name from leaving."""

import smtplib
import unittest

from harness import Waraka, flat_file_users, stopped_after_class

RULES = r"""
/^Claim your prize (\w+)/ REJECT No prizes here, $1
/^track me/ WARN tracking line
/^wire the money/ HOLD money wanted
/^Subject:.*forbidden/ REJECT not a body line
/^rewrite me/ REPLACE X: y
"""


def setup(server):
    server.edit("config/body_checks", lambda t: t + RULES)
    server.edit("config/body_checks.relaying", lambda t: t + "/NIGHTINGALE/ REJECT Nightingale stays in the house\n")
    server.edit("config/body_checks.ini", lambda t: t.replace("size_limit = 51200", "size_limit = 2000"))
    flat_file_users(server, {"bob": "bob-pw"})
    server.hold_outbound()


class BodyChecksTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = stopped_after_class(cls, Waraka(
            ["auth/flat_file", "rcpt_to.in_host_list", "body_checks", "queue/quarantine", "queue/maildir"],
            setup=setup))

    def send(self, body, subject="s", login=False):
        """DATA's reply and whether a copy was stored."""
        before = set(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            if login:
                s.login("bob", "bob-pw")
            s.mail("bob@example.com")
            s.rcpt("rcpt@example.com")
            code, text = s.data(f"Subject: {subject}\r\n\r\n{body}\r\n".encode())
        return code, text.decode(), bool(set(self.server.maildir()) - before)

    def test_a_matching_line_refuses_the_message(self):
        code, text, stored = self.send("Hello,\r\nClaim your prize today!\r\nBye")
        self.assertEqual((code, text, stored), (550, "5.7.1 No prizes here, today", False))
        self.server.wait_for_log(r"body_checks: refused for \"Claim your prize today!\"")

    def test_the_header_a_warning_and_lines_past_the_limit_pass(self):
        code, text, stored = self.send("track me please\r\nrewrite me", subject="forbidden")
        self.assertEqual((code, stored), (250, True), text)
        self.server.wait_for_log(r"body_checks: \"track me please\": tracking line")
        self.server.wait_for_log(r"body_checks: body_checks: \"/\^rewrite me/ REPLACE X: y\" ignored: .*cannot change a body")
        code, text, stored = self.send("x" * 1998 + "\r\nClaim your prize now")
        self.assertEqual((code, stored), (250, True), "the line starts past size_limit: " + text)

    def test_hold_keeps_the_message_in_the_quarantine(self):
        before = set((self.server.dir / "quarantine").rglob("*.eml"))
        code, text, stored = self.send("Please\r\nwire the money to me")
        self.assertEqual((code, stored), (250, False), text)
        (kept,) = [p for p in (self.server.dir / "quarantine").rglob("*.eml") if p not in before]
        self.assertIn(b"X-Quarantine-Reason: quarantine=body_checks: money wanted", kept.read_bytes())

    def test_a_users_own_mail_keeps_the_projects_name_in(self):
        self.assertEqual(self.send("about NIGHTINGALE")[0], 250, "inbound mail may name it")
        code, text, _ = self.send("the NIGHTINGALE plans", login=True)
        self.assertEqual((code, text), (550, "5.7.1 Nightingale stays in the house"))


if __name__ == "__main__":
    unittest.main()
