"""systemd's notify protocol end to end: a real waraka told of a
NOTIFY_SOCKET (a datagram socket of the test, as systemd gives a
`Type=notify` service) says READY=1 once it listens, RELOADING=1 with
MONOTONIC_USEC and READY=1 again around a reload, and STOPPING=1 when it is
told to stop. Sockets systemd passes (socket activation, through
`systemd-socket-activate`) are the listeners'. The example units pass
`systemd-analyze verify`."""

import os
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from harness import BIN, ROOT, Waraka, free_port


class NotifyTest(unittest.TestCase):
    def setUp(self):
        tmp = Path(tempfile.mkdtemp())
        self.addCleanup(lambda: (self.sock.close(), (tmp / "notify").unlink(missing_ok=True), tmp.rmdir()))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(tmp / "notify"))
        self.sock.settimeout(30)
        self.path = tmp / "notify"

    def next_message(self):
        """The next notification, as a dict of its assignments."""
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines())

    def test_ready_reloading_and_stopping_are_told(self):
        server = Waraka(["rcpt_to.in_host_list", "queue/maildir"], env={"NOTIFY_SOCKET": str(self.path)})
        self.addCleanup(server.stop)
        ready = self.next_message()
        self.assertEqual(ready.get("READY"), "1", ready)
        self.assertEqual(ready.get("STATUS"), f"listening on 127.0.0.1:{server.port} (mx)")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
            self.assertTrue(client.recv(100).startswith(b"220 "), "READY came once it listens")

        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        server.reload()
        reloading = self.next_message()
        self.assertEqual(reloading.get("RELOADING"), "1", reloading)
        stamp = int(reloading["MONOTONIC_USEC"])
        self.assertTrue(before <= stamp <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
                        "the monotonic clock of the reload, as systemd compares it")
        self.assertEqual(self.next_message().get("READY"), "1")

        server.proc.terminate()
        self.assertEqual(self.next_message().get("STOPPING"), "1")
        server.proc.wait(timeout=30)

    def test_without_a_notify_socket_nothing_is_sent(self):
        self.assertNotIn("NOTIFY_SOCKET", os.environ)
        server = Waraka(["rcpt_to.in_host_list", "queue/maildir"])
        self.addCleanup(server.stop)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
            self.assertTrue(client.recv(100).startswith(b"220 "))
        server.wait_for_log(r"listening")
        server.reload()
        self.assertFalse(any("could not tell the service manager" in line for line in server.log))



class SocketActivationTest(unittest.TestCase):
    def test_the_socket_systemd_passes_is_the_listener(self):
        """`systemd-socket-activate` holds the port and starts the server
        at the first connection, as a `waraka.socket` unit does: the client
        that came first waits in the backlog and is served."""
        with tempfile.TemporaryDirectory() as tmp:
            instance = Path(tmp) / "i"
            subprocess.run([BIN, "init", str(instance)], check=True, capture_output=True)
            port = free_port()
            address = f"127.0.0.1:{port}"
            proc = subprocess.Popen(["systemd-socket-activate", "--listen", address, "-E", "NO_COLOR=1",
                                     BIN, "run", "--config", str(instance), "--listen", address],
                                    stderr=subprocess.PIPE, text=True)
            self.addCleanup(lambda: (proc.terminate(), proc.wait(timeout=15), proc.stderr.close()))
            deadline = time.monotonic() + 15
            while True:
                try:
                    client = socket.create_connection(("127.0.0.1", port), timeout=30)
                    break
                except ConnectionRefusedError:
                    self.assertLess(time.monotonic(), deadline, "systemd-socket-activate did not listen")
                    time.sleep(0.05)
            with client:
                self.assertTrue(client.recv(100).startswith(b"220 "), "served once the server started")
            log = []
            for line in proc.stderr:
                log.append(line)
                if "listening address=" in line:
                    break
            self.assertTrue(any("listening on the socket the service manager passed" in line for line in log),
                            "".join(log))


class UnitTest(unittest.TestCase):
    def test_the_example_units_verify(self):
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("waraka.service", "waraka.socket"):
                unit = (ROOT / "examples/systemd" / name).read_text().replace("/usr/local/bin/waraka", BIN)
                (Path(tmp) / name).write_text(unit)
            done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(Path(tmp) / "waraka.service"),
                                   str(Path(tmp) / "waraka.socket")], capture_output=True, text=True, timeout=60)
        self.assertEqual((done.returncode, done.stderr.strip()), (0, ""), "no unknown keys, the binary runs")


if __name__ == "__main__":
    unittest.main()
