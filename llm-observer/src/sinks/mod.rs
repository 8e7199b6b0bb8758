//! Outputs: Prometheus metrics, JSON trace lines.
