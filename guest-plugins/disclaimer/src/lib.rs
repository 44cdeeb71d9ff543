//! `disclaimer`: a footer — a legal disclaimer, a company signature — at
//! the end of users' outgoing mail, through the host's `mime.add-banner`
//! (Haraka's `transaction.set_banner`, Postfix's alterMIME). The text is
//! `config/disclaimer.txt`, the HTML `config/disclaimer.html` (else the
//! text with line breaks). Only relaying sessions (AUTH, the relay ACL)
//! and, when `sender_domains` is set, only senders of those domains.

use waraka_plugin::{Hook, Plugin, Settings, Verdict, config, envelope, mime, session};

struct Disclaimer;

/// Whether `domain` (the sender's) is one of `domains`, or `domains` is
/// empty (every sender).
fn sender_wanted(domains: &[String], domain: Option<&str>) -> bool {
    domains.is_empty() || domain.is_some_and(|d| domains.iter().any(|w| w.eq_ignore_ascii_case(d)))
}

/// The trimmed text of the config file `name`; `None` when it is missing
/// or empty.
fn file_text(name: &str) -> Option<String> {
    let text = config::read(name).ok().flatten()?;
    let text = text.trim_end();
    (!text.is_empty()).then(|| text.to_string())
}

impl Plugin for Disclaimer {
    const NAME: &'static str = "disclaimer";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        let settings = Settings::load("disclaimer.ini");
        if settings.bool("relaying_only", true) && !session::relaying() {
            return Verdict::Cont;
        }
        let sender = envelope::sender();
        if !sender_wanted(
            &settings.list("sender_domains"),
            sender.as_ref().map(|s| s.domain.as_str()),
        ) {
            return Verdict::Cont;
        }
        let Some(text) = file_text("disclaimer.txt") else {
            waraka_plugin::warn!("config/disclaimer.txt is missing or empty: nothing added");
            return Verdict::Cont;
        };
        match mime::add_banner(&text, file_text("disclaimer.html").as_deref()) {
            Ok(parts) => {
                waraka_plugin::info!("added to {parts} text parts");
                Verdict::Cont
            }
            Err(e) => {
                waraka_plugin::warn!("adding the disclaimer failed: {e:?}");
                settings.on_error(false, "The disclaimer could not be added, try again later")
            }
        }
    }
}

waraka_plugin::export!(Disclaimer);

#[cfg(test)]
mod tests {
    use super::sender_wanted;

    #[test]
    fn senders_of_the_listed_domains_only() {
        let domains = vec!["example.com".to_string()];
        assert!(sender_wanted(&domains, Some("Example.COM")));
        assert!(!sender_wanted(&domains, Some("other.test")));
        assert!(!sender_wanted(&domains, None), "a bounce has no domain");
        assert!(sender_wanted(&[], None), "no list: everyone");
    }
}
