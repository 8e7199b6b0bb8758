//! A thin wrapper over [`prometheus::Registry`] that remembers what it registered, so the families,
//! types, label names and help strings can be listed (docs test, `--list-metrics`) even before any
//! series exists — `Registry::gather` omits empty families.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    core::Collector,
};

use super::admission::Forget;

/// Metric type as written in the exposition `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One registered family.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyInfo {
    pub name: String,
    pub kind: MetricKind,
    pub help: String,
    pub labels: Vec<String>,
    /// Upper bounds (without `+Inf`) for histograms; empty otherwise.
    pub buckets: Vec<f64>,
}

pub(crate) struct Reg {
    pub(crate) registry: Registry,
    pub(crate) families: Vec<FamilyInfo>,
    /// Every labelled family, for removing the series of a label value that expired.
    pub(crate) forgettable: Vec<Box<dyn Forget>>,
}

impl Reg {
    pub(crate) fn new() -> Self {
        Reg {
            registry: Registry::new(),
            families: Vec::new(),
            forgettable: Vec::new(),
        }
    }

    /// [`Reg::add`] for a labelled family, which can also forget series by label value.
    fn add_vec<C: Collector + Forget + Clone + 'static>(
        &mut self,
        c: C,
        kind: MetricKind,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> prometheus::Result<C> {
        let c = self.add(c, kind, name, help, labels, buckets)?;
        self.forgettable.push(Box::new(c.clone()));
        Ok(c)
    }

    fn add<C: Collector + Clone + 'static>(
        &mut self,
        c: C,
        kind: MetricKind,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> prometheus::Result<C> {
        self.registry.register(Box::new(c.clone()))?;
        self.families.push(FamilyInfo {
            name: name.to_string(),
            kind,
            help: help.to_string(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            buckets: buckets.to_vec(),
        });
        Ok(c)
    }

    pub(crate) fn counter(&mut self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        let c = IntCounter::with_opts(Opts::new(name, help))?;
        self.add(c, MetricKind::Counter, name, help, &[], &[])
    }

    pub(crate) fn counter_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        let c = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.add_vec(c, MetricKind::Counter, name, help, labels, &[])
    }

    pub(crate) fn gauge(&mut self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        let g = IntGauge::with_opts(Opts::new(name, help))?;
        self.add(g, MetricKind::Gauge, name, help, &[], &[])
    }

    pub(crate) fn float_gauge(
        &mut self,
        name: &str,
        help: &str,
    ) -> prometheus::Result<prometheus::Gauge> {
        let g = prometheus::Gauge::with_opts(Opts::new(name, help))?;
        self.add(g, MetricKind::Gauge, name, help, &[], &[])
    }

    pub(crate) fn gauge_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntGaugeVec> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
        self.add_vec(g, MetricKind::Gauge, name, help, labels, &[])
    }

    pub(crate) fn float_counter_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<prometheus::CounterVec> {
        let c = prometheus::CounterVec::new(Opts::new(name, help), labels)?;
        self.add(c, MetricKind::Counter, name, help, labels, &[])
    }

    pub(crate) fn float_gauge_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<prometheus::GaugeVec> {
        let g = prometheus::GaugeVec::new(Opts::new(name, help), labels)?;
        self.add_vec(g, MetricKind::Gauge, name, help, labels, &[])
    }

    pub(crate) fn histogram_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> prometheus::Result<HistogramVec> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        let h = HistogramVec::new(opts, labels)?;
        self.add_vec(h, MetricKind::Histogram, name, help, labels, buckets)
    }
}
