//! `rcpt_to.validity`: accepts a local recipient only when a database says
//! the address exists — the tutorial's PostgreSQL check, on any `sql`
//! backend (PostgreSQL, or the embedded SQLite).
//!
//! For a recipient in a local domain (`config/host_list`,
//! `config/host_list_regex`, or domain-less `<postmaster>`) the plugin runs
//! the configured query with the recipient as parameters: a first row whose
//! first column is true (or a non-zero number, or non-empty text) accepts
//! (`ok`); no row or a false one rejects with `550 5.1.1 Invalid email
//! address`. A database that is down, slow or refusing the query answers
//! `451 4.3.0`: never accept, never reject for good on a temporary fault.
//! Recipients in other domains pass on (`cont`) to the relaying rule. A
//! subaddress (`alice+news@`, see `config/recipient_delimiter`) that the
//! database does not know is looked up again as its user (`alice@`).
//! Settings are in `config/rcpt_to.validity.ini`.

use waraka_plugin::sql::{self, Value};
use waraka_plugin::{Address, Error, Hook, Plugin, Settings, Verdict, host_list};

const SETTINGS: &str = "rcpt_to.validity.ini";
const DEFAULT_QUERY: &str = "SELECT EXISTS(SELECT 1 FROM valid_addresses WHERE address = $1)";

struct Validity;

/// One query parameter, named in the `params` setting.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Param {
    /// `local@domain`, the domain lower-cased.
    Address,
    /// The local part as given.
    Local,
    /// The domain, lower-cased.
    Domain,
}

/// The names of `params = address, local, domain` (default: `address`).
const PARAMS: &[(&str, Param)] = &[
    ("address", Param::Address),
    ("local", Param::Local),
    ("domain", Param::Domain),
];

fn param_value(param: &Param, recipient: &Address) -> Value {
    let domain = recipient.domain.to_ascii_lowercase();
    Value::Text(match param {
        Param::Address if domain.is_empty() => recipient.local_part.clone(),
        Param::Address => format!("{}@{domain}", recipient.local_part),
        Param::Local => recipient.local_part.clone(),
        Param::Domain => domain,
    })
}

/// Whether a query result says "this address exists".
fn is_valid(rows: &sql::Rows) -> bool {
    match rows.rows.first().and_then(|row| row.first()) {
        None | Some(Value::Null) => false,
        Some(Value::Boolean(b)) => *b,
        Some(Value::Int(i)) => *i != 0,
        Some(Value::Float(f)) => *f != 0.0,
        Some(Value::Text(t)) => {
            !t.is_empty() && t != "0" && !t.eq_ignore_ascii_case("f") && !t.eq_ignore_ascii_case("false")
        }
        Some(Value::Bytes(_) | Value::Timestamp(_)) => true,
    }
}

fn check(recipient: &Address) -> Result<bool, Error> {
    let settings = Settings::load(SETTINGS);
    let database = settings.get("database").unwrap_or_else(|| "users".into());
    let query = settings.get("query").unwrap_or_else(|| DEFAULT_QUERY.into());
    let params = settings
        .choices("params", PARAMS, &[Param::Address])
        .map_err(Error::Invalid)?;
    let values = params.iter().map(|p| param_value(p, recipient)).collect::<Vec<_>>();
    Ok(is_valid(&sql::query(&database, &query, &values)?))
}

impl Plugin for Validity {
    const NAME: &'static str = "rcpt_to.validity";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Rcpt];

    fn rcpt(recipient: Address) -> Verdict {
        host_list::check_local_recipient(&recipient, check)
    }
}

waraka_plugin::export!(Validity);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_named_and_checked() {
        let params = |lines: &[&str]| {
            let lines = lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
            Settings::from_lines(&lines).choices("params", PARAMS, &[Param::Address])
        };
        assert_eq!(params(&[]), Ok(vec![Param::Address]));
        assert_eq!(
            params(&["params = local, domain"]),
            Ok(vec![Param::Local, Param::Domain])
        );
        assert!(params(&["params = address, user"]).is_err());
        let bob = Address {
            local_part: "Bob".into(),
            domain: "Example.ORG".into(),
            params: Vec::new(),
        };
        assert!(matches!(param_value(&Param::Address, &bob), Value::Text(t) if t == "Bob@example.org"));
    }

    #[test]
    fn truthy_first_columns_mean_valid() {
        let rows = |values: Vec<Vec<Value>>| sql::Rows {
            columns: vec!["exists".into()],
            rows: values,
        };
        assert!(is_valid(&rows(vec![vec![Value::Boolean(true)]])));
        assert!(is_valid(&rows(vec![vec![Value::Int(1)]])));
        assert!(is_valid(&rows(vec![vec![Value::Text("bob@example.org".into())]])));
        assert!(!is_valid(&rows(vec![vec![Value::Boolean(false)]])));
        assert!(!is_valid(&rows(vec![vec![Value::Int(0)]])));
        assert!(!is_valid(&rows(vec![vec![Value::Null]])));
        assert!(!is_valid(&rows(vec![])));
    }
}
