"""`karma` end to end: a real dnsmasq answers the DNS list that scores the
clients, the server holds replies (the host's `tarpit` note), takes over
`dns-list`'s refusal, refuses at a deny hook and keeps each client's history
in its key/value store. Clients are loopback addresses of their own
(127.0.0.2 is listed in bl.test, the others are not)."""

import email
import smtplib
import time
import unittest

from harness import Waraka, dnsmasq, waraka_admin
from test_dns_plugins import RECORDS, dns_list_settings, dns_setup

MESSAGE = b"From: a@sender.test\r\nTo: rcpt@example.com\r\nSubject: karma\r\n\r\nbody\r\n"


def client(server, ip):
    return smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30, source_address=(ip, 0))


def karma_header(server, ip):
    """Delivers a message from `ip`: the X-Waraka-Karma field it was stored with."""
    before = set(server.maildir())
    with client(server, ip) as s:
        s.ehlo()
        s.mail("a@sender.test")
        s.rcpt("rcpt@example.com")
        code, _ = s.data(MESSAGE)
        assert code == 250, code
    (stored,) = [p for p in server.maildir() if p not in before]
    return email.message_from_bytes(stored.read_bytes())["X-Waraka-Karma"]


def wait_ended(server, ip, count):
    """Waits until `count` connections from `ip` have ended for karma (its
    disconnect hook runs after the client is gone)."""
    deadline = time.monotonic() + 10
    pattern = f"karma: {ip} ended with"
    while sum(pattern in line for line in list(server.log)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} connections from {ip} did not end")
        time.sleep(0.05)


class KarmaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = dnsmasq(RECORDS)
        cls.addClassCleanup(cls.dns.stop)

        def setup(server):
            dns_setup(cls.dns.port)(server)
            server.edit("config/dns-list.ini", dns_list_settings(check_private="true", zones="bl.test"))
            server.set_settings("karma.ini", check_private="true", tarpit_max="1")

        cls.server = Waraka(["dns-list", "rcpt_to.in_host_list", "karma", "queue/maildir"], setup=setup)
        cls.addClassCleanup(cls.server.stop)

    def setUp(self):
        settings = (self.server.dir / "config/karma.ini").read_text()
        self.addCleanup(self.server.edit, "config/karma.ini", lambda _: settings)


    def test_a_listed_client_is_taken_over_held_and_refused_at_the_next_deny_hook(self):
        with client(self.server, "127.0.0.2") as s:
            started = time.monotonic()
            code, _ = s.ehlo()
            self.assertEqual(code, 250, "dns-list's 554 taken over: the session goes on")
            self.assertGreaterEqual(time.monotonic() - started, 1.0, "score -7: each reply held tarpit_max")
            self.server.wait_for_log(r"karma: dns-list's refusal at connect taken over: score -7")
            self.assertEqual(s.mail("a@sender.test")[0], 250)
            self.assertEqual(s.rcpt("nobody@elsewhere.test")[0], 550, "unknown: one point more, -8")
            self.assertEqual(s.rcpt("rcpt@example.com")[0], 250, "rcpt is no deny hook")
            code, text = s.docmd("DATA")
            self.assertEqual((code, text.decode()), (554, "5.7.1 Very bad karma score -8"))
        line = self.server.wait_for_log(r"karma: 127\.0\.0\.2 refused at data")
        self.assertIn("failed deny:dns-list,dns-list.listed,karma.unknown_recipients", line)

    def test_a_clean_client_is_not_held_and_its_score_goes_with_the_message(self):
        with client(self.server, "127.0.0.3") as s:
            started = time.monotonic()
            s.ehlo()
            self.assertLess(time.monotonic() - started, 1.0)
        self.assertEqual(karma_header(self.server, "127.0.0.3"), "score=0")

    def test_unknown_commands_cost_points_once_per_threshold(self):
        with client(self.server, "127.0.0.6") as s:
            s.ehlo()
            for _ in range(4):
                self.assertEqual(s.docmd("XYZZY")[0], 500)
            self.assertEqual(s.mail("a@sender.test")[0], 250)
        line = self.server.wait_for_log(r"karma: 127\.0\.0\.6 ended with")
        self.assertIn("score=-3; fail=karma.unrecognized", line)

    def test_each_connection_counts_in_its_clients_history(self):
        self.server.set_settings("karma.ini", positive="-1")
        self.assertEqual(karma_header(self.server, "127.0.0.7"), "score=0", "no history yet")
        wait_ended(self.server, "127.0.0.7", 1)
        self.assertEqual(karma_header(self.server, "127.0.0.7"), "score=1; history=1; pass=karma.history",
                         "one good connection before: +1")
        with client(self.server, "127.0.0.8") as s:
            s.ehlo()
            s.docmd("XYZZY")
        wait_ended(self.server, "127.0.0.8", 1)
        self.assertEqual(karma_header(self.server, "127.0.0.8"), "score=-1; history=-1; fail=karma.history",
                         "one bad connection before (-1): -1")

    def test_the_administrator_forgives_a_client_with_waraka_kv(self):
        with client(self.server, "127.0.0.11") as s:
            s.ehlo()
            s.docmd("XYZZY")
        wait_ended(self.server, "127.0.0.11", 1)
        self.assertEqual(waraka_admin(self.server, "kv", "list", "karma:127.0.0.11"), (0, "karma:127.0.0.11/32"))
        self.assertEqual(waraka_admin(self.server, "kv", "get", "karma:127.0.0.11/32"), (0, "0 1 1"),
                         "good, bad, connections")
        self.assertEqual(waraka_admin(self.server, "kv", "delete", "karma:127.0.0.11/32"), (0, "deleted"))
        self.assertEqual(waraka_admin(self.server, "kv", "get", "karma:127.0.0.11/32"), (0, ""))
        self.assertEqual(karma_header(self.server, "127.0.0.11"), "score=0", "no history left")
        code, said = waraka_admin(self.server, "kv", "--store", "nowhere", "list")
        self.assertEqual((code, said), (1, "waraka: the server says: waraka.toml has no [kv.nowhere]"))

    def test_a_refusal_stands_when_its_plugin_is_excluded(self):
        self.server.set_settings("karma.ini", deny_excludes_plugins="dns-list")
        with self.assertRaises(smtplib.SMTPConnectError) as refused:
            client(self.server, "127.0.0.2")
        self.assertEqual(refused.exception.smtp_code, 554)

    def test_private_clients_are_left_alone_by_default(self):
        self.server.set_settings("karma.ini", check_private="false")
        with self.assertRaises(smtplib.SMTPConnectError) as refused:
            client(self.server, "127.0.0.2")
        self.assertEqual(refused.exception.smtp_code, 554, "dns-list's refusal, not taken over")


if __name__ == "__main__":
    unittest.main()


class NetworkHistoryTest(unittest.TestCase):
    """`asn` notes the clients' autonomous system (TXT records in Team
    Cymru's format, served by dnsmasq); karma keeps a history per network,
    so a client new to the server answers for its neighbours."""

    @classmethod
    def setUpClass(cls):
        cls.dns = dnsmasq(["--local=/cymru.com/"] + [
            f"--txt-record={n}.0.0.127.origin.asn.cymru.com,64500 | 127.0.0.0/24 | ZZ | test | 2020-01-01"
            for n in (9, 10)])
        cls.addClassCleanup(cls.dns.stop)

        def setup(server):
            dns_setup(cls.dns.port)(server)
            server.set_settings("asn.ini", check_private="true")
            server.set_settings("karma.ini", check_private="true", tarpit_max="0")

        cls.server = Waraka(["asn", "rcpt_to.in_host_list", "karma", "queue/maildir"], setup=setup)
        cls.addClassCleanup(cls.server.stop)

    def test_a_new_client_of_a_bad_network_starts_lower(self):
        for count in range(1, 7):
            with client(self.server, "127.0.0.9") as s:
                s.ehlo()
                s.docmd("XYZZY")
            wait_ended(self.server, "127.0.0.9", count)
        self.assertEqual(karma_header(self.server, "127.0.0.10"), "score=-2; fail=karma.asn_history",
                         "six bad connections from AS64500 before")
