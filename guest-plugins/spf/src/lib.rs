//! `spf`: SPF (RFC 7208) for the client's address before the message —
//! Haraka's `spf` plugin. At MAIL FROM the HELO name and the envelope
//! sender's domain are checked (for `<>`, RFC 7208 §2.4, the HELO name's
//! result stands for the sender's), each through the host's `authentication`
//! capability. Results go to notes (`spf.helo` on the connection, `spf` and
//! `spf.domain` on the transaction) and, after DATA, to a `Received-SPF`
//! field (§9.1). What is refused is decided at MAIL FROM from `config/spf.ini`:
//! by default a `fail` of the sender's domain (`550 5.7.23`) and a DNS
//! failure while checking it (`451 4.7.24`, never an accept by accident).
//! Relaying sessions and private or loopback clients are not checked.

use waraka_plugin::authentication::{self, Outcome, SpfCheck, SpfIdentity};
use waraka_plugin::{Address, Hook, Plugin, Scope, Settings, Verdict, message, notes, session};

const SETTINGS: &str = "spf.ini";
/// Connection notes: the HELO name's result, and the name it is for.
const HELO_NOTE: &str = "spf.helo";
const HELO_NAME_NOTE: &str = "spf.helo.name";
/// Transaction notes: the MAIL FROM identity's result and its domain.
const NOTE: &str = "spf";
const DOMAIN_NOTE: &str = "spf.domain";
/// The result of a client that was not checked.
const SKIPPED: &str = "skipped";

struct Spf;

/// Whether this client is left unchecked.
fn skipped(settings: &Settings) -> bool {
    settings.skips_relaying(true) || settings.skips_private()
}

/// Checks `identity`; a capability failure (no grant, timeout) is logged
/// and reads as `temperror`, which is never an accept unless configured.
fn check(identity: SpfIdentity) -> SpfCheck {
    authentication::check_spf(identity).unwrap_or_else(|e| {
        let which = match identity {
            SpfIdentity::Helo => "HELO name",
            SpfIdentity::MailFrom => "sender domain",
        };
        waraka_plugin::warn!("SPF check of the {which} failed: {e:?}");
        SpfCheck {
            outcome: Outcome::TempError,
            domain: String::new(),
            explanation: None,
        }
    })
}

/// The HELO name's result: checked at the first MAIL FROM after a HELO and
/// kept in connection notes for the connection's later transactions.
fn helo_result() -> SpfCheck {
    let helo = session::helo().unwrap_or_default();
    let noted = notes::get(Scope::Connection, HELO_NOTE)
        .as_deref()
        .and_then(Outcome::from_name);
    if let Some(outcome) = noted.filter(|_| notes::get(Scope::Connection, HELO_NAME_NOTE).as_deref() == Some(&helo)) {
        return SpfCheck {
            outcome,
            domain: helo,
            explanation: None,
        };
    }
    let result = check(SpfIdentity::Helo);
    if result.outcome != Outcome::TempError {
        waraka_plugin::note_connection(HELO_NOTE, result.outcome.as_str());
        waraka_plugin::note_connection(HELO_NAME_NOTE, &helo);
    }
    result
}

/// The reply for `result` of `identity` (`helo` or `mail`) when the
/// settings refuse it; `None` to go on.
fn refusal(settings: &Settings, identity: &str, result: &SpfCheck) -> Option<Verdict> {
    let outcome = result.outcome;
    let action = if outcome == Outcome::TempError {
        "defer"
    } else {
        "reject"
    };
    let key = format!("{action}_{identity}_{}", outcome.as_str());
    let default = matches!(
        (identity, outcome),
        ("mail", Outcome::Fail) | ("mail", Outcome::TempError)
    );
    if !settings.bool(&key, default) {
        return None;
    }
    let domain = &result.domain;
    let ip = session::peer_ip();
    let which = if identity == "helo" {
        "HELO name"
    } else {
        "sender domain"
    };
    Some(match outcome {
        Outcome::TempError => Verdict::denysoft_code(
            451,
            "4.7.24",
            &format!("SPF record of {which} {domain} could not be checked, try again later"),
        ),
        Outcome::PermError => Verdict::deny_code(
            550,
            "5.7.24",
            &format!("SPF record of {which} {domain} is broken (permerror)"),
        ),
        Outcome::None => Verdict::deny_code(550, "5.7.23", &format!("{which} {domain} publishes no SPF record")),
        _ => {
            let mut text = format!(
                "SPF {}: {which} {domain} does not designate {ip} as a permitted sender",
                outcome.as_str()
            );
            if let Some(explanation) = result
                .explanation
                .as_deref()
                .map(waraka_plugin::reply_safe)
                .filter(|e| !e.is_empty())
            {
                text.push_str(&format!(" ({explanation})"));
            }
            Verdict::deny_code(550, "5.7.23", &text)
        }
    })
}

impl Plugin for Spf {
    const NAME: &'static str = "spf";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Mail, Hook::DataPost];

    fn mail(sender: Address) -> Verdict {
        let settings = Settings::load(SETTINGS);
        if skipped(&settings) {
            waraka_plugin::note_transaction(NOTE, SKIPPED);
            return Verdict::Cont;
        }
        let helo = helo_result();
        let mail = if sender.is_null() {
            helo.clone()
        } else {
            check(SpfIdentity::MailFrom)
        };
        waraka_plugin::note_transaction(NOTE, mail.outcome.as_str());
        waraka_plugin::note_transaction(DOMAIN_NOTE, &mail.domain);
        let verdict = refusal(&settings, "helo", &helo).or_else(|| refusal(&settings, "mail", &mail));
        match verdict {
            Some(verdict) => {
                waraka_plugin::info!(
                    "{sender} from {}: SPF helo={} mail={} ({}): refused",
                    session::peer_ip(),
                    helo.outcome.as_str(),
                    mail.outcome.as_str(),
                    mail.domain
                );
                verdict
            }
            None => Verdict::Cont,
        }
    }

    fn data_post() -> Verdict {
        if !Settings::load(SETTINGS).bool("add_header", true) {
            return Verdict::Cont;
        }
        let Some(outcome) = notes::get(Scope::Transaction, NOTE)
            .as_deref()
            .and_then(Outcome::from_name)
        else {
            return Verdict::Cont;
        };
        let _ = message::add_header("Received-SPF", &received_spf(outcome));
        Verdict::Cont
    }
}

/// The value of a `Received-SPF` field (RFC 7208 §9.1) for this transaction.
fn received_spf(outcome: Outcome) -> String {
    let ip = session::peer_ip();
    let helo = session::helo().unwrap_or_default();
    let sender = waraka_plugin::envelope::sender()
        .map(|s| s.to_addr_spec())
        .unwrap_or_default();
    let host = session::hostname();
    let (identity, who) = if sender.is_empty() {
        ("helo", format!("postmaster@{helo}"))
    } else {
        ("mailfrom", sender.clone())
    };
    let comment = match outcome {
        Outcome::Pass => format!("domain of {who} designates {ip} as permitted sender"),
        Outcome::Fail | Outcome::SoftFail => format!("domain of {who} does not designate {ip} as permitted sender"),
        Outcome::None => "no SPF record".to_string(),
        Outcome::Neutral => format!("{ip} is neither permitted nor denied"),
        Outcome::TempError => "the SPF record could not be fetched".to_string(),
        Outcome::PermError => "the SPF record is broken".to_string(),
    };
    format!(
        "{} ({host}: {comment}) client-ip={ip}; envelope-from=\"{sender}\"; helo={helo}; identity={identity}; receiver={host};",
        outcome.as_str()
    )
}

waraka_plugin::export!(Spf);
