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

/// The plugin's config, read once per hook.
struct Setup {
    /// The next hop: the top of the file.
    hop: Option<forward::NextHop>,
    /// `relaying`: users' own mail is played at the next hop too.
    relaying: bool,
}

impl Setup {
    fn load() -> Setup {
        let lines = config::lines(SETTINGS).unwrap_or_default();
        let hop = Routes::parse(&lines)
            .route("", DEFAULTS)
            .filter(|hop| !hop.host.is_empty())
            .map(|hop| hop.target(Protocol::Smtp));
        let relaying = Settings::from_lines(&lines).bool("relaying", false);
        Setup { hop, relaying }
    }

    /// The config when this session's mail is played at the next hop:
    /// inbound mail always, users' own mail when `relaying = true`
    /// (Haraka's smtp_proxy plays everything; the next hop sends it on).
    fn for_session() -> Option<Setup> {
        let setup = Setup::load();
        (!session::relaying() || setup.relaying).then_some(setup)
    }

    /// Runs one step at the next hop: `accepted` makes the verdict of a
    /// 2xx; a refusal there is the client's, and a next hop that is missing
    /// or cannot be asked is a temporary failure.
    fn step(
        &self,
        name: &str,
        call: impl FnOnce(&forward::NextHop) -> Result<Reply, Error>,
        accepted: impl FnOnce(Reply) -> Verdict,
    ) -> Verdict {
        let Some(hop) = &self.hop else {
            waraka_plugin::error!("queue/smtp_proxy: no host in config/{SETTINGS}");
            return Verdict::denysoft_code(451, "4.3.5", "Next hop not configured");
        };
        match call(hop) {
            Ok(reply) if (200..300).contains(&reply.code) => accepted(reply),
            Ok(reply) if reply.code >= 500 => Verdict::Deny(Some(reply)),
            Ok(reply) => Verdict::Denysoft(Some(reply)),
            Err(e) => {
                waraka_plugin::warn!("queue/smtp_proxy: {name} at the next hop failed: {e:?}");
                Verdict::denysoft_code(451, "4.4.1", "Next hop unavailable, try again later")
            }
        }
    }

    /// The message played at the next hop, its reply the client's.
    fn send_message(&self) -> Verdict {
        self.step("the message", forward::proxy_data, |reply| {
            waraka_plugin::info!(
                "queue/smtp_proxy: the next hop took the message: {}",
                reply.lines.join(" ")
            );
            Verdict::Ok(Some(reply))
        })
    }
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
        match Setup::for_session() {
            Some(setup) => setup.step("MAIL", forward::proxy_mail, |_| Verdict::Cont),
            None => Verdict::Cont,
        }
    }

    fn rcpt(recipient: Address) -> Verdict {
        let address = recipient.to_addr_spec();
        match Setup::for_session() {
            Some(setup) => setup.step("RCPT", |hop| forward::proxy_rcpt(hop, &address), |_| Verdict::ok()),
            None => Verdict::Cont,
        }
    }

    fn queue() -> Verdict {
        Setup::load().send_message()
    }

    fn queue_outbound() -> Verdict {
        Setup::for_session().map_or(Verdict::Cont, |setup| setup.send_message())
    }

    fn reset_transaction() {
        forward::proxy_reset();
    }
}

waraka_plugin::export!(SmtpProxy);
