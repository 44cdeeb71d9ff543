"""`waraka check`: an instance read and checked as `waraka run` would, without
serving it — a good one passes and shows its chain; a broken waraka.toml, an
unknown grant, a missing certificate and a plugin file that is no component
each fail with the reason."""

import re
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

from harness import BIN


def check(instance):
    done = subprocess.run([BIN, "check", "--config", str(instance)], capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


class CheckTest(unittest.TestCase):
    def setUp(self):
        tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, tmp)
        self.dir = tmp / "i"
        subprocess.run([BIN, "init", str(self.dir)], check=True, capture_output=True)

    def edit(self, change):
        path = self.dir / "waraka.toml"
        path.write_text(change(path.read_text()))

    def test_a_good_instance_passes_and_shows_its_chain(self):
        code, output = check(self.dir)
        self.assertEqual(code, 0, output)
        self.assertRegex(output, r"rcpt_to\.in_host_list")
        self.assertIn("outbound delivery: on", output)
        self.assertIn("would start with this configuration", output)

    def test_a_plugin_kept_to_a_role_no_listener_has_is_pointed_out(self):
        self.edit(lambda t: t + '\n[plugin.headers]\nroles = ["submissions"]\n')
        code, output = check(self.dir)
        self.assertEqual(code, 0, output)
        self.assertIn("warning: plugin headers takes part only in sessions of submissions, and no listener has that role",
                      output)
        self.edit(lambda t: t.replace('roles = ["submissions"]', 'roles = ["mx"]'))
        self.assertNotIn("warning", check(self.dir)[1])

    def test_a_broken_configuration_fails_with_the_reason(self):
        self.edit(lambda t: t + "\njunk = [\n")
        code, output = check(self.dir)
        self.assertNotEqual(code, 0)
        self.assertIn("waraka.toml", output)

    def test_an_unknown_grant_fails(self):
        self.edit(lambda t: t.replace('grants = ["dns"]', 'grants = ["dns", "magic"]', 1))
        code, output = check(self.dir)
        self.assertNotEqual(code, 0)
        self.assertIn('unknown grant "magic"', output)

    def test_a_missing_certificate_fails(self):
        self.edit(lambda t: t + '\n[tls]\ncert = "missing.pem"\nkey = "missing.key"\n')
        code, output = check(self.dir)
        self.assertNotEqual(code, 0)
        self.assertIn("missing.pem", output)

    def test_a_plugin_that_is_no_component_is_refused(self):
        (self.dir / "plugins/bogus.wasm").write_bytes(b"\0asm not really")
        self.edit(lambda t: re.sub(r'(?m)^plugins = \[', 'plugins = ["bogus", ', t, count=1))
        code, output = check(self.dir)
        self.assertNotEqual(code, 0, output)
        self.assertIn("plugins refused: bogus", output)


if __name__ == "__main__":
    unittest.main()
