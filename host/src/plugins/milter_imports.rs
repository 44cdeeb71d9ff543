//! The host side of the `milter` capability: the facts of the connection
//! and transaction a milter is shown, the conversation a connection keeps
//! with each milter between hooks, and the answers in the WIT's types.

use super::bindings::types::Error;
use super::bindings::waraka::plugin::milter;
use super::capability_imports::{bounded, read_whole};
use super::store::StoreState;
use crate::capabilities::milter::{Change, Conversation, Decision, Envelope, HeaderField, MilterReply, Outcome};
use crate::protocol::Address;
use crate::session::{Connection, Transaction};
use crate::telemetry;

/// An address with its ESMTP parameters as a milter reads them
/// (`local@domain`, `KEY=VALUE`…).
fn path_and_params(address: &Address) -> (String, Vec<String>) {
    let params = address
        .params
        .iter()
        .map(|p| match &p.value {
            Some(value) => format!("{}={value}", p.key),
            None => p.key.clone(),
        })
        .collect();
    (address.addr_spec(), params)
}

/// What a milter is shown of a connection and its transaction.
fn envelope(conn: &Connection, tx: &Transaction) -> Envelope {
    Envelope {
        hostname: conn.hostname.clone(),
        client: conn.peer,
        local: conn.local,
        helo: conn.helo.clone(),
        sender: path_and_params(&tx.sender),
        recipients: tx.recipients.iter().map(path_and_params).collect(),
        queue_id: tx.id.clone(),
        user: conn.auth_user.clone(),
    }
}

/// The key of milter `name`'s conversation in the connection's state.
fn conversation_key(name: &str) -> String {
    format!("milter:{name}")
}

impl From<MilterReply> for milter::MilterReply {
    fn from(reply: MilterReply) -> Self {
        milter::MilterReply {
            code: reply.code,
            enhanced: reply.enhanced,
            text: reply.text,
        }
    }
}

impl From<Decision> for milter::Decision {
    fn from(decision: Decision) -> Self {
        match decision {
            Decision::Accept => milter::Decision::Accept,
            Decision::Discard => milter::Decision::Discard,
            Decision::Reject(reply) => milter::Decision::Reject(reply.into()),
            Decision::Tempfail(reply) => milter::Decision::Tempfail(reply.into()),
        }
    }
}

impl From<Change> for milter::Change {
    fn from(change: Change) -> Self {
        let field = |f: HeaderField| milter::HeaderField {
            index: f.index,
            name: f.name,
            value: f.value,
        };
        match change {
            Change::AddHeader(f) => milter::Change::AddHeader(field(f)),
            Change::InsertHeader(f) => milter::Change::InsertHeader(field(f)),
            Change::ChangeHeader(f) => milter::Change::ChangeHeader(field(f)),
            Change::AddRecipient(recipient) => milter::Change::AddRecipient(recipient),
            Change::RemoveRecipient(recipient) => milter::Change::RemoveRecipient(recipient),
            Change::ChangeSender(sender) => milter::Change::ChangeSender(sender),
            Change::Quarantine(reason) => milter::Change::Quarantine(reason),
        }
    }
}

/// A step of a live conversation.
enum Step {
    /// The transaction's sender.
    Sender,
    /// A recipient just accepted (`local@domain`).
    Recipient(String),
}

impl StoreState {
    /// This connection's conversation with milter `name`, taken out of the
    /// connection while a step uses it; `None` when it keeps none.
    fn take_conversation(&self, name: &str) -> Option<Conversation> {
        let conn = self.host.conn.as_ref()?;
        let kept = conn.lock().capability_state.remove(&conversation_key(name))?;
        kept.downcast::<Conversation>().ok().map(|conversation| *conversation)
    }

    /// Keeps `conversation` with milter `name` for the connection's next step.
    fn keep_conversation(&self, name: &str, conversation: Conversation) {
        if let Some(conn) = &self.host.conn {
            conn.lock()
                .capability_state
                .insert(conversation_key(name), Box::new(conversation));
        }
    }

    /// One step of the connection's conversation with milter `name`,
    /// opened when it keeps none. A conversation that fails is dropped, so
    /// the next step starts a new one and shows it what it missed.
    async fn live_step(&mut self, name: String, step: Step) -> Result<Option<milter::Decision>, Error> {
        let filter = self.backend("milter", &name, |b| &b.milter)?;
        let facts = self.host.conn.as_ref().and_then(|conn| {
            let conn = conn.lock();
            conn.transaction.as_ref().map(|tx| envelope(&conn, tx))
        });
        let envelope =
            facts.ok_or_else(|| Error::Invalid("there is no transaction (milter steps work from mail on)".into()))?;
        let kept = self.take_conversation(&name);
        let answer = bounded(self.deadline, async move {
            let mut conversation = match kept {
                Some(conversation) => conversation,
                None => filter.open(&envelope).await?,
            };
            let answer = match step {
                Step::Sender => conversation.sender(&envelope).await?,
                Step::Recipient(recipient) => {
                    let candidate = envelope
                        .recipients
                        .iter()
                        .rev()
                        .find(|(address, _)| address.eq_ignore_ascii_case(&recipient))
                        .cloned()
                        .ok_or_else(|| Error::Invalid(format!("{recipient} is not a recipient")))?;
                    conversation.recipient(&envelope, &candidate).await?
                }
            };
            Ok::<_, Error>((answer, conversation))
        })
        .await;
        match answer {
            Ok((answer, conversation)) => {
                self.keep_conversation(&name, conversation);
                Ok(answer.map(Into::into))
            }
            Err(e) => {
                metrics::counter!(telemetry::MILTER_CHECKS, "milter" => name, "decision" => "error").increment(1);
                Err(e)
            }
        }
    }
}

impl StoreState {
    /// Puts milter `name`'s new body (CRLF lines) in place of the message's.
    fn replace_body(&self, name: &str, body: &[u8]) {
        let replaced = self.host.conn.as_ref().is_some_and(|conn| {
            let mut conn = conn.lock();
            let message = conn.transaction.as_mut().and_then(|tx| tx.message.as_mut());
            message.map(|message| message.replace_body(body)).is_some()
        });
        if replaced {
            tracing::info!(milter = name, bytes = body.len(), "milter replaced the message body");
        }
    }
}

impl milter::Host for StoreState {
    async fn sender(&mut self, name: String) -> Result<Option<milter::Decision>, Error> {
        self.live_step(name, Step::Sender).await
    }

    async fn recipient(&mut self, name: String, recipient: String) -> Result<Option<milter::Decision>, Error> {
        self.live_step(name, Step::Recipient(recipient)).await
    }

    async fn check(&mut self, name: String) -> Result<milter::Outcome, Error> {
        let filter = self.backend("milter", &name, |b| &b.milter)?;
        let (reader, envelope) = self.message_and("check", envelope)?;
        let kept = self.take_conversation(&name);
        let outcome = bounded(self.deadline, async move {
            let message = read_whole(reader).await?;
            match kept {
                Some(mut conversation) => {
                    let outcome = conversation.finish(&envelope, &message).await?;
                    Ok::<_, Error>((outcome, Some(conversation)))
                }
                None => Ok((filter.check(&envelope, &message).await?, None)),
            }
        })
        .await;
        let decision = match &outcome {
            Ok((Outcome { decision, .. }, _)) => match decision {
                Decision::Accept => "accept",
                Decision::Discard => "discard",
                Decision::Reject(_) => "reject",
                Decision::Tempfail(_) => "tempfail",
            },
            Err(_) => "error",
        };
        metrics::counter!(telemetry::MILTER_CHECKS, "milter" => name.clone(), "decision" => decision).increment(1);
        let (outcome, conversation) = outcome?;
        if let Some(conversation) = conversation {
            self.keep_conversation(&name, conversation);
        }
        if let (Decision::Accept, Some(body)) = (&outcome.decision, &outcome.body) {
            self.replace_body(&name, body);
        }
        Ok(milter::Outcome {
            decision: outcome.decision.into(),
            changes: outcome.changes.into_iter().map(Into::into).collect(),
        })
    }
}
