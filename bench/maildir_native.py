#!/usr/bin/env python3
"""What the storage itself allows the maildir profile: the file calls
queue/maildir makes for one copy (create in tmp/, write 5 KiB, fsync,
rename into new/, fsync new/), done natively by 1, 10 and 100 threads at
once, with the rate and the process's CPU per copy.

    bench/maildir_native.py DIR [COPIES]   # e.g. bench/maildir_native.py /mnt/bfs 5000

Compare its scaling (100 threads against 1) with the maildir profile's on
the same file system (`MAILDIR_ROOT=DIR bench/run.sh`).
"""
import os
import shutil
import sys
import tempfile
import threading
import time

MESSAGE = b"x" * 5 * 1024


def run(root, threads, copies):
    """Writes `copies` maildir copies with `threads` writers: (copies/s, CPU µs per copy)."""
    for sub in ("tmp", "new"):
        os.makedirs(os.path.join(root, sub))
    taken = iter(range(copies))
    lock = threading.Lock()

    def writer(name):
        while True:
            with lock:
                n = next(taken, None)
            if n is None:
                return
            tmp = os.path.join(root, "tmp", f"{name}.{n}")
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            try:
                os.write(fd, MESSAGE)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(root, "new", f"{name}.{n}"))
            d = os.open(os.path.join(root, "new"), os.O_RDONLY)
            try:
                os.fsync(d)
            finally:
                os.close(d)

    cpu0, t0 = time.process_time(), time.monotonic()
    workers = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return copies / elapsed, cpu / copies * 1e6


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    base = sys.argv[1]
    copies = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    work = tempfile.mkdtemp(prefix="storage-", dir=base)
    try:
        single = None
        print(f"{'threads':>7} {'copies/s':>9} {'cpu-us/copy':>11} {'x 1 thread':>10}")
        for threads in (1, 10, 100):
            rate, cpu = run(os.path.join(work, str(threads)), threads, copies)
            single = single or rate
            print(f"{threads:>7} {rate:>9.0f} {cpu:>11.0f} {rate / single:>10.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
