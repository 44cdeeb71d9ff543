//! Outbound delivery: routing a domain to its servers and the SMTP client
//! that hands queued mail to them.

mod client;
mod route;

pub use client::{ClientError, ClientSettings, Delivery, RemoteReply, TlsMode, send};
pub use route::{Route, RouteSettings, Target, order_mx, resolve};
