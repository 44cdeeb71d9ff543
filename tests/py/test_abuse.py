"""The protocol abuse table over real sockets: each attack of
reference/security.md sent to a live waraka as raw bytes, with the reply it
must get and whether the server must close; then the resource limits
(connection caps, trickled lines, the minimum data rate) and thousands of
idle and slow connections that must not stop a new client."""

import re
import resource
import select
import smtplib
import socket
import time
import unittest

from harness import EHLO, ENVELOPE, Client, Waraka, smtp_config

def after_ehlo(data, replies):
    """Steps: EHLO alone (it must end a pipelined group), then DATA's bytes."""
    return [(EHLO, 1), (data, replies)]


def in_data(content):
    """Steps: EHLO, the envelope up to the 354, then CONTENT and its reply."""
    return [(EHLO, 1), (ENVELOPE, 3), (content, 1)]


# (what, steps of (bytes, replies to read), how the last reply starts, whether the server closes)
SMUGGLING = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\r\n.\r",
             b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"]
TABLE = [
    ("over-long command line (5,000 bytes)", [(b"EHLO " + b"a" * 5000 + b"\r\n", 1)], "500 5.5.2", False),
    ("command line of 1 MB", [(b"NOOP " + b"a" * 1_000_000 + b"\r\n", 1)], "500 5.5.2", False),
    ("NUL in a command", [(b"NOOP a\x00b\r\n", 1)], "500 5.5.2", False),
    ("bare LF ending a command", [(b"NOOP\n", 1)], "500 5.5.2", False),
    ("over-long DATA line (70,000 bytes)", in_data(b"Subject: x\r\n\r\n" + b"a" * 70_000 + b"\r\n.\r\n"),
     "552 5.3.4", False),
    ("NUL in DATA", in_data(b"Subject: x\r\n\r\nnul\x00here\r\n.\r\n"), "554 5.6.0", False),
    ("bare LF in DATA", in_data(b"Subject: x\r\n\r\nbare\nlf\r\n.\r\n"), "554 5.6.0", False),
    ("bare CR in DATA", in_data(b"Subject: x\r\n\r\nbare\rcr\r\n.\r\n"), "554 5.6.0", False),
    ("header bomb (100,000 header fields)",
     in_data(b"".join(b"X-H%d: v\r\n" % i for i in range(100_000)) + b"\r\nbody\r\n.\r\n"), "552 5.3.4", False),
    ("mail loop (101 Received: fields)",
     in_data(b"Received: from a by b\r\n" * 101 + b"Subject: x\r\n\r\nloop\r\n.\r\n"), "554 5.4.6", False),
    ("commands sent ahead after HELO (no PIPELINING)", [(b"HELO client.test\r\nMAIL FROM:<a@sender.test>\r\n", 1)],
     "554 5.5.0", True),
    ("commands sent ahead of the greeting's EHLO reply", [(EHLO + b"MAIL FROM:<a@sender.test>\r\n", 1)],
     "554 5.5.0", True),
    ("message glued to DATA before the 354", after_ehlo(ENVELOPE + b"Subject: x\r\n\r\nearly\r\n.\r\n", 3),
     "554 5.5.0", True),
    ("HTTP request", [(b"GET / HTTP/1.1\r\n", 1)], "554 5.7.0", True),
    ("HTTP CONNECT", [(b"CONNECT mail.example.com:25 HTTP/1.1\r\n", 1)], "554 5.7.0", True),
    ("HTTP request with its headers", [(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", 1)], "554 5.5.0", True),
    ("junk command flood (101 NOOPs)", [(EHLO, 1)] + [(b"NOOP\r\n", 1)] * 101, "421 4.7.0", True),
    ("error flood (11 unknown commands)", [(EHLO, 1)] + [(b"BOGUS\r\n", 1)] * 11, "421 4.7.0", True),
    ("DATA before RCPT", after_ehlo(b"MAIL FROM:<a@sender.test>\r\nDATA\r\n", 2), "503 5.5.1", False),
    ("MAIL before EHLO", [(b"MAIL FROM:<a@sender.test>\r\n", 1)], "503 5.5.1", False),
    ("CR inside MAIL FROM", after_ehlo(b"MAIL FROM:<a\rb@sender.test>\r\n", 1), "500 5.5.2", False),
] + [
    (f"end-of-data smuggling {seq!r}", in_data(b"Subject: s\r\n\r\nbody" + seq + b"MAIL FROM:<evil@sender.test>\r\n"
                                               b"RCPT TO:<rcpt@example.com>\r\nDATA\r\nsmuggled\r\n.\r\n"), "5", False)
    for seq in SMUGGLING
]


class AbuseTableTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Waraka(["rcpt_to.in_host_list", "queue/maildir"])

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_every_attack_gets_its_reply(self):
        observed = []
        for what, steps, expected, closes in TABLE:
            with self.subTest(what):
                client = Client(self.server.port)
                try:
                    self.assertTrue(client.replies(1)[0].startswith("220"))
                    for data, count in steps:
                        last = client.send(data, count)[-1]
                    observed.append((what, last))
                    self.assertTrue(last.startswith(expected), f"{what}: {last}")
                    if closes:
                        self.assertTrue(client.closed(), f"{what}: still open")
                    else:
                        self.assertTrue(client.send(b"QUIT\r\n")[0].startswith("221"), what)
                finally:
                    client.close()
        print("\n" + "\n".join(f"  {what}: {reply}" for what, reply in observed))
        # Nothing smuggled was ever stored as a message of its own.
        for path in self.server.maildir():
            self.assertNotIn(b"evil@sender.test", path.read_bytes().split(b"\r\n\r\n")[0])

    def test_a_thousand_recipients_get_452_after_the_hundredth(self):
        client = Client(self.server.port)
        try:
            client.replies(1)
            rcpts = b"".join(b"RCPT TO:<r%d@example.com>\r\n" % i for i in range(1000))
            client.send(EHLO)
            replies = client.send(b"MAIL FROM:<a@sender.test>\r\n" + rcpts, 1001)[1:]
            self.assertEqual({r[:3] for r in replies[:100]}, {"250"})
            self.assertEqual({r[:9] for r in replies[100:]}, {"452 4.5.3"})
        finally:
            client.close()


class LimitsTest(unittest.TestCase):
    def test_connection_caps_refuse_before_a_session(self):
        server = Waraka(["rcpt_to.in_host_list", "queue/maildir"],
                        setup=smtp_config(max_connections=5, max_connections_per_ip=3))
        try:
            held = [Client(server.port) for _ in range(3)]
            for c in held:
                c.replies(1)
            refused = Client(server.port)
            self.assertEqual(refused.replies(1), ["421 4.7.0 Too many connections from your address, try again later"])
            self.assertTrue(refused.closed())
            refused.close()
            server.wait_for_log(r"connection refused: too many connections .*cap=\"client\"")
            held.pop().close()
            time.sleep(0.3)
            again = Client(server.port)
            self.assertTrue(again.replies(1)[0].startswith("220"), "a freed place is taken again")
            again.close()
        finally:
            for c in held:
                c.close()
            server.stop()

    def test_idle_clients_trickled_lines_and_slow_data_are_cut_off(self):
        server = Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=smtp_config(idle_timeout='"2s"'))
        try:
            idle = Client(server.port)
            idle.replies(1)
            started = time.monotonic()
            self.assertEqual(idle.replies(1, timeout=10)[0][:9], "421 4.4.2")
            self.assertLess(time.monotonic() - started, 5)
            # One byte every 0.5 s never lets the idle timer fire; the line's own deadline does.
            trickle = Client(server.port)
            trickle.replies(1)
            started = time.monotonic()
            reply = None
            for byte in b"EHLO " + b"a" * 30:
                r, _, _ = select.select([trickle.sock], [], [], 0.5)
                if r:
                    reply = trickle.replies(1)[0]
                    break
                trickle.sock.sendall(bytes([byte]))
            self.assertIsNotNone(reply, "the trickled line was never cut off")
            self.assertEqual(reply[:9], "421 4.4.2")
            self.assertLess(time.monotonic() - started, 5)
            # DATA at 1 byte per 0.5 s is below 500 bytes/s: cut off after the 10 s grace.
            slow = Client.in_data(server.port)
            started = time.monotonic()
            reply = None
            while reply is None and time.monotonic() - started < 20:
                r, _, _ = select.select([slow.sock], [], [], 0.5)
                if r:
                    reply = slow.replies(1)[0]
                else:
                    slow.sock.sendall(b"x")
            self.assertEqual(reply, f"421 4.4.2 {server_name(server)} Data rate too low, closing connection")
            self.assertGreater(time.monotonic() - started, 9)
            for c in (idle, trickle, slow):
                c.close()
        finally:
            server.stop()

    def test_thousands_of_idle_and_slow_connections_do_not_stop_a_new_client(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        count = min(5000, (hard - 200) // 2)
        server = Waraka(["rcpt_to.in_host_list", "queue/maildir"],
                        setup=smtp_config(max_connections=count + 100, max_connections_per_ip=0))
        held = []
        try:
            for i in range(count):
                s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
                s.setblocking(False)
                held.append(s)
            # Half of them are slow: one byte of a command line every few seconds.
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline:
                for s in held[::2]:
                    try:
                        s.send(b"N")
                    except (BlockingIOError, ConnectionError):
                        pass
                time.sleep(4)
            started = time.monotonic()
            with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as c:
                c.ehlo("client.test")
                c.sendmail("a@sender.test", ["rcpt@example.com"], b"Subject: busy\r\n\r\nstill served\r\n")
            took = time.monotonic() - started
            print(f"\n{count} idle/slow connections held; a new client delivered in {took * 1000:.0f} ms")
            self.assertLess(took, 1.0)
            self.assertEqual(len(server.maildir()), 1)
        finally:
            for s in held:
                s.close()
            server.stop()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def server_name(server):
    line = next(line for line in server.log if "listening" in line)
    return re.search(r"hostname=(\S+)", line).group(1)


if __name__ == "__main__":
    unittest.main()
