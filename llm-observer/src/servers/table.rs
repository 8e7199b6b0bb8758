//! [`ServerTable`]: one stable `server` decision per serving process and per server address.
//!
//! Server view (the observed process accepted the connection):
//! 1. the process's identity ([`super::identity`]) when it names a server — read once per process;
//! 2. else the strongest wire fingerprint its answers carried so far (a decision changes only to a
//!    strictly stronger kind of evidence: an API-shape guess gives way to a header, never the
//!    reverse, so it settles after at most two changes);
//! 3. else `unknown`.
//!
//! The decision is also remembered for the address the process answered on (the accepted
//! socket's local address), so a client on this node calling that address (client view) is
//! labelled with the same server even when the answers carry no mark (vLLM, SGLang). Client view:
//! the address's decision (from its local server, or from earlier answers on it), else this
//! answer's fingerprint.
//!
//! Bounded: at most [`MAX_ENTRIES`] processes and addresses each; beyond that a decision is still
//! made per exchange but not remembered. A process's entries go when it exits.

use std::collections::HashMap;
use std::net::SocketAddr;

use llm_observer_decode::llm::fingerprint::{Evidence, ServerKind, Strength};

use super::identity;
use crate::attribution::process::ProcessInfo;

/// Most processes and most addresses remembered.
pub const MAX_ENTRIES: usize = 4096;

/// Where a decision came from, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Basis {
    Wire(Strength),
    Process,
}

#[derive(Debug, Clone, Copy)]
struct Decision {
    kind: ServerKind,
    basis: Basis,
}

impl Decision {
    /// `self` updated with `new`: only strictly stronger evidence changes it.
    fn merge(old: Option<Decision>, new: Option<Decision>) -> Option<Decision> {
        match (old, new) {
            (Some(o), Some(n)) if n.basis > o.basis => Some(n),
            (Some(o), _) => Some(o),
            (None, n) => n,
        }
    }

    fn wire(e: Option<Evidence>) -> Option<Decision> {
        e.map(|e| Decision {
            kind: e.kind,
            basis: Basis::Wire(e.strength),
        })
    }
}

#[derive(Debug)]
struct ProcessEntry {
    start_time: u64,
    decision: Option<Decision>,
}

#[derive(Debug)]
struct AddrEntry {
    /// The local process serving this address, when known (its exit forgets the entry).
    owner: Option<u32>,
    /// Its parent, for telling a server's internal hops (see [`super::hops`]).
    owner_ppid: u32,
    decision: Option<Decision>,
}

#[derive(Debug, Default)]
pub struct ServerTable {
    processes: HashMap<u32, ProcessEntry>,
    addrs: HashMap<SocketAddr, AddrEntry>,
    /// Loopback port → the local processes with LLM calls to it in flight (tgid, count), so the
    /// server view of a call knows who may be calling (internal hops). The kernel's connect event
    /// does not carry the caller's own port, so calls are matched by the port they go to (a
    /// listener on 0.0.0.0 or 127.0.0.1 alike).
    calls: HashMap<u16, Vec<(u32, u32)>>,
}

impl ServerTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The server a serving process is, after folding in `seen` (this exchange's fingerprint;
    /// `None` before its response). `local`: the accepted socket's local address.
    pub fn server_view(
        &mut self,
        p: &ProcessInfo,
        local: Option<SocketAddr>,
        seen: Option<Evidence>,
    ) -> Option<ServerKind> {
        let fresh = || ProcessEntry {
            start_time: p.start_time,
            decision: identity::from_process(&p.exe, &p.comm, &p.name).map(|kind| Decision {
                kind,
                basis: Basis::Process,
            }),
        };
        let decision = match self.processes.get_mut(&p.tgid) {
            // A reused pid is another process: decide afresh.
            Some(e) if e.start_time != p.start_time => {
                *e = fresh();
                e.decision = Decision::merge(e.decision, Decision::wire(seen));
                e.decision
            }
            Some(e) => {
                e.decision = Decision::merge(e.decision, Decision::wire(seen));
                e.decision
            }
            None => {
                let mut e = fresh();
                e.decision = Decision::merge(e.decision, Decision::wire(seen));
                let d = e.decision;
                if self.processes.len() < MAX_ENTRIES {
                    self.processes.insert(p.tgid, e);
                }
                d
            }
        };
        if let Some(addr) = local {
            self.remember_owner(addr, p, decision);
        }
        decision.map(|d| d.kind)
    }

    fn remember_owner(&mut self, addr: SocketAddr, p: &ProcessInfo, d: Option<Decision>) {
        let entry = AddrEntry {
            owner: Some(p.tgid),
            owner_ppid: p.ppid,
            decision: d,
        };
        // The local server's own decision replaces what clients inferred.
        if let Some(e) = self.addrs.get_mut(&addr) {
            *e = entry;
        } else if self.addrs.len() < MAX_ENTRIES {
            self.addrs.insert(addr, entry);
        }
    }

    /// A local process `tgid` sent an LLM request to `peer`.
    pub fn call_started(&mut self, peer: Option<SocketAddr>, tgid: u32) {
        let Some(a) = loopback_port(peer) else {
            return;
        };
        if !self.calls.contains_key(&a) && self.calls.len() >= MAX_ENTRIES {
            return;
        }
        let callers = self.calls.entry(a).or_default();
        if let Some((_, n)) = callers.iter_mut().find(|(t, _)| *t == tgid) {
            *n += 1;
        } else if callers.len() < 64 {
            // Bounded: a server with this many distinct local callers at once is no runner.
            callers.push((tgid, 1));
        }
    }

    /// That call ended (a call whose start was not seen ends nothing).
    pub fn call_ended(&mut self, peer: Option<SocketAddr>, tgid: u32) {
        let Some(a) = loopback_port(peer) else {
            return;
        };
        let Some(callers) = self.calls.get_mut(&a) else {
            return;
        };
        if let Some(i) = callers.iter().position(|(t, _)| *t == tgid) {
            callers[i].1 -= 1;
            if callers[i].1 == 0 {
                callers.swap_remove(i);
            }
        }
        if callers.is_empty() {
            self.calls.remove(&a);
        }
    }

    /// Whether process `tgid` has an LLM call to this node's port `addr.port()` in flight.
    pub fn calling(&self, addr: Option<SocketAddr>, tgid: u32) -> bool {
        addr.and_then(|a| self.calls.get(&a.port()))
            .is_some_and(|c| c.iter().any(|(t, _)| *t == tgid))
    }

    /// The entry of `addr`, or for a loopback address, of a local listener on all addresses with
    /// its port (`0.0.0.0:P` / `[::]:P` serve `127.0.0.1:P` too).
    fn entry(&self, addr: SocketAddr) -> Option<&AddrEntry> {
        self.addrs.get(&addr).or_else(|| {
            let port = loopback_port(Some(addr))?;
            [
                SocketAddr::from(([0, 0, 0, 0], port)),
                SocketAddr::from(([0u16; 8], port)),
            ]
            .iter()
            .find_map(|a| self.addrs.get(a))
        })
    }

    /// The local process serving `addr` and its parent.
    pub fn owner(&self, addr: Option<SocketAddr>) -> Option<(u32, u32)> {
        let e = self.entry(addr?)?;
        Some((e.owner?, e.owner_ppid))
    }

    /// The decision for process `tgid`, if it served anything.
    pub fn process_kind(&self, tgid: u32) -> Option<Option<ServerKind>> {
        self.processes
            .get(&tgid)
            .map(|e| e.decision.map(|d| d.kind))
    }

    /// The server behind `peer` as a client sees it, after folding in `seen`.
    pub fn client_view(
        &mut self,
        peer: Option<SocketAddr>,
        seen: Option<Evidence>,
    ) -> Option<ServerKind> {
        let seen = Decision::wire(seen);
        let Some(addr) = peer else {
            return seen.map(|d| d.kind);
        };
        if !self.addrs.contains_key(&addr)
            && let Some(e) = self.entry(addr)
        {
            // Served by a local listener on all addresses: its decision, and stronger wire
            // evidence of this answer.
            return Decision::merge(e.decision, seen).map(|d| d.kind);
        }
        match self.addrs.get_mut(&addr) {
            Some(e) => {
                // Only stronger evidence changes what the address is.
                e.decision = Decision::merge(e.decision, seen);
                e.decision.map(|d| d.kind)
            }
            None => {
                if seen.is_some() && self.addrs.len() < MAX_ENTRIES {
                    self.addrs.insert(
                        addr,
                        AddrEntry {
                            owner: None,
                            owner_ppid: 0,
                            decision: seen,
                        },
                    );
                }
                seen.map(|d| d.kind)
            }
        }
    }

    /// A process exited: its decision and the addresses it served go (the pid and the port may be
    /// reused by something else).
    pub fn forget(&mut self, tgid: u32) {
        self.processes.remove(&tgid);
        self.addrs.retain(|_, e| e.owner != Some(tgid));
        self.calls.retain(|_, c| {
            c.retain(|(t, _)| *t != tgid);
            !c.is_empty()
        });
    }

    /// Remembered (processes, addresses), for tests and bounds.
    pub fn len(&self) -> (usize, usize) {
        (self.processes.len(), self.addrs.len())
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.addrs.is_empty()
    }
}

/// The port of a loopback address.
fn loopback_port(a: Option<SocketAddr>) -> Option<u16> {
    a.filter(|a| a.ip().is_loopback()).map(|a| a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(tgid: u32, start: u64, exe: &str, comm: &str, name: &str) -> ProcessInfo {
        ProcessInfo {
            tgid,
            comm: comm.into(),
            name: name.into(),
            exe: exe.into(),
            ppid: 1,
            start_time: start,
            cgroup: Default::default(),
        }
    }

    fn ev(kind: ServerKind, strength: Strength) -> Option<Evidence> {
        Some(Evidence { kind, strength })
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn process_identity_wins_and_names_the_address_for_clients() {
        let mut t = ServerTable::new();
        let vllm = proc(10, 1, "python3.12", "python3", "vllm");
        let local = addr("127.0.0.1:8000");
        // vLLM's answers carry no mark; its process says what it is.
        assert_eq!(t.server_view(&vllm, local, None), Some(ServerKind::Vllm));
        // A relayed fingerprint does not override the process.
        assert_eq!(
            t.server_view(&vllm, local, ev(ServerKind::Ollama, Strength::Body)),
            Some(ServerKind::Vllm)
        );
        // A client on this node calling it: the address's decision.
        assert_eq!(t.client_view(local, None), Some(ServerKind::Vllm));
        assert_eq!(t.client_view(addr("127.0.0.1:9999"), None), None);
        t.forget(10);
        assert!(t.is_empty());
        assert_eq!(t.client_view(local, None), None);
    }

    #[test]
    fn wire_decision_is_sticky_and_only_strengthens() {
        let mut t = ServerTable::new();
        let app = proc(20, 1, "app", "app", "app");
        assert_eq!(t.server_view(&app, None, None), None);
        assert_eq!(
            t.server_view(&app, None, ev(ServerKind::Ollama, Strength::Api)),
            Some(ServerKind::Ollama)
        );
        // Later answers without a mark keep it.
        assert_eq!(t.server_view(&app, None, None), Some(ServerKind::Ollama));
        // Equal strength: the first stays.
        assert_eq!(
            t.server_view(&app, None, ev(ServerKind::Tgi, Strength::Api)),
            Some(ServerKind::Ollama)
        );
        // Stronger evidence replaces it, and then stays.
        assert_eq!(
            t.server_view(&app, None, ev(ServerKind::Litellm, Strength::Header)),
            Some(ServerKind::Litellm)
        );
        assert_eq!(
            t.server_view(&app, None, ev(ServerKind::Ollama, Strength::Body)),
            Some(ServerKind::Litellm)
        );
        // The pid reused by another process: decided afresh.
        let other = proc(20, 2, "llama-server", "llama-server", "llama-server");
        assert_eq!(
            t.server_view(&other, None, None),
            Some(ServerKind::Llamacpp)
        );
    }

    #[test]
    fn client_view_learns_per_address() {
        let mut t = ServerTable::new();
        let remote = addr("10.0.0.5:8080");
        assert_eq!(t.client_view(remote, None), None);
        assert_eq!(
            t.client_view(remote, ev(ServerKind::Llamacpp, Strength::Header)),
            Some(ServerKind::Llamacpp)
        );
        // An answer that happened to carry no header (an error) keeps the address's server.
        assert_eq!(t.client_view(remote, None), Some(ServerKind::Llamacpp));
        assert_eq!(
            t.client_view(None, ev(ServerKind::Tgi, Strength::Header)),
            Some(ServerKind::Tgi)
        );
        // A process exit does not forget addresses no local process owns.
        t.forget(1);
        assert_eq!(t.len(), (0, 1));
    }

    #[test]
    fn a_listener_on_all_addresses_serves_loopback_callers() {
        let mut t = ServerTable::new();
        let ollama = proc(30, 1, "ollama", "ollama", "ollama");
        assert_eq!(
            t.server_view(&ollama, addr("0.0.0.0:11434"), None),
            Some(ServerKind::Ollama)
        );
        assert_eq!(
            t.client_view(addr("127.0.0.1:11434"), None),
            Some(ServerKind::Ollama)
        );
        assert_eq!(t.owner(addr("127.0.0.1:11434")), Some((30, 1)));
        // Not for a remote host that happens to use the same port.
        assert_eq!(t.client_view(addr("10.0.0.9:11434"), None), None);
        // Calls in flight, by loopback port; a call that never started ends nothing.
        t.call_ended(addr("127.0.0.1:11434"), 40);
        t.call_started(addr("127.0.0.1:11434"), 40);
        t.call_started(addr("127.0.0.1:11434"), 40);
        t.call_started(addr("10.0.0.9:11434"), 41);
        assert!(t.calling(addr("0.0.0.0:11434"), 40));
        assert!(!t.calling(addr("0.0.0.0:11434"), 41));
        t.call_ended(addr("127.0.0.1:11434"), 40);
        assert!(t.calling(addr("127.0.0.1:11434"), 40));
        t.call_ended(addr("127.0.0.1:11434"), 40);
        assert!(!t.calling(addr("127.0.0.1:11434"), 40));
    }

    #[test]
    fn bounded() {
        let mut t = ServerTable::new();
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            let p = proc(i + 1, 1, "ollama", "ollama", "ollama");
            let local = Some(SocketAddr::from((
                [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                11434,
            )));
            // Still decided when the table is full.
            assert_eq!(t.server_view(&p, local, None), Some(ServerKind::Ollama));
        }
        assert_eq!(t.len(), (MAX_ENTRIES, MAX_ENTRIES));
    }
}
