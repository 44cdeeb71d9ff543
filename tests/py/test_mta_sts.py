"""MTA-STS (RFC 8461) end to end: a real waraka delivers to domains whose
`_mta-sts` TXT records a real dnsmasq serves and whose policies an HTTPS
server (Python's, with a certificate of a test CA the waraka trusts through
SSL_CERT_FILE) publishes; the MX hosts are a scripted server without
STARTTLS and a second waraka with a certificate of that CA."""

import email
import email.policy
import gzip
import json
import smtplib
import tempfile
import unittest

from harness import (
    PolicyServer, SmtpReceiver, Waraka, dnsmasq, free_port, make_ca, mta_sts_records, stopped_after_class, tls_mx,
    waraka_queue,
)
from test_outbound import message, queue_entries, relay_setup, wait_until

POLICIES = {
    "enforce.test": "mode: enforce\nmx: mx.enforce.test",
    "wrongmx.test": "mode: enforce\nmx: mail.elsewhere.test",
    "testing.test": "mode: testing\nmx: mail.elsewhere.test",
    "secure.test": "mode: enforce\nmx: *.secure.test",
    "badcert.test": "mode: enforce\nmx: mx.badcert.test",
    "kept.test": "mode: enforce\nmx: mx.kept.test",
    "audited.test": "mode: testing\nmx: mx.audited.test",
    "badpolicy.test": "mode: sometimes\nmx: mx.badpolicy.test",
}
# Policy hosts that fail: the first answers 404, the second's certificate
# does not name it.
UNFETCHABLE, UNTRUSTED = "unfetchable.test", "untrusted.test"

RECORDS = [
    "--local=/test/", *mta_sts_records([*POLICIES, UNFETCHABLE, UNTRUSTED]),
    "--mx-host=enforce.test,mx.enforce.test,10", "--host-record=mx.enforce.test,127.0.0.2",
    "--mx-host=wrongmx.test,mx.wrongmx.test,10", "--host-record=mx.wrongmx.test,127.0.0.2",
    "--mx-host=testing.test,mx.testing.test,10", "--host-record=mx.testing.test,127.0.0.2",
    "--mx-host=plain.test,mx.plain.test,10", "--host-record=mx.plain.test,127.0.0.2",
    "--mx-host=secure.test,mx.secure.test,10", "--host-record=mx.secure.test,127.0.0.3",
    "--mx-host=badcert.test,mx.badcert.test,10", "--host-record=mx.badcert.test,127.0.0.4",
    "--mx-host=kept.test,mx.kept.test,10", "--host-record=mx.kept.test,127.0.0.2",
    # Testing mode with TLS reports: its MX's certificate is self-signed.
    "--mx-host=audited.test,mx.audited.test,10", "--host-record=mx.audited.test,127.0.0.4",
    "--mx-host=badpolicy.test,mx.badpolicy.test,10", "--host-record=mx.badpolicy.test,127.0.0.2",
    "--mx-host=unfetchable.test,mx.unfetchable.test,10", "--host-record=mx.unfetchable.test,127.0.0.2",
    "--mx-host=untrusted.test,mx.untrusted.test,10", "--host-record=mx.untrusted.test,127.0.0.2",
    *[f"--txt-record=_smtp._tls.{domain},v=TLSRPTv1; rua=mailto:tls@reports.test"
      for domain in ["audited.test", "secure.test", "badpolicy.test", UNFETCHABLE, UNTRUSTED]],
    "--mx-host=reports.test,mx.reports.test,10", "--host-record=mx.reports.test,127.0.0.2",
]


class MtaStsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.tmp.cleanup)
        ca, cert, key = make_ca(cls.tmp.name, [f"mta-sts.{d}" for d in [*POLICIES, UNFETCHABLE]] + ["mx.secure.test"])
        cls.dns = dnsmasq(RECORDS)
        cls.addClassCleanup(cls.dns.stop)
        port = free_port("127.0.0.2", "127.0.0.3", "127.0.0.4")
        https_port = free_port("127.0.0.20")
        cls.policies = PolicyServer(https_port, str(cert), str(key), POLICIES)
        cls.addClassCleanup(cls.policies.stop)
        cls.plain_mx = stopped_after_class(cls, SmtpReceiver("127.0.0.2", port, name="mx.plain.test"))

        cls.secure_mx = stopped_after_class(cls, tls_mx("127.0.0.3", port, ["secure.test"], cert, key))
        cls.self_signed_mx = stopped_after_class(
            cls, tls_mx("127.0.0.4", port, ["badcert.test", "audited.test"], name="mx.badcert.test"))
        cls.server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"],
                            setup=relay_setup(cls.dns.port, port, retry="1h",
                                              extra=f"mta_sts_port = {https_port}\ntls_reports = true\n"),
                            env={"SSL_CERT_FILE": str(ca)})
        cls.addClassCleanup(cls.server.stop)

    def send(self, recipient, subject):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            self.assertEqual(s.sendmail("sender@sender.test", [recipient], message(subject)), {})

    def delivered(self, subject):
        return [m for m in self.plain_mx.received() if f"Subject: {subject}\r\n".encode() in m[2]]

    def deferred(self, recipient):
        return wait_until(lambda: [e for e in queue_entries(self.server)
                                   if e["recipients"] == [recipient] and e["attempts"] == 1],
                          what=f"{recipient} deferred")[0]

    def test_enforce_refuses_an_mx_without_tls(self):
        self.send("a@enforce.test", "needs tls")
        entry = self.deferred("a@enforce.test")
        self.assertIn("STARTTLS", entry["last_error"])
        self.assertEqual(self.delivered("needs tls"), [], "never sent in the clear")
        self.server.wait_for_log(r"MTA-STS policy fetched domain=enforce\.test id=20261205 mode=Enforce mx=mx\.enforce\.test")

    def test_enforce_refuses_an_mx_the_policy_does_not_name(self):
        self.send("b@wrongmx.test", "wrong mx")
        entry = self.deferred("b@wrongmx.test")
        self.assertIn("no MX host of wrongmx.test is named by its MTA-STS policy", entry["last_error"])
        self.assertEqual(self.delivered("wrong mx"), [])

    def test_testing_mode_delivers_and_logs(self):
        self.send("c@testing.test", "testing mode")
        wait_until(lambda: self.delivered("testing mode"), what="the delivery")
        self.server.wait_for_log(r"MX host not in the domain's MTA-STS policy .*domain=testing\.test host=mx\.testing\.test")

    def test_a_domain_without_a_policy_is_delivered_as_before(self):
        self.send("d@plain.test", "no policy")
        wait_until(lambda: self.delivered("no policy"), what="the delivery")

    def test_enforce_delivers_over_verified_tls_to_a_named_mx(self):
        self.send("e@secure.test", "secured")
        stored = wait_until(lambda: [p.read_bytes() for p in self.secure_mx.maildir()
                                     if b"Subject: secured\r\n" in p.read_bytes()], what="the delivery")
        self.assertIn(b"(using TLSv1.3 with cipher", stored[0])
        self.server.wait_for_log(r"delivered id=\S+ recipient=e@secure\.test host=mx\.secure\.test")

    def test_enforce_refuses_a_certificate_that_does_not_verify(self):
        self.send("f@badcert.test", "self-signed")
        entry = self.deferred("f@badcert.test")
        self.assertIn("TLS: invalid peer certificate", entry["last_error"])
        self.assertEqual(self.self_signed_mx.maildir(), [], "nothing sent to an unverified server")

    def test_tls_reports_say_what_enforce_would_refuse_and_which_policy_failed(self):
        """With TLS reports on, a testing-mode domain's MX certificate is
        checked without being enforced: the mail goes, the report says why
        enforce would not have sent it. A policy that cannot be had is
        reported by why: not fetched, not valid, or its host not trusted."""
        self.send("i@audited.test", "audited")
        self.send("j@secure.test", "reported")
        for domain in ["badpolicy.test", UNFETCHABLE, UNTRUSTED]:
            self.send(f"k@{domain}", f"policy of {domain}")
            wait_until(lambda domain=domain: self.delivered(f"policy of {domain}"), what=f"the delivery to {domain}")
        wait_until(lambda: [p for p in self.self_signed_mx.maildir() if b"Subject: audited\r\n" in p.read_bytes()],
                   what="the delivery despite the certificate")
        wait_until(lambda: [p for p in self.secure_mx.maildir() if b"Subject: reported\r\n" in p.read_bytes()],
                   what="the verified delivery")
        self.assertEqual(waraka_queue(self.server, "tls-report"), (0, "5 TLS reports queued, 0 posted"))
        reports = wait_until(lambda: (lambda r: r if len(r) == 5 else None)(
            [m for m in self.plain_mx.received() if m[1] == ["tls@reports.test"]]), what="five reports")
        policies = {}
        for _, _, raw in reports:
            mail = email.message_from_bytes(raw, policy=email.policy.default)
            part = next(p for p in mail.iter_attachments() if p.get_content_type() == "application/tlsrpt+gzip")
            found = json.loads(gzip.decompress(part.get_content()))["policies"]
            policies[mail["TLS-Report-Domain"]] = next(p for p in found if p["policy"]["policy-type"] == "sts")
        for domain, result in [("badpolicy.test", "sts-policy-invalid"), (UNFETCHABLE, "sts-policy-fetch-error"),
                               (UNTRUSTED, "sts-webpki-invalid")]:
            failure, = policies[domain]["failure-details"]
            self.assertEqual((domain, failure["result-type"], failure["failed-session-count"]), (domain, result, 1))
            self.assertEqual(policies[domain]["policy"]["policy-string"], [])
        audited = policies["audited.test"]
        self.assertEqual(audited["policy"]["policy-type"], "sts")
        self.assertIn("mode: testing", audited["policy"]["policy-string"])
        self.assertEqual(audited["policy"]["mx-host"], ["mx.audited.test"])
        self.assertEqual(audited["summary"], {"total-successful-session-count": 0, "total-failure-session-count": 1})
        self.assertEqual(audited["failure-details"][0]["result-type"], "certificate-not-trusted")
        secure = policies["secure.test"]
        self.assertIn("mode: enforce", secure["policy"]["policy-string"])
        # Other tests deliver to secure.test through this server too.
        self.assertGreaterEqual(secure["summary"]["total-successful-session-count"], 1)
        self.assertEqual(secure["summary"]["total-failure-session-count"], 0)

    def test_a_policy_outlives_a_restart_and_a_blocked_fetch(self):
        self.send("g@kept.test", "before restart")
        self.assertIn("STARTTLS", self.deferred("g@kept.test")["last_error"])
        self.server.wait_for_log(r"MTA-STS policy fetched domain=kept\.test")
        # An attacker now blocks the policy host, and the server restarts:
        # the policy it fetched still holds, so nothing goes out in the clear.
        del POLICIES["kept.test"]
        self.server.kill_and_restart()
        self.server.wait_for_log(r"MTA-STS policy cache loaded path=\S+mta-sts\.json policies=[1-9]")
        self.send("h@kept.test", "after restart")
        self.assertIn("STARTTLS", self.deferred("h@kept.test")["last_error"])
        self.assertEqual(self.delivered("after restart"), [], "never sent in the clear")


if __name__ == "__main__":
    unittest.main()
