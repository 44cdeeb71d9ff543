"""The `headers` plugin end to end: RFC 5322 §3.6 checks after DATA."""

import email.utils
import smtplib
import time
import unittest

from harness import Waraka


def message(*headers, body="body\r\n"):
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


NOW = email.utils.formatdate(time.time())
OLD = email.utils.formatdate(time.time() - 30 * 86400)


class HeadersTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Waraka(["headers", "rcpt_to.in_host_list", "queue/maildir"])

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def send(self, data):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="py.test", timeout=30) as s:
            try:
                return s.sendmail("sender@py.test", ["alice@example.com"], data), None
            except smtplib.SMTPDataError as e:
                return e.smtp_code, e.smtp_error.decode()

    def test_a_proper_message_is_stored(self):
        before = len(self.server.maildir())
        self.assertEqual(self.send(message(f"Date: {NOW}", "From: a@py.test", "Subject: fine")), ({}, None))
        self.assertEqual(len(self.server.maildir()), before + 1)

    def test_each_rule_refuses_with_5_6_0_and_its_reason(self):
        cases = [
            (message("From: a@py.test", "Subject: no date"), "5.6.0 Required header 'Date' missing"),
            (message(f"Date: {NOW}", "From: a@py.test", "Subject: one", "Subject: two"),
             "5.6.0 Only one Subject header allowed. See RFC 5322, Section 3.6"),
            (message("Date: sometime", "From: a@py.test"), '5.6.0 Invalid Date header "sometime"'),
            (message(f"Date: {OLD}", "From: a@py.test"), "5.6.0 Date header is 30 days old"),
        ]
        before = len(self.server.maildir())
        for data, reply in cases:
            with self.subTest(reply=reply):
                self.assertEqual(self.send(data), (550, reply))
        self.assertEqual(len(self.server.maildir()), before, "nothing refused was stored")

    def test_reject_false_only_logs(self):
        self.server.edit("config/headers.ini", lambda t: t.replace("reject = true", "reject = false"))
        try:
            self.assertEqual(self.send(message("From: a@py.test", "Subject: tolerated")), ({}, None))
            self.server.wait_for_log("header check failed: Required header 'Date' missing")
        finally:
            self.server.edit("config/headers.ini", lambda t: t.replace("reject = false", "reject = true"))


if __name__ == "__main__":
    unittest.main()
