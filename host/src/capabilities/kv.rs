//! Key/value stores for cross-connection state: in-process, or Redis so
//! several servers share it. Values are bytes; `incr` works on decimal text,
//! as Redis does.

use super::CapabilityError;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Longest key accepted.
pub const MAX_KEY: usize = 1024;
/// Largest value accepted.
pub const MAX_VALUE: usize = 1024 * 1024;

/// One named store.
pub enum KvStore {
    /// In this process.
    Memory(MemoryKv),
    /// In a Redis server.
    Redis(RedisKv),
}

fn check(key: &str, value: Option<&[u8]>) -> Result<(), CapabilityError> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(CapabilityError::Invalid(format!("keys are 1 to {MAX_KEY} bytes")));
    }
    if value.is_some_and(|v| v.len() > MAX_VALUE) {
        return Err(CapabilityError::Limit(format!("values are at most {MAX_VALUE} bytes")));
    }
    Ok(())
}

fn as_integer(value: &[u8]) -> Result<i64, CapabilityError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| CapabilityError::Invalid("the value is not an integer".into()))
}

impl KvStore {
    /// The value under `key`, unless absent or expired.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CapabilityError> {
        check(key, None)?;
        match self {
            KvStore::Memory(m) => Ok(m.get(key)),
            KvStore::Redis(r) => r.get(key).await,
        }
    }

    /// Stores `value`, expiring after `ttl` when given.
    pub async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), CapabilityError> {
        check(key, Some(&value))?;
        match self {
            KvStore::Memory(m) => m.set(key, value, ttl),
            KvStore::Redis(r) => r.set(key, value, ttl).await,
        }
    }

    /// Adds `delta` to the integer under `key` (absent: 0); `ttl` applies to a new key.
    pub async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, CapabilityError> {
        check(key, None)?;
        match self {
            KvStore::Memory(m) => m.incr(key, delta, ttl),
            KvStore::Redis(r) => r.incr(key, delta, ttl).await,
        }
    }

    /// Up to `max` live keys that start with `prefix`, sorted (for the
    /// administrator's `waraka kv list`, not for plugins: Redis answers it
    /// by scanning, and stops at `max` found).
    pub async fn keys(&self, prefix: &str, max: usize) -> Result<Vec<String>, CapabilityError> {
        let mut keys = match self {
            KvStore::Memory(m) => m.keys(prefix),
            KvStore::Redis(r) => r.keys(prefix, max).await?,
        };
        keys.sort();
        keys.truncate(max);
        Ok(keys)
    }

    /// Removes `key`; whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, CapabilityError> {
        check(key, None)?;
        match self {
            KvStore::Memory(m) => Ok(m.delete(key)),
            KvStore::Redis(r) => r.delete(key).await,
        }
    }
}

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

/// An in-process store with a cap on the number of keys.
pub struct MemoryKv {
    entries: Mutex<HashMap<String, Entry>>,
    max_keys: usize,
}

impl MemoryKv {
    /// An empty store holding at most `max_keys` keys.
    pub fn new(max_keys: usize) -> MemoryKv {
        MemoryKv {
            entries: Mutex::new(HashMap::new()),
            max_keys,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        self.lock().get(key).filter(|e| e.live(now)).map(|e| e.value.clone())
    }

    /// Makes room for a new key: drops expired entries when the store is full.
    fn room_for(&self, entries: &mut HashMap<String, Entry>, key: &str) -> Result<(), CapabilityError> {
        if entries.len() < self.max_keys || entries.contains_key(key) {
            return Ok(());
        }
        let now = Instant::now();
        entries.retain(|_, e| e.live(now));
        if entries.len() < self.max_keys {
            Ok(())
        } else {
            Err(CapabilityError::Limit(format!(
                "the store holds {} keys already",
                self.max_keys
            )))
        }
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(k, e)| e.live(now) && k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), CapabilityError> {
        let mut entries = self.lock();
        self.room_for(&mut entries, key)?;
        let expires = ttl.map(|t| Instant::now() + t);
        entries.insert(key.to_string(), Entry { value, expires });
        Ok(())
    }

    fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, CapabilityError> {
        let now = Instant::now();
        let mut entries = self.lock();
        let current = match entries.get(key).filter(|e| e.live(now)) {
            Some(e) => Some((as_integer(&e.value)?, e.expires)),
            None => None,
        };
        let (sum, expires) = match current {
            Some((n, expires)) => (n.checked_add(delta), expires),
            None => (Some(delta), ttl.map(|t| now + t)),
        };
        let sum = sum.ok_or_else(|| CapabilityError::Invalid("the sum overflows".into()))?;
        self.room_for(&mut entries, key)?;
        let value = sum.to_string().into_bytes();
        entries.insert(key.to_string(), Entry { value, expires });
        Ok(sum)
    }

    fn delete(&self, key: &str) -> bool {
        let now = Instant::now();
        self.lock().remove(key).is_some_and(|e| e.live(now))
    }
}

/// A store in Redis. Keys get a prefix (by default `waraka:NAME:`); the
/// connection is made on first use and re-made after failures.
pub struct RedisKv {
    client: redis::Client,
    prefix: String,
    conn: OnceCell<ConnectionManager>,
}

fn backend(e: redis::RedisError) -> CapabilityError {
    CapabilityError::Backend(format!("redis: {e}"))
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisKv {
    /// A store at `url` (`redis://host:port/db`) whose keys start with `prefix`.
    pub fn new(url: &str, prefix: String) -> Result<RedisKv, CapabilityError> {
        let client =
            redis::Client::open(url).map_err(|e| CapabilityError::Invalid(format!("redis url {url:?}: {e}")))?;
        Ok(RedisKv {
            client,
            prefix,
            conn: OnceCell::new(),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, CapabilityError> {
        self.conn
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_number_of_retries(1);
                self.client.get_connection_manager_with_config(config).await
            })
            .await
            .cloned()
            .map_err(backend)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CapabilityError> {
        let mut conn = self.conn().await?;
        redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
            .map_err(backend)
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), CapabilityError> {
        let mut conn = self.conn().await?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(millis(ttl));
        }
        cmd.query_async(&mut conn).await.map_err(backend)
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, CapabilityError> {
        let mut conn = self.conn().await?;
        let key = self.key(key);
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some(ttl) = ttl {
            // Creates the key with its expiry only if it does not exist yet.
            pipe.cmd("SET")
                .arg(&key)
                .arg(0)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .ignore();
        }
        pipe.cmd("INCRBY").arg(&key).arg(delta);
        let (sum,): (i64,) = pipe.query_async(&mut conn).await.map_err(|e| {
            if e.to_string().contains("not an integer") {
                CapabilityError::Invalid("the value is not an integer".into())
            } else {
                backend(e)
            }
        })?;
        Ok(sum)
    }

    async fn keys(&self, prefix: &str, max: usize) -> Result<Vec<String>, CapabilityError> {
        let mut conn = self.conn().await?;
        // SCAN's MATCH is a glob: the prefix's own glob characters are escaped.
        let mut pattern: String = self.key(prefix).chars().flat_map(glob_escaped).collect();
        pattern.push('*');
        let mut cursor = 0u64;
        let mut keys = Vec::new();
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            keys.extend(
                found
                    .into_iter()
                    .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_string)),
            );
            if next == 0 || keys.len() >= max {
                keys.truncate(max);
                return Ok(keys);
            }
            cursor = next;
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, CapabilityError> {
        let mut conn = self.conn().await?;
        let removed: i64 = redis::cmd("DEL")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(removed > 0)
    }
}

/// `c` as a literal in a Redis glob pattern.
fn glob_escaped(c: char) -> Vec<char> {
    match c {
        '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
        c => vec![c],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_counts_expires_and_caps() {
        let kv = KvStore::Memory(MemoryKv::new(2));
        assert_eq!(kv.incr("n", 2, None).await, Ok(2));
        assert_eq!(kv.incr("n", -5, None).await, Ok(-3));
        assert_eq!(kv.get("n").await, Ok(Some(b"-3".to_vec())));
        kv.set("t", b"x".to_vec(), Some(Duration::from_millis(1)))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(kv.get("t").await, Ok(None), "expired");
        kv.set("u", b"y".to_vec(), None).await.unwrap();
        assert!(
            matches!(kv.set("v", b"z".to_vec(), None).await, Err(CapabilityError::Limit(_))),
            "full"
        );
        assert!(matches!(kv.incr("u", 1, None).await, Err(CapabilityError::Invalid(_))));
        assert_eq!(kv.delete("u").await, Ok(true));
        assert_eq!(kv.delete("u").await, Ok(false));
        assert!(matches!(kv.get("").await, Err(CapabilityError::Invalid(_))));
    }

    #[tokio::test]
    async fn memory_keys_are_listed_by_prefix() {
        let kv = KvStore::Memory(MemoryKv::new(10));
        for key in ["karma:b", "karma:a", "greylist:x"] {
            kv.set(key, b"1".to_vec(), None).await.unwrap();
        }
        kv.set("karma:gone", b"1".to_vec(), Some(Duration::from_millis(1)))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(kv.keys("karma:", 10).await.unwrap(), ["karma:a", "karma:b"]);
        assert_eq!(kv.keys("", 10).await.unwrap().len(), 3);
        assert_eq!(kv.keys("karma:", 1).await.unwrap(), ["karma:a"], "the first in order");
        assert_eq!(glob_escaped('*'), ['\\', '*']);
    }
}
