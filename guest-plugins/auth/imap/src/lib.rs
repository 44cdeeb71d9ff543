//! `auth/imap`: verifies AUTH PLAIN/LOGIN credentials by logging in to an
//! IMAP server with them (and out again), as the `auth-imap` plugin of
//! Haraka's registry: the mailbox server that knows the users' passwords
//! decides. The server is the top of `config/auth/imap.ini`, or the
//! `[domain]` section of the user name's domain; the host logs in through
//! the `imap` grant. A refusal there is a `535` here; a server that cannot
//! be asked or cannot decide is a `454`, never an accept.

use waraka_plugin::next_hop::{Defaults, ask_server};
use waraka_plugin::{AuthAttempt, Hook, Plugin, Verdict, imap};

const SETTINGS: &str = "auth/imap.ini";
/// IMAPS: TLS from the first byte, the certificate checked.
const DEFAULTS: Defaults = Defaults {
    port: 993,
    tls: "implicit",
};

struct AuthImap;

impl Plugin for AuthImap {
    const NAME: &'static str = "auth/imap";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Auth];

    fn auth(attempt: AuthAttempt) -> Verdict {
        ask_server(Self::NAME, &attempt, SETTINGS, DEFAULTS, |hop, user, password| {
            let server = imap::Server {
                host: hop.host.clone(),
                port: hop.port,
                tls: hop.tls.clone(),
            };
            imap::check_credentials(&server, user, password)
        })
    }
}

waraka_plugin::export!(AuthImap);
