"""`[acme]` end to end against Let's Encrypt's test CA (Debian's pebble,
started here): a server without a certificate orders one at start,
answering the HTTP-01 challenge that pebble fetches from the name it
resolves through the test's DNS, and offers it to STARTTLS; a valid one is
kept at the next start, one about to expire is replaced, and a CA that
cannot be reached stops a server that has none."""

import base64
import os
import pathlib
import smtplib
import ssl
import subprocess
import tempfile
import unittest

from harness import BIN, Knot, Waraka, dnsmasq, free_port, make_ca, make_cert, pebble, stopped_after_class, wait_until

NAME = "mx.acme.test"


def presented_certificate(server):
    """Issuer and subjectAltName of the certificate STARTTLS shows."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
        s.starttls(context=context)
        der = s.sock.getpeercert(binary_form=True)
    shown = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-issuer", "-ext", "subjectAltName"],
                           input=der, capture_output=True, check=True).stdout.decode()
    return shown


class AcmeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.tmp.cleanup)
        cls.ca, cert, key = make_ca(cls.tmp.name, ["localhost"])
        cls.dns = stopped_after_class(cls, dnsmasq(["--local=/test/", f"--host-record={NAME},127.0.0.1"]))
        cls.http_port = free_port()
        cls.pebble = stopped_after_class(cls, pebble(cls.dns.port, cls.http_port, cert, key))

    def setup(self, directory=None, certificate=False, reuse_key=False):
        def setup(server):
            tls = server.dir / "config/tls"
            if certificate:
                tls.mkdir(parents=True)
                make_cert(tls / "cert.pem", tls / "key.pem", NAME)
            server.edit("waraka.toml", lambda t: t + (
                '\n[tls]\ncert = "config/tls/cert.pem"\nkey = "config/tls/key.pem"\n'
                f'\n[acme]\ndirectory = "{directory or self.pebble.directory}"\ncontact = ["postmaster@acme.test"]\n'
                f'domains = ["{NAME}"]\nhttp_listen = "127.0.0.1:{self.http_port}"\n'
                + ("reuse_key = true\n" if reuse_key else "")))
        return setup

    def server(self, **kwargs):
        return Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=self.setup(**kwargs),
                      env={"SSL_CERT_FILE": str(self.ca)})

    def test_a_server_without_a_certificate_orders_one_and_keeps_it(self):
        server = self.server()
        try:
            shown = presented_certificate(server)
            self.assertIn("Pebble", shown, "issued by the test CA")
            self.assertIn(f"DNS:{NAME}", shown)
            server.wait_for_log(r"ACME: certificate installed")
            account = server.dir / "queue/acme/account.json"
            self.assertEqual(oct(account.stat().st_mode & 0o777), "0o600")
            self.assertEqual(oct((server.dir / "config/tls/key.pem").stat().st_mode & 0o777), "0o600")
            issued = (server.dir / "config/tls/cert.pem").read_bytes()
            server.kill_and_restart()
            server.wait_for_log(r"ACME: certificate valid, not renewed")
            self.assertEqual((server.dir / "config/tls/cert.pem").read_bytes(), issued, "kept, not ordered again")
        finally:
            server.stop()

    def test_a_certificate_about_to_expire_is_replaced_at_start(self):
        server = self.server(certificate=True)
        try:
            server.wait_for_log(r"ACME: ordering a certificate")
            self.assertIn("Pebble", presented_certificate(server), "the two-day self-signed one was replaced")
        finally:
            server.stop()

    def test_a_renewal_keeps_the_key_when_asked(self):
        """`reuse_key`: the renewed certificate has the key of the one it
        replaces (a DANE 3 1 1 record stays true)."""
        server = self.server(reuse_key=True)
        try:
            tls = server.dir / "config/tls"
            key = (tls / "key.pem").read_bytes()
            # The ordered certificate made to expire tomorrow, with the same key.
            subprocess.run(["openssl", "req", "-x509", "-key", str(tls / "key.pem"), "-days", "1", "-subj",
                            f"/CN={NAME}", "-out", str(tls / "cert.pem")], check=True, capture_output=True)
            server.kill_and_restart()
            server.wait_for_log(r"ACME: certificate installed")
            self.assertIn("Pebble", presented_certificate(server), "renewed at start")
            self.assertEqual((tls / "key.pem").read_bytes(), key, "the same key")
            of_cert = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(tls / "cert.pem")],
                                     capture_output=True, check=True).stdout
            of_key = subprocess.run(["openssl", "pkey", "-pubout", "-in", str(tls / "key.pem")],
                                    capture_output=True, check=True).stdout
            self.assertEqual(of_cert, of_key, "the new certificate is for the kept key")
        finally:
            server.stop()

    def test_a_ca_that_cannot_be_reached_stops_a_server_without_a_certificate(self):
        dead = f"https://localhost:{free_port()}/dir"
        with tempfile.TemporaryDirectory() as tmp:
            instance = pathlib.Path(tmp) / "i"
            subprocess.run([BIN, "init", str(instance)], check=True, capture_output=True)

            class Dir:
                dir = instance

                def edit(self, relative, change):
                    path = instance / relative
                    path.write_text(change(path.read_text()))

            self.setup(directory=dead)(Dir())
            check = subprocess.run([BIN, "check", "--config", str(instance)], capture_output=True, text=True,
                                   timeout=60)
            self.assertEqual(check.returncode, 0, "a certificate still to order is no error for check: "
                             + check.stderr)
            done = subprocess.run([BIN, "run", "--config", str(instance), "--listen", f"127.0.0.1:{free_port()}"],
                                  capture_output=True, text=True, timeout=60,
                                  env={**os.environ, "SSL_CERT_FILE": str(self.ca)})
            self.assertNotEqual(done.returncode, 0)
            self.assertIn("ACME: no certificate for [tls]", done.stderr)


class DnsChallengeTest(unittest.TestCase):
    """DNS-01: the answers go into the zone by dynamic update, signed with a
    TSIG key, on a real Knot DNS that pebble asks; no port 80 anywhere."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.tmp.cleanup)
        cls.ca, cert, key = make_ca(cls.tmp.name, ["localhost"])
        cls.secret = base64.b64encode(os.urandom(32)).decode()
        cls.knot = stopped_after_class(cls, Knot({"acme.test": "mx A 127.0.0.1\n"}, signed=(),
                                                 update_key=("acme-key", cls.secret)))
        cls.pebble = stopped_after_class(cls, pebble(cls.knot.port, free_port(), cert, key))

    def server(self, secret):
        def setup(server):
            server.edit("waraka.toml", lambda t: t + (
                '\n[tls]\ncert = "config/tls/cert.pem"\nkey = "config/tls/key.pem"\n'
                f'\n[acme]\ndirectory = "{self.pebble.directory}"\ndomains = ["{NAME}"]\n'
                f'\n[acme.dns_update]\nserver = "127.0.0.1:{self.knot.port}"\nzone = "acme.test"\n'
                f'key_name = "acme-key"\nkey_secret = "{secret}"\n'))
        return Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=setup, env={"SSL_CERT_FILE": str(self.ca)})

    def challenge_records(self):
        return subprocess.run(self.knot.dig(f"_acme-challenge.{NAME}", "TXT"), capture_output=True,
                              text=True).stdout.strip()

    def test_a_certificate_is_ordered_by_updating_the_zone(self):
        server = self.server(self.secret)
        try:
            shown = presented_certificate(server)
            self.assertIn("Pebble", shown, "issued by the test CA, which found the TXT record")
            self.assertIn(f"DNS:{NAME}", shown)
            server.wait_for_log(r"ACME: DNS-01 answer put into the zone name=_acme-challenge\.mx\.acme\.test\.")
            wait_until(lambda: self.challenge_records() == "", what="the TXT record taken out again")
        finally:
            server.stop()

    def test_check_refuses_names_outside_the_zone_and_a_bad_key(self):
        for zone, secret, error in [("other.test", self.secret, "mx.acme.test is not in the zone other.test."),
                                    ("acme.test", "not base64!", "key_secret is not base64")]:
            with tempfile.TemporaryDirectory() as tmp:
                instance = pathlib.Path(tmp) / "i"
                subprocess.run([BIN, "init", str(instance)], check=True, capture_output=True)
                with open(instance / "waraka.toml", "a") as toml:
                    toml.write(f'\n[tls]\ncert = "c.pem"\nkey = "k.pem"\n\n[acme]\ndomains = ["{NAME}"]\n'
                               f'\n[acme.dns_update]\nserver = "127.0.0.1"\nzone = "{zone}"\n'
                               f'key_name = "acme-key"\nkey_secret = "{secret}"\n')
                check = subprocess.run([BIN, "check", "--config", str(instance)], capture_output=True, text=True,
                                       timeout=60)
                self.assertNotEqual(check.returncode, 0)
                self.assertIn(error, check.stderr)

    def test_an_update_with_the_wrong_key_is_refused_and_stops_the_start(self):
        wrong = base64.b64encode(os.urandom(32)).decode()
        with self.assertRaises(RuntimeError) as failed:
            self.server(wrong)
        self.assertRegex(str(failed.exception), r"refused the update of acme\.test\.: Not authorized")
        self.assertEqual(self.challenge_records(), "")


if __name__ == "__main__":
    unittest.main()
