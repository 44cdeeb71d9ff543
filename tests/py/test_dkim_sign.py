"""dkim_sign and signed bounces end to end: a relaying client hands mail to a
real waraka, whose outbound queue delivers it through MX records served by a
real dnsmasq to receivers on loopback; the delivered copies, and the bounce
of a refused one, are verified with dkimpy (an independent DKIM
implementation) against keys made here by openssl."""

import base64
import re
import smtplib
import subprocess
import time
import unittest

import dkim

from harness import BIN, SmtpReceiver, Waraka, dnsmasq, free_port, prometheus
from test_outbound import relay_setup, wait_until

RECORDS = ["--local=/test/", "--mx-host=dest.test,mx.dest.test,10", "--host-record=mx.dest.test,127.0.0.2",
           "--mx-host=sender.test,mx.sender.test,10", "--host-record=mx.sender.test,127.0.0.3"]


def refuse_bad(address, attempt):
    return "550 5.1.1 No such user here" if address.startswith("bad-") else "250 2.1.5 OK"


def openssl_rsa_key():
    """A fresh RSA key as older tools (and Haraka's key script) write it,
    PKCS#1 PEM, and its DKIM `p=` value (the SubjectPublicKeyInfo)."""
    private = subprocess.run(["openssl", "genrsa", "-traditional", "2048"], check=True, capture_output=True).stdout
    public = subprocess.run(["openssl", "pkey", "-pubout", "-outform", "DER"], input=private,
                            check=True, capture_output=True).stdout
    return private, base64.b64encode(public).decode()


def waraka_key(instance, domain, *options):
    """`waraka dkim-key` for `domain`: the (name, TXT value) it says to publish."""
    line = subprocess.run([BIN, "dkim-key", domain, "--config", str(instance), *options],
                          check=True, capture_output=True, text=True).stdout
    name = line.split()[0].rstrip(".")
    return name, "".join(re.findall(r'"([^"]*)"', line))


def message(author, subject):
    return (f"From: Author <{author}>\r\nTo: someone@dest.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@test>\r\nDate: Fri, 04 Dec 2026 08:00:00 +0000\r\n"
            "\r\nHello.\r\n").encode()


class DkimSignTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = dnsmasq(RECORDS)
        cls.port = free_port("127.0.0.2", "127.0.0.3")
        cls.mx = SmtpReceiver("127.0.0.2", cls.port, refuse_bad, name="mx.dest.test")
        cls.mailbox = SmtpReceiver("127.0.0.3", cls.port, name="mx.sender.test")
        rsa_private, rsa_public = openssl_rsa_key()
        cls.records = {"rsa2026._domainkey.sender.test": f"v=DKIM1; k=rsa; p={rsa_public}"}
        keys = {"sender.test": ("rsa2026", rsa_private),
                "broken.test": ("sel", b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")}
        cls.metrics_port = free_port()
        relay = relay_setup(cls.dns.port, cls.port, extra=f'\n[metrics]\nlisten = "127.0.0.1:{cls.metrics_port}"\n')

        def setup(server):
            relay(server)
            server.edit("waraka.toml", lambda t: t.replace('# hostname = "mx.example.com"', 'hostname = "mx.sender.test"'))
            cls.records.update([waraka_key(server.dir, "cli.test"),
                                waraka_key(server.dir, "ed.test", "--ed25519", "--selector", "ed")])
            for domain, (selector, private) in keys.items():
                directory = server.dir / "dkim" / domain
                directory.mkdir(parents=True)
                (directory / "private").write_bytes(private)
                (directory / "selector").write_text(selector + "\n")

        cls.server = Waraka(["relay", "dkim_sign", "rcpt_to.in_host_list", "queue/maildir"], setup=setup)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.mx.stop()
        cls.mailbox.stop()
        cls.dns.stop()

    def dns_txt(self, name, timeout=5):
        """dkimpy's DNS lookup, answered from the keys made here."""
        record = self.records.get(name.decode().rstrip("."))
        return record.encode() if record else None

    def relay(self, author, subject, recipient="someone@dest.test", receiver=None):
        """Sends through waraka; the bytes `receiver` (the MX of dest.test)
        got that mention `subject`, or the refusal."""
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            s.mail(author)
            s.rcpt(recipient)
            code, text = s.data(message(author, subject))
        if code != 250:
            return code, text.decode()
        got = wait_until(lambda: [m for m in (receiver or self.mx).received() if f"Subject: {subject}\r\n".encode() in m[2]],
                         what="delivery")
        return code, got[0][2]

    def signature(self, data):
        header = data.split(b"\r\n\r\n", 1)[0]
        fields = re.findall(rb"^DKIM-Signature:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", header, re.M)
        self.assertEqual(len(fields), 1, data)
        return re.sub(rb"\s+", b"", fields[0]).decode()

    def test_the_author_domain_is_signed_with_a_parent_domains_rsa_key(self):
        code, data = self.relay("ann@mail.sender.test", "rsa signed")
        self.assertEqual(code, 250)
        tags = dict(t.split("=", 1) for t in self.signature(data).split(";") if t)
        self.assertEqual((tags["d"], tags["s"], tags["a"]), ("sender.test", "rsa2026", "rsa-sha256"))
        self.assertEqual(tags["h"].lower().split(":").count("from"), 2, "From is signed once more than it occurs")
        self.assertTrue(dkim.verify(data, dnsfunc=self.dns_txt), "dkimpy verifies the signature")
        self.assertFalse(dkim.verify(data.replace(b"Hello.", b"Hello!"), dnsfunc=self.dns_txt),
                         "and would notice a change")
        self.server.wait_for_log(r"signed for sender\.test with selector rsa2026")

    def test_keys_made_by_waraka_dkim_key_sign_and_verify(self):
        self.assertIn(f"w{time.strftime('%Y%m', time.gmtime())}._domainkey.cli.test", self.records, "the default selector")
        private = self.server.dir / "dkim/cli.test/private"
        self.assertEqual(private.stat().st_mode & 0o777, 0o600, "only the owner reads a key")
        for author, algorithm in (("bob@cli.test", "a=rsa-sha256"), ("bob@ed.test", "a=ed25519-sha256")):
            with self.subTest(algorithm):
                code, data = self.relay(author, f"made key {algorithm}")
                self.assertEqual(code, 250)
                self.assertIn(algorithm, self.signature(data))
                self.assertTrue(dkim.verify(data, dnsfunc=self.dns_txt))
        again = subprocess.run([BIN, "dkim-key", "cli.test", "--config", str(self.server.dir)],
                               capture_output=True, text=True)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("exists", again.stderr, "an existing key is never replaced")

    def test_a_domain_without_a_key_is_sent_unsigned(self):
        code, data = self.relay("carol@nokey.test", "not signed")
        self.assertEqual(code, 250)
        self.assertNotIn(b"DKIM-Signature", data)
        self.server.wait_for_log(r"not signed: no key for nokey\.test")
        self.assertGreaterEqual(prometheus(self.metrics_port).get('waraka_dkim_signatures_total{result="no_key"}'), 1)

    def test_the_servers_own_bounces_are_signed_for_its_domain(self):
        code, data = self.relay("erin@sender.test", "bounced", recipient="bad-x@dest.test", receiver=self.mailbox)
        self.assertEqual(code, 250)
        self.assertIn(b"From: Mail Delivery System <MAILER-DAEMON@mx.sender.test>", data)
        tags = dict(t.split("=", 1) for t in self.signature(data).split(";") if t)
        self.assertEqual((tags["d"], tags["s"]), ("sender.test", "rsa2026"), "the parent of the server's name")
        self.assertTrue(dkim.verify(data, dnsfunc=self.dns_txt), "dkimpy verifies the bounce")

    def test_an_unusable_key_is_a_temporary_failure_not_unsigned_mail(self):
        before = len(self.mx.received())
        code, text = self.relay("dave@broken.test", "broken key")
        self.assertEqual((code, text[:6]), (451, "4.3.0 "))
        self.server.wait_for_log(r"signing for broken\.test failed")
        self.assertFalse(list((self.server.dir / "queue/outbound").glob("*.json")), "nothing was queued")
        self.assertEqual(len(self.mx.received()), before)


if __name__ == "__main__":
    unittest.main()
