//! RFC 5321 paths: `<local@domain>`, the null path `<>`, source routes and
//! ESMTP parameters.

use std::fmt;

/// One ESMTP parameter (`SIZE=1000`); keys are upper-cased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// The keyword, upper-cased.
    pub key: String,
    /// The value after `=`, if there is one (`BODY=8BITMIME`, not `SMTPUTF8`).
    pub value: Option<String>,
}

/// A mailbox from MAIL FROM or RCPT TO with the parameters of its command.
/// The null path `<>` has an empty local part and domain; `<postmaster>` has
/// an empty domain. A quoted local part is kept unquoted.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Address {
    /// The part before `@`, unquoted; empty for `<>`.
    pub local_part: String,
    /// The part after `@`; empty for `<>` and `<postmaster>`.
    pub domain: String,
    /// The ESMTP parameters after the path, in the order given.
    pub params: Vec<Param>,
}

/// Why a path or its parameters could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("syntax error in address")]
    /// The path is not `<local@domain>`, `<postmaster>` or `<>`.
    Syntax,
    #[error("address too long")]
    /// The local part, domain or whole path is longer than RFC 5321 allows.
    TooLong,
    #[error("null address not allowed here")]
    /// `<>` where a mailbox is required (RCPT TO).
    NullNotAllowed,
    #[error("syntax error in parameter {0:?}")]
    /// A parameter is malformed; holds the parameter as sent.
    Param(String),
}

const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 255;
const MAX_PATH: usize = 256;

impl Address {
    /// Whether this is the null reverse-path `<>`.
    pub fn is_null(&self) -> bool {
        self.local_part.is_empty() && self.domain.is_empty()
    }

    /// Whether the mailbox needs SMTPUTF8 (non-ASCII local part or domain).
    pub fn needs_utf8(&self) -> bool {
        !self.local_part.is_ascii() || !self.domain.is_ascii()
    }

    /// The parameter's value, if the parameter was given (case-insensitive key).
    pub fn param(&self, key: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|p| p.key.eq_ignore_ascii_case(key))
            .map(|p| p.value.as_deref())
    }

    /// `local@domain`, quoting the local part when it needs it.
    pub fn addr_spec(&self) -> String {
        let local = if is_dot_string(&self.local_part) || self.local_part.is_empty() {
            self.local_part.clone()
        } else {
            let escaped: String = self
                .local_part
                .chars()
                .flat_map(|c| match c {
                    '"' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            format!("\"{escaped}\"")
        };
        if self.domain.is_empty() {
            local
        } else {
            format!("{local}@{}", self.domain)
        }
    }

    /// Parses `<path> [params]` (the text after `FROM:` or `TO:`).
    pub fn parse_with_params(text: &str, allow_null: bool) -> Result<Address, AddressError> {
        let text = text.trim_start();
        let (path, rest) = split_path(text)?;
        let mut address = parse_path(path, allow_null)?;
        address.params = parse_params(rest)?;
        Ok(address)
    }
}

/// Parses mailboxes in angle brackets separated by commas, each with the
/// ESMTP parameters of its `RCPT TO` after it (`<a@x> NOTIFY=NEVER, <b@y>`),
/// as a header field that lists an envelope's recipients holds them. A
/// comma followed by `<` starts the next mailbox; one inside a parameter
/// (`NOTIFY=SUCCESS,FAILURE`) does not.
pub fn parse_path_list(text: &str) -> Result<Vec<Address>, AddressError> {
    let mut list = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('<').ok_or(AddressError::Syntax)?;
        let end = closing_bracket(inner).ok_or(AddressError::Syntax)?;
        let after = &inner[end + 1..];
        let comma = after
            .char_indices()
            .filter(|&(_, c)| c == ',')
            .map(|(at, _)| at)
            .find(|&at| after[at + 1..].trim_start().starts_with('<'));
        let (params, next) = match comma {
            Some(at) => (after[..at].trim_end(), &after[at + 1..]),
            None => (after.trim_end(), ""),
        };
        if !params.is_empty() && !params.starts_with(' ') {
            return Err(AddressError::Syntax);
        }
        let mut address = parse_path(&inner[..end], false)?;
        address.params = parse_params(params)?;
        list.push(address);
        rest = next.trim_start();
    }
    Ok(list)
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.addr_spec())
    }
}

/// Splits the path (with or without angle brackets) from the parameters.
fn split_path(text: &str) -> Result<(&str, &str), AddressError> {
    if let Some(inner) = text.strip_prefix('<') {
        let end = closing_bracket(inner).ok_or(AddressError::Syntax)?;
        let rest = &inner[end + 1..];
        if !rest.is_empty() && !rest.starts_with(' ') {
            return Err(AddressError::Syntax);
        }
        Ok((&inner[..end], rest))
    } else {
        // Lenient form without brackets (Haraka accepts it unless strict).
        let end = text.find(' ').unwrap_or(text.len());
        Ok((&text[..end], &text[end..]))
    }
}

/// Where the `>` that closes a path is (outside a quoted string), in the
/// text after its `<`.
fn closing_bracket(inner: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_path(path: &str, allow_null: bool) -> Result<Address, AddressError> {
    if path.len() > MAX_PATH {
        return Err(AddressError::TooLong);
    }
    if path.is_empty() {
        return if allow_null {
            Ok(Address::default())
        } else {
            Err(AddressError::NullNotAllowed)
        };
    }
    // A source route `@a,@b:user@c` is accepted and ignored (RFC 5321 §4.1.2).
    let mailbox = if path.starts_with('@') {
        let (route, mailbox) = path.split_once(':').ok_or(AddressError::Syntax)?;
        for hop in route.split(',') {
            let hop = hop.strip_prefix('@').ok_or(AddressError::Syntax)?;
            check_domain(hop)?;
        }
        mailbox
    } else {
        path
    };
    let (local_raw, domain) = match split_mailbox(mailbox)? {
        (local, Some(domain)) => (local, domain),
        (local, None) if local.eq_ignore_ascii_case("postmaster") => (local, ""),
        _ => return Err(AddressError::Syntax),
    };
    let local_part = parse_local_part(local_raw)?;
    if !domain.is_empty() {
        check_domain(domain)?;
    }
    if local_part.len() > MAX_LOCAL || domain.len() > MAX_DOMAIN {
        return Err(AddressError::TooLong);
    }
    Ok(Address {
        local_part,
        domain: domain.to_string(),
        params: Vec::new(),
    })
}

/// Splits at the `@` that follows the local part (quoted parts may hold `@`).
fn split_mailbox(mailbox: &str) -> Result<(&str, Option<&str>), AddressError> {
    if mailbox.starts_with('"') {
        let mut escaped = false;
        for (i, c) in mailbox.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    let rest = &mailbox[i + 1..];
                    return match rest.strip_prefix('@') {
                        Some(domain) => Ok((&mailbox[..=i], Some(domain))),
                        None if rest.is_empty() => Ok((&mailbox[..=i], None)),
                        None => Err(AddressError::Syntax),
                    };
                }
                _ => {}
            }
        }
        return Err(AddressError::Syntax);
    }
    Ok(match mailbox.rsplit_once('@') {
        Some((local, domain)) => (local, Some(domain)),
        None => (mailbox, None),
    })
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn is_dot_string(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

fn parse_local_part(raw: &str) -> Result<String, AddressError> {
    if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            let c = if c == '\\' {
                chars.next().ok_or(AddressError::Syntax)?
            } else {
                c
            };
            if c.is_control() {
                return Err(AddressError::Syntax);
            }
            out.push(c);
        }
        if out.is_empty() {
            return Err(AddressError::Syntax);
        }
        return Ok(out);
    }
    if is_dot_string(raw) {
        Ok(raw.to_string())
    } else {
        Err(AddressError::Syntax)
    }
}

fn check_domain(domain: &str) -> Result<(), AddressError> {
    if domain.len() > MAX_DOMAIN {
        return Err(AddressError::TooLong);
    }
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ok = !literal.is_empty()
            && literal
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '[' && c != ']' && c != '\\');
        return if ok { Ok(()) } else { Err(AddressError::Syntax) };
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || !c.is_ascii())
    };
    if domain.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(AddressError::Syntax)
    }
}

fn parse_params(rest: &str) -> Result<Vec<Param>, AddressError> {
    rest.split(' ')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (key, value) = match p.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (p, None),
            };
            let key_ok = !key.is_empty()
                && key.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            let value_ok = value.is_none_or(|v| !v.is_empty() && v.chars().all(|c| !c.is_control() && c != '='));
            if key_ok && value_ok {
                Ok(Param {
                    key: key.to_ascii_uppercase(),
                    value: value.map(str::to_string),
                })
            } else {
                Err(AddressError::Param(p.to_string()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Address, AddressError> {
        Address::parse_with_params(s, true)
    }

    #[test]
    fn path_lists_split_at_commas_outside_quotes() {
        let list = parse_path_list(" <a@x.test>, <\"b,c>\"@y.test>,<postmaster> ").unwrap();
        let specs: Vec<String> = list.iter().map(Address::addr_spec).collect();
        assert_eq!(specs, ["a@x.test", "\"b,c>\"@y.test", "postmaster"]);
        assert_eq!(parse_path_list(""), Ok(Vec::new()));
        for bad in [
            "<a@x.test>,",
            "<a@x.test> <b@y.test>",
            "a@x.test",
            "<a@x.test",
            "<>",
            "<a@x.test>NOTIFY=NEVER",
            "<a@x.test> NOTIFY==",
        ] {
            assert!(parse_path_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_lists_keep_each_recipients_parameters() {
        let list = parse_path_list(
            "<a@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@x.test, <b@y.test>,<c@y.test> NOTIFY=NEVER",
        )
        .unwrap();
        let params: Vec<Vec<(String, Option<String>)>> = list
            .iter()
            .map(|a| a.params.iter().map(|p| (p.key.clone(), p.value.clone())).collect())
            .collect();
        assert_eq!(
            params,
            [
                vec![
                    ("NOTIFY".to_string(), Some("SUCCESS,FAILURE".to_string())),
                    ("ORCPT".into(), Some("rfc822;a@x.test".into()))
                ],
                vec![],
                vec![("NOTIFY".into(), Some("NEVER".into()))],
            ]
        );
    }

    #[test]
    fn plain_null_and_postmaster() {
        let a = parse("<a.b@Example.COM>").unwrap();
        assert_eq!((a.local_part.as_str(), a.domain.as_str()), ("a.b", "Example.COM"));
        assert!(parse("<>").unwrap().is_null());
        assert_eq!(
            Address::parse_with_params("<>", false),
            Err(AddressError::NullNotAllowed)
        );
        assert_eq!(parse("<Postmaster>").unwrap().domain, "");
        assert_eq!(parse("<bob>"), Err(AddressError::Syntax));
    }

    #[test]
    fn quoted_local_parts_and_routes() {
        let a = parse(r#"<"john doe@x"@example.com>"#).unwrap();
        assert_eq!(a.local_part, "john doe@x");
        assert_eq!(a.addr_spec(), r#""john doe@x"@example.com"#);
        let r = parse("<@relay.example,@b.example:u@c.example>").unwrap();
        assert_eq!(r.addr_spec(), "u@c.example");
        assert_eq!(parse("<u%v@c.example>").unwrap().domain, "c.example");
        assert_eq!(parse("<u@[192.0.2.1]>").unwrap().domain, "[192.0.2.1]");
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "<a..b@x>",
            "<a@-x.com>",
            "<a@x..com>",
            "<a b@x>",
            "<a@x",
            "<a@x>junk",
            "<@x:>",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(
            parse(&format!("<{}@x.com>", "a".repeat(65))),
            Err(AddressError::TooLong)
        );
    }

    #[test]
    fn parameters_are_upper_cased() {
        let a = parse("<a@x.com> size=100 BODY=8BITMIME SMTPUTF8").unwrap();
        assert_eq!(a.param("SIZE"), Some(Some("100")));
        assert_eq!(a.param("smtputf8"), Some(None));
        assert!(parse("<a@x.com> SIZE=").is_err());
        assert!(parse("<a@x.com> =1").is_err());
    }
}
