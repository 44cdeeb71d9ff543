//! `aliases`: recipient aliases and lists, as Haraka's `aliases` plugin and
//! `/etc/aliases`. `config/aliases` maps an address, a local part (any
//! domain) or `@domain` to one or more addresses, `@otherdomain` (same local
//! part) or `:reject`. The candidate recipient is rewritten to the first
//! target, which the later `rcpt` plugins then check as usual; the other
//! targets are added to the transaction once the first was accepted
//! (`rcpt-ok`). One level: targets are not looked up again.

use waraka_plugin::{Address, Hook, Plugin, Scope, Verdict, config, envelope, notes};

const ALIASES: &str = "aliases";
/// The transaction note holding, between `rcpt` and `rcpt-ok`, the first
/// target and the others to add once it is accepted (`first\nsecond,third`).
const PENDING: &str = "aliases.pending";

struct Aliases;

/// What an alias says to do with a recipient.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// Deliver to these addresses instead (`@domain` keeps the local part).
    To(Vec<String>),
    /// Refuse the recipient.
    Reject,
}

/// The entry for `local@domain` among `lines` (`key: targets`): the whole
/// address first, then the local part, then `@domain`; keys compare without case.
fn lookup(lines: &[String], local: &str, domain: &str) -> Option<Target> {
    let entries: Vec<(&str, &str)> = lines
        .iter()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, targets)| (key.trim(), targets.trim()))
        .collect();
    let keys = [format!("{local}@{domain}"), local.to_string(), format!("@{domain}")];
    let targets = keys
        .iter()
        .find_map(|key| entries.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)))?
        .1;
    if targets.eq_ignore_ascii_case(":reject") {
        return Some(Target::Reject);
    }
    let list = waraka_plugin::split_list(targets)
        .into_iter()
        .map(|t| match t.strip_prefix('@') {
            Some(new_domain) => format!("{local}@{new_domain}"),
            None => t,
        })
        .collect();
    Some(Target::To(list))
}

/// `local@domain` as an envelope address without parameters.
fn address(text: &str) -> Option<Address> {
    let (local_part, domain) = text.rsplit_once('@')?;
    (!local_part.is_empty() && !domain.is_empty()).then(|| Address {
        local_part: local_part.to_string(),
        domain: domain.to_ascii_lowercase(),
        params: Vec::new(),
    })
}

impl Plugin for Aliases {
    const NAME: &'static str = "aliases";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Rcpt, Hook::RcptOk];

    fn rcpt(recipient: Address) -> Verdict {
        let lines = config::lines(ALIASES).unwrap_or_default();
        let Some(target) = lookup(&lines, &recipient.local_part, &recipient.domain) else {
            return Verdict::Cont;
        };
        let targets = match target {
            Target::Reject => {
                waraka_plugin::info!("{recipient} is refused by its alias");
                return Verdict::deny_code(550, "5.1.1", "No such user here");
            }
            Target::To(targets) => targets,
        };
        let Some(addresses) = targets.iter().map(|t| address(t)).collect::<Option<Vec<_>>>() else {
            waraka_plugin::error!("the alias of {recipient} has a target that is not an address: {targets:?}");
            return Verdict::denysoft_code(451, "4.3.0", "Recipient alias misconfigured, try later");
        };
        let Some((first, rest)) = addresses.split_first() else {
            return Verdict::Cont;
        };
        waraka_plugin::info!("{recipient} is an alias of {}", targets.join(", "));
        // The candidate recipient is the last one while `rcpt` runs.
        let index = envelope::recipients().len().saturating_sub(1) as u32;
        let first = Address {
            params: recipient.params.clone(),
            ..first.clone()
        };
        if let Err(e) = envelope::set_recipient(index, &first) {
            return Verdict::denysoft_code(451, "4.3.0", &format!("Cannot rewrite the alias: {e:?}"));
        }
        if !rest.is_empty() {
            let others: Vec<String> = rest.iter().map(Address::to_addr_spec).collect();
            let pending = format!("{}\n{}", first.to_addr_spec(), others.join(","));
            waraka_plugin::note_transaction(PENDING, &pending);
        }
        Verdict::Cont
    }

    /// The first target was accepted: adds the others of its alias.
    fn rcpt_ok(recipient: Address) -> Verdict {
        let Some(pending) = notes::get(Scope::Transaction, PENDING) else {
            return Verdict::Cont;
        };
        notes::remove(Scope::Transaction, PENDING);
        let Some((first, others)) = pending.split_once('\n') else {
            return Verdict::Cont;
        };
        // A note left by a candidate that was then refused belongs to no one.
        if !first.eq_ignore_ascii_case(&recipient.to_addr_spec()) {
            return Verdict::Cont;
        }
        let added = waraka_plugin::split_list(others)
            .iter()
            .filter_map(|t| address(t))
            .try_for_each(|extra| envelope::add_recipient(&extra));
        match added {
            Ok(()) => Verdict::Cont,
            Err(waraka_plugin::Error::Limit(limit)) => {
                Verdict::denysoft_code(452, "4.5.3", &format!("Too many recipients: {limit}"))
            }
            Err(e) => Verdict::denysoft_code(451, "4.3.0", &format!("Cannot expand the alias: {e:?}")),
        }
    }
}

waraka_plugin::export!(Aliases);

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> Vec<String> {
        [
            "sales@example.com: alice@example.com, Bob@Example.com",
            "postmaster: admin@example.com",
            "@old.example: @new.example",
            "spamtrap@example.com: :reject",
            "broken",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn addresses_then_local_parts_then_domains_match() {
        let to = |list: &[&str]| Some(Target::To(list.iter().map(|s| s.to_string()).collect()));
        assert_eq!(
            lookup(&lines(), "Sales", "EXAMPLE.com"),
            to(&["alice@example.com", "Bob@Example.com"])
        );
        assert_eq!(lookup(&lines(), "postmaster", "other.test"), to(&["admin@example.com"]));
        assert_eq!(lookup(&lines(), "carol", "old.example"), to(&["carol@new.example"]));
        assert_eq!(lookup(&lines(), "spamtrap", "example.com"), Some(Target::Reject));
        assert_eq!(lookup(&lines(), "dave", "example.com"), None);
        assert_eq!(
            address("Bob@Example.com").map(|a| (a.local_part, a.domain)),
            Some(("Bob".into(), "example.com".into()))
        );
        assert!(address("nobody").is_none());
    }
}
