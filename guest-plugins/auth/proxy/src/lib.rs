//! `auth/proxy`: verifies AUTH PLAIN/LOGIN credentials by trying them on
//! another SMTP server, as Haraka's `auth/auth_proxy`: the server that
//! already knows the users (an Exchange or Postfix submission port) keeps
//! deciding while Waraka takes the mail. The server is the top of
//! `config/auth/proxy.ini`, or the `[domain]` section of the user name's
//! domain; the host's SMTP client opens a session there up to AUTH and
//! quits, through the `forward` grant, with no mail sent. A refusal there
//! is a `535` here; a server that cannot be asked is a `454`, never an
//! accept.

use waraka_plugin::next_hop::{Defaults, Protocol, ask_server};
use waraka_plugin::{AuthAttempt, Hook, Plugin, Verdict, forward};

const SETTINGS: &str = "auth/proxy.ini";
/// The submission port, with STARTTLS and a checked certificate: the
/// password crosses that connection.
const DEFAULTS: Defaults = Defaults {
    port: 587,
    tls: "required",
};

struct AuthProxy;

impl Plugin for AuthProxy {
    const NAME: &'static str = "auth/proxy";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Auth];

    fn auth(attempt: AuthAttempt) -> Verdict {
        ask_server(Self::NAME, &attempt, SETTINGS, DEFAULTS, |hop, user, password| {
            forward::check_credentials(&hop.target(Protocol::Smtp), user, password)
        })
    }
}

waraka_plugin::export!(AuthProxy);
