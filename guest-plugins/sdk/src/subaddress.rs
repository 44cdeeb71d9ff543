//! Subaddresses (RFC 5233): `alice+news@example.com` reaches the mailbox of
//! `alice@example.com`, with `news` as its detail, when
//! `config/recipient_delimiter` holds `+`. Each character of the file's first
//! line separates a user from a detail, as Postfix's `recipient_delimiter`;
//! the first one in the local part splits it. A missing or empty file turns
//! subaddresses off.

use crate::{Address, config};

/// The delimiter characters (`config/recipient_delimiter`), empty when off.
pub fn delimiters() -> String {
    config::lines("recipient_delimiter")
        .ok()
        .and_then(|lines| lines.into_iter().next())
        .unwrap_or_default()
}

/// `local` split at its first delimiter: the user and the detail (`None`
/// without a delimiter, or when it would leave no user).
pub fn split<'a>(local: &'a str, delimiters: &str) -> (&'a str, Option<&'a str>) {
    match local.find(|c| delimiters.contains(c)) {
        Some(at) if at > 0 => {
            let delimiter_length = local[at..].chars().next().map_or(1, char::len_utf8);
            (&local[..at], Some(&local[at + delimiter_length..]))
        }
        _ => (local, None),
    }
}

/// The address without its detail (`alice@example.com` for
/// `alice+news@example.com`), when it has one.
pub fn base(address: &Address, delimiters: &str) -> Option<Address> {
    match split(&address.local_part, delimiters) {
        (user, Some(_)) => Some(Address {
            local_part: user.to_string(),
            ..address.clone()
        }),
        (_, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_delimiter_splits_and_a_leading_one_does_not() {
        assert_eq!(split("alice+news", "+"), ("alice", Some("news")));
        assert_eq!(split("alice+news+old", "+"), ("alice", Some("news+old")));
        assert_eq!(split("bob-list+x", "+-"), ("bob", Some("list+x")));
        assert_eq!(split("alice", "+"), ("alice", None));
        assert_eq!(split("+news", "+"), ("+news", None));
        assert_eq!(split("alice+news", ""), ("alice+news", None));
        assert_eq!(split("alice+", "+"), ("alice", Some("")));
    }
}
