//! Checking a password by logging in to an IMAP server (RFC 9051 `LOGIN`,
//! with `async-imap`) and out again: for mail servers whose users are
//! known to the mailbox server. The password only crosses TLS unless the
//! configuration says `never` (a server on the same machine).

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use async_imap::error::Error as ImapError;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::CapabilityError;

/// How the connection to the IMAP server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImapTls {
    /// TLS from the first byte (port 993).
    Implicit,
    /// `STARTTLS` after the greeting, which must succeed (port 143).
    Required,
    /// No TLS: the password in the clear, for a server on this machine.
    Never,
}

impl FromStr for ImapTls {
    type Err = CapabilityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "implicit" => Ok(ImapTls::Implicit),
            "required" => Ok(ImapTls::Required),
            "never" => Ok(ImapTls::Never),
            other => Err(CapabilityError::Invalid(format!(
                "IMAP tls {other:?}: implicit, required or never"
            ))),
        }
    }
}

/// RFC 5530's response codes of a `NO` that says nothing about the
/// password: the server cannot decide now, or will not take a password
/// on this connection. Any other `NO` refuses the credentials.
const UNDECIDED: [&str; 3] = ["UNAVAILABLE", "PRIVACYREQUIRED", "SERVERBUG"];

/// Whether the IMAP server `host` takes `user` and `password`, asked at
/// the first of its addresses `addrs` that takes a connection (the name is
/// what its certificate must show): `Ok(false)` when it refuses them, an
/// error when it cannot be asked or cannot decide.
pub async fn check_login(
    addrs: &[SocketAddr],
    host: &str,
    tls: ImapTls,
    tls_config: Arc<rustls::ClientConfig>,
    user: &str,
    password: &str,
) -> Result<bool, CapabilityError> {
    let mut tcp = Err(backend(format!("{host} has no address")));
    for addr in addrs {
        tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| backend(format!("{addr}: {e}")));
        if tcp.is_ok() {
            break;
        }
    }
    let tcp = tcp?;
    match tls {
        ImapTls::Never => {
            let mut client = async_imap::Client::new(tcp);
            greeting(&mut client).await?;
            login(client, user, password).await
        }
        ImapTls::Implicit => {
            let mut client = async_imap::Client::new(secure(tcp, host, tls_config).await?);
            greeting(&mut client).await?;
            login(client, user, password).await
        }
        ImapTls::Required => {
            let mut client = async_imap::Client::new(tcp);
            greeting(&mut client).await?;
            client
                .run_command_and_check_ok("STARTTLS", None)
                .await
                .map_err(|e| backend(format!("STARTTLS refused: {e}")))?;
            let client = async_imap::Client::new(secure(client.into_inner(), host, tls_config).await?);
            login(client, user, password).await
        }
    }
}

fn backend(text: String) -> CapabilityError {
    CapabilityError::Backend(text)
}

/// The TLS handshake, checking the certificate is `host`'s.
async fn secure(
    tcp: TcpStream,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, CapabilityError> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| CapabilityError::Invalid(format!("{host:?} is not a server name: {e}")))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| backend(format!("TLS with {host}: {e}")))
}

/// Reads the server's greeting: `* OK` (or `* PREAUTH`); a `* BYE` or a
/// closed connection is an error.
async fn greeting<T>(client: &mut async_imap::Client<T>) -> Result<(), CapabilityError>
where
    T: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let response = client
        .read_response()
        .await
        .map_err(|e| backend(format!("no greeting: {e}")))?
        .ok_or_else(|| backend("closed before its greeting".into()))?;
    match response.parsed() {
        async_imap::imap_proto::Response::Data {
            status: async_imap::imap_proto::Status::Ok | async_imap::imap_proto::Status::PreAuth,
            ..
        } => Ok(()),
        other => Err(backend(format!("greeting {other:?}"))),
    }
}

/// `LOGIN`, then `LOGOUT` when it was taken.
async fn login<T>(client: async_imap::Client<T>, user: &str, password: &str) -> Result<bool, CapabilityError>
where
    T: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    match client.login(user, password).await {
        Ok(mut session) => {
            let _ = session.logout().await;
            Ok(true)
        }
        Err((ImapError::No(text), _)) if !UNDECIDED.iter().any(|code| text.contains(code)) => Ok(false),
        Err((ImapError::Validate(e), _)) => Err(CapabilityError::Invalid(format!("not an IMAP string: {e}"))),
        Err((e, _)) => Err(backend(format!("LOGIN: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_modes_read_as_configured() {
        assert_eq!("implicit".parse::<ImapTls>().ok(), Some(ImapTls::Implicit));
        assert_eq!("required".parse::<ImapTls>().ok(), Some(ImapTls::Required));
        assert_eq!("never".parse::<ImapTls>().ok(), Some(ImapTls::Never));
        assert!(
            "opportunistic".parse::<ImapTls>().is_err(),
            "a password is never sent over maybe-TLS"
        );
    }
}
