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
}

impl RunTable {
    pub(crate) fn new(history: usize) -> Self {
        RunTable {
            active: BTreeMap::new(),
            finished: VecDeque::new(),
            history,
            aborts: BTreeMap::new(),
        }
    }

    pub(crate) fn insert(&mut self, record: RunRecord) {
        self.active.insert(record.run_id.clone(), record);
    }

    pub(crate) fn update(&mut self, run_id: &str, f: impl FnOnce(&mut RunRecord)) {
        if let Some(r) = self.active.get_mut(run_id) {
            f(r);
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

    pub(crate) fn running(&self) -> usize {
        self.active
            .values()
            .filter(|r| r.status == "running")
            .count()
    }

    /// Asks every running run to stop (recorded by each run as an abort).
    pub(crate) fn abort_all(&self) -> usize {
        for flag in self.aborts.values() {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.aborts.len()
    }
}
