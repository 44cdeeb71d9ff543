"""greylist end to end: smtplib retries against a real waraka whose greylist
plugin keeps triplets in its key/value store, with short timeouts."""

import smtplib
import time
import unittest

from harness import Waraka


def instance(**settings):
    """A waraka greylisting after rcpt_to.in_host_list, with `settings`
    replacing those of the shipped config/greylist.ini."""

    def setup(server):
        server.edit("config/host_list", lambda t: t + "example.com\n")
        server.set_settings("greylist.ini", **settings)

    return Waraka(["rcpt_to.in_host_list", "greylist", "queue/maildir"], setup=setup)


class GreylistTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Loopback is private: check_private makes the test client count.
        cls.server = instance(check_private="true", black_timeout="2s")
        cls.lenient = instance()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.lenient.stop()

    def attempt(self, sender, recipient, server=None):
        """One delivery attempt: the RCPT reply, and the DATA reply when it was accepted."""
        with smtplib.SMTP("127.0.0.1", (server or self.server).port, local_hostname="client.example", timeout=30) as s:
            s.ehlo()
            s.mail(sender)
            code, text = s.rcpt(recipient)
            if code != 250:
                return code, text.decode()
            return s.data(b"Subject: greylist\r\n\r\nhello\r\n")[0], ""

    def test_a_first_attempt_waits_and_a_retry_after_the_black_timeout_passes(self):
        sender, recipient = "a@retrying.test", "one@example.com"
        self.assertEqual(self.attempt(sender, recipient), (450, "4.7.1 Greylisted, please try again later"))
        self.assertEqual(self.attempt(sender, recipient)[0], 450, "a retry too soon waits again")
        self.server.wait_for_log(r"retried too soon")
        time.sleep(3.1)
        self.assertEqual(self.attempt(sender, recipient), (250, ""))
        self.server.wait_for_log(r"retried after \d+ s: passes")
        self.assertEqual(self.attempt(sender, recipient), (250, ""), "the triplet is whitelisted now")
        self.assertEqual(self.attempt(sender, "two@example.com")[0], 450, "another recipient is its own triplet")
        self.assertEqual(self.attempt("b@retrying.test", recipient)[0], 450, "so is another sender")

    def test_unknown_recipients_are_refused_before_greylisting(self):
        self.assertEqual(self.attempt("a@spammer.test", "nobody@elsewhere.test")[0], 550)

    def test_private_clients_are_not_greylisted_by_default(self):
        self.assertEqual(self.attempt("c@retrying.test", "one@example.com", server=self.lenient), (250, ""))


if __name__ == "__main__":
    unittest.main()
