"""uribl end to end: domain block lists served by a real dnsmasq (and a
forward to a dead server for DNS failures), clients speaking smtplib to a
real waraka; names from HELO, MAIL FROM, the address headers and the links
of encoded text parts."""

import base64
import smtplib
import socket
import struct
import threading
import unittest

from harness import Waraka, dnsmasq, free_port
from test_dns_plugins import dns_setup

RECORDS = [
    "--local=/test/",  # names not listed here are NXDOMAIN
    "--host-record=spam.test.dbl.test,127.0.1.2",
    "--txt-record=spam.test.dbl.test,Spam domain",
    "--host-record=surbl-listed.test.multi.test,127.0.0.64",
    "--host-record=refused.test.dbl.test,127.0.0.1",  # URIBL's "query refused"
    "--host-record=error.test.dbl.test,127.255.255.254",
]

REFUSAL = "5.7.1 spam.test is listed in dbl.test: Spam domain"


def mime_message(html, attachment=""):
    """A message whose HTML part (base64) holds `html`, with an optional text
    attachment."""
    encoded = base64.b64encode(html.encode()).decode()
    parts = [
        "--b\r\nContent-Type: text/plain\r\n\r\nHello.\r\n",
        f"--b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n",
    ]
    if attachment:
        parts.append("--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=links.txt\r\n\r\n"
                     f"{attachment}\r\n")
    return ("From: a@sender.test\r\nSubject: links\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/alternative; boundary=b\r\n\r\n" + "".join(parts) + "--b--\r\n").encode()


class UriblTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        dead = free_port()  # nothing answers there: lookups forwarded to it fail
        cls.dns = dnsmasq(RECORDS + [f"--server=/broken.test.dbl.test/127.0.0.1#{dead}"])

        def setup(server):
            dns_setup(cls.dns.port)(server)
            server.edit("config/uribl.ini", lambda t: t.replace("\nzones =\n", "\nzones = dbl.test, multi.test\n"))

        cls.server = Waraka(["uribl", "rcpt_to.in_host_list", "queue/maildir"], setup=setup)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.dns.stop()

    def test_a_listed_helo_name_is_refused_at_helo(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="mail.Spam.test", timeout=30) as s:
            self.assertEqual(s.ehlo(), (550, REFUSAL.encode()))
        self.server.wait_for_log(r"HELO name: spam\.test is listed in dbl\.test")

    def test_a_listed_sender_domain_is_refused_at_mail(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            self.assertEqual(s.mail("someone@www.spam.test"), (550, REFUSAL.encode()))
            self.assertEqual(s.mail("someone@clean.test")[0], 250, "the next transaction")

    def test_listed_links_in_the_decoded_text_are_refused_after_data(self):
        code, text, stored = self.server.deliver(mime_message('<a href="https://www.Spam.test/offer">win</a>'))
        self.assertEqual((code, text), (550, REFUSAL))
        self.assertEqual(stored, [])
        code, text, _ = self.server.deliver(mime_message("go to http://x.surbl-listed.test/now"))
        self.assertEqual((code, text), (550, "5.7.1 surbl-listed.test is listed in multi.test"))

    def test_a_listed_domain_in_reply_to_is_refused(self):
        raw = b"From: a@sender.test\r\nReply-To: Claims <claims@spam.test>\r\nSubject: x\r\n\r\nHi.\r\n"
        self.assertEqual(self.server.deliver(raw)[:2], (550, REFUSAL))

    def test_clean_refused_and_error_answers_and_attachments_let_mail_through(self):
        html = ('<a href="http://clean.test/">a</a> http://refused.test/ http://error.test/ http://192.0.2.1/ '
                "www.clean.test")
        code, _, stored = self.server.deliver(mime_message(html, attachment="http://spam.test/in-an-attachment"))
        self.assertEqual(code, 250)
        self.assertEqual(len(stored), 1)

    def test_reject_false_only_notes(self):
        self.server.set_settings("uribl.ini", reject="false")
        try:
            code, _, stored = self.server.deliver(mime_message("http://spam.test/"))
        finally:
            self.server.set_settings("uribl.ini", reject="true")
        self.assertEqual((code, len(stored)), (250, 1))

    def test_a_failed_lookup_is_ignored_unless_told_to_tempfail(self):
        raw = mime_message("http://broken.test/")
        self.assertEqual(self.server.deliver(raw)[0], 250)
        self.server.wait_for_log(r"message: look-up failed: broken\.test\.dbl\.test")
        self.server.set_settings("uribl.ini", on_error="tempfail")
        try:
            code, text, stored = self.server.deliver(raw)
        finally:
            self.server.set_settings("uribl.ini", on_error="continue")
        self.assertEqual((code, text, stored),
                         (451, "4.4.3 Cannot check the domains of this message now, try again later", []))
        self.assertEqual(self.server.deliver(mime_message("http://broken.test/ http://spam.test/"))[:2],
                         (550, REFUSAL), "a listing counts over a failure")


class BarrierDns:
    """A DNS server on UDP that holds the A queries for names starting with
    one of `held` until all of them have arrived, then answers them (a
    listing for names starting with `spam.`, NXDOMAIN for the others).
    Lookups made one after another never get their answer; only lookups
    made at the same time do. Every other query gets NXDOMAIN at once."""

    def __init__(self, held):
        self.held = held
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.waiting = {}
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @staticmethod
    def question(query):
        """The query's name, type and the end of its question section."""
        labels, at = [], 12
        while query[at]:
            labels.append(query[at + 1:at + 1 + query[at]].decode())
            at += 1 + query[at]
        qtype = struct.unpack("!H", query[at + 1:at + 3])[0]
        return ".".join(labels).lower(), qtype, at + 5

    @staticmethod
    def answer(query, end, address=None):
        flags = 0x8180 | (0 if address else 3)  # a response, recursion available; NXDOMAIN without an address
        header = query[:2] + struct.pack("!HHHHH", flags, 1, 1 if address else 0, 0, 0)
        record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(address) if address else b""
        return header + query[12:end] + record

    def serve(self):
        while True:
            try:
                query, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            name, qtype, end = self.question(query)
            if qtype != 1 or not any(name.startswith(prefix) for prefix in self.held):
                self.sock.sendto(self.answer(query, end), peer)
                continue
            self.waiting[name] = (query, end, peer)
            if all(any(n.startswith(prefix) for n in self.waiting) for prefix in self.held):
                for name, (query, end, peer) in self.waiting.items():
                    address = "127.0.1.2" if name.startswith("spam.") else None
                    self.sock.sendto(self.answer(query, end, address), peer)

    def stop(self):
        self.sock.close()


class ConcurrentLookupsTest(unittest.TestCase):
    """The lookups of one check go out at the same time: a DNS server that
    answers only once it has all of them still gets the message refused."""

    def test_all_the_lookups_of_a_message_are_in_flight_together(self):
        dns = BarrierDns(["one.test.", "two.test.", "spam.test."])
        self.addCleanup(dns.stop)

        def setup(server):
            dns_setup(dns.port)(server)
            server.edit("config/uribl.ini", lambda t: t.replace("\nzones =\n", "\nzones = dbl.test\n"))

        server = Waraka(["uribl", "rcpt_to.in_host_list", "queue/maildir"], setup=setup)
        self.addCleanup(server.stop)
        html = "http://www.one.test/ http://two.test/x http://spam.test/y"
        self.assertEqual(server.deliver(mime_message(html))[:2], (550, "5.7.1 spam.test is listed in dbl.test"))


if __name__ == "__main__":
    unittest.main()
