"""bounce end to end: null-sender mail sent with smtplib to a real waraka,
checked against the backscatter rules."""

import email
import smtplib
import unittest

from harness import Waraka


def bounce(quoted_message_id, return_path=None):
    """A DSN-shaped bounce quoting the header of the message it is about."""
    trace = f"Return-Path: {return_path}\r\n" if return_path else ""
    return (f"{trace}From: MAILER-DAEMON@mx.other.test\r\nTo: someone@example.com\r\nSubject: Undelivered Mail\r\n"
            "Message-ID: <dsn.1@mx.other.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
            "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
            "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"From: someone@example.com\r\nSubject: hello\r\nMessage-ID: {quoted_message_id}\r\n"
            "--B--\r\n").encode()


class BounceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        def setup(server):
            server.edit("config/host_list", lambda t: t + "example.com\n")
            server.edit("config/bounce.bad_rcpt", lambda t: t + "noreply@example.com\n")

        # bounce after the recipient check: its checks run at rcpt-ok, data and data-post.
        cls.server = Waraka(["rcpt_to.in_host_list", "bounce", "queue/maildir"], setup=setup)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def transaction(self, sender, recipients, raw):
        """RCPT codes, then the DATA reply (code, text), then what was stored."""
        before = set(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="mx.other.test", timeout=30) as s:
            s.ehlo()
            s.mail(sender)
            codes = [s.rcpt(r)[0] for r in recipients]
            try:
                reply = s.data(raw) if 250 in codes else (0, b"")
            except smtplib.SMTPDataError as refused:  # refused at DATA, before the 354
                reply = (refused.smtp_code, refused.smtp_error)
        stored = [email.message_from_bytes(p.read_bytes()) for p in self.server.maildir() if p not in before]
        return codes, (reply[0], reply[1].decode()), stored

    def test_a_bounce_to_an_address_that_sends_no_mail_is_refused(self):
        codes, _, _ = self.transaction("", ["noreply@example.com"], bounce("<m1@example.com>"))
        self.assertEqual(codes, [550])
        codes, reply, _ = self.transaction("a@other.test", ["noreply@example.com"], b"Subject: hi\r\n\r\nhi\r\n")
        self.assertEqual((codes, reply[0]), ([250], 250), "ordinary mail to it is fine")

    def test_a_bounce_to_several_recipients_is_refused_at_data(self):
        _, reply, stored = self.transaction("", ["a@example.com", "b@example.com"], bounce("<m2@example.com>"))
        self.assertEqual(reply, (550, "5.7.1 Invalid bounce: a bounce has a single recipient"))
        self.assertEqual(stored, [])

    def test_a_bounce_with_a_return_path_is_refused(self):
        _, reply, _ = self.transaction("", ["a@example.com"], bounce("<m3@example.com>", return_path="<x@y.test>"))
        self.assertEqual(reply, (550, "5.7.1 Invalid bounce: its Return-Path is not <>"))

    def test_a_bounce_about_our_mail_passes_and_one_about_someone_elses_is_marked(self):
        _, reply, stored = self.transaction("", ["a@example.com"], bounce("<m4@example.com>"))
        self.assertEqual(reply[0], 250)
        self.assertIsNone(stored[0]["X-Bounce-Validation"])
        _, reply, stored = self.transaction("", ["a@example.com"], bounce("<spam.1@forged.test>"))
        self.assertEqual(reply[0], 250, "non_local_msgid only tags by default")
        self.assertEqual(stored[0]["X-Bounce-Validation"], "fail (non_local_msgid)")
        self.server.wait_for_log(r"bounce marked: it quotes no Message-ID of ours \(forged\.test\)")

    def test_mail_with_a_sender_is_left_alone(self):
        codes, reply, stored = self.transaction("a@other.test", ["a@example.com", "b@example.com"],
                                                bounce("<x@forged.test>", return_path="<a@other.test>"))
        self.assertEqual((codes, reply[0]), ([250, 250], 250))
        self.assertIsNone(stored[0]["X-Bounce-Validation"])


if __name__ == "__main__":
    unittest.main()
