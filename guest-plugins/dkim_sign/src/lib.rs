//! `dkim_sign`: DKIM-signs (RFC 6376) the mail relaying clients send, at
//! `queue-outbound`, for the author's (`From:`) domain, so that receivers'
//! DMARC checks find an aligned signature. The host signs with the key in
//! the instance's `dkim/DOMAIN/` (the `dkim` capability); this plugin picks
//! the domain. Settings: `config/dkim_sign.ini`.

use waraka_plugin::{Error, Hook, Plugin, Settings, Verdict, dkim, envelope, message};

const SETTINGS: &str = "dkim_sign.ini";

struct DkimSign;

/// The domain of the first address in a `From:` value (`Name <a@b>`, `a@b`,
/// `a@b (comment)`), lower-cased.
fn author_domain(from: &str) -> Option<String> {
    let address = match (from.find('<'), from.find('>')) {
        (Some(open), Some(close)) if open < close => &from[open + 1..close],
        _ => from.split([',', ' ', '(']).find(|word| word.contains('@'))?,
    };
    let domain = address.rsplit_once('@')?.1.trim().trim_end_matches('.');
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

/// The domains to sign for, in order: the configured identity's (`From:` or
/// the envelope sender's; the host also tries its parents), then
/// `fallback_domain`.
fn signing_domains(settings: &Settings) -> Vec<String> {
    let identity = match settings.get("identity").as_deref() {
        Some("envelope") => envelope::sender().map(|a| a.domain.to_ascii_lowercase()),
        _ => message::header("From").first().and_then(|from| author_domain(from)),
    };
    let mut domains: Vec<String> = identity.into_iter().collect();
    if let Some(fallback) = settings.get("fallback_domain").filter(|d| !d.is_empty()) {
        domains.push(fallback.to_ascii_lowercase());
    }
    domains
}

impl Plugin for DkimSign {
    const NAME: &'static str = "dkim_sign";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::QueueOutbound];

    fn queue_outbound() -> Verdict {
        let settings = Settings::load(SETTINGS);
        let domains = signing_domains(&settings);
        for domain in &domains {
            match dkim::sign(domain) {
                Ok(signer) => {
                    waraka_plugin::info!("signed for {} with selector {}", signer.domain, signer.selector);
                    waraka_plugin::note_transaction("dkim_sign.domain", &signer.domain);
                    return Verdict::Cont;
                }
                Err(Error::NotFound) | Err(Error::Invalid(_)) => continue,
                Err(e) => {
                    waraka_plugin::error!("signing for {domain} failed: {e:?}");
                    return settings.on_error(true, "Unable to sign the message now, try later");
                }
            }
        }
        waraka_plugin::info!("not signed: no key for {}", domains.join(", "));
        Verdict::Cont
    }
}

waraka_plugin::export!(DkimSign);

#[cfg(test)]
mod tests {
    use super::author_domain;

    #[test]
    fn the_author_domain_is_read_from_the_first_address() {
        let cases = [
            ("Ann <ann@Example.COM>", Some("example.com")),
            ("ann@example.com", Some("example.com")),
            ("ann@example.com (Ann)", Some("example.com")),
            (
                "\"Doe, Ann\" <ann@mail.example.com.>, bob@other.test",
                Some("mail.example.com"),
            ),
            ("undisclosed", None),
            ("Ann <ann@>", None),
        ];
        for (from, expected) in cases {
            assert_eq!(author_domain(from).as_deref(), expected, "{from:?}");
        }
    }
}
