"""access end to end: allow and deny lists for clients (by address, range and
reverse-DNS name), senders and recipients, over smtplib from chosen
loopback addresses."""

import smtplib
import unittest

from harness import Waraka, dnsmasq

LISTS = {
    "access.connect.deny": "127.0.0.2\n127.0.1.0/24\n",
    "access.connect.allow": "127.0.1.7\n",
    "access.mail.deny": "spammer@example.org\nspam.example\n/^no-?reply@/\n",
    "access.mail.allow": "vip.spam.example\n",
    "access.rcpt.deny": "retired@example.com\n",
}


def server_with(lists, dns_port):
    def setup(server):
        for name, text in lists.items():
            server.edit(f"config/{name}", lambda t, text=text: t + text)
        server.edit("waraka.toml", lambda t: t + f'\n[dns]\nservers = ["127.0.0.1:{dns_port}"]\ntimeout = "1s"\n')

    return Waraka(["access", "rcpt_to.in_host_list", "queue/maildir"], setup=setup)


def greeting(server, client):
    try:
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30,
                          source_address=(client, 0)) as s:
            s.ehlo()
            return 220, ""
    except smtplib.SMTPConnectError as e:
        return e.smtp_code, e.smtp_error.decode()


DENIED = (554, "5.7.1 Your host is not allowed to connect")


class AccessTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = dnsmasq(["--local=/test/"])
        cls.server = server_with(LISTS, cls.dns.port)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.dns.stop()

    def connect(self, client="127.0.0.3"):
        return smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30,
                            source_address=(client, 0))

    def test_clients_by_address_and_range(self):
        self.assertEqual(greeting(self.server, "127.0.0.2"), DENIED, "an address")
        self.assertEqual(greeting(self.server, "127.0.1.9"), DENIED, "a range")
        self.assertEqual(greeting(self.server, "127.0.1.7")[0], 220, "the allow list wins over the deny list")
        self.assertEqual(greeting(self.server, "127.0.0.3")[0], 220)

    def test_clients_by_reverse_dns_name(self):
        # The resolver names every loopback address "localhost" (RFC 6761)
        # without asking a server, so a name entry is tested with that name.
        server = server_with({"access.connect.deny": "/^localhost$/\n"}, self.dns.port)
        try:
            self.assertEqual(greeting(server, "127.0.0.3"), DENIED)
            server.wait_for_log(r"127\.0\.0\.3 denied by access\.connect entry \"/\^localhost\$/\"")
        finally:
            server.stop()

    def test_senders(self):
        with self.connect() as s:
            s.ehlo()
            for sender in ("spammer@example.org", "x@spam.example", "x@mail.spam.example", "noreply@anywhere.net"):
                code, text = s.mail(sender)
                self.assertEqual((code, text.decode()), (550, f"5.7.1 Sender <{sender}> denied"), sender)
            self.assertEqual(s.mail("x@vip.spam.example")[0], 250, "allowed before the domain's deny")
            s.rset()
            self.assertEqual(s.mail("friend@example.org")[0], 250)
            s.rset()
            self.assertEqual(s.mail("")[0], 250, "<> is not checked")

    def test_recipients_and_allow_never_accepts(self):
        with self.connect() as s:
            s.ehlo()
            s.mail("friend@example.org")
            self.assertEqual(s.rcpt("retired@example.com"), (550, b"5.7.1 Recipient <retired@example.com> denied"))
            self.assertEqual(s.rcpt("alice@example.com")[0], 250)
            self.assertEqual(s.rcpt("someone@elsewhere.net")[0], 550, "access never accepts a remote recipient")


if __name__ == "__main__":
    unittest.main()
