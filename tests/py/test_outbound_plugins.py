"""Outbound hooks in every plugin language but Rust (test_outbound has the
Rust fixture), and in Haraka's API: tests/fixtures/outbound_{c,js,py,haraka},
built here by `waraka plugin build` (clang, componentize-js,
componentize-py), each answer every outbound hook for its own domain
(c.test, js.test, py.test, haraka.test) and sender names. One relaying
waraka holds the four; its deliveries go to scripted receivers on loopback
addresses, and DSNs through the test's DNS."""

import smtplib
import tempfile
import time
import unittest

from harness import (ROOT, SmtpReceiver, Waraka, dnsmasq, example_plugin, free_port, install_plugin, timed_build,
                     wait_until)
from test_outbound import RECORDS, message, queue_entries, relay_setup, scripted

# Each fixture's SDK files; `haraka` is a Haraka plugin run by haraka.js.
LANGS = {
    "c": [ROOT / "sdk/c/waraka.h", ROOT / "sdk/c/waraka.c"],
    "js": [ROOT / "sdk/js/waraka.js"],
    "py": [ROOT / "sdk/python/waraka_plugin.py"],
    "haraka": [ROOT / "sdk/js/waraka.js", ROOT / "sdk/js/haraka.js"],
}


class OutboundPluginsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.tmp.cleanup)
        built = {}
        for lang, sdk in LANGS.items():
            root = example_plugin(ROOT / f"tests/fixtures/outbound_{lang}", sdk, cls.tmp.name)
            built[lang], _ = timed_build(root)
        cls.dns = dnsmasq(RECORDS)
        cls.addClassCleanup(cls.dns.stop)
        port = free_port("127.0.0.9", "127.0.0.5")
        cls.hop = SmtpReceiver("127.0.0.9", port, scripted, name="hop.test")
        cls.addClassCleanup(cls.hop.stop)
        cls.mailbox = SmtpReceiver("127.0.0.5", port, name="mailbox.sender.test")
        cls.addClassCleanup(cls.mailbox.stop)

        def setup(server):
            relay_setup(cls.dns.port, port, retry="1h")(server)
            # First in the chain, so that its rcpt hook decides before the relay.
            server.edit("waraka.toml", lambda t: t.replace('plugins = ["', 'plugins = ["test/outbound_haraka", "', 1))
            (server.dir / "plugins/test").mkdir()
            for lang, wasm in built.items():
                install_plugin(server, wasm, f"test/outbound_{lang}")
            (server.dir / "config/test").mkdir()
            (server.dir / "config/test/outbound.ini").write_text(f"next_hop = 127.0.0.9:{port}\n")

        cls.server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"], setup=setup)
        cls.addClassCleanup(cls.server.stop)
        with cls.server.stopped_on_error():
            for lang in LANGS:
                cls.server.wait_for_log(rf"plugin loaded plugin=test/outbound_{lang} .*hooks=\[.*"
                                        r'"send-email", "get-mx", "deferred", "bounce", "delivered"\]', timeout=300)

    def send(self, sender, recipients, subject):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            self.assertEqual(s.sendmail(sender, recipients, message(subject)), {})

    def entries_for(self, recipient):
        return [e for e in queue_entries(self.server) if recipient in e["recipients"]]

    def received(self, receiver, recipient):
        return [m for m in receiver.received() if m[1] == [recipient]]

    def test_get_mx_routes_the_domain_and_delivered_is_told(self):
        for lang in LANGS:
            with self.subTest(lang=lang):
                self.send("a@sender.test", [f"ok@{lang}.test"], f"routed {lang}")
                wait_until(lambda: self.received(self.hop, f"ok@{lang}.test"), what=f"the delivery to {lang}.test")
                self.server.wait_for_log(rf"{lang} delivered: id=\S+ recipients=ok@{lang}\.test host=127\.0\.0\.9 "
                                         r"reply=250 2\.0\.0 Stored attempts=0 queued=yes")

    def test_deferred_replaces_the_schedules_wait(self):
        for lang in LANGS:
            with self.subTest(lang=lang):
                recipient = f"temp-{lang}@{lang}.test"
                self.send("a@sender.test", [recipient], f"deferred {lang}")
                got = wait_until(lambda: self.received(self.hop, recipient), timeout=15,
                                 what="the retry after the plugin's 1 s instead of the schedule's hour")
                self.assertEqual(len(got), 1)
                self.assertEqual(self.hop.attempts[recipient], 2)
                self.server.wait_for_log(rf"{lang} deferred: {recipient} 4\.2\.1 \(451 4\.2\.1 Mailbox busy, try "
                                         r"later\) instead of 3600 s")

    def test_send_email_delays_and_drops(self):
        for lang in LANGS:
            with self.subTest(lang=lang):
                self.send(f"delay-{lang}@sender.test", [f"d@{lang}.test"], f"delayed {lang}")
                delayed = wait_until(lambda: [e for e in self.entries_for(f"d@{lang}.test")
                                              if e["next_attempt_ms"] > time.time() * 1000 + 3000_000],
                                     what="the delayed entry")[0]
                self.assertEqual(delayed["attempts"], 0, "a delay is not a failed attempt")
                if lang == "haraka":
                    continue  # Haraka's send_email has no drop
                self.send(f"drop-{lang}@sender.test", [f"x@{lang}.test"], f"dropped {lang}")
                self.server.wait_for_log(rf"dropped by a plugin.*recipients=x@{lang}\.test")
                wait_until(lambda: not self.entries_for(f"x@{lang}.test"), what="the dropped entry's removal")
                self.assertFalse(self.received(self.hop, f"x@{lang}.test"))

    def test_bounce_can_suppress_the_dsn(self):
        for lang in LANGS:
            with self.subTest(lang=lang):
                self.send(f"quiet-{lang}@sender.test", [f"bad-q@{lang}.test"], f"quiet {lang}")
                self.send(f"loud-{lang}@sender.test", [f"bad-l@{lang}.test"], f"loud {lang}")
                wait_until(lambda: self.received(self.mailbox, f"loud-{lang}@sender.test"), what="the DSN")
                wait_until(lambda: not self.entries_for(f"bad-q@{lang}.test"), what="the quiet entry's end")
                self.server.wait_for_log(r"bounce suppressed by a plugin")
                time.sleep(0.5)
                self.assertFalse(self.received(self.mailbox, f"quiet-{lang}@sender.test"))

    def test_a_fault_keeps_the_mail_queued(self):
        for lang in LANGS:
            with self.subTest(lang=lang):
                self.send("a@sender.test", [f"trap@{lang}.test"], f"trapped {lang}")
                entry = wait_until(lambda: [e for e in self.entries_for(f"trap@{lang}.test") if e["attempts"] == 1],
                                   what="the entry deferred after the fault")[0]
                self.assertIn(f"plugin test/outbound_{lang} failed in send-email", entry["last_error"])
                self.assertFalse(self.received(self.hop, f"trap@{lang}.test"))

    def test_an_async_haraka_hook_answers_after_its_await(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            s.mail("a@sender.test")
            self.assertEqual(s.rcpt("async@haraka.test"), (550, b"5.7.1 Refused after an await"))
            code, text = s.rcpt("silent@haraka.test")
            self.assertEqual((code // 100, text.split(b" ", 1)[1]), (4, b"plugin timeout"),
                             "a hook that never calls next() answers DENYSOFT, not a fault")
            self.assertEqual(s.rcpt("ok@haraka.test")[0], 250)
        self.server.wait_for_log(r"hook_rcpt ended without calling next\(\): answering DENYSOFT")


if __name__ == "__main__":
    unittest.main()
