use std::fmt::Write as _;

/// An SMTP reply: a code, an optional enhanced status code (RFC 3463) and one
/// or more text lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code (`5.1.1`), sent at the start of every line.
    pub enhanced: Option<String>,
    /// The text lines; a reply of several lines is sent as a multi-line reply.
    pub lines: Vec<String>,
}

/// Longest reply text line we send, leaving room for code and status (RFC 5321 §4.5.3.1.5).
const MAX_TEXT: usize = 480;

impl Reply {
    /// A reply with an enhanced status code and one line of text.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: (!enhanced.is_empty()).then(|| enhanced.to_string()),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced status code (greeting, HELO/EHLO, 354).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    /// Whether the code is 4xx or 5xx.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form of the reply to `out`. Text that came from
    /// plugins is made safe: CR, LF and other controls become spaces, and
    /// over-long lines are cut.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut text = String::new();
        let lines: &[String] = if self.lines.is_empty() {
            &[String::new()]
        } else {
            &self.lines
        };
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let _ = write!(text, "{}{}", self.code, sep);
            if let Some(enhanced) = &self.enhanced {
                let _ = write!(text, "{enhanced} ");
            }
            let clean: String = line.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            let mut end = clean.len().min(MAX_TEXT);
            while !clean.is_char_boundary(end) {
                end -= 1;
            }
            text.push_str(clean[..end].trim_end());
            text.push_str("\r\n");
        }
        out.extend_from_slice(text.as_bytes());
    }

    /// The wire form as a string (for logs and tests).
    pub fn to_wire(&self) -> String {
        let mut out = Vec::new();
        self.write_to(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Replies the core sends by itself, in one place.
pub mod codes {
    use super::Reply;

    /// `250 2.0.0`: the command succeeded.
    pub fn ok() -> Reply {
        Reply::new(250, "2.0.0", "OK")
    }
    /// `503 5.5.1`: a command out of order (`what` says which).
    pub fn bad_sequence(what: &str) -> Reply {
        Reply::new(503, "5.5.1", format!("Bad sequence of commands: {what}"))
    }
    /// `501 5.5.4`: a malformed argument (`what` says which).
    pub fn syntax(what: &str) -> Reply {
        Reply::new(501, "5.5.4", format!("Syntax error: {what}"))
    }
    /// `500 5.5.2`: a verb nobody handled.
    pub fn unrecognized() -> Reply {
        Reply::new(500, "5.5.2", "Unrecognized command")
    }
    /// `500 5.5.2`: a command line over [`MAX_COMMAND_LINE`](crate::MAX_COMMAND_LINE).
    pub fn line_too_long() -> Reply {
        Reply::new(500, "5.5.2", "Line too long")
    }
    /// `421 4.7.0`: the error limit was reached; the server closes.
    pub fn too_many_errors() -> Reply {
        Reply::new(421, "4.7.0", "Too many errors, closing connection")
    }
    /// `421 4.4.2`: the client was idle too long; the server closes.
    pub fn idle_timeout(host: &str) -> Reply {
        Reply::new(421, "4.4.2", format!("{host} Timeout exceeded, closing connection"))
    }
    /// `421 4.4.2`: DATA arrived slower than the minimum rate; the server closes.
    pub fn data_rate_too_low(host: &str) -> Reply {
        Reply::new(421, "4.4.2", format!("{host} Data rate too low, closing connection"))
    }
    /// `421 4.7.0`: too many commands without a message; the server closes.
    pub fn too_many_junk_commands() -> Reply {
        Reply::new(421, "4.7.0", "Too many commands without mail, closing connection")
    }
    /// `421 4.7.0`: the server holds its most connections.
    pub fn too_many_connections() -> Reply {
        Reply::new(421, "4.7.0", "Too many connections, try again later")
    }
    /// `421 4.7.0`: this client address holds its most connections.
    pub fn too_many_connections_from_client() -> Reply {
        Reply::new(421, "4.7.0", "Too many connections from your address, try again later")
    }
    /// `554 5.5.0`: the client talked before it was its turn.
    pub fn sync_error() -> Reply {
        Reply::new(554, "5.5.0", "Error: SMTP protocol synchronization")
    }
    /// `552 5.3.4`: the message is over the size limit.
    pub fn too_big() -> Reply {
        Reply::new(552, "5.3.4", "Message size exceeds fixed maximum message size")
    }
    /// `452 4.5.3`: the transaction has its most recipients.
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, "4.5.3", "Too many recipients")
    }
    /// `421 4.3.2`: the server is stopping; the session closes.
    pub fn shutting_down(host: &str) -> Reply {
        Reply::new(
            421,
            "4.3.2",
            format!("{host} Service shutting down, closing connection"),
        )
    }
    /// `451 4.3.0`: something failed on our side; the client should retry.
    pub fn local_error() -> Reply {
        Reply::new(451, "4.3.0", "Local error in processing, try again later")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_replies_use_dashes_and_status_on_every_line() {
        let r = Reply {
            code: 250,
            enhanced: Some("2.0.0".into()),
            lines: vec!["a".into(), "b".into()],
        };
        assert_eq!(r.to_wire(), "250-2.0.0 a\r\n250 2.0.0 b\r\n");
    }

    #[test]
    fn plugin_text_cannot_inject_lines() {
        let r = Reply::new(550, "5.7.1", "no\r\n250 ok");
        assert_eq!(r.to_wire(), "550 5.7.1 no  250 ok\r\n");
    }
}
