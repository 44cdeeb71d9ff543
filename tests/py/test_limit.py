"""limit end to end: two waraka processes share their counters through one
real redis-server; each case uses its own client address, since counters
are per address."""

import smtplib
import socket
import time
import unittest

from harness import Waraka, flat_file_users, redis, set_keys, stopped_after_class, waraka_admin


def limit_setup(redis_port):
    settings = {
        "store": "shared",
        "concurrency": "2",
        "connection_rate": "4/1h",
        "recipient_rate": "3/1h",
        "max_unrecognized": "2",
    }

    def setup(server):
        server.edit("config/limit.ini", lambda text: set_keys(text, settings))
        server.edit("waraka.toml", lambda t: t.replace('grants = ["kv:default"]           # the store',
                                                       'grants = ["kv:shared"]           # the store') + (
            f'\n[kv.shared]\nbackend = "redis"\nurl = "redis://127.0.0.1:{redis_port}/0"\n'))

    return setup


class LimitTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.redis = redis()
        cls.servers = [Waraka(["limit", "rcpt_to.in_host_list", "queue/maildir"], setup=limit_setup(cls.redis.port))
                       for _ in range(2)]

    @classmethod
    def tearDownClass(cls):
        for server in cls.servers:
            server.stop()
        cls.redis.stop()

    def redis_get(self, key):
        """GET `key` from the shared Redis (RESP over a socket)."""
        with socket.create_connection(("127.0.0.1", self.redis.port), timeout=5) as sock:
            sock.sendall(f"*2\r\n$3\r\nGET\r\n${len(key)}\r\n{key}\r\n".encode())
            reply = sock.makefile("rb")
            header = reply.readline()
            return None if header.startswith(b"$-1") else reply.readline().strip()

    def open(self, server, client):
        """A connection from `client`: (greeting code, the socket file) — kept open by the caller."""
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=(client, 0))
        lines = sock.makefile("rb")
        return int(lines.readline()[:3]), sock, lines

    def test_concurrency_is_shared_by_both_servers(self):
        a, b = self.servers
        code1, sock1, _ = self.open(a, "127.0.0.2")
        code2, sock2, _ = self.open(b, "127.0.0.2")
        self.assertEqual((code1, code2), (220, 220))
        code3, sock3, _ = self.open(a, "127.0.0.2")
        self.assertEqual(code3, 421, "the third connection at once, counted across both servers")
        sock3.close()
        sock1.sendall(b"QUIT\r\n")
        sock1.close()
        deadline = time.monotonic() + 10
        while self.redis_get("waraka:shared:conc:127.0.0.2") != b"1" and time.monotonic() < deadline:
            time.sleep(0.02)
        code4, sock4, _ = self.open(b, "127.0.0.2")
        sock4.close()
        self.assertEqual(code4, 220, "a slot is free again once a connection closed")
        sock2.close()

    def test_connection_rate_across_servers(self):
        codes = []
        for n in range(5):
            code, sock, _ = self.open(self.servers[n % 2], "127.0.0.3")
            codes.append(code)
            sock.sendall(b"QUIT\r\n")
            sock.close()
        self.assertEqual(codes, [220, 220, 220, 220, 421])

    def test_the_administrator_lifts_a_limit_with_waraka_kv(self):
        def connect():
            code, sock, _ = self.open(self.servers[0], "127.0.0.6")
            sock.sendall(b"QUIT\r\n")
            sock.close()
            return code

        self.assertEqual([connect() for _ in range(5)], [220, 220, 220, 220, 421])
        code, keys = waraka_admin(self.servers[1], "kv", "--store", "shared", "list", "conn:127.0.0.6:")
        self.assertEqual(code, 0, keys)
        (key,) = keys.splitlines()
        self.assertEqual(waraka_admin(self.servers[1], "kv", "--store", "shared", "get", key), (0, "5"))
        self.assertEqual(waraka_admin(self.servers[1], "kv", "--store", "shared", "delete", key), (0, "deleted"))
        self.assertEqual(connect(), 220, "the count starts again")

    def test_recipient_rate(self):
        with smtplib.SMTP("127.0.0.1", self.servers[0].port, local_hostname="client.test", timeout=30,
                          source_address=("127.0.0.4", 0)) as s:
            s.ehlo()
            s.mail("a@example.org")
            codes = [s.rcpt(f"r{n}@example.com")[0] for n in range(3)]
        with smtplib.SMTP("127.0.0.1", self.servers[1].port, local_hostname="client.test", timeout=30,
                          source_address=("127.0.0.4", 0)) as s:
            s.ehlo()
            s.mail("a@example.org")
            code, text = s.rcpt("r3@example.com")
        self.assertEqual(codes, [250, 250, 250])
        self.assertEqual((code, text[:6]), (450, b"4.7.1 "), "the fourth recipient, on the other server")

    def test_unrecognized_commands_end_the_connection(self):
        code, sock, lines = self.open(self.servers[0], "127.0.0.5")
        replies = []
        for verb in (b"FOO", b"BAR", b"BAZ"):
            sock.sendall(verb + b"\r\n")
            replies.append(lines.readline()[:9])
        self.assertEqual(replies, [b"500 5.5.2", b"500 5.5.2", b"521 5.5.2"])
        self.assertEqual(lines.readline(), b"", "closed after the 521")
        sock.close()



class AccountLimitTest(unittest.TestCase):
    """Recipients counted per authenticated user and per envelope sender,
    whatever address they come from (memory store)."""

    @classmethod
    def setUpClass(cls):
        def setup(server):
            server.edit("config/limit.ini", lambda text: set_keys(text, {
                "connection_rate": "", "recipient_rate": "100/1h",
                "user_recipient_rate": "3/1h", "sender_recipient_rate": "4/1h"}))
            flat_file_users(server, {"bob": "bob-pw", "carol": "carol-pw"})
            server.hold_outbound()

        cls.server = stopped_after_class(cls, Waraka(["auth/flat_file", "limit", "rcpt_to.in_host_list",
                                                      "queue/maildir"], setup=setup))

    def rcpt_codes(self, client, sender, count, login=None):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30,
                          source_address=(client, 0)) as s:
            s.ehlo()
            if login:
                s.login(login, f"{login}-pw")
            s.mail(sender)
            return [s.rcpt(f"r{n}@example.com")[0] for n in range(count)]

    def test_a_users_recipients_are_counted_wherever_they_connect_from(self):
        self.assertEqual(self.rcpt_codes("127.0.0.7", "bob@example.com", 4, login="bob"), [250, 250, 250, 450])
        self.assertEqual(self.rcpt_codes("127.0.0.8", "bob@example.com", 1, login="bob"), [450],
                         "the count follows the account, not the address")
        self.assertEqual(self.rcpt_codes("127.0.0.8", "carol@example.com", 1, login="carol"), [250])
        self.server.wait_for_log(r"user_recipient_rate: bob: 4 recipients")

    def test_a_senders_recipients_are_counted_across_clients(self):
        codes = self.rcpt_codes("127.0.0.9", "bulk@sender.test", 3)
        codes += self.rcpt_codes("127.0.0.10", "BULK@sender.test", 2)
        self.assertEqual(codes, [250, 250, 250, 250, 450])


if __name__ == "__main__":
    unittest.main()
