//! Connections to the services capabilities and delivery talk to (Dovecot,
//! spamd, clamd, an LMTP server), named as `HOST:PORT` or, when the name is
//! an absolute path, as a Unix socket on this machine.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// A byte stream to a service, whichever kind of socket carries it.
pub trait ServiceStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ServiceStream for T {}

/// Whether `address` names a Unix socket (an absolute path) instead of a
/// server on the network.
pub fn is_socket_path(address: &str) -> bool {
    address.starts_with('/')
}

/// Connects to the service at `address` (`HOST:PORT` or a socket path).
pub async fn connect(address: &str) -> std::io::Result<Box<dyn ServiceStream>> {
    Ok(if is_socket_path(address) {
        Box::new(UnixStream::connect(address).await?)
    } else {
        Box::new(TcpStream::connect(address).await?)
    })
}
