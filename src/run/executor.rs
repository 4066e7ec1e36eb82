//! The executor: walks a loaded runbook's steps in order and records every step boundary.
//!
//! Per step: its `when` guard, the [`Driver`]'s decision (confirmation lives there), the body
//! with its timeout, automatic retries with exponential backoff, the driver's choice after a
//! final failure, the `on_failure` rollback, and `step_finished` with a snapshot of `ctx` (the
//! state resume will restore). The executor never knows which bindings a step calls, and the
//! driver never touches the engine: that is what lets interactive, hook and drill modes reuse it.

use std::path::PathBuf;
use std::time::Duration;

use rhai::{Dynamic, EvalAltResult, FnPtr, Map};
use serde_json::{Value, json};

use crate::base::clock::Stamp;
use crate::base::error::{Error, Result, ScriptDiagnostic};
use crate::base::interrupt::Stop;
use crate::data::transcript::{
    Counts, Durability, ErrorRecord, Event, RunStatus, RunbookRef, StepInfo, StepStatus,
    TranscriptWriter,
};
use crate::runbook::Runbook;
use crate::sandbox::declare::{Confirm, Step};
use crate::sandbox::engine::{self, ErrorInfo};
use crate::sandbox::recorder::{PlannedCall, Stage, to_json};

/// How long a step preview may run: a step that waits (for a health check, a loop of sleeps)
/// must not keep the operator from the prompt; the preview then says it stopped early.
const PREVIEW_LIMIT: Duration = Duration::from_secs(3);

/// What `h` at the inspect prompt says.
const INSPECT_HELP: &str =
    "    inspect: type Rhai with `ctx` and every binding (a change to `ctx` is kept and recorded);
    an unfinished line (an open brace) continues on the next; an empty line, :q or exit returns
    to the step's question";

/// The longest wait between two retries, whatever the backoff doubling says.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What a driver decided, and whether (and how) it is worth recording.
#[derive(Debug, Clone)]
pub struct Decision {
    pub action: Action,
    /// Who decided (an operator identity, `--yes`, `unattended`, a hook rule).
    pub by: String,
    pub reason: String,
    /// Routine decisions (run a step that needs no confirmation) are not recorded.
    pub record: bool,
    /// How long the person took to decide (interactive only).
    pub decided_ms: Option<u64>,
    /// The operator typed the protected environment's name: its mutating calls may proceed.
    pub confirms_environment: bool,
    /// With [`Action::Approval`]: how long to wait for someone to approve.
    pub wait: Option<Duration>,
}

impl Decision {
    /// A decision nobody needs to see in the transcript.
    pub fn routine(action: Action, by: &str) -> Self {
        Decision {
            action,
            by: by.into(),
            reason: String::new(),
            record: false,
            decided_ms: None,
            confirms_environment: false,
            wait: None,
        }
    }

    pub fn recorded(action: Action, by: &str, reason: impl Into<String>) -> Self {
        Decision {
            record: true,
            reason: reason.into(),
            ..Decision::routine(action, by)
        }
    }
}

/// What was chosen for a step: recorded in `decision` events, so it is declared with them.
pub use crate::data::transcript::Action;

/// After a step failed and its automatic retries are spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try the step once more.
    Retry,
    /// Leave it failed (its rollback runs) and go on with the next step, for the reason given
    /// (recorded). The run still ends failed, aborted or timed out: going on does not make the
    /// step succeed.
    Continue(String),
    /// Leave it failed (its rollback runs) and stop the run, unless the step allows failure.
    Stop,
}

/// What a driver is shown before a step.
pub struct StepView<'a> {
    pub step: &'a Step,
    pub total: usize,
    /// The mutating calls the step would make (a plan of this one step), when asked for.
    pub preview: &'a [PlannedCall],
    /// The preview itself failed (it may still be worth running the step).
    pub preview_error: Option<&'a str>,
    /// What the step logged while previewed, each line marked `preview:` (nothing happened).
    pub preview_log: &'a [String],
    /// The protected environment whose name must be typed before its first write, if any.
    pub protected: Option<&'a str>,
}

/// Decides, for each step, whether it runs. Unattended, interactive, hook and drill modes each
/// implement this; the executor does the rest.
pub trait Driver {
    /// Whether to compute a preview (a plan of the step) before asking.
    fn wants_preview(&self) -> bool {
        false
    }

    fn before_step(&mut self, view: &StepView) -> Decision;

    fn after_failure(&mut self, _step: &Step, _error: &ErrorInfo) -> AfterFailure {
        AfterFailure::Stop
    }

    /// After a first Ctrl-C stopped the running step: retry it, continue, or stop the run.
    fn after_interrupt(&mut self, _step: &Step) -> AfterFailure {
        AfterFailure::Stop
    }

    /// On resume, the interrupted step had writes whose outcome was never recorded: run it
    /// again anyway? Unattended runs never guess (false: stop and ask for a person).
    fn on_uncertain(&mut self, _step: &Step, _calls: &[String]) -> bool {
        false
    }

    /// A line for the inspect REPL; None leaves it.
    fn read_line(&mut self, _prompt: &str) -> Option<String> {
        None
    }

    /// A replay's answer to an approval the recorded run asked for and never got: how the step
    /// ended then (denied, timed out, left waiting), without filing a request nobody would see.
    /// None (every other driver): the request is filed and waited for.
    fn unanswered_approval(&mut self, _step: &Step) -> Option<ErrorInfo> {
        None
    }
}

/// `run` without a person at the keyboard: every step runs, and a step that needs confirmation
/// stops the run unless `--yes` was given (recorded either way).
pub struct Unattended {
    /// Confirmation given in advance, and by what (`--yes`, a drill scenario, a hook rule).
    pub yes: Option<String>,
    pub operator: String,
    /// Steps that ask for confirmation wait this long for `runbook approve` instead of stopping.
    pub approval_timeout: Option<Duration>,
}

impl Driver for Unattended {
    fn before_step(&mut self, view: &StepView) -> Decision {
        let Some(confirm) = &view.step.confirm else {
            return Decision::routine(Action::Run, "unattended");
        };
        let asked = match confirm {
            Confirm::Yes => "confirmation".to_string(),
            Confirm::Word(w) => format!("the typed confirmation {w:?}"),
        };
        if let (None, Some(wait)) = (&self.yes, self.approval_timeout) {
            return Decision {
                wait: Some(wait),
                ..Decision::recorded(
                    Action::Approval,
                    "unattended",
                    format!("step needs {asked}: waiting for an approval"),
                )
            };
        }
        if let Some(by) = &self.yes {
            Decision::recorded(
                Action::Run,
                &self.operator,
                format!("step needs {asked}; given in advance with {by}"),
            )
        } else {
            Decision::recorded(
                Action::Abort,
                "unattended",
                format!(
                    "step needs {asked} and nobody can give it: run interactively, or pass --yes"
                ),
            )
        }
    }
}

/// Told about a run as it goes (lifecycle notifications). Observers act through the recorder
/// like any binding, so what they send is recorded, planned in plan mode, and redacted.
pub trait RunObserver {
    fn run_started(&mut self, headline: String);
    fn step_finished(&mut self, step: &Step, status: StepStatus, error: Option<&ErrorInfo>);
    fn run_finished(&mut self, status: RunStatus, summary: String);
}

/// Where a resumed run picks up (built by `runbook resume` from the transcript).
pub struct Resume {
    pub writer: TranscriptWriter,
    /// The first step to run.
    pub start_step: usize,
    /// How the steps before it ended, for the final counts.
    pub prior: Vec<StepStatus>,
    /// The `run_resumed` event (what changed; the executor fills in who resumed).
    pub note: Event,
    /// Writes of the interrupted step that were sent but whose result was never recorded.
    pub uncertain: Vec<String>,
    /// Writes of the interrupted step that finished: answered from the transcript, not resent.
    pub replay: Vec<crate::sandbox::recorder::ReplayCall>,
}

/// Everything about a run that does not come from the runbook.
pub struct RunOptions {
    /// Set when continuing an interrupted run.
    pub resume: Option<Resume>,
    pub run_id: String,
    pub transcript: PathBuf,
    pub environment: String,
    /// The cloud account the environment resolved to, when known.
    pub account: Option<String>,
    pub operator: String,
    pub params: Map,
    /// What started the run when it was not a person (the alert, for hook runs).
    pub trigger: Option<Value>,
}

/// How a run went, for the CLI's summary and exit code.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub status: RunStatus,
    pub reason: String,
    pub counts: Counts,
    pub transcript: PathBuf,
    pub notes: PathBuf,
    pub planned: Vec<PlannedCall>,
    pub duration: Duration,
    /// Notifications (Slack, Teams) the run tried to send and could not deliver: a run can end
    /// ok with nobody told, which `serve` escalates and the summary says.
    pub undelivered_notifications: usize,
}

impl RunReport {
    /// The report as the library's error when the run did not end ok.
    pub fn into_result(self) -> Result<RunReport> {
        use crate::base::error::RunEndStatus;
        let status = match self.status {
            RunStatus::Ok => return Ok(self),
            RunStatus::Failed => RunEndStatus::Failed,
            RunStatus::Aborted => RunEndStatus::Aborted,
            RunStatus::TimedOut => RunEndStatus::TimedOut,
        };
        Err(Error::RunEnded {
            status,
            reason: self.reason,
        })
    }
}

/// The outcome of one step.
struct StepEnd {
    status: StepStatus,
    error: Option<ErrorInfo>,
    reason: Option<String>,
    /// The operator chose to go on although the step did not succeed.
    go_on: bool,
}

impl StepEnd {
    fn new(status: StepStatus, error: Option<ErrorInfo>, reason: Option<String>) -> Self {
        StepEnd {
            status,
            error,
            reason,
            go_on: false,
        }
    }
}

/// A step's last failed attempt: its status, its error, and whether the operator chose to go on
/// with the next step anyway.
struct Failure {
    status: StepStatus,
    info: ErrorInfo,
    go_on: bool,
}

impl Failure {
    fn new(status: StepStatus, info: ErrorInfo) -> Self {
        Failure {
            status,
            info,
            go_on: false,
        }
    }
}

/// What a Ctrl-C between steps leaves of the next one.
enum BetweenSteps {
    Run,
    /// Skipped, for the reason the operator gave.
    Skip(String),
    /// The run stops before it.
    Stop,
}

/// How the run is going, step by step.
struct Progress {
    status: RunStatus,
    reason: String,
    /// The first step the operator went on past without it succeeding.
    went_on: Option<(RunStatus, String)>,
    counts: Counts,
}

impl Progress {
    fn new() -> Self {
        Progress {
            status: RunStatus::Ok,
            reason: String::new(),
            went_on: None,
            counts: Counts::default(),
        }
    }

    /// Takes a finished step into account: whether it stops the run, and why.
    fn absorb(&mut self, step: &Step, end: &StepEnd) {
        if end.go_on && !step.allow_failure && self.went_on.is_none() {
            // The operator chose to go on past a step that did not succeed: the run goes on,
            // but it did not succeed either, and its status and exit code say so.
            let status = match end.status {
                StepStatus::Failed => Some(RunStatus::Failed),
                StepStatus::TimedOut => Some(RunStatus::TimedOut),
                StepStatus::Aborted => Some(RunStatus::Aborted),
                StepStatus::Ok | StepStatus::Skipped => None,
            };
            self.went_on = status.map(|s| {
                (
                    s,
                    format!(
                        "step {} {:?} {} (the operator went on with the next step)",
                        step.index + 1,
                        step.title,
                        end.status.as_str()
                    ),
                )
            });
        }
        let stops = match end.status {
            _ if end.go_on => None,
            StepStatus::Ok | StepStatus::Skipped => None,
            StepStatus::Failed if step.allow_failure => None,
            StepStatus::Failed => Some(RunStatus::Failed),
            StepStatus::TimedOut if step.allow_failure => None,
            StepStatus::TimedOut => Some(RunStatus::TimedOut),
            StepStatus::Aborted => Some(RunStatus::Aborted),
        };
        if let Some(status) = stops {
            self.status = status;
            let why = end
                .error
                .as_ref()
                .map(|e| e.message.clone())
                .or(end.reason.clone())
                .unwrap_or_default();
            self.reason = format!(
                "step {} {:?} {}: {why}",
                step.index + 1,
                step.title,
                end.status.as_str()
            );
        }
    }
}

pub struct Executor<'a> {
    rb: &'a Runbook,
    driver: &'a mut dyn Driver,
    observers: Vec<Box<dyn RunObserver + 'a>>,
    /// Who the operator's choices are recorded as.
    operator: String,
    /// The run's identity as established (the STS caller on AWS, else the local account).
    identity: crate::base::identity::Who,
    /// How long the last approval waited: a step that drifts from its plan asks again as long.
    approval_wait: Duration,
    /// Time the current step's previews took: neither the step's work nor a person's.
    preview_spent: Duration,
    /// When this process's part of the run began (its start, or its resume): `step_finished`
    /// says how far into it on the run's clock each step ended.
    run_began: Option<Stamp>,
}

fn status_of(err: &EvalAltResult) -> StepStatus {
    match Stop::from_error(err) {
        Some(Stop::TimedOut) => StepStatus::TimedOut,
        Some(Stop::Aborted) => StepStatus::Aborted,
        None => StepStatus::Failed,
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Who a run acts as: the caller ARN STS named when the account was verified (an aws
/// environment), else the state credentials' STS caller (the `aws` state backend), else this
/// process's local account; `RUNBOOK_OPERATOR` stays a claimed name.
pub(crate) fn run_identity(host: &crate::sandbox::engine::Host) -> crate::base::identity::Who {
    let me = crate::base::identity::Who::this_process();
    let arn = host.cloud.caller_arn().or_else(|| match &host.state {
        Some(crate::services::state::Store::Aws(store)) => match store.caller_arn() {
            Ok(arn) => Some(arn),
            Err(e) => {
                tracing::warn!("the run is recorded as its local account: {e}");
                None
            }
        },
        _ => None,
    });
    match arn {
        Some(arn) => crate::base::identity::Who::aws(&arn).claiming(me.claimed),
        None => me,
    }
}

/// The summary's note about notifications that never went out (empty when all did).
pub(crate) fn undelivered_note(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => " (1 notification not delivered)".into(),
        n => format!(" ({n} notifications not delivered)"),
    }
}

impl<'a> Executor<'a> {
    pub fn new(rb: &'a Runbook, driver: &'a mut dyn Driver) -> Self {
        Executor {
            rb,
            driver,
            observers: Vec::new(),
            operator: crate::base::identity::operator(),
            identity: crate::base::identity::Who::this_process(),
            approval_wait: Duration::from_secs(15 * 60),
            preview_spent: Duration::ZERO,
            run_began: None,
        }
    }

    pub fn observe(mut self, observer: Box<dyn RunObserver + 'a>) -> Self {
        self.observers.push(observer);
        self
    }

    fn record(&self, event: &Event, durability: Durability) {
        // A failed write is kept by the recorder and ends the run at the next step boundary.
        let _ = self.rb.host.recorder.record(event, durability);
    }

    /// Runs every step. Errors only when the transcript cannot be created; everything after that
    /// is recorded and reported in the [`RunReport`].
    pub fn run(&mut self, mut opts: RunOptions) -> Result<RunReport> {
        // The executor's own decisions (going on or stopping after a failure) are the run's
        // operator's: "drill" or "hook:<route>" for unattended runs, the person otherwise.
        self.operator.clone_from(&opts.operator);
        self.identity = run_identity(&self.rb.host);
        let host = &self.rb.host;
        let started = host.interrupt.clock().now();
        self.run_began = Some(host.interrupt.clock().now());
        // The notifier may outlive one run (a hook server's): count this run's failures only.
        let undelivered_before = host.notifier.undelivered();
        let notes = opts.transcript.with_extension("notes.md");
        *host.notes_path.borrow_mut() = Some(notes.clone());
        let mut progress = Progress::new();
        let (start_step, uncertain) = self.open_transcript(&mut opts, &mut progress.counts)?;
        // Shared, so a step's `ctx.x = ...` is seen by every later step.
        let ctx = self.start(&opts);
        let total = self.rb.steps.len();
        for step in &self.rb.steps {
            if step.index < start_step {
                continue;
            }
            if step.index == start_step
                && !uncertain.is_empty()
                && !self.ask_person(|d| d.on_uncertain(step, &uncertain))
            {
                self.stop_for_uncertain(step, &uncertain, &mut progress);
                continue;
            }
            if progress.status != RunStatus::Ok {
                progress.counts.not_run += 1;
                continue;
            }
            let end = match self.between_steps(step) {
                BetweenSteps::Run => self.run_step(step, total, &ctx),
                BetweenSteps::Skip(why) => {
                    self.rb.host.console.take_waited();
                    let end = StepEnd::new(StepStatus::Skipped, None, Some(why));
                    let now = self.rb.host.interrupt.clock().now();
                    self.finish_step(step, total, now, 0, end, &ctx)
                }
                BetweenSteps::Stop => {
                    progress.status = RunStatus::Aborted;
                    progress.reason = "interrupted (Ctrl-C) between steps".into();
                    progress.counts.not_run += 1;
                    continue;
                }
            };
            progress.counts.add(end.status);
            for o in &mut self.observers {
                o.step_finished(step, end.status, end.error.as_ref());
            }
            if let Some(failure) = self.rb.host.recorder.take_failure() {
                progress.status = RunStatus::Failed;
                progress.reason = format!("the transcript could not be written: {failure}");
                continue;
            }
            progress.absorb(step, &end);
        }
        self.finish_run(opts, progress, started, undelivered_before, notes)
    }

    /// Creates the transcript and writes `run_started`, or (resuming) attaches the interrupted
    /// run's transcript and writes `run_resumed`. Returns the first step to run and the writes
    /// whose outcome the interrupted run never recorded.
    fn open_transcript(
        &self,
        opts: &mut RunOptions,
        counts: &mut Counts,
    ) -> Result<(usize, Vec<String>)> {
        let host = &self.rb.host;
        let cannot = |e: String| {
            Error::io(
                "cannot write transcript",
                &opts.transcript,
                std::io::Error::other(e),
            )
        };
        match opts.resume.take() {
            Some(r) => {
                host.recorder.attach(r.writer);
                let mut note = r.note;
                if let Event::RunResumed {
                    operator, identity, ..
                } = &mut note
                {
                    operator.clone_from(&opts.operator);
                    *identity = Some(self.identity.clone());
                }
                host.recorder
                    .record(&note, Durability::Synced)
                    .map_err(cannot)?;
                for status in r.prior {
                    counts.add(status);
                }
                host.recorder.set_replay(r.replay);
                Ok((r.start_step, r.uncertain))
            }
            None => {
                let writer = TranscriptWriter::create(&opts.transcript, host.redactor.clone())?;
                host.recorder.attach(writer);
                let first = self.run_started(opts);
                host.recorder
                    .record(&first, Durability::Synced)
                    .map_err(cannot)?;
                Ok((0, Vec::new()))
            }
        }
    }

    /// The run's `ctx` (the parameters and `ctx.run`), shared by every step; tells the
    /// observers the run started.
    fn start(&mut self, opts: &RunOptions) -> Dynamic {
        let rb = self.rb;
        let mut ctx_map = opts.params.clone();
        let mut run_info = Map::new();
        run_info.insert("id".into(), opts.run_id.clone().into());
        run_info.insert("mode".into(), rb.host.recorder.mode().as_str().into());
        run_info.insert("environment".into(), opts.environment.clone().into());
        run_info.insert("runbook".into(), rb.meta.id.clone().into());
        run_info.insert("version".into(), rb.meta.version.to_string().into());
        ctx_map.insert("run".into(), run_info.into());
        let headline = format!(
            "{} ({}@{}) on {} by {} · run {}",
            rb.meta.title,
            rb.meta.id,
            rb.meta.version,
            opts.environment,
            opts.operator,
            opts.run_id
        );
        for o in &mut self.observers {
            o.run_started(headline.clone());
        }
        Dynamic::from_map(ctx_map).into_shared()
    }

    /// A resumed run whose cut-off step sent writes nobody confirmed, and nobody chose to run
    /// it again: the run stops there, recorded.
    fn stop_for_uncertain(&self, step: &Step, uncertain: &[String], progress: &mut Progress) {
        let why = format!(
            "uncertain: {} sent before the crash but never confirmed; a person must check before step {} runs again",
            uncertain.join(", "),
            step.index + 1
        );
        self.record(
            &Event::Decision {
                step: step.index,
                action: Action::Abort,
                by: "resume".into(),
                identity: Some(self.identity.clone()),
                approvers: Vec::new(),
                reason: why.clone(),
                decided_ms: None,
            },
            Durability::Synced,
        );
        self.rb.host.console.line(&format!("    stopped: {why}"));
        progress.status = RunStatus::Aborted;
        progress.reason = why;
        progress.counts.not_run += 1;
    }

    /// A Ctrl-C between steps: a second press (or an unattended run) stops here; after a first
    /// one an operator may still choose to run this step or skip it.
    fn between_steps(&mut self, step: &Step) -> BetweenSteps {
        let host = &self.rb.host;
        if host.interrupt.check() != Some(Stop::Aborted) {
            return BetweenSteps::Run;
        }
        let choice = if host.interrupt.presses() < 2 {
            self.ask_person(|d| d.after_interrupt(step))
        } else {
            AfterFailure::Stop
        };
        match choice {
            AfterFailure::Stop => BetweenSteps::Stop,
            AfterFailure::Retry => {
                self.rb.host.interrupt.reset();
                BetweenSteps::Run
            }
            AfterFailure::Continue(why) => {
                self.rb.host.interrupt.reset();
                self.record_choice(step, &AfterFailure::Continue(why.clone()), "after Ctrl-C");
                BetweenSteps::Skip(why)
            }
        }
    }

    /// The run's end: its status (a step the operator went on past counts), the observers told,
    /// `run_finished` written and the transcript closed.
    fn finish_run(
        &mut self,
        opts: RunOptions,
        progress: Progress,
        started: Stamp,
        undelivered_before: usize,
        notes: PathBuf,
    ) -> Result<RunReport> {
        let host = &self.rb.host;
        let Progress {
            mut status,
            mut reason,
            went_on,
            counts,
        } = progress;
        if let (RunStatus::Ok, Some((went_status, why))) = (status, went_on) {
            status = went_status;
            reason = why;
        }
        host.console.finish();
        let duration = started.elapsed();
        let undelivered = host
            .notifier
            .undelivered()
            .saturating_sub(undelivered_before);
        let summary = format!(
            "run {}: {} ok, {} failed, {} skipped, {} not run{}{}",
            status.as_str(),
            counts.ok,
            counts.failed + counts.timed_out,
            counts.skipped,
            counts.not_run,
            undelivered_note(undelivered),
            if reason.is_empty() {
                String::new()
            } else {
                format!(" · {reason}")
            }
        );
        for o in &mut self.observers {
            o.run_finished(status, summary.clone());
        }
        let (calls, sent) = host.recorder.call_counts();
        self.record(
            &Event::RunFinished {
                status,
                reason: reason.clone(),
                duration_ms: Some(ms(duration)),
                counts: Some(counts.clone()),
                calls: Some(calls),
                mutating_calls_sent: Some(sent),
                // Counted again: the lifecycle observer's last messages may have failed too.
                undelivered_notifications: Some(
                    host.notifier
                        .undelivered()
                        .saturating_sub(undelivered_before),
                ),
                error: None,
            },
            Durability::Synced,
        );
        host.recorder.set_stage(Stage::Idle);
        if let Some(failure) = host.recorder.take_failure() {
            // Even run_finished could not be written: say so loudly, the transcript is incomplete.
            return Err(failure);
        }
        host.recorder.detach();
        Ok(RunReport {
            run_id: opts.run_id,
            status,
            reason,
            counts,
            transcript: opts.transcript,
            notes,
            planned: host.recorder.planned(),
            duration,
            undelivered_notifications: host
                .notifier
                .undelivered()
                .saturating_sub(undelivered_before),
        })
    }

    fn run_started(&self, opts: &RunOptions) -> Event {
        let rb = self.rb;
        let modules: Vec<Value> = rb
            .modules()
            .iter()
            .map(|m| json!({ "import": m.import, "file": m.file, "sha256": m.sha256 }))
            .collect();
        let dir = rb.path.parent().unwrap_or(std::path::Path::new("."));
        let module_paths: Vec<PathBuf> = rb
            .modules()
            .iter()
            .map(|m| PathBuf::from(&m.file))
            .collect();
        let mut files: Vec<&std::path::Path> = vec![rb.path.as_path()];
        files.extend(module_paths.iter().map(PathBuf::as_path));
        let content_key: String = std::iter::once(rb.sha256.as_str())
            .chain(rb.modules().iter().map(|m| m.sha256.as_str()))
            .collect::<Vec<_>>()
            .join(",");
        let git = crate::base::git::info_cached(dir, &files, &content_key);
        let params = to_json(&Dynamic::from_map(opts.params.clone()));
        // Where the run acts, as resolved (not as configured: AWS_REGION and AWS_ENDPOINT_URL
        // count), so an auditor can tell which account and region a write went to.
        let (region, endpoint) = rb.host.cloud.region_endpoint();
        let steps: Vec<StepInfo> = rb
            .steps
            .iter()
            .map(|s| StepInfo {
                index: s.index,
                phase: s.phase.as_str().to_string(),
                title: s.title.clone(),
                timeout_ms: ms(s.timeout),
                retries: s.retries,
                confirm: s.confirm.is_some(),
                rollback: s.on_failure.is_some(),
            })
            .collect();
        let sim = rb.host.cloud.environment().backend == crate::data::config::Backend::Sim;
        Event::RunStarted {
            run_id: opts.run_id.clone(),
            runbook: RunbookRef {
                id: rb.meta.id.clone(),
                version: rb.meta.version.to_string(),
                title: rb.meta.title.clone(),
                severity: rb.meta.severity.as_str().to_string(),
                service: Some(rb.meta.service.clone()),
                file: Some(rb.file.clone()),
                path: Some(rb.path.display().to_string()),
                sha256: rb.sha256.clone(),
                modules: Some(Value::Array(modules)),
                git: Some(git.and_then(|g| serde_json::to_value(g).ok())),
            },
            operator: opts.operator.clone(),
            identity: Some(self.identity.clone()),
            trigger: Some(opts.trigger.clone()),
            mode: rb.host.recorder.mode().as_str().to_string(),
            // Plans and sim drills wait on a simulated clock: their `duration_ms` are simulated
            // time (what the run would take), their `ts` stamps wall time.
            clock: Some(rb.host.interrupt.clock().kind().to_string()),
            environment: opts.environment.clone(),
            backend: Some(if sim { "sim" } else { "aws" }.to_string()),
            account: Some(opts.account.clone()),
            region: Some(region),
            endpoint: Some(endpoint),
            fleet: Some(sim.then(|| rb.host.cloud.environment().fleet_source.clone())),
            params,
            guardrails: Some(rb.host.guardrails.recorded()),
            tool: format!("runbook {}", env!("CARGO_PKG_VERSION")),
            steps,
        }
    }

    /// Calls a closure with `ctx` under the step's deadline, in the given stage.
    fn invoke(
        &self,
        f: &FnPtr,
        ctx: &Dynamic,
        stage: Stage,
        timeout: Duration,
    ) -> std::result::Result<Dynamic, Box<EvalAltResult>> {
        let host = &self.rb.host;
        host.recorder.set_stage(stage);
        host.interrupt.set_timeout(Some(timeout));
        let result = f.call::<Dynamic>(&self.rb.engine, &self.rb.ast, (ctx.clone(),));
        host.interrupt.set_timeout(None);
        host.recorder.set_stage(Stage::Idle);
        result
    }

    fn describe(&self, err: &EvalAltResult) -> ErrorInfo {
        let mut info = engine::describe_error(err, &self.rb.file);
        info.message = self.rb.host.redactor.redact(&info.message);
        info
    }

    /// [`Self::describe`] of an error inside `step`. Rhai gives limit errors (operations,
    /// memory, the deadline) the closure call's position, which has none: then the message names
    /// the step's own declaration, so the operator still has a `file:line:col` to open.
    fn describe_in(&self, err: &EvalAltResult, step: &Step) -> ErrorInfo {
        let mut info = self.describe(err);
        if info.location.is_none() {
            info.message = format!(
                "{} (in the step declared at {})",
                info.message, step.location
            );
        }
        info
    }

    /// Shows a step error on the console with its source line, when it has one.
    fn report_error(&self, info: &ErrorInfo) {
        let console = &self.rb.host.console;
        match (&info.file, info.line) {
            (Some(file), line) if line > 0 => {
                let source = self
                    .rb
                    .host
                    .source_of(file)
                    .unwrap_or_else(|| std::rc::Rc::from(""));
                let diag = ScriptDiagnostic::new(
                    file,
                    &source,
                    line,
                    info.col,
                    info.message.clone(),
                    "here",
                );
                console.line(diag.render(console.is_tty()).trim_end());
            }
            _ => console.line(&format!("    error: {}", info.message)),
        }
    }

    fn finish_step(
        &self,
        step: &Step,
        total: usize,
        started: Stamp,
        attempts: u32,
        end: StepEnd,
        ctx: &Dynamic,
    ) -> StepEnd {
        let waiting = self.rb.host.console.take_waited();
        let working = started
            .elapsed()
            .saturating_sub(waiting)
            .saturating_sub(self.preview_spent);
        let (working_ms, waiting_ms) = (ms(working), ms(waiting));
        self.record(
            &Event::StepFinished {
                step: step.index,
                status: end.status,
                duration_ms: working_ms,
                working_ms,
                waiting_ms,
                attempts,
                run_clock_ms: self.run_began.as_ref().map(|b| ms(b.elapsed())),
                reason: end.reason.clone(),
                error: end.error.as_ref().map(ErrorRecord::from),
                ctx: to_json(&ctx.flatten_clone()),
            },
            Durability::Synced,
        );
        self.rb.host.console.step_finished(
            step.index,
            total,
            &step.title,
            end.status.as_str(),
            working_ms,
            waiting_ms,
        );
        end
    }

    /// A plan of one step, run against a deep copy of `ctx` and not recorded: what the step
    /// would change, for the operator to see before deciding.
    fn preview(
        &mut self,
        step: &Step,
        ctx: &Dynamic,
    ) -> (Vec<PlannedCall>, Option<String>, Vec<String>) {
        let started = self.rb.host.interrupt.clock().now();
        let copy = Dynamic::from_map(ctx.flatten_clone().try_cast::<Map>().unwrap_or_default())
            .into_shared();
        let host = &self.rb.host;
        // What the step logs while planned did not happen: the console marks it as a preview.
        host.console.start_preview();
        // A preview is a plan: its waits are simulated, and take no time from the run's clock.
        let (result, planned) = host.interrupt.clock().simulate(|| {
            host.recorder.preview(|| {
                self.invoke(
                    &step.body,
                    &copy,
                    Stage::Step(step.index),
                    step.timeout.min(PREVIEW_LIMIT),
                )
            })
        });
        let log = host.console.end_preview();
        self.preview_spent = self.preview_spent.saturating_add(started.elapsed());
        (
            planned,
            result.err().map(|e| self.describe(&e).message),
            log,
        )
    }

    /// The inspect REPL: lines evaluated with `ctx` and every binding (and the runbook's own
    /// functions); changes to `ctx` are kept and recorded.
    fn inspect(&mut self, step: &Step, ctx: &Dynamic) {
        let host = &self.rb.host;
        let mut scope = rhai::Scope::new();
        scope.push_dynamic("ctx", ctx.clone());
        let functions = self.rb.ast.clone_functions_only();
        host.recorder.set_stage(Stage::Step(step.index));
        host.console
            .line("    inspect: `ctx` and every binding are loaded; an empty line or :q returns");
        let mut buffer = String::new();
        loop {
            let prompt = if buffer.is_empty() {
                "inspect> "
            } else {
                "  ...> "
            };
            let driver = &mut *self.driver;
            let Some(line) = host.console.person(|| driver.read_line(prompt)) else {
                break;
            };
            let trimmed = line.trim();
            if buffer.is_empty() && (trimmed.is_empty() || trimmed == ":q" || trimmed == "exit") {
                break;
            }
            if buffer.is_empty() && matches!(trimmed, "h" | ":h" | "help" | "?") {
                host.console.line(INSPECT_HELP);
                continue;
            }
            buffer.push_str(&line);
            buffer.push('\n');
            let ast = match self.rb.engine.compile_with_scope(&scope, &buffer) {
                Ok(ast) => ast,
                // An unfinished statement (an open brace): keep reading lines.
                Err(e)
                    if matches!(
                        e.err_type(),
                        rhai::ParseErrorType::MissingToken(..)
                            | rhai::ParseErrorType::UnexpectedEOF
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    host.console.line(&format!("    error: {e}"));
                    buffer.clear();
                    continue;
                }
            };
            buffer.clear();
            match self
                .rb
                .engine
                .eval_ast_with_scope::<Dynamic>(&mut scope, &functions.merge(&ast))
            {
                Ok(v) if v.is_unit() => {}
                Ok(v) => host.console.line(&format!(
                    "    = {}",
                    host.redactor.redact(&format!("{v:?}"))
                )),
                Err(e) => host
                    .console
                    .line(&format!("    error: {}", self.describe(&e).message)),
            }
        }
        host.recorder.set_stage(Stage::Idle);
        self.record(
            &Event::Inspected {
                step: step.index,
                ctx: to_json(&ctx.flatten_clone()),
            },
            Durability::Synced,
        );
    }

    /// Asks the driver until it decides to run, skip or abort (inspecting and refused
    /// confirmations loop back). Every recorded decision is written as it is made.
    fn decide(&mut self, step: &Step, total: usize, ctx: &Dynamic) -> Decision {
        let host = &self.rb.host;
        loop {
            let decision = if host.recorder.mode() == crate::sandbox::recorder::Mode::Plan
                && step.confirm.is_some()
            {
                // A plan sends nothing, so there is nothing to confirm yet; the plan still shows
                // what the step would do, which is what a person deciding needs to see.
                Decision::recorded(
                    Action::Run,
                    "plan",
                    "confirmation is asked when the runbook runs; a plan sends nothing",
                )
            } else {
                let (preview, preview_error, preview_log) = if self.driver.wants_preview() {
                    self.preview(step, ctx)
                } else if self.asks_approval() {
                    // Unattended, nobody reads a preview, but an `approve(...)` in the step
                    // asks a person to approve what the step would write: the request carries
                    // that plan, as a confirm step's does.
                    let (preview, _, _) = self.preview(step, ctx);
                    (preview, None, Vec::new())
                } else {
                    (Vec::new(), None, Vec::new())
                };
                // What an `approve(...)` in the step will ask to have approved.
                host.recorder.set_step_plan(&preview);
                let env = host.cloud.environment();
                let protected =
                    (env.protected && !host.protected_confirmed.get()).then_some(env.name.as_str());
                let view = StepView {
                    step,
                    total,
                    preview: &preview,
                    preview_error: preview_error.as_deref(),
                    preview_log: &preview_log,
                    protected,
                };
                let console = &host.console;
                let driver = &mut *self.driver;
                console.person(|| driver.before_step(&view))
            };
            if decision.record {
                self.record(
                    &Event::Decision {
                        step: step.index,
                        action: decision.action,
                        by: decision.by.clone(),
                        // The run's identity: the operator at its terminal, the account a
                        // rule (`unattended`, a hook route) acted under.
                        identity: Some(self.identity.clone()),
                        approvers: Vec::new(),
                        reason: decision.reason.clone(),
                        decided_ms: decision.decided_ms,
                    },
                    Durability::Synced,
                );
            }
            if decision.confirms_environment {
                host.protected_confirmed.set(true);
            }
            match decision.action {
                // The whole session is the person's time (what they evaluate included).
                Action::Inspect => {
                    let rb = self.rb;
                    rb.host.console.person(|| self.inspect(step, ctx));
                }
                Action::Refused => {}
                _ => return decision,
            }
        }
    }

    fn run_step(&mut self, step: &Step, total: usize, ctx: &Dynamic) -> StepEnd {
        let started = self.rb.host.interrupt.clock().now();
        // This step's waiting and previewing start now (finish_step takes them off its time).
        self.rb.host.console.take_waited();
        self.preview_spent = Duration::ZERO;
        // No earlier step's preview or approved plan covers this one.
        self.rb.host.recorder.set_step_plan(&[]);
        self.rb.host.recorder.bind_approved_plan(None);

        if let Some(end) = self.check_when(step, ctx) {
            return self.finish_step(step, total, started, 0, end, ctx);
        }
        if let Some(end) = self.decision(step, total, ctx) {
            return self.finish_step(step, total, started, 0, end, ctx);
        }
        let (attempts, failure) = self.attempts(step, total, ctx);
        let end = match failure {
            None => StepEnd::new(StepStatus::Ok, None, None),
            Some(failure) => self.on_failure(step, failure, ctx),
        };
        self.finish_step(step, total, started, attempts, end, ctx)
    }

    /// The step's `when` guard: None when the step is to run, else how it ended (skipped, or
    /// failed because the guard failed or did not answer a bool).
    fn check_when(&self, step: &Step, ctx: &Dynamic) -> Option<StepEnd> {
        let when = step.when.as_ref()?;
        match self.invoke(when, ctx, Stage::Step(step.index), step.timeout) {
            Ok(v) if v.as_bool() == Ok(false) => Some(StepEnd::new(
                StepStatus::Skipped,
                None,
                Some("its `when` condition is false".into()),
            )),
            Ok(v) if v.is_bool() => None,
            Ok(v) => {
                let info = ErrorInfo {
                    message: format!("`when` must return a bool, not {}", v.type_name()),
                    code: Some("bad_when".into()),
                    location: Some(step.location.to_string()),
                    file: None,
                    line: 0,
                    col: 0,
                };
                Some(StepEnd::new(StepStatus::Failed, Some(info), None))
            }
            Err(err) => {
                let info = self.describe_in(&err, step);
                self.report_error(&info);
                Some(StepEnd::new(status_of(&err), Some(info), None))
            }
        }
    }

    /// The driver's decision (with an approval waited for when it asked for one): None to run
    /// the step, else how it ended without running (skipped, aborted, not approved).
    fn decision(&mut self, step: &Step, total: usize, ctx: &Dynamic) -> Option<StepEnd> {
        let decision = self.decide(step, total, ctx);
        let decision = match decision.action {
            Action::Approval => self.approval(step, &decision, ctx),
            _ => Ok(decision),
        };
        match decision {
            Ok(decision) => self.declined(&decision),
            Err(end) => Some(*end),
        }
    }

    /// Whether a step may call `approve(...)` (the runbook or a module it imports says so,
    /// read as text: a mention in a comment only costs a preview), in a real run (a plan's
    /// approvals do not wait).
    fn asks_approval(&self) -> bool {
        let host = &self.rb.host;
        host.recorder.mode() == crate::sandbox::recorder::Mode::Run
            && (self.rb.source.contains("approve")
                || host
                    .modules
                    .borrow()
                    .iter()
                    .any(|m| m.source.contains("approve")))
    }

    /// Waits for the approval a decision asked for. Err: it did not come (denied, timed out,
    /// aborted), and how the step ended.
    fn approval(
        &mut self,
        step: &Step,
        decision: &Decision,
        ctx: &Dynamic,
    ) -> std::result::Result<Decision, Box<StepEnd>> {
        let wait = decision.wait.unwrap_or(Duration::from_secs(15 * 60));
        let outcome = match self.driver.unanswered_approval(step) {
            Some(recorded) => Err(recorded),
            None => self.ask_approval(step, ctx, wait),
        };
        match outcome {
            Ok(decision) => Ok(decision),
            Err(info) => {
                let status = if info.code.as_deref() == Some("aborted") {
                    StepStatus::Aborted
                } else {
                    StepStatus::Failed
                };
                self.report_error(&info);
                Err(Box::new(StepEnd::new(status, Some(info), None)))
            }
        }
    }

    /// Files an approval request for `step` carrying its plan (a fresh preview: the would-be
    /// writes with their resolved arguments) and waits for it; once approved, the recorder holds
    /// the step's writes to that plan, and the decision is recorded with who approved.
    fn ask_approval(
        &mut self,
        step: &Step,
        ctx: &Dynamic,
        wait: Duration,
    ) -> std::result::Result<Decision, ErrorInfo> {
        self.approval_wait = wait;
        let (preview, _, _) = self.preview(step, ctx);
        let plan: Vec<Value> = preview.iter().map(PlannedCall::approvable).collect();
        let host = &self.rb.host;
        host.recorder.set_step_plan(&preview);
        let question = format!(
            "run step {} {:?} of {}",
            step.index + 1,
            step.title,
            self.rb.meta.id
        );
        let group = host
            .cloud
            .environment()
            .approvers
            .as_ref()
            .map(|(name, members)| crate::services::approvals::Group::new(name, members.clone()));
        let outcome = host
            .console
            .person(|| {
                crate::services::approvals::request_and_wait(
                    host.asker(),
                    crate::services::approvals::Question {
                        text: &question,
                        approvers: 1,
                        others: false,
                        group,
                        plan,
                    },
                    wait,
                    None,
                )
            })
            .map_err(|e| ErrorInfo {
                message: e.message,
                code: Some(e.code),
                location: None,
                file: None,
                line: 0,
                col: 0,
            })?;
        host.recorder
            .bind_approved_plan(Some((step.index, outcome.request.plan.clone())));
        let by = outcome.names();
        let decision = Decision::recorded(
            Action::Run,
            &by,
            format!(
                "approved after {} s (request {}, plan sha256 {})",
                outcome.waited.as_secs(),
                outcome.request.number,
                outcome.request.plan_hash
            ),
        );
        self.record(
            &Event::Decision {
                step: step.index,
                action: Action::Run,
                by,
                identity: None,
                approvers: outcome.approved_by.clone(),
                reason: decision.reason.clone(),
                decided_ms: Some(ms(outcome.waited)),
            },
            Durability::Synced,
        );
        Ok(decision)
    }

    /// How the step ends when the decision was not to run it (skipped or aborted); None: run.
    fn declined(&self, decision: &Decision) -> Option<StepEnd> {
        match decision.action {
            Action::Skip | Action::Continue => Some(StepEnd::new(
                StepStatus::Skipped,
                None,
                Some(decision.reason.clone()),
            )),
            Action::Abort => {
                self.rb
                    .host
                    .console
                    .line(&format!("    stopped: {}", decision.reason));
                Some(StepEnd::new(
                    StepStatus::Aborted,
                    None,
                    Some(decision.reason.clone()),
                ))
            }
            Action::Run | Action::Retry | Action::Inspect | Action::Refused | Action::Approval => {
                None
            }
        }
    }

    /// Runs the body until it succeeds or no retry is left: automatic retries with doubling
    /// backoff after a failure, a person's choice after a timeout, a Ctrl-C or the last
    /// failure. Returns the number of attempts and, unless the last one succeeded, its failure.
    fn attempts(&mut self, step: &Step, total: usize, ctx: &Dynamic) -> (u32, Option<Failure>) {
        let host = &self.rb.host;
        let mut attempt: u32 = 0;
        let mut automatic_left = step.retries;
        loop {
            attempt += 1;
            // What this attempt plans and whether a guardrail refuses one of its writes.
            let (planned_mark, refusals) =
                (host.recorder.planned_len(), host.guardrails.refusals());
            host.console
                .step_started(step.index, total, step.phase.as_str(), &step.title);
            self.record(
                &Event::StepStarted {
                    step: step.index,
                    phase: step.phase.as_str().to_string(),
                    title: step.title.clone(),
                    attempt,
                },
                Durability::Synced,
            );
            let err = match self.invoke(&step.body, ctx, Stage::Step(step.index), step.timeout) {
                Ok(_) => return (attempt, None),
                Err(err) => err,
            };
            if let Some(failure) = self.after_attempt(
                step,
                ctx,
                &err,
                attempt,
                (planned_mark, refusals),
                &mut automatic_left,
            ) {
                return (attempt, Some(failure));
            }
        }
    }

    /// After attempt number `attempt` failed with `err`: None to try again (an automatic retry,
    /// its backoff waited, or a person's choice), else the step's failure. `marks` are the planned
    /// calls and guardrail refusals counted before the attempt.
    fn after_attempt(
        &mut self,
        step: &Step,
        ctx: &Dynamic,
        err: &EvalAltResult,
        attempt: u32,
        marks: (usize, u64),
        automatic_left: &mut u32,
    ) -> Option<Failure> {
        let host = &self.rb.host;
        let (planned_mark, refusals) = marks;
        let status = status_of(err);
        let mut info = self.describe_in(err, step);
        if let Some(why) = host.recorder.halted() {
            // A resume that diverged from its transcript: stop, never retry or roll back.
            info.message = why;
            info.code = Some("resume_diverged".into());
            self.report_error(&info);
            return Some(Failure::new(StepStatus::Aborted, info));
        }
        if let Some(why) = host.recorder.take_drift() {
            // A write outside the approved plan was not sent: the step asks again, with its
            // plan as it is now, and runs again (not an automatic retry) only once approved.
            host.console.line(&format!("    {why}"));
            return match self.ask_approval(step, ctx, self.approval_wait) {
                Ok(_) => None,
                Err(mut again) => {
                    again.message = format!("{why}; asked again: {}", again.message);
                    self.report_error(&again);
                    Some(Failure::new(StepStatus::Failed, again))
                }
            };
        }
        if status == StepStatus::TimedOut {
            let timeout = humantime::format_duration(step.timeout);
            // A wait that ran until the deadline says so: the deadline, not the wait's own
            // timeout, is what ended it.
            info.message = match host.interrupt.clock().take_ended_wait() {
                Some(wait) => format!("the step ran past its timeout of {timeout}: {wait}"),
                None => format!("the step ran past its timeout of {timeout}"),
            };
        }
        if status == StepStatus::Aborted {
            // A first Ctrl-C stops the step and asks; a second one (or an unattended run) stops
            // the run. Only then is "the run was aborted" true, so only then is it said.
            let mut go_on = false;
            if host.interrupt.presses() < 2 {
                let choice = self.ask_person(|d| d.after_interrupt(step));
                self.record_choice(step, &choice, "after Ctrl-C");
                match choice {
                    AfterFailure::Retry => {
                        self.rb.host.interrupt.reset();
                        return None;
                    }
                    AfterFailure::Continue(_) => {
                        self.rb.host.interrupt.reset();
                        go_on = true;
                    }
                    AfterFailure::Stop => {}
                }
            }
            if !go_on {
                self.report_error(&info);
            }
            return Some(Failure {
                status,
                info,
                go_on,
            });
        }
        self.report_error(&info);
        if status != StepStatus::Failed {
            // Timeouts are not retried automatically: a timed-out step may have changed things
            // half-way. A person may still choose to retry below.
            let choice = self.ask_person(|d| d.after_failure(step, &info));
            return match choice {
                AfterFailure::Retry => {
                    self.record_choice(step, &AfterFailure::Retry, "after a timeout");
                    None
                }
                AfterFailure::Continue(_) => {
                    self.record_choice(step, &choice, "after a timeout");
                    Some(Failure {
                        status,
                        info,
                        go_on: true,
                    })
                }
                AfterFailure::Stop => Some(Failure::new(status, info)),
            };
        }
        // A guardrail's refusal (blast radius, kill switch, protected environment) will
        // refuse again: retrying with backoff would only hold the run half-way.
        let refused = host.guardrails.refusals() > refusals;
        if *automatic_left > 0 && !refused {
            *automatic_left -= 1;
            host.recorder.forget_planned_since(planned_mark);
            let doubling = 2u32.saturating_pow(attempt - 1);
            let delay = step.backoff.saturating_mul(doubling).min(MAX_BACKOFF);
            self.record(
                &Event::Retry {
                    step: step.index,
                    attempt: attempt + 1,
                    delay_ms: ms(delay),
                    error: ErrorRecord::from(&info),
                },
                Durability::Written,
            );
            host.console.line(&format!(
                "    retrying in {} ({} left)",
                humantime::format_duration(delay),
                automatic_left
            ));
            if host.interrupt.sleep(delay).is_err() {
                return Some(Failure::new(StepStatus::Aborted, info));
            }
            return None;
        }
        let choice = self.ask_person(|d| d.after_failure(step, &info));
        if choice != AfterFailure::Stop {
            self.record_choice(step, &choice, "after the step failed");
        }
        match choice {
            AfterFailure::Retry => None,
            AfterFailure::Continue(_) => Some(Failure {
                status,
                info,
                go_on: true,
            }),
            AfterFailure::Stop => Some(Failure::new(status, info)),
        }
    }

    /// After the step failed for good: its `on_failure` rollback (not after an abort, which is
    /// recorded instead), then how the step ended.
    fn on_failure(&self, step: &Step, failure: Failure, ctx: &Dynamic) -> StepEnd {
        let Failure {
            status,
            info,
            go_on,
        } = failure;
        if let Some(rollback) = &step.on_failure {
            if status == StepStatus::Aborted && !go_on {
                self.record(
                    &Event::Decision {
                        step: step.index,
                        action: Action::Skip,
                        by: "runbook".into(),
                        identity: Some(self.identity.clone()),
                        approvers: Vec::new(),
                        reason: "on_failure not run: the run was aborted".into(),
                        decided_ms: None,
                    },
                    Durability::Synced,
                );
            } else {
                self.run_rollback(step, rollback, ctx);
            }
        }
        let mut end = StepEnd::new(status, Some(info), None);
        end.go_on = go_on;
        end
    }

    fn record_choice(&self, step: &Step, choice: &AfterFailure, when: &str) {
        let (action, reason) = match choice {
            AfterFailure::Retry => (Action::Retry, format!("retry {when}")),
            AfterFailure::Continue(why) if why.is_empty() => (
                Action::Continue,
                format!("continue with the next step {when}"),
            ),
            AfterFailure::Continue(why) => (
                Action::Continue,
                format!("continue with the next step {when}: {why}"),
            ),
            AfterFailure::Stop => (Action::Abort, format!("stop the run {when}")),
        };
        self.record(
            &Event::Decision {
                step: step.index,
                action,
                by: self.operator.clone(),
                identity: Some(self.identity.clone()),
                approvers: Vec::new(),
                reason,
                decided_ms: None,
            },
            Durability::Synced,
        );
    }

    /// Asks the driver something a person may answer: the progress display goes first (it would
    /// draw over the question) and the time is counted as waiting, not as the step's work.
    fn ask_person<T>(&mut self, ask: impl FnOnce(&mut dyn Driver) -> T) -> T {
        let console = &self.rb.host.console;
        let driver = &mut *self.driver;
        console.person(|| ask(driver))
    }

    fn run_rollback(&self, step: &Step, rollback: &FnPtr, ctx: &Dynamic) {
        let host = &self.rb.host;
        host.console
            .line(&format!("    ↺ running on_failure of {:?}", step.title));
        self.record(
            &Event::OnFailureStarted { step: step.index },
            Durability::Synced,
        );
        let started = host.interrupt.clock().now();
        let result = self.invoke(rollback, ctx, Stage::OnFailure(step.index), step.timeout);
        let (status, error) = match &result {
            Ok(_) => (StepStatus::Ok, None),
            Err(err) => {
                let info = self.describe_in(err, step);
                self.report_error(&info);
                (status_of(err), Some(info))
            }
        };
        host.console
            .line(&format!("    ↺ on_failure {}", status.as_str()));
        self.record(
            &Event::OnFailureFinished {
                step: step.index,
                status,
                duration_ms: ms(started.elapsed()),
                error: error.as_ref().map(ErrorRecord::from),
            },
            Durability::Synced,
        );
    }
}

/// Where a run's transcript goes by default: `<dir>/YYYY-MM-DD/<run-id>.jsonl`, with `<dir>` from
/// `RUNBOOK_TRANSCRIPTS` or `transcripts/` in the project's folder (`config::project_root`).
pub fn default_transcript_path(run_id: &str) -> PathBuf {
    // The project's folder, also from a subfolder: audit files never scatter.
    let dir = crate::data::config::transcripts_dir();
    dir.join(chrono::Utc::now().format("%Y-%m-%d").to_string())
        .join(format!("{run_id}.jsonl"))
}

/// What a plan prints on stdout: each would-be write once, in order, then the count. A plan
/// never ends with "run ok": nothing ran.
pub fn plan_summary(report: &RunReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (i, c) in report.planned.iter().enumerate() {
        let step = c
            .step
            .map(|s| format!("step {}", s + 1))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(out, "  {}. [{step}] {}({})", i + 1, c.binding, c.args);
    }
    let n = report.planned.len();
    let _ = writeln!(
        out,
        "plan: {n} would-be write{}",
        if n == 1 { "" } else { "s" }
    );
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::rc::Rc;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::base::console::Console;
    use crate::sandbox::engine::Host;
    use crate::sandbox::recorder::Mode;

    /// A runbook from source text, loaded on the built-in sim (a plan's clock is simulated, so
    /// backoff takes no time).
    fn load(mode: Mode, dir: &Path, src: &str) -> Runbook {
        let host: Rc<Host> = Host::new(mode, Console::silent(), Arc::new(AtomicBool::new(false)));
        let declared =
            Runbook::load_source(&dir.join("t.rhai"), src, host, Duration::from_secs(10));
        declared.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `rb` with `driver` into `dir/t.jsonl`; the report and the transcript's events.
    fn run(rb: &Runbook, driver: &mut dyn Driver, dir: &Path) -> (RunReport, Vec<Value>) {
        let transcript = dir.join("t.jsonl");
        let opts = RunOptions {
            resume: None,
            run_id: "test-run".into(),
            transcript: transcript.clone(),
            environment: "sim".into(),
            account: None,
            operator: "tester".into(),
            params: Map::new(),
            trigger: None,
        };
        let report = Executor::new(rb, driver).run(opts).unwrap();
        let (events, _) = crate::data::transcript::read_verified(&transcript).unwrap();
        (report, events)
    }

    /// Skips and aborts the steps it is told to, runs the others.
    struct Scripted {
        skip: Vec<usize>,
        abort: Vec<usize>,
    }

    impl Driver for Scripted {
        fn before_step(&mut self, view: &StepView) -> Decision {
            let i = view.step.index;
            if self.skip.contains(&i) {
                Decision::recorded(Action::Skip, "test", "skipped by the test driver")
            } else if self.abort.contains(&i) {
                Decision::recorded(Action::Abort, "test", "aborted by the test driver")
            } else {
                Decision::routine(Action::Run, "test")
            }
        }
    }

    const RUNBOOK: &str = r#"runbook(#{ id: "t", version: "1.0.0", title: "t", severity: "P3" });
containment("Flaky", |ctx| {
    if !("tries" in ctx) { ctx.tries = 0; }
    ctx.tries += 1;
    if ctx.tries < 2 { fail("not yet"); }
}, #{ retries: 2, backoff: "1s" });
containment("Broken", |ctx| { fail("broken"); }, #{
    allow_failure: true,
    on_failure: |ctx| { ctx.rolled_back = true; },
});
eradication("Optional", |ctx| { ctx.optional = true; });
eradication("Dangerous", |ctx| { ctx.dangerous = true; });
recovery("Never", |ctx| { ctx.never = true; });
"#;

    /// `(type, step)` of the step-level events, in order.
    fn timeline(events: &[Value]) -> Vec<(String, Option<u64>)> {
        events
            .iter()
            .filter(|e| e["type"] != "log" && e["type"] != "call")
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_string(),
                    e["step"].as_u64(),
                )
            })
            .collect()
    }

    #[test]
    fn a_run_with_a_retry_a_rollback_a_skip_and_an_abort_records_each_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let rb = load(Mode::Plan, dir.path(), RUNBOOK);
        let mut driver = Scripted {
            skip: vec![2],
            abort: vec![3],
        };
        let (report, events) = run(&rb, &mut driver, dir.path());

        let expected: Vec<(String, Option<u64>)> = [
            ("run_started", None),
            ("step_started", Some(0)),
            ("retry", Some(0)),
            ("step_started", Some(0)),
            ("step_finished", Some(0)),
            ("step_started", Some(1)),
            ("on_failure_started", Some(1)),
            ("on_failure_finished", Some(1)),
            ("step_finished", Some(1)),
            ("decision", Some(2)),
            ("step_finished", Some(2)),
            ("decision", Some(3)),
            ("step_finished", Some(3)),
            ("run_finished", None),
        ]
        .iter()
        .map(|(t, s)| (t.to_string(), *s))
        .collect();
        assert_eq!(timeline(&events), expected);

        let finished: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "step_finished")
            .collect();
        let statuses: Vec<&str> = finished
            .iter()
            .map(|e| e["status"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(statuses, ["ok", "failed", "skipped", "aborted"]);
        assert_eq!(finished[0]["attempts"], 2, "retried once, then ok");
        assert_eq!(finished[1]["ctx"]["rolled_back"], true);
        assert_eq!(finished[2]["reason"], "skipped by the test driver");
        assert!(finished[3]["ctx"].get("dangerous").is_none());
        let rollback = events
            .iter()
            .find(|e| e["type"] == "on_failure_finished")
            .unwrap();
        assert_eq!(rollback["status"], "ok");

        assert_eq!(report.status, RunStatus::Aborted);
        assert_eq!(
            (
                report.counts.ok,
                report.counts.failed,
                report.counts.skipped
            ),
            (1, 1, 1)
        );
        assert_eq!(report.counts.not_run, 1, "the step after the abort");
        let last = events.last().unwrap();
        assert_eq!(last["status"], "aborted");
        assert!(
            last["reason"]
                .as_str()
                .unwrap()
                .contains("aborted by the test driver"),
            "{last}"
        );
        let err = report.into_result().unwrap_err();
        assert_eq!(err.exit_code(), crate::base::error::exit::ABORTED);
    }

    /// Goes on after every failure, as a person pressing "continue" would.
    struct GoOn;

    impl Driver for GoOn {
        fn before_step(&mut self, _view: &StepView) -> Decision {
            Decision::routine(Action::Run, "test")
        }
        fn after_failure(&mut self, _step: &Step, _error: &ErrorInfo) -> AfterFailure {
            AfterFailure::Continue("the test goes on".into())
        }
    }

    #[test]
    fn a_choice_after_a_failure_is_recorded_as_the_run_s_operator_s() {
        let dir = tempfile::tempdir().unwrap();
        let src = RUNBOOK.replace("allow_failure: true,", "");
        let rb = load(Mode::Plan, dir.path(), &src);
        let (_, events) = run(&rb, &mut GoOn, dir.path());
        // The run's operator (`RunOptions::operator`: a drill's "drill", a hook's
        // "hook:<route>"), not whoever the process's environment names.
        let go_on = events
            .iter()
            .find(|e| e["type"] == "decision" && e["action"] == "continue")
            .unwrap_or_else(|| panic!("no continue decision in {events:?}"));
        assert_eq!(go_on["by"], "tester");
    }

    #[test]
    fn a_failed_step_without_allow_failure_stops_the_run_after_its_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let src = RUNBOOK.replace("allow_failure: true,", "");
        let rb = load(Mode::Plan, dir.path(), &src);
        let mut driver = Scripted {
            skip: vec![],
            abort: vec![],
        };
        let (report, events) = run(&rb, &mut driver, dir.path());
        let types: Vec<String> = timeline(&events).into_iter().map(|(t, _)| t).collect();
        let rollback = types
            .iter()
            .position(|t| t == "on_failure_finished")
            .unwrap();
        assert_eq!(types[rollback + 1], "step_finished");
        assert_eq!(types[rollback + 2], "run_finished");
        assert_eq!(report.status, RunStatus::Failed);
        assert_eq!(report.counts.not_run, 3);
        assert!(
            report.reason.contains("step 2 \"Broken\" failed"),
            "{}",
            report.reason
        );
        assert_eq!(
            report.into_result().unwrap_err().exit_code(),
            crate::base::error::exit::FAILED
        );
    }

    #[test]
    fn an_unattended_run_stops_at_a_confirm_step_without_yes() {
        let dir = tempfile::tempdir().unwrap();
        let src = r#"runbook(#{ id: "t", version: "1.0.0", title: "t", severity: "P3" });
containment("Ask", |ctx| { ctx.ran = true; }, #{ confirm: "GO" });
"#;
        let rb = load(Mode::Run, dir.path(), src);
        let mut driver = Unattended {
            yes: None,
            operator: "tester".into(),
            approval_timeout: None,
        };
        let (report, events) = run(&rb, &mut driver, dir.path());
        assert_eq!(report.status, RunStatus::Aborted);
        let decision = events.iter().find(|e| e["type"] == "decision").unwrap();
        assert_eq!(decision["action"], "abort");
        assert_eq!(decision["by"], "unattended");
        assert!(events.iter().all(|e| e["type"] != "step_started"));
    }
}
