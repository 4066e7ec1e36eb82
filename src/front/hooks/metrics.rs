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
    /// Entries each bounded in-memory structure holds now (docs/memory.md), set when scraped.
    pub bounded: Family<Labels, Gauge>,
    /// The process's resident memory and open file descriptors (/proc/self), set when scraped.
    pub resident_bytes: Gauge,
    pub open_fds: Gauge,
    /// Bytes the program holds on the heap (the counting allocator's count): RSS rising while
    /// this stays flat is the allocator keeping freed memory, not a leak.
    pub heap_live_bytes: Gauge,
    /// Under the transcripts folder, measured by each retention pass.
    pub transcripts_bytes: Gauge,
    pub transcripts_files: Gauge,
    /// Files the retention passes deleted.
    pub retention_deleted: Counter,
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
            bounded: Family::default(),
            resident_bytes: Gauge::default(),
            open_fds: Gauge::default(),
            heap_live_bytes: Gauge::default(),
            transcripts_bytes: Gauge::default(),
            transcripts_files: Gauge::default(),
            retention_deleted: Counter::default(),
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
        registry.register(
            "bounded_entries",
            "Entries held now by each bounded in-memory structure (docs/memory.md), by structure",
            m.bounded.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the serve process (VmRSS of /proc/self/status)",
            m.resident_bytes.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors of the serve process (/proc/self/fd)",
            m.open_fds.clone(),
        );
        registry.register(
            "process_heap_live_bytes",
            "Bytes the serve process holds on its heap now (allocated and not freed)",
            m.heap_live_bytes.clone(),
        );
        registry.register(
            "transcripts_bytes",
            "Bytes kept under the transcripts folder, as of the last retention pass",
            m.transcripts_bytes.clone(),
        );
        registry.register(
            "transcripts_files",
            "Files kept under the transcripts folder, as of the last retention pass",
            m.transcripts_files.clone(),
        );
        registry.register(
            "retention_deleted_files",
            "Files deleted by the retention policy ([retention] in hooks.toml)",
            m.retention_deleted.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub(crate) fn inc(family: &Family<Labels, Counter>, labels: &[(&'static str, &str)]) {
        let labels: Labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        family.get_or_create(&labels).inc();
    }

    /// Sets the size of one bounded structure.
    pub(crate) fn bounded_size(&self, structure: &'static str, entries: usize) {
        self.bounded
            .get_or_create(&vec![("structure", structure.to_string())])
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// Reads the process's resident memory and open files (Linux; elsewhere they stay 0).
    pub(crate) fn sample_process(&self) {
        if let Some(kb) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| vm_rss_kb(&s))
        {
            self.resident_bytes
                .set(i64::try_from(kb.saturating_mul(1024)).unwrap_or(i64::MAX));
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The listing's own descriptor is among them: one less.
            let n = dir.count().saturating_sub(1);
            self.open_fds.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.heap_live_bytes
            .set(crate::base::memory::process_live_bytes());
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// `VmRSS` (kB) of a `/proc/PID/status` text.
fn vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_and_bounded_sizes_are_rendered() {
        assert_eq!(
            vm_rss_kb("Name:\trunbook\nVmRSS:\t   34816 kB\n"),
            Some(34816)
        );
        let m = Metrics::default();
        m.sample_process();
        m.bounded_size("sim_mutations", 7);
        let text = m.render();
        assert!(
            text.contains("runbook_bounded_entries{structure=\"sim_mutations\"} 7"),
            "{text}"
        );
        let rss: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix("runbook_process_resident_memory_bytes "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        assert!(rss > 0, "{text}");
    }
}
