//! `arc_seal`: ARC-seals (RFC 8617) mail that leaves this server for another
//! domain after it was received here: by default, mail an alias forwards.
//! The seal records how the message arrived (the host's SPF, DKIM, DMARC and
//! ARC checks) under this server's key, so a receiver that trusts this
//! server can still accept mail whose SPF no longer aligns after forwarding
//! (the sender is rewritten by SRS) or whose DKIM signature a list broke.
//! The host seals with the key in the instance's `dkim/DOMAIN/` (the `dkim`
//! capability). Settings: `config/arc_seal.ini`.

use waraka_plugin::{Error, Hook, Plugin, Settings, Verdict, dkim, envelope, session};

const SETTINGS: &str = "arc_seal.ini";

struct ArcSeal;

/// Whether the transaction's message is to be sealed: `seal = forwarded`
/// (default) when some recipient is forwarded elsewhere, `all` always; never
/// for a relaying client's own mail (`dkim_sign` signs that).
fn wanted(settings: &Settings, relaying: bool, forwarded: &[String]) -> bool {
    if relaying {
        return false;
    }
    match settings.get("seal").as_deref() {
        Some("all") => true,
        _ => !forwarded.is_empty(),
    }
}

impl Plugin for ArcSeal {
    const NAME: &'static str = "arc_seal";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        let settings = Settings::load(SETTINGS);
        if !wanted(&settings, session::relaying(), &envelope::forwarded()) {
            return Verdict::Cont;
        }
        let domain = settings
            .get("domain")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(session::hostname);
        match dkim::seal_arc(&domain) {
            Ok(signer) => {
                waraka_plugin::info!("ARC-sealed for {} with selector {}", signer.domain, signer.selector);
                Verdict::Cont
            }
            Err(Error::NotFound) => {
                waraka_plugin::warn!("not sealed: no key for {domain} in dkim/");
                Verdict::Cont
            }
            Err(e) => {
                waraka_plugin::error!("sealing for {domain} failed: {e:?}");
                settings.on_error(false, "Unable to seal the message now, try later")
            }
        }
    }
}

waraka_plugin::export!(ArcSeal);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_mail_is_sealed_and_a_relaying_clients_never() {
        let forwarded = ["friend@elsewhere.test".to_string()];
        let default = Settings::from_lines(&[]);
        let all = Settings::from_lines(&["seal = all".to_string()]);
        assert!(wanted(&default, false, &forwarded));
        assert!(!wanted(&default, false, &[]));
        assert!(wanted(&all, false, &[]));
        assert!(!wanted(&all, true, &forwarded));
    }
}
