//! `header_checks`: Postfix's `header_checks` — regular expressions over
//! each header field of a message (`Name: value`, unfolded), each with an
//! action: refuse the message, log it, remove or rewrite the field, add one,
//! or keep the message aside. Rules are read from `config/header_checks`
//! for every message and, for relaying sessions (submissions) only, from
//! `config/header_checks.relaying` after it — the place for privacy rules
//! such as removing the `User-Agent` of mail users send. For each field the
//! first rule that matches decides, as in a Postfix lookup table.

use waraka_plugin::regexp_table::{Action, Rule, decide, hold, reject, rules};
use waraka_plugin::{Hook, Plugin, Verdict, message, session};

const RULES: &str = "header_checks";
const RELAYING_RULES: &str = "header_checks.relaying";

struct HeaderChecks;

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
        let every = rules(Self::NAME, RULES, |_| Ok(()));
        let relaying = session::relaying().then(|| rules(Self::NAME, RELAYING_RULES, |_| Ok(())));
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
                Some(Action::Reject(text)) => return reject(Self::NAME, &field, text),
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
                Some(Action::Hold(text)) => hold(Self::NAME, &field, text),
            }
            position += 1;
        }
        Verdict::Cont
    }
}

waraka_plugin::export!(HeaderChecks);
