//! The poller: every interval, each known server's endpoints are asked (servers in parallel, one
//! server's endpoints in order), their answers read ([`super::parse`]) and turned into series. A
//! round replaces the server's previous series whole: a model it no longer lists, or an endpoint
//! that stopped answering, leaves no stale value behind.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use llm_observer_decode::llm::fingerprint::ServerKind;
use prometheus::GaugeVec;

use super::fetch;
use super::parse::{self, LoadReading, ModelReading, Reading, Slots};
use super::{SharedTargets, Target, TargetKey};
use crate::sinks::inventory_families::InventoryFamilies;
use crate::sinks::metrics::Metrics;

/// Poller settings (`--inventory-interval`, `--inventory-timeout-ms`).
#[derive(Debug, Clone)]
pub struct PollConfig {
    pub interval: Duration,
    pub timeout: Duration,
    /// Where /proc is (the host's, in a container: `--proc-root`).
    pub proc_root: PathBuf,
}

/// The families a series can belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    Info,
    Size,
    Vram,
    Context,
    Expires,
    Slots,
    Queue,
    Running,
    KvCache,
}

fn family(f: &InventoryFamilies, which: Family) -> &GaugeVec {
    match which {
        Family::Info => &f.info,
        Family::Size => &f.size,
        Family::Vram => &f.vram,
        Family::Context => &f.context,
        Family::Expires => &f.expires,
        Family::Slots => &f.slots,
        Family::Queue => &f.queue,
        Family::Running => &f.running,
        Family::KvCache => &f.kv_cache,
    }
}

/// One round's series of one server: family and label values → value.
type Series = BTreeMap<(Family, Vec<String>), f64>;

/// What one server's answers in one round add up to.
#[derive(Debug, Default)]
struct Round {
    models: Vec<ModelReading>,
    slots: Slots,
    load: Vec<LoadReading>,
}

impl Round {
    fn add(&mut self, r: Reading) {
        match r {
            Reading::Models(m) => self.models.extend(m),
            Reading::Slots(s) => {
                self.slots.total = s.total.or(self.slots.total);
                self.slots.busy = s.busy.or(self.slots.busy);
            }
            Reading::Props(m, s) => {
                self.models.extend(m);
                self.slots.total = self.slots.total.or(s.total);
            }
            Reading::Load(l) => self.load.extend(l),
        }
    }

    /// The series, labelled for `t`.
    fn series(&self, t: &Target) -> Series {
        let place = [
            t.kind.as_str().to_owned(),
            t.process.clone(),
            t.place.container.clone(),
            t.place.pod.clone(),
            t.place.namespace.clone(),
        ];
        let model_labels = |model: &str| -> Vec<String> {
            let mut l = vec![place[0].clone(), model.to_owned()];
            l.extend(place[1..].iter().cloned());
            l
        };
        let mut out = Series::new();
        for m in &self.models {
            let mut info = model_labels(&m.model);
            info.extend([
                m.family.clone(),
                m.parameter_size.clone(),
                m.quantization.clone(),
            ]);
            out.insert((Family::Info, info), 1.0);
            for (f, v) in [
                (Family::Size, m.size_bytes),
                (Family::Vram, m.vram_bytes),
                (Family::Context, m.context_length),
                (Family::Expires, m.expires_unix),
            ] {
                if let Some(v) = v {
                    out.insert((f, model_labels(&m.model)), v);
                }
            }
        }
        if let (Some(total), busy) = (self.slots.total, self.slots.busy) {
            let busy = busy.unwrap_or(0).min(total);
            for (state, v) in [("busy", busy), ("idle", total - busy)] {
                let mut l = place.to_vec();
                l.push(state.to_owned());
                out.insert((Family::Slots, l), v as f64);
            }
        }
        // Metrics that name no model belong to the one model the server listed.
        let only_model = match self.models.as_slice() {
            [m] => m.model.as_str(),
            _ => "",
        };
        for l in &self.load {
            let model = if l.model.is_empty() {
                only_model
            } else {
                &l.model
            };
            for (f, v) in [
                (Family::Queue, l.queue),
                (Family::Running, l.running),
                (Family::KvCache, l.kv_cache),
            ] {
                if let Some(v) = v {
                    out.insert((f, model_labels(model)), v);
                }
            }
        }
        out
    }
}

/// `/proc/<pid>/ns/net` when the server's network namespace is not the agent's.
fn netns_of(proc_root: &Path, pid: u32) -> Option<PathBuf> {
    let theirs = proc_root.join(pid.to_string()).join("ns/net");
    let ours = proc_root.join("self/ns/net");
    let (a, b) = (
        std::fs::read_link(&theirs).ok()?,
        std::fs::read_link(ours).ok()?,
    );
    (a != b).then_some(theirs)
}

/// Asks one server every endpoint of its kind.
async fn poll_one(
    key: TargetKey,
    t: Target,
    cfg: Arc<PollConfig>,
    metrics: Arc<Metrics>,
) -> (TargetKey, Series) {
    let netns = netns_of(&cfg.proc_root, key.pid);
    let mut round = Round::default();
    let polls = &metrics.inventory().polls;
    for &ep in parse::endpoints(t.kind) {
        let result = match fetch::get(t.addr, netns.clone(), ep.path(), cfg.timeout).await {
            Ok(body) => match parse::parse(t.kind, ep, &body) {
                Ok(r) => {
                    round.add(r);
                    "ok"
                }
                Err(e) => {
                    log::debug!(
                        "inventory: {} {}{}: {e}",
                        t.kind.as_str(),
                        t.addr,
                        ep.path()
                    );
                    "bad_body"
                }
            },
            Err(e) => {
                log::debug!(
                    "inventory: {} {}{}: {e}",
                    t.kind.as_str(),
                    t.addr,
                    ep.path()
                );
                e.result()
            }
        };
        polls
            .with_label_values(&[t.kind.as_str(), ep.as_str(), result])
            .inc();
    }
    (key, round.series(&t))
}

/// Sets `now`'s series and removes those of `before` it no longer has.
fn apply(f: &InventoryFamilies, before: Option<&Series>, now: &Series) {
    if let Some(before) = before {
        for (fam, labels) in before.keys() {
            if !now.contains_key(&(*fam, labels.clone())) {
                let l: Vec<&str> = labels.iter().map(String::as_str).collect();
                let _ = family(f, *fam).remove_label_values(&l);
            }
        }
    }
    for ((fam, labels), v) in now {
        let l: Vec<&str> = labels.iter().map(String::as_str).collect();
        family(f, *fam).with_label_values(&l).set(*v);
    }
}

/// Pre-creates the self-metric's series of each server kind's endpoints at 0.
fn precreate(f: &InventoryFamilies) {
    for kind in ServerKind::ALL {
        for ep in parse::endpoints(kind) {
            f.polls
                .with_label_values(&[kind.as_str(), ep.as_str(), "ok"]);
        }
    }
}

/// Runs until the runtime ends.
pub async fn run(targets: SharedTargets, metrics: Arc<Metrics>, cfg: PollConfig) {
    let cfg = Arc::new(cfg);
    precreate(metrics.inventory());
    let mut written: HashMap<TargetKey, Series> = HashMap::new();
    let mut announced: HashMap<TargetKey, SocketAddr> = HashMap::new();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snapshot = targets.lock().unwrap_or_else(|e| e.into_inner()).snapshot();
        // Servers gone since the last round: their series go with them.
        let live: std::collections::HashSet<TargetKey> = snapshot.iter().map(|(k, _)| *k).collect();
        written.retain(|k, series| {
            let keep = live.contains(k);
            if !keep {
                apply(metrics.inventory(), Some(series), &Series::new());
            }
            keep
        });
        announced.retain(|k, _| live.contains(k));
        let mut set = tokio::task::JoinSet::new();
        for (key, t) in snapshot {
            if parse::endpoints(t.kind).is_empty() {
                // Its kind firmed up to one with nothing to ask (a gateway): what an earlier
                // decision's endpoints said must not stay.
                if let Some(old) = written.remove(&key) {
                    apply(metrics.inventory(), Some(&old), &Series::new());
                }
                continue;
            }
            if announced.insert(key, t.addr).is_none() {
                log::info!(
                    "inventory: polling {} at {} (pid {}) every {:?}",
                    t.kind.as_str(),
                    t.addr,
                    key.pid,
                    cfg.interval
                );
            }
            set.spawn(poll_one(key, t, cfg.clone(), metrics.clone()));
        }
        while let Some(done) = set.join_next().await {
            let Ok((key, series)) = done else { continue };
            // A server that exited during the round is not written back.
            if !targets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&key)
            {
                if let Some(old) = written.remove(&key) {
                    apply(metrics.inventory(), Some(&old), &Series::new());
                }
                continue;
            }
            apply(metrics.inventory(), written.get(&key), &series);
            written.insert(key, series);
        }
    }
}

#[cfg(test)]
#[path = "poll_tests.rs"]
mod tests;
