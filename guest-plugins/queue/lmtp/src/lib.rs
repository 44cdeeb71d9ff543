//! `queue/lmtp`: delivers accepted mail to a mailbox server over LMTP
//! (RFC 2033) — Haraka's `queue/lmtp`, the way to put Waraka in front of
//! Dovecot.
//!
//! The server of a recipient is the `[DOMAIN]` section of
//! `config/queue/lmtp.ini` matching its domain, else the top of the file:
//! `host` and `port`, or `path`, its Unix socket (granted as `socket:PATH`).
//! The message goes into the host's durable outbound queue for that server
//! (the `outbound-queue` capability), and the client gets its `250` once it
//! is stored there. The host's delivery worker then speaks LMTP to the
//! server: each recipient gets its own answer, a busy mailbox waits for the
//! next attempt alone, a full or unknown one bounces alone.
//!
//! With `verify_recipients` (the default) a recipient of a local domain is
//! first asked for at RCPT time ([`next_hop::verify_recipient`]: LHLO,
//! `MAIL FROM:<>`, RCPT, QUIT), so a mailbox the server does not have is
//! refused then (`550`) instead of bounced later to a sender who may be
//! forged.

use waraka_plugin::next_hop::{self, Defaults, Protocol, recipient_groups};
use waraka_plugin::{Address, Hook, Plugin, Verdict};

const SETTINGS: &str = "queue/lmtp.ini";
const DEFAULTS: Defaults = Defaults { port: 24, tls: "never" };

struct Lmtp;

fn tempfail(why: &str) -> Verdict {
    waraka_plugin::warn!("{why}");
    Verdict::denysoft_code(451, "4.3.0", "Mailbox server queue unavailable, try again later")
}

impl Plugin for Lmtp {
    const NAME: &'static str = "queue/lmtp";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Rcpt, Hook::Queue];

    fn rcpt(recipient: Address) -> Verdict {
        next_hop::verify_recipient(SETTINGS, DEFAULTS, Protocol::Lmtp, true, &recipient)
    }

    fn queue() -> Verdict {
        // Every group is worked out before any is queued, so a config
        // mistake queues nothing (the client's retry then duplicates nothing).
        let groups = match recipient_groups(SETTINGS, DEFAULTS) {
            Ok(groups) => groups,
            Err(why) => return tempfail(&why),
        };
        match next_hop::enqueue_groups(&groups, Protocol::Lmtp) {
            Ok(()) => Verdict::ok(),
            Err(why) => tempfail(&why),
        }
    }
}

waraka_plugin::export!(Lmtp);
