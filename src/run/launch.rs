//! One way to start a run, for every entry point.
//!
//! `runbook run`, `plan` and `resume`, a drill scenario and a hook route each describe what they
//! decided in a [`Launch`]; [`Launch::run`] does the rest, the same way for all of them: it builds
//! a complete [`Host`] (nothing about the run is set on it afterwards), loads the runbook, holds
//! an unconfirmed protected environment, verifies the account, resolves the parameters (or reads
//! the resume state back), builds the driver, the executor and its observers, and runs.
//!
//! `Launch` has no `Default`: a new field makes every entry point decide it. Where entry points
//! differ, the difference is a field, and each entry point says why where it fills it in.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::base::console::Console;
use crate::base::error::{Error, Result};
use crate::data::config::{Backend, Environment};
use crate::run::executor::{
    self, Driver, Executor, RunObserver, RunOptions, RunReport, Unattended,
};
use crate::runbook::Runbook;
use crate::runbook::catalog::{self, Target};
use crate::sandbox::engine::{Host, HostParts};
use crate::sandbox::recorder::{Limits, Mode};
use crate::services::cloud::CloudAccess;
use crate::services::state::archive::RunEntry;
use crate::services::state::upload::Archived;

/// Where the runbook comes from.
pub(crate) enum Source {
    /// A file path or `ID[@VERSION]`, searched in these folders (`run`, `plan`, `resume`).
    Search { dirs: Vec<PathBuf>, target: String },
    /// A file located before the launch, loaded and held to `target`'s version pin: a drill
    /// locates its runbook to refuse an unpinned id first, a hook route located its at start-up.
    Located { file: PathBuf, target: Target },
}

/// How writes to a protected environment are confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Protection {
    /// Unattended on the command line: `--confirm-env NAME` (None when not given) must name the
    /// environment, checked before any step; a run without it is refused, a plan needs none.
    ConfirmEnv(Option<String>),
    /// A person at the terminal types the environment's name at the first write (the interactive
    /// driver asks then): nothing is confirmed in advance.
    AtTheTerminal,
    /// Decided by configuration: a hook route's `allow_protected` (admission has already refused
    /// protected environments on routes without it).
    Configured(bool),
}

impl Protection {
    /// Whether writes to `env` are confirmed for the whole run, or why the run is refused.
    fn decide(&self, env: &Environment, mode: Mode) -> Result<bool> {
        if !env.protected {
            return Ok(false);
        }
        match (self, mode) {
            (Protection::AtTheTerminal, _) => Ok(false),
            (Protection::Configured(allowed), _) => Ok(*allowed),
            (Protection::ConfirmEnv(Some(given)), _) if *given == env.name => Ok(true),
            (Protection::ConfirmEnv(Some(given)), _) => Err(Error::Usage(format!(
                "--confirm-env {given} does not name the environment of this run ({})",
                env.name
            ))),
            // A plan sends nothing, so it needs no confirmation.
            (Protection::ConfirmEnv(None), Mode::Plan) => Ok(false),
            (Protection::ConfirmEnv(None), Mode::Run) => Err(Error::Usage(format!(
                "environment {0} is protected: mutating calls need confirmation; pass --confirm-env {0} (or plan first with `runbook plan`)",
                env.name
            ))),
        }
    }
}

/// Who decides each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Driving {
    /// Nobody watches: a step that asks for confirmation runs only when `yes` says who gave it
    /// in advance, or waits `approval_timeout` for `runbook approve`.
    Unattended {
        yes: Option<String>,
        approval_timeout: Option<Duration>,
    },
    /// A person at this terminal decides every step, and the script's approvals ask there too.
    Interactive,
    /// `runbook replay`: the recorded run's decisions, step by step.
    Replay(crate::run::replay::Decisions),
}

/// Everything an entry point decides about a run.
pub(crate) struct Launch {
    pub mode: Mode,
    /// The environment and the way to its cloud (the hook server hands a handle on its one
    /// simulated cloud, already connected).
    pub cloud: CloudAccess,
    pub source: Source,
    /// `--param` values as given (for a resume: secrets given again).
    pub params: Vec<(String, String)>,
    pub limits: Limits,
    pub protection: Protection,
    pub driving: Driving,
    /// Who the run is recorded as started by (and unattended decisions as made by).
    pub operator: String,
    /// Post the run's lifecycle to the Slack channel its metadata names (`notify: #{ slack }`).
    pub slack_lifecycle: bool,
    /// More observers of the run, after the lifecycle one.
    pub observers: Vec<Box<dyn RunObserver>>,
    pub run_id: String,
    pub transcript: PathBuf,
    /// Waits advance the clock at once instead of sleeping (see [`crate::base::clock`]).
    pub simulated_clock: bool,
    /// What a person sees (silent for drills and hook runs).
    pub console: Console,
    /// The run's abort flag, set from another thread.
    pub abort: Arc<AtomicBool>,
    /// Ctrl-C stops the step, a second press the run. Only one handler exists per process.
    pub ctrl_c: bool,
    /// Ask the cloud which account the credentials resolve to, and refuse a run whose
    /// environment expects another.
    pub verify_account: bool,
    /// Continue an interrupted run, appending to `transcript`.
    pub resume: Option<Resuming>,
    /// What started the run when it was not a person (the alert, for hook runs).
    pub trigger: Option<Value>,
    /// Take a lease on the run's targets before its first step, so two runs never act on one
    /// target at once (None: plans and drills, which act on nothing real).
    pub lock: Option<TargetLock>,
}

/// Where and how a run locks its targets.
pub(crate) struct TargetLock {
    pub store: crate::services::state::Store,
    /// How long to wait for a target another run holds (None: refuse at once, naming it).
    pub wait: Option<Duration>,
    /// The targets, when the entry point knows them (a hook route's `target`); otherwise the
    /// values of the runbook's `target: true` parameters.
    pub targets: Option<Vec<String>>,
    /// Archive each write's intent before the write is sent (the aws backend); when it cannot
    /// be, the run's owner item in the table is marked so that no replica resumes it blindly,
    /// and only when that fails too is the write held back. For runs another process may take
    /// over (`serve`'s), which must find every write that may have happened in the archive.
    pub archive_intents: bool,
}

/// `runbook resume`: continue the run recorded in the launch's transcript.
pub(crate) struct Resuming {
    /// Accept that the runbook changed since the run started (recorded).
    pub allow_changed: bool,
}

/// A launch with its runbook loaded on a complete host, checked, and its parameters (or resume
/// state) resolved: what is left is to run the steps.
pub(crate) struct Loaded {
    pub rb: Runbook,
    /// The account the environment's credentials resolved to, when it was asked and answered.
    pub account: Option<String>,
    params: rhai::Map,
    resume: Option<executor::Resume>,
    mode: Mode,
    driving: Driving,
    operator: String,
    slack_lifecycle: bool,
    observers: Vec<Box<dyn RunObserver>>,
    run_id: String,
    transcript: PathBuf,
    trigger: Option<Value>,
    lock: Option<TargetLock>,
}

/// A run that happened.
pub(crate) struct Launched {
    pub rb: Runbook,
    pub report: RunReport,
    /// Wall-clock time of the steps (from the executor's start to its end), whatever the clock.
    pub wall: Duration,
    /// How the transcript's upload ended (the aws backend; None: not archived, as with `local`).
    pub archived: Option<Archived>,
}

impl Launch {
    /// Loads the runbook, runs every step, and hands back the runbook (its host holds the run's
    /// state: the simulated cloud, captured notifications, guardrails) and the report.
    pub(crate) fn run(self) -> Result<Launched> {
        self.load()?.run()
    }

    /// Builds the complete host, loads the runbook on it, and checks what must hold before the
    /// first step: the protected environment's confirmation, the account, the parameters.
    pub(crate) fn load(self) -> Result<Loaded> {
        let Launch {
            mode,
            cloud,
            source,
            params,
            limits,
            protection,
            driving,
            operator,
            slack_lifecycle,
            observers,
            run_id,
            transcript,
            simulated_clock,
            console,
            abort,
            ctrl_c,
            verify_account,
            resume,
            trigger,
            lock,
        } = self;
        // Decided before the host exists, which holds the answer; a refusal is reported once the
        // runbook loaded, so a broken runbook is still the first thing a person hears about.
        let confirmed = protection.decide(cloud.environment(), mode);
        let interactive = driving == Driving::Interactive;
        // A plan's log lines describe would-be effects; the overall step bar would redraw over
        // an interactive prompt.
        console.set_planning(mode == Mode::Plan);
        if interactive {
            console.set_overall(false);
        }
        let host = Host::build(HostParts {
            mode,
            console,
            abort,
            cloud,
            simulated_clock,
            limits,
            protected_confirmed: confirmed.as_ref().is_ok_and(|yes| *yes),
            prompt: interactive.then(terminal_prompt),
            // Approvals go where the run's locks are kept: the table of an `aws` backend.
            state: lock.as_ref().map(|l| l.store.clone()),
        });
        let rb = match &source {
            Source::Search { dirs, target } => catalog::load(dirs, target, host)?,
            Source::Located { file, target } => catalog::load_at(file, target, host)?,
        };
        if ctrl_c {
            on_ctrl_c(&rb.host);
        }
        confirmed?;
        let account = if verify_account {
            rb.host
                .cloud
                .verify_account(&rb.host.io, &rb.host.interrupt)?
        } else {
            None
        };
        let console = &rb.host.console;
        for w in &rb.warnings {
            console.line(&format!(
                "warning: {}",
                w.render(console.color()).trim_end()
            ));
        }
        let (params, resume) = match &resume {
            Some(r) => {
                let (resume, ctx) =
                    crate::run::resume::prepare(&rb, &transcript, &params, r.allow_changed)?;
                console.line(&resuming(&rb, &run_id, &resume));
                (ctx, Some(resume))
            }
            None => (rb.resolve_params(&params)?, None),
        };
        Ok(Loaded {
            rb,
            account,
            params,
            resume,
            mode,
            driving,
            operator,
            slack_lifecycle,
            observers,
            run_id,
            transcript,
            trigger,
            lock,
        })
    }
}

impl Loaded {
    /// Announces the run, builds its driver and executor with their observers, and runs it.
    pub(crate) fn run(self) -> Result<Launched> {
        let Loaded {
            rb,
            account,
            params,
            resume,
            mode,
            driving,
            operator,
            slack_lifecycle,
            observers,
            run_id,
            transcript,
            trigger,
            lock,
        } = self;
        let env_name = rb.host.cloud.environment().name.clone();
        let targets = match &lock {
            Some(TargetLock {
                targets: Some(t), ..
            }) => t.clone(),
            Some(_) => rb.targets(&params),
            None => Vec::new(),
        };
        // Held until the run ends (dropped with this frame); refused or waited for here, before
        // the banner, so a refused run says nothing about running.
        let _locks = match &lock {
            Some(l) => Some(l.store.lock_run(
                mode == Mode::Run,
                &env_name,
                &targets,
                &operator,
                &run_id,
                l.wait,
            )?),
            None => None,
        };
        // A run that can write goes off the box as it goes (the aws backend): its transcript
        // to the bucket at every step boundary, its index entry and head to the table.
        let archiver = match &lock {
            Some(l) if mode == Mode::Run => l.store.archiver(
                RunEntry {
                    run_id: run_id.clone(),
                    runbook: format!("{}@{}", rb.meta.id, rb.meta.version),
                    environment: env_name.clone(),
                    targets: targets.clone(),
                    operator: operator.clone(),
                    host: gethostname::gethostname().to_string_lossy().into_owned(),
                    started: crate::base::clock::now_utc(),
                    transcript: transcript.display().to_string(),
                    ..RunEntry::default()
                },
                &transcript,
            ),
            _ => None,
        };
        let console = &rb.host.console;
        console.line(&format!(
            "{} {}@{} · {} · env {env_name}: {} · run {run_id}",
            if mode == Mode::Plan {
                "planning"
            } else {
                "running"
            },
            rb.meta.id,
            rb.meta.version,
            rb.meta.title,
            acts_on(&rb.host, account.as_deref()),
        ));
        for note in overridden_variables(&rb.host) {
            console.line(&format!("note: {note}"));
        }

        let mut unattended;
        let mut on_call;
        let mut replaying;
        let driver: &mut dyn Driver = match driving {
            Driving::Replay(decisions) => {
                replaying = crate::run::replay::ReplayDriver(decisions);
                &mut replaying
            }
            Driving::Interactive => {
                on_call = crate::run::interactive::Interactive::new(operator.clone())
                    .map_err(Error::Environment)?;
                &mut on_call
            }
            Driving::Unattended {
                yes,
                approval_timeout,
            } => {
                unattended = Unattended {
                    yes,
                    operator: operator.clone(),
                    approval_timeout,
                };
                &mut unattended
            }
        };
        let wall = Instant::now();
        let mut executor = Executor::new(&rb, driver);
        if slack_lifecycle
            && let Some(lifecycle) = crate::run::lifecycle::SlackLifecycle::for_runbook(&rb)
        {
            executor = executor.observe(lifecycle);
        }
        for observer in observers {
            executor = executor.observe(observer);
        }
        if let Some(Ok(a)) = &archiver {
            executor = executor.observe(Box::new(ArchiveAtBoundaries(a.nudge())));
            // A write's intent is archived before the write is sent: a replica that takes the
            // run over (its owner died) then knows it may have happened, and asks a person.
            if let Some(store) = lock
                .as_ref()
                .filter(|l| l.archive_intents)
                .and_then(|l| l.store.aws())
            {
                let (nudge, owned) = (a.nudge(), run_id.clone());
                rb.host.recorder.set_before_send(Some(Box::new(move || {
                    // The bucket failing must not stop a remediation: the write goes out once
                    // the table says the archive may miss it (the taker then asks a person);
                    // only when neither can say so is it held back.
                    nudge.flush(INTENT_ARCHIVE_WAIT).or_else(|archive| {
                        store.mark_unarchived(&owned).map_err(|table| {
                            format!("{archive}; nor could the table record that: {table}")
                        })
                    })
                })));
            }
        }
        let archived_run = run_id.clone();
        let result = executor.run(RunOptions {
            resume,
            run_id,
            transcript,
            environment: env_name,
            account,
            operator,
            params,
            trigger,
        });
        let wall = wall.elapsed();
        // Its observers hold the runbook's borrow until they go.
        drop(executor);
        rb.host.recorder.set_before_send(None);
        // Also when the run could not record its end: what it wrote is archived all the same.
        let archived = archiver.and_then(|a| match a {
            Ok(a) => a.finish(ARCHIVE_WAIT),
            Err(e) => {
                tracing::error!("run {archived_run}: the transcript cannot be archived: {e}");
                Some(Archived::Pending {
                    reason: e.to_string(),
                    marker: PathBuf::new(),
                })
            }
        });
        let report = result?;
        Ok(Launched {
            rb,
            report,
            wall,
            archived,
        })
    }
}

/// How long a write waits for its intent to be archived before it is not sent.
const INTENT_ARCHIVE_WAIT: Duration = Duration::from_secs(30);

/// How long a run's end waits for its transcript's last upload before leaving it pending.
const ARCHIVE_WAIT: Duration = Duration::from_secs(60);

/// Nudges the archiver when the run starts and at every step boundary (the upload itself runs
/// on the archiver's thread: a step never waits for it).
struct ArchiveAtBoundaries(crate::services::state::upload::Nudge);

impl RunObserver for ArchiveAtBoundaries {
    fn run_started(&mut self, _headline: String) {
        self.0.boundary();
    }
    fn step_finished(
        &mut self,
        _step: &crate::sandbox::declare::Step,
        _status: crate::data::transcript::StepStatus,
        _error: Option<&crate::sandbox::engine::ErrorInfo>,
    ) {
        self.0.boundary();
    }
    fn run_finished(&mut self, _status: crate::data::transcript::RunStatus, _summary: String) {}
}

/// Ctrl-C asks the running step to stop at its next operation or wait; the executor then asks
/// what to do (interactive) or records the abort, and finishes the transcript properly. A second
/// Ctrl-C stops the run.
pub(crate) fn on_ctrl_c(host: &Host) {
    let flag = host.interrupt.abort_flag().clone();
    let presses = host.interrupt.presses_counter().clone();
    let _ = ctrlc::set_handler(move || {
        presses.fetch_add(1, Ordering::SeqCst);
        flag.store(true, Ordering::SeqCst);
    });
}

/// Approvals asked by the script (`approve(...)`) in an interactive run are answered at this
/// terminal.
fn terminal_prompt() -> Box<crate::services::approvals::Ask> {
    Box::new(|question: &str| {
        let mut editor = rustyline::DefaultEditor::new().ok()?;
        loop {
            let line = editor.readline(question).ok()?;
            match line.trim() {
                // Enter alone decides nothing, and `h` answers like every other prompt.
                "" => {}
                "h" | "help" | "?" => eprintln!(
                    "  type yes to approve (recorded with your name); anything else refuses;\n  Ctrl-C or Ctrl-D refuses too"
                ),
                answer => return Some(answer == "yes"),
            }
        }
    })
}

/// Where a resumed run picks up, for the person who resumed it.
fn resuming(rb: &Runbook, run_id: &str, resume: &executor::Resume) -> String {
    let total = rb.steps.len();
    match rb.steps.get(resume.start_step) {
        Some(step) => format!(
            "resuming run {run_id} at step {}/{total} {:?} ({} step(s) before it finished{})",
            step.index + 1,
            step.title,
            resume.start_step,
            if resume.replay.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} write(s) it made before the interruption are answered from the transcript, not sent again",
                    resume.replay.len()
                )
            }
        ),
        None => format!(
            "resuming run {run_id}: all {total} step(s) finished but the run's end was never recorded; recording it"
        ),
    }
}

/// Where a run acts, for its banner: `sim`, or the AWS account, region and endpoint as resolved.
fn acts_on(host: &Host, account: Option<&str>) -> String {
    if host.cloud.environment().backend == Backend::Sim {
        return "sim".into();
    }
    let (region, endpoint) = host.cloud.region_endpoint();
    format!(
        "aws account {}, region {}, endpoint {}",
        account.unwrap_or("unknown (STS did not answer)"),
        region.as_deref().unwrap_or("none"),
        endpoint.as_deref().unwrap_or("AWS default")
    )
}

/// runbook.toml's `endpoint` wins over `AWS_ENDPOINT_URL`: when both are set and differ, say
/// which one the run uses (a person who exported a variable expects it to count). The region is
/// not here: `AWS_REGION` wins over runbook.toml, as in the AWS CLI (`config::AwsSettings`).
fn overridden_variables(host: &Host) -> Vec<String> {
    let env = host.cloud.environment();
    if env.backend != Backend::Aws {
        return Vec::new();
    }
    let pairs = [("endpoint", &env.aws.endpoint, "AWS_ENDPOINT_URL")];
    pairs
        .into_iter()
        .filter_map(|(what, configured, var)| {
            let configured = configured.as_deref()?;
            let ambient = std::env::var(var).ok().filter(|v| !v.is_empty())?;
            (ambient != configured).then(|| {
                format!(
                    "environment {}'s {what} {configured} is used, not {var}={ambient} (runbook.toml wins)",
                    env.name
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::data::transcript::{RunStatus, StepStatus};
    use crate::sandbox::declare::Step;
    use crate::sandbox::engine::ErrorInfo;

    const RUNBOOK: &str = "runbook(#{ id: \"t\", version: \"1.0.0\", title: \"Test t\", severity: \"P3\" });\n\
        containment(\"Note\", |ctx| { log(\"noted\"); });\n";

    /// A runbook file `t.rhai` in a fresh folder.
    fn folder(source: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.rhai"), source).unwrap();
        dir
    }

    fn environment(protected: bool) -> Environment {
        let mut env = Environment::builtin_sim();
        env.name = "test-env".into();
        env.protected = protected;
        env
    }

    /// A launch of `t.rhai` in `dir` with every choice the quiet way: what each test changes
    /// is the choice it is about.
    fn launch(dir: &std::path::Path, mode: Mode, env: Environment) -> Launch {
        Launch {
            mode,
            cloud: CloudAccess::new(env),
            source: Source::Search {
                dirs: vec![dir.to_path_buf()],
                target: "t".into(),
            },
            params: Vec::new(),
            limits: Limits::default(),
            protection: Protection::ConfirmEnv(None),
            driving: Driving::Unattended {
                yes: None,
                approval_timeout: None,
            },
            operator: "tester".into(),
            slack_lifecycle: true,
            observers: Vec::new(),
            run_id: "run-1".into(),
            transcript: dir.join("run-1.jsonl"),
            simulated_clock: mode == Mode::Plan,
            console: Console::silent(),
            abort: Arc::new(AtomicBool::new(false)),
            ctrl_c: false,
            verify_account: false,
            resume: None,
            trigger: None,
            lock: None,
        }
    }

    fn limits() -> Limits {
        Limits {
            max_resources: Some(3),
            kill_switch: Some(PathBuf::from("/tmp/stop-everything")),
            kill_parameter: Some("/runbook/kill".into()),
        }
    }

    /// What a host was configured with, in one comparable value.
    fn configuration(host: &Host) -> Value {
        serde_json::json!({
            "mode": host.recorder.mode().as_str(),
            "clock": host.interrupt.clock().kind(),
            "guardrails": host.guardrails.recorded(),
            "protected_confirmed": host.protected_confirmed.get(),
            "prompt": host.prompt.borrow().is_some(),
            "environment": host.cloud.environment().name,
        })
    }

    #[test]
    fn a_launch_builds_its_host_with_the_mode_clock_guardrails_and_confirmation_it_decided() {
        let dir = folder(RUNBOOK);
        let mut l = launch(dir.path(), Mode::Run, environment(true));
        l.limits = limits();
        l.simulated_clock = true;
        l.protection = Protection::ConfirmEnv(Some("test-env".into()));
        let loaded = l.load().unwrap();
        assert_eq!(
            configuration(&loaded.rb.host),
            serde_json::json!({
                "mode": "run",
                "clock": "simulated",
                "guardrails": {
                    "max_resources": 3,
                    "kill_switch": "/tmp/stop-everything",
                    "kill_switch_parameter": "/runbook/kill",
                },
                "protected_confirmed": true,
                "prompt": false,
                "environment": "test-env",
            })
        );
    }

    #[test]
    fn the_same_options_give_the_same_host_whether_the_runbook_is_searched_or_located() {
        let dir = folder(RUNBOOK);
        let host_of = |source: Source| {
            let mut l = launch(dir.path(), Mode::Plan, environment(false));
            l.limits = limits();
            l.source = source;
            configuration(&l.load().unwrap().rb.host)
        };
        let searched = host_of(Source::Search {
            dirs: vec![dir.path().to_path_buf()],
            target: "t@1.0.0".into(),
        });
        let located = host_of(Source::Located {
            file: dir.path().join("t.rhai"),
            target: Target::parse("t@1.0.0"),
        });
        assert_eq!(searched, located);
        assert_eq!(searched["clock"], "simulated");
        assert_eq!(searched["guardrails"]["max_resources"], 3);
    }

    #[test]
    fn a_protected_environment_without_confirm_env_refuses_a_run_but_not_a_plan() {
        let dir = folder(RUNBOOK);
        let refused = launch(dir.path(), Mode::Run, environment(true)).load();
        assert!(
            matches!(&refused, Err(Error::Usage(m)) if m.contains("pass --confirm-env test-env")),
            "{:?}",
            refused.err()
        );
        let mut wrong = launch(dir.path(), Mode::Run, environment(true));
        wrong.protection = Protection::ConfirmEnv(Some("prod".into()));
        assert!(
            matches!(wrong.load(), Err(Error::Usage(m)) if m.contains("--confirm-env prod does not name"))
        );
        let plan = launch(dir.path(), Mode::Plan, environment(true))
            .load()
            .unwrap();
        assert!(!plan.rb.host.protected_confirmed.get());
    }

    #[test]
    fn a_broken_runbook_is_reported_before_an_unconfirmed_protected_environment() {
        let dir = folder("runbook(#{ id: \"t\" ");
        let mut l = launch(dir.path(), Mode::Run, environment(true));
        l.source = Source::Search {
            dirs: Vec::new(),
            target: dir.path().join("t.rhai").display().to_string(),
        };
        let result = l.load();
        assert!(
            matches!(result, Err(Error::Script(_))),
            "{:?}",
            result.err()
        );
    }

    #[test]
    fn a_hook_routes_confirmation_holds_only_in_a_protected_environment() {
        let dir = folder(RUNBOOK);
        for (protected, allowed, confirmed) in [
            (true, true, true),
            (true, false, false),
            (false, true, false),
        ] {
            let mut l = launch(dir.path(), Mode::Run, environment(protected));
            l.protection = Protection::Configured(allowed);
            let loaded = l.load().unwrap();
            assert_eq!(loaded.rb.host.protected_confirmed.get(), confirmed);
        }
    }

    #[test]
    fn an_interactive_launch_asks_at_the_terminal_for_approvals_and_the_protected_environment() {
        let dir = folder(RUNBOOK);
        let mut l = launch(dir.path(), Mode::Run, environment(true));
        l.driving = Driving::Interactive;
        l.protection = Protection::AtTheTerminal;
        let loaded = l.load().unwrap();
        assert!(loaded.rb.host.prompt.borrow().is_some());
        assert!(!loaded.rb.host.protected_confirmed.get());
    }

    /// Records what a run told it.
    struct Watcher(Rc<RefCell<Vec<String>>>);

    impl RunObserver for Watcher {
        fn run_started(&mut self, _headline: String) {
            self.0.borrow_mut().push("started".into());
        }
        fn step_finished(&mut self, step: &Step, status: StepStatus, _error: Option<&ErrorInfo>) {
            self.0
                .borrow_mut()
                .push(format!("{} {}", step.title, status.as_str()));
        }
        fn run_finished(&mut self, status: RunStatus, _summary: String) {
            self.0
                .borrow_mut()
                .push(format!("finished {}", status.as_str()));
        }
    }

    #[test]
    fn runs_of_one_runbook_share_its_compiled_script_but_not_its_state() {
        // A step's closure captures a top-level array: were a run's evaluation shared with the
        // next (not only the compiled text), the second run would find the first one's entry.
        let dir = folder(
            "let seen = [];\n\
             runbook(#{ id: \"t\", version: \"1.0.0\", title: \"Test t\", severity: \"P3\" });\n\
             containment(\"Count\", |ctx| { seen.push(1); if seen.len() != 1 { throw `seen ${seen.len()} times`; } });\n",
        );
        let mut libs = Vec::new();
        for n in 0..2 {
            let mut l = launch(dir.path(), Mode::Run, environment(false));
            l.transcript = dir.path().join(format!("run-{n}.jsonl"));
            let done = l.run().unwrap();
            assert_eq!(done.report.status, RunStatus::Ok, "{}", done.report.reason);
            libs.push(done.rb.ast.shared_lib().clone());
        }
        assert!(rhai::Shared::ptr_eq(&libs[0], &libs[1]));
    }

    #[test]
    fn a_launch_runs_with_its_observers_operator_trigger_and_transcript() {
        let dir = folder(RUNBOOK);
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut l = launch(dir.path(), Mode::Run, environment(false));
        l.observers = vec![Box::new(Watcher(seen.clone()))];
        l.trigger = Some(serde_json::json!({ "alert": "CpuHigh" }));
        let done = l.run().unwrap();
        assert_eq!(done.report.status, RunStatus::Ok, "{}", done.report.reason);
        assert_eq!(
            *seen.borrow(),
            ["started", "Note ok", "finished ok"].map(String::from)
        );
        let (events, _) =
            crate::data::transcript::read_verified(&dir.path().join("run-1.jsonl")).unwrap();
        let first = &events[0];
        assert_eq!(first["run_id"], "run-1");
        assert_eq!(first["operator"], "tester");
        assert_eq!(first["environment"], "test-env");
        assert_eq!(first["trigger"]["alert"], "CpuHigh");
        assert_eq!(first["clock"], "real");
    }
}
