//! The DATA receiver: however the bytes are split across reads, it finds the
//! same end of data and produces the same message; the end is always a real
//! `CRLF . CRLF`; and when bare newlines are normalised, none is left.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waraka_protocol::{BareNewlines, DataEvent, DataReceiver};

/// Feeds `input` in reads of the given sizes (the rest in one read); returns
/// the message and how many bytes of `input` it took, if it ended.
fn receive(input: &[u8], reads: &[usize], mode: BareNewlines) -> (Vec<u8>, Option<usize>, DataReceiver) {
    let mut receiver = DataReceiver::new(mode, 998);
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = reads.iter().copied().chain(std::iter::repeat(usize::MAX));
    while at < input.len() {
        let end = at.saturating_add(sizes.next().unwrap().max(1)).min(input.len());
        if let DataEvent::End { consumed } = receiver.feed(&input[at..end], &mut out) {
            assert!(consumed <= end - at);
            return (out, Some(at + consumed), receiver);
        }
        at = end;
    }
    (out, None, receiver)
}

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the read sizes, the rest is the stream.
    let split = data
        .first()
        .map_or(0, |n| usize::from(n % 8))
        .min(data.len().saturating_sub(1));
    let (reads, input) = data[1.min(data.len())..].split_at(split);
    let reads: Vec<usize> = reads.iter().map(|&n| usize::from(n)).collect();
    for mode in [BareNewlines::Reject, BareNewlines::Normalize] {
        let whole = receive(input, &[], mode);
        let pieces = receive(input, &reads, mode);
        let bytewise = receive(input, &[1; 4096], mode);
        for other in [&pieces, &bytewise] {
            assert_eq!(whole.0, other.0, "the message does not depend on how reads split it");
            assert_eq!(whole.1, other.1, "nor does its end");
            assert_eq!(whole.2.saw_bare_newline, other.2.saw_bare_newline);
            assert_eq!(whole.2.saw_nul, other.2.saw_nul);
            assert_eq!(whole.2.saw_long_line, other.2.saw_long_line);
        }
        if let Some(end) = whole.1 {
            let taken = &input[..end];
            assert!(
                taken.ends_with(b"\r\n.\r\n") || taken == b".\r\n",
                "only CRLF . CRLF ends the data"
            );
        }
        if mode == BareNewlines::Normalize {
            let message = &whole.0;
            for (i, &b) in message.iter().enumerate() {
                match b {
                    b'\r' => assert_eq!(message.get(i + 1), Some(&b'\n'), "no bare CR is left"),
                    b'\n' => assert!(i > 0 && message[i - 1] == b'\r', "no bare LF is left"),
                    _ => {}
                }
            }
        }
    }
});
