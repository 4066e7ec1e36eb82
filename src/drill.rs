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
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::catalog::{self, Target};
use crate::config::{Backend, Environment};
use crate::console::Console;
use crate::engine::Host;
use crate::error::{Error, Result};
use crate::executor::{Executor, RunOptions, Unattended};
use crate::recorder::Mode;
use crate::transcript;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// `id@version` (the pin is required: a drill tests one version) or a runbook path.
    pub runbook: String,
    #[serde(default)]
    pub description: String,
    /// Give confirmations in advance (a drill has nobody at the keyboard).
    #[serde(default = "yes")]
    pub yes: bool,
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    /// Fleet fixture, relative to the scenario (default: the embedded fleet).
    pub fleet: Option<PathBuf>,
    /// Run against an AWS emulator instead of the sim (moto's server, LocalStack).
    pub emulator: Option<Emulator>,
    /// Merged into the fleet's `[faults]`.
    #[serde(default)]
    pub faults: toml::Table,
    /// Added to (or, by url, replacing) the fleet's endpoints.
    #[serde(default)]
    pub endpoints: Vec<toml::Table>,
    #[serde(default)]
    pub expect: Expect,
}

fn yes() -> bool {
    true
}

/// An emulator endpoint for a drill. Faults and cloud-state expectations need the sim (the
/// emulator cannot be told to fail, and its state is read through the API), so they are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Emulator {
    pub endpoint: String,
    #[serde(default = "emulator_region")]
    pub region: String,
}

fn emulator_region() -> String {
    "us-east-1".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `ok`, `failed`, `aborted` or `timed_out` (default `ok`).
    pub status: Option<String>,
    /// Step title → status.
    #[serde(default)]
    pub steps: BTreeMap<String, String>,
    pub max_duration: Option<String>,
    #[serde(default)]
    pub cloud: CloudExpect,
    #[serde(default)]
    pub notifications: NotifyExpect,
    /// Mutating calls (binding names) that must have been sent, in order.
    pub calls: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudExpect {
    /// Instances whose every network interface carries only the quarantine group.
    #[serde(default)]
    pub isolated: Vec<String>,
    /// Instances with a completed snapshot of every volume.
    #[serde(default)]
    pub snapshotted: Vec<String>,
    #[serde(default)]
    pub terminated: Vec<String>,
    #[serde(default)]
    pub running: Vec<String>,
    /// Instances replaced by a running instance tagged `ReplacementFor`.
    #[serde(default)]
    pub replaced: Vec<String>,
    /// Instances whose groups are what the fleet gave them (a rollback put them back).
    #[serde(default)]
    pub original_groups: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyExpect {
    pub at_least: Option<usize>,
    #[serde(default)]
    pub contains: Vec<String>,
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
    pub duration_ms: u64,
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
        toml::from_str(base).map_err(|e| Error::Usage(format!("fleet: {e}")))?;
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
    toml::to_string(&fleet).map_err(|e| Error::Usage(format!("fleet: {e}")))
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
    toml::from_str(text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
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
        Some(rel) => {
            let p = path.parent().unwrap_or(Path::new(".")).join(rel);
            std::fs::read_to_string(&p).map_err(|e| Error::io("cannot read fleet", &p, e))?
        }
        None => crate::cloud::sim::DEFAULT_FLEET.to_string(),
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
                || s.fleet.is_some()
                || !(c.isolated.is_empty()
                    && c.snapshotted.is_empty()
                    && c.terminated.is_empty()
                    && c.running.is_empty()
                    && c.replaced.is_empty()
                    && c.original_groups.is_empty());
            if sim_only {
                return Err(Error::Usage(format!(
                    "{}: faults, fleets and cloud-state expectations need the sim; an emulator drill checks statuses, calls and notifications",
                    path.display()
                )));
            }
            env.backend = Backend::Aws;
            env.aws.endpoint = Some(e.endpoint.clone());
            env.aws.region = Some(e.region.clone());
            env.fleet_source = e.endpoint.clone();
        }
    }
    let host = Host::with_environment(
        Mode::Run,
        Console::silent(),
        Arc::new(AtomicBool::new(false)),
        env,
    );

    let target = Target::parse(&s.runbook);
    if let Target::Id { pin: None, .. } = target {
        return Err(Error::Usage(format!(
            "{}: pin the runbook's version (`{}@X.Y.Z`)",
            path.display(),
            s.runbook
        )));
    }
    let file = catalog::locate(&target, dirs, catalog::id_of)?;
    let rb = catalog::load_at(&file, &target, host)?;
    let given: Vec<(String, String)> = s
        .params
        .iter()
        .map(|(k, v)| (k.clone(), param_text(v)))
        .collect();
    let params = rb.resolve_params(&given)?;
    let run_id = crate::executor::new_run_id();
    let transcript_path = out.join(format!("{name}-{run_id}.jsonl"));
    let mut driver = Unattended {
        yes: s.yes.then(|| "the drill scenario's yes = true".to_string()),
        operator: "drill".into(),
        approval_timeout: None,
    };
    let started = Instant::now();
    let mut executor = Executor::new(&rb, &mut driver);
    if let Some(lifecycle) = crate::bindings::slack::SlackLifecycle::for_runbook(&rb) {
        executor = executor.observe(lifecycle);
    }
    let report = executor.run(RunOptions {
        resume: None,
        run_id,
        transcript: transcript_path.clone(),
        environment: format!("drill:{name}"),
        account: None,
        operator: "drill".into(),
        params,
        trigger: None,
    })?;
    let duration = started.elapsed();
    let state = rb.host.cloud.sim_state().unwrap_or(Value::Null);
    let notifications = rb.host.notifier.captured();
    let fleet: Value =
        serde_json::to_value(rb.host.cloud.sim().map(|s| s.fleet().clone())).unwrap_or(Value::Null);

    let mut failures = Vec::new();
    let events = match transcript::read_verified(&transcript_path) {
        Ok((events, _)) => events,
        Err(e) => {
            failures.push(format!("the transcript does not verify: {e}"));
            Vec::new()
        }
    };
    let want = s.expect.status.clone().unwrap_or_else(|| "ok".into());
    if report.status.as_str() != want {
        failures.push(format!(
            "run ended {} (expected {want}): {}",
            report.status.as_str(),
            report.reason
        ));
    }
    if let Some(max) = &s.expect.max_duration {
        let max = humantime::parse_duration(max)
            .map_err(|e| Error::Usage(format!("{}: max_duration: {e}", path.display())))?;
        if duration > max {
            failures.push(format!(
                "took {} (maximum {})",
                humantime::format_duration(Duration::from_millis(duration.as_millis() as u64)),
                humantime::format_duration(max)
            ));
        }
    }
    let steps = events
        .first()
        .and_then(|e| e["steps"].as_array().cloned())
        .unwrap_or_default();
    let title_of = |i: &Value| {
        i.as_u64()
            .and_then(|i| steps.get(i as usize))
            .and_then(|s| s["title"].as_str())
            .unwrap_or("?")
            .to_string()
    };
    let mut step_status: BTreeMap<String, String> = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "step_finished") {
        step_status.insert(
            title_of(&e["step"]),
            e["status"].as_str().unwrap_or("?").to_string(),
        );
    }
    for (title, want) in &s.expect.steps {
        let got = step_status
            .get(title)
            .map(String::as_str)
            .unwrap_or("not run");
        if got != want {
            failures.push(format!("step {title:?} ended {got} (expected {want})"));
        }
    }
    if let Some(calls) = &s.expect.calls {
        let sent: Vec<String> = events
            .iter()
            .filter(|e| {
                e["type"] == "call"
                    && e["mutating"] == true
                    && e["planned"] == false
                    && e["error"].is_null()
            })
            .map(|e| e["binding"].as_str().unwrap_or("?").to_string())
            .collect();
        if &sent != calls {
            failures.push(format!("mutating calls were {sent:?} (expected {calls:?})"));
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
            .filter(|e| e["type"] == "step_started")
            .map(|e| title_of(&e["step"]))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        retries: events.iter().filter(|e| e["type"] == "retry").count(),
        rollbacks: events
            .iter()
            .filter(|e| e["type"] == "on_failure_started")
            .map(|e| title_of(&e["step"]))
            .collect(),
        approvals: events
            .iter()
            .filter(|e| e["type"] == "call" && e["binding"] == "approve")
            .count(),
        decisions: events.iter().filter(|e| e["type"] == "decision").count(),
        rollback_steps: steps
            .iter()
            .filter(|s| s["rollback"] == true)
            .filter_map(|s| s["title"].as_str().map(str::to_string))
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
        duration_ms: duration.as_millis() as u64,
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
            let found: Vec<PathBuf> = all(drills_dir)
                .into_iter()
                .filter(|f| load(f).is_ok_and(|s| s.runbook.split('@').next() == Some(&*id)))
                .collect();
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
            serde_json::to_string_pretty(&record).map_err(|e| Error::Usage(e.to_string()))?;
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
        .map_err(|e| Error::Usage(format!("cannot write JUnit XML: {e}")))
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
            "pass  {} ({}@{}, {} ms)",
            o.scenario, o.runbook, o.version, o.duration_ms
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
