"""DMARC aggregate reports end to end (RFC 7489 §7.2): a real waraka checks
mail from smtplib with auth-results and dmarc (DKIM signatures by dkimpy,
SPF and DMARC records served by dnsmasq), counts what it verified for the
domains whose DMARC record asks for reports, and mails them through its
outbound queue to a receiver; the gzip XML is read back."""

import email
import email.policy
import gzip
import quopri
import smtplib
import unittest
import xml.etree.ElementTree as ElementTree

from harness import (
    SmtpReceiver, Waraka, dnsmasq, free_port, prometheus, stopped_after_class, wait_until, waraka_queue,
)
from test_auth_results import message, rsa_key, sign, txt
from test_outbound import relay_setup


def reporting(test_class, plugins, more_setup=lambda server: None):
    """Starts, for `test_class`, a dnsmasq with the test's records, a
    receiver on 127.0.0.2 and a waraka with `plugins` that reports DMARC
    (set up further by `more_setup`)."""
    test_class.key, public = rsa_key()
    test_class.dns = stopped_after_class(test_class, dnsmasq([
        "--local=/test/",
        # Signed and sent from an address SPF allows: passes.
        txt("sel._domainkey.good.test", f"v=DKIM1; k=rsa; p={public}"),
        txt("good.test", "v=spf1 ip4:127.0.0.1 -all"),
        # Reports of up to 10 MiB: these fit.
        txt("_dmarc.good.test", "v=DMARC1; p=none; rua=mailto:dmarc@good.test!10m"),
        # Reports of up to 500 bytes: none of these fits (dnsmasq cannot
        # serve a comma, so no record here lists two addresses).
        txt("_dmarc.tiny.test", "v=DMARC1; p=none; rua=mailto:dmarc@tiny.test!500"),
        # Neither: fails under p=reject; reports go to another domain that consents.
        txt("spoofed.test", "v=spf1 -all"),
        txt("_dmarc.spoofed.test", "v=DMARC1; p=reject; rua=mailto:reports@collector.test"),
        txt("spoofed.test._report._dmarc.collector.test", "v=DMARC1"),
        # Reports asked to another domain that does not consent.
        txt("_dmarc.unconsented.test", "v=DMARC1; p=none; rua=mailto:reports@collector.test"),
        # No rua: nothing is counted.
        txt("_dmarc.quiet.test", "v=DMARC1; p=none"),
        # Failure reports: of every failed check (fo=1), of DMARC failing
        # (fo=0, the default), and to a domain that does not consent.
        txt("forged.test", "v=spf1 -all"),
        txt("_dmarc.forged.test", "v=DMARC1; p=quarantine; ruf=mailto:failures@forged.test; fo=1"),
        txt("partly.test", "v=spf1 ip4:127.0.0.1 -all"),
        txt("_dmarc.partly.test", "v=DMARC1; p=none; ruf=mailto:failures@partly.test; fo=1"),
        txt("whole.test", "v=spf1 ip4:127.0.0.1 -all"),
        txt("_dmarc.whole.test", "v=DMARC1; p=none; ruf=mailto:failures@whole.test"),
        txt("_dmarc.elsewhere.test", "v=DMARC1; p=none; ruf=mailto:failures@collector.test; fo=1"),
        txt("often.test", "v=spf1 ip4:127.0.0.1 -all"),
        txt("_dmarc.often.test", "v=DMARC1; p=none; ruf=mailto:failures@often.test; fo=1"),
        "--mx-host=good.test,mx.test,10", "--mx-host=collector.test,mx.test,10",
        "--mx-host=forged.test,mx.test,10", "--mx-host=partly.test,mx.test,10", "--mx-host=whole.test,mx.test,10",
        "--mx-host=often.test,mx.test,10",
        "--host-record=mx.test,127.0.0.2",
    ]))
    port = free_port("127.0.0.2")
    test_class.receiver = stopped_after_class(test_class, SmtpReceiver("127.0.0.2", port, name="mx.test"))
    outbound = relay_setup(test_class.dns.port, port, retry="1h",
                           extra="dmarc_reports = true\ndmarc_failure_reports = true\ndmarc_failure_report_limit = 2\n")
    test_class.metrics_port = free_port()

    def setup(server):
        outbound(server)
        server.enable_metrics(test_class.metrics_port)
        server.edit("config/host_list", lambda t: t + "local.test\n")
        server.edit("waraka.toml", lambda t: t.replace('# hostname = "mx.example.com"',
                                                       'hostname = "mx.reporter.test"'))
        more_setup(server)

    test_class.server = stopped_after_class(test_class, Waraka(plugins, setup=setup))


def send(server, sender, raw):
    """Sends `raw` from `sender` to a local user of `server`; the refused
    recipients, or the code of a refused message."""
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
        try:
            return s.sendmail(sender, ["user@local.test"], raw)
        except smtplib.SMTPDataError as e:
            return e.smtp_code


class DmarcReportTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        reporting(cls, ["auth-results", "dmarc", "rcpt_to.in_host_list", "queue/maildir"])

    def send(self, sender, raw):
        return send(self.server, sender, raw)

    def test_each_domain_gets_the_days_counts_at_its_consenting_addresses(self):
        good = sign(message("a@good.test", "signed"), "good.test", self.key)
        self.assertEqual(self.send("a@good.test", good), {})
        self.assertEqual(self.send("a@good.test", good), {})
        # A subdomain without a record of its own: good.test's applies.
        news = sign(message("a@news.good.test", "news"), "good.test", self.key)
        self.assertEqual(self.send("a@news.good.test", news), {})
        for _ in range(2):
            self.assertEqual(self.send("x@spoofed.test", message("x@spoofed.test", "spoofed")), 550)
        self.assertEqual(self.send("y@unconsented.test", message("y@unconsented.test", "unconsented")), {})
        self.assertEqual(self.send("z@quiet.test", message("z@quiet.test", "quiet")), {})
        self.assertEqual(self.send("t@tiny.test", message("t@tiny.test", "tiny")), {})

        self.assertEqual(waraka_queue(self.server, "dmarc-report"), (0, "2 DMARC reports queued"))
        self.server.wait_for_log(r"DMARC report not sent: no rua address consents to receive it "
                                 r"domain=unconsented\.test")
        self.server.wait_for_log(r"DMARC report not sent to addresses whose size limit it is over "
                                 r"domain=tiny\.test size=\d+ to=dmarc@tiny\.test")
        metrics = prometheus(self.metrics_port)
        self.assertEqual(metrics['waraka_reports_total{kind="dmarc",result="queued"}'], 2)
        self.assertEqual(metrics['waraka_reports_total{kind="dmarc",result="unauthorized"}'], 1)
        self.assertEqual(metrics['waraka_reports_total{kind="dmarc",result="too_large"}'], 1)
        reports = wait_until(lambda: (lambda r: r if len(r) == 2 else None)(
            [m for m in self.receiver.received() if m[0] == "dmarc-reports@mx.reporter.test"]), what="two reports")
        by_recipient = {}
        for _, recipients, raw in reports:
            mail = email.message_from_bytes(raw, policy=email.policy.default)
            part = next(p for p in mail.iter_attachments() if p.get_content_type() == "application/gzip")
            feedback = ElementTree.fromstring(gzip.decompress(part.get_content()))
            by_recipient[recipients[0]] = (mail, feedback)
        self.assertEqual(sorted(by_recipient), ["dmarc@good.test", "reports@collector.test"])

        mail, good = by_recipient["dmarc@good.test"]
        self.assertIn("Report Domain: good.test", mail["Subject"])
        self.assertEqual(mail["To"], "dmarc@good.test", "within its size limit")
        self.assertEqual(good.findtext("{*}report_metadata/{*}org_name"), "mx.reporter.test")
        self.assertEqual(good.findtext("{*}policy_published/{*}domain"), "good.test")
        self.assertEqual(good.findtext("{*}policy_published/{*}p"), "none")
        record, news = good.findall("{*}record")
        self.assertEqual(news.findtext("{*}identifiers/{*}header_from"), "news.good.test",
                         "in the report of the record that applies")
        self.assertEqual(news.findtext("{*}row/{*}policy_evaluated/{*}dkim"), "pass")
        self.assertEqual(record.findtext("{*}row/{*}source_ip"), "127.0.0.1")
        self.assertEqual(record.findtext("{*}row/{*}count"), "2", "one row for two alike messages")
        self.assertEqual(record.findtext("{*}row/{*}policy_evaluated/{*}dkim"), "pass")
        self.assertEqual(record.findtext("{*}row/{*}policy_evaluated/{*}spf"), "pass")
        self.assertEqual(record.findtext("{*}identifiers/{*}header_from"), "good.test")
        self.assertEqual(record.findtext("{*}auth_results/{*}dkim/{*}domain"), "good.test")
        self.assertEqual(record.findtext("{*}auth_results/{*}dkim/{*}selector"), "sel")
        self.assertEqual(record.findtext("{*}auth_results/{*}spf/{*}result"), "pass")

        _, spoofed = by_recipient["reports@collector.test"]
        self.assertEqual(spoofed.findtext("{*}policy_published/{*}domain"), "spoofed.test")
        self.assertEqual(spoofed.findtext("{*}policy_published/{*}p"), "reject")
        record, = spoofed.findall("{*}record")
        self.assertEqual(record.findtext("{*}row/{*}count"), "2")
        self.assertEqual(record.findtext("{*}row/{*}policy_evaluated/{*}disposition"), "reject")
        self.assertEqual(record.findtext("{*}auth_results/{*}spf/{*}result"), "fail")

        self.assertEqual(waraka_queue(self.server, "dmarc-report"), (0, "0 DMARC reports queued"),
                         "the counts went with the reports")


class DmarcFailureReportTest(unittest.TestCase):
    """Failure reports (RFC 7489 §7.3), one per message, soon after it."""

    @classmethod
    def setUpClass(cls):
        reporting(cls, ["auth-results", "dmarc", "rcpt_to.in_host_list", "queue/maildir"])

    def failure_reports(self, domain):
        return [email.message_from_bytes(raw, policy=email.policy.compat32)
                for sender, _, raw in self.receiver.received()
                if sender == "dmarc-reports@mx.reporter.test"
                and f"Subject: DMARC failure report for {domain} ".encode() in raw]

    def test_a_forged_message_is_reported_with_its_header_to_the_ruf_address(self):
        forged = message("ceo@forged.test", "pay this invoice", body="The secret body.\r\n")
        self.assertEqual(send(self.server, "ceo@forged.test", forged), {}, "p=quarantine: dmarc notes it")
        report, = wait_until(lambda: self.failure_reports("forged.test"), what="the failure report")
        self.assertEqual(report["To"], "failures@forged.test")
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "feedback-report")
        text, feedback, returned = report.get_payload()
        self.assertEqual(feedback.get_content_type(), "message/feedback-report")
        # mail-auth writes the report quoted-printable when a line is long.
        section = report.as_bytes().split(b"message/feedback-report", 1)[1].split(b"\n\n", 1)[1]
        arf = quopri.decodestring(section.split(b"\n--", 1)[0]).decode()
        for field in ["Feedback-Type: auth-failure", "Auth-Failure: dmarc", "Reported-Domain: forged.test",
                      "Source-IP: 127.0.0.1", "Original-Mail-From: ceo@forged.test", "Identity-Alignment: none",
                      "Reporting-MTA: dns;mx.reporter.test"]:
            self.assertIn(field, arf)
        self.assertRegex(arf, r"Authentication-Results: mx\.reporter\.test;[\s\S]*dmarc=fail")
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")
        self.assertIn("Subject: pay this invoice", returned.get_payload())
        self.assertNotIn(b"The secret body", report.as_bytes(), "the header only, never the body")
        metrics = prometheus(self.metrics_port)
        self.assertEqual(metrics['waraka_reports_total{kind="dmarc-failure",result="queued"}'], 1)

    def test_fo_1_reports_a_check_that_failed_though_dmarc_passed_and_fo_0_does_not(self):
        self.assertEqual(send(self.server, "a@partly.test", message("a@partly.test", "spf only")), {})
        self.assertEqual(send(self.server, "a@whole.test", message("a@whole.test", "spf only too")), {})
        report, = wait_until(lambda: self.failure_reports("partly.test"), what="the failure report")
        self.assertIn("Identity-Alignment: spf", report.as_string(), "SPF aligned, DKIM did not")
        self.server.wait_for_log(r"DMARC failure report queued|failure report queued")
        self.assertEqual(self.failure_reports("whole.test"), [], "DMARC passed: fo=0 reports none")

    def test_an_hours_limit_per_domain_and_consent_of_another_domain(self):
        for _ in range(3):
            self.assertEqual(send(self.server, "b@often.test", message("b@often.test", "again")), {})
        self.server.wait_for_log(r'DMARC failure not reported domain=often\.test refused=Limited')
        wait_until(lambda: len(self.failure_reports("often.test")) == 2, what="two reports")
        self.assertEqual(send(self.server, "c@elsewhere.test", message("c@elsewhere.test", "elsewhere")), {})
        self.server.wait_for_log(r"DMARC failure report not sent: no ruf address consents to receive it "
                                 r"domain=elsewhere\.test")


class RelayedMailTest(unittest.TestCase):
    """Mail from a client allowed to relay is our own: not counted."""

    @classmethod
    def setUpClass(cls):
        def check_relayed_mail(server):
            server.edit("config/auth-results.ini", lambda t: t.replace("skip_relaying = true", "skip_relaying = false"))

        reporting(cls, ["relay", "auth-results", "rcpt_to.in_host_list", "queue/maildir"], check_relayed_mail)

    def test_a_relaying_clients_mail_is_not_counted(self):
        self.assertEqual(send(self.server, "x@spoofed.test", message("x@spoofed.test", "ours")), {})
        # Relayed: the outbound queue has it, verified all the same.
        stored = wait_until(lambda: list((self.server.dir / "queue").rglob("*.eml")), what="the queued message")
        self.assertIn(b"dmarc=fail", stored[0].read_bytes())
        self.assertEqual(waraka_queue(self.server, "dmarc-report"), (0, "0 DMARC reports queued"))


if __name__ == "__main__":
    unittest.main()
