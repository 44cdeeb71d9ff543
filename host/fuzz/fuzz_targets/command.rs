//! The command parser: any line either parses or is refused with a 5xx
//! reply, and every reply the parser makes renders as well-formed SMTP.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waraka_protocol::{Command, Reply, parse_command};

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

fuzz_target!(|line: &[u8]| {
    match parse_command(line) {
        Ok(Command::Mail(address) | Command::Rcpt(address)) => {
            let _ = address.to_string();
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
