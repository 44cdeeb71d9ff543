//! `auth-results`: SPF, DKIM and DMARC verification of inbound mail (after
//! DATA), recorded in an `Authentication-Results` field (RFC 8601) and in
//! transaction notes for later plugins (`dmarc`, queues). The checks run in
//! the host (the `authentication` capability, built on the `mail-auth`
//! crate); this plugin decides what to do with them. Settings:
//! `config/auth-results.ini`.

use waraka_plugin::auth_results::authserv_id;
use waraka_plugin::authentication::{self, ArcChain, Outcome, Results};
use waraka_plugin::{Hook, Plugin, Settings, Verdict, message};

const SETTINGS: &str = "auth-results.ini";

/// The header field this plugin writes and guards.
const FIELD: &str = "Authentication-Results";

struct AuthResults;

/// `pass example.com, fail other.test`: each DKIM signature's result and domain.
fn dkim_summary(results: &Results) -> String {
    let each: Vec<String> = results
        .dkim
        .iter()
        .map(|s| format!("{} {}", s.outcome.as_str(), s.domain))
        .collect();
    if each.is_empty() {
        "none".into()
    } else {
        each.join(", ")
    }
}

/// Removes the fields that claim to come from `ours` (compared without case)
/// and were therefore forged or left from a loop (RFC 8601 §5); returns how many.
fn remove_forged(ours: &str) -> u32 {
    let mut removed = 0;
    for (index, value) in message::header(FIELD).iter().enumerate().rev() {
        let claimed = authserv_id(value).is_some_and(|id| id.eq_ignore_ascii_case(ours));
        if claimed && message::remove_header_at(FIELD, index as u32) {
            removed += 1;
        }
    }
    removed
}

/// `pass (forwarder.test, list.test)`: the chain's result and its sealers, oldest first.
fn arc_summary(arc: &ArcChain) -> String {
    if arc.hops.is_empty() {
        return arc.outcome.as_str().to_string();
    }
    let sealers: Vec<&str> = arc.hops.iter().map(|hop| hop.sealer.as_str()).collect();
    format!("{} ({})", arc.outcome.as_str(), sealers.join(", "))
}

/// The transaction notes `auth-results.*` that later plugins read.
fn note(results: &Results, arc: &ArcChain) {
    let entries = [
        ("auth-results.arc", arc.outcome.as_str().to_string()),
        ("auth-results.spf", results.spf.as_str().to_string()),
        ("auth-results.spf-domain", results.spf_domain.clone()),
        ("auth-results.dkim", dkim_summary(results)),
        ("auth-results.dmarc", results.dmarc.as_str().to_string()),
        ("auth-results.dmarc-domain", results.dmarc_domain.clone()),
        ("auth-results.dmarc-policy", results.dmarc_policy.as_str().to_string()),
    ];
    for (key, value) in entries {
        waraka_plugin::note_transaction(key, &value);
    }
}

impl Plugin for AuthResults {
    const NAME: &'static str = "auth-results";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        let settings = Settings::load(SETTINGS);
        if settings.skips_relaying(true) {
            return Verdict::Cont;
        }
        let Some(results) = waraka_plugin::verified_sender() else {
            return settings.on_error(false, "Unable to verify the sender now, try later");
        };
        let arc = authentication::verify_arc().unwrap_or(ArcChain {
            outcome: Outcome::None,
            hops: Vec::new(),
        });
        waraka_plugin::info!(
            "spf={} ({}) dkim={} arc={} dmarc={} ({}, policy {})",
            results.spf.as_str(),
            results.spf_domain,
            dkim_summary(&results),
            arc_summary(&arc),
            results.dmarc.as_str(),
            results.dmarc_domain,
            results.dmarc_policy.as_str()
        );
        note(&results, &arc);
        if settings.bool("remove_forged", true)
            && let Some(ours) = authserv_id(&results.header)
        {
            let removed = remove_forged(&ours);
            if removed > 0 {
                waraka_plugin::info!("removed {removed} {FIELD} field(s) claiming to be from {ours}");
            }
        }
        if settings.bool("add_header", true)
            && let Err(e) = message::add_header(FIELD, &results.header)
        {
            waraka_plugin::warn!("could not add Authentication-Results: {e:?}");
        }
        if results.spf == Outcome::Fail && settings.bool("reject_spf_fail", false) {
            let reason = format!("SPF check failed for {}", results.spf_domain);
            return Verdict::deny_code(550, "5.7.23", &reason);
        }
        Verdict::Cont
    }
}

waraka_plugin::export!(AuthResults);
