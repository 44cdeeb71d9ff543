//! The host side of the granted capabilities (`kv`, `dns`): every call checks
//! the plugin's grants first (`not-granted` otherwise, never a trap) and is
//! cut off at the plugin's deadline (`timeout`), so a slow backend costs the
//! calling plugin its own time budget and nothing more.

use super::bindings::types::Error;
use super::bindings::waraka::plugin::{dns, kv};
use super::store::StoreState;
use crate::capabilities::{DnsError, KvError, KvStore};
use hickory_resolver::proto::rr::RecordType;
use std::future::Future;
use std::time::{Duration, Instant};

impl From<KvError> for Error {
    fn from(e: KvError) -> Error {
        match e {
            KvError::Invalid(m) => Error::Invalid(m),
            KvError::Limit(m) => Error::Limit(m),
            KvError::Backend(m) => Error::Backend(m),
        }
    }
}

impl From<DnsError> for Error {
    fn from(e: DnsError) -> Error {
        match e {
            DnsError::Invalid(m) => Error::Invalid(m),
            DnsError::Backend(m) => Error::Backend(m),
        }
    }
}

impl StoreState {
    /// Whether the plugin holds `grant` (e.g. `dns`, `kv:rate`).
    fn granted(&self, grant: &str) -> bool {
        self.host.grants.iter().any(|g| g == grant)
    }

    /// The key/value store `name`, when granted.
    fn kv_store(&self, name: &str) -> Result<std::sync::Arc<KvStore>, Error> {
        if !self.granted(&format!("kv:{name}")) {
            return Err(Error::NotGranted);
        }
        self.host.services.kv.get(name).cloned().ok_or(Error::NotGranted)
    }

    fn dns_granted(&self) -> Result<(), Error> {
        if self.granted("dns") {
            Ok(())
        } else {
            Err(Error::NotGranted)
        }
    }
}

/// Runs a backend call, stopping it at the plugin's deadline.
async fn bounded<T, E: Into<Error>>(deadline: Instant, call: impl Future<Output = Result<T, E>>) -> Result<T, Error> {
    match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), call).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(Error::Timeout),
    }
}

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.filter(|&ms| ms > 0).map(Duration::from_millis)
}

impl kv::Host for StoreState {
    async fn get(&mut self, store: String, key: String) -> Result<Option<Vec<u8>>, Error> {
        let kv = self.kv_store(&store)?;
        bounded(self.deadline, kv.get(&key)).await
    }

    async fn set(&mut self, store: String, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), Error> {
        let kv = self.kv_store(&store)?;
        bounded(self.deadline, kv.set(&key, value, ttl(ttl_ms))).await
    }

    async fn incr(&mut self, store: String, key: String, delta: i64, ttl_ms: Option<u64>) -> Result<i64, Error> {
        let kv = self.kv_store(&store)?;
        bounded(self.deadline, kv.incr(&key, delta, ttl(ttl_ms))).await
    }

    async fn delete(&mut self, store: String, key: String) -> Result<bool, Error> {
        let kv = self.kv_store(&store)?;
        bounded(self.deadline, kv.delete(&key)).await
    }
}

impl dns::Host for StoreState {
    async fn lookup_a(&mut self, name: String) -> Result<Vec<String>, Error> {
        self.dns_granted()?;
        let dns = self.host.services.dns.clone();
        let ips = bounded(self.deadline, dns.addresses(&name, RecordType::A)).await?;
        Ok(ips.iter().map(ToString::to_string).collect())
    }

    async fn lookup_aaaa(&mut self, name: String) -> Result<Vec<String>, Error> {
        self.dns_granted()?;
        let dns = self.host.services.dns.clone();
        let ips = bounded(self.deadline, dns.addresses(&name, RecordType::AAAA)).await?;
        Ok(ips.iter().map(ToString::to_string).collect())
    }

    async fn lookup_mx(&mut self, name: String) -> Result<Vec<dns::MxHost>, Error> {
        self.dns_granted()?;
        let dns = self.host.services.dns.clone();
        let hosts = bounded(self.deadline, dns.mx(&name)).await?;
        Ok(hosts
            .into_iter()
            .map(|h| dns::MxHost {
                preference: h.preference,
                exchange: h.exchange,
            })
            .collect())
    }

    async fn lookup_txt(&mut self, name: String) -> Result<Vec<String>, Error> {
        self.dns_granted()?;
        let dns = self.host.services.dns.clone();
        bounded(self.deadline, dns.txt(&name)).await
    }

    async fn lookup_ptr(&mut self, ip: String) -> Result<Vec<String>, Error> {
        self.dns_granted()?;
        let dns = self.host.services.dns.clone();
        bounded(self.deadline, dns.ptr(&ip)).await
    }
}
