//! `headers`: RFC 5322 §3.6 header checks on every message, after DATA —
//! Haraka's `headers` (formerly `data.rfc5322_header_checks`).
//!
//! - Each header in `required` (default `Date`, `From`) must be present.
//! - Each header in `singular` (default the fields RFC 5322 allows at most
//!   once) may appear at most once.
//! - The `Date` must parse as an RFC 5322 date no more than `date_future_days`
//!   ahead and no more than `date_past_days` behind (0 turns either check off).
//!
//! A failing message gets `550 5.6.0` with the reason, or, with
//! `reject = false`, passes and the reasons are left in the transaction note
//! `headers.fail` for a later plugin. Settings: `config/headers.ini`.

use chrono::DateTime;
use std::time::{SystemTime, UNIX_EPOCH};
use waraka_plugin::{Hook, Plugin, Verdict, message, split_list};

const SETTINGS: &str = "headers.ini";
const REQUIRED: &str = "Date, From";
const SINGULAR: &str = "Date, From, Sender, Reply-To, To, Cc, Bcc, Message-ID, In-Reply-To, References, Subject";

struct Headers;

/// What the checks are told by `config/headers.ini`.
struct Rules {
    required: Vec<String>,
    singular: Vec<String>,
    future_days: i64,
    past_days: i64,
}

impl Rules {
    fn load() -> Rules {
        let get = |key: &str, default: &str| waraka_plugin::setting(SETTINGS, key).unwrap_or_else(|| default.into());
        let days = |key: &str, default: i64| get(key, "").parse().unwrap_or(default);
        Rules {
            required: split_list(&get("required", REQUIRED)),
            singular: split_list(&get("singular", SINGULAR)),
            future_days: days("date_future_days", 2),
            past_days: days("date_past_days", 15),
        }
    }
}

/// The problems of a message with these `headers` (name, value) at `now`
/// (seconds since the epoch), in a stable order.
fn problems(rules: &Rules, headers: &[(String, String)], now: i64) -> Vec<String> {
    let count = |name: &str| headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count();
    let mut found = Vec::new();
    for name in &rules.required {
        if count(name) == 0 {
            found.push(format!("Required header '{name}' missing"));
        }
    }
    for name in &rules.singular {
        if count(name) > 1 {
            found.push(format!("Only one {name} header allowed. See RFC 5322, Section 3.6"));
        }
    }
    if let Some((_, date)) = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("Date")) {
        match DateTime::parse_from_rfc2822(date.trim()) {
            Err(_) => found.push(format!("Invalid Date header {:?}", date.trim())),
            Ok(date) => {
                let days_ahead = (date.timestamp() - now) / 86_400;
                if rules.future_days > 0 && days_ahead >= rules.future_days {
                    found.push(format!("Date header is {days_ahead} days in the future"));
                }
                if rules.past_days > 0 && -days_ahead >= rules.past_days {
                    found.push(format!("Date header is {} days old", -days_ahead));
                }
            }
        }
    }
    found
}

impl Plugin for Headers {
    const NAME: &'static str = "headers";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let found = problems(&Rules::load(), &message::headers(), now);
        let Some(first) = found.first() else {
            return Verdict::Cont;
        };
        waraka_plugin::info!("header check failed: {}", found.join("; "));
        if waraka_plugin::setting_bool(SETTINGS, "reject", true) {
            Verdict::deny_code(550, "5.6.0", first)
        } else {
            waraka_plugin::note_transaction("headers.fail", &found.join("\n"));
            Verdict::Cont
        }
    }
}

waraka_plugin::export!(Headers);

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000; // 2026-11-18 11:06:40 UTC

    fn rules() -> Rules {
        Rules {
            required: split_list(REQUIRED),
            singular: split_list(SINGULAR),
            future_days: 2,
            past_days: 15,
        }
    }

    fn headers(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_proper_message_passes() {
        let h = headers(&[
            ("From", "a@b"),
            ("date", "Wed, 18 Nov 2026 08:00:00 +0000"),
            ("Received", "x"),
            ("Received", "y"),
        ]);
        assert_eq!(problems(&rules(), &h, NOW), Vec::<String>::new());
    }

    #[test]
    fn missing_duplicated_and_bad_dates_are_named() {
        let h = headers(&[("Subject", "one"), ("subject", "two")]);
        assert_eq!(
            problems(&rules(), &h, NOW),
            [
                "Required header 'Date' missing",
                "Required header 'From' missing",
                "Only one Subject header allowed. See RFC 5322, Section 3.6"
            ]
        );
        let dated = |date: &str| problems(&rules(), &headers(&[("From", "a@b"), ("Date", date)]), NOW);
        assert_eq!(dated("yesterday"), ["Invalid Date header \"yesterday\""]);
        assert_eq!(
            dated("Sat, 21 Nov 2026 08:00:00 +0000"),
            ["Date header is 2 days in the future"]
        );
        assert_eq!(dated("Sun, 01 Nov 2026 08:00:00 +0000"), ["Date header is 17 days old"]);
        let lenient = Rules {
            past_days: 0,
            ..rules()
        };
        assert!(
            problems(
                &lenient,
                &headers(&[("From", "a@b"), ("Date", "Mon, 1 Jan 2001 00:00:00 +0000")]),
                NOW
            )
            .is_empty()
        );
    }
}
