"""Early talkers over real sockets: with `banner_delay`, a client that sends
before the greeting is refused, one that waits is served."""

import socket
import time
import unittest

from harness import Waraka


def read_reply(sock):
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode()


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
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10) as sock:
            sock.sendall(b"EHLO hasty.test\r\n")
            self.assertEqual(read_reply(sock), "554 5.5.0 Error: talking before the greeting\r\n")
            self.assertEqual(sock.recv(100), b"", "the server closed the connection")
        self.server.wait_for_log("client talked before the greeting")

    def test_a_patient_client_gets_the_greeting_after_the_delay(self):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10) as sock:
            greeting = read_reply(sock)
            waited = time.monotonic() - started
            self.assertTrue(greeting.startswith("220 "), greeting)
            self.assertGreaterEqual(waited, 0.9, "the greeting was held for banner_delay")
            sock.sendall(b"QUIT\r\n")
            self.assertTrue(read_reply(sock).startswith("221 "))


if __name__ == "__main__":
    unittest.main()
