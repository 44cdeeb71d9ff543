//! The host's outbound queue: mail from relaying sessions, kept durably on
//! disk until it is delivered or bounced.

mod store;

pub use store::{Entry, QueueStore, Recovery, now_ms};
