"""The DNS-based default plugins end to end over SMTP, against a real dnsmasq
serving the records each case needs (and a forward to a dead server for
SERVFAIL)."""

import re
import smtplib
import unittest

from harness import Waraka, dnsmasq, free_port, greeting_of
from test_proxy import behind_balancer, proxied_greeting

RECORDS = [
    "--local=/test/",  # authoritative: unknown names are NXDOMAIN
    "--mx-host=good.test,mx.good.test,10",
    "--host-record=mx.good.test,192.0.2.10",
    "--host-record=implicit.test,192.0.2.11",
    "--mx-host=null.test,.,0",
    "--mx-host=bogus.test,mx.bogus.test,10",
    "--host-record=mx.bogus.test,127.0.0.1",
    "--mx-host=dangling.test,nowhere.dangling.test,10",
    "--host-record=2.0.0.127.bl.test,127.0.0.2",
    "--txt-record=2.0.0.127.bl.test,Listed for testing",
    "--host-record=4.0.0.127.bl.test,127.0.0.2",
    "--host-record=4.0.0.127.wl.test,127.0.0.2",
    "--host-record=5.0.0.127.bl.test,127.255.255.254",
    # fcrdns: 192.0.2.21 is confirmed, .22 names a host elsewhere, .23 has no
    # PTR, .24's name carries its address, .25 has a name that does not resolve.
    # (Loopback clients cannot be used: the resolver answers their PTR itself.)
    "--local=/2.0.192.in-addr.arpa/",
    "--local=/10.in-addr.arpa/",
    "--ptr-record=21.2.0.192.in-addr.arpa,mail.fcrdns.test",
    "--host-record=mail.fcrdns.test,192.0.2.21",
    "--ptr-record=22.2.0.192.in-addr.arpa,bank.fcrdns.test",
    "--host-record=bank.fcrdns.test,198.51.100.99",
    "--ptr-record=24.2.0.192.in-addr.arpa,192-0-2-24.dyn.fcrdns.test",
    "--host-record=192-0-2-24.dyn.fcrdns.test,192.0.2.24",
    "--ptr-record=25.2.0.192.in-addr.arpa,gone.fcrdns.test",
]


def check_private(server):
    """Loopback test clients are checked like remote ones."""
    server.edit("config/mail_from.is_resolvable.ini", lambda t: t.replace("check_private = false", "check_private = true"))


def dns_setup(dns_port, extra=""):
    def setup(server):
        text = f'\n[dns]\nservers = ["127.0.0.1:{dns_port}"]\ntimeout = "1s"\n{extra}'
        server.edit("waraka.toml", lambda t: t + text)
        server.edit("config/host_list", lambda t: t + "example.com\n")
        check_private(server)

    return setup


def greeting(server, client_ip):
    """The greeting code and text seen from `client_ip` (see `greeting_of`)."""
    return greeting_of(lambda: smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30,
                                            source_address=(client_ip, 0)))


class IsResolvableTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        dead = free_port()  # nothing answers there: lookups forwarded to it fail
        cls.dns = dnsmasq(RECORDS + [f"--server=/servfail.test/127.0.0.1#{dead}"])
        cls.server = Waraka(["mail_from.is_resolvable", "rcpt_to.in_host_list", "queue/maildir"],
                            setup=dns_setup(cls.dns.port))

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.dns.stop()

    def mail(self, sender):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            code, text = s.mail(sender)
            return code, text.decode()

    def test_a_domain_with_a_usable_mx_or_address_is_accepted(self):
        self.assertEqual(self.mail("a@good.test")[0], 250)
        self.assertEqual(self.mail("a@Implicit.test")[0], 250, "no MX: the implicit MX")
        self.assertEqual(self.mail("")[0], 250, "<> is not checked")
        self.assertEqual(self.mail("a@[192.0.2.1]")[0], 250, "address literals are not checked")

    def test_domains_that_cannot_receive_mail_are_refused(self):
        self.assertEqual(self.mail("a@null.test"), (550, "5.7.27 Sender domain null.test accepts no mail (null MX)"))
        for sender in ("a@nxdomain.test", "a@bogus.test", "a@dangling.test"):
            code, text = self.mail(sender)
            self.assertEqual((code, text[:6]), (550, "5.1.8 "), sender)

    def test_a_failing_lookup_is_a_temporary_failure(self):
        code, text = self.mail("a@x.servfail.test")
        self.assertEqual((code, text[:6]), (451, "4.4.3 "))

    def test_without_the_dns_grant_mail_is_tempfailed_not_accepted(self):
        server = Waraka(["mail_from.is_resolvable", "rcpt_to.in_host_list", "queue/maildir"],
                        setup=lambda s: (check_private(s), s.edit("waraka.toml", lambda t: t.replace(
                            '[plugin."mail_from.is_resolvable"]\ngrants = ["dns"]', ""))))
        try:
            with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
                s.ehlo()
                self.assertEqual(s.mail("a@good.test")[0], 451)
        finally:
            server.stop()


def dns_list_settings(**settings):
    """Rewrites `key = value` lines of config/dns-list.ini."""

    def change(text):
        for key, value in settings.items():
            text = re.sub(rf"(?m)^{key} =.*$", f"{key} = {value}", text)
        return text

    return change


class DnsListTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dead = free_port()
        cls.dns = dnsmasq(RECORDS + [f"--server=/dead.test/127.0.0.1#{cls.dead}"])

    @classmethod
    def tearDownClass(cls):
        cls.dns.stop()

    def server(self, **settings):
        def setup(server):
            dns_setup(self.dns.port)(server)
            server.edit("config/dns-list.ini", dns_list_settings(**{"check_private": "true", **settings}))

        return Waraka(["dns-list", "rcpt_to.in_host_list", "queue/maildir"], setup=setup)

    def test_blocked_allowed_and_clean_clients(self):
        server = self.server(zones="bl.test", allow_zones="wl.test")
        try:
            self.assertEqual(greeting(server, "127.0.0.2"),
                             (554, "5.7.1 127.0.0.2 is listed in bl.test: Listed for testing"))
            self.assertEqual(greeting(server, "127.0.0.3")[0], 220, "not listed")
            self.assertEqual(greeting(server, "127.0.0.4")[0], 220, "allow-listed beats block-listed")
            self.assertEqual(greeting(server, "127.0.0.5")[0], 220, "127.255.255.x is an error code")
            server.wait_for_log(r"127\.0\.0\.4 is allow-listed in wl\.test")
        finally:
            server.stop()

    def test_reject_false_only_notes_the_listing(self):
        server = self.server(zones="bl.test", reject="false")
        try:
            self.assertEqual(greeting(server, "127.0.0.2")[0], 220)
            server.wait_for_log(r"127\.0\.0\.2 is listed in bl\.test")
        finally:
            server.stop()

    def test_a_failing_list_tempfails_unless_told_to_continue(self):
        for on_error, expected in (("tempfail", 421), ("continue", 220)):
            server = self.server(zones="dead.test", on_error=on_error)
            try:
                code, text = greeting(server, "127.0.0.3")
                self.assertEqual(code, expected, on_error)
            finally:
                server.stop()

    def test_private_clients_are_not_looked_up_by_default(self):
        server = self.server(zones="bl.test", check_private="false")
        try:
            self.assertEqual(greeting(server, "127.0.0.2")[0], 220)
        finally:
            server.stop()


class FcrdnsTest(unittest.TestCase):
    """Clients stand behind a balancer (PROXY protocol), so they can have
    addresses with reverse DNS of the test's own."""

    @classmethod
    def setUpClass(cls):
        cls.dns = dnsmasq(RECORDS)
        cls.addClassCleanup(cls.dns.stop)

        def setup(server):
            dns_setup(cls.dns.port)(server)
            behind_balancer(server)

        cls.server = Waraka(["fcrdns", "rcpt_to.in_host_list", "queue/maildir"], setup=setup,
                            configured_listeners=True)
        cls.addClassCleanup(cls.server.stop)

    def test_each_client_is_judged_and_noted_and_nobody_is_refused_by_default(self):
        expected = {
            "192.0.2.21": r"pass \(names: mail\.fcrdns\.test; confirmed: mail\.fcrdns\.test\)",
            "192.0.2.22": r"fail \(names: bank\.fcrdns\.test; confirmed: none\)",
            "192.0.2.23": r"none \(names: none; confirmed: none\)",
            "192.0.2.24": r"pass \(names: 192-0-2-24\.dyn\.fcrdns\.test; confirmed: 192-0-2-24\.dyn\.fcrdns\.test; generic\)",
            "192.0.2.25": r"fail \(names: gone\.fcrdns\.test; confirmed: none\)",
        }
        for ip, result in expected.items():
            self.assertEqual(proxied_greeting(self.server, ip)[0], 220, ip)
            self.server.wait_for_log(re.escape(ip) + ": " + result)

    def test_the_reject_settings_refuse_with_5_7_25(self):
        cases = [
            ("reject_no_rdns", "192.0.2.23", "Client 192.0.2.23 has no reverse DNS"),
            ("reject_no_fcrdns", "192.0.2.22", "Client 192.0.2.22 has no forward-confirmed reverse DNS"),
            ("reject_generic_rdns", "192.0.2.24", "Client 192.0.2.24 has a reverse DNS name of a dynamic range"),
        ]
        for setting, ip, text in cases:
            self.server.set_settings("fcrdns.ini", **{setting: "true"})
            try:
                self.assertEqual(proxied_greeting(self.server, ip), (554, f"5.7.25 {text}"))
                self.assertEqual(proxied_greeting(self.server, "192.0.2.21")[0], 220, "a confirmed name passes")
            finally:
                self.server.set_settings("fcrdns.ini", **{setting: "false"})

    def test_private_clients_are_skipped_unless_asked(self):
        self.server.set_settings("fcrdns.ini", reject_no_rdns="true")
        try:
            self.assertEqual(proxied_greeting(self.server, "10.0.0.23")[0], 220)
            self.server.set_settings("fcrdns.ini", check_private="true")
            self.assertEqual(proxied_greeting(self.server, "10.0.0.23")[0], 554)
        finally:
            self.server.set_settings("fcrdns.ini", reject_no_rdns="false", check_private="false")

if __name__ == "__main__":
    unittest.main()
