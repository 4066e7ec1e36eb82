//! `runbook replay`: a past run's transcript as the test of a runbook version.
//!
//! The runbook (by default the version the transcript recorded, checked by its sha256) runs on
//! the sim backend with every binding call answered from the transcript by a [`Tape`] set on
//! the recorder (see [`crate::sandbox::recorder::Answers`]): nothing is sent to a cloud, Slack
//! or a file. Read-only calls get their recorded results, matched by binding and arguments in
//! the order they were made; writes are compared with the recorded ones and answered with the
//! recorded result (or failure); a write the recorded run never made gets the binding's plan
//! placeholder and is reported. The clock is simulated: every answered call takes as long as it
//! did, waits and backoff advance it at once, and `now()` is the recorded time. Decisions (run,
//! skip, abort, the choice after a failure, approvals) are replayed by a [`ReplayDriver`].
//!
//! The replay's own transcript goes to a temporary folder removed afterwards: a replay is a
//! test, not a run, and writes nothing into the transcripts folder. What it reports is where the
//! version replayed diverges from the incident, step by step ([`Report`]).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::Serialize;
use serde_json::{Value, json};

use crate::base::console::Console;
use crate::base::error::{Error, Result};
use crate::data::config::{Backend, Environment};
use crate::data::transcript::{self, Action, ErrorRecord, Event, StepStatus};
use crate::run::executor::{AfterFailure, Decision, Driver, StepView};
use crate::run::launch::{Driving, Launch, Protection, Source};
use crate::sandbox::declare::Step;
use crate::sandbox::engine::{ErrorInfo, Host};
use crate::sandbox::recorder::{Answer, Answers, Binding, Effect, Limits, Mode, comparable};
use crate::services::cloud::CloudAccess;

/// The reason the executor records for a step its `when` skipped.
const WHEN_FALSE: &str = "its `when` condition is false";

/// The run's own Slack lifecycle messages carry its id and durations: they are the tool's, not
/// the runbook's, so a replay neither posts them nor compares them.
const LIFECYCLE: &str = "slack::lifecycle";

/// What `runbook replay` was asked.
pub(crate) struct Replay {
    pub transcript: PathBuf,
    /// `--runbook FILE | ID@VERSION`; None: the recorded version, checked by its sha256.
    pub runbook: Option<String>,
    pub dirs: Vec<PathBuf>,
    /// `--param NAME=VALUE`, over the recorded parameters (a new parameter, a secret).
    pub params: Vec<(String, String)>,
}

/// One place the replayed version does something else than the incident did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Divergence {
    /// The step's title (None: outside any step).
    pub step: Option<String>,
    /// `unrecorded_write`, `write_not_made`, `different_arguments`, `step_status`, `branch`,
    /// `step_removed`, `unrecorded_read`, `unrecorded_approval`, `run_status`.
    pub kind: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
    /// What the incident did (redacted as recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded: Option<Value>,
    /// What the replayed version did (redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<Value>,
    /// Sort key: the step's position (the new version's, else the recorded one's).
    #[serde(skip)]
    order: usize,
}

/// A runbook version, as a report names it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Version {
    pub id: String,
    pub version: String,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// What a replay found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub transcript: String,
    pub run_id: String,
    pub recorded: Version,
    pub replayed: Version,
    /// No divergence: the version replayed does what the incident did.
    pub matches: bool,
    pub incident_status: String,
    pub replay_status: String,
    pub divergences: Vec<Divergence>,
    /// Differences that change nothing outside (a read repeated, a step added that only reads).
    pub notes: Vec<String>,
    /// Calls answered from the transcript (or by a placeholder): all the replay's calls.
    pub calls: u64,
    /// Writes actually sent: always 0 (what the replay transcript's `run_finished` says).
    pub writes_sent: u64,
    /// Whether the replay's (simulated) cloud was ever connected: never.
    pub cloud_connected: bool,
    /// Notifications captured: none, every post is answered from the transcript.
    pub notifications: usize,
    /// The incident's duration, as recorded.
    pub incident_ms: u64,
    /// The replay's duration on its simulated clock.
    pub simulated_ms: u64,
    /// Wall time of the replay's steps.
    pub wall_ms: u64,
}

impl Report {
    /// The human report, one line per divergence under the step it is in.
    pub(crate) fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "replay of {} (run {}, {}@{}, ended {})\nagainst {}@{} ({}sha256 {}): {}\n",
            self.transcript,
            self.run_id,
            self.recorded.id,
            self.recorded.version,
            self.incident_status,
            self.replayed.id,
            self.replayed.version,
            self.replayed
                .file
                .as_deref()
                .map(|f| format!("{f}, "))
                .unwrap_or_default(),
            self.replayed
                .sha256
                .get(..12)
                .unwrap_or(&self.replayed.sha256),
            if self.matches {
                "matches the incident".to_string()
            } else {
                format!("{} divergence(s)", self.divergences.len())
            },
        );
        let mut last: Option<Option<&str>> = None;
        for d in &self.divergences {
            if last != Some(d.step.as_deref()) {
                let _ = writeln!(
                    out,
                    "  {}",
                    d.step
                        .as_deref()
                        .map_or("outside any step".to_string(), |s| format!("step {s:?}"))
                );
                last = Some(d.step.as_deref());
            }
            let _ = writeln!(out, "    {}: {}", d.kind, d.detail);
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        let _ = writeln!(
            out,
            "replay ended {} · {} call(s) answered from the transcript, {} sent · {} simulated (incident {}) in {} ms",
            self.replay_status,
            self.calls,
            self.writes_sent,
            ms_text(self.simulated_ms),
            ms_text(self.incident_ms),
            self.wall_ms,
        );
        out
    }
}

fn ms_text(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

/// A transcript that cannot be replayed: exit 2, saying why.
fn unusable(why: impl std::fmt::Display) -> Error {
    Error::Input(format!("unusable transcript: {why}"))
}

/// A recorded call, as the tape answers it.
#[derive(Debug, Clone)]
struct Recorded {
    step: Option<String>,
    binding: String,
    key: String,
    args: Value,
    result: Option<Value>,
    error: Option<ErrorRecord>,
    duration_ms: u64,
}

impl Recorded {
    fn answer(&self, tape: &Tape) -> Answer {
        if let Some(v) = &self.result
            && v.get("truncated").is_some()
            && v.get("bytes").is_some()
        {
            let why = format!(
                "{}({}) was recorded truncated ({} bytes; results over {} characters are summarised), so its answer is not known",
                self.binding,
                comparable(&self.args),
                v["bytes"],
                crate::sandbox::recorder::MAX_RESULT_CHARS
            );
            tape.unusable.borrow_mut().get_or_insert(why.clone());
            return Answer::Stop(why);
        }
        Answer::Recorded {
            result: match &self.error {
                Some(e) => Err(e.clone()),
                None => Ok(self.result.clone().unwrap_or(Value::Null)),
            },
            duration_ms: self.duration_ms,
        }
    }
}

/// Arguments as compared: without the targets a binding resolved (the resolution is part of the
/// recorded call), redaction markers and key order aside.
fn key_of(binding: &str, args: &Value) -> String {
    let mut a = args.clone();
    if let Some(o) = a.as_object_mut() {
        o.remove("resolved");
    }
    format!("{binding}{}", comparable(&a))
}

/// A value for a report: without the resolved targets.
fn shown(args: &Value) -> Value {
    let mut a = args.clone();
    if let Some(o) = a.as_object_mut() {
        o.remove("resolved");
    }
    a
}

/// The recorded results of one read (binding and arguments) not yet answered, and the last one
/// answered.
type Reads = (VecDeque<Recorded>, Option<Recorded>);

/// Every call of the recorded run, answering the replay's calls (see the module documentation).
pub(crate) struct Tape {
    reads: RefCell<HashMap<String, Reads>>,
    writes: Vec<Recorded>,
    used: Vec<Cell<bool>>,
    /// The replayed version's step titles, by index.
    titles: Vec<String>,
    /// When the recorded run started: `now()` the tape has no answer for is this plus the clock.
    started: Option<chrono::DateTime<chrono::FixedOffset>>,
    divergences: RefCell<Vec<Divergence>>,
    notes: RefCell<Vec<String>>,
    unusable: RefCell<Option<String>>,
}

impl Tape {
    fn new(events: &[Event], recorded_titles: &[String], titles: Vec<String>, ts: &str) -> Self {
        let mut reads: HashMap<String, Reads> = HashMap::new();
        let mut writes = Vec::new();
        let title = |i: &Option<usize>| i.and_then(|i| recorded_titles.get(i)).cloned();
        for e in events {
            match e {
                // A call answered on resume is an echo of one already on the tape.
                Event::Call { replayed: true, .. } | Event::Call { planned: true, .. } => {}
                Event::Call { binding, .. } if binding == LIFECYCLE => {}
                Event::Call {
                    step,
                    binding,
                    args,
                    mutating,
                    duration_ms,
                    result,
                    error,
                    ..
                } => {
                    let rec = Recorded {
                        step: title(step),
                        binding: binding.clone(),
                        key: key_of(binding, args),
                        args: args.clone(),
                        result: result.clone(),
                        error: error.clone(),
                        duration_ms: *duration_ms,
                    };
                    if *mutating {
                        writes.push(rec);
                    } else {
                        reads.entry(rec.key.clone()).or_default().0.push_back(rec);
                    }
                }
                // A write the guardrails refused was never sent: the replay's is refused alike.
                Event::Guardrail {
                    step,
                    binding,
                    rule,
                    reason,
                } => writes.push(Recorded {
                    step: title(step),
                    binding: binding.clone(),
                    key: String::new(),
                    args: Value::Null,
                    result: None,
                    error: Some(ErrorRecord {
                        message: reason.clone(),
                        code: Some(rule.clone()),
                        location: None,
                        request_id: None,
                    }),
                    duration_ms: 0,
                }),
                _ => {}
            }
        }
        let used = writes.iter().map(|_| Cell::new(false)).collect();
        Tape {
            reads: RefCell::new(reads),
            writes,
            used,
            titles,
            started: chrono::DateTime::parse_from_rfc3339(ts).ok(),
            divergences: RefCell::new(Vec::new()),
            notes: RefCell::new(Vec::new()),
            unusable: RefCell::new(None),
        }
    }

    fn diverged(&self, d: Divergence) {
        self.divergences.borrow_mut().push(d);
    }

    fn order(&self, step: Option<&str>) -> usize {
        step.and_then(|s| self.titles.iter().position(|t| t == s))
            .unwrap_or(usize::MAX)
    }

    fn read(
        &self,
        host: &Host,
        spec: &Binding,
        title: Option<String>,
        key: &str,
        args: &Value,
    ) -> Answer {
        let mut reads = self.reads.borrow_mut();
        if let Some((queue, last)) = reads.get_mut(key) {
            if let Some(next) = queue.pop_front() {
                *last = Some(next.clone());
                return next.answer(self);
            }
            if let Some(last) = last.clone() {
                // Read more often than recorded (a poll that goes on longer): the world is as
                // it was last seen.
                self.notes.borrow_mut().push(format!(
                    "{}({}) is read more often than the incident read it: answered with the last recorded result",
                    spec.name,
                    comparable(args)
                ));
                return last.answer(self);
            }
        }
        drop(reads);
        if spec.name == "now" {
            let at = self.started.map(|t| {
                let elapsed = chrono::Duration::from_std(host.interrupt.clock().elapsed())
                    .unwrap_or_default();
                t.checked_add_signed(elapsed).unwrap_or(t)
            });
            let text = at.map_or_else(crate::base::clock::now_utc, |t| {
                t.with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            });
            return Answer::Recorded {
                result: Ok(Value::String(text)),
                duration_ms: 0,
            };
        }
        if spec.effect == Effect::Wait {
            self.diverged(Divergence {
                order: self.order(title.as_deref()),
                step: title,
                kind: "unrecorded_approval",
                detail: format!(
                    "asks for an approval the incident never asked ({}): assumed given, to show what follows",
                    comparable(args)
                ),
                binding: Some(spec.name.into()),
                recorded: None,
                replayed: Some(args.clone()),
            });
            return Answer::Recorded {
                result: Ok(json!({ "approved_by": ["(replay: assumed)"] })),
                duration_ms: 0,
            };
        }
        let why = format!(
            "{}({}) was never read in the incident, so its answer is not known: the replay stops here",
            spec.name,
            comparable(args)
        );
        self.diverged(Divergence {
            order: self.order(title.as_deref()),
            step: title,
            kind: "unrecorded_read",
            detail: why.clone(),
            binding: Some(spec.name.into()),
            recorded: None,
            replayed: Some(args.clone()),
        });
        Answer::Stop(why)
    }

    fn write(&self, spec: &Binding, title: Option<String>, key: &str, args: &Value) -> Answer {
        let free = |i: &usize| !self.used[*i].get();
        let exact = (0..self.writes.len())
            .filter(free)
            .find(|i| self.writes[*i].key == key);
        if let Some(i) = exact {
            self.used[i].set(true);
            return self.writes[i].answer(self);
        }
        // The same binding in the same step, with other arguments.
        let similar = (0..self.writes.len()).filter(free).find(|i| {
            let w = &self.writes[*i];
            w.binding == spec.name && w.step.is_some() && w.step == title
        });
        if let Some(i) = similar {
            self.used[i].set(true);
            let w = &self.writes[i];
            self.diverged(Divergence {
                order: self.order(title.as_deref()),
                step: title,
                kind: "different_arguments",
                detail: format!(
                    "{} with {} where the incident sent {} (answered with the recorded result)",
                    spec.name,
                    comparable(&shown(args)),
                    comparable(&shown(&w.args))
                ),
                binding: Some(spec.name.into()),
                recorded: Some(shown(&w.args)),
                replayed: Some(shown(args)),
            });
            return w.answer(self);
        }
        self.diverged(Divergence {
            order: self.order(title.as_deref()),
            step: title,
            kind: "unrecorded_write",
            detail: format!(
                "{}({}): a write the incident did not make (not sent; answered with its plan placeholder)",
                spec.name,
                comparable(&shown(args))
            ),
            binding: Some(spec.name.into()),
            recorded: None,
            replayed: Some(shown(args)),
        });
        Answer::Placeholder
    }

    /// The recorded writes the replay never made.
    fn unmade(&self) -> Vec<&Recorded> {
        self.writes
            .iter()
            .zip(&self.used)
            .filter(|(_, u)| !u.get())
            .map(|(w, _)| w)
            .collect()
    }
}

impl Answers for Tape {
    fn answer(&self, host: &Host, spec: &Binding, step: Option<usize>, args: &Value) -> Answer {
        // Waits on the simulated clock, and a poll whose every read is answered itself.
        if matches!(spec.name, "sleep" | "wait_until") {
            return Answer::Local;
        }
        let title = step.and_then(|i| self.titles.get(i)).cloned();
        // Compared as recorded: redacted (the markers differ per run; `comparable` drops them).
        let mut redacted = args.clone();
        host.redactor.redact_json(&mut redacted);
        let key = key_of(spec.name, &redacted);
        match spec.effect {
            Effect::ReadOnly | Effect::Wait => self.read(host, spec, title, &key, &redacted),
            Effect::Mutating | Effect::DeclaredReadOnly => self.write(spec, title, &key, &redacted),
        }
    }
}

/// A decision the incident recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decided {
    action: Action,
    by: String,
    reason: String,
}

/// The incident's decisions, by step title: those made before the step first started (run,
/// skip, abort, an approval) and the choices after a failure or an interrupt; and how each step
/// whose approval never came ended (see [`Driver::unanswered_approval`]).
///
/// A resumed run is replayed as the one run it was: the decision that stopped it before a
/// resume (an abort, a failure nobody chose to retry, an approval that never came) is what the
/// resume undid, so the step it stopped at runs again, decided as after the resume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Decisions {
    before: BTreeMap<String, VecDeque<Decided>>,
    after: BTreeMap<String, VecDeque<Decided>>,
    unanswered: BTreeMap<String, Ended>,
}

/// How a step ended: its error's message, code and location.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ended {
    message: String,
    code: Option<String>,
    location: Option<String>,
}

/// Why a step that is still waiting for its approval when the transcript ends stops in the replay.
const LEFT_WAITING: &str =
    "the incident ended while this step waited for its approval: replayed as never approved";

impl Decisions {
    fn new(events: &[Event], titles: &[String]) -> Self {
        let mut d = Decisions::default();
        let mut started = std::collections::BTreeSet::new();
        // Steps waiting for an approval: Some(how the step ended) once it ended unapproved.
        let mut waiting: BTreeMap<usize, Option<Ended>> = BTreeMap::new();
        // How each step last ended before the current segment (resume boundary).
        let mut ended: BTreeMap<usize, StepStatus> = BTreeMap::new();
        for e in events {
            match e {
                Event::StepStarted { step, .. } => {
                    started.insert(*step);
                }
                Event::StepFinished {
                    step,
                    status,
                    error,
                    reason,
                    ..
                } => {
                    ended.insert(*step, *status);
                    if let Some(w) = waiting.get_mut(step)
                        && w.is_none()
                    {
                        *w = Some(match error {
                            Some(e) => Ended {
                                message: e.message.clone(),
                                code: e.code.clone(),
                                location: e.location.clone(),
                            },
                            None => Ended {
                                message: reason.clone().unwrap_or_default(),
                                code: Some("aborted".into()),
                                location: None,
                            },
                        });
                    }
                }
                Event::RunResumed { from_step, .. } => {
                    let Some(title) = titles.get(*from_step) else {
                        continue;
                    };
                    waiting.remove(from_step);
                    let stopped = ended
                        .get(from_step)
                        .is_some_and(|s| !matches!(s, StepStatus::Ok | StepStatus::Skipped));
                    if !started.contains(from_step) {
                        // Stopped before it started (refused, aborted, never approved): the
                        // resume decides it again.
                        d.before.remove(title);
                    } else if stopped {
                        // Ended failed or aborted after it ran: the resume runs it again.
                        let q = d.after.entry(title.clone()).or_default();
                        if q.back().is_some_and(|x| x.action == Action::Abort) {
                            q.pop_back();
                        }
                        q.push_back(Decided {
                            action: Action::Retry,
                            by: "resume".into(),
                            reason: String::new(),
                        });
                    }
                }
                Event::Decision {
                    step,
                    action,
                    by,
                    reason,
                    ..
                } => {
                    let Some(title) = titles.get(*step) else {
                        continue;
                    };
                    let decided = Decided {
                        action: *action,
                        by: by.clone(),
                        reason: reason.clone(),
                    };
                    if !started.contains(step) {
                        match action {
                            Action::Approval => {
                                waiting.insert(*step, None);
                            }
                            _ => {
                                waiting.remove(step);
                            }
                        }
                        d.before
                            .entry(title.clone())
                            .or_default()
                            .push_back(decided);
                    } else if matches!(action, Action::Retry | Action::Continue | Action::Abort)
                        && by != "runbook"
                    {
                        d.after.entry(title.clone()).or_default().push_back(decided);
                    }
                }
                _ => {}
            }
        }
        for (step, end) in waiting {
            if let Some(title) = titles.get(step) {
                let end = end.unwrap_or_else(|| Ended {
                    message: LEFT_WAITING.into(),
                    code: Some("aborted".into()),
                    location: None,
                });
                d.unanswered.insert(title.clone(), end);
            }
        }
        d
    }

    /// The steps the incident's transcript ends in, waiting for their approval.
    fn left_waiting(&self) -> Vec<String> {
        self.unanswered
            .iter()
            .filter(|(_, e)| e.message == LEFT_WAITING)
            .map(|(t, _)| t.clone())
            .collect()
    }
}

/// Replays the incident's decisions: the same run, skip or abort before each step, the same
/// choice after each failure, the same approvals (one that never came is replayed as never
/// coming, ending the step as it ended). A step that asks for confirmation the incident never
/// gave runs (recorded as decided by `replay`, and reported).
pub(crate) struct ReplayDriver(pub(crate) Decisions);

impl Driver for ReplayDriver {
    fn before_step(&mut self, view: &StepView) -> Decision {
        let step = view.step;
        while let Some(d) = self
            .0
            .before
            .get_mut(&step.title)
            .and_then(|q| q.pop_front())
        {
            // The unattended driver's own refusal (or wait for an approval) answered a
            // confirmation this version no longer asks for: its steps now run unasked.
            if d.by == "unattended" && step.confirm.is_none() {
                return Decision::routine(Action::Run, "replay");
            }
            match d.action {
                Action::Inspect | Action::Refused => {}
                // The approval came (the next decision says who) or it did not.
                Action::Approval => {
                    let queue = self.0.before.get_mut(&step.title);
                    let approved = queue
                        .as_ref()
                        .and_then(|q| q.front())
                        .is_some_and(|n| n.action == Action::Run);
                    if approved && let Some(n) = queue.and_then(|q| q.pop_front()) {
                        return Decision::recorded(Action::Run, &n.by, n.reason);
                    }
                    if self.0.unanswered.contains_key(&step.title) {
                        // Asked, and answered by `unanswered_approval` as it was then.
                        return Decision {
                            wait: Some(std::time::Duration::ZERO),
                            ..Decision::recorded(Action::Approval, &d.by, d.reason)
                        };
                    }
                    return Decision::recorded(
                        Action::Abort,
                        &d.by,
                        format!(
                            "the approval the incident waited for never came: {}",
                            d.reason
                        ),
                    );
                }
                action => return Decision::recorded(action, &d.by, d.reason),
            }
        }
        match step.confirm {
            None => Decision::routine(Action::Run, "replay"),
            Some(_) => Decision::recorded(
                Action::Run,
                "replay",
                "the incident never decided this step: replayed as run",
            ),
        }
    }

    fn after_failure(&mut self, step: &Step, _error: &ErrorInfo) -> AfterFailure {
        self.chosen(step)
    }

    fn after_interrupt(&mut self, step: &Step) -> AfterFailure {
        self.chosen(step)
    }

    fn unanswered_approval(&mut self, step: &Step) -> Option<ErrorInfo> {
        let e = self.0.unanswered.remove(&step.title)?;
        Some(ErrorInfo {
            message: e.message,
            code: e.code,
            location: e.location,
            file: None,
            line: 0,
            col: 0,
        })
    }
}

impl ReplayDriver {
    fn chosen(&mut self, step: &Step) -> AfterFailure {
        match self
            .0
            .after
            .get_mut(&step.title)
            .and_then(|q| q.pop_front())
        {
            Some(Decided {
                action: Action::Retry,
                ..
            }) => AfterFailure::Retry,
            Some(Decided {
                action: Action::Continue,
                reason,
                ..
            }) => AfterFailure::Continue(reason),
            _ => AfterFailure::Stop,
        }
    }
}

/// How each step ended (the latest `step_finished` of each), by index.
fn statuses(events: &[Event]) -> BTreeMap<usize, (StepStatus, Option<String>, Option<String>)> {
    let mut out = BTreeMap::new();
    for e in events {
        if let Event::StepFinished {
            step,
            status,
            reason,
            error,
            ..
        } = e
        {
            out.insert(
                *step,
                (
                    *status,
                    reason.clone(),
                    error.as_ref().map(|e| e.message.clone()),
                ),
            );
        }
    }
    out
}

fn status_text(s: Option<&(StepStatus, Option<String>, Option<String>)>) -> String {
    match s {
        None => "not run".into(),
        Some((status, _, Some(error))) => format!("{} ({error})", status.as_str()),
        Some((status, Some(reason), None)) => format!("{} ({reason})", status.as_str()),
        Some((status, None, None)) => status.as_str().into(),
    }
}

fn when_skipped(s: Option<&(StepStatus, Option<String>, Option<String>)>) -> bool {
    matches!(s, Some((StepStatus::Skipped, Some(r), _)) if r == WHEN_FALSE)
}

/// Runs the replay and reports where the version replayed diverges from the incident.
pub(crate) fn replay(r: Replay) -> Result<Report> {
    let (lines, _) = transcript::read_verified(&r.transcript).map_err(unusable)?;
    let events = crate::run::resume::read_events(&lines).map_err(unusable)?;
    let Some(Event::RunStarted {
        run_id,
        runbook,
        mode,
        params,
        steps,
        ..
    }) = events.first().cloned()
    else {
        return Err(unusable("it is not a run's transcript (a hook journal?)"));
    };
    if mode != "run" {
        return Err(unusable(format!(
            "a {mode} transcript sent no writes: only a run can be replayed"
        )));
    }
    let ts = lines[0]["ts"].as_str().unwrap_or_default().to_string();
    let recorded_titles: Vec<String> = steps.iter().map(|s| s.title.clone()).collect();
    let default_source = r.runbook.is_none();
    let target = match &r.runbook {
        Some(t) => t.clone(),
        None => runbook
            .path
            .clone()
            .filter(|p| Path::new(p).is_file())
            .or_else(|| runbook.file.clone())
            .ok_or_else(|| unusable("it does not say which runbook file ran"))?,
    };
    let mut given: Vec<(String, String)> = Vec::new();
    if let Some(map) = params.as_object() {
        for (name, value) in map {
            if r.params.iter().any(|(n, _)| n == name) {
                continue;
            }
            match value {
                Value::Null => {}
                // A secret was recorded as its marker: the replay passes the marker, which
                // compares equal to the recorded (redacted) arguments it ends up in.
                Value::String(s) => given.push((name.clone(), s.clone())),
                other => given.push((name.clone(), other.to_string())),
            }
        }
    }
    given.extend(r.params.iter().cloned());

    let decisions = Decisions::new(&events, &recorded_titles);
    let waiting = decisions.left_waiting();
    let mut env = Environment::builtin_sim();
    env.name = "replay".into();
    // Nothing may reach a cloud: the sim, and never connected (every call is answered).
    env.backend = Backend::Sim;
    let scratch = scratch_dir()?;
    let out = scratch.join(format!("{run_id}.jsonl"));
    let launch = Launch {
        mode: Mode::Run,
        cloud: CloudAccess::new(env),
        source: Source::Search {
            dirs: r.dirs.clone(),
            target,
        },
        params: given,
        // The incident's refusals are on the tape; the replay's guardrails would only differ.
        limits: Limits::default(),
        protection: Protection::Configured(false),
        driving: Driving::Replay(decisions),
        operator: "replay".into(),
        // Its messages carry the run's id and durations (see LIFECYCLE).
        slack_lifecycle: false,
        observers: Vec::new(),
        run_id: run_id.clone(),
        transcript: out.clone(),
        simulated_clock: true,
        console: Console::silent(),
        abort: Arc::new(AtomicBool::new(false)),
        ctrl_c: false,
        verify_account: false,
        resume: None,
        trigger: None,
        lock: None,
    };
    // `run_started`'s wall time is a chain field (`ts`), not one of the event's.
    let result = run(
        launch,
        &events,
        &runbook,
        &recorded_titles,
        default_source,
        &out,
        &ts,
        &waiting,
    );
    let _ = std::fs::remove_dir_all(&scratch);
    let mut report = result?;
    report.transcript = r.transcript.display().to_string();
    Ok(report)
}

/// A private folder for the replay's own transcript, removed when the replay ends.
fn scratch_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "runbook-replay-{}-{}",
        std::process::id(),
        crate::base::identity::new_run_id()
    ));
    crate::data::transcript::create_private_dir(&dir)
        .map_err(|e| Error::io("cannot create", &dir, e))?;
    Ok(dir)
}

#[allow(clippy::too_many_arguments)]
fn run(
    launch: Launch,
    events: &[Event],
    recorded: &crate::data::transcript::RunbookRef,
    recorded_titles: &[String],
    default_source: bool,
    out: &Path,
    ts: &str,
    waiting: &[String],
) -> Result<Report> {
    let loaded = launch.load()?;
    let rb = &loaded.rb;
    if default_source && rb.sha256 != recorded.sha256 {
        return Err(unusable(format!(
            "{} changed since the incident (sha256 {} then, {} now): pass --runbook to replay a version on purpose",
            rb.file,
            recorded.sha256.get(..12).unwrap_or(&recorded.sha256),
            rb.sha256.get(..12).unwrap_or(&rb.sha256)
        )));
    }
    let titles: Vec<String> = rb.steps.iter().map(|s| s.title.clone()).collect();
    let tape = Rc::new(Tape::new(events, recorded_titles, titles.clone(), ts));
    rb.host.recorder.set_answers(tape.clone());
    let replayed = Version {
        id: rb.meta.id.clone(),
        version: rb.meta.version.to_string(),
        sha256: rb.sha256.clone(),
        file: Some(rb.file.clone()),
    };
    let done = loaded.run()?;
    if let Some(why) = tape.unusable.borrow().clone() {
        return Err(unusable(why));
    }
    let (lines, _) = transcript::read_verified(out)?;
    let now_events = crate::run::resume::read_events(&lines)?;
    let cloud_connected = done.rb.host.cloud.sim().is_some();
    let notifications = done.rb.host.notifier.captured().len();
    let (calls, writes_sent) = done.rb.host.recorder.call_counts();
    compare(CompareInput {
        tape: &tape,
        events,
        now_events: &now_events,
        recorded,
        recorded_titles,
        titles: &titles,
        waiting,
    })
    .map(
        |(divergences, notes, incident_status, incident_ms)| Report {
            transcript: String::new(),
            run_id: done.report.run_id.clone(),
            recorded: Version {
                id: recorded.id.clone(),
                version: recorded.version.clone(),
                sha256: recorded.sha256.clone(),
                file: recorded.file.clone(),
            },
            replayed,
            matches: divergences.is_empty(),
            incident_status,
            replay_status: done.report.status.as_str().into(),
            divergences,
            notes,
            calls,
            writes_sent,
            cloud_connected,
            notifications,
            incident_ms,
            simulated_ms: u64::try_from(done.report.duration.as_millis()).unwrap_or(u64::MAX),
            wall_ms: u64::try_from(done.wall.as_millis()).unwrap_or(u64::MAX),
        },
    )
}

struct CompareInput<'a> {
    tape: &'a Tape,
    events: &'a [Event],
    now_events: &'a [Event],
    recorded: &'a crate::data::transcript::RunbookRef,
    recorded_titles: &'a [String],
    titles: &'a [String],
    /// Steps the incident's transcript ends in, waiting for their approval.
    waiting: &'a [String],
}

type Compared = (Vec<Divergence>, Vec<String>, String, u64);

fn compare(c: CompareInput) -> Result<Compared> {
    let _ = c.recorded;
    let tape = c.tape;
    let mut divergences = tape.divergences.borrow().clone();
    let mut notes: Vec<String> = Vec::new();
    let order_of = |title: Option<&str>| -> usize {
        match title {
            Some(t) => match c.titles.iter().position(|x| x == t) {
                Some(i) => i,
                None => c
                    .recorded_titles
                    .iter()
                    .position(|x| x == t)
                    .unwrap_or(usize::MAX),
            },
            None => usize::MAX,
        }
    };
    for w in tape.unmade() {
        divergences.push(Divergence {
            order: order_of(w.step.as_deref()),
            step: w.step.clone(),
            kind: "write_not_made",
            detail: match &w.error {
                Some(e) if w.args.is_null() => format!(
                    "{}: the incident's write was refused by its guardrails ({}); this version does not make it",
                    w.binding, e.message
                ),
                _ => format!(
                    "{}({}): the incident made this write; this version does not",
                    w.binding,
                    comparable(&shown(&w.args))
                ),
            },
            binding: Some(w.binding.clone()),
            recorded: Some(shown(&w.args)),
            replayed: None,
        });
    }
    let then = statuses(c.events);
    let now = statuses(c.now_events);
    let mut step_diverged = false;
    for (i, title) in c.recorded_titles.iter().enumerate() {
        let was = then.get(&i);
        let Some(j) = c.titles.iter().position(|t| t == title) else {
            step_diverged = true;
            divergences.push(Divergence {
                order: order_of(Some(title)),
                step: Some(title.clone()),
                kind: "step_removed",
                detail: format!(
                    "this version has no step {title:?}; in the incident it ended {}",
                    status_text(was)
                ),
                binding: None,
                recorded: None,
                replayed: None,
            });
            continue;
        };
        let is = now.get(&j);
        if was.map(|s| s.0) == is.map(|s| s.0) {
            continue;
        }
        // Still waiting when the incident's transcript ends: the replay stops there, unapproved.
        if was.is_none()
            && is.is_some_and(|s| s.0 == StepStatus::Aborted)
            && c.waiting.contains(title)
        {
            notes.push(format!(
                "step {title:?} was still waiting for its approval when the incident's transcript ends: replayed as never approved"
            ));
            continue;
        }
        step_diverged = true;
        let kind = if when_skipped(was) != when_skipped(is) {
            "branch"
        } else {
            "step_status"
        };
        let detail = match (kind, is) {
            ("step_status", Some((StepStatus::Failed | StepStatus::TimedOut, _, _))) => format!(
                "would now fail: ended {} in the incident, now {}",
                status_text(was),
                status_text(is)
            ),
            _ => format!(
                "ended {} in the incident, now {}",
                status_text(was),
                status_text(is)
            ),
        };
        divergences.push(Divergence {
            order: order_of(Some(title)),
            step: Some(title.clone()),
            kind,
            detail,
            binding: None,
            recorded: None,
            replayed: None,
        });
    }
    for (j, title) in c.titles.iter().enumerate() {
        if !c.recorded_titles.contains(title) {
            notes.push(format!(
                "step {title:?} is new in this version (it ended {})",
                status_text(now.get(&j))
            ));
        }
    }
    for e in c.now_events {
        if let Event::Decision { step, by, .. } = e
            && by == "replay"
        {
            notes.push(format!(
                "step {:?} asks for confirmation the incident never gave: replayed as run",
                c.titles.get(*step).cloned().unwrap_or_default()
            ));
        }
    }
    notes.extend(tape.notes.borrow().iter().cloned());
    notes.dedup();
    let finished = |events: &[Event]| {
        events.iter().rev().find_map(|e| match e {
            Event::RunFinished {
                status,
                duration_ms,
                ..
            } => Some((status.as_str().to_string(), duration_ms.unwrap_or(0))),
            _ => None,
        })
    };
    let (incident_status, incident_ms) =
        finished(c.events).unwrap_or_else(|| ("unfinished".into(), 0));
    let replay_status = finished(c.now_events).map(|f| f.0).unwrap_or_default();
    // A run that ended waiting for an approval has no end; its replay stops there, aborted.
    let ended_waiting =
        incident_status == "unfinished" && replay_status == "aborted" && !c.waiting.is_empty();
    if !step_diverged
        && divergences.is_empty()
        && incident_status != replay_status
        && !ended_waiting
    {
        divergences.push(Divergence {
            order: usize::MAX,
            step: None,
            kind: "run_status",
            detail: format!("the incident ended {incident_status}, the replay {replay_status}"),
            binding: None,
            recorded: None,
            replayed: None,
        });
    }
    divergences.sort_by_key(|d| d.order);
    Ok((divergences, notes, incident_status, incident_ms))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(lines: &[Value]) -> Vec<Event> {
        lines.iter().map(|l| Event::parse(l).unwrap()).collect()
    }

    fn titles() -> Vec<String> {
        vec!["Look".into(), "Fix".into()]
    }

    #[test]
    fn decisions_before_a_step_and_choices_after_its_failure_are_kept_apart() {
        let events = parse(&[
            json!({ "type": "decision", "step": 1, "action": "approval", "by": "unattended" }),
            json!({ "type": "decision", "step": 1, "action": "run", "by": "alice" }),
            json!({ "type": "step_started", "step": 1, "attempt": 1 }),
            json!({ "type": "decision", "step": 1, "action": "retry", "by": "bob" }),
            json!({ "type": "decision", "step": 1, "action": "skip", "by": "runbook" }),
            json!({ "type": "decision", "step": 7, "action": "run", "by": "nobody" }),
        ]);
        let d = Decisions::new(&events, &titles());
        let before: Vec<Action> = d.before["Fix"].iter().map(|x| x.action).collect();
        assert_eq!(before, [Action::Approval, Action::Run]);
        let after: Vec<(Action, &str)> = d.after["Fix"]
            .iter()
            .map(|x| (x.action, x.by.as_str()))
            .collect();
        // The runbook's own note (a rollback not run) is no one's choice.
        assert_eq!(after, [(Action::Retry, "bob")]);
        assert!(!d.before.contains_key("Look"));
    }

    static TAG: Binding = Binding {
        name: "ec2::tag",
        effect: Effect::Mutating,
        placeholder: crate::sandbox::recorder::unit_placeholder,
    };
    static REBOOT: Binding = Binding {
        name: "ec2::reboot",
        effect: Effect::Mutating,
        placeholder: crate::sandbox::recorder::unit_placeholder,
    };

    fn write(step: usize, binding: &str, id: &str) -> Value {
        json!({ "type": "call", "step": step, "binding": binding, "args": { "ids": [id] },
                "mutating": true, "planned": false, "duration_ms": 5, "result": [id] })
    }

    #[test]
    fn a_write_is_answered_when_recorded_named_when_its_arguments_changed_and_never_made_up() {
        let events = parse(&[
            write(1, "ec2::tag", "i-1"),
            write(1, "ec2::tag", "i-2"),
            write(1, "ec2::stop", "i-3"),
            // Echoed on resume: one write, not two.
            json!({ "type": "call", "step": 1, "binding": "ec2::stop", "args": { "ids": ["i-3"] },
                    "mutating": true, "planned": false, "replayed": true }),
        ]);
        let tape = Tape::new(&events, &titles(), titles(), "2026-11-30T10:00:00.000Z");
        let fix = || Some("Fix".to_string());
        let args = |id: &str| json!({ "ids": [id] });
        // Recorded, even out of order: answered with its result, as long as it took.
        let second = tape.write(&TAG, fix(), &key_of("ec2::tag", &args("i-2")), &args("i-2"));
        assert!(matches!(
            second,
            Answer::Recorded { result: Ok(ref v), duration_ms: 5 } if *v == json!(["i-2"])
        ));
        // The same write in the same step with another target: named, answered as recorded.
        let other = tape.write(&TAG, fix(), &key_of("ec2::tag", &args("i-9")), &args("i-9"));
        assert!(matches!(other, Answer::Recorded { .. }));
        // A write the incident never made: never sent, its placeholder.
        let new = tape.write(
            &REBOOT,
            fix(),
            &key_of("ec2::reboot", &args("i-4")),
            &args("i-4"),
        );
        assert!(matches!(new, Answer::Placeholder));
        let kinds: Vec<&str> = tape.divergences.borrow().iter().map(|d| d.kind).collect();
        assert_eq!(kinds, ["different_arguments", "unrecorded_write"]);
        // What is left was recorded and not made.
        let left: Vec<String> = tape.unmade().iter().map(|w| w.key.clone()).collect();
        assert_eq!(left, [key_of("ec2::stop", &args("i-3"))]);
    }
}
