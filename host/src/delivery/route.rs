//! Where mail for a domain goes: its MX hosts in preference order (hosts of
//! equal preference in random order, RFC 5321 §5.1), the domain itself when
//! it has no MX (the implicit MX), nowhere for a null MX (RFC 7505) — or a
//! configured next hop instead of DNS.

use crate::capabilities::{CapabilityError, Dns, MxHost, Tlsa, is_socket_path};
use hickory_resolver::proto::rr::RecordType;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use waraka_config::InetProtocols;

/// One server to try, with its addresses in the order to try them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host name (for TLS and logs), or the socket's path.
    pub host: String,
    /// Its addresses, in the order to try them.
    pub addrs: Vec<Address>,
    /// What DANE says of it.
    pub dane: Dane,
}

/// What DANE (RFC 7672) says of an MX host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Dane {
    /// Nothing: DANE is off, the domain's MX records are not DNSSEC-signed,
    /// or the host has no signed TLSA records.
    #[default]
    None,
    /// Its DNSSEC-proven TLSA records, which its certificate must match.
    Records(Arc<[Tlsa]>),
    /// Its TLSA records could not be validated: the host is not tried.
    Failed(String),
}

/// Where a server listens: an IP address and port, or a local Unix socket
/// (a mailbox server's LMTP socket, such as Dovecot's `/run/dovecot/lmtp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A TCP server.
    Inet(SocketAddr),
    /// A Unix stream socket on this machine.
    Unix(PathBuf),
}

impl Address {
    /// The IP address of a TCP server.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Address::Inet(addr) => Some(addr.ip()),
            Address::Unix(_) => None,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(addr) => addr.fmt(f),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The outcome of routing a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Servers to try in order.
    Targets(Vec<Target>),
    /// The domain says it takes no mail (null MX): bounce.
    NullMx,
    /// Neither MX nor address records: bounce.
    NoMailServer,
}

/// How routing treats DNS answers.
#[derive(Clone, Debug)]
pub struct RouteSettings {
    /// The port to deliver to (25; tests and special set-ups use others).
    pub port: u16,
    /// Whether loopback, unspecified and link-local addresses from DNS are
    /// used (off in production: a DNS record must not aim mail at ourselves).
    pub allow_local: bool,
    /// The IP versions connections use.
    pub protocols: InetProtocols,
}

impl RouteSettings {
    /// Whether a connection to `address` uses an allowed IP version (a
    /// Unix socket always does).
    pub fn allows(&self, address: &Address) -> bool {
        match (address.ip(), self.protocols) {
            (None, _) | (Some(_), InetProtocols::All) => true,
            (Some(ip), InetProtocols::Ipv4) => ip.is_ipv4(),
            (Some(ip), InetProtocols::Ipv6) => ip.is_ipv6(),
        }
    }
}

fn usable(ip: &IpAddr, allow_local: bool) -> bool {
    allow_local
        || !(ip.is_loopback()
            || ip.is_unspecified()
            || match ip {
                IpAddr::V4(v4) => v4.is_link_local(),
                IpAddr::V6(v6) => v6.is_unicast_link_local(),
            })
}

/// Orders MX records: lowest preference first, equal preferences shuffled
/// by `seed`. `None` for a null MX.
pub fn order_mx(mut hosts: Vec<MxHost>, seed: u64) -> Option<Vec<MxHost>> {
    if hosts.iter().any(|h| h.exchange.is_empty() || h.exchange == ".") {
        return None;
    }
    hosts.sort_by_key(|h| h.preference);
    let mut ordered = Vec::with_capacity(hosts.len());
    for group in hosts.chunk_by(|a, b| a.preference == b.preference) {
        let mut group = group.to_vec();
        let len = group.len();
        group.rotate_left((seed as usize) % len);
        ordered.extend(group);
    }
    Some(ordered)
}

/// The server `host` (a name or an IP address) on `port`: its addresses,
/// A before AAAA, without loopback and link-local ones unless `allow_local`.
pub async fn target(dns: &Dns, host: &str, port: u16, allow_local: bool) -> Result<Target, CapabilityError> {
    let ips = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => {
            let mut ips = dns.addresses(host, RecordType::A).await?;
            ips.extend(dns.addresses(host, RecordType::AAAA).await?);
            ips
        }
    };
    let mut addrs = Vec::new();
    for ip in ips {
        if usable(&ip, allow_local) {
            addrs.push(Address::Inet(SocketAddr::new(ip, port)));
        } else {
            tracing::warn!(host, %ip, "skipping a local address from DNS");
        }
    }
    Ok(Target {
        host: host.to_string(),
        addrs,
        dane: Dane::None,
    })
}

/// A configured or plugin-chosen next hop: its Unix socket when `host` is
/// a path, else `host` on `port` with local addresses allowed (the
/// administrator or a plugin chose them).
pub async fn hop_target(dns: &Dns, host: &str, port: u16) -> Result<Target, CapabilityError> {
    if is_socket_path(host) {
        return Ok(Target {
            host: host.to_string(),
            addrs: vec![Address::Unix(PathBuf::from(host))],
            dane: Dane::None,
        });
    }
    target(dns, host, port, true).await
}

/// Routes `domain` through DNS. A DNS failure is an error (retry later);
/// an MX host whose addresses cannot be found is skipped.
pub async fn resolve(dns: &Dns, domain: &str, settings: &RouteSettings) -> Result<Route, CapabilityError> {
    let Some(hosts) = order_mx(dns.mx(domain).await?, rand_seed()) else {
        return Ok(Route::NullMx);
    };
    let mut targets = Vec::new();
    if hosts.is_empty() {
        targets.push(target(dns, domain, settings.port, settings.allow_local).await?);
    } else {
        for mx in hosts {
            match target(dns, &mx.exchange, settings.port, settings.allow_local).await {
                Ok(t) => targets.push(t),
                Err(e) => tracing::warn!(host = %mx.exchange, error = %e, "MX host not resolved"),
            }
        }
    }
    targets.retain(|t| !t.addrs.is_empty());
    Ok(if targets.is_empty() {
        Route::NoMailServer
    } else {
        Route::Targets(targets)
    })
}

fn rand_seed() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(preference: u16, exchange: &str) -> MxHost {
        MxHost {
            preference,
            exchange: exchange.into(),
        }
    }

    fn names(hosts: &[MxHost]) -> Vec<&str> {
        hosts.iter().map(|h| h.exchange.as_str()).collect()
    }

    #[test]
    fn preference_first_and_equal_preferences_take_turns() {
        let records = vec![mx(20, "c"), mx(10, "a"), mx(10, "b"), mx(30, "d")];
        assert_eq!(names(&order_mx(records.clone(), 0).unwrap()), ["a", "b", "c", "d"]);
        assert_eq!(names(&order_mx(records, 1).unwrap()), ["b", "a", "c", "d"]);
        assert_eq!(order_mx(vec![mx(0, "")], 0), None, "null MX");
        assert_eq!(order_mx(Vec::new(), 0), Some(Vec::new()));
    }

    #[tokio::test]
    async fn a_hop_that_is_a_path_is_a_unix_socket() {
        let dns = Dns::default();
        let socket = hop_target(&dns, "/run/dovecot/lmtp", 24).await.unwrap();
        assert_eq!(socket.addrs, [Address::Unix("/run/dovecot/lmtp".into())]);
        assert_eq!(socket.addrs[0].to_string(), "unix:/run/dovecot/lmtp");
        let ip = hop_target(&dns, "127.0.0.1", 24).await.unwrap();
        assert_eq!(ip.addrs, [Address::Inet("127.0.0.1:24".parse().unwrap())]);
    }

    #[test]
    fn local_addresses_only_when_allowed() {
        let loopback: IpAddr = "127.0.0.2".parse().unwrap();
        let public: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!usable(&loopback, false) && usable(&loopback, true));
        assert!(usable(&public, false));
        assert!(!usable(&"fe80::1".parse().unwrap(), false));
    }
}
