"""Plugins written in C: examples/c/rcpt_to.in_host_list and the `waraka
plugin new --lang c` skeleton, built here from source with clang and
componentised by `waraka plugin build`, run in a live waraka and driven over
SMTP with smtplib."""

import smtplib
import sys
import tempfile
import unittest

from harness import (ROOT, Waraka, compile_ms, example_plugin, free_port, hook_calls, install_plugin, rcpt_replies,
                     timed_build, waraka_plugin)

NAME = "rcpt_to.in_host_list"
SKELETON = "rcpt_to.c_check"
SDK = [ROOT / "sdk/c/waraka.h", ROOT / "sdk/c/waraka.c"]
CHAIN = ["rcpt_to.in_host_list", "relay", "queue/maildir"]


def rcpt_per_call(metrics_port, plugin):
    """Mean seconds of PLUGIN's rcpt hook calls so far, and their count."""
    calls, seconds = hook_calls(metrics_port, plugin, "rcpt")
    return seconds / calls, calls


def local_recipients(port, count):
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo("client.test")
        for i in range(count):
            s.mail("a@sender.test")
            s.rcpt(f"user{i}@example.com")
            s.rset()


class CPluginTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        example = example_plugin(ROOT / "examples/c" / NAME, SDK, cls.tmp.name)
        cls.wasm, cls.build_seconds = timed_build(example)
        waraka_plugin("new", SKELETON, "--lang", "c", "--dir", cls.tmp.name)
        cls.skeleton, _ = timed_build(f"{cls.tmp.name}/{SKELETON}")
        cls.metrics_port = free_port()

        def c_chain(server):
            install_plugin(server, cls.wasm, NAME)
            install_plugin(server, cls.skeleton, SKELETON)
            (server.dir / "config" / f"{SKELETON}.list").write_text("blocked@example.com\n")
            (server.dir / "config/host_list").write_text("example.com\n")
            (server.dir / "config/host_list_regex").write_text("# sub-domains\n(.+[.])?example[.]net\n")
            server.edit("waraka.toml", lambda t: t.replace(f'"{NAME}", ', f'"{SKELETON}", "{NAME}", ')
                        + f'\n[metrics]\nlisten = "127.0.0.1:{cls.metrics_port}"\n')

        cls.server = Waraka(CHAIN, setup=c_chain)
        with cls.server.stopped_on_error():
            cls.loaded = cls.server.wait_for_log(rf"plugin loaded plugin={NAME} ")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.tmp.cleanup()

    def test_the_component_loads_with_its_hooks(self):
        self.assertIn('hooks=["mail", "rcpt"]', self.loaded)
        self.assertIn('hooks=["rcpt"]', self.server.wait_for_log(rf"plugin loaded plugin={SKELETON} "))
        print(f"\nc {NAME}: {self.wasm.stat().st_size / 1e3:.0f} kB, build {self.build_seconds:.1f} s, "
              f"compile {compile_ms(self.loaded)} ms", file=sys.stderr)

    def test_local_domains_are_accepted_and_others_denied(self):
        before = len(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.port, timeout=60) as s:
            s.ehlo("client.test")
            s.mail("a@sender.test")
            self.assertEqual(s.rcpt("one@Example.COM")[0], 250, "host_list, any case")
            self.assertEqual(s.rcpt("two@mail.example.net")[0], 250, "host_list_regex")
            self.assertEqual(s.rcpt("three@example.net.")[0], 250, "trailing dot")
            self.assertEqual(s.rcpt("postmaster")[0], 250, "<postmaster> without a domain")
            # Not local: the plugin passes it on, and relay refuses it.
            self.assertEqual(s.rcpt("four@elsewhere.test")[0], 554)
            self.assertEqual(s.rcpt("five@notexample.net")[0], 554, "the pattern is anchored")
            self.assertEqual(s.data(b"Subject: c\r\n\r\nhello\r\n")[0], 250)
        self.assertEqual(len(self.server.maildir()), before + 4)

    def test_a_relaying_client_with_a_local_sender_may_send_anywhere(self):
        (self.server.dir / "config/relay.acl_allow").write_text("127.0.0.0/8\n")
        try:
            with smtplib.SMTP("127.0.0.1", self.server.port, timeout=60) as s:
                s.ehlo("client.test")
                # A local sender is noted at MAIL; its recipients go anywhere.
                s.mail("me@example.com")
                self.assertEqual(s.rcpt("friend@elsewhere.test")[0], 250)
                s.rset()
                s.mail("stranger@remote.test")
                self.assertEqual(s.rcpt("friend@faraway.test")[0], 250, "relaying: the chain's end accepts")
                s.rset()
            self.server.wait_for_log(r"relaying for a local sender to elsewhere[.]test .*plugin=\"rcpt_to\.in_host_list\"")
            self.assertFalse(any("to faraway.test" in line for line in self.server.log), "no note, no ok")
        finally:
            (self.server.dir / "config/relay.acl_allow").write_text("")

    def test_the_skeleton_refuses_the_recipients_of_its_list(self):
        refused, fine = rcpt_replies(self.server.port, "BLOCKED@example.com", "fine@example.com")
        self.assertEqual(refused, (550, b"5.7.1 Recipient refused by policy"))
        self.assertEqual(fine[0], 250)
        self.server.wait_for_log(r"refusing BLOCKED@example.com .*plugin=\"rcpt_to\.c_check\"")

    def test_rcpt_call_time_against_the_rust_plugin(self):
        local_recipients(self.server.port, 50)
        c, calls = rcpt_per_call(self.metrics_port, NAME)
        self.assertGreaterEqual(calls, 50)
        rust_port = free_port()

        def rust(server):
            server.enable_metrics(rust_port)

        server = Waraka(CHAIN, setup=rust)
        try:
            local_recipients(server.port, 50)
            rust, _ = rcpt_per_call(rust_port, NAME)
        finally:
            server.stop()
        print(f"\nrcpt per call: rust {rust * 1e6:.0f} us, c {c * 1e6:.0f} us", file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
