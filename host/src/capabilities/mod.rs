//! Host capabilities that plugins reach through imports. They know nothing
//! of SMTP or WebAssembly: the plugin runtime binds them to the WIT.

pub mod config_files;
pub mod notes;

pub use config_files::{ConfigError, ConfigFiles};
pub use notes::{NoteError, NoteLimits, NoteStore};
