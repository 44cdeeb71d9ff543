//! `milter`: shows each transaction to the mail filters (milters)
//! `config/milter.ini` names, in order, as Postfix's `smtpd_milters` do:
//! OpenDKIM, clamav-milter, rspamd's proxy, milter-greylist, MIMEDefang
//! and the like keep working when Waraka takes Postfix's place. The host
//! speaks the milter protocol (the `milter:NAME` capability). With `live`
//! (the default) each milter sees the sender at MAIL and each recipient
//! the recipient checks accepted (`rcpt-ok`), and may refuse them then;
//! after DATA it sees the message. This plugin applies what each milter
//! asks for: header fields added, changed or removed, recipients added,
//! the message quarantined (the `quarantine` note, which
//! `queue/quarantine` keeps), discarded (its `queue` hook accepts it and
//! queues it nowhere) or refused with the milter's reply.

use waraka_plugin::milter::{self, Change, Decision, HeaderField, MilterReply};
use waraka_plugin::{Address, Error, Hook, Plugin, Scope, Settings, Verdict, envelope, message, notes};

const SETTINGS: &str = "milter.ini";
/// The transaction note that marks a message a milter discarded (its
/// value is the milter's name).
const DISCARDED: &str = "milter.discarded";

struct Milter;

/// The verdict for a milter's refusal, with the default status of its
/// class when the milter gave none.
fn refusal(reply: &MilterReply, permanent: bool) -> Verdict {
    let text = waraka_plugin::reply_safe(&reply.text);
    if permanent {
        Verdict::deny_code(reply.code, reply.enhanced.as_deref().unwrap_or("5.7.1"), &text)
    } else {
        Verdict::denysoft_code(reply.code, reply.enhanced.as_deref().unwrap_or("4.7.1"), &text)
    }
}

/// Where Sendmail's `smfi_addheader` puts a field: after the last one.
const HEADER_END: u32 = u32::MAX;

/// Sets the field `index` (from 1) named `name` to `value` in its place, or
/// removes it when `value` is empty; a field that is not there is added at
/// the end of the header, as Sendmail does.
fn change_header(field: &HeaderField) -> Result<(), String> {
    let index = field.index.saturating_sub(1);
    if field.value.is_empty() {
        message::remove_header_at(&field.name, index);
        return Ok(());
    }
    let replaced = message::replace_header_at(&field.name, index, &field.value).map_err(|e| format!("{e:?}"))?;
    if !replaced {
        message::insert_header(HEADER_END, &field.name, &field.value).map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}

/// A change as the log tells it.
fn describe(change: &Change) -> String {
    match change {
        Change::AddHeader(field) => format!("added {}", field.name),
        Change::InsertHeader(field) => format!("inserted {} at {}", field.name, field.index),
        Change::ChangeHeader(field) if field.value.is_empty() => format!("removed {} #{}", field.name, field.index),
        Change::ChangeHeader(field) => format!("changed {} #{}", field.name, field.index),
        Change::AddRecipient(recipient) => format!("added recipient {recipient}"),
        Change::RemoveRecipient(recipient) => format!("removed recipient {recipient}"),
        Change::ChangeSender(sender) => format!("changed the sender to <{sender}>"),
        Change::Quarantine(reason) => format!("quarantined: {reason}"),
    }
}

/// Applies one change of milter `name`.
fn apply(name: &str, change: &Change) {
    let result = match change {
        Change::AddHeader(field) => {
            message::insert_header(HEADER_END, &field.name, &field.value).map_err(|e| format!("{e:?}"))
        }
        Change::InsertHeader(field) => {
            message::insert_header(field.index, &field.name, &field.value).map_err(|e| format!("{e:?}"))
        }
        Change::ChangeHeader(field) => change_header(field),
        Change::AddRecipient(recipient) => match Address::from_addr_spec(recipient) {
            Some(recipient) => envelope::add_recipient(&recipient).map_err(|e| format!("{e:?}")),
            None => Err(format!("{recipient:?} is not local@domain")),
        },
        Change::RemoveRecipient(recipient) => {
            let index = envelope::recipients()
                .iter()
                .position(|r| r.quoted_addr_spec().eq_ignore_ascii_case(recipient));
            match index {
                Some(index) => envelope::remove_recipient(index as u32).map_err(|e| format!("{e:?}")),
                None => Err(format!("{recipient:?} is not a recipient")),
            }
        }
        Change::ChangeSender(sender) => {
            let null = Address {
                local_part: String::new(),
                domain: String::new(),
                params: Vec::new(),
            };
            let address = if sender.is_empty() {
                Some(null)
            } else {
                Address::from_addr_spec(sender)
            };
            match address {
                Some(address) => envelope::set_sender(&address).map_err(|e| format!("{e:?}")),
                None => Err(format!("{sender:?} is not local@domain")),
            }
        }
        Change::Quarantine(reason) => {
            waraka_plugin::note_transaction("quarantine", &format!("milter {name}: {reason}"));
            Ok(())
        }
    };
    match result {
        Ok(()) => waraka_plugin::info!("milter {name}: {}", describe(change)),
        Err(e) => waraka_plugin::warn!("milter {name}: could not apply \"{}\": {e}", describe(change)),
    }
}

/// The verdict for a milter that could not be asked, as `on_error` says:
/// `None` to pass it over.
fn unavailable(settings: &Settings, name: &str, e: &Error) -> Option<Verdict> {
    waraka_plugin::error!("milter {name} failed: {e:?}");
    (settings.get("on_error").as_deref() != Some("continue"))
        .then(|| Verdict::denysoft_code(451, "4.7.1", "Message filter unavailable, try again later"))
}

/// Asks each milter about one step of a live conversation (`ask`): the
/// first refusal is the verdict; `accept` and `discard` stand for the
/// whole message, and are applied after DATA.
fn live_step(step: &str, ask: impl Fn(&str) -> Result<Option<Decision>, Error>) -> Verdict {
    let settings = Settings::load(SETTINGS);
    if !settings.bool("live", true) || settings.skips_relaying(false) {
        return Verdict::Cont;
    }
    for name in settings.list("milters") {
        match ask(&name) {
            Ok(Some(Decision::Reject(reply))) => {
                waraka_plugin::info!("milter {name}: {step} rejected: {} {}", reply.code, reply.text);
                return refusal(&reply, true);
            }
            Ok(Some(Decision::Tempfail(reply))) => {
                waraka_plugin::info!("milter {name}: {step} deferred: {} {}", reply.code, reply.text);
                return refusal(&reply, false);
            }
            Ok(_) => {}
            Err(e) => {
                if let Some(verdict) = unavailable(&settings, &name, &e) {
                    return verdict;
                }
            }
        }
    }
    Verdict::Cont
}

impl Plugin for Milter {
    const NAME: &'static str = "milter";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Mail, Hook::RcptOk, Hook::DataPost, Hook::Queue];

    fn mail(_sender: Address) -> Verdict {
        live_step("sender", milter::sender)
    }

    fn rcpt_ok(recipient: Address) -> Verdict {
        let recipient = recipient.quoted_addr_spec();
        live_step("recipient", |name| milter::recipient(name, &recipient))
    }

    fn data_post() -> Verdict {
        let settings = Settings::load(SETTINGS);
        if settings.skips_relaying(false) || settings.too_large_to_scan(u64::MAX) {
            return Verdict::Cont;
        }
        for name in settings.list("milters") {
            let outcome = match milter::check(&name) {
                Ok(outcome) => outcome,
                Err(e) => match unavailable(&settings, &name, &e) {
                    Some(verdict) => return verdict,
                    None => continue,
                },
            };
            for change in &outcome.changes {
                apply(&name, change);
            }
            match &outcome.decision {
                Decision::Accept => waraka_plugin::info!("milter {name}: accepted"),
                Decision::Discard => {
                    waraka_plugin::info!("milter {name}: discarded");
                    waraka_plugin::note_transaction(DISCARDED, &name);
                    return Verdict::Cont;
                }
                Decision::Reject(reply) => {
                    waraka_plugin::info!("milter {name}: rejected: {} {}", reply.code, reply.text);
                    return refusal(reply, true);
                }
                Decision::Tempfail(reply) => {
                    waraka_plugin::info!("milter {name}: deferred: {} {}", reply.code, reply.text);
                    return refusal(reply, false);
                }
            }
        }
        Verdict::Cont
    }

    fn queue() -> Verdict {
        match notes::get(Scope::Transaction, DISCARDED) {
            Some(name) => Verdict::ok_with(&format!("Message discarded by milter {name}")),
            None => Verdict::Cont,
        }
    }
}

waraka_plugin::export!(Milter);
