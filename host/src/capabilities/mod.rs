//! Host capabilities that plugins reach through imports. They know nothing
//! of SMTP or WebAssembly: the plugin runtime binds them to the WIT and
//! checks grants.

pub mod config_files;
pub mod dns;
pub mod kv;
pub mod notes;

pub use config_files::{ConfigError, ConfigFiles};
pub use dns::{Dns, DnsError, DnsSettings, MxHost};
pub use kv::{KvError, KvStore, MemoryKv, RedisKv};
pub use notes::{NoteError, NoteLimits, NoteStore};
