//! `record_envelope_addresses`: writes the envelope into the message, as
//! Haraka's plugin of that name: `X-Envelope-From` (the sender, `<>` for a
//! bounce) and `X-Envelope-To` (every recipient), replacing any the client
//! sent. A mailbox then still shows whom a message was delivered for —
//! Bcc recipients and list members included — after the envelope is gone.

use waraka_plugin::{Address, Hook, Plugin, Verdict, envelope};

struct RecordEnvelopeAddresses;

/// The addresses as SMTP writes them, comma separated, one per folded line.
fn paths(addresses: &[Address]) -> String {
    addresses
        .iter()
        .map(|a| format!("<{}>", a.quoted_addr_spec()))
        .collect::<Vec<_>>()
        .join(",\r\n\t")
}

impl Plugin for RecordEnvelopeAddresses {
    const NAME: &'static str = "record_envelope_addresses";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        let sender = envelope::sender().map(|s| paths(&[s])).unwrap_or_else(|| "<>".into());
        waraka_plugin::replace_header("X-Envelope-From", &sender);
        waraka_plugin::replace_header("X-Envelope-To", &paths(&envelope::recipients()));
        Verdict::Cont
    }
}

waraka_plugin::export!(RecordEnvelopeAddresses);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_paths() {
        let address = |local: &str, domain: &str| Address {
            local_part: local.into(),
            domain: domain.into(),
            params: Vec::new(),
        };
        assert_eq!(
            paths(&[address("a", "x.test"), address("b c", "y.test")]),
            "<a@x.test>,\r\n\t<\"b c\"@y.test>"
        );
        assert_eq!(paths(&[]), "");
    }
}
