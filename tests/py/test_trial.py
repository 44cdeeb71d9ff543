"""`waraka plugin test` end to end: a core plugin's component, alone in an
SMTP session on standard input and output, with an instance's config."""

import subprocess
import tempfile
import unittest
from pathlib import Path

from harness import BIN, GUESTS


def trial(instance, wasm, name, lines, client="192.0.2.9"):
    """Runs the plugin on `lines`: (exit code, replies, log)."""
    done = subprocess.run([BIN, "plugin", "test", str(GUESTS / wasm), "--config", str(instance), "--name", name,
                           "--client", client], input="".join(f"{line}\n" for line in lines),
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


class TrialTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.instance = Path(cls.tmp.name) / "i"
        subprocess.run([BIN, "init", str(cls.instance)], check=True, capture_output=True)
        with open(cls.instance / "config/host_list", "a") as hosts:
            hosts.write("example.com\n")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_a_recipient_check_answers_each_rcpt_with_the_instance_config(self):
        code, replies, log = trial(self.instance, "rcpt_to_in_host_list.wasm", "rcpt_to.in_host_list", [
            "EHLO client.test", "MAIL FROM:<a@sender.test>", "RCPT TO:<x@example.com>", "RCPT TO:<x@elsewhere.test>",
            "QUIT"])
        self.assertEqual(code, 0, log)
        lines = replies.splitlines()
        self.assertRegex(lines[0], r"^220 \S+ ESMTP Waraka ready$")
        self.assertIn("Hello client.test [192.0.2.9]", lines[1], "the client given")
        self.assertEqual(lines[-4:], ["250 2.1.0 Sender <a@sender.test> OK", "250 2.1.5 Recipient <x@example.com> OK",
                                      "550 5.1.1 I cannot deliver mail for <x@elsewhere.test>",
                                      lines[-1]])
        self.assertRegex(lines[-1], r"^221 2\.0\.0 \S+ closing connection$")
        self.assertRegex(log, r"plugin loaded plugin=rcpt_to\.in_host_list")

    def test_a_message_is_checked_after_data(self):
        envelope = ["HELO client.test", "MAIL FROM:<a@sender.test>", "RCPT TO:<x@example.com>", "DATA"]
        code, replies, log = trial(self.instance, "headers.wasm", "headers", [
            *envelope, "Subject: no date, no from", "", "Hello.", "."])
        self.assertEqual(code, 0, log)
        lines = replies.splitlines()
        self.assertEqual(lines[3], "250 2.1.5 Recipient accepted by the trial (no plugin decided)",
                         "headers checks no recipient: the trial stands in")
        self.assertRegex(lines[-1], r"^550 5\.6\.0 ", "refused by headers at data-post")
        code, replies, log = trial(self.instance, "headers.wasm", "headers", [
            *envelope, "From: a@sender.test", "To: x@example.com", "Subject: fine", "Message-ID: <1@sender.test>",
            "Date: Sat, 05 Dec 2026 10:00:00 +0000", "", "Hello.", "."])
        self.assertEqual(replies.splitlines()[-1], "250 2.0.0 Message taken by the trial (kept nowhere)", log)

    def test_a_file_that_is_no_plugin_is_an_error(self):
        bogus = Path(self.tmp.name) / "bogus.wasm"
        bogus.write_bytes(b"\0asm junk")
        done = subprocess.run([BIN, "plugin", "test", str(bogus), "--config", str(self.instance)], input="QUIT\n",
                              capture_output=True, text=True, timeout=60)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("cannot run as bogus", done.stderr)
        self.assertEqual(done.stdout, "", "no session without the plugin")


if __name__ == "__main__":
    unittest.main()
