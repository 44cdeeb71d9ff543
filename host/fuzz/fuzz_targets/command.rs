//! The command parser: any line either parses or is refused with a 5xx
//! reply, and every reply the parser makes renders as well-formed SMTP.
//! DSN requests of MAIL and RCPT are refused with 501, or re-encoded
//! (as they are passed on) to parameters that parse back to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waraka_protocol::{Address, Command, MessageRequest, RecipientRequest, Reply, parse_command};

fn assert_wire_form(reply: &Reply) {
    let mut wire = Vec::new();
    reply.write_to(&mut wire);
    assert!(wire.ends_with(b"\r\n"), "a reply ends with CRLF");
    let text = std::str::from_utf8(&wire).expect("replies are UTF-8");
    for line in text.strip_suffix("\r\n").unwrap().split("\r\n") {
        assert!(
            !line.contains(['\r', '\n']),
            "no bare CR or LF inside a reply: {line:?}"
        );
        let (code, rest) = line.split_at(3);
        assert!(
            code.bytes().all(|b| b.is_ascii_digit()),
            "a reply line starts with its code: {line:?}"
        );
        assert!(
            rest.starts_with([' ', '-']),
            "the code is followed by a space or a dash: {line:?}"
        );
    }
}

/// Parses `<a@b.test>` with `params` as a command would.
fn reparsed(params: &str, allow_null: bool) -> Address {
    Address::parse_with_params(&format!("<a@b.test>{params}"), allow_null).expect("re-encoded DSN parameters parse")
}

fn check_dsn<T: PartialEq + std::fmt::Debug>(
    parsed: Result<T, Reply>,
    encode: impl Fn(&T) -> String,
    again: impl Fn(&Address) -> Result<T, Reply>,
    allow_null: bool,
) {
    match parsed {
        Ok(request) => {
            let params = encode(&request);
            assert_eq!(
                again(&reparsed(&params, allow_null)).expect("re-encoded DSN parameters are valid"),
                request,
                "{params}"
            );
        }
        Err(reply) => {
            assert_eq!(reply.code, 501, "{reply:?}");
            assert_wire_form(&reply);
        }
    }
}

fuzz_target!(|line: &[u8]| {
    match parse_command(line) {
        Ok(Command::Mail(address)) => {
            let _ = address.to_string();
            check_dsn(
                MessageRequest::from_mail(&address),
                MessageRequest::mail_params,
                MessageRequest::from_mail,
                true,
            );
        }
        Ok(Command::Rcpt(address)) => {
            let _ = address.to_string();
            check_dsn(
                RecipientRequest::from_rcpt(&address),
                RecipientRequest::rcpt_params,
                RecipientRequest::from_rcpt,
                false,
            );
        }
        Ok(_) => {}
        Err(error) => {
            assert!(
                (500..600).contains(&error.0.code),
                "a refused command gets a 5xx: {:?}",
                error.0
            );
            assert_wire_form(&error.0);
        }
    }
});
