//! Outbound delivery: the SMTP client that hands queued mail to the next
//! server.

mod client;

pub use client::{ClientError, ClientSettings, Delivery, RemoteReply, TlsMode, send};
