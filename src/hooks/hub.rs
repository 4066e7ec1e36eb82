//! The hook hub: authentication, routing, admission and execution of alert-started runs, shared
//! by `runbook serve` (HTTP) and `runbook hook` (one payload on stdin).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::config::{Hooks, Route};
use super::escalate::{Admission, Escalation, Escalator, Limiter};
use super::guard::{Candidate, Gate, Refusal};
use super::journal::Journal;
use super::metrics::Metrics;
use super::pool::{Job, RunRecord, RunTable};
use super::{Alert, Rejection, Source, sns};
use crate::catalog::{self, Target};
use crate::cloud::{Cloud, CloudAccess, sim::SimCloud};
use crate::config::{Backend, Config};
use crate::console::Console;
use crate::engine::Host;
use crate::error::{Error, Result};
use crate::executor::{Executor, RunOptions, Unattended};
use crate::recorder::Mode;
use crate::transcript::now_utc;

/// How long an admitted run waits for its target's lock held by another run.
const SERVE_LOCK_WAIT: Duration = Duration::from_secs(60);

/// The shared secrets, read from the environment variables hooks.toml names.
struct Secrets {
    alertmanager: Option<String>,
    generic: Option<String>,
    admin: Option<String>,
}

fn secret(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// What happened to one alert (the receiver's answer lists one per alert).
#[derive(Debug, Clone, Serialize)]
pub struct AlertOutcome {
    pub alert: String,
    pub fingerprint: String,
    /// `accepted`, `resolved`, `unmatched`, `deduplicated`, `refused` or `queue_full`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
}

impl AlertOutcome {
    /// Whether the sender should retry: the alert was not handled for good (no room in the
    /// queue, shutting down, or its record could not be written).
    pub fn retry(&self) -> bool {
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

/// A route checked at start-up: its runbook located, its environment selected (once: each run
/// gets a copy, so no run re-reads runbook.toml's fleet fixture).
struct Planned {
    file: PathBuf,
    target: Target,
    env: crate::config::Environment,
    /// The runbook's declared severity (escalations use it when the alert has none).
    severity: String,
}

/// Signatures and SNS message ids seen, until when they could still be replayed (Unix
/// seconds), and when the map was last pruned.
#[derive(Default)]
struct ReplayMemory {
    until: HashMap<String, i64>,
    pruned_at: i64,
}

pub struct Hub {
    pub hooks: Hooks,
    planned: BTreeMap<String, Planned>,
    gate: Mutex<Gate>,
    pub journal: Journal,
    pub metrics: Metrics,
    /// Shared state (`[state]`): target locks; the guardrails go through `gate`.
    store: crate::state::Store,
    escalator: Escalator,
    /// One simulated cloud per sim environment, shared by the runs on it.
    sims: BTreeMap<String, SimCloud>,
    secrets: Secrets,
    sns_trust: sns::SnsTrust,
    certs: sns::CertCache,
    http: reqwest::Client,
    /// Signatures (generic) and message ids (SNS) seen: after their window, their timestamps
    /// refuse them.
    seen: Mutex<ReplayMemory>,
    pub runs: Mutex<RunTable>,
    queue: Mutex<Option<mpsc::SyncSender<Job>>>,
    jobs: Mutex<Option<mpsc::Receiver<Job>>>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Worker threads alive (each counts itself out when its thread ends, however it ends).
    workers_alive: Arc<AtomicUsize>,
    accepting: AtomicBool,
    stopping: AtomicBool,
    /// The runtime escalations are sent on (worker threads have none of their own).
    rt: tokio::runtime::Handle,
    escalations: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Hub {
    /// Checks the configuration whole (every route's runbook, pin, parameters and environment)
    /// and opens the journal. Nothing is listening yet.
    pub fn new(
        hooks: Hooks,
        dirs: Vec<PathBuf>,
        config: Config,
        rt: tokio::runtime::Handle,
    ) -> Result<Arc<Hub>> {
        let planned = plan_all(&hooks, &dirs, &config)?;
        let mut sims = BTreeMap::new();
        for env in planned.values().map(|p| &p.env) {
            if env.backend == Backend::Sim && !sims.contains_key(&env.name) {
                let sim = SimCloud::for_environment(env)
                    .map_err(|e| crate::cloud::setup_error(env, e))?;
                sims.insert(env.name.clone(), sim);
            }
        }
        let auth = &hooks.file.auth;
        let secrets = Secrets {
            alertmanager: secret(&auth.alertmanager_token_env),
            generic: secret(&auth.generic_secret_env),
            admin: secret(&auth.admin_token_env),
        };
        let esc = &hooks.file.escalation;
        let mut escalator = Escalator::new(
            config.notifications(crate::notify::Delivery::Send),
            esc.channel.clone(),
            esc.mention.clone(),
            Limiter::new(esc.dedupe_window, esc.max_per_hour),
        );
        escalator.add_secrets(
            [&secrets.alertmanager, &secrets.generic, &secrets.admin]
                .into_iter()
                .flatten()
                .cloned(),
        );
        let sns_trust = sns::SnsTrust {
            topics: hooks.file.sns.topics.clone(),
            cert_url: pattern(
                &hooks.path,
                hooks.file.sns.cert_url.as_deref(),
                sns::DEFAULT_CERT_URL_PATTERN,
            )?,
            subscribe_url: pattern(
                &hooks.path,
                hooks.file.sns.subscribe_url.as_deref(),
                sns::DEFAULT_SUBSCRIBE_URL_PATTERN,
            )?,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the HTTP client: {e}")))?;
        let state = super::guard::load_state(&hooks.state_path())?;
        let store = crate::state::Store::open(config.state())?;
        let shared = store.shared_guardrails();
        let all_secrets = escalator.secrets();
        let journal_path = hooks
            .transcripts()
            .join(format!("journal-{}.jsonl", crate::executor::new_run_id()));
        let journal = Journal::create(
            &journal_path,
            all_secrets,
            json!({
                "type": "journal_started",
                "config": hooks.path.display().to_string(),
                "routes": hooks.file.routes.iter().map(|r| json!({"name": r.name, "alert": r.alert, "runbook": r.runbook})).collect::<Vec<_>>(),
                "pid": std::process::id(),
                "tool": format!("runbook {}", env!("CARGO_PKG_VERSION")),
            }),
        )?;
        let (tx, rx) = mpsc::sync_channel(hooks.file.server.queue);
        let metrics = Metrics::default();
        metrics.breakers_open.set(state.breakers.len() as i64);
        Ok(Arc::new(Hub {
            gate: Mutex::new(Gate::new(hooks.file.guardrails.clone(), state).with_shared(shared)),
            runs: Mutex::new(RunTable::new(hooks.file.server.history)),
            hooks,
            planned,
            store,
            journal,
            metrics,
            escalator,
            sims,
            secrets,
            sns_trust,
            certs: sns::CertCache::new(http.clone()),
            http,
            seen: Mutex::new(ReplayMemory::default()),
            queue: Mutex::new(Some(tx)),
            jobs: Mutex::new(Some(rx)),
            workers: Mutex::new(Vec::new()),
            workers_alive: Arc::new(AtomicUsize::new(0)),
            accepting: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            rt,
            escalations: Mutex::new(Vec::new()),
        }))
    }

    /// Endpoints that refuse everything because their secret is not set (warned about by
    /// `serve`; `runbook hook` needs none of them).
    pub fn closed_endpoints(&self) -> Vec<String> {
        let auth = &self.hooks.file.auth;
        let s = &self.secrets;
        let mut closed: Vec<String> = [
            (
                &auth.alertmanager_token_env,
                &s.alertmanager,
                "/hooks/alertmanager refuses every request",
            ),
            (
                &auth.generic_secret_env,
                &s.generic,
                "/hooks/generic refuses every request",
            ),
            (
                &auth.admin_token_env,
                &s.admin,
                "/admin refuses every request and GET /runs is open",
            ),
        ]
        .into_iter()
        .filter(|(_, value, _)| value.is_none())
        .map(|(var, _, what)| format!("{var} is not set: {what}"))
        .collect();
        if self.hooks.file.sns.topics.is_empty() {
            closed.push("no SNS topics are allow-listed: /hooks/sns refuses every message".into());
        }
        closed
    }

    /// Starts the worker threads (the concurrency limit).
    pub fn start_workers(self: &Arc<Self>) -> Result<()> {
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
        let redactor = std::rc::Rc::new(crate::redact::Redactor::new());
        let closed = crate::transcript::TranscriptWriter::open_append(path, redactor).and_then(
            |(mut writer, events)| {
                if events.iter().any(|e| e["type"] == "run_finished") {
                    return Ok(());
                }
                writer.append(
                    &json!({
                        "type": "run_finished",
                        "status": "failed",
                        "reason": reason,
                        "error": { "code": "panic", "message": reason },
                    }),
                    crate::transcript::Durability::Synced,
                )
            },
        );
        if let Err(e) = closed {
            tracing::error!("cannot record the panicked run's end: {e}");
        }
    }

    pub fn journal_path(&self) -> String {
        self.journal.path().display().to_string()
    }

    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    // ---- authentication -------------------------------------------------------------------

    /// Checks the bearer token Alertmanager sends.
    pub fn check_bearer(&self, header: Option<&str>) -> std::result::Result<(), Rejection> {
        check_token(self.secrets.alertmanager.as_deref(), header, "alertmanager")
    }

    /// Checks the admin token (`GET /runs`, `POST /admin/...`). Without one configured, the
    /// read-only endpoints are open and the admin ones closed.
    pub fn check_admin(
        &self,
        header: Option<&str>,
        write: bool,
    ) -> std::result::Result<(), Rejection> {
        if self.secrets.admin.is_none() && !write {
            return Ok(());
        }
        check_token(self.secrets.admin.as_deref(), header, "admin")
    }

    /// Checks a generic webhook's signature, freshness, and that it was not seen before.
    /// Returns the key it is remembered under: forget it ([`Hub::forget`]) when the request is
    /// answered with a "retry" (503), or the sender's retry would be refused as a replay.
    pub fn check_generic(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> std::result::Result<String, Rejection> {
        let Some(key) = self.secrets.generic.as_deref() else {
            return Err(Rejection::Unauthenticated(format!(
                "no key configured (set {})",
                self.hooks.file.auth.generic_secret_env
            )));
        };
        let now = chrono::Utc::now().timestamp();
        let window = self.hooks.file.auth.replay_window;
        let mac = super::generic::verify(key.as_bytes(), timestamp, signature, body, now, window)?;
        // The decoded MAC, not the header's text: `ABC…` and `abc…` are one signature.
        let replay_key = format!("generic:{}", hex::encode(mac));
        self.first_sighting(&replay_key, now, window)?;
        Ok(replay_key)
    }

    /// Refuses what was seen within `window` (the same signed request sent twice). The key is
    /// remembered at once, so two copies racing in are not both admitted.
    fn first_sighting(
        &self,
        key: &str,
        now: i64,
        window: Duration,
    ) -> std::result::Result<(), Rejection> {
        let mut seen = lock(&self.seen);
        // Pruned once a second at most (a scan per request would be quadratic under load).
        if seen.pruned_at != now {
            seen.until.retain(|_, until| *until >= now);
            seen.pruned_at = now;
        }
        if seen.until.get(key).is_some_and(|until| *until >= now) {
            return Err(Rejection::Unauthenticated("replayed request".into()));
        }
        // Remembered for the window on both sides of now: a timestamp can be that far ahead.
        let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        seen.until.insert(
            key.to_string(),
            now.saturating_add(window.saturating_mul(2)),
        );
        Ok(())
    }

    /// Forgets a request remembered by the replay check: it was answered "retry later" (503),
    /// so its retry is the same request, and must be judged afresh.
    pub fn forget(&self, replay_key: &str) {
        lock(&self.seen).until.remove(replay_key);
    }

    /// An SNS message: verified, then a subscription confirmed or a CloudWatch alarm returned.
    /// The replay key (see [`Hub::check_generic`]) comes with the alerts.
    pub async fn sns_message(
        &self,
        body: &[u8],
    ) -> std::result::Result<(Vec<Alert>, String), Rejection> {
        let unauth = |e: sns::SnsError| Rejection::Unauthenticated(format!("sns: {e}"));
        let envelope = sns::parse(body).map_err(|e| Rejection::Malformed(e.to_string()))?;
        self.certs
            .verify(&envelope, &self.sns_trust)
            .await
            .map_err(unauth)?;
        // A signed message stays valid forever, so its age is what stops a replay: SNS's own
        // retries of an HTTP delivery end well within the window; the MessageId is remembered
        // for the window, so a retry of a message already handled is processed once.
        let now = chrono::Utc::now().timestamp();
        let max_age = self.hooks.file.sns.max_age;
        let sent = chrono::DateTime::parse_from_rfc3339(&envelope.timestamp)
            .map_err(|_| Rejection::Malformed("sns: Timestamp is not RFC 3339".into()))?
            .timestamp();
        let max_age_secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        if now.saturating_sub(sent) > max_age_secs || sent.saturating_sub(now) > 300 {
            return Err(Rejection::Unauthenticated(format!(
                "sns: message sent at {} is outside the accepted age of {}",
                envelope.timestamp,
                humantime::format_duration(max_age)
            )));
        }
        let replay_key = format!("sns:{}", envelope.message_id);
        self.first_sighting(&replay_key, now, max_age)?;
        match envelope.kind {
            sns::Kind::SubscriptionConfirmation => {
                let result =
                    sns::confirm_subscription(&self.http, &envelope, &self.sns_trust).await;
                let _ = self
                    .journal
                    .record(json!({
                        "type": "sns_subscription",
                        "topic": envelope.topic_arn,
                        "confirmed": result.is_ok(),
                        "error": result.as_ref().err().map(|e| e.to_string()),
                    }))
                    .await;
                if let Err(e) = result {
                    // SNS re-sends the confirmation; that retry must not be a "replay".
                    self.forget(&replay_key);
                    return Err(Rejection::Malformed(format!("sns: {e}")));
                }
                Ok((Vec::new(), replay_key))
            }
            sns::Kind::UnsubscribeConfirmation => {
                let _ = self
                    .journal
                    .record(json!({ "type": "sns_unsubscribed", "topic": envelope.topic_arn }))
                    .await;
                Ok((Vec::new(), replay_key))
            }
            sns::Kind::Notification => {
                let alarm = sns::cloudwatch_alarm(&envelope.message)
                    .map_err(|e| Rejection::Malformed(format!("sns: {e}")))?;
                Ok((vec![alarm_to_alert(&alarm)], replay_key))
            }
        }
    }

    // ---- admission ------------------------------------------------------------------------

    /// Routes and admits each alert, queueing the runs it may start, and journals each outcome
    /// before returning. `via` names the request (for the journal); `received` is when it
    /// arrived (the alert-to-first-call latency counts from there).
    ///
    /// The outcome is journaled after the run is queued, so a fast run's `run_finished` can
    /// precede its `alert` line; both carry the run id.
    pub async fn admit_all(
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
            let mut event = json!({
                "type": "alert",
                "via": via,
                "source": alert.source.as_str(),
                "alert": alert.name,
                "firing": alert.firing,
                "fingerprint": alert.fingerprint,
                "labels": alert.labels,
                "outcome": outcome.outcome,
            });
            for (k, v) in [
                ("reason", &outcome.reason),
                ("detail", &outcome.detail),
                ("route", &outcome.route),
                ("run_id", &outcome.run_id),
                ("transcript", &outcome.transcript),
            ] {
                if let Some(v) = v {
                    event[k] = json!(v);
                }
            }
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
        let run_id = crate::executor::new_run_id();
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
    pub fn save_state(&self) {
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
    pub fn save_state_if_dirty(&self) {
        if lock(&self.gate).dirty {
            self.save_state();
        }
    }

    /// Closes breakers (all, or one runbook's; `*` is the overall one), recorded with who asked.
    pub async fn reset_breakers(&self, scope: Option<&str>, by: &str) -> Vec<String> {
        let closed = {
            let mut gate = lock(&self.gate);
            let closed = gate.reset(scope);
            self.metrics
                .breakers_open
                .set(gate.state.breakers.len() as i64);
            closed
        };
        self.save_state();
        let _ = self
            .journal
            .record(json!({ "type": "breaker_reset", "closed": closed, "by": by }))
            .await;
        closed
    }

    // ---- runs -----------------------------------------------------------------------------

    /// Runs one job on this (worker) thread, start to finish, and records how it ended.
    fn execute(&self, job: Job) {
        let run_id = job.run_id.clone();
        if self.stopping.load(Ordering::SeqCst) {
            lock(&self.runs).finish(&run_id, |r| {
                r.status = "not_started".into();
                r.reason = Some("the server stopped before a worker was free".into());
            });
            let _ = self.journal.record_blocking(json!({
                "type": "run_not_started", "run_id": run_id, "alert": job.alert.name,
                "reason": "shutting_down",
            }));
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
        let _ = self.journal.record_blocking(json!({
            "type": "run_finished",
            "run_id": run_id,
            "alert": job.alert.name,
            "fingerprint": job.alert.fingerprint,
            "route": job.route.name,
            "runbook": job.route.runbook,
            "status": status,
            "reason": reason,
            "guardrail": tripped,
            "duration_ms": elapsed.as_millis() as u64,
            "first_call_ms": first_call_ms,
            "transcript": transcript,
            "undelivered_notifications": undelivered,
        }));
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
        let route = &job.route;
        let planned = self.planned.get(&route.name).ok_or_else(|| {
            Error::Internal(format!("route {} was not checked at start-up", route.name))
        })?;
        let env = planned.env.clone();
        let env_name = env.name.clone();
        let protected = env.protected;
        let cloud = match (env.backend, self.sims.get(&env.name)) {
            (Backend::Sim, Some(sim)) => {
                CloudAccess::connected(env, Cloud::Sim(Box::new(sim.share())))
            }
            _ => CloudAccess::new(env),
        };
        let host = Host::with_cloud(Mode::Run, Console::silent(), abort, cloud);
        let rb = catalog::load_at(&planned.file, &planned.target, host)?;
        let g = &self.hooks.file.guardrails;
        rb.host.guardrails.configure(
            route.max_resources.or(g.max_resources),
            self.hooks.kill_switch(),
        );
        rb.host
            .guardrails
            .set_kill_parameter(g.kill_switch_parameter.clone());
        if protected {
            // Admission refused protected environments without an allowing route; this is
            // that route's confirmation, recorded in the transcript's trigger.
            rb.host.protected_confirmed.set(route.allow_protected);
        }
        let account = crate::cloud::verify_account(&rb.host)?;
        let params = rb.resolve_params(&job.params)?;
        let operator = format!("hook:{}", route.name);
        // A run of another route (or another alert) on this target finishes first: runs that
        // guardrails admitted wait their turn (bounded), a person's CLI run is refused.
        let _locks = self.store.lock_run(
            true,
            &env_name,
            &route.lock_target(&job.alert),
            &operator,
            &job.run_id,
            Some(SERVE_LOCK_WAIT),
        )?;
        let mut driver = Unattended {
            yes: route
                .allow_confirm
                .then(|| format!("hook route {:?} (allow_confirm)", route.name)),
            operator: operator.clone(),
            approval_timeout: None,
        };
        let mut executor = Executor::new(&rb, &mut driver);
        if let Some(lifecycle) = crate::bindings::slack::SlackLifecycle::for_runbook(&rb) {
            executor = executor.observe(lifecycle);
        }
        #[cfg(debug_assertions)]
        if let Some(observer) = test_panic::observer(&job.alert) {
            executor = executor.observe(observer);
        }
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
        let report = executor.run(RunOptions {
            resume: None,
            run_id: job.run_id.clone(),
            transcript: job.transcript.clone(),
            environment: env_name.clone(),
            account,
            operator,
            params,
            trigger: Some(trigger),
        })?;
        Ok(Finished {
            status: report.status.as_str().to_string(),
            reason: report.reason,
            first_call: rb.host.recorder.first_call(),
            tripped: rb.host.guardrails.tripped(),
            environment: env_name,
            undelivered: report.undelivered_notifications,
        })
    }

    // ---- escalation -----------------------------------------------------------------------

    fn escalate_refusal(self: &Arc<Self>, alert: &Alert, route: &Route, out: &AlertOutcome) {
        let reason = out.reason.clone().unwrap_or_default();
        let detail = out.detail.clone().unwrap_or_default();
        self.spawn_escalation(Escalation {
            alert,
            environment: route.environment.as_deref(),
            runbook: Some(&route.runbook),
            severity: self.severity_of(route),
            reason: &reason,
            detail: &detail,
            run_id: None,
            transcript: None,
            journal: &self.journal_path(),
        });
    }

    fn severity_of(&self, route: &Route) -> Option<&str> {
        self.planned.get(&route.name).map(|p| p.severity.as_str())
    }

    /// The message for `e`, or None when it is held back: the same alert was escalated for
    /// the same reason within the window (a refusal repeated is not news), or the hourly
    /// limit is reached (counted; the next message sent says how many were held back).
    fn message(&self, e: &Escalation) -> Option<String> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let dedupe = e.run_id.is_none();
        let admission =
            lock(&self.escalator.limiter).admit(&e.alert.fingerprint, e.reason, dedupe, now_ms);
        let held = |why: &str| {
            Metrics::inc(&self.metrics.escalations, &[("delivered", why)]);
            None
        };
        match admission {
            Admission::Duplicate => held("deduplicated"),
            Admission::RateLimited => held("rate_limited"),
            Admission::Send { suppressed } => {
                let mut text = self.escalator.text(e);
                if suppressed > 0 {
                    text.push_str(&format!(
                        "\n({suppressed} escalation(s) before this one were held back by escalation.max_per_hour: see the journal)"
                    ));
                }
                Some(text)
            }
        }
    }

    /// Sends an escalation in the background (a request's answer does not wait on Slack).
    fn spawn_escalation(self: &Arc<Self>, e: Escalation) {
        let Some(text) = self.message(&e) else {
            return;
        };
        let reason = e.reason.to_string();
        let alert = e.alert.name.clone();
        let hub = self.clone();
        let handle = self.rt.spawn(async move {
            hub.deliver(&alert, &reason, &text).await;
        });
        let mut pending = lock(&self.escalations);
        pending.retain(|h| !h.is_finished());
        pending.push(handle);
    }

    /// Sends an escalation and waits for it (worker threads).
    fn escalate_blocking(&self, e: &Escalation) {
        let Some(text) = self.message(e) else {
            return;
        };
        self.rt
            .block_on(self.deliver(&e.alert.name, e.reason, &text));
    }

    async fn deliver(&self, alert: &str, reason: &str, text: &str) {
        let result = self.escalator.send(text).await;
        Metrics::inc(
            &self.metrics.escalations,
            &[("delivered", if result.is_ok() { "true" } else { "false" })],
        );
        if let Err(e) = &result {
            tracing::error!(
                alert = %super::clip(alert),
                reason,
                "escalation not delivered: {}",
                super::clip(e)
            );
        }
        let _ = self
            .journal
            .record(json!({
                "type": "escalation",
                "alert": alert,
                "reason": reason,
                "text": text,
                "delivered": result.is_ok(),
                "error": result.err(),
            }))
            .await;
    }

    /// Waits for escalations still being sent.
    pub async fn flush_escalations(&self) {
        let pending: Vec<_> = std::mem::take(&mut *lock(&self.escalations));
        for h in pending {
            let _ = h.await;
        }
    }

    /// Messages kept because no Slack or Teams is configured (tests, dry setups).
    pub fn captured_escalations(&self) -> Vec<Value> {
        self.escalator.captured()
    }

    // ---- shutdown -------------------------------------------------------------------------

    /// Stops taking alerts, lets running runs finish until `deadline`, then aborts the rest
    /// (each run records its abort) and waits for the workers. Queued runs are not started:
    /// each is recorded and escalated.
    pub fn drain(&self, deadline: Duration) -> DrainReport {
        self.accepting.store(false, Ordering::SeqCst);
        self.stopping.store(true, Ordering::SeqCst);
        // Closing the queue lets idle workers exit once it is empty.
        lock(&self.queue).take();
        // A deadline too far to represent is no deadline.
        let until = Instant::now().checked_add(deadline);
        let mut aborted = 0;
        loop {
            let running = lock(&self.runs).running();
            if running == 0 {
                break;
            }
            if until.is_some_and(|until| Instant::now() >= until) {
                aborted = lock(&self.runs).abort_all();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.join_workers();
        DrainReport { aborted }
    }

    /// Waits for the workers (the queue is closed: they exit once it is empty) and saves the
    /// guardrail state.
    fn join_workers(&self) {
        let workers: Vec<_> = std::mem::take(&mut *lock(&self.workers));
        for w in workers {
            let _ = w.join();
        }
        self.save_state_if_dirty();
    }

    /// Stops taking alerts, runs what was queued to the end, and waits for it (`runbook hook`).
    pub fn finish_queued(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        lock(&self.queue).take();
        self.join_workers();
    }

    /// Stops taking alerts (the first thing a SIGTERM does).
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    pub fn runs_list(&self, limit: usize) -> Vec<RunRecord> {
        lock(&self.runs).list(limit)
    }

    pub fn run_record(&self, run_id: &str) -> Option<RunRecord> {
        lock(&self.runs).get(run_id).cloned()
    }

    /// `GET /healthz`: whether alerts are taken, the load, and open breakers. `status` is `ok`
    /// only while alerts are taken, every worker is alive and the journal can be written.
    pub fn health(&self) -> Value {
        let breakers = lock(&self.gate).state.breakers.clone();
        let runs = lock(&self.runs);
        let alive = self.workers_alive.load(Ordering::SeqCst);
        let status = if !self.accepting() {
            "draining"
        } else if alive < self.hooks.file.server.workers {
            "workers_missing"
        } else if !self.journal.writable() {
            "journal_unwritable"
        } else {
            "ok"
        };
        json!({
            "status": status,
            "workers_alive": alive,
            "journal_writable": self.journal.writable(),
            "running": runs.running(),
            "queued": self.metrics.runs_queued.get(),
            "workers": self.hooks.file.server.workers,
            "breakers": breakers,
            "kill_switch": self.hooks.kill_switch_set(),
            "journal": self.journal_path(),
        })
    }
}

pub struct DrainReport {
    pub aborted: usize,
}

struct Finished {
    status: String,
    reason: String,
    first_call: Option<Instant>,
    tripped: Option<&'static str>,
    environment: String,
    /// Notifications the run could not deliver (the run report's count).
    undelivered: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A worker that panicked mid-update leaves data that is still the best we have; refusing
    // every later alert would turn one bug into an outage.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn check_token(
    expected: Option<&str>,
    header: Option<&str>,
    what: &str,
) -> std::result::Result<(), Rejection> {
    let Some(expected) = expected else {
        return Err(Rejection::Unauthenticated(format!(
            "no {what} token is configured"
        )));
    };
    let given = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    if super::secret_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Rejection::Unauthenticated(format!(
            "bad or missing {what} bearer token"
        )))
    }
}

fn pattern(file: &std::path::Path, given: Option<&str>, default: &str) -> Result<regex::Regex> {
    regex::Regex::new(given.unwrap_or(default))
        .map_err(|e| Error::config(file, format!("bad URL pattern: {e}")))
}

/// Plans every route (see [`plan_route`]), reporting every problem at once.
fn plan_all(hooks: &Hooks, dirs: &[PathBuf], config: &Config) -> Result<BTreeMap<String, Planned>> {
    let mut planned = BTreeMap::new();
    let mut problems = Vec::new();
    for route in &hooks.file.routes {
        match plan_route(route, dirs, config) {
            Ok(p) => {
                planned.insert(route.name.clone(), p);
            }
            Err(e) => problems.push(format!("route {:?}: {e}", route.name)),
        }
    }
    if problems.is_empty() {
        Ok(planned)
    } else {
        Err(Error::config(
            &hooks.path,
            format!("\n  {}", problems.join("\n  ")),
        ))
    }
}

/// `runbook serve --check`: the configuration checked whole, with nothing started or written.
/// Returns one line per route.
pub fn check(hooks: &Hooks, dirs: &[PathBuf], config: &Config) -> Result<Vec<String>> {
    let planned = plan_all(hooks, dirs, config)?;
    Ok(hooks
        .file
        .routes
        .iter()
        .filter_map(|r| Some((r, planned.get(&r.name)?)))
        .map(|(r, p)| {
            let (file, env) = (p.file.display().to_string(), &p.env);
            let mut flags = Vec::new();
            if r.allow_confirm {
                flags.push("allow_confirm");
            }
            if env.protected {
                flags.push(if r.allow_protected {
                    "protected (allowed)"
                } else {
                    "protected (refused: escalates)"
                });
            }
            format!(
                "{}: {}{} -> {} ({file}) on {}{}",
                r.name,
                r.alert,
                r.source
                    .map(|s| format!(" from {}", s.as_str()))
                    .unwrap_or_default(),
                r.runbook,
                env.name,
                if flags.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", flags.join(", "))
                }
            )
        })
        .collect())
}

/// Locates a route's runbook at its pinned version and checks its parameters and environment.
fn plan_route(route: &Route, dirs: &[PathBuf], config: &Config) -> Result<Planned> {
    let target = Target::parse(&route.runbook);
    let file = catalog::locate(&target, dirs, catalog::id_of)?;
    let host = Host::new(
        Mode::Plan,
        Console::silent(),
        Arc::new(AtomicBool::new(false)),
    );
    let rb = catalog::load_at(&file, &target, host)?;
    let unknown: Vec<&String> = route
        .params
        .keys()
        .filter(|k| rb.param(k).is_none())
        .collect();
    if !unknown.is_empty() {
        return Err(Error::Input(format!(
            "{} has no parameter(s) {}",
            route.runbook,
            unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // A literal value (no `{...}` placeholder) is known now: check it as `--param` would be.
    let refused: Vec<String> = route
        .params
        .iter()
        .filter(|(_, template)| !template.contains('{'))
        .filter_map(|(name, text)| rb.param_text_problem(name, text))
        .collect();
    if !refused.is_empty() {
        return Err(Error::Usage(format!(
            "{}: {}",
            route.runbook,
            refused.join("; ")
        )));
    }
    let env = config.select(route.environment.as_deref())?;
    Ok(Planned {
        file,
        target,
        env,
        severity: rb.meta.severity.as_str().to_string(),
    })
}

/// A CloudWatch alarm as an alert: the alarm name is the alert name, the dimensions are labels.
fn alarm_to_alert(a: &sns::CloudWatchAlarm) -> Alert {
    let mut labels = a.dimensions.clone();
    labels.insert("alarm_name".into(), a.alarm_name.clone());
    labels.insert(
        "region".into(),
        a.region_code.clone().unwrap_or_else(|| a.region.clone()),
    );
    labels.insert("region_name".into(), a.region.clone());
    labels.insert("account".into(), a.account.clone());
    if let Some(n) = &a.namespace {
        labels.insert("namespace".into(), n.clone());
    }
    if let Some(m) = &a.metric_name {
        labels.insert("metric_name".into(), m.clone());
    }
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".into(), a.reason.clone());
    if let Some(d) = &a.description {
        annotations.insert("description".into(), d.clone());
    }
    annotations.insert("state".into(), a.new_state.clone());
    Alert {
        source: Source::Sns,
        firing: a.new_state == "ALARM",
        fingerprint: Alert::fingerprint_of(Source::Sns, &a.alarm_name, &a.dimensions),
        name: a.alarm_name.clone(),
        labels,
        annotations,
        starts_at: Some(a.state_change_time.clone()),
    }
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
    let events = crate::transcript::read_verified(transcript)
        .map(|(events, _)| events)
        .unwrap_or_default();
    let mut named: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "call")
        .filter_map(|e| {
            let binding = e["binding"].as_str()?;
            if !["slack::", "teams::"]
                .iter()
                .any(|p| binding.starts_with(p))
            {
                return None;
            }
            // A failed send is an error, or (not `required`) a result with `ok: false`.
            let failure = if e["error"].is_object() {
                &e["error"]
            } else if e["result"]["ok"] == false {
                &e["result"]
            } else {
                return None;
            };
            let code = failure["code"].as_str().unwrap_or("error");
            Some(format!("{binding} ({})", super::clip(code)))
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
    use crate::executor::RunObserver;
    use crate::transcript::{RunStatus, StepStatus};

    pub const VAR: &str = "RUNBOOK_TEST_PANIC_RUN_FOR_INSTANCE";

    struct Panics;

    impl RunObserver for Panics {
        fn run_started(&mut self, _headline: String) {
            panic!("test panic ({VAR})");
        }
        fn step_finished(
            &mut self,
            _step: &crate::runbook::Step,
            _status: StepStatus,
            _error: Option<&crate::engine::ErrorInfo>,
        ) {
        }
        fn run_finished(&mut self, _status: RunStatus, _summary: String) {}
    }

    /// A panicking observer when the alert's `instance_id` label is the variable's value.
    pub fn observer(alert: &super::Alert) -> Option<Box<dyn RunObserver>> {
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
        assert!(!text.contains('\n') && text.len() <= crate::hooks::MAX_DETAIL + 3);
        let fixed = std::panic::catch_unwind(|| panic!("fixed")).unwrap_err();
        assert_eq!(panic_message(fixed.as_ref()), "fixed");
    }
}
