"""A real waraka process for the Python end-to-end tests.

`Waraka(plugins)` runs `waraka init` into a temporary directory, lets the test
edit the instance, then `waraka run --listen ROLE=127.0.0.1:0` for each role;
the ports come from the log. Every log line is kept for assertions.
"""

import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import threading
import time

TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/waraka-target"))
GUESTS = TARGET / "wasm-guests/wasm32-wasip2/release"
"""Where the build puts plugin and fixture components (e.g. `fixture_recorder.wasm`)."""

LISTENING = re.compile(r"listening address=127\.0\.0\.1:(\d+) role=(\w+)")
BIN = os.environ.get("WARAKA_BIN") or str(TARGET / "debug/waraka")


class Waraka:
    """One instance: `dir` is the instance directory, `ports[role]` its listeners."""

    def __init__(self, plugins, roles=("mx",), setup=None):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = pathlib.Path(self.tmp.name) / "i"
        subprocess.run([BIN, "init", str(self.dir), "--plugins", ",".join(plugins)], check=True, capture_output=True)
        if setup:
            setup(self)
        args = [BIN, "run", "--config", str(self.dir)]
        for role in roles:
            args += ["--listen", f"{role}=127.0.0.1:0"]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"})
        self.log = []
        self.ports = {}
        for line in self.proc.stderr:
            self.log.append(line)
            match = LISTENING.search(line)
            if match:
                self.ports[match.group(2)] = int(match.group(1))
                if len(self.ports) == len(roles):
                    break
        if len(self.ports) != len(roles):
            self.proc.kill()
            raise RuntimeError("waraka did not start:\n" + "".join(self.log))
        self.port = self.ports[roles[0]]
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def edit(self, relative, change):
        """Rewrites the instance file `relative` with `change(text)`."""
        path = self.dir / relative
        path.write_text(change(path.read_text()))

    def wait_for_log(self, pattern, timeout=10):
        """The first log line matching `pattern`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.log):
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matches {pattern!r}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=15)
        self.proc.stderr.close()
        self.tmp.cleanup()

    def maildir(self):
        return sorted(p for p in (self.dir / "maildir").rglob("*") if p.is_file())


def free_port():
    """A port free for both TCP and UDP on 127.0.0.1 right now."""
    import socket

    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def wait_for_port(port, proc, what, timeout=15):
    """Waits until something accepts TCP connections on `port` (or `proc` dies)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start on port {port}")


class Service:
    """A helper server (DNS, Redis, ...) run in the foreground on a free port."""

    def __init__(self, what, args_for_port):
        self.tmp = tempfile.TemporaryDirectory()
        self.port = free_port()
        self.proc = subprocess.Popen(args_for_port(self.port, self.tmp.name), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc, what)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.tmp.cleanup()


def dnsmasq(records):
    """dnsmasq answering only `records` (its command-line options, e.g.
    `--mx-host=d,mx.d,10`) on UDP and TCP, with no upstream servers."""
    return Service("dnsmasq", lambda port, tmp: [
        shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
        f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces", f"--pid-file={tmp}/pid",
        *(["--user=root"] if os.geteuid() == 0 else []), *records,
    ])


def redis():
    """A throw-away redis-server with no persistence."""
    return Service("redis-server", lambda port, tmp: [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp,
    ])
