//! Which domains are local: `config/host_list` (one domain per line) and
//! `config/host_list_regex` (anchored, case-insensitive regular expressions),
//! as Haraka's `rcpt_to.in_host_list` reads them.

use crate::{Address, Error, Verdict, config, outbound_queue, subaddress};
use regex_lite::RegexBuilder;

/// Has `target` forwarded through the outbound queue when its domain is
/// not local (`outbound-queue`'s `forward-recipient`, with `[srs]`'s
/// sender): `Ok(true)` when it will be, `Ok(false)` for a local one; `Err`
/// says why it cannot be (`host_list` unreadable, no grant).
pub fn forward_if_remote(target: &Address) -> Result<bool, String> {
    match is_local_recipient(target) {
        Ok(true) => return Ok(false),
        Ok(false) => {}
        Err(e) => return Err(format!("host_list unreadable: {e:?}")),
    }
    match outbound_queue::forward_recipient(&target.to_addr_spec()) {
        Ok(()) => Ok(true),
        Err(Error::NotGranted) => Err("forwarding needs the outbound-queue grant".into()),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// Whether `domain` is local. Both files are read on every call.
pub fn is_local(domain: &str) -> Result<bool, Error> {
    let domain = domain.trim_end_matches('.');
    if domain.is_empty() {
        return Ok(false);
    }
    if config::lines("host_list")?
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain))
    {
        return Ok(true);
    }
    for pattern in config::lines("host_list_regex")? {
        match RegexBuilder::new(&format!("^(?:{pattern})$"))
            .case_insensitive(true)
            .build()
        {
            Ok(re) if re.is_match(domain) => return Ok(true),
            Ok(_) => {}
            Err(e) => crate::warn!("host_list_regex: skipping {pattern:?}: {e}"),
        }
    }
    Ok(false)
}

/// Whether mail for `recipient` stays here: its domain is local, or it has
/// none (`<postmaster>`, which RFC 5321 requires every server to accept).
pub fn is_local_recipient(recipient: &Address) -> Result<bool, Error> {
    if recipient.domain.is_empty() {
        return Ok(true);
    }
    is_local(&recipient.domain)
}

/// The verdict of a recipient check against a list of addresses (a
/// database, a directory): for a local recipient, `ok` when `exists` finds
/// it or, for a subaddress (`alice+news@`), its user; `550 5.1.1` when not;
/// `451 4.3.0` when the host list or the lookup fails (never an accept,
/// never a refusal for good on a temporary fault). Other recipients pass
/// on (`cont`) to the relaying rule.
pub fn check_local_recipient(recipient: &Address, exists: impl Fn(&Address) -> Result<bool, Error>) -> Verdict {
    let unavailable = |what: String| {
        crate::error!("{what}");
        Verdict::denysoft_code(451, "4.3.0", "Recipient check temporarily unavailable, try again later")
    };
    match is_local_recipient(recipient) {
        Ok(true) => {}
        Ok(false) => return Verdict::Cont,
        Err(e) => return unavailable(format!("host list unavailable: {e:?}")),
    }
    let known = exists(recipient).and_then(|found| match subaddress::base(recipient, &subaddress::delimiters()) {
        Some(base) if !found => exists(&base),
        _ => Ok(found),
    });
    match known {
        Ok(true) => Verdict::ok(),
        Ok(false) => {
            crate::info!("unknown recipient {recipient}");
            Verdict::deny_code(550, "5.1.1", "Invalid email address")
        }
        Err(e) => unavailable(format!("checking {recipient} failed: {e:?}")),
    }
}
