//! The chunked decoder: never panics, consumes only what it is given, emits no more data than the
//! input held, and gives the same result for any split of the same bytes.
//!
//! Input: 8 bytes of split seed, then the chunked body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_observer_decode::protocol::chunked::ChunkedDecoder;

#[path = "common.rs"]
mod common;

/// (data, consumed, done, failed)
fn run(pieces: &[&[u8]]) -> (Vec<u8>, usize, bool, bool) {
    let mut d = ChunkedDecoder::new(1024);
    let mut data = Vec::new();
    let mut used = 0;
    for piece in pieces {
        match d.feed(piece, |c| data.extend_from_slice(c)) {
            Ok(p) => {
                assert!(p.consumed <= piece.len());
                used += p.consumed;
                if p.done {
                    return (data, used, true, false);
                }
                assert_eq!(p.consumed, piece.len(), "stopped early without being done");
            }
            Err(_) => return (data, used, false, true),
        }
    }
    (data, used, false, false)
}

fuzz_target!(|input: &[u8]| {
    let Some((seed, body)) = input.split_at_checked(8) else {
        return;
    };
    let whole = run(&[body]);
    assert!(whole.0.len() <= body.len());
    let split = run(&common::Splits::new(seed).cut(body));
    // `consumed` differs after an error (where the error hit within a piece is not reported).
    assert_eq!((&whole.0, whole.2, whole.3), (&split.0, split.2, split.3));
    if !whole.3 {
        assert_eq!(whole.1, split.1);
    }
});
