//! Parsing one SMTP command line into a [`Command`].

use crate::address::{Address, AddressError};
use crate::reply::{Reply, codes};
use crate::xclient::Xclient;

/// Longest command line accepted, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

/// A parsed SMTP command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `HELO domain`.
    Helo(String),
    /// `EHLO domain`.
    Ehlo(String),
    /// `MAIL FROM:<path> [params]`.
    Mail(Address),
    /// `RCPT TO:<path> [params]`.
    Rcpt(Address),
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030 CHUNKING): `size` octets of message
    /// follow the command line, as they are.
    Bdat {
        /// How many octets the chunk has.
        size: u64,
        /// Whether this chunk ends the message.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP` (any argument ignored).
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY` with its argument.
    Vrfy(String),
    /// `HELP` (any argument ignored).
    Help,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH` with everything after the verb (mechanism and initial response).
    Auth(String),
    /// `XCLIENT` with the attributes it sets (Postfix's extension for
    /// trusted front ends).
    Xclient(Xclient),
    /// A verb the core does not handle; passed to `unrecognized-command`.
    Unknown {
        /// The verb as sent.
        verb: String,
        /// Everything after the verb, leading space removed.
        args: String,
    },
}

impl Command {
    /// Whether RFC 2920 lets this command be followed by others in one group
    /// without waiting for its reply.
    pub fn may_be_pipelined(&self) -> bool {
        matches!(
            self,
            Command::Mail(_) | Command::Rcpt(_) | Command::Rset | Command::Bdat { .. }
        )
    }
}

/// A command line that cannot be run; the reply says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandError(pub Reply);

fn error(reply: Reply) -> CommandError {
    CommandError(reply)
}

/// Parses one command line (without its CRLF).
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    if line.contains(&0) {
        return Err(error(Reply::new(500, "5.5.2", "NUL characters are not allowed")));
    }
    let line = std::str::from_utf8(line).map_err(|_| error(Reply::new(500, "5.5.2", "Command is not valid UTF-8")))?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(error(Reply::new(500, "5.5.2", "Control characters are not allowed")));
    }
    let (verb, args) = match line.split_once(' ') {
        Some((v, a)) => (v, a.trim()),
        None => (line, ""),
    };
    let upper = verb.to_ascii_uppercase();
    let no_args = |cmd: Command, name: &str| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(error(codes::syntax(&format!("{name} takes no arguments"))))
        }
    };
    match upper.as_str() {
        "HELO" | "EHLO" => {
            if args.is_empty() || args.contains(' ') {
                return Err(error(codes::syntax(&format!("{upper} hostname"))));
            }
            Ok(if upper == "HELO" {
                Command::Helo(args.into())
            } else {
                Command::Ehlo(args.into())
            })
        }
        "MAIL" => {
            let rest = strip_keyword(args, "FROM:").ok_or_else(|| error(codes::syntax("MAIL FROM:<address>")))?;
            Address::parse_with_params(rest, true)
                .map(Command::Mail)
                .map_err(|e| address_error(e, "5.1.7", "sender"))
        }
        "RCPT" => {
            let rest = strip_keyword(args, "TO:").ok_or_else(|| error(codes::syntax("RCPT TO:<address>")))?;
            Address::parse_with_params(rest, false)
                .map(Command::Rcpt)
                .map_err(|e| address_error(e, "5.1.3", "recipient"))
        }
        "DATA" => no_args(Command::Data, "DATA"),
        "BDAT" => parse_bdat(args),
        "RSET" => no_args(Command::Rset, "RSET"),
        "QUIT" => no_args(Command::Quit, "QUIT"),
        "STARTTLS" => no_args(Command::StartTls, "STARTTLS"),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" if args.is_empty() => Err(error(codes::syntax("VRFY address"))),
        "VRFY" => Ok(Command::Vrfy(args.into())),
        "AUTH" => Ok(Command::Auth(args.into())),
        "XCLIENT" => Xclient::parse(args).map(Command::Xclient).map_err(error),
        _ => Ok(Command::Unknown {
            verb: upper,
            args: args.into(),
        }),
    }
}

/// `size [LAST]`: the size is 1 to 19 digits, so it always fits a `u64`.
fn parse_bdat(args: &str) -> Result<Command, CommandError> {
    let mut words = args.split_ascii_whitespace();
    let size = words
        .next()
        .filter(|s| (1..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok());
    let last = match words.next() {
        None => Some(false),
        Some(word) if word.eq_ignore_ascii_case("LAST") => Some(true),
        Some(_) => None,
    };
    match (size, last, words.next()) {
        (Some(size), Some(last), None) => Ok(Command::Bdat { size, last }),
        _ => Err(error(codes::syntax("BDAT size [LAST]"))),
    }
}

fn strip_keyword<'a>(args: &'a str, keyword: &str) -> Option<&'a str> {
    let head = args.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword).then(|| &args[keyword.len()..])
}

fn address_error(e: AddressError, enhanced: &str, what: &str) -> CommandError {
    match e {
        AddressError::Param(p) => error(Reply::new(555, "5.5.4", format!("Invalid parameter {p}"))),
        AddressError::NullNotAllowed => error(Reply::new(501, enhanced, format!("Null {what} not allowed"))),
        AddressError::TooLong => error(Reply::new(501, enhanced, format!("The {what} address is too long"))),
        AddressError::Syntax => error(Reply::new(501, enhanced, format!("Bad {what} address syntax"))),
    }
}

#[cfg(test)]
mod tests {
    use crate::*;

    fn code(line: &str) -> u16 {
        parse_command(line.as_bytes()).unwrap_err().0.code
    }

    #[test]
    fn parses_the_core_verbs() {
        assert_eq!(
            parse_command(b"ehlo client.example").unwrap(),
            Command::Ehlo("client.example".into())
        );
        assert!(
            matches!(parse_command(b"MAIL FROM:<a@b.c> SIZE=10").unwrap(), Command::Mail(a) if a.param("size") == Some(Some("10")))
        );
        assert!(matches!(
            parse_command(b"mail from: <a@b.c>").unwrap(),
            Command::Mail(_)
        ));
        assert!(matches!(
            parse_command(b"RCPT TO:<postmaster>").unwrap(),
            Command::Rcpt(_)
        ));
        assert_eq!(parse_command(b"DATA").unwrap(), Command::Data);
        assert_eq!(
            parse_command(b"BDAT 1024").unwrap(),
            Command::Bdat {
                size: 1024,
                last: false
            }
        );
        assert_eq!(
            parse_command(b"bdat 0 last").unwrap(),
            Command::Bdat { size: 0, last: true }
        );
        assert_eq!(parse_command(b"NOOP anything").unwrap(), Command::Noop);
        assert!(matches!(
            parse_command(b"XCLIENT NAME=x").unwrap(),
            Command::Xclient(Xclient { name: Some(Some(name)), .. }) if name == "x"
        ));
        assert_eq!(
            parse_command(b"XFORWARD NAME=x").unwrap(),
            Command::Unknown {
                verb: "XFORWARD".into(),
                args: "NAME=x".into()
            }
        );
    }

    #[test]
    fn syntax_errors_carry_the_right_codes() {
        assert_eq!(code("EHLO"), 501);
        assert_eq!(code("MAIL <a@b.c>"), 501);
        assert_eq!(code("MAIL FROM:<a@@b>"), 501);
        assert_eq!(code("RCPT TO:<>"), 501);
        assert_eq!(code("DATA now"), 501);
        assert_eq!(code("MAIL FROM:<a@b.c> SIZE="), 555);
        assert_eq!(code("NOOP\0"), 500);
        assert_eq!(code("VRFY"), 501);
        for bad in [
            "BDAT",
            "BDAT x",
            "BDAT -1",
            "BDAT 10 FIRST",
            "BDAT 10 LAST more",
            "BDAT 99999999999999999999",
        ] {
            assert_eq!(code(bad), 501, "{bad}");
        }
    }
}
