//! Model inventory and server-reported load: for each server the agent has seen answer LLM
//! requests (its kind from the `server` decision, its address from the accepted connection), the
//! poller ([`poll`]) asks the server's own endpoints ([`parse::endpoints`]) every
//! `--inventory-interval` seconds and sets the `llm_model_*` / `llm_server_*` families under the
//! agent's labels.
//!
//! The agent's own requests are never measured: the kernel programs ignore the agent's pid (the
//! client side), and the server side of a poll asks no LLM API path, so no decoder counts it.
//!
//! Bounded: at most [`MAX_TARGETS`] servers (one per process and port) and
//! [`parse::MAX_MODELS`] models per answer; a server's series go when its process exits.

pub mod fetch;
pub mod parse;
pub mod poll;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use llm_observer_decode::llm::fingerprint::ServerKind;

use crate::attribution::Place;

/// Most servers polled; a server seen beyond it is not polled (logged once).
pub const MAX_TARGETS: usize = 64;

/// One server: its process and the port it answered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    pub pid: u32,
    pub port: u16,
}

/// What the poller needs to reach a server and label what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: ServerKind,
    /// The first local address it was seen answering on (its own view: inside its namespace).
    pub addr: SocketAddr,
    /// The `process` label value.
    pub process: String,
    pub place: Place,
}

/// The servers seen so far, shared between the pipeline (which adds them) and the poller.
#[derive(Debug, Default)]
pub struct Targets {
    map: HashMap<TargetKey, Target>,
    full_logged: bool,
}

pub type SharedTargets = Arc<Mutex<Targets>>;

impl Targets {
    /// A server-view exchange of a known server kind ended on `addr`. Called for every such
    /// exchange, so a known server costs a lookup and comparisons, no allocation.
    pub fn seen(
        &mut self,
        pid: u32,
        addr: SocketAddr,
        kind: ServerKind,
        process: &str,
        place: &Place,
    ) {
        let key = TargetKey {
            pid,
            port: addr.port(),
        };
        if let Some(t) = self.map.get_mut(&key) {
            // The `server` decision may firm up (a header after an API-shape guess); the process
            // label follows an exec.
            t.kind = kind;
            if t.process != process {
                t.process = process.to_owned();
            }
            if t.place != *place {
                t.place = place.clone();
            }
            return;
        }
        if self.map.len() >= MAX_TARGETS {
            if !self.full_logged {
                self.full_logged = true;
                log::warn!(
                    "inventory: {MAX_TARGETS} servers polled already; pid {pid} port {} is not",
                    addr.port()
                );
            }
            return;
        }
        self.map.insert(
            key,
            Target {
                kind,
                addr,
                process: process.to_owned(),
                place: place.clone(),
            },
        );
    }

    /// The process exited: its servers are no longer polled (and their series go).
    pub fn forget(&mut self, pid: u32) {
        self.map.retain(|k, _| k.pid != pid);
    }

    pub fn snapshot(&self) -> Vec<(TargetKey, Target)> {
        let mut v: Vec<_> = self.map.iter().map(|(k, t)| (*k, t.clone())).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    pub fn contains(&self, key: &TargetKey) -> bool {
        self.map.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_target_per_process_and_port_bounded_and_forgotten() {
        let mut ts = Targets::default();
        let a: SocketAddr = "127.0.0.1:11434".parse().unwrap();
        let b: SocketAddr = "10.0.0.5:11434".parse().unwrap();
        let place = Place::default();
        ts.seen(7, a, ServerKind::Ollama, "p", &place);
        // Same process and port by another address: the same server, the first address kept.
        ts.seen(7, b, ServerKind::Llamacpp, "p", &place);
        let snap = ts.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].1.addr, a);
        assert_eq!(snap[0].1.kind, ServerKind::Llamacpp, "the newer decision");
        for port in 1..=(MAX_TARGETS as u16 + 5) {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            ts.seen(8, addr, ServerKind::Vllm, "p", &place);
        }
        assert_eq!(ts.len(), MAX_TARGETS);
        ts.forget(8);
        assert_eq!(ts.len(), 1);
        ts.forget(7);
        assert!(ts.is_empty());
    }
}
