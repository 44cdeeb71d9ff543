"""Capabilities end to end: the `test/probe` fixture drives `kv` and `dns`
from SMTP commands against a real dnsmasq and a real redis-server, in
granted and ungranted instances, and two servers sharing one Redis.
"""

import shutil
import smtplib
import time
import unittest

from harness import GUESTS, Waraka, dnsmasq, redis

RECORDS = [
    "--local=/test.example/",  # authoritative: unknown names are NXDOMAIN, not REFUSED
    "--host-record=mx1.test.example,127.0.0.1",
    "--host-record=v6.test.example,::1",
    "--mx-host=test.example,mx2.test.example,20",
    "--mx-host=test.example,mx1.test.example,10",
    "--txt-record=test.example,v=spf1 -all",
    "--ptr-record=9.2.0.192.in-addr.arpa,client.test.example",
]


def with_probe(grants, dns_port=None, redis_port=None):
    """An instance setup: the probe plugin with `grants`, a Redis store `shared`, the test resolver."""

    def setup(server):
        (server.dir / "plugins/test").mkdir()
        shutil.copy(GUESTS / "fixture_probe.wasm", server.dir / "plugins/test/probe.wasm")
        toml = f'\n[plugin."test/probe"]\ngrants = {grants!r}\n'.replace("'", '"')
        if redis_port:
            toml += f'\n[kv.shared]\nbackend = "redis"\nurl = "redis://127.0.0.1:{redis_port}/0"\n'
        if dns_port:
            toml += f'\n[dns]\nservers = ["127.0.0.1:{dns_port}"]\ntimeout = "2s"\n'
        server.edit("waraka.toml", lambda t: t + toml)

    return setup


class Client:
    """One SMTP connection that sends probe commands."""

    def __init__(self, server):
        self.smtp = smtplib.SMTP("127.0.0.1", server.port, local_hostname="py.test", timeout=30)
        self.smtp.ehlo()

    def __call__(self, line):
        verb, _, args = line.partition(" ")
        code, text = self.smtp.docmd(verb, args)
        return code, text.decode().removeprefix("2.0.0 ").removeprefix("4.3.0 ")

    def close(self):
        self.smtp.close()


class GrantedTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = dnsmasq(RECORDS)
        cls.redis = redis()
        setup = with_probe(["kv:default", "kv:shared", "dns"], cls.dns.port, cls.redis.port)
        cls.servers = [Waraka(["rcpt_to.in_host_list"], setup=setup) for _ in range(2)]

    @classmethod
    def tearDownClass(cls):
        for server in cls.servers:
            server.stop()
        cls.dns.stop()
        cls.redis.stop()

    def setUp(self):
        self.probe = Client(self.servers[0])

    def tearDown(self):
        self.probe.close()

    def test_dns_lookups_of_every_type(self):
        self.assertEqual(self.probe("XDNS MX test.example"), (250, "10:mx1.test.example 20:mx2.test.example"))
        self.assertEqual(self.probe("XDNS A mx1.test.example"), (250, "127.0.0.1"))
        self.assertEqual(self.probe("XDNS AAAA v6.test.example"), (250, "::1"))
        self.assertEqual(self.probe("XDNS TXT test.example"), (250, "v=spf1 -all"))
        self.assertEqual(self.probe("XDNS PTR 192.0.2.9"), (250, "client.test.example"))

    def test_missing_names_and_records_are_empty_not_errors(self):
        self.assertEqual(self.probe("XDNS A nowhere.test.example"), (250, "(empty)"))
        self.assertEqual(self.probe("XDNS MX mx1.test.example"), (250, "(empty)"))
        code, text = self.probe("XDNS PTR not-an-ip")
        self.assertEqual(code, 451)
        self.assertIn("Invalid", text)

    def test_memory_kv_counts_and_expires(self):
        self.assertEqual(self.probe("XKV INCR default hits 1"), (250, "1"))
        self.assertEqual(self.probe("XKV INCR default hits 5"), (250, "6"))
        self.assertEqual(self.probe("XKV SET default greeting hello 200"), (250, "stored"))
        self.assertEqual(self.probe("XKV GET default greeting"), (250, "hello"))
        time.sleep(0.5)
        self.assertEqual(self.probe("XKV GET default greeting"), (250, "(none)"))
        self.assertEqual(self.probe("XKV DEL default hits"), (250, "true"))
        self.assertEqual(self.probe("XKV DEL default hits"), (250, "false"))
        code, text = self.probe("XKV SET default word notanumber")
        code, text = self.probe("XKV INCR default word 1")
        self.assertEqual(code, 451)
        self.assertIn("Invalid", text)

    def test_memory_kv_is_per_server_and_redis_is_shared(self):
        other = Client(self.servers[1])
        try:
            self.assertEqual(self.probe("XKV INCR default local 1"), (250, "1"))
            self.assertEqual(other("XKV INCR default local 1"), (250, "1"), "each process has its own memory store")
            self.assertEqual(self.probe("XKV INCR shared counter 1 60000"), (250, "1"))
            self.assertEqual(other("XKV INCR shared counter 1 60000"), (250, "2"), "both servers count in Redis")
            self.assertEqual(other("XKV SET shared note from-two"), (250, "stored"))
            self.assertEqual(self.probe("XKV GET shared note"), (250, "from-two"))
        finally:
            other.close()

    def test_redis_ttl_is_set_when_the_key_is_created(self):
        self.assertEqual(self.probe("XKV INCR shared window 1 300"), (250, "1"))
        self.assertEqual(self.probe("XKV INCR shared window 1 300"), (250, "2"))
        time.sleep(0.6)
        self.assertEqual(self.probe("XKV INCR shared window 1 300"), (250, "1"), "expired, counting again")


class BackendDownTest(unittest.TestCase):
    def test_a_dead_redis_and_a_silent_dns_server_are_errors_the_plugin_sees(self):
        store = redis()
        silent_dns_port = store.port  # a TCP-only port: DNS over UDP gets no answer there
        server = Waraka(["rcpt_to.in_host_list"],
                        setup=with_probe(["kv:shared", "dns"], silent_dns_port, store.port))
        probe = Client(server)
        try:
            self.assertEqual(probe("XKV INCR shared n 1"), (250, "1"))
            store.stop()
            code, text = probe("XKV INCR shared n 1")
            self.assertEqual(code, 451)
            self.assertIn("Backend", text)
            code, text = probe("XDNS A mx1.test.example")
            self.assertEqual(code, 451)
            self.assertRegex(text, "Backend|Timeout")
            self.assertEqual(probe.smtp.noop()[0], 250, "the session goes on")
        finally:
            probe.close()
            server.stop()


class UngrantedTest(unittest.TestCase):
    def test_every_capability_call_is_not_granted(self):
        server = Waraka(["rcpt_to.in_host_list"], setup=with_probe([]))
        probe = Client(server)
        try:
            for line in ["XKV GET default k", "XKV SET default k v", "XKV INCR default k 1", "XKV DEL default k",
                         "XDNS A example.com", "XDNS AAAA example.com", "XDNS MX example.com",
                         "XDNS TXT example.com", "XDNS PTR 127.0.0.1",
                         "XBLOB PUT mail k v", "XBLOB GET mail k", "XBLOB EXISTS mail k", "XBLOB DEL mail k",
                         "XBLOB COPY mail k k2", "XBLOB PUTMSG mail k", "XFILE SAVE maildir t p",
                         "XSQL QUERY users SELECT 1", "XSQL EXEC users CREATE TABLE t (x INT)"]:
                with self.subTest(line=line):
                    self.assertEqual(probe(line), (451, "error: Error::NotGranted"))
        finally:
            probe.close()
            server.stop()

    def test_a_grant_names_one_backend_not_its_neighbours(self):
        server = Waraka(["rcpt_to.in_host_list"], setup=with_probe(["sql:mail", "blobstore:mail"]))
        probe = Client(server)
        try:
            self.assertEqual(probe("XSQL QUERY mail SELECT 40 + 2"), (250, "42"))
            self.assertEqual(probe("XSQL QUERY users SELECT 1"), (451, "error: Error::NotGranted"))
            self.assertEqual(probe("XBLOB PUT mail k v"), (250, "stored"))
            self.assertEqual(probe("XBLOB GET mail k"), (250, "v"))
            self.assertEqual((server.dir / "blobs/k").read_bytes(), b"v")
            for key in ["../k", "a//k", "a/./k", "a/.tmp-k"]:
                code, text = probe(f"XBLOB PUT mail {key} v")
                self.assertEqual((code, text.split("(")[0]), (451, "error: Error::Invalid"), key)
            code, text = probe("XBLOB PUTMSG mail k")
            self.assertEqual(code, 451)
            self.assertIn("Invalid", text, "no message outside a transaction")
        finally:
            probe.close()
            server.stop()

    def test_files_need_a_dir_grant_plain_paths_and_a_message(self):
        server = Waraka(["rcpt_to.in_host_list"], setup=with_probe(["dir:maildir"]))
        probe = Client(server)
        try:
            self.assertEqual(probe("XFILE SAVE elsewhere t p"), (451, "error: Error::NotGranted"))
            for temp, path in [("../t", "p"), ("t", "/etc/p"), ("a//t", "p"), ("t", "a/./p"), ("t", "p/")]:
                with self.subTest(temp=temp, path=path):
                    code, text = probe(f"XFILE SAVE maildir {temp} {path}")
                    self.assertEqual(code, 451)
                    self.assertIn("Invalid", text)
            code, text = probe("XFILE SAVE maildir t p")
            self.assertEqual(code, 451)
            self.assertIn("no message yet", text, "outside a transaction")
            self.assertEqual(probe.smtp.noop()[0], 250, "the session goes on")
        finally:
            probe.close()
            server.stop()

    def test_a_grant_for_a_store_that_does_not_exist_is_a_config_error(self):
        with self.assertRaises(RuntimeError) as cm:
            Waraka(["rcpt_to.in_host_list"], setup=with_probe(["kv:nowhere"]))
        self.assertIn("names no [kv.nowhere]", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
