//! `srs`: bounces of forwarded mail find their way back. Mail this server
//! forwards to another domain (an alias whose target is elsewhere) leaves
//! from a sender rewritten by the Sender Rewriting Scheme (`[srs]` in
//! `waraka.toml`), such as `SRS0=HHHH=TT=origin.example=alice@mx.example`.
//! A bounce or an auto-reply comes back to that address; this plugin has
//! the host check its hash and age, rewrites the recipient to the original
//! sender and has the message forwarded there. A forged, altered or expired
//! SRS address gets `550 5.1.1`. Other recipients pass on untouched.

use waraka_plugin::{Address, Error, Hook, Plugin, Verdict, envelope, outbound_queue};

const SETTINGS: &str = "srs.ini";

struct Srs;

impl Plugin for Srs {
    const NAME: &'static str = "srs";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Rcpt];

    fn rcpt(recipient: Address) -> Verdict {
        let unusable = |why: String| {
            waraka_plugin::error!("cannot forward the bounce to {recipient}: {why}");
            Verdict::denysoft_code(451, "4.3.0", "Bounce address cannot be served now, try later")
        };
        let original = match outbound_queue::reverse_srs(&recipient.to_addr_spec()) {
            Ok(None) => return Verdict::Cont,
            Ok(Some(original)) => original,
            Err(Error::Invalid(why)) => {
                waraka_plugin::info!("{recipient} refused: {why}");
                return Verdict::deny_code(550, "5.1.1", &format!("Invalid bounce address: {why}"));
            }
            Err(Error::NotGranted) => return unusable("the srs plugin needs the outbound-queue grant".into()),
            Err(e) => return unusable(format!("{e:?}")),
        };
        let null_sender_only = waraka_plugin::setting_bool(SETTINGS, "null_sender_only", false);
        if null_sender_only && envelope::sender().is_some_and(|s| !s.is_null()) {
            waraka_plugin::info!("{recipient} refused: only bounces (MAIL FROM:<>) may use it");
            return Verdict::deny_code(550, "5.7.1", "Only bounces may be sent to this address");
        }
        let Some(target) = Address::from_addr_spec(&original).map(|a| Address {
            params: recipient.params.clone(),
            ..a
        }) else {
            return unusable(format!("the host gave {original:?}, not an address"));
        };
        if let Err(e) = waraka_plugin::replace_candidate(&target) {
            return unusable(format!("cannot rewrite the recipient: {e:?}"));
        }
        if let Err(e) = outbound_queue::forward_recipient(&original) {
            return unusable(format!("{e:?}"));
        }
        waraka_plugin::info!("{recipient} is the forwarded mail of {original}: forwarding there");
        Verdict::ok()
    }
}

waraka_plugin::export!(Srs);

#[cfg(test)]
mod tests {
    use super::Address;

    #[test]
    fn the_original_splits_at_its_last_at_sign() {
        let srs0 = Address::from_addr_spec("SRS0=ab12=JX=origin.example=alice@First.example").unwrap();
        assert_eq!(
            (srs0.local_part.as_str(), srs0.domain.as_str()),
            ("SRS0=ab12=JX=origin.example=alice", "first.example")
        );
        assert!(Address::from_addr_spec("alice").is_none());
        assert!(Address::from_addr_spec("@origin.example").is_none());
    }
}
