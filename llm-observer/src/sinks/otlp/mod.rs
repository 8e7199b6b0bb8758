//! OTLP trace export: one span per exchange ([`span`]), queued without ever blocking the capture
//! (a bounded queue; a span that does not fit is counted in
//! `llm_observer_dropped_total{stage="otlp_queue"}`), batched and POSTed as OTLP/HTTP protobuf
//! ([`export`]); spans of a batch the collector refused count under `stage="otlp_export"`.
//!
//! Off unless an endpoint is configured: `--otlp-endpoint`, else the standard
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces`
//! appended). Headers from `--otlp-header` and `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`.

pub mod config;
pub mod export;
pub mod span;

use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;

use crate::sinks::record::{ExchangeRecord, RecordOutput};

pub use config::OtlpConfig;

/// What groups spans into one OTLP resource: the observed process and its place.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceKey {
    pub process: String,
    pub comm: String,
    pub pid: u32,
    pub container: String,
    pub pod: String,
    pub namespace: String,
}

/// The pipeline's end of the queue.
pub struct OtlpOutput {
    tx: mpsc::Sender<(ResourceKey, Span)>,
    dropped: prometheus::IntCounter,
}

impl OtlpOutput {
    pub fn new(tx: mpsc::Sender<(ResourceKey, Span)>, dropped: prometheus::IntCounter) -> Self {
        OtlpOutput { tx, dropped }
    }
}

impl RecordOutput for OtlpOutput {
    fn record(&mut self, r: &ExchangeRecord<'_>) {
        let a = &r.attribution;
        let key = ResourceKey {
            process: a.process.clone(),
            comm: a.comm.clone(),
            pid: a.pid,
            container: a.container.clone(),
            pod: a.pod.clone(),
            namespace: a.namespace.clone(),
        };
        // Never wait: the capture must keep up with the kernel whatever the collector does.
        if self.tx.try_send((key, span::span(r))).is_err() {
            self.dropped.inc();
        }
    }
}
