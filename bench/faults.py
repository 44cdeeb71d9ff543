"""Fault injector for bench/faults.sh: makes the fault fixture (test/faulty)
trap, spin, exhaust its memory, panic and storm the host with calls, TOTAL
times over CONNECTIONS connections, each waiting for its reply. Prints the
faults made, the seconds taken and any reply that was not 451 4.3.0."""

import smtplib
import sys
import threading
import time

FAULTS = ["trap", "loop", "oom", "panic", "storm"]


def main(port: int, total: int, connections: int) -> None:
    remaining = iter(range(total))
    wrong, lock = [], threading.Lock()

    def inject():
        with smtplib.SMTP("127.0.0.1", port, local_hostname="faults.test", timeout=60) as s:
            s.ehlo()
            s.mail("faults@sender.test")
            for n in remaining:
                code, text = s.rcpt(f"{FAULTS[n % len(FAULTS)]}@example.com")
                if code != 451 or not text.startswith(b"4.3.0"):
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
