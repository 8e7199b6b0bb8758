//! Server-Sent Events framing (WHATWG spec), incremental.
//!
//! The parser is fed the decoded (de-chunked, decompressed) response body in whatever pieces the
//! capture delivered, each stamped with the capture time of its bytes, and calls back once per
//! dispatched event. It follows the WHATWG "interpret an event stream" rules:
//!
//! - lines end at CR, LF or CRLF; a CRLF split across two feeds is one line end;
//! - a leading UTF-8 BOM is skipped;
//! - `field:value` with one optional space after the colon stripped; a line without a colon is a
//!   field with an empty value; `data` lines are joined with `\n`;
//! - lines starting with `:` are comments (keep-alive pings): counted, never dispatched;
//! - a blank line dispatches the event if any `data` line was seen (so `data:` alone dispatches an
//!   event with empty data, while `event: ping` alone does not);
//! - an incomplete event at the end of the stream is discarded (see [`SseParser::pending`]).
//!
//! Each event is stamped with the capture time of the feed that completed it (the blank line), which
//! is the moment a client could have acted on it.
//!
//! Memory: one event (all its lines, field names included) is bounded by `max_event_bytes`. A larger
//! event is skipped up to its blank line, reported once as [`DecodeError::EventTooLarge`], and
//! parsing continues with the next event. Lines that lie whole inside one feed are not copied unless
//! their event spans feeds or has several `data` lines.

use crate::types::DecodeError;

/// One dispatched event. Borrowed from the parser (or the fed bytes); copy what must outlive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// `event:` field; empty when absent (the spec's default type `message`).
    pub event: &'a [u8],
    /// `data:` lines joined with `\n`.
    pub data: &'a [u8],
    /// `id:` field of this event, if it had one.
    pub id: Option<&'a [u8]>,
    /// Capture time of the bytes that completed the event.
    pub ts_ns: u64,
}

impl SseEvent<'_> {
    /// The event name, with the spec's default `message` for an absent `event:` field.
    pub fn name(&self) -> &[u8] {
        if self.event.is_empty() {
            b"message"
        } else {
            self.event
        }
    }
}

/// Where the `data` of the event being assembled lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataLoc {
    /// No `data` line yet.
    None,
    /// Exactly one `data` line, lying at `start..end` of the current feed (not copied yet).
    Borrowed { start: usize, end: usize },
    /// In `data_buf` (several lines, or the event spans feeds).
    Owned,
}

/// Incremental SSE parser for one response body.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    /// Bytes of a line that started in an earlier feed and has not ended yet.
    line_buf: Vec<u8>,
    /// The last feed ended in CR: a LF at the start of the next one belongs to that line end.
    after_cr: bool,
    /// Bytes seen so far of the current line when skipping (only emptiness matters then).
    skip_line_len: usize,
    data: DataLoc,
    data_buf: Vec<u8>,
    event_buf: Vec<u8>,
    id_buf: Vec<u8>,
    has_id: bool,
    /// Bytes of the current event so far (all its lines), against `max_event_bytes`.
    event_bytes: usize,
    /// The current event grew past the cap: drop it up to its blank line.
    skipping: bool,
    /// How many bytes of a leading BOM were matched (3 = done / none).
    bom: u8,
    comments: u64,
    events: u64,
    retry_ms: Option<u64>,
}

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes,
            line_buf: Vec::new(),
            after_cr: false,
            skip_line_len: 0,
            data: DataLoc::None,
            data_buf: Vec::new(),
            event_buf: Vec::new(),
            id_buf: Vec::new(),
            has_id: false,
            event_bytes: 0,
            skipping: false,
            bom: 0,
            comments: 0,
            events: 0,
            retry_ms: None,
        }
    }

    /// Comment lines (`:` keep-alive pings) seen so far.
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// Events dispatched so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Last valid `retry:` value, in milliseconds.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// True when bytes of an unfinished event are held (the stream ended mid-event if it ends now).
    pub fn pending(&self) -> bool {
        !self.line_buf.is_empty() || self.event_bytes > 0 || self.skip_line_len > 0
    }

    /// Bytes currently buffered.
    pub fn buffered_bytes(&self) -> usize {
        self.line_buf.len() + self.data_buf.len() + self.event_buf.len() + self.id_buf.len()
    }

    /// Feeds body bytes captured at `ts_ns`; calls `on_event` for each event they complete.
    pub fn feed<F>(
        &mut self,
        mut input: &[u8],
        ts_ns: u64,
        errors: &mut Vec<DecodeError>,
        mut on_event: F,
    ) where
        F: FnMut(&SseEvent<'_>, &mut Vec<DecodeError>),
    {
        if self.bom < 3 {
            input = self.strip_bom(input);
        }
        if self.after_cr && !input.is_empty() {
            self.after_cr = false;
            if input[0] == b'\n' {
                input = &input[1..];
            }
        }
        let mut pos = 0;
        while pos < input.len() {
            let Some(rel) = memchr::memchr2(b'\n', b'\r', &input[pos..]) else {
                // The line goes on in the next feed.
                self.hold_partial_line(&input[pos..], errors);
                break;
            };
            let end = pos + rel;
            let next = if input[end] == b'\r' {
                match input.get(end + 1) {
                    Some(b'\n') => end + 2,
                    Some(_) => end + 1,
                    None => {
                        self.after_cr = true;
                        end + 1
                    }
                }
            } else {
                end + 1
            };
            self.complete_line(input, pos, end, ts_ns, errors, &mut on_event);
            pos = next;
        }
        // A single borrowed data line must not outlive this feed.
        if let DataLoc::Borrowed { start, end } = self.data {
            self.data_buf.clear();
            self.data_buf.extend_from_slice(&input[start..end]);
            self.data = DataLoc::Owned;
        }
    }

    fn strip_bom<'a>(&mut self, mut input: &'a [u8]) -> &'a [u8] {
        while self.bom < 3 {
            let Some(&b) = input.first() else {
                return input;
            };
            if b == BOM[self.bom as usize] {
                self.bom += 1;
                input = &input[1..];
            } else {
                // Not a BOM. The (at most 2) bytes matched so far were real data: keep them as the
                // start of the first line. They cannot be a line end, so holding them is correct.
                let matched = self.bom as usize;
                self.bom = 3;
                if matched > 0 {
                    self.line_buf.extend_from_slice(&BOM[..matched]);
                    self.event_bytes += matched;
                }
            }
        }
        input
    }

    fn hold_partial_line(&mut self, part: &[u8], errors: &mut Vec<DecodeError>) {
        if self.skipping {
            self.skip_line_len += part.len();
            return;
        }
        self.event_bytes += part.len();
        if self.event_bytes > self.max_event_bytes {
            self.start_skipping(errors);
            // The line goes on: it is not a blank line whatever follows.
            self.skip_line_len = part.len().max(1);
            return;
        }
        self.line_buf.extend_from_slice(part);
    }

    fn start_skipping(&mut self, errors: &mut Vec<DecodeError>) {
        errors.push(DecodeError::EventTooLarge {
            limit: self.max_event_bytes,
        });
        self.skipping = true;
        self.skip_line_len = 0;
        self.line_buf = Vec::new();
        self.reset_event();
        self.data_buf = Vec::new();
    }

    fn reset_event(&mut self) {
        self.data = DataLoc::None;
        self.data_buf.clear();
        self.event_buf.clear();
        self.id_buf.clear();
        self.has_id = false;
        self.event_bytes = 0;
    }

    /// A line ended at `input[end]`; it started at `input[start]` (plus `line_buf` from earlier feeds).
    fn complete_line<F>(
        &mut self,
        input: &[u8],
        start: usize,
        end: usize,
        ts_ns: u64,
        errors: &mut Vec<DecodeError>,
        on_event: &mut F,
    ) where
        F: FnMut(&SseEvent<'_>, &mut Vec<DecodeError>),
    {
        if self.skipping {
            let blank = self.skip_line_len == 0 && start == end;
            self.skip_line_len = 0;
            if blank {
                // The oversized event ends here; it is dropped.
                self.skipping = false;
                self.reset_event();
            }
            return;
        }
        if self.line_buf.is_empty() {
            if start == end {
                self.dispatch(input, ts_ns, errors, on_event);
                return;
            }
            self.event_bytes += end - start + 1;
            if self.event_bytes > self.max_event_bytes {
                self.start_skipping(errors);
                return;
            }
            self.field(input, start, end, true);
        } else {
            // Joined line: copy it out so the field logic sees one slice.
            self.event_bytes += end - start + 1;
            if self.event_bytes > self.max_event_bytes {
                self.start_skipping(errors);
                return;
            }
            let mut line = std::mem::take(&mut self.line_buf);
            line.extend_from_slice(&input[start..end]);
            self.field(&line, 0, line.len(), false);
            line.clear();
            self.line_buf = line;
        }
    }

    /// Interprets one non-empty line `buf[start..end]`. `borrowable`: `buf` is the current feed, so a
    /// lone `data` value may be referenced in place. A joined line (`borrowable == false`) is always
    /// the first line completed in a feed, so no data can be borrowed yet when one is seen.
    fn field(&mut self, buf: &[u8], start: usize, end: usize, borrowable: bool) {
        let line = &buf[start..end];
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (name, value_start) = match memchr::memchr(b':', line) {
            Some(c) => {
                let vs = if line.get(c + 1) == Some(&b' ') {
                    c + 2
                } else {
                    c + 1
                };
                (&line[..c], vs)
            }
            None => (line, line.len()),
        };
        let value = &line[value_start..];
        match name {
            b"data" => match self.data {
                DataLoc::None if borrowable => {
                    self.data = DataLoc::Borrowed {
                        start: start + value_start,
                        end,
                    };
                }
                DataLoc::None => {
                    self.data_buf.clear();
                    self.data_buf.extend_from_slice(value);
                    self.data = DataLoc::Owned;
                }
                DataLoc::Borrowed { start: s, end: e } => {
                    // `buf` is the same feed the first line was borrowed from.
                    self.data_buf.clear();
                    self.data_buf.extend_from_slice(&buf[s..e]);
                    self.data_buf.push(b'\n');
                    self.data_buf.extend_from_slice(value);
                    self.data = DataLoc::Owned;
                }
                DataLoc::Owned => {
                    self.data_buf.push(b'\n');
                    self.data_buf.extend_from_slice(value);
                }
            },
            b"event" => {
                self.event_buf.clear();
                self.event_buf.extend_from_slice(value);
            }
            b"id"
                // The spec ignores ids containing NUL.
                if memchr::memchr(0, value).is_none() => {
                    self.id_buf.clear();
                    self.id_buf.extend_from_slice(value);
                    self.has_id = true;
                }
            b"retry"
                if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                    self.retry_ms = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
                }
            _ => {}
        }
    }

    fn dispatch<F>(
        &mut self,
        input: &[u8],
        ts_ns: u64,
        errors: &mut Vec<DecodeError>,
        on_event: &mut F,
    ) where
        F: FnMut(&SseEvent<'_>, &mut Vec<DecodeError>),
    {
        let data: &[u8] = match self.data {
            DataLoc::None => {
                self.reset_event();
                return;
            }
            DataLoc::Borrowed { start, end } => &input[start..end],
            DataLoc::Owned => &self.data_buf,
        };
        self.events += 1;
        on_event(
            &SseEvent {
                event: &self.event_buf,
                data,
                id: self.has_id.then_some(self.id_buf.as_slice()),
                ts_ns,
            },
            errors,
        );
        self.reset_event();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(parts: &[&[u8]], max: usize) -> (Vec<(String, String, u64)>, Vec<DecodeError>, u64) {
        let mut p = SseParser::new(max);
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            p.feed(part, i as u64, &mut errors, |e, _| {
                out.push((
                    String::from_utf8_lossy(e.name()).into_owned(),
                    String::from_utf8_lossy(e.data).into_owned(),
                    e.ts_ns,
                ))
            });
        }
        (out, errors, p.comments())
    }

    #[test]
    fn line_ends_and_fields() {
        let (ev, err, comments) = collect(
            &[b"\xEF\xBB\xBF: ping\r\ndata:a\rdata: b\r\n\r\nevent: x\nid: 7\ndata\n\n"],
            1024,
        );
        assert_eq!(
            ev,
            vec![
                ("message".into(), "a\nb".into(), 0),
                ("x".into(), "".into(), 0)
            ]
        );
        assert!(err.is_empty());
        assert_eq!(comments, 1);
    }

    #[test]
    fn crlf_split_across_feeds_is_one_line_end() {
        // The lone CR of the second feed already ends the blank line.
        let (ev, _, _) = collect(&[b"data: a\r", b"\n\r", b"\n", b"data: b\r\n\r\n"], 1024);
        assert_eq!(
            ev,
            vec![
                ("message".into(), "a".into(), 1),
                ("message".into(), "b".into(), 3)
            ]
        );
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        let (ev, _, _) = collect(&[b"event: ping\n\n"], 1024);
        assert!(ev.is_empty());
    }

    #[test]
    fn oversized_event_is_skipped() {
        let (ev, err, _) = collect(&[b"data: 0123456789", b"0123456789\n\ndata: ok\n\n"], 16);
        assert_eq!(ev, vec![("message".into(), "ok".into(), 1)]);
        assert_eq!(err, vec![DecodeError::EventTooLarge { limit: 16 }]);
    }

    #[test]
    fn bom_prefix_that_is_not_a_bom_is_data() {
        let (ev, _, _) = collect(&[b"\xEF", b"x\n", b"data: y\n\n"], 1024);
        assert_eq!(ev, vec![("message".into(), "y".into(), 2)]);
    }
}
