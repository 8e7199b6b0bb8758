//! SSE framing: arbitrary bytes, arbitrary cuts. Never panics, buffers at most about one event, and
//! the events (type, data, id) and errors do not depend on where the input was cut.
//!
//! Input: 8 bytes of split seed, 2 bytes of event cap (little-endian, at least 1), then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_observer_decode::protocol::sse::SseParser;

#[path = "common.rs"]
mod common;

type Event = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

fn run(pieces: &[&[u8]], max: usize) -> (Vec<Event>, usize, u64) {
    let mut p = SseParser::new(max);
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        p.feed(piece, i as u64, &mut errors, |e, _| {
            assert_eq!(e.ts_ns, i as u64);
            events.push((e.event.to_vec(), e.data.to_vec(), e.id.map(<[u8]>::to_vec)));
        });
        // The line in progress, the data, event and id fields all count against one event.
        assert!(
            p.buffered_bytes() <= 2 * max + 8,
            "{} > {max}",
            p.buffered_bytes()
        );
    }
    (events, errors.len(), p.comments())
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
