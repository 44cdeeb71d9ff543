//! SMTP wire protocol, free of I/O and of plugins: command parsing, replies
//! and the DATA receiver. Everything here is fed byte slices and returns
//! values, so it is tested without sockets.
#![warn(missing_docs)]

mod address;
mod command;
mod data;
mod dsn;
mod reply;
mod require_tls;
mod xclient;

pub use address::{Address, AddressError, Param, parse_path_list};
pub use command::{Command, CommandError, MAX_COMMAND_LINE, parse_command};
pub use data::{BareNewlines, DataEvent, DataReceiver};
pub use dsn::{
    DsnRequests, MAX_ENVID, MAX_ORCPT, MessageRequest, Notify, RecipientRequest, Return, inherit_requests,
    xtext_decode, xtext_encode,
};
pub use reply::{Reply, codes};
pub use require_tls::{TLS_REQUIRED_HEADER, TlsRequest};
pub use xclient::{Attribute, XCLIENT_KEYWORD, Xclient};
