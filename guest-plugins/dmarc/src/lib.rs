//! `dmarc`: applies the author domain's DMARC policy (RFC 7489/9989) after
//! DATA. Mail that fails DMARC under `p=reject` is refused (`550 5.7.1`);
//! under `p=quarantine` it is marked with a header and the transaction note
//! `quarantine` (or refused or accepted, as configured); a DNS failure that
//! leaves the result open is a temporary failure, never an accept. The
//! verification is the host's (the `authentication` capability, shared with
//! `auth-results`). Settings: `config/dmarc.ini`.

use waraka_plugin::authentication::{Outcome, Policy};
use waraka_plugin::{Hook, Plugin, Scope, Settings, Verdict, message, notes, session};

const SETTINGS: &str = "dmarc.ini";

struct Dmarc;

/// What to do with a message that fails DMARC.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Reject,
    Quarantine,
    Accept,
}

/// The action for a failing message under `policy`, as configured.
fn action(settings: &Settings, policy: Policy) -> Action {
    let configured = |key: &str, default: &str| match settings.get(key).as_deref().unwrap_or(default) {
        "reject" => Action::Reject,
        "accept" => Action::Accept,
        _ => Action::Quarantine,
    };
    match policy {
        Policy::Reject => configured("on_reject", "reject"),
        Policy::Quarantine => configured("on_quarantine", "quarantine"),
        Policy::None => Action::Accept,
    }
}

fn set_note(key: &str, value: &str) {
    if let Err(e) = notes::set(Scope::Transaction, key, value) {
        waraka_plugin::warn!("could not set note {key}: {e:?}");
    }
}

fn quarantine(settings: &Settings, domain: &str) -> Verdict {
    let header = settings
        .get("quarantine_header")
        .unwrap_or_else(|| "X-Quarantine".into());
    message::remove_header(&header);
    let value = format!("dmarc; domain={domain}");
    if let Err(e) = message::add_header(&header, &value) {
        waraka_plugin::warn!("could not add {header}: {e:?}");
    }
    set_note("quarantine", "dmarc");
    Verdict::Cont
}

impl Plugin for Dmarc {
    const NAME: &'static str = "dmarc";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        let settings = Settings::load(SETTINGS);
        if session::relaying() && settings.bool("skip_relaying", true) {
            return Verdict::Cont;
        }
        let tempfail = || Verdict::denysoft_code(451, "4.4.3", "Unable to verify the sender's DMARC policy, try later");
        let Some(results) = waraka_plugin::verified_sender() else {
            return if settings.get("on_error").as_deref() == Some("continue") {
                Verdict::Cont
            } else {
                tempfail()
            };
        };
        let domain = results.dmarc_domain.as_str();
        set_note("dmarc", results.dmarc.as_str());
        match results.dmarc {
            Outcome::Fail => {
                let chosen = action(&settings, results.dmarc_policy);
                waraka_plugin::info!(
                    "DMARC fails for {domain} (policy {}): {chosen:?}",
                    results.dmarc_policy.as_str()
                );
                match chosen {
                    Action::Reject => Verdict::deny_code(
                        550,
                        "5.7.1",
                        &format!("Message rejected by the DMARC policy of {domain}"),
                    ),
                    Action::Quarantine => quarantine(&settings, domain),
                    Action::Accept => Verdict::Cont,
                }
            }
            Outcome::TempError if settings.get("on_temperror").as_deref() != Some("accept") => {
                waraka_plugin::info!("DMARC for {domain} could not be decided (DNS)");
                tempfail()
            }
            _ => Verdict::Cont,
        }
    }
}

waraka_plugin::export!(Dmarc);
