//! One message body in flight: framing (Content-Length, chunked, until close) plus the content
//! decoder, delivering decoded bytes to the [`Handler`] stamped with the capture time of the
//! bytes that carried them. Nothing of the body is buffered here.

use crate::types::DecodeError;

use super::chunked::ChunkedDecoder;
use super::decompress::Decompressor;
use super::head::{BodyShape, Framing};
use super::http1::Handler;

#[derive(Debug)]
enum Frame {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
}

/// What the handler gets of the body.
#[derive(Debug)]
struct Sink {
    decoder: Option<Decompressor>,
    /// Pass decoded data to the handler (false: frame only, the cheap path).
    deliver: bool,
    /// Decoded data was lost: the cap was hit or the coding could not be undone.
    truncated: bool,
}

impl Sink {
    fn push(&mut self, data: &[u8], ts_ns: u64, h: &mut dyn Handler) {
        if !self.deliver || data.is_empty() {
            return;
        }
        match &mut self.decoder {
            None => h.body(data, ts_ns),
            Some(d) => {
                let r = d.feed(data, &mut |out| h.body(out, ts_ns));
                if d.truncated() {
                    self.truncated = true;
                }
                if let Err(e) = r {
                    h.error(e);
                    self.fail();
                }
            }
        }
    }

    fn finish(&mut self, ts_ns: u64, h: &mut dyn Handler) {
        if let (true, Some(d)) = (self.deliver, &mut self.decoder) {
            let r = d.finish(&mut |out| h.body(out, ts_ns));
            if d.truncated() {
                self.truncated = true;
            }
            if let Err(e) = r {
                h.error(e);
                self.fail();
            }
        }
        self.decoder = None;
    }

    fn fail(&mut self) {
        self.deliver = false;
        self.truncated = true;
        self.decoder = None;
    }
}

/// Framing state of the body being read.
#[derive(Debug)]
pub struct Body {
    frame: Frame,
    sink: Sink,
    /// The message was already reported ended (lost bytes): frame the rest silently.
    pub muted: bool,
    /// Wire bytes of the message so far (head included).
    pub wire_bytes: u64,
    head_bytes: u64,
}

/// Malformed framing, and how many input bytes up to and including the bad one were used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    pub err: DecodeError,
    pub consumed: usize,
}

/// Result of feeding body bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    pub consumed: usize,
    pub done: bool,
}

impl Body {
    /// `max_decoded` caps decompressed output; `deliver` false frames without decoding.
    pub fn new(
        shape: BodyShape,
        deliver: bool,
        max_decoded: usize,
        max_trailer_bytes: usize,
        head_bytes: u64,
        h: &mut dyn Handler,
    ) -> Body {
        let frame = match shape.framing {
            Framing::Length(n) => Frame::Length(n),
            Framing::Chunked => Frame::Chunked(ChunkedDecoder::new(max_trailer_bytes)),
            Framing::Close => Frame::Close,
        };
        let mut sink = Sink {
            decoder: None,
            deliver,
            truncated: false,
        };
        if deliver && shape.undecodable {
            h.error(DecodeError::Decompress);
            sink.fail();
        } else if let (true, Some(c)) = (deliver, shape.coding) {
            match Decompressor::new(c, max_decoded) {
                Ok(d) => sink.decoder = Some(d),
                Err(e) => {
                    h.error(e);
                    sink.fail();
                }
            }
        }
        Body {
            frame,
            sink,
            muted: false,
            wire_bytes: head_bytes,
            head_bytes,
        }
    }

    /// True for a body that ends only when the connection does.
    pub fn is_close_delimited(&self) -> bool {
        matches!(self.frame, Frame::Close)
    }

    /// True when the body is already complete (zero length).
    pub fn is_empty(&self) -> bool {
        matches!(self.frame, Frame::Length(0))
    }

    pub fn truncated(&self) -> bool {
        self.sink.truncated
    }

    pub fn buffered_bytes(&self) -> usize {
        self.sink
            .decoder
            .as_ref()
            .map_or(0, Decompressor::buffered_bytes)
    }

    /// Frames (and delivers) body bytes from `input`; stops at the end of the body.
    pub fn feed(
        &mut self,
        input: &[u8],
        ts_ns: u64,
        h: &mut dyn Handler,
    ) -> Result<Fed, BodyError> {
        let sink = &mut self.sink;
        let fed = match &mut self.frame {
            Frame::Length(rem) => {
                let take = usize::try_from(*rem).unwrap_or(usize::MAX).min(input.len());
                sink.push(input.get(..take).unwrap_or_default(), ts_ns, h);
                *rem -= take as u64;
                Fed {
                    consumed: take,
                    done: *rem == 0,
                }
            }
            Frame::Chunked(c) => {
                let before = c.total_consumed();
                let p = match c.feed(input, |data| sink.push(data, ts_ns, h)) {
                    Ok(p) => p,
                    Err(err) => {
                        // Count the aborted body up to the bad byte, the same for any split.
                        self.wire_bytes = self.head_bytes + c.total_consumed();
                        let consumed = usize::try_from(c.total_consumed() - before)
                            .unwrap_or(input.len())
                            .min(input.len());
                        return Err(BodyError { err, consumed });
                    }
                };
                Fed {
                    consumed: p.consumed,
                    done: p.done,
                }
            }
            Frame::Close => {
                sink.push(input, ts_ns, h);
                Fed {
                    consumed: input.len(),
                    done: false,
                }
            }
        };
        self.wire_bytes += fed.consumed as u64;
        Ok(fed)
    }

    /// The body is complete: flush the decoder.
    pub fn finish(&mut self, ts_ns: u64, h: &mut dyn Handler) {
        self.sink.finish(ts_ns, h);
    }

    /// `missing` bytes were lost by the capture. Returns true when they fell wholly inside body
    /// data of known extent, so the framing is intact and the next message can still be found;
    /// the body's data is lost either way and delivery stops. Also returns whether the body is now
    /// complete.
    pub fn lose(&mut self, missing: u64) -> (bool, bool) {
        self.sink.fail();
        match &mut self.frame {
            Frame::Length(rem) if missing <= *rem => {
                *rem -= missing;
                self.wire_bytes += missing;
                (true, *rem == 0)
            }
            Frame::Chunked(c) if missing <= c.remaining_in_chunk() => {
                c.skip_data(missing);
                self.wire_bytes += missing;
                (true, false)
            }
            Frame::Close => {
                self.wire_bytes += missing;
                (true, false)
            }
            _ => (false, false),
        }
    }
}
