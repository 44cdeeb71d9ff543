"""Plugin faults under load: while 10 healthy sessions send continuously,
other connections make the fault fixture (test/faulty, first in the chain)
trap, spin, exhaust its memory, panic and storm the host with calls, 1,000
times in all. The server must never crash, no fault may turn into a 250,
every acknowledged healthy message must be stored, and a storm of log lines
is capped per call. The healthy throughput with and without the faults is
printed (the ratio is measured in bench/, not asserted here)."""

import shutil
import smtplib
import threading
import time
import unittest

from harness import GUESTS, Clients, Waraka

FAULTS = ["trap", "loop", "oom", "panic", "storm"]
TOTAL_FAULTS = 1000
INJECTORS = 4


def faulty_setup(server):
    # 20,000,000 fuel: enough for a storm (three host calls of 10,000 fuel a
    # round) to reach the 200-line log cap of one hook call.
    (server.dir / "plugins/test").mkdir()
    shutil.copy(GUESTS / "fixture_faulty.wasm", server.dir / "plugins/test/faulty.wasm")
    # No fault tarpit: the point is 1,000 real faults from one address.
    server.edit("waraka.toml", lambda t: t.replace('plugins = ["', 'plugins = ["test/faulty", "', 1)
                + '\n[runtime]\nfault_delay = "0s"\n'
                + '\n[plugin."test/faulty"]\nfuel = 20000000\nmemory = 16777216\ntimeout = "2s"\n'
                  'breaker_faults = 0\n')


class FaultLoadTest(unittest.TestCase):
    def test_a_thousand_faults_under_load_never_crash_and_never_answer_250(self):
        server = Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=faulty_setup)
        try:
            server.wait_for_log(r"plugin loaded plugin=test/faulty ")
            # Healthy throughput alone, then with the faults, in one run.
            healthy = Clients(server.port, "rcpt@example.com", count=10)
            time.sleep(3)
            alone = len(healthy.acked) / 3

            replies = []
            lock = threading.Lock()
            remaining = iter(range(TOTAL_FAULTS))

            def inject():
                with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
                    s.ehlo()
                    assert s.mail("a@sender.test")[0] == 250
                    for n in remaining:
                        reply = s.rcpt(f"{FAULTS[n % len(FAULTS)]}@example.com")
                        with lock:
                            replies.append((FAULTS[n % len(FAULTS)], reply))

            before, started = len(healthy.acked), time.monotonic()
            injectors = [threading.Thread(target=inject) for _ in range(INJECTORS)]
            for t in injectors:
                t.start()
            for t in injectors:
                t.join(timeout=600)
            took = time.monotonic() - started
            under_faults = (len(healthy.acked) - before) / took
            acked = healthy.finish()

            self.assertIsNone(server.proc.poll(), "the server is still running")
            self.assertEqual(len(replies), TOTAL_FAULTS)
            wrong = [(kind, r) for kind, r in replies if r[0] != 451 or not r[1].startswith(b"4.3.0")]
            self.assertEqual(wrong, [], "every fault answers 451 4.3.0, never 250")
            stored = len([p for p in server.maildir() if p.parent.name == "new"])
            self.assertGreaterEqual(stored, len(acked), "every acknowledged healthy message is stored")
            storm_lines = sum(1 for line in server.log if "storm " in line and "test/faulty" in line)
            storms = TOTAL_FAULTS // len(FAULTS)
            self.assertLessEqual(storm_lines, storms * 200, "at most 200 log lines per call")
            self.assertGreater(storm_lines, 0)
            server.wait_for_log(r"log limit of 200 lines per hook call reached")
            print(f"\n  {TOTAL_FAULTS} faults in {took:.1f} s; healthy sessions: {alone:.0f} msg/s alone, "
                  f"{under_faults:.0f} msg/s under faults ({under_faults / alone:.0%})", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main()
