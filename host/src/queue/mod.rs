//! The host's outbound queue: mail from relaying sessions, kept durably on
//! disk until it is delivered or bounced.

mod schedule;
mod shape;
mod store;

pub use schedule::{RetrySchedule, ScheduleError};
pub use shape::shape;
pub use store::{Entry, Envelope, QueueStore, Recovery, Selection, is_file_name, now_ms};
