"""Crash safety. Concurrent clients count a message as acknowledged only when
its 250 arrives; waraka is killed with SIGKILL at random moments, ROUNDS
times, and restarted on the same ports. Every acknowledged message must then
be stored (queue/maildir) or delivered (the outbound queue): duplicates are
counted, loss is never allowed, and nothing is ever stored or delivered
half. Before some restarts a file is torn on purpose (a spool file, or an
outbound queue entry truncated at a random offset): start-up discards or
sets it aside."""

import random
import re
import time
import unittest

from harness import END, Clients, SmtpReceiver, Waraka, dnsmasq, free_port, message
from test_outbound import RECORDS, relay_setup, wait_until

ROUNDS = 10
MESSAGE_ID = re.compile(rb"(?mi)^Message-ID: (<[^>]+>)")


def ids(messages):
    """Message-IDs of whole messages, and the number of messages that were not whole."""
    found, partial = [], 0
    for data in messages:
        match = MESSAGE_ID.search(data)
        if match and data.rstrip(b"\r\n").endswith(END.encode()):
            found.append(match.group(1).decode())
        else:
            partial += 1
    return found, partial


def kill_rounds(server, while_down, after_restart):
    """ROUNDS times: let the clients run for a random moment, kill -9 the
    server, call WHILE_DOWN(round), restart it on the same ports, then call
    AFTER_RESTART(round) (the log holds this run's lines only)."""
    for round in range(ROUNDS):
        time.sleep(random.uniform(0.2, 1.0))
        server.proc.kill()
        server.proc.wait()
        while_down(round)
        server.log.clear()
        server.kill_and_restart()
        after_restart(round)


def report(kind, acked, got, partial, torn):
    duplicates = len(got) - len(set(got))
    lost = set(acked) - set(got) - set(torn)
    print(f"\n  {kind}: {ROUNDS} kill -9 rounds, {len(acked)} acknowledged, {len(set(got))} stored/delivered, "
          f"{duplicates} duplicated, {len(lost)} lost, {partial} partial, {len(torn)} torn on purpose", flush=True)
    return lost


class CrashTest(unittest.TestCase):
    def test_maildir_keeps_every_acknowledged_message_through_kill_9(self):
        server = Waraka(["rcpt_to.in_host_list", "queue/maildir"])
        clients = None
        try:
            clients = Clients(server.port, "rcpt@example.com")
            spool = server.dir / "queue/spool"

            def tear(round):
                if round % 3 == 0:
                    # A spool file as a killed session leaves it: half a message.
                    spool.mkdir(parents=True, exist_ok=True)
                    (spool / f"torn-{round}").write_bytes(message(f"<torn-{round}@crash.test>")[:200])

            def check(round):
                if round % 3 == 0:
                    server.wait_for_log(r"removed unacknowledged spool files")
                    self.assertFalse((spool / f"torn-{round}").exists())

            kill_rounds(server, tear, check)
            time.sleep(0.5)
            acked = clients.finish()
            # Maildir readers see new/ only; tmp/ holds writes a kill cut short.
            delivered = [p for p in server.maildir() if p.parent.name == "new"]
            cut_short = len(server.maildir(tmp=True)) - len(delivered)
            got, partial = ids(p.read_bytes() for p in delivered)
            print(f"\n  queue/maildir: {cut_short} writes cut short left in tmp/", flush=True)
            lost = report("queue/maildir", acked, got, partial, [])
            self.assertGreater(len(acked), ROUNDS * 5)
            self.assertEqual(lost, set())
            self.assertEqual(partial, 0)
            self.assertEqual(len(got), len(set(got)), "a maildir store is never repeated")
            self.assertFalse(any("torn-" in mid for mid in got))
        finally:
            if clients:
                clients.finish()
            server.stop()

    def test_the_outbound_queue_delivers_every_acknowledged_message_through_kill_9(self):
        dns = dnsmasq(RECORDS)
        port = free_port("127.0.0.6")
        receiver = SmtpReceiver("127.0.0.6", port, name="mx.bulk.test")
        server = Waraka(["relay", "rcpt_to.in_host_list", "queue/maildir"], setup=relay_setup(dns.port, port))
        clients = None
        torn = []
        try:
            clients = Clients(server.port, "r@bulk.test")
            queue = server.dir / "queue/outbound"

            def tear(round):
                entries = sorted(queue.glob("*.json"))
                if round % 3 == 1 and entries:
                    # Tear one entry: its message or its envelope, at a random offset.
                    victim = random.choice(entries)
                    eml = victim.with_suffix(".eml")
                    torn.append(MESSAGE_ID.search(eml.read_bytes()).group(1).decode())
                    target = random.choice([victim, eml])
                    data = target.read_bytes()
                    target.write_bytes(data[:random.randrange(1, len(data))])

            kill_rounds(server, tear, lambda round: server.wait_for_log(r"outbound queue recovered"))
            acked = clients.finish()

            def delivered():
                return ids(data for _, _, data in receiver.received())

            wait_until(lambda: set(delivered()[0]) >= set(acked) - set(torn), timeout=120,
                       what="every acknowledged message")
            got, partial = delivered()
            lost = report("outbound queue", acked, got, partial, torn)
            self.assertEqual(lost, set())
            self.assertEqual(partial, 0, "nothing is delivered half")
            # Each torn entry was set aside at start-up (a copy delivered before
            # the kill, if any, was whole: `partial` counts every delivery).
            set_aside = list((queue / "corrupt").glob("*.json"))
            self.assertEqual(len(set_aside), len(torn), set_aside)
        finally:
            if clients:
                clients.finish()
            server.stop()
            receiver.stop()
            dns.stop()


if __name__ == "__main__":
    unittest.main()
