//! The transcript's events: what each line of a transcript says, typed.
//!
//! A line is an event (one of [`Event`]'s variants, named by its `type` field) plus the chain's
//! own fields (`seq`, `ts`, `prev`, `hash`, added by the writer). Writers construct variants;
//! readers parse a verified line with [`Event::parse`] and match on it. The documentation of the
//! format (`runbook docs transcript`) is generated from these declarations: the doc comment of
//! every variant and field is what the docs say, so a new variant or field cannot go
//! undocumented (the `documented!` macro refuses a variant without one, and a test checks that
//! every variant's `type` is named in the docs).
//!
//! Compatibility: the hash covers the line as written, so serializing a variant must give the
//! very fields earlier versions wrote: a field written as `null` stays a plain `Option` (written
//! as `null`), a field that was left out stays `skip_serializing_if`, and a field that some
//! writers leave out and others write as `null` is a [`Nullable`] (absent, `null`, or a value).
//! Reading is lenient: every field but the few an event means nothing without (a step's index,
//! a status, an action) is `#[serde(default)]`, so lines of earlier versions (and the minimal
//! ones tests write) read, and fields a reader does not know are ignored.
//!
//! An event type this version does not know (written by a newer one) is not an error for
//! `transcript verify`: the chain covers every line whatever its type. Readers get it back from
//! [`Event::parse`] as [`Unreadable::Unknown`] and report it (`transcript show` prints its fields
//! as they are; `resume` refuses to continue a run it cannot fully read).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::base::identity::Who;

/// A field that writers either leave out, write as `null`, or fill: `None` is absent,
/// `Some(None)` is `null`. (A plain `Option` reads `null` and absent alike, so it could not give
/// back the line that was written.)
pub type Nullable<T> = Option<Option<T>>;

/// Reads a [`Nullable`] field that is present (absent fields are `None` through `default`).
fn present<'de, D, T>(d: D) -> Result<Nullable<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// How a step ended. Recorded verbatim; drills and resume read it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Ok,
    Failed,
    Skipped,
    TimedOut,
    Aborted,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Ok => "ok",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::TimedOut => "timed_out",
            StepStatus::Aborted => "aborted",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Ok,
    Failed,
    TimedOut,
    Aborted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Aborted => "aborted",
        }
    }
}

/// Step counts by status, for `run_finished`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub ok: usize,
    pub failed: usize,
    pub skipped: usize,
    pub timed_out: usize,
    pub aborted: usize,
    pub not_run: usize,
}

impl Counts {
    pub fn add(&mut self, status: StepStatus) {
        match status {
            StepStatus::Ok => self.ok += 1,
            StepStatus::Failed => self.failed += 1,
            StepStatus::Skipped => self.skipped += 1,
            StepStatus::TimedOut => self.timed_out += 1,
            StepStatus::Aborted => self.aborted += 1,
        }
    }
}

/// What the operator (or the driver for them) chose before or after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Run,
    Skip,
    Abort,
    /// Open a REPL with `ctx` and every binding, then ask again.
    Inspect,
    /// A confirmation that did not match: recorded, then asked again.
    Refused,
    /// Try the step again (after a failure or an interrupt).
    Retry,
    /// Leave a failed step failed and go on with the next one.
    Continue,
    /// Wait for someone to approve (`runbook approve RUN_ID`), then run.
    Approval,
}

impl Action {
    /// As recorded (`run`, `skip`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Run => "run",
            Action::Skip => "skip",
            Action::Abort => "abort",
            Action::Inspect => "inspect",
            Action::Refused => "refused",
            Action::Retry => "retry",
            Action::Continue => "continue",
            Action::Approval => "approval",
        }
    }
}

/// An error as a transcript records it: a step's script error (`message`, `code`, `location`)
/// or a binding's (`code`, `message`, `request_id`). Fields that are not known are left out.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The runbook a run executes, as `run_started` records it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunbookRef {
    pub id: String,
    pub version: String,
    pub title: String,
    pub severity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The file as given on the command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// SHA-256 of the runbook's text (`resume` compares it).
    pub sha256: String,
    /// The modules it imports: `import`, `file`, `sha256` of each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modules: Option<Value>,
    /// The git commit and state of the files, `null` outside a repository.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub git: Nullable<Value>,
}

/// One step of the runbook, as `run_started` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StepInfo {
    pub index: usize,
    pub phase: String,
    pub title: String,
    pub timeout_ms: u64,
    pub retries: u32,
    pub confirm: bool,
    pub rollback: bool,
}

/// Generates an event enum and its documentation table from one declaration, so the docs are
/// the doc comments: every variant needs one (the macro's pattern requires it), and fields carry
/// theirs. Doc comments must come before a field's `serde` attributes.
macro_rules! documented {
    (
        $(#[doc = $edoc:literal])*
        pub enum $name:ident {
            $(
                #[doc = $vdoc1:literal]
                $(#[doc = $vdoc:literal])*
                $variant:ident {
                    $(
                        $(#[doc = $fdoc:literal])*
                        $(#[serde($($sattr:tt)*)])*
                        $field:ident : $ty:ty
                    ),* $(,)?
                }
            ),* $(,)?
        }
    ) => {
        $(#[doc = $edoc])*
        // `run_started` is far larger than the rest; an event lives only until it is written or
        // read, one at a time, so boxing it would buy nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum $name {
            $(
                #[doc = $vdoc1]
                $(#[doc = $vdoc])*
                $variant {
                    $(
                        $(#[doc = $fdoc])*
                        $(#[serde($($sattr)*)])*
                        $field: $ty,
                    )*
                },
            )*
        }

        impl $name {
            /// Every variant with its doc comment and fields, in declaration order.
            pub(crate) const DOCS: &'static [VariantDoc] = &[
                $(
                    VariantDoc {
                        variant: stringify!($variant),
                        about: &[$vdoc1 $(, $vdoc)*],
                        fields: &[
                            $(
                                FieldDoc {
                                    name: stringify!($field),
                                    ty: stringify!($ty),
                                    about: &[$($fdoc),*],
                                    attrs: &[$(stringify!($($sattr)*)),*],
                                },
                            )*
                        ],
                    },
                )*
            ];
        }
    };
}

/// The documentation of one event type (generated by `documented!`).
#[derive(Debug)]
pub(crate) struct VariantDoc {
    /// The Rust name; [`VariantDoc::tag`] is the `type` written on disk.
    pub variant: &'static str,
    pub about: &'static [&'static str],
    pub fields: &'static [FieldDoc],
}

/// The documentation of one field of an event.
#[derive(Debug)]
pub(crate) struct FieldDoc {
    pub name: &'static str,
    pub ty: &'static str,
    pub about: &'static [&'static str],
    /// The field's `serde` attributes, as written: they say when it is left out.
    pub attrs: &'static [&'static str],
}

impl VariantDoc {
    /// The `type` on disk: serde's `snake_case` of the variant's name (the round-trip test checks
    /// that the two agree for every variant).
    pub(crate) fn tag(&self) -> String {
        let mut out = String::new();
        for (i, c) in self.variant.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl FieldDoc {
    /// When the field may be missing from a line, in words (None: always there).
    pub(crate) fn presence(&self) -> Option<&'static str> {
        let skipped = self.attrs.iter().any(|a| a.contains("skip_serializing_if"));
        let nullable = self.ty.starts_with("Nullable");
        let optional = self.ty.starts_with("Option");
        match (skipped, nullable || optional) {
            (true, _) if nullable => Some("may be absent or null"),
            (true, _) => Some("absent when it does not apply"),
            (false, true) => Some("null when it does not apply"),
            (false, false) => None,
        }
    }
}

/// The doc comment lines of a declaration as one paragraph.
pub(crate) fn paragraph(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_string()
}

documented! {
    /// One event of a run's transcript: the `type` field names the variant, the other fields are
    /// the variant's (the chain's `seq`, `ts`, `prev` and `hash` come on top).
    pub enum Event {
        /// The first line of every run's transcript (also of a `runbook repl` session): what runs,
        /// where, by whom, with which parameters.
        RunStarted {
            /// The run's id (a ULID), also the transcript's file name.
            #[serde(default)]
            run_id: String,
            /// The runbook: `id`, `version`, `title`, `severity`, `service`, `file`, `path`,
            /// `sha256` of its text, the `modules` it imports and its `git` state.
            #[serde(default)]
            runbook: RunbookRef,
            /// Who started the run, as a person reads it: the identity below, with a
            /// `RUNBOOK_OPERATOR` name marked `(claimed; …)`.
            #[serde(default)]
            operator: String,
            /// Who started the run, as established: `os` (the local account), `aws` (the STS
            /// caller ARN) or `slack`, with any claimed display name apart.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            identity: Option<Who>,
            /// What started it: the hook server's alert and route; null when a person did.
            #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
            trigger: Nullable<Value>,
            /// `run`, `plan`, `drill` or `repl`.
            #[serde(default)]
            mode: String,
            /// `real` or `simulated`: under a simulated clock (plans, sim drills) the durations
            /// are simulated time, the `ts` stamps wall time.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            clock: Option<String>,
            /// The environment from the config.
            #[serde(default)]
            environment: String,
            /// `aws` or `sim`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            backend: Option<String>,
            /// The AWS account the run was confirmed against, null when not checked.
            #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
            account: Nullable<String>,
            /// The region the run acts in, as resolved.
            #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
            region: Nullable<String>,
            /// The endpoint the run talks to, as resolved (`sim` for the simulator).
            #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
            endpoint: Nullable<String>,
            /// The simulated fleet's source (sim backend only, else null).
            #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
            fleet: Nullable<String>,
            /// The resolved parameters (secrets as redaction markers).
            #[serde(default)]
            params: Value,
            /// The guardrails: `max_resources`, `kill_switch`, `kill_switch_parameter`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            guardrails: Option<Value>,
            /// `runbook` and its version.
            #[serde(default)]
            tool: String,
            /// The steps: `index`, `phase`, `title`, `timeout_ms`, `retries`, whether it asks for a
            /// `confirm`ation and has a `rollback` (`on_failure`).
            #[serde(default)]
            steps: Vec<StepInfo>,
        },
        /// `runbook resume` continues the run from here (appended to the same transcript, the
        /// chain continuing).
        RunResumed {
            /// The step (0-based) the resume runs first; the number of steps when every step had
            /// finished and only the run's end is recorded.
            #[serde(default)]
            from_step: usize,
            /// Who resumed, as a person reads it (a `RUNBOOK_OPERATOR` name marked claimed).
            #[serde(default)]
            operator: String,
            /// Who resumed, as established: `os` (the local account), `aws` (the STS caller
            /// ARN) or `slack`, with any claimed display name apart (as in `run_started`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            identity: Option<Who>,
            /// The runbook changed since the start and `--allow-changed` accepted it.
            #[serde(default)]
            allow_changed: bool,
            /// SHA-256 of the runbook when the run started.
            #[serde(default)]
            sha256_then: String,
            /// SHA-256 of the runbook resumed.
            #[serde(default)]
            sha256_now: String,
            /// Finished writes of the interrupted step, answered from the transcript instead of
            /// being sent again.
            #[serde(default)]
            replayed_writes: usize,
            /// Writes of the interrupted step that were sent but never confirmed.
            #[serde(default)]
            uncertain: Vec<String>,
            /// The guardrails as they hold after the resume.
            #[serde(default)]
            guardrails: Value,
            /// Secret parameters given again (names only).
            #[serde(default)]
            given_again: Vec<String>,
            /// Every step had finished: the resume only records the run's end.
            #[serde(default)]
            appended_run_finished: bool,
        },
        /// A step begins (again, for a retry: `attempt` counts).
        StepStarted {
            /// The step's index (0-based) in `run_started`'s `steps`.
            step: usize,
            /// The step's phase (`triage`, `mitigate`, ...).
            #[serde(default)]
            phase: String,
            /// The step's title.
            #[serde(default)]
            title: String,
            /// 1 for the first attempt.
            #[serde(default)]
            attempt: u32,
        },
        /// What the operator or the driver chose for a step.
        Decision {
            /// The step's index.
            step: usize,
            /// `run`, `skip`, `abort`, `inspect`, `refused`, `retry`, `continue` or `approval`.
            action: Action,
            /// Who chose (an operator, `auto`, an approver), as a person reads it.
            #[serde(default)]
            by: String,
            /// Who chose, as established (`os`, `aws`, `slack`): the run's identity, for a
            /// choice at its terminal, made in advance (`--yes`) or by a rule it runs under.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            identity: Option<Who>,
            /// The approvers whose answers made an `approval` decision, as established.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            approvers: Vec<Who>,
            /// Why, in words.
            #[serde(default)]
            reason: String,
            /// How long the person took to decide, when a person did.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            decided_ms: Option<u64>,
        },
        /// The operator looked at `ctx` in a REPL before deciding.
        Inspected {
            /// The step's index.
            step: usize,
            /// The context as shown (secrets as redaction markers).
            #[serde(default)]
            ctx: Value,
        },
        /// The step failed and runs again after a delay (its `retries`).
        Retry {
            /// The step's index.
            step: usize,
            /// The attempt about to start.
            #[serde(default)]
            attempt: u32,
            /// The backoff before it.
            #[serde(default)]
            delay_ms: u64,
            /// The failure that caused the retry.
            #[serde(default)]
            error: ErrorRecord,
        },
        /// The step's `on_failure` (its rollback) begins.
        OnFailureStarted {
            /// The step's index.
            step: usize,
        },
        /// The step's `on_failure` ended.
        OnFailureFinished {
            /// The step's index.
            step: usize,
            /// How the rollback ended.
            status: StepStatus,
            /// How long it took.
            #[serde(default)]
            duration_ms: u64,
            /// Why it failed.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            error: Option<ErrorRecord>,
        },
        /// A step ended.
        StepFinished {
            /// The step's index.
            step: usize,
            /// `ok`, `failed`, `skipped`, `timed_out` or `aborted`.
            status: StepStatus,
            /// The step's working time: waiting for a person is not in it (see `waiting_ms`).
            #[serde(default)]
            duration_ms: u64,
            /// The same working time (kept for readers of earlier versions).
            #[serde(default)]
            working_ms: u64,
            /// Time spent waiting for a person: the decision, prompts after a failure, approvals.
            #[serde(default)]
            waiting_ms: u64,
            /// How many attempts ran.
            #[serde(default)]
            attempts: u32,
            /// How far into the run, on its clock, the step ended (simulated time under a
            /// simulated clock): from the run's start, or from its resume for the steps a resume
            /// ran. What a drill's `[expect.within]` checks (the seeds' "full isolation in 30
            /// minutes").
            #[serde(default, skip_serializing_if = "Option::is_none")]
            run_clock_ms: Option<u64>,
            /// Why it ended so (a skip, an abort), in words.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            reason: Option<String>,
            /// Why it failed.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            error: Option<ErrorRecord>,
            /// The context after the step (what `resume` continues from; secrets as markers).
            #[serde(default)]
            ctx: Value,
        },
        /// The run ended. A transcript whose last event (before its signature) is not this one
        /// belongs to a run that crashed, is still going, or was cut short.
        RunFinished {
            /// `ok`, `failed`, `timed_out` or `aborted`.
            status: RunStatus,
            /// Why, in words.
            #[serde(default)]
            reason: String,
            /// The run's time. Absent only when the hook server closed the transcript of a run
            /// that panicked (then `error` says so), as are the counts below.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            duration_ms: Option<u64>,
            /// Steps by how they ended (`ok`, `failed`, `skipped`, `timed_out`, `aborted`,
            /// `not_run`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            counts: Option<Counts>,
            /// Binding calls made (and planned).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            calls: Option<u64>,
            /// Writes actually sent.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            mutating_calls_sent: Option<u64>,
            /// Notifications that did not go out (the audit trail says who was never told).
            /// Absent for a REPL session.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            undelivered_notifications: Option<usize>,
            /// What ended a run that could not end on its own (a panic caught by the hook server).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            error: Option<ErrorRecord>,
        },
        /// A write is about to be sent: written (and fsync'd) before it goes, so a crash between
        /// the two leaves an `intent` without its `call`, which `resume` treats as uncertain.
        Intent {
            /// The step's index, null outside a step (a REPL session).
            #[serde(default)]
            step: Option<usize>,
            /// The binding (`ec2::stop_instances`, ...).
            #[serde(default)]
            binding: String,
            /// Its arguments (secrets as redaction markers).
            #[serde(default)]
            args: Value,
        },
        /// A binding call and what it returned.
        Call {
            /// The step's index, null outside a step.
            #[serde(default)]
            step: Option<usize>,
            /// The binding.
            #[serde(default)]
            binding: String,
            /// Its arguments.
            #[serde(default)]
            args: Value,
            /// A write (changes something outside).
            #[serde(default)]
            mutating: bool,
            /// Not sent: a plan recorded what it would do.
            #[serde(default)]
            planned: bool,
            /// `declared` when the runbook declared this call read-only (`read_only: true`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            read_only: Option<String>,
            /// How long it took.
            #[serde(default)]
            duration_ms: u64,
            /// What it returned (summarised when large); absent when it failed.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            result: Option<Value>,
            /// How it failed.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            error: Option<ErrorRecord>,
            /// The provider's request ids, for its support.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            request_ids: Vec<String>,
            /// Answered from the transcript on resume, not sent again.
            #[serde(default, skip_serializing_if = "std::ops::Not::not")]
            replayed: bool,
        },
        /// A line a runbook logged (`log`, `warn`, ...).
        Log {
            /// The step's index, null outside a step.
            #[serde(default)]
            step: Option<usize>,
            /// `info`, `warn`, `error`, ...
            #[serde(default)]
            level: String,
            /// The message.
            #[serde(default)]
            message: String,
        },
        /// A write the guardrails refused (kill switch, resource cap); it was not sent.
        Guardrail {
            /// The step's index, null outside a step.
            #[serde(default)]
            step: Option<usize>,
            /// The binding refused.
            #[serde(default)]
            binding: String,
            /// The rule: `kill_switch`, `max_resources`, ...
            #[serde(default)]
            rule: String,
            /// Why, in words.
            #[serde(default)]
            reason: String,
        },
        /// A resumed step called another write than the interrupted run had: nothing more is
        /// sent, a person must check.
        ResumeDiverged {
            /// The step's index, null outside a step.
            #[serde(default)]
            step: Option<usize>,
            /// The write the resumed step called.
            #[serde(default)]
            binding: String,
            /// The write the transcript recorded.
            #[serde(default)]
            expected: String,
            /// Both calls, in words.
            #[serde(default)]
            reason: String,
        },
        /// An HMAC of the chain's head, after each `run_finished` when a signing key is
        /// configured (`RUNBOOK_SIGNING_KEY_FILE`); `transcript verify --key-file` checks it.
        Signature {
            /// `hmac-sha256`.
            #[serde(default)]
            alg: String,
            /// The first 8 hex digits of the key's SHA-256 (which key, not the key).
            #[serde(default)]
            key_id: String,
            /// The hash of the line before: the head signed.
            #[serde(default)]
            signed: String,
            /// The HMAC, hex.
            #[serde(default)]
            signature: String,
        },
    }
}

/// Why a verified line could not be read as an [`Event`].
#[derive(Debug, Clone, PartialEq)]
pub enum Unreadable {
    /// A `type` this version does not know: written by a newer version (or by hand). The chain
    /// still verifies; the line is reported, not interpreted.
    Unknown {
        /// The line's `type` (empty when it has none).
        kind: String,
    },
    /// A known `type` whose fields do not fit it.
    Malformed {
        /// The line's `type`.
        kind: String,
        /// What did not fit.
        error: String,
    },
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Unknown { kind } => write!(
                f,
                "unknown event type {kind:?} (written by a newer version of runbook?)"
            ),
            Unreadable::Malformed { kind, error } => {
                write!(f, "a {kind:?} event whose fields do not fit it ({error})")
            }
        }
    }
}

/// One line as the event type its `type` names, when `docs` (the type's variants) knows it: an
/// unknown type is reported as such, not as the first variant serde failed to match.
fn parse_known<'a, T: Deserialize<'a>>(
    line: &'a Value,
    docs: &[VariantDoc],
) -> Result<T, Unreadable> {
    let kind = line
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !docs.iter().any(|d| d.tag() == kind) {
        return Err(Unreadable::Unknown { kind });
    }
    T::deserialize(line).map_err(|e| Unreadable::Malformed {
        kind,
        error: e.to_string(),
    })
}

impl Event {
    /// Reads one line of a transcript (a verified line: the chain fields are ignored).
    pub fn parse(line: &Value) -> Result<Event, Unreadable> {
        parse_known(line, Self::DOCS)
    }

    /// The step an event belongs to (None for run-level events and calls outside a step).
    pub fn step(&self) -> Option<usize> {
        match self {
            Event::StepStarted { step, .. }
            | Event::Decision { step, .. }
            | Event::Inspected { step, .. }
            | Event::Retry { step, .. }
            | Event::OnFailureStarted { step }
            | Event::OnFailureFinished { step, .. }
            | Event::StepFinished { step, .. } => Some(*step),
            Event::Intent { step, .. }
            | Event::Call { step, .. }
            | Event::Log { step, .. }
            | Event::Guardrail { step, .. }
            | Event::ResumeDiverged { step, .. } => *step,
            Event::RunStarted { .. }
            | Event::RunResumed { .. }
            | Event::RunFinished { .. }
            | Event::Signature { .. } => None,
        }
    }

    /// The `type` written on disk.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RunStarted { .. } => "run_started",
            Event::RunResumed { .. } => "run_resumed",
            Event::StepStarted { .. } => "step_started",
            Event::Decision { .. } => "decision",
            Event::Inspected { .. } => "inspected",
            Event::Retry { .. } => "retry",
            Event::OnFailureStarted { .. } => "on_failure_started",
            Event::OnFailureFinished { .. } => "on_failure_finished",
            Event::StepFinished { .. } => "step_finished",
            Event::RunFinished { .. } => "run_finished",
            Event::Intent { .. } => "intent",
            Event::Call { .. } => "call",
            Event::Log { .. } => "log",
            Event::Guardrail { .. } => "guardrail",
            Event::ResumeDiverged { .. } => "resume_diverged",
            Event::Signature { .. } => "signature",
        }
    }
}

/// An alert without `firing` is a firing one (as the server reads it).
fn firing() -> bool {
    true
}

/// A route of the hook server, as `journal_started` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteRef {
    pub name: String,
    pub alert: String,
    pub runbook: String,
}

documented! {
    /// One event of the hook server's journal (`runbook serve`), written by the same writer and
    /// chained the same way as a run's transcript. Its own enum: its `run_finished` is the server's
    /// record of a run it started (run id, route, status as the server saw it), not the run's.
    pub enum JournalEvent {
        /// The first line of every journal: the server's configuration.
        JournalStarted {
            /// The hooks config file.
            #[serde(default)]
            config: String,
            /// The routes: `name`, `alert`, `runbook` of each.
            #[serde(default)]
            routes: Vec<RouteRef>,
            /// The server's process id.
            #[serde(default)]
            pid: u32,
            /// `runbook` and its version.
            #[serde(default)]
            tool: String,
            /// The journal file this one continues (its name, in the same folder), when the
            /// server rotated its journal (`[retention] journal_max_size`, or a new UTC day):
            /// absent in the first journal of a server.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            continues: Option<String>,
        },
        /// The server listens.
        Listening {
            /// The address it is bound to.
            #[serde(default)]
            addr: String,
        },
        /// An alert arrived and what the server did with it.
        Alert {
            /// The request it came in (method and path).
            #[serde(default)]
            via: String,
            /// `alertmanager`, `sns` or `generic`.
            #[serde(default)]
            source: String,
            /// The alert's name.
            #[serde(default)]
            alert: String,
            /// Firing (true) or resolved.
            #[serde(default = "firing")]
            firing: bool,
            /// The alert's fingerprint (dedup key).
            #[serde(default)]
            fingerprint: String,
            /// Its labels.
            #[serde(default)]
            labels: Value,
            /// `started`, `planned`, `deduplicated`, `refused`, `unrouted`, ...
            #[serde(default)]
            outcome: String,
            /// Why (for a refusal: a code such as `breaker_open`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            reason: Option<String>,
            /// More about the reason, in words.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            detail: Option<String>,
            /// The route that matched.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            route: Option<String>,
            /// The run it started.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            run_id: Option<String>,
            /// That run's transcript.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            transcript: Option<String>,
        },
        /// A request the server refused before routing (authentication, size, a replay...).
        RequestRefused {
            /// Which receiver it came to.
            #[serde(default)]
            source: String,
            /// The HTTP status answered.
            status: u16,
            /// A code (`unauthorized`, `too_large`, ...).
            #[serde(default)]
            reason: String,
            /// In words.
            #[serde(default)]
            detail: String,
        },
        /// An SNS subscription confirmation, confirmed or not.
        SnsSubscription {
            /// The topic's ARN.
            #[serde(default)]
            topic: String,
            /// Whether the confirmation went through.
            #[serde(default)]
            confirmed: bool,
            /// Why not.
            #[serde(default)]
            error: Option<String>,
        },
        /// SNS said the topic unsubscribed the server.
        SnsUnsubscribed {
            /// The topic's ARN.
            #[serde(default)]
            topic: String,
        },
        /// Someone reset the circuit breakers.
        BreakerReset {
            /// The breakers closed.
            #[serde(default)]
            closed: Vec<String>,
            /// Who.
            #[serde(default)]
            by: String,
        },
        /// An admitted run did not start (the server stopped first).
        RunNotStarted {
            /// The run's id.
            #[serde(default)]
            run_id: String,
            /// The alert that asked for it.
            #[serde(default)]
            alert: String,
            /// Why.
            #[serde(default)]
            reason: String,
        },
        /// A run the server started ended (its own transcript has the details).
        RunFinished {
            /// The run's id.
            #[serde(default)]
            run_id: String,
            /// The alert that started it.
            #[serde(default)]
            alert: String,
            /// The alert's fingerprint.
            #[serde(default)]
            fingerprint: String,
            /// The route.
            #[serde(default)]
            route: String,
            /// The runbook.
            #[serde(default)]
            runbook: String,
            /// The run's status, or `error` when it could not run at all.
            status: String,
            /// Why, in words.
            #[serde(default)]
            reason: String,
            /// The guardrail that tripped, if one did.
            #[serde(default)]
            guardrail: Option<String>,
            /// How long the run took.
            #[serde(default)]
            duration_ms: u64,
            /// From the alert's arrival to the run's first binding call.
            #[serde(default)]
            first_call_ms: Option<f64>,
            /// The run's transcript.
            #[serde(default)]
            transcript: String,
            /// Notifications of the run that never went out (`binding (code)` each).
            #[serde(default)]
            undelivered_notifications: Vec<String>,
        },
        /// A person was told (or not) that something needs them: a refused or failed run.
        Escalation {
            /// The alert.
            #[serde(default)]
            alert: String,
            /// Why the server escalated.
            #[serde(default)]
            reason: String,
            /// The message sent.
            #[serde(default)]
            text: String,
            /// Whether it went out.
            #[serde(default)]
            delivered: bool,
            /// Why not.
            #[serde(default)]
            error: Option<String>,
        },
        /// The server stopped.
        Stopped {
            /// Runs still going that were aborted.
            #[serde(default)]
            aborted_runs: usize,
        },
    }
}

impl JournalEvent {
    /// Reads one line of a hook journal (see [`Event::parse`]).
    pub fn parse(line: &Value) -> Result<JournalEvent, Unreadable> {
        parse_known(line, Self::DOCS)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::data::transcript::canonical_text;

    fn error() -> ErrorRecord {
        ErrorRecord {
            message: "the instance is pending".into(),
            code: Some("IncorrectInstanceState".into()),
            location: Some("r.rhai:3:9".into()),
            request_id: None,
        }
    }

    /// One value of every variant, with optional fields both filled and left out.
    fn samples() -> Vec<Event> {
        let step = |i: usize| StepInfo {
            index: i,
            phase: "triage".into(),
            title: "Look".into(),
            timeout_ms: 60_000,
            retries: 1,
            confirm: true,
            rollback: false,
        };
        vec![
            Event::RunStarted {
                run_id: "01abc".into(),
                runbook: RunbookRef {
                    id: "rb".into(),
                    version: "1.0.0".into(),
                    title: "T".into(),
                    severity: "P2".into(),
                    service: Some("svc".into()),
                    file: Some("rb.rhai".into()),
                    path: Some("/x/rb.rhai".into()),
                    sha256: "ab".repeat(32),
                    modules: Some(json!([])),
                    git: Some(None),
                },
                operator: "alice".into(),
                identity: Some(Who::aws("arn:aws:iam::1:user/alice")),
                trigger: Some(None),
                mode: "run".into(),
                clock: Some("real".into()),
                environment: "staging".into(),
                backend: Some("sim".into()),
                account: Some(None),
                region: Some(Some("eu-west-1".into())),
                endpoint: Some(Some("sim".into())),
                fleet: Some(None),
                params: json!({"instance_id": "i-1"}),
                guardrails: Some(json!({"max_resources": null})),
                tool: "runbook 0.1.0".into(),
                steps: vec![step(0), step(1)],
            },
            Event::RunResumed {
                from_step: 1,
                operator: "bob".into(),
                identity: Some(Who::os_account(0).claiming(Some("bob".into()))),
                allow_changed: true,
                sha256_then: "a".into(),
                sha256_now: "b".into(),
                replayed_writes: 2,
                uncertain: vec!["ec2::stop({})".into()],
                guardrails: json!({}),
                given_again: vec!["token".into()],
                appended_run_finished: false,
            },
            Event::StepStarted {
                step: 0,
                phase: "triage".into(),
                title: "Look".into(),
                attempt: 1,
            },
            Event::Decision {
                step: 0,
                action: Action::Approval,
                by: "alice".into(),
                identity: None,
                approvers: vec![Who::slack("T1", "U1", Some("bob"))],
                reason: "why".into(),
                decided_ms: Some(12),
            },
            Event::Inspected {
                step: 0,
                ctx: json!({"a": [1, 2]}),
            },
            Event::Retry {
                step: 0,
                attempt: 2,
                delay_ms: 500,
                error: error(),
            },
            Event::OnFailureStarted { step: 1 },
            Event::OnFailureFinished {
                step: 1,
                status: StepStatus::TimedOut,
                duration_ms: 3,
                error: None,
            },
            Event::StepFinished {
                step: 1,
                status: StepStatus::Failed,
                duration_ms: 10,
                working_ms: 10,
                waiting_ms: 5,
                attempts: 2,
                run_clock_ms: Some(15),
                reason: None,
                error: Some(error()),
                ctx: json!({}),
            },
            Event::RunFinished {
                status: RunStatus::Failed,
                reason: "step 2 failed".into(),
                duration_ms: Some(20),
                counts: Some(Counts {
                    ok: 1,
                    failed: 1,
                    ..Counts::default()
                }),
                calls: Some(3),
                mutating_calls_sent: Some(1),
                undelivered_notifications: Some(0),
                error: None,
            },
            Event::Intent {
                step: None,
                binding: "ec2::stop_instances".into(),
                args: json!({"ids": ["i-1"]}),
            },
            Event::Call {
                step: Some(1),
                binding: "ec2::stop_instances".into(),
                args: json!({"ids": ["i-1"]}),
                mutating: true,
                planned: false,
                read_only: None,
                duration_ms: 7,
                result: None,
                error: Some(ErrorRecord {
                    message: "denied".into(),
                    code: Some("denied".into()),
                    location: None,
                    request_id: Some("req-1".into()),
                }),
                request_ids: vec!["req-1".into()],
                replayed: true,
            },
            Event::Log {
                step: Some(0),
                level: "warn".into(),
                message: "careful".into(),
            },
            Event::Guardrail {
                step: Some(1),
                binding: "ec2::terminate_instances".into(),
                rule: "max_resources".into(),
                reason: "too many".into(),
            },
            Event::ResumeDiverged {
                step: Some(1),
                binding: "ec2::reboot_instances".into(),
                expected: "ec2::stop_instances".into(),
                reason: "diverged".into(),
            },
            Event::Signature {
                alg: "hmac-sha256".into(),
                key_id: "0a1b2c3d".into(),
                signed: "00".repeat(32),
                signature: "ff".repeat(32),
            },
        ]
    }

    fn journal_samples() -> Vec<JournalEvent> {
        vec![
            JournalEvent::JournalStarted {
                config: "hooks.toml".into(),
                routes: vec![RouteRef {
                    name: "cpu".into(),
                    alert: "cpu-high".into(),
                    runbook: "rb.rhai".into(),
                }],
                pid: 7,
                tool: "runbook 0.1.0".into(),
                continues: None,
            },
            JournalEvent::Listening {
                addr: "127.0.0.1:1".into(),
            },
            JournalEvent::Alert {
                via: "POST /hooks/generic".into(),
                source: "generic".into(),
                alert: "cpu-high".into(),
                firing: false,
                fingerprint: "f".into(),
                labels: json!({"a": "b"}),
                outcome: "started".into(),
                reason: None,
                detail: Some("d".into()),
                route: Some("cpu".into()),
                run_id: Some("01abc".into()),
                transcript: None,
            },
            JournalEvent::RequestRefused {
                source: "generic".into(),
                status: 401,
                reason: "unauthorized".into(),
                detail: "no token".into(),
            },
            JournalEvent::SnsSubscription {
                topic: "arn".into(),
                confirmed: true,
                error: None,
            },
            JournalEvent::SnsUnsubscribed {
                topic: "arn".into(),
            },
            JournalEvent::BreakerReset {
                closed: vec!["*".into()],
                by: "alice".into(),
            },
            JournalEvent::RunNotStarted {
                run_id: "01abd".into(),
                alert: "cpu-high".into(),
                reason: "shutting_down".into(),
            },
            JournalEvent::RunFinished {
                run_id: "01abc".into(),
                alert: "cpu-high".into(),
                fingerprint: "f".into(),
                route: "cpu".into(),
                runbook: "rb.rhai".into(),
                status: "error".into(),
                reason: "no".into(),
                guardrail: None,
                duration_ms: 5,
                first_call_ms: Some(1.5),
                transcript: "t.jsonl".into(),
                undelivered_notifications: vec!["slack::post (x)".into()],
            },
            JournalEvent::Escalation {
                alert: "cpu-high".into(),
                reason: "failed".into(),
                text: "t".into(),
                delivered: false,
                error: Some("down".into()),
            },
            JournalEvent::Stopped { aborted_runs: 1 },
        ]
    }

    /// Serialized, written as the canonical line text and read back.
    fn through_a_line<T: Serialize>(event: &T) -> Value {
        let text = canonical_text(&serde_json::to_value(event).unwrap());
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn every_event_type_survives_a_round_trip_through_its_canonical_line() {
        let samples = samples();
        let kinds: std::collections::BTreeSet<&str> = samples.iter().map(Event::kind).collect();
        assert_eq!(
            kinds.len(),
            Event::DOCS.len(),
            "a sample per variant (add one for a new variant)"
        );
        for (event, doc) in samples.iter().zip(Event::DOCS) {
            let line = through_a_line(event);
            assert_eq!(line["type"], doc.tag(), "the docs' name of {}", doc.variant);
            assert_eq!(line["type"], event.kind());
            assert_eq!(&Event::parse(&line).unwrap(), event, "{line}");
        }
        let samples = journal_samples();
        assert_eq!(samples.len(), JournalEvent::DOCS.len());
        for (event, doc) in samples.iter().zip(JournalEvent::DOCS) {
            let line = through_a_line(event);
            assert_eq!(line["type"], doc.tag(), "the docs' name of {}", doc.variant);
            assert_eq!(&JournalEvent::parse(&line).unwrap(), event, "{line}");
        }
    }

    #[test]
    fn optional_fields_are_written_as_before_absent_or_null() {
        let started = through_a_line(&samples()[0]);
        // Written as null by the executor (and read back as null, not as absent).
        for k in ["trigger", "account", "fleet"] {
            assert_eq!(started.get(k), Some(&Value::Null), "{k}");
        }
        assert_eq!(started["runbook"].get("git"), Some(&Value::Null));
        // Left out when a REPL session writes them.
        let repl = Event::RunStarted {
            run_id: "s".into(),
            runbook: RunbookRef::default(),
            operator: "a".into(),
            identity: None,
            trigger: None,
            mode: "repl".into(),
            clock: None,
            environment: "e".into(),
            backend: None,
            account: None,
            region: None,
            endpoint: None,
            fleet: None,
            params: json!({}),
            guardrails: None,
            tool: "t".into(),
            steps: Vec::new(),
        };
        let line = through_a_line(&repl);
        for k in [
            "trigger",
            "clock",
            "backend",
            "account",
            "region",
            "fleet",
            "guardrails",
        ] {
            assert!(line.get(k).is_none(), "{k}: {line}");
        }
        assert_eq!(
            line["runbook"],
            json!({"id": "", "version": "", "title": "", "severity": "", "sha256": ""})
        );
        // A call outside a step says so with null; an unset read_only is left out.
        let intent = through_a_line(&samples()[10]);
        assert_eq!(intent.get("step"), Some(&Value::Null));
        let call = through_a_line(&samples()[11]);
        assert!(call.get("read_only").is_none() && call.get("result").is_none());
    }

    #[test]
    fn a_line_of_an_unknown_type_is_reported_not_misread() {
        let line = json!({"type": "future_event", "seq": 3, "step": 1});
        assert_eq!(
            Event::parse(&line),
            Err(Unreadable::Unknown {
                kind: "future_event".into()
            })
        );
        let why = Event::parse(&line).unwrap_err().to_string();
        assert!(why.contains("unknown event type \"future_event\""), "{why}");
        assert!(matches!(
            Event::parse(&json!({"seq": 0})),
            Err(Unreadable::Unknown { .. })
        ));
        // A known type whose fields do not fit it is a different report.
        let bad = json!({"type": "step_finished", "step": "one", "status": "ok"});
        let why = Event::parse(&bad).unwrap_err();
        assert!(
            matches!(&why, Unreadable::Malformed { kind, .. } if kind == "step_finished"),
            "{why}"
        );
        // A journal's event is not a run's.
        assert!(Event::parse(&json!({"type": "journal_started"})).is_err());
    }

    #[test]
    fn a_line_of_an_earlier_version_reads_with_defaults_for_later_fields() {
        let old = json!({"type": "step_finished", "step": 0, "status": "ok", "ctx": {}});
        match Event::parse(&old) {
            Ok(Event::StepFinished {
                waiting_ms,
                attempts,
                ..
            }) => assert_eq!((waiting_ms, attempts), (0, 0)),
            other => panic!("{other:?}"),
        }
        let repl_end = json!({"type": "run_finished", "status": "ok", "counts": {}});
        assert!(matches!(
            Event::parse(&repl_end),
            Ok(Event::RunFinished { counts: Some(c), .. }) if c == Counts::default()
        ));
    }
}
