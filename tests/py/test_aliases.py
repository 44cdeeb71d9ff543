"""aliases end to end: smtplib sends to aliases of a real waraka, whose
queue/maildir files one copy per expanded recipient."""

import smtplib
import unittest

from harness import Waraka

ALIASES = """
sales@example.com: alice@example.com, bob@example.com
postmaster: admin@example.com
spamtrap@example.com: :reject
@old.example: @example.com
away: someone@elsewhere.test
"""


class AliasesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        def setup(server):
            server.edit("config/host_list", lambda t: t + "example.com\n")
            server.edit("config/aliases", lambda t: t + ALIASES)

        # aliases before the recipient check, which then checks the targets.
        cls.server = Waraka(["aliases", "rcpt_to.in_host_list", "queue/maildir"], setup=setup)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def mailboxes(self, recipients, subject):
        """RCPT codes, and the mailbox folders (domain/local) a message reached."""
        before = set(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.example", timeout=30) as s:
            s.ehlo()
            s.mail("a@sender.test")
            codes = [s.rcpt(r)[0] for r in recipients]
            if 250 in codes:
                self.assertEqual(s.data(f"Subject: {subject}\r\n\r\nhi\r\n".encode())[0], 250)
        root = self.server.dir / "maildir"
        new = [p for p in self.server.maildir() if p not in before]
        return codes, sorted("/".join(p.relative_to(root).parts[:2]) for p in new)

    def test_a_list_expands_to_every_member_and_a_local_part_alias_works_for_any_domain(self):
        codes, boxes = self.mailboxes(["sales@example.com", "postmaster@example.com"], "list")
        self.assertEqual(codes, [250, 250])
        self.assertEqual(boxes, ["example.com/admin", "example.com/alice", "example.com/bob"])
        self.server.wait_for_log(r"<sales@example\.com> is an alias of alice@example\.com, bob@example\.com")

    def test_a_member_also_named_directly_gets_one_copy(self):
        codes, boxes = self.mailboxes(["bob@example.com", "sales@example.com"], "once")
        self.assertEqual((codes, boxes), ([250, 250], ["example.com/alice", "example.com/bob"]))

    def test_a_subaddress_reaches_its_users_mailbox_and_alias(self):
        codes, boxes = self.mailboxes(["dave+news@example.com", "sales+promo@example.com"], "subaddress")
        self.assertEqual((codes, boxes), ([250, 250], ["example.com/alice", "example.com/bob", "example.com/dave"]))
        copy = [p for p in self.server.maildir() if b"Subject: subaddress\r\n" in p.read_bytes()
                and "dave" in p.parts]
        self.assertIn(b"Delivered-To: dave+news@example.com\r\n", copy[0].read_bytes(), "the whole address is kept")
        alice = [p for p in self.server.maildir() if b"Subject: subaddress\r\n" in p.read_bytes()
                 and "alice" in p.parts]
        self.assertIn(b"Delivered-To: alice+promo@example.com\r\n", alice[0].read_bytes(),
                      "the list's members get the detail the list did not use")

    def test_without_a_delimiter_a_subaddress_is_its_own_mailbox(self):
        self.server.edit("config/recipient_delimiter", lambda t: t.replace("\n+\n", "\n"))
        try:
            codes, boxes = self.mailboxes(["erin+news@example.com"], "own")
            self.assertEqual((codes, boxes), ([250], ["example.com/erin+news"]))
        finally:
            self.server.edit("config/recipient_delimiter", lambda t: t + "+\n")

    def test_a_domain_alias_keeps_the_local_part(self):
        codes, boxes = self.mailboxes(["carol@old.example"], "domain")
        self.assertEqual((codes, boxes), ([250], ["example.com/carol"]))

    def test_reject_and_targets_the_recipient_check_refuses(self):
        # away@foreign.test is not a local address, so its alias may not
        # forward it (test_forwarding has those that may).
        codes, boxes = self.mailboxes(["spamtrap@example.com", "away@foreign.test", "dave@example.com"], "refused")
        self.assertEqual(codes, [550, 550, 250], "the rewritten target is checked like any recipient")
        self.assertEqual(boxes, ["example.com/dave"], "nothing of the refused aliases was kept")


if __name__ == "__main__":
    unittest.main()
