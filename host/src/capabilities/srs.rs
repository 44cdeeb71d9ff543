//! The Sender Rewriting Scheme, in the format of libsrs2 and PostSRSd (so
//! that either can take over from the other with the same secret): mail
//! forwarded to another domain leaves from `SRS0=HHHH=TT=domain=local@OURS`
//! instead of the original sender, so that the receiver's SPF check sees a
//! domain that allows this server, and a bounce of it comes back here, where
//! [`Srs::reverse`] checks the hash and the age and names the original sender
//! again. `HHHH` is the start of the base64 HMAC-SHA1 of the rest (lower
//! case) under the secret; `TT` the day, 10 bits in base32. A sender that is
//! already an `SRS0` address of another forwarder becomes `SRS1`, which names
//! that forwarder, so the address does not grow with each hop.

use base64::Engine;
use ring::hmac;

/// Days since the epoch, 10 bits, as libsrs2 writes them.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Characters of the hash kept in an address.
const HASH_LENGTH: usize = 4;
/// Time stamps wrap after this many days.
const TIME_SLOTS: u64 = 1024;

/// Why an address of ours in SRS form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrsError {
    /// It does not have the fields of its kind.
    #[error("not a well-formed SRS address")]
    Malformed,
    /// Its hash was not made with any of our secrets (forged or altered).
    #[error("the SRS hash does not match")]
    BadHash,
    /// It is older than the configured age (or from the future).
    #[error("the SRS address has expired")]
    Expired,
}

/// The rewriter of one server: the domain its SRS addresses are at, the
/// secrets (the first signs, all verify: a new secret goes first while the
/// old one still reverses addresses already sent), and how many days an
/// address stays valid.
#[derive(Clone)]
pub struct Srs {
    domain: String,
    keys: Vec<hmac::Key>,
    max_age_days: u64,
}

impl std::fmt::Debug for Srs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Srs")
            .field("domain", &self.domain)
            .field("secrets", &self.keys.len())
            .field("max_age_days", &self.max_age_days)
            .finish()
    }
}

/// Today, in days since the epoch.
fn today() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

/// `day` as the two base32 characters of an address.
fn timestamp(day: u64) -> String {
    let slot = day % TIME_SLOTS;
    [BASE32[(slot >> 5) as usize], BASE32[(slot & 31) as usize]]
        .iter()
        .map(|&b| b as char)
        .collect()
}

/// The day slot `text` names, if it is two base32 characters.
fn parse_timestamp(text: &str) -> Option<u64> {
    let value = |c: u8| {
        BASE32
            .iter()
            .position(|&b| b == c.to_ascii_uppercase())
            .map(|v| v as u64)
    };
    match text.as_bytes() {
        [high, low] => Some(value(*high)? << 5 | value(*low)?),
        _ => None,
    }
}

/// Splits `text` at its first `=`.
fn field(text: &str) -> Option<(&str, &str)> {
    text.split_once('=')
}

/// `local@domain` split at its last `@`.
fn split_address(address: &str) -> Option<(&str, &str)> {
    address.rsplit_once('@').filter(|(l, d)| !l.is_empty() && !d.is_empty())
}

/// The tag (`SRS0` or `SRS1`) `local` starts with, and what follows its separator.
fn tagged<'a>(local: &'a str, tag: &str) -> Option<&'a str> {
    let head = local.get(..tag.len() + 1)?;
    (head[..tag.len()].eq_ignore_ascii_case(tag) && matches!(head.as_bytes()[tag.len()], b'=' | b'+' | b'-'))
        .then(|| &local[tag.len() + 1..])
}

impl Srs {
    /// A rewriter for addresses at `domain`; `None` without a secret.
    pub fn new(domain: &str, secrets: &[String], max_age_days: u32) -> Option<Srs> {
        let keys: Vec<hmac::Key> = secrets
            .iter()
            .map(|s| hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, s.as_bytes()))
            .collect();
        (!keys.is_empty()).then(|| Srs {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            keys,
            max_age_days: u64::from(max_age_days),
        })
    }

    /// The domain SRS addresses are made at.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The hash of `parts` under `key`, lower-cased as libsrs2 does.
    fn hash(key: &hmac::Key, parts: &[&str]) -> String {
        let mut context = hmac::Context::with_key(key);
        for part in parts {
            context.update(part.to_ascii_lowercase().as_bytes());
        }
        let text = base64::engine::general_purpose::STANDARD.encode(context.sign().as_ref());
        text[..HASH_LENGTH].to_string()
    }

    /// Whether `hash` is that of `parts` under one of the secrets (without
    /// case: some servers lower-case local parts).
    fn verify(&self, hash: &str, parts: &[&str]) -> bool {
        self.keys
            .iter()
            .any(|key| Self::hash(key, parts).eq_ignore_ascii_case(hash))
    }

    /// The sender to forward mail of `sender` (`local@domain`, empty for
    /// `<>`) from, today. `<>` and addresses at our own domain stay as
    /// they are.
    pub fn forward(&self, sender: &str) -> String {
        self.forward_on(sender, today())
    }

    /// [`Srs::forward`] on `day` (days since the epoch).
    pub fn forward_on(&self, sender: &str, day: u64) -> String {
        let Some((local, domain)) = split_address(sender) else {
            return sender.to_string();
        };
        if domain.trim_end_matches('.').eq_ignore_ascii_case(&self.domain) {
            return sender.to_string();
        }
        let key = &self.keys[0];
        // SRS1=HASH=FIRST-FORWARDER==HHH=TT=domain=local: another hop of a
        // forwarded message names the first forwarder, with its own part as is.
        if let Some(rest) = tagged(local, "SRS1")
            && let Some((_, rest)) = field(rest)
            && let Some((first_forwarder, user)) = field(rest)
        {
            let hash = Self::hash(key, &[first_forwarder, user]);
            return format!("SRS1={hash}={first_forwarder}={user}@{}", self.domain);
        }
        if tagged(local, "SRS0").is_some() {
            let user = &local[4..];
            let hash = Self::hash(key, &[domain, user]);
            return format!("SRS1={hash}={domain}={user}@{}", self.domain);
        }
        let stamp = timestamp(day);
        let hash = Self::hash(key, &[&stamp, domain, local]);
        format!("SRS0={hash}={stamp}={domain}={local}@{}", self.domain)
    }

    /// Who `address` stands for, today: `Ok(None)` when it is not an SRS
    /// address at our domain, the original sender for an `SRS0` address
    /// and the first forwarder's `SRS0` address for an `SRS1` one.
    pub fn reverse(&self, address: &str) -> Result<Option<String>, SrsError> {
        self.reverse_on(address, today())
    }

    /// [`Srs::reverse`] on `day` (days since the epoch).
    pub fn reverse_on(&self, address: &str, day: u64) -> Result<Option<String>, SrsError> {
        let Some((local, domain)) = split_address(address) else {
            return Ok(None);
        };
        if !domain.trim_end_matches('.').eq_ignore_ascii_case(&self.domain) {
            return Ok(None);
        }
        if let Some(rest) = tagged(local, "SRS0") {
            let (hash, rest) = field(rest).ok_or(SrsError::Malformed)?;
            let (stamp, rest) = field(rest).ok_or(SrsError::Malformed)?;
            let (host, user) = field(rest).ok_or(SrsError::Malformed)?;
            if host.is_empty() || user.is_empty() {
                return Err(SrsError::Malformed);
            }
            let slot = parse_timestamp(stamp).ok_or(SrsError::Malformed)?;
            if !self.verify(hash, &[stamp, host, user]) {
                return Err(SrsError::BadHash);
            }
            let age = (day % TIME_SLOTS + TIME_SLOTS - slot) % TIME_SLOTS;
            if age > self.max_age_days {
                return Err(SrsError::Expired);
            }
            return Ok(Some(format!("{user}@{host}")));
        }
        if let Some(rest) = tagged(local, "SRS1") {
            let (hash, rest) = field(rest).ok_or(SrsError::Malformed)?;
            let (first_forwarder, user) = field(rest).ok_or(SrsError::Malformed)?;
            if first_forwarder.is_empty() || user.len() < 2 {
                return Err(SrsError::Malformed);
            }
            if !self.verify(hash, &[first_forwarder, user]) {
                return Err(SrsError::BadHash);
            }
            return Ok(Some(format!("SRS0{user}@{first_forwarder}")));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srs(secret: &str) -> Srs {
        Srs::new("fwd.example", &[secret.to_string()], 21).unwrap()
    }

    /// 2026-12-04.
    const DAY: u64 = 20_791;

    #[test]
    fn postsrsd_makes_the_same_addresses() {
        // What PostSRSd 1.10 (Debian's, on libsrs2's scheme) answered for
        // `-d fwd.example` with the secret "tops3cr3t" on this day.
        let srs = srs("tops3cr3t");
        assert_eq!(timestamp(DAY), "JX");
        let cases = [
            ("alice@origin.example", "SRS0=xgtk=JX=origin.example=alice@fwd.example"),
            (
                "Alice.Smith@Origin.Example",
                "SRS0=mOKb=JX=Origin.Example=Alice.Smith@fwd.example",
            ),
            (
                "SRS0=ab12=JX=origin.example=alice@first.example",
                "SRS1=Hbxu=first.example==ab12=JX=origin.example=alice@fwd.example",
            ),
        ];
        for (sender, expected) in cases {
            assert_eq!(srs.forward_on(sender, DAY), expected);
        }
        assert_eq!(
            srs.reverse_on("SRS0=xgtk=JX=origin.example=alice@fwd.example", DAY),
            Ok(Some("alice@origin.example".into()))
        );
    }

    #[test]
    fn a_forwarded_sender_reverses_to_the_original_within_its_age() {
        let srs = srs("s3cret");
        let address = srs.forward_on("Alice.Smith@Origin.example", DAY);
        assert!(address.starts_with("SRS0="), "{address}");
        assert_eq!(
            srs.reverse_on(&address, DAY + 21),
            Ok(Some("Alice.Smith@Origin.example".into()))
        );
        assert_eq!(srs.reverse_on(&address, DAY + 22), Err(SrsError::Expired));
        // Some servers lower-case what they bounce to.
        assert_eq!(
            srs.reverse_on(&address.to_ascii_lowercase(), DAY),
            Ok(Some("alice.smith@origin.example".into()))
        );
        // The day counter wraps every 1024 days.
        let late = srs.forward_on("a@b.example", 1023);
        assert_eq!(srs.reverse_on(&late, 1024 + 3), Ok(Some("a@b.example".into())));
    }

    #[test]
    fn forged_altered_and_foreign_addresses_are_told_apart() {
        let srs = srs("s3cret");
        let address = srs.forward_on("alice@origin.example", DAY);
        let altered = address.replace("alice", "mallory");
        assert_eq!(srs.reverse_on(&altered, DAY), Err(SrsError::BadHash));
        let other = Srs::new("fwd.example", &["other".into()], 21).unwrap();
        assert_eq!(other.reverse_on(&address, DAY), Err(SrsError::BadHash));
        assert_eq!(srs.reverse_on("SRS0=abcd@fwd.example", DAY), Err(SrsError::Malformed));
        assert_eq!(
            srs.reverse_on("SRS0=abcd=!!=a=b@fwd.example", DAY),
            Err(SrsError::Malformed)
        );
        assert_eq!(srs.reverse_on("alice@fwd.example", DAY), Ok(None));
        let elsewhere = address.replace("@fwd.example", "@else.example");
        assert_eq!(srs.reverse_on(&elsewhere, DAY), Ok(None));
    }

    #[test]
    fn an_old_secret_still_reverses_while_the_new_one_signs() {
        let old = srs("old");
        let sent = old.forward_on("a@origin.example", DAY);
        let rotated = Srs::new("fwd.example", &["new".into(), "old".into()], 21).unwrap();
        assert_eq!(rotated.reverse_on(&sent, DAY), Ok(Some("a@origin.example".into())));
        assert_ne!(rotated.forward_on("a@origin.example", DAY), sent);
    }

    #[test]
    fn a_second_forwarder_makes_srs1_which_leads_back_to_the_first() {
        let first = Srs::new("first.example", &["one".into()], 21).unwrap();
        let second = Srs::new("fwd.example", &["two".into()], 21).unwrap();
        let srs0 = first.forward_on("alice@origin.example", DAY);
        let srs1 = second.forward_on(&srs0, DAY);
        let (_, user) = srs0.split_once("@").unwrap().0.split_at(4);
        assert!(srs1.starts_with("SRS1="), "{srs1}");
        assert!(srs1.ends_with(&format!("=first.example={user}@fwd.example")), "{srs1}");
        // A third hop keeps naming the first forwarder.
        let third = Srs::new("third.example", &["three".into()], 21).unwrap();
        let again = third.forward_on(&srs1, DAY);
        assert!(
            again.ends_with(&format!("=first.example={user}@third.example")),
            "{again}"
        );
        assert_eq!(third.reverse_on(&again, DAY), Ok(Some(srs0.clone())));
        assert_eq!(second.reverse_on(&srs1, DAY), Ok(Some(srs0.clone())));
        assert_eq!(first.reverse_on(&srs0, DAY), Ok(Some("alice@origin.example".into())));
    }

    #[test]
    fn the_null_sender_and_our_own_addresses_are_kept() {
        let srs = srs("s3cret");
        assert_eq!(srs.forward_on("", DAY), "");
        assert_eq!(srs.forward_on("bob@FWD.example", DAY), "bob@FWD.example");
        assert!(Srs::new("fwd.example", &[], 21).is_none());
    }
}
