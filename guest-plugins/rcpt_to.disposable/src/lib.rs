//! `rcpt_to.disposable`: expiring addresses, from the Haraka talk.
//!
//! `user-YYYYMMDD@domain` is refused with `550 5.1.1 Expired email address`
//! once that date has passed; until then the recipient is rewritten to
//! `user@domain`, so the message is queued for the real mailbox. Other
//! addresses pass on untouched. `config/rcpt_to.disposable.ini` may set the
//! `separator` between user and date.

use regex_lite::Regex;
use waraka_plugin::{Address, Hook, Plugin, Verdict};

struct Disposable;

/// Splits `user-YYYYMMDD` into the user and the expiry date as a `YYYYMMDD`
/// number; `separator` is the text between them ("-" by default).
fn parse(local_part: &str, separator: &str) -> Option<(String, u32)> {
    let re = Regex::new(&format!(
        r"^(.+){}(\d{{4}})(\d{{2}})(\d{{2}})$",
        regex_lite::escape(separator)
    ))
    .ok()?;
    let caps = re.captures(local_part)?;
    let (y, m, d): (u32, u32, u32) = (caps[2].parse().ok()?, caps[3].parse().ok()?, caps[4].parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some((caps[1].to_string(), y * 10000 + m * 100 + d))
}

impl Plugin for Disposable {
    const NAME: &'static str = "rcpt_to.disposable";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Rcpt];

    fn rcpt(recipient: Address) -> Verdict {
        let separator = waraka_plugin::setting("rcpt_to.disposable.ini", "separator").unwrap_or_else(|| "-".into());
        let Some((user, expiry)) = parse(&recipient.local_part, &separator) else {
            return Verdict::Cont;
        };
        if expiry < waraka_plugin::today_utc() {
            waraka_plugin::info!("{recipient} expired on {expiry}");
            return Verdict::deny_code(550, "5.1.1", "Expired email address");
        }
        let rewritten = Address {
            local_part: user,
            ..recipient
        };
        waraka_plugin::info!("rewriting to {rewritten} (expires {expiry})");
        match waraka_plugin::replace_candidate(&rewritten) {
            Ok(()) => Verdict::Cont,
            Err(e) => Verdict::denysoft_code(451, "4.3.0", &format!("cannot rewrite recipient: {e}")),
        }
    }
}

waraka_plugin::export!(Disposable);

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_dated_local_parts() {
        assert_eq!(parse("me-20121015", "-"), Some(("me".into(), 20121015)));
        assert_eq!(parse("a-b-20991231", "-"), Some(("a-b".into(), 20991231)));
        assert_eq!(parse("me+20991231", "+"), Some(("me".into(), 20991231)));
        assert_eq!(parse("me-20121315", "-"), None);
        assert_eq!(parse("me", "-"), None);
        assert_eq!(parse("-20121015", "-"), None);
    }
}
