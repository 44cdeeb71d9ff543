"""DANE end to end (RFC 7672): a real waraka relays through its outbound
queue to MX hosts that Knot DNS serves from a DNSSEC-signed root (its key
is the waraka's trust anchor), with TLSA records made from the receivers'
certificates by openssl. The receivers are waraka instances with TLS, and a
scripted receiver without it."""

import hashlib
import smtplib
import subprocess
import tempfile
import unittest
from pathlib import Path

from harness import (
    BIN, Knot, SmtpReceiver, Waraka, dnsmasq, enable_tls, free_port, make_ca, make_cert, prometheus,
    stopped_after_class, tls_mx, wait_until,
)
from test_outbound import message, queue_entries, relay_setup


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, check=True, capture_output=True).stdout


def spki_sha256(cert):
    """The SHA-256 of a certificate's SubjectPublicKeyInfo: `3 1 1` data."""
    public = openssl("x509", "-in", str(cert), "-pubkey", "-noout")
    return hashlib.sha256(openssl("pkey", "-pubin", "-outform", "DER", data=public)).hexdigest()


def cert_sha256(cert):
    """The SHA-256 of a whole certificate: `2 0 1` data for a trust anchor."""
    return hashlib.sha256(openssl("x509", "-in", str(cert), "-outform", "DER")).hexdigest()


class DaneTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.tmp.cleanup)
        tmp = Path(cls.tmp.name)
        make_cert(tmp / "a.pem", tmp / "a-key.pem", "mx1.dane.test")
        make_cert(tmp / "b.pem", tmp / "b-key.pem", "mx2.dane.test")
        (tmp / "ca").mkdir()
        ca, leaf, leaf_key = make_ca(tmp / "ca", ["mx3.dane.test"])
        (tmp / "chain.pem").write_bytes(leaf.read_bytes() + ca.read_bytes())
        port = free_port("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")
        a = cls.spki_a = spki_sha256(tmp / "a.pem")
        cls.port = port
        cls.dns = Knot({
            "dane.test": (
                "good MX 10 mx1\nwrong MX 10 mx2\nta MX 10 mx3\nnotls MX 10 mx4\nnotlsa MX 10 mx5\n"
                # No MX: mail goes to the domain's own address, its TLSA records apply.
                f"direct A 127.0.0.2\n_{port}._tcp.direct TLSA 3 1 1 {a}\n"
                f"mx1 A 127.0.0.2\n_{port}._tcp.mx1 TLSA 3 1 1 {a}\n"
                f"mx2 A 127.0.0.3\n_{port}._tcp.mx2 TLSA 3 1 1 {a}\n"
                f"mx3 A 127.0.0.4\n_{port}._tcp.mx3 TLSA 2 0 1 {cert_sha256(ca)}\n"
                f"mx4 A 127.0.0.5\n_{port}._tcp.mx4 TLSA 3 1 1 {a}\n"
                "mx5 A 127.0.0.6\n"
            ),
            # Unsigned: its TLSA record proves nothing and is not obeyed.
            "plain.test": f"@ MX 10 mx\nmx A 127.0.0.6\n_{port}._tcp.mx TLSA 3 1 1 {'00' * 32}\n",
            # Unsigned under a DS: what an attacker forging answers gives.
            "forged.test": "@ MX 10 mx\nmx A 127.0.0.6\n",
        }, signed={"dane.test"}, bogus={"forged.test"})
        cls.addClassCleanup(cls.dns.stop)

        cls.mx1 = stopped_after_class(
            cls, tls_mx("127.0.0.2", port, ["good.dane.test", "direct.dane.test"], tmp / "a.pem", tmp / "a-key.pem"))
        cls.mx2 = stopped_after_class(
            cls, tls_mx("127.0.0.3", port, ["wrong.dane.test"], tmp / "b.pem", tmp / "b-key.pem"))
        cls.mx3 = stopped_after_class(cls, tls_mx("127.0.0.4", port, ["ta.dane.test"], tmp / "chain.pem", leaf_key))
        cls.mx4 = stopped_after_class(cls, SmtpReceiver("127.0.0.5", port, name="mx4.dane.test"))
        cls.plain = stopped_after_class(cls, SmtpReceiver("127.0.0.6", port, name="mx.plain.test"))

        relay = relay_setup(cls.dns.port, port, extra="dane = true\nmta_sts = false\n", retry="1h")
        cls.metrics_port = free_port()

        def setup(server):
            relay(server)
            enable_tls(server, "relay.test")
            server.enable_metrics(cls.metrics_port)
            server.edit("waraka.toml", lambda t: t.replace(
                "\n[dns]\n", f'\n[dns]\ntrust_anchor = "{cls.dns.anchor}"\n', 1))

        cls.server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"], setup=setup)
        cls.addClassCleanup(cls.server.stop)

    def relay(self, recipient, subject):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.sendmail("sender@sender.test", [recipient], message(subject))

    @staticmethod
    def delivered(mx, subject):
        """Whether `subject` reached the waraka `mx` (waiting up to 30 s)."""
        return wait_until(lambda: any(f"Subject: {subject}\r\n".encode() in p.read_bytes() for p in mx.maildir()),
                          what=f"{subject!r} in a maildir")

    @staticmethod
    def received(receiver, subject):
        """Whether `subject` reached the scripted `receiver` (waiting up to 30 s)."""
        return wait_until(lambda: any(f"Subject: {subject}\r\n".encode() in m[2] for m in receiver.received()),
                          what=f"{subject!r} at {receiver}")

    def deferred(self, recipient):
        """The last error of the queue entry for `recipient`, once it has one."""
        def error():
            errors = [e.get("last_error") for e in queue_entries(self.server) if recipient in e["recipients"]]
            return errors[0] if errors else None

        return wait_until(error, what=f"a deferred entry for {recipient}")

    def test_a_certificate_a_dane_ee_record_matches_gets_the_mail(self):
        self.relay("rcpt@good.dane.test", "dane ee")
        self.assertTrue(self.delivered(self.mx1, "dane ee"))
        self.server.wait_for_log(r"DANE: the certificate must match the host's TLSA records .*host=mx1\.dane\.test")
        self.mx1.wait_for_log(r"TLS established")

    def test_a_domain_without_mx_records_is_checked_at_its_own_address(self):
        self.relay("rcpt@direct.dane.test", "implicit mx")
        self.assertTrue(self.delivered(self.mx1, "implicit mx"))
        self.server.wait_for_log(r"DANE: the certificate must match the host's TLSA records .*host=direct\.dane\.test")

    def test_a_chain_a_dane_ta_record_anchors_gets_the_mail(self):
        self.relay("rcpt@ta.dane.test", "dane ta")
        self.assertTrue(self.delivered(self.mx3, "dane ta"))
        self.server.wait_for_log(r"DANE: the certificate must match the host's TLSA records .*host=mx3\.dane\.test")

    def test_requiretls_goes_to_a_dnssec_proven_mx_and_not_to_an_unsigned_one(self):
        """REQUIRETLS (RFC 8689) with DANE: DNSSEC proves mx1's name and its
        TLSA record its self-signed certificate, and mx1 (a waraka) offers
        REQUIRETLS; plain.test's MX has no proof, and MTA-STS is off here."""
        for recipient, subject in [("rcpt@good.dane.test", "requiretls dane"), ("rcpt@plain.test", "unproven")]:
            with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
                s.starttls()
                s.sendmail("sender@sender.test", [recipient], message(subject), mail_options=["REQUIRETLS"])
        self.assertTrue(self.delivered(self.mx1, "requiretls dane"))
        self.server.wait_for_log(r"delivery failed permanently id=\S+ recipient=rcpt@plain\.test status=5\.7\.30 "
                                 r"diagnostic=REQUIRETLS: no MX host of plain\.test is proven")
        self.assertFalse(any(b"Subject: unproven\r\n" in m[2] for m in self.plain.received()))

    def test_a_certificate_no_record_matches_gets_nothing(self):
        self.relay("rcpt@wrong.dane.test", "mismatch")
        error = self.deferred("rcpt@wrong.dane.test")
        self.assertIn("DANE: no TLSA record of the MX host matches its certificate", error)
        self.assertEqual(self.mx2.maildir(), [], "nothing reached the host")

    def test_an_mx_host_with_tlsa_records_but_no_starttls_gets_nothing(self):
        self.relay("rcpt@notls.dane.test", "no starttls")
        self.assertIn("DANE: the MX host has TLSA records but does not offer STARTTLS",
                      self.deferred("rcpt@notls.dane.test"))
        self.assertFalse(any(b"Subject: no starttls\r\n" in m[2] for m in self.mx4.received()))

    def test_mx_records_that_fail_validation_defer_the_mail(self):
        self.relay("rcpt@forged.test", "forged")
        self.assertIn("DNSSEC validation of forged.test's MX records failed", self.deferred("rcpt@forged.test"))
        self.assertFalse(any(b"Subject: forged\r\n" in m[2] for m in self.plain.received()))

    def test_the_log_says_at_start_whether_dnssec_validation_works(self):
        self.server.wait_for_log(r"DANE: DNSSEC validation works through the configured DNS servers")
        plain_dns = dnsmasq(["--local=/test/"])
        self.addCleanup(plain_dns.stop)
        stripped = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"],
                          setup=relay_setup(plain_dns.port, free_port(), extra="dane = true\n"))
        self.addCleanup(stripped.stop)
        stripped.wait_for_log(r"ERROR.*DANE: (the DNS servers give the root zone without DNSSEC proof"
                              r"|DNSSEC validation fails through the configured DNS servers)")

    def test_queue_route_shows_the_mx_hosts_and_what_dnssec_proves(self):
        def route(domain):
            done = subprocess.run([BIN, "queue", "--config", str(self.server.dir), "route", domain],
                                  capture_output=True, text=True, timeout=60)
            self.assertEqual(done.returncode, 0, done.stderr)
            return done.stdout

        good = route("good.dane.test")
        self.assertIn("good.dane.test: MX records DNSSEC-proven; DANE is on ([outbound] dane)", good)
        self.assertIn(f"mx1.dane.test  127.0.0.2:{self.port}\n  TLSA 3 1 1 {self.spki_a}\n", good)
        plain = route("plain.test")
        self.assertIn("plain.test: MX records not DNSSEC-proven", plain)
        self.assertIn("  no DNSSEC-proven TLSA records", plain, "its unsigned TLSA record proves nothing")
        self.assertIn("failed DNSSEC validation", route("forged.test"))

    def test_the_metrics_count_sessions_by_certificate_check(self):
        self.relay("rcpt@good.dane.test", "counted")
        self.assertTrue(self.delivered(self.mx1, "counted"))
        self.relay("rcpt@notls.dane.test", "counted too")
        self.deferred("rcpt@notls.dane.test")
        metrics = prometheus(self.metrics_port)
        self.assertGreaterEqual(metrics.get('waraka_outbound_tls_total{check="dane",result="ok"}', 0), 1)
        self.assertGreaterEqual(metrics.get('waraka_outbound_tls_total{check="dane",result="failed"}', 0), 1)

    def test_unsigned_zones_and_hosts_without_tlsa_records_get_opportunistic_tls(self):
        self.relay("rcpt@plain.test", "unsigned")
        self.assertTrue(self.received(self.plain, "unsigned"), "an unsigned TLSA record is not obeyed")
        self.relay("rcpt@notlsa.dane.test", "no tlsa")
        self.assertTrue(self.received(self.plain, "no tlsa"))
        self.assertGreaterEqual(prometheus(self.metrics_port).get('waraka_outbound_tls_total{check="none",result="ok"}', 0), 2)
        self.assertFalse([line for line in self.server.log if "DANE:" in line and "mx5.dane.test" in line])
        self.assertFalse([line for line in self.server.log if "DANE:" in line and "mx.plain.test" in line])


if __name__ == "__main__":
    unittest.main()
