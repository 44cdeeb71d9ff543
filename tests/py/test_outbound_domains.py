"""Outbound delivery per destination domain, end to end: a domain's own
concurrency, rate and TLS policy (`[outbound.domains."DOMAIN"]`) against a
real receiver, and a domain whose server turns every session away (`421` at
the greeting) suspended until the failed attempt's retry, with its other
mail deferred without knocking (`[outbound] suspend_unreachable`)."""

import smtplib
import socketserver
import tempfile
import threading
import time
import unittest

from harness import SmtpReceiver, Waraka, dnsmasq, free_port, make_cert, prometheus, wait_until, waraka_queue
from test_outbound import message, queue_entries, relay_setup

RECORDS = [
    "--local=/test/",
    "--mx-host=slow.test,mx.slow.test,10",
    "--mx-host=fast.test,mx.slow.test,10",
    "--mx-host=strict.test,mx.slow.test,10",
    "--host-record=mx.slow.test,127.0.0.21",
    "--mx-host=busy.test,mx.busy.test,10",
    "--host-record=mx.busy.test,127.0.0.22",
    "--mx-host=plain.test,mx.tls.test,10",
    "--mx-host=any.test,mx.tls.test,10",
    "--host-record=mx.tls.test,127.0.0.23",
]


class BusyServer:
    """A server that greets every session with `421` and hangs up, counting them."""

    def __init__(self, host, port):
        self.sessions = 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                outer.sessions += 1
                self.request.sendall(b"421 4.7.0 mx.busy.test Too many connections, try later\r\n")

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def send_each(server, domain, count, subject):
    """`count` messages to `domain`, one transaction each (one queue entry each)."""
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
        for n in range(count):
            s.sendmail("sender@sender.test", [f"r{n}@{domain}"], message(f"{subject} {n}"))


class NoTlsTest(unittest.TestCase):
    def test_a_domain_with_tls_never_gets_plain_text_from_a_server_that_offers_starttls(self):
        dns = dnsmasq(RECORDS)
        self.addCleanup(dns.stop)
        port = free_port("127.0.0.23")
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = f"{tmp}/cert.pem", f"{tmp}/key.pem"
            make_cert(cert, key, "mx.tls.test")
            receiver = SmtpReceiver("127.0.0.23", port, name="mx.tls.test", tls=(cert, key))
        self.addCleanup(receiver.stop)
        server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"], setup=relay_setup(
            dns.port, port, extra='\n[outbound.domains."plain.test"]\ntls = "never"\n'))
        self.addCleanup(server.stop)
        for count, domain in enumerate(("any.test", "plain.test"), 1):
            send_each(server, domain, 1, domain)
            receiver.wait_for(count)
        by_domain = {m[1][0].split("@")[1]: tls for m, tls in zip(receiver.received(), receiver.encrypted)}
        self.assertEqual(by_domain, {"any.test": True, "plain.test": False},
                         "opportunistic STARTTLS for the one, plain text for the other")


class PacingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = dnsmasq(RECORDS)
        cls.addClassCleanup(cls.dns.stop)
        cls.port = free_port("127.0.0.21", "127.0.0.22")
        cls.receiver = SmtpReceiver("127.0.0.21", cls.port, delay=0.5, name="mx.slow.test")
        cls.addClassCleanup(cls.receiver.stop)
        cls.metrics_port = free_port()
        limits = ('\n[outbound.domains."slow.test"]\nconcurrency = 1\nrate = "2/3s"\n'
                  '\n[outbound.domains."strict.test"]\ntls = "required"\n'
                  f'\n[metrics]\nlisten = "127.0.0.1:{cls.metrics_port}"\n')
        cls.server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"],
                            setup=relay_setup(cls.dns.port, cls.port, extra=limits, retry="6s, 6s, 6s"))
        cls.addClassCleanup(cls.server.stop)

    def arrivals(self, subject, count, timeout=30):
        """When each of `count` messages with `subject` reached the receiver."""
        times, deadline = {}, time.monotonic() + timeout
        while len(times) < count and time.monotonic() < deadline:
            for _, _, data in self.receiver.received():
                for line in data.split(b"\r\n"):
                    if line.startswith(f"Subject: {subject} ".encode()):
                        times.setdefault(line, time.monotonic())
            time.sleep(0.05)
        self.assertEqual(len(times), count, f"every {subject!r} message delivered")
        return sorted(times.values())

    def test_a_domains_rate_and_concurrency_pace_its_deliveries(self):
        self.receiver.most_open = 0
        send_each(self.server, "slow.test", 6, "paced")
        at = self.arrivals("paced", 6)
        # Two starts per three seconds: the third and fifth wait for the window.
        self.assertGreaterEqual(at[2] - at[0], 2.5, at)
        self.assertGreaterEqual(at[4] - at[2], 2.5, at)
        self.assertEqual(self.receiver.most_open, 1, "concurrency = 1: one session at a time")

    def test_other_domains_keep_the_defaults(self):
        self.receiver.most_open = 0
        send_each(self.server, "fast.test", 6, "unpaced")
        at = self.arrivals("unpaced", 6)
        self.assertLess(at[-1] - at[0], 4.5, at)  # 6 s at the other domain's 2/3s
        self.assertGreater(self.receiver.most_open, 1, "per_domain = 10 lets sessions overlap")

    def test_a_domains_tls_policy_holds_its_mail_for_a_server_without_starttls(self):
        send_each(self.server, "strict.test", 1, "strict")

        def deferred():
            return [e for e in queue_entries(self.server) if e["domain"] == "strict.test" and e["attempts"] >= 1]

        (entry,) = wait_until(deferred, what="the strict.test entry deferred")
        self.assertIn("STARTTLS", entry["last_error"])
        self.assertEqual([m for m in self.receiver.received() if m[1] == ["r0@strict.test"]], [],
                         "nothing went in plain text")
        # The same server takes other domains' mail without TLS (fast.test above).

    def test_a_domain_that_turns_every_session_away_is_suspended_until_the_retry(self):
        busy = BusyServer("127.0.0.22", self.port)
        self.addCleanup(busy.stop)
        send_each(self.server, "busy.test", 1, "first")
        self.server.wait_for_log(r"no server of the domain could be reached.*domain=busy\.test")
        self.assertEqual(busy.sessions, 1)
        send_each(self.server, "busy.test", 3, "meanwhile")

        def suspended():
            entries = [e for e in queue_entries(self.server)
                       if e["domain"] == "busy.test" and "temporarily suspended" in (e.get("last_error") or "")]
            return entries if len(entries) == 3 else None

        entries = wait_until(suspended, what="three deferrals without an attempt")
        self.assertIn("421 4.7.0 mx.busy.test Too many connections", entries[0]["last_error"])
        self.assertTrue(all(e["attempts"] == 1 for e in entries), "a suspended deferral counts as an attempt")
        self.assertEqual(busy.sessions, 1, "the three were deferred without knocking")
        self.assertEqual(prometheus(self.metrics_port)["waraka_outbound_suspended_domains"], 1)
        # The first entry's retry (6 s) knocks once and suspends the domain
        # again; the others, due just after it, wait once more.
        wait_until(lambda: busy.sessions >= 2, timeout=15, what="the retry of the first entry")
        time.sleep(1.5)
        self.assertEqual(busy.sessions, 2, "the others waited again instead of knocking")
        # An administrator's flush lifts the suspension at once.
        self.assertEqual(waraka_queue(self.server, "flush", "busy.test")[0], 0)
        wait_until(lambda: busy.sessions >= 3, timeout=3, what="a knock right after the flush")


if __name__ == "__main__":
    unittest.main()
