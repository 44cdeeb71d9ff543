//! `auth/proxy`: verifies AUTH PLAIN/LOGIN credentials by trying them on
//! another SMTP server, as Haraka's `auth/auth_proxy`: the server that
//! already knows the users (an Exchange or Postfix submission port) keeps
//! deciding while Waraka takes the mail. The server is the top of
//! `config/auth/proxy.ini`, or the `[domain]` section of the user name's
//! domain; the host's SMTP client opens a session there up to AUTH and
//! quits, through the `forward` grant, with no mail sent. A refusal there
//! is a `535` here; a server that cannot be asked is a `454`, never an
//! accept.

use waraka_plugin::next_hop::{Defaults, Routes};
use waraka_plugin::{AuthAttempt, Hook, Plugin, Verdict, config, forward};

const SETTINGS: &str = "auth/proxy.ini";
/// The submission port, with STARTTLS and a checked certificate: the
/// password crosses that connection.
const DEFAULTS: Defaults = Defaults {
    port: 587,
    tls: "required",
};

struct AuthProxy;

/// The domain whose section of the config applies to `user` (empty without one).
fn domain_of(user: &str) -> String {
    user.rsplit_once('@')
        .map(|(_, domain)| domain.to_ascii_lowercase())
        .unwrap_or_default()
}

impl Plugin for AuthProxy {
    const NAME: &'static str = "auth/proxy";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Auth];

    fn auth(attempt: AuthAttempt) -> Verdict {
        if let Some(verdict) = attempt.precheck() {
            return verdict;
        }
        let routes = Routes::parse(&config::lines(SETTINGS).unwrap_or_default());
        let hop = routes.route(&domain_of(&attempt.user), DEFAULTS);
        let Some(hop) = hop.filter(|h| !h.host.is_empty()) else {
            waraka_plugin::debug!("auth/proxy: no server for {}", attempt.user);
            return Verdict::Cont;
        };
        if attempt.secret.is_empty() {
            return Verdict::Deny(None);
        }
        let server = forward::NextHop {
            host: hop.host.clone(),
            port: hop.port,
            tls: hop.tls.clone(),
            auth: None,
        };
        match forward::check_credentials(&server, &attempt.user, &attempt.secret) {
            Ok(true) => {
                waraka_plugin::info!("auth/proxy: {} authenticated by {hop}", attempt.user);
                Verdict::ok()
            }
            Ok(false) => Verdict::Deny(None),
            Err(e) => {
                waraka_plugin::warn!("auth/proxy: asking {hop} about {} failed: {e:?}", attempt.user);
                Verdict::denysoft("Authentication service unavailable")
            }
        }
    }
}

waraka_plugin::export!(AuthProxy);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_routed_by_their_domain() {
        let routes = Routes::parse(
            &[
                "host = smtp.example.com",
                "[Example.ORG]",
                "host = mail.example.org",
                "port = 465",
            ]
            .map(String::from),
        );
        let hop = |user| routes.route(&domain_of(user), DEFAULTS).map(|h| h.to_string());
        assert_eq!(hop("alice").as_deref(), Some("smtp.example.com:587"));
        assert_eq!(hop("bob@example.org").as_deref(), Some("mail.example.org:465"));
        assert_eq!(hop("carol@EXAMPLE.org").as_deref(), Some("mail.example.org:465"));
        assert_eq!(hop("dave@example.net").as_deref(), Some("smtp.example.com:587"));
        assert_eq!(Routes::parse(&[]).route("", DEFAULTS), None);
    }
}
