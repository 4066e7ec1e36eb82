//! The runs a hook receiver knows about: queued, running and recently finished, for
//! `GET /runs` and the shutdown drain.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::Serialize;

use super::Alert;
use super::config::Route;

/// A run waiting for (or held by) a worker.
pub(crate) struct Job {
    pub run_id: String,
    pub alert: Alert,
    pub route: Route,
    pub params: Vec<(String, String)>,
    pub transcript: PathBuf,
    /// When the request carrying the alert arrived (the latency clock starts here).
    pub received: Instant,
    /// A run taken over from a replica that died: `transcript` is its archived transcript,
    /// fetched, and the run resumes from it.
    pub resume: bool,
}

/// A run as `GET /runs` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunRecord {
    pub run_id: String,
    /// `queued`, `running`, then the run's status (`ok`, `failed`, `aborted`, `timed_out`),
    /// `error` (it could not start), or `not_started` (the server stopped first).
    pub status: String,
    pub alert: String,
    pub source: &'static str,
    pub fingerprint: String,
    pub route: String,
    pub runbook: String,
    pub environment: Option<String>,
    pub transcript: String,
    pub received_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    /// From the alert's arrival to the run's first API call, in milliseconds (fractional).
    pub first_call_ms: Option<f64>,
    pub reason: Option<String>,
}

/// Queued and running runs, and the last `history` finished ones.
pub(crate) struct RunTable {
    active: BTreeMap<String, RunRecord>,
    finished: VecDeque<RunRecord>,
    history: usize,
    /// The abort flags of running runs (the shutdown drain sets them after its deadline).
    aborts: BTreeMap<String, Arc<AtomicBool>>,
    /// Where every change of a record goes for the other replicas (aws backend).
    sink: Option<RecordSink>,
}

impl RunTable {
    pub(crate) fn new(history: usize) -> Self {
        RunTable {
            active: BTreeMap::new(),
            finished: VecDeque::new(),
            history,
            aborts: BTreeMap::new(),
            sink: None,
        }
    }

    /// Sends every record, as it changes, to `sink` (the state table).
    pub(crate) fn shared_with(mut self, sink: Option<RecordSink>) -> Self {
        self.sink = sink;
        self
    }

    /// Whether the records reach the other replicas (always, without a sink: there are none).
    pub(crate) fn shared_ok(&self) -> Option<bool> {
        self.sink
            .as_ref()
            .map(|s| s.healthy.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn share(&self, record: &RunRecord) {
        if let Some(sink) = &self.sink {
            sink.send(record);
        }
    }

    pub(crate) fn insert(&mut self, record: RunRecord) {
        self.share(&record);
        self.active.insert(record.run_id.clone(), record);
    }

    pub(crate) fn update(&mut self, run_id: &str, f: impl FnOnce(&mut RunRecord)) {
        if let Some(r) = self.active.get_mut(run_id) {
            f(r);
            if let Some(sink) = &self.sink {
                sink.send(r);
            }
        }
    }

    pub(crate) fn set_abort(&mut self, run_id: &str, flag: Arc<AtomicBool>) {
        self.aborts.insert(run_id.to_string(), flag);
    }

    /// Moves a run to the finished list.
    pub(crate) fn finish(&mut self, run_id: &str, f: impl FnOnce(&mut RunRecord)) {
        self.aborts.remove(run_id);
        if let Some(mut r) = self.active.remove(run_id) {
            f(&mut r);
            self.share(&r);
            self.finished.push_back(r);
            while self.finished.len() > self.history {
                self.finished.pop_front();
            }
        }
    }

    pub(crate) fn get(&self, run_id: &str) -> Option<&RunRecord> {
        self.active
            .get(run_id)
            .or_else(|| self.finished.iter().rev().find(|r| r.run_id == run_id))
    }

    /// Newest first: active runs, then finished ones.
    pub(crate) fn list(&self, limit: usize) -> Vec<RunRecord> {
        let mut active: Vec<&RunRecord> = self.active.values().collect();
        active.sort_by(|a, b| b.received_at.cmp(&a.received_at));
        active
            .into_iter()
            .chain(self.finished.iter().rev())
            .take(limit)
            .cloned()
            .collect()
    }

    /// Records held: queued and running, finished (at most `history`).
    pub(crate) fn sizes(&self) -> (usize, usize) {
        (self.active.len(), self.finished.len())
    }

    /// Records waiting to be shared through the state table (aws backend).
    pub(crate) fn to_share(&self) -> usize {
        self.sink.as_ref().map_or(0, RecordSink::queued)
    }

    pub(crate) fn running(&self) -> usize {
        self.active
            .values()
            .filter(|r| r.status == "running")
            .count()
    }

    /// Asks one running run to stop (another replica holds it now).
    pub(crate) fn abort(&self, run_id: &str) {
        if let Some(flag) = self.aborts.get(run_id) {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Asks every running run to stop (recorded by each run as an abort).
    pub(crate) fn abort_all(&self) -> usize {
        for flag in self.aborts.values() {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.aborts.len()
    }
}

/// A replica's run records on their way to the state table, so `GET /runs` on every replica
/// lists them: a thread of its own puts them (in order, the newest state of each run per round),
/// off the admission path. A put the table refuses is logged and makes `/healthz` unhealthy
/// until one succeeds; the journal, not these records, is the evidence.
///
/// The queue is bounded ([`RECORDS_QUEUED`]): while the table does not answer, a record that
/// finds it full is dropped (logged, `/healthz` unhealthy), so a long outage of the table costs
/// no more memory than that.
pub(crate) struct RecordSink {
    tx: std::sync::mpsc::SyncSender<serde_json::Value>,
    healthy: Arc<AtomicBool>,
    /// Records queued now (`/metrics`).
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

/// The most run records waiting for the table.
pub(crate) const RECORDS_QUEUED: usize = 10_000;

impl RecordSink {
    pub(crate) fn start(store: Arc<crate::services::state::aws::AwsStore>) -> RecordSink {
        let (tx, rx) = std::sync::mpsc::sync_channel::<serde_json::Value>(RECORDS_QUEUED);
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let taken = queued.clone();
        let replica = format!(
            "{}:{}",
            gethostname::gethostname().to_string_lossy(),
            std::process::id()
        );
        let spawned = std::thread::Builder::new()
            .name("run-records".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Whatever queued up meanwhile, each run's latest state once.
                    let mut latest: Vec<(serde_json::Value, i64)> = Vec::new();
                    let batch: Vec<serde_json::Value> = std::iter::once(first)
                        .chain(rx.try_iter().take(1000))
                        .collect();
                    let _ = taken.fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |n| Some(n.saturating_sub(batch.len())),
                    );
                    for mut record in batch {
                        record["replica"] = replica.clone().into();
                        let rank = rank(record["status"].as_str().unwrap_or_default());
                        match latest
                            .iter_mut()
                            .find(|(r, _)| r["run_id"] == record["run_id"])
                        {
                            Some(slot) => *slot = (record, rank),
                            None => latest.push((record, rank)),
                        }
                    }
                    let put = store.put_run_records(&latest);
                    if let Err(e) = &put {
                        tracing::error!("run records cannot be shared: {e}");
                    }
                    flag.store(put.is_ok(), std::sync::atomic::Ordering::SeqCst);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the run-records thread: {e}");
            healthy.store(false, std::sync::atomic::Ordering::SeqCst);
        }
        RecordSink {
            tx,
            healthy,
            queued,
        }
    }

    /// Records waiting for the table now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn send(&self, record: &RunRecord) {
        match serde_json::to_value(record) {
            Ok(v) => {
                self.queued
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                match self.tx.try_send(v) {
                    Ok(()) => {}
                    Err(e) => {
                        let _ = self.queued.fetch_update(
                            std::sync::atomic::Ordering::SeqCst,
                            std::sync::atomic::Ordering::SeqCst,
                            |n| Some(n.saturating_sub(1)),
                        );
                        if matches!(e, std::sync::mpsc::TrySendError::Full(_)) {
                            tracing::error!(
                                run_id = %record.run_id,
                                "a run record was not shared: {RECORDS_QUEUED} are waiting for the state table already"
                            );
                        }
                        self.healthy
                            .store(false, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
            Err(e) => tracing::error!("a run record cannot be serialized: {e}"),
        }
    }
}

/// How far along a run is: a stored record is only replaced by one as far or further.
fn rank(status: &str) -> i64 {
    match status {
        "queued" => 0,
        "running" => 1,
        _ => 2,
    }
}
