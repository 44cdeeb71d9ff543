"""A plugin written in Python: examples/python/data.rfc5322_header_checks,
built here from source with componentize-py by `waraka plugin build`,
dropped into a live waraka's plugins/ and driven over SMTP with smtplib."""

import email.utils
import pathlib
import shutil
import smtplib
import sys
import tempfile
import unittest

from harness import ROOT, Waraka, compile_ms, example_plugin, free_port, prometheus, timed_build, waraka_plugin

EXAMPLE = ROOT / "examples/python/data.rfc5322_header_checks"
NAME = "data.rfc5322_header_checks"


def message(with_date=True):
    date = f"Date: {email.utils.formatdate()}\r\n" if with_date else ""
    return f"From: a@sender.test\r\nTo: rcpt@example.com\r\n{date}Subject: py\r\n\r\nhi\r\n".encode()


class PythonPluginTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.build_dir = tempfile.TemporaryDirectory()
        example = example_plugin(EXAMPLE, [ROOT / "sdk/python/waraka_plugin.py"], cls.build_dir.name)
        cls.wasm, cls.build_seconds = timed_build(example)

        def install(server):
            shutil.copy(cls.wasm, server.dir / "plugins" / f"{NAME}.wasm")
            shutil.copy(EXAMPLE / f"{NAME}.ini", server.dir / "config" / f"{NAME}.ini")
            server.edit("config/host_list", lambda t: t + "example.com\n")

        cls.server = Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=install)
        with cls.server.stopped_on_error():
            cls.loaded = cls.server.wait_for_log(rf"plugin loaded plugin={NAME} ", timeout=300)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.build_dir.cleanup()

    def send(self, client, raw):
        client.mail("a@sender.test")
        client.rcpt("rcpt@example.com")
        return client.data(raw)

    def test_the_component_loads_with_its_hooks(self):
        self.assertIn('hooks=["data-post"]', self.loaded)
        print(f"\npython {NAME}: {self.wasm.stat().st_size / 1e6:.1f} MB, build {self.build_seconds:.1f} s, "
              f"compile {compile_ms(self.loaded) / 1000:.1f} s", file=sys.stderr)

    def test_a_message_without_date_is_refused_and_a_whole_one_accepted(self):
        before = len(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.port, timeout=60) as s:
            s.ehlo("client.test")
            self.assertEqual(self.send(s, message(with_date=False)),
                             (550, b"5.6.0 Required header 'Date' missing"))
            self.assertEqual(self.send(s, message())[0], 250)
        self.assertEqual(len(self.server.maildir()), before + 1)
        # Notes carry the count across hook calls; config gives the required list.
        self.server.wait_for_log(r"message 1 of this connection: missing Date .*plugin=\"data\.rfc5322_header_checks\"")
        self.server.wait_for_log(r"message 2 of this connection: pass")

    def test_with_reject_off_the_message_is_marked_instead(self):
        def lenient(server):
            shutil.copy(self.wasm, server.dir / "plugins" / f"{NAME}.wasm")
            (server.dir / "config" / f"{NAME}.ini").write_text("required = Date, From, Subject\nreject = false\n")
            server.edit("config/host_list", lambda t: t + "example.com\n")
            # The first server's compile cache: the 18 MB component is not compiled again.
            shutil.copytree(self.server.dir / "queue/cache", server.dir / "queue/cache", dirs_exist_ok=True)

        server = Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=lenient)
        try:
            self.assertIn("compiled=false", server.wait_for_log(rf"plugin loaded plugin={NAME} "))
            with smtplib.SMTP("127.0.0.1", server.port, timeout=60) as s:
                s.ehlo("client.test")
                raw = b"From: a@sender.test\r\nTo: rcpt@example.com\r\n\r\nno date, no subject\r\n"
                self.assertEqual(self.send(s, raw)[0], 250)
            stored = server.maildir()[0].read_text()
            self.assertIn("X-Header-Check: fail (missing Date, Subject)", stored)
        finally:
            server.stop()

    def test_hook_metrics_compare_the_python_plugin_with_the_rust_headers_plugin(self):
        metrics_port = free_port()

        def both(server):
            shutil.copy(self.wasm, server.dir / "plugins" / f"{NAME}.wasm")
            shutil.copy(EXAMPLE / f"{NAME}.ini", server.dir / "config" / f"{NAME}.ini")
            server.edit("config/host_list", lambda t: t + "example.com\n")
            server.enable_metrics(metrics_port)
            shutil.copytree(self.server.dir / "queue/cache", server.dir / "queue/cache", dirs_exist_ok=True)

        server = Waraka(["headers", "rcpt_to.in_host_list", "queue/maildir"], setup=both)
        try:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=60) as s:
                s.ehlo("client.test")
                for _ in range(20):
                    self.assertEqual(self.send(s, message())[0], 250)
            m = prometheus(metrics_port)
            per_call = {}
            for plugin in ("headers", NAME):
                labels = f'{{plugin="{plugin}",hook="data-post"}}'
                self.assertEqual(m[f"waraka_plugin_hook_seconds_count{labels}"], 20, plugin)
                self.assertGreater(m[f'waraka_plugin_fuel_total{{plugin="{plugin}"}}'], 0, plugin)
                per_call[plugin] = m[f"waraka_plugin_hook_seconds_sum{labels}"] / 20
            self.assertEqual(m[f'waraka_plugin_instantiate_seconds_count{{plugin="{NAME}"}}'], 1, "one instance per connection")
            print(f"\ndata-post per call: rust headers {per_call['headers'] * 1e6:.0f} us, "
                  f"python {per_call[NAME] * 1e6:.0f} us", file=sys.stderr)
        finally:
            server.stop()


class PythonSkeletonTest(unittest.TestCase):
    def test_plugin_new_writes_a_python_skeleton_that_builds_and_loads(self):
        with tempfile.TemporaryDirectory() as tmp:
            waraka_plugin("new", "rcpt_to.py_check", "--lang", "python", "--dir", tmp)
            root = pathlib.Path(tmp) / "rcpt_to.py_check"
            for file in ("app.py", "waraka_plugin.py", "README.md", "docs/rcpt_to.py_check.md",
                         "config/rcpt_to.py_check.list", "wit/world.wit"):
                self.assertTrue((root / file).exists(), file)
            waraka_plugin("build", root)
            checked = waraka_plugin("check", root / "rcpt_to.py_check.wasm")
            self.assertIn("ok: rcpt_to.py_check", checked.stdout)
            self.assertIn("hooks: rcpt", checked.stdout)


if __name__ == "__main__":
    unittest.main()
