//! Checked decoding of ring-buffer records into owned [`Event`]s.
//!
//! Nothing from the kernel is trusted blindly: lengths are checked against the record size, the
//! kind against the known discriminants, and every failure is a [`EventError`] the agent counts.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use llm_observer_common::{
    ConnEvent, DATA_EVENT_HEADER_LEN, DATA_FLAG_EOF, DATA_FLAG_RESET, DATA_FLAG_TLS,
    DATA_FLAG_TRUNCATED, DIR_EGRESS, EventHeader, EventKind, ExecEvent, MAX_PAYLOAD, ROLE_CLIENT,
    ROLE_PIPE, ROLE_SERVER, SOCKADDR_MAX, Syscall,
};

/// Why a ring record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("record of {len} bytes is shorter than its header ({need})")]
    Short { len: usize, need: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("data event claims {claimed} payload bytes, record holds {held}")]
    BadLength { claimed: usize, held: usize },
    #[error("unknown syscall {0}")]
    UnknownSyscall(u8),
}

impl EventError {
    pub fn reason(&self) -> &'static str {
        match self {
            EventError::Short { .. } => "event_short",
            EventError::UnknownKind(_) => "event_kind",
            EventError::BadLength { .. } => "event_length",
            EventError::UnknownSyscall(_) => "event_syscall",
        }
    }
}

/// Direction of bytes relative to the observed process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Written by the observed process.
    Egress,
    /// Read by the observed process.
    Ingress,
}

/// Role of the observed process on a connection, as the kernel learned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelRole {
    Server,
    Client,
    Unknown,
    /// A pipe end whose first bytes were JSON-RPC (MCP over stdio; see `conn::stdio`).
    Pipe,
}

/// Identity of one connection: a reused fd gets a new generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ConnId {
    pub tgid: u32,
    pub fd: i32,
    pub generation: u64,
}

/// What a data event carries besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// `payload` holds the bytes at `pos`.
    Bytes,
    /// `missing` bytes from `pos` were not captured.
    Truncated { missing: u64 },
    /// The peer closed its side (read returned 0).
    Eof,
    /// The peer reset the connection or went away (ECONNRESET / EPIPE).
    Reset,
}

/// The payload is borrowed from the ring record it was decoded from: the agent applies the event
/// before the record is released, so nothing is copied (an allocation and a copy per event were
/// 5 % of its CPU at saturation). [`Event::into_owned`] keeps one longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataEvent<'a> {
    pub conn: ConnId,
    pub tid: u32,
    pub cpu: u32,
    pub ts_ns: u64,
    pub direction: Direction,
    pub syscall: Syscall,
    pub pos: u64,
    /// Bytes the whole syscall moved (for a `Truncated` marker: see `DataKind`).
    pub msg_len: u64,
    pub kind: DataKind,
    /// TLS plaintext (from the SSL probes), or a marker of a TLS connection: `pos` counts
    /// plaintext bytes, restarted at 0 when the kernel found the connection to be TLS.
    pub tls: bool,
    pub payload: Cow<'a, [u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnEventData {
    pub conn: ConnId,
    pub tid: u32,
    pub ts_ns: u64,
    pub role: KernelRole,
    /// The peer address the syscall saw (connect's argument, accept's result), when it had one.
    pub peer: Option<SocketAddr>,
    /// For an accepted socket, the listening socket's fd.
    pub listen_fd: Option<i32>,
    /// For a socket inherited across fork(), the parent's tgid (its connection on the same fd is
    /// the one this process now holds a copy of); for a passed socket, the sender's.
    pub inherited_from: Option<u32>,
    /// For a socket passed over a unix socket (`SCM_RIGHTS`), the sender's fd of it.
    pub passed_fd: Option<i32>,
    /// For a close: the positions the socket's streams ended at, `[written, read]` (indexed like
    /// the connection table's directions: egress, ingress); `[0, 0]` for an open.
    pub ended_at: [u64; 2],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    Data(DataEvent<'a>),
    Open(ConnEventData),
    Close(ConnEventData),
    /// The process `tgid` exited: all its sockets are gone.
    ProcExit {
        tgid: u32,
        ts_ns: u64,
    },
    /// The kernel's OOM killer chose task `pid` (a thread id, usually its process's) as a victim.
    OomVictim {
        pid: u32,
        ts_ns: u64,
    },
    /// The process `tgid` exec'd another program: its identity changed.
    ProcExec {
        tgid: u32,
        ts_ns: u64,
    },
}

impl Event<'_> {
    /// The event with its payload copied, to keep past its ring record.
    pub fn into_owned(self) -> Event<'static> {
        match self {
            Event::Data(d) => Event::Data(DataEvent {
                payload: Cow::Owned(d.payload.into_owned()),
                ..d
            }),
            Event::Open(c) => Event::Open(c),
            Event::Close(c) => Event::Close(c),
            Event::ProcExit { tgid, ts_ns } => Event::ProcExit { tgid, ts_ns },
            Event::OomVictim { pid, ts_ns } => Event::OomVictim { pid, ts_ns },
            Event::ProcExec { tgid, ts_ns } => Event::ProcExec { tgid, ts_ns },
        }
    }

    pub fn ts_ns(&self) -> u64 {
        match self {
            Event::Data(d) => d.ts_ns,
            Event::Open(c) | Event::Close(c) => c.ts_ns,
            Event::ProcExit { ts_ns, .. }
            | Event::OomVictim { ts_ns, .. }
            | Event::ProcExec { ts_ns, .. } => *ts_ns,
        }
    }

    pub fn kind_label(&self) -> &'static str {
        match self {
            Event::Data(_) => "data",
            Event::Open(_) => "conn_open",
            Event::Close(_) => "conn_close",
            Event::ProcExit { .. } => "proc_exit",
            Event::OomVictim { .. } => "oom_victim",
            Event::ProcExec { .. } => "proc_exec",
        }
    }
}

fn read_struct<T: Copy>(buf: &[u8]) -> Result<T, EventError> {
    let need = size_of::<T>();
    if buf.len() < need {
        return Err(EventError::Short {
            len: buf.len(),
            need,
        });
    }
    // SAFETY: length checked above; T is a repr(C) plain-old-data type from llm-observer-common
    // for which every bit pattern is valid; read_unaligned copes with any alignment.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

fn u64_at(buf: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[off..off + 8]);
    u64::from_ne_bytes(b)
}

/// Decodes one ring record.
pub fn decode(buf: &[u8]) -> Result<Event<'_>, EventError> {
    let hdr: EventHeader = read_struct(buf)?;
    let kind = EventKind::from_u32(hdr.kind).ok_or(EventError::UnknownKind(hdr.kind))?;
    let conn = ConnId {
        tgid: hdr.tgid,
        fd: hdr.fd,
        generation: hdr.conn_gen,
    };
    match kind {
        EventKind::Data => {
            if buf.len() < DATA_EVENT_HEADER_LEN {
                return Err(EventError::Short {
                    len: buf.len(),
                    need: DATA_EVENT_HEADER_LEN,
                });
            }
            // Fixed layout after the 40-byte header: pos, msg_len, len (u32), direction, syscall, flags.
            let pos = u64_at(buf, 40);
            let msg_len = u64_at(buf, 48);
            let len = u32::from_ne_bytes([buf[56], buf[57], buf[58], buf[59]]) as usize;
            let direction = if buf[60] == DIR_EGRESS {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            let syscall = Syscall::from_u8(buf[61]).ok_or(EventError::UnknownSyscall(buf[61]))?;
            let flags = u16::from_ne_bytes([buf[62], buf[63]]);
            let held = buf.len() - DATA_EVENT_HEADER_LEN;
            if len > MAX_PAYLOAD || len > held {
                return Err(EventError::BadLength { claimed: len, held });
            }
            let kind = if flags & DATA_FLAG_TRUNCATED != 0 {
                DataKind::Truncated { missing: msg_len }
            } else if flags & DATA_FLAG_EOF != 0 {
                DataKind::Eof
            } else if flags & DATA_FLAG_RESET != 0 {
                DataKind::Reset
            } else {
                DataKind::Bytes
            };
            Ok(Event::Data(DataEvent {
                conn,
                tid: hdr.tid,
                cpu: hdr.cpu,
                ts_ns: hdr.ts_ns,
                direction,
                syscall,
                pos,
                msg_len,
                kind,
                tls: flags & DATA_FLAG_TLS != 0,
                payload: Cow::Borrowed(&buf[DATA_EVENT_HEADER_LEN..DATA_EVENT_HEADER_LEN + len]),
            }))
        }
        EventKind::ConnOpen | EventKind::ConnClose => {
            let ev: ConnEvent = read_struct(buf)?;
            let role = match ev.role {
                ROLE_SERVER => KernelRole::Server,
                ROLE_CLIENT => KernelRole::Client,
                ROLE_PIPE => KernelRole::Pipe,
                _ => KernelRole::Unknown,
            };
            let n = (ev.peer_len as usize).min(SOCKADDR_MAX);
            let data = ConnEventData {
                conn,
                tid: hdr.tid,
                ts_ns: hdr.ts_ns,
                role,
                peer: parse_sockaddr(&ev.peer[..n]),
                listen_fd: (ev.listen_fd >= 0).then_some(ev.listen_fd),
                inherited_from: (ev.inherited_from != 0).then_some(ev.inherited_from),
                passed_fd: (ev.inherited_from != 0 && ev.passed_fd >= 0).then_some(ev.passed_fd),
                ended_at: [ev.wr_pos, ev.rd_pos],
            };
            Ok(if kind == EventKind::ConnOpen {
                Event::Open(data)
            } else {
                Event::Close(data)
            })
        }
        EventKind::ProcExit => Ok(Event::ProcExit {
            tgid: hdr.tgid,
            ts_ns: hdr.ts_ns,
        }),
        EventKind::OomVictim => Ok(Event::OomVictim {
            pid: hdr.tgid,
            ts_ns: hdr.ts_ns,
        }),
        EventKind::ProcExec => {
            // The whole record must be there, like every other kind's.
            let ev: ExecEvent = read_struct(buf)?;
            Ok(Event::ProcExec {
                tgid: ev.hdr.tgid,
                ts_ns: ev.hdr.ts_ns,
            })
        }
    }
}

/// Parses a raw `sockaddr_in` / `sockaddr_in6` as copied from user memory.
pub fn parse_sockaddr(raw: &[u8]) -> Option<SocketAddr> {
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 10;
    if raw.len() < 4 {
        return None;
    }
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    match family {
        AF_INET if raw.len() >= 8 => Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]),
            port,
        ))),
        AF_INET6 if raw.len() >= 24 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&raw[8..24]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_observer_common::{DataEvent as RawData, EventHeader};

    fn header(kind: EventKind) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            cpu: 1,
            ts_ns: 42,
            tgid: 7,
            tid: 8,
            fd: 5,
            _pad0: 0,
            conn_gen: 99,
        }
    }

    fn raw_data(payload: &[u8], flags: u16, msg_len: u64) -> Vec<u8> {
        let mut ev = RawData {
            hdr: header(EventKind::Data),
            pos: 10,
            msg_len,
            len: payload.len() as u32,
            direction: 1,
            syscall: Syscall::Recvfrom as u8,
            flags,
            payload: [0; MAX_PAYLOAD],
        };
        ev.payload[..payload.len()].copy_from_slice(payload);
        // SAFETY: repr(C) POD; viewing it as bytes for the test.
        let all = unsafe {
            std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<RawData>())
        };
        all[..DATA_EVENT_HEADER_LEN + payload.len()].to_vec()
    }

    #[test]
    fn decodes_data_event_exactly() {
        let raw = raw_data(b"GET / HTTP/1.1\r\n", 0, 16);
        let Event::Data(d) = decode(&raw).expect("decodes") else {
            panic!("not data")
        };
        assert_eq!(
            d.conn,
            ConnId {
                tgid: 7,
                fd: 5,
                generation: 99
            }
        );
        assert_eq!(
            (d.tid, d.cpu, d.ts_ns, d.pos, d.msg_len),
            (8, 1, 42, 10, 16)
        );
        assert_eq!(d.direction, Direction::Ingress);
        assert_eq!(d.syscall, Syscall::Recvfrom);
        assert_eq!(d.kind, DataKind::Bytes);
        assert_eq!(&d.payload[..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn decodes_markers() {
        let raw = raw_data(b"", DATA_FLAG_TRUNCATED, 777);
        let Event::Data(d) = decode(&raw).expect("decodes") else {
            panic!("not data")
        };
        assert_eq!(d.kind, DataKind::Truncated { missing: 777 });
        let raw = raw_data(b"", DATA_FLAG_EOF, 0);
        let Event::Data(d) = decode(&raw).expect("decodes") else {
            panic!("not data")
        };
        assert_eq!(d.kind, DataKind::Eof);
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(decode(&[1, 0]), Err(EventError::Short { len: 2, need: 40 }));
        let mut bad = raw_data(b"abcd", 0, 4);
        bad[0] = 200;
        assert_eq!(decode(&bad), Err(EventError::UnknownKind(200)));
        let mut lying = raw_data(b"abcd", 0, 4);
        lying.truncate(DATA_EVENT_HEADER_LEN + 2);
        assert_eq!(
            decode(&lying),
            Err(EventError::BadLength {
                claimed: 4,
                held: 2
            })
        );
        let mut sys = raw_data(b"abcd", 0, 4);
        sys[61] = 0;
        assert_eq!(decode(&sys), Err(EventError::UnknownSyscall(0)));
    }

    #[test]
    fn decodes_exec_events() {
        let ev = ExecEvent {
            hdr: header(EventKind::ProcExec),
            old_tid: 9,
            _pad0: 0,
        };
        // SAFETY: repr(C) POD; viewing it as bytes for the test.
        let raw = unsafe {
            std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<ExecEvent>())
        };
        assert_eq!(decode(raw), Ok(Event::ProcExec { tgid: 7, ts_ns: 42 }));
        assert_eq!(
            decode(&raw[..44]),
            Err(EventError::Short { len: 44, need: 48 })
        );
    }

    #[test]
    fn parses_sockaddrs() {
        let v4 = [2u8, 0, 0x1f, 0x90, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            parse_sockaddr(&v4),
            Some("127.0.0.1:8080".parse().expect("addr"))
        );
        let mut v6 = [0u8; 28];
        v6[0] = 10;
        v6[2..4].copy_from_slice(&11434u16.to_be_bytes());
        v6[23] = 1;
        assert_eq!(
            parse_sockaddr(&v6),
            Some("[::1]:11434".parse().expect("addr"))
        );
        assert_eq!(parse_sockaddr(&[1, 0, 0, 0]), None);
    }
}
