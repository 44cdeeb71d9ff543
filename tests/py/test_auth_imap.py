"""`auth/imap` end to end: Dovecot's IMAP service, started here with a
certificate of a test CA that waraka trusts (`SSL_CERT_FILE`), knows the
users; the server checks AUTH by logging in there — over TLS from the
start, after STARTTLS, or in the clear — per domain of the user name."""

import tempfile
import unittest

from harness import Waraka, dovecot_imap, free_port, make_ca, stopped_after_class, try_login

USERS = {"bob@example.com": "b0b-secret", "dave@starttls.test": "d4ve", "erin@plain.test": "3rin",
         "fred@untrusted.test": "fr3d"}


class AuthImapTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.tmp.cleanup)
        ca, cert, key = make_ca(cls.tmp.name, ["localhost"])
        cls.imap = stopped_after_class(cls, dovecot_imap(USERS, cert, key))
        dead = free_port()

        def setup(server):
            server.edit("config/auth/imap.ini", lambda t: t.replace("host =", "host = localhost", 1).replace(
                "port = 993", f"port = {cls.imap.imaps_port}")
                + f"\n[starttls.test]\nport = {cls.imap.port}\ntls = required\n"
                + f"\n[plain.test]\nport = {cls.imap.port}\ntls = never\n"
                + "\n[untrusted.test]\nhost = 127.0.0.1\n"
                + f"\n[down.test]\nport = {dead}\n")

        cls.server = stopped_after_class(cls, Waraka(["auth/imap", "rcpt_to.in_host_list", "queue/maildir"],
                                                     setup=setup, env={"SSL_CERT_FILE": str(ca)}))

    def auth(self, user, password):
        return try_login(self.server.port, user, password)

    def test_credentials_the_imap_server_takes_are_taken_over_imaps(self):
        self.assertEqual(self.auth("bob@example.com", "b0b-secret")[0], 235)
        self.server.wait_for_log(rf"auth/imap: bob@example\.com authenticated by localhost:{self.imap.imaps_port}")
        for user, password in (("bob@example.com", "wrong"), ("nobody@example.com", "b0b-secret"),
                               ("bob@example.com", "")):
            self.assertEqual(self.auth(user, password)[0], 535, (user, password))

    def test_starttls_and_a_local_server_in_the_clear(self):
        self.assertEqual(self.auth("dave@starttls.test", "d4ve")[0], 235)
        self.assertEqual(self.auth("dave@starttls.test", "wrong")[0], 535)
        self.assertEqual(self.auth("erin@plain.test", "3rin")[0], 235)
        self.assertEqual(self.auth("erin@plain.test", "wrong")[0], 535)

    def test_a_server_that_cannot_be_trusted_or_reached_lets_nobody_in(self):
        unavailable = (454, "4.7.0 Authentication service unavailable")
        self.assertEqual(self.auth("fred@untrusted.test", "fr3d"), unavailable,
                         "the certificate is for localhost, not 127.0.0.1: the password is not sent")
        self.server.wait_for_log(r"auth/imap: asking 127\.0\.0\.1:\d+ about fred@untrusted\.test failed.*TLS")
        self.assertEqual(self.auth("bob@down.test", "b0b-secret"), unavailable)

    def test_a_server_that_cannot_decide_now_is_not_a_refusal(self):
        self.assertEqual(self.auth("gina@busy.test", "g1na"), (454, "4.7.0 Authentication service unavailable"),
                         "Dovecot's NO [UNAVAILABLE] when a password database fails")
        self.server.wait_for_log(r"auth/imap: asking localhost:\d+ about gina@busy\.test failed.*UNAVAILABLE")


if __name__ == "__main__":
    unittest.main()
