//! [`Metrics`]: the Prometheus registry of the agent and the entry points the pipeline calls.
//!
//! Routing: an exchange whose connection the observed process accepted ([`Role::Server`]) feeds
//! the `llm_*` families; one it connected ([`Role::Client`]) feeds `llm_client_*`. MCP exchanges
//! feed only the MCP families. A loopback call is seen once per view, so no family counts an
//! exchange twice.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llm_observer_decode::llm::RequestSummary;
use llm_observer_decode::{Api, Exchange, Role};
use prometheus::{IntGauge, Registry, TextEncoder};

use super::admission::{Admit, Forget, LabelCap};
use super::agent_families::AgentFamilies;
use super::families::{ClientFamilies, McpFamilies, ServerFamilies, succeeded};
use super::gpu::GpuFamilies;
use super::inventory_families::InventoryFamilies;
use super::labels::mcp_method;
use super::memory::RssTracker;
use super::prices::PriceTable;
use super::registry::{FamilyInfo, Reg};
use super::self_metrics::SelfMetrics;
use super::server_families::ServerInfoFamilies;
use super::tool_exec::ToolExec;
use super::window::TokenRateWindow;
use crate::attribution::serving::UnitLabels;

/// Label bounds and windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Distinct `model` values per view; later models are `other`.
    pub max_models: usize,
    /// Distinct `peer` values (client view); later peers are `other`.
    pub max_peers: usize,
    /// Distinct `process` values (both views share one set); later processes are `other`.
    pub max_processes: usize,
    /// Distinct `tool` values (tool calls, MCP tools); later tools are `other`.
    pub max_tools: usize,
    /// Window of the `llm_tokens_per_second` gauge, rounded down to whole seconds (at least 1).
    pub tokens_per_second_window: Duration,
    /// A label value no exchange used for this long leaves its cap and its series are removed
    /// (zero: never).
    pub label_idle_timeout: Duration,
    /// Tool calls awaiting their result per client process (`llm_client_tool_execution_seconds`).
    pub max_pending_tool_calls: usize,
    /// A tool call whose result did not come within this long is forgotten (zero: never).
    pub tool_call_timeout: Duration,
    /// Prices of `llm_client_cost_usd_total`.
    pub prices: PriceTable,
    /// The operator's labels (`--label-*`, `--service`), in rule order, after the built-in
    /// labels of every per-request family.
    pub user_labels: Vec<UserLabel>,
}

/// One user-defined label: its name, its cap and its admission rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLabel {
    pub name: String,
    /// Distinct values before `other`.
    pub max_values: usize,
    /// Its values come from the wire (a header, a body field): only a successful request admits
    /// a new one. Otherwise (a pod label, a service name) they come from this node or the
    /// operator and are admitted at once.
    pub from_wire: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_models: 32,
            max_peers: 32,
            max_processes: 32,
            max_tools: 64,
            tokens_per_second_window: Duration::from_secs(30),
            label_idle_timeout: Duration::from_secs(3600),
            max_pending_tool_calls: 64,
            tool_call_timeout: Duration::from_secs(600),
            prices: PriceTable::shipped(),
            user_labels: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering metric families: {0}")]
    Register(#[from] prometheus::Error),
}

/// Where an exchange was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeCtx {
    pub role: Role,
    /// The observed process's name (the `process` label, docs/attribution.md).
    pub process: String,
    /// Its kernel comm (≤ 15 bytes), to tell a reused pid when sampling memory.
    pub comm: String,
    /// Its container, pod and namespace label values (already bounded by the pipeline).
    pub place: crate::attribution::Place,
    /// Used to sample server memory; never a label value.
    pub pid: u32,
    /// The other end of the connection; a label value (`host:port`) in the client view only.
    pub peer: Option<std::net::SocketAddr>,
    /// MCP over stdio (pipes): there is no address; the client view's `peer` is `stdio`.
    pub stdio: bool,
    /// The `--label-pod-label` values of the observed process (after the request's own user
    /// labels, in label order).
    pub workload_labels: Vec<String>,
    /// The `provider` label of the client view ([`super::provider::provider`] of the request's
    /// host); one of [`super::provider::PROVIDERS`].
    pub provider: &'static str,
    /// The `server` label: the serving software (server view: the observed process; client view:
    /// the peer), `unknown` when not known (see `crate::servers`). Bounded by construction.
    pub server: &'static str,
}

/// Clock and `/proc` for scrape-time values; replaceable so tests need no sleeps or real pids.
#[derive(Clone)]
pub struct ScrapeEnv {
    /// Kernel monotonic time in ns — the same clock as the capture timestamps (`bpf_ktime_get_ns`
    /// is `CLOCK_MONOTONIC`), so a window over exchange timestamps can be read against it.
    pub now_ns: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Root of the proc filesystem to read server RSS from (`/host/proc` in some deployments).
    pub proc_root: PathBuf,
}

impl Default for ScrapeEnv {
    fn default() -> Self {
        ScrapeEnv {
            now_ns: Arc::new(monotonic_ns),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

impl std::fmt::Debug for ScrapeEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeEnv")
            .field("proc_root", &self.proc_root)
            .finish_non_exhaustive()
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// One request in flight: holds the gauge series it raised, and lowers them exactly once — in
/// [`Metrics::first_token`] (queue), [`Metrics::done`], or when dropped (connection evicted
/// without an end), so the gauges return to 0 whatever path the pipeline takes.
#[derive(Debug, Default)]
#[must_use = "dropping an InFlight immediately ends the request in the gauges"]
pub struct InFlight {
    active: Option<IntGauge>,
    queue: Option<IntGauge>,
    /// Label values held for this request (see `LabelCap::hold`), released in [`Metrics::done`].
    held: Option<Held>,
}

#[derive(Debug)]
struct Held {
    role: Role,
    model: String,
    peer: Option<String>,
    /// The user labels' values, in rule order.
    user: Vec<String>,
}

impl InFlight {
    /// Still waiting for its first token (counted in `llm_queue_size`).
    pub fn is_queued(&self) -> bool {
        self.queue.is_some()
    }

    /// Ends the request in the gauges without recording it (same as dropping it).
    pub fn abandon(self) {}
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(q) = self.queue.take() {
            q.dec();
        }
        if let Some(a) = self.active.take() {
            a.dec();
        }
    }
}

struct Caps {
    server_models: LabelCap,
    client_models: LabelCap,
    processes: LabelCap,
    peers: LabelCap,
    tools: LabelCap,
    /// One per user label, in rule order.
    user: Vec<UserCap>,
}

/// A user label's cap with what it needs to name and admit values.
struct UserCap {
    cap: LabelCap,
    label: UserLabel,
}

/// The agent's metrics. Owns its registry: several can coexist (tests), nothing is global.
pub struct Metrics {
    registry: Registry,
    families: Vec<FamilyInfo>,
    forgettable: Vec<Box<dyn Forget>>,
    self_metrics: SelfMetrics,
    server: ServerFamilies,
    client: ClientFamilies,
    mcp: McpFamilies,
    agent: AgentFamilies,
    /// Tool calls awaiting their result, per client process.
    tool_exec: Mutex<ToolExec>,
    prices: PriceTable,
    gpu: GpuFamilies,
    servers: ServerInfoFamilies,
    inventory: InventoryFamilies,
    /// GPU memory per serving unit from the last GPU sample (`llm_memory_usage_bytes{type="gpu"}`).
    gpu_memory: Mutex<std::collections::BTreeMap<UnitLabels, u64>>,
    caps: Caps,
    window: Mutex<TokenRateWindow>,
    rss: Mutex<RssTracker>,
    env: ScrapeEnv,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("families", &self.families.len())
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// `attach_mode` is the `llm_observer_build_info` label (how the probes were attached).
    pub fn new(cfg: MetricsConfig, attach_mode: &str) -> Result<Metrics, MetricsError> {
        Self::with_env(cfg, attach_mode, ScrapeEnv::default())
    }

    pub fn with_env(
        cfg: MetricsConfig,
        attach_mode: &str,
        env: ScrapeEnv,
    ) -> Result<Metrics, MetricsError> {
        let mut reg = Reg::new();
        let self_metrics = SelfMetrics::register(&mut reg, attach_mode)?;
        let user_names: Vec<String> = cfg.user_labels.iter().map(|l| l.name.clone()).collect();
        let server = ServerFamilies::register(&mut reg, &user_names)?;
        let client = ClientFamilies::register(&mut reg, &user_names)?;
        let mcp = McpFamilies::register(&mut reg)?;
        let agent = AgentFamilies::register(&mut reg, &user_names)?;
        let tool_timeout = u64::try_from(cfg.tool_call_timeout.as_nanos()).unwrap_or(u64::MAX);
        let idle = u64::try_from(cfg.label_idle_timeout.as_nanos()).unwrap_or(u64::MAX);
        let gpu = GpuFamilies::register(&mut reg)?;
        let servers = ServerInfoFamilies::register(&mut reg)?;
        let inventory = InventoryFamilies::register(&mut reg)?;
        Ok(Metrics {
            registry: reg.registry,
            families: reg.families,
            forgettable: reg.forgettable,
            self_metrics,
            server,
            client,
            mcp,
            agent,
            tool_exec: Mutex::new(ToolExec::new(cfg.max_pending_tool_calls, tool_timeout)),
            prices: cfg.prices,
            gpu,
            servers,
            inventory,
            gpu_memory: Mutex::default(),
            caps: Caps {
                server_models: LabelCap::new(cfg.max_models, idle),
                client_models: LabelCap::new(cfg.max_models, idle),
                processes: LabelCap::new(cfg.max_processes, idle),
                peers: LabelCap::new(cfg.max_peers, idle),
                tools: LabelCap::new(cfg.max_tools, idle),
                user: cfg
                    .user_labels
                    .into_iter()
                    .map(|label| UserCap {
                        cap: LabelCap::new(label.max_values, idle),
                        label,
                    })
                    .collect(),
            },
            window: Mutex::new(TokenRateWindow::new(cfg.tokens_per_second_window.as_secs())),
            rss: Mutex::new(RssTracker::new(env.proc_root.clone())),
            env,
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every registered family with its type, labels and help (present even before it has series).
    pub fn families(&self) -> &[FamilyInfo] {
        &self.families
    }

    /// The families the inventory poller sets (`crate::inventory`).
    pub fn inventory(&self) -> &InventoryFamilies {
        &self.inventory
    }

    pub fn self_metrics(&self) -> &SelfMetrics {
        &self.self_metrics
    }

    /// Text exposition format 0.0.4. Refreshes the scrape-time values first (tokens/s window,
    /// server RSS).
    pub fn encode(&self) -> String {
        self.refresh();
        let mut out = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            // Only reachable with inconsistent families, which registration rules out; a partial
            // page is still more useful to an operator than none.
            log::warn!("encoding metrics: {e}");
        }
        out
    }

    fn refresh(&self) {
        let now = (self.env.now_ns)();
        let rates = lock(&self.window).rates(now);
        for (key, rate) in rates {
            let labels: Vec<&str> = key.iter().map(String::as_str).collect();
            self.server
                .tokens_per_second
                .with_label_values(&labels)
                .set(rate);
        }
        let rss = lock(&self.rss).sample();
        // Reset so processes that exited drop out instead of freezing at their last value.
        self.server.memory.reset();
        let gpu = lock(&self.gpu_memory).clone();
        for (kind, values) in [("rss", rss), ("gpu", gpu)] {
            for (unit, bytes) in values {
                let [p, c, pod, ns] = &unit;
                self.server
                    .memory
                    .with_label_values(&[p, c, pod, ns, kind])
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
        }
    }

    /// The kernel's OOM killer chose an observed server process.
    pub fn oom_killed(&self, process: &str) {
        let now = (self.env.now_ns)();
        let process = self.caps.processes.label(Some(process), Admit::Yes, now);
        self.server.oom_kills.with_label_values(&[&process]).inc();
    }

    /// The GPU families, for the GPU sampler.
    pub fn gpu(&self) -> &GpuFamilies {
        &self.gpu
    }

    /// GPU memory per serving unit, from the GPU sampler's last tick.
    pub fn set_gpu_memory(&self, memory: std::collections::BTreeMap<UnitLabels, u64>) {
        *lock(&self.gpu_memory) = memory;
    }

    /// A process exited: stop sampling its memory.
    pub fn forget_pid(&self, pid: u32) {
        lock(&self.rss).forget(pid);
        lock(&self.tool_exec).forget(pid);
    }

    /// Lets go of label values no exchange used for the idle timeout, and removes their series
    /// (housekeeping calls this; see [`LabelCap`]).
    pub fn expire_labels(&self) {
        let now = (self.env.now_ns)();
        let scopes = [
            (&self.caps.server_models, "model", Scope::Server),
            (&self.caps.client_models, "model", Scope::Client),
            (&self.caps.processes, "process", Scope::Both),
            (&self.caps.peers, "peer", Scope::Both),
            (&self.caps.tools, "tool", Scope::Both),
        ];
        let user = self
            .caps
            .user
            .iter()
            .map(|u| (&u.cap, u.label.name.as_str(), Scope::Both));
        for (cap, label, scope) in scopes.into_iter().chain(user) {
            for value in cap.expire(now) {
                for f in &self.forgettable {
                    if scope.contains(&f.family_name()) {
                        f.forget(label, &value);
                    }
                }
            }
        }
    }

    fn model_cap(&self, role: Role) -> &LabelCap {
        match role {
            Role::Server => &self.caps.server_models,
            Role::Client => &self.caps.client_models,
        }
    }

    /// A peer is admitted once it answered anything at all (a server is really there), even an
    /// error: unlike models and tools, a caller cannot invent peers by naming them.
    fn peer_label(&self, ctx: &ExchangeCtx, ex: &Exchange, now: u64) -> String {
        if ctx.stdio {
            // Names no address: nothing to cap.
            return "stdio".to_string();
        }
        let admit = if ex.status.is_some() {
            Admit::Yes
        } else {
            Admit::No
        };
        self.caps
            .peers
            .label(ctx.peer.map(|p| p.to_string()).as_deref(), admit, now)
    }

    /// A recognised request was fully received: `llm_active_requests` and `llm_queue_size` (server
    /// view) or `llm_client_active_requests` (client view) go up until the returned [`InFlight`]
    /// is ended. MCP requests are not counted in these gauges.
    pub fn started(&self, ctx: &ExchangeCtx, summary: &RequestSummary) -> InFlight {
        if summary.api == Api::Mcp {
            return InFlight::default();
        }
        // Not answered yet: only values already admitted are named (see `LabelCap`).
        let now = (self.env.now_ns)();
        let model = self.model_cap(ctx.role).hold(summary.model.as_deref(), now);
        // Process names come from this node's kernel, not from the wire: any may be admitted.
        let process = self
            .caps
            .processes
            .label(Some(&ctx.process), Admit::Yes, now);
        let (api, op) = (summary.api.as_str(), summary.operation.as_str());
        let user = self.hold_user(&user_raw(&summary.user_labels, ctx), now);
        match ctx.role {
            Role::Server => {
                lock(&self.rss).register(ctx.pid, &ctx.comm, unit(&process, &ctx.place));
                let labels =
                    server_labels(api, op, &model, &process, &ctx.place, ctx.server, &user);
                let active = self.server.active.with_label_values(&labels);
                let queue = self.server.queue.with_label_values(&labels);
                active.inc();
                queue.inc();
                InFlight {
                    active: Some(active),
                    queue: Some(queue),
                    held: Some(Held {
                        role: ctx.role,
                        model,
                        peer: None,
                        user,
                    }),
                }
            }
            Role::Client => {
                let peer = self
                    .caps
                    .peers
                    .hold(ctx.peer.map(|p| p.to_string()).as_deref(), now);
                let labels = client_labels(
                    api,
                    op,
                    &model,
                    &process,
                    &ctx.place,
                    &peer,
                    ctx.provider,
                    ctx.server,
                    &user,
                );
                let active = self.client.active.with_label_values(&labels);
                active.inc();
                InFlight {
                    active: Some(active),
                    queue: None,
                    held: Some(Held {
                        role: ctx.role,
                        model,
                        peer: Some(peer),
                        user,
                    }),
                }
            }
        }
    }

    /// The first content-bearing response event arrived: leaves `llm_queue_size` (once).
    pub fn first_token(&self, inflight: &mut InFlight) {
        if let Some(q) = inflight.queue.take() {
            q.dec();
        }
    }

    /// The exchange ended (completed or failed): ends `inflight` in the gauges and updates every
    /// per-request family of the exchange's view, plus `llm_observer_exchanges_total`. An exchange
    /// the capture could not see whole goes only to `llm_observer_incomplete_exchanges_total`: its
    /// figures are partial, and it is not the observed server's failure.
    pub fn done(&self, inflight: Option<InFlight>, ctx: &ExchangeCtx, ex: &Exchange) {
        let held = inflight.and_then(|mut f| f.held.take());
        self.self_metrics
            .exchanges
            .with_label_values(&[ex.api.as_str()])
            .inc();
        if let Some(why) = ex.incomplete {
            self.self_metrics.incomplete(ctx.role, why);
        } else {
            let now = (self.env.now_ns)();
            // Only a success admits new label values, so junk requests cannot fill the caps.
            let admit = if succeeded(ex) { Admit::Yes } else { Admit::No };
            // Process names come from this node's kernel, not from the wire: any may be admitted.
            let process = self
                .caps
                .processes
                .label(Some(&ctx.process), Admit::Yes, now);
            if ex.api == Api::Mcp {
                self.record_mcp(ctx, &process, ex, admit, now);
            } else {
                self.record(ctx, &process, ex, admit, now);
            }
        }
        // After recording, so a success has admitted its values before the hold ends.
        if let Some(h) = held {
            self.release(h);
        }
    }

    /// Ends a started request that turned out to be no request (an internal hop): its gauges go
    /// back and its held label values are let go, recording nothing.
    pub fn discard(&self, mut inflight: InFlight) {
        let held = inflight.held.take();
        drop(inflight);
        if let Some(h) = held {
            self.release(h);
        }
    }

    /// An exchange that was a server's internal hop ended: counted as decoded and as a hop, in no
    /// request family (see `crate::servers::hops`).
    pub fn internal(&self, role: Role, ex: &Exchange, hop: crate::servers::hops::Hop) {
        self.self_metrics
            .exchanges
            .with_label_values(&[ex.api.as_str()])
            .inc();
        let view = match role {
            Role::Server => "server",
            Role::Client => "client",
        };
        self.servers
            .internal
            .with_label_values(&[view, hop.as_str()])
            .inc();
    }

    /// Lets go of the values held for a request that ended; an unproven value's in-flight series
    /// (all at 0 now) are removed, so junk leaves nothing behind.
    fn release(&self, h: Held) {
        let (cap, gauges): (&LabelCap, Vec<&dyn Forget>) = match h.role {
            Role::Server => (
                &self.caps.server_models,
                vec![&self.server.active, &self.server.queue],
            ),
            Role::Client => (&self.caps.client_models, vec![&self.client.active]),
        };
        if cap.release(&h.model) {
            for g in &gauges {
                g.forget("model", &h.model);
            }
        }
        if let Some(peer) = h.peer
            && self.caps.peers.release(&peer)
        {
            self.client.active.forget("peer", &peer);
        }
        for (u, value) in self.caps.user.iter().zip(&h.user) {
            if u.cap.release(value) {
                for g in &gauges {
                    g.forget(&u.label.name, value);
                }
            }
        }
    }

    /// The user labels' values of a request in flight: values already admitted, held until it
    /// ends (see `LabelCap::hold`); `""` where the request has none.
    fn hold_user(&self, raw: &[&str], now: u64) -> Vec<String> {
        self.user_values(raw, |u, v| u.cap.hold(Some(v), now))
    }

    /// The user labels' values of a finished request; a success admits new ones.
    fn label_user(&self, raw: &[&str], admit: Admit, now: u64) -> Vec<String> {
        self.user_values(raw, |u, v| {
            let admit = if u.label.from_wire { admit } else { Admit::Yes };
            u.cap.label(Some(v), admit, now)
        })
    }

    /// One value per user label: `name` of the raw value, or `""` where there is none.
    fn user_values(&self, raw: &[&str], name: impl Fn(&UserCap, &str) -> String) -> Vec<String> {
        self.caps
            .user
            .iter()
            .enumerate()
            .map(|(i, u)| match raw.get(i) {
                Some(v) if !v.is_empty() => name(u, v),
                _ => String::new(),
            })
            .collect()
    }

    fn record(&self, ctx: &ExchangeCtx, process: &str, ex: &Exchange, admit: Admit, now: u64) {
        // The requested model: what the client asked for, and what `started` labelled the gauges
        // with; the response's model (a dated snapshot, `:latest` tag) only when the request named
        // none.
        let model_raw = ex.request_model.as_deref().or(ex.response_model.as_deref());
        let model = self.model_cap(ctx.role).label(model_raw, admit, now);
        let (api, op) = (ex.api.as_str(), ex.operation.as_str());
        let tools = ex
            .tool_calls
            .iter()
            .map(|t| self.caps.tools.label(Some(t), admit, now));
        let user = self.label_user(&user_raw(&ex.params.user_labels, ctx), admit, now);
        match ctx.role {
            Role::Server => {
                lock(&self.rss).register(ctx.pid, &ctx.comm, unit(process, &ctx.place));
                let labels = server_labels(api, op, &model, process, &ctx.place, ctx.server, &user);
                self.server.record(&labels, ex);
                for tool in tools {
                    self.server.tool_call(&labels, &tool);
                }
                if let Some(n) = ex.tokens.completion.value {
                    let (start, end) = generation_interval(ex);
                    // `llm_tokens_per_second`'s labels: model, process and place.
                    let key = labels[2..7].iter().map(|v| v.to_string()).collect();
                    lock(&self.window).add(key, n, start, end);
                }
            }
            Role::Client => {
                let peer = self.peer_label(ctx, ex, now);
                let labels = client_labels(
                    api,
                    op,
                    &model,
                    process,
                    &ctx.place,
                    &peer,
                    ctx.provider,
                    ctx.server,
                    &user,
                );
                self.client.record(&labels, ex);
                for tool in tools {
                    self.client.tool_call(&labels, &tool);
                }
                self.tool_execution(ctx, process, ex, now);
                self.cost(ctx.provider, &labels, ex);
            }
        }
    }

    fn record_mcp(&self, ctx: &ExchangeCtx, process: &str, ex: &Exchange, admit: Admit, now: u64) {
        let info = ex.mcp.as_ref();
        let method = mcp_method(info.map(|m| m.method.as_str()).unwrap_or(""));
        // Only tools/call names a tool; prompt names and resource URIs (paths) are not labels.
        let tool = match info {
            Some(m) if m.method == "tools/call" => {
                self.caps.tools.label(m.name.as_deref(), admit, now)
            }
            _ => "none".to_string(),
        };
        let error = ex.error.map_or("none", |e| e.as_str());
        let duration = ex.timings.latency_ns().map(|ns| ns as f64 / 1e9);
        let crate::attribution::Place {
            container: c,
            pod,
            namespace: ns,
        } = &ctx.place;
        match ctx.role {
            Role::Server => {
                self.mcp
                    .server_requests
                    .with_label_values(&[process, c, pod, ns, method, tool.as_str(), error])
                    .inc();
                if let Some(d) = duration {
                    self.mcp
                        .server_duration
                        .with_label_values(&[process, c, pod, ns, method])
                        .observe(d);
                }
            }
            Role::Client => {
                let peer = self.peer_label(ctx, ex, now);
                self.mcp
                    .client_requests
                    .with_label_values(&[
                        process,
                        c,
                        pod,
                        ns,
                        peer.as_str(),
                        method,
                        tool.as_str(),
                        error,
                    ])
                    .inc();
                if let Some(d) = duration {
                    self.mcp
                        .client_duration
                        .with_label_values(&[process, c, pod, ns, peer.as_str(), method])
                        .observe(d);
                }
            }
        }
    }
}

/// Which view's families a label set belongs to (the self-metrics carry none of them).
#[derive(Debug, Clone, Copy)]
enum Scope {
    Server,
    Client,
    Both,
}

impl Scope {
    fn contains(self, family: &str) -> bool {
        let client = family.starts_with("llm_client_");
        let own = family.starts_with("llm_observer_");
        match self {
            Scope::Server => !client && !own,
            Scope::Client => client,
            Scope::Both => !own,
        }
    }
}

/// A request's user-label values in label order: its own (headers, body fields, from the
/// decoder), then its process's (pod labels, service, from attribution).
fn user_raw<'a>(request: &'a [String], ctx: &'a ExchangeCtx) -> Vec<&'a str> {
    request
        .iter()
        .chain(&ctx.workload_labels)
        .map(String::as_str)
        .collect()
}

/// `SERVER_LABELS` values, then the user labels' (`user`).
fn server_labels<'a>(
    api: &'a str,
    op: &'a str,
    model: &'a str,
    process: &'a str,
    p: &'a crate::attribution::Place,
    server: &'a str,
    user: &'a [String],
) -> Vec<&'a str> {
    [
        api,
        op,
        model,
        process,
        &p.container,
        &p.pod,
        &p.namespace,
        server,
    ]
    .into_iter()
    .chain(user.iter().map(String::as_str))
    .collect()
}

/// `CLIENT_LABELS` values, then the user labels' (`user`).
#[allow(
    clippy::too_many_arguments,
    reason = "one argument per label, in the order of CLIENT_LABELS"
)]
fn client_labels<'a>(
    api: &'a str,
    op: &'a str,
    model: &'a str,
    process: &'a str,
    p: &'a crate::attribution::Place,
    peer: &'a str,
    provider: &'a str,
    server: &'a str,
    user: &'a [String],
) -> Vec<&'a str> {
    [
        api,
        op,
        model,
        process,
        &p.container,
        &p.pod,
        &p.namespace,
        peer,
        provider,
        server,
    ]
    .into_iter()
    .chain(user.iter().map(String::as_str))
    .collect()
}

/// The memory family's unit labels of a server exchange.
fn unit(process: &str, p: &crate::attribution::Place) -> UnitLabels {
    [
        process.to_owned(),
        p.container.clone(),
        p.pod.clone(),
        p.namespace.clone(),
    ]
}

/// When an exchange's output tokens were generated: between the first and last token events of a
/// stream; somewhere between request start and response end otherwise.
fn generation_interval(ex: &Exchange) -> (u64, u64) {
    let t = &ex.timings;
    match (ex.stream, t.first_token_ns, t.last_token_ns) {
        (true, Some(first), Some(last)) => (first, last),
        _ => (
            t.request_start_ns,
            t.response_end_ns.unwrap_or(t.request_start_ns),
        ),
    }
}

/// Locks, ignoring poisoning: every guarded structure stays consistent between statements, and
/// metrics must keep flowing after an unrelated panic.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "agent_metrics_tests.rs"]
mod agent_tests;

/// The agent families' part of recording an exchange (cost, tool execution time).
#[path = "agent_record.rs"]
mod agent_record;
