//! Admission: each alert routed, checked against the guardrails and queued as a run (or
//! refused), and the outcome journaled; with the guardrail state it saves.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::super::guard::{Candidate, Refusal};
use super::super::pool::{Job, RunRecord};
use super::{Alert, Hub, Metrics, lock};
use crate::base::clock::now_utc;
use crate::data::transcript::JournalEvent;

/// What happened to one alert (the receiver's answer lists one per alert).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AlertOutcome {
    pub(crate) alert: String,
    pub(crate) fingerprint: String,
    /// `accepted`, `resolved`, `unmatched`, `deduplicated`, `refused` or `queue_full`.
    pub(crate) outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) transcript: Option<String>,
}

impl AlertOutcome {
    /// Whether the sender should retry: the alert was not handled for good (no room in the
    /// queue, shutting down, or its record could not be written).
    pub(crate) fn retry(&self) -> bool {
        self.outcome == "queue_full"
            || matches!(
                self.reason.as_deref(),
                Some("shutting_down" | "journal_unavailable" | "state_unavailable")
            )
    }

    fn new(alert: &Alert, outcome: &'static str) -> Self {
        AlertOutcome {
            alert: alert.name.clone(),
            fingerprint: alert.fingerprint.clone(),
            outcome,
            reason: None,
            detail: None,
            route: None,
            run_id: None,
            transcript: None,
        }
    }
}

impl Hub {
    /// Routes and admits each alert, queueing the runs it may start, and journals each outcome
    /// before returning. `via` names the request (for the journal); `received` is when it
    /// arrived (the alert-to-first-call latency counts from there).
    ///
    /// The outcome is journaled after the run is queued, so a fast run's `run_finished` can
    /// precede its `alert` line; both carry the run id.
    pub(crate) async fn admit_all(
        self: &Arc<Self>,
        alerts: Vec<Alert>,
        via: &str,
        received: Instant,
    ) -> Vec<AlertOutcome> {
        let mut outcomes = Vec::with_capacity(alerts.len());
        for alert in alerts {
            // While the journal cannot be written, nothing is decided without a record: the
            // alert is refused with a 503 (the sender retries), and the attempt to journal
            // that refusal is what finds out when the journal works again.
            let mut outcome = if self.journal.writable() {
                self.admit(&alert, received)
            } else {
                let mut out = AlertOutcome::new(&alert, "refused");
                out.reason = Some("journal_unavailable".into());
                out.detail = Some("the hook journal cannot be written".into());
                Metrics::inc(
                    &self.metrics.alerts,
                    &[("outcome", "refused"), ("reason", "journal_unavailable")],
                );
                out
            };
            let event = JournalEvent::Alert {
                via: via.to_string(),
                source: alert.source.as_str().to_string(),
                alert: alert.name.clone(),
                firing: alert.firing,
                fingerprint: alert.fingerprint.clone(),
                labels: json!(alert.labels),
                outcome: outcome.outcome.to_string(),
                reason: outcome.reason.clone(),
                detail: outcome.detail.clone(),
                route: outcome.route.clone(),
                run_id: outcome.run_id.clone(),
                transcript: outcome.transcript.clone(),
            };
            if let Err(e) = self.journal.record(event).await {
                tracing::error!(
                    alert = %super::clip(&alert.name),
                    "the alert could not be journaled: {e}"
                );
                // Answered 503: an accepted run goes ahead (its retry is deduplicated), but
                // the sender is told the decision is not on record.
                if outcome.outcome != "accepted" {
                    outcome.outcome = "refused";
                }
                outcome.reason = Some("journal_unavailable".into());
                outcome.detail = Some(format!("the hook journal cannot be written: {e}"));
            }
            outcomes.push(outcome);
        }
        outcomes
    }

    fn admit(self: &Arc<Self>, alert: &Alert, received: Instant) -> AlertOutcome {
        let source = alert.source.as_str();
        Metrics::inc(&self.metrics.alerts_received, &[("source", source)]);
        let mut out = AlertOutcome::new(alert, "accepted");
        let count = |out: &AlertOutcome| {
            Metrics::inc(
                &self.metrics.alerts,
                &[
                    ("outcome", out.outcome),
                    ("reason", out.reason.as_deref().unwrap_or("")),
                ],
            );
        };
        if !alert.firing {
            out.outcome = "resolved";
            count(&out);
            return out;
        }
        if !self.accepting() {
            out.outcome = "refused";
            out.reason = Some("shutting_down".into());
            count(&out);
            return out;
        }
        let Some(route) = self.hooks.route(alert) else {
            out.outcome = "unmatched";
            count(&out);
            return out;
        };
        out.route = Some(route.name.clone());
        let filled = route
            .params_for(alert)
            .and_then(|p| Ok((p, route.target_for(alert)?)));
        let (params, target) = match filled {
            Ok(x) => x,
            Err(why) => {
                out.outcome = "refused";
                out.reason = Some("bad_params".into());
                out.detail = Some(why);
                count(&out);
                self.escalate_refusal(alert, route, &out);
                return out;
            }
        };
        let planned = self.planned.get(&route.name);
        let kill_switch = self.hooks.kill_switch_set();
        let protected_refused = planned.is_some_and(|p| p.env.protected) && !route.allow_protected;
        let candidate = Candidate {
            fingerprint: &alert.fingerprint,
            runbook: route.runbook_id(),
            target: &target,
            cooldown: route.cooldown,
            protected_refused,
            kill_switch,
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut gate = lock(&self.gate);
        let admitted = match gate.admit(&candidate, now_ms) {
            Ok(admitted) => admitted,
            Err((refusal, opened)) => {
                let breakers = gate.state.breakers.len();
                drop(gate);
                self.metrics.breakers_open.set(breakers as i64);
                out.outcome = if refusal == Refusal::Deduplicated {
                    "deduplicated"
                } else {
                    "refused"
                };
                out.reason = Some(refusal.reason().into());
                out.detail = Some(refusal.describe());
                if refusal != Refusal::Deduplicated {
                    Metrics::inc(&self.metrics.guardrail_trips, &[("rule", refusal.reason())]);
                }
                if opened.is_some() {
                    self.save_state();
                }
                count(&out);
                if refusal.escalates() {
                    self.escalate_refusal(alert, route, &out);
                }
                return out;
            }
        };
        // Admitted: queue it, still holding the gate so a full queue can undo the admission
        // (the sender retries a 503, and the retry must not be deduplicated away).
        let run_id = crate::base::identity::new_run_id();
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let transcript = self
            .hooks
            .transcripts()
            .join(day)
            .join(format!("{}-{run_id}.jsonl", route.runbook_id()));
        let job = Job {
            run_id: run_id.clone(),
            alert: alert.clone(),
            route: route.clone(),
            params,
            transcript: transcript.clone(),
            received,
            resume: false,
        };
        let record = RunRecord {
            run_id: run_id.clone(),
            status: "queued".into(),
            alert: alert.name.clone(),
            source: alert.source.as_str(),
            fingerprint: alert.fingerprint.clone(),
            route: route.name.clone(),
            runbook: route.runbook.clone(),
            environment: route.environment.clone(),
            transcript: transcript.display().to_string(),
            received_at: now_utc(),
            started_at: None,
            finished_at: None,
            duration_ms: None,
            first_call_ms: None,
            reason: None,
        };
        lock(&self.runs).insert(record);
        let sent = match lock(&self.queue).as_ref() {
            Some(tx) => tx.try_send(job).map_err(|e| match e {
                mpsc::TrySendError::Full(_) => "queue_full",
                mpsc::TrySendError::Disconnected(_) => "shutting_down",
            }),
            None => Err("shutting_down"),
        };
        match sent {
            Ok(()) => {
                gate.dirty = true;
                drop(gate);
                self.metrics.runs_queued.inc();
                out.run_id = Some(run_id);
                out.transcript = Some(transcript.display().to_string());
                count(&out);
            }
            Err(why) => {
                gate.cancel(&candidate, admitted);
                drop(gate);
                lock(&self.runs).finish(&run_id, |r| {
                    r.status = "not_started".into();
                    r.reason = Some(why.into());
                });
                out.outcome = if why == "queue_full" {
                    "queue_full"
                } else {
                    "refused"
                };
                out.reason = Some(why.into());
                count(&out);
            }
        }
        out
    }

    /// Saves the guardrail state now (breakers opened or reset must survive a crash).
    pub(crate) fn save_state(&self) {
        // Copied under the lock, written outside it: admissions must not wait on the disk.
        let state = {
            let mut gate = lock(&self.gate);
            gate.dirty = false;
            gate.state.clone()
        };
        if let Err(e) = super::guard::save_state(&self.hooks.state_path(), &state) {
            tracing::error!("{e}");
            lock(&self.gate).dirty = true;
        }
    }

    /// Saves the guardrail state if it changed (called periodically and at shutdown).
    pub(crate) fn save_state_if_dirty(&self) {
        if lock(&self.gate).dirty {
            self.save_state();
        }
    }

    /// Closes breakers (all, or one runbook's; `*` is the overall one), recorded with who asked.
    /// With the aws backend they close for every replica, or for none (the error says why).
    pub(crate) async fn reset_breakers(
        &self,
        scope: Option<&str>,
        by: &str,
    ) -> std::result::Result<Vec<String>, String> {
        let closed = {
            let mut gate = lock(&self.gate);
            let closed = gate.reset(scope)?;
            self.metrics
                .breakers_open
                .set(gate.state.breakers.len() as i64);
            closed
        };
        self.save_state();
        let _ = self
            .journal
            .record(JournalEvent::BreakerReset {
                closed: closed.clone(),
                by: by.to_string(),
            })
            .await;
        Ok(closed)
    }
}
