//! `queue/quarantine`: keeps a message in a quarantine directory — Haraka's
//! `queue/quarantine`. A plugin earlier in the chain asks for it with a
//! transaction note (`quarantine` by default; any value but an empty one,
//! `no`, `false` or `0`), or `all = true` quarantines every message. The
//! copy goes to `DATE/ID.eml` in the directory granted as
//! `dir:quarantine`, with the envelope on top, written and made durable by
//! the host (`files::save-message`). Then the message is accepted and goes
//! nowhere else (`action = accept`), or goes on to the next queue plugin
//! (`action = continue`: a copy is kept besides). A message the
//! administrator releases (`waraka quarantine release`) comes back with the
//! note `quarantine.released` and goes on to the next queue plugin.

use waraka_plugin::{Error, Hook, Plugin, Scope, Settings, Verdict, envelope, notes, path_segment, session};

const SETTINGS: &str = "queue/quarantine.ini";
/// The grant's name (`dir:quarantine`).
const GRANT: &str = "quarantine";

struct Quarantine;

/// The transaction note the host sets on a message `waraka quarantine
/// release` hands back to the queue: it is not kept again.
const RELEASED: &str = "quarantine.released";
/// The transaction note that tells the host the message is held, not
/// delivered: no `delivered` notice is sent until its release.
const HELD: &str = "queue.held";

/// Why this message is quarantined (`NOTE=VALUE`, or `all`), if it is.
fn reason(settings: &Settings) -> Option<String> {
    if let Some(id) = notes::get(Scope::Transaction, RELEASED) {
        waraka_plugin::info!("released from the quarantine ({id}): not kept again");
        return None;
    }
    if settings.bool("all", false) {
        return Some("all".into());
    }
    let note = settings.get("note").unwrap_or_else(|| "quarantine".into());
    let value = notes::get(Scope::Transaction, &note)?;
    let set = !matches!(value.trim().to_ascii_lowercase().as_str(), "" | "no" | "false" | "0");
    set.then(|| format!("{note}={value}"))
}

/// The lines on top of the stored copy: why, and the envelope to release
/// it with (each address with its ESMTP parameters, so that a released
/// message keeps its DSN requests).
fn prefix(reason: &str) -> String {
    let sender = envelope::sender().map(|s| s.to_path()).unwrap_or_else(|| "<>".into());
    let recipients: Vec<String> = envelope::recipients().iter().map(|r| r.to_path()).collect();
    let clean = |text: &str| text.chars().filter(|c| !c.is_control()).collect::<String>();
    format!(
        "X-Quarantine-Reason: {}\r\nX-Envelope-From: {}\r\nX-Envelope-To: {}\r\n",
        clean(reason),
        clean(&sender),
        clean(&recipients.join(", "))
    )
}

/// Stores the message under `day/`, creating that directory on first use;
/// the path stored.
fn store(day: &str, id: &str, prefix: &str) -> Result<String, Error> {
    let (temp, path) = (format!("{day}/.{id}.tmp"), format!("{day}/{id}.eml"));
    waraka_plugin::save_message_making(GRANT, &temp, &path, prefix.as_bytes(), &[day.to_string()]).map(|_| path)
}

impl Plugin for Quarantine {
    const NAME: &'static str = "queue/quarantine";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Queue];

    fn queue() -> Verdict {
        let settings = Settings::load(SETTINGS);
        let Some(reason) = reason(&settings) else {
            return Verdict::Cont;
        };
        let id = path_segment(&session::transaction_id().unwrap_or_else(session::connection_id));
        let day = waraka_plugin::today_utc().to_string();
        match store(&day, &id, &prefix(&reason)) {
            Ok(path) => {
                waraka_plugin::info!("quarantined ({reason}) as {path}");
                if settings.get("action").as_deref() == Some("continue") {
                    Verdict::Cont
                } else {
                    // Held, not delivered: the release sends the delivered notice.
                    waraka_plugin::note_transaction(HELD, &format!("quarantine {day}/{id}"));
                    Verdict::ok_with(&format!("Message quarantined as {id}"))
                }
            }
            Err(e) => {
                waraka_plugin::error!("quarantine ({reason}) failed: {e:?}");
                Verdict::denysoft_code(451, "4.3.0", "Quarantine unavailable, try again later")
            }
        }
    }
}

waraka_plugin::export!(Quarantine);
