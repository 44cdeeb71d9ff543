"""p0f end to end: a real p0f 3 daemon (Debian's) watches the loopback
interface and fingerprints the test's TCP connections to a real waraka; the
p0f plugin asks it over its API socket (the host's p0f capability) and
notes and stamps what it saw."""

import shutil
import socket
import struct
import subprocess
import tempfile
import unittest
from pathlib import Path

from harness import Waraka, free_port, wait_until

P0F = shutil.which("p0f") or "/usr/sbin/p0f"


def p0f_knows(sock_path, ip="127.0.0.1"):
    """Whether p0f has a fingerprint of `ip`, asked as p0f-client asks."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock_path))
        s.sendall(struct.pack("<IB16s", 0x50304601, 4, socket.inet_aton(ip)))
        answer = b""
        while len(answer) < 232:
            chunk = s.recv(232 - len(answer))
            if not chunk:
                break
            answer += chunk
    return struct.unpack("<II", answer[:8])[1] == 0x10


def start_p0f(sock_path, port):
    """p0f watching loopback connections to `port`, its API socket ready."""
    sock_path.unlink(missing_ok=True)
    proc = subprocess.Popen([P0F, "-i", "lo", "-s", str(sock_path), f"tcp port {port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(sock_path.exists, what="p0f's API socket")
    return proc


class P0fTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.tmp.cleanup)
        cls.socket = Path(cls.tmp.name) / "p0f.sock"
        port = free_port()
        cls.p0f = start_p0f(cls.socket, port)
        cls.addClassCleanup(cls.stop_p0f)

        def setup(server):
            server.edit("waraka.toml", lambda t: t + f'\n[p0f]\nsocket = "{cls.socket}"\n')
            server.set_settings("p0f.ini", check_private="true")

        cls.server = Waraka(["p0f", "rcpt_to.in_host_list", "queue/maildir"], setup=setup, port=port)
        cls.addClassCleanup(cls.server.stop)

    @classmethod
    def stop_p0f(cls):
        if cls.p0f.poll() is None:
            cls.p0f.terminate()
            cls.p0f.wait(timeout=15)

    def test_what_p0f_saw_becomes_notes_and_a_header(self):
        # p0f reads packets on its own time: once it has seen this host,
        # the next session's connect hook finds the fingerprint.
        socket.create_connection(("127.0.0.1", self.server.port), timeout=5).close()
        wait_until(lambda: p0f_knows(self.socket), what="p0f to fingerprint 127.0.0.1")
        code, _, files = self.server.deliver(b"Subject: fingerprinted\r\nX-Waraka-p0f: forged\r\n\r\nhi\r\n")
        self.assertEqual(code, 250)
        header = [line for line in files[0].split(b"\r\n") if line.startswith(b"X-Waraka-p0f:")]
        self.assertEqual(len(header), 1, "the client's copy is replaced")
        self.assertRegex(header[0].decode(),
                         r'^X-Waraka-p0f: os="Linux [^"]+"( link_type="[^"]+")? distance=0 total_conn=\d+ '
                         r'shared_ip=N$', "the kernel's own fingerprint, no hops away on loopback")
        self.server.wait_for_log(r"127\.0\.0\.1: p0f\.os=Linux .* p0f\.distance=0")

    def test_without_p0f_the_session_goes_on(self):
        self.stop_p0f()
        self.addCleanup(self.restart_p0f)
        code, _, files = self.server.deliver(b"Subject: unseen\r\n\r\nhi\r\n")
        self.assertEqual(code, 250, "a fingerprint is never a reason to refuse")
        self.assertNotIn(b"X-Waraka-p0f", files[0])
        self.server.wait_for_log(r"asking p0f about 127\.0\.0\.1 failed: Error::Backend")

    def restart_p0f(self):
        type(self).p0f = start_p0f(self.socket, self.server.port)


if __name__ == "__main__":
    unittest.main()
