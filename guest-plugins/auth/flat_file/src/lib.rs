//! `auth/flat_file`: verifies AUTH PLAIN/LOGIN credentials against the users
//! in `config/auth/flat_file.ini`:
//!
//! ```ini
//! allow_cleartext = false
//! [users]
//! alice = $argon2id$v=19$m=19456,t=2,p=1$...   # from `waraka password-hash`
//! ```
//!
//! Passwords are Argon2 hashes (PHC strings), or any other form
//! `waraka_plugin::passwords` knows (bcrypt, SHA-crypt, Dovecot's
//! `{SCHEME}`). An entry `plain:SECRET` is a cleartext password and is
//! refused unless `allow_cleartext = true`.

use waraka_plugin::passwords;
use waraka_plugin::{AuthAttempt, Hook, Plugin, Verdict, config};

const FILE: &str = "auth/flat_file.ini";

struct FlatFile;

/// The stored entry for `user`, and whether cleartext entries are allowed.
fn lookup(user: &str) -> Result<(Option<String>, bool), waraka_plugin::Error> {
    let mut section = String::new();
    let mut allow_cleartext = false;
    let mut entry = None;
    for line in config::lines(FILE)? {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match section.as_str() {
            "" if key == "allow_cleartext" => allow_cleartext = matches!(value, "true" | "yes" | "1"),
            "users" if key == user => entry = Some(value.to_string()),
            _ => {}
        }
    }
    Ok((entry, allow_cleartext))
}

impl Plugin for FlatFile {
    const NAME: &'static str = "auth/flat_file";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Auth];

    fn auth(attempt: AuthAttempt) -> Verdict {
        if let Some(verdict) = attempt.precheck() {
            return verdict;
        }
        match lookup(&attempt.user) {
            Ok((Some(entry), allow_cleartext)) => passwords::verdict(&attempt, &entry, allow_cleartext),
            Ok((None, _)) => Verdict::Deny(None),
            Err(e) => Verdict::denysoft(&format!("user file unavailable: {e:?}")),
        }
    }
}

waraka_plugin::export!(FlatFile);
