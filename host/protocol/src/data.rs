//! The DATA receiver: finds the end of the message, removes dot-stuffing and
//! notes every bare CR, bare LF or NUL on the way.
//!
//! Only `CRLF . CRLF` ends the message, byte-exact and across reads, so no
//! other sequence (`\n.\n`, `\r.\r`, `\n.\r\n`…) can end DATA early and
//! smuggle a second message (SEC Consult, 2023).

use memchr::memchr3;

/// What to do with a CR or LF that is not part of a CRLF pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BareNewlines {
    /// Keep the bytes and reject the message after the end of data.
    #[default]
    Reject,
    /// Store each bare CR or LF as CRLF. The end of data is still only `CRLF.CRLF`.
    Normalize,
}

/// What feeding bytes produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEvent {
    /// The message goes on; feed more bytes.
    NeedMore,
    /// The message ended.
    End {
        /// How many bytes of the last input (terminator included) belonged
        /// to the message; the rest is the next command.
        consumed: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    LineStart,
    Dot,
    DotCr,
    Mid,
    Cr,
}

/// Receives the body of one DATA command.
#[derive(Debug)]
pub struct DataReceiver {
    state: State,
    bare_newlines: BareNewlines,
    max_line: usize,
    line_len: usize,
    /// A bare CR or LF was seen (and kept, under [`BareNewlines::Reject`]).
    pub saw_bare_newline: bool,
    /// A NUL byte was seen.
    pub saw_nul: bool,
    /// A line longer than the limit was seen.
    pub saw_long_line: bool,
}

impl DataReceiver {
    /// A receiver at the start of the message. `max_line` limits line length
    /// (CRLF excluded); 0 means no limit.
    pub fn new(bare_newlines: BareNewlines, max_line: usize) -> Self {
        DataReceiver {
            state: State::LineStart,
            bare_newlines,
            max_line,
            line_len: 0,
            saw_bare_newline: false,
            saw_nul: false,
            saw_long_line: false,
        }
    }

    fn bare(&mut self, byte: u8, out: &mut Vec<u8>) {
        self.saw_bare_newline = true;
        match self.bare_newlines {
            BareNewlines::Reject => out.push(byte),
            BareNewlines::Normalize => out.extend_from_slice(b"\r\n"),
        }
        self.state = State::Mid;
    }

    fn content(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.line_len += bytes.len();
        if self.max_line > 0 && self.line_len > self.max_line {
            self.saw_long_line = true;
        }
        out.extend_from_slice(bytes);
    }

    /// Feeds bytes; the unstuffed message content is appended to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> DataEvent {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::LineStart if input[i] == b'.' => {
                    self.state = State::Dot;
                    i += 1;
                }
                State::Dot if input[i] == b'\r' => {
                    self.state = State::DotCr;
                    i += 1;
                }
                State::DotCr if input[i] == b'\n' => {
                    self.state = State::LineStart;
                    return DataEvent::End { consumed: i + 1 };
                }
                State::DotCr => self.bare(b'\r', out),
                State::Cr if input[i] == b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.line_len = 0;
                    self.state = State::LineStart;
                    i += 1;
                }
                State::Cr => self.bare(b'\r', out),
                // A leading dot was stuffing (dropped) and the line goes on.
                State::LineStart | State::Dot | State::Mid => {
                    self.state = State::Mid;
                    let rest = &input[i..];
                    let run = memchr3(b'\r', b'\n', 0, rest).unwrap_or(rest.len());
                    self.content(&rest[..run], out);
                    i += run;
                    match input.get(i) {
                        Some(b'\r') => {
                            self.state = State::Cr;
                            i += 1;
                        }
                        Some(b'\n') => {
                            self.bare(b'\n', out);
                            i += 1;
                        }
                        Some(0) => {
                            self.saw_nul = true;
                            self.content(&[0], out);
                            i += 1;
                        }
                        _ => {}
                    }
                }
            }
        }
        DataEvent::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]], mode: BareNewlines) -> (Vec<u8>, Option<usize>, DataReceiver) {
        let mut rx = DataReceiver::new(mode, 0);
        let mut out = Vec::new();
        for chunk in chunks {
            if let DataEvent::End { consumed } = rx.feed(chunk, &mut out) {
                return (out, Some(consumed), rx);
            }
        }
        (out, None, rx)
    }

    #[test]
    fn ends_only_on_crlf_dot_crlf_even_split_across_reads() {
        let (out, end, _) = run(
            &[b"Subject: x\r\n\r\nhi\r", b"\n.", b"\r", b"\nMAIL"],
            BareNewlines::Reject,
        );
        assert_eq!(out, b"Subject: x\r\n\r\nhi\r\n");
        assert_eq!(end, Some(1));
    }

    #[test]
    fn empty_message_and_unstuffing() {
        assert_eq!(run(&[b".\r\n"], BareNewlines::Reject).1, Some(3));
        let (out, end, _) = run(&[b"..leading\r\n...\r\n.x\r\n.\r\n"], BareNewlines::Reject);
        assert_eq!(out, b".leading\r\n..\r\nx\r\n");
        assert!(end.is_some());
    }

    #[test]
    fn smuggling_sequences_never_end_the_message() {
        for seq in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\n",
            b"\r.\r",
            b"\r.\n",
            b"\n.\r",
            b"\r\n.\r",
            b"\r\n\x00.\r\n",
            b"\r\n.\x00\r\n",
        ] {
            let mut msg = b"a".to_vec();
            msg.extend_from_slice(seq);
            msg.extend_from_slice(b"MAIL FROM:<x@y>\r\n");
            let (_, end, rx) = run(&[&msg], BareNewlines::Reject);
            assert_eq!(end, None, "{seq:?} ended DATA");
            assert!(rx.saw_bare_newline || rx.saw_nul, "{seq:?} not flagged");
        }
    }

    #[test]
    fn normalize_turns_bare_newlines_into_crlf() {
        let (out, end, rx) = run(&[b"a\nb\rc\r\n.\r\n"], BareNewlines::Normalize);
        assert_eq!(out, b"a\r\nb\r\nc\r\n");
        assert!(end.is_some() && rx.saw_bare_newline);
    }

    #[test]
    fn long_lines_are_flagged() {
        let mut rx = DataReceiver::new(BareNewlines::Reject, 10);
        let mut out = Vec::new();
        rx.feed(b"0123456789\r\n", &mut out);
        assert!(!rx.saw_long_line);
        rx.feed(b"0123456789A\r\n", &mut out);
        assert!(rx.saw_long_line);
    }
}
