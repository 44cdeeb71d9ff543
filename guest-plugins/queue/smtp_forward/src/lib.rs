//! `queue/smtp_forward`: hands each accepted message to a next-hop SMTP
//! server while the client waits — Haraka's `queue/smtp_forward`.
//!
//! The next hop is the `[DOMAIN]` section of `config/queue/smtp_forward.ini`
//! matching the recipient's domain, else the top of the file. Recipients
//! are grouped by next hop; the message goes to each group through the
//! host's SMTP client (the `forward` capability). `ok` only when every
//! recipient was accepted; a next hop that is down or answers 4xx gives
//! `451 4.4.1` (the client retries); 5xx for recipients gives `550` with the
//! next hop's reply, so the sender hears of it (never a silent loss).
//!
//! With `durable` the message is not forwarded while the client waits but
//! stored in the host's outbound queue for its next hop (`250` once it is
//! on disk), so a next hop that is down costs retries, not the client's
//! patience, and a refusal there becomes a bounce (Haraka #2464).
//!
//! With `verify_recipients` a recipient of a local domain is first asked
//! for at its next hop at RCPT time ([`next_hop::verify_recipient`], with
//! an optional cache), so a filtering MX in front of a mailbox server
//! refuses unknown mailboxes as the mailbox server would.

use waraka_plugin::next_hop::{self, Defaults, Protocol, recipient_groups};
use waraka_plugin::{Address, Error, Hook, Plugin, Settings, Verdict, forward};

const SETTINGS: &str = "queue/smtp_forward.ini";
const DEFAULTS: Defaults = Defaults {
    port: 25,
    tls: "opportunistic",
};

struct SmtpForward;

fn tempfail(why: &str) -> Verdict {
    waraka_plugin::warn!("{why}");
    Verdict::denysoft_code(451, "4.4.1", "Next hop unavailable, try again later")
}

impl Plugin for SmtpForward {
    const NAME: &'static str = "queue/smtp_forward";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Rcpt, Hook::Queue];

    fn rcpt(recipient: Address) -> Verdict {
        next_hop::verify_recipient(SETTINGS, DEFAULTS, Protocol::Smtp, false, &recipient)
    }

    fn queue() -> Verdict {
        let groups = match recipient_groups(SETTINGS, DEFAULTS) {
            Ok(groups) => groups,
            Err(why) => return tempfail(&why),
        };
        if Settings::load(SETTINGS).bool("durable", false) {
            return match next_hop::enqueue_groups(&groups, Protocol::Smtp) {
                Ok(()) => Verdict::ok(),
                Err(why) => tempfail(&why),
            };
        }
        let mut rejected = Vec::new();
        for (hop, recipients) in groups {
            let replies = match forward::send(&hop.target(Protocol::Smtp), &recipients) {
                Ok(replies) => replies,
                Err(Error::Backend(why)) => return tempfail(&format!("{hop}: {why}")),
                Err(e) => return tempfail(&format!("{hop}: {e:?}")),
            };
            for reply in replies {
                match reply.code {
                    200..=299 => waraka_plugin::info!("{} accepted by {hop}: {}", reply.recipient, reply.text),
                    400..=499 => {
                        return tempfail(&format!("{} deferred by {}: {}", reply.recipient, hop.host, reply.text));
                    }
                    _ => rejected.push(format!("<{}>: {}", reply.recipient, reply.text)),
                }
            }
        }
        if rejected.is_empty() {
            return Verdict::ok();
        }
        waraka_plugin::warn!("next hop rejected {}", rejected.join("; "));
        Verdict::deny_code(550, "5.7.1", &format!("Next hop rejected {}", rejected.join("; ")))
    }
}

waraka_plugin::export!(SmtpForward);
