"""End-to-end tests with Python's smtplib against a real waraka process."""

import smtplib
import time
import unittest
from email.message import EmailMessage

from harness import Waraka


class SmtplibTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Waraka(["rcpt_to.disposable", "rcpt_to.in_host_list", "queue/maildir"])

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def smtp(self):
        return smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="py.test", timeout=30)

    def test_send_message_and_find_it_in_the_maildir(self):
        msg = EmailMessage()
        msg["From"] = "sender@py.test"
        msg["To"] = "alice@example.com"
        msg["Subject"] = "smtplib"
        msg.set_content(".starts with a dot\nsecond line\n")
        before = len(self.server.maildir())
        with self.smtp() as s:
            refused = s.send_message(msg)
        self.assertEqual(refused, {})
        files = self.server.maildir()
        self.assertEqual(len(files), before + 1)
        stored = max(files, key=lambda p: p.stat().st_mtime).read_bytes()
        self.assertIn(b"\r\n.starts with a dot\r\n", stored)
        self.assertIn(b"Delivered-To: alice@example.com\r\n", stored)

    def test_the_greeting_says_what_banner_says(self):
        self.assertRegex(self.greeting(), r"^220 \S+ ESMTP Waraka ready$")
        self.server.edit("waraka.toml", lambda t: t.replace("[smtp]\n", '[smtp]\nbanner = "ESMTP"\n', 1))
        self.addCleanup(self.server.reload)
        self.addCleanup(self.server.edit, "waraka.toml", lambda t: t.replace('banner = "ESMTP"\n', "", 1))
        self.server.reload()
        self.assertRegex(self.greeting(), r"^220 \S+ ESMTP$", "the software's name hidden, the host first")

    def test_harakas_config_me_names_the_server(self):
        """An instance carried over from Haraka keeps its name in config/me."""
        def setup(server):
            (server.dir / "config/me").write_text("# this server\nmx.migrated.test\n")

        server = Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=setup)
        self.addCleanup(server.stop)
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="py.test", timeout=30) as s:
            self.assertEqual(s.ehlo()[1].split()[0], b"mx.migrated.test")
        server.edit("waraka.toml", lambda t: t.replace('# hostname = "mx.example.com"', 'hostname = "mx.set.test"', 1))
        server.reload()
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="py.test", timeout=30) as s:
            self.assertEqual(s.ehlo()[1].split()[0], b"mx.set.test", "[smtp] hostname wins")

    def greeting(self):
        s = smtplib.SMTP(timeout=30)
        self.addCleanup(s.close)
        code, text = s.connect("127.0.0.1", self.server.port)
        return f"{code} {text.decode()}"

    def test_unknown_domain_is_refused_with_5_1_1(self):
        with self.smtp() as s:
            s.ehlo()
            s.mail("sender@py.test")
            code, text = s.rcpt("bob@not-local.test")
        self.assertEqual(code, 550)
        self.assertTrue(text.startswith(b"5.1.1"), text)

    def test_smtputf8_addresses(self):
        with self.smtp() as s:
            s.ehlo()
            self.assertTrue(s.has_extn("smtputf8"))
            code, _ = s.mail("sender@py.test")
            self.assertEqual(code, 250)
            s.command_encoding = "utf-8"  # a UTF-8 address without SMTPUTF8 on MAIL
            code, text = s.rcpt("jösé@example.com")
            self.assertEqual(code, 553, text)
            s.rset()
            refused = s.sendmail("sender@py.test", ["jösé@example.com"], "Subject: ü\r\n\r\nutf8\r\n".encode(),
                                 mail_options=["SMTPUTF8"])
            self.assertEqual(refused, {})

    def test_expired_disposable_address(self):
        with self.smtp() as s:
            with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
                s.sendmail("sender@py.test", ["me-20000101@example.com"], b"Subject: x\r\n\r\nx\r\n")
        code, text = cm.exception.recipients["me-20000101@example.com"]
        self.assertEqual((code, text), (550, b"5.1.1 Expired email address"))

    def test_an_idle_server_does_not_rescan_its_plugins(self):
        # Reading plugin files must not wake the watcher (it once looped on its own reads).
        time.sleep(1.5)
        start = len(self.server.log)
        time.sleep(1.5)
        rescans = [line for line in self.server.log[start:] if "rescan done" in line]
        self.assertEqual(rescans, [])


if __name__ == "__main__":
    unittest.main()
