"""Forwarding end to end: aliases whose targets are in other domains, sent by
smtplib to a real waraka, leave through its outbound queue (MX records from a
real dnsmasq, scripted SMTP receivers on loopback addresses) from a sender
rewritten by SRS; the srs plugin forwards bounces to those senders back to
the original sender, and arc_seal seals what is forwarded. The SRS
addresses are checked against an independent implementation of PostSRSd's
scheme written here, the ARC seals with dkimpy."""

import base64
import hashlib
import hmac
import json
import re
import smtplib
import time
import unittest

import dkim

from harness import SmtpReceiver, Waraka, dnsmasq, free_port, prometheus, wait_until
from test_auth_results import arc_seal, rsa_key, txt
from test_dkim_sign import waraka_key

SECRET = "forwarding-test-secret"
SRS_DOMAIN = "fwd.example.com"

RECORDS = [
    "--local=/test/",
    "--mx-host=elsewhere.test,mx.elsewhere.test,10",
    "--host-record=mx.elsewhere.test,127.0.0.2",
    "--mx-host=origin.test,mx.origin.test,10",
    "--host-record=mx.origin.test,127.0.0.3",
    "--mx-host=first.test,mx.origin.test,10",
]

ALIASES = """
fwd@example.com: friend@elsewhere.test
team@example.com: alice@example.com, friend@elsewhere.test, pal@elsewhere.test
postmaster: friend@elsewhere.test
gone@example.com: bad-user@elsewhere.test
crew@example.com: carl@example.com, mate@elsewhere.test
"""

BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def srs0(local, domain, day=None, secret=SECRET):
    """PostSRSd's SRS0 address for `local@domain` on `day` (days since the epoch)."""
    day = int(time.time() // 86400) if day is None else day
    stamp = BASE32[(day >> 5) & 31] + BASE32[day & 31]
    digest = hmac.new(secret.encode(), (stamp + domain + local).lower().encode(), hashlib.sha1).digest()
    return f"SRS0={base64.b64encode(digest).decode()[:4]}={stamp}={domain}={local}@{SRS_DOMAIN}"


def forwarding_setup(dns_port, port, srs=True, grant=True):
    def setup(server):
        server.edit("config/host_list", lambda t: t + "example.com\n")
        server.edit("config/aliases", lambda t: t + ALIASES)
        toml = (f'\n[dns]\nservers = ["127.0.0.1:{dns_port}"]\ntimeout = "2s"\n'
                f'\n[outbound]\nport = {port}\nallow_local = true\nretry = "5s, 5s"\n')
        if srs:
            toml += f'\n[srs]\nsecrets = ["{SECRET}", "an-older-secret"]\ndomain = "{SRS_DOMAIN}"\n'
        server.edit("waraka.toml", lambda t: t + toml)
        if not grant:
            server.edit("waraka.toml", lambda t: t.replace(
                '[plugin.aliases]\ngrants = ["outbound-queue"]', "[plugin.aliases]\ngrants = []"))

    return setup


def message(subject):
    return (f"From: Alice <alice@origin.test>\r\nTo: fwd@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@origin.test>\r\n\r\nHello.\r\n").encode()


class ForwardingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # A mailing list that ARC-seals what it passes on.
        cls.list_key, list_public = rsa_key()
        list_record = ("sel._domainkey.list.test", f"v=DKIM1; k=rsa; p={list_public}")
        cls.dns = dnsmasq(RECORDS + [txt(*list_record)])
        cls.port = free_port("127.0.0.2", "127.0.0.3")
        refusing = lambda address, attempt: "550 5.1.1 No such user" if address.startswith("bad-") else "250 2.1.5 OK"
        cls.elsewhere = SmtpReceiver("127.0.0.2", cls.port, refusing, name="mx.elsewhere.test")
        cls.origin = SmtpReceiver("127.0.0.3", cls.port, name="mx.origin.test")
        cls.records = dict([list_record])
        forwarding = forwarding_setup(cls.dns.port, cls.port)

        cls.metrics_port = free_port()

        def setup(server):
            forwarding(server)
            server.enable_metrics(cls.metrics_port)
            cls.records.update([waraka_key(server.dir, SRS_DOMAIN)])
            server.set_settings("arc_seal.ini", domain=SRS_DOMAIN)

        cls.server = Waraka(["srs", "aliases", "rcpt_to.in_host_list", "arc_seal", "queue/maildir"], setup=setup)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.elsewhere.stop()
        cls.origin.stop()
        cls.dns.stop()

    def send(self, sender, recipients, subject, raw=None):
        """RCPT codes; the message (`raw`, or a plain one) is sent when one was accepted."""
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            s.mail(sender)
            replies = [s.rcpt(r) for r in recipients]
            if any(code == 250 for code, _ in replies):
                code, text = s.data(raw or message(subject))
                self.assertEqual(code, 250, text)
        return replies

    @staticmethod
    def arrived(receiver, subject):
        """The (sender, recipients) of the copies of `subject` at `receiver`, once one came."""
        return wait_until(lambda: [(m[0], m[1]) for m in receiver.received()
                                   if f"Subject: {subject}\r\n".encode() in m[2]], what=f"{subject!r} to arrive")

    def forwarded_copy(self, subject):
        """The bytes of the forwarded copy of `subject`."""
        self.arrived(self.elsewhere, subject)
        return [m[2] for m in self.elsewhere.received() if f"Subject: {subject}\r\n".encode() in m[2]][0]

    def dns_txt(self, name, timeout=5):
        """dkimpy's DNS lookup, answered from the key made here."""
        record = self.records.get(name.decode().rstrip("."))
        return record.encode() if record else None

    def maildir_copies(self, subject):
        return [p for p in self.server.maildir() if f"Subject: {subject}\r\n".encode() in p.read_bytes()]

    def test_an_alias_in_another_domain_is_forwarded_from_an_srs_sender(self):
        replies = self.send("alice@origin.test", ["fwd@example.com"], "forwarded")
        self.assertEqual([code for code, _ in replies], [250])
        self.assertEqual(self.arrived(self.elsewhere, "forwarded"),
                         [(srs0("alice", "origin.test"), ["friend@elsewhere.test"])])
        self.assertEqual(self.maildir_copies("forwarded"), [], "nothing stays here")
        self.server.wait_for_log(r"queued for forwarding.*to=friend@elsewhere\.test")

    def test_forwarded_mail_is_arc_sealed_and_mail_kept_here_is_not(self):
        self.assertEqual([code for code, _ in self.send("kim@origin.test", ["fwd@example.com"], "sealed")], [250])
        data = self.forwarded_copy("sealed")
        self.assertRegex(data, rb"^ARC-Seal: i=1; a=rsa-sha256; s=\w+; d=fwd\.example\.com; cv=none;")
        cv, results, comment = dkim.arc_verify(data, dnsfunc=self.dns_txt)
        self.assertEqual(cv, dkim.CV_Pass, comment)
        aar = re.search(rb"^ARC-Authentication-Results: i=1; ([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", data, re.M)
        self.assertRegex(aar.group(1), rb"spf=\w+ ")
        self.assertFalse(dkim.arc_verify(data.replace(b"Hello.", b"Hello!"), dnsfunc=self.dns_txt)[0] == dkim.CV_Pass)
        self.server.wait_for_log(r"ARC-sealed for fwd\.example\.com")
        self.assertEqual([code for code, _ in self.send("kim@origin.test", ["alice@example.com"], "kept")], [250])
        (copy,) = self.maildir_copies("kept")
        self.assertNotIn(b"ARC-Seal:", copy.read_bytes())

    def test_a_chain_that_arrives_sealed_is_continued(self):
        raw = arc_seal(message("chain"), "list.test", self.list_key, "spf=pass smtp.mailfrom=origin.test")
        self.assertEqual([code for code, _ in self.send("lou@origin.test", ["fwd@example.com"], "chain", raw)], [250])
        data = self.forwarded_copy("chain")
        self.assertRegex(data, rb"^ARC-Seal: i=2; a=rsa-sha256; s=\w+; d=fwd\.example\.com; cv=pass;")
        cv, _, comment = dkim.arc_verify(data, dnsfunc=self.dns_txt)
        self.assertEqual(cv, dkim.CV_Pass, comment)

    def test_a_list_keeps_local_members_here_and_forwards_the_others_in_one_delivery(self):
        before = prometheus(self.metrics_port).get("waraka_forwarded_recipients_total", 0)
        self.assertEqual([code for code, _ in self.send("bob@origin.test", ["team@example.com"], "list")], [250])
        self.assertEqual(prometheus(self.metrics_port)["waraka_forwarded_recipients_total"], before + 2)
        (sender, recipients), = self.arrived(self.elsewhere, "list")
        self.assertEqual((sender, sorted(recipients)),
                         (srs0("bob", "origin.test"), ["friend@elsewhere.test", "pal@elsewhere.test"]))
        copies = self.maildir_copies("list")
        self.assertEqual([p.relative_to(self.server.dir / "maildir").parts[:2] for p in copies],
                         [("example.com", "alice")])
        self.assertNotIn(b"SRS0", copies[0].read_bytes(), "the local copy keeps its sender")

    def test_a_message_the_local_queue_refuses_is_not_forwarded_either(self):
        folder = self.server.dir / "maildir" / "example.com" / "carl"
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.write_text("a file where carl's maildir should be\n")
        try:
            with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
                s.ehlo()
                s.mail("erin@origin.test")
                self.assertEqual(s.rcpt("crew@example.com")[0], 250)
                code, text = s.data(message("crew"))
            self.assertEqual(code, 451, text)
            self.server.wait_for_log(r'refused hook=queue plugin="queue/maildir" verdict="denysoft" code=451')
            queued = [json.loads(p.read_text()) for p in (self.server.dir / "queue/outbound").glob("*.json")]
            self.assertEqual([e for e in queued if "mate@elsewhere.test" in e["recipients"]], [],
                             "the copy stored for forwarding was removed")
        finally:
            folder.unlink()
        # The client's retry: one copy for each, here and there.
        self.assertEqual([code for code, _ in self.send("erin@origin.test", ["crew@example.com"], "crew")], [250])
        self.assertEqual(self.arrived(self.elsewhere, "crew"), [(srs0("erin", "origin.test"), ["mate@elsewhere.test"])])
        self.assertEqual(len(self.maildir_copies("crew")), 1)
        time.sleep(1)
        self.assertEqual(len(self.arrived(self.elsewhere, "crew")), 1, "never a second forwarded copy")

    def test_a_bounce_to_the_rewritten_sender_goes_back_to_the_original(self):
        rewritten = srs0("carol", "origin.test")
        replies = self.send("", [rewritten], "bounce")
        self.assertEqual([code for code, _ in replies], [250], replies)
        self.assertEqual(self.arrived(self.origin, "bounce"), [("", ["carol@origin.test"])])
        # An address made with the older secret still leads back.
        older = srs0("dave", "origin.test", secret="an-older-secret")
        self.assertEqual([code for code, _ in self.send("", [older], "older secret")], [250])
        self.assertEqual(self.arrived(self.origin, "older secret"), [("", ["dave@origin.test"])])

    def test_a_forwarded_message_that_bounces_is_reported_to_the_original_sender(self):
        self.assertEqual([code for code, _ in self.send("judy@origin.test", ["gone@example.com"], "gone")], [250])
        (sender, recipients), = self.arrived(self.origin, "gone")
        self.assertEqual((sender, recipients), ("", ["judy@origin.test"]), "straight back, not to the SRS address")
        dsn = [m[2] for m in self.origin.received() if b"Subject: gone\r\n" in m[2]][0]
        self.assertIn(b"Final-Recipient: rfc822; bad-user@elsewhere.test", dsn)
        self.assertIn(b"Status: 5.1.1", dsn)
        self.assertIn(b"To: <judy@origin.test>", dsn)

    def test_forged_altered_and_expired_srs_addresses_are_refused(self):
        before = prometheus(self.metrics_port).get('waraka_srs_reversals_total{result="invalid"}', 0)
        good = srs0("erin", "origin.test")
        forged = srs0("erin", "origin.test", secret="guessed")
        altered = good.replace("=erin@", "=mallory@")
        expired = srs0("erin", "origin.test", day=int(time.time() // 86400) - 22)
        replies = self.send("", [forged, altered, expired], "forged")
        self.assertEqual([code for code, _ in replies], [550, 550, 550])
        self.assertIn(b"5.1.1 Invalid bounce address: the SRS hash does not match", replies[0][1])
        self.assertIn(b"has expired", replies[2][1])
        self.server.wait_for_log(r"refused: the SRS address has expired")
        self.assertEqual(prometheus(self.metrics_port)['waraka_srs_reversals_total{result="invalid"}'], before + 3)

    def test_a_forwarded_bounce_and_a_forwarded_forward_keep_their_chains(self):
        # A bounce to a forwarded alias keeps the null sender.
        self.assertEqual([code for code, _ in self.send("", ["fwd@example.com"], "null sender")], [250])
        self.assertEqual(self.arrived(self.elsewhere, "null sender"), [("", ["friend@elsewhere.test"])])
        # Mail already forwarded once (an SRS0 sender of another forwarder) leaves as SRS1.
        first = "SRS0=ab12=JX=origin.test=frank@first.test"
        self.assertEqual([code for code, _ in self.send(first, ["fwd@example.com"], "second hop")], [250])
        (sender, _), = self.arrived(self.elsewhere, "second hop")
        self.assertRegex(sender, r"^SRS1=[A-Za-z0-9+/]{4}=first\.test==ab12=JX=origin\.test=frank@fwd\.example\.com$")
        # Its bounce goes back to the first forwarder's address.
        self.assertEqual([code for code, _ in self.send("", [sender], "second hop bounce")], [250])
        self.assertEqual(self.arrived(self.origin, "second hop bounce"), [("", [first])])

    def test_an_alias_of_a_local_part_forwards_only_for_local_domains(self):
        replies = self.send("grace@origin.test", ["postmaster@example.com", "postmaster@foreign.test"], "postmaster")
        self.assertEqual([code for code, _ in replies], [250, 550], "no relaying through postmaster@any-domain")
        self.assertEqual(self.arrived(self.elsewhere, "postmaster"),
                         [(srs0("grace", "origin.test"), ["friend@elsewhere.test"])])


class ForwardingSetupTest(unittest.TestCase):
    """Instances that forward without SRS, or cannot forward at all."""

    def test_without_a_secret_the_sender_is_kept_and_without_the_grant_the_alias_waits(self):
        dns = dnsmasq(RECORDS)
        port = free_port("127.0.0.2")
        elsewhere = SmtpReceiver("127.0.0.2", port, name="mx.elsewhere.test")
        plain = Waraka(["srs", "aliases", "rcpt_to.in_host_list", "queue/maildir"],
                       setup=forwarding_setup(dns.port, port, srs=False))
        ungranted = Waraka(["aliases", "rcpt_to.in_host_list", "queue/maildir"],
                           setup=forwarding_setup(dns.port, port, grant=False))
        try:
            with smtplib.SMTP("127.0.0.1", plain.port, timeout=30) as s:
                self.assertEqual(s.sendmail("henry@origin.test", ["fwd@example.com"], message("plain")), {})
                # Without a secret no address is an SRS address of ours.
                s.mail("")
                code, _ = s.rcpt(srs0("henry", "origin.test"))
            self.assertEqual(code, 550)
            got = elsewhere.wait_for(1)
            self.assertEqual([(m[0], m[1]) for m in got], [("henry@origin.test", ["friend@elsewhere.test"])])
            with smtplib.SMTP("127.0.0.1", ungranted.port, timeout=30) as s:
                s.ehlo()
                s.mail("ivy@origin.test")
                code, text = s.rcpt("fwd@example.com")
            self.assertEqual((code, text), (451, b"4.3.0 Recipient alias cannot be forwarded, try later"))
            ungranted.wait_for_log(r"cannot forward to <?friend@elsewhere\.test>?: forwarding needs the outbound-queue grant")
        finally:
            plain.stop()
            ungranted.stop()
            elsewhere.stop()
            dns.stop()


if __name__ == "__main__":
    unittest.main()
