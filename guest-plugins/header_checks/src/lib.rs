//! `header_checks`: Postfix's `header_checks` — regular expressions over
//! each header field of a message (`Name: value`, unfolded), each with an
//! action: refuse the message, log it, remove or rewrite the field, add one,
//! or keep the message aside. Rules are read from `config/header_checks`
//! for every message and, for relaying sessions (submissions) only, from
//! `config/header_checks.relaying` after it — the place for privacy rules
//! such as removing the `User-Agent` of mail users send. For each field the
//! first rule that matches decides, as in a Postfix lookup table.

use std::rc::Rc;
use waraka_plugin::{Hook, Plugin, Regex, Verdict, config_lines, message, note_transaction, parsed_config, session};

const RULES: &str = "header_checks";
const RELAYING_RULES: &str = "header_checks.relaying";

struct HeaderChecks;

/// What a matching rule does to the message.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    /// `REJECT [text]`: `550 5.7.1 text`.
    Reject(String),
    /// `WARN [text]`: a log line, nothing else.
    Warn(String),
    /// `IGNORE`: the field is removed.
    Ignore,
    /// `REPLACE Name: value`: this field takes the matching one's place.
    Replace(String),
    /// `PREPEND Name: value`: this field goes just above the matching one.
    Prepend(String),
    /// `HOLD [reason]`: the transaction note `quarantine`, for
    /// `queue/quarantine` to keep the message aside.
    Hold(String),
    /// `DUNNO` / `OK`: nothing, and no later rule is asked about the field.
    Dunno,
}

/// One line of a rules file.
#[derive(Debug)]
struct Rule {
    regex: Regex,
    action: Action,
}

/// Reads `/PATTERN/FLAGS ACTION [TEXT]`: as in Postfix's regexp tables
/// matching is case-insensitive unless the flag `i` is given; a `/` in the
/// pattern is written `\/`.
fn parse_rule(line: &str) -> Result<Rule, String> {
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

/// The rules of the file `name`, compiled when it changed; a line that
/// cannot be read is logged then and left out.
fn rules(name: &str) -> Rc<Vec<Rule>> {
    parsed_config(name, |text| {
        config_lines(text)
            .iter()
            .filter_map(|line| {
                parse_rule(line)
                    .inspect_err(|why| waraka_plugin::warn!("header_checks: {name}: {line:?} ignored: {why}"))
                    .ok()
            })
            .collect()
    })
}

/// The action of the first rule matching `field`, with `$1`… of its text
/// filled from the match.
fn decide(rules: &[&Rule], field: &str) -> Option<Action> {
    rules.iter().find_map(|rule| {
        let captures = rule.regex.captures(field)?;
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

/// The header as it is being edited: each field's name, in order, so a
/// field's index among those of its name follows the edits made above it.
struct Header {
    names: Vec<String>,
}

impl Header {
    /// The index of the field at `position` among the fields of its name.
    fn index_at(&self, position: usize) -> u32 {
        let name = &self.names[position];
        self.names[..position]
            .iter()
            .filter(|n| n.eq_ignore_ascii_case(name))
            .count() as u32
    }

    /// Puts the field `Name: value` of `text` at `position`; false if it
    /// could not be added (logged).
    fn insert(&mut self, position: usize, text: &str) -> bool {
        let Some((name, value)) = text.split_once(':').map(|(n, v)| (n.trim(), v.trim())) else {
            waraka_plugin::warn!("header_checks: {text:?} is not a header field");
            return false;
        };
        match message::insert_header(position as u32, name, value) {
            Ok(()) => {
                self.names.insert(position, name.to_string());
                true
            }
            Err(e) => {
                waraka_plugin::warn!("header_checks: could not add {name}: {e:?}");
                false
            }
        }
    }

    /// Removes the field at `position`.
    fn remove(&mut self, position: usize) {
        message::remove_header_at(&self.names[position], self.index_at(position));
        self.names.remove(position);
    }

    /// Puts the field of `text` in the place of the one at `position`.
    fn replace(&mut self, position: usize, text: &str) {
        let same_name = text
            .split_once(':')
            .filter(|(name, _)| name.trim().eq_ignore_ascii_case(&self.names[position]));
        match same_name {
            Some((_, value)) => {
                let (name, index) = (&self.names[position], self.index_at(position));
                if let Err(e) = message::replace_header_at(name, index, value.trim()) {
                    waraka_plugin::warn!("header_checks: could not replace {name}: {e:?}");
                }
            }
            None if self.insert(position, text) => self.remove(position + 1),
            None => {}
        }
    }
}

impl Plugin for HeaderChecks {
    const NAME: &'static str = "header_checks";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        let every = rules(RULES);
        let relaying = session::relaying().then(|| rules(RELAYING_RULES));
        let rules: Vec<&Rule> = every.iter().chain(relaying.iter().flat_map(|r| r.iter())).collect();
        if rules.is_empty() {
            return Verdict::Cont;
        }
        let fields = message::headers();
        let mut header = Header {
            names: fields.iter().map(|(name, _)| name.clone()).collect(),
        };
        // Where the field looked at is now, as edits above it move it.
        let mut position = 0;
        for (name, value) in fields {
            let field = format!("{name}: {value}");
            match decide(&rules, &field) {
                None | Some(Action::Dunno) => {}
                Some(Action::Reject(text)) => {
                    waraka_plugin::info!("header_checks: refused for {field:?}");
                    let text = if text.is_empty() {
                        "Message content rejected".into()
                    } else {
                        text
                    };
                    return Verdict::deny_code(550, "5.7.1", &text);
                }
                Some(Action::Warn(text)) => waraka_plugin::warn!("header_checks: {field:?}: {text}"),
                Some(Action::Ignore) => {
                    header.remove(position);
                    waraka_plugin::info!("header_checks: removed {name}");
                    continue;
                }
                Some(Action::Replace(text)) => {
                    header.replace(position, &text);
                    waraka_plugin::info!("header_checks: replaced {name}");
                }
                Some(Action::Prepend(text)) => {
                    if header.insert(position, &text) {
                        position += 1;
                    }
                }
                Some(Action::Hold(text)) => {
                    let reason = if text.is_empty() { field.clone() } else { text };
                    waraka_plugin::info!("header_checks: held for {field:?}");
                    note_transaction("quarantine", &format!("header_checks: {reason}"));
                }
            }
            position += 1;
        }
        Verdict::Cont
    }
}

waraka_plugin::export!(HeaderChecks);

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
