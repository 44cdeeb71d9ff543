"""End-to-end tests with Python's smtplib against a real waraka process."""

import os
import pathlib
import re
import smtplib
import subprocess
import tempfile
import threading
import unittest
from email.message import EmailMessage

BIN = os.environ.get("WARAKA_BIN") or str(
    pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/waraka-target")) / "debug/waraka"
)


class Waraka:
    """`waraka init` + `waraka run --listen 127.0.0.1:0`; the port comes from the log."""

    def __init__(self, plugins):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = pathlib.Path(self.tmp.name) / "i"
        subprocess.run([BIN, "init", str(self.dir), "--plugins", ",".join(plugins)], check=True, capture_output=True)
        self.proc = subprocess.Popen(
            [BIN, "run", "--config", str(self.dir), "--listen", "127.0.0.1:0"],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"},
        )
        self.port = None
        for line in self.proc.stderr:
            match = re.search(r"address=127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
        if self.port is None:
            raise RuntimeError("waraka did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=15)
        self.tmp.cleanup()

    def maildir(self):
        return sorted(p for p in (self.dir / "maildir").rglob("*") if p.is_file())


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


if __name__ == "__main__":
    unittest.main()
