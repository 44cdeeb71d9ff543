//! DNS lists (RFC 5782) as the list plugins read them: `dns-list` looks up
//! addresses, `uribl` domains, each as `ENTRY.ZONE` in every zone of a
//! config key, all of a plugin's queries at once. An A answer in
//! 127.0.0.0/8 means listed, except 127.255.255.0/24, which list operators
//! use for errors ("query refused").

use crate::{Settings, dns};

/// The zones of the comma-separated config `key`, without trailing dots.
pub fn zones(settings: &Settings, key: &str) -> Vec<String> {
    settings
        .list(key)
        .iter()
        .map(|z| z.trim_end_matches('.').to_string())
        .filter(|z| !z.is_empty())
        .collect()
}

/// The name to look up for `ip` in `zone`: its octets reversed for IPv4
/// (`2.0.0.192.zone` for 192.0.2.2), its nibbles reversed for IPv6.
pub fn query_name(ip: std::net::IpAddr, zone: &str) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.{zone}")
        }
        std::net::IpAddr::V6(v6) => {
            let mut labels: Vec<String> = v6
                .octets()
                .iter()
                .flat_map(|byte| [byte >> 4, byte & 0x0f])
                .map(|nibble| format!("{nibble:x}"))
                .collect();
            labels.reverse();
            format!("{}.{zone}", labels.join("."))
        }
    }
}

/// Whether an answer address means "listed" (127.0.0.0/8, but not the
/// 127.255.255.0/24 error codes).
pub fn listing(answer: &str) -> bool {
    match answer.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            a == 127 && !(b == 255 && c == 255)
        }
        _ => false,
    }
}

/// The listings among the answers to each query of `names`, asked all at
/// once (`dns::lookup-a-each`), in order; `Err` for a failed lookup, and
/// for every name when the call itself failed (no `dns` grant).
pub fn listings_each(names: &[String]) -> Vec<Result<Vec<String>, String>> {
    names
        .chunks(MAX_NAMES_AT_ONCE)
        .flat_map(|chunk| match dns::lookup_a_each(chunk) {
            Ok(answers) => answers
                .into_iter()
                .map(|answer| {
                    answer
                        .map(|found| found.into_iter().filter(|a| listing(a)).collect())
                        .map_err(|e| format!("{e:?}"))
                })
                .collect(),
            Err(e) => chunk.iter().map(|_| Err(format!("{e:?}"))).collect::<Vec<_>>(),
        })
        .collect()
}

/// The most names `dns::lookup-a-each` takes in one call.
const MAX_NAMES_AT_ONCE: usize = 256;

/// "`what` is listed in `zone`", with the list's TXT reason for the query
/// `name` when it has one (printable ASCII, at most 200 characters).
pub fn reason(name: &str, what: &str, zone: &str) -> String {
    let txt = dns::lookup_txt(name).unwrap_or_default();
    let text = txt.first().map(|t| crate::reply_safe(t)).unwrap_or_default();
    if text.is_empty() {
        format!("{what} is listed in {zone}")
    } else {
        format!("{what} is listed in {zone}: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_answers_outside_the_error_range_are_listings() {
        assert!(listing("127.0.0.2"));
        assert!(listing("127.0.1.4"));
        assert!(!listing("127.255.255.254"), "an error code");
        assert!(!listing("192.0.2.1"));
        assert!(!listing("::1"));
    }

    #[test]
    fn query_names_reverse_the_address() {
        assert_eq!(
            query_name("192.0.2.99".parse().unwrap(), "bl.test"),
            "99.2.0.192.bl.test"
        );
        let v6 = query_name("2001:db8::1".parse().unwrap(), "bl.test");
        assert_eq!(
            v6,
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test"
        );
    }
}
