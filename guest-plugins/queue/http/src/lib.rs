//! `queue/http`: queues each message by POSTing it to an HTTP service —
//! a webhook of an application that takes mail (a ticket system, a CRM, a
//! processing pipeline) — through the host's `http` capability (grant
//! `http:NAME`; the URL and its credentials are in `waraka.toml`). The body
//! is the message as queued (`message/rfc822`), the envelope travels in
//! header fields. A 2xx answer queues it (`250`); any other answer, or no
//! answer, is a `451`, so the client retries and nothing is lost.
//! Settings: `config/queue/http.ini`.

use waraka_plugin::{Address, Hook, Plugin, Settings, Verdict, envelope, http, session};

const SETTINGS: &str = "queue/http.ini";

struct QueueHttp;

/// The envelope as header fields of the request.
fn envelope_fields(queue_id: &str, sender: Option<&Address>, recipients: &[Address]) -> Vec<(String, String)> {
    let sender = sender.map(Address::quoted_addr_spec).unwrap_or_default();
    let recipients: Vec<String> = recipients.iter().map(Address::quoted_addr_spec).collect();
    vec![
        ("X-Waraka-Queue-Id".into(), queue_id.into()),
        ("X-Waraka-Sender".into(), sender),
        ("X-Waraka-Recipients".into(), recipients.join(", ")),
    ]
}

fn unavailable() -> Verdict {
    Verdict::denysoft_code(451, "4.3.0", "Queue temporarily unavailable, try again later")
}

impl Plugin for QueueHttp {
    const NAME: &'static str = "queue/http";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Queue];

    fn queue() -> Verdict {
        let settings = Settings::load(SETTINGS);
        let service = settings.get("service").unwrap_or_else(|| "webhook".into());
        let path = settings.get("path").unwrap_or_default();
        let queue_id = session::transaction_id().unwrap_or_default();
        let fields = envelope_fields(&queue_id, envelope::sender().as_ref(), &envelope::recipients());
        match http::post_message(&service, &path, &fields) {
            Ok(response) if (200..300).contains(&response.status) => {
                waraka_plugin::info!("queue/http: {queue_id} posted to {service} ({})", response.status);
                Verdict::ok()
            }
            Ok(response) => {
                let said = String::from_utf8_lossy(&response.body[..response.body.len().min(200)]).into_owned();
                waraka_plugin::warn!(
                    "queue/http: {service} answered {} for {queue_id}: {said}",
                    response.status
                );
                unavailable()
            }
            Err(e) => {
                waraka_plugin::warn!("queue/http: posting {queue_id} to {service} failed: {e:?}");
                unavailable()
            }
        }
    }
}

waraka_plugin::export!(QueueHttp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_goes_in_header_fields() {
        let address = |local: &str, domain: &str| Address {
            local_part: local.into(),
            domain: domain.into(),
            params: Vec::new(),
        };
        let fields = envelope_fields(
            "Q1",
            Some(&address("a", "x.test")),
            &[address("b", "y.test"), address("c d", "y.test")],
        );
        assert_eq!(fields[0], ("X-Waraka-Queue-Id".to_string(), "Q1".to_string()));
        assert_eq!(fields[1].1, "a@x.test");
        assert_eq!(fields[2].1, "b@y.test, \"c d\"@y.test");
        assert_eq!(envelope_fields("Q2", None, &[])[1].1, "", "the null sender");
    }
}
