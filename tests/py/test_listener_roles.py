"""Plugins per listener (`[plugin."NAME"] roles`) end to end: one server
with an mx and a submission listener, where `data.signatures` guards the
mx listener only and `record_envelope_addresses` marks submissions only;
a reload moves a plugin to the other role without a restart."""

import email
import json
import smtplib
import unittest

from harness import Waraka, flat_file_users, stopped_after_class, waraka_queue, wait_until

ROLES = '''
[plugin."data.signatures"]
roles = ["mx"]

[plugin.record_envelope_addresses]
roles = ["submission"]
'''


def setup(server):
    flat_file_users(server, {"bob@example.com": "bob-pw"})
    server.edit("config/data.signatures", lambda t: t + "cheap watches\n")
    # A user's mail leaves through the outbound queue; it waits there.
    server.edit("waraka.toml", lambda t: t + ROLES)
    server.hold_outbound()


class ListenerRolesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = stopped_after_class(cls, Waraka(
            ["auth/flat_file", "data.signatures", "record_envelope_addresses", "rcpt_to.in_host_list",
             "queue/maildir"], roles=("mx", "submission"), setup=setup))

    def send(self, role, subject, body="Hello."):
        """DATA's code and the message as stored: in the maildir for mx, in
        the outbound queue for a user's submission."""
        before = set(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.ports[role], local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            if role == "submission":
                s.login("bob@example.com", "bob-pw")
            s.mail("bob@example.com")
            s.rcpt("rcpt@example.com")
            code, text = s.data(f"Subject: {subject}\r\n\r\n{body}\r\n".encode())
        if code != 250:
            return code, None
        if role == "submission":
            entries = [json.loads(p.read_text()) for p in (self.server.dir / "queue/outbound").glob("*.json")]
            for entry in entries:
                status, shown = waraka_queue(self.server, "show", entry["id"])
                if f"Subject: {subject}" in shown:
                    return code, email.message_from_string(shown.split("\n\n", 1)[1])
            self.fail(f"{subject!r} is not in the outbound queue")
        (stored,) = wait_until(lambda: [p for p in self.server.maildir() if p not in before], what=subject)
        return code, email.message_from_bytes(stored.read_bytes())

    def test_each_listener_runs_the_plugins_of_its_role(self):
        self.assertEqual(self.send("mx", "mx offer", "cheap watches")[0], 554, "data.signatures on mx")
        code, stored = self.send("submission", "user's offer", "cheap watches")
        self.assertEqual(code, 250, "data.signatures is not called on submission")
        self.assertEqual(stored["X-Envelope-From"], "<bob@example.com>", "record_envelope_addresses is")
        code, stored = self.send("mx", "plain inbound")
        self.assertEqual(code, 250)
        self.assertIsNone(stored["X-Envelope-From"], "record_envelope_addresses is not called on mx")

    def test_a_users_mail_gets_the_date_and_message_id_it_lacks(self):
        _, submitted = self.send("submission", "bare submission")
        self.assertRegex(submitted["Message-ID"], r"^<[0-9A-F]{16}\.\d+@\S+>$")
        self.assertTrue(submitted["Date"], "[smtp] add_missing_headers = relaying, the default")
        self.assertEqual(list(submitted.keys())[-2:], ["Date", "Message-ID"], "at the end of the header")
        _, received = self.send("mx", "bare inbound")
        self.assertIsNone(received["Message-ID"], "mail from the world is left as it came")
        self.assertIsNone(received["Date"])

    def test_a_reload_moves_a_plugin_to_another_role(self):
        self.server.edit("waraka.toml", lambda t: t.replace('roles = ["mx"]', 'roles = ["submission"]'))
        self.addCleanup(self.server.reload)
        self.addCleanup(self.server.edit, "waraka.toml", lambda t: t.replace('roles = ["submission"]\n\n[plugin.rec',
                                                                              'roles = ["mx"]\n\n[plugin.rec'))
        self.server.reload()
        self.assertEqual(self.send("mx", "mx offer after reload", "cheap watches")[0], 250)
        self.assertEqual(self.send("submission", "user's offer after reload", "cheap watches")[0], 554)


if __name__ == "__main__":
    unittest.main()
