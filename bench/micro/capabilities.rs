//! Criterion micro-benchmarks of host capabilities: DKIM signing of a
//! 5 KiB message with an RSA-2048 and an Ed25519 key, by keys kept from
//! one message to the next (what the host does) and by keys read and
//! parsed again for each message (what it did before).
//! `cargo bench -p waraka --bench capabilities`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use waraka::capabilities::DkimKeys;
use waraka::capabilities::dkim_signing::KeyAlgorithm;

fn message() -> Vec<u8> {
    let mut message = b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: hello\r\n\
        Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\n"
        .to_vec();
    while message.len() < 5 * 1024 {
        message.extend_from_slice(b"The quick brown fox jumps over the lazy dog, again and again.\r\n");
    }
    message
}

fn dkim_sign(c: &mut Criterion) {
    let message = message();
    let mut group = c.benchmark_group("dkim_sign");
    for (name, algorithm) in [("rsa2048", KeyAlgorithm::Rsa2048), ("ed25519", KeyAlgorithm::Ed25519)] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("dkim");
        DkimKeys::new(Some(path.clone()))
            .create("example.com", "s1", algorithm)
            .expect("a key");
        let kept = DkimKeys::new(Some(path.clone()));
        group.bench_with_input(BenchmarkId::new("key kept", name), &message, |b, message| {
            b.iter(|| kept.sign("example.com", message).expect("signed"))
        });
        group.bench_with_input(
            BenchmarkId::new("key parsed each time", name),
            &message,
            |b, message| {
                b.iter(|| {
                    DkimKeys::new(Some(path.clone()))
                        .sign("example.com", message)
                        .expect("signed")
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, dkim_sign);
criterion_main!(benches);
