//! Outputs: Prometheus metrics (`/metrics`), later OTLP and `top`.
//!
//! - [`metrics`]: [`Metrics`], the registry and the calls the pipeline makes per exchange.
//! - [`self_metrics`]: the agent's own `llm_observer_*` health counters.
//! - [`http`]: the tiny `/metrics` HTTP server.
//!
//! Every family, label and definition is listed in `docs/metrics.md`; a test keeps the two equal.

pub mod families;
pub mod gpu;
pub mod http;
pub mod labels;
mod memory;
pub mod metrics;
mod registry;
pub mod self_metrics;
mod window;

pub use http::{MetricsServer, serve};
pub use metrics::{ExchangeCtx, InFlight, Metrics, MetricsConfig, MetricsError, ScrapeEnv};
pub use registry::{FamilyInfo, MetricKind};
pub use self_metrics::SelfMetrics;
