//! `queue/smtp_proxy`: a before-queue proxy — Haraka's `queue/smtp_proxy`,
//! Postfix's `smtpd_proxy_filter`. Each inbound transaction is played at
//! the next hop while the client waits: MAIL at MAIL, each RCPT at RCPT,
//! the message at the end of DATA (after the `data-post` checks), on one
//! session per client connection (the `forward` capability's proxy). The
//! next hop's replies are the client's: nothing is queued here, and the
//! next hop decides which recipients exist. Relaying sessions (users'
//! own mail) are left to the outbound queue unless `relaying = true`.

use waraka_plugin::next_hop::{Defaults, Protocol, Routes};
use waraka_plugin::{Address, Error, Hook, Plugin, Reply, Settings, Verdict, config, forward, session};

const SETTINGS: &str = "queue/smtp_proxy.ini";
const DEFAULTS: Defaults = Defaults {
    port: 25,
    tls: "opportunistic",
};

struct SmtpProxy;

/// The next hop of `config/queue/smtp_proxy.ini`: the top of the file.
fn hop() -> Option<forward::NextHop> {
    let routes = Routes::parse(&config::lines(SETTINGS).unwrap_or_default());
    routes
        .route("", DEFAULTS)
        .filter(|hop| !hop.host.is_empty())
        .map(|hop| hop.target(Protocol::Smtp))
}

/// Whether this session's mail is played at the next hop: inbound mail
/// always, users' own mail when `relaying = true` (Haraka's smtp_proxy
/// plays everything; the next hop then sends it on).
fn proxied() -> bool {
    !session::relaying() || Settings::load(SETTINGS).bool("relaying", false)
}

/// The message played at the next hop, its reply the client's.
fn send_message() -> Verdict {
    match step("the message", forward::proxy_data) {
        Ok(reply) if (200..300).contains(&reply.code) => {
            waraka_plugin::info!(
                "queue/smtp_proxy: the next hop took the message: {}",
                reply.lines.join(" ")
            );
            Verdict::Ok(Some(reply))
        }
        Ok(reply) => refusal(reply),
        Err(verdict) => verdict,
    }
}

/// The next hop's refusal as the client's: 5xx for good, else for now.
fn refusal(reply: Reply) -> Verdict {
    if reply.code >= 500 {
        Verdict::Deny(Some(reply))
    } else {
        Verdict::Denysoft(Some(reply))
    }
}

/// What the client hears when the next hop cannot be asked: try later.
fn unavailable(step: &str, e: Error) -> Verdict {
    waraka_plugin::warn!("queue/smtp_proxy: {step} at the next hop failed: {e:?}");
    Verdict::denysoft_code(451, "4.4.1", "Next hop unavailable, try again later")
}

/// Runs one step at the next hop: its reply, or the verdict for the client
/// when there is no next hop or it cannot be asked.
fn step(name: &str, call: impl FnOnce(&forward::NextHop) -> Result<Reply, Error>) -> Result<Reply, Verdict> {
    let Some(hop) = hop() else {
        waraka_plugin::error!("queue/smtp_proxy: no host in config/{SETTINGS}");
        return Err(Verdict::denysoft_code(451, "4.3.5", "Next hop not configured"));
    };
    call(&hop).map_err(|e| unavailable(name, e))
}

impl Plugin for SmtpProxy {
    const NAME: &'static str = "queue/smtp_proxy";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[
        Hook::Mail,
        Hook::Rcpt,
        Hook::Queue,
        Hook::QueueOutbound,
        Hook::ResetTransaction,
    ];

    fn mail(_sender: Address) -> Verdict {
        if !proxied() {
            return Verdict::Cont;
        }
        match step("MAIL", forward::proxy_mail) {
            Ok(reply) if (200..300).contains(&reply.code) => Verdict::Cont,
            Ok(reply) => refusal(reply),
            Err(verdict) => verdict,
        }
    }

    fn rcpt(recipient: Address) -> Verdict {
        if !proxied() {
            return Verdict::Cont;
        }
        let address = recipient.to_addr_spec();
        match step("RCPT", |hop| forward::proxy_rcpt(hop, &address)) {
            Ok(reply) if (200..300).contains(&reply.code) => Verdict::ok(),
            Ok(reply) => refusal(reply),
            Err(verdict) => verdict,
        }
    }

    fn queue() -> Verdict {
        send_message()
    }

    fn queue_outbound() -> Verdict {
        if !proxied() {
            return Verdict::Cont;
        }
        send_message()
    }

    fn reset_transaction() {
        forward::proxy_reset();
    }
}

waraka_plugin::export!(SmtpProxy);
