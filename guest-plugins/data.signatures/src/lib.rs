//! `data.signatures`: refuses a message whose text holds one of the
//! strings of `config/data.signatures`, as Haraka's plugin of that name —
//! the quick way to stop a campaign that gets past everything else while
//! better rules come. The text parts are read decoded (base64,
//! quoted-printable, charsets) by the host, so an encoded copy of a
//! signature is found too; the comparison ignores case.

use waraka_plugin::{Hook, Plugin, Settings, Verdict, config};

/// The signatures, one per line (`#` starts a comment line).
const SIGNATURES: &str = "data.signatures";
const SETTINGS: &str = "data.signatures.ini";

struct DataSignatures;

/// The first of `signatures` that `text` holds, ignoring case.
fn found<'a>(text: &str, signatures: &'a [String]) -> Option<&'a str> {
    let text = text.to_lowercase();
    signatures
        .iter()
        .map(|s| s.as_str())
        .find(|s| !s.is_empty() && text.contains(&s.to_lowercase()))
}

impl Plugin for DataSignatures {
    const NAME: &'static str = "data.signatures";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        let signatures: Vec<String> = config::lines(SIGNATURES)
            .unwrap_or_default()
            .into_iter()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        if signatures.is_empty() {
            return Verdict::Cont;
        }
        let texts = Settings::load(SETTINGS).message_texts();
        match texts.iter().find_map(|t| found(&t.text, &signatures)) {
            Some(signature) => {
                waraka_plugin::info!("data.signatures: the message holds {signature:?}");
                Verdict::deny_code(554, "5.7.1", "Message refused: it matches a known spam signature")
            }
            None => Verdict::Cont,
        }
    }
}

waraka_plugin::export!(DataSignatures);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_found_in_any_case() {
        let signatures = ["Cheap Watches".to_string(), String::new()];
        assert_eq!(found("buy CHEAP watches now", &signatures), Some("Cheap Watches"));
        assert_eq!(found("cheap clocks", &signatures), None);
        assert_eq!(found("", &signatures), None, "an empty signature matches nothing");
    }
}
