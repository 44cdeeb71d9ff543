//! `aliases`: recipient aliases and lists, as Haraka's `aliases` plugin and
//! `/etc/aliases`. `config/aliases` maps an address, a local part (any
//! domain) or `@domain` to one or more addresses, `@otherdomain` (same local
//! part) or `:reject`; an address it does not name may be looked up in an
//! LDAP directory (`config/aliases.ini`), whose entry's attribute values
//! are the targets (`mailRoutingAddress`, a list's `rfc822MailMember`). The candidate recipient is rewritten to the first
//! target, which the later `rcpt` plugins then check as usual; the other
//! targets are added to the transaction once the first was accepted
//! (`rcpt-ok`). One level: targets are not looked up again. A target whose
//! domain is not local (`config/host_list`) is forwarded: the host's
//! outbound queue delivers to it, from the sender rewritten by `[srs]`.

use waraka_plugin::host_list::{self, is_local_recipient};
use waraka_plugin::{
    Address, Error, Hook, Plugin, Scope, Settings, Verdict, config, ldap, ldap_filter, notes, subaddress,
};

const ALIASES: &str = "aliases";
const SETTINGS: &str = "aliases.ini";
/// The transaction note holding, between `rcpt` and `rcpt-ok`, the first
/// target, the others to add once it is accepted, and whether they may be
/// forwarded (`first\nsecond,third\ntrue`).
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
/// address first, then the address without its subaddress `extension`
/// (`+news` of `alice+news`, empty for none), then the local part and the
/// user, then `@domain`; keys compare without case. An entry found for the
/// user passes the extension on to its targets (`alice: bob@example.com`
/// sends `alice+news` to `bob+news@example.com`), as Postfix does.
fn lookup(lines: &[String], local: &str, extension: &str, domain: &str) -> Option<Target> {
    let entries: Vec<(&str, &str)> = lines
        .iter()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, targets)| (key.trim(), targets.trim()))
        .collect();
    let user = &local[..local.len() - extension.len()];
    // (key, whether it leaves the extension unmatched)
    let keys = [
        (format!("{local}@{domain}"), false),
        (format!("{user}@{domain}"), true),
        (local.to_string(), false),
        (user.to_string(), true),
        (format!("@{domain}"), false),
    ];
    let (targets, unmatched) = keys.iter().find_map(|(key, unmatched)| {
        let (_, targets) = entries.iter().find(|(k, _)| k.eq_ignore_ascii_case(key))?;
        Some((*targets, *unmatched))
    })?;
    if targets.eq_ignore_ascii_case(":reject") {
        return Some(Target::Reject);
    }
    let extension = if unmatched { extension } else { "" };
    Some(Target::To(expand(waraka_plugin::split_list(targets), local, extension)))
}

/// The addresses `targets` name for `local`: `@domain` keeps the local
/// part; an `extension` left unmatched by the key goes on to each target.
fn expand(targets: Vec<String>, local: &str, extension: &str) -> Vec<String> {
    targets
        .into_iter()
        .map(|t| match (t.strip_prefix('@'), t.rsplit_once('@')) {
            (Some(new_domain), _) => format!("{local}@{new_domain}"),
            (None, Some((target_local, target_domain))) => format!("{target_local}{extension}@{target_domain}"),
            (None, None) => t,
        })
        .collect()
}

/// The alias of `local@domain` in the LDAP directory of `aliases.ini`
/// (none when `ldap_directory` is empty): the values of `ldap_attribute` of
/// the entries `ldap_filter` finds for the address, then for it without its
/// subaddress `extension` (which then goes on to the targets).
fn ldap_lookup(local: &str, extension: &str, domain: &str) -> Result<Option<Target>, Error> {
    let settings = Settings::load(SETTINGS);
    let Some(directory) = settings.get("ldap_directory").filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    let template = settings
        .get("ldap_filter")
        .unwrap_or_else(|| "(|(mail=%a)(mailLocalAddress=%a))".into());
    let attribute = settings
        .get("ldap_attribute")
        .unwrap_or_else(|| "mailRoutingAddress".into());
    let base = settings.get("ldap_base").unwrap_or_default();
    let domain = domain.to_ascii_lowercase();
    let user = &local[..local.len() - extension.len()];
    let candidates = [(local, false), (user, true)];
    for (part, unmatched) in candidates.into_iter().take(if extension.is_empty() { 1 } else { 2 }) {
        let address = format!("{part}@{domain}");
        let filter = ldap_filter::fill(&template, &[('a', &address), ('l', part), ('d', &domain)]);
        let targets: Vec<String> = ldap::search(&directory, &base, &filter, std::slice::from_ref(&attribute))?
            .into_iter()
            .flat_map(|entry| entry.attributes)
            .filter(|(name, _)| name.eq_ignore_ascii_case(&attribute))
            .flat_map(|(_, values)| values)
            .collect();
        if !targets.is_empty() {
            return Ok(Some(Target::To(expand(
                targets,
                local,
                if unmatched { extension } else { "" },
            ))));
        }
    }
    Ok(None)
}

/// Whether the alias of `recipient` may forward to other domains: only
/// when the recipient's own domain is local, so that an alias of a local
/// part (`postmaster`), which matches every domain, cannot turn mail for
/// other domains into mail this server sends on.
fn may_forward(recipient: &Address) -> bool {
    !recipient.domain.is_empty() && is_local_recipient(recipient).unwrap_or(false)
}

/// Has the host forward mail for `target` when its domain is not local:
/// `Ok(true)` when it will, `Ok(false)` for a local target (or a remote one
/// that may not be forwarded to, which the recipient plugins then refuse),
/// the refusal to answer when forwarding cannot work (no grant, delivery
/// off: the alias is not usable).
fn forward_if_remote(target: &Address, allowed: bool) -> Result<bool, Verdict> {
    if !allowed {
        return Ok(false);
    }
    host_list::forward_if_remote(target).map_err(|why| {
        waraka_plugin::error!("cannot forward to {target}: {why}");
        Verdict::denysoft_code(451, "4.3.0", "Recipient alias cannot be forwarded, try later")
    })
}

impl Plugin for Aliases {
    const NAME: &'static str = "aliases";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Rcpt, Hook::RcptOk];

    fn rcpt(recipient: Address) -> Verdict {
        let lines = config::lines(ALIASES).unwrap_or_default();
        let local = &recipient.local_part;
        let (user, _) = subaddress::split(local, &subaddress::delimiters());
        let extension = &local[user.len()..];
        let found = match lookup(&lines, local, extension, &recipient.domain) {
            Some(target) => Some(target),
            None if !is_local_recipient(&recipient).unwrap_or(false) => None,
            None => match ldap_lookup(local, extension, &recipient.domain) {
                Ok(target) => target,
                Err(e) => {
                    waraka_plugin::error!("looking {recipient} up in the directory failed: {e:?}");
                    return Verdict::denysoft_code(
                        451,
                        "4.3.0",
                        "Recipient aliases temporarily unavailable, try later",
                    );
                }
            },
        };
        let Some(target) = found else {
            return Verdict::Cont;
        };
        let targets = match target {
            Target::Reject => {
                waraka_plugin::info!("{recipient} is refused by its alias");
                return Verdict::deny_code(550, "5.1.1", "No such user here");
            }
            Target::To(targets) => targets,
        };
        let Some(addresses) = targets
            .iter()
            .map(|t| Address::from_addr_spec(t))
            .collect::<Option<Vec<_>>>()
        else {
            waraka_plugin::error!("the alias of {recipient} has a target that is not an address: {targets:?}");
            return Verdict::denysoft_code(451, "4.3.0", "Recipient alias misconfigured, try later");
        };
        let Some((first, rest)) = addresses.split_first() else {
            return Verdict::Cont;
        };
        waraka_plugin::info!("{recipient} is an alias of {}", targets.join(", "));
        let first = Address {
            params: recipient.params.clone(),
            ..first.clone()
        };
        if let Err(e) = waraka_plugin::replace_candidate(&first) {
            return Verdict::denysoft_code(451, "4.3.0", &format!("Cannot rewrite the alias: {e:?}"));
        }
        let allowed = may_forward(&recipient);
        let forwarded = match forward_if_remote(&first, allowed) {
            Ok(forwarded) => forwarded,
            Err(refusal) => return refusal,
        };
        if !rest.is_empty() {
            let others: Vec<String> = rest.iter().map(Address::to_addr_spec).collect();
            let pending = format!("{}\n{}\n{allowed}", first.to_addr_spec(), others.join(","));
            waraka_plugin::note_transaction(PENDING, &pending);
        }
        // A local target is checked by the recipient plugins that follow; a
        // forwarded one has no mailbox here for them to find.
        if forwarded { Verdict::ok() } else { Verdict::Cont }
    }

    /// The first target was accepted: adds the others of its alias.
    fn rcpt_ok(recipient: Address) -> Verdict {
        let Some(pending) = notes::get(Scope::Transaction, PENDING) else {
            return Verdict::Cont;
        };
        notes::remove(Scope::Transaction, PENDING);
        let mut lines = pending.lines();
        let (Some(first), Some(others)) = (lines.next(), lines.next()) else {
            return Verdict::Cont;
        };
        let allowed = lines.next() == Some("true");
        // A note left by a candidate that was then refused belongs to no one.
        if !first.eq_ignore_ascii_case(&recipient.to_addr_spec()) {
            return Verdict::Cont;
        }
        for extra in waraka_plugin::split_list(others)
            .iter()
            .filter_map(|t| Address::from_addr_spec(t))
        {
            if !allowed && !is_local_recipient(&extra).unwrap_or(true) {
                waraka_plugin::warn!("not forwarding to {extra}: the alias is not of a local domain");
                continue;
            }
            if let Err(refusal) = waraka_plugin::add_recipient_or(&extra, |e| {
                Verdict::denysoft_code(451, "4.3.0", &format!("Cannot expand the alias: {e:?}"))
            }) {
                return refusal;
            }
            if let Err(refusal) = forward_if_remote(&extra, allowed) {
                return refusal;
            }
        }
        Verdict::Cont
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
            lookup(&lines(), "Sales", "", "EXAMPLE.com"),
            to(&["alice@example.com", "Bob@Example.com"])
        );
        assert_eq!(
            lookup(&lines(), "postmaster", "", "other.test"),
            to(&["admin@example.com"])
        );
        assert_eq!(lookup(&lines(), "carol", "", "old.example"), to(&["carol@new.example"]));
        assert_eq!(lookup(&lines(), "spamtrap", "", "example.com"), Some(Target::Reject));
        assert_eq!(lookup(&lines(), "dave", "", "example.com"), None);
        // A subaddress falls back to its user's entry, after its own.
        assert_eq!(
            lookup(&lines(), "sales+promo", "+promo", "example.com"),
            to(&["alice+promo@example.com", "Bob+promo@Example.com"])
        );
        assert_eq!(
            lookup(&lines(), "postmaster+x", "+x", "other.test"),
            to(&["admin+x@example.com"])
        );
        assert_eq!(
            lookup(&lines(), "carol+x", "+x", "old.example"),
            to(&["carol+x@new.example"])
        );
        assert_eq!(
            Address::from_addr_spec("Bob@Example.com").map(|a| (a.local_part, a.domain)),
            Some(("Bob".into(), "example.com".into()))
        );
        assert!(Address::from_addr_spec("nobody").is_none());
    }
}
