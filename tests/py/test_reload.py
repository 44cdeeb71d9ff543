"""Config edits under a running server, and `waraka reload`: the watcher puts
an edit of `config/` in force by itself; `waraka reload` does it at once, also
for a file the watcher cannot see, and says what it refused."""

import subprocess
import tempfile
import unittest

from harness import BIN, Waraka, rcpt_replies, stopped_after_class, wait_until


class ReloadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = stopped_after_class(cls, Waraka(["rcpt_to.in_host_list", "queue/maildir"]))

    def code_for(self, domain):
        return rcpt_replies(self.server.port, f"someone@{domain}")[0][0]

    def test_an_edit_of_config_shows_without_a_reload(self):
        self.assertEqual(self.code_for("watched.test"), 550)
        self.server.edit("config/host_list", lambda t: t + "watched.test\n", reload=False)
        wait_until(lambda: self.code_for("watched.test") == 250, timeout=10, what="the watcher to see the edit")

    def test_reload_reads_a_file_the_watcher_cannot_see(self):
        # config/host_list links to a file outside config/: an edit of that
        # file is reported nowhere under config/, so the cached text stays.
        outside = self.server.dir / "lists" / "host_list"
        outside.parent.mkdir()
        link = self.server.dir / "config" / "host_list"
        outside.write_text(link.read_text() + "linked.test\n")
        link.unlink()
        link.symlink_to(outside)
        wait_until(lambda: self.code_for("linked.test") == 250, timeout=10, what="the new link to be read")
        outside.write_text(outside.read_text() + "later.test\n")
        self.assertEqual(self.code_for("later.test"), 550, "the cached text is still used")
        code, output = self.server.reload()
        self.assertEqual(code, 0, output)
        self.assertRegex(output, r"loaded=0 compiled=0 rejected=0 removed=0")
        self.assertEqual(self.code_for("later.test"), 250)
        self.assertIn("reload asked", self.server.wait_for_log("reload asked"))

    def test_reload_fails_and_says_why_for_a_broken_waraka_toml(self):
        good = (self.server.dir / "waraka.toml").read_text()
        self.server.edit("waraka.toml", lambda t: t.replace("max_recipients = 100", 'max_recipients = "many"'))
        try:
            code, output = self.server.reload()
            self.assertEqual(code, 1, output)
            self.assertIn("waraka.toml rejected, keeping the last good one", output)
            self.assertIn("max_recipients", output)
            self.assertEqual(self.code_for("nowhere.test"), 550, "the server still serves")
        finally:
            (self.server.dir / "waraka.toml").write_text(good)
        code, output = self.server.reload()
        self.assertEqual(code, 0, output)

    def test_reload_fails_and_names_a_refused_plugin(self):
        plugin = self.server.dir / "plugins" / "broken.wasm"
        toml = self.server.dir / "waraka.toml"
        good = toml.read_text()
        toml.write_text(good.replace('plugins = ["', 'plugins = ["broken", "'))
        plugin.write_bytes(b"not wasm at all")
        try:
            code, output = self.server.reload()
            self.assertEqual(code, 1, output)
            self.assertIn("plugin broken rejected", output)
            self.assertEqual(self.code_for("nowhere.test"), 550, "the rest of the chain serves")
        finally:
            plugin.unlink()
            toml.write_text(good)
        code, output = self.server.reload()
        self.assertEqual(code, 0, output)


class NoServerTest(unittest.TestCase):
    def test_reload_without_a_running_server_fails(self):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([BIN, "init", f"{tmp}/i"], check=True, capture_output=True)
            done = subprocess.run([BIN, "reload", "--config", f"{tmp}/i"], capture_output=True, text=True)
        self.assertEqual(done.returncode, 1)
        self.assertIn("no running server for this instance", done.stderr)


if __name__ == "__main__":
    unittest.main()
