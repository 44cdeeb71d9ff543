// rcpt_to.disposable in JavaScript: expiring addresses, from the Haraka talk.
//
// `user-YYYYMMDD@domain` is refused with `550 5.1.1 Expired email address`
// once that date has passed; until then the recipient is rewritten to
// `user@domain`, so the message is queued for the real mailbox. Other
// addresses pass on untouched. `config/rcpt_to.disposable.ini` may set the
// `separator` between user and date. The rewrites of a transaction are
// counted in a transaction note.

import { Settings, cont, deny, denysoft, envelope, info, notes, plugin } from './waraka.js';

const REWRITES = 'rcpt_to.disposable.rewrites';

/** Splits `user<separator>YYYYMMDD` into the user and the expiry date as a
 * YYYYMMDD number; undefined when the local part is not of that form. */
function parse(localPart, separator) {
  const escaped = separator.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const match = new RegExp(`^(.+)${escaped}(\\d{4})(\\d{2})(\\d{2})$`).exec(localPart);
  if (!match) return undefined;
  const [, user, year, month, day] = match;
  const [y, m, d] = [Number(year), Number(month), Number(day)];
  if (m < 1 || m > 12 || d < 1 || d > 31) return undefined;
  return { user, expiry: y * 10000 + m * 100 + d };
}

/** Today's UTC date as a YYYYMMDD number. */
function today() {
  const now = new Date();
  return now.getUTCFullYear() * 10000 + (now.getUTCMonth() + 1) * 100 + now.getUTCDate();
}

export const hooks = plugin({
  name: 'rcpt_to.disposable',
  version: '0.1.0',

  rcpt(recipient) {
    const separator = Settings.load('rcpt_to.disposable.ini').get('separator', '-');
    const parsed = parse(recipient.localPart, separator);
    if (!parsed) return cont;
    const address = `${recipient.localPart}@${recipient.domain}`;
    if (parsed.expiry < today()) {
      info(`${address} expired on ${parsed.expiry}`);
      return deny('Expired email address', 550, '5.1.1');
    }
    // The candidate recipient is the last one while `rcpt` runs.
    const index = envelope.recipients().length - 1;
    try {
      envelope.setRecipient(index, { ...recipient, localPart: parsed.user });
    } catch (e) {
      return denysoft(`cannot rewrite recipient: ${e.payload?.tag ?? e}`, 451, '4.3.0');
    }
    const count = Number(notes.get('transaction', REWRITES) ?? 0) + 1;
    notes.set('transaction', REWRITES, String(count));
    info(`rewriting ${address} to ${parsed.user}@${recipient.domain} (expires ${parsed.expiry}; rewrite ${count} of this transaction)`);
    return cont;
  },
});
