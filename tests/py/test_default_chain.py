"""The instance `waraka init` makes without --plugins: Haraka's default list as
a working inbound MX, also on a machine whose DNS does not answer."""

import smtplib
import subprocess
import unittest

from harness import BIN, Waraka, free_port

GOOD = (
    "From: Alice <alice@sender.test>\r\n"
    "To: postmaster@example.com\r\n"
    "Date: {date}\r\n"
    "Message-ID: <default-chain@sender.test>\r\n"
    "Subject: default chain\r\n\r\nhello\r\n"
)


def now():
    import email.utils

    return email.utils.formatdate(localtime=True)


def dead_dns(server):
    """[dns] points at a port where nothing answers: every lookup fails."""
    server.edit("waraka.toml", lambda t: t + f'\n[dns]\nservers = ["127.0.0.1:{free_port()}"]\ntimeout = "1s"\n')
    server.edit("config/host_list", lambda t: t + "example.com\n")


class DefaultChainTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Waraka(None, setup=dead_dns)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_the_chain_is_haraka_s_default_list_in_order(self):
        out = subprocess.run([BIN, "plugin", "list", "--config", str(self.server.dir)],
                             check=True, capture_output=True, text=True).stdout
        rows = [line.split()[1] for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
        self.assertEqual(rows, ["access", "dns-list", "helo.checks", "limit", "relay", "mail_from.is_resolvable",
                                "rcpt_to.disposable", "rcpt_to.in_host_list", "headers", "queue/maildir"])

    def test_a_local_client_delivers_and_bad_messages_are_refused(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client", timeout=30) as s:
            self.assertEqual(s.ehlo()[0], 250, "a loopback client's one-label name is not checked")
            self.assertEqual(s.mail("alice@sender.test")[0], 250, "a loopback client's sender is not resolved")
            self.assertEqual(s.rcpt("nobody@elsewhere.test")[0], 554, "not ours, not relaying")
            self.assertEqual(s.rcpt("postmaster@example.com")[0], 250)
            self.assertEqual(s.data(GOOD.format(date=now()).encode())[0], 250)
            s.mail("alice@sender.test")
            s.rcpt("postmaster@example.com")
            code, text = s.data(b"From: alice@sender.test\r\nSubject: no date\r\n\r\nhi\r\n")
            self.assertEqual((code, text[:6]), (550, b"5.6.0 "))
        self.assertEqual(len(self.server.maildir()), 1)

    def test_without_dns_a_checked_sender_is_tempfailed_never_accepted(self):
        def checked(server):
            dead_dns(server)
            server.edit("config/mail_from.is_resolvable.ini",
                        lambda t: t.replace("check_private = false", "check_private = true"))

        server = Waraka(None, setup=checked)
        try:
            with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client", timeout=30) as s:
                s.ehlo()
                code, text = s.mail("alice@sender.test")
                self.assertEqual((code, text[:6]), (451, b"4.4.3 "))
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main()
