#!/usr/bin/env python3
"""What the storage itself allows the maildir profile: the file calls
queue/maildir makes for one copy (create in tmp/, write 5 KiB, fsync,
rename into new/, fsync new/), done natively by 1, 10 and 100 threads at
once, with the rate and the process's CPU per copy.

    bench/maildir_native.py DIR [COPIES] [MODE...]   # e.g. bench/maildir_native.py /mnt/bfs 5000
    bench/maildir_native.py --threads N DIR COPIES    # one run into DIR (kept), prints "copies/s cpu-us"

Modes (default `copy`):
  copy    every writer fsyncs its file and new/ itself (what queue/maildir
          does; concurrent fsyncs are batched by the file system's journal)
  group   writers hand their written files to one committer thread, which
          fsyncs them in turn, renames them and fsyncs new/ once per batch
  syncfs  the same committer with one syncfs() before and one after the
          batch's renames instead of the fsyncs

Compare its scaling (100 threads against 1) with the maildir profile's on
the same file system (`MAILDIR_ROOT=DIR bench/run.sh`).
"""
import ctypes
import os
import shutil
import sys
import tempfile
import threading
import time

MESSAGE = b"x" * 5 * 1024
MODES = ("copy", "group", "syncfs")
libc = ctypes.CDLL(None, use_errno=True)


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Committer:
    """One thread that makes batches of written copies durable and renames them."""

    def __init__(self, root, mode):
        self.root, self.mode = root, mode
        self.cond = threading.Condition()
        self.pending, self.stopping = [], False
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def commit(self, fd, tmp, new):
        done = threading.Event()
        with self.cond:
            self.pending.append((fd, tmp, new, done))
            self.cond.notify()
        done.wait()

    def run(self):
        while True:
            with self.cond:
                while not self.pending and not self.stopping:
                    self.cond.wait()
                if not self.pending:
                    return
                batch, self.pending = self.pending, []
            if self.mode == "syncfs":
                self.syncfs()
            else:
                for fd, *_ in batch:
                    os.fsync(fd)
            for fd, tmp, new, _ in batch:
                os.close(fd)
                os.rename(tmp, new)
            if self.mode == "syncfs":
                self.syncfs()
            else:
                fsync_path(os.path.join(self.root, "new"))
            for *_, done in batch:
                done.set()

    def syncfs(self):
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if libc.syncfs(fd) != 0:
                raise OSError(ctypes.get_errno(), "syncfs")
        finally:
            os.close(fd)

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join()


def run(root, threads, copies, mode):
    """Writes `copies` maildir copies with `threads` writers: (copies/s, CPU µs per copy)."""
    for sub in ("tmp", "new"):
        os.makedirs(os.path.join(root, sub))
    taken = iter(range(copies))
    lock = threading.Lock()
    committer = None if mode == "copy" else Committer(root, mode)

    def writer(name):
        while True:
            with lock:
                n = next(taken, None)
            if n is None:
                return
            tmp = os.path.join(root, "tmp", f"{name}.{n}")
            new = os.path.join(root, "new", f"{name}.{n}")
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.write(fd, MESSAGE)
            if committer:
                committer.commit(fd, tmp, new)
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, new)
            fsync_path(os.path.join(root, "new"))

    cpu0, t0 = time.process_time(), time.monotonic()
    workers = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if committer:
        committer.stop()
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return copies / elapsed, cpu / copies * 1e6


def main():
    args = sys.argv[1:]
    if args[:1] == ["--threads"] and len(args) == 4:
        # The caller removes DIR when it is done: a mass delete slows ext4's
        # inode allocation down for minutes, which would skew what follows.
        rate, cpu = run(os.path.join(args[2], "copy"), int(args[1]), int(args[3]), "copy")
        print(f"{rate:.0f} {cpu:.0f}")
        return
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    base = args[0]
    copies = int(args[1]) if len(args) > 1 else 5000
    modes = args[2:] or ["copy"]
    if any(m not in MODES for m in modes):
        sys.exit(f"modes: {', '.join(MODES)}")
    work = tempfile.mkdtemp(prefix="storage-", dir=base)
    try:
        print(f"{'mode':>6} {'threads':>7} {'copies/s':>9} {'cpu-us/copy':>11} {'x 1 thread':>10}")
        for mode in modes:
            single = None
            for threads in (1, 10, 100):
                rate, cpu = run(os.path.join(work, f"{mode}.{threads}"), threads, copies, mode)
                single = single or rate
                print(f"{mode:>6} {threads:>7} {rate:>9.0f} {cpu:>11.0f} {rate / single:>10.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
