//! The PROXY protocol (HAProxy's, versions 1 and 2) on listeners behind a
//! load balancer: the header it sends ahead of the client's bytes says who
//! the client is, so limits, policy, logs and `Received:` see the client
//! rather than the balancer. Only balancers in the listener's `proxy_from`
//! networks are believed; anything else is closed before the greeting.

use ipnet::IpNet;
use ppp::{HeaderResult, PartialResult, v1, v2};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a balancer may take to send the header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest header read: a v1 header is at most 107 bytes, a v2 header
/// with its TLVs (TLS details, unique ids) fits easily.
const MAX_HEADER: usize = 4096;

/// Why a proxied connection was closed before its session began.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    /// The connection does not come from a network in `proxy_from`.
    #[error("{0} is not a trusted proxy (proxy_from)")]
    Untrusted(IpAddr),
    /// What arrived is not a PROXY protocol header.
    #[error("no valid PROXY protocol header: {0}")]
    Invalid(String),
    /// The header did not arrive whole in time.
    #[error("no PROXY protocol header within {}s", HEADER_TIMEOUT.as_secs())]
    Timeout,
    /// The connection failed or closed while the header was awaited.
    #[error("connection lost before the PROXY protocol header: {0}")]
    Lost(String),
}

/// The client and server addresses a header names; `None` for a header that
/// names none (v1 `UNKNOWN`, v2 `LOCAL` — a balancer's health check), when
/// the connection's own addresses stand.
pub type Addresses = Option<(SocketAddr, SocketAddr)>;

/// Whether `peer` is in one of the `trusted` networks.
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    trusted.iter().any(|net| net.contains(&peer))
}

/// Reads the PROXY header at the start of `tcp`, from a balancer in
/// `trusted`, leaving every byte after it unread for the session.
pub async fn read_header(tcp: &mut TcpStream, peer: SocketAddr, trusted: &[IpNet]) -> Result<Addresses, ProxyError> {
    if !is_trusted(peer.ip(), trusted) {
        return Err(ProxyError::Untrusted(peer.ip()));
    }
    let (length, addresses) = tokio::time::timeout(HEADER_TIMEOUT, peek_header(tcp))
        .await
        .map_err(|_| ProxyError::Timeout)??;
    let mut header = vec![0u8; length];
    tcp.read_exact(&mut header)
        .await
        .map_err(|e| ProxyError::Lost(e.to_string()))?;
    Ok(addresses)
}

/// Peeks at the stream until a whole header is there: its length and addresses.
async fn peek_header(tcp: &TcpStream) -> Result<(usize, Addresses), ProxyError> {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut seen = 0;
    loop {
        let n = tcp.peek(&mut buf).await.map_err(|e| ProxyError::Lost(e.to_string()))?;
        if n == 0 {
            return Err(ProxyError::Lost("closed".into()));
        }
        match parse(&buf[..n]) {
            Parsed::Complete(length, addresses) => return Ok((length, addresses)),
            Parsed::Invalid(why) => return Err(ProxyError::Invalid(why)),
            Parsed::Incomplete if n == MAX_HEADER => return Err(ProxyError::Invalid("header too long".into())),
            // Peeking again returns at once with what is there: wait for more.
            Parsed::Incomplete if n == seen => tokio::time::sleep(Duration::from_millis(5)).await,
            Parsed::Incomplete => seen = n,
        }
    }
}

/// What the bytes at the start of a connection are.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A header of this length, naming these addresses.
    Complete(usize, Addresses),
    /// The start of a header: more bytes are needed.
    Incomplete,
    /// Not a header.
    Invalid(String),
}

fn parse(bytes: &[u8]) -> Parsed {
    let result = HeaderResult::parse(bytes);
    if result.is_incomplete() {
        return Parsed::Incomplete;
    }
    match result {
        HeaderResult::V1(Ok(header)) => {
            let addresses = match header.addresses {
                v1::Addresses::Tcp4(a) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
                v1::Addresses::Tcp6(a) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
                v1::Addresses::Unknown => None,
            };
            Parsed::Complete(header.header.len(), addresses)
        }
        HeaderResult::V2(Ok(header)) => {
            let addresses = match (header.command, header.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
                (v2::Command::Proxy, other) => {
                    return Parsed::Invalid(format!("v2 PROXY for {other:?}, not a TCP client"));
                }
            };
            Parsed::Complete(header.len(), addresses)
        }
        HeaderResult::V1(Err(e)) => Parsed::Invalid(e.to_string()),
        HeaderResult::V2(Err(e)) => Parsed::Invalid(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut bytes = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        bytes.extend([0x20 | command, family]);
        bytes.extend((addresses.len() as u16).to_be_bytes());
        bytes.extend_from_slice(addresses);
        bytes
    }

    fn pair(client: &str, server: &str) -> Addresses {
        Some((client.parse().unwrap(), server.parse().unwrap()))
    }

    #[test]
    fn v1_headers_name_the_client_and_leave_what_follows() {
        let header = "PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n";
        let text = format!("{header}EHLO x\r\n");
        assert_eq!(
            parse(text.as_bytes()),
            Parsed::Complete(header.len(), pair("203.0.113.7:40000", "192.0.2.1:25"))
        );
        let six = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n";
        assert_eq!(
            parse(six),
            Parsed::Complete(six.len(), pair("[2001:db8::7]:40000", "[2001:db8::1]:25"))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Parsed::Complete(15, None));
        assert_eq!(parse(b"PROXY TCP4 203.0"), Parsed::Incomplete);
        assert!(matches!(parse(b"EHLO client.test\r\n"), Parsed::Invalid(_)));
        assert!(matches!(
            parse(b"PROXY TCP4 300.0.0.1 1.2.3.4 1 2\r\n"),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn v2_headers_name_the_client_and_local_ones_name_none() {
        let mut four = v2(1, 0x11, &[203, 0, 113, 7, 192, 0, 2, 1, 0x9c, 0x40, 0, 25]);
        let length = four.len();
        four.extend_from_slice(b"EHLO");
        assert_eq!(
            parse(&four),
            Parsed::Complete(length, pair("203.0.113.7:40000", "192.0.2.1:25"))
        );
        assert_eq!(parse(&four[..20]), Parsed::Incomplete);
        let local = v2(0, 0x00, &[]);
        assert_eq!(parse(&local), Parsed::Complete(16, None));
        assert!(
            matches!(parse(&v2(1, 0x31, &[0; 216])), Parsed::Invalid(_)),
            "unix sockets are no client"
        );
    }

    #[test]
    fn only_listed_networks_are_trusted() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
        assert!(is_trusted("10.1.2.3".parse().unwrap(), &trusted));
        assert!(is_trusted("::ffff:10.1.2.3".parse().unwrap(), &trusted));
        assert!(is_trusted("2001:db8::5".parse().unwrap(), &trusted));
        assert!(!is_trusted("192.0.2.1".parse().unwrap(), &trusted));
        assert!(!is_trusted("10.0.0.1".parse().unwrap(), &[]));
    }
}
