"""queue/quarantine end to end: a real SpamAssassin spamd judges the mail,
`spamassassin` notes its verdict, `queue/quarantine` keeps what spamd calls
spam in the quarantine directory instead of the mailbox."""

import datetime
import email
import smtplib
import unittest

from harness import Waraka, spamd
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
