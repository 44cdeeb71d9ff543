"""disclaimer: a footer at the end of users' outgoing mail, added by the
host's mime.add-banner. Messages relayed by a real waraka reach a receiver
standing for the smarthost; Python's email parser reads the parts back,
and dkimpy checks that dkim_sign (after it in the chain) signed the
message with the footer."""

import email
import email.policy
import smtplib
import unittest

import dkim

from harness import SmtpReceiver, Waraka, free_port, wait_until
from test_dkim_sign import waraka_key

FOOTER = "Confidential: if this reached you by mistake, tell the sender.\nExample Ltd, 1 Main St."

MULTIPART = (
    "From: Alice <alice@sender.test>\r\nTo: bob@dest.test\r\nSubject: {subject}\r\n"
    "Message-ID: <{subject}@sender.test>\r\nDate: Fri, 04 Dec 2026 08:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
    "--outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n"
    "--inner\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    "Hi Bob =E2=80=94 the report.\r\n"
    "--inner\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    "PGh0bWw+PGJvZHk+PHA+SGkgQm9iPC9wPjwvYm9keT48L2h0bWw+\r\n"
    "--inner--\r\n"
    "--outer\r\nContent-Type: application/pdf; name=report.pdf\r\n"
    "Content-Disposition: attachment; filename=report.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    "JVBERi0xLjQKJcOkw7zDtsOfCg==\r\n--outer--\r\n")

LATIN1 = (b"From: alice@sender.test\r\nTo: bob@dest.test\r\nSubject: latin\r\nMessage-ID: <latin@sender.test>\r\n"
          b"Date: Fri, 04 Dec 2026 08:00:00 +0000\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
          b"Content-Transfer-Encoding: 8bit\r\n\r\nCaf\xe9 \xe0 midi.\r\n")


class DisclaimerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.smarthost = SmtpReceiver("127.0.0.1", free_port())
        cls.records = {}

        def setup(server):
            server.edit("config/relay.acl_allow", lambda t: t + "127.0.0.1/32\n")
            server.smarthost(cls.smarthost.server.server_address[1])
            server.edit("config/disclaimer.txt", lambda _: FOOTER + "\n")
            server.set_settings("disclaimer.ini", sender_domains="sender.test")
            cls.records.update([waraka_key(server.dir, "sender.test")])

        try:
            cls.server = Waraka(["relay", "disclaimer", "dkim_sign", "rcpt_to.in_host_list", "queue/maildir"],
                                setup=setup)
        except BaseException:
            cls.smarthost.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.smarthost.stop()

    def dns_txt(self, name, timeout=5):
        record = self.records.get(name.decode().rstrip("."))
        return record.encode() if record else None

    def relay(self, sender, raw, marker, source="127.0.0.1"):
        """Sends `raw` from `source` and returns the bytes the smarthost got
        (the message whose Message-ID holds `marker`)."""
        with smtplib.SMTP("127.0.0.1", self.server.port, source_address=(source, 0), timeout=30) as s:
            s.sendmail(sender, ["bob@dest.test"], raw)

        def delivered():
            return next((m[2] for m in self.smarthost.messages if marker.encode() in m[2]), None)

        wait_until(delivered, what="the message at the smarthost")
        return delivered()

    def test_text_and_html_parts_get_it_signed_attachments_do_not(self):
        data = self.relay("alice@sender.test", MULTIPART.format(subject="multi"), "<multi@")
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        plain = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
        html = parsed.get_body(("html",)).get_content().replace("\r\n", "\n")
        self.assertEqual(plain, "Hi Bob \u2014 the report.\n" + FOOTER + "\n")
        self.assertEqual(html, "<html><body><p>Hi Bob</p><P>" + FOOTER.replace("\n", "<br/>\n") + "</P>"
                               "</body></html>")
        attachment = next(parsed.iter_attachments())
        self.assertEqual(attachment.get_content(), b"%PDF-1.4\n%\xc3\xa4\xc3\xbc\xc3\xb6\xc3\x9f\n")
        self.assertTrue(dkim.verify(data, dnsfunc=self.dns_txt), "signed after the footer was added")

    def test_a_latin1_message_is_written_again_in_utf8(self):
        data = self.relay("alice@sender.test", LATIN1, "<latin@")
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(parsed["MIME-Version"], "1.0")
        self.assertEqual(parsed.get_content_charset(), "utf-8")
        self.assertEqual(parsed["Content-Transfer-Encoding"], "quoted-printable")
        self.assertEqual(parsed.get_content().replace("\r\n", "\n"), "Caf\u00e9 \u00e0 midi.\n" + FOOTER + "\n")
        self.assertTrue(dkim.verify(data, dnsfunc=self.dns_txt))

    def test_other_senders_and_inbound_mail_are_left_alone(self):
        data = self.relay("carol@other.test", MULTIPART.format(subject="other"), "<other@")
        self.assertNotIn(b"Confidential", data)
        self.assertIn(b"Hi Bob =E2=80=94 the report.\r\n--inner", data, "not written again")
        with smtplib.SMTP("127.0.0.1", self.server.port, source_address=("127.0.0.2", 0), timeout=30) as s:
            s.sendmail("alice@sender.test", ["rcpt@example.com"], MULTIPART.format(subject="inbound"))
        stored = [p.read_bytes() for p in self.server.maildir() if b"<inbound@" in p.read_bytes()]
        self.assertEqual(len(stored), 1)
        self.assertNotIn(b"Confidential", stored[0], "relaying_only: mail from outside is left alone")


if __name__ == "__main__":
    unittest.main()
