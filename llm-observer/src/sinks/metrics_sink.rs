//! [`MetricsSink`]: decoder outputs → the Prometheus [`Metrics`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use llm_observer_decode::{
    DecodeError, Exchange, Role, Unsupported,
    llm::{RequestSummary, fingerprint::Evidence},
};

use llm_observer_decode::llm::fingerprint::ServerKind;

use crate::{
    attribution::{Place, names::Names, serving::ServingRegistry},
    capture::{ConnId, Event},
    inventory::SharedTargets,
    servers::{
        self, ServerTable,
        hops::{self, Hop, InnerFigures},
        services::{self, ServiceRule},
    },
    sinks::sink::{ConnView, Sink},
    sinks::{
        admission::{Admit, LabelCap},
        metrics::{ExchangeCtx, InFlight, Metrics},
    },
};

/// Bounds on the container, pod and namespace label values (pods churn; a long-lived agent
/// must not grow a series set per pod ever seen).
struct PlaceCaps {
    container: LabelCap,
    pod: LabelCap,
    namespace: LabelCap,
}

impl PlaceCaps {
    fn admit(&self, p: Place) -> Place {
        // Empty means "not in one" and is kept as is (cAdvisor convention), never `unknown`.
        // Places come from this node's runtime, not the wire: any may be admitted (up to the cap).
        let cap = |c: &LabelCap, v: String| {
            if v.is_empty() {
                v
            } else {
                c.label(Some(&v), Admit::Yes, 0)
            }
        };
        Place {
            container: cap(&self.container, p.container),
            pod: cap(&self.pod, p.pod),
            namespace: cap(&self.namespace, p.namespace),
        }
    }
}

/// Keeps the in-flight gauge handle of every started request until it is done.
pub struct MetricsSink {
    metrics: Arc<Metrics>,
    inflight: HashMap<(ConnId, u64), InFlight>,
    names: Arc<Names>,
    caps: PlaceCaps,
    /// Servers seen answering requests: the GPU join's serving units.
    serving: Arc<Mutex<ServingRegistry>>,
    /// Which server software each serving process and address is (the `server` label).
    servers: ServerTable,
    /// Figures of finished internal hops, for their outer exchanges.
    inner: InnerFigures,
    /// Servers seen answering, for the inventory poller.
    inventory: SharedTargets,
    /// `--label-pod-label` keys, in label order after the request-side user labels.
    pod_keys: Vec<String>,
    /// `--service` rules: the last user label (`service`) when there are any.
    services: Vec<ServiceRule>,
}

impl MetricsSink {
    /// Without metadata sources: containers and pods are labelled by id.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self::with_names(metrics, Names::new(), 64)
    }

    /// `max_places`: distinct values per container / pod / namespace label before `other`.
    pub fn with_names(metrics: Arc<Metrics>, names: Arc<Names>, max_places: usize) -> Self {
        MetricsSink {
            metrics,
            inflight: HashMap::new(),
            names,
            caps: PlaceCaps {
                container: LabelCap::new(max_places, 0),
                pod: LabelCap::new(max_places, 0),
                namespace: LabelCap::new(max_places, 0),
            },
            serving: Arc::default(),
            servers: ServerTable::new(),
            inner: InnerFigures::default(),
            inventory: SharedTargets::default(),
            pod_keys: Vec::new(),
            services: Vec::new(),
        }
    }

    /// The `--service` rules (a `service` label after the other user labels).
    pub fn with_services(mut self, rules: Vec<ServiceRule>) -> Self {
        self.services = rules;
        self
    }

    /// Pod (or container) labels to copy onto the request families (`--label-pod-label`).
    pub fn with_pod_labels(mut self, keys: Vec<String>) -> Self {
        self.pod_keys = keys;
        self
    }

    /// The servers this sink has seen answer (shared with the inventory poller).
    pub fn inventory_targets(&self) -> SharedTargets {
        self.inventory.clone()
    }

    /// The serving units this sink registers (shared with the GPU sampler).
    pub fn serving(&self) -> Arc<Mutex<ServingRegistry>> {
        self.serving.clone()
    }

    fn served(&self, conn: &ConnView<'_>, ctx: &ExchangeCtx) {
        if conn.role == llm_observer_decode::Role::Server {
            let mut reg = self.serving.lock().unwrap_or_else(|e| e.into_inner());
            reg.serve(conn.process, &ctx.process, &ctx.place);
        }
    }

    /// A server of a known kind answered on `conn.local`: the inventory poller may ask it.
    fn pollable(&self, conn: &ConnView<'_>, ctx: &ExchangeCtx) {
        if conn.role != Role::Server {
            return;
        }
        let kind = ServerKind::ALL
            .into_iter()
            .find(|k| k.as_str() == ctx.server);
        if let (Some(kind), Some(addr)) = (kind, conn.local) {
            let mut t = self.inventory.lock().unwrap_or_else(|e| e.into_inner());
            t.seen(conn.id.tgid, addr, kind, &ctx.process, &ctx.place);
        }
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Whether the connection's exchanges are a server's internal hop.
    fn hop(&self, conn: &ConnView<'_>) -> Option<Hop> {
        match conn.role {
            Role::Server => hops::server_hop(&self.servers, conn.process, conn.local, conn.peer),
            Role::Client => hops::client_hop(&self.servers, conn.process, conn.peer),
        }
    }

    /// `seen`: the exchange's server fingerprint (`None` before its response).
    fn ctx(&mut self, conn: &ConnView<'_>, seen: Option<Evidence>) -> ExchangeCtx {
        let p = conn.process;
        let server = match conn.role {
            Role::Server => self.servers.server_view(p, conn.local, seen),
            Role::Client => self.servers.client_view(conn.peer, seen),
        };
        let place = self.caps.admit(self.names.place(&p.cgroup));
        let mut workload_labels = self.names.workload_labels(&p.cgroup, &self.pod_keys);
        if !self.services.is_empty() {
            let service = services::service(
                &self.services,
                conn.role,
                conn.local,
                conn.peer,
                &p.name,
                &place.container,
            );
            workload_labels.push(service.to_owned());
        }
        ExchangeCtx {
            role: conn.role,
            process: p.name.to_string(),
            comm: p.comm.to_string(),
            place,
            workload_labels,
            pid: conn.id.tgid,
            peer: conn.peer,
            stdio: conn.stdio,
            provider: crate::sinks::provider::provider(conn.host),
            server: servers::label(server),
        }
    }
}

impl Sink for MetricsSink {
    fn started(&mut self, conn: &ConnView<'_>, seq: u64, summary: &RequestSummary) {
        if conn.role == Role::Client {
            // Before the server reads it: its view can then tell who is calling.
            self.servers.call_started(conn.peer, conn.id.tgid);
        }
        let hop = self.hop(conn);
        let ctx = self.ctx(conn, None);
        if hop.is_some() {
            return;
        }
        self.served(conn, &ctx);
        let f = self.metrics.started(&ctx, summary);
        self.inflight.insert((conn.id, seq), f);
    }

    fn first_token(&mut self, conn: &ConnView<'_>, seq: u64, _ts_ns: u64) {
        if let Some(f) = self.inflight.get_mut(&(conn.id, seq)) {
            self.metrics.first_token(f);
        }
    }

    fn done(&mut self, conn: &ConnView<'_>, seq: u64, exchange: &Exchange) {
        let f = self.inflight.remove(&(conn.id, seq));
        if conn.role == Role::Client {
            self.servers.call_ended(conn.peer, conn.id.tgid);
        }
        // Judged again at the end: the first call to a runner starts before the runner's own
        // view has named its address.
        let hop = self.hop(conn);
        let ctx = self.ctx(conn, exchange.server);
        if let Some(hop) = hop {
            if let Some(f) = f {
                self.metrics.discard(f);
            }
            self.metrics.internal(conn.role, exchange, hop);
            if conn.role == Role::Client {
                self.inner.hop_done(conn.id.tgid, exchange);
            }
            return;
        }
        self.served(conn, &ctx);
        self.pollable(conn, &ctx);
        if conn.role == Role::Server && self.inner.waiting(conn.id.tgid) {
            let mut outer = exchange.clone();
            self.inner.complete(conn.id.tgid, &mut outer);
            self.metrics.done(f, &ctx, &outer);
        } else {
            self.metrics.done(f, &ctx, exchange);
        }
    }

    fn decode_error(&mut self, conn: &ConnView<'_>, error: &DecodeError) {
        // Debug level: a misbehaving peer must not flood the log; the counter is always kept.
        log::debug!(
            "decode error ({}) on {}[{}] fd {}: {error}",
            error.reason(),
            conn.process.comm,
            conn.id.tgid,
            conn.id.fd
        );
        self.metrics.self_metrics().decode_error(error);
    }

    fn incomplete(&mut self, conn: &ConnView<'_>, why: llm_observer_decode::Incomplete) {
        self.metrics.self_metrics().incomplete(conn.role, why);
    }

    fn unsupported(&mut self, _conn: &ConnView<'_>, what: Unsupported) {
        self.metrics.self_metrics().unsupported(what);
    }

    fn oom_killed(&mut self, process: &crate::attribution::process::ProcessInfo) {
        self.metrics.oom_killed(&process.comm);
    }

    fn raw(&mut self, event: &Event, _conn: Option<&ConnView<'_>>) {
        // A gone process must not keep its memory series (and a reused pid must not inherit them).
        if let Event::ProcExit { tgid, .. } = event {
            self.metrics.forget_pid(*tgid);
            self.servers.forget(*tgid);
            self.inner.forget(*tgid);
            self.inventory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget(*tgid);
            self.serving
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget(*tgid);
        }
    }
}

#[cfg(test)]
#[path = "metrics_sink_tests.rs"]
mod tests;
