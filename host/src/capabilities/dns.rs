//! DNS lookups through hickory-resolver: the system's resolvers
//! (`/etc/resolv.conf`) or the servers configured in `[dns]`. The lookups
//! DANE needs are validated by the resolver itself (DNSSEC, from the root's
//! trust anchors or those of `[dns] trust_anchor`), whatever the servers
//! asked say.

use super::CapabilityError;
use hickory_resolver::config::ResolveHosts;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Resolver settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsSettings {
    /// Name servers to ask (UDP, then TCP); empty: the system's.
    pub servers: Vec<SocketAddr>,
    /// How long one query may take before the next attempt.
    pub timeout: Option<Duration>,
    /// DNSSEC trust anchors (a file of DNSKEY records) instead of the root's.
    pub trust_anchor: Option<PathBuf>,
}

/// A TLSA record (RFC 6698): how a server's certificate is to be matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tlsa {
    /// 2: a trust anchor of the server's chain; 3: the server's own certificate.
    pub usage: u8,
    /// 0: the whole certificate; 1: its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0: the bytes themselves; 1: their SHA-256; 2: their SHA-512.
    pub matching: u8,
    /// What the selected bytes must match.
    pub data: Vec<u8>,
}

impl Tlsa {
    /// The record's data in presentation form: `3 1 1 8f2a…`.
    pub fn presentation(&self) -> String {
        let data: String = self.data.iter().map(|b| format!("{b:02x}")).collect();
        format!("{} {} {} {data}", self.usage, self.selector, self.matching)
    }
}

/// A mail exchanger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxHost {
    /// Lower is tried first.
    pub preference: u16,
    /// Without the final dot; empty for a null MX.
    pub exchange: String,
}

/// The resolver, built on first use so a machine without `/etc/resolv.conf`
/// still starts (its lookups fail instead).
pub struct Dns {
    settings: DnsSettings,
    resolver: OnceCell<Result<TokioResolver, String>>,
    /// The resolver that validates DNSSEC itself, for DANE.
    validating: OnceCell<Result<TokioResolver, String>>,
}

fn name_text(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_string()
}

impl Default for Dns {
    /// The system's resolvers.
    fn default() -> Dns {
        Dns::new(DnsSettings::default())
    }
}

impl Dns {
    /// A resolver with these settings.
    pub fn new(settings: DnsSettings) -> Dns {
        Dns {
            settings,
            resolver: OnceCell::new(),
            validating: OnceCell::new(),
        }
    }

    fn build(&self, validate: bool) -> Result<TokioResolver, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if self.settings.servers.is_empty() {
            Resolver::builder(provider).map_err(|e| format!("system resolver configuration: {e}"))?
        } else {
            let servers = self
                .settings
                .servers
                .iter()
                .map(|addr| {
                    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                        .into_iter()
                        .map(|mut c| {
                            c.port = addr.port();
                            c
                        })
                        .collect();
                    NameServerConfig::new(addr.ip(), true, connections)
                })
                .collect();
            Resolver::builder_with_config(ResolverConfig::from_parts(None, Vec::new(), servers), provider)
        };
        if validate && let Some(path) = &self.settings.trust_anchor {
            let anchors = TrustAnchors::from_file(path)
                .map_err(|e| format!("reading the trust anchors in {}: {e}", path.display()))?;
            builder = builder.with_trust_anchor(Arc::new(anchors));
        }
        let options = builder.options_mut();
        options.use_hosts_file = ResolveHosts::Never;
        options.attempts = 2;
        options.validate = validate;
        if let Some(timeout) = self.settings.timeout {
            options.timeout = timeout;
        }
        builder.build().map_err(|e| format!("building the resolver: {e}"))
    }

    /// The hickory resolver, built on first use.
    pub(super) async fn resolver(&self) -> Result<&TokioResolver, CapabilityError> {
        self.resolver
            .get_or_init(|| async { self.build(false) })
            .await
            .as_ref()
            .map_err(|e| CapabilityError::Backend(e.clone()))
    }

    /// The records of `rtype` for `name`, as hickory answers them; empty when
    /// the name or the record does not exist.
    async fn records(&self, name: Name, rtype: RecordType) -> Result<Vec<RData>, CapabilityError> {
        let resolver = self.resolver().await?;
        match resolver.lookup(name, rtype).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == rtype)
                .map(|r| r.data.clone())
                .collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(backend(e)),
        }
    }

    fn fqdn(name: &str) -> Result<Name, CapabilityError> {
        let name = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        Name::from_utf8(&name).map_err(|e| CapabilityError::Invalid(format!("{name:?}: {e}")))
    }

    /// The IPv4 (`RecordType::A`) or IPv6 (`AAAA`) addresses of `name`.
    pub async fn addresses(&self, name: &str, rtype: RecordType) -> Result<Vec<IpAddr>, CapabilityError> {
        let records = self.records(Self::fqdn(name)?, rtype).await?;
        Ok(records
            .into_iter()
            .filter_map(|r| match r {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect())
    }

    /// The mail exchangers of `name`, lowest preference first.
    pub async fn mx(&self, name: &str) -> Result<Vec<MxHost>, CapabilityError> {
        let mut hosts: Vec<MxHost> = self
            .records(Self::fqdn(name)?, RecordType::MX)
            .await?
            .into_iter()
            .filter_map(|r| match r {
                RData::MX(mx) => Some(MxHost {
                    preference: mx.preference,
                    exchange: name_text(&mx.exchange),
                }),
                _ => None,
            })
            .collect();
        hosts.sort_by_key(|h| h.preference);
        Ok(hosts)
    }

    /// The records of `rtype` for `name` when DNSSEC proves them (`None`:
    /// the zone is unsigned, or the name or record does not exist); an
    /// error when validation fails (bogus) or the lookup does.
    async fn secure_records(&self, name: Name, rtype: RecordType) -> Result<Option<Vec<RData>>, CapabilityError> {
        let resolver = self
            .validating
            .get_or_init(|| async { self.build(true) })
            .await
            .as_ref()
            .map_err(|e| CapabilityError::Backend(e.clone()))?;
        match resolver.lookup(name, rtype).await {
            Ok(lookup) => {
                let answers: Vec<_> = lookup.answers().iter().filter(|r| r.record_type() == rtype).collect();
                if answers.is_empty() || answers.iter().any(|r| r.proof != Proof::Secure) {
                    return Ok(None);
                }
                Ok(Some(answers.into_iter().map(|r| r.data.clone()).collect()))
            }
            Err(e) if e.is_no_records_found() => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    /// The mail exchangers of `name` when DNSSEC proves them (the condition
    /// for DANE, RFC 7672 2.2.1), without the final dot; `None` when it does
    /// not (unsigned, or no MX records); an error when validation fails.
    pub async fn secure_mx(&self, name: &str) -> Result<Option<Vec<String>>, CapabilityError> {
        let records = self.secure_records(Self::fqdn(name)?, RecordType::MX).await?;
        Ok(records.map(|records| {
            records
                .into_iter()
                .filter_map(|r| match r {
                    RData::MX(mx) => Some(name_text(&mx.exchange)),
                    _ => None,
                })
                .collect()
        }))
    }

    /// Whether DNSSEC validation works through the configured servers: the
    /// root's SOA record is proven from the trust anchors.
    pub async fn dnssec_works(&self) -> Result<bool, CapabilityError> {
        Ok(self.secure_records(Name::root(), RecordType::SOA).await?.is_some())
    }

    /// Whether DNSSEC proves an address (A or AAAA) of `name`; an error when
    /// validation fails.
    pub async fn address_is_secure(&self, name: &str) -> Result<bool, CapabilityError> {
        for rtype in [RecordType::A, RecordType::AAAA] {
            if self.secure_records(Self::fqdn(name)?, rtype).await?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The TLSA records of the SMTP server `host` on `port`
    /// (`_PORT._tcp.HOST`) when DNSSEC proves them; `None` when it has none
    /// or they are unsigned; an error when their validation fails.
    pub async fn tlsa(&self, host: &str, port: u16) -> Result<Option<Vec<Tlsa>>, CapabilityError> {
        let name = Self::fqdn(&format!("_{port}._tcp.{host}"))?;
        let Some(records) = self.secure_records(name, RecordType::TLSA).await? else {
            return Ok(None);
        };
        Ok(Some(
            records
                .into_iter()
                .filter_map(|r| match r {
                    RData::TLSA(tlsa) => Some(Tlsa {
                        usage: tlsa.cert_usage.into(),
                        selector: tlsa.selector.into(),
                        matching: tlsa.matching.into(),
                        data: tlsa.cert_data,
                    }),
                    _ => None,
                })
                .collect(),
        ))
    }

    /// The TXT records of `name`, each record's strings joined.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, CapabilityError> {
        Ok(self
            .records(Self::fqdn(name)?, RecordType::TXT)
            .await?
            .into_iter()
            .filter_map(|r| match r {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect())
    }

    /// The names of `ip` (reverse lookup).
    pub async fn ptr(&self, ip: &str) -> Result<Vec<String>, CapabilityError> {
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| CapabilityError::Invalid(format!("{ip:?} is not an IP address")))?;
        Ok(self
            .records(Name::from(ip), RecordType::PTR)
            .await?
            .into_iter()
            .filter_map(|r| match r {
                RData::PTR(name) => Some(name_text(&name.0)),
                _ => None,
            })
            .collect())
    }
}

fn backend(e: NetError) -> CapabilityError {
    CapabilityError::Backend(format!("dns: {e}"))
}
