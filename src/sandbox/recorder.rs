//! The recorder: the one door every binding call passes through.
//!
//! A binding declares itself once, as a static [`Binding`]: its name, whether it is read-only or
//! mutating, and the placeholder it returns in plan mode. It then hands its work to
//! [`call`] as a closure. The recorder, not the binding, decides what happens:
//!
//! - outside a step (while the runbook is loading) every binding is refused, so loading a runbook
//!   can never touch anything;
//! - in plan mode a mutating binding is recorded as "would call" and its closure never runs, which
//!   makes a plan complete by construction: nothing mutating can slip through;
//! - a mutating call writes (and fsyncs) an `intent` before it is sent and its result after, so a
//!   crash between the two leaves the call visibly uncertain instead of silently lost;
//! - every call becomes one `call` event, with its arguments redacted, its duration and a summary
//!   of its result or its error;
//! - a step's timeout or an abort is honoured before any call is made;
//! - in a replay ([`Answers`] set), every call is answered from a past run's transcript before
//!   any resolution, guardrail or intent, and none is sent.
//!
//! Bindings never write the transcript and never look at the mode themselves.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use rhai::{Dynamic, EvalAltResult, NativeCallContext, Position};
use serde::Serialize;
use serde_json::{Value, json};

use crate::base::error::{BindingError, Error};
use crate::data::transcript::{Durability, ErrorRecord, Event, TranscriptWriter};
use crate::sandbox::engine::Host;

/// What every host function returns: a value, or a script error (catchable or not).
pub type ScriptResult<T> = Result<T, Box<EvalAltResult>>;

/// Whether a binding changes anything outside the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    ReadOnly,
    Mutating,
    /// Waits on people (approvals), or on the world changing after writes a plan never sends (an
    /// alarm clearing): changes nothing, but a plan must not wait for it, so in plan mode it is
    /// answered by its placeholder like a write.
    Wait,
    /// A write the runbook declares read-only (a diagnostic over Run Command, `read_only: true`):
    /// a plan runs it for real and records it as `read_only: "declared by the runbook"`; a run
    /// still treats it as a write (intent, kill switch, blast radius, protected environment).
    DeclaredReadOnly,
}

/// What a call event says about a declared read-only call.
pub const DECLARED_READ_ONLY: &str = "declared by the runbook";

/// Read-only lookups a binding needs before its call is decided (see [`call_resolved`]).
pub enum Resolve<'a> {
    /// Needed before any write is sent (tag targets resolved to instances): done in runs and plans
    /// alike, counted by the blast radius and handed to the plan placeholder.
    Always(&'a dyn Fn(&Host) -> Result<Value, BindingError>),
    /// Needed only so a plan's placeholder has the shape of a real result (the volumes an instance
    /// would snapshot): done in plans only, so a run makes no extra call.
    PlanOnly(&'a dyn Fn(&Host) -> Result<Value, BindingError>),
}

/// A binding's declaration: made once, next to its implementation.
pub struct Binding {
    /// The name a runbook author uses, e.g. `notes::append`.
    pub name: &'static str,
    pub effect: Effect,
    /// What a mutating binding returns in plan mode, from its (unredacted) arguments.
    pub placeholder: fn(&Value) -> Dynamic,
}

/// Limits enforced on every write, before it is sent (the unattended-run guardrails).
#[derive(Debug, Default)]
pub struct Guardrails {
    /// The most distinct resources (instances, volumes, groups, ...) one run may change.
    max_resources: Cell<Option<usize>>,
    /// While this file exists, no write is sent (an operator's emergency stop).
    kill_switch: RefCell<Option<std::path::PathBuf>>,
    /// While this SSM parameter holds anything but `off`, no write is sent: a kill switch one
    /// person can throw for every runner in the account at once.
    kill_parameter: RefCell<Option<String>>,
    touched: RefCell<std::collections::BTreeSet<String>>,
    /// The rule that last refused a write in this run, if any.
    tripped: Cell<Option<&'static str>>,
    /// Writes refused so far (the executor does not retry an attempt that ended in one).
    refusals: Cell<u64>,
}

/// A run's guardrail limits, decided before its [`Host`] is built (see `crate::run::launch`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// The most distinct resources one run may change (`--max-resources`, a route's cap).
    pub max_resources: Option<usize>,
    /// While this file exists, no write is sent.
    pub kill_switch: Option<std::path::PathBuf>,
    /// While this SSM parameter holds anything but `off`, no write is sent (see
    /// [`kill_parameter_state`]).
    pub kill_parameter: Option<String>,
}

impl Guardrails {
    /// Guardrails holding `limits` for the whole run: they are fixed when the host is built.
    pub fn new(limits: Limits) -> Self {
        Guardrails {
            max_resources: Cell::new(limits.max_resources),
            kill_switch: RefCell::new(limits.kill_switch),
            kill_parameter: RefCell::new(limits.kill_parameter),
            ..Guardrails::default()
        }
    }

    /// The rule that last refused a write (`kill_switch`, `blast_radius`), if one did.
    pub fn tripped(&self) -> Option<&'static str> {
        self.tripped.get()
    }

    /// How many writes the guardrails (and the protected-environment rule) refused in this run.
    pub fn refusals(&self) -> u64 {
        self.refusals.get()
    }

    fn refused(&self, rule: &'static str) {
        self.tripped.set(Some(rule));
        self.refusals.set(self.refusals.get().saturating_add(1));
    }

    /// The limits as `run_started` records them, so `resume` can put them back. The kill switch
    /// is recorded as an absolute path: a resume may start in another folder.
    pub(crate) fn recorded(&self) -> Value {
        let kill_switch = self
            .kill_switch
            .borrow()
            .as_ref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()));
        json!({
            "max_resources": self.max_resources.get(),
            "kill_switch": kill_switch,
            "kill_switch_parameter": *self.kill_parameter.borrow(),
        })
    }

    /// Resume: a write the run sent before it was interrupted still counts against its cap,
    /// counted as the live run counted it (the same [`changed_resources`]), and a launch that
    /// finished turns its placeholders into the instances it made, as [`Self::created`] does.
    pub(crate) fn restore_touched(&self, event: &Event) {
        match event {
            Event::Intent { binding, args, .. } => {
                let ids = changed_resources(binding, args);
                self.touched.borrow_mut().extend(ids);
            }
            Event::Call {
                binding,
                result,
                error: None,
                ..
            } => self.created(binding, result.as_ref().unwrap_or(&Value::Null)),
            _ => {}
        }
    }

    /// Why `args` may not be sent, if they may not. Resources are what the call targets (see
    /// [`changed_resources`]), counted before it is sent.
    fn refuse(&self, host: &Host, binding: &str, args: &Value) -> Option<(&'static str, String)> {
        // Fails closed: a path that cannot be checked (a symlink loop) or a dangling link counts.
        if let Some(path) = self.kill_switch.borrow().as_ref()
            && kill_switch_set(path)
        {
            return Some((
                "kill_switch",
                format!(
                    "{binding} refused: the kill switch {} is set",
                    path.display()
                ),
            ));
        }
        if let Some(name) = self.kill_parameter.borrow().as_ref()
            && let Some(why) = kill_parameter_state(host, name)
        {
            return Some(("kill_switch", format!("{binding} refused: {why}")));
        }
        let max = self.max_resources.get()?;
        let ids = changed_resources(binding, args);
        let mut touched = self.touched.borrow_mut();
        let new: Vec<&String> = ids.iter().filter(|id| !touched.contains(*id)).collect();
        if touched.len() + new.len() > max {
            let existing: Vec<&str> = new
                .iter()
                .filter(|s| !s.starts_with(NEW_INSTANCE))
                .map(|s| s.as_str())
                .collect();
            let mut named: Vec<String> = existing.iter().take(10).map(|s| s.to_string()).collect();
            if existing.len() > 10 {
                named.push(format!("and {} more", existing.len() - 10));
            }
            let launched = new.len() - existing.len();
            if launched > 0 {
                named.push(format!("{launched} new instance(s)"));
            }
            return Some((
                "blast_radius",
                format!(
                    "{binding} refused: it would change {} more resource(s) ({}) and this run may change at most {max} ({} already)",
                    new.len(),
                    named.join(", "),
                    touched.len()
                ),
            ));
        }
        touched.extend(new.into_iter().cloned());
        None
    }

    /// After `ec2::launch` succeeded: its counted "new instances" are now real ids, so later
    /// writes to them (tagging the replacement) are not counted a second time.
    fn created(&self, binding: &str, result: &Value) {
        if binding != "ec2::launch" {
            return;
        }
        let ids: Vec<String> = result
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut touched = self.touched.borrow_mut();
        let placeholders: Vec<String> = touched
            .iter()
            .filter(|t| t.starts_with(NEW_INSTANCE))
            .take(ids.len())
            .cloned()
            .collect();
        if placeholders.is_empty() {
            return;
        }
        for p in placeholders {
            touched.remove(&p);
        }
        touched.extend(ids);
    }
}

/// Whether the kill-switch parameter holds writes, and why. It fails closed: a parameter that
/// cannot be read holds them too (an outage of SSM is no time for unattended writes).
/// A missing parameter, or one set to `off`, `false` or `0`, does not.
pub fn kill_parameter_state(host: &Host, name: &str) -> Option<String> {
    let read = host.cloud.get(&host.io).and_then(|cloud| {
        host.io
            .block_on(&host.interrupt, cloud.get_parameter(name, true))
    });
    match read {
        Ok(value) => match value.trim().to_ascii_lowercase().as_str() {
            "" | "off" | "false" | "0" => None,
            _ => Some(format!("the kill switch parameter {name} is set")),
        },
        Err(e) if e.code == "ParameterNotFound" => None,
        Err(e) => Some(format!(
            "the kill switch parameter {name} cannot be read ({}: {})",
            e.code, e.message
        )),
    }
}

/// How a not-yet-created instance is named in the blast-radius count.
pub(crate) const NEW_INSTANCE: &str = "new instance ";

/// The resources a write changes, counted by the blast-radius cap: the ids it *targets* (its
/// `id`, `ids` and `instances` arguments, tag targets already resolved to `instances`; the
/// `listener`, `target_group`, `alarms` and `auto_scaling_group` it names, a local program as
/// its `command`), and each
/// instance `ec2::launch` would create. Ids that only appear as values (a tag value naming a
/// security group, the groups `ec2::restore` puts back) are not resources the call changes.
pub fn changed_resources(binding: &str, args: &Value) -> Vec<String> {
    static SHAPE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^(i|vol|snap|sg|ami|eni|subnet|vpc)-[0-9a-f]{8,17}$")
            .expect("valid regex")
    });
    let mut out: Vec<String> = Vec::new();
    let mut add = |v: &Value| {
        let items: Vec<&Value> = match v {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for item in items {
            if let Some(s) = item.as_str()
                && SHAPE.is_match(s)
                && !out.iter().any(|o| o == s)
            {
                out.push(s.to_string());
            }
        }
    };
    for key in ["id", "ids", "instances"] {
        if let Some(v) = args.get(key) {
            add(v);
        }
    }
    for outer in ["targets", "resolved"] {
        if let Some(v) = args.get(outer).and_then(|t| t.get("instances")) {
            add(v);
        }
    }
    if binding == "ec2::launch" {
        let count = args["spec"]["count"].as_u64().unwrap_or(1).max(1);
        // Distinct per call: every launch creates new instances.
        static LAUNCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let call = LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        out.extend((1..=count).map(|k| format!("{NEW_INSTANCE}{call}.{k}")));
    }
    // Resources named by ARN or name (a listener, a target group, alarms, an Auto Scaling
    // group): whatever string the call targets counts, whatever its shape.
    for key in [
        "listener",
        "target_group",
        "alarms",
        "auto_scaling_group",
        "command",
    ] {
        let values = match args.get(key) {
            Some(Value::Array(items)) => items.clone(),
            Some(v) => vec![v.clone()],
            None => Vec::new(),
        };
        for v in values {
            if let Some(s) = v.as_str().filter(|s| !s.is_empty())
                && !out.iter().any(|o| o == s)
            {
                out.push(s.to_string());
            }
        }
    }
    out
}

/// Every placeholder id handed out in plan mode contains this (`i-planned00000000`, `sg-planned`).
pub const PLANNED_MARKER: &str = "planned";

fn mentions_placeholder(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains(PLANNED_MARKER),
        Value::Array(items) => items.iter().any(mentions_placeholder),
        Value::Object(map) => map.values().any(mentions_placeholder),
        _ => false,
    }
}

/// Plan-mode placeholder for bindings that return nothing.
pub fn unit_placeholder(_: &Value) -> Dynamic {
    Dynamic::UNIT
}

/// Whether mutating calls are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Run,
    Plan,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Run => "run",
            Mode::Plan => "plan",
        }
    }
}

/// Where the run is, as far as bindings are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The declaration pass: no binding may run.
    Loading,
    /// Inside step N (0-based).
    Step(usize),
    /// Inside step N's `on_failure` closure.
    OnFailure(usize),
    /// Between steps (executor bookkeeping).
    Idle,
}

impl Stage {
    pub fn step(self) -> Option<usize> {
        match self {
            Stage::Step(i) | Stage::OnFailure(i) => Some(i),
            Stage::Loading | Stage::Idle => None,
        }
    }
}

/// A mutating call that plan mode did not send, kept for the plan summary.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedCall {
    pub step: Option<usize>,
    pub binding: &'static str,
    pub args: Value,
    /// The target resources the call looked up before it was decided (`resolved`), redacted.
    pub targets: Option<Value>,
}

impl PlannedCall {
    /// The call as an approval request carries it and the drift check compares it:
    /// `{binding, args, targets}`.
    pub fn approvable(&self) -> Value {
        let mut call = serde_json::json!({ "binding": self.binding, "args": self.args });
        if let Some(t) = &self.targets {
            call["targets"] = t.clone();
        }
        call
    }
}

/// Whether a write about to be sent (`binding`, `args` with any `resolved` targets) is the
/// approved call `planned`: the same operation and arguments, and the same targets when the
/// write looked them up (a write that looks its targets up only inside the call is compared by
/// what it names).
fn in_plan(planned: &Value, binding: &str, args: &Value) -> bool {
    let mut bare = args.clone();
    let targets = bare.as_object_mut().and_then(|o| o.remove("resolved"));
    planned["binding"] == binding
        && same_as_planned(&planned["args"], &bare)
        && targets.is_none_or(|t| same_as_planned(&planned["targets"], &t))
}

/// Whether `actual` is what `planned` described: equal, except that an id the plan invented (a
/// placeholder for what an earlier write of the step creates) stands for whatever id the run got.
fn same_as_planned(planned: &Value, actual: &Value) -> bool {
    match (planned, actual) {
        (Value::String(p), Value::String(_)) if p.contains(PLANNED_MARKER) => true,
        (Value::Array(p), Value::Array(a)) => {
            p.len() == a.len() && p.iter().zip(a).all(|(p, a)| same_as_planned(p, a))
        }
        (Value::Object(p), Value::Object(a)) => {
            p.len() == a.len()
                && p.iter()
                    .all(|(k, p)| a.get(k).is_some_and(|a| same_as_planned(p, a)))
        }
        _ => comparable(planned) == comparable(actual),
    }
}

/// A binding's failure as the transcript records it.
impl From<&BindingError> for ErrorRecord {
    fn from(e: &BindingError) -> Self {
        ErrorRecord {
            message: e.message.clone(),
            code: Some(e.code.clone()),
            location: None,
            request_id: e.request_id.clone(),
        }
    }
}

/// A finished write from an interrupted step (its body or its `on_failure`), answered from the
/// transcript on resume instead of being sent again.
#[derive(Debug, Clone)]
pub struct ReplayCall {
    pub binding: String,
    pub args: Value,
    pub result: Value,
    /// The error the write returned, when it failed: the script sees the same failure again, so
    /// the resumed step takes the path the interrupted one took.
    pub error: Option<ErrorRecord>,
}

static MARKER: std::sync::LazyLock<Option<regex::Regex>> =
    std::sync::LazyLock::new(|| regex::Regex::new(r"\[redacted:[0-9a-f]+\]").ok());

/// Redaction markers differ between runs (the salt is per run): compare without them, and
/// whatever order the keys were recorded in.
pub(crate) fn comparable(value: &Value) -> String {
    let text = crate::data::transcript::canonical_text(value);
    match MARKER.as_ref() {
        Some(marker) => marker.replace_all(&text, "[redacted]").into_owned(),
        None => text,
    }
}

/// Whether a recorded value holds a redaction marker somewhere: it stands for a secret that was
/// never recorded, and must never be used as the value itself.
pub(crate) fn contains_marker(value: &Value) -> bool {
    match value {
        Value::String(s) => MARKER.as_ref().is_some_and(|m| m.is_match(s)),
        Value::Array(items) => items.iter().any(contains_marker),
        Value::Object(map) => map.values().any(contains_marker),
        _ => false,
    }
}

/// What answers every call of a replay instead of the world (`runbook replay`, built one layer
/// up from a transcript): with it set, no call reaches a cloud, Slack or a file.
pub trait Answers {
    /// How to answer `spec` called with `args` (unredacted, before any resolution) in `step`.
    fn answer(&self, host: &Host, spec: &Binding, step: Option<usize>, args: &Value) -> Answer;
}

/// How a replayed call is answered.
pub enum Answer {
    /// Run it here: only for read-only bindings that reach nothing outside the run (`sleep` on the
    /// simulated clock, `wait_until` whose condition's calls are answered themselves).
    Local,
    /// As the transcript recorded it: what it returned or how it failed, and how long it took
    /// (the simulated clock moves on by that much).
    Recorded {
        result: Result<Value, ErrorRecord>,
        duration_ms: u64,
    },
    /// A write the recorded run never made: never sent, answered with the binding's plan
    /// placeholder (shaped like a real result) so the replay can show what would follow.
    Placeholder,
    /// The replay cannot go on (its answer is unknown): the run stops, as a diverged resume does.
    Stop(String),
}

/// Results longer than this (as JSON text) are summarised, not stored whole. Large enough for
/// the reads of a real incident (a service's instances with their volumes and interfaces, a Run
/// Command's output), because `runbook replay` answers a read only from a result recorded whole
/// and resume a finished write only so; small enough that one line stays far below what a
/// transcript reader holds (docs/benchmarks.md measures what it costs).
pub(crate) const MAX_RESULT_CHARS: usize = 64 * 1024;

pub struct Recorder {
    mode: Cell<Mode>,
    /// While set, nothing is written (an interactive step preview is not part of the record).
    muted: Cell<bool>,
    stage: Cell<Stage>,
    transcript: RefCell<Option<TranscriptWriter>>,
    /// The first transcript write failure; the executor ends the run on it.
    failure: RefCell<Option<Error>>,
    planned: RefCell<Vec<PlannedCall>>,
    replay: RefCell<std::collections::VecDeque<ReplayCall>>,
    /// A replay's answers: set, every call is answered by them and none is sent.
    answers: RefCell<Option<Rc<dyn Answers>>>,
    /// Set when a resumed step diverged from what the transcript says it did: no write is sent
    /// after that, and the executor stops the run like an uncertain write (never retried).
    halted: RefCell<Option<String>>,
    calls: Cell<u64>,
    mutating_sent: Cell<u64>,
    /// When the first call was sent (the hook server's alert-to-action latency).
    first_call: Cell<Option<Instant>>,
    /// The current step's latest preview as `{binding, args}` values: what an approval asked
    /// during the step covers.
    step_plan: RefCell<Vec<Value>>,
    /// The plan a person approved for a step: while set, a write of that step outside it is not
    /// sent (drift), and the executor asks again.
    approved: RefCell<Option<(usize, Vec<Value>)>>,
    /// Why the step drifted from its approved plan, until the executor takes it.
    drifted: RefCell<Option<String>>,
    /// Called after a write's intent is on disk and before the write is sent; an error keeps
    /// the write from being sent (the aws backend: the intent must be archived first, so a
    /// replica taking the run over knows the write may have happened).
    before_send: RefCell<Option<BeforeSend>>,
}

/// See [`Recorder::set_before_send`].
pub type BeforeSend = Box<dyn Fn() -> std::result::Result<(), String>>;

impl Recorder {
    pub fn new(mode: Mode) -> Self {
        Recorder {
            mode: Cell::new(mode),
            muted: Cell::new(false),
            stage: Cell::new(Stage::Loading),
            transcript: RefCell::new(None),
            failure: RefCell::new(None),
            planned: RefCell::new(Vec::new()),
            replay: RefCell::new(std::collections::VecDeque::new()),
            answers: RefCell::new(None),
            halted: RefCell::new(None),
            calls: Cell::new(0),
            mutating_sent: Cell::new(0),
            first_call: Cell::new(None),
            step_plan: RefCell::new(Vec::new()),
            approved: RefCell::new(None),
            drifted: RefCell::new(None),
            before_send: RefCell::new(None),
        }
    }

    /// Sets (or clears) what must succeed between a write's intent and its sending.
    pub fn set_before_send(&self, hook: Option<BeforeSend>) {
        *self.before_send.borrow_mut() = hook;
    }

    /// Keeps `calls` (a step's preview) as what an approval asked during the step covers.
    pub fn set_step_plan(&self, calls: &[PlannedCall]) {
        *self.step_plan.borrow_mut() = calls.iter().map(PlannedCall::approvable).collect();
    }

    /// The current step's previewed plan (empty when it was not previewed).
    pub fn step_plan(&self) -> Vec<Value> {
        self.step_plan.borrow().clone()
    }

    /// From now on, the writes of `step` must be in `plan` (None: no approved plan binds).
    pub fn bind_approved_plan(&self, approved: Option<(usize, Vec<Value>)>) {
        *self.approved.borrow_mut() = approved;
    }

    /// Why the step's last attempt drifted from its approved plan, once.
    pub fn take_drift(&self) -> Option<String> {
        self.drifted.borrow_mut().take()
    }

    /// Why a write at `stage` is outside the plan approved for its step (None: inside, or no
    /// plan). Only the step's body is held to it: the plan is the body's, and the step's
    /// `on_failure` (its rollback, undoing what the body did) is never refused as drift.
    fn drift(&self, stage: Stage, binding: &str, args: &Value) -> Option<String> {
        let approved = self.approved.borrow();
        let (at, plan) = approved.as_ref()?;
        if stage != Stage::Step(*at) {
            return None;
        }
        if plan.iter().any(|p| in_plan(p, binding, args)) {
            return None;
        }
        Some(format!(
            "plan drift: {binding}({}) is not in the plan approved for this step ({} write(s)); it was not sent, and the step asks for approval again",
            comparable(args),
            plan.len()
        ))
    }

    pub fn mode(&self) -> Mode {
        self.mode.get()
    }

    /// When the run's first binding call was sent, if one was.
    pub fn first_call(&self) -> Option<Instant> {
        self.first_call.get()
    }

    /// Writes an interrupted step already made: on resume they are answered from the transcript.
    pub fn set_replay(&self, calls: Vec<ReplayCall>) {
        *self.replay.borrow_mut() = calls.into();
    }

    /// From now on every call is answered by `answers`, none sent (`runbook replay`).
    pub fn set_answers(&self, answers: Rc<dyn Answers>) {
        *self.answers.borrow_mut() = Some(answers);
    }

    /// Why the resumed run must stop (it diverged from its transcript), once it must.
    pub fn halted(&self) -> Option<String> {
        self.halted.borrow().clone()
    }

    /// Stops every later write and returns the non-catchable error for the script: the
    /// executor sees [`Recorder::halted`] and ends the run without retrying or rolling back.
    fn halt(&self, why: String, pos: Position) -> Box<EvalAltResult> {
        self.replay.borrow_mut().clear();
        let error = Box::new(EvalAltResult::ErrorTerminated(why.clone().into(), pos));
        self.halted.borrow_mut().get_or_insert(why);
        error
    }

    /// Switches between sending and planning mutating calls (`:plan on|off` in the REPL).
    pub fn set_mode(&self, mode: Mode) {
        self.mode.set(mode);
    }

    /// Runs `f` as a plan that is not recorded: the preview an operator sees before a step.
    /// Returns what `f` returned and the mutating calls it would have made.
    pub fn preview<T>(&self, f: impl FnOnce() -> T) -> (T, Vec<PlannedCall>) {
        let (mode, muted) = (self.mode.get(), self.muted.get());
        let before = self.planned.borrow().len();
        let (calls, sent) = (self.calls.get(), self.mutating_sent.get());
        self.mode.set(Mode::Plan);
        self.muted.set(true);
        let out = f();
        self.mode.set(mode);
        self.muted.set(muted);
        self.calls.set(calls);
        self.mutating_sent.set(sent);
        let planned = self.planned.borrow_mut().split_off(before);
        (out, planned)
    }

    pub fn stage(&self) -> Stage {
        self.stage.get()
    }

    pub fn set_stage(&self, stage: Stage) {
        self.stage.set(stage);
    }

    pub fn attach(&self, writer: TranscriptWriter) {
        *self.transcript.borrow_mut() = Some(writer);
    }

    pub fn detach(&self) -> Option<TranscriptWriter> {
        self.transcript.borrow_mut().take()
    }

    pub fn transcript_path(&self) -> Option<std::path::PathBuf> {
        self.transcript
            .borrow()
            .as_ref()
            .map(|w| w.path().to_path_buf())
    }

    /// Mutating calls that plan mode recorded instead of sending.
    pub fn planned(&self) -> Vec<PlannedCall> {
        self.planned.borrow().clone()
    }

    /// How many would-be writes the plan holds so far (a mark for [`Self::forget_planned_since`]).
    pub fn planned_len(&self) -> usize {
        self.planned.borrow().len()
    }

    /// Forgets the would-be writes after `mark`: a retried attempt plans them again, and a plan
    /// lists each would-be write once.
    pub fn forget_planned_since(&self, mark: usize) {
        self.planned.borrow_mut().truncate(mark);
    }

    /// (all calls, mutating calls actually sent)
    pub fn call_counts(&self) -> (u64, u64) {
        (self.calls.get(), self.mutating_sent.get())
    }

    /// Takes the first transcript write failure, if any.
    pub fn take_failure(&self) -> Option<Error> {
        self.failure.borrow_mut().take()
    }

    /// Appends an event. Without a transcript (check, list) events are dropped. A write failure
    /// is kept for the executor and reported to the caller, so a mutating call is never sent
    /// when its intent could not be recorded.
    pub fn record(&self, event: &Event, durability: Durability) -> Result<(), String> {
        if self.muted.get() {
            return Ok(());
        }
        let mut guard = self.transcript.borrow_mut();
        let Some(writer) = guard.as_mut() else {
            return Ok(());
        };
        match writer.append(event, durability) {
            Ok(()) => Ok(()),
            Err(e) => {
                let text = e.to_string();
                self.failure.borrow_mut().get_or_insert(e);
                Err(text)
            }
        }
    }

    pub fn log(&self, level: &str, message: &str) {
        // A log line that cannot be written is reported by the executor through take_failure.
        let _ = self.record(
            &Event::Log {
                step: self.stage.get().step(),
                level: level.to_string(),
                message: message.to_string(),
            },
            Durability::Written,
        );
    }
}

/// The host behind a native call (the engine's tag).
pub fn host_of(ctx: &NativeCallContext) -> Result<Rc<Host>, Box<EvalAltResult>> {
    ctx.tag()
        .and_then(|tag| tag.clone().try_cast::<Rc<Host>>())
        .ok_or_else(|| {
            // Only reachable if an engine is built without `bindings::engine`: a programming error,
            // reported as a script error rather than a panic.
            runtime_error(
                "internal",
                "binding called outside a runbook host",
                ctx.call_position(),
            )
        })
}

/// A catchable script error carrying `#{ code, message }` (and `request_id` when known).
pub fn runtime_error(code: &str, message: &str, pos: Position) -> Box<EvalAltResult> {
    binding_error_to_rhai(&BindingError::new(code, message), pos)
}

fn binding_error_to_rhai(err: &BindingError, pos: Position) -> Box<EvalAltResult> {
    let mut map = rhai::Map::new();
    map.insert("code".into(), err.code.clone().into());
    map.insert("message".into(), err.message.clone().into());
    if let Some(id) = &err.request_id {
        map.insert("request_id".into(), id.clone().into());
    }
    Box::new(EvalAltResult::ErrorRuntime(map.into(), pos))
}

/// Runs one binding call through the recorder. See the module documentation for what happens.
pub fn call(
    ctx: &NativeCallContext,
    spec: &'static Binding,
    args: Value,
    work: impl FnOnce(&Host) -> Result<Dynamic, BindingError>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let host = host_of(ctx)?;
    call_inner(&host, ctx.call_position(), spec, args, None, |h, _| work(h))
}

/// [`call`] for a binding that must look something up (read-only) before its call is decided:
/// `resolve`'s answer is recorded with the call (`resolved`), handed to `work` and, in a plan,
/// to the placeholder (as the `resolved` field of its arguments). With [`Resolve::Always`], ids
/// it lists under `instances` count against the blast radius before anything is sent.
pub fn call_resolved(
    ctx: &NativeCallContext,
    spec: &'static Binding,
    args: Value,
    resolve: Resolve<'_>,
    work: impl FnOnce(&Host, &Value) -> Result<Dynamic, BindingError>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let host = host_of(ctx)?;
    call_inner(&host, ctx.call_position(), spec, args, Some(resolve), work)
}

/// [`call`] for callers outside a script (run lifecycle notifications): same door, same rules.
pub fn call_at(
    host: &Rc<Host>,
    pos: Position,
    spec: &'static Binding,
    args: Value,
    work: impl FnOnce(&Host) -> Result<Dynamic, BindingError>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    call_inner(host, pos, spec, args, None, |h, _| work(h))
}

fn call_inner(
    host: &Rc<Host>,
    pos: Position,
    spec: &'static Binding,
    args: Value,
    resolve: Option<Resolve<'_>>,
    work: impl FnOnce(&Host, &Value) -> Result<Dynamic, BindingError>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let rec = &host.recorder;
    let stage = rec.stage();
    if stage == Stage::Loading {
        return Err(runtime_error(
            "not_in_step",
            &format!(
                "{} cannot be called while the runbook loads: nothing may run until a step does; move the call into a step",
                spec.name
            ),
            pos,
        ));
    }
    host.interrupt.check_at(pos)?;
    let step = stage.step();
    let plan = rec.mode.get() == Mode::Plan;
    let declared = spec.effect == Effect::DeclaredReadOnly;
    let answers = rec.answers.borrow().clone();
    if let Some(answers) = answers {
        // Before any resolution, guardrail or intent: those would reach the cloud.
        return answered(host, pos, spec, step, args, answers.as_ref(), work);
    }
    // A declared read-only call runs in a plan, but not in an (unrecorded) interactive preview:
    // nothing may reach the cloud that the transcript does not show.
    let declared_runs = declared && plan && !rec.muted.get();
    let mutating = spec.effect == Effect::Mutating || (declared && !declared_runs);
    rec.calls.set(rec.calls.get() + 1);

    let fail_at = |e: BindingError| match host.interrupt.check() {
        Some(stop) => crate::base::interrupt::terminated(stop, pos),
        None => binding_error_to_rhai(&e, pos),
    };
    // A plan cannot look up what only a planned write would have created.
    let resolvable = !(plan && mentions_placeholder(&args));
    let resolved = match &resolve {
        _ if !resolvable => None,
        Some(Resolve::Always(f)) => Some(f(host).map_err(fail_at)?),
        Some(Resolve::PlanOnly(f)) if plan && mutating => Some(f(host).map_err(fail_at)?),
        _ => None,
    };
    // What is counted and recorded: the arguments, with the resolved targets next to them.
    let args = match &resolved {
        Some(r) => {
            let mut a = args;
            a["resolved"] = r.clone();
            a
        }
        None => args,
    };

    // In a plan, a read that names something only a planned write would have created (a
    // placeholder id) cannot be asked of the real cloud: it is answered by its placeholder too.
    let reads_planned = !mutating
        && !declared_runs
        && plan
        && (spec.effect == Effect::Wait || mentions_placeholder(&args));
    if (mutating || reads_planned) && plan {
        let placeholder = (spec.placeholder)(&args);
        if mutating {
            // Kept for the console summary, so redacted like everything else that is shown.
            let mut shown = args.clone();
            let mut targets = shown.as_object_mut().and_then(|o| o.remove("resolved"));
            host.redactor.redact_json(&mut shown);
            if let Some(t) = targets.as_mut() {
                host.redactor.redact_json(t);
            }
            rec.planned.borrow_mut().push(PlannedCall {
                step,
                binding: spec.name,
                args: shown,
                targets,
            });
        }
        let event = Event::Call {
            step,
            binding: spec.name.to_string(),
            args: args.clone(),
            mutating,
            planned: true,
            read_only: declared.then(|| DECLARED_READ_ONLY.to_string()),
            duration_ms: 0,
            result: Some(summarise(&placeholder)),
            error: None,
            request_ids: Vec::new(),
            replayed: false,
        };
        rec.record(&event, Durability::Written)
            .map_err(|e| runtime_error("transcript", &e, pos))?;
        return Ok(placeholder);
    }

    // Resuming an interrupted step: a write it already made is answered from the transcript,
    // never sent twice. A different write than recorded means the step diverged: stop the run
    // for a person, like an uncertain write (a retry or a rollback could send anything).
    if mutating {
        if let Some(why) = rec.halted() {
            return Err(rec.halt(why, pos));
        }
        let next = rec.replay.borrow_mut().pop_front();
        if let Some(done) = next {
            if done.binding != spec.name || comparable(&done.args) != comparable(&args) {
                let why = format!(
                    "resume diverged: the resumed step called {}({}) where the interrupted run had called {}({}); nothing more is sent, a person must check what happened",
                    spec.name,
                    comparable(&args),
                    done.binding,
                    comparable(&done.args)
                );
                let _ = rec.record(
                    &Event::ResumeDiverged {
                        step,
                        binding: spec.name.to_string(),
                        expected: done.binding.clone(),
                        reason: why.clone(),
                    },
                    Durability::Synced,
                );
                return Err(rec.halt(why, pos));
            }
            if done.result.get("truncated").is_some() {
                let why = format!(
                    "resume uncertain: {} finished before the crash but its result was too large to record whole; a person must continue",
                    spec.name
                );
                return Err(rec.halt(why, pos));
            }
            let error = done.error.as_ref().map(|e| BindingError {
                code: e.code.clone().unwrap_or_else(|| "error".into()),
                message: e.message.clone(),
                request_id: e.request_id.clone(),
            });
            let event = Event::Call {
                step,
                binding: spec.name.to_string(),
                args: args.clone(),
                mutating: true,
                planned: false,
                read_only: declared.then(|| DECLARED_READ_ONLY.to_string()),
                duration_ms: 0,
                result: error.is_none().then(|| done.result.clone()),
                error: error.as_ref().map(ErrorRecord::from),
                request_ids: Vec::new(),
                replayed: true,
            };
            let _ = rec.record(&event, Durability::Synced);
            return match error {
                Some(e) => Err(binding_error_to_rhai(&e, pos)),
                None => rhai::serde::to_dynamic(&done.result),
            };
        }
    }

    if mutating {
        let mut shown = args.clone();
        host.redactor.redact_json(&mut shown);
        if let Some(why) = rec.drift(stage, spec.name, &shown) {
            let event = Event::Guardrail {
                step,
                binding: spec.name.to_string(),
                rule: "plan_drift".to_string(),
                reason: why.clone(),
            };
            let _ = rec.record(&event, Durability::Synced);
            rec.drifted.borrow_mut().replace(why.clone());
            // Not catchable by the script: the step stops here, and the executor asks again.
            return Err(Box::new(EvalAltResult::ErrorTerminated(
                "plan_drift".into(),
                pos,
            )));
        }
    }

    if mutating && let Some((rule, why)) = host.guardrails.refuse(host, spec.name, &args) {
        let event = Event::Guardrail {
            step,
            binding: spec.name.to_string(),
            rule: rule.to_string(),
            reason: why.clone(),
        };
        let _ = rec.record(&event, Durability::Synced);
        host.guardrails.refused(rule);
        return Err(runtime_error(rule, &why, pos));
    }

    if mutating && host.cloud.environment().protected && !host.protected_confirmed.get() {
        let env = &host.cloud.environment().name;
        host.guardrails
            .refusals
            .set(host.guardrails.refusals.get().saturating_add(1));
        return Err(runtime_error(
            "protected_environment",
            &format!(
                "{} refused: environment {env:?} is protected and this run has no confirmation for it (type it when asked, or pass --confirm-env {env})",
                spec.name
            ),
            pos,
        ));
    }

    if mutating {
        let intent = Event::Intent {
            step,
            binding: spec.name.to_string(),
            args: args.clone(),
        };
        rec.record(&intent, Durability::Synced).map_err(|e| {
            runtime_error(
                "transcript",
                &format!(
                    "{} not sent: its intent could not be recorded: {e}",
                    spec.name
                ),
                pos,
            )
        })?;
    }
    let held = match rec.before_send.borrow().as_ref() {
        Some(hook) if mutating => hook().err(),
        _ => None,
    };
    if mutating && held.is_none() {
        rec.mutating_sent.set(rec.mutating_sent.get() + 1);
    }

    tracing::debug!(binding = spec.name, mutating, "call");
    let started = host.interrupt.clock().now();
    if rec.first_call.get().is_none() {
        rec.first_call.set(Some(Instant::now()));
    }
    let outcome = match held {
        // Recorded as this call's error: the transcript says it was not sent.
        Some(why) => Err(BindingError::new(
            "not_sent",
            format!(
                "{} not sent: its intent could not be archived: {why}",
                spec.name
            ),
        )),
        None => work(host, resolved.as_ref().unwrap_or(&Value::Null)),
    };
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if mutating && let Ok(v) = &outcome {
        host.guardrails.created(spec.name, &to_json(v));
    }
    let (result, error) = match &outcome {
        Ok(v) => (Some(summarise(v)), None),
        Err(e) => (None, Some(e)),
    };
    let event = Event::Call {
        step,
        binding: spec.name.to_string(),
        args,
        mutating,
        planned: false,
        read_only: declared.then(|| DECLARED_READ_ONLY.to_string()),
        duration_ms,
        result,
        error: error.map(ErrorRecord::from),
        request_ids: host.cloud.take_request_ids(),
        replayed: false,
    };
    let durability = if mutating {
        Durability::Synced
    } else {
        Durability::Written
    };
    // The call already happened: a failure to record it must not hide its result from the
    // script, but it is kept and ends the run at the step boundary.
    let _ = rec.record(&event, durability);
    // A binding that gave up because the step timed out or the run was aborted: the stop is
    // what matters, and it must not be catchable by the script.
    outcome.map_err(fail_at)
}

/// A replayed call (see [`Answers`]): recorded like any call, marked `replayed` (or `planned` for
/// a write the recorded run never made), and never sent.
fn answered(
    host: &Rc<Host>,
    pos: Position,
    spec: &'static Binding,
    step: Option<usize>,
    args: Value,
    answers: &dyn Answers,
    work: impl FnOnce(&Host, &Value) -> Result<Dynamic, BindingError>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let rec = &host.recorder;
    rec.calls.set(rec.calls.get().saturating_add(1));
    let declared = spec.effect == Effect::DeclaredReadOnly;
    let mutating = spec.effect == Effect::Mutating || declared;
    let answer = answers.answer(host, spec, step, &args);
    let (outcome, duration_ms, planned) = match answer {
        // Only a read may run here: a write (or an approval) is always answered.
        Answer::Local if spec.effect == Effect::ReadOnly => {
            let started = host.interrupt.clock().now();
            let outcome = work(host, &Value::Null);
            let event = Event::Call {
                step,
                binding: spec.name.to_string(),
                args,
                mutating: false,
                planned: false,
                read_only: None,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                result: outcome.as_ref().ok().map(summarise),
                error: outcome.as_ref().err().map(ErrorRecord::from),
                request_ids: Vec::new(),
                replayed: false,
            };
            let _ = rec.record(&event, Durability::Written);
            return outcome.map_err(|e| match host.interrupt.check() {
                Some(stop) => crate::base::interrupt::terminated(stop, pos),
                None => binding_error_to_rhai(&e, pos),
            });
        }
        Answer::Local => {
            let why = format!("{} cannot be replayed here: it is not read-only", spec.name);
            return Err(rec.halt(why, pos));
        }
        Answer::Stop(why) => return Err(rec.halt(why, pos)),
        Answer::Placeholder => (Ok(to_json(&(spec.placeholder)(&args))), 0, true),
        Answer::Recorded {
            result,
            duration_ms,
        } => {
            // The call took as long as it did in the recorded run, on the simulated clock (a
            // call that ran into the step's deadline ends the step here too).
            host.interrupt
                .clock()
                .skip(std::time::Duration::from_millis(duration_ms));
            let result = result.map_err(|e| BindingError {
                code: e.code.unwrap_or_else(|| "error".into()),
                message: e.message,
                request_id: e.request_id,
            });
            (result, duration_ms, false)
        }
    };
    let event = Event::Call {
        step,
        binding: spec.name.to_string(),
        args,
        mutating,
        planned,
        read_only: declared.then(|| DECLARED_READ_ONLY.to_string()),
        duration_ms,
        result: outcome.as_ref().ok().cloned(),
        error: outcome.as_ref().err().map(ErrorRecord::from),
        request_ids: Vec::new(),
        replayed: !planned,
    };
    let _ = rec.record(&event, Durability::Written);
    match outcome {
        Ok(v) => rhai::serde::to_dynamic(&v),
        Err(e) => Err(match host.interrupt.check() {
            Some(stop) => crate::base::interrupt::terminated(stop, pos),
            None => binding_error_to_rhai(&e, pos),
        }),
    }
}

/// A JSON summary of a call result: whole when small, truncated with its size when not.
fn summarise(value: &Dynamic) -> Value {
    let json = to_json(value);
    let text = json.to_string();
    if text.len() <= MAX_RESULT_CHARS {
        json
    } else {
        let cut: String = text.chars().take(MAX_RESULT_CHARS).collect();
        json!({ "truncated": cut, "bytes": text.len() })
    }
}

/// Converts a script value to JSON for recording. Values JSON cannot hold (function pointers,
/// custom types) are recorded by their type name rather than failing the call.
pub fn to_json(value: &Dynamic) -> Value {
    rhai::serde::from_dynamic::<Value>(value)
        .unwrap_or_else(|_| Value::String(format!("<{}>", value.type_name())))
}

/// Whether a kill-switch file is set. Anything at the path counts, even a dangling symlink, and
/// so does a path that cannot be checked (a symlink loop, a folder we may not read): a switch
/// that fails open is no switch.
pub(crate) fn kill_switch_set(path: &std::path::Path) -> bool {
    match path.try_exists() {
        Ok(true) | Err(_) => true,
        // `try_exists` follows symlinks: a link to nowhere is "absent" to it, but is there.
        Ok(false) => std::fs::symlink_metadata(path).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::base::console::Console;
    use crate::data::transcript::TranscriptWriter;

    #[test]
    fn a_write_is_in_its_approved_plan_only_with_the_same_operation_arguments_and_targets() {
        let planned = serde_json::json!({
            "binding": "ec2::tag",
            "args": { "ids": ["snap-planned-1"], "tags": { "k": "v" } },
            "targets": ["i-1"],
        });
        // An id the plan invented stands for the one the run got.
        let real = serde_json::json!({ "ids": ["snap-0abc"], "tags": { "k": "v" } });
        assert!(in_plan(&planned, "ec2::tag", &real));
        assert!(!in_plan(&planned, "ec2::untag", &real));
        let other_tags = serde_json::json!({ "ids": ["snap-0abc"], "tags": { "k": "w" } });
        assert!(!in_plan(&planned, "ec2::tag", &other_tags));
        let mut other_target = real.clone();
        other_target["resolved"] = serde_json::json!(["i-2"]);
        assert!(!in_plan(&planned, "ec2::tag", &other_target));
        let mut same_target = real;
        same_target["resolved"] = serde_json::json!(["i-1"]);
        assert!(in_plan(&planned, "ec2::tag", &same_target));
    }

    static WRITE: Binding = Binding {
        name: "test::write",
        effect: Effect::Mutating,
        placeholder: planned_placeholder,
    };

    fn planned_placeholder(_: &Value) -> Dynamic {
        "planned".into()
    }

    /// A host in `mode` recording into `dir/t.jsonl`, inside step 1.
    fn host(mode: Mode, dir: &Path) -> Rc<Host> {
        host_with(mode, dir, Limits::default())
    }

    fn host_with(mode: Mode, dir: &Path, limits: Limits) -> Rc<Host> {
        let mut parts = crate::sandbox::engine::HostParts::new(
            mode,
            Console::silent(),
            Arc::new(AtomicBool::new(false)),
            crate::services::cloud::CloudAccess::new(
                crate::data::config::Environment::builtin_sim(),
            ),
        );
        parts.limits = limits;
        let host = Host::build(parts);
        let writer = TranscriptWriter::create(&dir.join("t.jsonl"), host.redactor.clone()).unwrap();
        host.recorder.attach(writer);
        host.recorder.set_stage(Stage::Step(0));
        host
    }

    /// The `type`s of the transcript's events so far, read from disk.
    fn types_on_disk(dir: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(dir.join("t.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|e| e["type"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn write(host: &Rc<Host>, sent: &Cell<bool>) -> Result<Dynamic, Box<EvalAltResult>> {
        call_at(
            host,
            Position::NONE,
            &WRITE,
            json!({ "ids": ["i-1"] }),
            |_| {
                sent.set(true);
                Ok("sent".into())
            },
        )
    }

    #[test]
    fn a_mutating_call_in_a_plan_gets_its_placeholder_and_writes_no_intent() {
        let dir = tempfile::tempdir().unwrap();
        let host = host(Mode::Plan, dir.path());
        let sent = Cell::new(false);
        let result = write(&host, &sent).unwrap();
        assert_eq!(result.into_string().unwrap(), "planned");
        assert!(!sent.get(), "a plan sends nothing");
        assert_eq!(types_on_disk(dir.path()), ["call"]);
        let planned = host.recorder.planned();
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].binding, "test::write");
        assert_eq!(host.recorder.call_counts(), (1, 0));
    }

    #[test]
    fn a_mutating_call_in_a_run_is_on_disk_as_an_intent_before_it_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let host = host(Mode::Run, dir.path());
        let on_disk_when_sent = std::cell::RefCell::new(Vec::new());
        let result = call_at(
            &host,
            Position::NONE,
            &WRITE,
            json!({ "ids": ["i-1"] }),
            |_| {
                // What another process (or a crash) would find at the moment the write goes out.
                *on_disk_when_sent.borrow_mut() = types_on_disk(dir.path());
                Ok("sent".into())
            },
        )
        .unwrap();
        assert_eq!(result.into_string().unwrap(), "sent");
        assert_eq!(*on_disk_when_sent.borrow(), ["intent"]);
        assert_eq!(types_on_disk(dir.path()), ["intent", "call"]);
        assert_eq!(host.recorder.call_counts(), (1, 1));
    }

    #[test]
    fn a_guardrail_refusal_is_recorded_and_the_call_is_never_made() {
        let dir = tempfile::tempdir().unwrap();
        let switch = dir.path().join("STOP");
        std::fs::write(&switch, "").unwrap();
        let limits = Limits {
            kill_switch: Some(switch),
            ..Limits::default()
        };
        let host = host_with(Mode::Run, dir.path(), limits);
        let sent = Cell::new(false);
        let err = write(&host, &sent).unwrap_err();
        assert!(!sent.get());
        assert!(err.to_string().contains("kill_switch"), "{err}");
        assert_eq!(types_on_disk(dir.path()), ["guardrail"]);
        assert_eq!(host.guardrails.tripped(), Some("kill_switch"));
        assert_eq!(host.recorder.call_counts().1, 0, "nothing sent");
    }

    #[test]
    fn a_call_while_the_runbook_loads_is_refused_and_never_made() {
        let dir = tempfile::tempdir().unwrap();
        let host = host(Mode::Run, dir.path());
        host.recorder.set_stage(Stage::Loading);
        let sent = Cell::new(false);
        let err = write(&host, &sent).unwrap_err();
        assert!(!sent.get());
        assert!(err.to_string().contains("not_in_step"), "{err}");
        assert!(types_on_disk(dir.path()).is_empty(), "nothing recorded");
    }
}
