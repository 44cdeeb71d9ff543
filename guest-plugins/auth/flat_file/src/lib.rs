//! `auth/flat_file`: verifies AUTH PLAIN/LOGIN credentials against the users
//! in `config/auth/flat_file.ini`:
//!
//! ```ini
//! allow_cleartext = false
//! [users]
//! alice = $argon2id$v=19$m=19456,t=2,p=1$...   # from `waraka password-hash`
//! ```
//!
//! Passwords are Argon2 hashes (PHC strings). An entry `plain:SECRET` is a
//! cleartext password and is refused unless `allow_cleartext = true`.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordVerifier};
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

/// Compares without an early exit, so timing does not reveal the common prefix.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `password` matches the stored `entry`; `Err` says why the entry cannot be used.
fn verify(entry: &str, password: &str, allow_cleartext: bool) -> Result<bool, String> {
    if let Some(clear) = entry.strip_prefix("plain:") {
        if !allow_cleartext {
            return Err("cleartext password entry refused (set allow_cleartext = true to allow)".into());
        }
        return Ok(same(clear.as_bytes(), password.as_bytes()));
    }
    let hash = PasswordHash::new(entry).map_err(|e| format!("unusable password hash: {e}"))?;
    Ok(Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
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
            Ok((Some(entry), allow_cleartext)) => match verify(&entry, &attempt.secret, allow_cleartext) {
                Ok(true) => Verdict::ok(),
                Ok(false) => Verdict::Deny(None),
                Err(why) => {
                    waraka_plugin::warn!("user {}: {why}", attempt.user);
                    Verdict::Deny(None)
                }
            },
            Ok((None, _)) => Verdict::Deny(None),
            Err(e) => Verdict::denysoft(&format!("user file unavailable: {e:?}")),
        }
    }
}

waraka_plugin::export!(FlatFile);

#[cfg(test)]
mod tests {
    use super::verify;
    use argon2::password_hash::{PasswordHasher, SaltString};

    #[test]
    fn hashes_verify_and_cleartext_needs_permission() {
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
        let hash = argon2::Argon2::default()
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert_eq!(verify(&hash, "pw", false), Ok(true));
        assert_eq!(verify(&hash, "pW", false), Ok(false));
        assert!(verify("plain:pw", "pw", false).is_err());
        assert_eq!(verify("plain:pw", "pw", true), Ok(true));
        assert_eq!(verify("plain:pw", "pw2", true), Ok(false));
        assert!(verify("not a hash", "pw", true).is_err());
    }
}
