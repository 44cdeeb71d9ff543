//! Bounded key/value notes. A plugin cannot grow the host's memory past the
//! limits: a note store refuses keys, values or totals that are too large.

use std::collections::HashMap;

/// Size limits of one note store.
#[derive(Clone, Copy, Debug)]
pub struct NoteLimits {
    /// Longest key in bytes.
    pub max_key: usize,
    /// Largest value in bytes.
    pub max_value: usize,
    /// Most bytes of keys and values together in one scope.
    pub max_total: usize,
}

impl Default for NoteLimits {
    fn default() -> Self {
        NoteLimits {
            max_key: 256,
            max_value: 64 * 1024,
            max_total: 1024 * 1024,
        }
    }
}

/// Why a note could not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("note key longer than {0} bytes")]
    /// The key is over the limit (given).
    KeyTooLong(usize),
    #[error("note value longer than {0} bytes")]
    /// The value is over the limit (given).
    ValueTooLong(usize),
    #[error("notes would exceed {0} bytes in this scope")]
    /// The scope would go over its total (given).
    Full(usize),
}

/// One scope's notes.
#[derive(Debug, Default)]
pub struct NoteStore {
    map: HashMap<String, String>,
    bytes: usize,
    limits: NoteLimits,
}

impl NoteStore {
    /// An empty store with these limits.
    pub fn new(limits: NoteLimits) -> Self {
        NoteStore {
            map: HashMap::new(),
            bytes: 0,
            limits,
        }
    }

    /// The note's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// Stores a note, replacing any earlier value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), NoteError> {
        if key.len() > self.limits.max_key {
            return Err(NoteError::KeyTooLong(self.limits.max_key));
        }
        if value.len() > self.limits.max_value {
            return Err(NoteError::ValueTooLong(self.limits.max_value));
        }
        let old = self.map.get(key).map_or(0, |v| key.len() + v.len());
        let total = self.bytes - old + key.len() + value.len();
        if total > self.limits.max_total {
            return Err(NoteError::Full(self.limits.max_total));
        }
        self.bytes = total;
        self.map.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// Removes a note; returns whether it existed.
    pub fn remove(&mut self, key: &str) -> bool {
        match self.map.remove(key) {
            Some(v) => {
                self.bytes -= key.len() + v.len();
                true
            }
            None => false,
        }
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.map.keys().cloned().collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_and_replacing_reuses_space() {
        let mut n = NoteStore::new(NoteLimits {
            max_key: 4,
            max_value: 8,
            max_total: 12,
        });
        n.set("a", "12345678").unwrap();
        n.set("a", "87654321").unwrap();
        assert_eq!(n.get("a"), Some("87654321"));
        assert_eq!(n.set("toolong", "x"), Err(NoteError::KeyTooLong(4)));
        assert_eq!(n.set("b", "123456789"), Err(NoteError::ValueTooLong(8)));
        assert_eq!(n.set("b", "1234"), Err(NoteError::Full(12)));
        assert!(n.remove("a"));
        n.set("b", "1234").unwrap();
        assert_eq!(n.keys(), vec!["b".to_string()]);
    }
}
