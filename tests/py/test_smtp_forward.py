"""queue/smtp_forward end to end: a real waraka forwards accepted mail to
scripted SMTP servers on loopback addresses, answering the client only after
the next hop did; and to a second waraka by host name over STARTTLS."""

import smtplib
import unittest

from harness import SmtpReceiver, Waraka, dnsmasq, enable_tls, free_port
from test_outbound import message, scripted, wait_until


def forward_setup(port, extra_ini="", extra_toml=""):
    def setup(server):
        server.edit("config/host_list", lambda t: t + "dest.test\nrouted.test\ndown.test\n")
        server.edit("config/queue/smtp_forward.ini", lambda t: t.replace("host = 127.0.0.1", "host = 127.0.0.11")
                    .replace("port = 2526", f"port = {port}") + (
            f"\n[routed.test]\nhost = 127.0.0.12\n\n[down.test]\nhost = 127.0.0.13\n{extra_ini}"))
        server.edit("waraka.toml", lambda t: t + extra_toml)

    return setup


class SmtpForwardTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        port = free_port("127.0.0.11", "127.0.0.12")
        cls.default = SmtpReceiver("127.0.0.11", port, scripted, name="hop.test")
        cls.addClassCleanup(cls.default.stop)
        cls.routed = SmtpReceiver("127.0.0.12", port, scripted, name="routed.hop.test")
        cls.addClassCleanup(cls.routed.stop)
        cls.server = Waraka(["rcpt_to.in_host_list", "queue/smtp_forward"], setup=forward_setup(port))
        cls.addClassCleanup(cls.server.stop)

    def send(self, recipients, subject, sender="a@sender.test"):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            return s.sendmail(sender, recipients, message(subject))

    def with_subject(self, receiver, subject):
        return [m for m in receiver.received() if f"Subject: {subject}\r\n".encode() in m[2]]

    def test_forwarded_by_domain_before_the_client_hears_250(self):
        self.assertEqual(self.send(["one@dest.test", "two@routed.test", "three@dest.test"], "split"), {})
        # The 250 came after the next hops answered: the copies are there already.
        self.assertEqual([m[1] for m in self.with_subject(self.default, "split")], [["one@dest.test", "three@dest.test"]])
        self.assertEqual([m[1] for m in self.with_subject(self.routed, "split")], [["two@routed.test"]])
        sender, _, data = self.with_subject(self.default, "split")[0]
        self.assertEqual(sender, "a@sender.test")
        self.assertTrue(data.startswith(b"Received: from client.test"))

    def test_a_4xx_at_the_next_hop_is_a_4xx_to_the_client_and_the_retry_goes_through(self):
        with self.assertRaises(smtplib.SMTPDataError) as cm:
            self.send(["temp-f@dest.test"], "again")
        self.assertEqual((cm.exception.smtp_code, cm.exception.smtp_error[:5]), (451, b"4.4.1"))
        self.assertEqual(self.send(["temp-f@dest.test"], "again"), {})
        self.assertEqual(len(self.with_subject(self.default, "again")), 1)

    def test_a_5xx_at_the_next_hop_reaches_the_sender(self):
        with self.assertRaises(smtplib.SMTPDataError) as cm:
            self.send(["bad-f@dest.test"], "rejected")
        self.assertEqual(cm.exception.smtp_code, 550)
        self.assertIn(b"<bad-f@dest.test>: 550 5.1.1 No such user here", cm.exception.smtp_error)

    def test_a_next_hop_that_is_down_is_a_temporary_failure(self):
        with self.assertRaises(smtplib.SMTPDataError) as cm:
            self.send(["x@down.test"], "down")
        self.assertEqual(cm.exception.smtp_code, 451)
        self.server.wait_for_log(r"127\.0\.0\.13")


class ForwardByNameTest(unittest.TestCase):
    def test_a_next_hop_by_name_over_starttls_and_without_the_grant(self):
        dns = dnsmasq(["--local=/test/", "--host-record=mailstore.test,127.0.0.14"])
        self.addCleanup(dns.stop)
        port = free_port("127.0.0.14")

        def store_setup(server):
            enable_tls(server, "mailstore.test")
            server.edit("config/host_list", lambda t: t + "dest.test\n")

        store = Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=store_setup, host="127.0.0.14", port=port)
        self.addCleanup(store.stop)

        def front_setup(extra=""):
            def setup(server):
                server.edit("config/host_list", lambda t: t + "dest.test\n")
                server.edit("config/queue/smtp_forward.ini", lambda t: t.replace("host = 127.0.0.1", "host = mailstore.test")
                            .replace("port = 2526", f"port = {store.port}"))
                server.edit("waraka.toml", lambda t: t + f'\n[dns]\nservers = ["127.0.0.1:{dns.port}"]\n' + extra)
                if extra:
                    server.edit("waraka.toml", lambda t: t.replace('[plugin."queue/smtp_forward"]\ngrants = ["forward"]', ""))

            return setup

        front = Waraka(["rcpt_to.in_host_list", "queue/smtp_forward"], setup=front_setup())
        self.addCleanup(front.stop)
        ungranted = Waraka(["rcpt_to.in_host_list", "queue/smtp_forward"], setup=front_setup(extra="\n"))
        self.addCleanup(ungranted.stop)
        with smtplib.SMTP("127.0.0.1", front.port, local_hostname="client.test", timeout=30) as s:
            self.assertEqual(s.sendmail("a@sender.test", ["box@dest.test"], message("by name")), {})
        stored = wait_until(store.maildir, what="the mail store's maildir")[0].read_bytes()
        self.assertIn(b"Subject: by name\r\n", stored)
        self.assertIn(b"(using TLSv1.3 with cipher", stored)
        with smtplib.SMTP("127.0.0.1", ungranted.port, local_hostname="client.test", timeout=30) as s:
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                s.sendmail("a@sender.test", ["box@dest.test"], message("no grant"))
        self.assertEqual(cm.exception.smtp_code, 451, "no forward grant: never a 250")


if __name__ == "__main__":
    unittest.main()
