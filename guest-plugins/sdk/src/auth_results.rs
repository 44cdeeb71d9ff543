//! Reading `Authentication-Results` values (RFC 8601), as they arrive in the
//! header or in an `ARC-Authentication-Results` field: the authentication
//! service identifier and the result of each method.

/// Skips comments (nested, with quoted pairs) and white space (CFWS, RFC
/// 5322 §3.2.2).
fn skip_cfws(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        let Some(mut rest) = s.strip_prefix('(') else {
            return s;
        };
        let mut depth = 1;
        while depth > 0 {
            let mut chars = rest.chars();
            match chars.next() {
                None => return "",
                Some('\\') => {
                    chars.next();
                }
                Some('(') => depth += 1,
                Some(')') => depth -= 1,
                Some(_) => {}
            }
            rest = chars.as_str();
        }
        s = rest;
    }
}

/// The authentication service identifier a value starts with (RFC 8601
/// §2.2: a token or a quoted string, after optional comments), unquoted.
pub fn authserv_id(value: &str) -> Option<String> {
    let s = skip_cfws(value);
    if let Some(quoted) = s.strip_prefix('"') {
        let mut id = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(id),
                '\\' => id.push(chars.next()?),
                c => id.push(c),
            }
        }
        return None;
    }
    let end = s
        .find(|c: char| c.is_whitespace() || c == ';' || c == '(')
        .unwrap_or(s.len());
    (end > 0).then(|| s[..end].to_string())
}

/// The result the value records for `method` (`spf`, `dkim`, `dmarc`, …),
/// lower-cased: the first `method=result` statement after the
/// authserv-id, compared without case. `None` when the method is absent.
pub fn method_result(value: &str, method: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|statement| {
        let statement = skip_cfws(statement);
        let (name, rest) = statement.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case(method) {
            return None;
        }
        let rest = skip_cfws(rest);
        let end = rest.find(|c: char| c.is_whitespace() || c == '(').unwrap_or(rest.len());
        Some(rest[..end].to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::{authserv_id, method_result};

    #[test]
    fn the_authserv_id_is_the_first_token_or_quoted_string_after_comments() {
        let cases = [
            ("mx.example.com; spf=pass smtp.mailfrom=a.test", Some("mx.example.com")),
            ("mx.example.com 1; none", Some("mx.example.com")),
            ("  MX.Example.COM;dkim=pass", Some("MX.Example.COM")),
            (
                "(forged (nested \\) comment)) mx.example.com; none",
                Some("mx.example.com"),
            ),
            ("\"mx.example.com\"; none", Some("mx.example.com")),
            ("\"mx\\\"x\"; none", Some("mx\"x")),
            ("mx.example.com(comment); none", Some("mx.example.com")),
            ("; spf=pass", None),
            ("(unterminated comment mx.example.com; none", None),
            ("\"unterminated; none", None),
            ("", None),
        ];
        for (value, expected) in cases {
            assert_eq!(authserv_id(value).as_deref(), expected, "{value:?}");
        }
    }

    #[test]
    fn a_methods_result_is_read_from_its_statement() {
        let value = "mx.list.test; spf=pass smtp.mailfrom=a.test;\tDKIM = Pass (good) header.d=a.test; \
                     dmarc=(checked) fail header.from=a.test";
        assert_eq!(method_result(value, "spf").as_deref(), Some("pass"));
        assert_eq!(method_result(value, "dkim").as_deref(), Some("pass"));
        assert_eq!(method_result(value, "dmarc").as_deref(), Some("fail"));
        assert_eq!(method_result(value, "arc"), None);
        assert_eq!(
            method_result("dmarc=pass; spf=fail", "dmarc"),
            None,
            "the first part is the authserv-id"
        );
        assert_eq!(method_result("mx; none", "dmarc"), None);
    }
}
