"""Idle connections against a running waraka: the RSS each one costs and
what holding them does to active sessions. Called by bench/idle.sh."""

import argparse
import resource
import socket
import smtplib
import statistics
import subprocess
import time

MESSAGE = (b"From: bench@sender.test\r\nTo: rcpt@example.com\r\nSubject: idle bench\r\n"
           b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <idle@sender.test>\r\n\r\n"
           + (b"x" * 76 + b"\r\n") * 64)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def latencies(port, count):
    """Milliseconds per whole transaction on a new connection, sorted."""
    out = []
    for _ in range(count):
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.bench.test", timeout=30) as c:
            c.sendmail("bench@sender.test", ["rcpt@example.com"], MESSAGE)
        out.append((time.monotonic() - started) * 1000)
    return sorted(out)


def throughput(source, port, sessions, messages):
    started = time.monotonic()
    subprocess.run([source, "-d", "-M", "client.bench.test", "-s", str(sessions), "-m", str(messages),
                    "-l", "5120", "-f", "bench@sender.test", "-t", "rcpt@example.com", f"127.0.0.1:{port}"],
                   check=True)
    return messages / (time.monotonic() - started)


def measure(args):
    lat = latencies(args.port, args.probes)
    rate = throughput(args.source, args.port, args.sessions, args.messages)
    return {"p50": statistics.median(lat), "p99": lat[int(len(lat) * 0.99) - 1], "rate": rate}


def hold(port, count):
    """COUNT connections that took the greeting and then say nothing."""
    held = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        held.append(s)
        # One at a time, as arriving clients: a flood of simultaneous connects
        # is admitted at about max_instances / (connect plugins x idle_release)
        # per second, and waiting longer than a plugin's timeout is a 421.
        greeting = s.recv(512)
        if not greeting.startswith(b"220 "):
            raise SystemExit(f"connection {i + 1}: greeting {greeting!r}")
    return held


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--idle", type=int, required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--sessions", type=int, default=10)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--probes", type=int, default=300)
    p.add_argument("--settle", type=float, default=3.0)
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    throughput(args.source, args.port, args.sessions, args.messages // 5)
    time.sleep(args.settle)
    quiet = measure(args)
    time.sleep(args.settle)
    before = rss_kib(args.pid)
    started = time.monotonic()
    held = hold(args.port, args.idle)
    opened = time.monotonic() - started
    time.sleep(args.settle)
    holding = rss_kib(args.pid)
    busy = measure(args)
    after = rss_kib(args.pid)
    for s in held:
        s.close()

    per = (holding - before) / args.idle
    print(f"{args.idle} idle connections opened and greeted in {opened:.1f} s")
    print(f"server RSS: {before} KiB before, {holding} KiB holding them ({after} KiB after the active run): "
          f"{per:.1f} KiB per idle connection")
    print(f"{'':24} {'txn p50 ms':>10} {'txn p99 ms':>10} {'msg/s':>8}")
    for name, m in (("no idle connections", quiet), (f"{args.idle} idle held", busy)):
        print(f"{name:24} {m['p50']:10.2f} {m['p99']:10.2f} {m['rate']:8.0f}")
    print(f"ratio (held / none)      {busy['p50'] / quiet['p50']:10.2f} {busy['p99'] / quiet['p99']:10.2f} "
          f"{busy['rate'] / quiet['rate']:8.2f}")


if __name__ == "__main__":
    main()
