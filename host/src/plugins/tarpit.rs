//! The fault tarpit: a client whose commands make plugins fault gets each
//! reply after a fault later than the last — the configured delay, doubled
//! for every further fault, up to 30 s — so one client cannot spend the
//! server's CPU on faults as fast as it can send commands. Counted per client
//! address (IPv6: per /64) across its connections; forgotten after a quiet
//! minute. A legitimate client loses little: a fault's reply is a `451`, and
//! it will retry later anyway.

use crate::admission::client_key;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a reply is held.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// A client without a fault for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Clients remembered before the quiet ones are dropped.
const MAX_CLIENTS: usize = 100_000;

/// Recent faults per client.
pub struct FaultTarpit {
    delay: Duration,
    clients: Mutex<HashMap<IpAddr, Recent>>,
}

struct Recent {
    faults: u32,
    last: Instant,
}

impl FaultTarpit {
    /// A tarpit that holds the first reply after a fault for `delay` (zero: off).
    pub fn new(delay: Duration) -> Self {
        FaultTarpit {
            delay,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Records a fault caused by `client`; returns how long to hold the reply.
    pub fn fault(&self, client: IpAddr) -> Duration {
        if self.delay.is_zero() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut clients = self.clients.lock().expect("fault tarpit lock");
        if clients.len() >= MAX_CLIENTS {
            clients.retain(|_, recent| now.duration_since(recent.last) < FORGET_AFTER);
        }
        let recent = clients
            .entry(client_key(client))
            .or_insert(Recent { faults: 0, last: now });
        if now.duration_since(recent.last) >= FORGET_AFTER {
            recent.faults = 0;
        }
        recent.faults = recent.faults.saturating_add(1);
        recent.last = now;
        self.delay
            .saturating_mul(2u32.saturating_pow(recent.faults - 1))
            .min(MAX_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_per_client_up_to_the_cap() {
        let tarpit = FaultTarpit::new(Duration::from_millis(500));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b_neighbour: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(tarpit.fault(a), Duration::from_millis(500));
        assert_eq!(tarpit.fault(a), Duration::from_secs(1));
        assert_eq!(tarpit.fault(a), Duration::from_secs(2));
        assert_eq!(
            tarpit.fault(b),
            Duration::from_millis(500),
            "another client starts afresh"
        );
        assert_eq!(
            tarpit.fault(b_neighbour),
            Duration::from_secs(1),
            "an IPv6 /64 is one client"
        );
        for _ in 0..40 {
            tarpit.fault(a);
        }
        assert_eq!(tarpit.fault(a), MAX_DELAY);
        assert_eq!(
            FaultTarpit::new(Duration::ZERO).fault(a),
            Duration::ZERO,
            "zero turns it off"
        );
    }
}
