//! `rspamd`: spam scanning after DATA by rspamd, as Haraka's `rspamd`
//! plugin. The host sends the message and its envelope to rspamd (the
//! `spamfilter` capability, `[spamfilter]` in waraka.toml); this plugin turns
//! rspamd's action into a reply or header edits. Settings:
//! `config/rspamd.ini`.

use waraka_plugin::spamfilter::SpamReport;
use waraka_plugin::{Hook, Plugin, Settings, Verdict};

const SETTINGS: &str = "rspamd.ini";

struct Rspamd;

/// `Yes, score=6.50 required=15.00 action="add header"`: the report as a
/// header value.
fn status(report: &SpamReport, spam: bool) -> String {
    format!(
        "{}, score={:.2} required={:.2} action=\"{}\"",
        if spam { "Yes" } else { "No" },
        report.score,
        report.required_score,
        report.action
    )
}

/// rspamd's suggested reply text, or `default`; kept to one printable line.
fn reply_text(report: &SpamReport, default: &str) -> String {
    report
        .smtp_message
        .as_deref()
        .filter(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_graphic() || c == ' '))
        .unwrap_or(default)
        .to_string()
}

/// What the plugin does with a report.
fn act(settings: &Settings, report: &SpamReport) -> Verdict {
    let mark = |spam: bool| {
        if settings.bool("add_headers", true) {
            waraka_plugin::replace_header("X-Spam-Status", &status(report, spam));
            if spam {
                waraka_plugin::replace_header("X-Spam", "Yes");
            }
        }
    };
    match report.action.as_str() {
        "reject" if settings.bool("reject", true) => {
            Verdict::deny_code(550, "5.7.1", &reply_text(report, "Message rejected as spam"))
        }
        "soft reject" if settings.bool("soft_reject", true) => {
            Verdict::denysoft_code(451, "4.7.1", &reply_text(report, "Try again later"))
        }
        "greylist" if settings.get("greylist").as_deref() == Some("tempfail") => {
            Verdict::denysoft_code(451, "4.7.1", &reply_text(report, "Greylisted, please try again later"))
        }
        "rewrite subject" => {
            if settings.bool("rewrite_subject", true)
                && let Some(subject) = &report.subject
            {
                waraka_plugin::replace_header("Subject", subject);
            }
            mark(true);
            Verdict::Cont
        }
        "add header" | "reject" | "soft reject" => {
            mark(true);
            Verdict::Cont
        }
        _ => {
            mark(false);
            Verdict::Cont
        }
    }
}

impl Plugin for Rspamd {
    const NAME: &'static str = "rspamd";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        let settings = Settings::load(SETTINGS);
        let report = match waraka_plugin::scan_for_spam(&settings, 20_971_520) {
            Ok(report) => report,
            Err(verdict) => return verdict,
        };
        let symbols: Vec<&str> = report.symbols.iter().map(|(name, _)| name.as_str()).collect();
        waraka_plugin::info!(
            "action=\"{}\" score={:.2}/{:.2} symbols={}",
            report.action,
            report.score,
            report.required_score,
            symbols.join(",")
        );
        waraka_plugin::note_transaction("rspamd.action", &report.action);
        waraka_plugin::note_transaction("rspamd.score", &format!("{:.2}", report.score));
        act(&settings, &report)
    }
}

waraka_plugin::export!(Rspamd);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_header_and_reply_text_read_well() {
        let report = SpamReport {
            action: "add header".into(),
            score: 6.5,
            required_score: 15.0,
            symbols: vec![],
            smtp_message: Some("Gtube pattern".into()),
            subject: None,
        };
        assert_eq!(
            status(&report, true),
            "Yes, score=6.50 required=15.00 action=\"add header\""
        );
        assert_eq!(reply_text(&report, "x"), "Gtube pattern");
        let odd = SpamReport {
            smtp_message: Some("two\r\nlines".into()),
            ..report
        };
        assert_eq!(reply_text(&odd, "Message rejected as spam"), "Message rejected as spam");
    }
}
