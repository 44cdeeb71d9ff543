"""auth-results and dmarc end to end: messages signed and ARC-sealed with
dkimpy (an independent DKIM and ARC implementation) by keys made here, SPF,
DKIM and DMARC records served by a dnsmasq on loopback, sent with smtplib to
a real waraka."""

import base64
import email
import email.utils
import re
import smtplib
import subprocess
import unittest

import dkim

from harness import Waraka, dnsmasq, free_port


def rsa_key():
    """A fresh 2048-bit RSA key: (private key PEM, public key as DKIM p= base64)."""
    private = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                             check=True, capture_output=True).stdout
    public = subprocess.run(["openssl", "pkey", "-pubout", "-outform", "DER"], input=private,
                            check=True, capture_output=True).stdout
    return private, base64.b64encode(public).decode()


def txt(name, text):
    """A dnsmasq TXT record; long texts are split into 200-byte strings (the
    text must not contain commas, which separate them)."""
    parts = [text[i:i + 200] for i in range(0, len(text), 200)]
    return f"--txt-record={name}," + ",".join(parts)


def message(author, subject="hello", body="Hi.\r\n"):
    return (f"From: Author <{author}>\r\nTo: rcpt@example.com\r\nSubject: {subject}\r\n"
            f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{subject.replace(' ', '.')}@test>\r\n\r\n{body}").encode()


def sign(raw, domain, key):
    return dkim.sign(raw, b"sel", domain.encode(), key,
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + raw


def arc_seal(raw, sealer, key, saw):
    """`raw` as forwarder `sealer` passes it on: its own Authentication-Results
    field recording what it `saw`, then its ARC set (RFC 8617) on top."""
    received = f"Authentication-Results: {sealer}; {saw}\r\n".encode() + raw
    arc_set = dkim.arc_sign(received, b"sel", sealer.encode(), key, sealer.encode(),
                            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    assert arc_set, "dkimpy made no ARC set"
    return b"".join(arc_set) + received


def list_post(key, subject):
    """A post by a@signed.test (p=reject), DKIM-signed by its domain, whose
    subject a mailing list then tags: the author's signature breaks."""
    signed = sign(message("a@signed.test", subject), "signed.test", key)
    return signed.replace(f"Subject: {subject}".encode(), f"Subject: [list] {subject}".encode())


SAW_PASS = "dkim=pass header.d=signed.test; dmarc=pass header.from=signed.test"


class AuthResultsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.key, public = rsa_key()
        dead = free_port()
        cls.dns = dnsmasq([
            txt("sel._domainkey.signed.test", f"v=DKIM1; k=rsa; p={public}"),
            txt("sel._domainkey.list.test", f"v=DKIM1; k=rsa; p={public}"),
            txt("sel._domainkey.other-list.test", f"v=DKIM1; k=rsa; p={public}"),
            txt("_dmarc.signed.test", "v=DMARC1; p=reject"),
            txt("signed.test", "v=spf1 ip4:192.0.2.1 -all"),
            txt("spf.test", "v=spf1 ip4:127.0.0.0/8 -all"),
            txt("_dmarc.spf.test", "v=DMARC1; p=reject"),
            txt("quarantine.test", "v=spf1 -all"),
            txt("_dmarc.quarantine.test", "v=DMARC1; p=quarantine"),
            txt("lenient.test", "v=spf1 -all"),
            txt("_dmarc.lenient.test", "v=DMARC1; p=none"),
            txt("other.test", "v=spf1 -all"),
            "--local=/test/",  # names not listed here are NXDOMAIN, not REFUSED
            f"--server=/servfail.test/127.0.0.1#{dead}",
        ])

        def setup(server):
            server.edit("waraka.toml", lambda t: t + f'\n[dns]\nservers = ["127.0.0.1:{cls.dns.port}"]\ntimeout = "1s"\n')
            server.edit("config/host_list", lambda t: t + "example.com\n")
            server.edit("config/dmarc.ini", lambda t: t.replace("trusted_arc_sealers =", "trusted_arc_sealers = list.test"))

        cls.server = Waraka(["auth-results", "dmarc", "rcpt_to.in_host_list", "queue/maildir"], setup=setup)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.dns.stop()

    def send(self, sender, raw, server=None):
        before = set((server or self.server).maildir())
        with smtplib.SMTP("127.0.0.1", (server or self.server).port, local_hostname="client.example", timeout=30) as s:
            s.ehlo()
            s.mail(sender)
            s.rcpt("rcpt@example.com")
            code, text = s.data(raw)
            if code != 250:
                return code, text.decode(), None
        stored = [p for p in (server or self.server).maildir() if p not in before]
        self.assertEqual(len(stored), 1)
        return 250, "", email.message_from_bytes(stored[0].read_bytes())

    def test_a_signed_message_passes_dkim_and_dmarc_and_is_recorded(self):
        code, _, stored = self.send("bounce@other.test", sign(message("a@signed.test", "signed"), "signed.test", self.key))
        self.assertEqual(code, 250)
        results = " ".join(stored["Authentication-Results"].split())
        self.assertTrue(results.startswith(self.server_hostname() + ";"), results)
        self.assertIn("dkim=pass", results)
        self.assertIn("header.i=@signed.test header.s=sel", results)
        self.assertIn("spf=fail", results, "other.test allows no one")
        self.assertIn("dmarc=pass", results)
        self.server.wait_for_log(r"spf=fail \(other\.test\) dkim=pass signed\.test arc=none dmarc=pass \(signed\.test, policy reject\)")

    def test_fields_claiming_this_servers_name_are_removed_and_others_kept(self):
        host = self.server_hostname()
        forged = [f"{host}; dkim=pass header.d=bank.test; dmarc=pass header.from=bank.test",
                  f'(looks older) "{host.upper()}" 1; spf=pass smtp.mailfrom=bank.test']
        kept = ["other.example; spf=pass smtp.mailfrom=spf.test", f"{host}.evil.test; dkim=pass header.d=bank.test"]
        fields = "".join(f"Authentication-Results: {value}\r\n" for value in (forged[0], kept[0], forged[1], kept[1]))
        code, _, stored = self.send("a@spf.test", fields.encode() + message("b@spf.test", "forged results"))
        self.assertEqual(code, 250)
        values = [" ".join(v.split()) for v in stored.get_all("Authentication-Results")]
        self.assertEqual(len(values), 3, values)
        self.assertTrue(values[0].startswith(f"{host}; spf=pass"), values[0])
        self.assertEqual(values[1:], kept, "other servers' fields stay, in order")
        self.server.wait_for_log(rf"removed 2 Authentication-Results field\(s\) claiming to be from {re.escape(host)}")

    def test_a_message_changed_after_signing_is_rejected_by_p_reject(self):
        signed = sign(message("a@signed.test", "tampered"), "signed.test", self.key)
        code, text, _ = self.send("a@signed.test", signed.replace(b"Hi.", b"Hi!"))
        self.assertEqual((code, text), (550, "5.7.1 Message rejected by the DMARC policy of signed.test"))

    def test_an_aligned_spf_pass_satisfies_dmarc_without_a_signature(self):
        code, _, stored = self.send("a@spf.test", message("b@spf.test", "spf pass"))
        self.assertEqual(code, 250)
        results = " ".join(stored["Authentication-Results"].split())
        self.assertIn("spf=pass", results)
        self.assertNotIn("dkim=", results, "no signature, no dkim result")
        self.assertIn("dmarc=pass", results)

    def test_p_quarantine_marks_the_message(self):
        code, _, stored = self.send("a@quarantine.test", message("a@quarantine.test", "quarantined"))
        self.assertEqual(code, 250)
        self.assertEqual(stored["X-Quarantine"], "dmarc; domain=quarantine.test")
        self.assertIn("dmarc=fail", " ".join(stored["Authentication-Results"].split()))

    def test_p_none_only_records_the_failure(self):
        code, _, stored = self.send("a@lenient.test", message("a@lenient.test", "lenient"))
        self.assertEqual(code, 250)
        self.assertIsNone(stored["X-Quarantine"])
        self.assertIn("dmarc=fail", " ".join(stored["Authentication-Results"].split()))

    def test_a_trusted_forwarders_arc_seal_forgives_the_dmarc_failure_its_change_caused(self):
        code, _, stored = self.send("bounce@list.test", arc_seal(list_post(self.key, "trusted list"), "list.test",
                                                                 self.key, SAW_PASS))
        self.assertEqual(code, 250)
        results = " ".join(stored["Authentication-Results"].split())
        self.assertIn("dkim=fail", results, "the tag broke the author's signature")
        self.assertIn("arc=pass smtp.remote-ip=127.0.0.1", results)
        self.assertIn("dmarc=fail", results)
        self.server.wait_for_log(r"arc=pass \(list\.test\) dmarc=fail \(signed\.test, policy reject\)")
        self.server.wait_for_log(r"DMARC fails for signed\.test, accepted: trusted ARC sealer list\.test saw it pass")

    def test_arc_does_not_forgive_an_untrusted_sealer_a_broken_chain_or_a_failure_the_sealer_saw(self):
        cases = {
            "untrusted": arc_seal(list_post(self.key, "untrusted list"), "other-list.test", self.key, SAW_PASS),
            "changed after the seal": arc_seal(list_post(self.key, "changed list"), "list.test", self.key,
                                               SAW_PASS).replace(b"Hi.", b"Hi!"),
            "saw a failure": arc_seal(list_post(self.key, "failed list"), "list.test", self.key,
                                      "dkim=fail header.d=signed.test; dmarc=fail header.from=signed.test"),
        }
        for case, raw in cases.items():
            with self.subTest(case):
                code, text, _ = self.send("bounce@list.test", raw)
                self.assertEqual((code, text), (550, "5.7.1 Message rejected by the DMARC policy of signed.test"))
        self.server.wait_for_log(r"arc=pass \(other-list\.test\) dmarc=fail")
        self.server.wait_for_log(r"arc=(fail|neutral) \(list\.test\) dmarc=fail")

    def test_a_dns_failure_is_a_temporary_failure_not_an_accept(self):
        code, text, _ = self.send("a@x.servfail.test", message("a@x.servfail.test", "servfail"))
        self.assertEqual((code, text[:6]), (451, "4.4.3 "))

    def test_without_the_grant_dmarc_tempfails_and_auth_results_lets_mail_through(self):
        def ungranted(server):
            server.edit("waraka.toml", lambda t: t.replace('grants = ["authentication"]', "grants = []"))
            server.edit("config/host_list", lambda t: t + "example.com\n")

        for chain, expected in ((["dmarc", "rcpt_to.in_host_list", "queue/maildir"], 451),
                                (["auth-results", "rcpt_to.in_host_list", "queue/maildir"], 250)):
            server = Waraka(chain, setup=ungranted)
            try:
                code, _, stored = self.send("a@signed.test", message("a@signed.test", "ungranted"), server=server)
                self.assertEqual(code, expected, chain)
                if stored:
                    self.assertIsNone(stored["Authentication-Results"])
            finally:
                server.stop()

    def server_hostname(self):
        line = self.server.wait_for_log(r"hostname=")
        return line.split("hostname=")[1].split()[0].strip('"')


if __name__ == "__main__":
    unittest.main()
