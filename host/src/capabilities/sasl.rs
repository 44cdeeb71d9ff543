//! Password checks by Dovecot's authentication service, over its
//! authentication client protocol (version 1.2, the one Postfix and Exim
//! speak to it): one connection per check, a handshake, then `AUTH` with
//! the PLAIN mechanism and its initial response. Dovecot's passdb decides,
//! so the users of the mailboxes are the users of the submission port.

use super::CapabilityError;
use base64::Engine;
use std::net::IpAddr;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// The longest line read from the service (its handshake lines are short).
const MAX_LINE: usize = 16 * 1024;

/// What the service is told about the client whose password is checked.
#[derive(Clone, Copy, Debug)]
pub struct ClientInfo {
    /// The SMTP client's address (`rip`, for Dovecot's logs and penalties).
    pub remote: IpAddr,
    /// The address it reached (`lip`).
    pub local: IpAddr,
    /// Whether the SMTP session is encrypted (`secured`: Dovecot refuses
    /// plaintext passwords over other connections unless told otherwise).
    pub secured: bool,
}

/// Dovecot's authentication service, at `HOST:PORT` (an `inet_listener`
/// of `service auth`) or a Unix socket path such as
/// `/run/dovecot/auth-client`.
#[derive(Clone, Debug)]
pub struct DovecotAuth {
    address: String,
}

impl DovecotAuth {
    /// The service at `address` (a path when it starts with `/`).
    pub fn new(address: String) -> DovecotAuth {
        DovecotAuth { address }
    }

    /// Whether `password` is `user`'s: the name the service knows the user
    /// by (it may canonicalise it) or `None` for a wrong password or an
    /// unknown user. An unreachable or confused service is an error.
    pub async fn check(
        &self,
        user: &str,
        password: &str,
        client: ClientInfo,
    ) -> Result<Option<String>, CapabilityError> {
        let failed = |e: std::io::Error| CapabilityError::Backend(format!("dovecot auth ({}): {e}", self.address));
        let stream = super::connect(&self.address).await.map_err(failed)?;
        converse(stream, user, password, client).await.map_err(|e| match e {
            CapabilityError::Backend(why) => {
                CapabilityError::Backend(format!("dovecot auth ({}): {why}", self.address))
            }
            other => other,
        })
    }
}

/// The PLAIN initial response: authorisation identity (empty), user, password.
fn plain_response(user: &str, password: &str) -> String {
    let mut raw = Vec::with_capacity(user.len() + password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The result of the service's answer line to request `1`.
fn answer(line: &str, user: &str) -> Result<Option<String>, CapabilityError> {
    let mut fields = line.split('\t');
    let (verdict, id) = (fields.next(), fields.next());
    if id != Some("1") {
        return Err(CapabilityError::Backend(format!("unexpected answer {line:?}")));
    }
    let named = fields
        .filter_map(|f| f.strip_prefix("user="))
        .next()
        .map(str::to_string);
    match verdict {
        Some("OK") => Ok(Some(named.unwrap_or_else(|| user.to_string()))),
        Some("FAIL") => Ok(None),
        _ => Err(CapabilityError::Backend(format!("unexpected answer {line:?}"))),
    }
}

/// The next line from the service, without its end; `Err` names `during`
/// when the service closed the connection instead.
async fn next_line(
    stream: &mut (impl tokio::io::AsyncBufRead + Unpin),
    during: &str,
) -> Result<String, CapabilityError> {
    let mut line = String::new();
    let read = stream
        .take(MAX_LINE as u64)
        .read_line(&mut line)
        .await
        .map_err(|e| CapabilityError::Backend(e.to_string()))?;
    if read == 0 {
        return Err(CapabilityError::Backend(format!("closed {during}")));
    }
    Ok(line.trim_end().to_string())
}

async fn converse(
    stream: impl AsyncRead + AsyncWrite + Unpin,
    user: &str,
    password: &str,
    client: ClientInfo,
) -> Result<Option<String>, CapabilityError> {
    let io = |e: std::io::Error| CapabilityError::Backend(e.to_string());
    let mut stream = BufReader::new(stream);
    let hello = format!("VERSION\t1\t2\nCPID\t{}\n", std::process::id());
    stream.get_mut().write_all(hello.as_bytes()).await.map_err(io)?;
    loop {
        let line = next_line(&mut stream, "during the handshake").await?;
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["VERSION", major, ..] if *major != "1" => {
                return Err(CapabilityError::Backend(format!(
                    "protocol version {major} (1 expected)"
                )));
            }
            ["DONE"] => break,
            _ => {}
        }
    }
    let secured = if client.secured { "\tsecured" } else { "" };
    let request = format!(
        "AUTH\t1\tPLAIN\tservice=smtp\tnologin\trip={}\tlip={}{secured}\tresp={}\n",
        client.remote,
        client.local,
        plain_response(user, password)
    );
    stream.get_mut().write_all(request.as_bytes()).await.map_err(io)?;
    answer(&next_line(&mut stream, "before answering").await?, user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_become_users_failures_or_errors() {
        assert_eq!(
            answer("OK\t1\tuser=alice@example.com", "alice").unwrap().as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(answer("OK\t1", "alice").unwrap().as_deref(), Some("alice"));
        assert_eq!(answer("FAIL\t1\tuser=alice", "alice").unwrap(), None);
        assert!(answer("CONT\t1\t", "alice").is_err());
        assert!(
            answer("OK\t2\tuser=mallory", "alice").is_err(),
            "an answer to another request"
        );
        assert_eq!(plain_response("u", "p"), "AHUAcA==");
    }
}
