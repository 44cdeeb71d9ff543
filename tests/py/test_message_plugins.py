"""`data.signatures` and `record_envelope_addresses` end to end over smtplib:
a signature is found in a base64-encoded body; the stored message carries
its envelope, and a client's own X-Envelope-To is replaced."""

import base64
import email
import smtplib
import unittest

from harness import Waraka, stopped_after_class


def setup(server):
    server.edit("config/data.signatures", lambda t: t + "cheap watches\n")


class MessagePluginsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = stopped_after_class(cls, Waraka(
            ["data.signatures", "record_envelope_addresses", "rcpt_to.in_host_list", "queue/maildir"], setup=setup))

    def send(self, message, recipients=("rcpt@example.com",)):
        before = set(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            s.mail("a@sender.test")
            for recipient in recipients:
                s.rcpt(recipient)
            code, text = s.data(message)
        stored = [email.message_from_bytes(p.read_bytes()) for p in self.server.maildir() if p not in before]
        return code, text.decode(), stored

    def test_a_signature_in_an_encoded_body_is_refused(self):
        body = base64.b64encode(b"Genuine CHEAP Watches, today only!\n").decode() + "\r\n"
        message = ("Subject: offer\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
                   f"Content-Transfer-Encoding: base64\r\n\r\n{body}").encode()
        code, text, stored = self.send(message)
        self.assertEqual((code, text), (554, "5.7.1 Message refused: it matches a known spam signature"))
        self.assertEqual(stored, [])
        self.server.wait_for_log(r"data\.signatures: the message holds \"cheap watches\"")

    def test_the_envelope_is_written_into_the_message(self):
        message = b"Subject: hi\r\nX-Envelope-To: <forged@example.com>\r\n\r\nhello\r\n"
        code, _, stored = self.send(message, ("rcpt@example.com", "other@example.com"))
        self.assertEqual(code, 250)
        for m in stored:
            self.assertEqual(m["X-Envelope-From"], "<a@sender.test>")
            self.assertEqual(m.get_all("X-Envelope-To"), ["<rcpt@example.com>,\r\n\t<other@example.com>"])


if __name__ == "__main__":
    unittest.main()
