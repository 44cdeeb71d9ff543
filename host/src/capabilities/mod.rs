//! Host capabilities that plugins reach through imports. They know nothing
//! of SMTP or WebAssembly: the plugin runtime binds them to the WIT and
//! checks grants.

pub mod antivirus;
pub mod authentication;
pub mod blobstore;
pub mod config_files;
pub mod dkim_signing;
pub mod dns;
mod error;
pub mod files;
pub mod geoip;
pub mod group_sync;
pub mod http;
pub mod imap;
pub mod kv;
pub mod ldap;
pub mod milter;
pub mod mime;
pub mod notes;
pub mod p0f;
pub mod sasl;
mod service;
pub mod spamfilter;
pub mod sql;
pub mod srs;

pub use antivirus::{Antivirus, Clamd, Scan};
pub use authentication::{Authentication, DmarcObservation, authenticate};
pub use blobstore::{BlobSource, BlobStore, DirStore, S3Settings, S3Store};
pub use config_files::{ConfigError, ConfigFiles};
pub use dkim_signing::{DkimKeys, DkimSignature, DomainKey};
pub use dns::{Dns, DnsSettings, MxHost, Tlsa};
pub use error::CapabilityError;
pub use files::{Delivered, DeliveryDir, RelativePath};
pub use geoip::{GeoIp, Location};
pub use group_sync::GroupSync;
pub use http::{HttpResponse, HttpService};
pub use imap::ImapTls;
pub use kv::{KvStore, MemoryKv, RedisKv};
pub use ldap::Directory;
pub use milter::Milter;
pub use notes::{NoteError, NoteLimits, NoteStore};
pub use p0f::{Fingerprint, P0f};
pub use sasl::{ClientInfo, DovecotAuth};
pub use service::{ServiceStream, connect, is_socket_path};
pub use spamfilter::{Rspamd, SpamReport, SpamScanner, Spamd};
pub use sql::{Database, PgDatabase, PgSettings, SqlRows, SqlValue, SqliteDatabase};
pub use srs::{Srs, SrsError};
