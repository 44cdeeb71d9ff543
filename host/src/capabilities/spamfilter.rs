//! Spam scanning of a message by rspamd or SpamAssassin. rspamd's
//! `/checkv2` HTTP endpoint gets the message and, as headers, the envelope
//! and connection facts it scores (client address, HELO, sender,
//! recipients, authenticated user); its JSON reply becomes a [`SpamReport`]
//! (HTTP/1.1 through `hyper`). SpamAssassin's `spamd` gets the message over
//! its SPAMC/1.5 protocol (`REPORT`), and its verdict and the rules that
//! hit become the same report. A scanner that cannot answer is an error,
//! never a clean result.

use super::CapabilityError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::collections::BTreeMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
    /// Whose preferences the scan applies (spamd's `User:`, rspamd's
    /// `Deliver-To:`), if a plugin named one.
    pub scanned_for: Option<String>,
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

/// The spam scanner of one server (`[spamfilter]`).
#[derive(Clone, Debug)]
pub enum SpamScanner {
    /// rspamd's normal worker.
    Rspamd(Rspamd),
    /// SpamAssassin's `spamd`.
    Spamd(Spamd),
}

impl SpamScanner {
    /// Asks the scanner about `message`.
    pub async fn check(&self, message: Vec<u8>, envelope: &Envelope) -> Result<SpamReport, CapabilityError> {
        match self {
            SpamScanner::Rspamd(rspamd) => rspamd.check(message, envelope).await,
            SpamScanner::Spamd(spamd) => spamd.check(&message, envelope.scanned_for.as_deref()).await,
        }
    }
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
        if let Some(recipient) = &envelope.scanned_for {
            request = request.header("Deliver-To", recipient);
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

/// SpamAssassin's `spamd` at `HOST:PORT` or a Unix socket path (when it
/// starts with `/`). The protocol (`spamd/PROTOCOL` in SpamAssassin's
/// sources) is one request and one answer per connection, written here: no
/// maintained crate speaks it.
#[derive(Clone, Debug)]
pub struct Spamd {
    address: String,
}

impl Spamd {
    /// The daemon at `address`.
    pub fn new(address: impl Into<String>) -> Spamd {
        Spamd {
            address: address.into(),
        }
    }

    /// Asks spamd about `message`: the action is `add header` when it calls
    /// the message spam (its score reached the required one), else
    /// `no action`; the symbols are the rules that hit, with their points.
    /// With a `user`, spamd applies that user's preferences.
    pub async fn check(&self, message: &[u8], user: Option<&str>) -> Result<SpamReport, CapabilityError> {
        let failed = |e: std::io::Error| CapabilityError::Backend(format!("spamd ({}): {e}", self.address));
        let stream = super::connect(&self.address).await.map_err(failed)?;
        let reply = ask_spamd(stream, message, user).await.map_err(failed)?;
        parse_spamd_reply(&reply).map_err(|why| CapabilityError::Backend(format!("spamd ({}): {why}", self.address)))
    }
}

/// Sends one `REPORT` request for `message` (as `user`, when given) and
/// reads the whole answer.
async fn ask_spamd(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    message: &[u8],
    user: Option<&str>,
) -> std::io::Result<Vec<u8>> {
    // A user name is one header line: no line breaks get into the request.
    let user = user
        .filter(|u| !u.is_empty() && !u.contains(['\r', '\n']))
        .map(|u| format!("User: {u}\r\n"))
        .unwrap_or_default();
    let head = format!("REPORT SPAMC/1.5\r\nContent-length: {}\r\n{user}\r\n", message.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(message).await?;
    stream.flush().await?;
    let mut reply = Vec::new();
    stream.take(MAX_REPLY as u64).read_to_end(&mut reply).await?;
    Ok(reply)
}

/// The report in a spamd answer: `SPAMD/1.1 0 EX_OK`, headers with
/// `Spam: True ; 1003.7 / 5.0`, and the report table after a blank line.
fn parse_spamd_reply(reply: &[u8]) -> Result<SpamReport, String> {
    let text = String::from_utf8_lossy(reply);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("unreadable answer {:?}", text.chars().take(80).collect::<String>()))?;
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("0") {
        return Err(format!("refused: {status}"));
    }
    let verdict = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("Spam"))
        .map(|(_, value)| value.trim())
        .ok_or("no Spam header in the answer")?;
    // `True ; 1003.7 / 5.0`
    let (flag, scores) = verdict.split_once(';').ok_or("unreadable Spam header")?;
    let (score, required) = scores.split_once('/').ok_or("unreadable Spam header")?;
    let number = |n: &str| n.trim().parse::<f64>().map_err(|_| format!("unreadable score {n:?}"));
    let spam = matches!(flag.trim().to_ascii_lowercase().as_str(), "true" | "yes");
    Ok(SpamReport {
        action: if spam { "add header" } else { "no action" }.into(),
        score: number(score)?,
        required_score: number(required)?,
        symbols: report_rules(body),
        smtp_message: None,
        subject: None,
    })
}

/// The rules of a SpamAssassin report table (`pts rule name description`,
/// after its `----` line), with their points.
fn report_rules(report: &str) -> Vec<(String, f64)> {
    report
        .lines()
        .skip_while(|line| !line.starts_with("----"))
        .skip(1)
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let points = words.next()?.parse::<f64>().ok()?;
            let rule = words.next()?;
            let is_rule = rule
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            is_rule.then(|| (rule.to_string(), points))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spamd_report_becomes_a_report() {
        let reply = concat!(
            "SPAMD/1.1 0 EX_OK\r\nContent-length: 300\r\nSpam: True ; 1003.7 / 5.0\r\n\r\n",
            "Spam detection software, running on the system \"vm\",\n",
            "has identified this incoming email as possible spam.\n\n",
            "Content analysis details:   (1003.7 points, 5.0 required)\n\n",
            " pts rule name              description\n",
            "---- ---------------------- --------------------------------------------------\n",
            "1000 GTUBE                  BODY: Generic Test for Unsolicited Bulk Email\n",
            "-0.0 NO_RELAYS              Informational: message was not relayed via SMTP\n",
            " 1.2 MISSING_DATE           Missing Date: header\n",
            "                            continued 2.0 description\n",
        );
        let report = parse_spamd_reply(reply.as_bytes()).unwrap();
        assert_eq!(report.action, "add header");
        assert_eq!((report.score, report.required_score), (1003.7, 5.0));
        assert_eq!(
            report.symbols,
            vec![
                ("GTUBE".to_string(), 1000.0),
                ("NO_RELAYS".to_string(), -0.0),
                ("MISSING_DATE".to_string(), 1.2)
            ]
        );
        let clean = parse_spamd_reply(b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 2.7 / 5.0\r\n\r\n").unwrap();
        assert_eq!((clean.action.as_str(), clean.score), ("no action", 2.7));
        assert!(parse_spamd_reply(b"SPAMD/1.0 76 Bad header line: x\r\n\r\n").is_err());
        assert!(parse_spamd_reply(b"garbage").is_err());
    }

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
