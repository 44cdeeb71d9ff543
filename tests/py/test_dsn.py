"""Delivery status notifications as RFC 3461 asks, end to end: smtplib
sends with RET, ENVID, NOTIFY and ORCPT to a real waraka, which passes them
on to a scripted server that offers DSN, and otherwise sends the notices
itself (relayed, failed, delayed, delivered) through its outbound queue to
the sender's own scripted MX, found through a real dnsmasq.
"""

import email
import email.policy
import smtplib
import unittest

from harness import SmtpReceiver, Waraka, dnsmasq, free_port, waraka_admin
from test_outbound import RECORDS, message, relay_setup, wait_until
from test_smtp_forward import forward_setup


def scripted(address, attempt):
    """`bad-…` is refused with 550, `slow-…` always with 451; the rest is accepted."""
    local = address.split("@")[0]
    if local.startswith("bad-"):
        return "550 5.1.1 No such user here"
    if local.startswith("slow-"):
        return "451 4.2.1 Mailbox busy, try later"
    return "250 2.1.5 OK"


def parts(data):
    """The text, the delivery-status groups and the returned part of a notice."""
    notice = email.message_from_bytes(data, policy=email.policy.compat32)
    assert notice.get_content_type() == "multipart/report", notice.get_content_type()
    text, status, returned = notice.get_payload()
    return notice, text.get_payload(), status.get_payload(), returned


class Mailbox:
    """The notices the sender's MX received."""

    def __init__(self, receiver):
        self.receiver = receiver

    def notices(self, subject, action=None):
        found = []
        for sender, recipients, data in self.receiver.received():
            if sender != "" or f"Subject: {subject}\r\n".encode() not in data:
                continue
            if action is None or f"\r\nAction: {action}\r\n".encode() in data:
                found.append((recipients, data))
        return found

    def wait(self, subject, action, timeout=30):
        return wait_until(lambda: self.notices(subject, action), timeout=timeout, what=f"a {action} notice")


def serve(test_class, host, port, name, extensions=()):
    """A scripted SMTP server on `host`:`port`, stopped after `test_class`."""
    receiver = SmtpReceiver(host, port, scripted, name=name, extensions=extensions)
    test_class.addClassCleanup(receiver.stop)
    return receiver


def start_dns(test_class):
    """The test zone's dnsmasq, stopped after `test_class`."""
    dns = dnsmasq(RECORDS)
    test_class.addClassCleanup(dns.stop)
    return dns


class DsnTest(unittest.TestCase):
    """Relayed mail through the outbound queue, and mail delivered here."""

    @classmethod
    def setUpClass(cls):
        cls.dns = start_dns(cls)
        port = free_port("127.0.0.2", "127.0.0.3", "127.0.0.5")
        # dest.test's MX offers DSN; implicit.test's server does not.
        cls.dsn_mx = serve(cls, "127.0.0.2", port, "mx1.dest.test", extensions=["DSN"])
        cls.plain_mx = serve(cls, "127.0.0.3", port, "mx2.dest.test")
        cls.mailbox = Mailbox(serve(cls, "127.0.0.5", port, "mailbox.sender.test"))
        relay = relay_setup(cls.dns.port, port, extra='delay_warning = "1s"\n')
        cls.relay = staticmethod(relay)

        def setup(server):
            relay(server)
            server.edit("config/aliases", lambda t: t + "team@example.com: asked@example.com, member@example.com\n")

        cls.server = Waraka(["relay", "aliases", "rcpt_to.in_host_list", "queue/maildir"], setup=setup)
        cls.addClassCleanup(cls.server.stop)

    def send(self, recipients, subject, mail_options=(), rcpt_options=(), source="127.0.0.1", server=None):
        """Relays (from 127.0.0.1) or delivers here (from another address)."""
        with smtplib.SMTP("127.0.0.1", (server or self.server).port, local_hostname="client.test", timeout=30,
                          source_address=(source, 0)) as s:
            s.ehlo()
            self.assertTrue(s.has_extn("dsn"))
            self.assertEqual(s.sendmail("sender@sender.test", recipients, message(subject),
                                        list(mail_options), list(rcpt_options)), {})

    def test_the_requests_go_on_to_a_server_that_offers_dsn_and_we_send_no_notice(self):
        self.send(["one@dest.test"], "passed on", ["RET=HDRS", "ENVID=abc+2B1"],
                  ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;orig+2Bx@dest.test"])
        wait_until(lambda: [m for m in self.dsn_mx.received() if b"Subject: passed on\r\n" in m[2]],
                   what="the delivery")
        commands = self.dsn_mx.commands
        self.assertIn("MAIL FROM:<sender@sender.test> RET=HDRS ENVID=abc+2B1", commands)
        self.assertIn("RCPT TO:<one@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2Bx@dest.test", commands)
        line = self.server.wait_for_log(r"delivered id=\S+ recipient=one@dest\.test ")
        queue_id = line.split("id=")[1].split()[0]
        self.assertFalse([l for l in self.server.log if "delivery notice queued" in l and queue_id in l],
                         "the next server reports success, not us")

    def test_a_server_without_dsn_gets_none_and_the_sender_hears_relayed(self):
        self.send(["two@implicit.test", "three@implicit.test"], "relayed", ["ENVID=env-2"],
                  ["NOTIFY=SUCCESS", "ORCPT=rfc822;alias@implicit.test"])
        self.assertIn("MAIL FROM:<sender@sender.test>", self.plain_mx.commands)
        self.assertFalse([c for c in self.plain_mx.commands if "NOTIFY" in c or "ENVID" in c])
        recipients, data = self.mailbox.wait("relayed", "relayed")[0]
        self.assertEqual(recipients, ["sender@sender.test"])
        notice, text, status, returned = parts(data)
        self.assertEqual(notice["Subject"], "Successful Mail Delivery Report")
        self.assertIn("which send no delivery notices", text)
        self.assertEqual(status[0]["Original-Envelope-Id"], "env-2")
        groups = {g["Final-Recipient"]: g for g in status[1:]}
        self.assertEqual(sorted(groups), ["rfc822; three@implicit.test", "rfc822; two@implicit.test"])
        for group in groups.values():
            self.assertEqual(group["Action"], "relayed")
            self.assertEqual(group["Status"], "2.0.0")
            self.assertEqual(group["Original-Recipient"], "rfc822; alias@implicit.test")
            self.assertEqual(group["Remote-MTA"], "dns; implicit.test")
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")

    def test_ret_full_returns_the_whole_message_with_the_failure(self):
        self.send(["bad-full@implicit.test"], "returned whole", ["RET=FULL", "ENVID=whole"])
        _, data = self.mailbox.wait("returned whole", "failed")[0]
        notice, _, status, returned = parts(data)
        self.assertEqual(notice["Subject"], "Undelivered Mail Returned to Sender")
        self.assertEqual(status[0]["Original-Envelope-Id"], "whole")
        self.assertEqual(status[1]["Status"], "5.1.1")
        self.assertEqual(returned.get_content_type(), "message/rfc822")
        original = returned.get_payload()[0]
        self.assertEqual(original["Subject"], "returned whole")
        self.assertEqual(original.get_payload(), "Hello.\r\n")

    def test_notify_never_and_success_only_recipients_get_no_failure_notice(self):
        self.send(["bad-never@implicit.test", "bad-success@implicit.test", "bad-default@implicit.test"],
                  "choosy", rcpt_options=[])
        # smtplib gives every RCPT the same options, so the second message asks per recipient by hand.
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            self.assertEqual(s.mail("sender@sender.test")[0], 250)
            self.assertEqual(s.rcpt("bad-never2@implicit.test", ["NOTIFY=NEVER"])[0], 250)
            self.assertEqual(s.rcpt("bad-success2@implicit.test", ["NOTIFY=SUCCESS"])[0], 250)
            self.assertEqual(s.rcpt("bad-default2@implicit.test")[0], 250)
            self.assertEqual(s.rcpt("bad-failure2@implicit.test", ["NOTIFY=FAILURE,DELAY"])[0], 250)
            self.assertEqual(s.data(message("choosier"))[0], 250)
        _, data = self.mailbox.wait("choosier", "failed")[0]
        _, _, status, _ = parts(data)
        self.assertEqual([g["Final-Recipient"] for g in status[1:]],
                         ["rfc822; bad-default2@implicit.test", "rfc822; bad-failure2@implicit.test"])
        self.server.wait_for_log(r"no failure notice: NOTIFY did not ask for one id=\S+ "
                                 r"recipients=bad-never2@implicit\.test,bad-success2@implicit\.test$")
        # The first message, without NOTIFY, bounced all three in one notice.
        _, data = self.mailbox.wait("choosy", "failed")[0]
        self.assertEqual(len(parts(data)[2]) - 1, 3)

    def test_a_late_message_gets_one_delay_notice_then_the_failure(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            s.mail("sender@sender.test", ["ENVID=late"])
            s.rcpt("slow-a@implicit.test")
            s.rcpt("slow-b@implicit.test", ["NOTIFY=FAILURE"])
            self.assertEqual(s.data(message("late"))[0], 250)
        # Attempts at 0 s, 5 s (older than delay_warning: the notice) and 10 s (the schedule is used up).
        recipients, data = self.mailbox.wait("late", "delayed")[0]
        notice, text, status, returned = parts(data)
        self.assertEqual(notice["Subject"], "Delayed Mail (still being retried)")
        self.assertIn("you do not need to send it again", text)
        self.assertEqual([g["Final-Recipient"] for g in status[1:]], ["rfc822; slow-a@implicit.test"],
                         "slow-b asked for failures only")
        group = status[1]
        self.assertEqual((group["Action"], group["Status"]), ("delayed", "4.2.1"))
        self.assertIn("451 4.2.1 Mailbox busy", group["Diagnostic-Code"])
        self.assertIsNotNone(group["Will-Retry-Until"])
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")
        _, data = self.mailbox.wait("late", "failed", timeout=40)[0]
        failed = [g["Final-Recipient"] for g in parts(data)[2][1:]]
        self.assertEqual(sorted(failed), ["rfc822; slow-a@implicit.test", "rfc822; slow-b@implicit.test"])
        self.assertEqual(len(self.mailbox.notices("late", "delayed")), 1, "one delay notice per message")

    def test_mail_delivered_here_gets_a_delivered_notice_when_asked(self):
        # From 127.0.0.9 the client is not a relay client: example.com is ours.
        self.send(["asked@example.com", "quiet@example.com"], "stored", ["ENVID=local-1"],
                  ["NOTIFY=SUCCESS,FAILURE"], source="127.0.0.9")
        recipients, data = self.mailbox.wait("stored", "delivered")[0]
        notice, text, status, _ = parts(data)
        self.assertIn("delivered to the recipients below", text)
        self.assertEqual(status[0]["Original-Envelope-Id"], "local-1")
        self.assertEqual([g["Final-Recipient"] for g in status[1:]],
                         ["rfc822; asked@example.com", "rfc822; quiet@example.com"])
        self.assertEqual(status[1]["Status"], "2.0.0")
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30,
                          source_address=("127.0.0.9", 0)) as s:
            s.ehlo()
            s.mail("sender@sender.test")
            s.rcpt("silent@example.com", ["NOTIFY=FAILURE"])
            self.assertEqual(s.data(message("stored quietly"))[0], 250)
        self.server.wait_for_log(r"message accepted.*")
        self.assertTrue(any(b"Subject: stored quietly" in p.read_bytes() for p in self.server.maildir()))
        self.assertEqual(self.mailbox.notices("stored quietly"), [], "nothing asked, nothing sent")

    def test_a_quarantined_message_gets_its_delivered_notice_at_its_release(self):
        def setup(server):
            self.relay(server)
            server.set_settings("queue/quarantine.ini", all="true")

        held = Waraka(["relay", "rcpt_to.in_host_list", "queue/quarantine", "queue/maildir"], setup=setup)
        try:
            self.send(["kept@example.com", '"kept two"@example.com'], "held back", ["ENVID=held-1"],
                      ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;orig@example.com"], source="127.0.0.9", server=held)
            held.wait_for_log(r'no delivered notice while the message is held held="quarantine \d{8}/')
            kept = list((held.dir / "quarantine").rglob("*.eml"))
            self.assertEqual(len(kept), 1)
            top = kept[0].read_bytes().split(b"\r\n")[:3]
            self.assertRegex(top[1], rb"^X-Envelope-From: <sender@sender\.test> SIZE=\d+ ENVID=held-1$")
            self.assertEqual(top[2], b'X-Envelope-To: <kept@example.com> NOTIFY=SUCCESS,FAILURE '
                                     b'ORCPT=rfc822;orig@example.com, <"kept two"@example.com> '
                                     b'NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig@example.com')
            self.assertEqual(self.mailbox.notices("held back"), [], "held: nothing is delivered yet")
            kept_id = f"{kept[0].parent.name}/{kept[0].stem}"
            code, out = waraka_admin(held, "quarantine", "release", kept_id)
            self.assertEqual(code, 0, out)
            recipients, data = self.mailbox.wait("held back", "delivered")[0]
            held.wait_for_log(r"delivery notice queued")
        finally:
            held.stop()
        _, text, status, _ = parts(data)
        self.assertEqual(status[0]["Original-Envelope-Id"], "held-1")
        self.assertEqual([g["Final-Recipient"] for g in status[1:]],
                         ["rfc822; kept@example.com", 'rfc822; "kept two"@example.com'])
        self.assertEqual(status[1]["Original-Recipient"], "rfc822; orig@example.com")
        self.assertEqual(len(self.mailbox.notices("held back")), 1, "one notice, at the release")

    def test_an_alias_passes_its_requests_to_its_targets_and_is_named_as_the_original(self):
        self.send(["team@example.com"], "to the team", rcpt_options=["NOTIFY=SUCCESS"], source="127.0.0.9")
        _, data = self.mailbox.wait("to the team", "delivered")[0]
        _, _, status, _ = parts(data)
        self.assertEqual([(g["Final-Recipient"], g["Original-Recipient"]) for g in status[1:]],
                         [("rfc822; asked@example.com", "rfc822; team@example.com"),
                          ("rfc822; member@example.com", "rfc822; team@example.com")])

    def test_malformed_requests_are_refused_with_501(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            self.assertEqual(s.mail("sender@sender.test", ["RET=BOTH"]), (501, b"5.5.4 Invalid RET parameter"))
            self.assertEqual(s.mail("sender@sender.test", ["ENVID=a+zz"])[0], 501)
            self.assertEqual(s.mail("sender@sender.test", ["RET=FULL", "RET=HDRS"])[0], 501)
            self.assertEqual(s.mail("sender@sender.test", ["RET=FULL"])[0], 250)
            self.assertEqual(s.rcpt("x@dest.test", ["NOTIFY=NEVER,DELAY"]),
                             (501, b"5.5.4 Invalid NOTIFY parameter"))
            self.assertEqual(s.rcpt("x@dest.test", ["ORCPT=x@dest.test"]), (501, b"5.5.4 Invalid ORCPT parameter"))
            self.assertEqual(s.rcpt("x@dest.test", ["NOTIFY=DELAY"])[0], 250)
        self.server.wait_for_log(r"command refused: 501 5\.5\.4 Invalid ORCPT parameter")


class ForwardDsnTest(unittest.TestCase):
    """queue/smtp_forward passes the requests on, or the host says relayed."""

    @classmethod
    def setUpClass(cls):
        cls.dns = start_dns(cls)
        port = free_port("127.0.0.5", "127.0.0.11", "127.0.0.12")
        cls.plain_hop = serve(cls, "127.0.0.11", port, "hop.test")
        cls.dsn_hop = serve(cls, "127.0.0.12", port, "routed.hop.test", extensions=["DSN"])
        cls.mailbox = Mailbox(serve(cls, "127.0.0.5", port, "mailbox.sender.test"))
        outbound = (f'\n[dns]\nservers = ["127.0.0.1:{cls.dns.port}"]\ntimeout = "2s"\n'
                    f'\n[outbound]\nport = {port}\nallow_local = true\n')
        cls.server = Waraka(["rcpt_to.in_host_list", "queue/smtp_forward"],
                            setup=forward_setup(port, extra_toml=outbound))
        cls.addClassCleanup(cls.server.stop)

    def test_forwarded_mail_passes_the_requests_on_or_is_reported_relayed(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            refused = s.sendmail("sender@sender.test", ["a@dest.test", "b@routed.test"], message("forwarded"),
                                 ["ENVID=fw"], ["NOTIFY=SUCCESS"])
        self.assertEqual(refused, {})
        self.assertIn("RCPT TO:<b@routed.test> NOTIFY=SUCCESS", self.dsn_hop.commands)
        self.assertIn("RCPT TO:<a@dest.test>", self.plain_hop.commands)
        _, data = self.mailbox.wait("forwarded", "relayed")[0]
        _, _, status, _ = parts(data)
        self.assertEqual(status[0]["Original-Envelope-Id"], "fw")
        self.assertEqual([(g["Final-Recipient"], g["Remote-MTA"]) for g in status[1:]],
                         [("rfc822; a@dest.test", "dns; 127.0.0.11")],
                         "only the hop without DSN is reported; the other reports itself")
        self.assertEqual(self.mailbox.notices("forwarded", "delivered"), [])


if __name__ == "__main__":
    unittest.main()
