//! `bcc`: copies of mail for an archive or a supervisor — Postfix's
//! `always_bcc`, `sender_bcc_maps` and `recipient_bcc_maps`. Each accepted
//! recipient brings in the blind copies `config/bcc.ini` names for every
//! message, for its sender (the address, else its domain) and for the
//! recipient (likewise), once per transaction. A copy's recipient asks for
//! no delivery notices (`NOTIFY=NEVER`), so its failure never tells the
//! sender that it exists; a copy for another domain leaves through the
//! outbound queue, and a message whose copy cannot be made is not taken
//! (`451`), so nothing escapes the archive.

use waraka_plugin::{Address, Hook, Param, Plugin, Settings, Verdict, envelope, host_list, session};

const SETTINGS: &str = "bcc.ini";

struct Bcc;

/// The copies `settings` ask for: `always`, `sender.ADDRESS` or
/// `sender.DOMAIN` for `sender`, `recipient.ADDRESS` or `recipient.DOMAIN`
/// for `recipient` (the address wins over its domain); each may list
/// several addresses.
fn copies(settings: &Settings, sender: Option<&str>, recipient: &str) -> Vec<String> {
    let by = |prefix: &str, address: &str| -> Vec<String> {
        let address = address.to_ascii_lowercase();
        let domain = address.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
        [address, domain]
            .iter()
            .filter(|key| !key.is_empty())
            .find_map(|key| settings.get(&format!("{prefix}.{key}")))
            .map(|list| waraka_plugin::split_list(&list))
            .unwrap_or_default()
    };
    let mut out = settings.list("always");
    out.extend(sender.map(|s| by("sender", s)).unwrap_or_default());
    out.extend(by("recipient", recipient));
    out.sort();
    out.dedup();
    out
}

fn unusable(copy: &str, why: &str) -> Verdict {
    waraka_plugin::error!("bcc: no copy for {copy}: {why}");
    Verdict::denysoft_code(451, "4.3.0", "The message cannot be archived now, try later")
}

impl Plugin for Bcc {
    const NAME: &'static str = "bcc";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::RcptOk];

    fn rcpt_ok(recipient: Address) -> Verdict {
        let settings = Settings::load(SETTINGS);
        let sender = waraka_plugin::real_sender().map(|s| s.to_addr_spec());
        let present: Vec<String> = envelope::recipients()
            .iter()
            .map(|r| r.to_addr_spec().to_ascii_lowercase())
            .collect();
        for copy in copies(&settings, sender.as_deref(), &recipient.to_addr_spec()) {
            if present.contains(&copy.to_ascii_lowercase()) {
                continue;
            }
            let Some(address) = Address::from_addr_spec(&copy).map(|a| Address {
                params: vec![Param {
                    key: "NOTIFY".into(),
                    value: Some("NEVER".into()),
                }],
                ..a
            }) else {
                waraka_plugin::warn!("bcc: {copy:?} in {SETTINGS} is not an address");
                continue;
            };
            if let Err(refusal) = waraka_plugin::add_recipient_or(&address, |e| unusable(&copy, &format!("{e:?}"))) {
                return refusal;
            }
            // Relayed mail leaves by domain anyway; inbound mail's copy for
            // another domain is forwarded.
            if !session::relaying()
                && let Err(why) = host_list::forward_if_remote(&address)
            {
                return unusable(&copy, &why);
            }
            waraka_plugin::info!("bcc: {copy} gets a copy (for {recipient})");
        }
        Verdict::Cont
    }
}

waraka_plugin::export!(Bcc);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        Settings::from_lines(&text.lines().map(str::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn copies_come_from_always_the_sender_and_the_recipient() {
        let config = settings(
            "always = archive@example.com\nsender.example.com = out@example.com\n\
             sender.boss@example.com = audit@example.com, archive@example.com\nrecipient.example.org = in@example.com",
        );
        assert_eq!(
            copies(&config, Some("x@other.test"), "y@else.test"),
            ["archive@example.com"]
        );
        assert_eq!(
            copies(&config, Some("Bob@Example.com"), "y@example.org"),
            ["archive@example.com", "in@example.com", "out@example.com"]
        );
        assert_eq!(
            copies(&config, Some("boss@example.com"), "y@else.test"),
            ["archive@example.com", "audit@example.com"],
            "the address wins over its domain"
        );
        assert_eq!(copies(&settings(""), None, "y@else.test"), Vec::<String>::new());
    }
}
