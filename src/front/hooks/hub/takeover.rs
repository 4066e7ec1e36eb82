//! Takeover (aws backend): every hook run is owned in the state table by the replica running it
//! (`state::owners`), renewed by this replica's heartbeat. When a replica dies its leases expire;
//! the heartbeat of another one finds the run, claims it (exactly one claimer wins), fetches its
//! archived transcript and queues it to resume with the existing machinery: a finished write is
//! answered from the transcript, never sent again, and a write whose outcome is unknown (its
//! intent archived, its result not) stops the run for a person, escalated like any run that
//! does not end ok. Intents are archived before their write is sent (`launch`), so a write the
//! dead replica may have sent is always in the archive.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{Value, json};

use super::super::escalate::Escalation;
use super::super::pool::{Job, RunRecord};
use super::{Alert, Hub, lock};
use crate::base::clock::now_utc;
use crate::base::error::{Error, Result};
use crate::services::state::aws::AwsStore;
use crate::services::state::owners::Owned;

/// While held, this replica owns the run in the table; dropped when the run ends, it lets go.
pub(super) struct Owner<'a> {
    hub: &'a Hub,
    store: Arc<AwsStore>,
    run_id: String,
}

impl Drop for Owner<'_> {
    fn drop(&mut self) {
        lock(&self.hub.owned).remove(&self.run_id);
        if let Err(e) = self.store.release_run(&self.run_id) {
            // The lease expires on its own; another replica then finds the run finished.
            tracing::error!(
                run_id = self.run_id,
                "cannot release the run's ownership: {e}"
            );
        }
    }
}

impl Hub {
    /// Records this replica as the owner of `job`'s run (aws backend; None with `local`). A
    /// run taken over is owned already (the claim made it ours).
    pub(super) fn own_run(&self, job: &Job) -> Result<Option<Owner<'_>>> {
        let Some(store) = self.store.shared_guardrails() else {
            return Ok(None);
        };
        if !job.resume {
            let described = json!({
                "route": job.route.name,
                "alert": job.alert,
                "params": job.params,
                "transcript": job.transcript,
            });
            store.own_run(&job.run_id, &described).map_err(|e| {
                Error::Environment(format!(
                    "the run's ownership cannot be recorded in the state table, so no replica could take it over: {e}"
                ))
            })?;
        }
        lock(&self.owned).insert(job.run_id.clone());
        Ok(Some(Owner {
            hub: self,
            store,
            run_id: job.run_id.clone(),
        }))
    }

    /// Starts the heartbeat (aws backend): every third of the lease it renews the runs this
    /// replica owns (aborting one another replica holds now) and takes over runs whose owner's
    /// lease expired.
    pub(crate) fn start_takeover(self: &Arc<Self>) -> Result<()> {
        let Some(store) = self.store.shared_guardrails() else {
            return Ok(());
        };
        let hub = self.clone();
        let every = store.lease() / 3;
        std::thread::Builder::new()
            .name("run-heartbeat".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    hub.renew_owned(&store);
                    if hub.accepting() && !hub.stopping.load(Ordering::SeqCst) {
                        hub.take_over_expired(&store);
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the run heartbeat: {e}")))?;
        Ok(())
    }

    fn renew_owned(&self, store: &AwsStore) {
        let owned: Vec<String> = lock(&self.owned).iter().cloned().collect();
        for run_id in owned {
            match store.renew_run(&run_id) {
                Ok(true) => {}
                Ok(false) => {
                    // Presumed dead (a stall longer than the lease) and taken over: the other
                    // replica runs it now; this one must not send anything more.
                    tracing::error!(
                        run_id,
                        "another replica took this run over: aborting it here"
                    );
                    lock(&self.runs).abort(&run_id);
                }
                Err(e) => tracing::error!(run_id, "cannot renew the run's ownership: {e}"),
            }
        }
    }

    fn take_over_expired(&self, store: &AwsStore) {
        let expired = match store.expired_runs() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("cannot look for runs to take over: {e}");
                return;
            }
        };
        for owned in expired {
            if lock(&self.owned).contains(&owned.run_id) {
                continue;
            }
            match store.claim_run(&owned) {
                Ok(true) => self.take_over(store, owned),
                Ok(false) => {}
                Err(e) => tracing::error!(run_id = owned.run_id, "cannot claim the run: {e}"),
            }
        }
    }

    /// Resumes a run this replica just claimed. When it cannot (the transcript is not archived,
    /// the route is gone, the queue is full), a person is told and the claim is left to expire,
    /// so the run is tried again rather than forgotten.
    fn take_over(&self, store: &AwsStore, owned: Owned) {
        let run_id = owned.run_id.clone();
        tracing::warn!(
            run_id,
            from = owned.replica,
            "taking over a run whose replica stopped renewing it"
        );
        let alert: Option<Alert> = serde_json::from_value(owned.job["alert"].clone()).ok();
        if owned.unarchived {
            // A write went out whose intent the archive may not show: resuming could send it
            // again. A person decides; the item is let go so that nobody retries blindly.
            self.takeover_failed(
                &owned,
                alert.as_ref(),
                "it sent a write whose intent could not be archived, so its archive may miss a write: a person must check what it did (its transcript is on its host) before anything runs again; it is not retried",
            );
            if let Err(e) = store.release_run(&run_id) {
                tracing::error!(run_id, "{e}");
            }
            return;
        }
        let route = owned.job["route"]
            .as_str()
            .and_then(|name| self.hooks.file.routes.iter().find(|r| r.name == name));
        let (Some(alert), Some(route)) = (alert, route) else {
            self.takeover_failed(
                &owned,
                None,
                "its route is not in this replica's hooks.toml; it is tried again when this replica's claim expires",
            );
            return;
        };
        let params: Vec<(String, String)> =
            serde_json::from_value(owned.job["params"].clone()).unwrap_or_default();
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let dest = self.hooks.transcripts().join(day).join(format!(
            "{}-{run_id}.taken-over-{}.jsonl",
            route.runbook_id(),
            crate::base::identity::new_run_id()
        ));
        let fetched = match store.fetch_transcript(&run_id, &dest) {
            Ok(f) => f,
            Err(e) => {
                self.takeover_failed(
                    &owned,
                    Some(&alert),
                    &format!("its transcript cannot be fetched: {e}; it is tried again when this replica's claim expires"),
                );
                return;
            }
        };
        if fetched.finished.is_some() {
            // It ended; only its owner item was left behind.
            if let Err(e) = store.release_run(&run_id) {
                tracing::error!(run_id, "{e}");
            }
            return;
        }
        let job = Job {
            run_id: run_id.clone(),
            alert: alert.clone(),
            route: route.clone(),
            params,
            transcript: dest.clone(),
            received: Instant::now(),
            resume: true,
        };
        lock(&self.owned).insert(run_id.clone());
        lock(&self.runs).insert(RunRecord {
            run_id: run_id.clone(),
            status: "queued".into(),
            alert: alert.name.clone(),
            source: alert.source.as_str(),
            fingerprint: alert.fingerprint.clone(),
            route: route.name.clone(),
            runbook: route.runbook.clone(),
            environment: route.environment.clone(),
            transcript: dest.display().to_string(),
            received_at: now_utc(),
            started_at: None,
            finished_at: None,
            duration_ms: None,
            first_call_ms: None,
            reason: Some(format!("taken over from {}", owned.replica)),
        });
        let sent = match lock(&self.queue).as_ref() {
            Some(tx) => tx.try_send(job).is_ok(),
            None => false,
        };
        if sent {
            self.metrics.runs_queued.inc();
        } else {
            lock(&self.owned).remove(&run_id);
            lock(&self.runs).finish(&run_id, |r| {
                r.status = "not_started".into();
                r.reason =
                    Some("taken over, but the queue was full: tried again after the lease".into());
            });
        }
    }

    fn takeover_failed(&self, owned: &Owned, alert: Option<&Alert>, why: &str) {
        let detail = format!(
            "run {} of replica {} (which stopped renewing it) cannot be taken over: {why}",
            owned.run_id, owned.replica
        );
        tracing::error!("{detail}");
        let placeholder;
        let alert = match alert {
            Some(a) => a,
            None => {
                placeholder = unknown_alert(&owned.job);
                &placeholder
            }
        };
        self.escalate_blocking(&Escalation {
            alert,
            environment: None,
            runbook: None,
            severity: None,
            reason: "takeover_failed",
            detail: &detail,
            run_id: Some(&owned.run_id),
            transcript: None,
            journal: &self.journal_path(),
        });
    }
}

/// An alert to escalate with when the stored one cannot be read back.
fn unknown_alert(job: &Value) -> Alert {
    Alert {
        source: super::Source::Generic,
        name: job["alert"]["name"]
            .as_str()
            .unwrap_or("unknown alert")
            .to_string(),
        firing: true,
        labels: Default::default(),
        annotations: Default::default(),
        fingerprint: String::new(),
        starts_at: None,
    }
}
