//! The hook hub: authentication, routing, admission and execution of alert-started runs, shared
//! by `runbook serve` (HTTP) and `runbook hook` (one payload on stdin).
//!
//! This file holds the `Hub` and its wiring; each concern lives in its own file: `auth`
//! (tokens, signatures, replays, SNS), `admission` (routing and the guardrails), `runs` (the
//! worker threads), `escalation`, `shutdown`, and `plan` (the routes checked at start-up).

mod admission;
mod auth;
mod escalation;
mod plan;
mod runs;
mod shutdown;
mod takeover;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::{Value, json};

use super::config::Hooks;
use super::escalate::{Escalator, Limiter};
use super::guard::{self, Gate};
use super::journal::Journal;
use super::metrics::Metrics;
use super::pool::{Job, RunTable};
use super::{Alert, Rejection, Source, clip, generic, secret_eq, sns};
use crate::base::error::{Error, Result};
use crate::data::config::{Backend, Config};
use crate::data::transcript::{JournalEvent, RouteRef};
use crate::services::cloud::sim::SimCloud;

pub(crate) use admission::AlertOutcome;
pub(crate) use auth::slack_secret_required;
use auth::{ReplayMemory, Secrets, secret};
pub(crate) use plan::check;
use plan::{Planned, plan_all};

pub(crate) struct Hub {
    pub(crate) hooks: Hooks,
    planned: BTreeMap<String, Planned>,
    gate: Mutex<Gate>,
    pub(crate) journal: Journal,
    pub(crate) metrics: Metrics,
    escalator: Escalator,
    /// Shared state (`[state]`): target locks; the guardrails go through `gate`.
    store: crate::services::state::Store,
    /// One simulated cloud per sim environment, shared by the runs on it.
    sims: BTreeMap<String, SimCloud>,
    secrets: Secrets,
    sns_trust: sns::SnsTrust,
    certs: sns::CertCache,
    http: reqwest::Client,
    /// Signatures (generic) and message ids (SNS) seen: after their window, their timestamps
    /// refuse them.
    seen: Mutex<ReplayMemory>,
    pub(crate) runs: Mutex<RunTable>,
    queue: Mutex<Option<mpsc::SyncSender<Job>>>,
    jobs: Mutex<Option<mpsc::Receiver<Job>>>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Worker threads alive (each counts itself out when its thread ends, however it ends).
    workers_alive: Arc<AtomicUsize>,
    /// The runs this replica owns in the state table (aws backend), renewed by its heartbeat.
    owned: Mutex<std::collections::BTreeSet<String>>,
    accepting: AtomicBool,
    stopping: AtomicBool,
    /// The runtime escalations are sent on (worker threads have none of their own).
    rt: tokio::runtime::Handle,
    escalations: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Slack approval clicks: the signing secret and `[slack_users]`.
    pub(crate) slack: super::slack::Interactions,
    /// The aws backend's pending-upload folder: the retention pass never deletes a transcript
    /// whose upload is still pending there.
    spool: Option<PathBuf>,
}

impl Hub {
    /// Checks the configuration whole (every route's runbook, pin, parameters and environment)
    /// and opens the journal. Nothing is listening yet.
    pub(crate) fn new(
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
                    .map_err(|e| crate::services::cloud::setup_error(env, e))?;
                // Shared by every run for the life of the server: its per-run history is a ring.
                sim.keep_history(hooks.file.server.sim_history);
                sims.insert(env.name.clone(), sim);
            }
        }
        let auth = &hooks.file.auth;
        slack_secret_required(&hooks)?;
        let secrets = Secrets {
            alertmanager: secret(&auth.alertmanager_token_env),
            generic: secret(&auth.generic_secret_env),
            admin: secret(&auth.admin_token_env),
            slack: secret(&auth.slack_signing_secret_env),
        };
        let slack = super::slack::Interactions::new(
            &auth.slack_signing_secret_env,
            secrets.slack.clone(),
            config.slack_users().clone(),
        );
        let esc = &hooks.file.escalation;
        let mut escalator = Escalator::new(
            config.notifications(crate::data::config::Delivery::Send),
            esc.channel.clone(),
            esc.mention.clone(),
            Limiter::new(esc.dedupe_window, esc.max_per_hour),
        );
        escalator.add_secrets(
            [
                &secrets.alertmanager,
                &secrets.generic,
                &secrets.admin,
                &secrets.slack,
            ]
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
        let store = crate::services::state::Store::open(config.state())?;
        let shared = store.shared_guardrails();
        let all_secrets = escalator.secrets();
        let journal_path = hooks.transcripts().join(format!(
            "journal-{}.jsonl",
            crate::base::identity::new_run_id()
        ));
        let journal = Journal::create(
            &journal_path,
            all_secrets,
            JournalEvent::JournalStarted {
                config: hooks.path.display().to_string(),
                routes: hooks
                    .file
                    .routes
                    .iter()
                    .map(|r| RouteRef {
                        name: r.name.clone(),
                        alert: r.alert.clone(),
                        runbook: r.runbook.clone(),
                    })
                    .collect(),
                pid: std::process::id(),
                tool: format!("runbook {}", env!("CARGO_PKG_VERSION")),
                continues: None,
            },
            shared.clone(),
            super::journal::Rotation {
                max_bytes: hooks.file.retention.journal_max_size,
                daily: hooks.file.retention.journal_daily,
            },
        )?;
        let (tx, rx) = mpsc::sync_channel(hooks.file.server.queue);
        let metrics = Metrics::default();
        metrics.breakers_open.set(state.breakers.len() as i64);
        Ok(Arc::new(Hub {
            gate: Mutex::new(
                Gate::new(hooks.file.guardrails.clone(), state).with_shared(shared.clone()),
            ),
            runs: Mutex::new(
                RunTable::new(hooks.file.server.history)
                    .shared_with(shared.clone().map(super::pool::RecordSink::start)),
            ),
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
            owned: Mutex::new(std::collections::BTreeSet::new()),
            accepting: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            rt,
            escalations: Mutex::new(Vec::new()),
            slack,
            spool: (config.state().backend == crate::data::config::StateBackend::Aws)
                .then(|| config.state().spool.clone()),
        }))
    }

    /// The shared state backend (Slack approvals are delivered through it).
    pub(crate) fn state_store(&self) -> &crate::services::state::Store {
        &self.store
    }

    pub(crate) fn journal_path(&self) -> String {
        self.journal.path().display().to_string()
    }

    pub(crate) fn accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// `GET /healthz`: whether alerts are taken, the load, and open breakers. `status` is `ok`
    /// only while alerts are taken, every worker is alive and the journal can be written.
    /// With the aws backend the breakers are the table's (one Query, so a breaker another
    /// replica opened or reset shows here too) and `state_unavailable` says the table cannot
    /// be read, or did not answer within `server.health_timeout` (`state_error` says which,
    /// and `breakers` is null: this replica's own view is not the team's);
    /// this blocks on the table for up to that long, so call it off the async workers.
    pub(crate) fn health(&self) -> Value {
        let mut breakers = json!(lock(&self.gate).state.breakers.clone());
        let mut state_error = None;
        if let Some(store) = self.store.shared_guardrails() {
            let deadline = self.hooks.file.server.health_timeout;
            match store.open_breakers_within(deadline) {
                Ok(Some(open)) => {
                    breakers = open
                        .into_iter()
                        .map(|b| {
                            (
                                b.scope,
                                json!({ "opened_at": b.opened_at, "reason": b.reason, "by": b.by }),
                            )
                        })
                        .collect::<serde_json::Map<String, Value>>()
                        .into();
                }
                // Said without the SDK's message: /healthz is open, and an AWS error can name
                // the account and role. The log has the whole error.
                Ok(None) => {
                    let waited = humantime::format_duration(deadline);
                    tracing::warn!(
                        "/healthz: the state table did not answer within {waited} (server.health_timeout)"
                    );
                    state_error = Some(format!("the state table did not answer within {waited}"));
                    breakers = Value::Null;
                }
                Err(e) => {
                    tracing::error!("/healthz: {e}");
                    state_error =
                        Some("the state table could not be read (the log says why)".into());
                    breakers = Value::Null;
                }
            }
        }
        let runs = lock(&self.runs);
        let alive = self.workers_alive.load(Ordering::SeqCst);
        let records_shared = runs.shared_ok();
        let status = if !self.accepting() {
            "draining"
        } else if alive < self.hooks.file.server.workers {
            "workers_missing"
        } else if !self.journal.writable() {
            "journal_unwritable"
        } else if state_error.is_some() {
            "state_unavailable"
        } else if records_shared == Some(false) {
            "run_records_unwritable"
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
            "run_records_shared": records_shared,
            "state_error": state_error,
        })
    }
}

impl Hub {
    /// Sets the gauges a scrape reads: the process's memory and open files, and the size of
    /// every bounded structure (docs/memory.md), then renders `/metrics`.
    pub(crate) fn render_metrics(&self) -> String {
        let m = &self.metrics;
        m.sample_process();
        for (name, n) in lock(&self.gate).state.sizes() {
            m.bounded_size(name, n);
        }
        m.bounded_size("replay_memory", lock(&self.seen).len());
        let (active, finished) = lock(&self.runs).sizes();
        m.bounded_size("run_records_to_share", lock(&self.runs).to_share());
        m.bounded_size("run_records_active", active);
        m.bounded_size("run_records_finished", finished);
        let (deduped, sent) = lock(&self.escalator.limiter).sizes();
        m.bounded_size("escalation_dedupe", deduped);
        m.bounded_size("escalations_last_hour", sent);
        m.bounded_size("escalations_in_flight", lock(&self.escalations).len());
        m.bounded_size("owned_runs", lock(&self.owned).len());
        let mut sim = crate::services::cloud::sim::HistorySizes::default();
        for s in self.sims.values() {
            let h = s.history_sizes();
            sim.mutations = sim.mutations.saturating_add(h.mutations);
            sim.commands = sim.commands.saturating_add(h.commands);
            sim.invocations = sim.invocations.saturating_add(h.invocations);
        }
        m.bounded_size("sim_mutations", sim.mutations);
        m.bounded_size("sim_commands", sim.commands);
        m.bounded_size("sim_command_invocations", sim.invocations);
        m.bounded_size(
            "slack_approvals_waiting",
            crate::services::approvals::slack::waiting_count(),
        );
        m.bounded_size(
            "uploads_in_flight",
            crate::services::state::upload::active_count(),
        );
        m.render()
    }

    /// One retention pass over the transcripts folder (`[retention]`): deletes what the policy
    /// says (never a run still running or not uploaded yet), measures what is kept for
    /// `/metrics`. Blocking file work: call it off the async workers.
    pub(crate) fn retention_pass(&self) {
        let root = self.hooks.transcripts();
        let policy = super::retention::Policy::of(&self.hooks.file.retention);
        if policy.is_set() {
            let plan = super::retention::plan(
                &root,
                policy,
                self.spool.as_deref(),
                std::time::SystemTime::now(),
            );
            if !plan.delete.is_empty() {
                let done = super::retention::apply(&root, &plan);
                self.metrics
                    .retention_deleted
                    .inc_by(done.deleted.len() as u64);
                tracing::info!(
                    deleted_files = done.deleted.len(),
                    deleted_bytes = done.deleted_bytes,
                    kept_bytes = done.kept_bytes,
                    "retention pass"
                );
                for e in &done.errors {
                    tracing::error!("retention: cannot delete {e}");
                }
            }
        }
        let (files, bytes) = super::retention::usage(&root);
        self.metrics
            .transcripts_files
            .set(i64::try_from(files).unwrap_or(i64::MAX));
        self.metrics
            .transcripts_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Runs [`Hub::retention_pass`] now and every `retention.every`, on a thread of its own.
    pub(crate) fn start_retention(self: &Arc<Self>) -> Result<()> {
        if !super::retention::Policy::of(&self.hooks.file.retention).is_set() {
            tracing::warn!(
                "no [retention] keep_days or max_size in hooks.toml: transcripts and journals are never deleted"
            );
        }
        let hub = self.clone();
        let every = self.hooks.file.retention.every;
        std::thread::Builder::new()
            .name("retention".into())
            .spawn(move || {
                loop {
                    hub.retention_pass();
                    std::thread::sleep(every);
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the retention thread: {e}")))?;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A worker that panicked mid-update leaves data that is still the best we have; refusing
    // every later alert would turn one bug into an outage.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn pattern(file: &std::path::Path, given: Option<&str>, default: &str) -> Result<regex::Regex> {
    regex::Regex::new(given.unwrap_or(default))
        .map_err(|e| Error::config(file, format!("bad URL pattern: {e}")))
}

#[cfg(test)]
mod admission_tests;
