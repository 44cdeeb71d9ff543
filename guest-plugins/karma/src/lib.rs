//! `karma`: a score for each connection, as Haraka's `karma`. The plugins
//! before it in the chain leave what they found in notes (`dns-list.listed`,
//! `fcrdns.result`, `spf`, `spamassassin.score`, …); karma turns those into
//! points with the `award.NOTE` lines of `config/karma.ini`, adds its own
//! findings (the client's history, unknown commands and recipients, the
//! sender's top-level domain) and takes over other plugins' refusals, which
//! cost points instead of ending the session. A connection whose score falls
//! to `negative` is refused at the next of `deny_hooks`; a negative score
//! holds every reply (the host's `tarpit` note). Each connection that ends
//! counts as good or bad in its client's history, kept in the key/value store
//! `store` (grant `kv:NAME`).
//!
//! Its state lives in connection notes (`karma.score`, `karma.pass`,
//! `karma.fail`), so later plugins and logs see it too.

use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;
use waraka_plugin::{Address, Denial, Hook, Plugin, Regex, Scope, Settings, Verdict, kv, network_of, notes, session};

const SETTINGS: &str = "karma.ini";
/// The connection's score (connection note).
const SCORE: &str = "karma.score";
/// What added points and what took them away (connection notes, comma separated).
const PASSED: &str = "karma.pass";
const FAILED: &str = "karma.fail";
/// The awards already given: connection awards in the connection's notes,
/// transaction awards in the transaction's (comma-separated award numbers).
const AWARDED: &str = "karma.awarded";
/// Karma's own findings, scored by awards like any other note.
const HISTORY: &str = "karma.history";
const HISTORY_ALL: &str = "karma.history.all";
const ASN_HISTORY: &str = "karma.asn_history";
const UNRECOGNIZED: &str = "karma.unrecognized";
const UNKNOWN_RECIPIENTS: &str = "karma.unknown_recipients";
const ENV_USER_MATCH: &str = "karma.env_user_match";
const TLS: &str = "karma.tls";
const SENDER_TLD: &str = "karma.sender_tld";
/// The host holds each reply this many seconds (see `docs/hooks.md`).
const TARPIT: &str = "tarpit";
/// Connections after which a client's history that is all good or all bad
/// says so in `karma.history.all`.
const ALL_AFTER: u64 = 5;

struct Karma;

/// When an award applies to its note's value.
#[derive(Debug)]
enum Condition {
    /// Any value but an empty one, `false`, `no` or `0`.
    Present,
    /// This value (case-insensitive).
    Equals(String),
    /// A value this pattern finds (case-insensitive).
    Matches(Regex),
    /// A number above this one.
    Above(f64),
    /// A number below this one.
    Below(f64),
}

impl Condition {
    fn holds(&self, value: &str) -> bool {
        let value = value.trim();
        let number = || value.parse::<f64>().ok();
        match self {
            Condition::Present => !matches!(value.to_ascii_lowercase().as_str(), "" | "false" | "no" | "0"),
            Condition::Equals(wanted) => value.eq_ignore_ascii_case(wanted),
            Condition::Matches(pattern) => pattern.is_match(value),
            Condition::Above(limit) => number().is_some_and(|n| n > *limit),
            Condition::Below(limit) => number().is_some_and(|n| n < *limit),
        }
    }
}

/// One `award.NOTE = POINTS [if equals|match|gt|lt VALUE]` line.
#[derive(Debug)]
struct Award {
    /// Its place among the award lines: given once per connection (or
    /// transaction, for a transaction's note).
    number: usize,
    note: String,
    points: f64,
    condition: Condition,
}

/// Reads an award line; `None` when it is not `POINTS [if OPERATOR VALUE]`.
fn parse_award(number: usize, note: &str, text: &str) -> Option<Award> {
    let mut words = text.split_whitespace();
    let points = words.next()?.parse::<f64>().ok().filter(|p| p.is_finite())?;
    let condition = match words.next() {
        None => Condition::Present,
        Some("if") => {
            let operator = words.next()?;
            let value = words.collect::<Vec<_>>().join(" ");
            if value.is_empty() {
                return None;
            }
            match operator {
                "equals" => Condition::Equals(value),
                "match" => Condition::Matches(Regex::new(&format!("(?i){value}")).ok()?),
                "gt" => Condition::Above(value.parse().ok()?),
                "lt" => Condition::Below(value.parse().ok()?),
                _ => return None,
            }
        }
        Some(_) => return None,
    };
    Some(Award {
        number,
        note: note.trim().to_string(),
        points,
        condition,
    })
}

/// `config/karma.ini`, read once per hook.
struct Config {
    settings: Settings,
    awards: Vec<Award>,
    /// Award lines that could not be read, for the log.
    unreadable: Vec<String>,
}

impl Config {
    /// `config/karma.ini` as it is now: read at every hook (as one string:
    /// a hundred lines cross into the sandbox one by one, which costs more
    /// than the rest of a hook), its awards compiled only when it changed.
    fn load() -> Rc<Config> {
        waraka_plugin::parsed_config(SETTINGS, |text| Config::from_lines(&waraka_plugin::config_lines(text)))
    }

    fn from_lines(lines: &[String]) -> Config {
        let settings = Settings::from_lines(lines);
        let mut awards = Vec::new();
        let mut unreadable = Vec::new();
        for (number, (note, text)) in settings.prefixed("award.").enumerate() {
            match parse_award(number, note, text) {
                Some(award) => awards.push(award),
                None => unreadable.push(format!("award.{note} = {text}")),
            }
        }
        Config {
            settings,
            awards,
            unreadable,
        }
    }

    fn negative(&self) -> f64 {
        self.settings.number("negative", -8.0)
    }

    fn listed(&self, key: &str, default: &str, item: &str) -> bool {
        let items = match self.settings.get(key) {
            Some(value) => waraka_plugin::split_list(&value),
            None => waraka_plugin::split_list(default),
        };
        items.iter().any(|i| i == item)
    }

    /// Whether this connection is left alone: a loopback or private client
    /// (unless `check_private`), or a relaying one (unless `skip_relaying = false`).
    fn skips(&self) -> bool {
        self.settings.skips_private() || self.settings.skips_relaying(true)
    }
}

fn number_note(scope: Scope, key: &str) -> f64 {
    notes::get(scope, key)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|n| n.is_finite())
        .unwrap_or(0.0)
}

/// A number as notes and header fields show it: `3`, `-1.5`.
fn points_text(points: f64) -> String {
    if points.fract() == 0.0 {
        format!("{points:.0}")
    } else {
        format!("{points}")
    }
}

fn score() -> f64 {
    number_note(Scope::Connection, SCORE)
}

/// Adds `points` to the score for `reason`, which joins the pass or fail list.
fn add_points(points: f64, reason: &str) {
    waraka_plugin::note_connection(SCORE, &points_text(score() + points));
    let list = if points > 0.0 { PASSED } else { FAILED };
    let mut reasons = notes::get(Scope::Connection, list).unwrap_or_default();
    if points != 0.0 && !reasons.split(',').any(|r| r == reason) {
        if !reasons.is_empty() {
            reasons.push(',');
        }
        reasons.push_str(reason);
        waraka_plugin::note_connection(list, &reasons);
    }
}

fn counted(scope: Scope, key: &str) -> u64 {
    let count = number_note(scope, key) as u64 + 1;
    let _ = notes::set(scope, key, &count.to_string());
    count
}

/// Gives every award whose note now holds a value it applies to and that
/// was not given yet. A transaction's note is looked up before the
/// connection's of the same name, and its award is given once per
/// transaction; a connection's, once per connection.
fn give_awards(config: &Config) {
    // Which notes exist, asked once per scope: most awards' notes are absent.
    let present = [Scope::Transaction, Scope::Connection].map(|scope| (scope, notes::keys(scope)));
    let given = |scope| -> Vec<usize> {
        notes::get(scope, AWARDED)
            .unwrap_or_default()
            .split(',')
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    let mut given = present
        .each_ref()
        .map(|(scope, keys)| match keys.iter().any(|k| k == AWARDED) {
            true => (*scope, given(*scope)),
            false => (*scope, Vec::new()),
        });
    let mut values: Vec<(Scope, &str, Option<String>)> = Vec::new();
    for award in &config.awards {
        let Some(scope) = present
            .iter()
            .find(|(_, keys)| keys.contains(&award.note))
            .map(|(scope, _)| *scope)
        else {
            continue;
        };
        let (_, numbers) = given.iter_mut().find(|(s, _)| *s == scope).expect("both scopes");
        if numbers.contains(&award.number) {
            continue;
        }
        // One read per note, however many awards it has.
        let value = match values.iter().find(|(s, note, _)| *s == scope && *note == award.note) {
            Some((_, _, value)) => value.clone(),
            None => {
                let value = notes::get(scope, &award.note);
                values.push((scope, &award.note, value.clone()));
                value
            }
        };
        let Some(value) = value else { continue };
        if !award.condition.holds(&value) {
            continue;
        }
        numbers.push(award.number);
        let list = numbers.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        let _ = notes::set(scope, AWARDED, &list);
        waraka_plugin::debug!(
            "karma: {} = {value:?}: {} points",
            award.note,
            points_text(award.points)
        );
        add_points(award.points, &award.note);
    }
}

/// Sets the host's `tarpit` note from the score: none at zero or above;
/// below, `tarpit_delay` seconds, or with 0 as many as the score is below
/// zero, at most `tarpit_max` (0: never).
fn set_tarpit(config: &Config, score: f64) {
    let fixed = config.settings.number("tarpit_delay", 0.0f64);
    let max = config.settings.number("tarpit_max", 5.0f64);
    let seconds = if fixed > 0.0 { fixed } else { -score }.min(max);
    if score < 0.0 && seconds > 0.0 {
        waraka_plugin::note_connection(TARPIT, &points_text(seconds));
    } else {
        notes::remove(Scope::Connection, TARPIT);
    }
}

/// Scores what is new and refuses at a deny hook when the score is at or
/// below `negative`.
fn judge(config: &Config, hook: Hook) -> Verdict {
    give_awards(config);
    let score = score();
    set_tarpit(config, score);
    if score > config.negative() || !config.listed("deny_hooks", DENY_HOOKS, hook.name()) {
        return Verdict::Cont;
    }
    waraka_plugin::info!(
        "karma: {} refused at {}: score {}, failed {}",
        session::peer_ip(),
        hook.name(),
        points_text(score),
        notes::get(Scope::Connection, FAILED).unwrap_or_default()
    );
    let message = config
        .settings
        .get("message")
        .unwrap_or_else(|| "Very bad karma score {score}".into());
    Verdict::deny(&message.replace("{score}", &points_text(score)))
}

const DENY_HOOKS: &str = "unrecognized-command, helo, ehlo, data, data-post";
const EXCLUDED_HOOKS: &str = "auth, rcpt, rcpt-ok, max-data-exceeded, queue, queue-outbound";
const EXCLUDED_PLUGINS: &str = "access, helo.checks, headers, mail_from.is_resolvable, spamassassin, rspamd, clamd, \
                                attachment, milter, dmarc, limit, bounce, geoip";

/// Runs `judge` unless the connection is left alone.
fn hook(hook: Hook) -> Verdict {
    let config = Config::load();
    if config.skips() {
        return Verdict::Cont;
    }
    judge(&config, hook)
}

/// The key of a client's history: its address (IPv6: its /64).
fn history_key(ip: IpAddr) -> String {
    format!("karma:{}", network_of(ip, 32, 64))
}

/// A client's history as stored: good, bad and all connections.
fn read_history(value: Option<&[u8]>) -> (u64, u64, u64) {
    let text = value.and_then(|v| std::str::from_utf8(v).ok()).unwrap_or_default();
    let mut numbers = text.split_whitespace().map(|n| n.parse::<u64>().unwrap_or(0));
    let mut next = || numbers.next().unwrap_or(0);
    (next(), next(), next())
}

/// Whose history a key keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HistoryOf {
    /// The client's address.
    Client,
    /// Its network (autonomous system).
    Network,
}

/// The histories this connection counts in: its client's, and its
/// network's when the `asn` plugin noted one.
fn history_keys() -> Vec<(HistoryOf, String)> {
    let client = session::peer_ip()
        .parse()
        .ok()
        .map(|ip| (HistoryOf::Client, history_key(ip)));
    let network =
        notes::get(Scope::Connection, "asn").map(|asn| (HistoryOf::Network, format!("karma:as{}", asn.trim())));
    client.into_iter().chain(network).collect()
}

/// Changes the stored history `key` with `change` (good, bad, all),
/// keeping it `history_expiry` longer. Concurrent connections of one client
/// may lose a count to each other: history is a trend, not a ledger.
fn update_history(config: &Config, key: &str, change: impl FnOnce(&mut (u64, u64, u64))) -> Option<(u64, u64, u64)> {
    let store = config.settings.store();
    let expiry = config
        .settings
        .duration("history_expiry", Duration::from_secs(60 * 86_400));
    let result = kv::get(&store, key).and_then(|value| {
        let before = read_history(value.as_deref());
        let mut after = before;
        change(&mut after);
        let text = format!("{} {} {}", after.0, after.1, after.2);
        kv::set(&store, key, text.as_bytes(), Some(expiry.as_millis() as u64)).map(|_| before)
    });
    result
        .inspect_err(|e| waraka_plugin::warn!("karma: history store {store} failed: {e:?}"))
        .ok()
}

/// Notes the client's history (good less bad connections, and whether all
/// of its last connections were good or bad) and its network's (good less
/// bad), and counts this connection in both.
fn note_history(config: &Config) {
    for (of, key) in history_keys() {
        let Some((good, bad, _)) = update_history(config, &key, |h| h.2 += 1) else {
            continue;
        };
        if good + bad > 0 {
            let balance = (good as i64 - bad as i64).to_string();
            let note = if of == HistoryOf::Client { HISTORY } else { ASN_HISTORY };
            waraka_plugin::note_connection(note, &balance);
        }
        if of == HistoryOf::Network {
            continue;
        }
        if good > ALL_AFTER && bad == 0 {
            waraka_plugin::note_connection(HISTORY_ALL, "good");
        } else if bad > ALL_AFTER && good == 0 {
            waraka_plugin::note_connection(HISTORY_ALL, "bad");
        }
    }
}

/// Notes a recipient whose local part is the sender's (rare in real mail,
/// common in spam).
fn note_env_user_match(recipient: &Address) {
    let same = waraka_plugin::envelope::sender()
        .is_some_and(|s| !s.is_null() && s.local_part.eq_ignore_ascii_case(&recipient.local_part));
    if same {
        waraka_plugin::note_transaction(ENV_USER_MATCH, "true");
    }
}

impl Plugin for Karma {
    const NAME: &'static str = "karma";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[
        Hook::Connect,
        Hook::Helo,
        Hook::Ehlo,
        Hook::UnrecognizedCommand,
        Hook::Mail,
        Hook::Rcpt,
        Hook::RcptOk,
        Hook::Data,
        Hook::DataPost,
        Hook::Deny,
        Hook::Disconnect,
    ];

    fn connect() -> Verdict {
        let config = Config::load();
        if config.skips() {
            return Verdict::Cont;
        }
        for line in &config.unreadable {
            waraka_plugin::warn!("karma: {line} is not POINTS [if equals|match|gt|lt VALUE]: ignored");
        }
        waraka_plugin::note_connection(SCORE, &points_text(score()));
        note_history(&config);
        judge(&config, Hook::Connect)
    }

    fn helo(_host: String) -> Verdict {
        hook(Hook::Helo)
    }

    fn ehlo(_host: String) -> Verdict {
        hook(Hook::Ehlo)
    }

    fn unrecognized_command(_verb: String, _args: String) -> Verdict {
        let config = Config::load();
        if config.skips() {
            return Verdict::Cont;
        }
        counted(Scope::Connection, UNRECOGNIZED);
        judge(&config, Hook::UnrecognizedCommand)
    }

    fn mail(sender: Address) -> Verdict {
        let config = Config::load();
        if config.skips() {
            return Verdict::Cont;
        }
        let tls = if session::tls_version().is_some() { "yes" } else { "no" };
        waraka_plugin::note_connection(TLS, tls);
        if let Some(tld) = sender.domain.rsplit('.').next().filter(|t| !t.is_empty()) {
            waraka_plugin::note_transaction(SENDER_TLD, &tld.to_ascii_lowercase());
        }
        judge(&config, Hook::Mail)
    }

    /// Reached only by recipients no plugin before karma accepted: karma
    /// is last in the chain, and this one is unknown.
    fn rcpt(recipient: Address) -> Verdict {
        let config = Config::load();
        if config.skips() {
            return Verdict::Cont;
        }
        counted(Scope::Connection, UNKNOWN_RECIPIENTS);
        note_env_user_match(&recipient);
        judge(&config, Hook::Rcpt)
    }

    fn rcpt_ok(recipient: Address) -> Verdict {
        let config = Config::load();
        if config.skips() {
            return Verdict::Cont;
        }
        note_env_user_match(&recipient);
        judge(&config, Hook::RcptOk)
    }

    fn data() -> Verdict {
        hook(Hook::Data)
    }

    fn data_post() -> Verdict {
        let config = Config::load();
        if config.skips() {
            return Verdict::Cont;
        }
        let verdict = judge(&config, Hook::DataPost);
        if config.settings.bool("header", true) {
            waraka_plugin::replace_header("X-Waraka-Karma", &summary());
        }
        verdict
    }

    /// Takes over another plugin's permanent refusal: it costs `deny_award`
    /// points and the session goes on, unless the score falls to
    /// `negative` (then the refusal stands).
    fn deny(denial: Denial) -> Verdict {
        let config = Config::load();
        let permanent = matches!(denial.verdict, Verdict::Deny(_) | Verdict::DenyDisconnect(_));
        if config.skips()
            || !permanent
            || denial.plugin == Self::NAME
            || config.listed("deny_excludes_plugins", EXCLUDED_PLUGINS, &denial.plugin)
            || config.listed("deny_excludes_hooks", EXCLUDED_HOOKS, &denial.hook)
        {
            return Verdict::Cont;
        }
        add_points(
            config.settings.number("deny_award", -2.0),
            &format!("deny:{}", denial.plugin),
        );
        give_awards(&config);
        let score = score();
        set_tarpit(&config, score);
        if score <= config.negative() {
            return Verdict::Cont;
        }
        waraka_plugin::info!(
            "karma: {}'s refusal at {} taken over: score {}",
            denial.plugin,
            denial.hook,
            points_text(score)
        );
        Verdict::ok()
    }

    /// Counts the connection in its client's history: good above
    /// `positive`, bad below zero.
    fn disconnect() {
        let config = Config::load();
        if config.skips() || notes::get(Scope::Connection, SCORE).is_none() {
            return;
        }
        give_awards(&config);
        let score = score();
        let good = score > config.settings.number("positive", 3.0);
        if good || score < 0.0 {
            for (_, key) in history_keys() {
                update_history(&config, &key, |h| if good { h.0 += 1 } else { h.1 += 1 });
            }
        }
        waraka_plugin::info!("karma: {} ended with {}", session::peer_ip(), summary());
    }
}

/// The score and its reasons, for the header field and the log:
/// `score=-3; history=1; pass=spf; fail=dns-list.listed,deny:dns-list`.
fn summary() -> String {
    let mut parts = vec![format!("score={}", points_text(score()))];
    for (name, key) in [("history", HISTORY), ("pass", PASSED), ("fail", FAILED)] {
        if let Some(value) = notes::get(Scope::Connection, key) {
            parts.push(format!("{name}={value}"));
        }
    }
    parts.join("; ")
}

waraka_plugin::export!(Karma);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn award_lines_read_like_the_documentation() {
        let award = parse_award(3, "spf ", "-3 if equals fail").unwrap();
        assert_eq!((award.number, award.note.as_str(), award.points), (3, "spf", -3.0));
        assert!(award.condition.holds("FAIL") && !award.condition.holds("softfail"));
        let listed = parse_award(0, "dns-list.listed", "-5").unwrap();
        assert!(listed.condition.holds("zen.example"));
        for absent in ["", "false", "No", "0"] {
            assert!(!listed.condition.holds(absent), "{absent}");
        }
        let score = parse_award(0, "spamassassin.score", "-4.5 if gt 5").unwrap();
        assert_eq!(score.points, -4.5);
        assert!(score.condition.holds("7.2") && !score.condition.holds("5") && !score.condition.holds("x"));
        let low = parse_award(0, "rspamd.score", "1 if lt 0").unwrap();
        assert!(low.condition.holds("-0.5") && !low.condition.holds("0"));
        let tld = parse_award(0, "karma.sender_tld", "-2 if match ^(top|xyz)$").unwrap();
        assert!(tld.condition.holds("TOP") && !tld.condition.holds("topic"));
        let spaced = parse_award(0, "helo.checks", "-1 if equals fail: bare IP").unwrap();
        assert!(spaced.condition.holds("fail: bare ip"));
    }

    #[test]
    fn unreadable_award_lines_are_refused() {
        for text in [
            "",
            "x",
            "inf",
            "-1 when equals x",
            "-1 if",
            "-1 if equals",
            "-1 if near 3",
            "-1 if gt x",
            "1 if match (",
        ] {
            assert!(parse_award(0, "n", text).is_none(), "{text}");
        }
    }

    #[test]
    fn history_reads_missing_and_damaged_values_as_zero() {
        assert_eq!(read_history(None), (0, 0, 0));
        assert_eq!(read_history(Some(b"4 1 9")), (4, 1, 9));
        assert_eq!(read_history(Some(b"4 x")), (4, 0, 0));
        assert_eq!(history_key("2001:db8::1".parse().unwrap()), "karma:2001:db8::/64");
        assert_eq!(history_key("192.0.2.7".parse().unwrap()), "karma:192.0.2.7/32");
    }

    #[test]
    fn points_read_as_written() {
        assert_eq!(points_text(-3.0), "-3");
        assert_eq!(points_text(1.5), "1.5");
        assert_eq!(points_text(0.0), "0");
    }
}
