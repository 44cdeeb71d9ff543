//! `rcpt_to.in_host_list`: accepts recipients whose domain is local.
//!
//! A domain is local when it is listed in `config/host_list` (one per line,
//! case-insensitive) or matches a regular expression in
//! `config/host_list_regex`. Other recipients pass on (`cont`), so a later
//! plugin or the relaying rule decides. Both files are re-read on every call,
//! so edits apply at once.

use regex_lite::RegexBuilder;
use waraka_plugin::{Address, Hook, Plugin, Verdict, config};

struct InHostList;

fn is_local(domain: &str) -> Result<bool, waraka_plugin::Error> {
    let domain = domain.trim_end_matches('.');
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
            Err(e) => waraka_plugin::warn!("host_list_regex: skipping {pattern:?}: {e}"),
        }
    }
    Ok(false)
}

impl Plugin for InHostList {
    const NAME: &'static str = "rcpt_to.in_host_list";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Rcpt];

    fn rcpt(recipient: Address) -> Verdict {
        if recipient.domain.is_empty() {
            return Verdict::Cont;
        }
        match is_local(&recipient.domain) {
            Ok(true) => Verdict::ok(),
            Ok(false) => Verdict::Cont,
            Err(e) => Verdict::denysoft_code(451, "4.3.0", &format!("host list unavailable: {e}")),
        }
    }
}

waraka_plugin::export!(InHostList);
