"""Plugins written in JavaScript: examples/js/rcpt_to.disposable and the
`waraka plugin new --lang js` skeleton, built here from source with
componentize-js by `waraka plugin build`, dropped into a running waraka and
driven over SMTP with smtplib."""

import shutil
import smtplib
import sys
import tempfile
import time
import unittest

from harness import (ROOT, Waraka, compile_ms, example_plugin, free_port, hook_calls, install_plugin, rcpt_replies,
                     timed_build, waraka_plugin)

NAME = "rcpt_to.disposable"
SKELETON = "rcpt_to.js_check"
CHAIN = ["rcpt_to.disposable", "rcpt_to.in_host_list", "queue/maildir"]
REPLACED = rf"plugin loaded plugin={NAME.replace('.', '[.]')} .*old_hash=\"[0-9a-f]"


def rewrite_many(port, count):
    """COUNT transactions, each to one dated (rewritten) recipient."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo("client.test")
        for i in range(count):
            s.mail("a@sender.test")
            s.rcpt(f"load{i}-29991231@example.com")
            s.rset()


class JsPluginTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        example = example_plugin(ROOT / "examples/js" / NAME, [ROOT / "sdk/js/waraka.js"], cls.tmp.name)
        cls.wasm, cls.build_seconds = timed_build(example)
        waraka_plugin("new", SKELETON, "--lang", "js", "--dir", cls.tmp.name)
        cls.skeleton, _ = timed_build(f"{cls.tmp.name}/{SKELETON}")
        cls.metrics_port = free_port()

        def rust_chain_first(server):
            server.edit("config/host_list", lambda t: t + "example.com\n")
            (server.dir / "config" / f"{SKELETON}.list").write_text("blocked@example.com\n")
            server.edit("waraka.toml", lambda t: t.replace('"rcpt_to.disposable"', f'"{SKELETON}", "rcpt_to.disposable"')
                        + f'\n[metrics]\nlisten = "127.0.0.1:{cls.metrics_port}"\n')

        # The server starts with the Rust rcpt_to.disposable; the JavaScript
        # components replace it and join the chain while it runs.
        cls.server = Waraka(CHAIN, setup=rust_chain_first)
        with cls.server.stopped_on_error():
            shutil.copy(example / f"{NAME}.ini", cls.server.dir / "config" / f"{NAME}.ini")
            install_plugin(cls.server, cls.wasm, NAME)
            install_plugin(cls.server, cls.skeleton, SKELETON)
            # While the JavaScript components compile (tens of seconds), a
            # message goes through the chain as it was.
            time.sleep(1.5)
            started = time.monotonic()
            with smtplib.SMTP("127.0.0.1", cls.server.port, timeout=60) as s:
                s.ehlo("client.test")
                s.mail("a@sender.test")
                s.rcpt("early@example.com")
                cls.early_reply = s.data(b"Subject: early\r\n\r\nwhile compiling\r\n")
            cls.early_seconds = time.monotonic() - started
            cls.loaded_during_early = any("plugin loaded plugin=rcpt_to.js_check" in line for line in cls.server.log)
            cls.loaded = cls.server.wait_for_log(REPLACED, timeout=300)
            cls.skeleton_loaded = cls.server.wait_for_log(rf"plugin loaded plugin={SKELETON} ", timeout=300)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.tmp.cleanup()

    def test_the_server_serves_with_the_other_plugins_while_the_components_compile(self):
        self.assertEqual(self.early_reply[0], 250)
        self.assertFalse(self.loaded_during_early, "the message waited for the compile")
        self.assertLess(self.early_seconds, 5)

    def test_the_components_load_with_their_hooks(self):
        self.assertIn('hooks=["rcpt"]', self.loaded)
        self.assertIn('hooks=["rcpt"]', self.skeleton_loaded)
        print(f"\njs {NAME}: {self.wasm.stat().st_size / 1e6:.1f} MB, build {self.build_seconds:.1f} s, "
              f"compile {compile_ms(self.loaded) / 1000:.1f} s", file=sys.stderr)

    def test_an_expired_address_is_denied_and_a_valid_one_rewritten(self):
        before = set(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.port, timeout=60) as s:
            s.ehlo("client.test")
            s.mail("a@sender.test")
            self.assertEqual(s.rcpt("me-20121015@example.com"), (550, b"5.1.1 Expired email address"))
            self.assertEqual(s.rcpt("me-29991231@example.com")[0], 250)
            self.assertEqual(s.rcpt("you+29991231@example.com")[0], 250, "not the configured separator")
            self.assertEqual(s.rcpt("other-29991231@example.com")[0], 250)
            self.assertEqual(s.data(b"Subject: js\r\n\r\nhello\r\n")[0], 250)
        new = set(self.server.maildir()) - before
        stored = sorted(str(p.relative_to(self.server.dir / "maildir")).split("/new/")[0] for p in new)
        # you+29991231 is a subaddress of you (config/recipient_delimiter), which
        # queue/maildir files under its user; the plugin left the address alone.
        self.assertEqual(stored, ["example.com/me", "example.com/other", "example.com/you"])
        you = [p.read_bytes() for p in new if "/you/" in str(p)]
        self.assertIn(b"Delivered-To: you+29991231@example.com\r\n", you[0])
        # The separator comes from the plugin's config; the transaction note counts the rewrites.
        self.server.wait_for_log(r"rewriting me-29991231@example.com to me@example.com .*rewrite 1 of this transaction")
        self.server.wait_for_log(r"rewriting other-29991231@example.com .*rewrite 2 of this transaction")

    def test_the_skeleton_refuses_the_recipients_of_its_list(self):
        refused, fine = rcpt_replies(self.server.port, "Blocked@example.com", "fine@example.com")
        self.assertEqual(refused, (550, b"5.7.1 Recipient refused by policy"))
        self.assertEqual(fine[0], 250)
        self.server.wait_for_log(r"refusing blocked@example.com .*plugin=\"rcpt_to\.js_check\"")

    def test_rcpt_call_time_against_the_rust_plugin(self):
        calls, seconds = hook_calls(self.metrics_port, NAME, "rcpt")
        rewrite_many(self.server.port, 50)
        calls_after, seconds_after = hook_calls(self.metrics_port, NAME, "rcpt")
        self.assertEqual(calls_after - calls, 50)
        js = (seconds_after - seconds) / 50

        rust_port = free_port()

        def rust(server):
            server.edit("config/host_list", lambda t: t + "example.com\n")
            server.enable_metrics(rust_port)

        server = Waraka(CHAIN, setup=rust)
        try:
            rewrite_many(server.port, 50)
            rust_calls, rust_sum = hook_calls(rust_port, NAME, "rcpt")
            self.assertEqual(rust_calls, 50)
        finally:
            server.stop()
        print(f"\nrcpt per call: rust {rust_sum / 50 * 1e6:.0f} us, js {js * 1e6:.0f} us", file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
