"""SMTP TLS Reporting end to end (RFC 8460): a real waraka with DANE on
delivers to MX hosts that Knot DNS serves from a DNSSEC-signed root, counts
how TLS went with each, and mails the counts to the `rua` address each
domain publishes in `_smtp._tls`; the report's gzip JSON is read back from
the receiving server."""

import email
import email.policy
import gzip
import http.server
import json
import smtplib
import tempfile
import unittest
from pathlib import Path

from harness import (
    HttpsServer, Knot, SmtpReceiver, Waraka, free_port, make_ca, make_cert, prometheus, stopped_after_class, tls_mx,
    wait_until, waraka_queue,
)
from test_dane import spki_sha256
from test_outbound import message, queue_entries, relay_setup

RUA = 'TXT "v=TLSRPTv1; rua=mailto:tls@reports.rpt.test"'


class ReportCollector(HttpsServer):
    """HTTPS on 127.0.0.20:`port` keeping what is posted to it: (path, content type, body)."""

    def __init__(self, port, cert, key):
        self.posted = []
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                collector.posted.append((self.path, self.headers.get("Content-Type"), body))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__("127.0.0.20", port, cert, key, Handler)


class TlsReportTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.tmp.cleanup)
        tmp = Path(cls.tmp.name)
        make_cert(tmp / "a.pem", tmp / "a-key.pem", "mx1.rpt.test")
        make_cert(tmp / "b.pem", tmp / "b-key.pem", "mx2.rpt.test")
        port = free_port("127.0.0.2", "127.0.0.3", "127.0.0.5", "127.0.0.6")
        https_port = free_port("127.0.0.20")
        (tmp / "ca").mkdir()
        ca, cert, key = make_ca(tmp / "ca", ["reports.rpt.test"])
        cls.collector = ReportCollector(https_port, str(cert), str(key))
        cls.addClassCleanup(cls.collector.stop)
        a = spki_sha256(tmp / "a.pem")
        cls.dns = Knot({
            "rpt.test": (
                "good MX 10 mx1\nwrong MX 10 mx2\nnotls MX 10 mx4\nsilent MX 10 mx4\nreports MX 10 mx6\n"
                f"_smtp._tls.good {RUA}\n_smtp._tls.wrong {RUA}\n_smtp._tls.notls {RUA}\n"
                "posted MX 10 mx1\nreports A 127.0.0.20\n"
                f'_smtp._tls.posted TXT "v=TLSRPTv1; rua=https://reports.rpt.test:{https_port}/tlsrpt"\n'
                f"mx1 A 127.0.0.2\n_{port}._tcp.mx1 TLSA 3 1 1 {a}\n"
                f"mx2 A 127.0.0.3\n_{port}._tcp.mx2 TLSA 3 1 1 {a}\n"
                "mx4 A 127.0.0.5\nmx6 A 127.0.0.6\n"
                # The reports' own MX fails DANE (no STARTTLS): they are
                # sent with `TLS-Required: No` and get through all the same.
                f"_{port}._tcp.mx6 TLSA 3 1 1 {a}\n"
            ),
        }, signed={"rpt.test"})
        cls.addClassCleanup(cls.dns.stop)

        cls.mx1 = stopped_after_class(
            cls, tls_mx("127.0.0.2", port, ["good.rpt.test", "posted.rpt.test"], tmp / "a.pem", tmp / "a-key.pem"))
        cls.mx2 = stopped_after_class(
            cls, tls_mx("127.0.0.3", port, ["wrong.rpt.test"], tmp / "b.pem", tmp / "b-key.pem"))
        cls.mx4 = stopped_after_class(cls, SmtpReceiver("127.0.0.5", port, name="mx4.rpt.test"))
        cls.reports = stopped_after_class(cls, SmtpReceiver("127.0.0.6", port, name="mx6.rpt.test"))

        relay = relay_setup(cls.dns.port, port, retry="1h",
                            extra='dane = true\nmta_sts = false\ntls_reports = true\n'
                                  'tls_report_from = "tls-reports@sender.test"\n')

        cls.metrics_port = free_port()

        def setup(server):
            relay(server)
            server.enable_metrics(cls.metrics_port)
            server.edit("waraka.toml", lambda t: t.replace(
                "\n[dns]\n", f'\n[dns]\ntrust_anchor = "{cls.dns.anchor}"\n', 1)
                .replace('# hostname = "mx.example.com"', 'hostname = "mx.sender.test"'))

        cls.server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"], setup=setup,
                            env={"SSL_CERT_FILE": str(ca)})
        cls.addClassCleanup(cls.server.stop)

    def relay(self, recipient, subject):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.sendmail("sender@sender.test", [recipient], message(subject))

    def test_each_domain_with_a_tlsrpt_record_gets_its_counts(self):
        self.relay("a@good.rpt.test", "good")
        self.relay("b@good.rpt.test", "good again")
        self.relay("a@wrong.rpt.test", "wrong")
        self.relay("a@notls.rpt.test", "plain")
        self.relay("a@silent.rpt.test", "silent")
        self.relay("a@posted.rpt.test", "posted")
        wait_until(lambda: len([p for p in self.mx1.maildir()]) == 3, what="three deliveries to mx1")
        wait_until(lambda: len(self.mx4.received()) == 2, what="two deliveries to mx4")
        wait_until(lambda: [e for e in queue_entries(self.server) if e["domain"] == "wrong.rpt.test"
                            and e["attempts"] == 1], what="the deferred entry for wrong.rpt.test")

        self.assertEqual(waraka_queue(self.server, "tls-report"), (0, "3 TLS reports queued, 1 posted"))
        metrics = prometheus(self.metrics_port)
        self.assertEqual((metrics['waraka_reports_total{kind="tls",result="queued"}'],
                          metrics['waraka_reports_total{kind="tls",result="posted"}']), (3, 1))
        got = wait_until(lambda: (lambda m: m if len(m) == 3 else None)(self.reports.received()),
                         what="three reports")
        reports = {}
        for sender, recipients, raw in got:
            self.assertEqual((sender, recipients), ("tls-reports@sender.test", ["tls@reports.rpt.test"]))
            mail = email.message_from_bytes(raw, policy=email.policy.default)
            domain = mail["TLS-Report-Domain"]
            self.assertEqual(mail["TLS-Required"], "No")
            self.assertEqual(mail["TLS-Report-Submitter"], "mx.sender.test")
            self.assertEqual(mail.get_content_type(), "multipart/report")
            self.assertEqual(mail.get_param("report-type"), "tlsrpt")
            self.assertIn(f"Report Domain: {domain} Submitter: mx.sender.test", mail["Subject"])
            part = next(p for p in mail.iter_attachments() if p.get_content_type() == "application/tlsrpt+gzip")
            self.assertTrue(part.get_filename().startswith(f"mx.sender.test!{domain}!"), part.get_filename())
            reports[domain] = json.loads(gzip.decompress(part.get_content()))
        self.assertEqual(sorted(reports), ["good.rpt.test", "notls.rpt.test", "wrong.rpt.test"],
                         "silent.rpt.test publishes no TLSRPT record")
        for report in reports.values():
            self.assertEqual(report["organization-name"], "mx.sender.test")
            self.assertEqual(report["contact-info"], "tls-reports@sender.test")
            self.assertEqual(len(report["policies"]), 1)

        good = reports["good.rpt.test"]["policies"][0]
        self.assertEqual(good["policy"]["policy-type"], "tlsa")
        self.assertEqual(good["policy"]["mx-host"], ["mx1.rpt.test"])
        self.assertTrue(good["policy"]["policy-string"][0].startswith("3 1 1 "))
        self.assertEqual(good["summary"], {"total-successful-session-count": 2, "total-failure-session-count": 0})

        wrong = reports["wrong.rpt.test"]["policies"][0]
        self.assertEqual(wrong["policy"]["policy-type"], "tlsa")
        self.assertEqual(wrong["summary"], {"total-successful-session-count": 0, "total-failure-session-count": 1})
        failure, = wrong["failure-details"]
        self.assertEqual((failure["result-type"], failure["receiving-mx-hostname"], failure["receiving-ip"],
                          failure["failed-session-count"]), ("tlsa-invalid", "mx2.rpt.test", "127.0.0.3", 1))

        plain = reports["notls.rpt.test"]["policies"][0]
        self.assertEqual(plain["policy"]["policy-type"], "no-policy-found")
        failure, = plain["failure-details"]
        self.assertEqual((failure["result-type"], failure["receiving-mx-hostname"]),
                         ("starttls-not-supported", "mx4.rpt.test"))

        # An https: address gets the gzip JSON posted (RFC 8460 §5.2).
        (path, content_type, body), = self.collector.posted
        self.assertEqual((path, content_type), ("/tlsrpt", "application/tlsrpt+gzip"))
        posted = json.loads(gzip.decompress(body))["policies"][0]
        self.assertEqual(posted["policy"]["policy-domain"], "posted.rpt.test")
        self.assertEqual(posted["summary"]["total-successful-session-count"], 1)

        # Sent once: the counts start again.
        self.assertEqual(waraka_queue(self.server, "tls-report"), (0, "0 TLS reports queued, 0 posted"))
        self.server.wait_for_log(r"TLS report queued domain=good\.rpt\.test to=tls@reports\.rpt\.test")


if __name__ == "__main__":
    unittest.main()
