//! Incremental `Content-Encoding` decoding: gzip, deflate (zlib-wrapped or raw), br, zstd.
//!
//! Input arrives in whatever pieces the capture delivered; output is handed on as it is produced,
//! so a compressed SSE stream still yields events at the time of the bytes that carried them.
//!
//! Decompression bombs: the total output of one body is capped (the caller passes
//! `Limits::max_body_bytes`). Once the cap is reached the decoder stops working on that body
//! (the rest of its input is ignored, not inflated) and reports `truncated`. Working memory is
//! bounded by the formats: a 32 KiB deflate window, brotli's 16 MiB maximum window (large-window
//! brotli is off), zstd's window capped at 8 MiB (RFC 9659 §3: HTTP zstd windows are ≤ 8 MiB; a
//! frame declaring more is rejected), plus a fixed 8 KiB output scratch.

use std::io::Write;

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use zstd::stream::raw::{DParameter, Decoder as ZstdDecoder, InBuffer, Operation, OutBuffer};

use crate::types::DecodeError;

/// log2 of the largest zstd window accepted (8 MiB).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
const SCRATCH: usize = 8 * 1024;

/// A supported content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// `deflate`: RFC 9110 says zlib-wrapped, some servers send raw deflate; sniffed.
    Deflate,
    Br,
    Zstd,
}

/// A content coding this crate cannot undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownCoding;

impl Coding {
    /// Parses one coding token. `Ok(None)` for `identity`.
    pub fn from_token(token: &str) -> Result<Option<Coding>, UnknownCoding> {
        let t = token.trim();
        let is = |name: &str| t.eq_ignore_ascii_case(name);
        Ok(Some(if is("gzip") || is("x-gzip") {
            Coding::Gzip
        } else if is("deflate") {
            Coding::Deflate
        } else if is("br") {
            Coding::Br
        } else if is("zstd") {
            Coding::Zstd
        } else if is("identity") || t.is_empty() {
            return Ok(None);
        } else {
            return Err(UnknownCoding);
        }))
    }
}

/// A `Write` that keeps at most `room` bytes and refuses the rest, which stops a flate2 writer
/// from inflating further.
#[derive(Debug, Default)]
struct Capped {
    buf: Vec<u8>,
    room: usize,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let take = data.len().min(self.room);
        self.buf
            .extend_from_slice(data.get(..take).unwrap_or_default());
        self.room -= take;
        if take < data.len() {
            return Err(std::io::Error::other("decompressed body cap reached"));
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Inner {
    /// `deflate` before its first two bytes told zlib from raw (holds at most one byte).
    Sniff(Vec<u8>),
    Gzip(flate2::write::MultiGzDecoder<Capped>),
    Zlib(flate2::write::ZlibDecoder<Capped>),
    Raw(flate2::write::DeflateDecoder<Capped>),
    Br(Box<BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>>),
    Zstd(Box<ZstdDecoder<'static>>),
    /// Finished, failed or capped: input is ignored.
    Stopped,
}

/// Incremental decoder for one body.
pub struct Decompressor {
    inner: Inner,
    /// Output bytes still allowed for this body.
    room: usize,
    truncated: bool,
    /// The compressed stream reached its end marker (brotli, zstd frame).
    ended: bool,
}

impl std::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.inner {
            Inner::Sniff(_) => "deflate?",
            Inner::Gzip(_) => "gzip",
            Inner::Zlib(_) => "zlib",
            Inner::Raw(_) => "deflate",
            Inner::Br(_) => "br",
            Inner::Zstd(_) => "zstd",
            Inner::Stopped => "stopped",
        };
        f.debug_struct("Decompressor")
            .field("kind", &kind)
            .field("room", &self.room)
            .field("truncated", &self.truncated)
            .finish()
    }
}

impl Decompressor {
    /// A decoder for `coding` whose total output is capped at `max_output` bytes.
    pub fn new(coding: Coding, max_output: usize) -> Result<Self, DecodeError> {
        let capped = || Capped {
            buf: Vec::new(),
            room: max_output,
        };
        let inner = match coding {
            Coding::Gzip => Inner::Gzip(flate2::write::MultiGzDecoder::new(capped())),
            Coding::Deflate => Inner::Sniff(Vec::new()),
            Coding::Br => Inner::Br(Box::new(BrotliState::new(
                StandardAlloc::default(),
                StandardAlloc::default(),
                StandardAlloc::default(),
            ))),
            Coding::Zstd => {
                let mut d = ZstdDecoder::new().map_err(|_| DecodeError::Decompress)?;
                d.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
                    .map_err(|_| DecodeError::Decompress)?;
                Inner::Zstd(Box::new(d))
            }
        };
        Ok(Decompressor {
            inner,
            room: max_output,
            truncated: false,
            ended: false,
        })
    }

    /// The output cap was reached: the rest of the body was not decoded.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Bytes held between calls (the sniff byte); decoder windows are format-bounded, see above.
    pub fn buffered_bytes(&self) -> usize {
        match &self.inner {
            Inner::Sniff(b) => b.len(),
            _ => 0,
        }
    }

    /// Decodes `input`, passing output to `out`. After an error or the cap, later input is ignored.
    pub fn feed(&mut self, input: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<(), DecodeError> {
        let r = self.feed_inner(input, out);
        if r.is_err() {
            self.inner = Inner::Stopped;
        }
        r
    }

    fn feed_inner(&mut self, input: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<(), DecodeError> {
        if input.is_empty() {
            return Ok(());
        }
        match &mut self.inner {
            Inner::Stopped => Ok(()),
            Inner::Sniff(held) => {
                held.extend_from_slice(input);
                let (Some(&cmf), Some(&flg)) = (held.first(), held.get(1)) else {
                    return Ok(());
                };
                let zlib = cmf & 0x0f == 8
                    && cmf >> 4 <= 7
                    && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0;
                let sink = Capped {
                    buf: Vec::new(),
                    room: self.room,
                };
                let held = std::mem::take(held);
                self.inner = if zlib {
                    Inner::Zlib(flate2::write::ZlibDecoder::new(sink))
                } else {
                    Inner::Raw(flate2::write::DeflateDecoder::new(sink))
                };
                self.feed_inner(&held, out)
            }
            Inner::Gzip(w) => flate_feed(w, input, &mut self.room, &mut self.truncated, out),
            Inner::Zlib(w) => flate_feed(w, input, &mut self.room, &mut self.truncated, out),
            Inner::Raw(w) => flate_feed(w, input, &mut self.room, &mut self.truncated, out),
            Inner::Br(state) => {
                let r = brotli_feed(state, input, &mut self.room, &mut self.truncated, out);
                if r == Ok(true) {
                    self.ended = true;
                }
                r.map(|_| ())
            }
            Inner::Zstd(d) => {
                let r = zstd_feed(d, input, &mut self.room, &mut self.truncated, out);
                if let Ok(at_end) = r {
                    self.ended = at_end;
                }
                r.map(|_| ())
            }
        }?;
        if self.truncated {
            self.inner = Inner::Stopped;
        }
        Ok(())
    }

    /// The body ended (framing said so). Flushes what is left; an incomplete compressed stream is
    /// a [`DecodeError::Decompress`].
    pub fn finish(&mut self, out: &mut dyn FnMut(&[u8])) -> Result<(), DecodeError> {
        let inner = std::mem::replace(&mut self.inner, Inner::Stopped);
        let truncated = &mut self.truncated;
        let room = &mut self.room;
        match inner {
            Inner::Stopped => Ok(()),
            Inner::Sniff(held) if held.is_empty() => Ok(()),
            Inner::Sniff(_) => Err(DecodeError::Decompress),
            Inner::Gzip(mut w) => flate_finish(w.try_finish(), w.get_mut(), room, truncated, out),
            Inner::Zlib(mut w) => flate_finish(w.try_finish(), w.get_mut(), room, truncated, out),
            Inner::Raw(mut w) => flate_finish(w.try_finish(), w.get_mut(), room, truncated, out),
            Inner::Br(_) | Inner::Zstd(_) if self.ended => Ok(()),
            Inner::Br(_) | Inner::Zstd(_) => Err(DecodeError::Decompress),
        }
    }
}

/// Hands `data` (already within the cap) to `out`.
fn emit(data: &[u8], out: &mut dyn FnMut(&[u8])) {
    if !data.is_empty() {
        out(data);
    }
}

trait FlateWriter: Write {
    fn sink(&mut self) -> &mut Capped;
}
macro_rules! flate_writer {
    ($t:ty) => {
        impl FlateWriter for $t {
            fn sink(&mut self) -> &mut Capped {
                self.get_mut()
            }
        }
    };
}
flate_writer!(flate2::write::MultiGzDecoder<Capped>);
flate_writer!(flate2::write::ZlibDecoder<Capped>);
flate_writer!(flate2::write::DeflateDecoder<Capped>);

fn flate_feed(
    w: &mut dyn FlateWriter,
    mut input: &[u8],
    room: &mut usize,
    truncated: &mut bool,
    out: &mut dyn FnMut(&[u8]),
) -> Result<(), DecodeError> {
    let mut failed = false;
    while !input.is_empty() && !failed {
        match w.write(input) {
            // 0: the stream ended and what follows is trailing garbage; ignore it.
            Ok(0) => break,
            Ok(n) => input = input.get(n..).unwrap_or_default(),
            Err(_) => failed = true,
        }
    }
    // Push out what the writer holds so stream events are not delayed to the next segment.
    if !failed && w.flush().is_err() {
        failed = true;
    }
    let sink = w.sink();
    emit(&sink.buf, out);
    sink.buf.clear();
    *room = sink.room;
    if failed {
        if sink.room == 0 {
            *truncated = true;
            return Ok(());
        }
        return Err(DecodeError::Decompress);
    }
    Ok(())
}

fn flate_finish(
    r: std::io::Result<()>,
    sink: &mut Capped,
    room: &mut usize,
    truncated: &mut bool,
    out: &mut dyn FnMut(&[u8]),
) -> Result<(), DecodeError> {
    emit(&sink.buf, out);
    sink.buf.clear();
    *room = sink.room;
    match r {
        Ok(()) => Ok(()),
        Err(_) if sink.room == 0 => {
            *truncated = true;
            Ok(())
        }
        Err(_) => Err(DecodeError::Decompress),
    }
}

/// Emits at most `room` bytes of `data`; false when the cap cut it.
fn emit_capped(
    data: &[u8],
    room: &mut usize,
    truncated: &mut bool,
    out: &mut dyn FnMut(&[u8]),
) -> bool {
    let take = data.len().min(*room);
    emit(data.get(..take).unwrap_or_default(), out);
    *room -= take;
    if take < data.len() {
        *truncated = true;
        return false;
    }
    true
}

/// Returns Ok(true) when the brotli stream ended.
fn brotli_feed(
    state: &mut BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
    input: &[u8],
    room: &mut usize,
    truncated: &mut bool,
    out: &mut dyn FnMut(&[u8]),
) -> Result<bool, DecodeError> {
    let mut scratch = [0u8; SCRATCH];
    let mut avail_in = input.len();
    let mut in_off = 0;
    let mut total = 0;
    loop {
        let mut avail_out = scratch.len();
        let mut out_off = 0;
        let r = BrotliDecompressStream(
            &mut avail_in,
            &mut in_off,
            input,
            &mut avail_out,
            &mut out_off,
            &mut scratch,
            &mut total,
            state,
        );
        let produced = scratch.get(..out_off).unwrap_or_default();
        if !emit_capped(produced, room, truncated, out) {
            return Ok(false);
        }
        match r {
            BrotliResult::NeedsMoreOutput => continue,
            BrotliResult::NeedsMoreInput => return Ok(false),
            BrotliResult::ResultSuccess => return Ok(true),
            BrotliResult::ResultFailure => return Err(DecodeError::Decompress),
        }
    }
}

/// Returns Ok(true) when the input ended exactly at the end of a zstd frame.
fn zstd_feed(
    d: &mut ZstdDecoder<'static>,
    input: &[u8],
    room: &mut usize,
    truncated: &mut bool,
    out: &mut dyn FnMut(&[u8]),
) -> Result<bool, DecodeError> {
    let mut scratch = [0u8; SCRATCH];
    let mut inb = InBuffer::around(input);
    loop {
        let mut outb = OutBuffer::around(&mut scratch[..]);
        let hint = d
            .run(&mut inb, &mut outb)
            .map_err(|_| DecodeError::Decompress)?;
        let n = outb.pos();
        if !emit_capped(scratch.get(..n).unwrap_or_default(), room, truncated, out) {
            return Ok(false);
        }
        // A full scratch may mean more output is pending even with the input consumed.
        if inb.pos() >= input.len() && n < SCRATCH {
            return Ok(hint == 0);
        }
    }
}
