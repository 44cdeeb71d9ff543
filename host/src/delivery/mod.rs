//! Outbound delivery: the worker that takes due entries of the outbound
//! queue, routing a domain to its servers, the SMTP client that hands the
//! mail to them, and the bounces (DSNs) for what cannot be delivered.

mod client;
mod daily;
mod dane;
mod dmarc_failure;
mod dmarc_report;
mod https;
mod live;
mod mta_sts;
mod notice;
mod outbound;
mod route;
mod tls_report;

pub use client::{
    BindAddresses, ClientError, ClientSettings, Delivery, RemoteReply, TlsMode, check_credentials, probe, send,
    send_over_local,
};
pub use daily::Submitter;
pub use dmarc_failure::DmarcFailureReports;
pub use dmarc_report::DmarcReports;
pub use live::{LiveEnvelope, LiveSession};
pub use notice::{Report, header_of};
pub use outbound::{DomainLimit, Limits, NextHop, Outbound, OutboundSettings, Rate, Source};
pub use route::{Address, Route, RouteSettings, Target, hop_target, order_mx, resolve, target};
