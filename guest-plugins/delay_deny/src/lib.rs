//! `delay_deny`: other plugins' refusals before RCPT wait until a recipient
//! is accepted, as Haraka's `delay_deny`. A refusal at connect, HELO/EHLO or
//! MAIL is kept (through the `deny` hook) and the session goes on; at
//! `rcpt-ok` the first kept refusal is given to each recipient, with the
//! refusing plugin's own reply. A session that relays by then (AUTH or the
//! relay ACL) passes: a roaming user whose address a DNS list names can
//! still log in and send. Refusals at RCPT are about their recipient and
//! stand as they are. Settings: `config/delay_deny.ini`.

use waraka_plugin::{Address, Denial, Hook, Plugin, Reply, Scope, Settings, Verdict, notes, session};

const SETTINGS: &str = "delay_deny.ini";
/// The refusals kept: the connection's (connect, HELO/EHLO) in its notes,
/// the transaction's (MAIL) in its notes; records separated by RS.
const KEPT: &str = "delay_deny.kept";
const RECORD_END: char = '\u{1e}';

struct DelayDeny;

/// A refusal kept for later.
#[derive(Debug)]
struct Kept {
    plugin: String,
    hook: String,
    verdict: Verdict,
}

fn kind_and_reply(verdict: &Verdict) -> Option<(&'static str, &Option<Reply>)> {
    Some(match verdict {
        Verdict::Deny(r) => ("deny", r),
        Verdict::Denysoft(r) => ("denysoft", r),
        Verdict::DenyDisconnect(r) => ("deny-disconnect", r),
        Verdict::DenysoftDisconnect(r) => ("denysoft-disconnect", r),
        _ => return None,
    })
}

impl Kept {
    /// One record: tab-separated fields, the reply's lines last.
    fn encode(&self) -> Option<String> {
        let (kind, reply) = kind_and_reply(&self.verdict)?;
        let clean = |s: &str| s.replace(['\t', '\n', RECORD_END], " ");
        let (code, enhanced, lines) = match reply {
            Some(r) => (r.code, r.enhanced.clone().unwrap_or_default(), r.lines.clone()),
            None => (0, String::new(), Vec::new()),
        };
        let mut fields = vec![
            clean(&self.plugin),
            clean(&self.hook),
            kind.to_string(),
            code.to_string(),
            clean(&enhanced),
        ];
        fields.extend(lines.iter().map(|l| clean(l)));
        Some(fields.join("\t"))
    }

    fn decode(record: &str) -> Option<Kept> {
        let mut fields = record.split('\t');
        let (plugin, hook) = (fields.next()?, fields.next()?);
        let (kind, code, enhanced) = (fields.next()?, fields.next()?.parse().ok()?, fields.next()?);
        let lines: Vec<String> = fields.map(str::to_string).collect();
        let reply = (code != 0 || !lines.is_empty()).then(|| Reply {
            code,
            enhanced: (!enhanced.is_empty()).then(|| enhanced.to_string()),
            lines,
        });
        let verdict = match kind {
            "deny" => Verdict::Deny(reply),
            "denysoft" => Verdict::Denysoft(reply),
            "deny-disconnect" => Verdict::DenyDisconnect(reply),
            "denysoft-disconnect" => Verdict::DenysoftDisconnect(reply),
            _ => return None,
        };
        Some(Kept {
            plugin: plugin.into(),
            hook: hook.into(),
            verdict,
        })
    }
}

fn kept(scope: Scope) -> Vec<Kept> {
    notes::get(scope, KEPT)
        .unwrap_or_default()
        .split(RECORD_END)
        .filter_map(Kept::decode)
        .collect()
}

fn keep(scope: Scope, list: &[Kept]) {
    if list.is_empty() {
        notes::remove(scope, KEPT);
        return;
    }
    let text: Vec<String> = list.iter().filter_map(Kept::encode).collect();
    let _ = notes::set(scope, KEPT, &text.join(&RECORD_END.to_string()));
}

/// The scope a refusal at `hook` is kept in; `None` for hooks whose
/// refusals are not delayed (RCPT on, AUTH, unknown commands).
fn scope_of(hook: &str) -> Option<Scope> {
    match hook {
        "connect" | "helo" | "ehlo" => Some(Scope::Connection),
        "mail" => Some(Scope::Transaction),
        _ => None,
    }
}

/// Whether `names` (`plugin` or `plugin:hook` entries) names this refusal.
fn names(names: &[String], plugin: &str, hook: &str) -> bool {
    names.iter().any(|n| n == plugin || *n == format!("{plugin}:{hook}"))
}

/// Whether the settings delay this refusal: only the `included_plugins`
/// when that is set, otherwise all but the `excluded_plugins`.
fn delays(settings: &Settings, plugin: &str, hook: &str) -> bool {
    let included = settings.list("included_plugins");
    if !included.is_empty() {
        return names(&included, plugin, hook);
    }
    !names(&settings.list("excluded_plugins"), plugin, hook)
}

impl Plugin for DelayDeny {
    const NAME: &'static str = "delay_deny";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Deny, Hook::RcptOk, Hook::DataPost];

    fn deny(denial: Denial) -> Verdict {
        let Some(scope) = scope_of(&denial.hook) else {
            return Verdict::Cont;
        };
        if denial.plugin == Self::NAME || !delays(&Settings::load(SETTINGS), &denial.plugin, &denial.hook) {
            return Verdict::Cont;
        }
        let refusal = Kept {
            plugin: denial.plugin,
            hook: denial.hook,
            verdict: denial.verdict,
        };
        if refusal.encode().is_none() {
            return Verdict::Cont;
        }
        waraka_plugin::info!(
            "delay_deny: {}'s refusal at {} kept until a recipient",
            refusal.plugin,
            refusal.hook
        );
        let mut list = kept(scope);
        list.push(refusal);
        keep(scope, &list);
        Verdict::ok()
    }

    /// Gives the recipient the first refusal kept: the connection's, then
    /// the transaction's. A relaying session passes them all.
    fn rcpt_ok(recipient: Address) -> Verdict {
        let this = recipient.to_addr_spec();
        let refusals: Vec<Kept> = kept(Scope::Connection)
            .into_iter()
            .chain(kept(Scope::Transaction))
            .collect();
        if session::relaying() {
            if !refusals.is_empty() {
                waraka_plugin::info!(
                    "delay_deny: {this}: {} kept refusals passed over (relaying)",
                    refusals.len()
                );
            }
            return Verdict::Cont;
        }
        match refusals.into_iter().next() {
            Some(first) => {
                waraka_plugin::info!(
                    "delay_deny: {this} refused for {}'s refusal at {}",
                    first.plugin,
                    first.hook
                );
                first.verdict
            }
            None => Verdict::Cont,
        }
    }

    /// A relaying session's message says which refusals it passed over.
    fn data_post() -> Verdict {
        let mut plugins: Vec<String> = Vec::new();
        for refusal in kept(Scope::Connection).into_iter().chain(kept(Scope::Transaction)) {
            if !plugins.contains(&refusal.plugin) {
                plugins.push(refusal.plugin);
            }
        }
        if !plugins.is_empty() {
            waraka_plugin::replace_header("X-Waraka-Fail-Pre", &plugins.join(" "));
        }
        Verdict::Cont
    }
}

waraka_plugin::export!(DelayDeny);

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(verdict: Verdict) -> Kept {
        Kept {
            plugin: "dns-list".into(),
            hook: "connect".into(),
            verdict,
        }
    }

    #[test]
    fn refusals_survive_their_record() {
        let reply = Reply {
            code: 554,
            enhanced: Some("5.7.1".into()),
            lines: vec!["127.0.0.2 is listed\tin bl.test".into(), "second line".into()],
        };
        let refusal = kept(Verdict::DenyDisconnect(Some(reply)));
        let back = Kept::decode(&refusal.encode().unwrap()).unwrap();
        let Verdict::DenyDisconnect(Some(r)) = &back.verdict else {
            panic!("{back:?}")
        };
        assert_eq!((r.code, r.enhanced.as_deref()), (554, Some("5.7.1")));
        assert_eq!(r.lines, ["127.0.0.2 is listed in bl.test", "second line"]);
        let plain = kept(Verdict::Denysoft(None)).encode().unwrap();
        assert_eq!(Kept::decode(&plain).unwrap().encode(), Some(plain));
        assert!(kept(Verdict::Ok(None)).encode().is_none());
        assert!(Kept::decode("a\tb").is_none());
    }

    #[test]
    fn included_plugins_narrow_excluded_ones_widen() {
        let settings = |lines: &[&str]| Settings::from_lines(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>());
        assert!(delays(&settings(&[]), "dns-list", "connect"));
        let excluded = settings(&["excluded_plugins = access, spf:mail"]);
        assert!(!delays(&excluded, "access", "connect"));
        assert!(!delays(&excluded, "spf", "mail"));
        assert!(delays(&excluded, "spf", "helo"));
        let included = settings(&["included_plugins = dns-list", "excluded_plugins = dns-list"]);
        assert!(delays(&included, "dns-list", "connect"));
        assert!(!delays(&included, "fcrdns", "connect"));
        assert_eq!(scope_of("rcpt"), None);
        assert_eq!(scope_of("ehlo"), Some(Scope::Connection));
    }
}
