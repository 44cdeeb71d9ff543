"""Plugins' fsyncs through the host's group commit: queue/maildir syncs
every copy and its new/ directory, and concurrent syncs of one file share
one fsync, counted in the server's metrics."""

import shutil
import smtplib
import threading
import unittest

from harness import GUESTS, Waraka, free_port, prometheus

SENDERS = 40


def message(tag):
    return f"From: s@sender.test\r\nSubject: copy {tag}\r\n\r\nbody {tag}\r\n".encode()


def at_once(count, work):
    """Runs work(n) for n < count on threads released together; their results."""
    start = threading.Barrier(count)
    results = [None] * count

    def run(n):
        results[n] = work(n, start.wait)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


class FsyncTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.metrics_port = free_port()

        def setup(server):
            (server.dir / "plugins/test").mkdir()
            shutil.copy(GUESTS / "fixture_probe.wasm", server.dir / "plugins/test/probe.wasm")
            server.edit("waraka.toml", lambda t: t.replace("[dirs]\n", '[dirs]\nsync = "sync"\n') + (
                f'\n[plugin."test/probe"]\ngrants = ["dir:sync"]\n'
                f'\n[metrics]\nlisten = "127.0.0.1:{cls.metrics_port}"\n'))

        cls.server = Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=setup)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def syncs(self):
        """(syncs asked for, fsyncs made) so far."""
        m = prometheus(self.metrics_port)
        return m.get("waraka_fsync_requests_total", 0), m.get("waraka_fsyncs_total", 0)

    def test_every_maildir_copy_and_its_directory_are_synced(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, timeout=30) as s:
            s.sendmail("first@sender.test", ["box@example.com"], message("first"))  # creates the folder
        requests_before, syncs_before = self.syncs()

        def send(n, together):
            with smtplib.SMTP("127.0.0.1", self.server.port, timeout=60) as s:
                s.ehlo("client.test")
                assert s.mail(f"s{n}@sender.test")[0] == 250
                assert s.rcpt("box@example.com")[0] == 250
                together()
                return s.data(message(n))[0]

        self.assertEqual(at_once(SENDERS, send), [250] * SENDERS)
        new = self.server.dir / "maildir" / "example.com" / "box" / "new"
        bodies = sorted(p.read_bytes().split(b"\r\n\r\n", 1)[1] for p in new.iterdir())
        self.assertEqual(bodies, sorted(f"body {tag}\r\n".encode() for tag in ["first", *range(SENDERS)]))
        requests_after, syncs_after = self.syncs()
        # Two syncs per copy, the file and then new/ after the rename, each
        # made or shared: every file has its own.
        self.assertEqual(requests_after - requests_before, 2 * SENDERS)
        self.assertGreaterEqual(syncs_after - syncs_before, SENDERS + 1)
        self.assertLessEqual(syncs_after - syncs_before, 2 * SENDERS)

    def test_concurrent_syncs_of_one_file_share_fsyncs(self):
        clients, rounds = 16, 20
        requests_before, syncs_before = self.syncs()

        def sync(n, together):
            with smtplib.SMTP("127.0.0.1", self.server.port, timeout=120) as s:
                s.ehlo("client.test")
                together()
                return s.docmd("XSYNC", str(rounds))

        for code, text in at_once(clients, sync):
            self.assertEqual((code, text), (250, f"2.0.0 synced {rounds}".encode()))
        self.assertEqual((self.server.dir / "sync/shared").stat().st_size, clients * rounds * 64 * 1024)
        requests_after, syncs_after = self.syncs()
        requests, syncs = requests_after - requests_before, syncs_after - syncs_before
        self.assertEqual(requests, clients * rounds)
        # Connections appending to one file and syncing it in a loop: a sync
        # asked for while another runs waits for the next, which serves all
        # that waited.
        self.assertLess(syncs, requests * 3 / 4)


if __name__ == "__main__":
    unittest.main()
