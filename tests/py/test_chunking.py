"""CHUNKING (RFC 3030) end to end: BDAT chunks sent over a raw socket to a
real waraka, pipelined and split, are stored as they were sent."""

import os
import re
import unittest

from harness import EHLO, Client, Waraka


class ChunkingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        def setup(server):
            server.edit("config/host_list", lambda t: t + "example.com\n")
            server.edit("waraka.toml", lambda t: t.replace("max_message_size = 26214400", "max_message_size = 300000"))

        cls.server = Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=setup)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def client(self):
        client = Client(self.server.port)
        self.addCleanup(client.sock.close)
        client.replies(1)
        return client

    def test_pipelined_chunks_are_stored_as_sent(self):
        client = self.client()
        client.sock.sendall(EHLO)
        ehlo = b""
        while not re.search(rb"(?m)^250 .*\r\n", ehlo):
            ehlo += client.sock.recv(65536)
        self.assertIn(b"250-CHUNKING\r\n", ehlo)
        header = b"From: a@sender.test\r\nTo: rcpt@example.com\r\nSubject: chunked\r\n\r\n"
        # Lines that DATA would unstuff or end on, and 200 KiB of random text.
        body = b"..leading dots\r\n.\r\n" + os.urandom(100_000).hex().encode() + b"\r\n"
        first, second = header + body[:1000], body[1000:]
        envelope = b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<rcpt@example.com>\r\n"
        chunks = b"BDAT %d\r\n%sBDAT %d LAST\r\n%s" % (len(first), first, len(second), second)
        before = set(self.server.maildir())
        client.sock.sendall(envelope + chunks[:5000])
        client.sock.sendall(chunks[5000:])
        replies = client.replies(4)
        self.assertEqual([r[:3] for r in replies], ["250", "250", "250", "250"], replies)
        self.assertEqual(replies[2], f"250 2.0.0 {len(first)} octets received")
        stored = [p.read_bytes() for p in self.server.maildir() if p not in before]
        self.assertEqual(len(stored), 1)
        self.assertIn(b"Received: from client.test", stored[0][:1000], "our trace field on top")
        self.assertTrue(stored[0].endswith(header + body), "byte for byte, no dot-unstuffing")

    def test_a_message_over_the_size_limit_is_refused_at_the_chunk_that_overflows(self):
        client = self.client()
        client.send(EHLO)
        client.send(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<rcpt@example.com>\r\n", 2)
        chunk = b"x" * 200_000
        self.assertEqual(client.send(b"BDAT %d\r\n%s" % (len(chunk), chunk)), ["250 2.0.0 200000 octets received"])
        reply = client.send(b"BDAT %d LAST\r\n%s" % (len(chunk), chunk))
        self.assertEqual(reply[0][:9], "552 5.3.4")
        self.assertEqual(client.send(b"NOOP\r\n"), ["250 2.0.0 OK"], "the session goes on")


if __name__ == "__main__":
    unittest.main()
