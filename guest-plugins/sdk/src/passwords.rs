//! Stored-password checks for auth plugins (cargo feature `passwords`): the
//! forms a user database holds, so that users keep their passwords when
//! their mail moves to Waraka.
//!
//! A stored password is either in Dovecot's form, `{SCHEME}value` (what
//! `doveadm pw` makes and what Postfix Admin and most mail user tables hold),
//! or bare:
//!
//! | stored | scheme |
//! | --- | --- |
//! | `$argon2id$…`, `$argon2i$…`; `{ARGON2ID}`, `{ARGON2I}` | Argon2 (PHC string) |
//! | `$2y$…`, `$2b$…`, `$2a$…`; `{BLF-CRYPT}` | bcrypt |
//! | `$6$…`, `$5$…`; `{SHA512-CRYPT}`, `{SHA256-CRYPT}` | SHA-crypt |
//! | `$1$…`; `{MD5-CRYPT}` | MD5-crypt (old; kept for old tables) |
//! | `{CRYPT}` followed by one of the `$` forms above | that form |
//! | `{SSHA512}`, `{SSHA256}`, `{SSHA}`, `{SHA512}`, `{SHA256}`, `{SHA}` | salted or plain SHA digests, base64 (or `.HEX`: `{SSHA512.HEX}`) |
//! | `plain:SECRET`, `{PLAIN}SECRET` | cleartext, only when allowed |
//!
//! Anything else (DES crypt, an unknown scheme, a damaged value) is
//! [`Stored::Unusable`], never a match.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use base64::Engine;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

use crate::{AuthAttempt, Verdict};

/// What checking a password against a stored value found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// The password is the one stored.
    Matches,
    /// It is not.
    Differs,
    /// The stored value cannot be checked against: why (log it; refuse).
    Unusable(String),
}

/// Checks `password` against `stored`; a cleartext entry counts only when
/// `allow_cleartext` (otherwise it is [`Stored::Unusable`]).
pub fn check(stored: &str, password: &str, allow_cleartext: bool) -> Stored {
    let (scheme, value) = split_scheme(stored);
    let result = match scheme.as_deref() {
        None => bare(value, password, allow_cleartext),
        Some("PLAIN" | "CLEAR" | "CLEARTEXT") => cleartext(value, password, allow_cleartext),
        Some("ARGON2I" | "ARGON2ID") => argon2(value, password),
        Some("CRYPT" | "BLF-CRYPT" | "SHA512-CRYPT" | "SHA256-CRYPT" | "MD5-CRYPT") => unix_crypt(value, password),
        Some(digest) => salted_digest(digest, value, password),
    };
    match result {
        Ok(true) => Stored::Matches,
        Ok(false) => Stored::Differs,
        Err(why) => Stored::Unusable(why),
    }
}

/// The `auth` verdict on `attempt`'s password against `stored`: `ok` when
/// it matches, a refusal when not (an unusable stored value is logged).
pub fn verdict(attempt: &AuthAttempt, stored: &str, allow_cleartext: bool) -> Verdict {
    match check(stored, &attempt.secret, allow_cleartext) {
        Stored::Matches => Verdict::ok(),
        Stored::Differs => Verdict::Deny(None),
        Stored::Unusable(why) => {
            crate::warn!("user {}: {why}", attempt.user);
            Verdict::Deny(None)
        }
    }
}

/// `{SCHEME}value` as (`SCHEME` upper-cased, `value`); no scheme for a bare value.
fn split_scheme(stored: &str) -> (Option<String>, &str) {
    stored
        .strip_prefix('{')
        .and_then(|rest| rest.split_once('}'))
        .map_or((None, stored), |(scheme, value)| {
            (Some(scheme.to_ascii_uppercase()), value)
        })
}

/// A value without `{SCHEME}`: told apart by its own prefix.
fn bare(value: &str, password: &str, allow_cleartext: bool) -> Result<bool, String> {
    if let Some(clear) = value.strip_prefix("plain:") {
        cleartext(clear, password, allow_cleartext)
    } else if value.starts_with("$argon2") {
        argon2(value, password)
    } else if value.starts_with('$') {
        unix_crypt(value, password)
    } else {
        Err("unrecognised password form (see the auth plugin's documentation for the schemes)".into())
    }
}

fn cleartext(value: &str, password: &str, allow_cleartext: bool) -> Result<bool, String> {
    if !allow_cleartext {
        return Err("cleartext password entry refused (set allow_cleartext = true to allow)".into());
    }
    Ok(same(value.as_bytes(), password.as_bytes()))
}

fn argon2(value: &str, password: &str) -> Result<bool, String> {
    let hash = PasswordHash::new(value).map_err(|e| format!("unusable Argon2 hash: {e}"))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("unusable Argon2 hash: no salt or no hash".into());
    }
    Ok(Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// The `crypt(3)` forms Waraka accepts: bcrypt, SHA-crypt and MD5-crypt
/// (never DES or BSDi crypt, which keep only part of a password).
fn unix_crypt(value: &str, password: &str) -> Result<bool, String> {
    const PREFIXES: [&str; 6] = ["$2y$", "$2b$", "$2a$", "$6$", "$5$", "$1$"];
    if !PREFIXES.iter().any(|p| value.starts_with(p)) {
        return Err("unsupported crypt form (bcrypt, SHA-crypt or MD5-crypt only)".into());
    }
    let made = pwhash::unix::crypt(password, value).map_err(|e| format!("unusable crypt hash: {e}"))?;
    Ok(same(made.as_bytes(), value.as_bytes()))
}

/// `{SHA}`, `{SSHA512}`, …: the digest of the password (followed by the salt
/// for the salted ones), then the salt, base64 (or hex with `.HEX`).
fn salted_digest(scheme: &str, value: &str, password: &str) -> Result<bool, String> {
    let (name, encoding) = scheme.split_once('.').unwrap_or((scheme, "B64"));
    let decoded = match encoding {
        "B64" | "BASE64" => base64::engine::general_purpose::STANDARD.decode(value.trim()).ok(),
        "HEX" => hex::decode(value.trim()).ok(),
        _ => None,
    }
    .ok_or_else(|| format!("unusable {scheme} value"))?;
    let (salted, digest): (bool, Digester) = match name {
        "SHA" | "SHA1" => (false, sha::<Sha1>),
        "SSHA" => (true, sha::<Sha1>),
        "SHA256" => (false, sha::<Sha256>),
        "SSHA256" => (true, sha::<Sha256>),
        "SHA512" => (false, sha::<Sha512>),
        "SSHA512" => (true, sha::<Sha512>),
        _ => return Err(format!("unsupported password scheme {{{scheme}}}")),
    };
    let length = digest(b"", b"").len();
    if decoded.len() < length || (!salted && decoded.len() != length) {
        return Err(format!("unusable {scheme} value (wrong length)"));
    }
    let (expected, salt) = decoded.split_at(length);
    Ok(same(&digest(password.as_bytes(), salt), expected))
}

/// A digest of a password followed by a salt.
type Digester = fn(&[u8], &[u8]) -> Vec<u8>;

fn sha<D: Digest>(password: &[u8], salt: &[u8]) -> Vec<u8> {
    let mut hasher = D::new();
    hasher.update(password);
    hasher.update(salt);
    hasher.finalize().to_vec()
}

/// Compares without an early exit, so timing does not reveal the common prefix.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::{Stored, check};

    const PASSWORD: &str = "correct hörse";

    /// Made by Dovecot's `doveadm pw -s SCHEME -p 'correct hörse'` (2.3.19).
    const DOVEADM: &[&str] = &[
        "{BLF-CRYPT}$2y$05$8cIXRDSkSxN4yNIBGkjlFOh070MYSjSNUqe7WbqXCnHbkRAhwO0OC",
        "{SHA512-CRYPT}$6$Z2U1IkUsYi3WnURm$fp36A70rKXbLnayW.j2yg3.1uRKaKpQDkoQpcJpDx2MXwWdnw3Q6drNa2sdB/MzMu0yFGT9/brgTdZ6BQ8rw20",
        "{SHA512-CRYPT}$6$rounds=10000$vMcdavHhYZgDDzDs$b/nhlukzqJNmG2GjjLRWRdxXE0Cvf3/aJB0OyFQLlPPU1izHkPXNA.hgBVFIl.Lx5A2pg37vU/pOmEGXEje9Y1",
        "{SHA256-CRYPT}$5$O2abyTGbLHggpE/7$p3AkA9vAgbk2Lq.X1TeHb/qZ8YaAYkqoeh3/PC3zj71",
        "{MD5-CRYPT}$1$.8ryPUVb$.L5h9j/D5yCJmwm1PWjge0",
        "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$jA5KiiGnyOpnPjvYMAgsUw$h8YfYWcN7na7kId09Am/IfjGholu8+hWT6c7B54GkrY",
        "{SHA}rJD/5olTxW7AqKHZorModWn6ltY=",
        "{SSHA}ReAIj3SFTfT8EMZjsA6pMHxlK+8bDqJr",
        "{SHA256}j7uNwFVXQoiOuXBvoNRPDcadMD6uTMsvpYwtIqw2Qis=",
        "{SSHA256}zNZj+yA5YqXLMFlVbMkO7ixq5+VrMl5bUBliRDDoLhufV9AR",
        "{SHA512}KOgXCcz7iHiZUaic8uZYaMq4YfwFsrtwAfXAAjpETGA3sBgscoFX14piOfb0ci6gVEJVhpDeFYVW1xwG2ZUIHQ==",
        "{SSHA512}d9OdwlwYbKCjRYplzNyhfesKREMYBXH64P0WlybxrX534tZ+OikJtvCzjyvUnzHjiVa49ZAnB9wIkhtPlB+oR7Z9kx8=",
        "{SHA512.HEX}28e81709ccfb88789951a89cf2e65868cab861fc05b2bb7001f5c0023a444c6037b0182c728157d78a6239f6f4722ea05442558690de158556d71c06d995081d",
        "{SSHA256.HEX}fc2689ede7fb66fae5d6d3d51844c3069c09ed96b82f85b542127dbc63529a51a6af5a14",
    ];

    /// Made by libxcrypt's `crypt(3)` (Python's `crypt`, Debian 12).
    const LIBC_CRYPT: &[&str] = &[
        "$2b$04$Zp.icK75boAdBNp0NLhjxul0AxD0G2YMNwNdZjI3BOTkG9wouAcEO",
        "$2a$04$T8kPr2HCoFfs60oJLXZuVuIox/nROdKArLRy5.ZY0RzYpUkD9hHJa",
    ];

    #[test]
    fn bcrypt_of_every_variant_matches_its_password_only() {
        for stored in LIBC_CRYPT {
            assert_eq!(check(stored, PASSWORD, false), Stored::Matches, "{stored}");
            assert_eq!(check(stored, "correct horse", false), Stored::Differs, "{stored}");
        }
    }

    #[test]
    fn every_scheme_doveadm_makes_matches_its_password_only() {
        for stored in DOVEADM {
            assert_eq!(check(stored, PASSWORD, false), Stored::Matches, "{stored}");
            assert_eq!(check(stored, "correct horse", false), Stored::Differs, "{stored}");
            let (_, bare) = stored.split_once('}').unwrap();
            if bare.starts_with('$') {
                assert_eq!(check(bare, PASSWORD, false), Stored::Matches, "bare {bare}");
            }
            if bare.starts_with('$') && !bare.starts_with("$argon2") {
                let crypt = format!("{{CRYPT}}{bare}");
                assert_eq!(check(&crypt, PASSWORD, false), Stored::Matches, "{crypt}");
            }
        }
    }

    #[test]
    fn cleartext_counts_only_when_allowed() {
        for stored in ["plain:s3cret", "{PLAIN}s3cret", "{plain}s3cret"] {
            assert!(
                matches!(check(stored, "s3cret", false), Stored::Unusable(_)),
                "{stored}"
            );
            assert_eq!(check(stored, "s3cret", true), Stored::Matches, "{stored}");
            assert_eq!(check(stored, "s3cre", true), Stored::Differs, "{stored}");
        }
    }

    #[test]
    fn weak_unknown_and_damaged_forms_never_match() {
        for stored in [
            "s3cret",
            "abJnggxhB/yWI",
            "{CRYPT}abJnggxhB/yWI",
            "$3$something",
            "{MD5}xxx",
            "{SSHA512}!!!",
            "{SHA256}c2hvcnQ=",
            "{SHA512.HEX}zz",
            "$argon2id$v=19$m=19456",
            "$6$",
        ] {
            assert!(matches!(check(stored, "s3cret", true), Stored::Unusable(_)), "{stored}");
        }
    }
}
