"""`waraka import-haraka`: an instance made from a real Haraka install
directory (Haraka 3.3.4's `haraka -i`, then set up as an administrator
would), served and driven over SMTP: its listeners, name, greeting, size
limit, TLS certificate, users, accepted domains and next hop all work as
they did under Haraka; and the report tells what was not carried."""

import pathlib
import shutil
import smtplib
import ssl
import subprocess
import tempfile
import tomllib
import unittest

from harness import (BIN, SmtpReceiver, Waraka, auth_plain, free_port, install_plugin, make_cert, timed_build,
                     wait_for_port, wait_until)

# A Haraka plugin of the administrator's own, as Haraka's plugin guide
# writes one.
MY_POLICY = """const constants = require('haraka-constants');

exports.register = function () {
    this.register_hook('rcpt', 'refuse_retired');
};

exports.refuse_retired = function (next, connection, params) {
    if (params[0].user === 'retired') return next(constants.DENY, 'No such user');
    next();
};
"""
# The same policy as an npm-style package in several files, as Haraka loads
# plugins/NAME/: its main module (package.json's `main`), a module of its
# own and a JSON file it requires, a dependency (haraka-dsn, which haraka.js
# has), and tests and node_modules that are not part of it.
MY_PACKAGE = {
    "package.json": '{"name": "haraka-plugin-my-package", "main": "lib/main", "dependencies": {"haraka-dsn": "^1"}}',
    "lib/main.js": """'use strict';
// DENY and the other codes are globals, as Haraka makes them.
const DSN = require('haraka-dsn');
const { refused } = require('./refused');
const settings = require('../settings.json');

exports.register = function () {
    this.register_hook('rcpt', 'check');
};

exports.check = function (next, connection, params) {
    if (refused(params[0].user)) return next(DENY, DSN.addr_bad_dest_system(settings.message));
    next();
};
""",
    "lib/refused.js": "exports.refused = (user) => require('../settings').users.includes(user);\n",
    "settings.json": '{"users": ["retired"], "message": "Retired address"}\n',
    "test/main.js": "require('mocha');\n",
    "node_modules/haraka-dsn/index.js": "module.exports = {};\n",
}
from test_geoip import write_asn

HARAKA = pathlib.Path.home() / ".local/haraka/node_modules/.bin/haraka"


def haraka_install(into):
    """`haraka -i INTO`: the instance directory Haraka lays out."""
    subprocess.run([str(HARAKA), "-i", str(into)], check=True, capture_output=True, timeout=120)
    return into / "config"


def write(config, name, text):
    path = config / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def import_haraka(haraka, into):
    return subprocess.run([BIN, "import-haraka", str(haraka), str(into)], capture_output=True, text=True,
                          timeout=60)


def unverified():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class ImportedInstance(unittest.TestCase):
    """Haraka's default plugin list with tls, auth/flat_file, relay, a
    legacy dnsbl, a plugin of the administrator's own and process_title;
    mail forwarded to a next hop with queue/smtp_forward."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.haraka = pathlib.Path(cls.tmp.name) / "haraka"
        config = haraka_install(cls.haraka)
        cls.mx_port, cls.smtps_port, next_hop = free_port(), free_port(), free_port()
        cls.next_hop = SmtpReceiver("127.0.0.1", next_hop)
        write(config, "me", "mx.import.test\n")
        write(config, "host_list", "# local domains\nimport.test\n")
        write(config, "plugins", "\n".join([
            "# as an administrator left it", "process_title", "tls", "helo.checks", "mail_from.access", "dnsbl",
            "my_policy", "my_package", "auth/flat_file", "relay", "rcpt_to.in_host_list", "queue/smtp_forward", ""]))
        write(config, "helo.checks.ini", "[reject]\nbare_ip=true\n[skip]\nprivate_ip=false\n")
        write(config, "mail_from.access.blacklist_regex", ".*@spam\\.test\n")
        smtp_ini = (config / "smtp.ini").read_text()
        write(config, "smtp.ini", smtp_ini + f"\nlisten=127.0.0.1:{cls.mx_port},127.0.0.1:{cls.smtps_port}\n"
              f"smtps_port={cls.smtps_port}\ninactivity_timeout=120\nnodes=cpus\n")
        connection = (config / "connection.ini").read_text()
        assert "bytes=26214400" in connection and "[message]" in connection
        connection = connection.replace("bytes=26214400", "bytes=100000")
        connection = connection.replace("[message]", "[message]\ngreeting[]=Welcome to\ngreeting[]=Import Test")
        write(config, "connection.ini", connection)
        make_cert(config / "tls_cert.pem", config / "tls_key.pem", "mx.import.test")
        make_cert(cls.haraka / "other.crt", cls.haraka / "other.key", "other.import.test", dns=["other.import.test"])
        write(config, "tls/other.import.test.pem",
              (cls.haraka / "other.key").read_text() + (cls.haraka / "other.crt").read_text())
        write(config, "auth_flat_file.ini", "[core]\nmethods=PLAIN,LOGIN,CRAM-MD5\n[users]\nalice=wonder land\n"
              "bob@import.test=builder\n")
        write(config, "smtp_forward.ini", f"host=127.0.0.1\nport={next_hop}\nenable_tls=false\n"
              "max_connections=10\n")
        write(config, "dnsbl.zones", "bl.import.test\n")
        write(config, "dnswl.zones", "wl.import.test\n")
        write(config, "relay_acl_allow", "192.0.2.0/24\n")
        write(config, "outbound.ini", "temp_fail_intervals=1m, 5m*2\nconcurrency_max=7\n")
        (cls.haraka / "plugins").mkdir(exist_ok=True)
        write(cls.haraka, "plugins/my_policy.js", MY_POLICY)
        for path, text in MY_PACKAGE.items():
            (cls.haraka / "plugins/my_package" / path).parent.mkdir(parents=True, exist_ok=True)
            write(cls.haraka, f"plugins/my_package/{path}", text)

        def imported(server):
            shutil.rmtree(server.dir)
            cls.result = import_haraka(cls.haraka, server.dir)
            assert cls.result.returncode == 0, cls.result.stderr

        try:
            cls.server = Waraka(None, roles=("mx", "submissions"), configured_listeners=True, setup=imported)
        except BaseException:
            cls.next_hop.server.shutdown()
            cls.tmp.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.next_hop.server.shutdown()
        cls.tmp.cleanup()

    def toml(self):
        return tomllib.loads((self.server.dir / "waraka.toml").read_text())

    def test_settings_land_in_waraka_toml(self):
        config = self.toml()
        self.assertEqual(config["plugins"], ["helo.checks", "access", "dns-list", "auth/flat_file", "relay",
                                             "rcpt_to.in_host_list", "queue/smtp_forward"])
        smtp = config["smtp"]
        self.assertEqual(smtp["listen"], [f"127.0.0.1:{self.mx_port}"])
        self.assertEqual(smtp["hostname"], "mx.import.test")
        self.assertEqual(smtp["max_message_size"], 100000)
        self.assertEqual(smtp["idle_timeout"], "120s")
        self.assertEqual(config["listener"], [{"address": f"127.0.0.1:{self.smtps_port}", "role": "submissions"}])
        self.assertEqual(config["outbound"]["retry"], "1m, 5m*2")
        self.assertEqual(config["outbound"]["concurrency"], 7)
        self.assertEqual(config["outbound"]["smarthost"]["port"], self.next_hop.server.server_address[1])
        self.assertIn("# Chain order.", (self.server.dir / "waraka.toml").read_text(), "comments kept")

    def test_plugin_settings_land_in_config_files(self):
        config = self.server.dir / "config"
        self.assertEqual((config / "relay.acl_allow").read_text(), "192.0.2.0/24\n")
        self.assertEqual((config / "host_list").read_text(), "import.test\n")
        dns_list = (config / "dns-list.ini").read_text()
        self.assertIn("\nzones = bl.import.test\n", dns_list)
        self.assertIn("\nallow_zones = wl.import.test\n", dns_list)
        users = (config / "auth/flat_file.ini").read_text()
        self.assertRegex(users, r"\[users\]\nalice = \$argon2id\$.*\nbob@import\.test = \$argon2id\$")
        self.assertNotIn("wonder land", users)

    def test_a_plugin_of_ones_own_is_laid_out_to_build_with_haraka_js(self):
        source = self.server.dir / "src/my_policy"
        self.assertIn(MY_POLICY, (source / "app.js").read_text())
        self.assertTrue((source / "haraka.js").exists())
        self.assertRegex(self.result.stdout, r"its code is in src/my_policy/app\.js, run by haraka\.js: "
                                             r"`waraka plugin build src/my_policy`")

    def test_a_plugin_of_ones_own_in_several_files_builds_and_answers(self):
        source = self.server.dir / "src/my_package"
        app = (source / "app.js").read_text()
        for path in ("lib/main.js", "lib/refused.js", "settings.json"):
            self.assertIn(f'"{path}"(module', app)
        self.assertNotIn("mocha", app, "its tests are left out")
        self.assertRegex(self.result.stdout, r"plugin my_package \(plugins/my_package/\): a plugin of your own; its "
                                             r"code is in src/my_package/app\.js.*it depends on haraka-dsn")
        wasm, _ = timed_build(source)
        checked = subprocess.run([BIN, "plugin", "check", str(wasm)], capture_output=True, text=True)
        self.assertEqual(checked.returncode, 0, checked.stderr)
        # Installed as the report says, it answers in the imported chain.
        install_plugin(self.server, wasm, "my_package")
        imported = (self.server.dir / "waraka.toml").read_text()
        self.server.edit("waraka.toml", lambda t: t.replace("plugins = [", 'plugins = ["my_package", ', 1))
        try:
            self.server.reload()
            self.server.wait_for_log(r'plugin loaded plugin=my_package .*hooks=\["rcpt"\]', timeout=300)
            with smtplib.SMTP("127.0.0.1", self.mx_port, timeout=30) as s:
                s.ehlo("client.example")
                s.mail("someone@example.org")
                code, text = s.rcpt("retired@import.test")
            self.assertEqual((code, text), (550, b"5.1.2 Retired address"), "haraka-dsn's code and status")
        finally:
            self.server.edit("waraka.toml", lambda t: imported)
            self.server.reload()

    def test_report_tells_what_was_not_carried(self):
        report = self.result.stdout
        self.assertRegex(report, r"plugin my_policy \(plugins/my_policy\.js\): a plugin of your own")
        self.assertRegex(report, r"plugin process_title: `waraka status`")
        self.assertRegex(report, r"smtp\.ini nodes: Waraka is one process")
        self.assertRegex(report, r"smtp_forward\.ini max_connections: not carried")
        self.assertIn("CRAM-MD5", report)
        self.assertRegex(report, r"constrain_sender \(Haraka's default\): users may send only from their own domain")
        self.assertNotIn("wonder land", report)
        self.assertEqual(subprocess.run([BIN, "check", "--config", str(self.server.dir)],
                                        capture_output=True).returncode, 0)

    def test_greeting_size_and_tls(self):
        with smtplib.SMTP("127.0.0.1", self.mx_port, timeout=30) as s:
            s.ehlo("client.example")
            self.assertEqual(s.esmtp_features.get("size"), "100000")
            self.assertIn("starttls", s.esmtp_features)
            s.starttls(context=unverified())
            self.assertIsNotNone(s.sock.getpeercert(binary_form=True))
            s.ehlo("client.example")
            code, _ = s.login("alice", "wonder land")
            self.assertEqual(code, 235)
            s.mail("alice@import.test")
            s.rcpt("bob@import.test")
            code, text = s.data(b"Subject: big\r\n\r\n" + b"x" * 120000 + b"\r\n")
            self.assertEqual(code, 552, text)
        greeting = subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{self.mx_port}; head -1 <&3"],
                                  capture_output=True, text=True, timeout=10).stdout
        self.assertEqual(greeting.strip(), "220 mx.import.test Welcome to Import Test")

    def test_inbound_mail_reaches_the_next_hop(self):
        with smtplib.SMTP("127.0.0.1", self.mx_port, local_hostname="client.example", timeout=30) as s:
            s.ehlo()
            s.mail("someone@sender.test")
            code, text = s.rcpt("nobody@elsewhere.test")
            self.assertEqual((code, text[:5]), (554, b"5.7.1"), "not a local domain: no relaying")
            s.rcpt("bob@import.test")
            code, text = s.data(b"Subject: inbound\r\nMessage-ID: <in@sender.test>\r\n\r\nhello\r\n")
            self.assertEqual(code, 250, text)
        wait_until(lambda: any(b"<in@sender.test>" in m[2] for m in self.next_hop.messages),
                   what="the message at the next hop")

    def test_helo_and_sender_checks_refuse_as_harakas_did(self):
        with smtplib.SMTP("127.0.0.1", self.mx_port, timeout=30) as s:
            code, text = s.ehlo("192.0.2.1")
            self.assertEqual(code, 550, "helo.checks.ini [reject] bare_ip")
            code, _ = s.ehlo("client.example")
            self.assertEqual(code, 250, "a name is fine: Haraka refused no other check")
            code, text = s.mail("someone@spam.test")
            self.assertEqual((code, text[:5]), (550, b"5.7.1"), "mail_from.access.blacklist_regex")

    def test_certificates_by_name(self):
        """Haraka's config/tls/NAME.pem (key and certificate in one file)
        is served to clients that ask for that name (SNI)."""
        def served(name):
            with smtplib.SMTP("127.0.0.1", self.mx_port, local_hostname="client.example", timeout=30) as s:
                s.ehlo()
                s._host = name
                s.starttls(context=unverified())
                return s.sock.getpeercert(binary_form=True)

        der = lambda path: ssl.PEM_cert_to_DER_cert(path.read_text())  # noqa: E731
        self.assertEqual(served("other.import.test"), der(self.haraka / "other.crt"))
        self.assertEqual(served("mx.import.test"), der(self.haraka / "config/tls_cert.pem"))
        self.assertEqual(self.toml()["tls"]["sni"], [{"cert": "config/tls/sni/other.import.test.cert.pem",
                                                      "key": "config/tls/sni/other.import.test.key.pem"}])
        self.assertEqual((self.server.dir / "config/tls/sni/other.import.test.key.pem").stat().st_mode & 0o777, 0o600)

    def test_answers_as_haraka_does(self):
        """Haraka 3.3.4 itself, serving the directory imported, and the
        imported instance answer one script of commands alike."""
        haraka = pathlib.Path(self.tmp.name) / "haraka-run"
        shutil.copytree(self.haraka, haraka)
        port, smtps = free_port(), free_port()
        smtp_ini = (haraka / "config/smtp.ini").read_text()
        for old, new in [(f"127.0.0.1:{self.mx_port},127.0.0.1:{self.smtps_port}",
                          f"127.0.0.1:{port},127.0.0.1:{smtps}"),
                         (f"smtps_port={self.smtps_port}", f"smtps_port={smtps}"), ("nodes=cpus", "nodes=0")]:
            assert old in smtp_ini, old
            smtp_ini = smtp_ini.replace(old, new)
        (haraka / "config/smtp.ini").write_text(smtp_ini)
        (haraka / "config/log.ini").write_text("[main]\nlevel=warn\n")
        proc = subprocess.Popen([str(HARAKA), "-c", str(haraka)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.addCleanup(proc.wait, 15)
        self.addCleanup(proc.terminate)
        wait_for_port(port, proc, "Haraka", timeout=60)
        harakas = answers(port)
        self.assertEqual(harakas["EHLO 192.0.2.1"], 5, "the script does what it means under Haraka")
        self.assertEqual(harakas["AUTH wonder land"], 2)
        self.assertEqual(answers(self.mx_port), harakas)

    def test_users_relay_over_implicit_tls(self):
        with smtplib.SMTP_SSL("127.0.0.1", self.smtps_port, context=unverified(), timeout=30) as s:
            s.ehlo("client.example")
            with self.assertRaises(smtplib.SMTPAuthenticationError):
                s.login("alice", "wrong")
        with smtplib.SMTP_SSL("127.0.0.1", self.smtps_port, context=unverified(), timeout=30) as s:
            s.login("alice", "wonder land")
            s.sendmail("alice@import.test", ["carol@elsewhere.test"],
                       b"Subject: out\r\nMessage-ID: <out@import.test>\r\n\r\nhi\r\n")
        wait_until(lambda: any(b"<out@import.test>" in m[2] and m[1] == ["carol@elsewhere.test"]
                               for m in self.next_hop.messages),
                   what="the relayed message at the smarthost (smtp_forward's enable_outbound)")


def answers(port):
    """What a server on `port` answers to one script of commands: each step's
    reply class (2, 4, 5), and the SIZE it offers."""
    found = {}

    def session():
        return smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=60)

    with session() as s:
        found["EHLO 192.0.2.1"] = s.ehlo("192.0.2.1")[0] // 100
    with session() as s:
        found["EHLO client.example"] = s.ehlo()[0] // 100
        found["SIZE"] = s.esmtp_features.get("size")
        found["MAIL from a blocked sender"] = s.mail("someone@spam.test")[0] // 100
        s.rset()
        found["MAIL"] = s.mail("someone@sender.test")[0] // 100
        found["RCPT elsewhere"] = s.rcpt("nobody@elsewhere.test")[0] // 100
        found["RCPT local"] = s.rcpt("bob@import.test")[0] // 100
        found["DATA too big"] = s.data(b"Subject: big\r\n\r\n" + b"x" * 120000 + b"\r\n")[0] // 100
    for password in ["wrong", "wonder land"]:
        with session() as s:
            s.ehlo()
            found[f"AUTH {password}"] = s.docmd("AUTH", auth_plain("alice", password))[0] // 100
    return found


class OlderNames(unittest.TestCase):
    """Legacy plugin names and files: DKIM keys in config/dkim/, greylist
    periods, spamd's socket, early_talker's pause, an LMTP socket."""

    def test_carried_and_checked(self):
        with tempfile.TemporaryDirectory() as tmp:
            haraka = pathlib.Path(tmp) / "haraka"
            config = haraka_install(haraka)
            write(config, "plugins", "\n".join([
                "early_talker", "greylist", "karma", "spamassassin", "dkim", "queue/lmtp", "connect.fcrdns",
                "rate_limit", "bounce", "attachment", "data.signatures", "headers", "aliases", "spf", "delay_deny",
                "dnsbl", "dnswl", "uribl", ""]))
            write(config, "spf.ini", "[deny]\nmfrom_fail=true\n")
            write(config, "uribl.ini", "[main]\n[dbl.example.test]\nhelo=1\nbody=1\n[uri.example.test]\nbody=1\n"
                  "msgid=1\n")
            write(config, "delay_deny.ini", "excluded_plugins=dnsbl,spf:hook_mail\n")
            write(config, "fcrdns.ini", "[reject]\nno_rdns=true\n")
            write(config, "limit.ini", "[concurrency]\nmax=4\n[rate_conn]\n127=0\ndefault=5\n"
                  "[rate_rcpt_sender]\ndefault=30/1h\n")
            write(config, "bounce.ini", "[check]\nempty_return_path=true\nsingle_recipient=false\n")
            write(config, "bounce_bad_rcpt", "noreply@import.test\n")
            write(config, "attachment.ini", "[archive]\nmax_depth=3\nallow_encrypted=true\n")
            write(config, "attachment.filename.regex", "^.*\\.iso$\n")
            write(config, "data.signatures", "# campaigns\nbuy cheap watches\n")
            write(config, "headers.ini", "date_past_days=30\n[phish_targets]\n"
                  + "".join(f"brand{n}=brand{n}.example\n" for n in range(8)))
            write(config, "aliases", '{"sales@import.test": {"action": "alias", "to": ["a@x.test", "b@x.test"]},'
                  ' "info@import.test": {"action": "alias", "to": "office"}, "junk": {"action": "drop"}}')
            write(config, "early_talker.ini", "pause=3\n")
            write(config, "greylist.ini", "[period]\nblack=600\ngrey=86400\n[ip_whitelist]\n198.51.100.7\n")
            write(config, "karma.ini", "[thresholds]\nnegative=-5\n[tarpit]\ndelay=2\n[deny]\nhooks=data_post,queue\n"
                  "[deny_excludes]\nplugins=access,dnsbl,send_email\n[spammy_tlds]\nbiz=-2\n")
            write(config, "spamassassin.ini", "spamd_socket=/run/spamd.sock\nreject_threshold=12\n")
            write(config, "lmtp.ini", "path=/run/dovecot/lmtp\n[other.test]\nhost=10.0.0.9\nport=24\n")
            write(config, "plugin_timeout", "45\n")
            write(config, "greylist.timeout", "5\n")
            key = config / "dkim/import.test"
            key.mkdir(parents=True)
            subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(key / "private"), "2048"],
                           check=True, capture_output=True)
            (key / "selector").write_text("h2024\n")
            into = pathlib.Path(tmp) / "waraka"
            done = import_haraka(haraka, into)
            self.assertEqual(done.returncode, 0, done.stderr)
            toml = tomllib.loads((into / "waraka.toml").read_text())
            self.assertEqual(toml["plugins"], ["greylist", "spamassassin", "dkim_sign", "auth-results",
                                               "queue/lmtp", "fcrdns", "limit", "bounce", "attachment",
                                               "data.signatures", "headers", "aliases", "spf", "delay_deny", "dns-list",
                                               "uribl", "karma"],
                             "karma goes last")
            spf = (into / "config/spf.ini").read_text()
            for setting in ["reject_mail_fail = true", "reject_mail_softfail = false", "defer_mail_temperror = false"]:
                self.assertIn(f"\n{setting}\n", spf, "Haraka refuses only what its [deny] says")
            self.assertIn("\nexcluded_plugins = dns-list, spf\n", (into / "config/delay_deny.ini").read_text())
            self.assertIn("plugin dnswl: dns-list (with dnsbl above)", done.stdout)
            uribl = (into / "config/uribl.ini").read_text()
            for setting in ["zones = dbl.example.test, uri.example.test", "check_helo = true",
                            "check_mail_from = false", "check_headers = true", "check_body = true"]:
                self.assertIn(f"\n{setting}\n", uribl)
            self.assertEqual(sorted((into / "config/aliases").read_text().splitlines()[1:]),
                             ["info@import.test: office@import.test", "sales@import.test: a@x.test, b@x.test"])
            self.assertRegex(done.stdout, r"config/aliases: junk not carried")
            files = into / "config"
            self.assertIn("\nreject_no_rdns = true\n", (files / "fcrdns.ini").read_text())
            limit = (files / "limit.ini").read_text()
            self.assertIn("\nconcurrency = 4\n", limit)
            self.assertIn("\nconnection_rate = 5/60s\n", limit)
            self.assertIn("\nsender_recipient_rate = 30/1h\n", limit)
            bounce = (files / "bounce.ini").read_text()
            self.assertIn("\nempty_return_path = tag\n", bounce, "checked; Haraka's [reject] default: no")
            self.assertIn("\nsingle_recipient = off\n", bounce)
            self.assertEqual((files / "bounce.bad_rcpt").read_text(), "noreply@import.test\n")
            attachment = (files / "attachment.ini").read_text()
            self.assertIn("\narchive_max_depth = 3\n", attachment)
            self.assertIn("\nencrypted_archives = accept\n", attachment)
            self.assertEqual((files / "attachment.filename.regex").read_text(), "^.*\\.iso$\n")
            self.assertEqual((files / "data.signatures").read_text(), "buy cheap watches\n")
            self.assertIn("\ndate_past_days = 30\n", (files / "headers.ini").read_text())
            self.assertRegex(done.stdout, r"limit\.ini \[rate_conn\] 127: not carried")
            self.assertEqual(toml["smtp"]["banner_delay"], "3s")
            self.assertEqual(toml["spamfilter"]["spamd"], "/run/spamd.sock")
            self.assertEqual(toml["plugin_defaults"]["timeout"], "45s")
            self.assertEqual(toml["plugin"]["greylist"]["timeout"], "5s")
            self.assertIn("socket:/run/dovecot/lmtp", toml["plugin"]["queue/lmtp"]["grants"])
            greylist = (into / "config/greylist.ini").read_text()
            self.assertIn("\nblack_timeout = 600s\n", greylist)
            self.assertIn("\ngrey_timeout = 86400s\n", greylist)
            self.assertIn("\nip_whitelist = 198.51.100.7\n", greylist)
            self.assertIn("\nreject_threshold = 12\n", (into / "config/spamassassin.ini").read_text())
            lmtp = (into / "config/queue/lmtp.ini").read_text()
            self.assertIn("\npath = /run/dovecot/lmtp\n", lmtp)
            self.assertIn("\n[other.test]\nhost = 10.0.0.9\nport = 24\n", lmtp)
            self.assertEqual((into / "dkim/import.test/private").read_bytes(), (key / "private").read_bytes())
            self.assertEqual((into / "dkim/import.test/selector").read_text(), "h2024\n")
            karma = (into / "config/karma.ini").read_text()
            for setting in ["negative = -5", "tarpit_delay = 2", "deny_hooks = data-post, queue",
                            "deny_excludes_plugins = access, dns-list"]:
                self.assertIn(f"\n{setting}\n", karma)
            self.assertRegex(done.stdout, r"karma\.ini \[spammy_tlds\]: Waraka's awards are award\.NOTE")
            self.assertIn("headers.ini [phish_targets]: 8 entries not carried", done.stdout)
            self.assertNotIn("brand3", done.stdout, "a long section is one line")
            self.assertNotIn("biz", done.stdout, "karma's scores are named once, as a section")
            check = subprocess.run([BIN, "check", "--config", str(into)], capture_output=True, text=True)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_proxies_scanners_and_server_settings(self):
        with tempfile.TemporaryDirectory() as tmp:
            haraka = pathlib.Path(tmp) / "haraka"
            config = haraka_install(haraka)
            write(config, "plugins", "\n".join([
                "tls", "auth/auth_proxy", "clamd", "rspamd", "queue/quarantine", "queue/smtp_proxy", "dkim", "geoip",
                "dovecot", "p0f", ""]))
            geo = pathlib.Path(tmp) / "GeoIP"
            geo.mkdir()
            write_asn(geo / "GeoLite2-ASN.mmdb")
            write(config, "geoip.ini", f"dbdir={geo}\ntoo_far=4000\n")
            write(config, "dovecot.ini", "host=127.0.0.1\nport=12345\n")
            write(config, "p0f.ini", "[main]\nsocket_path=/run/p0f.sock\nadd_header=false\n")
            write(config, "smtp.ini", "listen_host=127.0.0.1\nport=2600\nlisten=/run/haraka.sock:660,[::0]:465\n"
                  "force_shutdown_timeout=20\npublic_ip=192.0.2.25\n")
            write(config, "databytes", "5000000\n")
            write(config, "connection.ini", "[main]\nspool_dir=/var/spool/haraka\nspool_after=1000000\n"
                  "[haproxy]\nhosts[]=192.0.2.4\n")
            write(config, "outbound.ini", "disabled=true\nenable_tls=false\ninet_prefer=v4\n")
            write(config, "tls.ini", "requestCert=true\n[no_tls_hosts]\n192.0.2.9\n")
            write(config, "auth_proxy.ini", "[domains]\nimport.test=mail.import.test:587 backup.import.test\n")
            write(config, "clamd.ini", "clamd_socket=/run/clamd.sock\n[reject]\nvirus=false\nerror=true\n")
            write(config, "rspamd.ini", "host=10.0.0.3\nport=11334\n")
            write(config, "quarantine.ini", "quarantine_path=/srv/quarantine\n")
            write(config, "smtp_proxy.ini", "host=10.0.0.4\nport=10025\nenable_tls=true\nauth_user=filter\n"
                  "auth_pass=s3cret\nauth_type=plain\n")
            write(config, "dkim.ini", "[sign]\nenabled=true\nselector=s1\ndomain=import.test\n")
            subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(config / "dkim.private.key"), "2048"],
                           check=True, capture_output=True)
            into = pathlib.Path(tmp) / "waraka"
            done = import_haraka(haraka, into)
            self.assertEqual(done.returncode, 0, done.stderr)
            toml = tomllib.loads((into / "waraka.toml").read_text())
            smtp = toml["smtp"]
            self.assertEqual(smtp["listen"], ["127.0.0.1:2600"], "listen_host and port; 465 has no certificate")
            self.assertEqual((smtp["max_message_size"], smtp["shutdown_grace"]), (5000000, "20s"))
            self.assertEqual((smtp["spool_dir"], smtp["spool_memory_threshold"]), ("/var/spool/haraka", 1000000))
            self.assertEqual(toml["outbound"], {"enabled": False, "tls": "never"})
            self.assertNotIn("tls", toml, "no certificate: a [tls] without one would stop the start")
            self.assertEqual(toml["antivirus"]["clamd"], "/run/clamd.sock")
            self.assertEqual(toml["spamfilter"]["rspamd"], "10.0.0.3:11334")
            self.assertEqual(toml["dirs"]["quarantine"], "/srv/quarantine")
            self.assertEqual(toml["geoip"]["databases"], [str(geo / "GeoLite2-ASN.mmdb")])
            self.assertEqual(toml["sasl"]["dovecot"], "127.0.0.1:12345")
            self.assertEqual(toml["p0f"]["socket"], "/run/p0f.sock")
            self.assertIn("\nadd_header = false\n", (into / "config/p0f.ini").read_text())
            self.assertIn("\ntoo_far = 4000\n", (into / "config/geoip.ini").read_text())
            files = into / "config"
            clamd = (files / "clamd.ini").read_text()
            self.assertIn("\nreject_virus = false\n", clamd)
            self.assertIn("\non_error = tempfail\n", clamd)
            self.assertIn("\npublic_ip = 192.0.2.25\n", (files / "geoip.ini").read_text())
            self.assertIn("\n[import.test]\nhost = mail.import.test\nport = 587\n",
                          (files / "auth/proxy.ini").read_text())
            proxy = (files / "queue/smtp_proxy.ini").read_text()
            for setting in ["host = 10.0.0.4", "port = 10025", "tls = opportunistic", "auth_user = filter",
                            "auth_pass = s3cret", "relaying = true"]:
                self.assertIn(f"\n{setting}\n", proxy)
            self.assertEqual((into / "dkim/import.test/selector").read_text(), "s1\n")
            report = done.stdout
            for line in [r"smtp\.ini listen /run/haraka\.sock:660: Waraka listens on TCP only",
                         r"smtp\.ini listen \[::0\]:465: implicit TLS without Haraka's tls plugin and a "
                         r"certificate; not carried",
                         r"tls: no config/tls_cert\.pem and config/tls_key\.pem, nor config/tls/: .*then carry "
                         r"tls\.ini's no_tls_hosts and requestCert by hand",
                         r"connection\.ini \[haproxy\] hosts \(192\.0\.2\.4\)",
                         r"auth_proxy\.ini import\.test: Waraka asks one server per domain",
                         r"outbound\.ini inet_prefer: not carried",
                         r"smtp_proxy\.ini auth_type: Waraka logs in with PLAIN or LOGIN"]:
                self.assertRegex(report, line)
            self.assertNotIn("s3cret", report)
            check = subprocess.run([BIN, "check", "--config", str(into)], capture_output=True, text=True)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_refuses_what_is_not_haraka_or_already_waraka(self):
        with tempfile.TemporaryDirectory() as tmp:
            done = import_haraka(tmp, pathlib.Path(tmp) / "w")
            self.assertNotEqual(done.returncode, 0)
            self.assertIn("is not a Haraka install directory", done.stderr)
            haraka = pathlib.Path(tmp) / "haraka"
            haraka_install(haraka)
            into = pathlib.Path(tmp) / "w"
            self.assertEqual(import_haraka(haraka, into).returncode, 0)
            before = (into / "waraka.toml").read_text()
            again = import_haraka(haraka / "config", into)
            self.assertNotEqual(again.returncode, 0)
            self.assertIn("already holds an instance", again.stderr)
            self.assertEqual((into / "waraka.toml").read_text(), before)


if __name__ == "__main__":
    unittest.main()
