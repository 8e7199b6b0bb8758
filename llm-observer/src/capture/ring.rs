//! The event ring's reader: the kernel's BPF ring buffer mapped once.
//!
//! Why not aya's `RingBuf`: it maps the data area twice, back to back, as the kernel allows, so a
//! record that wraps past the end reads as one slice. The kernel maps every page of such a
//! mapping at `mmap` time, so the default 16 MiB ring showed as 32 MiB of the agent's RSS before
//! a single event (PSS halves it, but RSS is what `ps`, `top` and most dashboards show). Here the
//! data area is mapped once and the rare record that wraps is copied into a buffer the reader
//! keeps. The kernel memory is the same; only the second mapping is gone.
//!
//! The protocol is the kernel's (`kernel/bpf/ringbuf.c`, `Documentation/bpf/ringbuf.rst`): a
//! consumer page the reader writes (`consumer_pos`), a producer page it only reads
//! (`producer_pos`), then the data area of `2^n` bytes. Each record starts at an 8-aligned
//! position with an 8-byte header whose first word is its length plus a busy bit (set until the
//! producer commits) and a discard bit; records are padded to 8 bytes.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering, fence};

use aya::maps::MapData;

// Positions are the kernel's `unsigned long`, read here as `AtomicUsize`: the same width only on
// 64-bit targets, the only ones the agent's BPF programs are built for.
const _: () = assert!(usize::BITS == 64);

/// `BPF_RINGBUF_BUSY_BIT`, `BPF_RINGBUF_DISCARD_BIT`, `BPF_RINGBUF_HDR_SZ` (uapi/linux/bpf.h).
const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HDR: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("reading the event ring's size: {0}")]
    Info(#[source] aya::maps::MapError),
    #[error("the event ring's size {0} is not a power of two")]
    Size(u32),
    /// A guessed page size would map the producer page and data area at the wrong offsets on a
    /// kernel with 16 or 64 KiB pages.
    #[error("the page size is unknown (sysconf(_SC_PAGESIZE) failed)")]
    PageSize,
    #[error("mapping the event ring's {what}: {source}")]
    Mmap {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Where the producer's parts of a ring are, in this process.
struct Layout {
    producer: NonNull<AtomicUsize>,
    data: NonNull<u8>,
    /// Bytes of the data area (a power of two).
    len: usize,
}

/// The reader's position and the consumer page it publishes it to: the one way room goes back
/// to the kernel, whether a record was read (on its drop) or discarded.
struct Cursor {
    consumer: NonNull<AtomicUsize>,
    /// Next record's position (as `consumer_pos`, not masked).
    pos: usize,
    /// Whether `consumer_pos` was published since the last fence: a reader that moved it must
    /// fence before it concludes the ring is empty (see [`Reader::next`]).
    published: bool,
}

impl Cursor {
    fn advance_to(&mut self, pos: usize) {
        self.pos = pos;
        // Release: the kernel reuses the record's room only after it sees this position.
        // SAFETY: the consumer page stays mapped (or allocated, in tests) as long as the reader.
        unsafe { self.consumer.as_ref() }.store(pos, Ordering::Release);
        self.published = true;
    }
}

/// The reader's side of a ring: its cursor and the buffer for records that wrap.
struct Reader {
    layout: Layout,
    cursor: Cursor,
    wrapped: Vec<u8>,
}

/// What the record at the reader's position is.
enum Slot {
    Empty,
    Busy,
    Discarded(usize),
    /// Data bytes start at the offset, for the length; the record takes `total` bytes of ring.
    Data {
        start: usize,
        len: usize,
        total: usize,
    },
}

impl Reader {
    fn slot(&self) -> Slot {
        // SAFETY: the producer page stays mapped (or allocated, in tests) as long as `self`.
        let producer = unsafe { self.layout.producer.as_ref() }.load(Ordering::Acquire);
        if producer == self.cursor.pos {
            return Slot::Empty;
        }
        let mask = self.layout.len - 1;
        let off = self.cursor.pos & mask;
        // SAFETY: `off` is 8-aligned and below `len`, so the header's first word is inside the
        // data area and aligned; the kernel writes it atomically.
        let hdr = unsafe { &*self.layout.data.as_ptr().add(off).cast::<AtomicU32>() }
            .load(Ordering::Acquire);
        if hdr & BUSY != 0 {
            return Slot::Busy;
        }
        let len = (hdr & !(BUSY | DISCARD)) as usize;
        let total = (HDR + len).next_multiple_of(8);
        if hdr & DISCARD != 0 {
            return Slot::Discarded(total);
        }
        Slot::Data {
            start: (off + HDR) & mask,
            len,
            total,
        }
    }

    /// The next committed record's bytes, or None when there is none (yet).
    fn next(&mut self) -> Option<Record<'_>> {
        loop {
            match self.slot() {
                Slot::Empty | Slot::Busy => {
                    if !std::mem::take(&mut self.cursor.published) {
                        return None;
                    }
                    // The kernel decides whether to wake the reader from the consumer position
                    // it reads at commit: this fence makes sure that either this second look
                    // sees the record or its producer saw the position published above and
                    // will notify.
                    fence(Ordering::SeqCst);
                }
                Slot::Discarded(total) => {
                    self.cursor.advance_to(self.cursor.pos.wrapping_add(total));
                }
                Slot::Data { start, len, total } => {
                    let end = self.cursor.pos.wrapping_add(total);
                    let data = self.layout.data.as_ptr();
                    let bytes: &[u8] = if start + len <= self.layout.len {
                        // SAFETY: a committed record inside the data area; the kernel does not
                        // touch it until the consumer position passes it.
                        unsafe { std::slice::from_raw_parts(data.add(start), len) }
                    } else {
                        let first = self.layout.len - start;
                        self.wrapped.clear();
                        // SAFETY: as above, in two pieces: the end of the area and its start.
                        unsafe {
                            self.wrapped.extend_from_slice(std::slice::from_raw_parts(
                                data.add(start),
                                first,
                            ));
                            self.wrapped
                                .extend_from_slice(std::slice::from_raw_parts(data, len - first));
                        }
                        &self.wrapped
                    };
                    return Some(Record {
                        bytes,
                        end,
                        cursor: &mut self.cursor,
                    });
                }
            }
        }
    }
}

/// One record, borrowed from the ring: its room goes back to the kernel when this drops.
pub struct Record<'a> {
    bytes: &'a [u8],
    end: usize,
    cursor: &'a mut Cursor,
}

impl std::ops::Deref for Record<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        self.cursor.advance_to(self.end);
    }
}

/// One `mmap` of the ring's fd, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(
        fd: BorrowedFd<'_>,
        len: usize,
        prot: libc::c_int,
        offset: usize,
        what: &'static str,
    ) -> Result<Mapping, RingError> {
        let err = |source| RingError::Mmap { what, source };
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| err(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
        // SAFETY: a fresh shared mapping of the map's fd; nothing else aliases it in Rust.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(err(std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| err(std::io::Error::from(std::io::ErrorKind::AddrNotAvailable)))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: this mapping's own address and length; nothing borrows it any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The agent's event ring (`BPF_MAP_TYPE_RINGBUF`), read from one thread.
pub struct EventRing {
    reader: Reader,
    // Dropped after the reader (fields drop in order), which points into them.
    _producer: Mapping,
    _consumer: Mapping,
    map: MapData,
}

// SAFETY: the mappings are owned by this value and read through it only; moving it to another
// thread moves all of them together.
unsafe impl Send for EventRing {}

impl EventRing {
    pub fn new(map: MapData) -> Result<EventRing, RingError> {
        let size = map.info().map_err(RingError::Info)?.max_entries();
        if !size.is_power_of_two() {
            return Err(RingError::Size(size));
        }
        let len = size as usize;
        // SAFETY: plain libc call.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| p.is_power_of_two())
            .ok_or(RingError::PageSize)?;
        let fd = map.fd().as_fd();
        let consumer = Mapping::new(
            fd,
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            0,
            "consumer page",
        )?;
        // The producer page and the data area once (the kernel also allows the data twice more).
        let producer = Mapping::new(
            fd,
            page + len,
            libc::PROT_READ,
            page,
            "producer page and data",
        )?;
        let layout = Layout {
            producer: producer.ptr.cast(),
            // SAFETY: inside the mapping just made: the data area follows the producer page.
            data: unsafe { producer.ptr.add(page) },
            len,
        };
        let consumer_pos = consumer.ptr.cast::<AtomicUsize>();
        // SAFETY: the consumer page was just mapped.
        let pos = unsafe { consumer_pos.as_ref() }.load(Ordering::Acquire);
        Ok(EventRing {
            reader: Reader {
                layout,
                cursor: Cursor {
                    consumer: consumer_pos,
                    pos,
                    published: false,
                },
                wrapped: Vec::new(),
            },
            _producer: producer,
            _consumer: consumer,
            map,
        })
    }

    /// The next record, or None when the ring is empty (or its next record is not committed yet).
    /// Only one record may be out at a time; its room is released when it drops.
    #[expect(
        clippy::should_implement_trait,
        reason = "not an iterator: each record borrows the reader until it drops"
    )]
    pub fn next(&mut self) -> Option<Record<'_>> {
        self.reader.next()
    }
}

impl AsFd for EventRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.fd().as_fd()
    }
}

impl AsRawFd for EventRing {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring in plain memory: what the kernel would have written.
    struct Fake {
        consumer: Box<AtomicUsize>,
        producer: Box<AtomicUsize>,
        data: Vec<u64>,
    }

    impl Fake {
        fn new(len: usize) -> Fake {
            Fake {
                consumer: Box::new(AtomicUsize::new(0)),
                producer: Box::new(AtomicUsize::new(0)),
                data: vec![0; len / 8],
            }
        }

        fn reader(&mut self) -> Reader {
            Reader {
                layout: Layout {
                    producer: NonNull::from(&*self.producer),
                    data: NonNull::new(self.data.as_mut_ptr().cast::<u8>()).unwrap(),
                    len: self.data.len() * 8,
                },
                cursor: Cursor {
                    consumer: NonNull::from(&*self.consumer),
                    pos: 0,
                    published: false,
                },
                wrapped: Vec::new(),
            }
        }

        /// Writes a record at the producer position as the kernel does (header word, data that
        /// may wrap), with `flags` (BUSY, DISCARD) in the header.
        fn push(&mut self, payload: &[u8], flags: u32) {
            let len = self.data.len() * 8;
            let pos = self.producer.load(Ordering::Relaxed);
            let bytes = self.data.as_mut_ptr().cast::<u8>();
            let off = pos & (len - 1);
            // SAFETY: test memory of `len` bytes; offsets masked into it.
            unsafe {
                (*bytes.add(off).cast::<AtomicU32>())
                    .store(payload.len() as u32 | flags, Ordering::Release);
                for (i, b) in payload.iter().enumerate() {
                    *bytes.add((off + HDR + i) & (len - 1)) = *b;
                }
            }
            let total = (HDR + payload.len()).next_multiple_of(8);
            self.producer.store(pos + total, Ordering::Release);
        }

        fn commit_at(&mut self, pos: usize) {
            let len = self.data.len() * 8;
            // SAFETY: as in push.
            unsafe {
                let w = &*self
                    .data
                    .as_mut_ptr()
                    .cast::<u8>()
                    .add(pos & (len - 1))
                    .cast::<AtomicU32>();
                w.store(w.load(Ordering::Relaxed) & !BUSY, Ordering::Release);
            }
        }
    }

    fn take(r: &mut Reader) -> Option<Vec<u8>> {
        r.next().map(|rec| rec.to_vec())
    }

    #[test]
    fn records_are_read_in_order_and_their_room_released() {
        let mut f = Fake::new(64);
        let mut r = f.reader();
        assert_eq!(take(&mut r), None);
        f.push(b"abc", 0);
        f.push(b"0123456789", 0);
        assert_eq!(take(&mut r).as_deref(), Some(&b"abc"[..]));
        assert_eq!(f.consumer.load(Ordering::Relaxed), 16);
        assert_eq!(take(&mut r).as_deref(), Some(&b"0123456789"[..]));
        assert_eq!(f.consumer.load(Ordering::Relaxed), 16 + 24);
        assert_eq!(take(&mut r), None);
    }

    #[test]
    fn a_record_that_wraps_past_the_end_is_read_whole() {
        let mut f = Fake::new(64);
        let mut r = f.reader();
        // 40 bytes of ring, then a 20-byte record whose header sits at 40 and data at 48..68,
        // which wraps to 0..4.
        f.push(&[7; 32], 0);
        assert_eq!(take(&mut r), Some(vec![7; 32]));
        let wrapping: Vec<u8> = (0..20).collect();
        f.push(&wrapping, 0);
        assert_eq!(take(&mut r), Some(wrapping));
        assert_eq!(f.consumer.load(Ordering::Relaxed), 40 + 32);
        // The next one starts right after, at 72 & 63 = 8.
        f.push(b"next", 0);
        assert_eq!(take(&mut r).as_deref(), Some(&b"next"[..]));
    }

    #[test]
    fn a_busy_record_stops_the_reader_and_a_discarded_one_is_skipped() {
        let mut f = Fake::new(128);
        let mut r = f.reader();
        f.push(b"skip me", DISCARD);
        f.push(b"wait", BUSY);
        assert_eq!(take(&mut r), None);
        // The discarded record's room was released; the busy one's was not.
        assert_eq!(f.consumer.load(Ordering::Relaxed), 16);
        f.commit_at(16);
        assert_eq!(take(&mut r).as_deref(), Some(&b"wait"[..]));
        assert_eq!(f.consumer.load(Ordering::Relaxed), 32);
    }

    #[test]
    fn an_empty_record_is_a_record() {
        let mut f = Fake::new(64);
        let mut r = f.reader();
        f.push(b"", 0);
        assert_eq!(take(&mut r), Some(Vec::new()));
        assert_eq!(f.consumer.load(Ordering::Relaxed), 8);
    }
}
