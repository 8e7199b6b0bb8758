//! Types shared by the kernel programs (`llm-observer-ebpf`) and the agent (`llm-observer`).
//!
//! Rules (kernel and user space must agree byte for byte):
//! - every struct is `#[repr(C)]` with explicit padding fields, so no byte is uninitialised and the
//!   layout is the same for `bpfel` and `x86_64`; sizes are asserted at compile time below;
//! - every event starts with [`EventHeader`], whose `kind` is at offset 0 and takes values from
//!   [`EventKind`], whose discriminants are never reused;
//! - flags are plain integers, never `bool`.
#![no_std]

/// Payload bytes carried by one [`DataEvent`]. A syscall that moved more bytes is split into
/// several events with contiguous `pos`.
pub const MAX_PAYLOAD: usize = 4096;

/// Most [`DataEvent`]s one syscall may produce (the kernel loop bound): with [`MAX_PAYLOAD`] that
/// caps one syscall's capture at 1 MiB. Beyond the configured cap the rest is counted, not copied,
/// and the last event carries [`DATA_FLAG_TRUNCATED`].
pub const MAX_CHUNKS_PER_CALL: u32 = 256;

/// Largest per-syscall capture the kernel loop can honour.
pub const MAX_CAPTURE_PER_CALL: u32 = MAX_CHUNKS_PER_CALL * MAX_PAYLOAD as u32;

/// Most iovec segments gathered per syscall (readv/writev/sendmsg/recvmsg, all messages of an
/// mmsg call together). Bytes in further segments are counted as truncated.
pub const MAX_SEGMENTS: usize = 32;

/// Most messages of one sendmmsg/recvmmsg call that are counted (their bytes are copied while
/// segments last, up to 4 iovecs per message; the rest is one TRUNCATED gap at the end). Messages
/// beyond this are not counted at all (documented gap; TCP peers rarely batch like this).
pub const MAX_MMSG: usize = 64;

/// Discriminants of [`EventHeader::kind`]. Never reuse a retired value.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// [`DataEvent`]: bytes sent or received on a tracked socket.
    Data = 1,
    /// [`ConnEvent`]: a socket became tracked (accept/connect; inherited across fork: then
    /// `inherited_from` names the parent process; passed over a unix socket: then it names the
    /// sender and `passed_fd` its fd).
    ConnOpen = 2,
    /// [`ConnEvent`]: a tracked socket was closed by its process.
    ConnClose = 3,
    /// [`ConnEvent`]: a tracked process exited (fd = -1: all its sockets are gone).
    ProcExit = 4,
    /// [`ConnEvent`]: the kernel's OOM killer chose a victim; the header's tgid and tid are the
    /// victim's pid (a thread id; usually its process's), fd = -1.
    OomVictim = 5,
    /// [`ExecEvent`]: a process replaced its program (execve): its identity must be re-read.
    ProcExec = 6,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<EventKind> {
        match v {
            1 => Some(EventKind::Data),
            2 => Some(EventKind::ConnOpen),
            3 => Some(EventKind::ConnClose),
            4 => Some(EventKind::ProcExit),
            5 => Some(EventKind::OomVictim),
            6 => Some(EventKind::ProcExec),
            _ => None,
        }
    }
}

/// Common prefix of every ring-buffer record.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EventHeader {
    /// An [`EventKind`] discriminant. Must stay at offset 0: the decoder reads it first.
    pub kind: u32,
    /// CPU the event was produced on (ordering across CPUs is by `ts_ns`).
    pub cpu: u32,
    /// `bpf_ktime_get_ns()` when the syscall returned (data) or happened (control).
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub _pad0: u32,
    /// Connection generation: the open time of this (tgid, fd) socket, so that a reused fd number
    /// never merges two connections.
    pub conn_gen: u64,
}

/// Data flows out of the observed process (write family).
pub const DIR_EGRESS: u8 = 0;
/// Data flows into the observed process (read family).
pub const DIR_INGRESS: u8 = 1;

/// A zero-payload marker: the syscall's bytes from `pos` on were not copied (per-call cap, segment
/// cap or lost ring space). On such an event `len` is 0 and `msg_len` is the exact number of bytes
/// missing from `pos`.
pub const DATA_FLAG_TRUNCATED: u16 = 1;
/// A zero-payload marker: a read-family call returned 0, the peer closed its sending side.
pub const DATA_FLAG_EOF: u16 = 2;
/// A zero-payload marker: a call failed with ECONNRESET or EPIPE, the peer reset or went away.
pub const DATA_FLAG_RESET: u16 = 4;
/// The event carries TLS plaintext (captured at the return of `SSL_read`/`SSL_write` and their
/// `_ex` variants, tied to the socket of the syscall made inside that call). Its `pos` counts
/// plaintext bytes: the kernel restarts both directions at 0 when a connection turns out to be
/// TLS, and never delivers that connection's ciphertext again. Markers (EOF, RESET) of such a
/// connection carry it too.
pub const DATA_FLAG_TLS: u16 = 8;

/// Which syscall produced a [`DataEvent`] (debugging and tests; not needed to decode).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    Write = 1,
    Writev = 2,
    Sendto = 3,
    Sendmsg = 4,
    Sendmmsg = 5,
    Read = 6,
    Readv = 7,
    Recvfrom = 8,
    Recvmsg = 9,
    Recvmmsg = 10,
    /// `sendfile64` from a file to a tracked socket: counted, never copied (a TRUNCATED marker).
    Sendfile = 11,
    /// TLS plaintext written through `SSL_write`/`SSL_write_ex` (see [`DATA_FLAG_TLS`]).
    SslWrite = 12,
    /// TLS plaintext read through `SSL_read`/`SSL_read_ex` (see [`DATA_FLAG_TLS`]).
    SslRead = 13,
}

impl Syscall {
    pub fn from_u8(v: u8) -> Option<Syscall> {
        Some(match v {
            1 => Syscall::Write,
            2 => Syscall::Writev,
            3 => Syscall::Sendto,
            4 => Syscall::Sendmsg,
            5 => Syscall::Sendmmsg,
            6 => Syscall::Read,
            7 => Syscall::Readv,
            8 => Syscall::Recvfrom,
            9 => Syscall::Recvmsg,
            10 => Syscall::Recvmmsg,
            11 => Syscall::Sendfile,
            12 => Syscall::SslWrite,
            13 => Syscall::SslRead,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Syscall::Write => "write",
            Syscall::Writev => "writev",
            Syscall::Sendto => "sendto",
            Syscall::Sendmsg => "sendmsg",
            Syscall::Sendmmsg => "sendmmsg",
            Syscall::Read => "read",
            Syscall::Readv => "readv",
            Syscall::Recvfrom => "recvfrom",
            Syscall::Recvmsg => "recvmsg",
            Syscall::Recvmmsg => "recvmmsg",
            Syscall::Sendfile => "sendfile",
            Syscall::SslWrite => "ssl_write",
            Syscall::SslRead => "ssl_read",
        }
    }

    pub fn direction(self) -> u8 {
        match self {
            Syscall::Write
            | Syscall::Writev
            | Syscall::Sendto
            | Syscall::Sendmsg
            | Syscall::Sendmmsg
            | Syscall::Sendfile
            | Syscall::SslWrite => DIR_EGRESS,
            _ => DIR_INGRESS,
        }
    }
}

/// Bytes moved by one syscall on a tracked socket (or one slice of them).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataEvent {
    pub hdr: EventHeader,
    /// Offset of `payload[0]` within this direction of the connection (bytes since tracking began).
    pub pos: u64,
    /// Total bytes the syscall moved; the same on every slice of one call. On a
    /// [`DATA_FLAG_TRUNCATED`] marker: the bytes missing from `pos`.
    pub msg_len: u64,
    /// Valid bytes in `payload`.
    pub len: u32,
    /// [`DIR_EGRESS`] or [`DIR_INGRESS`].
    pub direction: u8,
    /// A [`Syscall`] discriminant.
    pub syscall: u8,
    /// `DATA_FLAG_*` bits.
    pub flags: u16,
    pub payload: [u8; MAX_PAYLOAD],
}

/// Size of a [`DataEvent`] without its payload: the ring record of a data event is at least this.
pub const DATA_EVENT_HEADER_LEN: usize = core::mem::offset_of!(DataEvent, payload);

/// The observed process accepted the socket: it is the server end.
pub const ROLE_SERVER: u32 = 1;
/// The observed process connected the socket: it is the client end.
pub const ROLE_CLIENT: u32 = 2;
/// Seeded by user space for a socket that existed before the agent started; role resolved there.
pub const ROLE_UNKNOWN: u32 = 0;
/// A pipe end whose first bytes were JSON-RPC (MCP over stdio): user space gives it its role
/// from the fd and the process holding the other end.
pub const ROLE_PIPE: u32 = 3;

/// Raw `struct sockaddr_in6` size, the largest address the kernel copies.
pub const SOCKADDR_MAX: usize = 28;

/// A socket became tracked or stopped being tracked.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ConnEvent {
    pub hdr: EventHeader,
    /// `ROLE_*`.
    pub role: u32,
    /// Bytes valid in `peer` (0 when the syscall gave no address).
    pub peer_len: u32,
    /// The peer's raw `sockaddr` as the syscall saw it (connect's argument, accept4's result).
    pub peer: [u8; SOCKADDR_MAX],
    /// For an accepted socket: the listening socket's fd (its local address is the connection's
    /// local address, and a listener lives long enough for /proc to tell it). -1 otherwise.
    pub listen_fd: i32,
    /// For a socket inherited across fork(): the parent's tgid, whose connection on the same fd
    /// this one copies (addresses, role); for a socket passed over a unix socket (`SCM_RIGHTS`):
    /// the sender's tgid. 0 otherwise (no user process has tgid 0).
    pub inherited_from: u32,
    /// For a passed socket: the sender's fd of it (whose connection this one continues), else -1.
    pub passed_fd: i32,
    /// For a close: the stream positions the socket ended at (bytes read, bytes written, as the
    /// data events' `pos`), so user space can tell a lost tail — the last bytes before the close,
    /// dropped by a full ring — from a stream that ended there. 0 for an open.
    pub rd_pos: u64,
    pub wr_pos: u64,
}

/// Tracked fds remembered per process ([`TrackedFds`]), so that a fork can copy them to the child.
pub const TRACKED_FDS: usize = 16;

/// Value of the kernel's per-process fd list (`TGID_FDS`, keyed by tgid): the fds of that
/// process's tracked sockets, as `fd + 1` (0 = free slot), placed by open addressing from
/// `fd % TRACKED_FDS`. A slot may be stale (the socket untracked by user space); readers check
/// the connection map.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TrackedFds {
    pub slot: [u32; TRACKED_FDS],
    /// Set once a socket of this process found no free slot: a fork from then on may miss some
    /// of its sockets (counted per fork; a busy server with many connections that never forks
    /// loses nothing). Pipe candidates never set it: a full list only leaves them unlisted.
    pub overflow: u32,
    /// Set once the process tracked a socket (not a pipe), never cleared: its per-process bit
    /// then stays set for its lifetime (the kernel's `release_tgid` only frees processes that
    /// held nothing but pipe candidates, so a lost race on a slot can never hide a socket).
    pub sockets: u32,
}

impl TrackedFds {
    pub const EMPTY: TrackedFds = TrackedFds {
        slot: [0; TRACKED_FDS],
        overflow: 0,
        sockets: 0,
    };
}

/// `sched:sched_process_exec`: the process `hdr.tgid` now runs another program (fd = -1).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExecEvent {
    pub hdr: EventHeader,
    /// The thread that called execve (it became the leader, so `hdr.tid == hdr.tgid`).
    pub old_tid: u32,
    pub _pad0: u32,
}

/// `CONN_STATE_*`: what the first bytes of a connection showed.
pub const PROTO_UNKNOWN: u32 = 0;
/// The first bytes look like HTTP/1.x (a request method or `HTTP/1.`): payload is copied.
pub const PROTO_HTTP: u32 = 1;
/// The first bytes are not HTTP/1.x (TLS, HTTP/2, a database...): only lengths are counted.
/// The first chunk is still delivered so user space can count what it was.
pub const PROTO_OTHER: u32 = 2;
/// Seeded from /proc (existed before the agent): its next bytes may be mid-message, so every call
/// is classified until one starts like HTTP/1.x; bytes before that are counted, not copied.
pub const PROTO_SEEDED: u32 = 3;
/// A syscall on this socket happened inside an `SSL_*` call: the socket carries TLS. Its
/// ciphertext is never copied nor counted as other-protocol bytes; the plaintext comes from the
/// SSL probes instead, with positions restarted at 0 (see [`DATA_FLAG_TLS`]).
pub const PROTO_TLS: u32 = 4;
/// A pipe end created (or dup'd, or inherited) while the agent runs, not yet written or read:
/// its first bytes decide ([`starts_like_jsonrpc`]). JSON-RPC makes it [`PROTO_JSONRPC`] and it
/// is announced (`ConnOpen`, [`ROLE_PIPE`]); anything else removes it from the map. Until then
/// nothing of it is delivered, not even its close.
pub const PROTO_PIPE: u32 = 5;
/// A pipe end that carries JSON-RPC (MCP over stdio): copied like an HTTP socket.
pub const PROTO_JSONRPC: u32 = 6;

/// Bytes of a pipe's first write or read looked at by [`starts_like_jsonrpc`].
pub const JSONRPC_PEEK: usize = 16;

/// Whether the first bytes of a pipe start a JSON-RPC message as the MCP SDKs write one: a JSON
/// object whose first key is `jsonrpc` (Python SDK), `method` or `id` (requests and
/// notifications of SDKs that put `jsonrpc` later), `result` or `error` (their responses).
/// `len` is how many of `head`'s bytes are valid. `None`: too few bytes to tell. Written as
/// plain loops: the kernel program has no `memcmp`.
#[inline(always)]
pub fn starts_like_jsonrpc(head: &[u8; JSONRPC_PEEK], len: usize) -> Option<bool> {
    const KEYS: [&[u8]; 5] = [
        b"{\"jsonrpc\"",
        b"{\"method\"",
        b"{\"id\"",
        b"{\"result\"",
        b"{\"error\"",
    ];
    let len = if len > JSONRPC_PEEK {
        JSONRPC_PEEK
    } else {
        len
    };
    let mut undecided = false;
    let mut k = 0;
    while k < KEYS.len() {
        let key = KEYS[k];
        let mut i = 0;
        while i < key.len() && i < len && head[i] == key[i] {
            i += 1;
        }
        if i == key.len() {
            return Some(true);
        }
        if i == len {
            undecided = true;
        }
        k += 1;
    }
    if undecided { None } else { Some(false) }
}

/// Whether a connection's first four bytes start an HTTP/2 connection: the client preface
/// (`PRI * HTTP/2.0`, h2c with prior knowledge, or h2 plaintext after TLS), or the SETTINGS frame a
/// server writes first (RFC 9113 §3.4; servers such as Go's and nghttp2's may send it before they
/// read the preface): a 24-bit length under 64 KiB that is a whole number of 6-byte settings, then
/// type 4. Both are copied so user space can decode the connection.
pub fn starts_like_h2(head: &[u8; 4]) -> bool {
    let len = (u16::from(head[1]) << 8) | u16::from(head[2]);
    head == b"PRI " || (head[0] == 0 && head[3] == 4 && len % 6 == 0)
}

/// Whether the first four bytes start something the agent decodes: HTTP/1.x
/// ([`starts_like_http1`]) or HTTP/2 ([`starts_like_h2`]).
pub fn starts_like_http(head: &[u8; 4]) -> bool {
    starts_like_http1(head) || starts_like_h2(head)
}

/// Whether a connection's first four bytes start an HTTP/1.x message: a request method (CONNECT
/// included; user space reports the tunnel as unsupported) or the `HTTP` of a status line. The
/// kernel classifies each connection's first bytes with it, user space its first delivered ones.
pub fn starts_like_http1(head: &[u8; 4]) -> bool {
    matches!(
        head,
        b"GET "
            | b"POST"
            | b"PUT "
            | b"HEAD"
            | b"DELE"
            | b"PATC"
            | b"OPTI"
            | b"TRAC"
            | b"CONN"
            | b"HTTP"
    )
}

/// Value of the kernel's connection map, keyed by [`conn_key`]. User space writes it to seed sockets
/// that existed before the agent started.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ConnState {
    pub generation: u64,
    /// Bytes written so far (next egress `pos`).
    pub wr_pos: u64,
    /// Bytes read so far (next ingress `pos`).
    pub rd_pos: u64,
    /// `ROLE_*`.
    pub role: u32,
    /// `PROTO_*`.
    pub proto: u32,
}

impl ConnState {
    /// A socket starting to be tracked now: positions at 0, protocol not yet known.
    pub const fn new(generation: u64, role: u32) -> ConnState {
        ConnState {
            generation,
            wr_pos: 0,
            rd_pos: 0,
            role,
            proto: PROTO_UNKNOWN,
        }
    }

    /// A socket that existed before the agent started (see [`PROTO_SEEDED`]).
    pub const fn seeded(generation: u64, role: u32) -> ConnState {
        ConnState {
            generation,
            wr_pos: 0,
            rd_pos: 0,
            role,
            proto: PROTO_SEEDED,
        }
    }
}

/// Words of the per-tgid bitmaps (`TRACKED_TGIDS`, `SEEDED_TGIDS`): one bit for each of Linux's
/// possible pids (`PID_MAX_LIMIT`, 2^22 on 64-bit), 512 KiB each.
pub const TGID_BITMAP_WORDS: u32 = (1 << 22) / 64;

/// Word index and bit of `tgid` in a per-tgid bitmap.
#[inline(always)]
pub const fn tgid_bit(tgid: u32) -> (u32, u64) {
    (tgid >> 6, 1u64 << (tgid & 63))
}

/// Key of the connection map: tgid in the high half, fd in the low half.
#[inline(always)]
pub fn conn_key(tgid: u32, fd: i32) -> u64 {
    ((tgid as u64) << 32) | (fd as u32 as u64)
}

/// Agent-controlled settings, index 0 of the `CONFIG` array map.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Config {
    /// Capture only this process (0 = every process).
    pub target_tgid: u32,
    /// Never capture this process (the agent itself; 0 = none).
    pub ignore_tgid: u32,
    /// Bytes copied per syscall at most (≤ [`MAX_CAPTURE_PER_CALL`]); the rest is counted.
    pub max_bytes_per_call: u32,
    /// `CONFIG_FLAG_*` bits.
    pub flags: u32,
    /// Data events wake the agent only once this many bytes wait in the ring (the agent drains
    /// it on a timer below that); 0 = the kernel's adaptive rule, a wakeup whenever the agent has
    /// caught up (one per record at moderate rates).
    pub wake_bytes: u32,
    /// Payload events may fill the ring only up to this many bytes (0 = all of it); the rest is
    /// headroom for open/close/exit events and markers.
    pub data_limit: u32,
}

/// Copy payloads of every tracked TCP connection, HTTP or not (debugging; defeats early filtering).
pub const CONFIG_FLAG_ALL_PROTOCOLS: u32 = 1;
/// `sched_process_exit` has no `group_dead` field on this kernel (before 6.16): report a process
/// exit when its thread-group leader exits.
pub const CONFIG_FLAG_EXIT_BY_LEADER: u32 = 2;
/// x86_64: a syscall's exit can read the call's second argument from the task's saved user
/// registers (`struct pt_regs`, `si` at byte 104, which the syscall does not clobber), so
/// `recvmsg` need not save its `msghdr` at enter. Other architectures keep the enter-time save.
pub const CONFIG_FLAG_EXIT_REGS_X86_64: u32 = 4;

/// Indices of the per-CPU `STATS` array: counters the kernel keeps for the agent to export.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Ring buffer full: data events (payload slices) dropped — one per slice lost.
    LostEvents = 0,
    /// Payload bytes not copied because of the per-call cap, segment cap or a lost event.
    TruncatedBytes = 1,
    /// Bytes moved on tracked connections that are not HTTP (counted, not copied).
    OtherProtoBytes = 2,
    /// The connection map was full: a socket could not be tracked.
    ConnMapFull = 3,
    /// Control events (open/close/exit) and EOF/TRUNCATED markers dropped because the ring was full.
    LostControlEvents = 4,
    /// An in-flight syscall map (connect/accept/io, enter → exit) was full: that call was not seen.
    InflightMapFull = 5,
    /// A tracked socket could not be remembered for fork inheritance (its process already had
    /// [`TRACKED_FDS`] tracked sockets, or the per-process map was full): a child forked while it
    /// is open will not be captured on it.
    ForkListFull = 6,
    /// TLS plaintext bytes (returned by an `SSL_*` call) that could not be tied to a tracked
    /// socket: no syscall inside the call touched one and the `SSL*` had no remembered socket.
    TlsUnmatchedBytes = 7,
    /// Connections of memory-BIO TLS stacks tied to their `SSL*` by the TLS record their thread
    /// wrote after an SSL call that touched no socket (Node, asyncio).
    TlsRecordBinds = 8,
}

/// Number of [`Stat`] slots.
pub const STAT_COUNT: u32 = 9;

/// Byte offsets of syscall tracepoint arguments (`/sys/kernel/tracing/events/syscalls/*/format`):
/// every `sys_enter_*` has `__syscall_nr` at 8 and then 8-byte args from 16; every `sys_exit_*` has
/// `ret` at 16.
pub const TP_ARG0: usize = 16;
pub const TP_ARG1: usize = 24;
pub const TP_ARG2: usize = 32;
pub const TP_ARG3: usize = 40;
pub const TP_ARG4: usize = 48;
pub const TP_RET: usize = 16;

const _: () = assert!(core::mem::size_of::<EventHeader>() == 40);
const _: () = assert!(DATA_EVENT_HEADER_LEN == 64);
const _: () = assert!(core::mem::size_of::<DataEvent>() == 64 + MAX_PAYLOAD);
const _: () = assert!(core::mem::size_of::<ConnEvent>() == 40 + 8 + SOCKADDR_MAX + 4 + 8 + 16);
const _: () = assert!(core::mem::size_of::<ExecEvent>() == 48);
const _: () = assert!(core::mem::size_of::<TrackedFds>() == 4 * TRACKED_FDS + 8);
const _: () = assert!(TRACKED_FDS.is_power_of_two());
const _: () = assert!(core::mem::size_of::<ConnState>() == 32);
const _: () = assert!(core::mem::size_of::<Config>() == 24);

/// Arguments of an in-flight read/write-family syscall, saved at enter for its exit (map
/// `ACTIVE_IO`, keyed by pid_tgid). User space writes it too, for a call that was already blocked
/// when the probes attached (read from `/proc/<pid>/task/<tid>/syscall`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IoArgs {
    /// buf / iovec array / msghdr / mmsghdr array, by syscall.
    pub buf: u64,
    /// count / iovcnt / flags / vlen.
    pub count: u64,
    /// The connection's generation at enter (the fd may be closed and reused before exit).
    pub generation: u64,
    pub fd: i32,
    /// [`Syscall`] as u32.
    pub syscall: u32,
    /// recv flags (`MSG_PEEK`, `MSG_TRUNC`), 0 for other calls.
    pub flags: u32,
    pub _pad: u32,
}

/// Arguments of an in-flight accept/accept4 (map `ACTIVE_ACCEPT`, keyed by pid_tgid); written by
/// user space for an accept already blocked when the probes attached, like [`IoArgs`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct AcceptArgs {
    /// User pointer to the caller's sockaddr buffer (0: none).
    pub addr: u64,
    /// User pointer to its length (in: buffer size, out: address size).
    pub addrlen_ptr: u64,
    pub listen_fd: i32,
    /// `*addrlen` at enter: the size of the caller's address buffer.
    pub buf_len: u32,
}

const _: () = assert!(core::mem::size_of::<IoArgs>() == 40);
const _: () = assert!(core::mem::size_of::<AcceptArgs>() == 24);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data: repr(C), explicit padding, every bit pattern valid.
    unsafe impl aya::Pod for super::IoArgs {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AcceptArgs {}
    // SAFETY: plain-old-data: repr(C), explicit padding, every bit pattern valid.
    unsafe impl aya::Pod for super::ConnState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TrackedFds {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_classification() {
        // HTTP/2: the client preface, and a server's SETTINGS frame (here 3 settings, 18 bytes).
        assert!(starts_like_http(b"PRI "));
        assert!(starts_like_h2(&[0, 0, 18, 4]));
        assert!(starts_like_h2(&[0, 0, 0, 4]));
        // Not a SETTINGS frame: wrong type, or a length that is no whole number of settings.
        assert!(!starts_like_h2(&[0, 0, 18, 1]));
        assert!(!starts_like_h2(&[0, 0, 7, 4]));
        // TLS records and other protocols stay uncopied.
        assert!(!starts_like_http(&[0x16, 0x03, 0x01, 0x02]));
        assert!(!starts_like_http(b"\x00\x00\x00\x01"));
        assert!(starts_like_http(b"POST"));
        assert!(starts_like_http(b"HTTP"));
    }

    fn jsonrpc(text: &[u8]) -> Option<bool> {
        let mut head = [0u8; JSONRPC_PEEK];
        let n = text.len().min(JSONRPC_PEEK);
        head[..n].copy_from_slice(&text[..n]);
        starts_like_jsonrpc(&head, text.len())
    }

    #[test]
    fn jsonrpc_first_bytes() {
        // The Python SDK's request and response, the TypeScript SDK's key orders.
        assert_eq!(
            jsonrpc(br#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#),
            Some(true)
        );
        assert_eq!(
            jsonrpc(br#"{"method":"initialize","params":{}}"#),
            Some(true)
        );
        assert_eq!(
            jsonrpc(br#"{"result":{},"jsonrpc":"2.0","id":1}"#),
            Some(true)
        );
        assert_eq!(jsonrpc(br#"{"error":{"code":-32601}}"#), Some(true));
        assert_eq!(jsonrpc(br#"{"id":7}"#), Some(true));
        // Not JSON-RPC: other JSON, text, binary.
        assert_eq!(jsonrpc(br#"{"calls": 3}"#), Some(false));
        assert_eq!(jsonrpc(b"hello world, a log line"), Some(false));
        assert_eq!(jsonrpc(b"\x00\x01\x02\x03"), Some(false));
        // A prefix of a key: wait for more bytes.
        assert_eq!(jsonrpc(br#"{"json"#), None);
        assert_eq!(jsonrpc(b"{"), None);
        assert_eq!(jsonrpc(b""), None);
        // The length counts, not the buffer: bytes past it are not looked at.
        let mut head = *b"{\"jsonrpc\":\"2.0\"";
        assert_eq!(starts_like_jsonrpc(&head, 4), None);
        head[1] = b'x';
        assert_eq!(starts_like_jsonrpc(&head, 4), Some(false));
    }
}
