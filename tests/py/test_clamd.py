"""clamd end to end: a real ClamAV daemon, started here with a signature of
our own (no downloads), scans what smtplib sends to a real waraka; the scan
is streamed by the host, and the plugin decides."""

import base64
import subprocess
import tempfile
import unittest

from harness import BIN, Waraka, clamd, free_port, prometheus

MARKER = b"WARAKA-TEST-VIRUS-7f3a9c"
SIGNATURE = "Waraka.Test.Virus"
FOUND = f"{SIGNATURE}.UNOFFICIAL"  # clamd's name for a signature outside its official databases


def message(subject, body):
    return (f"From: a@sender.test\r\nTo: rcpt@example.com\r\nSubject: {subject}\r\n\r\n".encode() + body + b"\r\n")


def with_attachment(subject, payload):
    """A multipart message whose attachment, base64-encoded, holds `payload`."""
    encoded = base64.b64encode(payload)
    return (f"From: a@sender.test\r\nTo: rcpt@example.com\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
            "--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n").encode() \
        + encoded + b"\r\n--B--\r\n"


def instance(clamd_address, metrics_port=None, **settings):
    """A waraka whose clamd plugin asks `clamd_address`, with `settings`
    replacing those of the shipped config/clamd.ini."""

    def setup(server):
        server.edit("waraka.toml", lambda t: t + f'\n[antivirus]\nclamd = "{clamd_address}"\n')
        if metrics_port:
            server.enable_metrics(metrics_port)
        server.edit("config/host_list", lambda t: t + "example.com\n")
        server.set_settings("clamd.ini", **settings)

    return Waraka(["rcpt_to.in_host_list", "clamd", "queue/maildir"], setup=setup)


class ClamdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.clamd = clamd([f"{SIGNATURE}:0:*:{MARKER.hex()}"])
        address = f"127.0.0.1:{cls.clamd.port}"
        cls.metrics_port = free_port()
        cls.server = instance(address, cls.metrics_port)
        cls.marking = instance(address, reject_virus="false", max_size=4000)
        cls.down = instance(f"127.0.0.1:{free_port()}")

    @classmethod
    def tearDownClass(cls):
        for server in (cls.server, cls.marking, cls.down):
            server.stop()
        cls.clamd.stop()

    def send(self, raw, server=None):
        return (server or self.server).deliver(raw)

    def test_a_clean_message_is_accepted(self):
        code, _, stored = self.send(message("clean", b"Nothing to see."))
        self.assertEqual(code, 250)
        self.assertEqual(len(stored), 1)
        self.assertNotIn(b"X-Virus", stored[0])

    def test_a_virus_in_the_body_or_an_encoded_attachment_is_refused(self):
        for case, raw in (("body", message("infected body", b"x " + MARKER + b" y")),
                          ("attachment", with_attachment("infected attachment", b"\x00\x01" + MARKER + b"\x02"))):
            with self.subTest(case):
                code, text, stored = self.send(raw)
                self.assertEqual((code, text), (554, f"5.7.0 Message is infected with {FOUND}"))
                self.assertEqual(stored, [], "nothing was delivered")
        self.assertNotIn(MARKER, base64.b64encode(b"\x00\x01" + MARKER + b"\x02"), "only a decoder finds it")
        self.server.wait_for_log(rf"virus found: {FOUND}")
        self.assertGreaterEqual(prometheus(self.metrics_port).get('waraka_antivirus_scans_total{result="infected"}'), 2)

    def test_with_reject_virus_off_the_message_is_marked_and_big_ones_skip_the_scan(self):
        code, _, stored = self.send(message("marked", MARKER), server=self.marking)
        self.assertEqual(code, 250)
        self.assertIn(f"X-Virus: {FOUND}\r\n".encode(), stored[0])
        code, _, stored = self.send(message("too big to scan", MARKER + b"\r\n" + b"z" * 5000), server=self.marking)
        self.assertEqual(code, 250)
        self.assertNotIn(b"X-Virus", stored[0], "over max_size: not scanned")
        self.marking.wait_for_log(r"not scanned: \d+ bytes is over max_size 4000")

    def test_an_unreachable_scanner_is_a_temporary_failure_never_an_accept(self):
        code, text, stored = self.send(message("scanner down", b"hello"), server=self.down)
        self.assertEqual((code, text[:6]), (451, "4.3.0 "))
        self.assertEqual(stored, [])
        self.down.wait_for_log(r"scan failed")

    def test_the_grant_needs_a_configured_scanner(self):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([BIN, "init", f"{tmp}/i", "--plugins", "clamd,queue/maildir"], check=True, capture_output=True)
            listed = subprocess.run([BIN, "plugin", "list", "--config", f"{tmp}/i"], capture_output=True, text=True)
        self.assertNotEqual(listed.returncode, 0)
        self.assertIn('grant "antivirus" needs [antivirus] clamd', listed.stderr)


if __name__ == "__main__":
    unittest.main()
