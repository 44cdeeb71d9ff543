//! `mail_from.auth_match`: an authenticated client may only send as the
//! addresses its user owns — Postfix's `reject_sender_login_mismatch` for a
//! submission service. The envelope sender is checked at MAIL and, with
//! `check_from_header`, every address of the `From:` field after DATA. A
//! user owns its own name when that is an address, and what
//! `config/mail_from.auth_match.map` gives it. Sessions without AUTH are
//! left alone. Settings: `config/mail_from.auth_match.ini`.

use waraka_plugin::{Address, Hook, Plugin, Settings, Verdict, config, message, session};

const SETTINGS: &str = "mail_from.auth_match.ini";
const MAP: &str = "mail_from.auth_match.map";

struct AuthMatch;

/// What one user may send as: whole addresses and `@domain`s, lower-case.
#[derive(Debug, Default, PartialEq, Eq)]
struct Owned(Vec<String>);

impl Owned {
    /// `user`'s addresses: its name when it is one, and its lines of the map
    /// (`user: a@example.com, @example.org`; user names compared without case).
    fn of(user: &str, map: &[String]) -> Owned {
        let mut owned = Vec::new();
        if user.contains('@') {
            owned.push(user.to_ascii_lowercase());
        }
        for line in map {
            let Some((name, targets)) = line.split_once(':') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case(user) {
                owned.extend(
                    waraka_plugin::split_list(targets)
                        .iter()
                        .map(|t| t.to_ascii_lowercase()),
                );
            }
        }
        Owned(owned)
    }

    fn allows(&self, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        let domain = address.rsplit_once('@').map(|(_, d)| format!("@{d}"));
        self.0.iter().any(|o| *o == address || Some(o) == domain.as_ref())
    }
}

/// The authenticated user and what it owns; `None` without AUTH.
fn authenticated() -> Option<(String, Owned)> {
    let user = session::auth_user()?;
    let map = config::lines(MAP).unwrap_or_default();
    let owned = Owned::of(&user, &map);
    Some((user, owned))
}

impl Plugin for AuthMatch {
    const NAME: &'static str = "mail_from.auth_match";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Mail, Hook::DataPost];

    fn mail(sender: Address) -> Verdict {
        let Some((user, owned)) = authenticated() else {
            return Verdict::Cont;
        };
        if sender.is_null() && Settings::load(SETTINGS).bool("allow_null_sender", true) {
            return Verdict::Cont;
        }
        let address = sender.to_addr_spec();
        if owned.allows(&address) {
            return Verdict::Cont;
        }
        waraka_plugin::info!("user {user} may not send as {sender}");
        Verdict::deny_code(
            553,
            "5.7.1",
            &format!("Sender address {sender} is not owned by user {user}"),
        )
    }

    fn data_post() -> Verdict {
        if !Settings::load(SETTINGS).bool("check_from_header", true) {
            return Verdict::Cont;
        }
        let Some((user, owned)) = authenticated() else {
            return Verdict::Cont;
        };
        let from = message::header("From");
        let addresses: Vec<String> = from
            .iter()
            .flat_map(|value| waraka_plugin::header_addresses(value))
            .collect();
        if addresses.is_empty() {
            return Verdict::deny_code(550, "5.7.1", "The message has no From: address");
        }
        match addresses.iter().find(|a| !owned.allows(a)) {
            None => Verdict::Cont,
            Some(address) => {
                waraka_plugin::info!("user {user} may not write From: {address}");
                Verdict::deny_code(
                    550,
                    "5.7.1",
                    &format!("From: address {address} is not owned by user {user}"),
                )
            }
        }
    }
}

waraka_plugin::export!(AuthMatch);

#[cfg(test)]
mod tests {
    use super::*;

    fn map(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn a_user_owns_its_own_address_and_what_the_map_gives_it() {
        let lines = map(&[
            "Bob: bob@example.org, @Shared.example",
            "carol: carol@example.net",
            "junk",
        ]);
        let alice = Owned::of("Alice@Example.com", &lines);
        assert!(alice.allows("alice@example.com"));
        assert!(!alice.allows("mallory@example.com"));
        let bob = Owned::of("bob", &lines);
        assert!(bob.allows("BOB@example.org") && bob.allows("anyone@shared.example"));
        assert!(!bob.allows("bob@example.com") && !bob.allows("x@sub.shared.example"));
        assert_eq!(
            Owned::of("nobody", &lines),
            Owned::default(),
            "a bare name owns nothing by itself"
        );
    }
}
