"""LMTP delivery end to end against a real Dovecot LMTP service (with a
quota-full mailbox and an unknown user): relayed mail for a domain whose
`[outbound.routes]` hop speaks LMTP, and inbound mail queued by `queue/lmtp`.
The sender's notices go to a scripted MX found through a real dnsmasq."""

import email
import email.policy
import re
import smtplib
import unittest

from harness import SmtpReceiver, Waraka, dnsmasq, dovecot, free_port
from test_outbound import RECORDS, message, queue_entries, relay_setup, wait_until


class LmtpTest(unittest.TestCase):
    @classmethod
    def start_services(cls):
        """DNS, the mailbox server and the sender's MX; the port of the MX."""
        cls.dns = dnsmasq(RECORDS)
        cls.addClassCleanup(cls.dns.stop)
        cls.dovecot = dovecot({"alice@mail.test": 0, "bob@mail.test": 0, "dave@mail.test": 0, "full@mail.test": 100,
                               "carol@sock.test": 0})
        cls.addClassCleanup(cls.dovecot.stop)
        port = free_port("127.0.0.5")
        cls.sender_mx = SmtpReceiver("127.0.0.5", port, name="mailbox.sender.test")
        cls.addClassCleanup(cls.sender_mx.stop)
        return port

    @classmethod
    def setUpClass(cls):
        port = cls.start_services()
        route = (f'\n[outbound.routes."mail.test"]\nhost = "127.0.0.1"\nport = {cls.dovecot.port}\n'
                 'lmtp = true\ntls = "never"\n'
                 f'\n[outbound.routes."sock.test"]\nhost = "{cls.dovecot.lmtp_socket()}"\nlmtp = true\n')
        cls.server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"],
                            setup=relay_setup(cls.dns.port, port, extra=route, retry="1h"))
        cls.addClassCleanup(cls.server.stop)

    def notices(self, subject):
        """The notices the sender got about `subject`, parsed, by action."""
        found = {}
        for sender, _, data in self.sender_mx.received():
            if sender != "" or f"Subject: {subject}\r\n".encode() not in data:
                continue
            report = email.message_from_bytes(data, policy=email.policy.compat32)
            for part in report.get_payload()[1].get_payload()[1:]:
                found.setdefault(part["Action"], []).append(part)
        return found

    def test_each_recipient_gets_the_answer_of_its_own_mailbox(self):
        recipients = ["alice@mail.test", "bob@mail.test", "full@mail.test", "nobody@mail.test"]
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            refused = s.sendmail("sender@sender.test", recipients, message("to the mailboxes") + b"x" * 200 + b"\r\n",
                                 rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
        self.assertEqual(refused, {})
        for user in ("alice@mail.test", "bob@mail.test"):
            stored = wait_until(lambda user=user: self.dovecot.mailbox(user), what=f"{user}'s copy")
            self.assertEqual(len(stored), 1)
            copy = stored[0].read_bytes()  # maildir lines end in LF
            self.assertIn(b"Subject: to the mailboxes\n", copy)
            self.assertIn(b"with LMTP", copy)
        self.assertEqual(self.dovecot.mailbox("full@mail.test"), [])

        notices = wait_until(lambda: (lambda n: n if len(n.get("failed", [])) == 2 and len(n.get("delivered", [])) == 2
                                      else None)(self.notices("to the mailboxes")), what="the notices")
        failed = {part["Final-Recipient"]: part for part in notices["failed"]}
        full = failed["rfc822; full@mail.test"]
        self.assertEqual(full["Status"], "5.2.2")
        self.assertIn("Quota exceeded", full["Diagnostic-Code"])
        self.assertEqual(full["Remote-MTA"], "dns; 127.0.0.1")
        self.assertEqual(failed["rfc822; nobody@mail.test"]["Status"], "5.1.1")
        delivered = sorted(part["Final-Recipient"] for part in notices["delivered"])
        self.assertEqual(delivered, ["rfc822; alice@mail.test", "rfc822; bob@mail.test"],
                         "a mailbox server is the final delivery: delivered, not relayed")
        self.assertNotIn("relayed", notices)
        self.assertEqual({part["Remote-MTA"] for part in notices["delivered"]}, {"dns; 127.0.0.1"},
                         "told by the delivery to the mailbox server")
        self.server.wait_for_log(r"delivered id=\S+ recipient=alice@mail\.test host=127\.0\.0\.1")
        wait_until(lambda: not [e for e in queue_entries(self.server) if e["domain"] == "mail.test"],
                   what="no entry left for mail.test")
        self.assertEqual(len(self.notices("to the mailboxes")["delivered"]), 2, "each told once")


    def test_a_mailbox_server_on_a_unix_socket(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            self.assertEqual(s.sendmail("sender@sender.test", ["carol@sock.test"], message("by the socket"),
                                        rcpt_options=["NOTIFY=SUCCESS"]), {})
        self.assertTrue(wait_until(lambda: [c for c in self.dovecot.mailbox("carol@sock.test")
                                            if b"Subject: by the socket\n" in c.read_bytes()], what="carol's copy"))
        self.server.wait_for_log(r"delivered id=\S+ recipient=carol@sock\.test host=" + re.escape(self.dovecot.lmtp_socket()))
        delivered = wait_until(lambda: self.notices("by the socket").get("delivered"), what="the success notice")
        self.assertEqual(delivered[0]["Remote-MTA"], f"x-unix; {self.dovecot.lmtp_socket()}", "a path, not a DNS name")


class QueueLmtpTest(LmtpTest):
    """The same mailboxes, for inbound mail: `queue/lmtp` hands it to the
    host's queue for the Dovecot its config names."""

    @classmethod
    def setUpClass(cls):
        port = cls.start_services()
        cls.closed = free_port()

        socket = cls.dovecot.lmtp_socket()

        def setup(server):
            # The same socket through a link: only the granted path may be named.
            cls.link = server.dir / "lmtp-link"
            cls.link.symlink_to(socket)
            server.edit("config/host_list", lambda t: t + "mail.test\nlater.test\nsock.test\nungranted.test\n")
            server.set_settings("queue/lmtp.ini", port=cls.dovecot.port, verify_recipients="false")
            server.edit("config/queue/lmtp.ini", lambda t: t + (
                f"\n[later.test]\nport = {cls.closed}\n[sock.test]\npath = {socket}\n"
                f"[ungranted.test]\npath = {cls.link}\n"))
            server.edit("waraka.toml", lambda t: t.replace(
                'grants = ["outbound-queue", "forward"]',
                f'grants = ["outbound-queue", "forward", "socket:{socket}"]') + (
                f'\n[dns]\nservers = ["127.0.0.1:{cls.dns.port}"]\ntimeout = "2s"\n'
                f'\n[outbound]\nport = {port}\nallow_local = true\nretry = "1h"\n'))

        cls.server = Waraka(["queue/lmtp", "rcpt_to.in_host_list"], setup=setup)
        cls.addClassCleanup(cls.server.stop)

    def test_a_mailbox_server_that_is_down_keeps_the_mail_queued(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            self.assertEqual(s.sendmail("sender@sender.test", ["carol@later.test"], message("later")), {})
        entry = wait_until(lambda: [e for e in queue_entries(self.server)
                                    if e["recipients"] == ["carol@later.test"] and e["attempts"] == 1],
                           what="a deferred entry")[0]
        self.assertEqual(entry["hop"], {"host": "127.0.0.1", "port": self.closed, "tls": "never", "lmtp": True})
        self.assertIn("connecting to 127.0.0.1", entry["last_error"])
        self.server.wait_for_log(r"carol@later\.test queued for 127\.0\.0\.1:\d+ as \S+")

    def test_a_socket_without_its_grant_is_never_used(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            with self.assertRaises(smtplib.SMTPDataError) as refused:
                s.sendmail("sender@sender.test", ["erin@ungranted.test"], message("not granted"))
        self.assertEqual((refused.exception.smtp_code, refused.exception.smtp_error),
                         (451, b"4.3.0 Mailbox server queue unavailable, try again later"))
        self.server.wait_for_log(re.escape(str(self.link)) + r": Error::NotGranted")
        self.assertEqual([e for e in queue_entries(self.server) if e["recipients"] == ["erin@ungranted.test"]], [])

    def test_unknown_mailboxes_are_refused_at_rcpt_when_verified(self):
        self.server.set_settings("queue/lmtp.ini", verify_recipients="true")
        try:
            with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
                s.ehlo()
                self.assertEqual(s.mail("sender@sender.test")[0], 250)
                self.assertEqual(s.rcpt("nobody@mail.test"),
                                 (550, b"5.1.1 Mailbox <nobody@mail.test> does not exist here"))
                self.assertEqual(s.rcpt("dave@mail.test")[0], 250)
                self.assertEqual(s.rcpt("nobody@sock.test"),
                                 (550, b"5.1.1 Mailbox <nobody@sock.test> does not exist here"), "asked over the socket")
                self.assertEqual(s.rcpt("carol@sock.test")[0], 250)
                self.assertEqual(s.rcpt("erin@ungranted.test"),
                                 (451, b"4.4.3 Cannot verify mailbox <erin@ungranted.test> now, try again later"))
                self.assertEqual(s.rcpt("carol@later.test"),
                                 (451, b"4.4.3 Cannot verify mailbox <carol@later.test> now, try again later"))
                self.assertEqual(s.rcpt("someone@elsewhere.test")[0], 550, "not local: the next plugin decides")
                self.assertEqual(s.data(message("verified"))[0], 250)
        finally:
            self.server.set_settings("queue/lmtp.ini", verify_recipients="false")
        self.server.wait_for_log(r"<nobody@mail\.test> refused by 127\.0\.0\.1:\d+: 550 5\.1\.1")
        copies = wait_until(lambda: self.dovecot.mailbox("dave@mail.test"), what="dave's copy")
        self.assertEqual(len(copies), 1)
        self.assertTrue(wait_until(lambda: [c for c in self.dovecot.mailbox("carol@sock.test")
                                            if b"Subject: verified\n" in c.read_bytes()], what="carol's copy"))


if __name__ == "__main__":
    unittest.main()
