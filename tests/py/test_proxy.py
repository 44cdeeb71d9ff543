"""Listeners behind a load balancer, end to end: a real waraka whose mx
listener takes HAProxy's PROXY protocol (v1 text, v2 binary) from a trusted
balancer; smtplib stands behind the balancer, sending the header first. The
client the header names is the one limits, policy, logs and Received: see.
The same for Postfix's XCLIENT from a trusted front end.
"""

import socket
import smtplib
import struct
import subprocess
import time
import unittest

from harness import Waraka, greeting_of, nginx_mail_proxy

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(client, port=40000):
    return f"PROXY TCP4 {client} 192.0.2.1 {port} 25\r\n".encode()


def v2(client, port=40000, local=False):
    if local:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    addresses = socket.inet_aton(client) + socket.inet_aton("192.0.2.1") + struct.pack("!HH", port, 25)
    # A TLV (type 0x04, NOOP) after the addresses, as balancers may add.
    tlv = bytes([0x04]) + struct.pack("!H", 2) + b"xx"
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses) + len(tlv)) + addresses + tlv


class Proxied(smtplib.SMTP):
    """smtplib behind a balancer: the PROXY header goes first on the socket."""

    def __init__(self, header, port, split=False):
        self.header = header
        self.split = split
        super().__init__("127.0.0.1", port, local_hostname="client.test", timeout=30)

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout)
        if self.split:
            sock.sendall(self.header[:9])
            time.sleep(0.2)
            sock.sendall(self.header[9:])
        else:
            sock.sendall(self.header)
        return sock


def behind_balancer(server):
    """The instance's only mx listener takes PROXY headers from loopback
    balancers (start it with `configured_listeners=True`)."""
    server.edit("waraka.toml", lambda t: t.replace('listen = ["127.0.0.1:2525"]', "listen = []") + (
        '\n[[listener]]\naddress = "127.0.0.1:0"\nrole = "mx"\nproxy_from = ["127.0.0.0/8"]\n'))


def proxied_greeting(server, client):
    """The greeting code and text the client `client` gets through the
    balancer (see `greeting_of`)."""
    return greeting_of(lambda: Proxied(v1(client), server.port))


def setup(server):
    behind_balancer(server)
    server.edit("waraka.toml", lambda t: t.replace("max_connections_per_ip = 100", "max_connections_per_ip = 2") + (
        '\n[[listener]]\naddress = "127.0.0.1:0"\nrole = "submission"\nproxy_from = ["10.0.0.0/8"]\n'))
    server.edit("config/relay.acl_allow", lambda t: t + "203.0.113.7\n")


class ProxyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"], roles=("mx", "submission"),
                            setup=setup, configured_listeners=True)
        cls.addClassCleanup(cls.server.stop)

    def deliver(self, header, subject, split=False):
        before = set(self.server.maildir())
        with Proxied(header, self.server.port, split) as s:
            refused = s.sendmail("a@sender.test", ["rcpt@example.com"], f"Subject: {subject}\r\n\r\nhi\r\n")
        self.assertEqual(refused, {})
        added = [p.read_bytes() for p in self.server.maildir() if p not in before]
        self.assertEqual(len(added), 1)
        return added[0]

    def test_the_header_names_the_client_in_received_and_the_log(self):
        stored = self.deliver(v1("198.51.100.9"), "v1")
        self.assertIn(b"([198.51.100.9])", stored.split(b"\r\n\r\n")[0])
        self.server.wait_for_log(r"connected peer=198\.51\.100\.9:40000")
        self.server.wait_for_log(r'PROXY protocol header read client=198\.51\.100\.9:40000 balancer=127\.0\.0\.1:')
        stored = self.deliver(v2("198.51.100.10", port=40001), "v2")
        self.assertIn(b"([198.51.100.10])", stored)
        stored = self.deliver(v1("198.51.100.11"), "split", split=True)
        self.assertIn(b"([198.51.100.11])", stored)

    def test_a_health_check_header_keeps_the_balancers_address(self):
        stored = self.deliver(v2(None, local=True), "local")
        self.assertIn(b"([127.0.0.1])", stored)
        stored = self.deliver(b"PROXY UNKNOWN\r\n", "unknown")
        self.assertIn(b"([127.0.0.1])", stored)

    def test_relaying_is_decided_for_the_client_the_header_names(self):
        with Proxied(v1("203.0.113.7"), self.server.port) as s:
            s.ehlo()
            self.assertEqual(s.mail("a@example.com")[0], 250)
            self.assertEqual(s.rcpt("someone@elsewhere.test")[0], 250, "203.0.113.7 may relay")
        with Proxied(v1("198.51.100.20"), self.server.port) as s:
            s.ehlo()
            s.mail("a@example.com")
            self.assertEqual(s.rcpt("someone@elsewhere.test"), (554, b"5.7.1 Relay access denied"),
                             "the balancer's 127.0.0.1 is not what is asked")

    def test_per_client_limits_count_the_named_client(self):
        held = [Proxied(v1("192.0.2.50", port=41000 + i), self.server.port) for i in range(2)]
        try:
            with self.assertRaises(smtplib.SMTPConnectError) as refused:
                Proxied(v1("192.0.2.50", port=41009), self.server.port)
            self.assertEqual(refused.exception.smtp_code, 421)
            with Proxied(v1("192.0.2.51"), self.server.port) as other:
                self.assertEqual(other.noop()[0], 250, "another client behind the same balancer gets in")
        finally:
            for s in held:
                s.close()

    def raw(self, port, data):
        """What the server sends back to `data` until it closes (or resets,
        as it does when it closes with the client's bytes unread)."""
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            sock.sendall(data)
            received = b""
            try:
                while chunk := sock.recv(4096):
                    received += chunk
            except ConnectionResetError:
                pass
            return received

    def test_a_missing_or_broken_header_or_an_untrusted_balancer_is_closed_unanswered(self):
        self.assertEqual(self.raw(self.server.port, b"EHLO client.test\r\n"), b"")
        self.server.wait_for_log(r"connection closed: no valid PROXY protocol header")
        self.assertEqual(self.raw(self.server.port, b"PROXY TCP4 999.1.1.1 192.0.2.1 1 25\r\n"), b"")
        self.assertEqual(self.raw(self.server.ports["submission"], v1("198.51.100.9")), b"")
        self.server.wait_for_log(r"connection closed: 127\.0\.0\.1 is not a trusted proxy \(proxy_from\)")


def front_ends(server):
    """An mx listener that takes XCLIENT from loopback front ends, and a
    submission listener, with a name of its own, that takes it from no one."""
    server.edit("waraka.toml", lambda t: t.replace('listen = ["127.0.0.1:2525"]', "listen = []").replace(
        '# hostname = "mx.example.com"', 'hostname = "mx.front.test"') + (
        '\n[[listener]]\naddress = "127.0.0.1:0"\nrole = "mx"\nxclient_from = ["127.0.0.0/8"]\n'
        '\n[[listener]]\naddress = "127.0.0.1:0"\nrole = "submission"\nhostname = "smtp.front.test"\n'))
    server.edit("config/relay.acl_allow", lambda t: t + "203.0.113.7\n")


class XclientTest(unittest.TestCase):
    """Postfix's XCLIENT from a trusted front end (nginx's mail proxy sends
    it): swaks and smtplib name a client, which relaying, the Received:
    field and the logs then see."""

    @classmethod
    def setUpClass(cls):
        cls.server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"], roles=("mx", "submission"),
                            setup=front_ends, configured_listeners=True)
        cls.addClassCleanup(cls.server.stop)

    def xclient(self, attributes):
        """An smtplib session greeted again after `XCLIENT attributes`."""
        s = smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="front.test", timeout=30)
        code, text = s.ehlo()
        self.assertIn(b"XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT", text)
        self.assertEqual(s.docmd("XCLIENT", attributes)[0], 220)
        s.ehlo("client.test")
        return s

    def test_swaks_delivers_as_the_client_it_names(self):
        before = set(self.server.maildir())
        done = subprocess.run(["swaks", "--server", f"127.0.0.1:{self.server.port}", "--from", "a@sender.test",
                               "--to", "rcpt@example.com", "--helo", "front.test",
                               "--xclient", "ADDR=198.51.100.9 PORT=40123 NAME=client.example HELO=client.example",
                               "--header", "Subject: xclient"], capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("<-  220 ", done.stdout.split("XCLIENT")[-1], "greeted again after XCLIENT")
        (stored,) = [p.read_bytes() for p in self.server.maildir() if p not in before]
        self.assertIn(b"([198.51.100.9])\r\n\tby mx.front.test (Waraka)", stored.split(b"\r\n\r\n")[0])
        self.server.wait_for_log(r"XCLIENT: serving the client the front end names client=198\.51\.100\.9:40123 "
                                 r"front=127\.0\.0\.1:\d+ name=client\.example login=-")

    def test_relaying_is_decided_for_the_named_client(self):
        with self.xclient("ADDR=203.0.113.7") as s:
            s.mail("a@example.com")
            self.assertEqual(s.rcpt("someone@elsewhere.test")[0], 250, "203.0.113.7 may relay")
        with self.xclient("ADDR=198.51.100.20") as s:
            s.mail("a@example.com")
            self.assertEqual(s.rcpt("someone@elsewhere.test"), (554, b"5.7.1 Relay access denied"))
        with self.xclient("ADDR=198.51.100.20 LOGIN=alice") as s:
            s.mail("a@example.com")
            self.assertEqual(s.rcpt("someone@elsewhere.test")[0], 250, "the front end authenticated alice")
            self.assertEqual(s.docmd("XCLIENT", "ADDR=203.0.113.7"), (550, b"5.7.0 Error: insufficient authorization"),
                             "once per connection")

    def test_through_nginx_mail_proxy(self):
        """nginx's mail proxy in front: it greets the client, asks its
        auth_http, then replays the session to waraka after XCLIENT."""
        front = nginx_mail_proxy(self.server.port, {}, smtp_auth="none")
        self.addCleanup(front.stop)
        before = set(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", front.port, local_hostname="client.test", timeout=30) as s:
            self.assertIn(b"front.test", s.ehlo()[1])
            refused = s.sendmail("a@sender.test", ["rcpt@example.com"], "Subject: via nginx\r\n\r\nhi\r\n")
        self.assertEqual(refused, {})
        (stored,) = [p.read_bytes() for p in self.server.maildir() if p not in before]
        self.assertIn(b"Received: from client.test ([127.0.0.1])", stored, "the client's own EHLO name")
        self.server.wait_for_log(r"XCLIENT: serving the client the front end names client=127\.0\.0\.1:\d+ "
                                 r"front=127\.0\.0\.1:\d+ name=\S+ login=-")

    def test_nginx_authenticates_submission_and_waraka_relays_for_the_user(self):
        front = nginx_mail_proxy(self.server.port, {"alice": "secret"}, smtp_auth="plain login")
        self.addCleanup(front.stop)
        with smtplib.SMTP("127.0.0.1", front.port, local_hostname="laptop.test", timeout=30) as s:
            s.ehlo()
            with self.assertRaises(smtplib.SMTPAuthenticationError):
                s.login("alice", "wrong")
            s.login("alice", "secret")
            s.mail("alice@example.com")
            self.assertEqual(s.rcpt("friend@elsewhere.test")[0], 250, "relayed as alice, whom nginx authenticated")
        self.server.wait_for_log(r"XCLIENT: serving the client the front end names client=127\.0\.0\.1:\d+ "
                                 r"front=127\.0\.0\.1:\d+ name=\S+ login=alice")

    def test_each_listener_answers_with_its_own_name(self):
        for port, name in [(self.server.ports["submission"], b"smtp.front.test"), (self.server.port, b"mx.front.test")]:
            s = smtplib.SMTP(timeout=30)
            code, greeting = s.connect("127.0.0.1", port)
            self.assertEqual((code, greeting.split()[0]), (220, name))
            self.assertEqual(s.ehlo()[1].split()[0], name)
            self.assertEqual(s.quit(), (221, b"2.0.0 " + name + b" closing connection"))

    def test_bad_attributes_and_untrusted_clients_are_refused(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, timeout=30) as s:
            s.ehlo()
            self.assertEqual(s.docmd("XCLIENT", "ADDR=300.1.1.1"), (501, b"5.5.4 Bad XCLIENT ADDR syntax: 300.1.1.1"))
            s.mail("a@example.com")
            self.assertEqual(s.docmd("XCLIENT", "ADDR=192.0.2.1")[0], 503)
        with smtplib.SMTP("127.0.0.1", self.server.ports["submission"], timeout=30) as s:
            self.assertNotIn(b"XCLIENT", s.ehlo()[1])
            self.assertEqual(s.docmd("XCLIENT", "LOGIN=alice"), (550, b"5.7.0 Error: insufficient authorization"))
            self.assertEqual(s.docmd("MAIL", "FROM:<a@example.com>")[0], 530, "still not authenticated")


if __name__ == "__main__":
    unittest.main()
