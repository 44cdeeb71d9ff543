//! LDAP search filters (RFC 4515) and DNs (RFC 4514) with values put in
//! safely, for the `ldap` capability: a recipient or user name can never
//! change a filter's or a DN's meaning.

/// `value` as a filter value: `*`, `(`, `)`, `\` and NUL written as
/// `\2a`, `\28`, `\29`, `\5c` and `\00`.
pub fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => escaped.push_str("\\2a"),
            '(' => escaped.push_str("\\28"),
            ')' => escaped.push_str("\\29"),
            '\\' => escaped.push_str("\\5c"),
            '\0' => escaped.push_str("\\00"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// `value` as an attribute value in a DN: `, + " \ < > ; =` escaped with a
/// backslash, and a leading space or `#` and a trailing space too.
pub fn escape_dn(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && matches!(c, ' ' | '#'))
            || (i == last && c == ' ');
        if c == '\0' {
            escaped.push_str("\\00");
            continue;
        }
        if special {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// `template` with each `%x` replaced by the filter-escaped value that
/// `values` gives for `x` (`('a', "alice@example.com")`); `%%` is a percent
/// sign; a placeholder without a value stays as written.
pub fn fill(template: &str, values: &[(char, &str)]) -> String {
    substitute(template, values, escape)
}

/// As [`fill`], for a DN template (`uid=%u,ou=people,dc=example,dc=com`):
/// values are escaped as DN values.
pub fn fill_dn(template: &str, values: &[(char, &str)]) -> String {
    substitute(template, values, escape_dn)
}

fn substitute(template: &str, values: &[(char, &str)], escape: fn(&str) -> String) -> String {
    let mut filter = String::with_capacity(template.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            filter.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => filter.push('%'),
            Some(name) => match values.iter().find(|(n, _)| *n == name) {
                Some((_, value)) => filter.push_str(&escape(value)),
                None => {
                    filter.push('%');
                    filter.push(name);
                }
            },
            None => filter.push('%'),
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_change_the_filter() {
        assert_eq!(escape("alice@example.com"), "alice@example.com");
        assert_eq!(escape("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
        assert_eq!(escape("a\\b\0"), "a\\5cb\\00");
        let template = "(|(mail=%a)(mailLocalAddress=%a)(uid=%l))";
        assert_eq!(
            fill(template, &[('a', "x*@example.com"), ('l', "x*")]),
            "(|(mail=x\\2a@example.com)(mailLocalAddress=x\\2a@example.com)(uid=x\\2a))"
        );
        assert_eq!(fill("(cn=100%%)(x=%z)%", &[]), "(cn=100%)(x=%z)%");
    }

    #[test]
    fn dn_values_cannot_add_components() {
        assert_eq!(escape_dn("alice"), "alice");
        assert_eq!(escape_dn("a,ou=admins"), "a\\,ou\\=admins");
        assert_eq!(escape_dn(" #x "), "\\ #x\\ ");
        assert_eq!(
            fill_dn("uid=%u,ou=people,dc=example,dc=com", &[('u', "bob+x")]),
            "uid=bob\\+x,ou=people,dc=example,dc=com"
        );
    }
}
