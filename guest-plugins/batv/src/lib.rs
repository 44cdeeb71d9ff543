//! `batv`: Bounce Address Tag Validation (`prvs=`, draft-levine-smtp-batv).
//! Mail that local users send out leaves from a tagged sender,
//! `prvs=KDDDSSSSSS=alice@example.com`: `K` the key's number, `DDD` the day
//! the tag expires, `SSSSSS` a keyed hash of both and the address. A real
//! bounce of that mail comes back to the tagged address; a bounce of spam
//! that forged `alice@example.com` comes to the bare one, or to a tag that
//! does not check. So bounces (`MAIL FROM:<>`) to a tag that is forged or
//! expired are refused at RCPT, bounces without a tag are marked or refused
//! (`untagged_bounces`), and a good tag is taken off, so later plugins and
//! the mailbox see `alice@example.com`. Settings: `config/batv.ini`, which
//! holds the keys and no other plugin can read.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use waraka_plugin::{
    Address, Hook, Plugin, Scope, Settings, Verdict, days_since_epoch, envelope, host_list, is_bounce, notes, session,
};

const SETTINGS: &str = "batv.ini";
/// The transaction note (and header field) that marks a bounce failing
/// validation, as the `bounce` plugin marks its own.
const FAIL_NOTE: &str = "bounce.fail";
const FAIL_HEADER: &str = "X-Bounce-Validation";

struct Batv;

/// What a recipient's tag says.
#[derive(Debug, PartialEq, Eq)]
enum Tag {
    /// No `prvs=` tag.
    Untagged,
    /// A tag of ours, in date: the local part it stands for.
    Valid(String),
    /// A tag whose day has passed: the local part it stands for.
    Expired(String),
    /// A tag that none of our keys made (or not one at all).
    Forged,
}

/// `KDDDSSSSSS` for `mailbox` (`local@domain`, domain lower-cased) with key
/// number `key` and the expiry day `day` (days since 1970, modulo 1000).
fn tag_value(secret: &str, key: u8, day: u64, mailbox: &str) -> String {
    let stamp = format!("{key}{:03}", day % 1000);
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(stamp.as_bytes());
    mac.update(mailbox.as_bytes());
    let hash = mac.finalize().into_bytes();
    format!("{stamp}{:02x}{:02x}{:02x}", hash[0], hash[1], hash[2])
}

fn mailbox(address: &Address) -> String {
    format!("{}@{}", address.local_part, address.domain.to_ascii_lowercase())
}

/// The keys of the settings: `key.N = SECRET` for N in 0–9.
fn keys(settings: &Settings) -> Vec<(u8, String)> {
    settings
        .prefixed("key.")
        .filter_map(|(n, secret)| Some((n.parse::<u8>().ok().filter(|n| *n <= 9)?, secret.to_string())))
        .filter(|(_, secret)| !secret.is_empty())
        .collect()
}

/// `address` tagged with key `key`, valid until `days` after `today`.
fn sign(address: &Address, key: (u8, &str), today: u64, days: u64) -> Address {
    let value = tag_value(key.1, key.0, today + days, &mailbox(address));
    Address {
        local_part: format!("prvs={value}={}", address.local_part),
        ..address.clone()
    }
}

/// Reads the tag of `address` against `keys` on day `today`; a tag is in
/// date for `days` days after it was made.
fn check(address: &Address, keys: &[(u8, String)], today: u64, days: u64) -> Tag {
    let local = &address.local_part;
    if local.len() < 5 || !local[..5].eq_ignore_ascii_case("prvs=") {
        return Tag::Untagged;
    }
    let Some((value, original)) = local[5..].split_once('=') else {
        return Tag::Forged;
    };
    let bytes = value.as_bytes();
    if bytes.len() != 10 || original.is_empty() || !value.is_ascii() {
        return Tag::Forged;
    }
    let (Some(key), Ok(day)) = ((bytes[0] as char).to_digit(10), value[1..4].parse::<u64>()) else {
        return Tag::Forged;
    };
    let Some((_, secret)) = keys.iter().find(|(n, _)| u32::from(*n) == key) else {
        return Tag::Forged;
    };
    let mailbox = format!("{original}@{}", address.domain.to_ascii_lowercase());
    if !tag_value(secret, key as u8, day, &mailbox).eq_ignore_ascii_case(value) {
        return Tag::Forged;
    }
    let original = original.to_string();
    // The expiry day, counted from today modulo 1000: in date when it is
    // today or within the validity ahead.
    if (day + 1000 - today % 1000) % 1000 <= days {
        Tag::Valid(original)
    } else {
        Tag::Expired(original)
    }
}

fn fail(recipient: &Address, why: &str) -> Verdict {
    waraka_plugin::info!("batv: bounce to {recipient} refused: {why}");
    Verdict::deny_code(550, "5.7.1", &format!("Invalid bounce: {why}"))
}

impl Plugin for Batv {
    const NAME: &'static str = "batv";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Rcpt, Hook::DataPost];

    fn rcpt(recipient: Address) -> Verdict {
        let settings = Settings::load(SETTINGS);
        match host_list::is_local(&recipient.domain) {
            Ok(true) => {}
            Ok(false) => return Verdict::Cont,
            Err(e) => {
                waraka_plugin::warn!("batv: host_list unreadable: {e:?}");
                return Verdict::denysoft_code(451, "4.3.0", "Cannot check the recipient now, try again later");
            }
        }
        let days = settings.number("valid_days", 7u64);
        let bounce = is_bounce();
        let original = match check(&recipient, &keys(&settings), days_since_epoch(), days) {
            Tag::Valid(original) => original,
            // A person's late reply to the sender address: the tag only
            // guards against bounces.
            Tag::Expired(original) if !bounce => original,
            Tag::Expired(_) => return fail(&recipient, "the address tag has expired"),
            Tag::Forged if bounce => return fail(&recipient, "the address tag is not one of ours"),
            Tag::Forged => return Verdict::Cont,
            Tag::Untagged if !bounce => return Verdict::Cont,
            Tag::Untagged => {
                return match settings.get("untagged_bounces").as_deref().unwrap_or("tag") {
                    "reject" => fail(&recipient, "sent to an address this server never tags mail from"),
                    "off" => Verdict::Cont,
                    _ => {
                        waraka_plugin::info!("batv: bounce to {recipient} has no address tag: marked");
                        waraka_plugin::note_transaction(FAIL_NOTE, "batv");
                        Verdict::Cont
                    }
                };
            }
        };
        let original = Address {
            local_part: original,
            ..recipient.clone()
        };
        if let Err(e) = waraka_plugin::replace_candidate(&original) {
            return Verdict::denysoft_code(451, "4.3.0", &format!("Cannot rewrite the recipient: {e:?}"));
        }
        waraka_plugin::info!("batv: {recipient} is a good tag of {original}");
        Verdict::Cont
    }

    fn data_post() -> Verdict {
        if notes::get(Scope::Transaction, FAIL_NOTE).as_deref() == Some("batv") {
            waraka_plugin::replace_header(FAIL_HEADER, "fail (batv)");
        }
        let settings = Settings::load(SETTINGS);
        if !session::relaying() || !settings.bool("sign", true) {
            return Verdict::Cont;
        }
        let Some(sender) = waraka_plugin::real_sender() else {
            return Verdict::Cont;
        };
        if !matches!(check(&sender, &[], 0, 0), Tag::Untagged) {
            return Verdict::Cont;
        }
        let excluded = settings.list("exclude_senders");
        if excluded.iter().any(|e| e.eq_ignore_ascii_case(&sender.to_addr_spec())) {
            return Verdict::Cont;
        }
        match host_list::is_local(&sender.domain) {
            Ok(true) => {}
            Ok(false) => return Verdict::Cont,
            Err(e) => {
                waraka_plugin::warn!("batv: host_list unreadable, {sender} left untagged: {e:?}");
                return Verdict::Cont;
            }
        }
        let number = settings.number("sign_with", 0u8);
        let keys = keys(&settings);
        let Some((_, secret)) = keys.iter().find(|(n, _)| *n == number) else {
            waraka_plugin::error!("batv: no key.{number} in {SETTINGS}: {sender} left untagged");
            return Verdict::Cont;
        };
        let tagged = sign(
            &sender,
            (number, secret),
            days_since_epoch(),
            settings.number("valid_days", 7u64),
        );
        match envelope::set_sender(&tagged) {
            Ok(()) => waraka_plugin::debug!("batv: {sender} leaves as {tagged}"),
            Err(e) => waraka_plugin::warn!("batv: {sender} left untagged: {e:?}"),
        }
        Verdict::Cont
    }
}

waraka_plugin::export!(Batv);

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> Address {
        Address::from_addr_spec(text).unwrap()
    }

    #[test]
    fn a_signed_address_checks_until_it_expires() {
        let keys = vec![(0, "old secret".to_string()), (1, "secret".to_string())];
        let alice = address("alice@Example.com");
        let tagged = sign(&alice, (1, "secret"), 20_000, 7);
        assert!(tagged.local_part.starts_with("prvs=1007"), "{tagged}");
        let back = Address {
            domain: "example.COM".into(),
            ..tagged.clone()
        };
        for today in [20_000, 20_003, 20_007] {
            assert_eq!(check(&back, &keys, today, 7), Tag::Valid("alice".into()), "day {today}");
        }
        assert!(matches!(check(&tagged, &keys, 20_008, 7), Tag::Expired(_)));
        assert!(
            matches!(check(&tagged, &keys, 19_990, 7), Tag::Expired(_)),
            "made in the future"
        );
        assert_eq!(check(&tagged, &keys[..1], 20_000, 7), Tag::Forged, "key 1 is gone");
    }

    #[test]
    fn altered_and_malformed_tags_are_forged() {
        let keys = vec![(0, "secret".to_string())];
        let tagged = sign(&address("alice@example.com"), (0, "secret"), 20_000, 7);
        let other_user = Address {
            local_part: tagged.local_part.replace("alice", "bob"),
            ..tagged.clone()
        };
        assert_eq!(check(&other_user, &keys, 20_000, 7), Tag::Forged);
        for local in [
            "prvs=",
            "prvs=0007abcdef",
            "prvs=0007abc=alice",
            "prvs=x007abcdef=alice",
            "prvs=0007abcdef=",
        ] {
            let forged = Address {
                local_part: local.into(),
                ..tagged.clone()
            };
            assert_eq!(check(&forged, &keys, 20_000, 7), Tag::Forged, "{local}");
        }
        assert_eq!(check(&address("alice@example.com"), &keys, 20_000, 7), Tag::Untagged);
        let upper = Address {
            local_part: tagged.local_part.to_ascii_uppercase().replacen("ALICE", "alice", 1),
            ..tagged
        };
        assert!(matches!(check(&upper, &keys, 20_000, 7), Tag::Valid(_)), "{upper}");
    }

    #[test]
    fn tags_match_the_draft_and_other_implementations() {
        // HMAC-SHA1("secret", "0123" + "alice@example.com"), first three bytes.
        assert_eq!(tag_value("secret", 0, 123, "alice@example.com"), "0123bc9a9c");
        assert_eq!(
            tag_value("secret", 0, 1123, "alice@example.com"),
            "0123bc9a9c",
            "days modulo 1000"
        );
    }
}
