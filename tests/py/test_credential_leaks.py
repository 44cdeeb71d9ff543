"""`prevent_credential_leaks` end to end: a user who logs in with smtplib
and sends a message holding their own name and password gets it refused;
other messages of theirs, and other clients' messages, pass."""

import smtplib
import unittest

from harness import Waraka, flat_file_users


def setup(server):
    flat_file_users(server, {"alice@example.com": "Tr0ub4dor&3"})
    server.hold_outbound()


def message(body):
    return f"From: alice@example.com\r\nTo: help@phish.test\r\nSubject: my account\r\n\r\n{body}\r\n".encode()


class CredentialLeakTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Waraka(["prevent_credential_leaks", "auth/flat_file", "rcpt_to.in_host_list", "queue/maildir"],
                            setup=setup)
        cls.addClassCleanup(cls.server.stop)

    def send(self, body, login=True):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            if login:
                s.login("alice@example.com", "Tr0ub4dor&3")
            s.mail("alice@example.com")
            s.rcpt("help@phish.test" if login else "rcpt@example.com")
            code, text = s.data(message(body))
            return code, text.decode()

    def test_a_user_sending_their_own_password_is_stopped(self):
        code, text = self.send("Hello, my login is alice and my password is 'Tr0ub4dor&3'.")
        self.assertEqual((code, text[:6]), (550, "5.7.0 "))
        self.assertIn("contains your password", text)
        self.server.wait_for_log(r"alice@example\.com sent their own password; refused")

    def test_other_mail_passes(self):
        self.assertEqual(self.send("Hello, alice here: see you at Tr0ub4dor tomorrow.")[0], 250,
                         "part of the password is not the password")
        self.assertEqual(self.send("my password is Tr0ub4dor&3", login=False)[0], 250,
                         "an unauthenticated client has no password here")


if __name__ == "__main__":
    unittest.main()
