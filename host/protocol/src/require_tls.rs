//! What a sender asks of TLS on the way to the recipients (RFC 8689): the
//! `REQUIRETLS` parameter of MAIL, or a `TLS-Required: No` header field.
//! How the queue honours it is the delivery's business.

use crate::{Address, Reply};
use serde::{Deserialize, Serialize};

/// The `TLS-Required` header field's name.
pub const TLS_REQUIRED_HEADER: &str = "TLS-Required";

/// What a message's sender asked of TLS on its way on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsRequest {
    /// Nothing: the recipient domains' policies (MTA-STS, DANE) and the
    /// server's own settings apply.
    #[default]
    Unstated,
    /// `REQUIRETLS`: every hop over TLS with an authenticated certificate,
    /// to a server that offers REQUIRETLS itself, or no delivery.
    Required,
    /// `TLS-Required: No`: the recipient domains' policies may be ignored
    /// so that the message gets through (TLS is still used when offered).
    PolicyWaived,
}

impl TlsRequest {
    /// The request of a message whose MAIL command was `sender`, with these
    /// `TLS-Required` header values: `REQUIRETLS` wins over the header
    /// field (RFC 8689 §4.1), and only `No` means anything in it.
    pub fn of<'a>(sender: &Address, header_values: impl IntoIterator<Item = &'a str>) -> TlsRequest {
        if sender.param("REQUIRETLS").is_some() {
            TlsRequest::Required
        } else if header_values.into_iter().any(|v| v.trim().eq_ignore_ascii_case("No")) {
            TlsRequest::PolicyWaived
        } else {
            TlsRequest::Unstated
        }
    }

    /// Whether the sender asked nothing.
    pub fn is_unstated(&self) -> bool {
        *self == TlsRequest::Unstated
    }

    /// Checks the `REQUIRETLS` parameter of a MAIL command given on a
    /// session that is (`tls`) or is not encrypted: it takes no value and
    /// needs TLS (RFC 8689 §4.1).
    pub fn check_mail(sender: &Address, tls: bool) -> Result<(), Reply> {
        match sender.param("REQUIRETLS") {
            None => Ok(()),
            Some(Some(_)) => Err(Reply::new(555, "5.5.4", "REQUIRETLS takes no value")),
            Some(None) if !tls => Err(Reply::new(
                530,
                "5.7.10",
                "REQUIRETLS needs a TLS session (STARTTLS first)",
            )),
            Some(None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, parse_command};

    fn mail(line: &str) -> Address {
        match parse_command(line.as_bytes()).unwrap() {
            Command::Mail(address) => address,
            other => panic!("not MAIL: {other:?}"),
        }
    }

    #[test]
    fn requiretls_wins_over_the_header_field_and_only_no_waives() {
        let required = mail("MAIL FROM:<a@b.test> REQUIRETLS");
        let plain = mail("MAIL FROM:<a@b.test>");
        assert_eq!(TlsRequest::of(&required, [" No"]), TlsRequest::Required);
        assert_eq!(TlsRequest::of(&plain, [" no "]), TlsRequest::PolicyWaived);
        assert_eq!(TlsRequest::of(&plain, ["yes"]), TlsRequest::Unstated);
        assert_eq!(TlsRequest::of(&plain, []), TlsRequest::Unstated);
    }

    #[test]
    fn requiretls_takes_no_value_and_needs_tls() {
        assert_eq!(
            TlsRequest::check_mail(&mail("MAIL FROM:<a@b.test> REQUIRETLS"), true),
            Ok(())
        );
        let plain = TlsRequest::check_mail(&mail("MAIL FROM:<a@b.test> REQUIRETLS"), false).unwrap_err();
        assert_eq!((plain.code, plain.enhanced.as_deref()), (530, Some("5.7.10")));
        let valued = TlsRequest::check_mail(&mail("MAIL FROM:<a@b.test> REQUIRETLS=YES"), true).unwrap_err();
        assert_eq!((valued.code, valued.enhanced.as_deref()), (555, Some("5.5.4")));
        assert_eq!(TlsRequest::check_mail(&mail("MAIL FROM:<a@b.test>"), false), Ok(()));
    }

    #[test]
    fn kept_in_queue_entries_by_name() {
        assert_eq!(
            serde_json::to_string(&TlsRequest::PolicyWaived).unwrap(),
            "\"policy-waived\""
        );
    }
}
