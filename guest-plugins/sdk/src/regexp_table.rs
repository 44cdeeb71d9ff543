//! Postfix's regexp tables, as `header_checks` and `body_checks` read
//! them: one rule per line, `/PATTERN/FLAGS ACTION [TEXT]`, matched in
//! order; the first rule that matches decides.

use std::rc::Rc;

use crate::{Regex, Verdict, config_lines, note_transaction, parsed_config};

/// What a matching rule does to the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `REJECT [text]`: `550 5.7.1 text`.
    Reject(String),
    /// `WARN [text]`: a log line, nothing else.
    Warn(String),
    /// `IGNORE`: the field (or line) is removed.
    Ignore,
    /// `REPLACE Name: value`: this field takes the matching one's place.
    Replace(String),
    /// `PREPEND Name: value`: this field goes just above the matching one.
    Prepend(String),
    /// `HOLD [reason]`: the transaction note `quarantine`, for
    /// `queue/quarantine` to keep the message aside.
    Hold(String),
    /// `DUNNO` / `OK`: nothing, and no later rule is asked about the field
    /// (or line).
    Dunno,
}

/// One line of a rules file.
#[derive(Debug)]
pub struct Rule {
    /// The pattern, compiled.
    pub regex: Regex,
    /// What a match does.
    pub action: Action,
}

/// Reads `/PATTERN/FLAGS ACTION [TEXT]`: as in Postfix's regexp tables
/// matching is case-insensitive unless the flag `i` is given; a `/` in the
/// pattern is written `\/`.
pub fn parse_rule(line: &str) -> Result<Rule, String> {
    let rest = line.strip_prefix('/').ok_or("a rule starts with /")?;
    let mut end = None;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '/' if !escaped => {
                end = Some(i);
                break;
            }
            _ => escaped = false,
        }
    }
    let end = end.ok_or("the pattern has no closing /")?;
    let pattern = rest[..end].replace("\\/", "/");
    let after = &rest[end + 1..];
    let flags_len = after.find(|c: char| c.is_whitespace()).unwrap_or(after.len());
    let (flags, action) = after.split_at(flags_len);
    let mut insensitive = true;
    for flag in flags.chars() {
        match flag {
            'i' => insensitive = !insensitive,
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    let regex = Regex::new(&if insensitive { format!("(?i){pattern}") } else { pattern })
        .map_err(|e| format!("bad pattern: {e}"))?;
    let action = action.trim();
    let (verb, text) = action.split_once(char::is_whitespace).unwrap_or((action, ""));
    let text = text.trim().to_string();
    let needs_field = |text: String| match text.split_once(':') {
        Some((name, _)) if !name.trim().is_empty() && !name.contains(char::is_whitespace) => Ok(text),
        _ => Err(format!("{verb} needs a header field, Name: value")),
    };
    let action = match verb.to_ascii_uppercase().as_str() {
        "REJECT" => Action::Reject(text),
        "WARN" => Action::Warn(text),
        "IGNORE" => Action::Ignore,
        "REPLACE" => Action::Replace(needs_field(text)?),
        "PREPEND" => Action::Prepend(needs_field(text)?),
        "HOLD" => Action::Hold(text),
        "DUNNO" | "OK" => Action::Dunno,
        "" => return Err("no action".into()),
        other => return Err(format!("unknown action {other}")),
    };
    Ok(Rule { regex, action })
}

/// The rules of the config file `name` for `plugin`, compiled when it
/// changed; a line that cannot be read, or whose action is not `usable`
/// there (the reason), is logged then and left out.
pub fn rules(plugin: &str, name: &str, usable: fn(&Action) -> Result<(), String>) -> Rc<Vec<Rule>> {
    parsed_config(name, |text| {
        config_lines(text)
            .iter()
            .filter_map(|line| {
                parse_rule(line)
                    .and_then(|rule| usable(&rule.action).map(|()| rule))
                    .inspect_err(|why| crate::warn!("{plugin}: {name}: {line:?} ignored: {why}"))
                    .ok()
            })
            .collect()
    })
}

/// The action of the first rule matching `text` (a header field or a
/// line), with `$1`… of its text filled from the match.
pub fn decide(rules: &[&Rule], text: &str) -> Option<Action> {
    rules.iter().find_map(|rule| {
        let captures = rule.regex.captures(text)?;
        let fill = |text: &String| {
            let mut out = String::new();
            captures.expand(text, &mut out);
            out
        };
        Some(match &rule.action {
            Action::Reject(text) => Action::Reject(fill(text)),
            Action::Warn(text) => Action::Warn(fill(text)),
            Action::Replace(text) => Action::Replace(fill(text)),
            Action::Prepend(text) => Action::Prepend(fill(text)),
            Action::Hold(text) => Action::Hold(fill(text)),
            other => other.clone(),
        })
    })
}

/// What a `REJECT [text]` rule of `plugin` answers for what it matched:
/// `550 5.7.1 text`, or Postfix's `Message content rejected`.
pub fn reject(plugin: &str, matched: &str, text: String) -> Verdict {
    crate::info!("{plugin}: refused for {matched:?}");
    let text = if text.is_empty() {
        "Message content rejected".into()
    } else {
        text
    };
    Verdict::deny_code(550, "5.7.1", &text)
}

/// What a `HOLD [reason]` rule of `plugin` does: the transaction note
/// `quarantine` (`PLUGIN: reason`, else what matched), for
/// `queue/quarantine` to keep the message aside.
pub fn hold(plugin: &str, matched: &str, reason: String) {
    crate::info!("{plugin}: held for {matched:?}");
    let reason = if reason.is_empty() { matched.to_string() } else { reason };
    note_transaction("quarantine", &format!("{plugin}: {reason}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(line: &str) -> Rule {
        parse_rule(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn rules_read_as_postfix_writes_them() {
        let reject = rule("/^Subject:.*viagra/ REJECT No spam, please");
        assert_eq!(reject.action, Action::Reject("No spam, please".into()));
        assert!(
            reject.regex.is_match("SUBJECT: cheap VIAGRA"),
            "case-insensitive by default"
        );
        let exact = rule("/^X-Tag: A/i WARN tagged");
        assert!(
            exact.regex.is_match("X-Tag: A") && !exact.regex.is_match("x-tag: a"),
            "i toggles it"
        );
        let slash = rule(r"/^Content-Type:.*text\/html/ HOLD html");
        assert!(slash.regex.is_match("Content-Type: text/html"));
        assert_eq!(rule("/^User-Agent:/ ignore").action, Action::Ignore);
        assert_eq!(
            rule("/^X-Spam-Flag: YES/ PREPEND X-Filed: spam").action,
            Action::Prepend("X-Filed: spam".into())
        );
        for bad in [
            "^Subject: x REJECT",
            "/unclosed REJECT",
            "/x/z REJECT",
            "/x/ FROB",
            "/x/",
            "/x/ REPLACE not a field",
            "/(/ REJECT",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_first_matching_rule_decides_and_fills_in_the_match() {
        let owned = [
            rule("/^Subject: keep (.*)/ DUNNO"),
            rule("/^Subject: (.*)/ REPLACE Subject: [EXTERNAL] $1"),
            rule("/^Subject:/ REJECT never reached"),
        ];
        let rules: Vec<&Rule> = owned.iter().collect();
        assert_eq!(decide(&rules, "Subject: keep this"), Some(Action::Dunno));
        assert_eq!(
            decide(&rules, "Subject: hello"),
            Some(Action::Replace("Subject: [EXTERNAL] hello".into()))
        );
        assert_eq!(decide(&rules, "From: a@b"), None);
    }
}
