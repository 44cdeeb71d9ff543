//! `sender_rewrite`: Postfix's `smtp_generic_maps` and `masquerade_domains`
//! — the addresses mail leaves from, rewritten for the world. Mail that
//! programs on the server send (cron's `root@host.internal`, an
//! application's `www-data@localhost`) or that users send from an inside
//! name goes out from a real address instead, in the envelope and in the
//! `From`, `Sender` and `Reply-To` fields, so bounces come back and SPF and
//! DMARC pass. Only relaying sessions (AUTH, the relay ACL, `waraka
//! sendmail`) are rewritten: mail for local mailboxes keeps its sender.
//! The map is `config/sender_rewrite`.

use waraka_plugin::{Address, Hook, Plugin, Verdict, config, envelope, header_addresses, message, session};

const MAP: &str = "sender_rewrite";
/// The fields whose addresses are rewritten.
const FIELDS: [&str; 3] = ["From", "Sender", "Reply-To"];

struct SenderRewrite;

/// One line of the map: `FROM TO`.
#[derive(Debug, PartialEq, Eq)]
struct Rule {
    /// `user@domain`, or `@domain` for every user of the domain.
    from: String,
    /// `user@domain`, or `@domain` to keep the user part.
    to: String,
}

/// Reads `FROM TO`; `None` for a line that is not two addresses or domains.
fn parse_rule(line: &str) -> Option<Rule> {
    let mut words = line.split_whitespace();
    let (from, to) = (words.next()?, words.next()?);
    let valid = |a: &str| a.contains('@') && !a.ends_with('@');
    (valid(from) && valid(to) && words.next().is_none()).then(|| Rule {
        from: from.to_ascii_lowercase(),
        to: to.to_string(),
    })
}

/// What `address` becomes: the rule for the whole address, else the one for
/// its domain; `None` when none applies.
fn rewrite(rules: &[Rule], address: &str) -> Option<String> {
    let lower = address.to_ascii_lowercase();
    let (local, domain) = lower.rsplit_once('@')?;
    let rule = rules
        .iter()
        .find(|r| r.from == lower)
        .or_else(|| rules.iter().find(|r| r.from == format!("@{domain}")))?;
    let original_local = &address[..local.len()];
    Some(match rule.to.strip_prefix('@') {
        Some(new_domain) => format!("{original_local}@{new_domain}"),
        None => rule.to.clone(),
    })
}

/// `value` with each whole occurrence of the address `old` — not one
/// inside a longer address (`ba@x.test` for `a@x.test`) — made `new`.
fn replace_address(value: &str, old: &str, new: &str) -> String {
    let bounds = |c: Option<char>| c.is_none_or(|c| c.is_whitespace() || "<>,;:\"".contains(c));
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find(old) {
        let (before, after) = (&rest[..at], &rest[at + old.len()..]);
        out.push_str(before);
        let whole = bounds(out.chars().next_back()) && bounds(after.chars().next());
        out.push_str(if whole { new } else { old });
        rest = after;
    }
    out.push_str(rest);
    out
}

impl Plugin for SenderRewrite {
    const NAME: &'static str = "sender_rewrite";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        if !session::relaying() {
            return Verdict::Cont;
        }
        let rules: Vec<Rule> = match config::lines(MAP) {
            Ok(lines) => lines
                .iter()
                .filter_map(|line| {
                    let rule = parse_rule(line);
                    if rule.is_none() {
                        waraka_plugin::warn!(
                            "sender_rewrite: {line:?} ignored: write FROM TO (user@domain or @domain)"
                        );
                    }
                    rule
                })
                .collect(),
            Err(e) => {
                waraka_plugin::error!("sender_rewrite: {MAP} unreadable: {e:?}");
                return Verdict::Cont;
            }
        };
        if rules.is_empty() {
            return Verdict::Cont;
        }
        if let Some(sender) = waraka_plugin::real_sender()
            && let Some(new) = rewrite(&rules, &sender.to_addr_spec())
        {
            match Address::from_addr_spec(&new).map(|a| Address {
                params: sender.params.clone(),
                ..a
            }) {
                Some(rewritten) => match envelope::set_sender(&rewritten) {
                    Ok(()) => waraka_plugin::info!("sender_rewrite: envelope {sender} is now {rewritten}"),
                    Err(e) => waraka_plugin::warn!("sender_rewrite: envelope {sender} kept: {e:?}"),
                },
                None => waraka_plugin::warn!("sender_rewrite: {new:?} is not an address"),
            }
        }
        for name in FIELDS {
            for (index, value) in message::header(name).into_iter().enumerate() {
                let mut changed = value.clone();
                for address in header_addresses(&value) {
                    if let Some(new) = rewrite(&rules, &address) {
                        changed = replace_address(&changed, &address, &new);
                    }
                }
                if changed == value {
                    continue;
                }
                match message::replace_header_at(name, index as u32, &changed) {
                    Ok(_) => waraka_plugin::info!("sender_rewrite: {name}: {value} is now {changed}"),
                    Err(e) => waraka_plugin::warn!("sender_rewrite: could not rewrite {name}: {e:?}"),
                }
            }
        }
        Verdict::Cont
    }
}

waraka_plugin::export!(SenderRewrite);

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Vec<Rule> {
        text.lines().filter_map(parse_rule).collect()
    }

    #[test]
    fn whole_addresses_win_over_domains_and_domains_keep_the_user() {
        let map = rules("root@vm.internal  admin@example.com\n@vm.internal @example.com\n@Old.test boss@example.com");
        assert_eq!(rewrite(&map, "ROOT@vm.internal").as_deref(), Some("admin@example.com"));
        assert_eq!(rewrite(&map, "Alice@VM.internal").as_deref(), Some("Alice@example.com"));
        assert_eq!(rewrite(&map, "x@old.test").as_deref(), Some("boss@example.com"));
        assert_eq!(rewrite(&map, "bob@example.com"), None);
        assert_eq!(rewrite(&map, "not an address"), None);
    }

    #[test]
    fn only_whole_addresses_are_replaced() {
        assert_eq!(
            replace_address("ba@x.test, a@x.test, \"A\" <a@x.test>", "a@x.test", "z@y.test"),
            "ba@x.test, z@y.test, \"A\" <z@y.test>"
        );
        assert_eq!(replace_address("a@x.test.org", "a@x.test", "z@y.test"), "a@x.test.org");
    }

    #[test]
    fn lines_that_are_not_two_addresses_are_left_out() {
        assert!(rules("root admin@example.com\n@a.test\nx@a.test y@b.test z@c.test\nq@ r@s.test").is_empty());
    }
}
