"""milter end to end: Debian's OpenDKIM, started here as a milter, is shown
what smtplib sends to a real waraka. The host speaks the milter protocol;
the plugin applies what OpenDKIM asks for: a DKIM signature that dkimpy
verifies, an Authentication-Results field, a refusal, a quarantine or a
discard; a milter that cannot be reached defers the message."""

import email
import smtplib
import unittest

import dkim

from harness import (
    Waraka, clamav_milter, clamd, free_port, opendkim, prometheus, rspamd, scripted_milter, stopped_after_class,
)
from test_clamd import MARKER, SIGNATURE
from test_rspamd import message as rspamd_message
from test_dkim_sign import openssl_rsa_key


def message(subject, author="a@sender.test"):
    return (f"From: Author <{author}>\r\nTo: rcpt@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@sender.test>\r\nDate: Fri, 04 Dec 2026 08:00:00 +0000\r\n"
            "\r\nHello,\r\n\r\n.leading dot and a long line " + "x" * 990 + "\r\nBye.\r\n").encode()


def instance(milters, metrics_port=None, plugins=("queue/maildir",), hostname=None):
    """A server whose `[milter.NAME]` sections name `milters` (name:
    address), all granted to the milter plugin and asked in order."""

    def setup(server):
        if hostname:
            server.edit("waraka.toml", lambda t: t.replace('# hostname = "mx.example.com"', f'hostname = "{hostname}"', 1))
        sections = "".join(f'\n[milter.{name}]\naddress = "{address}"\n' for name, address in milters.items())
        grants = ", ".join(f'"milter:{name}"' for name in milters)
        server.edit("waraka.toml", lambda t: t + f"{sections}\n[plugin.milter]\ngrants = [{grants}]\n")
        server.edit("config/milter.ini",
                    lambda t: t.replace("milters =", "milters = " + ", ".join(milters), 1))
        server.edit("config/host_list", lambda t: t + "example.com\n")
        if metrics_port:
            server.enable_metrics(metrics_port)

    return Waraka(["rcpt_to.in_host_list", "milter", *plugins], setup=setup)


class MilterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        private, public = openssl_rsa_key()
        cls.records = {"mil2026._domainkey.sender.test": f"v=DKIM1; k=rsa; p={public}"}
        cls.signer = stopped_after_class(cls, opendkim(
            "Mode s\nDomain sender.test\nSelector mil2026\nKeyFile {dir}/key.pem\n"
            "Canonicalization relaxed/simple\nInternalHosts 127.0.0.1\nRequireSafeKeys false\n",
            files={"key.pem": private}))
        cls.verifier = {
            action: stopped_after_class(cls, opendkim(
                f"Mode v\nOn-NoSignature {action}\n" + ("AlwaysAddARHeader true\n" if action == "accept" else "")))
            for action in ("accept", "reject", "discard")}
        cls.clamd = stopped_after_class(cls, clamd([f"{SIGNATURE}:0:*:{MARKER.hex()}"]))
        cls.clamav = {action: stopped_after_class(cls, clamav_milter(cls.clamd.port,
                                                                     f"OnInfected {action}\nAddHeader Replace\n"))
                      for action in ("Quarantine", "Reject")}
        cls.metrics_port = free_port()
        cls.server = stopped_after_class(cls, instance({"dkim": f"127.0.0.1:{cls.signer.port}"}, cls.metrics_port))

    def dns_txt(self, name, timeout=5):
        record = self.records.get(name.decode().rstrip("."))
        return record.encode() if record else None

    def test_opendkim_signs_and_dkimpy_verifies_the_signature(self):
        code, _, stored = self.server.deliver(message("sign me"))
        self.assertEqual(code, 250)
        parsed = email.message_from_bytes(stored[0])
        self.assertRegex(parsed["DKIM-Signature"], r"d=sender\.test;\s+s=mil2026;")
        self.assertTrue(dkim.verify(stored[0], dnsfunc=self.dns_txt), "the header and body OpenDKIM saw are the stored ones")
        self.assertFalse(dkim.verify(stored[0].replace(b"Bye.", b"Bye!"), dnsfunc=self.dns_txt))
        self.server.wait_for_log(r"milter dkim: inserted DKIM-Signature at 0")
        self.assertGreaterEqual(
            prometheus(self.metrics_port).get('waraka_milter_checks_total{milter="dkim",decision="accept"}'), 1)

    def test_a_verifier_adds_its_results_under_the_servers_name(self):
        server = instance({"verify": f"127.0.0.1:{self.verifier['accept'].port}"}, hostname="mx.milter.test")
        try:
            code, _, stored = server.deliver(message("verify me"))
        finally:
            server.stop()
        self.assertEqual(code, 250)
        results = email.message_from_bytes(stored[0])["Authentication-Results"]
        self.assertRegex(results, r"^mx\.milter\.test;\s*dkim=none", "the j macro names the server")

    def test_signing_then_verifying_runs_both_milters_in_order(self):
        server = instance({"dkim": f"127.0.0.1:{self.signer.port}",
                           "verify": f"127.0.0.1:{self.verifier['reject'].port}"})
        try:
            code, _, stored = server.deliver(message("both"))
            refused = server.deliver(message("unsigned", author="a@other.test"), sender="a@other.test")
        finally:
            server.stop()
        self.assertEqual(code, 250, "signed by the first milter, so the second finds a signature")
        self.assertIn("DKIM-Signature", email.message_from_bytes(stored[0]))
        self.assertEqual(refused[0], 550, refused)
        self.assertEqual(refused[2], [])

    def test_a_milters_reject_is_the_messages_reply(self):
        server = instance({"verify": f"127.0.0.1:{self.verifier['reject'].port}"})
        try:
            code, text, stored = server.deliver(message("refuse me"))
            server.wait_for_log(r"milter verify: rejected: 550")
        finally:
            server.stop()
        self.assertEqual((code, stored), (550, []))
        self.assertRegex(text, r"^5\.7\.\d ")

    def test_clamav_milters_quarantine_keeps_the_message_and_its_header_is_replaced(self):
        server = instance({"clamav": f"127.0.0.1:{self.clamav['Quarantine'].port}"},
                          plugins=("queue/quarantine", "queue/maildir"))
        try:
            clean = server.deliver(message("clean").replace(b"\r\n\r\n", b"\r\nX-Virus-Status: Clean, forged\r\n\r\n", 1))
            code, text, stored = server.deliver(message("infected").replace(b"Bye.", MARKER))
            kept = [p for p in (server.dir / "quarantine").rglob("*.eml")]
            kept_text = kept[0].read_bytes() if kept else b""
        finally:
            server.stop()
        self.assertEqual(clean[0], 250)
        self.assertEqual(email.message_from_bytes(clean[2][0]).get_all("X-Virus-Status"), ["Clean"],
                         "the client's field is replaced (SMFIR_CHGHEADER)")
        self.assertEqual(code, 250)
        self.assertRegex(text, r"Message quarantined as ")
        self.assertEqual(stored, [], "not delivered")
        self.assertEqual(len(kept), 1)
        self.assertRegex(kept_text.split(b"\r\n")[0].decode(), r"^X-Quarantine-Reason: quarantine=milter clamav: ")
        self.assertRegex(kept_text.decode(), rf"X-Virus-Status: Infected \({SIGNATURE}")

    def test_clamav_milters_reject_refuses_an_infected_message(self):
        server = instance({"clamav": f"127.0.0.1:{self.clamav['Reject'].port}"})
        try:
            code, text, stored = server.deliver(message("infected").replace(b"Bye.", MARKER))
        finally:
            server.stop()
        self.assertEqual((code, stored), (550, []))
        self.assertRegex(text, r"^5\.7\.1 ")

    def test_a_milters_discard_accepts_and_delivers_nowhere(self):
        server = instance({"verify": f"127.0.0.1:{self.verifier['discard'].port}"})
        try:
            code, text, stored = server.deliver(message("drop me"))
        finally:
            server.stop()
        self.assertEqual((code, text, stored), (250, "2.0.0 Message discarded by milter verify", []))

    def test_an_unreachable_milter_defers_or_is_passed_over(self):
        server = instance({"gone": f"127.0.0.1:{free_port()}"})
        try:
            with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.example", timeout=30) as s:
                s.ehlo()
                deferred = s.mail("a@sender.test")
            server.wait_for_log(r"milter gone failed: .*Backend")
            server.set_settings("milter.ini", live="false")
            code, text, stored = server.deliver(message("later"))
            server.set_settings("milter.ini", on_error="continue")
            passed = server.deliver(message("anyway"))
        finally:
            server.stop()
        self.assertEqual(deferred, (451, b"4.7.1 Message filter unavailable, try again later"), "live: at MAIL")
        self.assertEqual((code, text, stored), (451, "4.7.1 Message filter unavailable, try again later", []),
                         "after DATA")
        self.assertEqual(passed[0], 250)
        self.assertEqual(len(passed[2]), 1)


class RspamdMilterTest(unittest.TestCase):
    """rspamd's own milter (its proxy worker), which is not libmilter: the
    GTUBE patterns its rules act on become a refusal, added fields and a
    rewritten Subject."""

    @classmethod
    def setUpClass(cls):
        cls.rspamd = stopped_after_class(cls, rspamd(milter=True))
        cls.server = stopped_after_class(cls, instance({"rspamd": f"127.0.0.1:{cls.rspamd.milter_port}"}))

    def test_rspamds_reject_is_the_messages_reply(self):
        code, text, stored = self.server.deliver(rspamd_message("reject me", "X"))
        self.assertEqual((code, stored), (554, []))
        self.assertEqual(text, "5.7.1 Gtube pattern")

    def test_add_header_and_rewrite_subject_become_header_changes(self):
        code, _, stored = self.server.deliver(rspamd_message("mark me", "Y"))
        self.assertEqual(code, 250)
        marked = email.message_from_bytes(stored[0])
        self.assertEqual(marked["X-Spam"], "Yes")
        code, _, stored = self.server.deliver(rspamd_message("rewrite me", "Z"))
        self.assertEqual(code, 250)
        self.assertEqual(email.message_from_bytes(stored[0]).get_all("Subject"), ["*** SPAM *** rewrite me"])

    def test_clean_mail_passes(self):
        code, _, stored = self.server.deliver(rspamd_message("fine", "A"))
        self.assertEqual(code, 250)
        self.assertEqual(len(stored), 1)


class LiveMilterTest(unittest.TestCase):
    """A conversation that lasts the client's connection, as Postfix's
    smtpd_milters: a libmilter milter answers the sender at MAIL and each
    recipient at RCPT."""

    @classmethod
    def setUpClass(cls):
        cls.milter = stopped_after_class(cls, scripted_milter())
        cls.server = stopped_after_class(cls, instance({"scripted": f"127.0.0.1:{cls.milter.port}"}))

    def client(self, helo="client.example"):
        client = smtplib.SMTP("127.0.0.1", self.server.port, local_hostname=helo, timeout=30)
        self.addCleanup(client.close)
        client.ehlo()
        return client

    def stored(self, subject):
        return [email.message_from_bytes(p.read_bytes()) for p in self.server.maildir()
                if f"Subject: {subject}\r\n".encode() in p.read_bytes()]

    def test_one_recipient_is_refused_at_rcpt_and_the_others_go_on(self):
        s = self.client()
        self.assertEqual(s.mail("a@sender.test")[0], 250)
        self.assertEqual(s.rcpt("ok@example.com")[0], 250)
        self.assertEqual(s.rcpt("blocked@example.com"), (550, b"5.7.1 Recipient blocked by the test milter"))
        self.assertEqual(s.rcpt("two@example.com")[0], 250)
        self.assertEqual(s.data(message("some refused"))[0], 250)
        stored = self.stored("some refused")
        self.assertEqual(len(stored), 2, "a copy for each recipient left")
        self.assertEqual(stored[0]["X-Scripted-Milter"], "seen ok@example.com,two@example.com")

    def test_a_sender_is_deferred_at_mail_and_the_next_one_goes_on(self):
        s = self.client()
        self.assertEqual(s.mail("later@sender.test"), (451, b"4.7.1 Sender deferred by the test milter"))
        self.assertEqual(s.mail("a@sender.test")[0], 250)
        self.assertEqual(s.rcpt("rcpt@example.com")[0], 250)
        self.assertEqual(s.data(message("after a deferral"))[0], 250)
        self.assertEqual(len(self.stored("after a deferral")), 1)

    def test_a_transaction_given_up_is_aborted_before_the_next(self):
        s = self.client()
        s.mail("a@sender.test")
        s.rcpt("first@example.com")
        self.assertEqual(s.rset()[0], 250)
        s.mail("a@sender.test")
        s.rcpt("second@example.com")
        self.assertEqual(s.data(message("second try"))[0], 250)
        s.mail("a@sender.test")
        s.rcpt("third@example.com")
        self.assertEqual(s.data(message("third try"))[0], 250, "after the end of a message, no abort is needed")
        self.assertEqual(self.stored("second try")[0]["X-Scripted-Milter"], "seen second@example.com")
        self.assertEqual(self.stored("third try")[0]["X-Scripted-Milter"], "seen third@example.com")

    def test_header_changes_keep_their_places(self):
        s = self.client()
        s.mail("edit@sender.test")
        s.rcpt("rcpt@example.com")
        self.assertEqual(s.data(message("edited in place"))[0], 250)
        (stored,) = self.stored("edited in place")
        self.assertEqual(stored.keys()[:2], ["Return-Path", "Delivered-To"], "queue/maildir's")
        self.assertEqual(stored.keys()[2:], ["Received", "X-Inserted", "From", "To", "Subject", "Message-ID", "Date",
                                         "X-Scripted-Milter"],
                         "inserted at the milter's position, changed in place, added at the end")
        self.assertEqual((stored["To"], stored["X-Inserted"]), ("changed@example.com", "second"))

    def test_the_milter_replaces_the_body(self):
        s = self.client()
        s.mail("body@sender.test")
        s.rcpt("rcpt@example.com")
        self.assertEqual(s.data(message("new body"))[0], 250)
        (stored,) = [p.read_bytes() for p in self.server.maildir() if b"Subject: new body\r\n" in p.read_bytes()]
        header, body = stored.split(b"\r\n\r\n", 1)
        self.assertEqual(body, b"The milter's own body,\r\nin two chunks.\r\n", "joined, the bare LF made CRLF")
        self.assertIn(b"X-Scripted-Milter: seen rcpt@example.com", header, "header changes apply too")
        self.server.wait_for_log(r"milter replaced the message body milter=\"?scripted")

    def test_the_milter_removes_a_recipient_and_changes_the_sender(self):
        s = self.client()
        s.mail("rewrite@sender.test")
        for recipient in ("keep@example.com", "drop@example.com"):
            self.assertEqual(s.rcpt(recipient)[0], 250)
        self.assertEqual(s.data(message("rewritten"))[0], 250)
        stored = self.stored("rewritten")
        self.assertEqual(len(stored), 1, "drop@ was removed")
        self.assertEqual(stored[0]["Delivered-To"], "keep@example.com")
        self.assertEqual(stored[0]["Return-Path"], "<rewritten@sender.test>")
        self.server.wait_for_log(r"milter scripted: removed recipient drop@example\.com")

    def test_the_last_recipient_is_not_removed(self):
        s = self.client()
        s.mail("a@sender.test")
        self.assertEqual(s.rcpt("drop@example.com")[0], 250)
        self.assertEqual(s.data(message("only drop"))[0], 250)
        self.assertEqual(len(self.stored("only drop")), 1, "delivered to its one recipient")
        self.server.wait_for_log(r'milter scripted: could not apply "removed recipient drop@example\.com": '
                                 r'Error::Invalid\("the last recipient stays')

    def test_a_client_the_milter_refused_gets_each_sender_refused(self):
        s = self.client(helo="refused.example")
        for _ in range(2):
            self.assertEqual(s.mail("a@sender.test"), (554, b"5.7.1 Client refused by the test milter"))

    def test_without_live_a_refused_recipient_refuses_the_message_after_data(self):
        self.server.set_settings("milter.ini", live="false")
        try:
            s = self.client()
            s.mail("a@sender.test")
            self.assertEqual(s.rcpt("blocked@example.com")[0], 250, "the milter is not asked yet")
            self.assertEqual(s.data(message("refused late")), (550, b"5.7.1 Recipient blocked by the test milter"))
        finally:
            self.server.set_settings("milter.ini", live="true")


if __name__ == "__main__":
    unittest.main()
