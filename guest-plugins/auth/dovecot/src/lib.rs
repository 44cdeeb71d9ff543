//! `auth/dovecot`: verifies AUTH PLAIN/LOGIN credentials with Dovecot's
//! authentication service (the host's `sasl` capability, `[sasl]` in
//! `waraka.toml`), so the users and passwords of the mailboxes are those of
//! the submission port — what Postfix's `smtpd_sasl_type = dovecot` does.
//! Users without a domain get `default_domain` from `config/auth/dovecot.ini`
//! when it is set. The name Dovecot knows the user by is logged.

use waraka_plugin::{AuthAttempt, Error, Hook, Plugin, Settings, Verdict, sasl};

const SETTINGS: &str = "auth/dovecot.ini";

struct Dovecot;

/// The user name to ask for: `user`, with `default_domain` when it has none.
fn qualified(user: &str, default_domain: Option<&str>) -> String {
    match default_domain.filter(|d| !d.is_empty()) {
        Some(domain) if !user.contains('@') => format!("{user}@{domain}"),
        _ => user.to_string(),
    }
}

impl Plugin for Dovecot {
    const NAME: &'static str = "auth/dovecot";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Auth];

    fn auth(attempt: AuthAttempt) -> Verdict {
        if let Some(verdict) = attempt.precheck() {
            return verdict;
        }
        let settings = Settings::load(SETTINGS);
        let user = qualified(&attempt.user, settings.get("default_domain").as_deref());
        match sasl::check_password(&user, &attempt.secret) {
            Ok(Some(known_as)) => {
                waraka_plugin::info!("{} authenticated by dovecot as {known_as}", attempt.user);
                Verdict::ok()
            }
            Ok(None) => Verdict::Deny(None),
            Err(Error::NotGranted) => {
                waraka_plugin::warn!("no sasl grant or no [sasl] dovecot in waraka.toml");
                Verdict::denysoft("Authentication service unavailable")
            }
            Err(e) => {
                waraka_plugin::warn!("dovecot auth for {user}: {e:?}");
                Verdict::denysoft("Authentication service unavailable")
            }
        }
    }
}

waraka_plugin::export!(Dovecot);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_users_get_the_default_domain() {
        assert_eq!(qualified("alice", Some("example.com")), "alice@example.com");
        assert_eq!(qualified("alice@other.test", Some("example.com")), "alice@other.test");
        assert_eq!(qualified("alice", Some("")), "alice");
        assert_eq!(qualified("alice", None), "alice");
    }
}
