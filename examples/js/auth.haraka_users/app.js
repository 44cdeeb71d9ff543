// auth.haraka_users: an AUTH plugin written the way Haraka's
// auth/flat_file is, on Haraka's auth/auth_base, run through `haraka.js`:
// `register()` inherits auth_base and loads the users, and
// `get_plain_passwd` hands auth_base the stored password of a user. The
// core runs the SASL exchange (PLAIN, LOGIN) and everything around it.
//
// The passwords are in cleartext, as in Haraka's file: Waraka's own
// auth/flat_file and auth/sql keep hashes, and are the better home for users.

import { haraka } from './haraka.js';

exports.register = function () {
    this.inherits('auth/auth_base');
    this.load_users();
};

exports.load_users = function () {
    this.cfg = this.config.get('auth.haraka_users.ini', () => this.load_users());
};

exports.get_plain_passwd = function (user, connection, cb) {
    if (this.cfg.users && this.cfg.users[user]) {
        return cb(this.cfg.users[user].toString());
    }
    return cb();
};

export const hooks = haraka('auth.haraka_users', exports);
