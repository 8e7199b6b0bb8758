//! NDJSON framing: arbitrary bytes, arbitrary cuts. Never panics, buffers at most one line, and the
//! lines and errors do not depend on where the input was cut.
//!
//! Input: 8 bytes of split seed, 2 bytes of line cap (little-endian, at least 1), then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_observer_decode::protocol::ndjson::NdjsonParser;

#[path = "common.rs"]
mod common;

fn run(pieces: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, usize) {
    let mut p = NdjsonParser::new(max);
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        p.feed(piece, i as u64, &mut errors, |l, ts, _| {
            assert_eq!(ts, i as u64);
            assert!(l.len() <= max);
            lines.push(l.to_vec());
        });
        assert!(p.buffered_bytes() <= max);
    }
    p.finish(u64::MAX, &mut errors, |l, _, _| lines.push(l.to_vec()));
    (lines, errors.len())
}

fuzz_target!(|input: &[u8]| {
    let Some((head, body)) = input.split_at_checked(10) else {
        return;
    };
    let max = usize::from(u16::from_le_bytes([head[8], head[9]])).max(1);
    let whole = run(&[body], max);
    let pieces = common::Splits::new(&head[..8]).cut(body);
    assert_eq!(run(&pieces, max), whole);
});
