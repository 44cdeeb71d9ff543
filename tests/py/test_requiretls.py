"""REQUIRETLS and `TLS-Required: No` (RFC 8689) end to end: a real waraka
with STARTTLS takes mail from smtplib and relays it through a real dnsmasq
to scripted MX hosts (with and without STARTTLS and REQUIRETLS) and to a
second waraka, with MTA-STS policies served over HTTPS by a test CA that
the relaying waraka trusts (SSL_CERT_FILE)."""

import email
import email.policy
import smtplib
import tempfile
import unittest

from harness import (
    PolicyServer, SmtpReceiver, Waraka, dnsmasq, enable_tls, free_port, make_ca, make_cert, mta_sts_records,
    stopped_after_class, tls_mx,
)
from test_outbound import message, queue_entries, relay_setup, wait_until

POLICIES = {
    # Testing mode: REQUIRETLS still verifies the certificate.
    "good.test": "mode: testing\nmx: mx.good.test",
    "lacking.test": "mode: enforce\nmx: mx.lacking.test",
    "selfsigned.test": "mode: testing\nmx: mx.selfsigned.test",
    "chain.test": "mode: enforce\nmx: mx.chain.test",
    "enforce.test": "mode: enforce\nmx: mx.enforce.test",
}

RECORDS = [
    "--local=/test/", *mta_sts_records(POLICIES),
    # Plain text only: the sender's domain (for bounces) and enforce.test.
    "--mx-host=sender.test,mx.plain.test,10", "--mx-host=enforce.test,mx.enforce.test,10",
    "--host-record=mx.plain.test,127.0.0.2", "--host-record=mx.enforce.test,127.0.0.2",
    # STARTTLS with a certificate of the CA and REQUIRETLS.
    "--mx-host=good.test,mx.good.test,10", "--host-record=mx.good.test,127.0.0.3",
    # The same server, but the domain has no policy and is not signed.
    "--mx-host=unproven.test,mx.unproven.test,10", "--host-record=mx.unproven.test,127.0.0.3",
    # STARTTLS with a certificate of the CA, no REQUIRETLS.
    "--mx-host=lacking.test,mx.lacking.test,10", "--host-record=mx.lacking.test,127.0.0.4",
    # REQUIRETLS, but a self-signed certificate.
    "--mx-host=selfsigned.test,mx.selfsigned.test,10", "--host-record=mx.selfsigned.test,127.0.0.6",
    # A second waraka.
    "--mx-host=chain.test,mx.chain.test,10", "--host-record=mx.chain.test,127.0.0.5",
]


class RequireTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.tmp.cleanup)
        names = [f"mta-sts.{d}" for d in POLICIES] + ["mx.good.test", "mx.unproven.test", "mx.lacking.test",
                                                      "mx.chain.test"]
        ca, cert, key = make_ca(cls.tmp.name, names)
        cls.dns = dnsmasq(RECORDS)
        cls.addClassCleanup(cls.dns.stop)
        port = free_port("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")
        https_port = free_port("127.0.0.20")
        cls.policies = stopped_after_class(cls, PolicyServer(https_port, str(cert), str(key), POLICIES))
        cls.plain_mx = stopped_after_class(cls, SmtpReceiver("127.0.0.2", port, name="mx.plain.test"))
        cls.good_mx = stopped_after_class(cls, SmtpReceiver(
            "127.0.0.3", port, name="mx.good.test", tls=(cert, key), tls_extensions=["REQUIRETLS"]))
        cls.lacking_mx = stopped_after_class(cls, SmtpReceiver(
            "127.0.0.4", port, name="mx.lacking.test", tls=(cert, key)))
        self_signed = (f"{cls.tmp.name}/self.pem", f"{cls.tmp.name}/self-key.pem")
        make_cert(*self_signed, "mx.selfsigned.test")
        cls.self_signed_mx = stopped_after_class(cls, SmtpReceiver(
            "127.0.0.6", port, name="mx.selfsigned.test", tls=self_signed, tls_extensions=["REQUIRETLS"]))
        cls.chain_mx = stopped_after_class(cls, tls_mx("127.0.0.5", port, ["chain.test"], cert, key))

        relay = relay_setup(cls.dns.port, port, retry="1h", extra=f"mta_sts_port = {https_port}\n")

        def setup(server):
            relay(server)
            enable_tls(server, "relay.test")

        cls.server = stopped_after_class(cls, Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"],
                                                     setup=setup, env={"SSL_CERT_FILE": str(ca)}))

    def send(self, recipient, subject, requiretls=True, headers=""):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.starttls()
            options = ["REQUIRETLS"] if requiretls else []
            refused = s.sendmail("sender@sender.test", [recipient], headers.encode() + message(subject),
                                 mail_options=options)
            self.assertEqual(refused, {})

    def stored(self, receiver, subject):
        return [m for m in receiver.received() if f"Subject: {subject}\r\n".encode() in m[2]]

    def bounce_about(self, subject):
        """The bounce to sender@sender.test that quotes `subject`."""
        return wait_until(lambda: [
            email.message_from_bytes(m[2], policy=email.policy.default) for m in self.plain_mx.received()
            if m[0] == "" and m[1] == ["sender@sender.test"] and f"Subject: {subject}".encode() in m[2]],
            what=f"the bounce of {subject!r}")[0]

    def assert_bounced_with_headers_only(self, subject, diagnostic):
        bounce = self.bounce_about(subject)
        status = next(p for p in bounce.walk() if p.get_content_type() == "message/delivery-status")
        text = " ".join(status.as_string().split())
        self.assertIn("Status: 5.7.30", text)
        self.assertIn(diagnostic, text)
        types = [p.get_content_type() for p in bounce.walk()]
        self.assertIn("text/rfc822-headers", types, "only the header goes back")
        self.assertNotIn("message/rfc822", types)
        self.assertNotIn(b"Hello.", bounce.as_bytes(), "the body never goes back")

    def test_requiretls_is_offered_and_taken_only_over_tls(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            self.assertFalse(s.has_extn("requiretls"), "not offered in the clear")
            self.assertEqual(s.mail("sender@sender.test", ["REQUIRETLS"])[0], 530)
            s.rset()
            s.starttls()
            s.ehlo()
            self.assertTrue(s.has_extn("requiretls"))
            code, text = s.mail("sender@sender.test", ["REQUIRETLS=YES"])
            self.assertEqual((code, text[:5]), (555, b"5.5.4"))
            self.assertEqual(s.mail("sender@sender.test", ["REQUIRETLS"])[0], 250)
        self.server.wait_for_log(r"REQUIRETLS needs a TLS session")

    def test_a_requiretls_message_goes_over_verified_tls_and_says_requiretls(self):
        self.send("a@good.test", "required")
        wait_until(lambda: self.stored(self.good_mx, "required"), what="the delivery")
        # Without REQUIRETLS the same domain gets no REQUIRETLS on MAIL.
        self.send("b@good.test", "not required", requiretls=False)
        wait_until(lambda: self.stored(self.good_mx, "not required"), what="the delivery")
        mail = [c for c in self.good_mx.commands if c.startswith("MAIL")]
        self.assertEqual([c.endswith(" REQUIRETLS") for c in mail], [True, False], mail)

    def test_a_waraka_mx_takes_requiretls_mail(self):
        """A second waraka offers REQUIRETLS after STARTTLS: the message goes."""
        self.send("c@chain.test", "chained")
        wait_until(lambda: [p for p in self.chain_mx.maildir() if b"Subject: chained\r\n" in p.read_bytes()],
                   what="the delivery to the second waraka")

    def test_a_server_without_requiretls_gets_nothing_and_the_sender_gets_the_header_back(self):
        self.send("d@lacking.test", "lacking")
        self.assert_bounced_with_headers_only("lacking", "mx.lacking.test does not offer REQUIRETLS")
        self.assertEqual(self.stored(self.lacking_mx, "lacking"), [])
        self.assertFalse([c for c in self.lacking_mx.commands if "d@lacking.test" in c], "no envelope was sent")

    def test_an_mx_whose_name_nothing_proves_gets_nothing(self):
        """unproven.test has neither DNSSEC nor MTA-STS: its MX host's name
        could be forged, however good its TLS."""
        self.send("e@unproven.test", "unproven")
        self.assert_bounced_with_headers_only(
            "unproven", "no MX host of unproven.test is proven by DNSSEC or named by an MTA-STS policy")
        self.assertEqual(self.stored(self.good_mx, "unproven"), [])

    def test_a_certificate_that_does_not_verify_defers(self):
        self.send("f@selfsigned.test", "self-signed")
        entry = wait_until(lambda: [e for e in queue_entries(self.server)
                                    if e["recipients"] == ["f@selfsigned.test"] and e["attempts"] == 1],
                           what="the deferral")[0]
        self.assertEqual(entry["tls_request"], "required")
        self.assertIn("TLS: invalid peer certificate", entry["last_error"])
        self.assertEqual(self.stored(self.self_signed_mx, "self-signed"), [])

    def test_tls_required_no_waives_the_domains_policy(self):
        """enforce.test's MX has no STARTTLS: its policy holds back mail,
        except a message whose sender said `TLS-Required: No`."""
        self.send("g@enforce.test", "held back", requiretls=False)
        self.send("h@enforce.test", "waived", requiretls=False, headers="TLS-Required: No\r\n")
        wait_until(lambda: self.stored(self.plain_mx, "waived"), what="the delivery in the clear")
        held = wait_until(lambda: [e for e in queue_entries(self.server)
                                   if e["recipients"] == ["g@enforce.test"] and e["attempts"] == 1],
                          what="the deferral")[0]
        self.assertIn("STARTTLS", held["last_error"])
        self.assertEqual(self.stored(self.plain_mx, "held back"), [])


if __name__ == "__main__":
    unittest.main()
