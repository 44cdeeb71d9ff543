// Haraka's plugin API over the Waraka SDK, for bringing Haraka plugins to
// Waraka as JavaScript components with their code as it was.
//
// A Haraka plugin is a CommonJS module whose `exports` hold `register()`,
// `hook_*` functions and helpers. Put its code between an import line and
// one `export` line:
//
//     import { haraka } from './haraka.js';
//
//     exports.hook_rcpt = function (next, connection, params) {
//       if (params[0].host === 'example.net') return next(DENY, 'Not here');
//       next();
//     };
//
//     export const hooks = haraka('rcpt_to.not_here', exports);
//
// `exports`, `module.exports`, `require` and Haraka's `server` (with
// `server.notes`) are globals here, as in Node and Haraka;
// `require` knows `haraka-constants`, `haraka-dsn`, `address-rfc2821`,
// `haraka-net-utils` (`is_private_ip`, `is_local_ip`, `is_ip_literal`) and
// `util` (`format`, `inspect`).
//
// What Haraka gives a plugin is here: the return codes as globals (`OK`,
// `DENY`, `DENYSOFT`, ...), `this.loginfo` and the other log levels,
// `this.config.get(name, type, options)` (value, list, data, json and ini
// with `booleans`), `this.register_hook`, `this.inherits('auth/auth_base')`
// with `check_plain_passwd` or `get_plain_passwd`, and `(next, connection, params)`
// for the hooks of the SMTP session: `connection.remote`, `.local`,
// `.hello`, `.tls`, `.relaying` (settable), `.notes`, `.results`,
// `.remote.host` (the `fcrdns` plugin's PTR name, or a lookup with `dns`),
// `.remote.is_private`, `.remote.is_local`,
// `.transaction` with `.notes`, `.results`, `.mail_from`, `.rcpt_to`, `.header.get`, `.body`, `.add_header`,
// `.remove_header`; `params[0]` is an Address (`user`, `host`,
// `address()`, `format()`), and a recipient whose `user` or `host` a `rcpt`
// hook changes is rewritten, as in Haraka. The outbound hooks
// (`send_email`, `get_mx`, `deferred`, `bounce`, `delivered`) get
// `(next, hmail, params)` with `hmail.todo` (`uuid`, `domain`, `mail_from`,
// `rcpt_to`, `queue_time`) and `hmail.num_failures`.
//
// Differences, because a hook call is one call into a sandbox:
// - `next()` may come after the hook function returns, from an `async`
//   function or a promise callback (the capabilities answer at once, so
//   `await` only waits for promises); a hook that ends without it answers
//   DENYSOFT, as Haraka does when its plugin timer fires.
// - An exception is a plugin fault (451, or skipped with `on_error =
//   "continue"`), never a silent CONT.
// - Notes are shared with plugins in every language as strings: a value
//   that is not a string is kept as JSON and read back parsed; one changed
//   in place (`notes.seen.push(x)`) is written back when the hook call
//   ends, so the next plugin sees it then, not during the call.
// - Node's modules (`net`, `dns`, `fs`, npm packages that use them) are not
//   there: use the Waraka capabilities this module re-exports.

import {
  plugin as wrap,
  andThen,
  isPromise,
  cont,
  deliver,
  delay,
  ok,
  deny,
  denysoft,
  denyDisconnect,
  denysoftDisconnect,
  disconnect,
  notes,
  config,
  dns,
  mime,
  session,
  envelope,
  message,
  trace,
  debug,
  info,
  warn,
  error,
} from './waraka.js';

export * from './waraka.js';

/** Haraka's return codes (haraka-constants), also set as globals. */
export const constants = {
  CONT: 900,
  STOP: 901,
  DENY: 902,
  DENYSOFT: 903,
  DENYDISCONNECT: 904,
  DISCONNECT: 905,
  OK: 906,
  HOOK_NEXT: 907,
  DELAY: 908,
  DENYSOFTDISCONNECT: 909,
};
Object.assign(globalThis, constants);

/** Node's `util.format`: `%s`, `%d`, `%i`, `%f`, `%j`, `%o`, `%O` and `%%`
 * filled in order, the rest appended. */
function format(first, ...args) {
  if (typeof first !== 'string') return [first, ...args].map(inspect).join(' ');
  let text = first.replace(/%([sdifjoO%])/g, (all, kind) => {
    if (kind === '%') return '%';
    if (args.length === 0) return all;
    const value = args.shift();
    if (kind === 's') {
      const own = value !== null && typeof value === 'object' && !Array.isArray(value) && value.toString !== Object.prototype.toString;
      return own ? String(value) : inspect(value);
    }
    if (kind === 'd' || kind === 'i' || kind === 'f') {
      const n = Number(value);
      return String(kind === 'i' ? Math.trunc(n) : n);
    }
    return inspect(value);
  });
  for (const value of args) text += ' ' + (typeof value === 'string' ? value : inspect(value));
  return text;
}

/** Node's `util.inspect`, roughly: strings as they are, other values as JSON. */
function inspect(value) {
  if (typeof value === 'string') return value;
  if (value instanceof Error) return String(value.stack ?? value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

const VERDICTS = new Map([
  [constants.OK, ok],
  [constants.DENY, deny],
  [constants.DENYSOFT, denysoft],
  [constants.DENYDISCONNECT, denyDisconnect],
  [constants.DENYSOFTDISCONNECT, denysoftDisconnect],
  [constants.DISCONNECT, disconnect],
]);
const CODES = new Map([
  ['ok', constants.OK],
  ['deny', constants.DENY],
  ['denysoft', constants.DENYSOFT],
  ['deny-disconnect', constants.DENYDISCONNECT],
  ['denysoft-disconnect', constants.DENYSOFTDISCONNECT],
  ['disconnect', constants.DISCONNECT],
]);

/** The Waraka verdict for `next(code, msg)`: `msg` a line, an array of lines
 * or a haraka-dsn object (`code`, `msg`, `cls`, `sub`, `det`). CONT, STOP,
 * HOOK_NEXT and DELAY (and no code) go on to the next plugin. */
export function verdictOf(code, msg) {
  const make = VERDICTS.get(code);
  if (!make) return cont;
  if (msg === undefined || msg === null || msg === '') return make();
  if (typeof msg === 'object' && !Array.isArray(msg) && 'msg' in msg) {
    const enhanced = msg.cls !== undefined ? `${msg.cls}.${msg.sub}.${msg.det}` : undefined;
    return make(msg.msg, msg.code, enhanced);
  }
  return make(Array.isArray(msg) ? msg.map(String) : String(msg));
}

/** An address as Haraka's address-rfc2821 shows it. */
export class Address {
  constructor(user, host, original) {
    this.user = user;
    this.host = host;
    this.original_host = host;
    this.original = original ?? (user || host ? `<${user}${host ? '@' + host : ''}>` : '<>');
  }

  /** The address of a WIT `address` record. */
  static of(record) {
    return new Address(record.localPart, record.domain);
  }

  /** The address of `local@domain` text (the null sender for ''). */
  static parse(text) {
    const at = text.lastIndexOf('@');
    return at < 0 ? new Address(text, '') : new Address(text.slice(0, at), text.slice(at + 1));
  }

  /** `user@host` (or `user` without a host). */
  address() {
    return this.host ? `${this.user}@${this.host}` : this.user;
  }

  /** `<user@host>`, or `<>` for the null sender. */
  format() {
    return this.isNull() ? '<>' : `<${this.address()}>`;
  }

  isNull() {
    return !this.user && !this.host;
  }

  toString() {
    return this.format();
  }
}

/** ESMTP parameters as Haraka gives them: `{ SIZE: '1234', SMTPUTF8: null }`. */
function esmtpParams(record) {
  return Object.fromEntries(record.params.map(({ key, value }) => [key.toUpperCase(), value ?? null]));
}

function parsed(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The objects and arrays of notes read or assigned during the current
 * hook call, by scope and key, with the JSON they had then: one changed in
 * place (`notes.seen.push(x)`, `notes.tls.verified = true`) is written back
 * when the call ends (`hookCall`). */
const noteObjects = new Map();

/** Runs one hook call: `run()`, then (once its answer is there) writes
 * back the note objects it changed in place. A call that throws (a fault)
 * writes nothing back. */
function hookCall(run) {
  noteObjects.clear();
  return andThen(run(), (answer) => {
    for (const { scope, key, value, text } of noteObjects.values()) {
      const now = JSON.stringify(value);
      if (now !== text) notes.set(scope, key, now);
    }
    noteObjects.clear();
    return answer;
  });
}

/** Runs `invoke(callback)`, a Haraka function that answers through a
 * callback (`next`, auth's `cb`), and gives the arguments of the
 * callback's first call: at once when it came before `invoke` returned,
 * else a promise of them, once the promise `invoke` returned (an `async`
 * function) has settled and the promise callbacks queued by then have run
 * (the component's event loop runs them within the hook call); null when
 * the callback never came. A second call is ignored, with a warning. */
function callbackAnswer(invoke, what) {
  let answer = null;
  let answered;
  const settled = new Promise((resolve) => {
    answered = resolve;
  });
  const callback = (...args) => {
    if (answer) {
      warn(`${what}: called back again (ignored)`);
      return;
    }
    answer = args;
    answered();
  };
  const returned = invoke(callback);
  if (answer) return answer;
  return (async () => {
    if (isPromise(returned)) await returned;
    if (!answer) await Promise.race([settled, new Promise((resolve) => setTimeout(resolve, 0))]);
    return answer;
  })();
}

/** Calls `count` functions in turn (`callOne(i)`, whose answer may come
 * later) until `decide(i, answer)` returns `{ value }`; `otherwise` when
 * none does. Synchronous while the answers come at once. */
function firstAnswer(count, callOne, decide, otherwise) {
  const from = (index) => {
    for (let i = index; i < count; i++) {
      const decided = andThen(callOne(i), (answer) => decide(i, answer));
      if (isPromise(decided)) return decided.then((d) => (d ? d.value : from(i + 1)));
      if (decided) return decided.value;
    }
    return otherwise;
  };
  return from(0);
}

/** The notes of `scope` as a Haraka notes object: properties, plus
 * `get(key)` and `set(key, value)`. Within a hook call a key reads as the
 * same object each time, so changes to it add up and are kept. */
export function notesOf(scope) {
  const held = (key, value) => {
    const id = `${scope}\0${key}`;
    if (value !== null && typeof value === 'object') {
      noteObjects.set(id, { scope, key, value, text: JSON.stringify(value) });
    } else {
      noteObjects.delete(id);
    }
    return value;
  };
  const read = (key) => {
    const cached = noteObjects.get(`${scope}\0${key}`);
    if (cached) return cached.value;
    const value = notes.get(scope, key);
    return value === undefined ? undefined : held(key, parsed(value));
  };
  const write = (key, value) => {
    held(key, value);
    if (value === undefined || value === null) {
      notes.remove(scope, key);
    } else {
      notes.set(scope, key, typeof value === 'string' ? value : JSON.stringify(value));
    }
    return true;
  };
  const methods = { get: read, set: write };
  return new Proxy(
    {},
    {
      get: (_, key) => (typeof key !== 'string' ? undefined : key in methods ? methods[key] : read(key)),
      set: (_, key, value) => write(key, value),
      deleteProperty: (_, key) => write(key, undefined),
      has: (_, key) => notes.get(scope, key) !== undefined,
      ownKeys: () => notes.keys(scope),
      getOwnPropertyDescriptor: (_, key) => {
        const value = read(key);
        return value === undefined ? undefined : { value, enumerable: true, configurable: true, writable: true };
      },
    },
  );
}

/** haraka-results' keys whose values are lists (`add` appends to them). */
const RESULT_LISTS = ['pass', 'fail', 'skip', 'err', 'msg'];

/** Haraka's `results` store (haraka-results) of `scope`, kept in the notes
 * (`results.PLUGIN`, JSON) so that every plugin of the connection or
 * transaction reads what the others found. */
export function resultsOf(scope) {
  const key = (plugin) => `results.${typeof plugin === 'string' ? plugin : plugin.name}`;
  const load = (plugin) => {
    const value = notes.get(scope, key(plugin));
    return value === undefined ? {} : JSON.parse(value);
  };
  const save = (plugin, result) => notes.set(scope, key(plugin), JSON.stringify(result));
  return {
    /** Appends to `pass`, `fail`, `skip`, `err`, `msg`; sets other keys. */
    add(plugin, found) {
      const result = load(plugin);
      for (const [k, v] of Object.entries(found)) {
        if (k === 'emit') continue;
        if (RESULT_LISTS.includes(k)) (result[k] ??= []).push(...(Array.isArray(v) ? v : [v]));
        else result[k] = v;
      }
      save(plugin, result);
      if (found.emit) info(`${key(plugin).slice(8)}: ${this.collate(plugin)}`);
      return result;
    },
    /** Appends to the lists of any keys. */
    push(plugin, found) {
      const result = load(plugin);
      for (const [k, v] of Object.entries(found)) (result[k] ??= []).push(...(Array.isArray(v) ? v : [v]));
      save(plugin, result);
      return result;
    },
    /** Adds to numbers. */
    incr(plugin, found) {
      const result = load(plugin);
      for (const [k, v] of Object.entries(found)) result[k] = (Number(result[k]) || 0) + Number(v);
      save(plugin, result);
      return result;
    },
    /** What `plugin` found (an empty object when nothing). */
    get: (plugin) => load(plugin),
    /** Whether `plugin`'s `k` is, or holds, `value` (a string or a RegExp). */
    has(plugin, k, value) {
      const found = load(plugin)[k];
      const matches = (v) => (value instanceof RegExp ? value.test(String(v)) : v === value);
      return Array.isArray(found) ? found.some(matches) : found !== undefined && matches(found);
    },
    /** One line of what `plugin` found, `key: values` separated by commas. */
    collate(plugin) {
      return Object.entries(load(plugin))
        .filter(([, v]) => !(Array.isArray(v) && v.length === 0))
        .map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : v}`)
        .join(', ');
    },
  };
}

/** A log line of Haraka-style arguments: strings, numbers and addresses
 * joined; connection and plugin objects (Haraka passes them for context)
 * left out. */
function logText(args) {
  return args
    .filter((a) => a !== undefined && a !== null && (typeof a !== 'object' || a instanceof Address || a instanceof Error || Array.isArray(a)))
    .map(String)
    .join(' ');
}

/** Haraka's log methods (`loginfo`, `logwarn`, ...) over Waraka's levels. */
function logMethods() {
  const at = (log) => (...args) => log(logText(args));
  return {
    logprotocol: at(trace),
    logdata: at(trace),
    logdebug: at(debug),
    loginfo: at(info),
    lognotice: at(info),
    logwarn: at(warn),
    logerror: at(error),
    logcrit: at(error),
    logalert: at(error),
    logemerg: at(error),
  };
}

const TRUE_WORDS = /^(?:true|yes|ok|enabled|on|1)$/i;
const NUMBER = /^-?\d+(?:\.\d+)?$/;

/** Parses an INI file as haraka-config does: `{ main: {...}, section: {...} }`,
 * `key[]=` arrays, numbers converted, `\` continuations, `;`/`#` comments, and
 * `booleans` (`'+section.key'` true by default, `'-section.key'` or
 * `'section.key'` false; `'*.key'` in every section). */
export function parseIni(text, options = {}) {
  const result = { main: {} };
  let section = result.main;
  let pending = '';
  for (const raw of (text ?? '').split(/\r?\n/)) {
    let line = pending + raw.trim();
    pending = '';
    if (line.endsWith('\\')) {
      pending = line.slice(0, -1);
      continue;
    }
    if (!line || line.startsWith(';') || line.startsWith('#')) continue;
    const header = /^\[([^\]]+)\]$/.exec(line);
    if (header) {
      section = result[header[1].trim()] ??= {};
      continue;
    }
    const at = line.indexOf('=');
    if (at < 0) {
      section[line] = true;
      continue;
    }
    let key = line.slice(0, at).trim();
    let value = line.slice(at + 1).trim();
    if (NUMBER.test(value)) value = Number(value);
    if (key.endsWith('[]')) {
      key = key.slice(0, -2);
      (section[key] ??= []).push(value);
    } else {
      section[key] = value;
    }
  }
  for (const declared of options.booleans ?? []) {
    const fallback = declared.startsWith('+');
    const [where, key] = declared.replace(/^[+-]/, '').split(/\.(.*)/s).filter((part) => part !== '');
    const sections = where === '*' ? Object.keys(result) : [where];
    for (const name of sections) {
      const target = (result[name] ??= {});
      const value = target[key];
      target[key] = value === undefined ? fallback : typeof value === 'boolean' ? value : TRUE_WORDS.test(String(value));
    }
  }
  return result;
}

/** The type and options of `config.get(name, [type], [onChange], [options])`:
 * the type follows the extension (`.ini`, `.json`, else `value`) unless given. */
function configArgs(name, rest) {
  const type = rest.find((a) => typeof a === 'string') ?? (name.endsWith('.ini') ? 'ini' : name.endsWith('.json') ? 'json' : 'value');
  return { type, options: rest.find((a) => a && typeof a === 'object') ?? {} };
}

/** The text of the config file `name`; undefined when it is missing or
 * unreadable (said in the log when `quiet` is not set). */
function configText(name, quiet = false) {
  try {
    return config.read(name);
  } catch (e) {
    if (!quiet) warn(`${name} unreadable: ${e.payload?.tag ?? e}`);
    return undefined;
  }
}

/** While `register()` runs: the config files it reads, with their text. */
let readByRegister = null;

/** Whether a file of `read` (name -> text) reads differently now. */
const configChanged = (read) => [...read].some(([name, text]) => configText(name, true) !== text);

/** `this.config` of a Haraka plugin, reading the instance's `config/`. */
export const harakaConfig = {
  /** `get(name, [type], [onChange], [options])`; the type follows the
   * extension (`.ini`, `.json`) unless given: `value`, `list`, `data`, `json`
   * or `ini`. Files are read on each call (the host caches them); what
   * `register()` read and kept is renewed by running it again once one of
   * its files changed, which is what Haraka's `onChange` callbacks are for
   * (they are not called). */
  get(name, ...rest) {
    const { type, options } = configArgs(name, rest);
    const text = configText(name);
    readByRegister?.set(name, text);
    const lines = (text ?? '').split(/\r?\n/);
    const content = lines.map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    switch (type) {
      case 'ini':
        return parseIni(text, options);
      case 'json':
        return text === undefined ? null : JSON.parse(text);
      case 'list':
        return content;
      case 'data':
        return text === undefined ? [] : lines.filter((l, i) => l || i < lines.length - 1);
      case 'value': {
        const first = content[0];
        return first === undefined ? null : NUMBER.test(first) ? Number(first) : first;
      }
      default:
        throw new Error(`config.get(${name}): unknown type ${type}`);
    }
  },

  /** The first line of `name` as an integer, `fallback` when there is none. */
  getInt(name, fallback) {
    const value = parseInt(this.get(name, 'value'), 10);
    return Number.isNaN(value) ? fallback : value;
  },
};

/** `this.config` while the component is built: the host is not there yet,
 * so every file reads as missing (an ini file as its declared booleans'
 * defaults). */
const buildTimeConfig = {
  get(name, ...rest) {
    const { type, options } = configArgs(name, rest);
    return { ini: parseIni('', options), list: [], data: [] }[type] ?? null;
  },
  getInt: (name, fallback) => fallback,
};

/** The message's header as Haraka's `transaction.header` reads it. */
const header = {
  get: (name) => message.header(name).join('\n'),
  get_all: (name) => message.header(name),
  get_decoded: (name) => message.headerDecoded(name).join('\n'),
};

/** The most text `transaction.body` holds (the `mime.texts` limit). */
const BODY_TEXT_MAX = 1 << 20;

/** Haraka's parsed `transaction.body` (as with `parse_body`, which is
 * always on here): the text parts that are not attachments, decoded to
 * UTF-8, the first as `bodytext` and `ct`, the others as `children`, so a
 * walk over `bodytext` and the children's sees each once. Null before
 * `data_post`. */
function bodyObject() {
  let texts;
  try {
    texts = mime.texts(BODY_TEXT_MAX);
  } catch {
    return null;
  }
  const [first, ...rest] = texts.map((t) => ({ ct: t.contentType, bodytext: t.text, children: [] }));
  return { ...(first ?? { ct: 'text/plain', bodytext: '' }), header, children: rest };
}

/** `connection.transaction`: null outside a transaction. */
function transactionObject() {
  const id = session.transactionId();
  if (id === undefined) return null;
  let body;
  return {
    uuid: id,
    notes: notesOf('transaction'),
    results: resultsOf('transaction'),
    get mail_from() {
      const sender = envelope.sender();
      return sender ? Address.of(sender) : null;
    },
    get rcpt_to() {
      return envelope.recipients().map(Address.of);
    },
    header,
    get body() {
      if (body === undefined) body = bodyObject();
      return body;
    },
    parse_body: true,
    get data_bytes() {
      return Number(message.size());
    },
    add_header: (name, value) => message.addHeader(name, String(value)),
    add_leading_header: (name, value) => message.insertHeader(0, name, String(value)),
    remove_header: (name) => message.removeHeader(name),
  };
}

/** Whether `ip` is a loopback address (Haraka's `remote.is_local`). */
function isLocalIp(ip) {
  return /^127\./.test(ip) || ip === '::1' || /^::ffff:127\./i.test(ip);
}

/** Whether `ip` is loopback, RFC 1918, link-local or IPv6 unique-local
 * (Haraka's `remote.is_private`). */
function isPrivateIp(ip) {
  const v4 = ip.replace(/^::ffff:/i, '');
  const [a, b] = v4.split('.').map(Number);
  if (v4.includes('.')) {
    return a === 127 || a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 169 && b === 254);
  }
  return ip === '::1' || /^f[cd]/i.test(ip) || /^fe[89ab]/i.test(ip);
}

/** Haraka's `connection.remote.host`, the client's rDNS name: the first PTR
 * name the `fcrdns` plugin noted, else a PTR lookup (with the `dns` grant);
 * `NXDOMAIN` when there is none and `DNSERROR` when the lookup failed, as
 * Haraka has them; null without the grant. */
function remoteHost() {
  const noted = notes.get('connection', 'fcrdns.ptr');
  if (noted) return noted.split(',')[0];
  try {
    const [name] = dns.lookupPtr(session.peerIp());
    return name ?? 'NXDOMAIN';
  } catch (e) {
    return e.payload?.tag === 'not-granted' ? null : 'DNSERROR';
  }
}

/** `connection` of a Haraka hook call, read from the session as it is asked. */
function connectionObject(capabilities) {
  // A hook call is inside one transaction or none: ask the host once; and
  // look up the client's name once.
  let transaction;
  let host;
  return {
    get uuid() {
      return session.connectionId();
    },
    remote: {
      get ip() {
        return session.peerIp();
      },
      get port() {
        return session.peerPort();
      },
      get host() {
        if (host === undefined) host = remoteHost();
        return host;
      },
      get is_local() {
        return isLocalIp(session.peerIp());
      },
      get is_private() {
        return isPrivateIp(session.peerIp());
      },
    },
    local: {
      get ip() {
        return session.localIp();
      },
      get port() {
        return session.localPort();
      },
      get host() {
        return session.hostname();
      },
    },
    hello: {
      get host() {
        return session.helo() ?? null;
      },
      get verb() {
        return session.helo() === undefined ? null : session.esmtp() ? 'EHLO' : 'HELO';
      },
    },
    tls: {
      get enabled() {
        return session.tlsVersion() !== undefined;
      },
      get cipher() {
        return { name: session.tlsCipher(), version: session.tlsVersion() };
      },
    },
    get relaying() {
      return session.relaying();
    },
    set relaying(value) {
      session.setRelaying(Boolean(value));
    },
    get esmtp() {
      return session.esmtp();
    },
    get early_talker() {
      return session.earlyTalker();
    },
    get transaction() {
      if (transaction === undefined) transaction = transactionObject();
      return transaction;
    },
    notes: notesOf('connection'),
    results: resultsOf('connection'),
    capabilities,
    ...logMethods(),
  };
}

/** Haraka hook -> [Waraka hook, how its WIT arguments become `params`, kind]:
 * `first` stops at the first answer other than CONT, `all` runs every method
 * and answers nothing (or CONT). */
const HOOKS = {
  connect_init: ['connect', () => undefined, 'all'],
  connect: ['connect', () => undefined, 'first'],
  helo: ['helo', (host) => host, 'first'],
  ehlo: ['ehlo', (host) => host, 'first'],
  capabilities: ['capabilities', () => undefined, 'all'],
  unrecognized_command: ['unrecognizedCommand', (verb, args) => [verb, args], 'first'],
  mail: ['mail', (sender) => [Address.of(sender), esmtpParams(sender)], 'first'],
  rcpt: ['rcpt', (recipient) => [Address.of(recipient), esmtpParams(recipient)], 'first'],
  rcpt_ok: ['rcptOk', (recipient) => Address.of(recipient), 'first'],
  data: ['data', () => undefined, 'first'],
  data_post: ['dataPost', () => undefined, 'first'],
  max_data_exceeded: ['maxDataExceeded', () => undefined, 'first'],
  queue: ['queue', () => undefined, 'first'],
  queue_outbound: ['queueOutbound', () => undefined, 'first'],
  queue_ok: ['queueOk', (queueId) => queueId, 'all'],
  reset_transaction: ['resetTransaction', () => undefined, 'all'],
  disconnect: ['disconnect', () => undefined, 'all'],
  deny: [
    'deny',
    (denial) => [CODES.get(denial.verdict.tag), denial.verdict.val?.lines, denial.plugin, undefined, undefined, denial.hook],
    'first',
  ],
};

/** `hmail` of an outbound hook: the queue entry as Haraka's HMailItem shows
 * it (`todo.notes` is empty: the transaction's notes stay with it). */
function hmailObject(delivery) {
  return {
    todo: {
      uuid: delivery.id,
      queue_time: Number(delivery.arrivalMs),
      domain: delivery.domain,
      mail_from: Address.parse(delivery.sender),
      rcpt_to: delivery.recipients.map(Address.parse),
      notes: {},
    },
    num_failures: delivery.attempts,
    ...logMethods(),
  };
}

/** The recipients that failed, as the Error Haraka's `deferred` and
 * `bounce` hooks get: its message the diagnostics, `bounced_rcpt` the
 * addresses with `reason` and `dsn_status`. */
function failureError(failures) {
  const err = new Error(failures.map((f) => `${f.recipient}: ${f.diagnostic}`).join('; '));
  err.bounced_rcpt = failures.map((f) => Object.assign(Address.parse(f.recipient), { reason: f.diagnostic, dsn_status: f.status }));
  return err;
}

/** One next hop of a `get_mx` answer: a HarakaMx-like object (`exchange`,
 * `port`), `host`, `host:port`, `[ip]:port` or an `smtp://` URL. */
function nextHop(mx) {
  if (typeof mx === 'object' && mx !== null) {
    const hop = nextHop(String(mx.exchange ?? mx.host));
    return mx.port === undefined ? hop : { ...hop, port: Number(mx.port) };
  }
  const text = String(mx);
  if (/^lmtp:/i.test(text)) throw new Error(`get_mx: ${text}: LMTP next hops are not supported (use queue/lmtp)`);
  const match = /^(?:smtp:\/\/)?(?:\[([^\]]+)\]|([^:/]+))(?::(\d+))?\/?$/i.exec(text);
  if (!match) throw new Error(`get_mx: ${text}: not a host, host:port or smtp:// URL`);
  return { host: match[1] ?? match[2], port: match[3] ? Number(match[3]) : 25 };
}

/** The next hops of a `get_mx` answer (one or an array), by `priority`. */
function nextHops(mx) {
  const list = Array.isArray(mx) ? [...mx] : [mx];
  list.sort((a, b) => (a?.priority ?? 0) - (b?.priority ?? 0));
  return list.map(nextHop);
}

/** Haraka's outbound hooks: the Waraka hook (`target`), how its WIT
 * arguments become `params`, how the first answer other than CONT becomes
 * Waraka's (the methods after it are not called; without `answer` every
 * method runs), and the answer when all said CONT (`otherwise`). */
const OUTBOUND_HOOKS = {
  send_email: {
    target: 'sendEmail',
    params: () => undefined,
    answer: ([code, msg]) => {
      if (code !== constants.DELAY) return deliver;
      if (Number.isFinite(Number(msg)) && Number(msg) >= 0) return delay(Number(msg));
      warn(`send_email: DELAY without a number of seconds (${msg}): delivering now`);
      return deliver;
    },
    otherwise: deliver,
  },
  get_mx: {
    target: 'getMx',
    params: (delivery) => delivery.domain,
    answer: ([code, msg]) => {
      if (code === constants.OK) return nextHops(msg);
      // Waraka's get-mx can only route: a refusal is a temporary failure,
      // retried on the schedule and bounced when the queue gives up.
      if (code === constants.DENY || code === constants.DENYSOFT) {
        throw new Error(`get_mx answered ${code === constants.DENY ? 'DENY' : 'DENYSOFT'}: ${msg ?? 'no MX'}`);
      }
      return undefined;
    },
    otherwise: undefined,
  },
  deferred: {
    target: 'deferred',
    params: (delivery, failures, retryIn) => {
      const err = failureError(failures);
      return { delay: retryIn, err, fail_recips: err.bounced_rcpt };
    },
    answer: ([code, msg]) => {
      if (code === constants.DENYSOFT && Number.isFinite(Number(msg)) && Number(msg) >= 0) return Number(msg);
      warn(`deferred: only DENYSOFT with seconds changes the wait; the entry is kept (Haraka would delete it)`);
      return undefined;
    },
    otherwise: undefined,
  },
  bounce: {
    target: 'bounce',
    params: (delivery, failures) => failureError(failures),
    // OK, DENY or STOP suppress the DSN, as in Haraka; a DENYSOFT (also a
    // hook that did not call next) sends it, where Haraka would drop it.
    answer: ([code]) => [constants.OK, constants.DENY, constants.STOP].includes(code),
    otherwise: false,
  },
  delivered: {
    target: 'delivered',
    params: (delivery, recipients, host, reply) => {
      const delaySeconds = (Date.now() - Number(delivery.arrivalMs)) / 1000;
      return [host, host, reply, delaySeconds, undefined, 'SMTP', recipients.map(Address.parse), undefined, undefined];
    },
    otherwise: undefined,
  },
};

/** RFC 3463's texts of the enhanced status codes, by subject and detail:
 * what a haraka-dsn object says when given no text. */
const STATUS_TEXTS = [
  ['Other undefined status'],
  ['Other address status', 'Bad destination mailbox address', 'Bad destination system address',
    'Bad destination mailbox address syntax', 'Destination mailbox address ambiguous', 'Destination address valid',
    'Destination mailbox has moved, No forwarding address', "Bad sender's mailbox address syntax",
    "Bad sender's system address", 'Message relayed to non-compliant mailer'],
  ['Other or undefined mailbox status', 'Mailbox disabled, not accepting messages', 'Mailbox full',
    'Message length exceeds administrative limit', 'Mailing list expansion problem'],
  ['Other or undefined mail system status', 'Mail system full', 'System not accepting network messages',
    'System not capable of selected features', 'Message too big for system', 'System incorrectly configured'],
  ['Other or undefined network or routing status', 'No answer from host', 'Bad connection', 'Directory server failure',
    'Unable to route', 'Mail system congestion', 'Routing loop detected', 'Delivery time expired'],
  ['Other or undefined protocol status', 'Invalid command', 'Syntax error', 'Too many recipients',
    'Invalid command arguments', 'Wrong protocol version', 'Authentication Exchange line is too long'],
  ['Other or undefined media error', 'Media not supported', 'Conversion required and prohibited',
    'Conversion required but not supported', 'Conversion with loss performed', 'Conversion failed',
    'Message content not available'],
  ['Authentication Succeeded', 'Delivery not authorized, message refused', 'Mailing list expansion prohibited',
    'Security conversion required but not possible', 'Security features not supported', 'Cryptographic failure',
    'Cryptographic algorithm not supported', 'Message integrity failure', 'Authentication credentials invalid',
    'Authentication mechanism is too weak', 'Encryption Needed',
    'Encryption required for requested authentication mechanism', 'A password transition is needed',
    'User Account Disabled', 'Trust relationship required'],
];

/** haraka-dsn's functions `(msg, code)`: the SMTP code when none is
 * given, the subject and detail of the enhanced status, and a text of the
 * function's own where it has one. */
const DSN_FUNCTIONS = {
  unspecified: [450, 0, 0],
  addr_unspecified: [450, 1, 0],
  addr_bad_dest_mbox: [550, 1, 1],
  no_such_user: [550, 1, 1, 'No such user'],
  addr_bad_dest_system: [550, 1, 2],
  addr_bad_dest_syntax: [550, 1, 3],
  addr_dest_ambigous: [450, 1, 4],
  addr_rcpt_ok: [250, 1, 5],
  addr_mbox_moved: [550, 1, 6],
  addr_bad_from_syntax: [550, 1, 7],
  addr_bad_from_system: [550, 1, 8],
  mbox_unspecified: [450, 2, 0],
  mbox_disabled: [550, 2, 1],
  mbox_full: [450, 2, 2],
  mbox_msg_too_long: [550, 2, 3],
  mbox_list_expansion_problem: [450, 2, 4],
  sys_unspecified: [450, 3, 0],
  sys_disk_full: [450, 3, 1],
  sys_not_accepting_mail: [450, 3, 2],
  sys_not_supported: [450, 3, 3],
  sys_msg_too_big: [550, 3, 4],
  sys_incorrectly_configured: [450, 3, 5],
  net_unspecified: [450, 4, 0],
  net_no_answer: [450, 4, 1],
  net_bad_connection: [450, 4, 2],
  net_directory_server_failed: [450, 4, 3],
  temp_resolver_failed: [450, 4, 3, 'Temporary address resolution failure'],
  net_unable_to_route: [550, 4, 4],
  net_system_congested: [450, 4, 5],
  net_routing_loop: [550, 4, 6],
  too_many_hops: [550, 4, 6, 'Too many hops'],
  net_delivery_time_expired: [550, 4, 7],
  proto_unspecified: [450, 5, 0],
  proto_invalid_command: [550, 5, 1],
  proto_syntax_error: [550, 5, 2],
  proto_too_many_rcpts: [450, 5, 3],
  proto_invalid_cmd_args: [550, 5, 4],
  proto_wrong_version: [450, 5, 5],
  media_unspecified: [450, 6, 0],
  media_unsupported: [550, 6, 1],
  media_conv_prohibited: [550, 6, 2],
  media_conv_unsupported: [450, 6, 3],
  media_conv_lossy: [450, 6, 4],
  media_conv_failed: [450, 6, 5],
  sec_unspecified: [450, 7, 0],
  sec_unauthorized: [550, 7, 1],
  bad_sender_ip: [550, 7, 1, 'Bad sender IP'],
  relaying_denied: [550, 7, 1, 'Relaying denied'],
  sec_list_expn_prohibited: [550, 7, 2],
  sec_conv_failed: [550, 7, 3],
  sec_feature_unsupported: [550, 7, 4],
  sec_crypto_failure: [550, 7, 5],
  sec_crypto_algo_unsupported: [450, 7, 6],
  sec_msg_integrity_failure: [550, 7, 7],
  auth_succeeded: [235, 7, 0],
  auth_pass_transition_needed: [432, 7, 12],
  auth_temp_fail: [454, 7, 0, 'Temporary authentication failure'],
  auth_too_weak: [534, 7, 9],
  auth_invalid: [535, 7, 8],
  auth_exch_too_long: [500, 5, 6],
  auth_required: [530, 7, 0, 'Authentication required'],
  auth_crypt_required: [538, 7, 11],
};

/** A haraka-dsn object: `code` (`fallback` unless `code` is a 2xx, 4xx or
 * 5xx one), `msg`, the enhanced status as `cls`, `sub`, `det` (the class is
 * the code's first digit), and the `reply` lines; `next(code, dsn)` answers
 * with its code, status and text. */
function dsn(code, msg, fallback, sub = 0, det = 0) {
  const own = /^[245]\d{2}$/.test(String(code)) ? Number(code) : (fallback ?? 450);
  const cls = Math.floor(own / 100);
  const status = `${cls}.${sub}.${det}`;
  const defaultText = STATUS_TEXTS[sub]?.[det] ?? '';
  const text = msg || defaultText;
  return {
    code: own,
    msg: text,
    cls,
    sub,
    det,
    default_msg: defaultText,
    reply: Array.isArray(text) ? text.map((line) => `${status} ${line}`) : `${status} ${text}`,
  };
}

/** The haraka-dsn module: `create(code, msg, subject, detail)` and a
 * function `(msg, code)` per status (`DSN.no_such_user()`). */
const DSN = {
  create: (code, msg, sub, det) => dsn(code, msg, null, sub, det),
  ...Object.fromEntries(
    Object.entries(DSN_FUNCTIONS).map(([name, [fallback, sub, det, text]]) => [
      name,
      (msg, code) => dsn(code, msg || text, fallback, sub, det),
    ]),
  ),
};

/** The modules `require` gives a Haraka plugin. */
const MODULES = {
  'haraka-constants': constants,
  'haraka-dsn': DSN,
  './dsn': DSN,
  // The address tests of haraka-net-utils (its network functions need Node's sockets).
  'haraka-net-utils': {
    is_private_ip: isPrivateIp,
    is_local_ip: isLocalIp,
    is_ip_literal: (host) => /^\[(?:IPv6:)?[0-9a-fA-F.:]+\]$/.test(host),
  },
  'address-rfc2821': { Address },
  util: { format, inspect },
};

/** Node's `require` for the modules Haraka plugins use that Waraka has. */
function require(id) {
  const found = MODULES[id.replace(/^node:/, '')];
  if (!found) {
    throw new Error(`require('${id}'): not in Waraka's sandbox (there: ${Object.keys(MODULES).join(', ')}); use the capabilities haraka.js exports`);
  }
  return found;
}

/** Haraka's `server` global: `server.notes`, shared by every connection
 * (and the outbound hooks) of the server, and with plugins in any language. */
globalThis.server = { notes: notesOf('server') };
/** Node's module system over the files of a Haraka plugin in several
 * files, as `waraka import-haraka` lays them out in `app.js`: `modules`
 * maps each file's path to a function `(module, exports, require,
 * __filename, __dirname)` running its code. Gives `main`'s
 * `module.exports`. A `require('./…')` or `require('../…')` finds the
 * file, with `.js` or `.json` added or as a directory's `index.js`, and runs
 * it once; any other name is one of the modules `require` knows. */
export function commonjs(modules, main) {
  const loaded = new Map();
  const resolve = (dir, id) => {
    const parts = dir ? dir.split('/') : [];
    for (const part of id.split('/')) {
      if (part === '..') parts.pop();
      else if (part !== '.' && part !== '') parts.push(part);
    }
    const base = parts.join('/');
    const found = [base, `${base}.js`, `${base}.json`, `${base}/index.js`].find((path) => path in modules);
    if (found === undefined) throw new Error(`require('${id}') in ${dir || '.'}/: no such file in the plugin`);
    return found;
  };
  const load = (path) => {
    if (loaded.has(path)) return loaded.get(path).exports;
    const module = { exports: {} };
    loaded.set(path, module);
    const dir = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
    const local = (id) => (id.startsWith('./') || id.startsWith('../') ? load(resolve(dir, id)) : require(id));
    modules[path].call(module.exports, module, module.exports, local, path, dir);
    return module.exports;
  };
  return load(main);
}

globalThis.module = { exports: {} };
globalThis.exports = globalThis.module.exports;
globalThis.require = require;

/** The `hooks` export of a Haraka plugin: `name`, the plugin's `exports`
 * object (`register()`, `hook_*` and whatever else it defines), and
 * optionally `{ version }`.
 *
 * `register()` runs when the component is built, with every config file
 * read as missing, so that a hook Waraka has no counterpart for (or a
 * `register_hook` naming no function) is a build error; when the host loads
 * the plugin, with the instance's config, to learn the hooks it registers
 * (the ones the host calls: a hook registered because of a setting is
 * called when the setting is on); and in each instance before its first
 * hook call, to set up what the plugin keeps on `this`, and again there
 * once a config file it read has changed. */
export function haraka(name, exports, { version = '0.1.0' } = {}) {
  let registered = [];
  let authBase = false;
  /** Waraka hook -> the Haraka methods behind it, as [haraka hook, method]:
   * in HOOKS order (connect_init before connect), then in registration
   * order. Made by each register(). */
  let byTarget = new Map();
  const self = Object.create(exports);
  Object.assign(self, logMethods(), {
    name,
    register_hook(hook, method) {
      registered.push([hook, method]);
    },
    inherits(parent) {
      if (parent !== 'auth/auth_base') {
        throw new Error(`${name}: this.inherits(${parent}): of Haraka's base plugins only auth/auth_base is here`);
      }
      authBase = true;
    },
  });

  /** Runs `register()` reading config through `config`, and learns the
   * hooks it registers and the `hook_*` functions; throws at one Waraka
   * cannot call. */
  const register = (config) => {
    registered = [];
    authBase = false;
    self.config = config;
    exports.register?.call(self);
    for (const key of Object.keys(exports)) {
      if (key.startsWith('hook_') && typeof exports[key] === 'function') registered.push([key.slice(5), key]);
    }
    for (const [hook, method] of registered) {
      if (!(hook in HOOKS) && !(hook in OUTBOUND_HOOKS)) {
        const supported = [...Object.keys(HOOKS), ...Object.keys(OUTBOUND_HOOKS)].join(', ');
        throw new Error(`${name}: no Waraka hook for Haraka's ${hook}; supported: ${supported}`);
      }
      if (typeof self[method] !== 'function') throw new Error(`${name}: register_hook(${hook}, ${method}): no such function`);
    }
    if (authBase && typeof self.check_plain_passwd !== 'function' && typeof self.get_plain_passwd !== 'function') {
      throw new Error(`${name}: an auth/auth_base plugin defines check_plain_passwd or get_plain_passwd`);
    }
    byTarget = new Map();
    for (const hook of [...Object.keys(HOOKS), ...Object.keys(OUTBOUND_HOOKS)]) {
      const target = HOOKS[hook]?.[0] ?? OUTBOUND_HOOKS[hook].target;
      for (const [h, method] of registered) {
        if (h === hook) byTarget.set(target, [...(byTarget.get(target) ?? []), [hook, method]]);
      }
    }
  };
  register(buildTimeConfig);

  /** The config files the last complete `register()` read, with their
   * text; null until one has completed in this instance. */
  let registerRead = null;
  /** Runs `register()` with the instance's config: before the instance's
   * first hook, and again once a config file it read has changed, so that
   * what it keeps on `this` follows the file as Haraka's reload callbacks
   * make it. A `register()` that throws faults this call (at load: the
   * plugin does not load), and is tried again at the next: the hooks never
   * run without what it sets up. */
  const ensureRegistered = () => {
    if (registerRead && !configChanged(registerRead)) return;
    registerRead = null;
    readByRegister = new Map();
    try {
      register(harakaConfig);
      registerRead = readByRegister;
    } finally {
      readByRegister = null;
    }
  };
  const methodsOf = (target) => byTarget.get(target) ?? [];

  /** Calls one method as Haraka would; its answer as [code, msg] (a
   * promise of it when next() comes later). */
  const call = (method, object, params) =>
    andThen(callbackAnswer((next) => self[method].call(self, next, object, params), `${method}: next()`), (answer) => {
      if (answer) return answer;
      warn(`${method} ended without calling next(): answering DENYSOFT (as Haraka's plugin timeout)`);
      return [constants.DENYSOFT, 'plugin timeout'];
    });

  // Every hook is defined; `describe` lists those with methods registered.
  const defined = {};
  for (const target of new Set(Object.values(HOOKS).map(([target]) => target))) {
    defined[target] = (...args) => hookCall(() => {
      ensureRegistered();
      const methods = methodsOf(target);
      const capabilities = [];
      if (methods.length === 0) return target === 'capabilities' ? capabilities : cont;
      const connection = connectionObject(capabilities);
      // One params for the chain, as in Haraka: a change one method makes
      // is what the next one sees.
      const params = HOOKS[methods[0][0]][1](...args);
      const decided = firstAnswer(
        methods.length,
        (i) => call(methods[i][1], connection, params),
        (i, [code, msg]) => {
          const verdict = verdictOf(code, msg);
          return HOOKS[methods[i][0]][2] === 'first' && verdict !== cont ? { value: verdict } : null;
        },
        cont,
      );
      return andThen(decided, (verdict) => {
        if (target === 'rcpt' && !['deny', 'denysoft', 'deny-disconnect', 'denysoft-disconnect'].includes(verdict.tag)) {
          rewriteRecipient(args[0], params[0]);
        }
        return target === 'capabilities' ? capabilities.map(String) : verdict;
      });
    });
  }
  for (const { target, params, answer, otherwise } of Object.values(OUTBOUND_HOOKS)) {
    defined[target] = (delivery, ...args) => hookCall(() => {
      ensureRegistered();
      const methods = methodsOf(target);
      const hmail = hmailObject(delivery);
      const hookParams = params(delivery, ...args);
      return firstAnswer(
        methods.length,
        (i) => call(methods[i][1], hmail, hookParams),
        (i, [code, msg]) => (answer && code !== undefined && code !== constants.CONT ? { value: answer([code, msg]) } : null),
        otherwise,
      );
    });
  }
  defined.auth = (attempt) =>
    hookCall(() => {
      ensureRegistered();
      return authBase ? authVerdict(self, attempt, connectionObject([])) : cont;
    });

  const hooks = wrap({ name, version, ...defined });
  hooks.describe = () => {
    ensureRegistered();
    const used = (target) => byTarget.has(target) || (target === 'auth' && authBase);
    const active = Object.fromEntries(Object.entries(defined).filter(([target]) => used(target)));
    return wrap({ name, version, ...active }).describe();
  };
  return hooks;
}

/** Haraka's auth/auth_base over Waraka's `auth` hook (the core runs the
 * SASL exchange): PLAIN and LOGIN are checked by the plugin's
 * `check_plain_passwd(connection, user, password, cb)` (`cb(true)`
 * accepts), or else by its `get_plain_passwd(user, [connection,] cb)` (`cb`
 * gets the stored cleartext password, compared). Other mechanisms go on to
 * the next plugin; an authorisation identity other than the user is
 * refused. */
function authVerdict(self, attempt, connection) {
  if (attempt.authzid !== undefined && attempt.authzid !== attempt.user) {
    return deny('Authorisation identity not allowed');
  }
  if (!['PLAIN', 'LOGIN'].includes(attempt.mechanism)) return cont;
  const check = typeof self.check_plain_passwd === 'function';
  const answered = callbackAnswer((cb) => {
    if (check) return self.check_plain_passwd(connection, attempt.user, attempt.secret, cb);
    if (self.get_plain_passwd.length >= 3) return self.get_plain_passwd(attempt.user, connection, cb);
    return self.get_plain_passwd(attempt.user, cb);
  }, `${self.name}: the password check's callback`);
  return andThen(answered, (answer) => {
    if (!answer) {
      warn(`${self.name}: the password check ended without calling its callback: answering DENYSOFT`);
      return denysoft();
    }
    const [value] = answer;
    if (check) return value ? ok() : deny();
    return value !== undefined && value !== null && String(value) === attempt.secret ? ok() : deny();
  });
}

/** Applies a `rcpt` hook's change of `params[0].user` or `.host` to the
 * envelope (the recipient being decided is the last one). */
function rewriteRecipient(record, address) {
  if (address.user === record.localPart && address.host === record.domain) return;
  const index = envelope.recipients().length - 1;
  envelope.setRecipient(index, { ...record, localPart: address.user, domain: address.host });
}
