//! Runs: the worker threads that take queued jobs, each run set up and executed to the end,
//! its panic caught and recorded, and how it ended journaled and escalated.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;

use super::super::escalate::Escalation;
use super::super::pool::{Job, RunRecord};
use super::{Hub, Metrics, lock};
use crate::base::clock::now_utc;
use crate::base::console::Console;
use crate::base::error::{Error, Result};
use crate::data::config::Backend;
use crate::data::transcript::JournalEvent;
use crate::sandbox::recorder::Mode;
use crate::services::cloud::{Cloud, CloudAccess};

/// How long an admitted run waits for its target's lock held by another run.
const SERVE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Hub {
    /// Starts the worker threads (the concurrency limit).
    pub(crate) fn start_workers(self: &Arc<Self>) -> Result<()> {
        let Some(rx) = lock(&self.jobs).take() else {
            return Ok(());
        };
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = lock(&self.workers);
        for n in 0..self.hooks.file.server.workers {
            let (hub, rx) = (self.clone(), rx.clone());
            let alive = Alive::new(self.workers_alive.clone());
            let handle = std::thread::Builder::new()
                .name(format!("run-worker-{n}"))
                // Rhai evaluation is recursive; the limits bound the depth, this gives it room.
                .stack_size(8 * 1024 * 1024)
                .spawn(move || {
                    let _alive = alive;
                    loop {
                        // The receiver is only held while waiting, never during a run, so a
                        // panic cannot poison it; if it ever were, the queue is still good.
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(job) = job else { return };
                        hub.metrics.runs_queued.dec();
                        // `execute` catches a run's panic itself; this catches one in its own
                        // bookkeeping, so that nothing ends a worker but the closed queue.
                        let run_id = job.run_id.clone();
                        if let Err(panic) =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                hub.execute(job)
                            }))
                        {
                            tracing::error!(
                                run_id,
                                "a worker recovered from a panic: {}",
                                panic_message(panic.as_ref())
                            );
                            lock(&hub.runs).finish(&run_id, |r| {
                                r.status = "failed".into();
                                r.reason = Some("the worker panicked".into());
                            });
                        }
                    }
                })
                .map_err(|e| Error::Internal(format!("cannot start a worker thread: {e}")))?;
            workers.push(handle);
        }
        Ok(())
    }

    /// Appends the `run_finished` a panicking run never wrote to its transcript (status
    /// failed, the panic as the reason), so the transcript says how the run ended.
    fn close_panicked_transcript(&self, path: &std::path::Path, reason: &str) {
        if !path.exists() {
            // It panicked before its transcript was created: the journal has the record.
            return;
        }
        let redactor = std::rc::Rc::new(crate::base::redact::Redactor::new());
        let closed = crate::data::transcript::TranscriptWriter::open_append(path, redactor)
            .and_then(|(mut writer, events)| {
                use crate::data::transcript::{ErrorRecord, Event, RunStatus};
                if events
                    .iter()
                    .any(|e| matches!(Event::parse(e), Ok(Event::RunFinished { .. })))
                {
                    return Ok(());
                }
                writer.append(
                    &Event::RunFinished {
                        status: RunStatus::Failed,
                        reason: reason.to_string(),
                        duration_ms: None,
                        counts: None,
                        calls: None,
                        mutating_calls_sent: None,
                        undelivered_notifications: None,
                        error: Some(ErrorRecord {
                            message: reason.to_string(),
                            code: Some("panic".into()),
                            ..ErrorRecord::default()
                        }),
                    },
                    crate::data::transcript::Durability::Synced,
                )
            });
        if let Err(e) = closed {
            tracing::error!("cannot record the panicked run's end: {e}");
        }
    }

    /// Runs one job on this (worker) thread, start to finish, and records how it ended.
    fn execute(&self, job: Job) {
        let run_id = job.run_id.clone();
        if self.stopping.load(Ordering::SeqCst) {
            lock(&self.runs).finish(&run_id, |r| {
                r.status = "not_started".into();
                r.reason = Some("the server stopped before a worker was free".into());
            });
            let _ = self.journal.record_blocking(JournalEvent::RunNotStarted {
                run_id: run_id.clone(),
                alert: job.alert.name.clone(),
                reason: "shutting_down".into(),
            });
            self.escalate_blocking(&Escalation {
                alert: &job.alert,
                environment: job.route.environment.as_deref(),
                runbook: Some(&job.route.runbook),
                severity: self.severity_of(&job.route),
                reason: "not_started",
                detail: "the server stopped before the run could start",
                run_id: Some(&run_id),
                transcript: None,
                journal: &self.journal_path(),
            });
            return;
        }
        let abort = Arc::new(AtomicBool::new(false));
        {
            let mut runs = lock(&self.runs);
            runs.set_abort(&run_id, abort.clone());
            runs.update(&run_id, |r| {
                r.status = "running".into();
                r.started_at = Some(now_utc());
            });
        }
        self.metrics.runs_running.inc();
        let started = Instant::now();
        // A panic in a run (a bug in a binding, the engine or a runbook's data) ends that run
        // as failed, recorded and escalated; the worker lives on to take the next alert.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_job(&job, abort)));
        self.metrics.runs_running.dec();
        let elapsed = started.elapsed();
        self.metrics.run_duration.observe(elapsed.as_secs_f64());
        let not_archived = match &result {
            Ok(Ok(done)) => done.not_archived.clone(),
            _ => None,
        };
        let (status, reason, first_call, tripped, env, undelivered_count) = match result {
            Ok(Ok(done)) => (
                done.status,
                done.reason,
                done.first_call,
                done.tripped,
                Some(done.environment),
                done.undelivered,
            ),
            Ok(Err(e)) => ("error".to_string(), e.to_string(), None, None, None, 0),
            Err(panic) => {
                let reason = format!("the run panicked: {}", panic_message(panic.as_ref()));
                self.metrics.runs_panicked.inc();
                self.close_panicked_transcript(&job.transcript, &reason);
                ("failed".to_string(), reason, None, None, None, 0)
            }
        };
        let first_call_ms =
            first_call.map(|t| t.saturating_duration_since(job.received).as_secs_f64() * 1000.0);
        if let Some(ms) = first_call_ms {
            self.metrics.first_call_latency.observe(ms / 1000.0);
        }
        Metrics::inc(&self.metrics.runs, &[("status", &status)]);
        if let Some(rule) = tripped {
            Metrics::inc(&self.metrics.guardrail_trips, &[("rule", rule)]);
        }
        lock(&self.runs).finish(&run_id, |r| {
            r.status = status.clone();
            r.finished_at = Some(now_utc());
            r.duration_ms = Some(elapsed.as_millis() as u64);
            r.first_call_ms = first_call_ms;
            r.reason = (!reason.is_empty()).then(|| reason.clone());
            if env.is_some() {
                r.environment = env.clone();
            }
        });
        let transcript = job.transcript.display().to_string();
        let undelivered = undelivered_notifications(undelivered_count, &job.transcript);
        let _ = self.journal.record_blocking(JournalEvent::RunFinished {
            run_id: run_id.clone(),
            alert: job.alert.name.clone(),
            fingerprint: job.alert.fingerprint.clone(),
            route: job.route.name.clone(),
            runbook: job.route.runbook.clone(),
            status: status.clone(),
            reason: reason.clone(),
            guardrail: tripped.map(str::to_string),
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            first_call_ms,
            transcript: transcript.clone(),
            undelivered_notifications: undelivered.clone(),
        });
        let undelivered_note = (!undelivered.is_empty()).then(|| {
            format!(
                "{} notification(s) of the run could not be delivered: {}",
                undelivered_count,
                undelivered.join("; ")
            )
        });
        if status == "ok"
            && let Some(note) = &undelivered_note
        {
            // The run did its work, but whoever it was meant to tell was not told.
            self.escalate_blocking(&Escalation {
                alert: &job.alert,
                environment: env.as_deref().or(job.route.environment.as_deref()),
                runbook: Some(&job.route.runbook),
                severity: self.severity_of(&job.route),
                reason: "notification_undelivered",
                detail: note,
                run_id: Some(&run_id),
                transcript: Some(&transcript),
                journal: &self.journal_path(),
            });
        }
        if let Some(detail) = &not_archived {
            // The audit trail did not leave this host: a person must know before it is lost.
            self.escalate_blocking(&Escalation {
                alert: &job.alert,
                environment: env.as_deref().or(job.route.environment.as_deref()),
                runbook: Some(&job.route.runbook),
                severity: self.severity_of(&job.route),
                reason: "transcript_not_archived",
                detail,
                run_id: Some(&run_id),
                transcript: Some(&transcript),
                journal: &self.journal_path(),
            });
        }
        if status != "ok" {
            let token = match tripped {
                Some(rule) => rule.to_string(),
                None => format!("run_{status}"),
            };
            let mut detail = if reason.is_empty() {
                format!("the run ended {status}")
            } else {
                format!("the run ended {status}: {reason}")
            };
            if let Some(note) = &undelivered_note {
                detail.push_str(&format!("; {note}"));
            }
            self.escalate_blocking(&Escalation {
                alert: &job.alert,
                environment: env.as_deref().or(job.route.environment.as_deref()),
                runbook: Some(&job.route.runbook),
                severity: self.severity_of(&job.route),
                reason: &token,
                detail: &detail,
                run_id: Some(&run_id),
                transcript: Some(&transcript),
                journal: &self.journal_path(),
            });
        }
    }

    fn run_job(&self, job: &Job, abort: Arc<AtomicBool>) -> Result<Finished> {
        use crate::run::launch::{Driving, Launch, Protection, Resuming, Source, TargetLock};
        // With the aws backend the run is owned in the table until it ends, so that another
        // replica takes it over if this one dies.
        let _owner = self.own_run(job)?;
        let route = &job.route;
        let planned = self.planned.get(&route.name).ok_or_else(|| {
            Error::Internal(format!("route {} was not checked at start-up", route.name))
        })?;
        let env = planned.env.clone();
        let cloud = match (env.backend, self.sims.get(&env.name)) {
            (Backend::Sim, Some(sim)) => {
                CloudAccess::connected(env, Cloud::Sim(Box::new(sim.share())))
            }
            _ => CloudAccess::new(env),
        };
        let g = &self.hooks.file.guardrails;
        // Debug builds only: a run that panics, for the tests that the worker outlives it.
        #[cfg(debug_assertions)]
        let observers = test_panic::observer(&job.alert).into_iter().collect();
        #[cfg(not(debug_assertions))]
        let observers = Vec::new();
        let trigger = json!({
            "source": job.alert.source.as_str(),
            "alert": job.alert.name,
            "fingerprint": job.alert.fingerprint,
            "labels": job.alert.labels,
            "starts_at": job.alert.starts_at,
            "route": route.name,
            "allow_confirm": route.allow_confirm,
            "allow_protected": route.allow_protected,
            "journal": self.journal_path(),
        });
        let done = Launch {
            mode: Mode::Run,
            cloud,
            // Located and checked against its pin when the server started.
            source: Source::Located {
                file: planned.file.clone(),
                target: planned.target.clone(),
            },
            params: job.params.clone(),
            limits: crate::sandbox::recorder::Limits {
                max_resources: route.max_resources.or(g.max_resources),
                kill_switch: self.hooks.kill_switch(),
                kill_parameter: g.kill_switch_parameter.clone(),
            },
            // Admission refused protected environments without an allowing route; this is that
            // route's confirmation, recorded in the transcript's trigger.
            protection: Protection::Configured(route.allow_protected),
            driving: Driving::Unattended {
                yes: route
                    .allow_confirm
                    .then(|| format!("hook route {:?} (allow_confirm)", route.name)),
                approval_timeout: None,
            },
            operator: format!("hook:{}", route.name),
            slack_lifecycle: true,
            observers,
            run_id: job.run_id.clone(),
            transcript: job.transcript.clone(),
            // A hook run acts on the world in real time (the shared sim keeps its own clock).
            simulated_clock: false,
            // Nobody watches a hook run: the journal, the transcript and escalations speak.
            console: Console::silent(),
            abort,
            // The server owns the signals (SIGTERM drains it; its shutdown sets `abort`).
            ctrl_c: false,
            verify_account: true,
            // A run taken over continues from its archived transcript, never sending a
            // finished write again; an unconfirmed one stops it for a person (escalated).
            resume: job.resume.then_some(Resuming {
                allow_changed: false,
            }),
            trigger: Some(trigger),
            // A run of another route (or another alert) on this target finishes first: runs
            // that guardrails admitted wait their turn (bounded), a person's CLI run is refused.
            lock: Some(TargetLock {
                store: self.store.clone(),
                wait: Some(SERVE_LOCK_WAIT),
                targets: Some(route.lock_target(&job.alert)),
                // Another replica takes the run over if this one dies (aws backend).
                archive_intents: true,
            }),
        }
        .run()?;
        let host = &done.rb.host;
        Ok(Finished {
            status: done.report.status.as_str().to_string(),
            reason: done.report.reason,
            first_call: host.recorder.first_call(),
            tripped: host.guardrails.tripped(),
            environment: host.cloud.environment().name.clone(),
            undelivered: done.report.undelivered_notifications,
            not_archived: match &done.archived {
                // The way out first: the message is clipped.
                Some(crate::services::state::upload::Archived::Pending { reason, .. }) => {
                    Some(format!(
                        "the run's transcript is not archived yet (`runbook transcript upload` on this host, or this server within a minute, finishes it): {reason}"
                    ))
                }
                _ => None,
            },
        })
    }

    pub(crate) fn runs_list(&self, limit: usize) -> Vec<RunRecord> {
        lock(&self.runs).list(limit)
    }

    pub(crate) fn run_record(&self, run_id: &str) -> Option<RunRecord> {
        lock(&self.runs).get(run_id).cloned()
    }

    /// With the aws backend, the newest `limit` runs of every replica (the table's records,
    /// this replica's own as it holds them now, which may be newer than what it has stored
    /// yet), newest first; None with the local backend (this replica's runs are all there is).
    /// Blocks on the table: call it off the async workers.
    pub(crate) fn team_runs(&self, limit: usize) -> Option<Result<Vec<serde_json::Value>>> {
        let store = self.store.shared_guardrails()?;
        Some(store.run_records(limit).map(|stored| {
            let own: Vec<serde_json::Value> = self
                .runs_list(limit)
                .iter()
                .filter_map(|r| serde_json::to_value(r).ok())
                .collect();
            let mut all: std::collections::BTreeMap<String, serde_json::Value> = stored
                .into_iter()
                .map(|r| (r["run_id"].as_str().unwrap_or_default().to_string(), r))
                .collect();
            for mut r in own {
                let id = r["run_id"].as_str().unwrap_or_default().to_string();
                if let Some(replica) = all.get(&id).map(|s| s["replica"].clone()) {
                    r["replica"] = replica;
                }
                all.insert(id, r);
            }
            // Run ids are ULIDs: newest last in key order.
            all.into_values().rev().take(limit).collect()
        }))
    }

    /// With the aws backend, the run `run_id` whichever replica has it (this one's own record
    /// first); None with the local backend. Blocks on the table.
    pub(crate) fn team_run(&self, run_id: &str) -> Option<Result<Option<serde_json::Value>>> {
        let store = self.store.shared_guardrails()?;
        if let Some(own) = self.run_record(run_id) {
            return Some(Ok(serde_json::to_value(own).ok()));
        }
        Some(store.run_record(run_id))
    }
}

struct Finished {
    status: String,
    reason: String,
    first_call: Option<Instant>,
    tripped: Option<&'static str>,
    environment: String,
    /// Notifications the run could not deliver (the run report's count).
    undelivered: usize,
    /// Why the transcript is not archived yet (the aws backend), escalated.
    not_archived: Option<String>,
}

/// What a panic carried, as text (a `&str` or a `String` payload; anything else is unnamed).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    super::clip(&text)
}

/// The run's notifications that could not be delivered: as many as the run report counts,
/// each named `binding (error code)` from the transcript's failed Slack/Teams calls where it can
/// be. The run may end ok without them; the person it meant to tell was not told, so `serve`
/// escalates.
fn undelivered_notifications(count: usize, transcript: &std::path::Path) -> Vec<String> {
    if count == 0 {
        return Vec::new();
    }
    let events = crate::data::transcript::read_verified(transcript)
        .map(|(events, _)| events)
        .unwrap_or_default();
    let mut named: Vec<String> = events
        .iter()
        .filter_map(|e| match crate::data::transcript::Event::parse(e) {
            Ok(crate::data::transcript::Event::Call {
                binding,
                result,
                error,
                ..
            }) => Some((binding, result, error)),
            _ => None,
        })
        .filter_map(|(binding, result, error)| {
            if !["slack::", "teams::"]
                .iter()
                .any(|p| binding.starts_with(p))
            {
                return None;
            }
            // A failed send is an error, or (not `required`) a result with `ok: false`.
            let code = match (error, result) {
                (Some(error), _) => error.code.unwrap_or_else(|| "error".into()),
                (None, Some(result)) if result["ok"] == false => {
                    result["code"].as_str().unwrap_or("error").to_string()
                }
                _ => return None,
            };
            Some(format!("{binding} ({})", super::clip(&code)))
        })
        .take(count.min(20))
        .collect();
    // Not every undelivered message is a failed call in the transcript (a lifecycle post, say).
    let unnamed = count.min(20).saturating_sub(named.len());
    named.extend(std::iter::repeat_n("a notification".to_string(), unnamed));
    named
}

/// A test-only way to make a run panic mid-way (after `run_started` is on record), so the
/// tests can show a worker surviving it through the real binary. Compiled into debug builds
/// only: a release binary ignores the variable.
#[cfg(debug_assertions)]
mod test_panic {
    use crate::data::transcript::{RunStatus, StepStatus};
    use crate::run::executor::RunObserver;

    pub(super) const VAR: &str = "RUNBOOK_TEST_PANIC_RUN_FOR_INSTANCE";

    struct Panics;

    impl RunObserver for Panics {
        fn run_started(&mut self, _headline: String) {
            panic!("test panic ({VAR})");
        }
        fn step_finished(
            &mut self,
            _step: &crate::sandbox::declare::Step,
            _status: StepStatus,
            _error: Option<&crate::sandbox::engine::ErrorInfo>,
        ) {
        }
        fn run_finished(&mut self, _status: RunStatus, _summary: String) {}
    }

    /// A panicking observer when the alert's `instance_id` label is the variable's value.
    pub(super) fn observer(alert: &super::super::Alert) -> Option<Box<dyn RunObserver>> {
        let id = std::env::var(VAR).ok()?;
        (alert.labels.get("instance_id") == Some(&id))
            .then(|| Box::new(Panics) as Box<dyn RunObserver>)
    }
}

/// Counts a worker thread as alive until it ends (by returning or by a panic unwinding it).
struct Alive(Arc<AtomicUsize>);

impl Alive {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Alive(count)
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_counted_out_however_its_thread_ends() {
        let alive = Arc::new(AtomicUsize::new(0));
        let ends_normally = Alive::new(alive.clone());
        let panics = Alive::new(alive.clone());
        assert_eq!(alive.load(Ordering::SeqCst), 2);
        std::thread::spawn(move || drop(ends_normally))
            .join()
            .unwrap();
        let joined = std::thread::spawn(move || {
            let _alive = panics;
            panic!("a bug outside any run");
        })
        .join();
        assert!(joined.is_err());
        // /healthz compares this with the configured workers.
        assert_eq!(alive.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_panic_message_is_text_and_clipped() {
        let long = std::panic::catch_unwind(|| panic!("{}", "x\n".repeat(1000))).unwrap_err();
        let text = panic_message(long.as_ref());
        assert!(!text.contains('\n') && text.len() <= crate::front::hooks::MAX_DETAIL + 3);
        let fixed = std::panic::catch_unwind(|| panic!("fixed")).unwrap_err();
        assert_eq!(panic_message(fixed.as_ref()), "fixed");
    }
}
