"""auth/dovecot end to end: a real waraka's submission port checks AUTH
PLAIN and LOGIN passwords with a real Dovecot's authentication service
(over TCP), after STARTTLS, with smtplib as the client."""

import unittest

from harness import Waraka, dovecot, enable_tls, free_port, try_login

USERS = {"alice@mail.test": 0, "bob@mail.test": 0}
PASSWORDS = {"alice@mail.test": "alice-secret", "bob@mail.test": "bob-secret"}


def submission_server(auth_address):
    def setup(server):
        enable_tls(server, "localhost")
        server.edit("waraka.toml", lambda t: t + f'\n[sasl]\ndovecot = "{auth_address}"\n')
        server.edit("config/auth/dovecot.ini", lambda t: t.replace("default_domain =", "default_domain = mail.test"))

    return Waraka(["auth/dovecot", "rcpt_to.in_host_list", "queue/maildir"], roles=("submission",), setup=setup)


class AuthDovecotTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dovecot = dovecot(USERS, PASSWORDS)
        cls.addClassCleanup(cls.dovecot.stop)
        cls.server = submission_server(f"127.0.0.1:{cls.dovecot.auth_port}")
        cls.addClassCleanup(cls.server.stop)

    def login(self, user, password, mechanism="PLAIN", server=None):
        """The reply to AUTH after STARTTLS: (code, text)."""
        server = server or self.server
        return try_login(server.port, user, password, server.dir / "config/tls/cert.pem", mechanism)

    def test_the_right_password_authenticates_with_plain_and_login(self):
        self.assertEqual(self.login("alice@mail.test", "alice-secret"), (235, "2.7.0 Authentication successful"))
        self.assertEqual(self.login("alice@mail.test", "alice-secret", "LOGIN")[0], 235)
        self.server.wait_for_log(r"alice@mail\.test authenticated by dovecot as alice@mail\.test")

    def test_a_wrong_password_or_an_unknown_user_is_refused(self):
        self.assertEqual(self.login("alice@mail.test", "bob-secret"), (535, "5.7.8 Authentication credentials invalid"))
        self.assertEqual(self.login("mallory@mail.test", "anything")[0], 535)

    def test_a_bare_user_name_gets_the_default_domain(self):
        self.assertEqual(self.login("bob", "bob-secret")[0], 235)
        self.server.wait_for_log(r"bob authenticated by dovecot as bob@mail\.test")

    def test_an_unreachable_service_is_a_temporary_failure(self):
        server = submission_server(f"127.0.0.1:{free_port()}")
        try:
            code, text = self.login("alice@mail.test", "alice-secret", server=server)
            self.assertEqual((code, text[:6]), (454, "4.7.0 "))
            server.wait_for_log(r"dovecot auth for alice@mail\.test: Error::Backend")
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main()
