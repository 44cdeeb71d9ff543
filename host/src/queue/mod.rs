//! The host's outbound queue: mail from relaying sessions, kept durably on
//! disk until it is delivered or bounced.

mod schedule;
mod store;

pub use schedule::{RetrySchedule, ScheduleError};
pub use store::{Entry, Envelope, QueueStore, Recovery, Selection, is_file_name, now_ms};
