//! Which domains are local: `config/host_list` (one domain per line) and
//! `config/host_list_regex` (anchored, case-insensitive regular expressions),
//! as Haraka's `rcpt_to.in_host_list` reads them.

use crate::{Address, Error, config};
use regex_lite::RegexBuilder;

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
