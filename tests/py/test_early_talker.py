"""Early talkers over real sockets: with `banner_delay`, a client that sends
before the greeting is refused, one that waits is served."""

import time
import unittest

from harness import Client, Waraka


class EarlyTalkerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        def setup(server):
            server.edit("waraka.toml", lambda t: t.replace('# banner_delay = "1s"', 'banner_delay = "1s"'))

        cls.server = Waraka(["rcpt_to.in_host_list", "queue/discard"], setup=setup)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_talking_first_is_refused_and_closed(self):
        client = Client(self.server.port)
        try:
            client.sock.sendall(b"EHLO hasty.test\r\n")
            self.assertEqual(client.replies(1), ["554 5.5.0 Error: talking before the greeting"])
            self.assertTrue(client.closed(), "the server closed the connection")
        finally:
            client.close()
        self.server.wait_for_log("client talked before the greeting")

    def test_a_patient_client_gets_the_greeting_after_the_delay(self):
        started = time.monotonic()
        client = Client(self.server.port)
        try:
            greeting = client.replies(1)[0]
            waited = time.monotonic() - started
            self.assertTrue(greeting.startswith("220 "), greeting)
            self.assertGreaterEqual(waited, 0.9, "the greeting was held for banner_delay")
            self.assertTrue(client.send(b"QUIT\r\n")[0].startswith("221 "))
        finally:
            client.close()


if __name__ == "__main__":
    unittest.main()
