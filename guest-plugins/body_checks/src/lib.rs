//! `body_checks`: Postfix's `body_checks` — regular expressions over each
//! line of a message's body, as it came (a base64 part is matched as its
//! encoded lines, MIME part headers as lines), up to a size limit. Rules
//! are read from `config/body_checks` for every message and, for relaying
//! sessions (users' own mail) only, from `config/body_checks.relaying`
//! after it: the place for rules that keep text from leaving (a project
//! name, a card number). For each line the first rule that matches
//! decides; the body is never changed, so the actions are REJECT, WARN,
//! HOLD and DUNNO.

use waraka_plugin::regexp_table::{Action, Rule, decide, hold, reject, rules};
use waraka_plugin::{Hook, Plugin, Settings, Verdict, message, session};

const RULES: &str = "body_checks";
const RELAYING_RULES: &str = "body_checks.relaying";
const SETTINGS: &str = "body_checks.ini";
/// Postfix's `body_checks_size_limit`.
const SIZE_LIMIT: u64 = 51_200;
/// Bytes read from the host at once.
const CHUNK: u32 = 64 * 1024;

struct BodyChecks;

/// The actions a body rule may have: the body is not edited.
fn usable(action: &Action) -> Result<(), String> {
    match action {
        Action::Reject(_) | Action::Warn(_) | Action::Hold(_) | Action::Dunno => Ok(()),
        other => Err(format!("{other:?} cannot change a body: REJECT, WARN, HOLD or DUNNO")),
    }
}

/// Splits the message into lines (without their CRLF) and hands each line
/// of the body, up to `limit` bytes of it, to `check` until it says stop.
struct BodyLines {
    in_header: bool,
    partial: Vec<u8>,
    body_bytes: u64,
    limit: u64,
}

impl BodyLines {
    /// Feeds `chunk`; false once `check` stopped or the limit was reached.
    fn feed(&mut self, chunk: &[u8], check: &mut impl FnMut(&str) -> bool) -> bool {
        self.partial.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(end) = self.partial[start..].iter().position(|&b| b == b'\n') {
            let line = &self.partial[start..start + end];
            start += end + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if self.in_header {
                self.in_header = !line.is_empty();
                continue;
            }
            if self.body_bytes >= self.limit || !check(&String::from_utf8_lossy(line)) {
                return false;
            }
            self.body_bytes += line.len() as u64 + 2;
        }
        self.partial.drain(..start);
        true
    }

    /// The last line, when the message does not end with CRLF.
    fn finish(&mut self, check: &mut impl FnMut(&str) -> bool) {
        if !self.in_header && !self.partial.is_empty() && self.body_bytes < self.limit {
            check(&String::from_utf8_lossy(&self.partial));
        }
    }
}

impl Plugin for BodyChecks {
    const NAME: &'static str = "body_checks";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        let every = rules(Self::NAME, RULES, usable);
        let relaying = session::relaying().then(|| rules(Self::NAME, RELAYING_RULES, usable));
        let rules: Vec<&Rule> = every.iter().chain(relaying.iter().flat_map(|r| r.iter())).collect();
        if rules.is_empty() {
            return Verdict::Cont;
        }
        let mut lines = BodyLines {
            in_header: true,
            partial: Vec::new(),
            body_bytes: 0,
            limit: Settings::load(SETTINGS).number("size_limit", SIZE_LIMIT),
        };
        let mut verdict = Verdict::Cont;
        let mut check = |line: &str| match decide(&rules, line) {
            None | Some(Action::Dunno) => true,
            Some(Action::Warn(text)) => {
                waraka_plugin::warn!("body_checks: {line:?}: {text}");
                true
            }
            Some(Action::Hold(text)) => {
                hold(Self::NAME, line, text);
                true
            }
            Some(Action::Reject(text)) => {
                verdict = reject(Self::NAME, line, text);
                false
            }
            // Left out when the rules were read (`usable`).
            Some(Action::Ignore | Action::Replace(_) | Action::Prepend(_)) => true,
        };
        let mut offset = 0;
        loop {
            let chunk = match message::read(offset, CHUNK) {
                Ok(chunk) => chunk,
                Err(e) => {
                    waraka_plugin::warn!("body_checks: reading the message failed: {e:?}");
                    return Verdict::denysoft_code(451, "4.3.0", "Message could not be checked, try again later");
                }
            };
            if chunk.is_empty() {
                lines.finish(&mut check);
                break;
            }
            offset += chunk.len() as u64;
            if !lines.feed(&chunk, &mut check) {
                break;
            }
        }
        verdict
    }
}

waraka_plugin::export!(BodyChecks);

#[cfg(test)]
mod tests {
    use super::*;

    fn body_lines(message: &[u8], limit: u64, chunk: usize) -> Vec<String> {
        let mut lines = BodyLines {
            in_header: true,
            partial: Vec::new(),
            body_bytes: 0,
            limit,
        };
        let mut seen = Vec::new();
        let mut check = |line: &str| {
            seen.push(line.to_string());
            true
        };
        for part in message.chunks(chunk) {
            if !lines.feed(part, &mut check) {
                return seen;
            }
        }
        lines.finish(&mut check);
        seen
    }

    #[test]
    fn only_body_lines_are_checked_up_to_the_limit() {
        let message = b"Subject: secret\r\nX: y\r\n\r\nfirst\r\n\r\nthird line\r\nlast";
        for chunk in [1, 3, 1000] {
            assert_eq!(
                body_lines(message, 1000, chunk),
                ["first", "", "third line", "last"],
                "chunks of {chunk}"
            );
        }
        assert_eq!(
            body_lines(message, 8, 4),
            ["first", ""],
            "lines starting past the limit are not read"
        );
    }

    #[test]
    fn rules_that_would_change_the_body_are_not_usable() {
        assert!(usable(&Action::Reject(String::new())).is_ok());
        assert!(usable(&Action::Hold("x".into())).is_ok());
        assert!(usable(&Action::Ignore).is_err());
        assert!(usable(&Action::Replace("X: y".into())).is_err());
    }
}
