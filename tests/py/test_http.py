"""The `http` capability end to end through `queue/http`: a real HTTP
server of the test (Python's http.server, also over TLS with a CA the
server trusts through SSL_CERT_FILE) takes the messages; what it did not
take is never acknowledged."""

import http.server
import pathlib
import smtplib
import ssl
import tempfile
import threading
import unittest

from harness import Waraka, make_ca, stopped_after_class

MESSAGE = b"From: a@sender.test\r\nTo: rcpt@example.com\r\nSubject: webhook\r\n\r\nbody\r\n"


class Webhook:
    """An HTTP server that keeps what is POSTed to it and answers `status`."""

    def __init__(self, tls_dir=None):
        self.posts, self.status = [], 200
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(hook.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls_dir:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(f"{tls_dir}/cert.pem", f"{tls_dir}/key.pem")
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def webhook_setup(url):
    def setup(server):
        server.edit("waraka.toml", lambda t: t + f"""
[http.webhook]
url = "{url}"
headers = {{ Authorization = "Bearer s3cret" }}
timeout = "5s"

[plugin."queue/http"]
grants = ["http:webhook"]
""")
        server.set_settings("queue/http.ini", path="messages?source=mx")

    return setup


def send(server, recipients=("rcpt@example.com",)):
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        s.mail("a@sender.test")
        for r in recipients:
            s.rcpt(r)
        code, text = s.data(MESSAGE)
        return code, text.decode()


class QueueHttpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hook = stopped_after_class(cls, Webhook())
        cls.server = stopped_after_class(cls, Waraka(
            ["rcpt_to.in_host_list", "queue/http"], setup=webhook_setup(f"http://127.0.0.1:{cls.hook.port}/hooks/mail")))

    def setUp(self):
        self.hook.posts.clear()
        self.hook.status = 200

    def test_a_message_is_posted_with_its_envelope(self):
        code, text = send(self.server, ("rcpt@example.com", "other@example.com"))
        self.assertEqual(code, 250, text)
        (path, headers, body) = self.hook.posts[0]
        self.assertEqual(path, "/hooks/mail/messages?source=mx")
        self.assertEqual(headers["authorization"], "Bearer s3cret", "the service's credentials, added by the host")
        self.assertEqual(headers["content-type"], "message/rfc822")
        self.assertEqual(headers["x-waraka-sender"], "a@sender.test")
        self.assertEqual(headers["x-waraka-recipients"], "rcpt@example.com, other@example.com")
        self.assertIn(headers["x-waraka-queue-id"], text)
        self.assertTrue(body.startswith(b"Received: from client.test"), body[:60])
        self.assertTrue(body.endswith(MESSAGE))

    def test_a_refusing_service_gets_the_client_to_retry(self):
        self.hook.status = 503
        code, text = send(self.server)
        self.assertEqual((code, text), (451, "4.3.0 Queue temporarily unavailable, try again later"))
        self.server.wait_for_log(r"queue/http: webhook answered 503 for [\w.]+: ok")


class QueueHttpsTest(unittest.TestCase):
    def test_messages_go_over_https_to_a_trusted_service_only(self):
        with tempfile.TemporaryDirectory() as ca:
            make_ca(ca, ["localhost"])
            hook = Webhook(tls_dir=ca)
            self.addCleanup(hook.stop)
            url = f"https://localhost:{hook.port}/"
            trusted = Waraka(["rcpt_to.in_host_list", "queue/http"], setup=webhook_setup(url),
                             env={"SSL_CERT_FILE": str(pathlib.Path(ca) / "ca.pem")})
            self.addCleanup(trusted.stop)
            self.assertEqual(send(trusted)[0], 250)
            self.assertEqual(len(hook.posts), 1)
            untrusting = Waraka(["rcpt_to.in_host_list", "queue/http"], setup=webhook_setup(url))
            self.addCleanup(untrusting.stop)
            self.assertEqual(send(untrusting)[0], 451, "the certificate does not check without the CA")
            self.assertEqual(len(hook.posts), 1)


class UnreachableServiceTest(unittest.TestCase):
    def test_nothing_is_acknowledged_when_the_service_is_down(self):
        server = Waraka(["rcpt_to.in_host_list", "queue/http"], setup=webhook_setup("http://127.0.0.1:1/"))
        self.addCleanup(server.stop)
        self.assertEqual(send(server)[0], 451)
        server.wait_for_log(r"queue/http: posting [\w.]+ to webhook failed: Error::Backend")


if __name__ == "__main__":
    unittest.main()
