//! [`Correlator`]: trace and span ids for exchanges, shared by the event log and OTLP spans.
//!
//! A loopback call is seen twice — by the client (connected socket) and by the server (accepted
//! socket). Both views of the n-th request on one TCP connection have the same 4-tuple (swapped)
//! and the same sequence number, so they meet under one key; the two spans then share a trace and
//! the server view's span is the child of the client view's. The client view's start (its request
//! fully sent) precedes the server view's end (its response written) by the server's whole
//! processing time, so at the server's end the client view is known when there is one; without a
//! client view the server's span is a root (a parent that is never exported would dangle).
//!
//! Entries of calls seen from one side only are bounded: the oldest are let go beyond a cap.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use llm_observer_decode::{Role, TraceParent};

use crate::sinks::sink::ConnView;

/// Ids of one exchange's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SplitMix64: ids need to be unique, not secret.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let mut seed = [0u8; 8];
        let from_kernel = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
            .is_ok();
        let mut s = u64::from_le_bytes(seed);
        if !from_kernel {
            s = crate::capture::system::monotonic_ns() ^ (u64::from(std::process::id()) << 32);
        }
        Rng(s)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A non-zero span id (all-zero ids are invalid in W3C Trace Context).
    fn span_id(&mut self) -> [u8; 8] {
        loop {
            let v = self.next();
            if v != 0 {
                return v.to_be_bytes();
            }
        }
    }

    fn trace_id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.span_id());
        id[8..].copy_from_slice(&self.next().to_be_bytes());
        id
    }
}

/// The same call from either end: client address, server address, request number on the
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    client: SocketAddr,
    server: SocketAddr,
    seq: u64,
}

fn key(conn: &ConnView<'_>, seq: u64) -> Option<Key> {
    let (local, peer) = (conn.local?, conn.peer?);
    Some(match conn.role {
        Role::Server => Key {
            client: peer,
            server: local,
            seq,
        },
        Role::Client => Key {
            client: local,
            server: peer,
            seq,
        },
    })
}

#[derive(Debug)]
struct Call {
    trace_id: [u8; 16],
    client_span: [u8; 8],
    server_span: [u8; 8],
    client_seen: bool,
    client_done: bool,
    server_done: bool,
    /// Insertion stamp, to tell this entry from a later one under the same key.
    stamp: u64,
}

/// Entries kept for calls seen from one side only.
const MAX_CALLS: usize = 16_384;

#[derive(Debug)]
pub struct Correlator {
    rng: Rng,
    calls: HashMap<Key, Call>,
    order: VecDeque<(Key, u64)>,
    stamp: u64,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator {
            rng: Rng::seeded(),
            calls: HashMap::new(),
            order: VecDeque::new(),
            stamp: 0,
        }
    }
}

impl Correlator {
    /// Lets go of the oldest entries so one more fits.
    fn make_room(&mut self) {
        while self.calls.len() >= MAX_CALLS {
            let Some((old, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.calls.get(&old).is_some_and(|c| c.stamp == stamp) {
                self.calls.remove(&old);
            }
        }
        // Stamps of entries removed when their call completed stay queued; drop them in bulk.
        if self.order.len() > 2 * MAX_CALLS {
            let calls = &self.calls;
            self.order
                .retain(|(k, stamp)| calls.get(k).is_some_and(|c| c.stamp == *stamp));
        }
    }

    fn call(&mut self, k: Key) -> &mut Call {
        if !self.calls.contains_key(&k) {
            self.make_room();
        }
        let (rng, order, stamp) = (&mut self.rng, &mut self.order, &mut self.stamp);
        self.calls.entry(k).or_insert_with(|| {
            *stamp += 1;
            order.push_back((k, *stamp));
            Call {
                trace_id: rng.trace_id(),
                client_span: rng.span_id(),
                server_span: rng.span_id(),
                client_seen: false,
                client_done: false,
                server_done: false,
                stamp: *stamp,
            }
        })
    }

    /// A request was fully sent (client view) or received (server view).
    pub fn started(&mut self, conn: &ConnView<'_>, seq: u64) {
        if let Some(k) = key(conn, seq)
            && conn.role == Role::Client
        {
            let c = self.call(k);
            // A finished call under the same key was an earlier connection on the same 4-tuple.
            if c.client_done {
                self.calls.remove(&k);
                self.call(k).client_seen = true;
            } else {
                c.client_seen = true;
            }
        }
    }

    /// The ids of a finished exchange's span. A captured `traceparent` puts the call in the
    /// caller's trace: the client view's span (or, without one, the server view's) becomes the
    /// child of the span it names.
    pub fn done(&mut self, conn: &ConnView<'_>, seq: u64, tp: Option<TraceParent>) -> SpanIds {
        let Some(k) = key(conn, seq) else {
            return SpanIds {
                trace_id: tp.map_or_else(|| self.rng.trace_id(), |t| t.trace_id),
                span_id: self.rng.span_id(),
                parent_span_id: tp.map(|t| t.parent_id),
            };
        };
        let stale = self.calls.get(&k).is_some_and(|c| match conn.role {
            Role::Server => c.server_done,
            Role::Client => c.client_done,
        });
        if stale {
            self.calls.remove(&k);
        }
        let c = self.call(k);
        // Both views carry the same header, so whichever ends first sets the same trace.
        if let Some(t) = tp {
            c.trace_id = t.trace_id;
        }
        let caller = tp.map(|t| t.parent_id);
        let ids = match conn.role {
            Role::Server => {
                c.server_done = true;
                SpanIds {
                    trace_id: c.trace_id,
                    span_id: c.server_span,
                    parent_span_id: if c.client_seen {
                        Some(c.client_span)
                    } else {
                        caller
                    },
                }
            }
            Role::Client => {
                c.client_done = true;
                SpanIds {
                    trace_id: c.trace_id,
                    span_id: c.client_span,
                    parent_span_id: caller,
                }
            }
        };
        if c.server_done && c.client_done {
            self.calls.remove(&k);
        }
        ids
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.calls.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{capture::ConnId, sinks::event_log::tests::process};

    fn view<'a>(
        p: &'a crate::attribution::process::ProcessInfo,
        role: Role,
        local: &str,
        peer: &str,
    ) -> ConnView<'a> {
        ConnView {
            id: ConnId {
                tgid: 1,
                fd: 3,
                generation: 1,
            },
            role,
            process: p,
            local: Some(local.parse().unwrap()),
            peer: Some(peer.parse().unwrap()),
            host: None,
            stdio: false,
        }
    }

    #[test]
    fn the_server_view_is_the_child_of_the_client_view() {
        let p = process();
        let client = view(&p, Role::Client, "127.0.0.1:50000", "127.0.0.1:8000");
        let server = view(&p, Role::Server, "127.0.0.1:8000", "127.0.0.1:50000");
        let mut c = Correlator::default();
        c.started(&client, 0);
        let s = c.done(&server, 0, None);
        let k = c.done(&client, 0, None);
        assert_eq!(s.trace_id, k.trace_id);
        assert_eq!(s.parent_span_id, Some(k.span_id));
        assert_eq!(k.parent_span_id, None);
        assert_ne!(s.span_id, k.span_id);
        assert_eq!(c.len(), 0, "both views done: nothing kept");
        // The next request on the connection is another trace.
        c.started(&client, 1);
        let s1 = c.done(&server, 1, None);
        assert_ne!(s1.trace_id, s.trace_id);
    }

    #[test]
    fn a_server_view_alone_is_a_root_and_one_sided_calls_are_bounded() {
        let p = process();
        let server = view(&p, Role::Server, "10.0.0.1:8000", "10.0.0.2:50000");
        let mut c = Correlator::default();
        let a = c.done(&server, 0, None);
        assert_eq!(a.parent_span_id, None);
        // The same 4-tuple and seq later (a new connection reusing the port) is a new trace.
        let b = c.done(&server, 0, None);
        assert_ne!(a.trace_id, b.trace_id);
        for seq in 0..(MAX_CALLS as u64 + 100) {
            c.done(&server, seq, None);
        }
        assert!(c.len() <= MAX_CALLS);
        assert!(c.order.len() <= 2 * MAX_CALLS + 1);
    }

    #[test]
    fn a_traceparent_makes_the_call_a_child_of_the_caller() {
        let p = process();
        let tp = TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let t = tp.unwrap();
        let client = view(&p, Role::Client, "127.0.0.1:50001", "127.0.0.1:8000");
        let server = view(&p, Role::Server, "127.0.0.1:8000", "127.0.0.1:50001");
        let mut c = Correlator::default();
        c.started(&client, 0);
        let s = c.done(&server, 0, tp);
        let k = c.done(&client, 0, tp);
        assert_eq!((s.trace_id, k.trace_id), (t.trace_id, t.trace_id));
        assert_eq!(k.parent_span_id, Some(t.parent_id));
        assert_eq!(s.parent_span_id, Some(k.span_id));
        // Seen by the server only: its span is the caller's child.
        let remote = view(&p, Role::Server, "10.0.0.1:8000", "10.0.0.9:40000");
        let r = c.done(&remote, 0, tp);
        assert_eq!(
            (r.trace_id, r.parent_span_id),
            (t.trace_id, Some(t.parent_id))
        );
    }

    #[test]
    fn ids_are_hex() {
        assert_eq!(hex(&[0x0a, 0xff, 0x00]), "0aff00");
    }
}
