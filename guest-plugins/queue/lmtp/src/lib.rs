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
//! first asked for at RCPT time (the `forward` capability's
//! `verify-recipient`: LHLO, `MAIL FROM:<>`, RCPT, QUIT), so a mailbox the
//! server does not have is refused then (`550`) instead of bounced later to
//! a sender who may be forged.

use waraka_plugin::next_hop::{Defaults, Routes, recipient_groups};
use waraka_plugin::{Address, Hook, Plugin, Settings, Verdict, config, forward, host_list, outbound_queue};

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
        // One read of the file for the switch and the server.
        let lines = config::lines(SETTINGS);
        let settings = Settings::from_lines(lines.as_deref().unwrap_or_default());
        if !settings.bool("verify_recipients", true) {
            return Verdict::Cont;
        }
        let address = recipient.to_addr_spec();
        let unverified = |why: String| {
            waraka_plugin::warn!("cannot verify <{address}>: {why}");
            Verdict::denysoft_code(
                451,
                "4.4.3",
                &format!("Cannot verify mailbox <{address}> now, try again later"),
            )
        };
        match host_list::is_local(&recipient.domain) {
            Ok(true) => {}
            Ok(false) => return Verdict::Cont,
            Err(e) => return unverified(format!("host_list: {e:?}")),
        }
        let hop = match &lines {
            Ok(lines) => Routes::parse(lines).route(&recipient.domain, DEFAULTS),
            Err(e) => return unverified(format!("{SETTINGS} unreadable: {e:?}")),
        };
        let Some(hop) = hop else {
            return unverified(format!("no mailbox server (host) for {}", recipient.domain));
        };
        let server = forward::NextHop {
            host: hop.host.clone(),
            port: hop.port,
            tls: hop.tls.clone(),
            auth: None,
        };
        let reply = match forward::verify_recipient(&server, true, &address) {
            Ok(reply) => reply,
            Err(e) => return unverified(format!("{hop}: {e:?}")),
        };
        match reply.code {
            200..=299 => Verdict::Cont,
            500..=599 => {
                waraka_plugin::info!("<{address}> refused by the mailbox server: {}", reply.text);
                Verdict::deny_code(550, "5.1.1", &format!("Mailbox <{address}> does not exist here"))
            }
            _ => {
                waraka_plugin::info!("<{address}> deferred by the mailbox server: {}", reply.text);
                Verdict::denysoft_code(
                    450,
                    "4.2.1",
                    &format!("Mailbox <{address}> unavailable, try again later"),
                )
            }
        }
    }

    fn queue() -> Verdict {
        // Every group is worked out before any is queued, so a config
        // mistake queues nothing (the client's retry then duplicates nothing).
        let groups = match recipient_groups(SETTINGS, DEFAULTS) {
            Ok(groups) => groups,
            Err(why) => return tempfail(&why),
        };
        for (hop, recipients) in groups {
            let server = outbound_queue::Hop {
                host: hop.host.clone(),
                port: hop.port,
                lmtp: true,
                tls: hop.tls.clone(),
            };
            match outbound_queue::enqueue(&server, &recipients) {
                Ok(ids) => waraka_plugin::info!("{} queued for {hop} as {}", recipients.join(","), ids.join(",")),
                Err(e) => return tempfail(&format!("{hop}: {e:?}")),
            }
        }
        Verdict::ok()
    }
}

waraka_plugin::export!(Lmtp);
