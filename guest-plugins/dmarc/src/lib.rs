//! `dmarc`: applies the author domain's DMARC policy (RFC 7489/9989) after
//! DATA. Mail that fails DMARC under `p=reject` is refused (`550 5.7.1`);
//! under `p=quarantine` it is marked with a header and the transaction note
//! `quarantine` (or refused or accepted, as configured); a DNS failure that
//! leaves the result open is a temporary failure, never an accept. A failure
//! is forgiven when an intact ARC chain (RFC 8617) was last sealed by a
//! forwarder the administrator trusts and that forwarder saw DMARC pass. The
//! verification is the host's (the `authentication` capability, shared with
//! `auth-results`). Settings: `config/dmarc.ini`.

use waraka_plugin::auth_results::method_result;
use waraka_plugin::authentication::{self, ArcChain, Outcome, Policy};
use waraka_plugin::{Hook, Plugin, Settings, Verdict};

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

/// The trusted sealer whose ARC set vouches for the message: the chain
/// validates, its newest set was sealed by a domain in `trusted` and that
/// hop recorded `dmarc=pass` (it received the message before a change, such
/// as a mailing list's subject tag, broke the author's signature).
fn vouching_sealer(chain: &ArcChain, trusted: &[String]) -> Option<String> {
    if chain.outcome != Outcome::Pass {
        return None;
    }
    let newest = chain.hops.last()?;
    let is_trusted = trusted.iter().any(|t| t.eq_ignore_ascii_case(&newest.sealer));
    (is_trusted && method_result(&newest.results, "dmarc").as_deref() == Some("pass")).then(|| newest.sealer.clone())
}

fn quarantine(settings: &Settings, domain: &str) -> Verdict {
    let header = settings
        .get("quarantine_header")
        .unwrap_or_else(|| "X-Quarantine".into());
    waraka_plugin::replace_header(&header, &format!("dmarc; domain={domain}"));
    waraka_plugin::note_transaction("quarantine", "dmarc");
    Verdict::Cont
}

impl Plugin for Dmarc {
    const NAME: &'static str = "dmarc";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        let settings = Settings::load(SETTINGS);
        if settings.skips_relaying(true) {
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
        waraka_plugin::note_transaction("dmarc", results.dmarc.as_str());
        match results.dmarc {
            Outcome::Fail => {
                let trusted = settings.list("trusted_arc_sealers");
                let vouched = if trusted.is_empty() {
                    None
                } else {
                    authentication::verify_arc()
                        .ok()
                        .and_then(|chain| vouching_sealer(&chain, &trusted))
                };
                if let Some(sealer) = vouched {
                    waraka_plugin::info!("DMARC fails for {domain}, accepted: trusted ARC sealer {sealer} saw it pass");
                    waraka_plugin::note_transaction("dmarc-override", &format!("arc {sealer}"));
                    return Verdict::Cont;
                }
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

#[cfg(test)]
mod tests {
    use super::vouching_sealer;
    use waraka_plugin::authentication::{ArcChain, ArcHop, Outcome};

    fn chain(outcome: Outcome, hops: &[(&str, &str)]) -> ArcChain {
        ArcChain {
            outcome,
            hops: hops
                .iter()
                .map(|(sealer, results)| ArcHop {
                    sealer: sealer.to_string(),
                    results: results.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn only_an_intact_chain_last_sealed_by_a_trusted_domain_that_saw_dmarc_pass_vouches() {
        let trusted = vec!["List.Test".to_string()];
        let saw_pass = "mx.list.test; dkim=pass header.d=a.test; dmarc=pass header.from=a.test";
        let saw_fail = "mx.list.test; dkim=fail header.d=a.test; dmarc=fail header.from=a.test";
        let vouches = |c: &ArcChain| vouching_sealer(c, &trusted);
        assert_eq!(
            vouches(&chain(Outcome::Pass, &[("list.test", saw_pass)])).as_deref(),
            Some("list.test")
        );
        assert_eq!(
            vouches(&chain(Outcome::Fail, &[("list.test", saw_pass)])),
            None,
            "broken chain"
        );
        assert_eq!(
            vouches(&chain(Outcome::Neutral, &[("list.test", saw_pass)])),
            None,
            "changed after the seal"
        );
        assert_eq!(
            vouches(&chain(Outcome::Pass, &[("list.test", saw_fail)])),
            None,
            "the hop saw a failure"
        );
        assert_eq!(
            vouches(&chain(Outcome::Pass, &[("other.test", saw_pass)])),
            None,
            "untrusted sealer"
        );
        let relayed = chain(Outcome::Pass, &[("list.test", saw_pass), ("other.test", saw_pass)]);
        assert_eq!(vouches(&relayed), None, "the newest hop is the one that vouches");
        assert_eq!(vouches(&chain(Outcome::Pass, &[])), None);
    }
}
