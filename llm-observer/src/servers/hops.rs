//! Internal hops: LLM calls a server makes to itself or to its own children, which a syscall
//! observer sees as ordinary loopback exchanges but which are no user's request.
//!
//! - Ollama `serve` → its runner (`ollama runner`, or upstream `llama-server` from 0.30 on): the
//!   serving process calls a child it spawned, on a loopback port;
//! - llama-server router mode → its child llama-servers (the same shape);
//! - SGLang's start-up warm-up: the server process calls its own port.
//!
//! Rule: on a loopback connection between two local processes, the exchange is a hop when the caller *is*
//! the server and that server is SGLang by its process identity (`self`: the one server known to
//! call itself; any other program calling its own port — a test, an app embedding a server — makes
//! user requests), or the server's parent is the caller **and** the caller itself serves LLM
//! requests (`ollama_runner` when it is Ollama, `llamacpp_router` when it is llama-server, else
//! `child`). A plain program that starts a server as its child and calls it (a test harness, an
//! app with an embedded model server) is not a server, so its calls stay user requests. Hops are
//! counted in `llm_observer_internal_exchanges_total` and in no request family. The caller of a
//! server view is known only by the address it calls (connect events carry no local port): while
//! a serving parent has a call to its child's address in flight, a local call from another process
//! to that same address would be taken for a hop too (nothing but the parent calls a runner).
//!
//! Figures: the inner hop may carry exact counts its outer exchange lacks (Ollama's runner reports
//! `prompt_eval_count` / `eval_count` on its final line even when the OpenAI-compatible outer
//! stream has no usage). [`InnerFigures`] keeps the tokens of each finished hop per calling server
//! (first in, first out), and the server's next finished chat or completion takes one: its own
//! reported counts win, otherwise the hop's reported counts complete it.

use std::collections::{HashMap, VecDeque};

use llm_observer_decode::llm::fingerprint::ServerKind;
use llm_observer_decode::{Exchange, Operation, TokenSource, Tokens};

use super::ServerTable;
use crate::attribution::process::ProcessInfo;

/// What kind of internal call an exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hop {
    OllamaRunner,
    LlamacppRouter,
    Child,
    SelfCall,
}

impl Hop {
    pub const ALL: [Hop; 4] = [
        Hop::OllamaRunner,
        Hop::LlamacppRouter,
        Hop::Child,
        Hop::SelfCall,
    ];

    /// `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Hop::OllamaRunner => "ollama_runner",
            Hop::LlamacppRouter => "llamacpp_router",
            Hop::Child => "child",
            Hop::SelfCall => "self",
        }
    }

    fn by_parent(table: &ServerTable, parent: u32) -> Option<Hop> {
        // The parent must be a server (it served an LLM request): see the module doc.
        Some(match table.process_kind(parent)? {
            Some(ServerKind::Ollama) => Hop::OllamaRunner,
            Some(ServerKind::Llamacpp) => Hop::LlamacppRouter,
            _ => Hop::Child,
        })
    }
}

/// Server view: `p` accepted a connection on `local` from `peer`. The caller is known by the
/// address its call goes to (the kernel does not give the caller's own port): the call is a hop
/// when `p` itself, or its serving parent, has an LLM call to `local` in flight.
pub fn server_hop(
    table: &ServerTable,
    p: &ProcessInfo,
    local: Option<std::net::SocketAddr>,
    peer: Option<std::net::SocketAddr>,
) -> Option<Hop> {
    if !peer.is_some_and(|a| a.ip().is_loopback()) {
        return None;
    }
    if table.calling(local, p.tgid) {
        calls_itself(p)
    } else if p.ppid != 0 && table.calling(local, p.ppid) {
        Hop::by_parent(table, p.ppid)
    } else {
        None
    }
}

/// Client view: `p` called `peer`.
pub fn client_hop(
    table: &ServerTable,
    p: &ProcessInfo,
    peer: Option<std::net::SocketAddr>,
) -> Option<Hop> {
    let (owner, owner_ppid) = table.owner(peer)?;
    if owner == p.tgid {
        calls_itself(p)
    } else if owner_ppid == p.tgid {
        Hop::by_parent(table, p.tgid)
    } else {
        None
    }
}

/// A process calling its own port: a hop only for SGLang (its start-up warm-up), see the module doc.
fn calls_itself(p: &ProcessInfo) -> Option<Hop> {
    (super::identity::from_process(&p.exe, &p.comm, &p.name) == Some(ServerKind::Sglang))
        .then_some(Hop::SelfCall)
}

/// Most hop results kept per calling server, and most servers.
const MAX_PER_SERVER: usize = 64;
const MAX_SERVERS: usize = 1024;

/// Token figures of finished hops, waiting for their outer exchange (see the module doc).
#[derive(Debug, Default)]
pub struct InnerFigures {
    pending: HashMap<u32, VecDeque<Tokens>>,
}

fn generates(op: Operation) -> bool {
    matches!(op, Operation::Chat | Operation::TextCompletion)
}

impl InnerFigures {
    /// A hop the server `caller` made finished (recorded from the caller's client view only, so
    /// each hop is kept once).
    pub fn hop_done(&mut self, caller: u32, inner: &Exchange) {
        if !generates(inner.operation) || inner.incomplete.is_some() {
            return;
        }
        if !self.pending.contains_key(&caller) && self.pending.len() >= MAX_SERVERS {
            return;
        }
        let q = self.pending.entry(caller).or_default();
        if q.len() >= MAX_PER_SERVER {
            q.pop_front();
        }
        q.push_back(inner.tokens);
    }

    /// The server `tgid` finished an outer exchange: takes the oldest waiting hop's figures and
    /// fills in the counts `outer` lacks (not reported) with the hop's reported ones.
    pub fn complete(&mut self, tgid: u32, outer: &mut Exchange) {
        if !generates(outer.operation) {
            return;
        }
        let Some(q) = self.pending.get_mut(&tgid) else {
            return;
        };
        let inner = q.pop_front();
        if q.is_empty() {
            self.pending.remove(&tgid);
        }
        let Some(inner) = inner else {
            return;
        };
        let t = &mut outer.tokens;
        for (mine, theirs) in [
            (&mut t.prompt, inner.prompt),
            (&mut t.completion, inner.completion),
        ] {
            if mine.source != TokenSource::Reported && theirs.source == TokenSource::Reported {
                *mine = theirs;
            }
        }
    }

    /// Whether hops of server `tgid` wait for their outer exchange.
    pub fn waiting(&self, tgid: u32) -> bool {
        self.pending.contains_key(&tgid)
    }

    pub fn forget(&mut self, tgid: u32) {
        self.pending.remove(&tgid);
    }
}
