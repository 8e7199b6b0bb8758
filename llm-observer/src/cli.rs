//! Command line: every tunable is a flag with an `LLM_OBSERVER_*` environment twin and a key of
//! the `--config` file ([`config_file`]); precedence flag > environment > file > default.

pub mod config_file;
mod effective;
pub mod labels;

use std::{ffi::OsString, net::SocketAddr, path::PathBuf};

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

pub use effective::effective_settings;

/// eBPF node agent: exact per-request LLM metrics (requests, latency, time to first token, tokens)
/// from kernel-captured traffic of LLM servers and agents, served for Prometheus. No client,
/// server or URL changes. Needs root, or CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and (as non-root uid)
/// CAP_DAC_READ_SEARCH: see docs/security.md.
#[derive(Debug, Parser)]
#[command(name = "llm-observer", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,

    #[command(flatten)]
    pub capture: CaptureArgs,

    #[command(flatten)]
    pub attribution: AttributionArgs,

    /// Log filter (error, warn, info, debug, trace, or env_logger syntax).
    #[arg(long, env = "LLM_OBSERVER_LOG", default_value = "info", global = true)]
    pub log: String,

    /// TOML file setting any flag by its long name (`metrics-addr = "0.0.0.0:9202"`); flags and
    /// environment variables override it. See docs/configuration.md.
    #[arg(long, env = "LLM_OBSERVER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

/// Parses `args` (the program name first), folding in the `--config` file when one is named.
/// The file is checked whole first; any error names its line and nothing of it is applied.
pub fn parse_from<I, T>(args: I) -> Result<Parsed, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // First pass without the file, only to learn its name (no flag is required, so this fails
    // only when the command line itself is wrong — which it then reports).
    let first = Cli::try_parse_from(&args)?;
    let mut cmd = Cli::command();
    let mut file = None;
    if let Some(path) = &first.config {
        let loaded = config_file::ConfigFile::load(path)
            .and_then(|f| Ok((f.apply(cmd.clone())?, f)))
            .map_err(|e| cmd.error(clap::error::ErrorKind::ValueValidation, e))?;
        cmd = loaded.0;
        file = Some(loaded.1);
    }
    let matches = cmd.clone().try_get_matches_from(&args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(Parsed {
        cli,
        cmd,
        matches,
        file,
    })
}

/// A parsed command line with what it was parsed from (for `llm-observer config`).
pub struct Parsed {
    pub cli: Cli,
    /// The command definition with the file's values as defaults.
    pub cmd: clap::Command,
    pub matches: clap::ArgMatches,
    pub file: Option<config_file::ConfigFile>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture and serve /metrics (the default when no command is given).
    Run,
    /// Print what this kernel supports and which attach mode will be used; exit non-zero with the
    /// reason when capture cannot work here.
    Check,
    /// Print one JSON line per decoded exchange (or, with --raw, per captured event): a tcpdump
    /// for LLM traffic.
    Trace(TraceArgs),
    /// Print the settings the agent would run with (flags > environment > --config file >
    /// defaults), one TOML line each with where it came from; a valid --config file.
    Config,
    /// A live terminal view of a running agent, read from its /metrics: per server and model
    /// (requests, req/s, TTFT p50/p95, tokens/s, active, queue, errors) and per agent process
    /// (calls, tokens, cost, tool calls). Keys: q quit, s/a sort column, r reverse.
    Top(TopArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Address of the Prometheus endpoint (/metrics).
    #[arg(
        long,
        env = "LLM_OBSERVER_METRICS_ADDR",
        default_value = "0.0.0.0:9202"
    )]
    pub metrics_addr: SocketAddr,

    /// Prometheus exporter-toolkit web config (YAML) for the endpoint: TLS, client certificates,
    /// basic auth, response headers. See docs/security.md.
    #[arg(long = "web.config.file", env = "LLM_OBSERVER_WEB_CONFIG_FILE")]
    pub web_config_file: Option<PathBuf>,

    /// Distinct model label values per family before `other`.
    #[arg(long, env = "LLM_OBSERVER_MAX_MODELS", default_value_t = 32)]
    pub max_models: usize,

    /// Extra label on the request families, `NAME=HEADER`, from a request header (repeat or
    /// comma-separate), e.g. tenant=x-tenant. Credential headers are refused.
    #[arg(
        long,
        env = "LLM_OBSERVER_LABEL_HEADERS",
        value_delimiter = ',',
        value_parser = labels::parse_header_rule
    )]
    pub label_header: Vec<String>,

    /// Extra label on the request families, `NAME=/json/pointer`, from the request body (repeat
    /// or comma-separate), e.g. user=/user, user_id=/metadata/user_id.
    #[arg(
        long,
        env = "LLM_OBSERVER_LABEL_BODY_FIELDS",
        value_delimiter = ',',
        value_parser = labels::parse_body_rule
    )]
    pub label_body_field: Vec<String>,

    /// Extra label on the request families, `NAME=KEY`, from the Kubernetes label KEY of the
    /// observed process's pod (outside Kubernetes: its container's label), e.g.
    /// app=app.kubernetes.io/name (repeat or comma-separate).
    #[arg(
        long,
        env = "LLM_OBSERVER_LABEL_POD_LABELS",
        value_delimiter = ',',
        value_parser = labels::parse_pod_rule
    )]
    pub label_pod_label: Vec<String>,

    /// Name a service, `NAME=port:N`, `NAME=process:P` or `NAME=container:C` (repeat or
    /// comma-separate; the first match wins): a `service` label on the request families — the
    /// serving process's port, process or container in the server view, the called port in the
    /// client view.
    #[arg(
        long,
        env = "LLM_OBSERVER_SERVICES",
        value_delimiter = ',',
        value_parser = labels::parse_service_rule
    )]
    pub service: Vec<String>,

    /// Distinct values per user-defined label before `other`, for rules without a cap of their
    /// own (`NAME:CAP=SOURCE`). Header and body values are admitted by a successful request;
    /// pod labels and service names at once.
    #[arg(long, env = "LLM_OBSERVER_MAX_LABEL_VALUES", default_value_t = 32)]
    pub max_label_values: usize,

    /// Distinct peer label values (client view) before `other`.
    #[arg(long, env = "LLM_OBSERVER_MAX_PEERS", default_value_t = 32)]
    pub max_peers: usize,

    /// Distinct process label values before `other`.
    #[arg(long, env = "LLM_OBSERVER_MAX_PROCESSES", default_value_t = 32)]
    pub max_processes: usize,

    /// Window of the llm_tokens_per_second gauge, in seconds.
    #[arg(
        long,
        env = "LLM_OBSERVER_TOKENS_PER_SECOND_WINDOW",
        default_value_t = 30
    )]
    pub tokens_per_second_window: u64,

    /// Seconds after which a model, process, peer or tool label value that no request used is
    /// dropped (its series removed, its slot freed for a new value); 0 keeps values forever.
    #[arg(long, env = "LLM_OBSERVER_LABEL_IDLE_TIMEOUT", default_value_t = 3600)]
    pub label_idle_timeout: u64,

    /// Write one JSON line per exchange (ids, wall-clock times, tokens with their source, status,
    /// error type, attribution; never prompt or response text) to this file, or `-` for stdout.
    #[arg(long, env = "LLM_OBSERVER_EVENTS_LOG")]
    pub events_log: Option<PathBuf>,

    /// Rotate the events log file before it passes this many bytes (one rotated file, FILE.1,
    /// is kept); 0 never rotates.
    #[arg(long, env = "LLM_OBSERVER_EVENTS_LOG_MAX_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub events_log_max_bytes: u64,

    /// OTLP endpoint to send one span per exchange to: http://127.0.0.1:4318 for http/protobuf
    /// (`/v1/traces` is appended), http://127.0.0.1:4317 for grpc; default: the standard
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT. Off when none is set.
    #[arg(long, env = "LLM_OBSERVER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// OTLP transport: `http/protobuf` or `grpc`; default: the standard
    /// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf.
    #[arg(long, env = "LLM_OBSERVER_OTLP_PROTOCOL", value_parser = ["http/protobuf", "grpc"])]
    pub otlp_protocol: Option<String>,

    /// Extra OTLP request header `key=value` (repeat or comma-separate), added to
    /// OTEL_EXPORTER_OTLP_HEADERS / OTEL_EXPORTER_OTLP_TRACES_HEADERS.
    #[arg(long, env = "LLM_OBSERVER_OTLP_HEADERS", value_delimiter = ',')]
    pub otlp_header: Vec<String>,

    /// OTLP export timeout per batch in milliseconds; 0 = OTEL_EXPORTER_OTLP_TIMEOUT, else 10000.
    #[arg(long, env = "LLM_OBSERVER_OTLP_TIMEOUT_MS", default_value_t = 0)]
    pub otlp_timeout_ms: u64,

    /// Spans queued for export at most; beyond, spans are dropped and counted
    /// (llm_observer_dropped_total{stage="otlp_queue"}).
    #[arg(long, env = "LLM_OBSERVER_OTLP_QUEUE_SPANS", default_value_t = 2048)]
    pub otlp_queue_spans: usize,

    /// Spans per OTLP export request at most.
    #[arg(long, env = "LLM_OBSERVER_OTLP_BATCH_SPANS", default_value_t = 512)]
    pub otlp_batch_spans: usize,

    /// How long, in milliseconds, the exporter gathers spans into a batch after the first.
    #[arg(long, env = "LLM_OBSERVER_OTLP_FLUSH_MS", default_value_t = 1000)]
    pub otlp_flush_ms: u64,

    #[command(flatten)]
    pub agent: AgentArgs,
}

/// The agent (client) view beyond single requests: tool execution time, cost.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Tool calls awaiting their result per client process (llm_client_tool_execution_seconds);
    /// past it the oldest is dropped (llm_observer_tool_calls_unmatched_total{reason="full"}).
    #[arg(
        long,
        env = "LLM_OBSERVER_MAX_PENDING_TOOL_CALLS",
        default_value_t = 64
    )]
    pub max_pending_tool_calls: usize,

    /// Seconds a tool call waits for its result before it is dropped (reason="expired"); 0 = no limit.
    #[arg(long, env = "LLM_OBSERVER_TOOL_CALL_TIMEOUT", default_value_t = 600)]
    pub tool_call_timeout: u64,

    /// Price table (TOML, USD per million tokens per model) for llm_client_cost_usd_total; replaces
    /// the shipped llm-observer/prices.toml, whose format and sources its header describes.
    #[arg(long, env = "LLM_OBSERVER_PRICES")]
    pub prices: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct CaptureArgs {
    /// Capture only this process id.
    #[arg(long, env = "LLM_OBSERVER_PID", global = true)]
    pub pid: Option<u32>,

    /// Capture only connections with this local or peer port (repeat or comma-separate).
    #[arg(long, env = "LLM_OBSERVER_PORT", value_delimiter = ',', global = true)]
    pub port: Vec<u16>,

    /// Kernel ring buffer size in bytes (power of two).
    #[arg(long, env = "LLM_OBSERVER_RING_BYTES", default_value_t = 16 * 1024 * 1024, global = true)]
    pub ring_bytes: u32,

    /// How often, in milliseconds, the agent drains the ring on its own; the kernel wakes it
    /// sooner only when an eighth of the ring is waiting. 0 = woken for every record (costs a
    /// context switch per record on busy nodes; timestamps are the kernel's either way).
    #[arg(long, env = "LLM_OBSERVER_RING_POLL_MS", default_value_t = 5, global = true,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub ring_poll_ms: u64,

    /// The longest, in milliseconds, the agent waits between drains of an idle ring: the interval
    /// doubles from --ring-poll-ms after each drain that found nothing and drops back at the next
    /// record (values below --ring-poll-ms mean --ring-poll-ms).
    #[arg(long, env = "LLM_OBSERVER_RING_IDLE_POLL_MS", default_value_t = 100, global = true,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub ring_idle_poll_ms: u64,

    /// Payload bytes copied per syscall at most (1 to 1048576); the rest is counted as truncated.
    #[arg(long, env = "LLM_OBSERVER_MAX_CAPTURE_BYTES", default_value_t = 1024 * 1024, global = true,
          value_parser = clap::value_parser!(u32).range(1..=1024 * 1024))]
    pub max_capture_bytes: u32,

    /// Copy payloads of non-HTTP connections too (debugging; costs ring space).
    #[arg(long, env = "LLM_OBSERVER_ALL_PROTOCOLS", global = true)]
    pub all_protocols: bool,

    /// Do not attach the TLS uprobes (OpenSSL/BoringSSL `SSL_read`/`SSL_write`): HTTPS traffic is
    /// then counted as another protocol, not decoded.
    #[arg(long, env = "LLM_OBSERVER_NO_TLS", global = true)]
    pub no_tls: bool,

    /// Most connections tracked at once.
    #[arg(
        long,
        env = "LLM_OBSERVER_MAX_CONNECTIONS",
        default_value_t = 16_384,
        global = true
    )]
    pub max_connections: usize,

    /// Forget connections silent for this many seconds.
    #[arg(
        long,
        env = "LLM_OBSERVER_IDLE_TIMEOUT",
        default_value_t = 600,
        global = true
    )]
    pub idle_timeout: u64,

    /// Most bytes all connections' decoders may buffer together (heads, bodies, stream events);
    /// a connection that would pass it is shed (counted in llm_observer_dropped_total{stage="memory_budget"}).
    #[arg(long, env = "LLM_OBSERVER_MAX_BUFFERED_BYTES", default_value_t = 128 * 1024 * 1024, global = true)]
    pub max_buffered_bytes: usize,

    /// Largest HTTP body buffered per message for JSON decoding (bytes).
    #[arg(long, env = "LLM_OBSERVER_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024, global = true)]
    pub max_body_bytes: usize,

    /// Root of the proc filesystem (e.g. /host/proc in a container).
    #[arg(
        long,
        env = "LLM_OBSERVER_PROC_ROOT",
        default_value = "/proc",
        global = true
    )]
    pub proc_root: PathBuf,
}

/// Where container and pod names come from (docs/attribution.md). Each source is optional.
#[derive(Debug, Clone, Args)]
pub struct AttributionArgs {
    /// Root of the host filesystem (e.g. /host in a DaemonSet); socket paths are under it.
    #[arg(long, env = "LLM_OBSERVER_HOST_ROOT", default_value = "/")]
    pub host_root: PathBuf,

    /// Docker Engine API socket, relative to --host-root (container and compose names).
    #[arg(
        long,
        env = "LLM_OBSERVER_DOCKER_SOCKET",
        default_value = "/run/docker.sock"
    )]
    pub docker_socket: PathBuf,

    /// Kubernetes API server URL (https:// or http://; default: in-cluster KUBERNETES_SERVICE_HOST/PORT).
    #[arg(long, env = "LLM_OBSERVER_KUBE_API_URL")]
    pub kube_api_url: Option<String>,

    /// Bearer token file for the Kubernetes API (the pod's service account token).
    #[arg(
        long,
        env = "LLM_OBSERVER_KUBE_TOKEN_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub kube_token_file: PathBuf,

    /// CA bundle of the Kubernetes API server's certificate (https URLs).
    #[arg(
        long,
        env = "LLM_OBSERVER_KUBE_CA_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    )]
    pub kube_ca_file: PathBuf,

    /// This node's name, to list only its pods (env NODE_NAME is read too, the downward-API habit).
    #[arg(long, env = "LLM_OBSERVER_NODE_NAME")]
    pub node_name: Option<String>,

    /// Distinct values per container / pod / namespace label before `other`.
    #[arg(long, env = "LLM_OBSERVER_MAX_CONTAINERS", default_value_t = 64)]
    pub max_containers: usize,

    /// Seconds between GPU samples (NVML); 0 disables GPU sampling.
    #[arg(long, env = "LLM_OBSERVER_GPU_INTERVAL", default_value_t = 5)]
    pub gpu_interval: u64,

    /// Path of libnvidia-ml.so.1 (default: the dynamic loader's search path).
    #[arg(long, env = "LLM_OBSERVER_NVML_LIB")]
    pub nvml_lib: Option<PathBuf>,

    /// Seconds between polls of each seen server's own inventory and metrics endpoints (Ollama
    /// /api/ps, llama-server /props /slots /metrics, vLLM /v1/models /metrics, TGI /info
    /// /metrics, SGLang /get_model_info /metrics); 0 disables polling.
    #[arg(long, env = "LLM_OBSERVER_INVENTORY_INTERVAL", default_value_t = 15)]
    pub inventory_interval: u64,

    /// Never ask servers anything: no llm_model_loaded_info, llm_server_reported_* families.
    #[arg(long, env = "LLM_OBSERVER_NO_INVENTORY")]
    pub no_inventory: bool,

    /// Timeout of one inventory request, milliseconds.
    #[arg(
        long,
        env = "LLM_OBSERVER_INVENTORY_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub inventory_timeout_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// Print every captured event with its payload as escaped text, instead of decoded exchanges.
    #[arg(long, env = "LLM_OBSERVER_TRACE_RAW")]
    pub raw: bool,

    /// With --raw: do not redact Authorization, X-Api-Key and cookie header values.
    #[arg(long, env = "LLM_OBSERVER_TRACE_SHOW_SECRETS")]
    pub show_secrets: bool,

    /// Exit after printing this many lines.
    #[arg(long, env = "LLM_OBSERVER_TRACE_COUNT")]
    pub count: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// The agent's /metrics URL (plain http://; `user:password@` in it for basic auth).
    #[arg(
        long,
        env = "LLM_OBSERVER_TOP_URL",
        default_value = "http://127.0.0.1:9202/metrics"
    )]
    pub url: String,

    /// Seconds between scrapes (and screen refreshes).
    #[arg(long, env = "LLM_OBSERVER_TOP_INTERVAL", default_value = "1", value_parser = parse_interval)]
    pub interval: std::time::Duration,
}

/// A positive number of seconds, fractions allowed (`0.5`).
fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(std::time::Duration::from_secs_f64(v)),
        _ => Err(format!("{s:?} is not a number of seconds in (0, 3600]")),
    }
}
