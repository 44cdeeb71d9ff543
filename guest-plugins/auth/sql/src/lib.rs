//! `auth/sql`: checks AUTH PLAIN/LOGIN passwords against a user table
//! through the `sql` capability (PostgreSQL, or the embedded SQLite):
//!
//! ```ini
//! database = users
//! query = SELECT password FROM users WHERE username = $1
//! params = user
//! ```
//!
//! The first column of the first row is the stored password, in any form
//! `waraka_plugin::passwords` knows (Argon2, bcrypt, SHA-crypt, salted SHA,
//! with or without Dovecot's `{SCHEME}`). No row or NULL: an unknown user
//! (`535`). A database that cannot answer: `454`, never an accept.
//! Settings are in `config/auth/sql.ini`.

use waraka_plugin::passwords;
use waraka_plugin::sql::{self, Value};
use waraka_plugin::{AuthAttempt, Error, Hook, Plugin, Settings, Verdict};

const SETTINGS: &str = "auth/sql.ini";
const DEFAULT_QUERY: &str = "SELECT password FROM users WHERE username = $1";

struct AuthSql;

/// One query parameter, named in the `params` setting.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Param {
    /// The user name as given to AUTH.
    User,
    /// Its part before the last `@` (all of it without one).
    Local,
    /// Its part after the last `@`, lower-cased (empty without one).
    Domain,
}

/// The names of `params = user, local, domain` (default: `user`).
const PARAMS: &[(&str, Param)] = &[
    ("user", Param::User),
    ("local", Param::Local),
    ("domain", Param::Domain),
];

fn param_value(param: &Param, user: &str) -> Value {
    let (local, domain) = user.rsplit_once('@').unwrap_or((user, ""));
    Value::Text(match param {
        Param::User => user.to_string(),
        Param::Local => local.to_string(),
        Param::Domain => domain.to_ascii_lowercase(),
    })
}

/// The stored password in a query result: the first column of the first
/// row, `None` for no row or NULL.
fn stored_password(rows: &sql::Rows) -> Result<Option<String>, Error> {
    match rows.rows.first().and_then(|row| row.first()) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Text(text)) => Ok(Some(text.clone())),
        Some(Value::Bytes(bytes)) => String::from_utf8(bytes.clone())
            .map(Some)
            .map_err(|_| Error::Invalid("the stored password is not UTF-8".into())),
        Some(other) => Err(Error::Invalid(format!("the stored password is not text: {other:?}"))),
    }
}

/// The stored password of `user`, as the configured query finds it.
fn lookup(settings: &Settings, user: &str) -> Result<Option<String>, Error> {
    let database = settings.get("database").unwrap_or_else(|| "users".into());
    let query = settings.get("query").unwrap_or_else(|| DEFAULT_QUERY.into());
    let params = settings
        .choices("params", PARAMS, &[Param::User])
        .map_err(Error::Invalid)?;
    let values = params.iter().map(|p| param_value(p, user)).collect::<Vec<_>>();
    stored_password(&sql::query(&database, &query, &values)?)
}

impl Plugin for AuthSql {
    const NAME: &'static str = "auth/sql";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Auth];

    fn auth(attempt: AuthAttempt) -> Verdict {
        if let Some(verdict) = attempt.precheck() {
            return verdict;
        }
        let settings = Settings::load(SETTINGS);
        match lookup(&settings, &attempt.user) {
            Ok(Some(stored)) => passwords::verdict(&attempt, &stored, settings.bool("allow_cleartext", false)),
            Ok(None) => Verdict::Deny(None),
            Err(e) => {
                waraka_plugin::warn!("user {}: the user table cannot be read: {e:?}", attempt.user);
                Verdict::denysoft("user database unavailable")
            }
        }
    }
}

waraka_plugin::export!(AuthSql);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_named_and_split_at_the_last_at() {
        let params = |lines: &[&str]| {
            let lines = lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
            Settings::from_lines(&lines).choices("params", PARAMS, &[Param::User])
        };
        assert_eq!(params(&[]), Ok(vec![Param::User]));
        assert_eq!(
            params(&["params = local, domain"]),
            Ok(vec![Param::Local, Param::Domain])
        );
        assert!(params(&["params = user, address"]).is_err());
        let text = |p, user| match param_value(p, user) {
            Value::Text(t) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(text(&Param::User, "Bob@Example.ORG"), "Bob@Example.ORG");
        assert_eq!(text(&Param::Local, "\"a@b\"@Example.ORG"), "\"a@b\"");
        assert_eq!(text(&Param::Domain, "Bob@Example.ORG"), "example.org");
        assert_eq!(text(&Param::Local, "bob"), "bob");
        assert_eq!(text(&Param::Domain, "bob"), "");
    }

    #[test]
    fn the_first_column_of_the_first_row_is_the_stored_password() {
        let rows = |values: Vec<Vec<Value>>| sql::Rows {
            columns: vec!["password".into()],
            rows: values,
        };
        let text = |t: &str| Value::Text(t.into());
        assert_eq!(
            stored_password(&rows(vec![vec![text("$2y$05$x")], vec![text("other")]])).unwrap(),
            Some("$2y$05$x".into())
        );
        assert_eq!(
            stored_password(&rows(vec![vec![Value::Bytes(b"{PLAIN}x".to_vec())]])).unwrap(),
            Some("{PLAIN}x".into())
        );
        assert_eq!(stored_password(&rows(vec![])).unwrap(), None);
        assert_eq!(stored_password(&rows(vec![vec![Value::Null]])).unwrap(), None);
        assert!(stored_password(&rows(vec![vec![Value::Int(1)]])).is_err());
    }
}
