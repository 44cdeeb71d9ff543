//! `auth/ldap`: verifies AUTH PLAIN/LOGIN credentials against an LDAP
//! directory (the host's `ldap` capability, grant `ldap:NAME`), as Haraka's
//! `auth-ldap`: the user's entry is the `dn` template filled in, or else the
//! one entry that `filter` finds, and the password is right when a bind as
//! that entry succeeds. An unknown user and a wrong password get the same
//! `535`; a directory that cannot be asked gets `454`, never an accept.
//! Settings: `config/auth/ldap.ini`.

use waraka_plugin::{AuthAttempt, Error, Hook, Plugin, Settings, Verdict, ldap, ldap_filter};

const SETTINGS: &str = "auth/ldap.ini";

struct AuthLdap;

/// The placeholders of a user name: `%u` as given, `%l` the part before
/// `@` (all of it without one), `%d` the part after (empty without one).
fn placeholders(user: &str) -> [(char, &str); 3] {
    let (local, domain) = user.rsplit_once('@').unwrap_or((user, ""));
    [('u', user), ('l', local), ('d', domain)]
}

/// The DN of `user`'s entry: the `dn` template, or the one entry `filter`
/// finds; `None` when there is no such entry (or, ambiguously, several).
fn user_dn(settings: &Settings, directory: &str, user: &str) -> Result<Option<String>, Error> {
    let values = placeholders(user);
    if let Some(template) = settings.get("dn").filter(|t| !t.is_empty()) {
        return Ok(Some(ldap_filter::fill_dn(&template, &values)));
    }
    let template = settings
        .get("filter")
        .unwrap_or_else(|| "(&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%u)))".into());
    let base = settings.get("base").unwrap_or_default();
    let mut found = ldap::search(directory, &base, &ldap_filter::fill(&template, &values), &[])?;
    if found.len() > 1 {
        waraka_plugin::warn!("auth/ldap: {} entries match {user}; refused as ambiguous", found.len());
        return Ok(None);
    }
    Ok(found.pop().map(|entry| entry.dn))
}

fn unavailable(user: &str, e: Error) -> Verdict {
    match e {
        Error::NotGranted => waraka_plugin::warn!("auth/ldap: no ldap grant or no [ldap] directory in waraka.toml"),
        e => waraka_plugin::warn!("auth/ldap: checking {user} failed: {e:?}"),
    }
    Verdict::denysoft("Authentication service unavailable")
}

impl Plugin for AuthLdap {
    const NAME: &'static str = "auth/ldap";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Auth];

    fn auth(attempt: AuthAttempt) -> Verdict {
        if let Some(verdict) = attempt.precheck() {
            return verdict;
        }
        let settings = Settings::load(SETTINGS);
        let directory = settings.get("directory").unwrap_or_else(|| "main".into());
        let dn = match user_dn(&settings, &directory, &attempt.user) {
            Ok(Some(dn)) => dn,
            Ok(None) => {
                waraka_plugin::info!("auth/ldap: no entry for {}", attempt.user);
                return Verdict::Deny(None);
            }
            Err(e) => return unavailable(&attempt.user, e),
        };
        match ldap::check_password(&directory, &dn, &attempt.secret) {
            Ok(true) => {
                waraka_plugin::info!("auth/ldap: {} authenticated as {dn}", attempt.user);
                Verdict::ok()
            }
            Ok(false) => Verdict::Deny(None),
            Err(e) => unavailable(&attempt.user, e),
        }
    }
}

waraka_plugin::export!(AuthLdap);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_split_into_placeholders() {
        assert_eq!(
            placeholders("alice@example.com"),
            [('u', "alice@example.com"), ('l', "alice"), ('d', "example.com")]
        );
        assert_eq!(placeholders("alice"), [('u', "alice"), ('l', "alice"), ('d', "")]);
    }
}
