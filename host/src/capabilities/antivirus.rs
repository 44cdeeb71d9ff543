//! Virus scanning of a message by a ClamAV daemon (`clamd`), streamed with
//! its INSTREAM command through the `clamav-client` crate. The scanner's
//! reply is turned into a result here; a scanner that cannot answer is an
//! error, never a clean result.

use super::CapabilityError;
use std::path::PathBuf;

/// Where the ClamAV daemon listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clamd {
    /// `HOST:PORT` of its `TCPSocket`.
    Tcp(String),
    /// The path of its `LocalSocket`.
    Socket(PathBuf),
}

impl Clamd {
    /// `HOST:PORT`, or a path (starting with `/`) for a Unix socket.
    pub fn parse(address: &str) -> Clamd {
        if super::is_socket_path(address) {
            Clamd::Socket(address.into())
        } else {
            Clamd::Tcp(address.to_string())
        }
    }
}

/// What a scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scan {
    /// Nothing.
    Clean,
    /// The signature names the scanner reported (`Eicar-Test-Signature`).
    Infected(String),
}

/// The scanner of one server.
#[derive(Clone, Debug)]
pub struct Antivirus {
    clamd: Clamd,
}

/// The scan result in a clamd INSTREAM reply (`stream: OK`, `stream: NAME
/// FOUND`, `… ERROR`).
fn parse_reply(reply: &[u8]) -> Result<Scan, CapabilityError> {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\0', '\n']).trim();
    let result = text.strip_prefix("stream:").map(str::trim);
    match result {
        Some("OK") => Ok(Scan::Clean),
        Some(found) if found.ends_with(" FOUND") => Ok(Scan::Infected(found.trim_end_matches(" FOUND").to_string())),
        _ => Err(CapabilityError::Backend(format!("clamd: {text}"))),
    }
}

impl Antivirus {
    /// A scanner that asks `clamd`.
    pub fn new(clamd: Clamd) -> Antivirus {
        Antivirus { clamd }
    }

    /// Scans `message` (the whole message: clamd decodes its MIME parts).
    pub async fn scan(&self, message: &[u8]) -> Result<Scan, CapabilityError> {
        use clamav_client::tokio::{Socket, Tcp, scan_buffer};
        let reply = match &self.clamd {
            Clamd::Tcp(host_address) => scan_buffer(message, Tcp { host_address }, None).await,
            Clamd::Socket(socket_path) => scan_buffer(message, Socket { socket_path }, None).await,
        }
        .map_err(|e| CapabilityError::Backend(format!("clamd ({:?}): {e}", self.clamd)))?;
        parse_reply(&reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_become_results_and_anything_else_an_error() {
        assert_eq!(parse_reply(b"stream: OK\0"), Ok(Scan::Clean));
        assert_eq!(
            parse_reply(b"stream: Win.Test.EICAR_HDB-1 FOUND\0"),
            Ok(Scan::Infected("Win.Test.EICAR_HDB-1".into()))
        );
        for bad in [&b"INSTREAM size limit exceeded. ERROR\0"[..], b"", b"stream: "] {
            assert!(matches!(parse_reply(bad), Err(CapabilityError::Backend(_))), "{bad:?}");
        }
        assert_eq!(
            Clamd::parse("/run/clamav/clamd.ctl"),
            Clamd::Socket("/run/clamav/clamd.ctl".into())
        );
        assert_eq!(Clamd::parse("127.0.0.1:3310"), Clamd::Tcp("127.0.0.1:3310".into()));
    }
}
