//! Quarterly drills: runbooks run against the simulated cloud with scripted faults, and checked.
//!
//! A scenario (`drills/*.toml`) names a runbook with a version pin, its parameters, the fleet and
//! the faults to inject, and what must be true afterwards: the run's status, each step's status,
//! the resulting cloud state, the notifications sent, the transcript's chain, a maximum duration.
//! Scenarios run in parallel (each on its own thread, with its own engine and simulated cloud);
//! every run keeps its transcript; passing runs leave a dated record that `check --policy` reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::base::console::Console;
use crate::base::error::{Error, Result};
use crate::data::config::{Backend, Environment};
use crate::data::transcript::{self, Event, StepInfo, StepStatus};
use crate::run::launch::{Driving, Launch, Protection, Source};
use crate::runbook::catalog::{self, Target};
use crate::sandbox::recorder::{Limits, Mode};
use crate::services::cloud::CloudAccess;

/// Declares a scenario type once: the serde struct, and its field documentation (names, TOML
/// types and doc comments) for `runbook docs drills`, so the reference is generated from the
/// types and cannot drift from what the parser accepts.
macro_rules! documented {
    (
        $(#[doc = $sdoc:literal])*
        [$($attr:meta),*]
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                [$($fattr:meta),*]
                pub $field:ident : $ty:ty,
            )*
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, Deserialize)]
        $(#[$attr])*
        pub struct $name {
            $(
                $(#[doc = $doc])*
                $(#[$fattr])*
                pub $field: $ty,
            )*
        }

        impl Documented for $name {
            const NAME: &'static str = stringify!($name);
            const DOC: &'static [&'static str] = &[$($sdoc),*];
            const FIELDS: &'static [FieldDoc] = &[$(
                FieldDoc {
                    rust_name: stringify!($field),
                    rust_type: stringify!($ty),
                    doc: &[$($doc),*],
                }
            ),*];
        }
    };
}

/// One documented field of a scenario type.
pub(crate) struct FieldDoc {
    rust_name: &'static str,
    rust_type: &'static str,
    doc: &'static [&'static str],
}

/// A scenario type whose fields `runbook docs drills` lists.
pub(crate) trait Documented {
    const NAME: &'static str;
    const DOC: &'static [&'static str];
    const FIELDS: &'static [FieldDoc];
}

documented! {
    /// A drill scenario (`drills/*.toml`): one runbook run on the simulated cloud, with faults,
    /// and what must be true afterwards.
    [serde(deny_unknown_fields), serde(expecting = "a drill scenario table (runbook, params, faults, expect, ...)")]
    pub struct Scenario {
        /// `id@version` (the pin is required: a drill tests one version) or a runbook path.
        [] pub runbook: String,
        /// What the drill exercises, in a sentence.
        [serde(default)] pub description: String,
        /// Give confirmations in advance (a drill has nobody at the keyboard). Default true.
        [serde(default = "yes")] pub yes: bool,
        /// The runbook's parameters, as on the command line (`instance_id = "i-..."`).
        [serde(default)] pub params: BTreeMap<String, toml::Value>,
        /// Fleet fixture, relative to the scenario (default: the embedded fleet, `sim/default-fleet.toml`).
        [] pub fleet: Option<PathBuf>,
        /// A whole fleet fixture inline (its tables as in `sim/default-fleet.toml`), used instead
        /// of `fleet`: what `runbook drill capture` writes, seeded from a real run's reads.
        [] pub seed: Option<toml::Table>,
        /// Run against an AWS emulator instead of the sim (moto's server, LocalStack): `endpoint`
        /// and `region` (default `us-east-1`). Faults and cloud-state expectations need the sim.
        [] pub emulator: Option<Emulator>,
        /// Merged into the fleet's `[faults]`: `latency_ms`, `throttle_calls` (call numbers,
        /// retried like the SDK), `max_attempts`, `errors` (`operation`, `instance`, `resource`,
        /// `code`, `message`: every call fails), `calls` (`[[faults.calls]]`: `operation`,
        /// optional `instance` or `resource` (an Auto Scaling group, SSM parameter or alarm by
        /// name), `nth` (default 1), `attempts` (calls in a row that fail, default 1), `error`
        /// (`Throttling`, `RequestLimitExceeded`, `InternalError`, `Timeout`, ...), `message`:
        /// the `nth` call of that operation for that instance or resource fails as the caller
        /// sees it, the calls before and after go through; every request of a binding counts, its
        /// lookup, its read after a write and each poll of a wait too), `command_failure` (`share`,
        /// `exit_code`, `stderr`), `refresh_fails` (group names: the refresh fails halfway),
        /// `refresh_failures` (`group`, `status`, `percent`, `reason`: the refresh ends so at that
        /// percentage, or with `InProgress` never finishes), ...
        /// (see the fleet fixture).
        [serde(default)] pub faults: toml::Table,
        /// Added to (or, by `url`, replacing) the fleet's HTTP endpoints (`url`, `status`,
        /// `latency_ms`, `body`, `down_before_step`, `slow_before_step`, `slow_latency_ms`, `flaky_every`).
        [serde(default)] pub endpoints: Vec<toml::Table>,
        /// `[[command_outputs]]` put before the fleet's own (the first whose `match` is in a Run
        /// Command's text answers it): `match`, `stdout` (one string per successive use; the last
        /// repeats), `exit_code`. How a drill gives `top` or `free -m` the numbers it needs.
        [serde(default)] pub command_outputs: Vec<toml::Table>,
        /// `[[metrics]]` put before the fleet's own (the first with the same `namespace`, `name`
        /// and `dimensions` answers): `value`, `recovers_on` (text of the call after which it
        /// moves), `recovered`, `ramp_minutes`. How a drill scripts a CloudWatch series.
        [serde(default)] pub metrics: Vec<toml::Table>,
        /// What must be true afterwards (`[expect]`).
        [serde(default)] pub expect: Expect,
    }
}

fn yes() -> bool {
    true
}

documented! {
    /// An emulator endpoint for a drill. Faults and cloud-state expectations need the sim (the
    /// emulator cannot be told to fail, and its state is read through the API), so they are refused.
    [serde(deny_unknown_fields), serde(expecting = "a table with `endpoint` (URL) and optionally `region`")]
    pub struct Emulator {
        /// The emulator's URL, e.g. `http://127.0.0.1:5000`.
        [] pub endpoint: String,
        /// Default `us-east-1`.
        [serde(default = "emulator_region")] pub region: String,
    }
}

fn emulator_region() -> String {
    "us-east-1".into()
}

/// How a drilled run must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunExpect {
    Ok,
    Failed,
    Aborted,
    TimedOut,
}

impl RunExpect {
    pub const ALLOWED: &'static str = "ok, failed, aborted, timed_out";

    pub fn as_str(self) -> &'static str {
        match self {
            RunExpect::Ok => "ok",
            RunExpect::Failed => "failed",
            RunExpect::Aborted => "aborted",
            RunExpect::TimedOut => "timed_out",
        }
    }
}

/// How a step of the drilled run must end. `not run` (or `not_run`): the step never started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepExpect {
    Ok,
    Failed,
    Skipped,
    TimedOut,
    Aborted,
    #[serde(rename = "not run", alias = "not_run")]
    NotRun,
}

impl StepExpect {
    pub const ALLOWED: &'static str =
        "ok, failed, skipped, timed_out, aborted, not run (or not_run)";

    pub fn as_str(self) -> &'static str {
        match self {
            StepExpect::Ok => "ok",
            StepExpect::Failed => "failed",
            StepExpect::Skipped => "skipped",
            StepExpect::TimedOut => "timed_out",
            StepExpect::Aborted => "aborted",
            StepExpect::NotRun => "not run",
        }
    }
}

documented! {
    /// `[expect]`: what must be true after the run. Every expectation given is checked; a drill
    /// passes when all hold.
    [derive(Default), serde(deny_unknown_fields), serde(expecting = "an [expect] table (status, steps, max_duration, cloud, notifications, calls, within)")]
    pub struct Expect {
        /// How the run ends: `ok`, `failed`, `aborted` or `timed_out` (default `ok`).
        [] pub status: Option<RunExpect>,
        /// `[expect.steps]`: step title = how it ends: `ok`, `failed`, `skipped`, `timed_out`,
        /// `aborted`, or `not run` (also spelled `not_run`: it never started).
        [serde(default)] pub steps: BTreeMap<String, StepExpect>,
        /// The longest the run may take on its clock (`"30s"`, `"10m"`). On the sim the clock is
        /// simulated: waits, backoff, polling and latency count in full but take no wall time.
        [] pub max_duration: Option<String>,
        /// `[expect.cloud]`: the simulated cloud's state afterwards.
        [serde(default)] pub cloud: CloudExpect,
        /// `[expect.notifications]`: the Slack/Teams messages captured.
        [serde(default)] pub notifications: NotifyExpect,
        /// Mutating calls (binding names, e.g. `"ec2::isolate"`) that must have been sent, in order.
        [] pub calls: Option<Vec<String>>,
        /// `[expect.within]`: a phase (`containment`, `eradication`, `recovery`) or a step title =
        /// how far into the run, on its clock, it must have finished (`containment = "30m"`:
        /// the seeds' full isolation within 30 minutes). Finished means every step of it ended
        /// `ok` or `skipped`; one that failed or never ran fails the expectation.
        [serde(default)] pub within: BTreeMap<String, String>,
    }
}

documented! {
    /// `[expect.cloud]`: instance ids (from the fleet) and what must hold for each.
    [derive(Default), serde(deny_unknown_fields), serde(expecting = "an [expect.cloud] table of instance id lists (isolated, snapshotted, terminated, running, replaced, original_groups) and maps (weights, desired_capacity)")]
    pub struct CloudExpect {
        /// Instances whose every network interface carries only the quarantine group.
        [serde(default)] pub isolated: Vec<String>,
        /// Instances with a completed snapshot of every volume.
        [serde(default)] pub snapshotted: Vec<String>,
        /// Instances that are `terminated`.
        [serde(default)] pub terminated: Vec<String>,
        /// Instances that are `running`.
        [serde(default)] pub running: Vec<String>,
        /// Instances replaced by a running instance tagged `ReplacementFor`.
        [serde(default)] pub replaced: Vec<String>,
        /// Instances whose groups are what the fleet gave them (a rollback put them back).
        [serde(default)] pub original_groups: Vec<String>,
        /// Target group name = the weight every listener forwarding to it gives it (a blue/green
        /// shift's end state: `{ "api-blue" = 0, "api-green" = 100 }`).
        [serde(default)] pub weights: BTreeMap<String, i64>,
        /// Auto Scaling group name = its desired capacity afterwards.
        [serde(default)] pub desired_capacity: BTreeMap<String, i64>,
        /// Snapshots a volume was created from during the run (`ec2::restore_volume`).
        [serde(default)] pub restored: Vec<String>,
        /// Snapshots a volume was created from during the run, with every such volume deleted
        /// again by its end (a restoration test leaves nothing behind).
        [serde(default)] pub restored_volumes_deleted: Vec<String>,
    }
}

documented! {
    /// `[expect.notifications]`: messages captured instead of sent on the sim.
    [derive(Default), serde(deny_unknown_fields), serde(expecting = "an [expect.notifications] table with `at_least` (a number) and `contains` (an array of strings)")]
    pub struct NotifyExpect {
        /// At least this many messages were sent.
        [] pub at_least: Option<usize>,
        /// Each of these texts appears in some message.
        [serde(default)] pub contains: Vec<String>,
    }
}

/// A TOML type as a scenario author knows it.
fn toml_type(rust: &str) -> String {
    let t: String = rust.chars().filter(|c| !c.is_whitespace()).collect();
    let inner = t
        .strip_prefix("Option<")
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(&t);
    match inner {
        "String" | "PathBuf" => "string".into(),
        "bool" => "boolean".into(),
        "usize" => "integer".into(),
        "Vec<String>" => "array of strings".into(),
        "Vec<toml::Table>" => "array of tables".into(),
        "toml::Table" => "table".into(),
        "BTreeMap<String,toml::Value>" => "table of values".into(),
        "BTreeMap<String,StepExpect>" => format!("table of step title = {}", StepExpect::ALLOWED),
        "RunExpect" => format!("one of {}", RunExpect::ALLOWED),
        other => format!("table ({other})"),
    }
}

fn doc_text(lines: &[&str]) -> String {
    lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ")
}

fn document<T: Documented>(out: &mut String, heading: &str) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "\n## {heading}\n\n{}\n", doc_text(T::DOC));
    let _ = writeln!(out, "| field | type | meaning |\n|---|---|---|");
    for f in T::FIELDS {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            f.rust_name,
            toml_type(f.rust_type),
            doc_text(f.doc).replace('|', "\\|")
        );
    }
    let _ = T::NAME;
}

/// How a real run becomes a drill, and how its transcript tests the next version.
const CAPTURE_AND_REPLAY: &str = "\n## From an incident: `runbook drill capture` and `runbook replay`\n\n\
`runbook drill capture TRANSCRIPT > drills/NAME.toml` writes a scenario from a real run: the runbook pinned at the recorded version, its parameters (a secret stays its redaction marker), `seed` (the fleet inline: the instances as the run first saw them, with their groups and volumes, the SSM parameters, the HTTP answers, the Run Command outputs, the status checks and patch compliance; the load balancer's `listeners` with their weights before the run moved them and `target_groups` with the targets it saw; CloudWatch `metrics` at the level before the run, with `recovers_on` the write after which they were seen to change and `recovered` the level last seen, and the `alarms` watching them; `auto_scaling_groups` as before the run scaled them, each with a launch template like its first member; the EBS `snapshots` listed or restored; the declared local programs' answers as `local_commands`; instances the run or a group launched are left out), the faults the run met scripted at the operation and instance where they happened (`[seed.faults]`: an operation that failed every time it was called as `errors`; a call that failed and then went through (throttling or a transient error a retry answered, a timeout followed by success) as `[[seed.faults.calls]]` at the same call of its operation and instance or named resource (`nth`, `attempts`, `error`; a binding's lookups and reads after its write count as calls), so the drill fails the same calls and the run recovers the same way, with a `# note:` when a wait polled that operation before and the count is uncertain; an Auto Scaling instance refresh that ended badly as `refresh_failures` with its status, percentage and reason (one whose wait ran out as never finishing, `InProgress` where it was last seen), its group seeded even when never read; a stop that never finished, status checks that never passed, a shift's pool that failed under traffic as `unhealthy_with_traffic`), and `[expect]` from the recorded outcome: the run's and every step's status, the writes sent in order, and the cloud state they left (`isolated`, `snapshotted`, `terminated`, `replaced`, `original_groups`, `weights`, `desired_capacity`, `restored`, `restored_volumes_deleted`). Resource ids are the recorded ones; what cannot be taken from the transcript is said in a `# note:` comment.\n\n\
`runbook replay TRANSCRIPT [--runbook FILE | ID@VERSION] [--output json]` runs a version (by default the recorded one, checked by its sha256) with every call answered from the transcript and nothing sent, on a simulated clock from the recorded time, with the recorded decisions, and lists where it diverges step by step (`unrecorded_write`, `write_not_made`, `different_arguments`, `step_status`, `branch`, `step_removed`, `unrecorded_read`, `unrecorded_approval`). Exit 0: it does what the incident did; 1: it diverges; 2: the transcript cannot be replayed (say why). Its own transcript is temporary: nothing is written to the transcripts folder. A resumed run replays as the one run it was (the stop each resume undid is dropped, so the step runs again as decided after it), and an approval that never came replays as never coming (the step ends as it did; a transcript that ends while waiting stops there).\n";

/// `runbook docs drills`: the scenario format, generated from the types above.
pub fn format_reference() -> String {
    let mut out = String::from(
        "# Drill scenario format\n\nGenerated by `runbook docs drills` from the scenario types. A scenario is a TOML file in `drills/`; `runbook drill` runs every one (or those of one runbook: `runbook drill ID`). Unknown keys are refused, with the field and the allowed values named.\n",
    );
    document::<Scenario>(&mut out, "Top level");
    document::<Expect>(&mut out, "`[expect]`");
    document::<CloudExpect>(&mut out, "`[expect.cloud]`");
    document::<NotifyExpect>(&mut out, "`[expect.notifications]`");
    document::<Emulator>(&mut out, "`[emulator]`");
    out.push_str(CAPTURE_AND_REPLAY);
    out.push_str(
        "\n## Example\n\n```toml\nrunbook = \"ec2-high-cpu@2.0.0\"\ndescription = \"The worker's CPU is at 99%; restarting its service brings it down.\"\n[params]\ninstance_id = \"i-0a1b2c3d4e5f60005\"\n[faults.command_failure]\nshare = 0.0\n[expect]\nstatus = \"ok\"\nmax_duration = \"30m\"\n[expect.steps]\n\"Restart the offending service\" = \"ok\"\n```\n",
    );
    out
}

/// One scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub scenario: String,
    pub runbook: String,
    pub version: String,
    pub sha256: String,
    pub passed: bool,
    pub failures: Vec<String>,
    pub status: String,
    /// On the run's clock (simulated on the sim).
    pub duration_ms: u64,
    /// Wall time the drill took.
    pub wall_ms: u64,
    /// `simulated` (sim) or `real` (emulator).
    pub clock: &'static str,
    pub transcript: PathBuf,
    pub coverage: Coverage,
}

/// What a drill exercised.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Coverage {
    pub steps_run: Vec<String>,
    pub retries: usize,
    pub rollbacks: Vec<String>,
    pub approvals: usize,
    pub decisions: usize,
    /// Steps that declare an `on_failure`.
    pub rollback_steps: Vec<String>,
}

/// A passing drill's record, read by `check --policy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub runbook: String,
    pub version: String,
    pub sha256: String,
    pub scenario: String,
    pub date: String,
    pub transcript: String,
}

fn merge_fleet(base: &str, s: &Scenario) -> Result<String> {
    let mut fleet: toml::Table =
        toml::from_str(base).map_err(|e| Error::Input(format!("fleet: {e}")))?;
    if !s.faults.is_empty() {
        let faults = fleet
            .entry("faults")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(t) = faults.as_table_mut() {
            for (k, v) in &s.faults {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    if !s.endpoints.is_empty() {
        let list = fleet
            .entry("endpoints")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        if let Some(items) = list.as_array_mut() {
            for e in &s.endpoints {
                items.retain(|x| x.get("url") != e.get("url"));
                items.push(toml::Value::Table(e.clone()));
            }
        }
    }
    if !s.metrics.is_empty() {
        let list = fleet
            .entry("metrics")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        if let Some(items) = list.as_array_mut() {
            let mut merged: Vec<toml::Value> =
                s.metrics.iter().cloned().map(toml::Value::Table).collect();
            merged.append(items);
            *items = merged;
        }
    }
    if !s.command_outputs.is_empty() {
        let list = fleet
            .entry("command_outputs")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        if let Some(items) = list.as_array_mut() {
            let mut merged: Vec<toml::Value> = s
                .command_outputs
                .iter()
                .cloned()
                .map(toml::Value::Table)
                .collect();
            merged.append(items);
            *items = merged;
        }
    }
    toml::to_string(&fleet).map_err(|e| Error::Internal(format!("fleet: {e}")))
}

fn param_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Loads a scenario file.
pub fn load(path: &Path) -> Result<Scenario> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
    parse(&text, path)
}

/// A scenario from text already in memory, as if read from `path`. For the fuzz targets
/// (`fuzz/`), like [`fleet_with_faults`].
#[doc(hidden)]
pub fn parse(text: &str, path: &Path) -> Result<Scenario> {
    toml::from_str(text).map_err(|e| {
        Error::config(
            path,
            format!(
                "unparsable drill scenario (see `runbook docs drills`): {}",
                e.to_string().trim_end()
            ),
        )
    })
}

/// The fleet a sim drill runs on: `base` with the scenario's faults and endpoints merged in.
#[doc(hidden)]
pub fn fleet_with_faults(base: &str, s: &Scenario) -> Result<String> {
    merge_fleet(base, s)
}

/// Runs one scenario and checks its expectations.
pub fn run_one(path: &Path, dirs: &[PathBuf], out: &Path) -> Result<Outcome> {
    let s = load(path)?;
    let name = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = match &s.fleet {
        _ if s.seed.is_some() => {
            toml::to_string(&s.seed).map_err(|e| Error::config(path, format!("seed: {e}")))?
        }
        Some(rel) => {
            let p = path.parent().unwrap_or(Path::new(".")).join(rel);
            std::fs::read_to_string(&p).map_err(|e| Error::io("cannot read fleet", &p, e))?
        }
        None => crate::services::cloud::sim::DEFAULT_FLEET.to_string(),
    };
    let mut env = Environment::builtin_sim();
    env.name = format!("drill:{name}");
    match &s.emulator {
        None => {
            env.backend = Backend::Sim;
            env.fleet = Some(merge_fleet(&base, &s)?);
            env.fleet_source = format!("{} + faults", path.display());
        }
        Some(e) => {
            let c = &s.expect.cloud;
            let sim_only = !s.faults.is_empty()
                || !s.endpoints.is_empty()
                || !s.command_outputs.is_empty()
                || s.fleet.is_some()
                || s.seed.is_some()
                || !(c.isolated.is_empty()
                    && c.snapshotted.is_empty()
                    && c.terminated.is_empty()
                    && c.running.is_empty()
                    && c.replaced.is_empty()
                    && c.original_groups.is_empty()
                    && c.weights.is_empty()
                    && c.desired_capacity.is_empty()
                    && c.restored.is_empty()
                    && c.restored_volumes_deleted.is_empty())
                || !s.metrics.is_empty();
            if sim_only {
                return Err(Error::config(
                    path,
                    "faults, fleets and cloud-state expectations need the sim; an emulator drill checks statuses, calls and notifications",
                ));
            }
            env.backend = Backend::Aws;
            env.aws.endpoint = Some(e.endpoint.clone());
            env.aws.region = Some(e.region.clone());
            env.fleet_source = e.endpoint.clone();
        }
    }
    let simulated = env.backend == Backend::Sim;
    let target = Target::parse(&s.runbook);
    if let Target::Id { pin: None, .. } = target {
        return Err(Error::config(
            path,
            format!("pin the runbook's version (`{}@X.Y.Z`)", s.runbook),
        ));
    }
    let file = catalog::locate(&target, dirs, catalog::id_of)?;
    let given: Vec<(String, String)> = s
        .params
        .iter()
        .map(|(k, v)| (k.clone(), param_text(v)))
        .collect();
    let run_id = crate::base::identity::new_run_id();
    let transcript_path = out.join(format!("{name}-{run_id}.jsonl"));
    let done = Launch {
        mode: Mode::Run,
        cloud: CloudAccess::new(env),
        source: Source::Located { file, target },
        params: given,
        // A drill checks the runbook against its scenario: no limits but the runbook's own.
        limits: Limits::default(),
        // A drill's environment is made here, never protected.
        protection: Protection::Configured(false),
        driving: Driving::Unattended {
            yes: s.yes.then(|| "the drill scenario's yes = true".to_string()),
            approval_timeout: None,
        },
        operator: "drill".into(),
        slack_lifecycle: true,
        observers: Vec::new(),
        run_id,
        transcript: transcript_path.clone(),
        // On the sim, waits, backoff, polling and the sim's latency advance a simulated clock: a
        // drill of a ten-minute recovery takes milliseconds, and its durations still say ten
        // minutes. An emulator is a real server with real time.
        simulated_clock: simulated,
        // Drills run in parallel; their outcome is the summary, the report and the JUnit file.
        console: Console::silent(),
        abort: Arc::new(AtomicBool::new(false)),
        // `runbook drill` runs scenarios on worker threads: one Ctrl-C handler cannot serve them.
        ctrl_c: false,
        // The sim or a local emulator: there is no account to check, and none is recorded.
        verify_account: false,
        resume: None,
        trigger: None,
        // A drill acts on a simulated cloud (or an emulator) of its own: nothing to lock.
        lock: None,
    }
    .run()?;
    let (rb, report) = (&done.rb, &done.report);
    // The run's own clock: simulated time on the sim, what `max_duration` bounds.
    let duration = report.duration;
    let wall_ms = u64::try_from(done.wall.as_millis()).unwrap_or(u64::MAX);
    let state = rb.host.cloud.sim_state().unwrap_or(Value::Null);
    let notifications = rb.host.notifier.captured();
    let fleet: Value =
        serde_json::to_value(rb.host.cloud.sim().map(|s| s.fleet().clone())).unwrap_or(Value::Null);

    let mut failures = Vec::new();
    let lines = match transcript::read_verified(&transcript_path) {
        Ok((lines, _)) => lines,
        Err(e) => {
            failures.push(format!("the transcript does not verify: {e}"));
            Vec::new()
        }
    };
    let mut events = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match Event::parse(line) {
            Ok(e) => events.push(e),
            Err(why) => failures.push(format!("line {} of the transcript: {why}", i + 1)),
        }
    }
    let want = s.expect.status.map_or("ok", RunExpect::as_str);
    if report.status.as_str() != want {
        failures.push(format!(
            "run ended {} (expected {want}): {}",
            report.status.as_str(),
            report.reason
        ));
    }
    if let Some(max) = &s.expect.max_duration {
        let max = crate::base::clock::parse_duration(max)
            .map_err(|e| Error::config(path, format!("max_duration: {e}")))?;
        if duration > max {
            failures.push(format!(
                "took {} (maximum {})",
                humantime::format_duration(Duration::from_millis(
                    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
                )),
                humantime::format_duration(max)
            ));
        }
    }
    let steps = match events.first() {
        Some(Event::RunStarted { steps, .. }) => steps.clone(),
        _ => Vec::new(),
    };
    let title_of = |i: usize| {
        steps
            .get(i)
            .map_or_else(|| "?".to_string(), |s| s.title.clone())
    };
    let mut step_status: BTreeMap<String, String> = BTreeMap::new();
    for e in &events {
        if let Event::StepFinished { step, status, .. } = e {
            step_status.insert(title_of(*step), status.as_str().to_string());
        }
    }
    for (title, want) in &s.expect.steps {
        let got = step_status
            .get(title)
            .map(String::as_str)
            .unwrap_or("not run");
        if got != want.as_str() {
            failures.push(format!(
                "step {title:?} ended {got} (expected {})",
                want.as_str()
            ));
        }
    }
    if let Some(calls) = &s.expect.calls {
        let sent: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                Event::Call {
                    binding,
                    mutating: true,
                    planned: false,
                    error: None,
                    ..
                } => Some(binding.clone()),
                _ => None,
            })
            .collect();
        if &sent != calls {
            failures.push(format!("mutating calls were {sent:?} (expected {calls:?})"));
        }
    }
    for (what, limit) in &s.expect.within {
        let limit = crate::base::clock::parse_duration(limit)
            .map_err(|e| Error::config(path, format!("within.{what}: {e}")))?;
        if let Some(why) = finished_within(what, limit, &steps, &events) {
            failures.push(why);
        }
    }
    check_cloud(&s.expect.cloud, &state, &fleet, &mut failures);
    let texts: Vec<String> = notifications
        .iter()
        .map(|n| n["payload"].to_string())
        .collect();
    if let Some(n) = s.expect.notifications.at_least
        && texts.len() < n
    {
        failures.push(format!(
            "{} notification(s) sent (expected at least {n})",
            texts.len()
        ));
    }
    for needle in &s.expect.notifications.contains {
        if !texts.iter().any(|t| t.contains(needle.as_str())) {
            failures.push(format!("no notification contains {needle:?}"));
        }
    }

    let coverage = Coverage {
        steps_run: events
            .iter()
            .filter_map(|e| match e {
                Event::StepStarted { step, .. } => Some(title_of(*step)),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        retries: events
            .iter()
            .filter(|e| matches!(e, Event::Retry { .. }))
            .count(),
        rollbacks: events
            .iter()
            .filter_map(|e| match e {
                Event::OnFailureStarted { step } => Some(title_of(*step)),
                _ => None,
            })
            .collect(),
        approvals: events
            .iter()
            .filter(|e| matches!(e, Event::Call { binding, .. } if binding == "approve"))
            .count(),
        decisions: events
            .iter()
            .filter(|e| matches!(e, Event::Decision { .. }))
            .count(),
        rollback_steps: steps
            .iter()
            .filter(|s| s.rollback)
            .map(|s| s.title.clone())
            .collect(),
    };
    Ok(Outcome {
        scenario: name,
        runbook: rb.meta.id.clone(),
        version: rb.meta.version.to_string(),
        sha256: rb.sha256.clone(),
        passed: failures.is_empty(),
        failures,
        status: report.status.as_str().into(),
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        wall_ms,
        clock: if simulated { "simulated" } else { "real" },
        transcript: transcript_path,
        coverage,
    })
}

fn instance<'a>(state: &'a Value, id: &str) -> Option<&'a Value> {
    state["instances"]
        .as_array()?
        .iter()
        .find(|i| i["id"] == id)
}

/// Why `what` (a phase or a step title) did not finish within `limit` on the run's clock, if it
/// did not: every step of it must have ended `ok` or `skipped`, the last by `limit`.
fn finished_within(
    what: &str,
    limit: Duration,
    steps: &[StepInfo],
    events: &[Event],
) -> Option<String> {
    let wanted: Vec<&StepInfo> = steps
        .iter()
        .filter(|s| s.phase == what || s.title == what)
        .collect();
    if wanted.is_empty() {
        return Some(format!(
            "[expect.within] names {what:?}, which is neither a phase nor a step of the runbook"
        ));
    }
    let mut last = Duration::ZERO;
    for step in wanted {
        // The last record of the step counts (a retried or resumed step ends once more).
        let end = events.iter().rev().find_map(|e| match e {
            Event::StepFinished {
                step: i,
                status,
                run_clock_ms,
                ..
            } if *i == step.index => Some((*status, *run_clock_ms)),
            _ => None,
        });
        match end {
            None => {
                return Some(format!(
                    "{what:?} did not finish: step {:?} never ran",
                    step.title
                ));
            }
            Some((status, _)) if !matches!(status, StepStatus::Ok | StepStatus::Skipped) => {
                return Some(format!(
                    "{what:?} did not finish: step {:?} ended {}",
                    step.title,
                    status.as_str()
                ));
            }
            Some((_, None)) => {
                return Some(format!(
                    "{what:?}: step {:?} has no run clock in the transcript",
                    step.title
                ));
            }
            Some((_, Some(at))) => last = last.max(Duration::from_millis(at)),
        }
    }
    (last > limit).then(|| {
        format!(
            "{what:?} finished {} into the run (expected within {})",
            humantime::format_duration(last),
            humantime::format_duration(limit)
        )
    })
}

fn check_cloud(c: &CloudExpect, state: &Value, fleet: &Value, failures: &mut Vec<String>) {
    let quarantine: Vec<&str> = state["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter(|g| g["name"] == crate::bindings::ec2::QUARANTINE_GROUP)
                .filter_map(|g| g["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    for id in &c.isolated {
        let ok = instance(state, id).is_some_and(|i| {
            i["network_interfaces"].as_array().is_some_and(|enis| {
                !enis.is_empty()
                    && enis.iter().all(|n| {
                        n["groups"].as_array().is_some_and(|g| {
                            g.len() == 1 && g[0].as_str().is_some_and(|x| quarantine.contains(&x))
                        })
                    })
            })
        });
        if !ok {
            failures.push(format!("{id} is not isolated in the quarantine group"));
        }
    }
    for id in &c.snapshotted {
        let volumes: Vec<Value> = instance(state, id)
            .and_then(|i| i["volumes"].as_array().cloned())
            .unwrap_or_default();
        let snaps = state["snapshots"].as_array().cloned().unwrap_or_default();
        let all = !volumes.is_empty()
            && volumes.iter().all(|v| {
                snaps
                    .iter()
                    .any(|s| s["volume"] == *v && s["state"] == "completed")
            });
        if !all {
            failures.push(format!("not every volume of {id} has a completed snapshot"));
        }
    }
    for (list, want) in [(&c.terminated, "terminated"), (&c.running, "running")] {
        for id in list {
            let got = instance(state, id)
                .and_then(|i| i["state"].as_str())
                .unwrap_or("missing");
            if got != want {
                failures.push(format!("{id} is {got} (expected {want})"));
            }
        }
    }
    for id in &c.replaced {
        let ok = state["instances"].as_array().is_some_and(|all| {
            all.iter()
                .any(|i| i["tags"]["ReplacementFor"] == id.as_str() && i["state"] == "running")
        });
        if !ok {
            failures.push(format!("no running replacement for {id}"));
        }
    }
    for (group, want) in &c.weights {
        let arn = state["target_groups"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["name"] == group.as_str()))
            .and_then(|g| g["arn"].as_str())
            .unwrap_or_default();
        let got: Vec<i64> = state["listeners"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .flat_map(|l| l["forward"].as_array().cloned().unwrap_or_default())
                    .filter(|f| f["target_group"] == arn)
                    .filter_map(|f| f["weight"].as_i64())
                    .collect()
            })
            .unwrap_or_default();
        if got.is_empty() {
            failures.push(format!("no listener forwards to target group {group}"));
        } else if got.iter().any(|w| w != want) {
            failures.push(format!(
                "target group {group} has weight {got:?} (expected {want})"
            ));
        }
    }
    for (group, want) in &c.desired_capacity {
        let got = state["scaling_groups"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["name"] == group.as_str()))
            .and_then(|g| g["desired"].as_i64());
        if got != Some(*want) {
            let got = got.map_or_else(|| "missing".to_string(), |n| n.to_string());
            failures.push(format!(
                "Auto Scaling group {group} has desired capacity {got} (expected {want})"
            ));
        }
    }
    for id in &c.original_groups {
        let original = fleet["instances"]
            .as_array()
            .and_then(|f| f.iter().find(|i| i["id"] == id.as_str()))
            .map(|i| i["security_groups"].clone());
        let now = instance(state, id).map(|i| i["security_groups"].clone());
        if original.is_none() || original != now {
            failures.push(format!(
                "{id} does not have its original security groups back"
            ));
        }
    }
    check_restored(c, state, failures);
}

/// `restored` and `restored_volumes_deleted`: from the sim's mutation log (a deleted volume
/// leaves no other trace) and the volumes still there.
fn check_restored(c: &CloudExpect, state: &Value, failures: &mut Vec<String>) {
    let restored = |snap: &str| {
        state["mutations"].as_array().is_some_and(|m| {
            m.iter()
                .any(|x| x.as_str() == Some(&format!("CreateVolume {snap}")))
        })
    };
    for snap in &c.restored {
        if !restored(snap) {
            failures.push(format!("no volume was restored from {snap}"));
        }
    }
    for snap in &c.restored_volumes_deleted {
        let left: Vec<&str> = state["volumes"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter(|v| v["snapshot"] == snap.as_str())
                    .filter_map(|v| v["id"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        if !restored(snap) {
            failures.push(format!("no volume was restored from {snap}"));
        } else if !left.is_empty() {
            failures.push(format!(
                "volumes restored from {snap} are left behind: {}",
                left.join(", ")
            ));
        }
    }
}

/// Scenario files for the given paths: scenario files, folders of them, or runbook ids (their
/// scenarios in `drills/`).
pub fn scenarios(paths: &[PathBuf], drills_dir: &Path) -> Result<Vec<PathBuf>> {
    let all = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    if paths.is_empty() {
        return Ok(all(drills_dir));
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(all(p));
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            // A runbook id: every scenario that drills it.
            let id = p.to_string_lossy();
            let mut found: Vec<PathBuf> = Vec::new();
            let mut broken: Vec<String> = Vec::new();
            for f in all(drills_dir) {
                match load(&f) {
                    Ok(s) if s.runbook.split('@').next() == Some(&*id) => found.push(f),
                    Ok(_) => {}
                    // A scenario that does not parse but names this runbook is this runbook's
                    // drill: say why it cannot run rather than that there is none.
                    Err(e) if names_runbook(&f, &id) => broken.push(e.to_string()),
                    Err(_) => {}
                }
            }
            if !broken.is_empty() {
                return Err(Error::Usage(broken.join("\n")));
            }
            if found.is_empty() {
                return Err(Error::NotFound(format!(
                    "no drill scenario for {id} in {}",
                    drills_dir.display()
                )));
            }
            out.extend(found);
        }
    }
    Ok(out)
}

/// Whether a scenario file (parsable or not) names runbook `id` in its `runbook` key.
fn names_runbook(file: &Path, id: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    text.lines().any(|l| {
        let l = l.trim();
        l.starts_with("runbook")
            && l.split_once('=').is_some_and(|(_, v)| {
                let v = v.trim().trim_matches('"').trim_matches('\'');
                v.split('@').next() == Some(id)
            })
    })
}

/// Runs scenarios on up to `jobs` threads. Each gets its own engine and simulated cloud.
pub fn run_all(
    files: &[PathBuf],
    dirs: &[PathBuf],
    out: &Path,
    jobs: usize,
) -> Vec<(PathBuf, Result<Outcome>)> {
    let queue = std::sync::Mutex::new(files.to_vec());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().ok().and_then(|mut q| q.pop());
                    let Some(file) = next else { break };
                    let outcome = run_one(&file, dirs, out);
                    if let Ok(mut r) = results.lock() {
                        r.push((file, outcome));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    results
}

/// Writes the records of passing drills: `<results>/<runbook>/<date>-<scenario>.json`.
pub fn write_records(outcomes: &[&Outcome], results: &Path, date: &str) -> Result<()> {
    for o in outcomes.iter().filter(|o| o.passed) {
        let dir = results.join(&o.runbook);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
        let record = Record {
            runbook: o.runbook.clone(),
            version: o.version.clone(),
            sha256: o.sha256.clone(),
            scenario: o.scenario.clone(),
            date: date.into(),
            transcript: o.transcript.display().to_string(),
        };
        let path = dir.join(format!("{date}-{}.json", o.scenario));
        let text =
            serde_json::to_string_pretty(&record).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| Error::io("cannot write", &path, e))?;
    }
    Ok(())
}

/// Every drill record under `results`.
pub fn read_records(results: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(results) else {
        return out;
    };
    for d in dirs.filter_map(|e| e.ok()) {
        let Ok(files) = std::fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.filter_map(|e| e.ok()) {
            if let Some(r) = std::fs::read_to_string(f.path())
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
            {
                out.push(r);
            }
        }
    }
    out
}

/// The JUnit XML of a drill session (one suite per runbook).
pub fn junit(results: &[(PathBuf, Result<Outcome>)]) -> Result<String> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("runbook drills");
    let mut suites: BTreeMap<String, TestSuite> = BTreeMap::new();
    for (file, r) in results {
        let (suite, case) = match r {
            Ok(o) => {
                let mut status = if o.passed {
                    TestCaseStatus::success()
                } else {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(o.failures.join("; "));
                    s
                };
                status.set_type("drill");
                let mut case = TestCase::new(o.scenario.clone(), status);
                case.set_time(Duration::from_millis(o.duration_ms));
                case.set_system_out(format!("transcript: {}", o.transcript.display()));
                (format!("{}@{}", o.runbook, o.version), case)
            }
            Err(e) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message(e.to_string());
                (
                    file.display().to_string(),
                    TestCase::new(file.display().to_string(), s),
                )
            }
        };
        suites
            .entry(suite.clone())
            .or_insert_with(|| TestSuite::new(suite))
            .add_test_case(case);
    }
    report.add_test_suites(suites.into_values());
    report
        .to_string()
        .map_err(|e| Error::Internal(format!("cannot write JUnit XML: {e}")))
}

/// The Markdown report: results, reasons, coverage, and runbooks whose rollback never ran.
pub fn markdown(results: &[(PathBuf, Result<Outcome>)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "# Drill report\n\n| scenario | runbook | result | status | duration | reasons |\n|---|---|---|---|---|---|\n",
    );
    for (file, r) in results {
        match r {
            Ok(o) => {
                let _ = writeln!(
                    out,
                    "| {} | {}@{} | {} | {} | {} ms | {} |",
                    o.scenario,
                    o.runbook,
                    o.version,
                    if o.passed { "pass" } else { "FAIL" },
                    o.status,
                    o.duration_ms,
                    o.failures.join("; ").replace('|', "\\|")
                );
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "| {} | ? | ERROR | - | - | {} |",
                    file.display(),
                    e.to_string().replace('|', "\\|")
                );
            }
        }
    }
    let _ = writeln!(out, "\n## Coverage\n");
    let mut by_runbook: BTreeMap<String, Vec<&Outcome>> = BTreeMap::new();
    for o in results.iter().filter_map(|(_, r)| r.as_ref().ok()) {
        by_runbook.entry(o.runbook.clone()).or_default().push(o);
    }
    for (id, os) in &by_runbook {
        let steps: std::collections::BTreeSet<&String> =
            os.iter().flat_map(|o| &o.coverage.steps_run).collect();
        let rolled: std::collections::BTreeSet<&String> =
            os.iter().flat_map(|o| &o.coverage.rollbacks).collect();
        let declared: std::collections::BTreeSet<&String> =
            os.iter().flat_map(|o| &o.coverage.rollback_steps).collect();
        let retries: usize = os.iter().map(|o| o.coverage.retries).sum();
        let approvals: usize = os
            .iter()
            .map(|o| o.coverage.approvals + o.coverage.decisions)
            .sum();
        let _ = writeln!(
            out,
            "- **{id}**: {} drill(s); steps run: {}; retries: {retries}; rollbacks run: {}; approval/confirmation paths: {approvals}",
            os.len(),
            steps.len(),
            if rolled.is_empty() {
                "none".into()
            } else {
                rolled
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        let never: Vec<&str> = declared.difference(&rolled).map(|s| s.as_str()).collect();
        if !never.is_empty() {
            let _ = writeln!(
                out,
                "  - ⚠ rollback never exercised by any drill: {}",
                never.join(", ")
            );
        }
    }
    out
}

/// One line per outcome for the terminal.
pub fn summary_line(file: &Path, r: &Result<Outcome>) -> String {
    match r {
        Ok(o) if o.passed => format!(
            "pass  {} ({}@{}, {} ms{})",
            o.scenario,
            o.runbook,
            o.version,
            o.duration_ms,
            if o.clock == "simulated" {
                format!(" simulated, {} ms wall", o.wall_ms)
            } else {
                String::new()
            }
        ),
        Ok(o) => format!(
            "FAIL  {} ({}@{}): {}",
            o.scenario,
            o.runbook,
            o.version,
            o.failures.join("; ")
        ),
        Err(e) => format!("ERROR {}: {e}", file.display()),
    }
}

/// Coverage warnings as JSON (for tests and tools).
pub fn coverage_json(results: &[(PathBuf, Result<Outcome>)]) -> Value {
    json!(
        results
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .map(|o| json!({"scenario": o.scenario, "coverage": o.coverage}))
            .collect::<Vec<_>>()
    )
}
