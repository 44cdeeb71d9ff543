"""mail_from.auth_match end to end: users of auth/flat_file authenticate
with smtplib to a real waraka and may send only as the addresses they own,
in the envelope and in From:; clients without AUTH are not checked."""

import smtplib
import unittest

from harness import Waraka, flat_file_users


def setup(server):
    flat_file_users(server, {"alice@example.com": "alice-pw", "bob": "bob-pw", "nobody": "nobody-pw"})
    server.edit("config/mail_from.auth_match.map", lambda t: t + "bob: bob@example.org, @shared.example\n")


def message(sender_header):
    return f"From: {sender_header}\r\nTo: rcpt@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"


class AuthMatchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Waraka(["auth/flat_file", "mail_from.auth_match", "rcpt_to.in_host_list", "queue/maildir"],
                            setup=setup)
        cls.addClassCleanup(cls.server.stop)

    def client(self, user=None, password=None):
        s = smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30)
        s.ehlo()
        if user:
            s.login(user, password)
        return s

    def mail(self, user, password, sender):
        with self.client(user, password) as s:
            return s.mail(sender)

    def test_the_envelope_sender_must_be_owned(self):
        self.assertEqual(self.mail("alice@example.com", "alice-pw", "Alice@Example.com")[0], 250)
        self.assertEqual(self.mail("alice@example.com", "alice-pw", "mallory@example.com"),
                         (553, b"5.7.1 Sender address <mallory@example.com> is not owned by user alice@example.com"))
        self.assertEqual(self.mail("bob", "bob-pw", "bob@example.org")[0], 250)
        self.assertEqual(self.mail("bob", "bob-pw", "anyone@shared.example")[0], 250)
        self.assertEqual(self.mail("bob", "bob-pw", "alice@example.com")[0], 553)
        self.assertEqual(self.mail("nobody", "nobody-pw", "nobody@example.com")[0], 553, "a bare name owns nothing")
        self.assertEqual(self.mail("bob", "bob-pw", "")[0], 250, "the null sender is allowed")
        self.server.wait_for_log(r"user bob may not send as <alice@example\.com>")

    def test_the_from_field_must_be_owned_too(self):
        with self.client("bob", "bob-pw") as s:
            self.assertEqual(s.sendmail("bob@example.org", ["rcpt@example.com"], message('"Bob" <bob@example.org>')), {})
            with self.assertRaises(smtplib.SMTPDataError) as refused:
                s.sendmail("bob@example.org", ["rcpt@example.com"], message("The CEO <ceo@example.com>"))
            self.assertEqual((refused.exception.smtp_code, refused.exception.smtp_error),
                             (550, b"5.7.1 From: address ceo@example.com is not owned by user bob"))
            with self.assertRaises(smtplib.SMTPDataError):
                s.sendmail("bob@example.org", ["rcpt@example.com"],
                           message('"Doe, Jane" <jane@shared.example>, ceo@example.com'))

    def test_clients_without_auth_are_not_checked(self):
        with self.client() as s:
            self.assertEqual(s.sendmail("ceo@example.com", ["rcpt@example.com"], message("ceo@example.com")), {})

    def test_the_map_applies_without_a_restart(self):
        self.assertEqual(self.mail("bob", "bob-pw", "bob@new.example")[0], 553)
        self.server.edit("config/mail_from.auth_match.map", lambda t: t + "bob: @new.example\n")
        try:
            self.assertEqual(self.mail("bob", "bob-pw", "bob@new.example")[0], 250)
        finally:
            self.server.edit("config/mail_from.auth_match.map", lambda t: t.replace("bob: @new.example\n", ""))


if __name__ == "__main__":
    unittest.main()
