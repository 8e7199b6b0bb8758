//! Part b: what a syscall costs with nothing attached, with the floor (an empty program on each of
//! the agent's tracepoints) and with the agent, alternated in rounds: untracked write/read pairs
//! (pipe, /dev/null + /dev/zero) and small sends on a tracked loopback HTTP connection. The floor
//! and agent conditions also take the same samples once more with the kernel's BPF statistics
//! on ([`probes`]): the time spent inside the programs themselves, per syscall.

use anyhow::Result;

use super::procs::{self, Agent, Bins};
use super::{Opts, median, probes};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cond {
    Bare,
    Floor,
    Agent,
}

const CONDS: [Cond; 3] = [Cond::Bare, Cond::Floor, Cond::Agent];

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    pipe_ns: f64,
    dev_ns: f64,
    unix_ns: f64,
    send_ns: f64,
}

/// Medians over rounds of the per-round differences against the bare run, in ns.
#[derive(Clone, Debug, Default)]
pub struct SyscallCost {
    pub bare_pipe_ns: f64,
    pub bare_dev_ns: f64,
    pub bare_send_ns: f64,
    pub floor_pipe_ns: f64,
    pub floor_dev_ns: f64,
    pub floor_send_ns: f64,
    pub agent_pipe_ns: f64,
    pub agent_dev_ns: f64,
    pub agent_send_ns: f64,
    /// sendmsg + recvmsg (with room for a passed fd) on an untracked unix socket.
    pub bare_unix_ns: f64,
    pub floor_unix_ns: f64,
    pub agent_unix_ns: f64,
    /// ns inside the programs per untracked write or read (enter + exit), from the kernel's BPF
    /// statistics: the agent's and the floor's empty programs.
    pub agent_probe_untracked_ns: f64,
    pub floor_probe_untracked_ns: f64,
    /// The same per captured small send.
    pub agent_probe_send_ns: f64,
    pub floor_probe_send_ns: f64,
    /// Other processes' BPF programs seen during bare runs (see [`procs::foreign_bpf`]).
    pub foreign_bpf: Vec<String>,
}

/// ns inside one condition's programs per syscall, from its BPF statistics.
#[derive(Clone, Copy, Debug, Default)]
struct ProbeSample {
    untracked_ns: f64,
    send_ns: f64,
}

/// The agent's programs a 1-byte write/read pair runs (names as the kernel truncates them;
/// `sys_enter_writev` is also `sys_enter_write`, and never runs for `write`).
const UNTRACKED_PROGS: &[&str] = &[
    "sys_enter_write",
    "sys_exit_write",
    "sys_enter_read",
    "sys_exit_read",
];
const SEND_PROGS: &[&str] = &["sys_enter_write", "sys_exit_write"];

/// `holder`: the process holding the programs; `agent`: whether they are the agent's (else the
/// floor's, all alike and empty, so every one counts).
fn probe_sample(bins: &Bins, opts: &Opts, holder: u32, agent: bool) -> Result<ProbeSample> {
    let _on = probes::enable()?;
    let names = probes::names()?;
    let drive = |what: &str, iters: u64| {
        procs::drive(
            bins,
            &[
                what.into(),
                "--iters".into(),
                iters.to_string(),
                "--reps".into(),
                "3".into(),
            ],
        )
    };
    let a = probes::snapshot(holder)?;
    drive("syscalls", opts.syscall_iters)?;
    let b = probes::snapshot(holder)?;
    drive("sends", opts.send_iters)?;
    let c = probes::snapshot(holder)?;
    let pick = |list: &'static [&'static str]| if agent { list } else { &[] };
    // Each syscall runs an enter and an exit program.
    Ok(ProbeSample {
        untracked_ns: 2.0 * probes::per_run(&a, &b, &names, pick(UNTRACKED_PROGS)),
        send_ns: 2.0 * probes::per_run(&b, &c, &names, pick(SEND_PROGS)),
    })
}

fn sample(bins: &Bins, opts: &Opts) -> Result<Sample> {
    let s = procs::drive(
        bins,
        &[
            "syscalls".into(),
            "--iters".into(),
            opts.syscall_iters.to_string(),
            "--reps".into(),
            "3".into(),
        ],
    )?;
    let t = procs::drive(
        bins,
        &[
            "sends".into(),
            "--iters".into(),
            opts.send_iters.to_string(),
            "--reps".into(),
            "3".into(),
        ],
    )?;
    let f = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_f64);
    Ok(Sample {
        pipe_ns: f(&s, "pipe_ns").unwrap_or(0.0),
        dev_ns: f(&s, "dev_ns").unwrap_or(0.0),
        unix_ns: f(&s, "unix_msg_ns").unwrap_or(0.0),
        send_ns: f(&t, "send_ns").unwrap_or(0.0),
    })
}

pub fn run(bins: &Bins, opts: &Opts) -> Result<SyscallCost> {
    let mut by: [Vec<Sample>; 3] = Default::default();
    let mut inside: [Vec<ProbeSample>; 3] = Default::default();
    let mut foreign_bpf = Vec::new();
    for round in 0..opts.rounds {
        for k in 0..CONDS.len() {
            let cond = CONDS[(k + round) % CONDS.len()];
            if cond == Cond::Bare {
                foreign_bpf.extend(procs::foreign_bpf());
            }
            // Held (attached) for this sample only.
            let floor = (cond == Cond::Floor)
                .then(|| procs::floor(bins))
                .transpose()?;
            let agent = (cond == Cond::Agent)
                .then(|| Agent::start(bins))
                .transpose()?;
            let s = sample(bins, opts)?;
            let holder = floor
                .as_ref()
                .map(procs::Proc::pid)
                .or(agent.as_ref().map(Agent::pid));
            if let Some(pid) = holder {
                let p = probe_sample(bins, opts, pid, agent.is_some())?;
                eprintln!(
                    "bench: round {} {:<5?} inside the programs: {:>5.0} ns per untracked syscall, {:>5.0} ns per captured send",
                    round + 1,
                    cond,
                    p.untracked_ns,
                    p.send_ns
                );
                inside[cond as usize].push(p);
            }
            eprintln!(
                "bench: round {} {:<5?} pipe {:>6.0} ns  dev {:>6.0} ns  unix msg {:>6.0} ns  tracked send {:>6.0} ns",
                round + 1,
                cond,
                s.pipe_ns,
                s.dev_ns,
                s.unix_ns,
                s.send_ns
            );
            by[cond as usize].push(s);
        }
    }
    let diff = |c: Cond, f: fn(&Sample) -> f64| {
        median(
            by[c as usize]
                .iter()
                .zip(&by[Cond::Bare as usize])
                .map(|(x, b)| f(x) - f(b))
                .collect(),
        )
    };
    let bare = |f: fn(&Sample) -> f64| median(by[Cond::Bare as usize].iter().map(f).collect());
    let probe =
        |c: Cond, f: fn(&ProbeSample) -> f64| median(inside[c as usize].iter().map(f).collect());
    Ok(SyscallCost {
        bare_pipe_ns: bare(|s| s.pipe_ns),
        bare_dev_ns: bare(|s| s.dev_ns),
        bare_send_ns: bare(|s| s.send_ns),
        floor_pipe_ns: diff(Cond::Floor, |s| s.pipe_ns),
        floor_dev_ns: diff(Cond::Floor, |s| s.dev_ns),
        floor_send_ns: diff(Cond::Floor, |s| s.send_ns),
        agent_pipe_ns: diff(Cond::Agent, |s| s.pipe_ns),
        agent_dev_ns: diff(Cond::Agent, |s| s.dev_ns),
        agent_send_ns: diff(Cond::Agent, |s| s.send_ns),
        bare_unix_ns: bare(|s| s.unix_ns),
        floor_unix_ns: diff(Cond::Floor, |s| s.unix_ns),
        agent_unix_ns: diff(Cond::Agent, |s| s.unix_ns),
        agent_probe_untracked_ns: probe(Cond::Agent, |p| p.untracked_ns),
        floor_probe_untracked_ns: probe(Cond::Floor, |p| p.untracked_ns),
        agent_probe_send_ns: probe(Cond::Agent, |p| p.send_ns),
        floor_probe_send_ns: probe(Cond::Floor, |p| p.send_ns),
        foreign_bpf,
    })
}
