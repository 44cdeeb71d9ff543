"""queue/quarantine end to end: a real SpamAssassin spamd judges the mail,
`spamassassin` notes its verdict, `queue/quarantine` keeps what spamd calls
spam in the quarantine directory instead of the mailbox; `waraka quarantine`
lists, shows, deletes and releases what it kept."""

import datetime
import email
import pathlib
import re
import smtplib
import subprocess
import tempfile
import types
import unittest

from harness import BIN, Waraka, spamd, waraka_admin
from test_rspamd import message
from test_spamassassin import gtube


class QuarantineTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.spamd = spamd()

        def setup(server):
            server.edit("waraka.toml", lambda t: t + f'\n[spamfilter]\nspamd = "127.0.0.1:{cls.spamd.port}"\n')
            server.edit("config/host_list", lambda t: t + "example.com\n")
            server.set_settings("queue/quarantine.ini", note="spamassassin.spam")

        cls.server = Waraka(["rcpt_to.in_host_list", "spamassassin", "queue/quarantine", "queue/maildir"], setup=setup)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.spamd.stop()

    def quarantined(self):
        return sorted((self.server.dir / "quarantine").rglob("*.eml"))

    def today(self):
        return self.server.dir / "quarantine" / datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")

    def send(self, raw):
        """The DATA reply, and the quarantine and maildir files it added."""
        before = set(self.quarantined())
        code, text, stored = self.server.deliver(raw, sender="a@sender.test", recipient="rcpt@example.com")
        return code, text, [p for p in self.quarantined() if p not in before], stored

    def test_spam_goes_to_the_quarantine_with_its_envelope_and_nowhere_else(self):
        code, text, kept, stored = self.send(gtube("spam"))
        self.assertEqual(code, 250)
        self.assertRegex(text, r"^2\.0\.0 Message quarantined as \S+$")
        self.assertEqual((len(kept), stored), (1, []))
        self.assertEqual(kept[0].parent, self.today())
        copy = email.message_from_bytes(kept[0].read_bytes())
        self.assertEqual(copy["X-Quarantine-Reason"], "spamassassin.spam=yes")
        self.assertEqual(copy["X-Envelope-From"], "<a@sender.test>")
        self.assertEqual(copy["X-Envelope-To"], "<rcpt@example.com>")
        self.assertEqual(copy["X-Spam-Flag"], "YES", "the earlier plugin's fields are kept")
        self.assertEqual(copy["Subject"], "spam")
        self.server.wait_for_log(r"quarantined \(spamassassin\.spam=yes\) as \d{8}/\S+\.eml")

    def quarantine(self, *args, server=None):
        return waraka_admin(server or self.server, "quarantine", *args)

    def kept_spam(self, subject):
        """Sends spam; the kept copy's id (DAY/NAME) and its file."""
        code, text, kept, _ = self.send(gtube(subject))
        self.assertEqual((code, len(kept)), (250, 1), text)
        name = re.fullmatch(r"2\.0\.0 Message quarantined as (\S+)", text).group(1)
        self.assertEqual(kept[0].name, name + ".eml")
        return f"{kept[0].parent.name}/{name}", kept[0]

    def test_a_released_message_is_delivered_as_it_came_and_leaves_the_quarantine(self):
        kept_id, path = self.kept_spam("let me through")
        copy = path.read_bytes()
        code, listing = self.quarantine("list")
        self.assertEqual(code, 0, listing)
        line = next(line for line in listing.splitlines() if line.startswith(kept_id))
        self.assertEqual(line.split()[-3:], ["<a@sender.test>", "<rcpt@example.com>", "spamassassin.spam=yes"])
        code, shown = self.quarantine("show", kept_id)
        self.assertEqual(code, 0, shown)
        self.assertIn("reason: spamassassin.spam=yes\nsender: <a@sender.test>\nrecipients: <rcpt@example.com>", shown)
        self.assertIn("Subject: let me through", shown)
        self.assertNotIn("X-Envelope-To", shown, "the envelope is shown once, not as a header field")

        before = set(self.server.maildir())
        code, released = self.quarantine("release", kept_id.split("/")[1])
        self.assertEqual(code, 0, released)
        self.assertRegex(released, r"^released \S+: 250 2\.0\.0 Message queued as \S+$")
        delivered = [p.read_bytes() for p in self.server.maildir() if p not in before]
        self.assertEqual(len(delivered), 1, "queue/maildir took it, queue/quarantine let it through")
        message = copy.split(b"\r\n", 3)[3]
        self.assertTrue(message.startswith(b"X-Spam-Level: "), "the copy holds the message as it was queued")
        self.assertTrue(delivered[0].endswith(message), "delivered byte for byte, without the quarantine's fields")
        self.assertNotIn(b"X-Quarantine-Reason", delivered[0])
        self.assertEqual((message.count(b"Received: "), delivered[0].count(b"Received: ")), (1, 1),
                         "no second Received: field of ours")
        self.assertEqual(list(path.parent.glob(f"*{path.stem}*")), [], "neither kept nor left half-released")
        self.server.wait_for_log(rf"released from the quarantine \({re.escape(kept_id)}\): not kept again")
        self.server.wait_for_log(rf"quarantine release id={re.escape(kept_id)} to=rcpt@example.com reply=250 ")

        code, again = self.quarantine("release", kept_id)
        self.assertNotEqual(code, 0)
        self.assertIn(f"no quarantined message {kept_id}", again)

    def test_several_are_released_at_once_and_a_missing_one_is_reported(self):
        first, _ = self.kept_spam("first")
        second, _ = self.kept_spam("second")
        before = set(self.server.maildir())
        code, out = self.quarantine("release", first, "20000101/missing", second)
        self.assertEqual(code, 1, out)
        self.assertRegex(out, rf"released {first}: 250 .*\nreleased {second}: 250 ")
        self.assertIn("20000101/missing: the server says: no quarantined message 20000101/missing", out)
        self.assertIn("1 of 3 not released", out)
        self.assertEqual(len(set(self.server.maildir()) - before), 2)

    def test_a_deleted_message_goes_nowhere(self):
        kept_id, path = self.kept_spam("unwanted")
        before = self.server.maildir()
        code, out = self.quarantine("delete", kept_id)
        self.assertEqual((code, out), (0, f"deleted {kept_id} (from <a@sender.test> to <rcpt@example.com>)"))
        self.assertFalse(path.exists())
        self.assertEqual(self.server.maildir(), before)
        self.assertNotIn(kept_id, self.quarantine("list")[1])

    def test_what_is_not_an_id_is_refused(self):
        for bad in ["../etc/passwd", "20261205/../x", ".hidden"]:
            code, out = self.quarantine("show", bad)
            self.assertNotEqual(code, 0, bad)
            self.assertIn("is not a quarantine id", out)

    def test_clean_mail_is_delivered_and_not_kept(self):
        code, _, kept, stored = self.send(message("clean"))
        self.assertEqual((code, kept, len(stored)), (250, [], 1))

    def test_all_with_continue_keeps_a_copy_of_every_message(self):
        self.server.set_settings("queue/quarantine.ini", all="true", action="continue")
        try:
            code, text, kept, stored = self.send(message("archived"))
        finally:
            self.server.set_settings("queue/quarantine.ini", all="false", action="accept")
        self.assertEqual((code, len(kept), len(stored)), (250, 1, 1))
        self.assertRegex(text, r"^2\.0\.0 Message queued as", "queue/maildir answered")
        self.assertEqual(email.message_from_bytes(kept[0].read_bytes())["X-Quarantine-Reason"], "all")

    def test_a_quarantine_that_cannot_be_written_is_a_temporary_failure(self):
        self.today().parent.mkdir(exist_ok=True)
        moved = self.today().with_name("moved")
        if self.today().exists():
            self.today().rename(moved)
        self.today().write_text("a file where the day's directory goes")
        try:
            code, text, kept, stored = self.send(gtube("nowhere"))
        finally:
            self.today().unlink()
            if moved.exists():
                moved.rename(self.today())
        self.assertEqual((code, text, kept, stored), (451, "4.3.0 Quarantine unavailable, try again later", [], []))
        self.server.wait_for_log(r"quarantine \(spamassassin\.spam=yes\) failed")

    def test_a_release_nobody_takes_keeps_the_copy(self):
        def setup(server):
            server.edit("config/host_list", lambda t: t + "example.com\n")
            server.set_settings("queue/quarantine.ini", all="true")

        server = Waraka(["rcpt_to.in_host_list", "queue/quarantine"], setup=setup)
        try:
            code, text, _ = server.deliver(message("kept"))
            self.assertEqual(code, 250, text)
            (path,) = (server.dir / "quarantine").rglob("*.eml")
            kept_id = f"{path.parent.name}/{path.stem}"
            code, out = self.quarantine("release", kept_id, server=server)
            self.assertNotEqual(code, 0)
            self.assertIn("not released: 451 4.3.0 Queuing declined or disabled, try later", out)
            self.assertEqual(sorted((server.dir / "quarantine").rglob("*")), [path.parent, path], "kept as it was")
        finally:
            server.stop()

    def test_offline_the_quarantine_can_be_read_but_not_released(self):
        with tempfile.TemporaryDirectory() as tmp:
            instance = pathlib.Path(tmp) / "instance"
            subprocess.run([BIN, "init", str(instance)], check=True, capture_output=True)
            day = instance / "quarantine" / "20261205"
            day.mkdir(parents=True)
            (day / "abc.1.eml").write_bytes(
                b"X-Quarantine-Reason: all\r\nX-Envelope-From: <>\r\nX-Envelope-To: <b@example.com>\r\n"
                + message("offline"))
            offline = types.SimpleNamespace(dir=instance)
            code, listing = self.quarantine("list", server=offline)
            self.assertEqual(code, 0, listing)
            self.assertRegex(listing, r"\n20261205/abc\.1 .* <> +<b@example\.com> +all\n1 kept$")
            code, out = self.quarantine("release", "abc.1", server=offline)
            self.assertNotEqual(code, 0)
            self.assertIn("releasing needs the running server", out)
            self.assertTrue((day / "abc.1.eml").exists())

    def test_without_its_directory_grant_nothing_is_accepted(self):
        def setup(server):
            server.edit("waraka.toml", lambda t: t.replace('grants = ["dir:quarantine"]', "grants = []"))
            server.edit("config/host_list", lambda t: t + "example.com\n")
            server.set_settings("queue/quarantine.ini", all="true")

        server = Waraka(["rcpt_to.in_host_list", "queue/quarantine", "queue/maildir"], setup=setup)
        try:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as s:
                s.ehlo()
                s.mail("a@sender.test")
                s.rcpt("rcpt@example.com")
                self.assertEqual(s.data(message("no grant"))[0], 451)
            self.assertEqual(server.maildir(), [], "not delivered past the quarantine")
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main()
