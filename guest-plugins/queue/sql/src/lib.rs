//! `queue/sql`: records each accepted message in a database table — one row
//! per recipient with the envelope, the size, the subject and, after
//! `queue/s3`, the blob key — so an application can list a mailbox. With
//! `queue/s3` before it (`continue = true` there) this is the tutorial's
//! whole "e-mail service" pipeline.
//!
//! Every row is inserted in one transaction; the plugin answers `ok` only
//! after the commit, and `451 4.3.0` when the database fails (nothing is
//! half-recorded). Settings are in `config/queue/sql.ini`.

use std::time::{SystemTime, UNIX_EPOCH};
use waraka_plugin::sql::{self, Value};
use waraka_plugin::{
    Address, Error, Hook, Plugin, Scope, Settings, Verdict, envelope, host_list, message, notes, session,
};

const SETTINGS: &str = "queue/sql.ini";
const KEYS_NOTE: &str = "queue.s3.keys";
const DEFAULT_STATEMENT: &str = "INSERT INTO messages (recipient, sender, blob_key, size, received_at, transaction_id, subject) VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// What `$1` … `$7` of the default statement are.
const DEFAULT_FIELDS: &[Field] = &[
    Field::Recipient,
    Field::Sender,
    Field::Key,
    Field::Size,
    Field::Received,
    Field::Transaction,
    Field::Subject,
];

struct SqlQueue;

/// A value the statement can take, named in the `params` setting.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Recipient,
    Sender,
    Key,
    Size,
    Received,
    Transaction,
    Subject,
    MessageId,
    PeerIp,
    Helo,
}

/// The names of the `params` setting.
const FIELDS: &[(&str, Field)] = &[
    ("recipient", Field::Recipient),
    ("sender", Field::Sender),
    ("key", Field::Key),
    ("size", Field::Size),
    ("received", Field::Received),
    ("transaction", Field::Transaction),
    ("subject", Field::Subject),
    ("message_id", Field::MessageId),
    ("peer_ip", Field::PeerIp),
    ("helo", Field::Helo),
];

/// The values shared by every row of one message.
struct MessageFacts {
    sender: String,
    size: i64,
    received_us: i64,
    transaction: String,
    subject: Option<String>,
    message_id: Option<String>,
    peer_ip: String,
    helo: Option<String>,
    /// `address → key` from `queue/s3`'s note.
    keys: Vec<(String, String)>,
}

impl MessageFacts {
    fn gather() -> MessageFacts {
        let received_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let keys = notes::get(Scope::Transaction, KEYS_NOTE)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(address, key)| (address.to_string(), key.to_string()))
            .collect();
        MessageFacts {
            sender: envelope::sender().map(|s| s.to_addr_spec()).unwrap_or_default(),
            size: message::size() as i64,
            received_us,
            transaction: session::transaction_id().unwrap_or_else(session::connection_id),
            subject: message::header("Subject").into_iter().next(),
            message_id: message::header("Message-ID").into_iter().next(),
            peer_ip: session::peer_ip(),
            helo: session::helo(),
            keys,
        }
    }

    fn value(&self, field: Field, recipient: &str) -> Value {
        let text = |t: &Option<String>| t.clone().map_or(Value::Null, Value::Text);
        match field {
            Field::Recipient => Value::Text(recipient.to_string()),
            Field::Sender => Value::Text(self.sender.clone()),
            Field::Key => self
                .keys
                .iter()
                .find(|(address, _)| address == recipient)
                .map_or(Value::Null, |(_, key)| Value::Text(key.clone())),
            Field::Size => Value::Int(self.size),
            Field::Received => Value::Timestamp(self.received_us),
            Field::Transaction => Value::Text(self.transaction.clone()),
            Field::Subject => text(&self.subject),
            Field::MessageId => text(&self.message_id),
            Field::PeerIp => Value::Text(self.peer_ip.clone()),
            Field::Helo => text(&self.helo),
        }
    }
}

fn recipients(local_only: bool) -> Result<Vec<Address>, Error> {
    let mut chosen = Vec::new();
    for recipient in envelope::recipients() {
        if !local_only || host_list::is_local_recipient(&recipient)? {
            chosen.push(recipient);
        }
    }
    Ok(chosen)
}

fn record() -> Result<usize, Error> {
    let settings = Settings::load(SETTINGS);
    let database = settings.get("database").unwrap_or_else(|| "mail".into());
    let statement = settings.get("statement").unwrap_or_else(|| DEFAULT_STATEMENT.into());
    let fields = settings
        .choices("params", FIELDS, DEFAULT_FIELDS)
        .map_err(Error::Invalid)?;
    let facts = MessageFacts::gather();
    let statements: Vec<(String, Vec<Value>)> = recipients(settings.bool("local_only", true))?
        .iter()
        .map(|r| {
            let recipient = r.to_addr_spec();
            (
                statement.clone(),
                fields.iter().map(|f| facts.value(*f, &recipient)).collect(),
            )
        })
        .collect();
    if statements.is_empty() {
        return Ok(0);
    }
    sql::transaction(&database, &statements)?;
    Ok(statements.len())
}

impl Plugin for SqlQueue {
    const NAME: &'static str = "queue/sql";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Queue];

    fn queue() -> Verdict {
        match record() {
            Ok(0) => {
                waraka_plugin::info!("no local recipient: nothing recorded");
                Verdict::Cont
            }
            Ok(rows) => {
                waraka_plugin::info!("recorded {rows} row(s)");
                if waraka_plugin::setting_bool(SETTINGS, "continue", false) {
                    Verdict::Cont
                } else {
                    let transaction = session::transaction_id().unwrap_or_else(session::connection_id);
                    Verdict::ok_with(&format!("Message queued as {transaction}"))
                }
            }
            Err(e) => {
                waraka_plugin::error!("recording the message failed: {e:?}");
                Verdict::denysoft_code(451, "4.3.0", "Message store temporarily unavailable, try again later")
            }
        }
    }
}

waraka_plugin::export!(SqlQueue);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_params_fill_the_default_statement() {
        assert_eq!(DEFAULT_FIELDS.len(), DEFAULT_STATEMENT.matches('$').count());
        let params = |line: &str| Settings::from_lines(&[line.to_string()]).choices("params", FIELDS, DEFAULT_FIELDS);
        assert_eq!(params("params = key, helo"), Ok(vec![Field::Key, Field::Helo]));
        assert!(params("params = recipient, nonsense").is_err());
    }

    #[test]
    fn each_recipient_gets_its_own_key_or_null() {
        let facts = MessageFacts {
            sender: "a@b".into(),
            size: 10,
            received_us: 1,
            transaction: "T.1".into(),
            subject: None,
            message_id: None,
            peer_ip: "127.0.0.1".into(),
            helo: None,
            keys: vec![("x@d".into(), "x@d/u.eml".into())],
        };
        assert!(matches!(facts.value(Field::Key, "x@d"), Value::Text(k) if k == "x@d/u.eml"));
        assert!(matches!(facts.value(Field::Key, "y@d"), Value::Null));
        assert!(matches!(facts.value(Field::Subject, "x@d"), Value::Null));
    }
}
