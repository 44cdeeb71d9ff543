//! `bounce`: defence against backscatter, as Haraka's `bounce` plugin.
//! Bounces (null sender `<>`) that no real mail server would send are
//! refused: to addresses that never send mail (`config/bounce.bad_rcpt`), to
//! more than one recipient, with a `Return-Path` that is not `<>`, or about
//! a message that never came from here (no local `Message-ID` in the bounce,
//! which is what forged bounces to a spoofed sender look like). Settings:
//! `config/bounce.ini`.

use waraka_plugin::{Address, Hook, Plugin, Settings, Verdict, config, envelope, host_list, is_bounce, message};

const SETTINGS: &str = "bounce.ini";
/// Recipients that never accept bounces, one address per line.
const BAD_RCPT: &str = "bounce.bad_rcpt";
/// How much of a bounce is searched for the bounced message's `Message-ID`.
const SEARCHED: u32 = 256 * 1024;

struct Bounce;

/// What a failed check does: refuse the bounce, or only mark it.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Reject,
    Tag,
    Off,
}

fn action(settings: &Settings, check: &str, default: Action) -> Action {
    match settings.get(check).as_deref() {
        Some("reject") => Action::Reject,
        Some("tag") => Action::Tag,
        Some("off") => Action::Off,
        _ => default,
    }
}

/// Applies a failed check: a refusal, or the header and note that mark it.
fn failed(settings: &Settings, check: &str, default: Action, reason: &str) -> Verdict {
    match action(settings, check, default) {
        Action::Reject => {
            waraka_plugin::info!("bounce refused: {reason}");
            Verdict::deny_code(550, "5.7.1", &format!("Invalid bounce: {reason}"))
        }
        Action::Tag => {
            waraka_plugin::info!("bounce marked: {reason}");
            waraka_plugin::replace_header("X-Bounce-Validation", &format!("fail ({check})"));
            waraka_plugin::note_transaction("bounce.fail", check);
            Verdict::Cont
        }
        Action::Off => Verdict::Cont,
    }
}

/// The domains of the `Message-ID` fields in `text` after its own header
/// (the bounced message's header, quoted in the bounce's body).
fn quoted_message_id_domains(text: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(text);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    body.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            if !name.trim().eq_ignore_ascii_case("Message-ID") {
                return None;
            }
            let id = value.trim().trim_start_matches('<');
            let id = id.split('>').next()?;
            let domain = id.rsplit_once('@')?.1;
            (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
        })
        .collect()
}

impl Plugin for Bounce {
    const NAME: &'static str = "bounce";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::RcptOk, Hook::Data, Hook::DataPost];

    /// After the recipient checks accepted `recipient`, wherever this plugin
    /// is in the chain.
    fn rcpt_ok(recipient: Address) -> Verdict {
        if !is_bounce() {
            return Verdict::Cont;
        }
        let settings = Settings::load(SETTINGS);
        if settings.bool("reject_all", false) {
            return Verdict::deny_code(550, "5.7.1", "No bounces are accepted here");
        }
        let address = recipient.to_addr_spec();
        let bad = config::lines(BAD_RCPT)
            .unwrap_or_default()
            .iter()
            .any(|bad| bad.eq_ignore_ascii_case(&address));
        if bad {
            return failed(
                &settings,
                "bad_rcpt",
                Action::Reject,
                &format!("{address} sends no mail"),
            );
        }
        Verdict::Cont
    }

    fn data() -> Verdict {
        if !is_bounce() || envelope::recipients().len() <= 1 {
            return Verdict::Cont;
        }
        let settings = Settings::load(SETTINGS);
        failed(
            &settings,
            "single_recipient",
            Action::Reject,
            "a bounce has a single recipient",
        )
    }

    fn data_post() -> Verdict {
        if !is_bounce() {
            return Verdict::Cont;
        }
        let settings = Settings::load(SETTINGS);
        let return_path = message::header("Return-Path");
        if return_path.iter().any(|value| value.trim() != "<>") {
            return failed(
                &settings,
                "empty_return_path",
                Action::Reject,
                "its Return-Path is not <>",
            );
        }
        if action(&settings, "non_local_msgid", Action::Tag) != Action::Off {
            let text = message::read(0, SEARCHED).unwrap_or_default();
            let domains = quoted_message_id_domains(&text);
            let local = domains.iter().any(|d| host_list::is_local(d).unwrap_or(false));
            if !local {
                let reason = if domains.is_empty() {
                    "it quotes no Message-ID".to_string()
                } else {
                    format!("it quotes no Message-ID of ours ({})", domains.join(", "))
                };
                return failed(&settings, "non_local_msgid", Action::Tag, &reason);
            }
        }
        Verdict::Cont
    }
}

waraka_plugin::export!(Bounce);

#[cfg(test)]
mod tests {
    use super::quoted_message_id_domains;

    #[test]
    fn message_ids_are_read_from_the_quoted_header_only() {
        let bounce = b"From: MAILER-DAEMON@mx.other\r\nMessage-ID: <dsn1@mx.other>\r\n\r\n\
            Your message could not be delivered.\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\n\
            From: me@example.com\r\nmessage-id:  <abc.1@Mail.Example.COM>\r\nMessage-ID: no-brackets@other.test\r\n";
        assert_eq!(quoted_message_id_domains(bounce), ["mail.example.com", "other.test"]);
        assert!(quoted_message_id_domains(b"Message-ID: <x@y>\r\n\r\nno ids here\r\n").is_empty());
    }
}
