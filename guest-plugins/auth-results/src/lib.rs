//! `auth-results`: SPF, DKIM and DMARC verification of inbound mail (after
//! DATA), recorded in an `Authentication-Results` field (RFC 8601) and in
//! transaction notes for later plugins (`dmarc`, queues). The checks run in
//! the host (the `authentication` capability, built on the `mail-auth`
//! crate); this plugin decides what to do with them. Settings:
//! `config/auth-results.ini`.

use waraka_plugin::authentication::{Outcome, Results};
use waraka_plugin::{Hook, Plugin, Scope, Settings, Verdict, message, notes, session};

const SETTINGS: &str = "auth-results.ini";

/// The header field this plugin writes and guards.
const FIELD: &str = "Authentication-Results";

struct AuthResults;

/// `pass example.com, fail other.test`: each DKIM signature's result and domain.
fn dkim_summary(results: &Results) -> String {
    let each: Vec<String> = results
        .dkim
        .iter()
        .map(|s| format!("{} {}", s.outcome.as_str(), s.domain))
        .collect();
    if each.is_empty() {
        "none".into()
    } else {
        each.join(", ")
    }
}

/// Skips comments (nested, with quoted pairs) and white space (CFWS, RFC 5322 §3.2.2).
fn skip_cfws(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        let Some(mut rest) = s.strip_prefix('(') else { return s };
        let mut depth = 1;
        while depth > 0 {
            let mut chars = rest.chars();
            match chars.next() {
                None => return "",
                Some('\\') => {
                    chars.next();
                }
                Some('(') => depth += 1,
                Some(')') => depth -= 1,
                Some(_) => {}
            }
            rest = chars.as_str();
        }
        s = rest;
    }
}

/// The authentication service identifier a field value starts with (RFC 8601
/// §2.2: a token or a quoted string, after optional comments), unquoted.
fn authserv_id(value: &str) -> Option<String> {
    let s = skip_cfws(value);
    if let Some(quoted) = s.strip_prefix('"') {
        let mut id = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(id),
                '\\' => id.push(chars.next()?),
                c => id.push(c),
            }
        }
        return None;
    }
    let end = s
        .find(|c: char| c.is_whitespace() || c == ';' || c == '(')
        .unwrap_or(s.len());
    (end > 0).then(|| s[..end].to_string())
}

/// Removes the fields that claim to come from `ours` (compared without case)
/// and were therefore forged or left from a loop (RFC 8601 §5); returns how many.
fn remove_forged(ours: &str) -> u32 {
    let mut removed = 0;
    for (index, value) in message::header(FIELD).iter().enumerate().rev() {
        let claimed = authserv_id(value).is_some_and(|id| id.eq_ignore_ascii_case(ours));
        if claimed && message::remove_header_at(FIELD, index as u32) {
            removed += 1;
        }
    }
    removed
}

/// The transaction notes `auth-results.*` that later plugins read.
fn note(results: &Results) {
    let entries = [
        ("auth-results.spf", results.spf.as_str().to_string()),
        ("auth-results.spf-domain", results.spf_domain.clone()),
        ("auth-results.dkim", dkim_summary(results)),
        ("auth-results.dmarc", results.dmarc.as_str().to_string()),
        ("auth-results.dmarc-domain", results.dmarc_domain.clone()),
        ("auth-results.dmarc-policy", results.dmarc_policy.as_str().to_string()),
    ];
    for (key, value) in entries {
        if let Err(e) = notes::set(Scope::Transaction, key, &value) {
            waraka_plugin::warn!("could not set note {key}: {e:?}");
        }
    }
}

impl Plugin for AuthResults {
    const NAME: &'static str = "auth-results";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        let settings = Settings::load(SETTINGS);
        if session::relaying() && settings.bool("skip_relaying", true) {
            return Verdict::Cont;
        }
        let Some(results) = waraka_plugin::verified_sender() else {
            return if settings.get("on_error").as_deref() == Some("tempfail") {
                Verdict::denysoft_code(451, "4.3.0", "Unable to verify the sender now, try later")
            } else {
                Verdict::Cont
            };
        };
        waraka_plugin::info!(
            "spf={} ({}) dkim={} dmarc={} ({}, policy {})",
            results.spf.as_str(),
            results.spf_domain,
            dkim_summary(&results),
            results.dmarc.as_str(),
            results.dmarc_domain,
            results.dmarc_policy.as_str()
        );
        note(&results);
        if settings.bool("remove_forged", true)
            && let Some(ours) = authserv_id(&results.header)
        {
            let removed = remove_forged(&ours);
            if removed > 0 {
                waraka_plugin::info!("removed {removed} {FIELD} field(s) claiming to be from {ours}");
            }
        }
        if settings.bool("add_header", true)
            && let Err(e) = message::add_header(FIELD, &results.header)
        {
            waraka_plugin::warn!("could not add Authentication-Results: {e:?}");
        }
        if results.spf == Outcome::Fail && settings.bool("reject_spf_fail", false) {
            let reason = format!("SPF check failed for {}", results.spf_domain);
            return Verdict::deny_code(550, "5.7.23", &reason);
        }
        Verdict::Cont
    }
}

waraka_plugin::export!(AuthResults);

#[cfg(test)]
mod tests {
    use super::authserv_id;

    #[test]
    fn the_authserv_id_is_the_first_token_or_quoted_string_after_comments() {
        let cases = [
            ("mx.example.com; spf=pass smtp.mailfrom=a.test", Some("mx.example.com")),
            ("mx.example.com 1; none", Some("mx.example.com")),
            ("  MX.Example.COM;dkim=pass", Some("MX.Example.COM")),
            (
                "(forged (nested \\) comment)) mx.example.com; none",
                Some("mx.example.com"),
            ),
            ("\"mx.example.com\"; none", Some("mx.example.com")),
            ("\"mx\\\"x\"; none", Some("mx\"x")),
            ("mx.example.com(comment); none", Some("mx.example.com")),
            ("; spf=pass", None),
            ("(unterminated comment mx.example.com; none", None),
            ("\"unterminated; none", None),
            ("", None),
        ];
        for (value, expected) in cases {
            assert_eq!(authserv_id(value).as_deref(), expected, "{value:?}");
        }
    }
}
