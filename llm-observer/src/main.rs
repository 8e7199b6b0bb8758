//! `llm-observer`: wiring only — configuration → capture → connections → decoders → sinks.

use std::{io::Write, sync::Arc, time::Duration};

use anyhow::Context as _;
use llm_observer::{
    attribution::{self, names::Names},
    capture::{ATTACH_MODE, Capture, CaptureConfig, procfs, system},
    cli::{self, AttributionArgs, CaptureArgs, Command, RunArgs, TraceArgs},
    conn::{ConnTable, ConnTableConfig},
    inventory, pipeline,
    sinks::{
        event_log::EventLog,
        gpu_sampler,
        http::MetricsServer,
        metrics::{Metrics, MetricsConfig},
        metrics_sink::MetricsSink,
        otlp::{OtlpConfig, OtlpOutput, config::OtlpSettings, export},
        record::{RecordOutput, RecordSink},
        tee::Tee,
        trace_sink::TraceSink,
        wallclock::WallClock,
        web_config::WebConfig,
    },
};
use llm_observer_decode::{
    Limits,
    labels::{LabelRules, NO_LABELS},
};

fn main() -> std::process::ExitCode {
    let parsed = cli::parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit());
    let cli = &parsed.cli;
    env_logger::Builder::new()
        .parse_filters(&cli.log)
        .format_target(false)
        .init();
    let result = match &cli.command {
        Some(Command::Check) => return check(),
        Some(Command::Config) => {
            print!("{}", cli::effective_settings(&parsed));
            return std::process::ExitCode::SUCCESS;
        }
        Some(Command::Top(t)) => llm_observer::top::run(t),
        Some(Command::Trace(t)) => runtime().and_then(|rt| rt.block_on(trace(&cli.capture, t))),
        Some(Command::Run) | None => {
            runtime().and_then(|rt| rt.block_on(run(&cli.run, &cli.capture, &cli.attribution)))
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llm-observer: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")
}

fn capture_config(a: &CaptureArgs) -> CaptureConfig {
    CaptureConfig {
        ring_bytes: a.ring_bytes,
        max_bytes_per_call: a.max_capture_bytes,
        target_pid: a.pid,
        ignore_pid: Some(procfs::own_pid(&a.proc_root)),
        all_protocols: a.all_protocols,
        poll_interval: Duration::from_millis(a.ring_poll_ms),
        idle_poll_interval: Duration::from_millis(a.ring_idle_poll_ms),
        tls: !a.no_tls,
    }
}

fn table_config(a: &CaptureArgs, labels: &'static LabelRules) -> ConnTableConfig {
    ConnTableConfig {
        limits: Limits {
            max_body_bytes: a.max_body_bytes,
            labels,
            ..Limits::default()
        },
        max_connections: a.max_connections,
        max_buffered_bytes: a.max_buffered_bytes,
        idle_timeout_ns: a.idle_timeout.saturating_mul(1_000_000_000),
        ports: a.port.clone(),
        proc_root: a.proc_root.clone(),
    }
}

/// `labels`: the user-defined label rules the decoders read off each request.
fn start_capture(
    a: &CaptureArgs,
    labels: &'static LabelRules,
) -> anyhow::Result<(Capture, ConnTable)> {
    let mut capture = Capture::load(&capture_config(a))?;
    log::info!(
        "attached {} tracepoints (attach mode: {ATTACH_MODE})",
        capture.attached().len()
    );
    // Before /metrics is served (and before the sockets are seeded, whose log line tests take as
    // the capture being ready): a running process's next SSL call is captured once it is.
    capture.scan_tls(&a.proc_root);
    let mut table = ConnTable::new(table_config(a, labels));
    pipeline::seed_existing(&mut capture, &mut table, &a.proc_root, a.pid);
    Ok((capture, table))
}

/// Registers the SIGTERM and SIGINT handlers now and returns what resolves on either. Called
/// before the capture starts: from the "serving /metrics" line on, a stop is a clean shutdown. A
/// handler registered only when the returned future is first polled (as `tokio::signal::ctrl_c`
/// does) left a window after that line in which SIGTERM's default action killed the agent.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    if let Err(e) = term.as_ref().and(int.as_ref()) {
        log::warn!("cannot handle SIGTERM/SIGINT ({e}): a stop will not detach cleanly");
    }
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait(int) => {}
            () = wait(term) => {}
        }
        log::info!("shutting down");
    }
}

/// Starts the container and pod metadata sources in the background; each logs whether it is used.
fn start_sources(a: &AttributionArgs) -> std::sync::Arc<Names> {
    let names = Names::new();
    let socket = a.host_root.join(
        a.docker_socket
            .strip_prefix("/")
            .unwrap_or(&a.docker_socket),
    );
    tokio::spawn(attribution::docker::run(socket, names.clone()));
    let in_cluster = std::env::var("KUBERNETES_SERVICE_HOST").ok().map(|h| {
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        format!("https://{h}:{port}")
    });
    let node = a
        .node_name
        .clone()
        .or_else(|| std::env::var("NODE_NAME").ok());
    match (a.kube_api_url.clone().or(in_cluster), node) {
        (Some(url), Some(node)) => {
            let cfg = attribution::kube::KubeConfig {
                url,
                ca_file: a.kube_ca_file.clone(),
                node,
                token_file: Some(a.kube_token_file.clone()),
            };
            tokio::spawn(attribution::kube::run(cfg, names.clone()));
        }
        (Some(_), None) => log::info!(
            "pod names: Kubernetes API not used (no --node-name / NODE_NAME); pods are named by uid"
        ),
        (None, _) => {
            log::debug!("pod names: not in a Kubernetes cluster (no --kube-api-url)");
        }
    }
    names
}

/// `--prices FILE` (it replaces the shipped table), checked before anything is loaded.
fn prices(
    a: &llm_observer::cli::AgentArgs,
) -> anyhow::Result<llm_observer::sinks::prices::PriceTable> {
    use llm_observer::sinks::prices::PriceTable;
    let table = match &a.prices {
        Some(path) => PriceTable::load(path).context("--prices")?,
        None => PriceTable::shipped(),
    };
    log::info!(
        "prices: {} models{}{}",
        table.len(),
        table
            .as_of
            .as_deref()
            .map(|d| format!(" as of {d}"))
            .unwrap_or_default(),
        table
            .source
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default()
    );
    Ok(table)
}

async fn run(r: &RunArgs, a: &CaptureArgs, attr: &AttributionArgs) -> anyhow::Result<()> {
    let user = cli::labels::user_labels(
        &r.label_header,
        &r.label_body_field,
        &r.label_pod_label,
        &r.service,
        r.max_label_values,
    )
    .map_err(|e| anyhow::anyhow!("user labels (--label-*, --service): {e}"))?;
    // Read by every connection's decoder for the agent's whole life: made once, never freed.
    let rules: &'static LabelRules = Box::leak(Box::new(user.request));
    let (pod_keys, services) = (user.pod_keys, user.services);
    let cfg = MetricsConfig {
        user_labels: user.labels,
        max_models: r.max_models,
        max_peers: r.max_peers,
        max_processes: r.max_processes,
        tokens_per_second_window: Duration::from_secs(r.tokens_per_second_window),
        label_idle_timeout: Duration::from_secs(r.label_idle_timeout),
        max_pending_tool_calls: r.agent.max_pending_tool_calls,
        tool_call_timeout: Duration::from_secs(r.agent.tool_call_timeout),
        prices: prices(&r.agent)?,
        ..MetricsConfig::default()
    };
    // The web config is checked before anything is loaded, so a bad file fails at once.
    let web = match &r.web_config_file {
        Some(path) => {
            let cfg = WebConfig::load(path)
                .with_context(|| format!("--web.config.file {}", path.display()))?;
            for w in &cfg.warnings {
                log::warn!("--web.config.file {}: {w}", path.display());
            }
            Some(cfg)
        }
        None => None,
    };
    let metrics = Arc::new(Metrics::new(cfg, ATTACH_MODE)?);
    let (outputs, exporter) = record_outputs(r, &metrics)?;
    let mut server = MetricsServer::bind(r.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--metrics-addr)", r.metrics_addr))?;
    if let Some(cfg) = &web {
        server = server.with_web_config(cfg).context("--web.config.file")?;
    }
    let scheme = if server.is_tls() { "https" } else { "http" };
    let (local, ready) = (server.local_addr(), server.readiness());
    // Served from the start so /healthz answers while the programs load; /readyz waits for them.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut rx = stop_rx.clone();
    let http = tokio::spawn(server.run(metrics.clone(), async move {
        let _ = rx.changed().await;
    }));
    let stop = shutdown_signal();
    let result = match start_capture(a, rules) {
        Ok((capture, table)) => {
            log::info!("serving /metrics on {scheme}://{local}/metrics");
            ready.set(true);
            let names = start_sources(attr);
            let names_for_records = names.clone();
            let mut sink =
                MetricsSink::with_names(metrics.clone(), names.clone(), attr.max_containers)
                    .with_pod_labels(pod_keys)
                    .with_services(services);
            if attr.gpu_interval > 0 {
                gpu_sampler::start(
                    attr.nvml_lib.as_deref(),
                    Duration::from_secs(attr.gpu_interval),
                    sink.serving(),
                    names,
                    &a.proc_root,
                    metrics.clone(),
                );
            }
            if attr.inventory_interval > 0 && !attr.no_inventory {
                tokio::spawn(inventory::poll::run(
                    sink.inventory_targets(),
                    metrics.clone(),
                    inventory::poll::PollConfig {
                        interval: Duration::from_secs(attr.inventory_interval),
                        timeout: Duration::from_millis(attr.inventory_timeout_ms.max(1)),
                        proc_root: a.proc_root.clone(),
                    },
                ));
            }
            let records = (!outputs.is_empty()).then(|| {
                RecordSink::new(
                    WallClock::sample(),
                    names_for_records,
                    outputs,
                    a.proc_root.clone(),
                )
            });
            match records {
                Some(mut records) => {
                    let mut tee = Tee::new(vec![&mut sink, &mut records]);
                    pipeline::run(capture, table, &mut tee, Some(metrics), stop).await
                }
                None => pipeline::run(capture, table, &mut sink, Some(metrics), stop).await,
            }
        }
        Err(e) => {
            drop(outputs);
            Err(e)
        }
    };
    ready.set(false);
    // The record sink (the queue's sender) is gone: the exporter sends what is queued and ends.
    if let Some(e) = exporter
        && tokio::time::timeout(Duration::from_secs(15), e)
            .await
            .is_err()
    {
        log::warn!("OTLP: spans still queued at exit were not exported");
    }
    let _ = stop_tx.send(true);
    let _ = http.await;
    result
}

type Outputs = Vec<Box<dyn RecordOutput + Send>>;

/// The per-exchange record outputs that were asked for (`--events-log`, OTLP) and the OTLP
/// exporter task; set up before the capture starts, so a bad setting fails at once.
fn record_outputs(
    r: &RunArgs,
    metrics: &Metrics,
) -> anyhow::Result<(Outputs, Option<tokio::task::JoinHandle<()>>)> {
    let mut outputs: Outputs = Vec::new();
    if let Some(path) = &r.events_log {
        let dropped = metrics
            .self_metrics()
            .dropped
            .with_label_values(&["events_log"]);
        let log = EventLog::open(path, r.events_log_max_bytes)
            .with_context(|| format!("--events-log {}", path.display()))?
            .with_dropped(dropped);
        log::info!("writing one line per exchange to {}", path.display());
        outputs.push(Box::new(log));
    }
    let settings = OtlpSettings {
        protocol: r.otlp_protocol.clone(),
        endpoint: r.otlp_endpoint.clone(),
        headers: r.otlp_header.clone(),
        timeout_ms: r.otlp_timeout_ms,
        queue_spans: r.otlp_queue_spans,
        batch_spans: r.otlp_batch_spans,
        flush_ms: r.otlp_flush_ms,
    };
    let mut exporter = None;
    if let Some(cfg) = OtlpConfig::resolve(&settings, |k| std::env::var(k).ok())? {
        let dropped = |stage| metrics.self_metrics().dropped.with_label_values(&[stage]);
        let (tx, rx) = tokio::sync::mpsc::channel(cfg.queue_spans);
        log::info!(
            "exporting one OTLP span per exchange to {} ({})",
            cfg.target(),
            cfg.protocol.as_str()
        );
        let counters = export::ExportCounters {
            failed: dropped("otlp_export"),
        };
        exporter = Some(tokio::spawn(export::run(cfg, rx, counters)));
        outputs.push(Box::new(OtlpOutput::new(tx, dropped("otlp_queue"))));
    }
    Ok((outputs, exporter))
}

async fn trace(a: &CaptureArgs, t: &TraceArgs) -> anyhow::Result<()> {
    let signalled = shutdown_signal();
    let (capture, table) = start_capture(a, &NO_LABELS)?;
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let mut sink = TraceSink::new(std::io::stdout().lock(), t.raw, t.show_secrets)
        .with_limit(t.count, done_tx);
    let stop = async move {
        tokio::select! {
            () = signalled => {}
            // Only a sent value ends the trace (the sender lives as long as the sink).
            Ok(()) = done_rx.changed() => {}
        }
    };
    pipeline::run(capture, table, &mut sink, None, stop).await
}

fn check() -> std::process::ExitCode {
    let mut out = std::io::stdout().lock();
    let items = system::check_items();
    let mut fatal = false;
    for i in &items {
        let mark = if i.ok {
            "ok  "
        } else if i.required {
            "FAIL"
        } else {
            "--  "
        };
        fatal |= i.required && !i.ok;
        let _ = writeln!(out, "{mark} {:<11} {}", i.name, i.detail);
    }
    if fatal {
        let _ = writeln!(out, "capture cannot work here: fix the FAIL lines above");
        return std::process::ExitCode::FAILURE;
    }
    // The strongest check: load and attach for real, then detach.
    match Capture::load(&CaptureConfig::default()) {
        Ok(c) => {
            let _ = writeln!(
                out,
                "ok   programs    loaded and attached {} tracepoints",
                c.attached().len()
            );
            let _ = writeln!(out, "attach mode: {ATTACH_MODE}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(out, "FAIL programs    {e}");
            let _ = writeln!(out, "capture cannot work here");
            std::process::ExitCode::FAILURE
        }
    }
}
