"""auth/sql end to end: a real waraka's submission port checks AUTH PLAIN
and LOGIN passwords against a user table in a real PostgreSQL (and in the
embedded SQLite of the default instance), after STARTTLS, with smtplib as
the client. The stored passwords are made by Dovecot's `doveadm pw` and by
`waraka password-hash`, in the forms a mail service's tables hold."""

import sqlite3
import subprocess
import unittest

from harness import BIN, Postgres, Waraka, enable_tls, try_login

SCHEMES = ["BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "MD5-CRYPT", "ARGON2ID", "SSHA512", "SSHA256.HEX"]


def doveadm_pw(scheme, password):
    """`password` stored as Dovecot stores it: `{SCHEME}…`."""
    return subprocess.run(["doveadm", "pw", "-s", scheme, "-p", password], check=True, capture_output=True,
                          text=True).stdout.strip()


def password_hash(password):
    """`password` hashed by `waraka password-hash` (a bare Argon2id string)."""
    return subprocess.run([BIN, "password-hash"], input=password + "\n", check=True, capture_output=True,
                          text=True).stdout.strip()


def sql_literal(text):
    return "'" + text.replace("'", "''") + "'"


def login(server, user, password, mechanism="PLAIN"):
    """The reply to AUTH after STARTTLS: (code, text)."""
    return try_login(server.port, user, password, server.dir / "config/tls/cert.pem", mechanism)


def submission_server(database_table, **settings):
    """A submission server with auth/sql, `[sql.users]` being `database_table`
    (a waraka.toml table, None for the shipped SQLite one) and `settings`
    replacing those of config/auth/sql.ini."""

    def setup(server):
        enable_tls(server, "localhost")
        if database_table:
            server.edit("waraka.toml", lambda t: t.replace(
                '[sql.users]\nbackend = "sqlite"\npath = "data/users.db"\n', database_table))
        # A low failure delay keeps the refusals quick; the lockout stays out of the way.
        server.edit("waraka.toml", lambda t: t.replace(
            "[smtp]\n", '[smtp]\nauth_failure_delay = "10ms"\nauth_lockout_failures = 1000\n', 1))
        server.set_settings("auth/sql.ini", **settings)

    return Waraka(["auth/sql", "rcpt_to.in_host_list", "queue/maildir"], roles=("submission",), setup=setup)


class PostgresAuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = Postgres()
        cls.addClassCleanup(cls.pg.close)
        rows = [(f"{scheme.lower()}@mail.test", doveadm_pw(scheme, f"{scheme} secret"), True)
                for scheme in SCHEMES]
        rows += [("argon@mail.test", password_hash("wäraka secret"), True),
                 ("ascii@mail.test", password_hash("waraka secret"), True),
                 ("clear@mail.test", doveadm_pw("PLAIN", "clear secret"), True),
                 ("des@mail.test", "{CRYPT}abJnggxhB/yWI", True),
                 ("gone@mail.test", doveadm_pw("BLF-CRYPT", "gone secret"), False)]
        values = ", ".join(f"({sql_literal(u)}, {sql_literal(p)}, {a})" for u, p, a in rows)
        cls.pg.psql("CREATE TABLE mailbox (username text PRIMARY KEY, password text, active boolean);"
                    f"INSERT INTO mailbox VALUES {values}")
        table = f'[sql.users]\nbackend = "postgres"\nurl = "{cls.pg.url}"\nconnect_timeout = "2s"\n'
        cls.server = submission_server(
            table, query="SELECT password FROM mailbox WHERE username = $1 AND active")
        cls.addClassCleanup(cls.server.stop)

    def test_every_stored_form_takes_its_password_and_no_other(self):
        for scheme in SCHEMES:
            user = f"{scheme.lower()}@mail.test"
            with self.subTest(scheme=scheme):
                self.assertEqual(login(self.server, user, f"{scheme} secret"),
                                 (235, "2.7.0 Authentication successful"))
                self.assertEqual(login(self.server, user, f"{scheme} secreT"),
                                 (535, "5.7.8 Authentication credentials invalid"))
        self.assertEqual(login(self.server, "argon@mail.test", "wäraka secret")[0], 235)
        self.assertEqual(login(self.server, "argon@mail.test", "waraka secret")[0], 535)
        self.assertEqual(login(self.server, "ascii@mail.test", "waraka secret", "LOGIN")[0], 235)
        self.server.wait_for_log(r"authenticated user=ascii@mail\.test plugin=\"auth/sql\"")

    def test_unknown_inactive_cleartext_and_weak_entries_are_refused(self):
        self.assertEqual(login(self.server, "mallory@mail.test", "anything")[0], 535)
        self.assertEqual(login(self.server, "gone@mail.test", "gone secret")[0], 535, "the query leaves it out")
        self.assertEqual(login(self.server, "clear@mail.test", "clear secret")[0], 535)
        self.server.wait_for_log(r"user clear@mail\.test: cleartext password entry refused")
        self.assertEqual(login(self.server, "des@mail.test", "password")[0], 535)
        self.server.wait_for_log(r"user des@mail\.test: unsupported crypt form")

    def test_a_hash_costlier_than_the_plugins_limits_is_a_fault_not_an_accept(self):
        shipped = "fuel = 10000000000"
        self.server.edit("waraka.toml", lambda t: t.replace(shipped, "fuel = 2000000000"))
        self.server.reload()
        try:
            code, text = login(self.server, "argon2id@mail.test", "ARGON2ID secret")
            self.assertEqual((code, text[:6]), (451, "4.3.0 "))
            self.server.wait_for_log(r"plugin fault: out of fuel.*plugin=auth/sql")
        finally:
            self.server.edit("waraka.toml", lambda t: t.replace("fuel = 2000000000", shipped))
            self.server.reload()
        self.assertEqual(login(self.server, "argon2id@mail.test", "ARGON2ID secret")[0], 235)

    def test_a_stopped_database_is_a_temporary_failure_until_it_is_back(self):
        self.pg.stop()
        try:
            code, text = login(self.server, "blf-crypt@mail.test", "BLF-CRYPT secret")
            self.assertEqual((code, text[:6]), (454, "4.7.0 "), "never an accept, never a 535")
            self.server.wait_for_log(r"user blf-crypt@mail\.test: the user table cannot be read")
        finally:
            self.pg.start()
        self.assertEqual(login(self.server, "blf-crypt@mail.test", "BLF-CRYPT secret")[0], 235, "the pool reconnects")


class SqliteAuthTest(unittest.TestCase):
    """The default instance's database and query, cleartext allowed."""

    def test_the_shipped_query_on_the_embedded_database(self):
        def fill(server):
            (server.dir / "data").mkdir(exist_ok=True)
            with sqlite3.connect(server.dir / "data/users.db") as db:
                db.execute("CREATE TABLE users (username text PRIMARY KEY, password text NOT NULL)")
                db.executemany("INSERT INTO users VALUES (?, ?)", [
                    ("alice@example.com", doveadm_pw("SHA512-CRYPT", "alice secret")),
                    ("bob", "plain:bob secret"),
                ])

        server = submission_server(None, allow_cleartext="true")
        try:
            fill(server)
            self.assertEqual(login(server, "alice@example.com", "alice secret")[0], 235)
            self.assertEqual(login(server, "alice@example.com", "bob secret")[0], 535)
            self.assertEqual(login(server, "bob", "bob secret", "LOGIN")[0], 235)
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main()
