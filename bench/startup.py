"""Start-up time of waraka: from exec to the first greeting on a new
connection, over several runs of one instance. Called by bench/startup.sh."""

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def greeted(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            return s.recv(512).startswith(b"220 ")
    except OSError:
        return False


def start_once(waraka, instance, log):
    """Seconds from exec to a greeting, and the log lines it wrote."""
    port = free_port()
    env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
    with open(log, "w") as err:
        started = time.monotonic()
        child = subprocess.Popen([waraka, "run", "--config", instance, "--listen", f"127.0.0.1:{port}"],
                                 stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            while not greeted(port):
                if child.poll() is not None or time.monotonic() - started > 60:
                    raise SystemExit(f"waraka did not start: see {log}")
                time.sleep(0.001)
            took = time.monotonic() - started
        finally:
            child.terminate()
            child.wait()
    with open(log) as f:
        return took, f.read().splitlines()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--waraka", required=True)
    p.add_argument("--instance", required=True)
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args()
    log = os.path.join(tempfile.mkdtemp(), "startup.log")
    took, lines = start_once(args.waraka, args.instance, log)
    compiled = sum("plugin loaded" in l and "compiled=true" in l for l in lines)
    print(f"first start (compiling {compiled} plugins into the cache): {took * 1000:.0f} ms")
    times = []
    for _ in range(args.runs):
        took, lines = start_once(args.waraka, args.instance, log)
        loaded = [l for l in lines if "plugin loaded" in l]
        rejected = [l for l in lines if "plugin rejected" in l or "not loaded" in l]
        if any("compiled=true" in l for l in loaded) or rejected:
            raise SystemExit("a cached start compiled or rejected a plugin:\n" + "\n".join(rejected or loaded))
        times.append(took * 1000)
    times.sort()
    print(f"cached start with {len(loaded)} plugins, exec to first greeting, {args.runs} runs: "
          f"median {statistics.median(times):.0f} ms (min {times[0]:.0f}, max {times[-1]:.0f})")


if __name__ == "__main__":
    main()
