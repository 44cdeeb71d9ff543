"""Fault injector for bench/faults.sh: makes the fault fixture (test/faulty)
trap, spin, exhaust its memory, panic and storm the host with calls (or the
kinds in FAULT_KINDS, e.g. "loop storm"; "healthy" sends recipients that
pass, the control), TOTAL times over CONNECTIONS connections, each waiting for its reply. Prints the
faults made, the seconds taken and any reply that was not 451 4.3.0."""

import os
import smtplib
import sys
import threading
import time

FAULTS = os.environ.get("FAULT_KINDS", "trap loop oom panic storm").split()


def main(port: int, total: int, connections: int) -> None:
    remaining = iter(range(total))
    wrong, lock = [], threading.Lock()

    def inject():
        with smtplib.SMTP("127.0.0.1", port, local_hostname="faults.test", timeout=60) as s:
            s.ehlo()
            s.mail("faults@sender.test")
            for n in remaining:
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
    threads = [threading.Thread(target=inject) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{total} {time.monotonic() - started:.2f} {len(wrong)}")
    for w in wrong[:10]:
        print("wrong reply:", w, file=sys.stderr)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
