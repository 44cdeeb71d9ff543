//! Criterion micro-benchmarks of the SMTP hot paths that involve no plugin:
//! parsing command lines and receiving DATA (finding the end, unstuffing
//! dots). `cargo bench -p waraka-protocol`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use waraka_protocol::{BareNewlines, DataEvent, DataReceiver, parse_command};

const COMMANDS: &[(&str, &[u8])] = &[
    ("ehlo", b"EHLO client.example.com"),
    ("mail", b"MAIL FROM:<sender@example.org> SIZE=5120 BODY=8BITMIME"),
    ("rcpt", b"RCPT TO:<recipient@example.com>"),
    (
        "rcpt-dsn",
        b"RCPT TO:<\"first last\"@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@example.com",
    ),
    ("data", b"DATA"),
];

fn commands(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_command");
    for (name, line) in COMMANDS {
        group.bench_with_input(BenchmarkId::from_parameter(name), line, |b, line| {
            b.iter(|| parse_command(black_box(line)).unwrap())
        });
    }
    group.finish();
}

/// A message of about `size` bytes in wire form: 76-byte lines, every tenth
/// starting with a dot (stuffed), then the terminator.
fn wire_message(size: usize) -> Vec<u8> {
    let mut wire = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: bench\r\n\r\n".to_vec();
    let mut n = 0;
    while wire.len() < size {
        if n % 10 == 0 {
            wire.extend_from_slice(b"..");
        }
        wire.extend_from_slice(&[b'x'; 74]);
        wire.extend_from_slice(b"\r\n");
        n += 1;
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

fn data(c: &mut Criterion) {
    let mut group = c.benchmark_group("data_receiver");
    for size in [5 * 1024, 100 * 1024] {
        let wire = wire_message(size);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &wire, |b, wire| {
            let mut out = Vec::with_capacity(wire.len());
            b.iter(|| {
                out.clear();
                let mut receiver = DataReceiver::new(BareNewlines::Reject, 998);
                // Reads of 8 KiB, as a socket would deliver them.
                for chunk in wire.chunks(8192) {
                    if let DataEvent::End { consumed } = receiver.feed(chunk, &mut out) {
                        return black_box(consumed);
                    }
                }
                unreachable!("the message ends")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, commands, data);
criterion_main!(benches);
