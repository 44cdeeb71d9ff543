//! Connection admission: the global and per-client caps, checked when a
//! connection is accepted and before any session state exists for it. A
//! refused client gets one `421 4.7.0` line and the socket is closed.

use crate::protocol::{Reply, codes};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections, in all and per client. IPv6 clients are counted per
/// /64, the block one subscriber usually holds.
#[derive(Default)]
pub struct Admission {
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    all: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `max_connections` already.
    ServerFull,
    /// This client (address, or IPv6 /64) holds `max_per_client` already.
    ClientFull,
}

impl Refusal {
    /// The reply sent before closing.
    pub fn reply(self) -> Reply {
        match self {
            Refusal::ServerFull => codes::too_many_connections(),
            Refusal::ClientFull => codes::too_many_connections_from_client(),
        }
    }

    /// Which cap refused, for logs and metrics: `server` or `client`.
    pub fn cap(self) -> &'static str {
        match self {
            Refusal::ServerFull => "server",
            Refusal::ClientFull => "client",
        }
    }
}

/// One admitted connection; dropping it frees its place.
pub struct Ticket {
    admission: Arc<Admission>,
    client: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.admission.lock();
        counts.all -= 1;
        if let Some(count) = counts.per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}

/// The key a client is counted under: its address, or its /64 for IPv6.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into()),
        },
        v4 => v4,
    }
}

impl Admission {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `peer` unless the server already holds
    /// `max_connections`, or the client `max_per_client` (0: no limit).
    pub fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
        max_connections: usize,
        max_per_client: usize,
    ) -> Result<Ticket, Refusal> {
        let client = client_key(peer);
        let mut counts = self.lock();
        if max_connections > 0 && counts.all >= max_connections {
            return Err(Refusal::ServerFull);
        }
        let count = counts.per_client.get(&client).copied().unwrap_or(0);
        if max_per_client > 0 && count >= max_per_client {
            return Err(Refusal::ClientFull);
        }
        counts.per_client.insert(client, count + 1);
        counts.all += 1;
        Ok(Ticket {
            admission: self.clone(),
            client,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_apply_per_client_and_in_all_and_free_on_drop() {
        let admission = Arc::new(Admission::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = admission.admit(a, 3, 2).unwrap();
        let second = admission.admit(a, 3, 2).unwrap();
        assert_eq!(admission.admit(a, 3, 2).err(), Some(Refusal::ClientFull));
        let third = admission.admit(b, 3, 2).unwrap();
        assert_eq!(admission.admit(b, 3, 2).err(), Some(Refusal::ServerFull));
        drop(first);
        assert!(admission.admit(a, 3, 2).is_ok());
        drop((second, third));
        assert_eq!(admission.open(), 0);
        assert!(admission.lock().per_client.is_empty());
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let admission = Arc::new(Admission::default());
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _held = admission.admit(one, 0, 1).unwrap();
        assert_eq!(admission.admit(same_64, 0, 1).err(), Some(Refusal::ClientFull));
        assert!(admission.admit(other_64, 0, 1).is_ok());
    }
}
