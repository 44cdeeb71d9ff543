"""Graceful stop: SIGTERM closes the listeners and the idle sessions, lets a
transaction in progress finish and store its message, then the process
exits; a transaction that does not finish within shutdown_grace is cut."""

import socket
import time
import unittest

from harness import EHLO, Client, Waraka, smtp_config


class GracefulStopTest(unittest.TestCase):
    def test_sigterm_lets_the_open_transaction_finish_and_loses_nothing(self):
        server = Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=smtp_config(shutdown_grace='"20s"'))
        try:
            sending = Client.in_data(server.port)
            sending.sock.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
            idle = Client(server.port)
            idle.replies(1)
            idle.send(EHLO)

            server.proc.terminate()
            server.wait_for_log(r"stopping: no new connections")
            self.assertEqual(idle.replies(1)[0][:9], "421 4.3.2", "an idle session is closed at once")
            self.assertTrue(idle.closed())
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", server.port), timeout=5)

            time.sleep(0.5)
            self.assertIsNone(server.proc.poll(), "the server waits for the transaction")
            self.assertEqual(sending.send(b"second half\r\n.\r\n")[0][:3], "250")
            self.assertEqual(sending.replies(1)[0][:9], "421 4.3.2", "closed once the message is stored")
            self.assertEqual(server.proc.wait(timeout=10), 0)
            stored = server.maildir()
            self.assertEqual(len(stored), 1)
            self.assertIn(b"first half\r\nsecond half\r\n", stored[0].read_bytes())
            for c in (sending, idle):
                c.close()
        finally:
            server.stop()

    def test_a_transaction_that_does_not_finish_is_cut_after_the_grace(self):
        server = Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=smtp_config(shutdown_grace='"2s"'))
        try:
            stalled = Client.in_data(server.port)
            started = time.monotonic()
            server.proc.terminate()
            self.assertEqual(server.proc.wait(timeout=15), 0)
            self.assertLess(time.monotonic() - started, 6)
            self.assertTrue(stalled.closed())
            self.assertEqual(server.maildir(), [])
            server.wait_for_log(r"sessions still open after the grace period")
            stalled.close()
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main()
