//! Outputs: Prometheus metrics (`/metrics`), later OTLP and `top`.
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
pub mod families;
pub mod gpu;
pub mod http;
pub mod inventory_families;
pub mod labels;
mod memory;
pub mod metrics;
pub mod otlp;
pub mod prices;
pub mod provider;
mod registry;
pub mod self_metrics;
pub mod server_families;
pub mod tls;
mod tool_exec;
pub mod wallclock;
pub mod web_config;
mod window;

pub use http::{MetricsServer, Readiness, serve};
pub use metrics::{ExchangeCtx, InFlight, Metrics, MetricsConfig, MetricsError, ScrapeEnv};
pub use registry::{FamilyInfo, MetricKind};
pub use self_metrics::SelfMetrics;
