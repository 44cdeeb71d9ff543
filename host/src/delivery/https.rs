//! Outbound delivery's HTTPS client: one request to a host over TLS
//! verified against the system's roots (`SSL_CERT_FILE` when set), HTTP/1.1,
//! no redirects. MTA-STS fetches policies with it, and TLS reports are
//! posted with it.

use super::client::{CertCheck, tls_config};
use super::route::{Address, target};
use crate::capabilities::Dns;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

/// Why an HTTPS request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HttpsError {
    /// Whether it was the TLS handshake (the server's certificate) that failed.
    pub tls: bool,
    /// What happened, one line for the log.
    pub message: String,
}

impl HttpsError {
    fn other(message: String) -> HttpsError {
        HttpsError { tls: false, message }
    }
}

/// Sends `request` to `host` on `port` (resolved with `dns`; loopback and
/// link-local addresses only with `allow_local`) and returns the response
/// as it starts.
pub async fn exchange(
    dns: &Dns,
    allow_local: bool,
    host: &str,
    port: u16,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<Incoming>, HttpsError> {
    let server = target(dns, host, port, allow_local)
        .await
        .map_err(|e| HttpsError::other(format!("resolving {host}: {e}")))?;
    let Some(Address::Inet(addr)) = server.addrs.first().cloned() else {
        return Err(HttpsError::other(format!("{host} has no address")));
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| HttpsError::other(format!("connecting to {host} ({addr}): {e}")))?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| HttpsError::other(e.to_string()))?;
    let config = tls_config(CertCheck::Roots).map_err(|e| HttpsError::other(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| HttpsError {
            tls: true,
            message: format!("TLS with {host}: {e}"),
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| HttpsError::other(format!("HTTP with {host}: {e}")))?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| HttpsError::other(format!("HTTP with {host}: {e}")))
}
