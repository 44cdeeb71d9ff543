//! The one error type of the backend capabilities (kv, dns, blobstore, sql, files),
//! matching the cases a plugin sees.

/// Why a capability call failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapabilityError {
    /// The arguments were not acceptable (a bad key, a wrong statement, …).
    #[error("{0}")]
    Invalid(String),
    /// The thing asked for does not exist (a missing directory, …).
    #[error("not found")]
    NotFound,
    /// A size or count limit was reached.
    #[error("{0}")]
    Limit(String),
    /// The backend could not be reached or failed.
    #[error("{0}")]
    Backend(String),
    /// The deadline passed; the work was cancelled.
    #[error("the call was cancelled at the deadline")]
    Timeout,
}
