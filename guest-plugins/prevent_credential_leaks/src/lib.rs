//! `prevent_credential_leaks`: refuses a message from an authenticated
//! user whose text holds that user's own name and password, as Haraka's
//! plugin of that name — the reply to a phishing mail ("please confirm your
//! login") that would hand the account over. At AUTH the plugin keeps a
//! salted SHA-256 of the password in a connection note (never the password
//! itself), and after DATA it compares every word of the message's text
//! parts with it. Settings: `config/prevent_credential_leaks.ini`.

use sha2::{Digest, Sha256};
use waraka_plugin::{AuthAttempt, Hook, Plugin, Scope, Settings, Verdict, notes, session};

const SETTINGS: &str = "prevent_credential_leaks.ini";
/// The user and the hash of the password they tried (connection note).
const NOTE: &str = "prevent_credential_leaks.secret";

struct PreventCredentialLeaks;

/// The hex SHA-256 of `password`, salted with the connection's id.
fn fingerprint(salt: &str, password: &str) -> String {
    let digest = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update([0])
        .chain_update(password.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The words of `text` as a password could stand in it: split at white
/// space, each also without the punctuation around it (`"hunter2."`).
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split_whitespace().flat_map(|word| {
        let bare = word.trim_matches(|c: char| {
            matches!(
                c,
                '.' | ',' | ';' | ':' | '!' | '?' | '"' | '\'' | '(' | ')' | '<' | '>'
            )
        });
        [word, bare].into_iter().take(if bare == word { 1 } else { 2 })
    })
}

/// Whether `text` holds `user` (or its part before `@`) and a word whose
/// fingerprint is `secret`.
fn leaks(text: &str, user: &str, salt: &str, secret: &str) -> bool {
    let lower = text.to_lowercase();
    let local = user.split('@').next().unwrap_or(user).to_lowercase();
    let names_user = lower.contains(&user.to_lowercase()) || (local.len() >= 3 && lower.contains(&local));
    names_user && words(text).any(|w| fingerprint(salt, w) == secret)
}

impl Plugin for PreventCredentialLeaks {
    const NAME: &'static str = "prevent_credential_leaks";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Auth, Hook::DataPost];

    /// Keeps the fingerprint of the password tried; the `auth` plugins
    /// after this one decide.
    fn auth(attempt: AuthAttempt) -> Verdict {
        if !attempt.secret.is_empty() {
            let value = format!(
                "{}\n{}",
                fingerprint(&session::connection_id(), &attempt.secret),
                attempt.user
            );
            waraka_plugin::note_connection(NOTE, &value);
        }
        Verdict::Cont
    }

    fn data_post() -> Verdict {
        let Some(user) = session::auth_user() else {
            return Verdict::Cont;
        };
        let Some((secret, tried)) = notes::get(Scope::Connection, NOTE).and_then(|v| {
            let (secret, tried) = v.split_once('\n')?;
            Some((secret.to_string(), tried.to_string()))
        }) else {
            return Verdict::Cont;
        };
        if tried != user {
            return Verdict::Cont;
        }
        let texts = Settings::load(SETTINGS).message_texts();
        let salt = session::connection_id();
        if texts.iter().any(|t| leaks(&t.text, &user, &salt, &secret)) {
            waraka_plugin::warn!("prevent_credential_leaks: {user} sent their own password; refused");
            return Verdict::deny_code(
                550,
                "5.7.0",
                "This message contains your password: it was not sent. Never give your password to anyone",
            );
        }
        Verdict::Cont
    }
}

waraka_plugin::export!(PreventCredentialLeaks);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_with_the_user_and_the_password_leaks() {
        let secret = fingerprint("C1", "hunter2");
        let leak = "Dear support,\nmy login is alice@example.com and my password is \"hunter2\".\n";
        assert!(leaks(leak, "alice@example.com", "C1", &secret));
        assert!(
            leaks("user ALICE, pass hunter2", "alice@example.com", "C1", &secret),
            "the local part, any case"
        );
        assert!(
            !leaks("my password is hunter2", "bob@example.com", "C1", &secret),
            "no user named"
        );
        assert!(
            !leaks("alice: hunter", "alice@example.com", "C1", &secret),
            "not the password"
        );
        assert!(
            !leaks("alice: hunter2", "alice@example.com", "C2", &secret),
            "another connection's salt"
        );
        assert!(
            !leaks("alice: xhunter2x", "alice@example.com", "C1", &secret),
            "words, not substrings"
        );
    }
}
