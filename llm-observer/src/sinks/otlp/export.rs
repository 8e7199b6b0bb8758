//! The exporter task: takes spans off the bounded queue, groups a batch by resource, and sends it
//! as one `ExportTraceServiceRequest`: POSTed as OTLP/HTTP protobuf (hyper), or as the unary
//! gRPC `TraceService/Export` call (tonic's client over one lazily connected, self-reconnecting
//! HTTP/2 channel). One attempt per batch: a batch the collector does not accept (error status,
//! timeout, no connection) is dropped and its spans are counted, and so are the spans a
//! collector reports rejected in a partial success; a dead collector costs the agent a bounded
//! queue and nothing else.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_client::TraceServiceClient,
    },
    common::v1::InstrumentationScope,
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::{OtlpConfig, ResourceKey, config::Protocol, span};

/// Counters the exporter keeps.
#[derive(Clone)]
pub struct ExportCounters {
    /// Spans in batches the collector did not accept.
    pub failed: prometheus::IntCounter,
}

fn resource(key: &ResourceKey, host: &str) -> Resource {
    let mut attrs = vec![
        span::string("service.name", key.process.as_str()),
        span::string("host.name", host),
        span::int("process.pid", i64::from(key.pid)),
        span::string("process.executable.name", key.comm.as_str()),
    ];
    for (k, v) in [
        ("container.name", &key.container),
        ("k8s.pod.name", &key.pod),
        ("k8s.namespace.name", &key.namespace),
    ] {
        if !v.is_empty() {
            attrs.push(span::string(k, v.as_str()));
        }
    }
    Resource {
        attributes: attrs,
        ..Resource::default()
    }
}

/// One request body of a batch.
pub fn request(batch: Vec<(ResourceKey, Span)>, host: &str) -> ExportTraceServiceRequest {
    let mut groups: HashMap<ResourceKey, Vec<Span>> = HashMap::new();
    let mut order = Vec::new();
    for (k, s) in batch {
        let spans = groups.entry(k.clone()).or_insert_with(|| {
            order.push(k);
            Vec::new()
        });
        spans.push(s);
    }
    let resource_spans = order
        .into_iter()
        .filter_map(|k| {
            let spans = groups.remove(&k)?;
            Some(ResourceSpans {
                resource: Some(resource(&k, host)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "llm-observer".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("the collector answered {0}")]
    Status(u16),
    #[error("gRPC: {}: {}", .0.code(), .0.message())]
    Grpc(#[from] tonic::Status),
    #[error("gRPC endpoint: {0}")]
    Endpoint(#[from] tonic::transport::Error),
    #[error("header {0:?} cannot be gRPC metadata")]
    Metadata(String),
    #[error("timed out")]
    Timeout,
}

/// How many spans of an accepted request the collector says it rejected.
fn rejected(resp: &ExportTraceServiceResponse) -> u64 {
    resp.partial_success
        .as_ref()
        .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
}

async fn post(cfg: &OtlpConfig, body: Vec<u8>) -> Result<u64, SendError> {
    let stream = tokio::net::TcpStream::connect(&cfg.authority)
        .await
        .map_err(SendError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let mut req = hyper::Request::post(cfg.path.as_str())
        .header(hyper::header::HOST, cfg.authority.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/x-protobuf");
    for (k, v) in &cfg.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = resp.status().as_u16();
    // Read the answer whole (the connection then ends cleanly): a 2xx body may be a partial
    // success naming rejected spans. An empty or undecodable body rejects none.
    let answer = resp.into_body().collect().await.map(|b| b.to_bytes());
    driver.abort();
    if !(200..300).contains(&status) {
        return Err(SendError::Status(status));
    }
    Ok(answer
        .ok()
        .and_then(|b| ExportTraceServiceResponse::decode(b).ok())
        .map_or(0, |r| rejected(&r)))
}

/// The gRPC client, made on the first batch so that a bad endpoint is reported like any other
/// export failure (the channel itself reconnects after the collector restarts).
async fn export_grpc(
    client: &mut Option<TraceServiceClient<Channel>>,
    cfg: &OtlpConfig,
    body: ExportTraceServiceRequest,
) -> Result<u64, SendError> {
    let client = match client {
        Some(c) => c,
        None => {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://{}", cfg.authority))?
                    .connect_timeout(cfg.timeout)
                    // A collector that vanished without a reset (node lost, conntrack dropped)
                    // is noticed by HTTP/2 pings, not by the kernel's retransmission timeout.
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_timeout(Duration::from_secs(10))
                    .keep_alive_while_idle(true)
                    .connect_lazy();
            client.insert(TraceServiceClient::new(channel))
        }
    };
    let mut req = tonic::Request::new(body);
    req.set_timeout(cfg.timeout);
    for (k, v) in &cfg.headers {
        let key = tonic::metadata::AsciiMetadataKey::from_bytes(k.as_bytes())
            .map_err(|_| SendError::Metadata(k.clone()))?;
        let value = tonic::metadata::AsciiMetadataValue::try_from(v.as_str())
            .map_err(|_| SendError::Metadata(k.clone()))?;
        req.metadata_mut().insert(key, value);
    }
    let resp = client.export(req).await?;
    Ok(rejected(resp.get_ref()))
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its full length; gethostname NUL-terminates within it or
    // truncates, and the slice below stops at the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Runs until every sender is gone and the queue is empty (the agent shutting down).
pub async fn run(
    cfg: OtlpConfig,
    mut rx: mpsc::Receiver<(ResourceKey, Span)>,
    counters: ExportCounters,
) {
    let host = host_name();
    let mut grpc = None;
    let mut last_warning: Option<Instant> = None;
    let mut exported = 0u64;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        // Gather what else arrives within the flush interval, up to a full batch.
        let deadline = tokio::time::Instant::now() + cfg.flush_interval;
        while batch.len() < cfg.batch_spans {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let body = request(batch, &host);
        let send = async {
            match cfg.protocol {
                Protocol::HttpProtobuf => post(&cfg, body.encode_to_vec()).await,
                Protocol::Grpc => export_grpc(&mut grpc, &cfg, body).await,
            }
        };
        let result = match tokio::time::timeout(cfg.timeout, send).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Timeout),
        };
        if matches!(result, Err(SendError::Timeout)) {
            // The next batch starts over on a new channel rather than a possibly wedged one.
            grpc = None;
        }
        match result {
            Ok(rejected) => {
                let rejected = rejected.min(n);
                exported += n - rejected;
                if rejected > 0 {
                    counters.failed.inc_by(rejected);
                    warn(
                        &mut last_warning,
                        &cfg,
                        format_args!("the collector rejected {rejected} of {n} spans"),
                    );
                }
                log::debug!("OTLP: exported {} spans ({exported} in all)", n - rejected);
            }
            Err(e) => {
                counters.failed.inc_by(n);
                warn(
                    &mut last_warning,
                    &cfg,
                    format_args!("{n} spans not exported: {e}"),
                );
            }
        }
    }
}

/// One warning a minute at most: a collector that is down fails every batch.
fn warn(last: &mut Option<Instant>, cfg: &OtlpConfig, what: std::fmt::Arguments<'_>) {
    let now = Instant::now();
    if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
        *last = Some(now);
        log::warn!(
            "OTLP ({}): {what}, to {} (counted in llm_observer_dropped_total{{stage=\"otlp_export\"}}; \
             warning at most once a minute)",
            cfg.protocol.as_str(),
            cfg.target()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;
    use crate::{
        attribution::Place,
        sinks::{
            correlate::SpanIds,
            event_log::tests as fx,
            otlp::OtlpOutput,
            record::{ExchangeRecord, RecordOutput},
            wallclock::WallClock,
        },
    };

    fn config(authority: String) -> OtlpConfig {
        OtlpConfig {
            protocol: Protocol::HttpProtobuf,
            authority,
            path: "/v1/traces".into(),
            headers: [("x-k".to_owned(), "v".to_owned())].into(),
            timeout: Duration::from_secs(5),
            queue_spans: 4,
            batch_spans: 512,
            flush_interval: Duration::from_millis(10),
        }
    }

    /// Puts `n` records through an [`OtlpOutput`] with a queue of `queue` spans.
    fn fill(
        n: usize,
        queue: usize,
    ) -> (mpsc::Receiver<(ResourceKey, Span)>, prometheus::IntCounter) {
        let (tx, rx) = mpsc::channel(queue);
        let dropped = prometheus::IntCounter::new("d", "d").unwrap();
        let mut out = OtlpOutput::new(tx, dropped.clone());
        let p = fx::process();
        let ex = fx::exchange();
        let ids = SpanIds {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
        };
        for seq in 0..n {
            let clock = WallClock::fixed(0, 0);
            let r = ExchangeRecord::new(
                &clock,
                &fx::view(&p),
                seq as u64,
                &ex,
                Place::default(),
                ids,
            );
            out.record(&r);
        }
        (rx, dropped)
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (rx, dropped) = fill(5, 3);
        assert_eq!((rx.len(), dropped.get()), (3, 2));
    }

    #[tokio::test]
    async fn a_collector_that_is_down_costs_counted_spans() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (rx, dropped) = fill(3, 8);
        assert_eq!(dropped.get(), 0);
        let failed = prometheus::IntCounter::new("f", "f").unwrap();
        let counters = ExportCounters {
            failed: failed.clone(),
        };
        // All senders are gone: the exporter sends what is queued and returns.
        run(config(format!("127.0.0.1:{port}")), rx, counters).await;
        assert_eq!(failed.get(), 3);
    }

    #[tokio::test]
    async fn posts_one_protobuf_request_per_batch() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = s.read(&mut chunk).unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap();
                    if buf.len() >= i + 4 + len {
                        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .unwrap();
                        return (text[..i].to_owned(), buf[i + 4..i + 4 + len].to_vec());
                    }
                }
            }
        });
        let (rx, _) = fill(2, 8);
        let failed = prometheus::IntCounter::new("f", "f").unwrap();
        run(
            config(addr.to_string()),
            rx,
            ExportCounters {
                failed: failed.clone(),
            },
        )
        .await;
        let (head, body) = server.join().unwrap();
        assert!(head.starts_with("POST /v1/traces HTTP/1.1"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/x-protobuf")
        );
        assert!(head.contains("x-k: v"), "{head}");
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        assert_eq!(req.resource_spans.len(), 1, "one process, one resource");
        assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), 2);
        assert_eq!(failed.get(), 0);
    }

    /// A gRPC TraceService (tonic's server) that keeps what it gets and rejects one span of each
    /// request in a partial success.
    #[derive(Clone, Default)]
    struct Collector {
        /// Each request's `x-k` metadata and span count.
        got: std::sync::Arc<std::sync::Mutex<Vec<Got>>>,
    }

    type Got = (Option<String>, usize);

    #[tonic::async_trait]
    impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
        for Collector
    {
        async fn export(
            &self,
            req: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let header = req
                .metadata()
                .get("x-k")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let spans = req
                .get_ref()
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            self.got.lock().unwrap().push((header, spans));
            Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: Some(
                    opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess {
                        rejected_spans: 1,
                        error_message: "one too many".into(),
                    },
                ),
            }))
        }
    }

    #[tokio::test]
    async fn grpc_export_sends_metadata_and_counts_rejected_spans() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Collector::default();
        let service =
            opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
                collector.clone(),
            );
        let server = tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(
            service,
            tonic::transport::server::TcpIncoming::from(listener),
        ));
        let (rx, _) = fill(3, 8);
        let failed = prometheus::IntCounter::new("f", "f").unwrap();
        let mut cfg = config(addr.to_string());
        cfg.protocol = Protocol::Grpc;
        cfg.path = String::new();
        run(
            cfg,
            rx,
            ExportCounters {
                failed: failed.clone(),
            },
        )
        .await;
        server.abort();
        assert_eq!(*collector.got.lock().unwrap(), [(Some("v".to_owned()), 3)]);
        assert_eq!(failed.get(), 1, "the one span the collector rejected");
    }

    #[tokio::test]
    async fn a_grpc_collector_that_is_down_costs_counted_spans() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (rx, _) = fill(2, 8);
        let failed = prometheus::IntCounter::new("f", "f").unwrap();
        let mut cfg = config(format!("127.0.0.1:{port}"));
        cfg.protocol = Protocol::Grpc;
        run(
            cfg,
            rx,
            ExportCounters {
                failed: failed.clone(),
            },
        )
        .await;
        assert_eq!(failed.get(), 2);
    }
}
