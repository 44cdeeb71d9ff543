"""Fault injector for bench/faults.sh: makes the fault fixture (test/faulty)
trap, spin, exhaust its memory, panic and storm the host with calls (or the
kinds in FAULT_KINDS, e.g. "loop storm"; "healthy" sends recipients that
pass, the control), TOTAL times over CONNECTIONS connections, each waiting
for its reply, for at most SECONDS. Prints the requests made, the seconds
taken and how many fault replies were not 451 4.3.0."""

import os
import smtplib
import sys
import threading
import time

FAULTS = os.environ.get("FAULT_KINDS", "trap loop oom panic storm").split()


def main(port: int, total: int, connections: int, seconds: float) -> None:
    remaining = iter(range(total))
    wrong, made, lock = [], [], threading.Lock()
    stop_at = time.monotonic() + seconds

    def inject(source):
        with smtplib.SMTP("127.0.0.1", port, local_hostname="faults.test", timeout=60, source_address=source) as s:
            s.ehlo()
            s.mail("faults@sender.test")
            for n in remaining:
                if time.monotonic() >= stop_at:
                    break
                with lock:
                    made.append(n)
                kind = FAULTS[n % len(FAULTS)]
                code, text = s.rcpt(f"{kind}@example.com")
                if kind == "healthy":
                    # The control: the same traffic without faults.
                    if code == 452:
                        s.rset()
                        s.mail("faults@sender.test")
                elif code != 451 or not text.startswith(b"4.3.0"):
                    with lock:
                        wrong.append((FAULTS[n % len(FAULTS)], code, text))

    started = time.monotonic()
    # FAULT_SOURCES=N: connection i comes from 127.0.0.(2 + i mod N), so the
    # faults come from N client addresses (the fault tarpit counts per address).
    sources = int(os.environ.get("FAULT_SOURCES", "0"))
    threads = [
        threading.Thread(target=inject, args=((f"127.0.0.{2 + i % sources}", 0) if sources else None,))
        for i in range(connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{len(made)} {time.monotonic() - started:.2f} {len(wrong)}")
    for w in wrong[:10]:
        print("wrong reply:", w, file=sys.stderr)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 1e9)
