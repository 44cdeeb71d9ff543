//! HTTP services (`[http.NAME]`, grant `http:NAME`): webhooks and REST APIs
//! that plugins call, through `hyper` (HTTP/1.1, one connection per
//! request, TLS with rustls against the system's roots). A plugin names a
//! path under the service's URL, never another host, and the service's
//! header fields (its credentials) are added by the host.

use super::CapabilityError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::collections::BTreeMap;
use std::time::Duration;

pub use waraka_config::HttpConfig;

/// The largest response body a plugin gets.
pub const MAX_RESPONSE: usize = 1024 * 1024;

/// What a service answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The header fields, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body, at most [`MAX_RESPONSE`] bytes.
    pub body: Vec<u8>,
}

/// One named service.
pub struct HttpService {
    tls: bool,
    host: String,
    port: u16,
    /// The path every request's path goes under, ending with `/`.
    base: String,
    headers: BTreeMap<String, String>,
    timeout: Duration,
}

/// Reads `http[s]://HOST[:PORT][/PATH]`.
fn parse_url(url: &str) -> Result<(bool, String, u16, String), String> {
    let (tls, rest) = match url.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some(("http", rest)) => (false, rest),
        _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            let port = port.parse().map_err(|_| format!("{url:?}: {port:?} is not a port"))?;
            (host, port)
        }
        _ => (authority, if tls { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || authority.contains('@') || path.contains(['?', '#']) {
        return Err(format!(
            "{url:?}: a URL of a host and a path, without user, query or fragment"
        ));
    }
    let base = match path.trim_end_matches('/') {
        "" => "/".to_string(),
        path => format!("/{path}/"),
    };
    Ok((tls, host.to_string(), port, base))
}

/// Whether `path` stays under the base: relative, no `..` segment, no
/// fragment, no white space or control character.
fn safe_path(path: &str) -> bool {
    !path.starts_with('/')
        && !path.contains("://")
        && !path.contains('#')
        && !path.chars().any(|c| c.is_whitespace() || c.is_control())
        && path
            .split(['?'])
            .next()
            .unwrap_or_default()
            .split('/')
            .all(|segment| !matches!(segment, ".." | "." | "%2e%2e" | "%2E%2E"))
}

/// Whether a plugin's header field `name` is sent: not one of the
/// service's `own` (they win: a plugin cannot replace the credentials), nor
/// one of the message framing, which is hyper's.
fn plugin_may_set(own: &BTreeMap<String, String>, name: &str) -> bool {
    !own.keys().any(|own| own.eq_ignore_ascii_case(name))
        && !["host", "content-length", "transfer-encoding", "connection"]
            .iter()
            .any(|framing| framing.eq_ignore_ascii_case(name))
}

impl HttpService {
    /// The service of `config`; an error names what is wrong with its URL.
    pub fn new(config: &HttpConfig) -> Result<HttpService, String> {
        let (tls, host, port, base) = parse_url(&config.url)?;
        Ok(HttpService {
            tls,
            host,
            port,
            base,
            headers: config.headers.clone(),
            timeout: config.timeout,
        })
    }

    /// Sends `method` to `path` (relative to the service's URL) with
    /// `headers` besides the service's own, and `body`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<HttpResponse, CapabilityError> {
        if !safe_path(path) {
            return Err(CapabilityError::Invalid(format!(
                "{path:?} is not a path under the service's URL"
            )));
        }
        let method = hyper::Method::from_bytes(method.as_bytes())
            .map_err(|_| CapabilityError::Invalid(format!("{method:?} is not an HTTP method")))?;
        let authority = match (self.tls, self.port) {
            (true, 443) | (false, 80) => self.host.clone(),
            _ => format!("{}:{}", self.host, self.port),
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(hyper::header::HOST, authority);
        for (name, value) in headers.iter().filter(|(name, _)| plugin_may_set(&self.headers, name)) {
            request = request.header(name.as_str(), value.as_str());
        }
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CapabilityError::Invalid(format!("the request: {e}")))?;
        tokio::time::timeout(self.timeout, self.exchange(request))
            .await
            .map_err(|_| self.failed("no answer in time"))?
    }

    fn failed(&self, what: impl std::fmt::Display) -> CapabilityError {
        CapabilityError::Backend(format!("http {}:{}: {what}", self.host, self.port))
    }

    async fn exchange(&self, request: hyper::Request<Full<Bytes>>) -> Result<HttpResponse, CapabilityError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.failed(format!("connecting: {e}")))?;
        let response = if self.tls {
            let name = ServerName::try_from(self.host.clone()).map_err(|e| self.failed(e))?;
            let stream = tokio_rustls::TlsConnector::from(crate::tls::client_config())
                .connect(name, tcp)
                .await
                .map_err(|e| self.failed(format!("TLS: {e}")))?;
            self.send(TokioIo::new(stream), request).await?
        } else {
            self.send(TokioIo::new(tcp), request).await?
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| match e.downcast::<http_body_util::LengthLimitError>() {
                Ok(_) => CapabilityError::Limit(format!("the response is over {MAX_RESPONSE} bytes")),
                Err(e) => self.failed(format!("reading the response: {e}")),
            })?
            .to_bytes()
            .to_vec();
        Ok(HttpResponse { status, headers, body })
    }

    async fn send<S>(
        &self,
        io: TokioIo<S>,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, CapabilityError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| self.failed(format!("handshake: {e}")))?;
        tokio::spawn(connection);
        sender
            .send_request(request)
            .await
            .map_err(|e| self.failed(format!("request: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_host_and_a_base_path() {
        assert_eq!(
            parse_url("https://hooks.example.com/mail"),
            Ok((true, "hooks.example.com".into(), 443, "/mail/".into()))
        );
        assert_eq!(
            parse_url("http://127.0.0.1:8080/"),
            Ok((false, "127.0.0.1".into(), 8080, "/".into()))
        );
        assert_eq!(
            parse_url("http://[::1]:9/a/b/"),
            Ok((false, "::1".into(), 9, "/a/b/".into()))
        );
        for bad in [
            "ftp://x/",
            "x",
            "http://u:p@x/",
            "http://x/?q",
            "http://:80/",
            "http://x:y/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_services_own_fields_win() {
        let own = BTreeMap::from([("Authorization".to_string(), "Bearer x".to_string())]);
        assert!(plugin_may_set(&own, "X-Trace"));
        assert!(!plugin_may_set(&own, "authorization"));
        assert!(!plugin_may_set(&own, "Host"));
        assert!(!plugin_may_set(&own, "Content-Length"));
    }

    #[test]
    fn paths_stay_under_the_base() {
        for good in ["", "messages", "users/alice%40example.com?full=1"] {
            assert!(safe_path(good), "{good}");
        }
        for bad in [
            "/etc",
            "../admin",
            "a/../../b",
            "a/%2e%2e/b",
            "http://evil/",
            "a b",
            "a#b",
            "a\nb",
        ] {
            assert!(!safe_path(bad), "{bad}");
        }
    }
}
