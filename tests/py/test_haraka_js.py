"""A Haraka plugin in Waraka: examples/js/rcpt_to.haraka_disposable (the
Haraka talk's disposable-address plugin, its hook_rcpt as written for
Haraka) built with sdk/js/haraka.js by `waraka plugin build` (componentize-js),
run in a real waraka and driven over SMTP with smtplib."""

import pathlib
import re
import shutil
import smtplib
import subprocess
import tempfile
import unittest

from harness import ROOT, Waraka, dnsmasq, example_plugin, install_plugin, timed_build, try_login, wait_until

NAME = "rcpt_to.haraka_disposable"
AUTH = "auth.haraka_users"


class HarakaPluginTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.tmp.cleanup)
        sdk = [ROOT / "sdk/js/waraka.js", ROOT / "sdk/js/haraka.js"]
        examples = {name: example_plugin(ROOT / "examples/js" / name, sdk, cls.tmp.name) for name in (NAME, AUTH)}
        built = {name: timed_build(root)[0] for name, root in examples.items()}
        # The rDNS name of a client an XCLIENT names, for connection.remote.host
        # (the resolver answers `localhost` for every loopback address).
        dns = dnsmasq(["--ptr-record=30.2.0.192.in-addr.arpa,client.ptr.test"])
        cls.addClassCleanup(dns.stop)

        def setup(server):
            server.edit("config/host_list", lambda t: t + "example.com\n")
            server.edit("waraka.toml", lambda t: t.replace('plugins = ["', f'plugins = ["{NAME}", "{AUTH}", "', 1)
                        .replace('listen = ["127.0.0.1:2525"]', "listen = []")
                        + '\n[[listener]]\naddress = "127.0.0.1:0"\nrole = "mx"\nxclient_from = ["127.0.0.1/32"]\n'
                        + f'\n[dns]\nservers = ["127.0.0.1:{dns.port}"]\n\n[plugin."{NAME}"]\ngrants = ["dns"]\n')
            for name, root in examples.items():
                shutil.copy(root / f"{name}.ini", server.dir / "config" / f"{name}.ini")
                install_plugin(server, built[name], name)

        cls.server = Waraka(["rcpt_to.in_host_list", "queue/maildir"], setup=setup, configured_listeners=True)
        cls.addClassCleanup(cls.server.stop)
        with cls.server.stopped_on_error():
            cls.loaded = cls.server.wait_for_log(rf"plugin loaded plugin={NAME.replace('.', '[.]')} ", timeout=300)
            cls.server.wait_for_log(rf"plugin loaded plugin={AUTH.replace('.', '[.]')} ", timeout=300)

    def test_the_hooks_it_registers_are_the_ones_called(self):
        self.assertIn('hooks=["mail", "rcpt", "data-post"]', self.loaded)

    def test_an_expired_address_is_refused_with_the_plugins_text(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=60) as s:
            s.ehlo()
            s.mail("sender@py.test")
            code, text = s.rcpt("myname-20121015@example.com")
        self.assertEqual(code, 550)
        self.assertIn(b"Expired email address", text)
        self.server.wait_for_log(r"Email expires on: .*2012")

    def test_a_live_address_is_rewritten_and_the_transaction_notes_make_a_header(self):
        before = set(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=60) as s:
            s.ehlo()
            s.mail("sender@py.test")
            self.assertEqual(s.rcpt("myname-29991231@example.com")[0], 250)
            self.assertEqual(s.rcpt("other@example.com")[0], 250)
            code, _ = s.data(b"Subject: =?iso-8859-1?q?disposable_f=FCr_dich?=\r\n\r\nfor a while\r\n")
        self.assertEqual(code, 250)
        added = [p for p in self.server.maildir() if p not in before]
        self.assertEqual(sorted(p.parts[-3] for p in added), ["myname", "other"], "rewritten to myname@")
        for path in added:
            self.assertIn(b"X-Disposable: 1 of 2 for sender@py.test via client.test (pass: loopback)\r\n", path.read_bytes())
        self.server.wait_for_log(r"Got recipient: <myname-29991231@example\.com>")
        self.server.wait_for_log(r"Email address now: <myname@example\.com>")
        self.server.wait_for_log(r"MAIL FROM <sender@py\.test> with \{\}")
        self.server.wait_for_log(r"Subject: disposable für dich, body: for a while")

    def test_the_remote_host_is_the_clients_ptr_name(self):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="front.test", timeout=60) as s:
            s.ehlo()
            self.assertEqual(s.docmd("XCLIENT", "ADDR=192.0.2.30")[0], 220)
            s.ehlo("client.test")
            self.assertEqual(s.mail("ptr@py.test")[0], 250)
            s.rset()
            self.assertEqual(s.mail("ptr2@py.test")[0], 250)
        first = self.server.wait_for_log(r"MAIL FROM <ptr@py\.test> with \{\} from client\.ptr\.test \[192\.0\.2\.30\], "
                                         r"mail \d+ of the server")
        second = self.server.wait_for_log(r"MAIL FROM <ptr2@py\.test> .* mail \d+ of the server")
        count = [int(re.search(r"mail (\d+) of the server", line).group(1)) for line in (first, second)]
        self.assertEqual(count[1], count[0] + 1, "server.notes count across calls")

    def test_a_client_that_is_not_local_gets_no_loopback_note(self):
        before = set(self.server.maildir())
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="front.test", timeout=60) as s:
            s.ehlo()
            self.assertEqual(s.docmd("XCLIENT", "ADDR=192.0.2.30")[0], 220)
            s.ehlo("client.test")
            s.mail("sender@py.test")
            self.assertEqual(s.rcpt("myname-29991231@example.com")[0], 250)
            self.assertEqual(s.data(b"Subject: remote\r\n\r\nfrom afar\r\n")[0], 250)
        (added,) = [p for p in self.server.maildir() if p not in before]
        self.assertIn(b"X-Disposable: 1 of 1 for sender@py.test via client.ptr.test ()\r\n", added.read_bytes(),
                      "no loopback note (remote.is_local is false): the rDNS name, no result")

    def test_a_setting_that_registers_a_hook_changes_the_hooks_at_a_reload(self):
        ini = self.server.dir / "config" / f"{NAME}.ini"
        on = ini.read_text()
        ini.write_text(on.replace("add_header=true", "add_header=false"))
        try:
            code, output = self.server.reload()
            self.assertEqual(code, 0, output)
            self.assertIn("described=1", output)
            self.server.wait_for_log(r'plugin described anew plugin=rcpt_to[.]haraka_disposable .*hooks=\["mail", "rcpt"\]')
            before = set(self.server.maildir())
            with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=60) as s:
                s.ehlo()
                s.mail("sender@py.test")
                self.assertEqual(s.rcpt("myname-29991231@example.com")[0], 250)
                self.assertEqual(s.data(b"Subject: off\r\n\r\nno header\r\n")[0], 250)
            (added,) = [p for p in self.server.maildir() if p not in before]
            self.assertNotIn(b"X-Disposable", added.read_bytes(), "data_post is not registered")
            self.assertEqual(added.parts[-3], "myname", "the rcpt hook still runs")
        finally:
            ini.write_text(on)
            code, output = self.server.reload()
        self.assertEqual(code, 0, output)
        self.assertIn("described=1", output)

    def mail(self, sender):
        with smtplib.SMTP("127.0.0.1", self.server.port, local_hostname="client.test", timeout=60) as s:
            s.ehlo()
            return s.mail(sender)

    def test_a_setting_of_its_ini_file_answers_denysoft(self):
        self.assertEqual(self.mail("someone@later.test"), (450, b"4.7.1 Try again later"))

    def test_an_edit_of_a_setting_register_read_shows_without_a_reload(self):
        # register() keeps the ini file on `this`; an instance that served
        # connections before the edit reads it again once it changed.
        ini = self.server.dir / "config" / f"{NAME}.ini"
        before = ini.read_text()
        self.assertEqual(self.mail("someone@later.test")[0], 450)
        ini.write_text(before.replace("refused_sender_domain=later.test", "refused_sender_domain=sooner.test"))
        try:
            wait_until(lambda: self.mail("someone@sooner.test")[0] == 450, timeout=10, what="the edited setting")
            self.assertEqual(self.mail("someone@later.test")[0], 250)
        finally:
            ini.write_text(before)
        wait_until(lambda: self.mail("someone@later.test")[0] == 450, timeout=10, what="the setting as it was")

    def test_an_auth_base_plugin_checks_the_passwords_of_its_ini_file(self):
        port = self.server.port
        self.assertEqual(try_login(port, "alice", "alice secret"), (235, "2.7.0 Authentication successful"))
        self.assertEqual(try_login(port, "bob", "12345", mechanism="LOGIN")[0], 235, "an ini number, as text")
        self.assertEqual(try_login(port, "alice", "bob secret"), (535, "5.7.8 Authentication credentials invalid"))
        self.assertEqual(try_login(port, "mallory", "")[0], 535)
        self.server.wait_for_log(r'authenticated user=alice plugin="auth\.haraka_users"')


# A stand-in for waraka.js, so that node can load haraka.js outside a
# component: verdicts as tagged objects, notes in a Map, config files
# from an object.
STUB_SDK = r"""
const verdict = (tag) => (text, code, enhanced) => ({ tag, text, code, enhanced });
export const plugin = ({ name, version, ...hooks }) =>
  ({ ...hooks, describe: () => ({ name, version, hooks: Object.keys(hooks) }) });
export const cont = { tag: 'cont' };
export const deliver = { tag: 'deliver' }, delay = (seconds) => ({ tag: 'delay', val: seconds });
export const isPromise = (value) => value !== null && typeof value === 'object' && typeof value.then === 'function';
export const andThen = (value, fn) => (isPromise(value) ? value.then(fn) : fn(value));
export const ok = verdict('ok'), deny = verdict('deny'), denysoft = verdict('denysoft');
export const denyDisconnect = verdict('deny-disconnect'), denysoftDisconnect = verdict('denysoft-disconnect');
export const disconnect = verdict('disconnect');
const store = new Map();
export const notes = {
  get: (scope, key) => store.get(scope + '/' + key),
  set: (scope, key, value) => { store.set(scope + '/' + key, value); },
  remove: (scope, key) => store.delete(scope + '/' + key),
  keys: (scope) => [...store.keys()].filter((k) => k.startsWith(scope + '/')).map((k) => k.slice(scope.length + 1)),
};
export const files = {};
export const config = { read: (name) => files[name] };
export const session = { peerIp: () => '192.0.2.1' }, envelope = {}, message = {}, mime = {};
export const ptr = {};
export const dns = {
  lookupPtr(ip) {
    const answer = ptr[ip];
    if (answer instanceof Error) throw answer;
    return answer ?? [];
  },
};
export const trace = () => {}, debug = () => {}, info = () => {}, warn = () => {}, error = () => {};
"""

MODULE_CHECKS = r"""
import assert from 'node:assert/strict';
import { Address, commonjs, haraka, harakaConfig, notesOf, parseIni, resultsOf, verdictOf } from './haraka.js';
import { files, mime, notes, ptr, session } from './waraka.js';

assert.deepEqual(verdictOf(DENY, 'No'), { tag: 'deny', text: 'No', code: undefined, enhanced: undefined });
assert.deepEqual(verdictOf(DENYSOFT, ['a', 'b']).text, ['a', 'b']);
assert.deepEqual(verdictOf(DENY, { code: 550, msg: 'No such user', cls: 5, sub: 1, det: 1 }),
                 { tag: 'deny', text: 'No such user', code: 550, enhanced: '5.1.1' });
for (const code of [undefined, CONT, STOP, HOOK_NEXT, DELAY]) assert.equal(verdictOf(code, 'x').tag, 'cont');
assert.equal(verdictOf(OK).tag, 'ok');
assert.equal(verdictOf(DENYSOFTDISCONNECT).tag, 'denysoft-disconnect');

const ini = parseIni('top=1\n; comment\n[main]\nenabled=yes\nratio=0.5\n[lists]\nhost[]=a\nhost[]=b\nflag=off\n',
                     { booleans: ['+main.enabled', '-lists.flag', '+main.absent', '-main.gone', '*.everywhere'] });
assert.deepEqual(ini, {
  main: { top: 1, enabled: true, ratio: 0.5, absent: true, gone: false, everywhere: false },
  lists: { host: ['a', 'b'], flag: false, everywhere: false },
});

files['x.ini'] = '[main]\nn=3\n';
files['me'] = '# the name\nmx.example.com\n';
files['hosts'] = 'a\n# b\n\nc\n';
files['n'] = '42\n';
files['x.json'] = '{"a": [1]}';
assert.deepEqual(harakaConfig.get('x.ini'), { main: { n: 3 } });
assert.equal(harakaConfig.get('me'), 'mx.example.com');
assert.deepEqual(harakaConfig.get('hosts', 'list'), ['a', 'c']);
assert.equal(harakaConfig.get('n'), 42);
assert.equal(harakaConfig.getInt('missing', 7), 7);
assert.deepEqual(harakaConfig.get('x.json'), { a: [1] });
assert.equal(harakaConfig.get('missing'), null);

const txn = notesOf('transaction');
txn.count = 2;
txn.list = ['a'];
txn.text = 'plain';
assert.equal(notes.get('transaction', 'count'), '2');
assert.equal(txn.count + 1, 3);
assert.deepEqual(txn.list, ['a']);
assert.equal(txn.text, 'plain');
assert.equal(txn.get('text'), 'plain');
assert.deepEqual(Object.keys(txn).sort(), ['count', 'list', 'text']);
delete txn.count;
assert.equal(txn.count, undefined);

const results = resultsOf('connection');
results.add({ name: 'dnsbl' }, { pass: 'zen', msg: 'listed nowhere' });
results.add('dnsbl', { pass: ['b', 'c'], fail: 'x', zone: 'zen', emit: true });
results.incr('karma', { score: 2 });
results.incr('karma', { score: -3 });
results.push('karma', { history: 1 });
assert.deepEqual(results.get('dnsbl'), { pass: ['zen', 'b', 'c'], msg: ['listed nowhere'], fail: ['x'], zone: 'zen' });
assert.ok(results.has('dnsbl', 'pass', 'b'));
assert.ok(results.has('dnsbl', 'zone', /^ze/));
assert.ok(!results.has('dnsbl', 'fail', 'y'));
assert.deepEqual(results.get('karma'), { score: -1, history: [1] });
assert.equal(results.collate('dnsbl'), 'pass: zen, b, c, msg: listed nowhere, fail: x, zone: zen');
assert.deepEqual(results.get('nobody'), {});
assert.equal(notes.get('connection', 'results.dnsbl'), JSON.stringify(results.get('dnsbl')), 'in the notes');

// CommonJS globals and the modules require() knows.
assert.equal(typeof exports, 'object');
assert.equal(module.exports, exports);
assert.equal(require('haraka-constants').DENY, 902);
// haraka-dsn: the functions' codes, statuses and texts, as next() reads them.
const DSN = require('haraka-dsn');
assert.deepEqual(verdictOf(DENY, DSN.no_such_user()), { tag: 'deny', text: 'No such user', code: 550, enhanced: '5.1.1' });
assert.deepEqual(verdictOf(DENYSOFT, DSN.mbox_full('Over quota', 452)),
                 { tag: 'denysoft', text: 'Over quota', code: 452, enhanced: '4.2.2' });
assert.equal(DSN.addr_bad_dest_system().reply, '5.1.2 Bad destination system address');
assert.equal(DSN.net_unable_to_route(undefined, 'bogus').code, 550, 'a code that is not 2xx/4xx/5xx: the default');
assert.deepEqual(DSN.create(421, ['a', 'b'], 4, 5).reply, ['4.4.5 a', '4.4.5 b']);
assert.equal(require('./dsn'), DSN, "Haraka's older path");
const netUtils = require('haraka-net-utils');
assert.ok(netUtils.is_private_ip('10.0.0.1') && !netUtils.is_private_ip('192.0.2.1'));
assert.ok(netUtils.is_local_ip('127.0.0.2') && !netUtils.is_local_ip('10.0.0.1'));
assert.ok(netUtils.is_ip_literal('[192.0.2.1]') && netUtils.is_ip_literal('[IPv6:2001:db8::1]'));
assert.ok(!netUtils.is_ip_literal('mail.example.com'));
assert.equal(new (require('address-rfc2821').Address)('a', 'b.c').address(), 'a@b.c');
const util = require('node:util');
assert.equal(util.format('%s is %d%% of %j', new Address('a', 'b'), 42, { x: [1] }, 'more'), '<a@b> is 42% of {"x":[1]} more');
assert.equal(util.inspect('text'), 'text');
assert.throws(() => require('pg'), /require\('pg'\): not in Waraka's sandbox/);

const address = new Address('me', 'example.com');
assert.equal(String(address), '<me@example.com>');
assert.equal(address.address(), 'me@example.com');
assert.ok(new Address('', '').isNull());
assert.equal(new Address('', '').format(), '<>');
// register() at build time (config missing) and again before the first hook.
const p = {};
p.register = function () {
  this.n = this.config.get('x.ini').main.n ?? 'missing';
  this.register_hook('ehlo', 'check_ehlo');
};
p.check_ehlo = function (next, connection, host) {
  next(DENY, `${host} ${this.n}`);
};
p.hook_helo = function (next, connection, host) {
  if (host === 'silent') return;
  if (host === 'twice') {
    next(OK);
    next(DENY);
    return;
  }
  next(DENYSOFT, ['no', host]);
};
const sender = { localPart: 'a', domain: 'b.test', params: [] };
const built = haraka('t', p);
assert.equal(p.n, undefined, 'register() ran on its own object');
assert.deepEqual(built.describe(), { name: 't', version: '0.1.0', hooks: ['helo', 'ehlo'] });
assert.equal(built.rcpt(sender).tag, 'cont', 'a hook it did not register');
assert.equal(built.ehlo('x').text, 'x 3', "the instance's config");
assert.equal((await built.helo('silent')).tag, 'denysoft', 'no next(): DENYSOFT');
assert.equal(built.helo('twice').tag, 'ok', 'the first next() counts');
assert.deepEqual(built.helo('y').text, ['no', 'y']);
// register() runs again once a file it read has changed, not before.
let registers = 0;
const reread = haraka('reread', {
  register() {
    registers++;
    this.cfg = this.config.get('re.ini');
  },
  hook_mail(next) {
    next(DENY, `limit ${this.cfg.main.limit}`);
  },
});
files['re.ini'] = '[main]\nlimit=1\n';
registers = 0;
assert.equal(reread.mail(sender).text, 'limit 1');
assert.equal(reread.mail(sender).text, 'limit 1');
assert.equal(registers, 1, 'once while the file is the same');
files['re.ini'] = '[main]\nlimit=2\n';
assert.equal(reread.mail(sender).text, 'limit 2');
assert.equal(registers, 2);
delete files['re.ini'];
assert.throws(() => haraka('u', { hook_lookup_rdns: () => {} }), /no Waraka hook for Haraka's lookup_rdns/);

// A hook registered because of a setting of the instance's config is
// listed (and called) when the setting is on; one Waraka has no counterpart
// for fails the load then.
const conditional = {
  register() {
    const cfg = this.config.get('cond.ini', { booleans: ['-main.extra', '-main.bogus'] });
    if (cfg.main.extra) this.register_hook('rcpt', 'extra');
    if (cfg.main.bogus) this.register_hook('lookup_rdns', 'extra');
  },
  extra(next, connection, params) {
    next(DENY, `extra check of ${params[0].address()}`);
  },
  hook_mail(next) {
    next();
  },
};
files['cond.ini'] = '[main]\nextra=true\n';
const on = haraka('on', conditional);
assert.deepEqual(on.describe().hooks, ['mail', 'rcpt']);
assert.equal(on.rcpt(sender).text, 'extra check of a@b.test');
files['cond.ini'] = '[main]\nextra=false\n';
const off = haraka('off', conditional);
assert.deepEqual(off.describe().hooks, ['mail']);
assert.equal(off.rcpt(sender).tag, 'cont');
files['cond.ini'] = '[main]\nbogus=true\n';
assert.throws(() => haraka('bogus', conditional).describe(), /no Waraka hook for Haraka's lookup_rdns/);
delete files['cond.ini'];

// next() after the hook returned: from an async hook, or a promise callback;
// the answer is a promise then. An async hook that throws rejects it.
const later = haraka('l', {
  async hook_mail(next, connection, params) {
    await null;
    await Promise.resolve();
    next(DENY, `after await for ${params[0].address()}`);
  },
  hook_rcpt(next) {
    Promise.resolve().then(() => next(DENYSOFT, 'from a promise'));
  },
  async hook_data(next) {
    await null;
    throw new Error('async fault');
  },
  async hook_data_post(next) {
    await null;
  },
});
assert.equal((await later.mail(sender)).text, 'after await for a@b.test');
assert.equal((await later.rcpt(sender)).text, 'from a promise');
await assert.rejects(later.data(), /async fault/);
assert.equal((await later.dataPost()).tag, 'denysoft', 'an async hook that never calls next()');
const asyncAuth = haraka('aa', {
  register() {
    this.inherits('auth/auth_base');
  },
  async get_plain_passwd(user, cb) {
    await null;
    cb(user === 'u' ? 'pw' : null);
  },
});
assert.equal((await asyncAuth.auth({ mechanism: 'PLAIN', user: 'u', secret: 'pw' })).tag, 'ok');
assert.equal((await asyncAuth.auth({ mechanism: 'PLAIN', user: 'v', secret: 'pw' })).tag, 'deny');

// A register() that throws with the instance's config faults the hook, and
// is tried again at the next one.
let attempts = 0;
const flaky = haraka('f', {
  register() {
    if (this.config !== harakaConfig) return;
    if (attempts++ === 0) throw new Error('not yet');
    this.state = 'set up';
  },
  hook_data(next) {
    next(OK, this.state ?? 'not set up');
  },
});
assert.throws(() => flaky.data(), /not yet/);
assert.equal(flaky.data().text, 'set up');

// auth/auth_base: check_plain_passwd decides PLAIN and LOGIN.
const a = {};
a.register = function () {
  this.inherits('auth/auth_base');
};
a.check_plain_passwd = function (connection, user, password, cb) {
  if (user !== 'silent') cb(password === 'right');
};
const auth = haraka('a', a);
const attempt = (user, secret, mechanism = 'PLAIN', authzid = undefined) => ({ mechanism, user, secret, authzid });
assert.equal(auth.auth(attempt('u', 'right')).tag, 'ok');
assert.equal(auth.auth(attempt('u', 'right', 'LOGIN')).tag, 'ok');
assert.equal(auth.auth(attempt('u', 'wrong')).tag, 'deny');
assert.equal((await auth.auth(attempt('silent', 'right'))).tag, 'denysoft', 'no callback: DENYSOFT');
assert.equal(auth.auth(attempt('u', 'right', 'CRAM-MD5')).tag, 'cont');
assert.equal(auth.auth(attempt('u', 'right', 'PLAIN', 'admin')).tag, 'deny');
assert.throws(() => haraka('b', { register() { this.inherits('queue/discard'); } }), /only auth\/auth_base/);
assert.throws(() => haraka('c', { register() { this.inherits('auth/auth_base'); } }), /check_plain_passwd or get_plain_passwd/);
// Notes changed in place during a hook call are written back when it ends;
// a call that throws keeps nothing it changed in place.
notes.set('connection', 'seen', '["a"]');
const mutating = haraka('m', {
  hook_data(next, connection) {
    connection.notes.seen.push('b');
    connection.notes.seen.push('c');
    connection.notes.fresh = {};
    connection.notes.fresh.n = 1;
    connection.notes.fresh.n += 1;
    assert.equal(notes.get('connection', 'fresh'), '{}', 'written back at the end of the call');
    next();
  },
  hook_data_post(next, connection) {
    connection.notes.seen.push('lost');
    throw new Error('fault');
  },
});
assert.equal(mutating.data().tag, 'cont');
assert.equal(notes.get('connection', 'seen'), '["a","b","c"]');
assert.equal(notes.get('connection', 'fresh'), '{"n":2}');
assert.throws(() => mutating.dataPost(), /fault/);
assert.equal(notes.get('connection', 'seen'), '["a","b","c"]');

// connection.remote.host: the fcrdns plugin's note, else a PTR lookup.
const rdns = haraka('r', { hook_connect: (next, connection) => next(OK, String(connection.remote.host)) });
assert.equal(rdns.connect().text, 'NXDOMAIN');
ptr['192.0.2.1'] = ['client.example', 'other.example'];
assert.equal(rdns.connect().text, 'client.example');
ptr['192.0.2.1'] = Object.assign(new Error('no grant'), { payload: { tag: 'not-granted' } });
assert.equal(rdns.connect().text, 'null');
ptr['192.0.2.1'] = Object.assign(new Error('timeout'), { payload: { tag: 'timeout' } });
assert.equal(rdns.connect().text, 'DNSERROR');
notes.set('connection', 'fcrdns.ptr', 'noted.example,second.example');
assert.equal(rdns.connect().text, 'noted.example');
notes.remove('connection', 'fcrdns.ptr');

// remote.is_local and is_private, as haraka-net-utils has them.
const where = haraka('w', { hook_connect: (next, connection) => next(OK, `${connection.remote.is_local} ${connection.remote.is_private}`) });
const peer = (ip) => {
  session.peerIp = () => ip;
  return where.connect().text;
};
assert.deepEqual(['127.0.0.1', '::1', '10.1.2.3', '172.20.0.1', '172.32.0.1', '192.168.1.1', '169.254.0.9', 'fd00::1', 'fe80::1', '8.8.8.8', '2001:db8::1', '::ffff:192.168.0.1'].map(peer),
                 ['true true', 'true true', 'false true', 'false true', 'false false', 'false true', 'false true', 'false true', 'false true', 'false false', 'false false', 'false true']);

// transaction.body: the first text part, the others as children; null
// before data_post.
session.transactionId = () => 't1';
const bodies = haraka('b', {
  hook_data_post(next, connection) {
    const body = connection.transaction.body;
    if (!body) return next(OK, 'no body');
    next(OK, [body.ct, body.bodytext, ...body.children.map((c) => `${c.ct} ${c.bodytext}`)]);
  },
});
mime.texts = () => [{ contentType: 'text/plain', text: 'plain' }, { contentType: 'text/html', text: '<p>html</p>' }];
assert.deepEqual(bodies.dataPost().text, ['text/plain', 'plain', 'text/html <p>html</p>']);
mime.texts = () => {
  throw Object.assign(new Error('invalid'), { payload: { tag: 'invalid' } });
};
assert.equal(bodies.dataPost().text, 'no body');

// commonjs(): a plugin in several files, each module run once.
let runs = 0;
const pkg = commonjs({
  'lib/main.js'(module, exports, require, __filename, __dirname) {
    const util = require('./util');
    exports.where = [__filename, __dirname];
    exports.sum = util.add(require('../data.json').n, require('./sub').n);
    exports.dsn = require('haraka-dsn').no_such_user().reply;
    exports.again = require('./util.js') === util;
    exports.missing = (() => { try { require('./nowhere'); } catch (e) { return e.message; } })();
  },
  'lib/util.js'(module) {
    runs += 1;
    module.exports = { add: (a, b) => a + b };
  },
  'lib/sub/index.js'(module, exports) {
    exports.n = 2;
  },
  'data.json'(module) {
    module.exports = { n: 40 };
  },
}, 'lib/main.js');
assert.deepEqual(pkg.where, ['lib/main.js', 'lib']);
assert.equal(pkg.sum, 42);
assert.equal(pkg.dsn, '5.1.1 No such user');
assert.ok(pkg.again && runs === 1, 'a module runs once');
assert.equal(pkg.missing, "require('./nowhere') in lib/: no such file in the plugin");

// server.notes are the server scope's notes.
server.notes.count = 3;
assert.equal(notes.get('server', 'count'), '3');

// The outbound hooks: hmail, params and answers as Haraka gives and reads them.
const entry = (domain, sender = 's@src.test', recipients = ['r@' + domain], attempts = 0) =>
  ({ id: 'q1', domain, sender, recipients, attempts, arrivalMs: 1700000000000n });
const failed = (recipient) => [{ recipient, status: '5.1.1', diagnostic: '550 5.1.1 No such user' }];
const told = [];
const outbound = haraka('o', {
  hook_send_email(next, hmail) {
    const from = hmail.todo.mail_from.address();
    if (from === 'later@src.test') return next(DELAY, 60);
    if (from === 'vague@src.test') return next(DELAY, 'soon');
    next(OK);
  },
  hook_get_mx(next, hmail, domain) {
    const answers = {
      'list.test': [{ exchange: 'b.test', port: 2526, priority: 20 }, { exchange: 'a.test', priority: 10 }],
      'url.test': 'smtp://[127.0.0.9]:2525',
      'hostport.test': 'mx.test:587',
      'lmtp.test': 'lmtp://127.0.0.1:24',
    };
    if (domain in answers) return next(OK, answers[domain]);
    if (domain === 'no.test') return next(DENY, 'no route');
    next();
  },
  hook_deferred(next, hmail, params) {
    assert.match(params.err.message, /r@d\.test: 550 5\.1\.1 No such user/);
    if (hmail.num_failures > 1) return next(DENYSOFT, params.delay / 2);
    next(OK);
  },
  hook_bounce(next, hmail, err) {
    const user = err.bounced_rcpt[0].user;
    assert.equal(err.bounced_rcpt[0].dsn_status, '5.1.1');
    if (user === 'quiet') return next(OK);
    if (user === 'silent') return;
    next();
  },
  hook_delivered(next, hmail, params) {
    told.push([hmail.todo.uuid, hmail.todo.queue_time, params[0], params[2], params[5], params[6].map(String)]);
    next();
  },
});
assert.deepEqual(outbound.sendEmail(entry('d.test', 'later@src.test')), { tag: 'delay', val: 60 });
assert.deepEqual(outbound.sendEmail(entry('d.test', 'vague@src.test')), { tag: 'deliver' }, 'DELAY needs seconds');
assert.deepEqual(outbound.sendEmail(entry('d.test')), { tag: 'deliver' }, 'OK is not a drop');
assert.deepEqual(outbound.getMx(entry('list.test')), [{ host: 'a.test', port: 25 }, { host: 'b.test', port: 2526 }]);
assert.deepEqual(outbound.getMx(entry('url.test')), [{ host: '127.0.0.9', port: 2525 }]);
assert.deepEqual(outbound.getMx(entry('hostport.test')), [{ host: 'mx.test', port: 587 }]);
assert.equal(outbound.getMx(entry('other.test')), undefined, 'CONT: MX lookup');
assert.throws(() => outbound.getMx(entry('lmtp.test')), /LMTP next hops are not supported/);
assert.throws(() => outbound.getMx(entry('no.test')), /get_mx answered DENY: no route/);
assert.equal(outbound.deferred(entry('d.test', 's@src.test', ['r@d.test'], 2), failed('r@d.test'), 600), 300);
assert.equal(outbound.deferred(entry('d.test', 's@src.test', ['r@d.test'], 1), failed('r@d.test'), 600), undefined,
             'OK keeps the entry');
assert.equal(outbound.bounce(entry('d.test'), failed('quiet@d.test')), true);
assert.equal(outbound.bounce(entry('d.test'), failed('loud@d.test')), false);
assert.equal(await outbound.bounce(entry('d.test'), failed('silent@d.test')), false, 'no next(): the DSN is sent');
assert.equal(outbound.delivered(entry('d.test'), ['r@d.test'], '127.0.0.9', '250 OK'), undefined);
assert.deepEqual(told, [['q1', 1700000000000, '127.0.0.9', '250 OK', 'SMTP', ['<r@d.test>']]]);
console.log('haraka.js checks passed');
"""


class HarakaModuleTest(unittest.TestCase):
    """haraka.js's translations, run by node against a stand-in SDK."""

    def test_codes_config_notes_and_addresses_translate_as_in_haraka(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = pathlib.Path(tmp)
            shutil.copy(ROOT / "sdk/js/haraka.js", root)
            (root / "waraka.js").write_text(STUB_SDK)
            (root / "checks.mjs").write_text(MODULE_CHECKS)
            (root / "package.json").write_text('{"type": "module"}')
            done = subprocess.run(["node", "checks.mjs"], cwd=root, capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("haraka.js checks passed", done.stdout)


if __name__ == "__main__":
    unittest.main()
