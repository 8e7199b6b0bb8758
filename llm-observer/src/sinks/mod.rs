//! Stage 6, outputs: where decoded exchanges go. The [`sink::Sink`] trait (what the connection
//! stage calls, with a [`sink::ConnView`]) and its implementations live here:
//! [`metrics_sink`] (Prometheus), [`trace_sink`] (`trace` JSON lines), [`record`] (one record
//! per exchange for the [`event_log`] and [`otlp`] spans, with [`correlate`]d span ids) and
//! [`tee`] (several at once); [`redact`] and [`redact_h2`] keep credentials out of `trace --raw`;
//! [`gpu_sampler`] samples NVML for the GPU families.
//!
//! - [`metrics`]: [`Metrics`], the registry and the calls the pipeline makes per exchange.
//! - [`self_metrics`]: the agent's own `llm_observer_*` health counters.
//! - [`http`]: the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`) on hyper, with TLS and basic
//!   auth from [`web_config`] (`--web.config.file`, the exporter-toolkit format) via [`tls`], [`auth`].
//!
//! Every family, label and definition is listed in `docs/metrics.md`; a test keeps the two equal.

pub mod admission;
mod agent_families;
pub mod auth;
pub mod correlate;
pub mod event_log;
pub mod families;
pub mod gpu;
pub mod gpu_sampler;
pub mod http;
pub mod inventory_families;
pub mod labels;
mod memory;
pub mod metrics;
pub mod metrics_sink;
pub mod otlp;
pub mod prices;
pub mod provider;
pub mod record;
pub mod redact;
pub mod redact_h2;
mod registry;
pub mod self_metrics;
pub mod server_families;
pub mod sink;
pub mod tee;
pub mod tls;
mod tool_exec;
pub mod trace_sink;
pub mod wallclock;
pub mod web_config;
mod window;

pub use http::{MetricsServer, Readiness, serve};
pub use metrics::{ExchangeCtx, InFlight, Metrics, MetricsConfig, MetricsError, ScrapeEnv};
pub use registry::{FamilyInfo, MetricKind};
pub use self_metrics::SelfMetrics;
