// The Waraka plugin SDK for JavaScript, for components built with
// componentize-js against the `outbound-plugin` world (`waraka plugin build`).
//
// A plugin is an ES module (`app.js`) that exports `hooks`, made with
// `plugin()` from its name and the hook functions it wants; `describe` lists
// exactly those, so the host calls nothing else, and the others answer `cont`:
//
//     import { plugin, cont, deny, message } from './waraka.js';
//
//     export const hooks = plugin({
//       name: 'data.no_subject',
//       dataPost() {
//         return message.header('Subject').length ? cont : deny('A Subject is required', 550, '5.6.0');
//       },
//     });
//
// Hook names are the WIT names in camelCase (`rcptOk`, `dataPost`,
// `unrecognizedCommand`, ...), and so are record fields (`recipient.localPart`).
// The host imports are re-exported as modules: `notes`, `config`, `session`,
// `envelope`, `message`, `mime`, and the capabilities a plugin must be
// granted in `waraka.toml`: `kv`, `dns`, `blobstore`, `files`, `sql`,
// `forward`, `authentication`, `outboundQueue`, `dkim`, `antivirus`,
// `spamfilter`, `sasl`, `milter`, `ldap`, `http`, `geoip`, `imap`, `p0f`.
// A host call that fails throws an Error whose `payload` is the WIT error
// (`{ tag: 'not-granted' }`, `{ tag: 'backend', val: 'why' }`, ...). Enums
// are strings (`notes.get('transaction', key)`); u64 values are BigInts.

import { log } from 'waraka:plugin/log@0.1.0';
import * as notes from 'waraka:plugin/notes@0.1.0';
import * as config from 'waraka:plugin/config@0.1.0';
import * as session from 'waraka:plugin/session@0.1.0';
import * as envelope from 'waraka:plugin/envelope@0.1.0';
import * as message from 'waraka:plugin/message@0.1.0';
import * as kv from 'waraka:plugin/kv@0.1.0';
import * as dns from 'waraka:plugin/dns@0.1.0';
import * as blobstore from 'waraka:plugin/blobstore@0.1.0';
import * as files from 'waraka:plugin/files@0.1.0';
import * as sql from 'waraka:plugin/sql@0.1.0';
import * as forward from 'waraka:plugin/forward@0.1.0';
import * as authentication from 'waraka:plugin/authentication@0.1.0';
import * as mime from 'waraka:plugin/mime@0.1.0';
import * as outboundQueue from 'waraka:plugin/outbound-queue@0.1.0';
import * as dkim from 'waraka:plugin/dkim@0.1.0';
import * as antivirus from 'waraka:plugin/antivirus@0.1.0';
import * as spamfilter from 'waraka:plugin/spamfilter@0.1.0';
import * as sasl from 'waraka:plugin/sasl@0.1.0';
import * as milter from 'waraka:plugin/milter@0.1.0';
import * as ldap from 'waraka:plugin/ldap@0.1.0';
import * as http from 'waraka:plugin/http@0.1.0';
import * as geoip from 'waraka:plugin/geoip@0.1.0';
import * as imap from 'waraka:plugin/imap@0.1.0';
import * as p0f from 'waraka:plugin/p0f@0.1.0';

export { notes, config, session, envelope, message, mime, kv, dns, blobstore, files, sql, forward, authentication };
export { outboundQueue, dkim, antivirus, spamfilter, sasl, milter, ldap, http, geoip, imap, p0f };

/** Pass to the next plugin in the chain. */
export const cont = { tag: 'cont' };

function verdict(tag, text, code, enhanced) {
  if (text === undefined && !code && enhanced === undefined) {
    return { tag, val: undefined };
  }
  const lines = text === undefined ? [] : Array.isArray(text) ? text.map(String) : [String(text)];
  return { tag, val: { code: code ?? 0, enhanced, lines } };
}

/** Accept and end the chain; `text` (a line or an array of lines), `code`
 * and `enhanced` override the hook's default reply. */
export const ok = (text, code, enhanced) => verdict('ok', text, code, enhanced);
/** Reject permanently (5xx). */
export const deny = (text, code, enhanced) => verdict('deny', text, code, enhanced);
/** Reject temporarily (4xx): the client tries again later. */
export const denysoft = (text, code, enhanced) => verdict('denysoft', text, code, enhanced);
/** Reject permanently and close the connection. */
export const denyDisconnect = (text, code, enhanced) => verdict('deny-disconnect', text, code, enhanced);
/** Reject temporarily and close the connection. */
export const denysoftDisconnect = (text, code, enhanced) => verdict('denysoft-disconnect', text, code, enhanced);
/** Close the connection (421 by default). */
export const disconnect = (text, code, enhanced) => verdict('disconnect', text, code, enhanced);

/** Logs at trace level, tagged with the plugin and the session. */
export const trace = (text) => log('trace', String(text));
/** Logs at debug level. */
export const debug = (text) => log('debug', String(text));
/** Logs at info level. */
export const info = (text) => log('info', String(text));
/** Logs at warn level. */
export const warn = (text) => log('warn', String(text));
/** Logs at error level. */
export const error = (text) => log('error', String(text));

/** The `key = value` lines of one file in the instance's `config/`
 * (Haraka-style INI lines; `[sections]` and comment lines are ignored), read
 * once: load it at the start of a hook and ask it as often as needed. */
export class Settings {
  constructor(pairs) {
    this.pairs = pairs;
  }

  /** The settings of `config/NAME`; empty when it is missing or unreadable. */
  static load(name) {
    let lines = [];
    try {
      lines = config.lines(name);
    } catch (e) {
      warn(`${name} unreadable: ${e.payload?.tag ?? e}`);
    }
    const pairs = [];
    for (const line of lines) {
      const at = line.indexOf('=');
      if (at > 0) {
        pairs.push([line.slice(0, at).trim(), line.slice(at + 1).trim()]);
      }
    }
    return new Settings(pairs);
  }

  /** The value of `key` (the first one), `fallback` when missing. */
  get(key, fallback) {
    const pair = this.pairs.find(([k]) => k === key);
    return pair ? pair[1] : fallback;
  }

  /** A yes/no setting (true/yes/on/1 or false/no/off/0); `fallback` otherwise. */
  bool(key, fallback) {
    const value = (this.get(key) ?? '').toLowerCase();
    if (['true', 'yes', 'on', '1'].includes(value)) return true;
    if (['false', 'no', 'off', '0'].includes(value)) return false;
    return fallback;
  }

  /** A comma-separated setting as an array of trimmed, non-empty items. */
  list(key, fallback = '') {
    return this.get(key, fallback)
      .split(',')
      .map((item) => item.trim())
      .filter((item) => item);
  }
}

// JavaScript hook name -> WIT hook name, and what a hook the plugin does not
// define answers.
const HOOKS = {
  connect: ['connect', cont],
  helo: ['helo', cont],
  ehlo: ['ehlo', cont],
  capabilities: ['capabilities', []],
  auth: ['auth', cont],
  unrecognizedCommand: ['unrecognized-command', cont],
  mail: ['mail', cont],
  rcpt: ['rcpt', cont],
  rcptOk: ['rcpt-ok', cont],
  data: ['data', cont],
  dataPost: ['data-post', cont],
  maxDataExceeded: ['max-data-exceeded', cont],
  queue: ['queue', cont],
  queueOutbound: ['queue-outbound', cont],
  queueOk: ['queue-ok', undefined],
  resetTransaction: ['reset-transaction', undefined],
  disconnect: ['disconnect', undefined],
  deny: ['deny', cont],
};

/** `sendEmail`: deliver now (what a hook that returns nothing answers). */
export const deliver = { tag: 'deliver' };
/** `sendEmail`: wait `seconds` first; not counted as a failed attempt. */
export const delay = (seconds) => ({ tag: 'delay', val: seconds });
/** `sendEmail`: the plugin took care of the mail; the entry goes without
 * delivery and without a DSN. */
export const drop = { tag: 'drop' };

// The outbound hooks (docs/hooks.md, "Outbound hooks"), asked by the
// delivery worker without a session: JavaScript name -> WIT name, and what
// a hook that is not defined, or returns nothing, answers. They get a
// delivery `{ id, domain, sender, recipients, attempts, arrivalMs }`
// (arrivalMs a BigInt); `getMx` answers an array of `{ host, port }`,
// `deferred` a number of seconds, `bounce` true to suppress the DSN.
const OUTBOUND_HOOKS = {
  sendEmail: ['send-email', deliver],
  getMx: ['get-mx', undefined],
  deferred: ['deferred', undefined],
  bounce: ['bounce', false],
  delivered: ['delivered', undefined],
};

/** Whether `value` is a promise (or another thenable). */
export const isPromise = (value) => value !== null && typeof value === 'object' && typeof value.then === 'function';

/** `fn(value)` now, or once the promise `value` resolves: for answers that
 * may come at once or later (an `async` hook's). */
export const andThen = (value, fn) => (isPromise(value) ? value.then(fn) : fn(value));

/** The functions of `table` for the hooks in `defined`, the others
 * answering their default. */
function exported(table, defined) {
  const exports = {};
  for (const [key, [, fallback]] of Object.entries(table)) {
    const hook = defined[key];
    exports[key] = hook ? (...args) => andThen(hook(...args), (answer) => answer ?? fallback) : () => fallback;
  }
  return exports;
}

/** The `hooks` export of a plugin: `name`, `version` (default "0.1.0") and
 * the hook functions it defines, inbound and outbound. A hook that returns
 * nothing answers `cont` (outbound hooks: their default). An unknown hook
 * name is an error at build time, so a typo does not silently leave a hook
 * out. The outbound hooks are `hooks.outbound`, which `waraka plugin build`
 * exports as `outboundHooks`. */
export function plugin({ name, version = '0.1.0', ...defined }) {
  const known = { ...HOOKS, ...OUTBOUND_HOOKS };
  for (const key of Object.keys(defined)) {
    if (!(key in known)) {
      throw new Error(`${name}: unknown hook ${key}; hooks are ${Object.keys(known).join(', ')}`);
    }
  }
  return {
    describe: () => ({ name, version, hooks: Object.keys(defined).map((key) => known[key][0]) }),
    ...exported(HOOKS, defined),
    outbound: exported(OUTBOUND_HOOKS, defined),
  };
}
