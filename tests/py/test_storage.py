"""The tutorial's e-mail service end to end: `queue/s3` into a real
S3-compatible server, `rcpt_to.validity` against a real PostgreSQL (and the
embedded SQLite), and `queue/s3` + `queue/sql` recording each mailbox entry.
Backends are started by the tests and stopped under the server's feet.
"""

import gzip
import re
import smtplib
import sqlite3
import time
import unittest

from harness import S3, Postgres, Waraka

DEFAULT_BLOBSTORE = '[blobstore.mail]\nbackend = "dir"\npath = "blobs"\n'
DEFAULT_SQL = {
    "users": '[sql.users]\nbackend = "sqlite"\npath = "data/users.db"\n',
    "mail": '[sql.mail]\nbackend = "sqlite"\npath = "data/mail.db"\n',
}


def replace_in_toml(server, old, new):
    """Swaps a table of the default waraka.toml for `new`."""

    def change(text):
        assert old in text, f"{old!r} not in waraka.toml"
        return text.replace(old, new)

    server.edit("waraka.toml", change)


def message(subject, body="Hello from the test.\r\n", size=None):
    """A small RFC 5322 message (padded to about `size` bytes when given)."""
    text = f"From: sender@py.test\r\nTo: alice@example.com\r\nSubject: {subject}\r\n\r\n{body}"
    if size:
        line = "x" * 998 + "\r\n"
        text += line * (size // len(line))
    return text.encode()


def smtp(server):
    return smtplib.SMTP("127.0.0.1", server.port, local_hostname="py.test", timeout=60)


class S3QueueTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s3 = S3()
        cls.server = Waraka(["rcpt_to.in_host_list", "queue/s3"],
                            setup=lambda w: replace_in_toml(w, DEFAULT_BLOBSTORE, cls.s3.toml()))

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.s3.close()

    def setUp(self):
        self.server.set_settings("queue/s3.ini", gzip="false", extension=".eml", copy_all_addresses="true")
        if self.s3.proc.poll() is not None:
            self.s3.start()

    def send(self, recipients, data):
        with smtp(self.server) as s:
            s.sendmail("sender@py.test", recipients, data)

    def new_objects(self, before):
        return {k: v for k, v in self.s3.objects().items() if k not in before}

    def test_one_upload_then_server_side_copies_for_each_local_recipient(self):
        before = self.s3.objects()
        requests = len(self.s3.requests())
        self.send(["alice@example.com", "Bob@EXAMPLE.com", "postmaster"], message("three copies"))
        objects = self.new_objects(before)
        keys = sorted(objects)
        self.assertEqual(len(keys), 3, keys)
        uuid = re.fullmatch(r"Bob@example\.com/([0-9a-f-]{36})\.eml", keys[0]).group(1)
        self.assertEqual(keys, [f"Bob@example.com/{uuid}.eml", f"alice@example.com/{uuid}.eml",
                                f"postmaster/{uuid}.eml"])
        bodies = set(objects.values())
        self.assertEqual(len(bodies), 1, "every recipient has the same bytes")
        stored = bodies.pop()
        self.assertTrue(stored.startswith(b"Received: from py.test"), stored[:80])
        self.assertIn(b"Subject: three copies\r\n\r\nHello from the test.\r\n", stored)
        made = [r for r in self.s3.requests()[requests:] if r.startswith(("PUT", "POST"))]
        self.assertEqual(len([r for r in made if not r.endswith(" copy")]), 1, made)
        self.assertEqual(len([r for r in made if r.endswith(" copy")]), 2, made)
        self.server.wait_for_log(r"stored \d+ bytes as 3 object\(s\) in mail")

    def test_gzip_on_the_way(self):
        self.server.set_settings("queue/s3.ini", gzip="true", extension=".eml.gz")
        before = self.s3.objects()
        self.send(["alice@example.com"], message("compressed", body="compress me\r\n" * 2000))
        [(key, stored)] = self.new_objects(before).items()
        self.assertTrue(key.endswith(".eml.gz"), key)
        plain = gzip.decompress(stored)
        self.assertIn(b"Subject: compressed\r\n", plain)
        self.assertEqual(plain.count(b"compress me\r\n"), 2000)
        self.assertLess(len(stored), len(plain) // 10)

    def test_only_the_first_recipient_without_copy_all_addresses(self):
        self.server.set_settings("queue/s3.ini", copy_all_addresses="false")
        before = self.s3.objects()
        self.send(["alice@example.com", "bob@example.com"], message("first only"))
        self.assertEqual([k.split("/")[0] for k in self.new_objects(before)], ["alice@example.com"])

    def test_a_large_message_goes_up_in_parts(self):
        before = self.s3.objects()
        requests = len(self.s3.requests())
        data = message("large", size=9 * 1024 * 1024)
        self.send(["alice@example.com"], data)
        [stored] = self.new_objects(before).values()
        self.assertTrue(stored.endswith(data.replace(b"\r\n", b"\r\n")[-2000:]))
        self.assertEqual(stored.count(b"x" * 998), data.count(b"x" * 998))
        parts = [r for r in self.s3.requests()[requests:] if "partNumber=" in r]
        self.assertEqual(len(parts), 2, parts)

    def test_s3_down_is_a_temporary_failure_and_the_retry_is_stored(self):
        before = self.s3.objects()
        self.s3.stop()
        with smtp(self.server) as s:
            s.ehlo()
            s.mail("sender@py.test")
            s.rcpt("alice@example.com")
            code, text = s.data(message("while down"))
            self.assertEqual((code, text[:6]), (451, b"4.3.0 "), text)
            self.s3.start()
            s.rset()
            refused = s.sendmail("sender@py.test", ["alice@example.com"], message("while down"))
            self.assertEqual(refused, {})
        after = self.s3.objects()
        self.assertTrue(set(before) <= set(after), "nothing stored earlier is lost")
        self.assertEqual(len(after), len(before) + 1)
        self.server.wait_for_log(r"storing the message failed")


class S3CredentialsTest(unittest.TestCase):
    def test_a_wrong_secret_is_a_temporary_failure_never_a_250(self):
        s3 = S3()
        server = Waraka(["rcpt_to.in_host_list", "queue/s3"],
                        setup=lambda w: replace_in_toml(w, DEFAULT_BLOBSTORE, s3.toml(secret="wrong")))
        try:
            with smtp(server) as s:
                with self.assertRaises(smtplib.SMTPDataError) as cm:
                    s.sendmail("sender@py.test", ["alice@example.com"], message("bad secret"))
            self.assertEqual(cm.exception.smtp_code, 451)
            self.assertEqual(s3.objects(), {})
            self.assertRegex(server.wait_for_log("storing the message failed"), "Backend")
        finally:
            server.stop()
            s3.close()


class PostgresValidityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = Postgres()
        cls.pg.psql("CREATE TABLE valid_addresses (address text PRIMARY KEY);"
                    "INSERT INTO valid_addresses VALUES ('alice@example.com'), ('postmaster')")
        postgres = f'[sql.users]\nbackend = "postgres"\nurl = "{cls.pg.url}"\nconnect_timeout = "2s"\n'

        def setup(server):
            replace_in_toml(server, DEFAULT_SQL["users"], postgres)
            grant = '[plugin."rcpt_to.validity"]\ngrants = ["sql:users"]\n'
            replace_in_toml(server, grant, grant + 'timeout = "2s"\n')

        cls.server = Waraka(["rcpt_to.validity", "rcpt_to.in_host_list", "queue/discard"], setup=setup)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.pg.close()

    def rcpt(self, address):
        with smtp(self.server) as s:
            s.ehlo()
            s.mail("sender@py.test")
            return s.rcpt(address)

    def test_known_addresses_are_accepted_and_unknown_ones_refused(self):
        self.assertEqual(self.rcpt("alice@example.com")[0], 250)
        self.assertEqual(self.rcpt("alice@EXAMPLE.COM")[0], 250, "the domain is compared lower-cased")
        self.assertEqual(self.rcpt("postmaster")[0], 250)
        self.assertEqual(self.rcpt("nobody@example.com"), (550, b"5.1.1 Invalid email address"))

    def test_other_domains_are_left_to_the_relaying_rule(self):
        code, text = self.rcpt("alice@elsewhere.test")
        self.assertEqual(code, 550)
        self.assertNotIn(b"Invalid email address", text)

    def test_a_stopped_database_is_a_temporary_failure_until_it_is_back(self):
        self.assertEqual(self.rcpt("alice@example.com")[0], 250)
        self.pg.stop()
        try:
            self.assertEqual(self.rcpt("alice@example.com")[:1], (451,))
            code, text = self.rcpt("nobody@example.com")
            self.assertEqual((code, text[:6]), (451, b"4.3.0 "), "never a permanent answer while down")
        finally:
            self.pg.start()
        self.assertEqual(self.rcpt("alice@example.com")[0], 250, "the pool reconnects")
        self.assertEqual(self.rcpt("nobody@example.com")[0], 550)

    def test_a_slow_query_is_cut_at_the_plugin_deadline_and_cancelled(self):
        self.server.set_settings("rcpt_to.validity.ini",
                 query="SELECT pg_sleep(30) IS NOT NULL AND EXISTS(SELECT 1 FROM valid_addresses WHERE address = $1)")
        try:
            started = time.monotonic()
            code, _ = self.rcpt("alice@example.com")
            self.assertEqual(code, 451)
            self.assertLess(time.monotonic() - started, 20)
            deadline = time.monotonic() + 10
            while self.pg.psql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(30)%'") != [["0"]]:
                self.assertLess(time.monotonic(), deadline, "the query was not cancelled")
                time.sleep(0.1)
        finally:
            self.server.set_settings("rcpt_to.validity.ini",
                     query="SELECT EXISTS(SELECT 1 FROM valid_addresses WHERE address = $1)")
        self.assertEqual(self.rcpt("alice@example.com")[0], 250)


class SqliteValidityTest(unittest.TestCase):
    def test_the_embedded_default_needs_no_server(self):
        def setup(server):
            (server.dir / "data").mkdir()
            with sqlite3.connect(server.dir / "data/users.db") as db:
                db.execute("CREATE TABLE valid_addresses (address TEXT PRIMARY KEY)")
                db.execute("INSERT INTO valid_addresses VALUES ('alice@example.com')")

        server = Waraka(["rcpt_to.validity", "rcpt_to.in_host_list", "queue/discard"], setup=setup)
        try:
            with smtp(server) as s:
                s.ehlo()
                s.mail("sender@py.test")
                self.assertEqual(s.rcpt("alice@example.com")[0], 250)
                self.assertEqual(s.rcpt("bob@example.com"), (550, b"5.1.1 Invalid email address"))
                # A subaddress (config/recipient_delimiter) exists when its user does.
                self.assertEqual(s.rcpt("alice+news@example.com")[0], 250)
                self.assertEqual(s.rcpt("bob+news@example.com")[0], 550)
        finally:
            server.stop()


class MailServicePipelineTest(unittest.TestCase):
    """rcpt_to.validity + queue/s3 (continue) + queue/sql: the tutorial's service."""

    @classmethod
    def setUpClass(cls):
        cls.s3 = S3()
        cls.pg = Postgres()
        cls.pg.psql("CREATE TABLE valid_addresses (address text PRIMARY KEY);"
                    "INSERT INTO valid_addresses VALUES ('alice@example.com'), ('bob@example.com');"
                    "CREATE TABLE messages (id serial PRIMARY KEY, recipient text NOT NULL, sender text NOT NULL,"
                    " blob_key text, size bigint, received_at timestamptz, transaction_id text, subject text)")

        def setup(server):
            replace_in_toml(server, DEFAULT_BLOBSTORE, cls.s3.toml())
            for name, table in DEFAULT_SQL.items():
                replace_in_toml(server, table, f'[sql.{name}]\nbackend = "postgres"\nurl = "{cls.pg.url}"\n')
            server.set_settings("queue/s3.ini", **{"continue": "true"})

        cls.server = Waraka(["rcpt_to.validity", "rcpt_to.in_host_list", "queue/s3", "queue/sql"], setup=setup)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.pg.close()
        cls.s3.close()

    def test_each_mailbox_lists_its_message_and_the_key_finds_it(self):
        data = message("pipeline")
        with smtp(self.server) as s:
            s.ehlo()
            s.mail("sender@py.test")
            self.assertEqual(s.rcpt("alice@example.com")[0], 250)
            self.assertEqual(s.rcpt("carol@example.com")[0], 550)
            self.assertEqual(s.rcpt("bob@example.com")[0], 250)
            code, text = s.data(data)
            self.assertEqual(code, 250, text)
            self.assertRegex(text.decode(), r"^2\.0\.0 Message queued as ")
        rows = self.pg.psql("SELECT recipient, sender, blob_key, size, subject, transaction_id,"
                            " received_at > now() - interval '1 minute' FROM messages WHERE subject = 'pipeline'"
                            " ORDER BY recipient")
        self.assertEqual([r[0] for r in rows], ["alice@example.com", "bob@example.com"])
        objects = self.s3.objects()
        for recipient, sender, key, size, subject, transaction, recent in rows:
            self.assertEqual(sender, "sender@py.test")
            self.assertTrue(key.startswith(recipient + "/"), key)
            self.assertEqual(int(size), len(objects[key]))
            self.assertIn(b"Subject: pipeline\r\n", objects[key])
            self.assertEqual(recent, "t")
        self.assertEqual(len({r[5] for r in rows}), 1, "one transaction id")

    def test_a_failing_table_is_a_temporary_failure_with_nothing_half_recorded(self):
        self.pg.psql("ALTER TABLE messages ADD CONSTRAINT no_bob CHECK (recipient <> 'bob@example.com')")
        try:
            with smtp(self.server) as s:
                with self.assertRaises(smtplib.SMTPDataError) as cm:
                    s.sendmail("sender@py.test", ["alice@example.com", "bob@example.com"], message("half"))
            self.assertEqual(cm.exception.smtp_code, 451)
            self.assertEqual(self.pg.psql("SELECT count(*) FROM messages WHERE subject = 'half'"), [["0"]],
                             "alice's row was rolled back with bob's")
        finally:
            self.pg.psql("ALTER TABLE messages DROP CONSTRAINT no_bob")
        with smtp(self.server) as s:
            self.assertEqual(s.sendmail("sender@py.test", ["alice@example.com", "bob@example.com"], message("half")),
                             {})
        self.assertEqual(self.pg.psql("SELECT count(*) FROM messages WHERE subject = 'half'"), [["2"]])


if __name__ == "__main__":
    unittest.main()
