//! `spamassassin`: spam scanning after DATA by SpamAssassin's `spamd`, as
//! Haraka's `spamassassin` plugin. The host sends the message to the spamd
//! named in `[spamfilter]` (the `spamfilter` capability); this plugin marks
//! the message with SpamAssassin's `X-Spam-*` fields and refuses or tags it
//! by score, as `config/spamassassin.ini` says.

use waraka_plugin::spamfilter::SpamReport;
use waraka_plugin::{Hook, Plugin, Settings, Verdict, envelope, message};

const SETTINGS: &str = "spamassassin.ini";
/// The most stars `X-Spam-Level` gets.
const MAX_LEVEL: usize = 50;

struct SpamAssassin;

/// Whether spamd called the message spam.
fn is_spam(report: &SpamReport) -> bool {
    report.action != "no action"
}

/// A score threshold of the settings; `None` when unset (never).
fn threshold(settings: &Settings, key: &str) -> Option<f64> {
    settings.get(key).and_then(|v| v.parse().ok())
}

/// `Yes, score=1003.7 required=5.0 tests=GTUBE,NO_RELAYS`, as SpamAssassin
/// writes its `X-Spam-Status`.
fn status(report: &SpamReport) -> String {
    let tests: Vec<&str> = report.symbols.iter().map(|(name, _)| name.as_str()).collect();
    format!(
        "{}, score={:.1} required={:.1} tests={}",
        if is_spam(report) { "Yes" } else { "No" },
        report.score,
        report.required_score,
        tests.join(",")
    )
}

/// Whose spamd preferences apply, as `spamd_user` says: `first-recipient`
/// (the first recipient's address), another value (that user), or none.
fn spamd_user(settings: &Settings) -> Option<String> {
    match settings.get("spamd_user")?.as_str() {
        "" => None,
        "first-recipient" => envelope::recipients().first().map(|r| r.to_addr_spec()),
        name => Some(name.to_string()),
    }
}

/// One `*` per whole point of the score, at most [`MAX_LEVEL`].
fn level(score: f64) -> String {
    "*".repeat((score.max(0.0) as usize).min(MAX_LEVEL))
}

impl Plugin for SpamAssassin {
    const NAME: &'static str = "spamassassin";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        let settings = Settings::load(SETTINGS);
        let report = match waraka_plugin::scan_for_spam_as(&settings, 500_000, spamd_user(&settings).as_deref()) {
            Ok(report) => report,
            Err(verdict) => return verdict,
        };
        let status = status(&report);
        waraka_plugin::info!("{status}");
        waraka_plugin::note_transaction("spamassassin.score", &format!("{:.1}", report.score));
        waraka_plugin::note_transaction("spamassassin.spam", if is_spam(&report) { "yes" } else { "no" });
        if let Some(limit) = threshold(&settings, "reject_threshold")
            && report.score >= limit
        {
            return Verdict::deny_code(
                550,
                "5.7.1",
                &format!("Message rejected as spam (score {:.1}, limit {limit:.1})", report.score),
            );
        }
        if settings.bool("add_headers", true) {
            let flag = if is_spam(&report) { "YES" } else { "NO" };
            waraka_plugin::replace_header("X-Spam-Flag", flag);
            waraka_plugin::replace_header("X-Spam-Status", &status);
            waraka_plugin::replace_header("X-Spam-Level", &level(report.score));
        }
        if let Some(limit) = threshold(&settings, "munge_subject_threshold")
            && report.score >= limit
        {
            let prefix = settings.get("subject_prefix").unwrap_or_else(|| "*** SPAM ***".into());
            let subject = message::header("Subject").into_iter().next().unwrap_or_default();
            if !subject.starts_with(&prefix) {
                waraka_plugin::replace_header("Subject", format!("{prefix} {}", subject.trim_start()).trim_end());
            }
        }
        Verdict::Cont
    }
}

waraka_plugin::export!(SpamAssassin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_and_level_read_as_spamassassin_writes_them() {
        let report = SpamReport {
            action: "add header".into(),
            score: 1003.7,
            required_score: 5.0,
            symbols: vec![("GTUBE".into(), 1000.0), ("NO_RELAYS".into(), -0.0)],
            smtp_message: None,
            subject: None,
        };
        assert_eq!(status(&report), "Yes, score=1003.7 required=5.0 tests=GTUBE,NO_RELAYS");
        assert_eq!(level(report.score).len(), 50);
        assert_eq!(level(2.7), "**");
        assert_eq!(level(-1.0), "");
        let clean = SpamReport {
            action: "no action".into(),
            score: 2.7,
            symbols: vec![],
            ..report
        };
        assert_eq!(status(&clean), "No, score=2.7 required=5.0 tests=");
    }
}
