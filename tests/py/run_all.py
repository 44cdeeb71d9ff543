#!/usr/bin/env python3
"""Runs every test module of this directory, several at a time.

Each module runs in its own `python3 -m unittest -v MODULE` process (its own
servers, ports and temporary directories, as when it is run alone); its
output is printed whole when it ends, so the log reads module by module. The
tests spend most of their time waiting on the servers they start, so two
modules at a time on two cores take about half the time of one.

    python3 run_all.py                 every module, WARAKA_TEST_JOBS at a time
    python3 run_all.py test_x test_y   only these

WARAKA_TEST_JOBS sets how many run at once (default: the number of CPUs, at
least 2). Modules listed in SLOW_FIRST start first so that a long one does not
end the run alone. The exit status is 1 when any module failed.
"""
import concurrent.futures
import os
import pathlib
import re
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent

# The longest modules (25 s to 95 s each on a 2-core machine): started first.
SLOW_FIRST = [
    "test_python_plugin", "test_haraka_js", "test_outbound", "test_outbound_plugins", "test_js_plugin", "test_milter",
    "test_abuse", "test_crash", "test_auth_imap", "test_rspamd", "test_import_haraka",
    "test_karma",
]

RAN = re.compile(r"^Ran (\d+) tests? in ([\d.]+)s$", re.M)
SUMMARY = re.compile(r"^(OK|FAILED)(?: \((.*)\))?$", re.M)


def modules(names):
    """The modules to run, the slow ones first, then by name."""
    found = sorted(p.stem for p in HERE.glob("test_*.py"))
    if names:
        unknown = set(names) - set(found)
        if unknown:
            sys.exit(f"no such test module: {', '.join(sorted(unknown))}")
        found = [n for n in found if n in names]
    slow = [n for n in SLOW_FIRST if n in found]
    return slow + [n for n in found if n not in slow]


class Totals:
    """What the finished modules reported, summed."""

    def __init__(self):
        self.tests = 0
        self.counts = {}
        self.failed = []

    def add(self, name, status, output):
        """Prints a module's output and counts its result."""
        sys.stdout.write(output)
        sys.stdout.flush()
        ran = RAN.search(output)
        summary = SUMMARY.search(output)
        self.tests += int(ran.group(1)) if ran else 0
        if summary and summary.group(2):
            for part in summary.group(2).split(", "):
                key, _, value = part.partition("=")
                self.counts[key] = self.counts.get(key, 0) + int(value)
        if status != 0 or not summary or summary.group(1) != "OK":
            self.failed.append(name)


def run(name):
    """Runs one module: its exit status and its output, headed by its name."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "unittest", "-v", name], cwd=HERE,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace")
    header = f"=== {name} ({time.monotonic() - started:.1f}s, exit {proc.returncode})\n"
    return proc.returncode, header + proc.stdout


def main():
    jobs = int(os.environ.get("WARAKA_TEST_JOBS") or max(2, os.cpu_count() or 1))
    totals = Totals()
    started = time.monotonic()
    # The pool starts the modules in the order given; each is counted here,
    # in this thread, as it ends.
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        running = {pool.submit(run, name): name for name in modules(sys.argv[1:])}
        for done in concurrent.futures.as_completed(running):
            totals.add(running[done], *done.result())
    print("=" * 70)
    print(f"Ran {totals.tests} tests in {time.monotonic() - started:.1f}s ({jobs} modules at a time)")
    extra = ", ".join(f"{k}={v}" for k, v in sorted(totals.counts.items()))
    if totals.failed:
        print(f"FAILED ({extra}) in: {' '.join(totals.failed)}" if extra else
              f"FAILED in: {' '.join(totals.failed)}")
        return 1
    print(f"OK ({extra})" if extra else "OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
