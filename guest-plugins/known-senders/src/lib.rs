//! `known-senders`: remembers the domains local users write to, and marks
//! mail that comes back from them, as Haraka's `known-senders`. A message
//! a relaying user sends (AUTH or the relay ACL) records each pair of its
//! sender's domain and a recipient's domain in the key/value store `store`
//! (grant `kv:NAME`) for `expiry`. A message that arrives for a local
//! domain from a domain paired with it — proven by SPF or a DKIM signature
//! that passes (the host's `authentication` capability), never by the bare
//! envelope — gets the transaction note `known-senders` (that domain), for
//! `karma` to reward and for later plugins to trust. It never refuses.
//! Settings: `config/known-senders.ini`.

use std::time::Duration;
use waraka_plugin::authentication::{Outcome, Results};
use waraka_plugin::{Address, Hook, Plugin, Settings, Verdict, envelope, host_list, kv, session};

const SETTINGS: &str = "known-senders.ini";
const NOTE: &str = "known-senders";

struct KnownSenders;

fn domain_of(address: &Address) -> Option<String> {
    let domain = address.domain.trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

/// The key of the pair (local domain, remote domain).
fn pair_key(local: &str, remote: &str) -> String {
    format!("known-senders:{local}:{remote}")
}

/// The domains the message is proven to come from: SPF's when it passed,
/// and each passing DKIM signature's, lower-cased and once each.
fn proven_domains(results: &Results) -> Vec<String> {
    let mut domains = Vec::new();
    let spf = (results.spf == Outcome::Pass).then_some(results.spf_domain.as_str());
    let dkim = results
        .dkim
        .iter()
        .filter(|s| s.outcome == Outcome::Pass)
        .map(|s| s.domain.as_str());
    for domain in spf.into_iter().chain(dkim) {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !domain.is_empty() && !domains.contains(&domain) {
            domains.push(domain);
        }
    }
    domains
}

/// Records the pairs of a relayed message in the store of `settings`: its
/// sender's domain with each recipient's that is not local.
fn record(settings: &Settings) {
    let Some(sender) = envelope::sender().as_ref().and_then(domain_of) else {
        return;
    };
    let store = settings.store();
    let expiry = settings.duration("expiry", Duration::from_secs(90 * 86_400));
    for recipient in envelope::recipients() {
        let Some(remote) = domain_of(&recipient) else { continue };
        if remote == sender || host_list::is_local(&remote).unwrap_or(true) {
            continue;
        }
        let key = pair_key(&sender, &remote);
        if let Err(e) = kv::set(&store, &key, b"1", Some(expiry.as_millis() as u64)) {
            waraka_plugin::warn!("known-senders: store {store} failed: {e:?}");
            return;
        }
    }
}

/// The first proven domain of the message that a local recipient's domain
/// has written to, by the pairs in `store`.
fn known_domain(store: &str) -> Option<String> {
    let locals: Vec<String> = envelope::recipients()
        .iter()
        .filter_map(domain_of)
        .filter(|d| host_list::is_local(d).unwrap_or(false))
        .collect();
    if locals.is_empty() {
        return None;
    }
    let proven = proven_domains(&waraka_plugin::verified_sender()?);
    for remote in &proven {
        for local in &locals {
            match kv::get(store, &pair_key(local, remote)) {
                Ok(Some(_)) => return Some(remote.clone()),
                Ok(None) => {}
                Err(e) => {
                    waraka_plugin::warn!("known-senders: store {store} failed: {e:?}");
                    return None;
                }
            }
        }
    }
    None
}

impl Plugin for KnownSenders {
    const NAME: &'static str = "known-senders";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost, Hook::QueueOk];

    fn data_post() -> Verdict {
        if session::relaying() {
            return Verdict::Cont;
        }
        if let Some(domain) = known_domain(&Settings::load(SETTINGS).store()) {
            waraka_plugin::info!("known-senders: {domain} is written to by a local domain");
            waraka_plugin::note_transaction(NOTE, &domain);
        }
        Verdict::Cont
    }

    fn queue_ok(_queue_id: String) {
        if session::relaying() {
            record(&Settings::load(SETTINGS));
        }
    }
}

waraka_plugin::export!(KnownSenders);

#[cfg(test)]
mod tests {
    use super::*;
    use waraka_plugin::authentication::{Policy, Signature};

    #[test]
    fn only_passing_checks_prove_a_domain() {
        let signature = |domain: &str, outcome| Signature {
            domain: domain.into(),
            selector: "s".into(),
            outcome,
            reason: String::new(),
        };
        let mut results = Results {
            spf: Outcome::Pass,
            spf_domain: "Partner.test.".into(),
            dkim: vec![
                signature("partner.test", Outcome::Pass),
                signature("mailer.test", Outcome::Pass),
                signature("forged.test", Outcome::Fail),
            ],
            dmarc: Outcome::Pass,
            dmarc_domain: "partner.test".into(),
            dmarc_policy: Policy::None,
            header: String::new(),
        };
        assert_eq!(proven_domains(&results), ["partner.test", "mailer.test"]);
        results.spf = Outcome::SoftFail;
        results.dkim.truncate(0);
        assert!(proven_domains(&results).is_empty());
    }
}
