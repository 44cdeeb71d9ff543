//! `rcpt_to.ldap`: accepts a local recipient only when an LDAP directory
//! has an entry for the address — where a company keeps its mailboxes
//! already (OpenLDAP, Active Directory). As `rcpt_to.validity` does with a
//! database: `550 5.1.1` for an address the directory does not know, `451
//! 4.3.0` when it cannot be asked, and a subaddress (`alice+news@`) is
//! looked up again as its user. Recipients in other domains pass on.
//! Settings are in `config/rcpt_to.ldap.ini`.

use waraka_plugin::{Address, Error, Hook, Plugin, Settings, Verdict, host_list, ldap, ldap_filter};

const SETTINGS: &str = "rcpt_to.ldap.ini";
const DEFAULT_FILTER: &str = "(|(mail=%a)(mailLocalAddress=%a))";

struct RcptToLdap;

/// The search filter for `recipient`: `%a` the address (domain
/// lower-cased), `%l` the local part, `%d` the domain.
fn filter_for(template: &str, recipient: &Address) -> String {
    let domain = recipient.domain.to_ascii_lowercase();
    let address = match domain.is_empty() {
        true => recipient.local_part.clone(),
        false => format!("{}@{domain}", recipient.local_part),
    };
    ldap_filter::fill(
        template,
        &[('a', &address), ('l', &recipient.local_part), ('d', &domain)],
    )
}

/// Whether the directory has an entry for `recipient`.
fn exists(recipient: &Address) -> Result<bool, Error> {
    let settings = Settings::load(SETTINGS);
    let directory = settings.get("directory").unwrap_or_else(|| "main".into());
    let template = settings.get("filter").unwrap_or_else(|| DEFAULT_FILTER.into());
    let base = settings.get("base").unwrap_or_default();
    let found = ldap::search(&directory, &base, &filter_for(&template, recipient), &[])?;
    Ok(!found.is_empty())
}

impl Plugin for RcptToLdap {
    const NAME: &'static str = "rcpt_to.ldap";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Rcpt];

    fn rcpt(recipient: Address) -> Verdict {
        host_list::check_local_recipient(&recipient, exists)
    }
}

waraka_plugin::export!(RcptToLdap);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_names_the_recipient_escaped() {
        let recipient = Address {
            local_part: "Al*ce".into(),
            domain: "Example.COM".into(),
            params: Vec::new(),
        };
        assert_eq!(
            filter_for(DEFAULT_FILTER, &recipient),
            "(|(mail=Al\\2ace@example.com)(mailLocalAddress=Al\\2ace@example.com))"
        );
        assert_eq!(
            filter_for("(&(uid=%l)(dc=%d))", &recipient),
            "(&(uid=Al\\2ace)(dc=example.com))"
        );
    }
}
