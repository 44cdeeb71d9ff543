"""A real waraka process for the Python end-to-end tests.

`Waraka(plugins)` runs `waraka init` into a temporary directory, lets the test
edit the instance, then `waraka run --listen ROLE=127.0.0.1:0` for each role;
the ports come from the log. Every log line is kept for assertions.
"""

import contextlib
import grp
import json
import os
import pathlib
import pwd
import random
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time

TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/waraka-target"))
GUESTS = TARGET / "wasm-guests/wasm32-wasip2/release"
"""Where the build puts plugin and fixture components (e.g. `fixture_recorder.wasm`)."""

# The listening line, as text (`listening address=… role=mx`) or as JSON.
LISTENING = re.compile(r'listening[", ]+address"?[=:]"?127\.0\.0\.\d+:(\d+)[", ]+role"?[=:]"?(\w+)')
BIN = os.environ.get("WARAKA_BIN") or str(TARGET / "debug/waraka")


class Waraka:
    """One instance: `dir` is the instance directory, `ports[role]` its listeners.

    `plugins` is the chain for `waraka init --plugins`; None keeps the default chain.
    With `configured_listeners`, the listeners are those `setup` writes in
    waraka.toml (one per role in `roles`) instead of `--listen` ones. `env`
    adds variables to the process's environment (`SSL_CERT_FILE`).
    """

    def __init__(self, plugins, roles=("mx",), setup=None, host="127.0.0.1", port=0, configured_listeners=False,
                 env=None):
        self.env = {**os.environ, "NO_COLOR": "1", **(env or {})}
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = pathlib.Path(self.tmp.name) / "i"
        self.roles = roles
        self.listen = [] if configured_listeners else [f"{role}={host}:{port}" for role in roles]
        chosen = [] if plugins is None else ["--plugins", ",".join(plugins)]
        subprocess.run([BIN, "init", str(self.dir), *chosen], check=True, capture_output=True)
        if setup:
            setup(self)
        self.log = []
        try:
            self._start()
        except BaseException:
            self.tmp.cleanup()
            raise

    def _start(self):
        args = [BIN, "run", "--config", str(self.dir)]
        for listen in self.listen:
            args += ["--listen", listen]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=self.env)
        self.ports = {}
        for line in self.proc.stderr:
            self.log.append(line)
            match = LISTENING.search(line)
            if match:
                self.ports[match.group(2)] = int(match.group(1))
                if len(self.ports) == len(self.roles):
                    break
        if len(self.ports) != len(self.roles):
            self.proc.kill()
            self.proc.wait(timeout=15)
            self.proc.stderr.close()
            raise RuntimeError("waraka did not start:\n" + "".join(self.log))
        self.port = self.ports[self.roles[0]]
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()

    def kill_and_restart(self):
        """`kill -9`, then a new process on the same instance and ports."""
        self.proc.kill()
        self.proc.wait(timeout=15)
        self.start_again()

    def halt(self):
        """Stops the process as an administrator would (SIGTERM), keeping the
        instance for `start_again`."""
        self.proc.terminate()
        self.proc.wait(timeout=15)

    def start_again(self):
        """A new process on the same instance and ports."""
        self.listen = [f"{role}=127.0.0.1:{port}" for role, port in self.ports.items()]
        self._start()

    def _drain(self, proc):
        for line in proc.stderr:
            self.log.append(line)
        proc.stderr.close()

    def edit(self, relative, change, reload=True):
        """Rewrites the instance file `relative` with `change(text)`. A file of
        `config/` edited under a running server is then put in force with
        `waraka reload` (unless `reload` is false): the server's own watcher
        sees the edit within milliseconds, but a test that sends at once can
        be quicker."""
        path = self.dir / relative
        path.write_text(change(path.read_text()))
        if reload and relative.startswith("config/") and self.running():
            self.reload()

    def running(self):
        proc = getattr(self, "proc", None)
        return proc is not None and proc.poll() is None

    def reload(self, check=True):
        """`waraka reload`: (exit code, output); with `check`, an error unless
        it reached the server (a refused plugin or waraka.toml is no error
        then: the reload still ran)."""
        done = subprocess.run([BIN, "reload", "--config", str(self.dir)], capture_output=True, text=True,
                              timeout=120, env=self.env)
        output = done.stdout + done.stderr
        if check and done.returncode != 0 and "the server says" not in output:
            raise AssertionError(f"waraka reload failed: {output}")
        return done.returncode, output

    def set_settings(self, name, **values):
        """Rewrites `key = value` lines of the config file `config/NAME`; each
        key must be there once."""

        def change(text):
            for key, value in values.items():
                text, count = re.subn(rf"(?m)^{key} =.*$", f"{key} = {value}", text)
                assert count == 1, key
            return text

        self.edit(f"config/{name}", change)

    def smarthost(self, port):
        """Relayed mail leaves through 127.0.0.1:`port`."""
        self.edit("waraka.toml", lambda t: t + f'\n[outbound]\nsmarthost = {{ host = "127.0.0.1", port = {port} }}\n')

    def hold_outbound(self):
        """Relayed mail waits in the outbound queue: its smarthost is a port
        where nothing listens, so a test can look at what was queued."""
        self.smarthost(1)

    def enable_metrics(self, port):
        """Serves `/metrics` on 127.0.0.1:`port` (see `prometheus`)."""
        self.edit("waraka.toml", lambda t: t + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')

    def wait_for_log(self, pattern, timeout=10):
        """The first log line matching `pattern`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.log):
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        tail = "".join(self.log[-20:])
        raise AssertionError(f"no log line matches {pattern!r}; the log ends with:\n{tail}")

    @contextlib.contextmanager
    def stopped_on_error(self):
        """Stops the server when the block fails (as in a `setUpClass`, whose
        failure skips `tearDownClass`), then lets the error through."""
        try:
            yield self
        except BaseException:
            self.stop()
            raise

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=15)
        self.proc.stderr.close()
        self.tmp.cleanup()

    def maildir(self, tmp=False):
        """The files of the instance's maildir: the delivered ones (a file
        of tmp/ is being written, and renamed away at any moment), with
        those of tmp/ too when asked."""
        files = (p for p in (self.dir / "maildir").rglob("*") if p.is_file())
        return sorted(p for p in files if tmp or p.parent.name != "tmp")

    def deliver(self, raw, sender="a@sender.test", recipient="rcpt@example.com"):
        """Sends `raw` in one transaction: the DATA reply's code and text, and
        the bytes of the maildir files it added."""
        before = set(self.maildir())
        with smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.example", timeout=30) as s:
            s.ehlo()
            s.mail(sender)
            s.rcpt(recipient)
            code, text = s.data(raw)
        return code, text.decode(), [p.read_bytes() for p in self.maildir() if p not in before]


ROOT = pathlib.Path(__file__).resolve().parents[2]
"""The repository."""


def waraka_plugin(*args, timeout=900):
    """Runs `waraka plugin ARGS`; fails with its output when it fails."""
    done = subprocess.run([BIN, "plugin", *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"waraka plugin {' '.join(map(str, args))} failed:\n{done.stdout}{done.stderr}")
    return done


def example_plugin(example, sdk_files, into):
    """Lays out an example plugin as `waraka plugin new` lays out a skeleton:
    the example's files, the language's SDK files and `wit/`, in INTO/<name>."""
    root = pathlib.Path(into) / example.name
    shutil.copytree(example, root, ignore=shutil.ignore_patterns("__pycache__"))
    for sdk in sdk_files:
        shutil.copy(sdk, root)
    shutil.copytree(ROOT / "wit", root / "wit")
    return root


def timed_build(root):
    """`waraka plugin build ROOT`: the component's path and the seconds it took."""
    started = time.monotonic()
    built = waraka_plugin("build", root)
    last = built.stdout.strip().splitlines()[-1]
    return pathlib.Path(last.removeprefix("built ")), time.monotonic() - started


def install_plugin(server, wasm, name):
    """Installs WASM as plugins/NAME.wasm as the docs say: copy to a temporary
    name, then rename, so a running server never sees half a file."""
    part = server.dir / "plugins" / f".{pathlib.Path(name).name}.part"
    shutil.copy(wasm, part)
    part.rename(server.dir / "plugins" / f"{name}.wasm")


def compile_ms(loaded_line):
    """The compile time in a `plugin loaded` log line, in milliseconds."""
    return int(re.search(r"compile_ms=(\d+)", loaded_line).group(1))


def hook_calls(metrics_port, plugin, hook):
    """(calls, seconds) of PLUGIN's HOOK so far, from the server's /metrics."""
    m = prometheus(metrics_port)
    labels = f'{{plugin="{plugin}",hook="{hook}"}}'
    return m.get(f"waraka_plugin_hook_seconds_count{labels}", 0), m.get(f"waraka_plugin_hook_seconds_sum{labels}", 0)


def rcpt_replies(port, *recipients):
    """The RCPT replies to RECIPIENTS in one transaction from a@sender.test."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo("client.test")
        s.mail("a@sender.test")
        return [s.rcpt(r) for r in recipients]


# Raw SMTP and steady senders, for the protocol, limit and crash tests.

EHLO = b"EHLO client.test\r\n"
ENVELOPE = b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n"
REPLY_END = re.compile(rb"(?m)^\d{3} .*\r\n")


class Client:
    """A raw SMTP connection: send bytes, read whole replies."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def replies(self, count, timeout=30):
        """The next COUNT final reply lines (multi-line replies count once)."""
        deadline = time.monotonic() + timeout
        lines = []
        while len(lines) < count:
            match = REPLY_END.search(self.buf)
            if match:
                lines.append(match.group(0).decode(errors="replace").strip())
                self.buf = self.buf[match.end():]
                continue
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {lines}")
            self.buf += chunk
        return lines

    @classmethod
    def in_data(cls, port):
        """A connection greeted, past EHLO and the envelope, at DATA's 354."""
        client = cls(port)
        client.replies(1)
        client.send(EHLO)
        client.send(ENVELOPE, 3)
        return client

    def send(self, data, replies=1):
        self.sock.sendall(data)
        return self.replies(replies)

    def closed(self, timeout=10):
        """Whether the server closes the connection (reading past any reply)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def set_keys(text, settings, section=None):
    """TEXT with each `key = value` of SETTINGS set: an existing (or
    commented-out) line is replaced, a missing key is added under [SECTION]."""
    for key, value in settings.items():
        text, found = re.subn(rf"(?m)^#? ?{key} =.*$", f"{key} = {value}", text, count=1)
        if not found and section:
            text = text.replace(f"[{section}]\n", f"[{section}]\n{key} = {value}\n", 1)
    return text


def smtp_config(**settings):
    """A setup function that sets [smtp] keys of waraka.toml (TOML values)."""
    return lambda server: server.edit("waraka.toml", lambda text: set_keys(text, settings, "smtp"))



END = "end of message"
"""The last line of every `message`."""


def message(mid):
    """A message of about 2 kB identified by MID, ending with END."""
    body = "".join(f"line {i} of {mid}\r\n" for i in range(40))
    return (f"From: a@sender.test\r\nSubject: crash\r\nMessage-ID: {mid}\r\n\r\n{body}{END}\r\n").encode()


class Clients:
    """COUNT threads sending to RECIPIENT as fast as the server answers,
    reconnecting whenever the server is gone; `acked` holds the Message-IDs
    that got their 250."""

    def __init__(self, port, recipient, count=4):
        self.acked = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(port, recipient, n), daemon=True)
                        for n in range(count)]
        for t in self.threads:
            t.start()

    def run(self, port, recipient, n):
        seq = 0
        while not self.stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as s:
                    while not self.stop.is_set():
                        seq += 1
                        mid = f"<c{n}-{seq}@crash.test>"
                        s.sendmail("a@sender.test", [recipient], message(mid))
                        self.acked.append(mid)
            except (smtplib.SMTPException, OSError):
                time.sleep(0.02)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        return list(self.acked)


def greeting_of(connect):
    """The greeting code and text a client gets from `connect()` (an
    smtplib.SMTP), then a MAIL, which must be accepted, when it was 220."""
    try:
        with connect() as s:
            s.ehlo()
            code = s.mail("a@example.com")[0]
            assert code == 250, code
            return 220, ""
    except smtplib.SMTPConnectError as e:
        return e.smtp_code, e.smtp_error.decode()
    except smtplib.SMTPServerDisconnected:
        return 421, "closed"


def make_cert(cert, key, name, days=2, dns=()):
    """A self-signed certificate for 127.0.0.1, localhost and the names
    `dns`, valid for `days`, written with openssl."""
    names = ",".join(["IP:127.0.0.1", "DNS:localhost", *(f"DNS:{n}" for n in dns)])
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", str(days), "-subj", f"/CN={name}", "-addext", f"subjectAltName={names}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )


def make_ca(dir, names):
    """A certificate authority in `dir` (`ca.pem`) and a certificate it
    signed for the DNS `names` (`cert.pem`, `key.pem`): what a client that
    trusts `ca.pem` (`SSL_CERT_FILE`) verifies."""
    dir = pathlib.Path(dir)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", *ec, "-days", "2", "-subj", "/CN=Waraka test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign", "-keyout", str(dir / "ca-key.pem"), "-out", str(dir / "ca.pem"))
    run("req", *ec, "-subj", f"/CN={names[0]}", "-keyout", str(dir / "key.pem"), "-out", str(dir / "leaf.csr"))
    (dir / "leaf.ext").write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n"
                                  "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", str(dir / "leaf.csr"), "-CA", str(dir / "ca.pem"), "-CAkey", str(dir / "ca-key.pem"),
        "-CAcreateserial", "-days", "2", "-extfile", str(dir / "leaf.ext"), "-out", str(dir / "cert.pem"))
    return dir / "ca.pem", dir / "cert.pem", dir / "key.pem"


class HttpsServer:
    """Python's HTTP server on `host`:`port` over TLS with `cert` and `key`,
    answering with `handler` (a `BaseHTTPRequestHandler` class), in a thread."""

    def __init__(self, host, port, cert, key, handler):
        import http.server
        import ssl

        self.server = http.server.ThreadingHTTPServer((host, port), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def mta_sts_records(domains):
    """dnsmasq arguments publishing an MTA-STS policy for each of `domains`:
    its `_mta-sts` TXT record, and its policy host on 127.0.0.20, where
    a [`PolicyServer`] listens."""
    records = []
    for domain in domains:
        records += [f"--txt-record=_mta-sts.{domain},v=STSv1; id=20261205",
                    f"--host-record=mta-sts.{domain},127.0.0.20"]
    return records


class PolicyServer(HttpsServer):
    """HTTPS on 127.0.0.20:`port` serving `policies[DOMAIN]` (its lines
    after `version`, `\n`-separated) as the MTA-STS policy of DOMAIN to
    `mta-sts.DOMAIN`, and 404 for other domains. `policies` is read at each
    request, so a test may change it."""

    def __init__(self, port, cert, key, policies):
        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                domain = self.headers.get("Host", "").removeprefix("mta-sts.")
                policy = policies.get(domain)
                if self.path != "/.well-known/mta-sts.txt" or policy is None:
                    self.send_error(404)
                    return
                body = f"version: STSv1\r\n{policy.replace(chr(10), chr(13) + chr(10))}\r\nmax_age: 86400\r\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__("127.0.0.20", port, cert, key, Handler)


def enable_tls(server, name, cert=None, key=None):
    """Gives the instance a [tls] table with the certificate (chain) file
    `cert` and its `key`, or a fresh self-signed certificate (CN `name`)."""
    tls = server.dir / "config/tls"
    tls.mkdir(parents=True)
    if cert:
        (tls / "cert.pem").write_bytes(pathlib.Path(cert).read_bytes())
        (tls / "key.pem").write_bytes(pathlib.Path(key).read_bytes())
    else:
        make_cert(tls / "cert.pem", tls / "key.pem", name)
    server.edit("waraka.toml", lambda t: t + '\n[tls]\ncert = "config/tls/cert.pem"\nkey = "config/tls/key.pem"\n')


def auth_plain(user, password):
    """The argument of `AUTH` for PLAIN with `user` and `password` (no
    authorisation identity)."""
    import base64
    return "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def try_login(port, user, password, cafile=None, mechanism="PLAIN"):
    """AUTH with `user` and `password` on a new session with the server on
    `port`, after STARTTLS trusting the certificate `cafile` when given: its
    reply, as (code, text). PLAIN goes as UTF-8 (smtplib's own AUTH sends
    ASCII only), LOGIN through smtplib."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30) as s:
        if cafile:
            import ssl
            context = ssl.create_default_context(cafile=str(cafile))
            context.check_hostname = False
            s.starttls(context=context)
        s.ehlo()
        if mechanism == "PLAIN":
            code, text = s.docmd("AUTH", auth_plain(user, password))
        else:
            s.user, s.password = user, password
            try:
                code, text = s.auth(mechanism, getattr(s, f"auth_{mechanism.lower()}"))
            except smtplib.SMTPAuthenticationError as e:
                code, text = e.smtp_code, e.smtp_error
        return code, text.decode()


def flat_file_users(server, users):
    """Gives `auth/flat_file` these users ({name: password}) as cleartext
    entries, which it then accepts (a test's passwords need no hashing)."""
    server.edit("config/auth/flat_file.ini", lambda t: t.replace("allow_cleartext = false", "allow_cleartext = true")
                + "".join(f"{user} = plain:{password}\n" for user, password in users.items()))


def stopped_after_class(test_class, server):
    """`server` (anything with `stop`), stopped when `test_class`'s tests are done."""
    test_class.addClassCleanup(server.stop)
    return server


def waraka_admin(server, command, *args):
    """`waraka COMMAND --config DIR ARGS…` for `server`'s instance: (exit
    code, its output and errors as one stripped text)."""
    done = subprocess.run([BIN, command, "--config", str(server.dir), *args], capture_output=True, text=True)
    return done.returncode, (done.stdout + done.stderr).strip()


def waraka_queue(server, *args):
    """`waraka queue --config DIR ARGS…` for `server`'s instance."""
    return waraka_admin(server, "queue", *args)


def tls_mx(host, port, domains, cert=None, key=None, name=None):
    """A waraka on `host`:`port` with STARTTLS (`cert` and `key`, else a
    self-signed certificate for `name`) storing the mail for `domains` in
    its maildir: an MX host for outbound tests. The caller stops it."""

    def setup(server):
        enable_tls(server, name or host, cert, key)
        server.edit("config/host_list", lambda t: t + "".join(f"{domain}\n" for domain in domains))

    return Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=setup, host=host, port=port)


def prometheus(port):
    """The /metrics text of a server's `[metrics] listen` port, as {'name{labels}': value}."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def _ephemeral_ports_start():
    """Where the kernel's range of ports for outgoing connections starts."""
    try:
        return int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Where free_port picks: below the kernel's ephemeral range, so that no
# outgoing connection (of this test, or of a module running alongside) takes
# the port between the pick and the listener's bind.
PICKED_PORTS = range(10000, max(_ephemeral_ports_start(), 20000))


def free_port(*hosts):
    """A port free for both TCP and UDP on 127.0.0.1 right now, and for a TCP
    listener on each of `hosts` too (a client socket of an earlier test may
    still hold that port on another loopback address, e.g. in TIME_WAIT)."""
    while True:
        port = random.choice(PICKED_PORTS)
        if _bindable(socket.SOCK_DGRAM, "127.0.0.1", port) and all(
                _bindable(socket.SOCK_STREAM, host, port) for host in ("127.0.0.1", *hosts)):
            return port


def _bindable(kind, host, port):
    """Whether a socket of `kind` can bind `host:port` as a server would
    (with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def wait_until(condition, timeout=30, what="condition"):
    """`condition()`'s first true value, polling for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_port(port, proc, what, timeout=15):
    """Waits until something accepts TCP connections on `port` (or `proc` dies)."""
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

    def __init__(self, what, args_for_port, timeout=15):
        self.tmp = tempfile.TemporaryDirectory()
        self.port = free_port()
        self.what, self.args, self.timeout = what, args_for_port(self.port, self.tmp.name), timeout
        self._start()

    def _start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, self.proc, self.what, self.timeout)
        except BaseException:
            self.stop()
            raise

    def restart(self):
        """Stops the server and starts it again on the same port, with the
        same files (its data stays)."""
        self.proc.terminate()
        self.proc.wait(timeout=15)
        self._start()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.tmp.cleanup()


def nginx_mail_proxy(backend_port, users, smtp_auth="none"):
    """nginx's mail proxy (Debian's nginx and its mail module) on a free
    port, in front of the SMTP server on `backend_port`, passing the client
    on with XCLIENT (nginx's default). An HTTP server of this process is its
    `auth_http`: it accepts the `users` ({name: password}) and anyone when
    `smtp_auth` is `none`, and sends every session to the backend."""
    import http.server

    class Auth(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            method, user = self.headers.get("Auth-Method"), self.headers.get("Auth-User", "")
            accepted = method == "none" or users.get(user) == self.headers.get("Auth-Pass")
            self.send_response(200)
            if accepted:
                self.send_header("Auth-Status", "OK")
                self.send_header("Auth-Server", "127.0.0.1")
                self.send_header("Auth-Port", str(backend_port))
            else:
                self.send_header("Auth-Status", "Invalid login or password")
                self.send_header("Auth-Error-Code", "535 5.7.8")
                self.send_header("Auth-Wait", "1")
            self.end_headers()

        def log_message(self, *args):
            pass

    auth = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Auth)
    threading.Thread(target=auth.serve_forever, daemon=True).start()

    def args(port, tmp):
        conf = pathlib.Path(tmp) / "nginx.conf"
        conf.write_text(
            "load_module /usr/lib/nginx/modules/ngx_mail_module.so;\n"
            f"daemon off;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log info;\n"
            "events { worker_connections 64; }\n"
            "mail {\n  server_name front.test;\n"
            f"  auth_http 127.0.0.1:{auth.server_address[1]}/auth;\n  xclient on;\n"
            f"  server {{\n    listen 127.0.0.1:{port};\n    protocol smtp;\n    smtp_auth {smtp_auth};\n  }}\n}}\n")
        return ["/usr/sbin/nginx", "-p", tmp, "-c", str(conf), "-e", f"{tmp}/error.log"]

    proxy = Service("nginx", args)
    stop = proxy.stop

    def stop_both():
        stop()
        auth.shutdown()
        auth.server_close()

    proxy.stop = stop_both
    return proxy


def dnsmasq(records):
    """dnsmasq answering only `records` (its command-line options, e.g.
    `--mx-host=d,mx.d,10`) on UDP and TCP, with no upstream servers."""
    return Service("dnsmasq", lambda port, tmp: [
        shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
        f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces", f"--pid-file={tmp}/pid",
        *(["--user=root"] if os.geteuid() == 0 else []), *records,
    ])


def pebble(dns_port, http_port, cert, key):
    """Let's Encrypt's test CA (Debian's pebble) on TCP loopback: its
    directory at `.directory` over HTTPS with `cert` and `key`, names
    resolved with the DNS server on `dns_port`, HTTP-01 challenges fetched
    from `http_port`, and no artificial delays or refused nonces."""

    def args(port, tmp):
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{port}", "managementListenAddress": f"127.0.0.1:{free_port()}",
            "certificate": str(cert), "privateKey": str(key), "httpPort": http_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False}}
        path = pathlib.Path(tmp) / "pebble.json"
        path.write_text(json.dumps(config))
        return ["env", "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", shutil.which("pebble") or "/usr/bin/pebble",
                "-config", str(path), "-dnsserver", f"127.0.0.1:{dns_port}"]

    service = Service("pebble", args)
    service.directory = f"https://localhost:{service.port}/dir"
    return service


class Knot:
    """Knot DNS serving a DNSSEC-signed root zone that delegates each of
    `zones` ({name: zone file lines}) to itself: signed, with its DS in the
    root, when the name is in `signed`, unsigned otherwise (and bogus, with
    a DS in the root that no key matches, when it is in `bogus`). `.anchor` is a
    file of the root's key, for `[dns] trust_anchor`: resolvers that trust
    it validate these zones as they would the real root's. With
    `update_key` (a TSIG key's name and base64 secret), the zones take
    dynamic updates (RFC 2136) signed with it."""

    SOA = "@ SOA ns. admin. {serial} 3600 600 86400 300\n"

    def __init__(self, zones, signed, bogus=(), update_key=None):
        self.tmp = tempfile.TemporaryDirectory()
        root = pathlib.Path(self.tmp.name)
        (root / "db").mkdir()
        self.port = free_port()
        self.conf = root / "knot.conf"
        lines = [
            "server:", f"    listen: 127.0.0.1@{self.port}", f"    rundir: {root}",
            "database:", f"    storage: {root / 'db'}",
            "control:", f"    listen: {root / 'knot.sock'}",
        ]
        if update_key:
            name, secret = update_key
            lines += ["key:", f"  - id: {name}", "    algorithm: hmac-sha256", f"    secret: {secret}",
                      "acl:", "  - id: update", f"    key: {name}", "    action: update"]
        lines += [
            "policy:", "  - id: fast", "    algorithm: ecdsap256sha256", "    ksk-lifetime: 0", "    zsk-lifetime: 0",
            "template:", "  - id: default", f"    storage: {root}", "    zonefile-sync: -1",
            "zone:", "  - domain: .", "    file: root.zone", "    dnssec-signing: on", "    dnssec-policy: fast",
        ]
        for name in zones:
            lines += [f"  - domain: {name}", f"    file: {name}.zone"]
            if update_key:
                lines.append("    acl: update")
            if name in signed:
                lines += ["    dnssec-signing: on", "    dnssec-policy: fast"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.root_zone = root / "root.zone"
        delegations = "".join(f"{name}. NS ns.\n" for name in zones)
        self.root_zone.write_text("$TTL 300\n" + self.SOA.format(serial=1) + "@ NS ns.\nns. A 127.0.0.1\n" + delegations)
        for name, records in zones.items():
            (root / f"{name}.zone").write_text("$TTL 300\n" + self.SOA.format(serial=1) + "@ NS ns.\n" + records)
        self.log = open(root / "knotd.log", "w")
        self.proc = subprocess.Popen([self.tool("knotd"), "-c", str(self.conf)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, self.proc, "knotd")
            self.delegate(signed, bogus)
        except BaseException:
            self.stop()
            raise

    def delegate(self, signed, bogus):
        """Puts the DS records of the `signed` zones (and made-up ones for
        the `bogus` ones) into the root, and writes `.anchor`."""
        # Each signed child's DS goes into the root, once Knot made its keys.
        ds = [self.wait_for([self.tool("keymgr"), "-c", str(self.conf), name, "ds"], " 13 2 ") for name in signed]
        ds += [f"{name}. DS 4242 13 2 {'ab' * 32}" for name in bogus]
        text = self.root_zone.read_text().replace(self.SOA.format(serial=1), self.SOA.format(serial=2))
        self.root_zone.write_text(text + "".join(d.replace(" DS ", " 300 DS ", 1) + "\n" for d in ds))
        # The control socket may come up after the DNS port: ask until it answers.
        reload = [self.tool("knotc"), "-c", str(self.conf), "zone-reload", "."]
        wait_until(lambda: subprocess.run(reload, capture_output=True).returncode == 0, what="knotc zone-reload")
        for name in [*signed, *bogus]:
            self.wait_for(self.dig(name, "DS"), " 13 2 ")
        key = self.wait_for(self.dig(".", "DNSKEY"), "257 3 ")
        self.anchor = self.conf.parent / "anchor"
        self.anchor.write_text(f". 300 IN DNSKEY {key}\n")

    @staticmethod
    def tool(name):
        """Knot's programs are in /usr/sbin, which a user's PATH may lack."""
        return shutil.which(name) or f"/usr/sbin/{name}"

    def dig(self, name, rtype):
        return ["kdig", "@127.0.0.1", "-p", str(self.port), name, rtype, "+short"]

    @staticmethod
    def wait_for(command, marker, timeout=15):
        """The first line of `command`'s output containing `marker`, once there is one."""
        def found():
            out = subprocess.run(command, capture_output=True, text=True).stdout
            return next((line.strip() for line in out.splitlines() if marker in line), None)

        return wait_until(found, timeout, f"{' '.join(command)} to print {marker!r}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.log.close()
        self.tmp.cleanup()


def dovecot_base(tmp):
    """A test Dovecot's directory `tmp` (open to its login processes), the
    user its mail belongs to, and the settings each starts with: its run,
    state and log paths and, without root, this user as its own users."""
    root = pathlib.Path(tmp)
    os.chmod(root, 0o755)
    owner = "dovecot" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    settings = f"base_dir = {root}/run\nstate_dir = {root}/state\nlog_path = {root}/dovecot.log\n"
    if os.geteuid() != 0:
        settings += f"default_internal_user = {owner}\ndefault_login_user = {owner}\n"
    return root, owner, settings


def dovecot(users, passwords=None):
    """Dovecot's LMTP service on TCP loopback and on the Unix socket
    `.lmtp_socket()`, delivering to maildirs under its temporary directory
    (`.mailbox(user)`), and its authentication service on `.auth_port`.
    `users` maps each address it knows to its quota in bytes (0: none); any
    other address is unknown. `passwords` maps users to their passwords (the
    others have none that works)."""
    auth_port = free_port()

    def args(port, tmp):
        root, owner, base = dovecot_base(tmp)
        mail = root / "mail"
        mail.mkdir()
        shutil.chown(mail, owner, owner)
        secrets = passwords or {}
        lines = [f"{user}:" + (f"{{PLAIN}}{secrets[user]}" if user in secrets else "") + "::::::"
                 + (f"userdb_quota_rule=*:storage={quota}B" if quota else "")
                 for user, quota in users.items()]
        (root / "users").write_text("\n".join(lines) + "\n")
        (root / "dovecot.conf").write_text(f"""protocols = lmtp
{base}ssl = no
listen = 127.0.0.1
mail_location = maildir:{mail}/%d/%n
mail_uid = {owner}
mail_gid = {owner}
first_valid_uid = 1
mail_plugins = quota
plugin {{
  quota = maildir:User quota
}}
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
  default_fields = uid={owner} gid={owner} home={mail}/%d/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service auth {{
  inet_listener auth {{
    address = 127.0.0.1
    port = {auth_port}
  }}
}}
""")
        return [shutil.which("dovecot") or "/usr/sbin/dovecot", "-F", "-c", str(root / "dovecot.conf")]

    service = Service("dovecot", args)
    service.auth_port = auth_port
    service.lmtp_socket = lambda: str(pathlib.Path(service.tmp.name) / "run" / "lmtp")
    service.mailbox = lambda user: sorted(
        (pathlib.Path(service.tmp.name) / "mail" / user.split("@")[1] / user.split("@")[0] / "new").glob("*"))
    return service


def dovecot_imap(passwords, cert, key):
    """Dovecot's IMAP service on TCP loopback: `.port` for `STARTTLS`,
    `.imaps_port` for TLS from the start, both with `cert` and `key`.
    `passwords` maps users to their passwords; for any other user of the
    domain `busy.test` it cannot decide now (`NO [UNAVAILABLE]`: its
    second password database, a checkpassword program, fails for them)."""
    imaps_port = free_port()

    def args(port, tmp):
        root, owner, base = dovecot_base(tmp)
        (root / "users").write_text("".join(f"{user}:{{PLAIN}}{secret}::::::\n" for user, secret in passwords.items()))
        # checkpassword's exit codes: 111 a temporary failure, 1 a refusal.
        busy = root / "busy.sh"
        busy.write_text("#!/bin/sh\ncase \"$(head -c 512 <&3 | tr '\\0' '\\n' | head -n 1)\" in\n"
                        "  *@busy.test) exit 111 ;;\nesac\nexit 1\n")
        busy.chmod(0o755)
        (root / "dovecot.conf").write_text(f"""protocols = imap
{base}listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
mail_location = maildir:{root}/mail/%n
mail_uid = {owner}
mail_gid = {owner}
first_valid_uid = 1
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
}}
passdb {{
  driver = checkpassword
  args = {busy}
}}
userdb {{
  driver = static
  args = uid={owner} gid={owner} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
""")
        return [shutil.which("dovecot") or "/usr/sbin/dovecot", "-F", "-c", str(root / "dovecot.conf")]

    service = Service("dovecot", args)
    service.imaps_port = imaps_port
    return service


def clamd(signatures):
    """A ClamAV daemon on TCP loopback whose only database is `signatures`
    (lines of an `.ndb` file: `NAME:0:*:HEX`), so it needs no downloads."""

    def args(port, tmp):
        db = pathlib.Path(tmp) / "db"
        db.mkdir()
        (db / "test.ndb").write_text("".join(line + "\n" for line in signatures))
        conf = pathlib.Path(tmp) / "clamd.conf"
        conf.write_text(f"Foreground yes\nDatabaseDirectory {db}\nTCPSocket {port}\nTCPAddr 127.0.0.1\n"
                        f"LogFile {tmp}/clamd.log\nPidFile {tmp}/clamd.pid\n")
        return [shutil.which("clamd") or "/usr/sbin/clamd", "-c", str(conf)]

    return Service("clamd", args)


def opendkim(settings, files=None):
    """Debian's OpenDKIM as a milter on a free loopback port, in the
    foreground, with `settings` (lines of opendkim.conf, where `{dir}` is
    its temporary directory) and `files` (name: bytes) written there."""

    def args(port, tmp):
        for name, data in (files or {}).items():
            (pathlib.Path(tmp) / name).write_bytes(data)
        conf = pathlib.Path(tmp) / "opendkim.conf"
        conf.write_text(f"Socket inet:{port}@127.0.0.1\nPidFile {tmp}/opendkim.pid\nSyslog no\n"
                        + settings.replace("{dir}", tmp))
        return ["/usr/sbin/opendkim", "-f", "-x", str(conf)]

    return Service("opendkim", args)


def clamav_milter(clamd_port, settings=""):
    """Debian's clamav-milter on a free loopback port, in the foreground,
    scanning with the clamd on `clamd_port`, with `settings` (lines of
    clamav-milter.conf such as `OnInfected Reject`)."""

    def args(port, tmp):
        conf = pathlib.Path(tmp) / "clamav-milter.conf"
        conf.write_text(f"MilterSocket inet:{port}@127.0.0.1\nClamdSocket tcp:127.0.0.1:{clamd_port}\n"
                        f"Foreground yes\nPidFile {tmp}/pid\nLogFile {tmp}/log\nTemporaryDirectory {tmp}\n" + settings)
        return [shutil.which("clamav-milter") or "/usr/sbin/clamav-milter", "-c", str(conf)]

    return Service("clamav-milter", args)


LDAP_BASE = "dc=example,dc=com"
LDAP_ADMIN = ("cn=admin,dc=example,dc=com", "admin-pw")


def slapd(ldif, tls=None, starttls=False):
    """Debian's OpenLDAP slapd on a free loopback port, in the foreground,
    serving dc=example,dc=com from a temporary MDB database loaded with
    `ldif` (by ldapadd, as `LDAP_ADMIN`). Passwords serve binds only;
    entries are read by bound users only, as a company directory is set up.
    With `tls` (a `make_ca` directory for localhost) it speaks ldaps://, or
    with `starttls` ldap:// on which it refuses everything before StartTLS."""
    scheme = "ldaps" if tls and not starttls else "ldap"

    def args(port, tmp):
        os.mkdir(f"{tmp}/db")
        certs = (f"TLSCACertificateFile {tls}/ca.pem\nTLSCertificateFile {tls}/cert.pem\n"
                 f"TLSCertificateKeyFile {tls}/key.pem\n") if tls else ""
        certs += "security tls=1\n" if starttls else ""
        conf = pathlib.Path(tmp) / "slapd.conf"
        conf.write_text(
            "".join(f"include /etc/ldap/schema/{s}.schema\n" for s in ("core", "cosine", "inetorgperson", "misc"))
            + f"modulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {tmp}/slapd.pid\n{certs}"
            + f"database mdb\nmaxsize 10485760\nsuffix \"{LDAP_BASE}\"\nrootdn \"{LDAP_ADMIN[0]}\"\n"
            + f"rootpw {LDAP_ADMIN[1]}\ndirectory {tmp}/db\n"
            + "access to attrs=userPassword by anonymous auth by * none\naccess to * by users read by * none\n")
        return ["/usr/sbin/slapd", "-f", str(conf), "-h", f"{scheme}://127.0.0.1:{port}/", "-d", "0"]

    server = Service("slapd", args)
    server.url = f"{scheme}://{'localhost' if tls else '127.0.0.1'}:{server.port}"
    # The loader does not check the certificate (libldap checks the name
    # 127.0.0.1 resolves back to); what is tested is Waraka's check.
    env = {**os.environ, "LDAPTLS_REQCERT": "never"} if tls else None
    try:
        subprocess.run(["ldapadd", "-x", *(["-ZZ"] if starttls else []), "-H", server.url, "-D", LDAP_ADMIN[0],
                        "-w", LDAP_ADMIN[1]], input=ldif, text=True, check=True, capture_output=True, env=env)
    except BaseException:
        server.stop()
        raise
    return server


def scripted_milter():
    """`scripted_milter.py` (libmilter, through Debian's python3-milter) on
    a free loopback port: it refuses some senders, recipients and clients,
    and marks what it accepts."""
    script = pathlib.Path(__file__).with_name("scripted_milter.py")
    return Service("scripted milter", lambda port, tmp: ["/usr/bin/python3", str(script), str(port)])


def rspamd(milter=False):
    """rspamd with the Debian package's rules, its normal worker alone on a
    free port, its state in a temporary directory, DNS pointed at a closed
    port (lookups fail at once) and the GTUBE test patterns on: `XJS*…` is
    rejected, `YJS*…` gets "add header", `ZJS*…` "rewrite subject", `AJS*…`
    "no action". With `milter`, its proxy worker also speaks the milter
    protocol on `milter_port`, scanning by itself. Its first start compiles
    its regular expressions (~10 s)."""
    milter_port = free_port() if milter else None

    def args(port, tmp):
        conf = pathlib.Path(tmp) / "rspamd.conf"
        proxy = (f'worker "rspamd_proxy" {{ bind_socket = "127.0.0.1:{milter_port}"; milter = yes; timeout = 120s;\n'
                 '  upstream "local" { default = yes; self_scan = yes; } count = 1; }\n') if milter else ""
        conf.write_text(
            '.include "$CONFDIR/common.conf"\n'
            'options { pidfile = "$RUNDIR/rspamd.pid"; .include "$CONFDIR/options.inc"\n'
            f'  enable_test_patterns = true; dns {{ nameserver = ["127.0.0.1:{free_port()}"]; timeout = 0.2s; retransmits = 1; }} }}\n'
            'logging { type = "file"; filename = "$LOGDIR/rspamd.log"; level = "warning"; }\n'
            f'worker "normal" {{ bind_socket = "127.0.0.1:{port}"; .include "$CONFDIR/worker-normal.inc" count = 1; }}\n'
            + proxy)
        user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
        return ["rspamd", "-f", "-i", "-u", user, "-g", group, "-c", str(conf),
                *(f"--var={var}={tmp}" for var in ("LOCAL_CONFDIR", "DBDIR", "RUNDIR", "LOGDIR"))]

    service = Service("rspamd", args, timeout=90)
    service.milter_port = milter_port
    if milter:
        try:
            wait_for_port(milter_port, service.proc, "rspamd's proxy worker", 90)
        except BaseException:
            service.stop()
            raise
    return service


def spamd(user_prefs=None):
    """SpamAssassin's spamd with the Debian package's rules on a free port,
    one child, network tests off (no DNS lists, no Bayes): GTUBE scores
    1000, a short clean message a few points for its missing headers.
    `user_prefs` maps user names to the `user_prefs` text spamd applies
    when asked as that user (its virtual users)."""

    def args(port, tmp):
        root = pathlib.Path(tmp)
        os.chmod(root, 0o755)  # read by the unprivileged child
        for pre in pathlib.Path("/etc/spamassassin").glob("*.pre"):
            shutil.copy(pre, root)
        (root / "local.cf").write_text("use_bayes 0\nskip_rbl_checks 1\ndns_available no\nuse_auto_whitelist 0\n")
        for user, prefs in (user_prefs or {}).items():
            (root / "users" / user).mkdir(parents=True)
            (root / "users" / user / "user_prefs").write_text(prefs)
            os.chmod(root / "users", 0o755)
            os.chmod(root / "users" / user, 0o755)
        as_root = ["-u", "nobody"] if os.geteuid() == 0 else []
        return [shutil.which("spamd") or "/usr/sbin/spamd", f"--listen=127.0.0.1:{port}", "--max-children=1",
                "--min-children=1", *as_root, f"--siteconfigpath={root}", f"--helper-home-dir={root}",
                f"--pidfile={root}/pid", "--syslog=stderr", "--nouser-config", f"--virtual-config-dir={root}/users/%u"]

    return Service("spamd", args, timeout=60)


def redis():
    """A throw-away redis-server with no persistence."""
    return Service("redis-server", lambda port, tmp: [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp,
    ])


S3_ACCESS_KEY = "waraka-test"
S3_SECRET_KEY = "waraka-test-secret"


class S3:
    """An S3-compatible server (`s3-test-server`: s3s-fs, checking SigV4
    signatures) on a free port, keeping objects as files under `root`
    (`root/BUCKET/KEY`). `stop()` and `start()` keep the objects."""

    def __init__(self, buckets=("mail",)):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = pathlib.Path(self.tmp.name) / "root"
        self.log_path = pathlib.Path(self.tmp.name) / "requests.log"
        for bucket in buckets:
            (self.root / bucket).mkdir(parents=True)
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        binary = TARGET / "debug/s3-test-server"
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([str(binary), str(self.port), str(self.root), S3_ACCESS_KEY, S3_SECRET_KEY],
                                         stdout=log, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc, "s3-test-server")

    def requests(self):
        """Every request so far, as `METHOD PATH?QUERY[ copy]` lines."""
        return [line for line in self.log_path.read_text().splitlines() if not line.startswith("listening")]

    def toml(self, name="mail", bucket="mail", secret=S3_SECRET_KEY):
        """The `[blobstore.NAME]` table for this server."""
        return (f'\n[blobstore.{name}]\nbackend = "s3"\nbucket = "{bucket}"\nregion = "us-east-1"\n'
                f'endpoint = "http://127.0.0.1:{self.port}"\npath_style = true\n'
                f'access_key_id = "{S3_ACCESS_KEY}"\nsecret_access_key = "{secret}"\n')

    def objects(self, bucket="mail"):
        """`{key: bytes}` of every object in `bucket`."""
        base = self.root / bucket
        return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*"))
                if p.is_file() and not p.name.startswith(".") and ".s3s" not in p.parts}

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    def close(self):
        self.stop()
        self.tmp.cleanup()


PG_BIN = next(iter(sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
_PG_TEMPLATE = None


class Postgres:
    """A throw-away PostgreSQL cluster on a free port (`initdb` once per test
    run into a template that each instance copies; as the `postgres` user when
    run as root, since initdb refuses root). `stop()`/`start()` keep the data."""

    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="waraka-pg-")
        self.dir = pathlib.Path(self.tmp.name)
        shutil.copytree(self._template(), self.dir / "data", symlinks=True)
        self._own(self.dir)
        self.port = free_port()
        self.start()

    @staticmethod
    def _as_owner(args):
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args

    @staticmethod
    def _own(path):
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:postgres", str(path)], check=True)

    @classmethod
    def _template(cls):
        global _PG_TEMPLATE
        if _PG_TEMPLATE is None:
            _PG_TEMPLATE = tempfile.TemporaryDirectory(prefix="waraka-pg-template-")
            base = pathlib.Path(_PG_TEMPLATE.name)
            cls._own(base)
            subprocess.run(cls._as_owner([str(PG_BIN / "initdb"), "-D", str(base / "data"), "-U", "postgres",
                                          "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"]),
                           check=True, capture_output=True)
        return pathlib.Path(_PG_TEMPLATE.name) / "data"

    def start(self):
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        subprocess.run(self._as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-l",
                                       str(self.dir / "pg.log"), "-w", "-o", options, "start"]),
                       check=True, capture_output=True)

    def stop(self):
        subprocess.run(self._as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w",
                                       "stop"]), capture_output=True)

    @property
    def url(self):
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def psql(self, sql):
        """Runs `sql` with psql; returns the rows as lists of strings."""
        out = subprocess.run(["psql", self.url, "-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1",
                              "-c", sql], check=True, capture_output=True, text=True).stdout
        return [line.split("|") for line in out.splitlines() if line]

    def close(self):
        self.stop()
        self.tmp.cleanup()


class SmtpReceiver:
    """A scripted SMTP server on `host`:`port` standing for a remote MX.

    `rcpt_reply(address, attempt)` gives the reply line to each RCPT
    (`attempt` counts RCPTs for that address so far, from 1); every message
    accepted is kept in `messages` as (sender, recipients, bytes), and every
    MAIL and RCPT line as sent in `commands`. `delay` seconds pass before
    each reply to the message. `extensions` are offered in the EHLO reply
    besides PIPELINING and 8BITMIME; `greetings` keeps each session's
    client address and EHLO name, `encrypted` whether each message came
    over TLS. With `tls` (certificate and key files)
    it offers STARTTLS, and `tls_extensions` once TLS is up. `most_open` is
    the largest number of sessions open at once.
    """

    def __init__(self, host, port, rcpt_reply=None, delay=0.0, name="mx.test", extensions=(),
                 tls=None, tls_extensions=()):
        import socketserver
        import ssl

        self.messages = []
        self.commands = []
        self.greetings = []
        self.encrypted = []
        self.extensions = list(extensions)
        self.tls_extensions = list(tls_extensions)
        self.tls = None
        if tls:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(str(tls[0]), str(tls[1]))
        self.attempts = {}
        self.open = 0
        self.most_open = 0
        self.lock = threading.Lock()
        self.rcpt_reply = rcpt_reply or (lambda address, attempt: "250 2.1.5 OK")
        self.delay = delay
        receiver = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                with receiver.lock:
                    receiver.open += 1
                    receiver.most_open = max(receiver.most_open, receiver.open)
                counted = True

                def leave():
                    nonlocal counted
                    with receiver.lock:
                        if counted:
                            counted = False
                            receiver.open -= 1

                try:
                    receiver._converse(self.request, name, leave)
                except (ConnectionError, OSError):
                    pass
                finally:
                    leave()

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self.server = Server((host, port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _converse(self, sock, name, leave):
        """One session on `sock`; `leave()` stops counting it as open, which
        QUIT does before its 221: a client that has its answer may open the
        next session before this thread is done with the closing one."""
        rfile, wfile = sock.makefile("rb"), sock.makefile("wb")
        encrypted = False

        def say(line):
            wfile.write(line.encode() + b"\r\n")
            wfile.flush()

        say(f"220 {name} ESMTP test receiver")
        sender, recipients = None, []
        try:
            while True:
                line = rfile.readline()
                if not line:
                    return
                command = line.decode("utf-8", "replace").strip()
                verb = command[:4].upper()
                if verb in ("MAIL", "RCPT"):
                    with self.lock:
                        self.commands.append(command)
                if verb == "EHLO":
                    with self.lock:
                        self.greetings.append((sock.getpeername()[0], command[5:].strip()))
                    say(f"250-{name}")
                    offered = ["PIPELINING", *self.extensions]
                    if self.tls and not encrypted:
                        offered.append("STARTTLS")
                    if encrypted:
                        offered += self.tls_extensions
                    for keyword in offered:
                        say(f"250-{keyword}")
                    say("250 8BITMIME")
                elif verb == "STAR" and self.tls and not encrypted:
                    say("220 2.0.0 Ready to start TLS")
                    sock = self.tls.wrap_socket(sock, server_side=True)
                    rfile, wfile = sock.makefile("rb"), sock.makefile("wb")
                    encrypted, sender, recipients = True, None, []
                elif verb == "HELO":
                    say(f"250 {name}")
                elif verb == "MAIL":
                    sender, recipients = re.search(r"<([^>]*)>", command).group(1), []
                    say("250 2.1.0 OK")
                elif verb == "RCPT":
                    address = re.search(r"<([^>]*)>", command).group(1)
                    with self.lock:
                        attempt = self.attempts.get(address, 0) + 1
                        self.attempts[address] = attempt
                    reply = self.rcpt_reply(address, attempt)
                    if reply.startswith("2"):
                        recipients.append(address)
                    say(reply)
                elif verb == "DATA":
                    if not recipients:
                        say("554 5.5.1 No valid recipients")
                        continue
                    say("354 go ahead")
                    data = b""
                    while True:
                        chunk = rfile.readline()
                        if not chunk:
                            return
                        if chunk == b".\r\n":
                            break
                        data += chunk[1:] if chunk.startswith(b".") else chunk
                    time.sleep(self.delay)
                    with self.lock:
                        self.messages.append((sender, list(recipients), data))
                        self.encrypted.append(encrypted)
                    say("250 2.0.0 Stored")
                elif verb == "RSET":
                    sender, recipients = None, []
                    say("250 2.0.0 OK")
                elif verb == "QUIT":
                    leave()
                    say("221 2.0.0 Bye")
                    return
                else:
                    say("502 5.5.2 Not implemented")
        finally:
            if encrypted:
                sock.close()

    def received(self):
        with self.lock:
            return list(self.messages)

    def wait_for(self, count, timeout=30):
        """The messages once there are at least `count`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received()
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{len(self.received())} messages received, {count} expected")

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
