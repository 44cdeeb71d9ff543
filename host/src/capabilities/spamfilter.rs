//! Spam scanning of a message by rspamd: its `/checkv2` HTTP endpoint gets
//! the message and, as headers, the envelope and connection facts it scores
//! (client address, HELO, sender, recipients, authenticated user). The JSON
//! reply becomes a [`SpamReport`]; a scanner that cannot answer is an
//! error, never a clean result. HTTP/1.1 through `hyper`.

use super::CapabilityError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The most of a reply read (rspamd's replies are a few KiB).
const MAX_REPLY: usize = 1 << 20;

/// What rspamd is told about the message besides its text.
#[derive(Clone, Debug, Default)]
pub struct Envelope {
    /// The client's address.
    pub client_ip: String,
    /// The HELO/EHLO name.
    pub helo: String,
    /// The envelope sender, empty for `<>`.
    pub sender: String,
    /// The accepted recipients.
    pub recipients: Vec<String>,
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// The transaction id, for rspamd's log.
    pub queue_id: String,
    /// This server's name.
    pub hostname: String,
}

/// rspamd's verdict on a message.
#[derive(Clone, Debug, PartialEq)]
pub struct SpamReport {
    /// `no action`, `greylist`, `add header`, `rewrite subject`,
    /// `soft reject` or `reject`.
    pub action: String,
    /// The message's score.
    pub score: f64,
    /// The score at which rspamd rejects.
    pub required_score: f64,
    /// The symbols that matched, with their scores, by name.
    pub symbols: Vec<(String, f64)>,
    /// The reply text rspamd suggests (`smtp_message`).
    pub smtp_message: Option<String>,
    /// The subject rspamd suggests for `rewrite subject`.
    pub subject: Option<String>,
}

#[derive(Deserialize)]
struct Reply {
    action: String,
    score: f64,
    required_score: f64,
    #[serde(default)]
    symbols: BTreeMap<String, Symbol>,
    #[serde(default)]
    messages: BTreeMap<String, serde_json::Value>,
    subject: Option<String>,
}

#[derive(Deserialize)]
struct Symbol {
    #[serde(default)]
    score: f64,
}

/// The report in a `/checkv2` JSON reply.
fn parse_reply(body: &[u8]) -> Result<SpamReport, CapabilityError> {
    let reply: Reply =
        serde_json::from_slice(body).map_err(|e| CapabilityError::Backend(format!("rspamd: unreadable reply: {e}")))?;
    Ok(SpamReport {
        action: reply.action,
        score: reply.score,
        required_score: reply.required_score,
        symbols: reply.symbols.into_iter().map(|(name, s)| (name, s.score)).collect(),
        smtp_message: reply
            .messages
            .get("smtp_message")
            .and_then(|m| m.as_str())
            .map(str::to_string),
        subject: reply.subject,
    })
}

/// The rspamd of one server.
#[derive(Clone, Debug)]
pub struct Rspamd {
    address: String,
}

impl Rspamd {
    /// A scanner at `address` (`HOST:PORT` of rspamd's normal worker).
    pub fn new(address: impl Into<String>) -> Rspamd {
        Rspamd {
            address: address.into(),
        }
    }

    /// Asks rspamd about `message`.
    pub async fn check(&self, message: Vec<u8>, envelope: &Envelope) -> Result<SpamReport, CapabilityError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            CapabilityError::Backend(format!("rspamd ({}): {what}: {e}", self.address))
        };
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(|e| failed("connect", &e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed("handshake", &e))?;
        tokio::spawn(connection);
        let mut request = hyper::Request::post("/checkv2")
            .header(hyper::header::HOST, self.address.as_str())
            .header("IP", &envelope.client_ip)
            .header("Helo", &envelope.helo)
            .header("From", &envelope.sender)
            .header("Queue-Id", &envelope.queue_id)
            .header("MTA-Name", &envelope.hostname);
        for recipient in &envelope.recipients {
            request = request.header("Rcpt", recipient);
        }
        if let Some(user) = &envelope.user {
            request = request.header("User", user);
        }
        let request = request
            .body(Full::new(Bytes::from(message)))
            .map_err(|e| failed("request", &e))?;
        let response = sender.send_request(request).await.map_err(|e| failed("request", &e))?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(|e| failed("reply", &e))?
            .to_bytes();
        if !status.is_success() {
            return Err(failed(
                "HTTP status",
                &format!("{status}: {}", String::from_utf8_lossy(&body)),
            ));
        }
        parse_reply(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkv2_reply_becomes_a_report() {
        let body = br#"{"is_skipped":false,"score":6.5,"required_score":15.0,"action":"add header",
            "symbols":{"GTUBE":{"name":"GTUBE","score":6.0},"MIME_GOOD":{"name":"MIME_GOOD","score":-0.1,"options":["text/plain"]}},
            "messages":{"smtp_message":"Gtube pattern"},"subject":"***SPAM*** hi","message-id":"x@y"}"#;
        let report = parse_reply(body).unwrap();
        assert_eq!(report.action, "add header");
        assert_eq!((report.score, report.required_score), (6.5, 15.0));
        assert_eq!(
            report.symbols,
            vec![("GTUBE".to_string(), 6.0), ("MIME_GOOD".to_string(), -0.1)]
        );
        assert_eq!(report.smtp_message.as_deref(), Some("Gtube pattern"));
        assert_eq!(report.subject.as_deref(), Some("***SPAM*** hi"));
        assert!(matches!(
            parse_reply(b"<html>busy</html>"),
            Err(CapabilityError::Backend(_))
        ));
    }
}
