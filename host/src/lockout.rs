//! AUTH lockout: refused AUTH attempts are counted per client address (an
//! IPv6 client per /64) and per user name across connections — and across
//! servers, in a shared Redis store — so that password guessing spread over
//! many connections stops at `[smtp] auth_lockout_failures` per
//! `auth_lockout_period`. The core's `auth_max_failures` only ends one
//! connection.

use crate::admission::client_key;
use crate::capabilities::KvStore;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::warn;

/// The longest user name kept in a counter's key.
const MAX_USER_KEY: usize = 200;

/// The lockout's counters and limit.
pub struct AuthLockout {
    store: Arc<KvStore>,
    max: i64,
    period: Duration,
}

impl AuthLockout {
    /// Counts in `store`: `max` refused attempts per fixed window of `period`.
    pub fn new(store: Arc<KvStore>, max: u32, period: Duration) -> AuthLockout {
        AuthLockout {
            store,
            max: i64::from(max),
            period: period.max(Duration::from_secs(1)),
        }
    }

    /// The keys of the current window for `ip` and `user`.
    fn keys(&self, ip: IpAddr, user: &str) -> [String; 2] {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let window = now.as_secs() / self.period.as_secs();
        let mut user = user.to_lowercase();
        while user.len() > MAX_USER_KEY {
            user.pop();
        }
        [
            format!("auth-failures:ip:{}:{window}", client_key(ip)),
            format!("auth-failures:user:{user}:{window}"),
        ]
    }

    /// Whether `ip` or `user` has run out of attempts in this window. A
    /// store that fails is logged and locks nobody out.
    pub async fn is_locked(&self, ip: IpAddr, user: &str) -> bool {
        for key in self.keys(ip, user) {
            match self.store.get(&key).await {
                Ok(Some(count)) => {
                    let count: i64 = std::str::from_utf8(&count)
                        .ok()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    if count >= self.max {
                        return true;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "AUTH lockout: reading {key} failed; not locked");
                    return false;
                }
            }
        }
        false
    }

    /// Counts a refused attempt against `ip` and `user`.
    pub async fn failed(&self, ip: IpAddr, user: &str) {
        for key in self.keys(ip, user) {
            if let Err(e) = self.store.incr(&key, 1, Some(self.period)).await {
                warn!(error = %e, "AUTH lockout: counting {key} failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::MemoryKv;

    #[tokio::test]
    async fn the_address_and_the_user_are_locked_apart() {
        let lockout = AuthLockout::new(
            Arc::new(KvStore::Memory(MemoryKv::new(1000))),
            2,
            Duration::from_secs(3600),
        );
        let (guesser, other): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap());
        lockout.failed(guesser, "Bob").await;
        assert!(!lockout.is_locked(guesser, "bob").await, "one failure of two");
        lockout.failed(guesser, "carol").await;
        assert!(
            lockout.is_locked(guesser, "dave").await,
            "the address, whatever the user"
        );
        assert!(!lockout.is_locked(other, "carol").await, "carol failed once");
        lockout.failed(other, "BOB").await;
        assert!(lockout.is_locked(other, "bob").await, "bob, from any address");
        assert!(!lockout.is_locked(other, "erin").await);
        let neighbour: IpAddr = "2001:db8::1".parse().unwrap();
        lockout.failed(neighbour, "x").await;
        lockout.failed("2001:db8::2".parse().unwrap(), "y").await;
        assert!(
            lockout.is_locked("2001:db8::99".parse().unwrap(), "z").await,
            "an IPv6 /64 counts as one"
        );
    }
}
