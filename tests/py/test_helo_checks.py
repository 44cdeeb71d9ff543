"""helo.checks end to end: EHLO/HELO names sent with smtplib from chosen
loopback addresses to a real waraka."""

import smtplib
import unittest

from harness import Waraka


def setup(server):
    server.edit("waraka.toml", lambda t: t.replace('# hostname = "mx.example.com"', 'hostname = "mx.waraka.test"'))
    server.edit("config/helo.checks.regexps", lambda t: t + "^spam-bot\\.\n")
    server.edit("config/relay.acl_allow", lambda t: t + "127.0.0.3\n")
    server.edit("config/helo.checks.ini", lambda t: t.replace("check_private = false", "check_private = true"))


class HeloChecksTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Waraka(["relay", "helo.checks", "rcpt_to.in_host_list", "queue/maildir"], setup=setup)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def greet(self, name, verb="ehlo", client="127.0.0.2"):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="unused", timeout=30,
                          source_address=(client, 0)) as s:
            code, text = getattr(s, verb)(name)
            return code, text.decode()

    def test_good_names_pass(self):
        self.assertEqual(self.greet("mail.example.net")[0], 250)
        self.assertEqual(self.greet("[127.0.0.2]")[0], 250, "a literal of the client's own address")
        self.assertEqual(self.greet("mail.example.net", verb="helo")[0], 250)

    def test_each_rejecting_check(self):
        cases = {
            "192.0.2.1": "is a bare IP address",
            "[192.0.2.9]": "is not the client's address",
            "localhost": "is not a valid host name",
            "bad_name.example.net": "is not a valid host name",
            "mx.waraka.test": "is this server's own name",
            "example.com": "is this server's own name",
            "spam-bot.example.net": "matches a refused pattern",
        }
        for name, why in cases.items():
            code, text = self.greet(name)
            self.assertEqual((code, text[:6]), (550, "5.7.1 "), name)
            self.assertIn(why, text, name)
        self.assertEqual(self.greet("localhost", verb="helo")[0], 550, "HELO is checked like EHLO")

    def test_a_dynamic_looking_name_is_only_noted(self):
        self.assertEqual(self.greet("127-0-0-2.dsl.example.net")[0], 250)
        self.server.wait_for_log(r"HELO 127-0-0-2\.dsl\.example\.net noted: dynamic")

    def test_relaying_clients_are_not_checked(self):
        self.assertEqual(self.greet("localhost", client="127.0.0.3")[0], 250)


class HeloChecksSettingsTest(unittest.TestCase):
    def test_a_check_set_to_false_does_not_run(self):
        def quiet(server):
            setup(server)
            server.edit("config/helo.checks.ini", lambda t: t.replace("valid_hostname = true", "valid_hostname = false"))

        server = Waraka(["helo.checks", "rcpt_to.in_host_list", "queue/maildir"], setup=quiet)
        try:
            with smtplib.SMTP("127.0.0.1", server.port, local_hostname="unused", timeout=30,
                              source_address=("127.0.0.2", 0)) as s:
                self.assertEqual(s.ehlo("mailhost")[0], 250, "a single label passes with valid_hostname off")
                self.assertEqual(s.ehlo("192.0.2.1")[0], 550, "the other checks still run")
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main()
