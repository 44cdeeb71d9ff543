"""`waraka sendmail` end to end: a local program's message, on standard
input, reaches a real waraka over its local submission socket and leaves
through the outbound queue to an MX served by dnsmasq — with Sendmail's
options (`-t`, `-i`, `-f`, `-F`, `-oi`), through a link named `sendmail`,
and with sysexits.h statuses when it cannot go."""

import email
import os
import pwd
import re
import shutil
import smtplib
import stat
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from harness import BIN, Waraka, free_port, prometheus, wait_until
from test_outbound import mx_and_relay


def sendmail(args, text, config=None, program=BIN, subcommand=True):
    """Runs sendmail with `text` on standard input: (status, standard error)."""
    env = dict(os.environ)
    if config:
        env["WARAKA_CONFIG"] = str(config)
    command = [program, *(["sendmail"] if subcommand else []), *args]
    done = subprocess.run(command, input=text.encode(), capture_output=True, env=env, timeout=60)
    return done.returncode, done.stderr.decode()


class SendmailTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        def setup(server):
            server.edit("config/sender_rewrite", lambda t: t + "cron@mail.internal  ops@example.com\n"
                        "@mail.internal @example.com\n")

        # Not relaying for any client address: only local users relay.
        cls.mx, cls.server = mx_and_relay(cls, ["sender_rewrite", "rcpt_to.in_host_list", "queue/maildir"], setup)

    def received(self, subject):
        return wait_until(lambda: [m for m in self.mx.received() if f"Subject: {subject}\r\n".encode() in m[2]],
                          what=f"{subject!r} at the MX")[0]

    def test_recipients_from_the_header_bcc_taken_out_and_fields_added(self):
        text = ("To: Ann <ann@dest.test>\nCc: bob@dest.test\nBcc: carol@dest.test\n"
                "Subject: nightly report\n\nAll jobs done.\n.\nStill the message with -i.\n")
        status, errors = sendmail(["--config", str(self.server.dir), "-t", "-i"], text)
        self.assertEqual(status, 0, errors)
        sender, recipients, data = self.received("nightly report")
        self.assertEqual(sender.split("@")[0], "root", "the caller's user, known to the server")
        self.assertEqual(sorted(recipients), ["ann@dest.test", "bob@dest.test", "carol@dest.test"])
        message = email.message_from_bytes(data)
        self.assertIsNone(message["Bcc"])
        self.assertEqual(message["From"], sender)
        self.assertTrue(message["Date"] and message["Message-ID"])
        self.assertIn(b"Still the message with -i.", data)
        self.assertRegex(message["Received"], r"^by \S+ \(Waraka, from local user root\) with ESMTPA id ",
                         "relayed as a logged-in client, from no host")
        self.server.wait_for_log(r"local submission user=root")

    def test_a_link_named_sendmail_with_a_sender_a_name_and_a_lone_dot(self):
        link = Path(tempfile.mkdtemp()) / "sendmail"
        self.addCleanup(lambda: (link.unlink(), link.parent.rmdir()))
        link.symlink_to(BIN)
        text = "Subject: dotted\n\nbefore\n.\nafter\n"
        status, errors = sendmail(["-f", "app@example.com", "-F", "The App", "-odi", "dave@dest.test"], text,
                                  config=self.server.dir, program=str(link), subcommand=False)
        self.assertEqual(status, 0, errors)
        sender, recipients, data = self.received("dotted")
        self.assertEqual((sender, recipients), ("app@example.com", ["dave@dest.test"]))
        self.assertEqual(email.message_from_bytes(data)["From"], '"The App" <app@example.com>')
        self.assertIn(b"before", data)
        self.assertNotIn(b"after", data, "without -i a lone dot ends the message")

    def test_what_cannot_go_gets_a_sysexits_status(self):
        config = ["--config", str(self.server.dir)]
        self.assertEqual(sendmail(config, "Subject: x\n\nno one\n")[0], 64, "no recipients")
        status, errors = sendmail([*config, "not an address"], "Subject: x\n\nbad\n")
        self.assertEqual(status, 67, errors)
        self.assertEqual(sendmail([*config, "-bs"], "")[0], 64, "only -bm")
        status, errors = sendmail(["--config", "/nonexistent", "x@dest.test"], "Subject: x\n\nnowhere\n")
        self.assertEqual(status, 75, errors)
        self.assertIn("no server takes local mail", errors)

    def test_a_server_with_local_submission_off_takes_none(self):
        server = Waraka(["rcpt_to.in_host_list", "queue/maildir"],
                        setup=lambda s: s.edit("waraka.toml", lambda t: t + "\n[sendmail]\nenabled = false\n"))
        self.addCleanup(server.stop)
        self.assertFalse((server.dir / "queue/submit.sock").exists())
        status, errors = sendmail(["--config", str(server.dir), "x@dest.test"], "Subject: x\n\noff\n")
        self.assertEqual(status, 75, errors)
        self.assertIn("no server takes local mail", errors)

    def test_the_server_knows_the_caller_from_the_kernel(self):
        server = self.server
        # Let another user reach the socket: traverse-only directories.
        for path in (server.dir.parent, server.dir, server.dir / "queue"):
            path.chmod(0o711)
        done = subprocess.run(["python3", "-c", SUBMIT_AS_NOBODY, str(server.dir / "queue/submit.sock")],
                              capture_output=True, text=True, timeout=60, preexec_fn=as_nobody)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.split("\n")[:2], ["220", "{}"], done.stdout)
        server.wait_for_log(r"local submission user=nobody")
        self.assertIn(b"(Waraka, from local user nobody) with ESMTPA", self.received("from nobody")[2],
                      "relayed as nobody, logged in")

    def test_sender_rewrite_gives_a_programs_inside_address_a_real_one(self):
        text = ("From: The App <app@mail.internal>\nReply-To: cron@MAIL.internal, help@example.org\n"
                "Subject: rewritten\n\nhello\n")
        status, errors = sendmail(["--config", str(self.server.dir), "-f", "app@mail.internal", "u@dest.test"], text)
        self.assertEqual(status, 0, errors)
        sender, _, data = self.received("rewritten")
        self.assertEqual(sender, "app@example.com", "the domain rule keeps the user")
        message = email.message_from_bytes(data)
        self.assertEqual(message["From"], "The App <app@example.com>")
        self.assertEqual(message["Reply-To"], "ops@example.com, help@example.org", "the address rule wins")
        self.assertEqual([k for k in message.keys() if k in ("From", "Reply-To", "Subject")],
                         ["From", "Reply-To", "Subject"], "rewritten fields keep their places")
        self.server.wait_for_log(r"sender_rewrite: envelope <app@mail\.internal> is now <app@example\.com>")
        # Inbound mail (no relaying) keeps what it came with.
        before = set(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.sendmail("app@mail.internal", ["rcpt@example.com"],
                       b"From: app@mail.internal\r\nSubject: inbound\r\n\r\nhi\r\n")
        (stored,) = [p for p in self.server.maildir() if p not in before]
        self.assertIn(b"From: app@mail.internal", stored.read_bytes())


SUBMIT_AS_NOBODY = """
import smtplib, socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
s = smtplib.SMTP()
s.sock = sock
s.file = None
print(s.getreply()[0])
s.ehlo("localhost")
print(s.sendmail("someone@example.com", ["eve@dest.test"], b"Subject: from nobody\\r\\n\\r\\nhi\\r\\n"))
s.quit()
"""


def as_nobody():
    """A `preexec_fn` that drops to the user nobody, with a umask that
    would keep others (the server too, were it not root) out of new files."""
    nobody = pwd.getpwnam("nobody")
    os.setgid(nobody.pw_gid)
    os.setgroups([])
    os.setuid(nobody.pw_uid)
    os.umask(0o077)


def arrived(mx, subject, count=1):
    """The messages at `mx` whose own subject is `subject` (a bounce quotes
    the header of the message it is about), once there are `count`."""
    def found():
        matching = [m for m in mx.received() if email.message_from_bytes(m[2])["Subject"] == subject]
        return len(matching) >= count and matching

    return wait_until(found, what=f"{count} {subject!r} at the MX")


class MaildropTest(unittest.TestCase):
    """Mail a local program hands over while the server is down is kept in
    queue/maildrop, as its user, and goes when the server is back."""

    @classmethod
    def setUpClass(cls):
        cls.metrics_port = free_port()

        def setup(server):
            server.edit("waraka.toml", lambda t: t + '\n[sendmail]\npickup_interval = "1s"\n')
            server.enable_metrics(cls.metrics_port)

        cls.mx, cls.server = mx_and_relay(cls, ["rcpt_to.in_host_list", "queue/maildir"], setup)
        cls.maildrop = cls.server.dir / "queue/maildrop"
        # The user nobody runs its own copy of the binary (root's build
        # directory is closed to it) and traverses to the instance.
        cls.bin_dir = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.bin_dir.cleanup)
        cls.nobody_bin = Path(cls.bin_dir.name) / "waraka"
        shutil.copy(BIN, cls.nobody_bin)
        for path in (Path(cls.bin_dir.name), cls.server.dir.parent, cls.server.dir, cls.server.dir / "queue"):
            path.chmod(0o711 if path != Path(cls.bin_dir.name) else 0o755)

    def received(self, subject):
        return arrived(self.mx, subject)

    def test_mail_left_while_the_server_is_down_goes_when_it_is_back(self):
        self.assertEqual(stat.S_IMODE(self.maildrop.stat().st_mode), 0o1733, "anyone may leave mail, none list it")
        config = ["--config", str(self.server.dir)]
        self.server.halt()
        try:
            status, errors = sendmail([*config, "-f", "app@dest.test", "ann@dest.test", "not an address"],
                                      "Subject: kept\n\nwritten while the server was down\n")
            self.assertEqual((status, errors), (0, ""), "kept, as Postfix's sendmail does")
            done = subprocess.run([str(self.nobody_bin), "sendmail", *config, "bob@dest.test"],
                                  input=b"Subject: kept for nobody\n\nhi\n", capture_output=True, timeout=60,
                                  preexec_fn=as_nobody)
            self.assertEqual(done.returncode, 0, done.stderr.decode())
            kept = {path.stat().st_uid: path for path in self.maildrop.iterdir()}
            self.assertEqual(set(kept), {0, pwd.getpwnam("nobody").pw_uid}, "each file is its user's")
            for path in kept.values():
                self.assertRegex(path.name, r"^[0-9a-f]{32}$")
                self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o644, "readable by the server, whatever the umask")
        finally:
            self.server.start_again()
        ((sender, recipients, data),) = self.received("kept")
        self.assertEqual((sender, recipients), ("app@dest.test", ["ann@dest.test"]))
        self.assertIn(b"(Waraka, from local user root) with ESMTPA", data)
        ((_, recipients, data),) = self.received("kept for nobody")
        self.assertEqual(recipients, ["bob@dest.test"])
        self.assertIn(b"(Waraka, from local user nobody) with ESMTPA", data,
                      "the file's owner is who sent it, as the kernel says")
        ((sender, recipients, bounce),) = self.received("Undelivered Mail Returned to Sender")
        self.assertEqual((sender, recipients), ("", ["app@dest.test"]), "the refused recipient, told to the sender")
        report = email.message_from_bytes(bounce)
        status = [part for part in report.walk() if part.get_content_type() == "message/delivery-status"]
        self.assertIn("Final-Recipient: rfc822; not an address", status[0].as_string())
        self.assertIn("Action: failed", status[0].as_string())
        self.assertIn("Subject: kept", bounce.decode(), "the message's header is quoted")
        wait_until(lambda: not any(self.maildrop.iterdir()), what="an empty maildrop")
        self.server.wait_for_log(r"maildrop: picked up .*user=nobody")
        counts = wait_until(lambda: (m := prometheus(self.metrics_port)).get("waraka_maildrop_waiting") == 0 and m,
                            what="the pickup's gauge at 0")
        self.assertEqual(counts['waraka_maildrop_recipients_total{result="queued"}'], 2)
        self.assertEqual(counts['waraka_maildrop_recipients_total{result="refused"}'], 1)

    def test_a_file_no_user_could_have_left_is_removed_unread(self):
        outside = self.server.dir / "secret"
        outside.write_text("X-Waraka-Maildrop: 1\r\nX-Envelope-From: a@dest.test\r\n"
                           "X-Envelope-To: carol@dest.test\r\n\r\nSubject: linked\r\n\r\nsecret\r\n")
        linked = self.maildrop / ("a" * 32)
        os.link(outside, linked)
        self.server.wait_for_log(r"maildrop: removed unread: 2 links to the file", timeout=30)
        self.assertFalse(linked.exists())
        self.assertTrue(outside.exists(), "only the link in the maildrop goes")
        self.assertFalse([m for m in self.mx.received() if b"secret" in m[2]])
        self.assertEqual(prometheus(self.metrics_port)["waraka_maildrop_unfit_total"], 1)


class MaildropRetryTest(unittest.TestCase):
    """Recipients the chain refuses for now (here `limit`'s rate for a
    user: one recipient an hour) stay in the maildrop and are tried again,
    without sending again to those already taken; past `maildrop_lifetime`
    they fail and the sender is told."""

    def server(self, lifetime):
        def setup(server):
            server.edit("waraka.toml", lambda t: t + f'\n[sendmail]\npickup_interval = "1s"\n'
                                                       f'maildrop_lifetime = "{lifetime}"\n')
            server.set_settings("limit.ini", user_recipient_rate="1/1h")

        mx, server = mx_and_relay(self, ["limit", "rcpt_to.in_host_list", "queue/maildir"], setup)
        server.halt()
        status, errors = sendmail(["--config", str(server.dir), "-f", "app@dest.test", "a@dest.test", "b@dest.test"],
                                  "Subject: rationed\n\none recipient an hour\n")
        self.assertEqual(status, 0, errors)
        return mx, server, server.dir / "queue/maildrop"

    def test_recipients_refused_for_now_are_retried_and_the_others_not_sent_twice(self):
        mx, server, maildrop = self.server("5d")
        server.start_again()
        ((_, recipients, _),) = arrived(mx, "rationed")
        self.assertEqual(recipients, ["a@dest.test"])
        server.wait_for_log(r"maildrop: picked up .*taken=a@dest\.test refused=0 later=1")
        (progress,) = maildrop.glob(".*.done")
        self.assertEqual(progress.read_text(), "a@dest.test\n")
        # Two more looks, with b still over the rate: a is not sent again.
        wait_until(lambda: len(re.findall(r"taken= refused=0 later=1", "".join(server.log))) >= 2,
                   what="two more looks")
        self.assertEqual(len(arrived(mx, "rationed")), 1)
        # A restart empties the limiter's memory: b goes now, and only b.
        server.halt()
        server.start_again()
        copies = arrived(mx, "rationed", count=2)
        self.assertEqual([c[1] for c in copies], [["a@dest.test"], ["b@dest.test"]])
        wait_until(lambda: not any(maildrop.iterdir()), what="the maildrop empty, notes and all")

    def test_past_its_lifetime_a_recipient_refused_for_now_fails(self):
        mx, server, maildrop = self.server("1s")
        time.sleep(1.5)
        server.start_again()
        ((_, recipients, _),) = arrived(mx, "rationed")
        self.assertEqual(recipients, ["a@dest.test"])
        ((sender, to, bounce),) = arrived(mx, "Undelivered Mail Returned to Sender")
        self.assertEqual((sender, to), ("", ["app@dest.test"]))
        self.assertIn(b"Final-Recipient: rfc822; b@dest.test", bounce)
        self.assertIn(b"Too many recipients from your account", bounce, "the last reason given")
        wait_until(lambda: not any(maildrop.iterdir()), what="an empty maildrop")


class AllowedUsersTest(unittest.TestCase):
    def test_a_user_not_allowed_is_refused(self):
        server = Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=lambda s: s.edit(
            "waraka.toml", lambda t: t + '\n[sendmail]\nallowed_users = ["nobody"]\n'))
        self.addCleanup(server.stop)
        status, errors = sendmail(["--config", str(server.dir), "x@example.com"], "Subject: x\n\nhi\n")
        self.assertEqual(status, 69, errors)
        self.assertIn("Local user root may not submit mail here", errors)
        server.wait_for_log(r"local submission refused: the user is not in \[sendmail\] allowed_users")
        server.halt()
        status, errors = sendmail(["--config", str(server.dir), "x@example.com"], "Subject: x\n\nhi\n")
        self.assertEqual(status, 69, errors)
        self.assertIn("Local user root may not submit mail here", errors)
        self.assertFalse(any((server.dir / "queue/maildrop").iterdir()), "nor kept for later")


if __name__ == "__main__":
    unittest.main()
