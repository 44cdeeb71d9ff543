"""`auth/proxy` end to end: a second real waraka with `auth/flat_file`
is the server that knows the users; the front server checks AUTH by
trying the credentials there (the host's SMTP client, up to AUTH, then
QUIT), per domain of the user name."""

import unittest

from harness import Waraka, flat_file_users, free_port, stopped_after_class, try_login


class AuthProxyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = stopped_after_class(cls, Waraka(
            ["auth/flat_file", "rcpt_to.in_host_list", "queue/maildir"],
            setup=lambda s: flat_file_users(s, {"bob@example.com": "b0b-secret", "bob": "b0b-secret"})))
        dead = free_port()

        def setup(server):
            server.edit("config/auth/proxy.ini", lambda t: t.replace("host =", "host = 127.0.0.1", 1).replace(
                "port = 587", f"port = {cls.upstream.port}").replace("tls = required", "tls = never")
                + f"\n[down.test]\nhost = 127.0.0.1\nport = {dead}\n")

        cls.server = stopped_after_class(cls, Waraka(["auth/proxy", "rcpt_to.in_host_list", "queue/maildir"],
                                                     setup=setup))

    def auth(self, user, password):
        return try_login(self.server.port, user, password)

    def test_credentials_the_other_server_takes_are_taken(self):
        self.assertEqual(self.auth("bob@example.com", "b0b-secret")[0], 235)
        self.assertEqual(self.auth("bob", "b0b-secret")[0], 235, "a name without a domain goes to the top server")
        self.server.wait_for_log(r"auth/proxy: bob@example\.com authenticated by 127\.0\.0\.1:\d+")

    def test_credentials_it_refuses_are_refused(self):
        for user, password in (("bob@example.com", "wrong"), ("nobody@example.com", "b0b-secret"), ("bob", "")):
            self.assertEqual(self.auth(user, password)[0], 535, user)

    def test_a_server_that_cannot_be_asked_lets_nobody_in(self):
        self.assertEqual(self.auth("bob@down.test", "b0b-secret"),
                         (454, "4.7.0 Authentication service unavailable"))
        self.server.wait_for_log(r"auth/proxy: asking 127\.0\.0\.1:\d+ about bob@down\.test failed")


if __name__ == "__main__":
    unittest.main()
