"""TLS, AUTH and relaying end to end: smtplib, swaks and raw sockets against a
real waraka with the relay, auth/flat_file, rcpt_to.in_host_list and
queue/maildir plugins, on mx, submission and submissions listeners.
"""

import base64
import hashlib
import os
import pathlib
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import warnings

from harness import (BIN, GUESTS, Waraka, enable_tls, flat_file_users, free_port, make_ca, make_cert, prometheus,
                     redis, stopped_after_class)

PASSWORD = "correct horse battery staple"
FAILURE_DELAY = 0.1


def der(cert):
    return ssl.PEM_cert_to_DER_cert(pathlib.Path(cert).read_text())


def b64(text):
    return base64.b64encode(text.encode()).decode()


def setup_instance(server):
    """TLS files, a user, the recorder fixture and strict AUTH settings."""
    tls = server.dir / "config/tls"
    tls.mkdir(parents=True)
    make_cert(tls / "cert.pem", tls / "key.pem", "first")
    for site, name in [("b", "mail.b.test"), ("c", "*.c.test")]:
        (tls / site).mkdir()
        make_ca(tls / site, [name])
    hashed = subprocess.run([BIN, "password-hash"], input=PASSWORD + "\n", capture_output=True, text=True, check=True)
    server.edit("config/auth/flat_file.ini", lambda t: t + f"alice = {hashed.stdout.strip()}\nbob = plain:secret\n")
    (server.dir / "plugins/test").mkdir()
    shutil.copy(GUESTS / "fixture_recorder.wasm", server.dir / "plugins/test/recorder.wasm")
    (server.dir / "record").mkdir()

    def toml(text):
        text = text.replace("# auth_max_failures = 3", "auth_max_failures = 3")
        text = text.replace('# auth_failure_delay = "1s"', f'auth_failure_delay = "{int(FAILURE_DELAY * 1000)}ms"')
        text = text.replace("# auth_plaintext_loopback = true", "auth_plaintext_loopback = false")
        text = text.replace('maildir = "maildir"', 'maildir = "maildir"\nrecord = "record"')
        return text + (
            '\n[outbound]\nsmarthost = { host = "127.0.0.1", port = 1 }  # nothing listens: mail stays queued\n'
            '\n[tls]\ncert = "config/tls/cert.pem"\nkey = "config/tls/key.pem"\n'
            '[[tls.sni]]\ncert = "config/tls/b/cert.pem"\nkey = "config/tls/b/key.pem"\n'
            '[[tls.sni]]\ncert = "config/tls/c/cert.pem"\nkey = "config/tls/c/key.pem"\n'
            '\n[plugin."test/recorder"]\ngrants = ["dir:record"]\n'
        )

    server.edit("waraka.toml", toml)


class TlsAuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Waraka(
            ["relay", "auth/flat_file", "rcpt_to.in_host_list", "queue/maildir"],
            roles=("mx", "submission", "submissions"),
            setup=setup_instance,
        )
        cls.cert = cls.server.dir / "config/tls/cert.pem"

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def context(self, *certs):
        ctx = ssl.create_default_context()
        for cert in certs or (self.cert,):
            ctx.load_verify_locations(cafile=str(cert))
        return ctx

    def submission(self, host="127.0.0.1"):
        """A client on the submission port, after STARTTLS and a second EHLO."""
        s = smtplib.SMTP(host, self.server.ports["submission"], local_hostname="py.test", timeout=30)
        s.starttls(context=self.context())
        s.ehlo()
        return s

    def recorded(self):
        path = self.server.dir / "record/hooks.log"
        return path.read_text() if path.exists() else ""

    def test_starttls_then_login_relays_and_plugins_see_tls_and_user(self):
        s = smtplib.SMTP("localhost", self.server.ports["submission"], local_hostname="py.test", timeout=30)
        with s:
            s.ehlo()
            self.assertTrue(s.has_extn("starttls"))
            self.assertFalse(s.has_extn("auth"), "no AUTH before TLS off loopback")
            s.starttls(context=self.context())
            s.ehlo()
            self.assertFalse(s.has_extn("starttls"), "STARTTLS is not offered twice")
            self.assertIn("PLAIN", s.esmtp_features["auth"])
            self.assertIn("LOGIN", s.esmtp_features["auth"])
            self.assertEqual(s.sock.version(), "TLSv1.3")
            code, _ = s.login("alice", PASSWORD)
            self.assertEqual(code, 235)
            self.assertEqual(s.mail("alice@example.com")[0], 250)
            self.assertEqual(s.rcpt("friend@remote.test")[0], 250, "an authenticated client relays")
            self.assertEqual(s.rcpt("bob@example.com")[0], 250)
            s.rset()
        self.assertIn("mail <alice@example.com> tls=TLSv1.3 sni=localhost auth=alice relaying=true", self.recorded())

    def test_starttls_on_mx_delivers_with_a_trace_header(self):
        before = len(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.ports["mx"], local_hostname="py.test", timeout=30) as s:
            s.starttls(context=self.context())
            refused = s.sendmail("someone@remote.test", ["carol@example.com"], b"Subject: tls\r\n\r\nover TLS\r\n")
        self.assertEqual(refused, {})
        files = self.server.maildir()
        self.assertEqual(len(files), before + 1)
        stored = max(files, key=lambda p: p.stat().st_mtime).read_bytes()
        self.assertIn(b"\r\n\t(using TLSv1.3 with cipher ", stored)
        self.assertIn(b" (Waraka) with ESMTPS id ", stored)

    def test_relayed_mail_goes_to_the_outbound_queue(self):
        # Relaying sessions hand mail to queue-outbound, whose default is the
        # host's durable queue (delivery itself: test_outbound.py).
        with self.submission() as s:
            s.login("alice", PASSWORD)
            self.assertEqual(s.sendmail("alice@example.com", ["friend@remote.test"], b"Subject: out\r\n\r\nx\r\n"), {})
        listing = subprocess.run([BIN, "queue", "--config", str(self.server.dir), "list"],
                                 capture_output=True, text=True, check=True).stdout
        self.assertIn("friend@remote.test", listing)

    def test_submission_requires_auth_before_mail(self):
        with self.submission() as s:
            code, text = s.mail("alice@example.com")
        self.assertEqual((code, text), (530, b"5.7.0 Authentication required"))

    def test_auth_before_tls_is_refused_off_loopback(self):
        with smtplib.SMTP("127.0.0.1", self.server.ports["submission"], local_hostname="py.test", timeout=30) as s:
            s.ehlo()
            code, text = s.docmd("AUTH", "PLAIN " + b64(f"\0alice\0{PASSWORD}"))
        self.assertEqual(code, 538)
        self.assertTrue(text.startswith(b"5.7.11"), text)

    def test_auth_twice_and_cleartext_entries(self):
        with self.submission() as s:
            code, _ = s.docmd("AUTH", "PLAIN " + b64("\0bob\0secret"))
            self.assertEqual(code, 535, "a plain: entry is refused unless allow_cleartext")
            self.assertEqual(s.docmd("AUTH", "PLAIN " + b64(f"\0alice\0{PASSWORD}"))[0], 235)
            code, text = s.docmd("AUTH", "PLAIN " + b64(f"\0alice\0{PASSWORD}"))
        self.assertEqual((code, text[:5]), (503, b"5.5.1"))

    def test_wrong_passwords_are_delayed_then_disconnected(self):
        with self.submission() as s:
            wrong = "PLAIN " + b64("\0alice\0wrong")
            self.assertEqual(s.docmd("AUTH", wrong), (535, b"5.7.8 Authentication credentials invalid"))
            started = time.monotonic()
            self.assertEqual(s.docmd("AUTH", wrong)[0], 535)
            self.assertGreaterEqual(time.monotonic() - started, 2 * FAILURE_DELAY, "the delay grows")
            code, text = s.docmd("AUTH", wrong)
            self.assertEqual((code, text[:5]), (421, b"4.7.0"))
            with self.assertRaises(smtplib.SMTPServerDisconnected):
                s.noop()
        self.server.wait_for_log(r"authentication failed.*failures=3")

    def test_command_pipelined_after_starttls_is_never_executed_inside_tls(self):
        with socket.create_connection(("127.0.0.1", self.server.ports["submission"]), timeout=10) as raw:
            reader = raw.makefile("rb")
            self.assertTrue(reader.readline().startswith(b"220 "))
            raw.sendall(b"EHLO py.test\r\n")
            while not reader.readline().startswith(b"250 "):
                pass
            raw.sendall(b"STARTTLS\r\nMAIL FROM:<evil@remote.test>\r\n")
            # STARTTLS must end a pipelined group (RFC 2920): the server
            # refuses and closes instead of starting TLS with input queued.
            self.assertEqual(reader.readline(), b"554 5.5.0 Error: SMTP protocol synchronization\r\n")
            self.assertEqual(reader.readline(), b"", "closed, no TLS handshake")

    def test_implicit_tls_on_the_submissions_port(self):
        with smtplib.SMTP_SSL("127.0.0.1", self.server.ports["submissions"], local_hostname="py.test",
                              context=self.context(), timeout=30) as s:
            s.ehlo()
            self.assertEqual(s.sock.version(), "TLSv1.3")
            self.assertFalse(s.has_extn("starttls"))
            self.assertTrue(s.has_extn("auth"))
            self.assertEqual(s.mail("alice@example.com")[0], 530)
            self.assertEqual(s.login("alice", PASSWORD)[0], 235)
            self.assertEqual(s.mail("alice@example.com")[0], 250)
            self.assertEqual(s.rcpt("friend@remote.test")[0], 250)

    def test_tls_1_1_is_refused(self):
        ctx = self.context()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        except (ValueError, ssl.SSLError):
            self.skipTest("this OpenSSL cannot offer TLS 1.1")
        with smtplib.SMTP("127.0.0.1", self.server.ports["submission"], local_hostname="py.test", timeout=30) as s:
            s.ehlo()
            with self.assertRaises((ssl.SSLError, OSError)):
                s.starttls(context=ctx)

    def test_swaks_starttls_and_implicit_tls_with_auth(self):
        for port, mode in [(self.server.ports["submission"], "--tls"), (self.server.ports["submissions"], "--tlsc")]:
            out = subprocess.run(
                ["swaks", "--server", f"127.0.0.1:{port}", mode, "--tls-verify", "--tls-ca-path", str(self.cert),
                 "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", PASSWORD,
                 "--from", "alice@example.com", "--to", "erin@remote.test", "--helo", "swaks.test",
                 "--quit-after", "RCPT"],
                capture_output=True, text=True, timeout=60,
            )
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            self.assertIn("<~  235 2.7.0", out.stdout)
            self.assertIn("<~  250 2.1.5 Recipient <erin@remote.test> OK", out.stdout)

    def served(self, name):
        """The certificate the mx listener presents to a client that asks for
        `name` (SNI; an address sends none)."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", self.server.ports["mx"], local_hostname="py.test", timeout=30) as s:
            s._host = name  # what starttls sends as the server name
            s.starttls(context=ctx)
            return s.sock.getpeercert(binary_form=True)

    def test_the_certificate_is_chosen_by_the_server_name_asked_for(self):
        tls = self.server.dir / "config/tls"
        self.assertEqual(self.served("mail.b.test"), der(tls / "b/cert.pem"))
        self.assertEqual(self.served("imap.c.test"), der(tls / "c/cert.pem"), "by its wildcard name")
        for other in ["127.0.0.1", "mail.d.test", "a.b.c.test", "b.test"]:
            self.assertEqual(self.served(other), der(self.cert), f"{other}: the default certificate")
        with smtplib.SMTP("127.0.0.1", self.server.ports["submission"], local_hostname="py.test", timeout=30) as s:
            s._host = "mail.b.test"
            s.starttls(context=self.context(tls / "b/ca.pem"))
            self.assertEqual(s.ehlo()[0], 250, "a client that verifies the name it asked for")

    def test_a_certificate_whose_key_does_not_match_stops_the_start(self):
        def setup(server):
            tls = server.dir / "config/tls"
            tls.mkdir(parents=True)
            make_cert(tls / "cert.pem", tls / "key.pem", "default")
            make_cert(tls / "b.pem", tls / "b.key", "b")
            server.edit("waraka.toml", lambda t: t + '\n[tls]\ncert = "config/tls/cert.pem"\nkey = "config/tls/key.pem"\n'
                        '[[tls.sni]]\ncert = "config/tls/b.pem"\nkey = "config/tls/key.pem"\n')

        with self.assertRaises(RuntimeError) as cm:
            Waraka(["rcpt_to.in_host_list"], setup=setup)
        self.assertRegex(str(cm.exception), r"the certificate \S+/b\.pem and key \S+/key\.pem do not match")

    def test_certificate_reload_while_a_client_stays_connected(self):
        old = der(self.cert)
        early = smtplib.SMTP("127.0.0.1", self.server.ports["mx"], local_hostname="py.test", timeout=30)
        early.starttls(context=self.context())
        self.assertEqual(early.sock.getpeercert(binary_form=True), old)
        fresh = self.server.dir / "fresh"
        fresh.mkdir()
        make_cert(fresh / "cert.pem", fresh / "key.pem", "second")
        new_ca = self.server.dir / "second-ca.pem"
        shutil.copy(fresh / "cert.pem", new_ca)
        os.replace(fresh / "cert.pem", self.cert)
        os.replace(fresh / "key.pem", self.cert.parent / "key.pem")
        s = smtplib.SMTP("127.0.0.1", self.server.ports["submission"], local_hostname="py.test", timeout=30)
        with s:
            s.starttls(context=self.context(new_ca))
            self.assertEqual(s.sock.getpeercert(binary_form=True), der(new_ca), "new handshakes use the new pair")
        self.server.wait_for_log(r"TLS certificate reloaded")
        before = len(self.server.maildir())
        with early:
            refused = early.sendmail("someone@remote.test", ["frank@example.com"], b"Subject: early\r\n\r\nx\r\n")
        self.assertEqual(refused, {}, "the connection that started on the old certificate finishes")
        self.assertEqual(len(self.server.maildir()), before + 1)


class CertificateExpiryTest(unittest.TestCase):
    def test_each_certificates_expiry_is_a_gauge_that_follows_a_renewal(self):
        metrics = free_port()

        def setup(server):
            enable_tls(server, "expiring")
            server.enable_metrics(metrics)

        server = Waraka(["rcpt_to.in_host_list"], setup=setup)
        self.addCleanup(server.stop)
        cert = server.dir / "config/tls/cert.pem"
        name = f'waraka_tls_certificate_expiry_timestamp_seconds{{cert="{cert}"}}'
        self.assertAlmostEqual(prometheus(metrics)[name], time.time() + 2 * 86400, delta=3600)
        fresh = server.dir / "fresh"
        fresh.mkdir()
        make_cert(fresh / "cert.pem", fresh / "key.pem", "renewed", days=90)
        os.replace(fresh / "key.pem", cert.parent / "key.pem")
        os.replace(fresh / "cert.pem", cert)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="py.test", timeout=30) as s:
            s.starttls(context=context)  # the next handshake reads the files again
        self.assertAlmostEqual(prometheus(metrics)[name], time.time() + 90 * 86400, delta=3600)


class TlsaTest(unittest.TestCase):
    def test_the_records_are_the_keys_openssl_sees(self):
        def spki_sha256(pem):
            public = subprocess.run(["openssl", "x509", "-in", str(pem), "-pubkey", "-noout"], capture_output=True,
                                    check=True).stdout
            der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=public, capture_output=True,
                                 check=True).stdout
            return hashlib.sha256(der).hexdigest()

        with tempfile.TemporaryDirectory() as tmp:
            ca, cert, key = make_ca(tmp, ["mx.example.test"])
            instance = pathlib.Path(tmp) / "i"
            subprocess.run([BIN, "init", str(instance)], check=True, capture_output=True)
            (instance / "chain.pem").write_bytes(cert.read_bytes() + ca.read_bytes())
            config = instance / "waraka.toml"
            config.write_text(config.read_text() + f'\n[tls]\ncert = "chain.pem"\nkey = "{key}"\n')
            done = subprocess.run([BIN, "tlsa", "--config", str(instance)], capture_output=True, text=True,
                                  timeout=60)
            self.assertEqual(done.returncode, 0, done.stderr)
            records = [line for line in done.stdout.splitlines() if not line.startswith(";")]
            self.assertEqual(records, [f"_25._tcp.mx.example.test. IN TLSA 3 1 1 {spki_sha256(cert)}",
                                       f"_25._tcp.mx.example.test. IN TLSA 2 1 1 {spki_sha256(ca)}"])


class AuthLockoutTest(unittest.TestCase):
    """Password guessing spread over connections and servers: two waraka
    processes count refused AUTH attempts in one real Redis."""

    @classmethod
    def setUpClass(cls):
        cls.redis = redis()
        cls.addClassCleanup(cls.redis.stop)

        def setup(server):
            flat_file_users(server, {"bob": "secret", "carol": "pw2"})
            server.edit("waraka.toml", lambda t: t.replace(
                '# auth_failure_delay = "1s"', 'auth_failure_delay = "10ms"') + (
                f'\n[kv.shared]\nbackend = "redis"\nurl = "redis://127.0.0.1:{cls.redis.port}/0"\n'))
            server.edit("waraka.toml", lambda t: t.replace(
                "[smtp]\n", '[smtp]\nauth_lockout_failures = 3\nauth_lockout_period = "1h"\n'
                'auth_lockout_store = "shared"\n', 1))

        cls.metrics = free_port()

        def first_setup(server):
            setup(server)
            server.enable_metrics(cls.metrics)

        cls.servers = [stopped_after_class(cls, Waraka(["auth/flat_file", "rcpt_to.in_host_list", "queue/maildir"],
                                                       setup=chosen)) for chosen in (first_setup, setup)]

    def auth(self, server, client, user, password):
        """AUTH PLAIN from the address `client`: the reply's code and text."""
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30,
                          source_address=(client, 0)) as s:
            s.ehlo()
            return s.docmd("AUTH", "PLAIN " + b64(f"\0{user}\0{password}"))

    def test_refused_attempts_lock_out_the_address_and_the_user_on_every_server(self):
        a, b = self.servers
        codes = [self.auth(server, "127.0.0.6", "bob", "wrong")[0] for server in (a, b, a)]
        self.assertEqual(codes, [535, 535, 535], "one connection each, alternating servers")
        locked = (454, b"4.7.0 Too many authentication failures, try later")
        self.assertEqual(self.auth(b, "127.0.0.6", "carol", "pw2"), locked, "the address, even with a right password")
        self.assertEqual(self.auth(a, "127.0.0.7", "BOB", "secret"), locked, "the user, from another address")
        self.assertEqual(self.auth(b, "127.0.0.7", "carol", "pw2")[0], 235, "neither locked")
        a.wait_for_log(r"AUTH refused: too many authentication failures from this address or for this user")
        counts = prometheus(self.metrics)
        self.assertEqual([counts.get(f'waraka_auth_attempts_total{{result="{result}"}}') for result in
                          ("refused", "locked", "success")], [2, 1, None], "server a's own attempts")


class RelayTest(unittest.TestCase):
    """No open relay on the mx listener for an unauthenticated, untrusted client."""

    @classmethod
    def setUpClass(cls):
        cls.server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"])

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def rcpt(self, path):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="py.test", timeout=30) as s:
            s.ehlo()
            s.mail("someone@remote.test")
            return s.docmd("RCPT", f"TO:{path}")

    def test_every_form_of_a_remote_recipient_is_refused(self):
        for path in [
            "<bob@remote.test>",
            "<bob@REMOTE.TEST>",
            "<@example.com:bob@remote.test>",
            "<@example.com,@mx.example.com:bob@remote.test>",
            "<bob%example.com@remote.test>",
            '<"bob@example.com"@remote.test>',
            "<example.com!bob@remote.test>",
            "<bob@[192.0.2.1]>",
            "<bob@[127.0.0.1]>",
            "<bob@[IPv6:::1]>",
        ]:
            with self.subTest(path=path):
                code, text = self.rcpt(path)
                self.assertEqual(code, 554, text)
                self.assertEqual(text, b"5.7.1 Relay access denied")

    def test_addresses_without_a_domain_are_not_a_way_out(self):
        for path in ["<remote.test!bob>", "<bob%remote.test>", '<"bob@remote.test">']:
            with self.subTest(path=path):
                code, text = self.rcpt(path)
                self.assertGreaterEqual(code, 500, text)
        self.assertEqual(self.rcpt("<postmaster>")[0], 250)

    def test_relay_tricks_at_a_local_domain_are_delivered_locally(self):
        before = len(self.server.maildir())
        recipients = ["bob%remote.test@example.com", "remote.test!bob@example.com", '"bob@remote.test"@example.com']
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="py.test", timeout=30) as s:
            refused = s.sendmail("someone@remote.test", recipients, b"Subject: tricks\r\n\r\nx\r\n")
        self.assertEqual(refused, {})
        files = self.server.maildir()
        self.assertEqual(len(files), before + 3)
        self.assertTrue(all(f.relative_to(self.server.dir / "maildir").parts[0] == "example.com" for f in files))


class RelayAclTest(unittest.TestCase):
    """Clients in relay.acl_allow relay without AUTH."""

    @classmethod
    def setUpClass(cls):
        cls.server = Waraka(
            ["relay", "rcpt_to.in_host_list", "queue/maildir"],
            setup=lambda s: s.edit("config/relay.acl_allow", lambda t: t + "127.0.0.0/8\n"),
        )

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_a_trusted_range_relays(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="py.test", timeout=30) as s:
            s.ehlo()
            s.mail("app@example.com")
            self.assertEqual(s.rcpt("customer@remote.test")[0], 250)
        self.server.wait_for_log(r"127\.0\.0\.1 may relay \(relay\.acl_allow: 127\.0\.0\.0/8\)")


if __name__ == "__main__":
    unittest.main()


class ClientCertificateTest(unittest.TestCase):
    """`[tls] ask_client_cert` and `relay.clientcerts`: a client whose
    certificate's fingerprint is listed relays, as with Postfix's
    `relay_clientcerts`; others, with a certificate or without, do not."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.tmp.cleanup)
        cls.certs = pathlib.Path(cls.tmp.name)
        for name in ("trusted", "stranger"):
            make_cert(cls.certs / f"{name}.pem", cls.certs / f"{name}-key.pem", f"{name}.client.test")
        digest = hashlib.sha256(der(cls.certs / "trusted.pem")).hexdigest().upper()
        fingerprint = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))

        def setup(server):
            enable_tls(server, "mx.test")
            server.edit("waraka.toml", lambda t: t.replace(
                '[tls]\n', '[tls]\nask_client_cert = true\n') + '\n[outbound]\nsmarthost = { host = "127.0.0.1", port = 1 }\n')
            server.edit("config/relay.clientcerts", lambda t: t + f"SHA256 Fingerprint={fingerprint}  # the backup MX\n")

        cls.server = stopped_after_class(cls, Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"], setup=setup))

    def relay_reply(self, certificate=None):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if certificate:
            context.load_cert_chain(self.certs / f"{certificate}.pem", self.certs / f"{certificate}-key.pem")
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.starttls(context=context)
            s.ehlo()
            s.mail("a@client.test")
            code, text = s.rcpt("someone@remote.test")
            return code, text.decode()

    def test_a_listed_certificate_relays(self):
        self.assertEqual(self.relay_reply("trusted")[0], 250)
        self.server.wait_for_log(r"may relay \(relay\.clientcerts: [0-9A-F]{2}(:[0-9A-F]{2}){31}\)")

    def test_other_clients_do_not(self):
        self.assertEqual(self.relay_reply("stranger"), (554, "5.7.1 Relay access denied"))
        self.assertEqual(self.relay_reply(), (554, "5.7.1 Relay access denied"), "no certificate is no error")


class NoTlsHostsTest(unittest.TestCase):
    """`[tls] no_tls_hosts`: clients whose TLS is broken are not offered STARTTLS."""

    @classmethod
    def setUpClass(cls):
        def setup(server):
            enable_tls(server, "mx.test")
            server.edit("waraka.toml", lambda t: t.replace('[tls]\n', '[tls]\nno_tls_hosts = ["127.0.0.3", "127.0.1.0/24"]\n'))

        cls.server = stopped_after_class(cls, Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=setup))

    def ehlo_from(self, ip):
        s = smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30, source_address=(ip, 0))
        self.addCleanup(s.close)
        s.ehlo()
        return s

    def test_listed_clients_are_not_offered_starttls(self):
        for ip in ("127.0.0.3", "127.0.1.9"):
            s = self.ehlo_from(ip)
            self.assertFalse(s.has_extn("starttls"), ip)
            self.assertEqual(s.docmd("STARTTLS"), (502, b"5.5.1 STARTTLS not available"), ip)
        self.assertTrue(self.ehlo_from("127.0.0.4").has_extn("starttls"))
