//! `GET /metrics`: the receiver's counters in Prometheus' text format (prometheus-client).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub(crate) struct Metrics {
    registry: Registry,
    /// Requests turned away before any alert was read (401, 413, 400, 503 while stopping).
    pub requests_rejected: Family<Labels, Counter>,
    pub alerts_received: Family<Labels, Counter>,
    /// Every alert's outcome: accepted, deduplicated, refused (with its reason), unmatched,
    /// resolved.
    pub alerts: Family<Labels, Counter>,
    pub runs: Family<Labels, Counter>,
    pub guardrail_trips: Family<Labels, Counter>,
    pub escalations: Family<Labels, Counter>,
    /// Runs that panicked (each also counted in `runs` as failed; the worker lives on).
    pub runs_panicked: Counter,
    pub runs_running: Gauge,
    pub runs_queued: Gauge,
    pub breakers_open: Gauge,
    pub run_duration: Histogram,
    pub first_call_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("runbook");
        let m = Metrics {
            requests_rejected: Family::default(),
            alerts_received: Family::default(),
            alerts: Family::default(),
            runs: Family::default(),
            guardrail_trips: Family::default(),
            escalations: Family::default(),
            runs_panicked: Counter::default(),
            runs_running: Gauge::default(),
            runs_queued: Gauge::default(),
            breakers_open: Gauge::default(),
            // 0.1 s .. ~30 min: runbooks wait for instances to stop and checks to pass.
            run_duration: Histogram::new(exponential_buckets(0.1, 2.0, 15)),
            // 1 ms .. ~4 s: the receiver's own overhead is what this shows.
            first_call_latency: Histogram::new(exponential_buckets(0.001, 2.0, 13)),
            registry: Registry::default(),
        };
        registry.register(
            "hook_requests_rejected",
            "Requests refused before any alert was read, by reason",
            m.requests_rejected.clone(),
        );
        registry.register(
            "alerts_received",
            "Alerts received, by source",
            m.alerts_received.clone(),
        );
        registry.register(
            "alerts",
            "Alerts by outcome (accepted, deduplicated, refused, unmatched, resolved) and reason",
            m.alerts.clone(),
        );
        registry.register("runs", "Finished runs, by status", m.runs.clone());
        registry.register(
            "guardrail_trips",
            "Guardrails that refused an alert or a write, by rule",
            m.guardrail_trips.clone(),
        );
        registry.register(
            "escalations",
            "Escalations to tier 2, by delivery result",
            m.escalations.clone(),
        );
        registry.register(
            "runs_panicked",
            "Runs that panicked (recorded as failed and escalated; the worker survives)",
            m.runs_panicked.clone(),
        );
        registry.register("runs_running", "Runs executing now", m.runs_running.clone());
        registry.register(
            "runs_queued",
            "Runs waiting for a worker",
            m.runs_queued.clone(),
        );
        registry.register(
            "breakers_open",
            "Open circuit breakers",
            m.breakers_open.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Run duration",
            m.run_duration.clone(),
        );
        registry.register(
            "alert_to_first_call_seconds",
            "From the alert's arrival to the run's first API call",
            m.first_call_latency.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub(crate) fn inc(family: &Family<Labels, Counter>, labels: &[(&'static str, &str)]) {
        let labels: Labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        family.get_or_create(&labels).inc();
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
