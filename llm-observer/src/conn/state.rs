//! One connection's state in the table: who it belongs to, where its streams are, what it
//! carries (HTTP, a TLS handshake waiting for plaintext), and the sniffing of first bytes.

use std::{net::SocketAddr, sync::Arc};

use llm_observer_common::starts_like_http;
use llm_observer_decode::{ConnDecoder, EndedBy, Role, Stream};

use crate::attribution::process::ProcessInfo;
use crate::capture::{ConnId, Direction};
use crate::sinks::sink::ConnView;

pub(super) enum Proto {
    /// No bytes yet.
    Unknown,
    Http(Box<ConnDecoder>),
}

pub(super) struct Conn {
    pub(super) id: ConnId,
    pub(super) role: Role,
    pub(super) process: Arc<ProcessInfo>,
    pub(super) local: Option<SocketAddr>,
    pub(super) peer: Option<SocketAddr>,
    pub(super) resolved: bool,
    pub(super) proto: Proto,
    /// Next expected `pos`, by direction (egress, ingress).
    pub(super) next_pos: [u64; 2],
    pub(super) peer_eof: bool,
    pub(super) last_ts: u64,
    /// Buffered bytes charged to the [`Budget`] for this connection.
    pub(super) charged: usize,
    /// The kernel tracked it from its accept/connect, so its bytes start at position 0: a first
    /// event further on means the capture lost its start. (A socket seeded from /proc or
    /// inherited across fork starts wherever the kernel began delivering.)
    pub(super) from_start: bool,
    pub(super) tls: Tls,
    /// `Host` / `:authority` of the latest recognised request (one TCP connection talks to one
    /// server; a forward proxy's absolute-form requests are the exception and get the latest).
    pub(super) host: Option<String>,
}

/// What the table knows of a connection's TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tls {
    /// No sign of TLS.
    No,
    /// Its first bytes were a TLS record (the handshake) and no plaintext came yet: kept, without
    /// a decoder, in case the SSL probes deliver the plaintext; counted as another protocol only
    /// if it ends without.
    Handshake,
    /// The kernel delivers its plaintext (`DataEvent::tls`); its ciphertext is ignored.
    Plaintext,
}

impl Conn {
    pub(super) fn view(&self) -> ConnView<'_> {
        ConnView {
            id: self.id,
            role: self.role,
            process: &self.process,
            local: self.local,
            peer: self.peer,
            host: self.host.as_deref(),
            stdio: false,
        }
    }

    pub(super) fn stream(&self, dir: Direction) -> Stream {
        match (self.role, dir) {
            (Role::Server, Direction::Ingress) | (Role::Client, Direction::Egress) => {
                Stream::Request
            }
            _ => Stream::Response,
        }
    }

    /// Who ended the connection when this process closes it (or exits).
    pub(super) fn ended_by_local_close(&self) -> EndedBy {
        let local = if self.role == Role::Server {
            EndedBy::Server
        } else {
            EndedBy::Client
        };
        let peer = if self.role == Role::Server {
            EndedBy::Client
        } else {
            EndedBy::Server
        };
        if self.peer_eof { peer } else { local }
    }
}

/// Whether `b` starts a TLS handshake record (content type 22, version 3.x).
pub fn looks_like_tls(b: &[u8]) -> bool {
    matches!(b, [0x16, 0x03, 0x00..=0x04, ..])
}

/// The kernel's test of a connection's first bytes ([`starts_like_http`]: HTTP/1.x or HTTP/2),
/// applied again here because `--all-protocols` connections reach user space unclassified.
pub fn looks_like_http(b: &[u8]) -> bool {
    b.first_chunk::<4>().is_some_and(starts_like_http)
}
