//! Shared state: what several processes (the replicas of `runbook serve`, on-call engineers'
//! CLI runs) must agree on, behind one interface with two backends chosen by `[state]` in
//! runbook.toml (see [`crate::data::config::StateConfig`]):
//!
//! - [`local`]: files on this host (today's behaviour and the default). The admission guardrails
//!   stay in `serve`'s own memory and state file (`hooks::guard`); target locks are `flock`ed
//!   files, released by the kernel when their process dies.
//! - [`aws`]: one DynamoDB table for coordination and an S3 bucket for transcripts. Every
//!   decision is one conditional write, and every condition compares a stored expiry with the
//!   runner's clock: DynamoDB's TTL deletes expired items days late (moto never), so it only
//!   cleans up.
//!
//! The layer is a service: it uses the leaves (error, clock), the data (config) and nothing
//! above; `hooks` and the CLI call into it.

pub mod archive;
pub mod aws;
pub mod local;
pub mod ops;
pub mod owners;
pub mod records;
pub mod upload;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::error::{Error, Result};
use crate::data::config::{StateBackend, StateConfig};

/// The state backend a process uses.
#[derive(Clone)]
pub enum Store {
    Local(local::LocalStore),
    Aws(Arc<aws::AwsStore>),
}

impl Store {
    /// Opens the configured backend. The aws one connects lazily: nothing is sent yet.
    pub fn open(config: &StateConfig) -> Result<Store> {
        Ok(match config.backend {
            StateBackend::Local => Store::Local(local::LocalStore::new(config)),
            StateBackend::Aws => Store::Aws(Arc::new(aws::AwsStore::open(config)?)),
        })
    }

    /// The guardrails every replica shares, or None when they are this process's own
    /// (`local`: `hooks::guard::Gate` keeps them in memory and its state file).
    pub fn shared_guardrails(&self) -> Option<Arc<aws::AwsStore>> {
        match self {
            Store::Local(_) => None,
            Store::Aws(a) => Some(a.clone()),
        }
    }

    /// Fetches the transcript of run `run_id` into `dest`, a new local file, verified: with the
    /// `aws` backend from the bucket (see [`aws::AwsStore::fetch_transcript`]: joined from the
    /// run's archived objects and checked against the head in the table), which is how another
    /// replica takes over a run whose host died; with `local`, copied from the transcripts folder
    /// (`RUNBOOK_TRANSCRIPTS` or ./transcripts) of this host.
    pub fn fetch_transcript(
        &self,
        run_id: &str,
        dest: &std::path::Path,
    ) -> Result<archive::Fetched> {
        match self {
            Store::Aws(a) => a.fetch_transcript(run_id, dest),
            Store::Local(_) => {
                let found = crate::services::approvals::find_transcript(run_id)?;
                let bytes = std::fs::read(&found)
                    .map_err(|e| Error::io("cannot read transcript", &found, e))?;
                let (_, report) = crate::data::transcript::read_verified_from(
                    std::io::Cursor::new(&bytes),
                    &found,
                )?;
                let mut file = crate::data::transcript::create_private(dest)
                    .map_err(|e| Error::io("cannot create (it must not exist yet)", dest, e))?;
                std::io::Write::write_all(&mut file, &bytes)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| Error::io("cannot write", dest, e))?;
                Ok(archive::Fetched {
                    path: dest.to_path_buf(),
                    events: report.events,
                    head: report.head,
                    finished: report.finished,
                    keys: vec![found.display().to_string()],
                })
            }
        }
    }

    /// Starts uploading a run's transcript as it is written (`aws`; see [`upload`]), or None
    /// with `local` (transcripts stay on this host). An error means nothing will be archived
    /// unless someone acts: the caller reports it.
    pub fn archiver(
        &self,
        entry: archive::RunEntry,
        transcript: &std::path::Path,
    ) -> Option<Result<upload::Archiver>> {
        match self {
            Store::Local(_) => None,
            Store::Aws(a) => Some(upload::Archiver::start(a.clone(), entry, transcript)),
        }
    }

    /// The aws backend's store, or None with `local`.
    pub fn aws(&self) -> Option<Arc<aws::AwsStore>> {
        match self {
            Store::Local(_) => None,
            Store::Aws(a) => Some(a.clone()),
        }
    }

    /// Takes the locks of a run (one call where each entry point sets a run up): none for a
    /// run that cannot write (`writes` false: plans; sim drills never call it).
    pub fn lock_run(
        &self,
        writes: bool,
        env: &str,
        targets: &[String],
        operator: &str,
        run_id: &str,
        wait: Option<Duration>,
    ) -> Result<Locks> {
        if !writes {
            return Ok(Locks::default());
        }
        self.lock(env, targets, &Holder::this_process(operator, run_id), wait)
    }

    /// Takes a lease on every target in `targets` (of environment `env`) for the run `holder`
    /// describes, renewed by a heartbeat until the returned [`Locks`] is dropped. A target held
    /// by another run is refused naming the holder, or waited for up to `wait`.
    pub fn lock(
        &self,
        env: &str,
        targets: &[String],
        holder: &Holder,
        wait: Option<Duration>,
    ) -> Result<Locks> {
        let mut held = Locks::default();
        if targets.is_empty() {
            return Ok(held);
        }
        let deadline = wait.and_then(|w| std::time::Instant::now().checked_add(w));
        for target in targets {
            let key = lock_key(env, target);
            loop {
                let attempt = match self {
                    Store::Local(l) => l.try_lock(&key, holder).map(|r| r.map(Lease::Local)),
                    Store::Aws(a) => a.try_lock(&key, holder).map(|r| r.map(Lease::Aws)),
                };
                match attempt? {
                    Ok(lease) => {
                        held.leases.push(lease);
                        break;
                    }
                    Err(other) => {
                        let waiting = deadline.is_some_and(|d| std::time::Instant::now() < d);
                        if !waiting {
                            return Err(Error::Environment(other.refusal(env, target, wait)));
                        }
                        // Polled: a lease held elsewhere gives no signal when it ends.
                        std::thread::sleep(Duration::from_millis(250));
                    }
                }
            }
        }
        held.start_heartbeat(self);
        Ok(held)
    }
}

/// The name a target's lock is kept under: the environment and the target, so `i-0abc` in the
/// sim and in production are different things.
fn lock_key(env: &str, target: &str) -> String {
    format!("{env}/{target}")
}

/// Who holds (or asks for) a target lock, shown to whoever is refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub operator: String,
    pub run_id: String,
    pub host: String,
    pub pid: u32,
    /// When the lock was taken (RFC 3339).
    pub since: String,
}

impl Holder {
    /// The run `run_id` by `operator`, on this host and process, from now.
    pub fn this_process(operator: &str, run_id: &str) -> Holder {
        Holder {
            operator: operator.to_string(),
            run_id: run_id.to_string(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            since: crate::base::clock::now_utc(),
        }
    }

    fn refusal(&self, env: &str, target: &str, wait: Option<Duration>) -> String {
        let waited = match wait {
            Some(w) => format!(" (waited {})", humantime::format_duration(w)),
            None => String::new(),
        };
        format!(
            "target {target} ({env}) is locked by {} (run {}, since {}, host {}, pid {}){waited}; wait for it with --wait-lock DURATION, or ask them",
            self.operator, self.run_id, self.since, self.host, self.pid
        )
    }
}

enum Lease {
    Local(local::LocalLease),
    Aws(aws::AwsLease),
}

/// The target locks a run holds; dropping it releases them (and stops the heartbeat).
#[derive(Default)]
pub struct Locks {
    leases: Vec<Lease>,
    heartbeat: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Locks {
    /// The keys held (`environment/target`), for the transcript and tests.
    pub fn keys(&self) -> Vec<String> {
        self.leases
            .iter()
            .map(|l| match l {
                Lease::Local(l) => l.key.clone(),
                Lease::Aws(l) => l.key.clone(),
            })
            .collect()
    }

    /// Renews the aws leases every third of their length on a thread of its own (a flock needs
    /// no renewal: it lasts as long as the process).
    fn start_heartbeat(&mut self, store: &Store) {
        let Store::Aws(a) = store else { return };
        let leases: Vec<aws::AwsLease> = self
            .leases
            .iter()
            .filter_map(|l| match l {
                Lease::Aws(l) => Some(l.clone()),
                Lease::Local(_) => None,
            })
            .collect();
        if leases.is_empty() {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let store = a.clone();
        let every = store.lease() / 3;
        let spawned = std::thread::Builder::new()
            .name("lock-heartbeat".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    for lease in &leases {
                        if let Err(e) = store.renew(lease) {
                            tracing::error!("cannot renew the lock on {}: {e}", lease.key);
                        }
                    }
                }
            });
        match spawned {
            Ok(handle) => self.heartbeat = Some((tx, handle)),
            Err(e) => tracing::error!("cannot start the lock heartbeat: {e}"),
        }
    }
}

impl Drop for Locks {
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.heartbeat.take() {
            drop(tx);
            let _ = handle.join();
        }
        for lease in self.leases.drain(..) {
            match lease {
                Lease::Local(l) => drop(l),
                Lease::Aws(l) => l.release(),
            }
        }
    }
}

/// What one replica asks the shared guardrails for one alert (the numbers are `serve`'s
/// `[guardrails]` and the route's cooldown).
#[derive(Debug, Clone)]
pub struct Admission<'a> {
    pub fingerprint: &'a str,
    pub runbook: &'a str,
    /// The cooldown key (runbook and target).
    pub target: &'a str,
    pub now_ms: i64,
    pub dedupe_ms: i64,
    pub cooldown_ms: i64,
    pub max_per_hour: usize,
    pub max_per_hour_per_runbook: usize,
    pub kill_switch: bool,
    pub protected_refused: bool,
}

/// Why the shared guardrails refused (scopes are `*` or a runbook id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Deduplicated,
    KillSwitch,
    Protected,
    BreakerOpen {
        scope: String,
    },
    Cooldown {
        until_ms: i64,
    },
    /// This admission would exceed the limit; `opened` when this replica opened the breaker.
    RateLimited {
        scope: String,
        limit: usize,
        opened: bool,
    },
}

/// What an admission wrote, so it can be taken back when the run cannot be queued.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub(crate) fingerprint: String,
    pub(crate) dedupe_exp: i64,
    pub(crate) target: String,
    pub(crate) cooldown_until: i64,
    /// Rate windows counted in: (scope, the window's end).
    pub(crate) counted: Vec<(String, i64)>,
}

/// An open breaker as stored (shared between replicas).
#[derive(Debug, Clone, Serialize)]
pub struct OpenBreaker {
    pub scope: String,
    pub opened_at: String,
    pub reason: String,
    pub by: String,
}

/// A duration in milliseconds, saturated.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
