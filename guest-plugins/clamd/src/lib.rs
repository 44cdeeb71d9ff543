//! `clamd`: virus scanning after DATA by a ClamAV daemon, as Haraka's
//! `clamd` plugin. The host streams the message to the scanner (the
//! `antivirus` capability, `[antivirus]` in waraka.toml); this plugin decides
//! what a finding or a failure means. Settings: `config/clamd.ini`.

use waraka_plugin::antivirus::{self, ScanResult};
use waraka_plugin::{Hook, Plugin, Settings, Verdict};

const SETTINGS: &str = "clamd.ini";

struct Clamd;

impl Plugin for Clamd {
    const NAME: &'static str = "clamd";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        let settings = Settings::load(SETTINGS);
        if settings.skips_relaying(false) {
            return Verdict::Cont;
        }
        if settings.too_large_to_scan(26_214_400) {
            waraka_plugin::note_transaction("clamd.result", "skipped");
            return Verdict::Cont;
        }
        match antivirus::scan() {
            Ok(ScanResult::Clean) => {
                waraka_plugin::note_transaction("clamd.result", "clean");
                Verdict::Cont
            }
            Ok(ScanResult::Infected(names)) => {
                waraka_plugin::info!("virus found: {names}");
                waraka_plugin::note_transaction("clamd.result", "infected");
                waraka_plugin::note_transaction("clamd.virus", &names);
                if settings.bool("reject_virus", true) {
                    Verdict::deny_code(554, "5.7.0", &format!("Message is infected with {names}"))
                } else {
                    let header = settings.get("virus_header").unwrap_or_else(|| "X-Virus".into());
                    waraka_plugin::replace_header(&header, &names);
                    Verdict::Cont
                }
            }
            Err(e) => {
                waraka_plugin::error!("scan failed: {e:?}");
                waraka_plugin::note_transaction("clamd.result", "error");
                settings.on_error(true, "Unable to scan the message for viruses now, try later")
            }
        }
    }
}

waraka_plugin::export!(Clamd);
