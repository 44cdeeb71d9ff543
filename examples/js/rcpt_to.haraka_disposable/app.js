// rcpt_to.haraka_disposable: the Haraka talk's disposable-address plugin,
// its code as it was in Haraka ("Writing a Plugin"), run through
// `haraka.js`. Only the import line and the last line are new.
//
// Around it, what a Haraka plugin usually does besides: `register()` reads
// its ini file with a declared boolean (which registers a `data_post`
// hook when it is on), the `data_post` hook reads the
// transaction's notes and recipients and adds a header, and `mail` marks
// connections from the loopback address in a connection note (an object
// filled in place, as Haraka plugins do) and a result, counting MAIL
// commands in the server's notes.

import { haraka } from './haraka.js';
const util = require('util');

exports.register = function () {
    this.cfg = this.config.get('rcpt_to.haraka_disposable.ini', {
        booleans: ['-main.add_header'],
    });
    // A hook registered because of a setting: with add_header off, the
    // host does not call data_post at all.
    if (this.cfg.main.add_header) {
        this.register_hook('data_post', 'add_disposable_header');
    }
};

// The talk's plugin, as it was.
exports.hook_rcpt = function (next, connection, params) {
    var rcpt = params[0];
    this.loginfo("Got recipient: " + rcpt);
    // Check user matches regex 'user-YYYYMMDD':
    var match = /^(.*)-(\d{4})(\d{2})(\d{2})$/.exec(rcpt.user);
    if (!match) {
        return next();
    }
    // get date - note Date constructor takes month-1 (i.e. Dec == 11).
    var expiry_date = new Date(match[2], match[3]-1, match[4]);
    this.loginfo("Email expires on: " + expiry_date);
    var today = new Date();
    if (expiry_date < today) {
        // If we get here, the email address has expired
        return next(DENY, "Expired email address");
    }
    // now get rid of the extension:
    rcpt.user = match[1];
    this.loginfo("Email address now: " + rcpt);
    connection.transaction.notes.disposable = (connection.transaction.notes.disposable || 0) + 1;
    next();
};

exports.hook_mail = function (next, connection, params) {
    server.notes.mails = (server.notes.mails || 0) + 1;
    this.loginfo(util.format('MAIL FROM %s with %j from %s [%s], mail %d of the server', params[0], params[1],
        connection.remote.host, connection.remote.ip, server.notes.mails));
    if (connection.remote.is_local) {
        connection.notes.loopback = connection.notes.loopback || {};
        connection.notes.loopback.since = connection.uuid;
        connection.notes.loopback.helo = connection.hello.host;
        connection.results.add(this, { pass: 'loopback' });
    }
    if (params[0].host === this.cfg.main.refused_sender_domain) {
        return next(DENYSOFT, "Try again later");
    }
    next();
};

exports.add_disposable_header = function (next, connection) {
    var txn = connection.transaction;
    this.loginfo('Subject: ' + txn.header.get_decoded('Subject') + ', body: ' + txn.body.bodytext.trim());
    if (txn.notes.disposable) {
        txn.add_header('X-Disposable', txn.notes.disposable + ' of ' + txn.rcpt_to.length +
            ' for ' + txn.mail_from.address() + ' via ' +
            (connection.notes.loopback ? connection.notes.loopback.helo : connection.remote.host) +
            ' (' + connection.results.collate(this) + ')');
    }
    next();
};

export const hooks = haraka('rcpt_to.haraka_disposable', exports);
