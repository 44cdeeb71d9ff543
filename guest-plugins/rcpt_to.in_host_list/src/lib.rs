//! `rcpt_to.in_host_list`: accepts recipients whose domain is local.
//!
//! A domain is local when it is listed in `config/host_list` (one per line,
//! case-insensitive) or matches a regular expression in
//! `config/host_list_regex`. Other recipients pass on (`cont`), so a later
//! plugin or the relaying rule decides. Both files are re-read on every call,
//! so edits apply at once.

use waraka_plugin::{Address, Hook, Plugin, Verdict, host_list};

struct InHostList;

impl Plugin for InHostList {
    const NAME: &'static str = "rcpt_to.in_host_list";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Rcpt];

    fn rcpt(recipient: Address) -> Verdict {
        match host_list::is_local_recipient(&recipient) {
            Ok(true) => Verdict::ok(),
            Ok(false) => Verdict::Cont,
            Err(e) => Verdict::denysoft_code(451, "4.3.0", &format!("host list unavailable: {e}")),
        }
    }
}

waraka_plugin::export!(InHostList);
