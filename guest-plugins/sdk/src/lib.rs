//! The Rust SDK for Waraka plugins.
//!
//! A plugin is a type implementing [`Plugin`], whose every hook defaults to
//! `cont`, plus one [`export!`] line:
//!
//! ```ignore
//! use waraka_plugin::{Address, Hook, Plugin, Verdict};
//!
//! struct NoBob;
//!
//! impl Plugin for NoBob {
//!     const NAME: &'static str = "rcpt_to.no_bob";
//!     const HOOKS: &'static [Hook] = &[Hook::Rcpt];
//!
//!     fn rcpt(recipient: Address) -> Verdict {
//!         if recipient.local_part == "bob" {
//!             Verdict::deny("Bob left")
//!         } else {
//!             Verdict::Cont
//!         }
//!     }
//! }
//!
//! waraka_plugin::export!(NoBob);
//! ```
//!
//! Host imports are re-exported as modules: [`log`], [`notes`], [`config`],
//! [`session`], [`envelope`] and [`message`], and the capabilities a plugin
//! must be granted in `waraka.toml`: [`kv`], [`dns`], [`blobstore`],
//! [`files`], [`sql`], [`forward`], [`authentication`], [`dkim`],
//! [`antivirus`], [`spamfilter`] and [`milter`].
#![warn(missing_docs)]

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "outbound-plugin",
        pub_export_macro: true,
        default_bindings_module: "waraka_plugin::bindings",
        export_macro_name: "export_bindings",
        generate_all,
    });
}

pub mod auth_results;
pub mod dns_list;
mod hook;
pub mod host_list;
pub mod ldap_filter;
pub mod next_hop;
#[cfg(feature = "passwords")]
pub mod passwords;
pub mod regexp_table;
pub mod subaddress;
mod verdict;

pub use bindings::exports::waraka::plugin::outbound_hooks::{Delivery, NextHop, RecipientFailure, SendDecision};
pub use bindings::waraka::plugin::types::{
    Address, AuthAttempt, Denial, Error, Param, PluginInfo, Reply, Scope, Verdict,
};
pub use bindings::waraka::plugin::{
    antivirus, authentication, blobstore, config, dkim, dns, envelope, files, forward, geoip, http, imap, kv, ldap,
    log, message, milter, mime, notes, outbound_queue, p0f, sasl, session, spamfilter, sql,
};
pub use hook::Hook;
pub use regex_lite::Regex;

/// A Waraka plugin. Every hook defaults to `cont` (or to nothing, for
/// notifications); implement the ones listed in [`Plugin::HOOKS`].
pub trait Plugin {
    /// The plugin's name as shown by `waraka plugin list`.
    const NAME: &'static str;
    /// The plugin's version.
    const VERSION: &'static str = "0.1.0";
    /// The hooks this plugin implements; the host calls no others.
    const HOOKS: &'static [Hook];

    /// A client connected.
    fn connect() -> Verdict {
        Verdict::Cont
    }
    /// `HELO host`.
    fn helo(_host: String) -> Verdict {
        Verdict::Cont
    }
    /// `EHLO host`.
    fn ehlo(_host: String) -> Verdict {
        Verdict::Cont
    }
    /// EHLO keywords to add.
    fn capabilities() -> Vec<String> {
        Vec::new()
    }
    /// Credentials from `AUTH`.
    fn auth(_attempt: AuthAttempt) -> Verdict {
        Verdict::Cont
    }
    /// A verb the core does not know.
    fn unrecognized_command(_verb: String, _args: String) -> Verdict {
        Verdict::Cont
    }
    /// `MAIL FROM`.
    fn mail(_sender: Address) -> Verdict {
        Verdict::Cont
    }
    /// `RCPT TO`.
    fn rcpt(_recipient: Address) -> Verdict {
        Verdict::Cont
    }
    /// A recipient was accepted.
    fn rcpt_ok(_recipient: Address) -> Verdict {
        Verdict::Cont
    }
    /// `DATA`, before the 354.
    fn data() -> Verdict {
        Verdict::Cont
    }
    /// The message has arrived.
    fn data_post() -> Verdict {
        Verdict::Cont
    }
    /// The message was too large.
    fn max_data_exceeded() -> Verdict {
        Verdict::Cont
    }
    /// Store a message durably.
    fn queue() -> Verdict {
        Verdict::Cont
    }
    /// Store a relayed message for delivery.
    fn queue_outbound() -> Verdict {
        Verdict::Cont
    }
    /// The message was accepted.
    fn queue_ok(_queue_id: String) {}
    /// The transaction ended.
    fn reset_transaction() {}
    /// The client is gone.
    fn disconnect() {}
    /// A chain is about to reject; `ok` overrides.
    fn deny(_denial: Denial) -> Verdict {
        Verdict::Cont
    }

    /// Outbound: before each delivery attempt of a queue entry.
    fn send_email(_delivery: Delivery) -> SendDecision {
        SendDecision::Deliver
    }
    /// Outbound: next hops for the entry instead of routes and MX lookup.
    fn get_mx(_delivery: Delivery) -> Option<Vec<NextHop>> {
        None
    }
    /// Outbound: recipients failed temporarily; `Some(seconds)` replaces the wait.
    fn deferred(_delivery: Delivery, _failures: Vec<RecipientFailure>, _retry_in: u32) -> Option<u32> {
        None
    }
    /// Outbound: recipients failed for good; `true` suppresses the DSN.
    fn bounce(_delivery: Delivery, _failures: Vec<RecipientFailure>) -> bool {
        false
    }
    /// Outbound: `host` accepted `recipients` with `reply`.
    fn delivered(_delivery: Delivery, _recipients: Vec<String>, _host: String, _reply: String) {}
}

/// Bridges a [`Plugin`] to the generated export trait. Used by [`export!`].
#[doc(hidden)]
pub struct Adapter<P>(core::marker::PhantomData<P>);

impl<P: Plugin> bindings::exports::waraka::plugin::hooks::Guest for Adapter<P> {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: P::NAME.to_string(),
            version: P::VERSION.to_string(),
            hooks: P::HOOKS.iter().map(|h| h.name().to_string()).collect(),
        }
    }
    fn connect() -> Verdict {
        P::connect()
    }
    fn helo(host: String) -> Verdict {
        P::helo(host)
    }
    fn ehlo(host: String) -> Verdict {
        P::ehlo(host)
    }
    fn capabilities() -> Vec<String> {
        P::capabilities()
    }
    fn auth(attempt: AuthAttempt) -> Verdict {
        P::auth(attempt)
    }
    fn unrecognized_command(verb: String, args: String) -> Verdict {
        P::unrecognized_command(verb, args)
    }
    fn mail(sender: Address) -> Verdict {
        P::mail(sender)
    }
    fn rcpt(recipient: Address) -> Verdict {
        P::rcpt(recipient)
    }
    fn rcpt_ok(recipient: Address) -> Verdict {
        P::rcpt_ok(recipient)
    }
    fn data() -> Verdict {
        P::data()
    }
    fn data_post() -> Verdict {
        P::data_post()
    }
    fn max_data_exceeded() -> Verdict {
        P::max_data_exceeded()
    }
    fn queue() -> Verdict {
        P::queue()
    }
    fn queue_outbound() -> Verdict {
        P::queue_outbound()
    }
    fn queue_ok(queue_id: String) {
        P::queue_ok(queue_id)
    }
    fn reset_transaction() {
        P::reset_transaction()
    }
    fn disconnect() {
        P::disconnect()
    }
    fn deny(denial: Denial) -> Verdict {
        P::deny(denial)
    }
}

impl<P: Plugin> bindings::exports::waraka::plugin::outbound_hooks::Guest for Adapter<P> {
    fn send_email(delivery: Delivery) -> SendDecision {
        P::send_email(delivery)
    }
    fn get_mx(delivery: Delivery) -> Option<Vec<NextHop>> {
        P::get_mx(delivery)
    }
    fn deferred(delivery: Delivery, failures: Vec<RecipientFailure>, retry_in: u32) -> Option<u32> {
        P::deferred(delivery, failures, retry_in)
    }
    fn bounce(delivery: Delivery, failures: Vec<RecipientFailure>) -> bool {
        P::bounce(delivery, failures)
    }
    fn delivered(delivery: Delivery, recipients: Vec<String>, host: String, reply: String) {
        P::delivered(delivery, recipients, host, reply)
    }
}

impl Address {
    /// Whether this is the null reverse-path `<>`.
    pub fn is_null(&self) -> bool {
        self.local_part.is_empty() && self.domain.is_empty()
    }

    /// `local@domain` (or `local` without a domain, or empty for `<>`).
    pub fn to_addr_spec(&self) -> String {
        if self.domain.is_empty() {
            self.local_part.clone()
        } else {
            format!("{}@{}", self.local_part, self.domain)
        }
    }

    /// `local@domain` with the local part quoted when it is not a dot-atom
    /// (`"john doe"@example.com`), as SMTP writes it.
    pub fn quoted_addr_spec(&self) -> String {
        let atext = |c: char| c.is_ascii_alphanumeric() || !c.is_ascii() || "!#$%&'*+-/=?^_`{|}~".contains(c);
        let dot_atom = self
            .local_part
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext));
        if dot_atom || self.local_part.is_empty() {
            return self.to_addr_spec();
        }
        let escaped = self.local_part.replace('\\', "\\\\").replace('"', "\\\"");
        if self.domain.is_empty() {
            format!("\"{escaped}\"")
        } else {
            format!("\"{escaped}\"@{}", self.domain)
        }
    }

    /// `<path>` and the ESMTP parameters after it (`<a@x.test> NOTIFY=NEVER`),
    /// as `MAIL FROM` and `RCPT TO` carry them.
    pub fn to_path(&self) -> String {
        let mut text = format!("<{}>", self.quoted_addr_spec());
        for param in &self.params {
            text.push(' ');
            text.push_str(&param.key);
            if let Some(value) = &param.value {
                text.push('=');
                text.push_str(value);
            }
        }
        text
    }

    /// `local@domain` as an address without parameters, the domain in
    /// lower case; the local part is what comes before the last `@`.
    /// `None` without a local part or a domain.
    pub fn from_addr_spec(text: &str) -> Option<Address> {
        let (local_part, domain) = text.rsplit_once('@')?;
        (!local_part.is_empty() && !domain.is_empty()).then(|| Address {
            local_part: local_part.to_string(),
            domain: domain.to_ascii_lowercase(),
            params: Vec::new(),
        })
    }

    /// The value of an ESMTP parameter (`SIZE`, `BODY`…), case-insensitive.
    pub fn param(&self, key: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|p| p.key.eq_ignore_ascii_case(key))
            .map(|p| p.value.as_deref())
    }
}

impl AuthAttempt {
    /// What a plugin that checks passwords answers before looking at this
    /// attempt: a refusal when it asks to act as someone else (an
    /// authorisation identity other than the user), `cont` (to the next
    /// `auth` plugin) for a mechanism other than PLAIN and LOGIN; `None`
    /// when the password is for it to check.
    pub fn precheck(&self) -> Option<Verdict> {
        if self.authzid.as_deref().is_some_and(|z| z != self.user) {
            return Some(Verdict::deny("Authorisation identity not allowed"));
        }
        (!matches!(self.mechanism.as_str(), "PLAIN" | "LOGIN")).then_some(Verdict::Cont)
    }
}

impl core::fmt::Display for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "<{}>", self.quoted_addr_spec())
    }
}

/// The `key = value` lines of one config file (Haraka-style INI lines;
/// `[sections]` and comment lines are ignored), read once: load it at the
/// start of a hook and ask it as often as needed.
#[derive(Clone, Debug, Default)]
pub struct Settings(Vec<(String, String)>);

impl Settings {
    /// The settings of the config file `name`; empty when it is missing or unreadable.
    pub fn load(name: &str) -> Settings {
        Settings::from_lines(&config::lines(name).unwrap_or_default())
    }

    /// The settings of a config file's `lines`, already read.
    pub fn from_lines(lines: &[String]) -> Settings {
        Settings(
            lines
                .iter()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
        )
    }

    /// The value of `key` (the first one), `None` when missing.
    pub fn get(&self, key: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    /// Every setting whose key starts with `prefix`, in file order (a key
    /// may repeat), as (the key without the prefix, value).
    pub fn prefixed<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0
            .iter()
            .filter_map(move |(k, v)| Some((k.strip_prefix(prefix)?, v.as_str())))
    }

    /// A comma-separated list setting whose entries are names in `known`:
    /// their values, in order; `default` when the setting is missing. An
    /// unknown name is an error that lists the known ones.
    pub fn choices<T: Copy>(&self, key: &str, known: &[(&str, T)], default: &[T]) -> Result<Vec<T>, String> {
        let Some(text) = self.get(key) else {
            return Ok(default.to_vec());
        };
        text.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| {
                known.iter().find(|(k, _)| *k == name).map(|(_, v)| *v).ok_or_else(|| {
                    let names = known.iter().map(|(k, _)| *k).collect::<Vec<_>>();
                    format!("unknown {key} entry {name:?} (one of {})", names.join(", "))
                })
            })
            .collect()
    }

    /// The key/value store named by the `store` setting (grant `kv:NAME`);
    /// `default` when missing.
    pub fn store(&self) -> String {
        self.get("store").unwrap_or_else(|| "default".into())
    }

    /// A number setting; `default` when missing or not a number.
    pub fn number<T: core::str::FromStr>(&self, key: &str, default: T) -> T {
        self.get(key).and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    /// Whether the connected client is loopback or private (see
    /// [`is_private_ip`]) and the `check_private` setting (off when missing)
    /// leaves such clients alone.
    pub fn skips_private(&self) -> bool {
        client_is_private() && !self.bool("check_private", false)
    }

    /// The connected client's address to check: `None` when it is loopback
    /// or private and `check_private` (off when missing) leaves such clients
    /// alone, or when it cannot be read.
    pub fn client_to_check(&self) -> Option<std::net::IpAddr> {
        let ip = session::peer_ip().parse().ok()?;
        (!is_private_ip(ip) || self.bool("check_private", false)).then_some(ip)
    }

    /// Whether the session is relaying (AUTH or relay ACL) and the
    /// `skip_relaying` setting (`default` when missing) leaves such mail alone.
    pub fn skips_relaying(&self, default: bool) -> bool {
        session::relaying() && self.bool("skip_relaying", default)
    }

    /// Whether the message is larger than the `max_size` setting (`default`
    /// bytes when missing), logged as left unscanned.
    pub fn too_large_to_scan(&self, default: u64) -> bool {
        let (size, max_size) = (message::size(), self.number("max_size", default));
        if size > max_size {
            info!("not scanned: {size} bytes is over max_size {max_size}");
        }
        size > max_size
    }

    /// The message's text parts (see `mime::texts`), at most the
    /// `max_bytes` setting of text (1 MiB when missing); none, logged, when
    /// they cannot be read (a content check then finds nothing).
    pub fn message_texts(&self) -> Vec<mime::Text> {
        mime::texts(self.number("max_bytes", 1_048_576u32))
            .inspect_err(|e| warn!("reading the message's text failed: {e:?}"))
            .unwrap_or_default()
    }

    /// What a plugin answers when the service it needs failed, as its
    /// `on_error` setting says: `continue` (`cont`, the message goes on) or
    /// `tempfail` (`451 4.3.0 TEXT`, the client tries again); when the
    /// setting is neither, `tempfail` if `tempfail_by_default`.
    pub fn on_error(&self, tempfail_by_default: bool, text: &str) -> Verdict {
        let tempfail = match self.get("on_error").as_deref() {
            Some("tempfail") => true,
            Some("continue") => false,
            _ => tempfail_by_default,
        };
        if tempfail {
            Verdict::denysoft_code(451, "4.3.0", text)
        } else {
            Verdict::Cont
        }
    }

    /// A duration setting (see [`parse_duration`]); `default` when missing or
    /// not a duration.
    pub fn duration(&self, key: &str, default: std::time::Duration) -> std::time::Duration {
        self.get(key).as_deref().and_then(parse_duration).unwrap_or(default)
    }

    /// A comma-separated setting as its trimmed, non-empty items; empty when missing.
    pub fn list(&self, key: &str) -> Vec<String> {
        split_list(&self.get(key).unwrap_or_default())
    }

    /// A yes/no setting (`true`/`yes`/`on`/`1` or `false`/`no`/`off`/`0`,
    /// case-insensitive); `default` when missing or not one of those.
    pub fn bool(&self, key: &str, default: bool) -> bool {
        match self.get(key).map(|v| v.to_ascii_lowercase()).as_deref() {
            Some("true" | "yes" | "on" | "1") => true,
            Some("false" | "no" | "off" | "0") => false,
            _ => default,
        }
    }
}

/// A duration as Haraka's settings write it: a number and a unit `s`, `m`,
/// `h` or `d` (`90s`, `5m`, `36d`); a bare number is seconds, a bare unit
/// is one of it (`h` = one hour). `None` for anything else.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = if number.is_empty() { 1 } else { number.parse().ok()? };
    let seconds = match unit.trim() {
        "s" | "" if !text.is_empty() => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(number.checked_mul(seconds)?))
}

/// A config file's text when it was last parsed, and what it gave.
type Parsed = (String, std::rc::Rc<dyn std::any::Any>);

thread_local! {
    /// Per config file name, its last parse.
    static PARSED: std::cell::RefCell<std::collections::HashMap<String, Parsed>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// What `parse` makes of the whole text of the config file `name` (empty
/// when it is missing; logged and empty when unreadable), made again only
/// when the text changed: a warm instance reads the file at every hook (one
/// string across the sandbox's edge) but compiles its rules — regular
/// expressions, awards — once per change.
pub fn parsed_config<T: 'static>(name: &str, parse: impl FnOnce(&str) -> T) -> std::rc::Rc<T> {
    let text = match config::read(name) {
        Ok(text) => text.unwrap_or_default(),
        Err(e) => {
            warn!("{name} unreadable: {e:?}");
            String::new()
        }
    };
    PARSED.with(|parsed| {
        let mut parsed = parsed.borrow_mut();
        if let Some((seen, value)) = parsed.get(name)
            && *seen == text
            && let Ok(value) = value.clone().downcast::<T>()
        {
            return value;
        }
        let value = std::rc::Rc::new(parse(&text));
        parsed.insert(name.to_string(), (text, value.clone()));
        value
    })
}

/// The lines of a config file's `text` as `config::lines` gives them:
/// trimmed, without blank lines and `#` comments. For a plugin that reads a
/// large file with `config::read` (one string across the sandbox's edge
/// instead of one per line) and keeps what it made of it while unchanged.
pub fn config_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// The trimmed, non-empty items of a comma-separated list (`a, b,,c`).
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// The case-insensitive regular expressions of the config file `name`, one
/// per line, each compiled with `wrap` around it (`"{}"` as it is, `"^(?:{})$"`
/// to match whole); a line that is not a regular expression is logged and
/// skipped. Empty when the file is missing.
pub fn patterns(name: &str, wrap: &str) -> Vec<Regex> {
    config::lines(name)
        .unwrap_or_default()
        .iter()
        .filter_map(|line| {
            match regex_lite::RegexBuilder::new(&wrap.replace("{}", line))
                .case_insensitive(true)
                .build()
            {
                Ok(re) => Some(re),
                Err(e) => {
                    warn!("{name}: skipping {line:?}: {e}");
                    None
                }
            }
        })
        .collect()
}

/// The value of `key = value` in the config file `name`; `None` when
/// missing. Reads the file: for several keys, use [`Settings::load`].
pub fn setting(name: &str, key: &str) -> Option<String> {
    Settings::load(name).get(key)
}

/// Makes `raw` safe as one segment of a file path or object key: `/`, `\`
/// and control characters become `_`, leading dots are dropped, and an empty
/// result is `_` (so never `.` or `..`).
pub fn path_segment(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    match cleaned.trim_start_matches('.') {
        "" => "_".into(),
        trimmed => trimmed.to_string(),
    }
}

/// A yes/no setting of the config file `name` (see [`Settings::bool`]).
pub fn setting_bool(name: &str, key: &str, default: bool) -> bool {
    Settings::load(name).bool(key, default)
}

impl authentication::Outcome {
    /// RFC 8601's name of the result: `pass`, `fail`, `softfail`, `neutral`,
    /// `temperror`, `permerror` or `none`.
    pub fn as_str(&self) -> &'static str {
        use authentication::Outcome;
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::SoftFail => "softfail",
            Outcome::Neutral => "neutral",
            Outcome::TempError => "temperror",
            Outcome::PermError => "permerror",
            Outcome::None => "none",
        }
    }

    /// The result [`as_str`](Self::as_str) names; `None` for any other text.
    pub fn from_name(name: &str) -> Option<Self> {
        use authentication::Outcome;
        Some(match name {
            "pass" => Outcome::Pass,
            "fail" => Outcome::Fail,
            "softfail" => Outcome::SoftFail,
            "neutral" => Outcome::Neutral,
            "temperror" => Outcome::TempError,
            "permerror" => Outcome::PermError,
            "none" => Outcome::None,
            _ => return None,
        })
    }
}

impl authentication::Policy {
    /// The policy's name in a DMARC record: `none`, `quarantine` or `reject`.
    pub fn as_str(&self) -> &'static str {
        match self {
            authentication::Policy::None => "none",
            authentication::Policy::Quarantine => "quarantine",
            authentication::Policy::Reject => "reject",
        }
    }
}

/// `text` fit for a reply line: printable ASCII and spaces only, at most
/// 200 characters (a DNS list's TXT reason, an SPF `exp=` explanation).
pub fn reply_safe(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(200)
        .collect()
}

/// `files::save-message`, and when a directory on its paths is missing
/// (`not-found`), `files::make-dirs` of each of `folders` in order and one
/// more try: a queue plugin's first delivery into a new folder.
pub fn save_message_making(dir: &str, temp: &str, path: &str, prefix: &[u8], folders: &[String]) -> Result<u64, Error> {
    let save = || files::save_message(dir, temp, path, prefix);
    match save() {
        Err(Error::NotFound) => {
            for folder in folders {
                files::make_dirs(dir, folder)?;
            }
            save()
        }
        other => other,
    }
}

/// Today's date in UTC as a `YYYYMMDD` number (20261204).
pub fn today_utc() -> u32 {
    date_of_day(days_since_epoch())
}

/// Days since 1970-01-01, UTC.
pub fn days_since_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        / 86_400
}

/// The transaction's envelope sender, unless it is the null sender `<>`
/// (a bounce) or there is none yet.
pub fn real_sender() -> Option<Address> {
    envelope::sender().filter(|s| !s.is_null())
}

/// Whether the transaction is a bounce: its sender is the null sender `<>`.
pub fn is_bounce() -> bool {
    envelope::sender().is_some_and(|s| s.is_null())
}

/// Adds `recipient` to the transaction (`envelope::add_recipient`); when it
/// cannot be, the refusal to answer: `452 4.5.3` at the recipient limit,
/// else what `failed` makes of the error.
pub fn add_recipient_or(recipient: &Address, failed: impl FnOnce(Error) -> Verdict) -> Result<(), Verdict> {
    envelope::add_recipient(recipient).map_err(|e| match e {
        Error::Limit(limit) => Verdict::denysoft_code(452, "4.5.3", &format!("Too many recipients: {limit}")),
        other => failed(other),
    })
}

/// Replaces the recipient the `rcpt` hook is deciding on (the last one
/// while it runs) with `recipient`: a rewritten address (an alias, a tag
/// taken off) that later plugins and the queue see instead.
pub fn replace_candidate(recipient: &Address) -> Result<(), Error> {
    let index = envelope::recipients().len().saturating_sub(1) as u32;
    envelope::set_recipient(index, recipient)
}

/// The `YYYYMMDD` number of the day `days` after 1970-01-01 (Howard
/// Hinnant's civil-from-days).
fn date_of_day(days: u64) -> u32 {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year * 10000 + month * 100 + day) as u32
}

/// Scans the current message with the server's spam scanner (the
/// `spamfilter` capability) as a scanning plugin's `settings` say: a
/// relaying client (`skip_relaying`) or a message over `max_size` (default
/// `default_max_size` bytes) is not scanned, and a failed scan is logged and
/// then ignored or, with `on_error = tempfail`, `451 4.3.0`. `Err` holds
/// the verdict to return when there is no report.
pub fn scan_for_spam(settings: &Settings, default_max_size: u64) -> Result<spamfilter::SpamReport, Verdict> {
    scan_for_spam_as(settings, default_max_size, None)
}

/// [`scan_for_spam`], with the preferences of `user` when given (spamd's
/// per-user settings).
pub fn scan_for_spam_as(
    settings: &Settings,
    default_max_size: u64,
    user: Option<&str>,
) -> Result<spamfilter::SpamReport, Verdict> {
    if settings.skips_relaying(true) || settings.too_large_to_scan(default_max_size) {
        return Err(Verdict::Cont);
    }
    let report = match user {
        Some(user) => spamfilter::check_for(user),
        None => spamfilter::check(),
    };
    report.map_err(|e| {
        error!("scan failed: {e:?}");
        settings.on_error(false, "Unable to scan the message for spam now, try later")
    })
}

/// The addresses of an address field's value (`From`, `Reply-To`, `To`):
/// each `<addr>`, or each bare `addr` of a comma-separated list (quoted
/// display names may hold commas).
pub fn header_addresses(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let (mut current, mut quoted) = (String::new(), false);
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    items.push(current);
    items
        .iter()
        .map(|item| match (item.rfind('<'), item.rfind('>')) {
            (Some(open), Some(close)) if open < close => item[open + 1..close].trim().to_string(),
            _ => item.trim().to_string(),
        })
        .filter(|address| !address.is_empty())
        .collect()
}

/// Replaces every header field `name` (such as a copy the client sent) with
/// one field of `value` on top; a refused edit is logged.
pub fn replace_header(name: &str, value: &str) {
    message::remove_header(name);
    if let Err(e) = message::add_header(name, value) {
        warn!("could not add {name}: {e:?}");
    }
}

/// Sets the transaction note `key` for later plugins; a failure (the
/// transaction's notes are full) is logged, since a note is never worth
/// refusing mail over.
pub fn note_transaction(key: &str, value: &str) {
    note(Scope::Transaction, key, value);
}

/// Sets the connection note `key` for later plugins; a failure is logged,
/// as for [`note_transaction`].
pub fn note_connection(key: &str, value: &str) {
    note(Scope::Connection, key, value);
}

fn note(scope: Scope, key: &str, value: &str) {
    if let Err(e) = notes::set(scope, key, value) {
        warn!("could not set note {key}: {e:?}");
    }
}

/// The SPF/DKIM/DMARC results of the current message (the `authentication`
/// capability); `None`, logged with the reason, when verification could not
/// run (no grant, timeout, no message yet).
pub fn verified_sender() -> Option<authentication::Results> {
    authentication::verify()
        .inspect_err(|e| warn!("sender authentication failed: {e:?}"))
        .ok()
}

/// Whether the host `name` carries the IPv4 address `ip` the way names of
/// dynamic ranges do (`1-2-3-4.dsl.example`, `4.3.2.1.pool.example`,
/// `c0a80001.example`): a name given to an address, not to a mail server.
pub fn names_address(name: &str, ip: std::net::IpAddr) -> bool {
    let std::net::IpAddr::V4(v4) = ip else {
        return false;
    };
    if name.starts_with('[') || name.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    let [a, b, c, d] = v4.octets();
    let name = name.to_ascii_lowercase();
    let hex = format!("{a:02x}{b:02x}{c:02x}{d:02x}");
    [[a, b, c, d], [d, c, b, a]].iter().any(|octets| {
        let pattern = octets.iter().map(u8::to_string).collect::<Vec<_>>().join("[._x-]");
        regex_lite::Regex::new(&format!(r"(^|[^0-9]){pattern}([^0-9]|$)")).is_ok_and(|re| re.is_match(&name))
    }) || name.contains(&hex)
}

/// Whether `ip` is an address no public list or DNS knows: private (RFC 1918,
/// unique local), loopback, link-local or unspecified.
pub fn is_private_ip(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

/// Whether the connected client's address is private (see [`is_private_ip`]).
pub fn client_is_private() -> bool {
    session::peer_ip().parse().is_ok_and(is_private_ip)
}

/// The network of `ip` that per-client records are kept for, as
/// `ADDRESS/PREFIX`: the address cut to `v4_prefix` or `v6_prefix` bits
/// (senders retry from addresses nearby; an IPv6 client usually holds a /64).
pub fn network_of(ip: std::net::IpAddr, v4_prefix: u8, v6_prefix: u8) -> String {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4) & u32::MAX.checked_shl(32 - u32::from(v4_prefix.min(32))).unwrap_or(0);
            format!("{}/{}", Ipv4Addr::from(bits), v4_prefix.min(32))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & u128::MAX.checked_shl(128 - u32::from(v6_prefix.min(128))).unwrap_or(0);
            format!("{}/{}", Ipv6Addr::from(bits), v6_prefix.min(128))
        }
    }
}

/// Whether `ip` is inside `range`: a CIDR range (`192.0.2.0/24`,
/// `2001:db8::/32`) or a single address. Never across address families.
pub fn ip_in_range(ip: std::net::IpAddr, range: &str) -> bool {
    use std::net::IpAddr;
    let (net, bits) = match range.split_once('/') {
        Some((net, bits)) => (net, bits.trim().parse::<u32>().ok()),
        None => (range, None),
    };
    let Ok(net) = net.trim().parse::<IpAddr>() else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// Logs a formatted line at info level: `info!("saw {}", x)`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Info, &format!($($arg)*)) };
}

/// Logs a formatted line at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Warn, &format!($($arg)*)) };
}

/// Logs a formatted line at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Debug, &format!($($arg)*)) };
}

/// Logs a formatted line at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Error, &format!($($arg)*)) };
}

/// Exports a [`Plugin`] implementation as the component's hooks.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        type __WarakaExport = $crate::Adapter<$plugin>;
        $crate::bindings::export_bindings!(__WarakaExport with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::{
        Address, Param, Settings, date_of_day, header_addresses, ip_in_range, network_of, parse_duration, reply_safe,
    };
    use std::time::Duration;

    #[test]
    fn paths_quote_local_parts_and_keep_parameters() {
        let mut address = Address::from_addr_spec("john \"j\" doe@Example.com").unwrap();
        assert_eq!(address.quoted_addr_spec(), r#""john \"j\" doe"@example.com"#);
        address.params = vec![
            Param {
                key: "NOTIFY".into(),
                value: Some("SUCCESS,FAILURE".into()),
            },
            Param {
                key: "SMTPUTF8".into(),
                value: None,
            },
        ];
        assert_eq!(
            address.to_path(),
            r#"<"john \"j\" doe"@example.com> NOTIFY=SUCCESS,FAILURE SMTPUTF8"#
        );
        let plain = Address::from_addr_spec("a.b+c@x.test").unwrap();
        assert_eq!(
            (plain.to_path(), plain.to_string()),
            ("<a.b+c@x.test>".into(), "<a.b+c@x.test>".into())
        );
        let null = Address {
            local_part: String::new(),
            domain: String::new(),
            params: vec![],
        };
        assert_eq!(null.to_path(), "<>");
    }

    #[test]
    fn explanations_lose_control_characters_and_length() {
        assert_eq!(reply_safe("see\r\n550 http://x"), "see550 http://x");
        assert_eq!(reply_safe(&"a".repeat(500)).len(), 200);
    }

    #[test]
    fn days_become_calendar_dates() {
        assert_eq!(date_of_day(0), 19700101);
        assert_eq!(date_of_day(11_016), 20000229, "a leap day");
        assert_eq!(date_of_day(20_791), 20261204);
    }

    #[test]
    fn address_fields_give_every_address() {
        assert_eq!(header_addresses("Bob <bob@example.org>"), ["bob@example.org"]);
        assert_eq!(
            header_addresses("\"Doe, Jane\" <jane@a.test>, plain@b.test"),
            ["jane@a.test", "plain@b.test"]
        );
        assert_eq!(header_addresses(" "), Vec::<String>::new());
    }

    #[test]
    fn durations_read_like_haraka() {
        let cases = [
            ("90", Some(90)),
            ("90s", Some(90)),
            (" 5m ", Some(300)),
            ("h", Some(3600)),
            ("36d", Some(36 * 86_400)),
            ("", None),
            ("5w", None),
            ("m5", None),
            ("99999999999999999999d", None),
        ];
        for (text, seconds) in cases {
            assert_eq!(parse_duration(text), seconds.map(Duration::from_secs), "{text:?}");
        }
    }

    #[test]
    fn ranges_match_v4_and_v6() {
        let ip = |s: &str| s.parse().unwrap();
        assert!(ip_in_range(ip("192.0.2.7"), "192.0.2.0/24"));
        assert!(!ip_in_range(ip("192.0.3.7"), "192.0.2.0/24"));
        assert!(ip_in_range(ip("127.0.0.1"), "127.0.0.1"));
        assert!(ip_in_range(ip("10.1.2.3"), "0.0.0.0/0"));
        assert!(ip_in_range(ip("2001:db8::1"), "2001:db8::/32"));
        assert!(!ip_in_range(ip("2001:db8::1"), "192.0.2.0/24"));
        assert!(!ip_in_range(ip("192.0.2.7"), "not an address"));
    }

    #[test]
    fn clients_are_grouped_by_network() {
        let ip = |s: &str| s.parse().unwrap();
        assert_eq!(network_of(ip("192.0.2.77"), 24, 64), "192.0.2.0/24");
        assert_eq!(network_of(ip("192.0.2.77"), 32, 64), "192.0.2.77/32");
        assert_eq!(network_of(ip("192.0.2.77"), 0, 64), "0.0.0.0/0");
        assert_eq!(network_of(ip("2001:db8:1:2:3:4:5:6"), 24, 64), "2001:db8:1:2::/64");
    }

    #[test]
    fn prefixed_settings_keep_their_order_and_repeats() {
        let lines = [
            "award.spf = 1 if equals pass",
            "store = x",
            "award.spf = -3 if equals fail",
        ]
        .map(String::from);
        let settings = Settings::from_lines(&lines);
        let awards: Vec<_> = settings.prefixed("award.").collect();
        assert_eq!(awards, [("spf", "1 if equals pass"), ("spf", "-3 if equals fail")]);
    }
}
