//! `runbook run`, `plan` and `resume`: each turns its flags into a [`Launch`] (the one way a run
//! starts, shared with drills and hook runs), then reports how the run went.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::Global;
use super::args::{DriveArgs, LaunchArgs, Output, PlanArgs, ResumeArgs, RunArgs};
use crate::base::console::Console;
use crate::base::error::{Error, Result};
use crate::data::transcript;
use crate::run::executor;
use crate::run::launch::{Driving, Launch, Launched, Protection, Resuming, Source, TargetLock};
use crate::sandbox::engine::Host;
use crate::sandbox::recorder::{Limits, Mode};
use crate::services::cloud::CloudAccess;
use crate::services::state::Store;
use crate::services::state::upload::Archived;

pub(super) fn run(g: &Global, args: RunArgs) -> Result<()> {
    let mode = if args.plan { Mode::Plan } else { Mode::Run };
    let driving = args.drive.driving(mode, args.approval_timeout);
    let limits = args.common.launch.limits();
    command_line(g, "run", mode, args.common, driving, limits)
}

pub(super) fn plan(g: &Global, args: PlanArgs) -> Result<()> {
    let driving = Driving::Unattended {
        yes: None,
        approval_timeout: None,
    };
    let limits = args.launch.limits();
    command_line(g, "plan", Mode::Plan, args, driving, limits)
}

pub(super) fn resume(g: &Global, args: ResumeArgs) -> Result<()> {
    let ResumeArgs {
        transcript,
        allow_changed,
        drive,
        launch,
        output,
    } = args;
    let (events, _) = transcript::read_verified(&transcript)?;
    let first = &events[0];
    // The runbook where the run found it, when it is still there; else as it was named.
    let target = first["runbook"]["path"]
        .as_str()
        .filter(|p| Path::new(p).is_file())
        .or_else(|| first["runbook"]["file"].as_str())
        .unwrap_or_default()
        .to_string();
    let args = PlanArgs {
        target,
        transcript: Some(transcript.clone()),
        env: first["environment"].as_str().map(str::to_string),
        launch,
        output,
    };
    let limits = crate::run::resume::limits(first, args.launch.limits());
    let run_id = first["run_id"].as_str().unwrap_or_default().to_string();
    let driving = drive.driving(Mode::Run, None);
    let resuming = Resuming { allow_changed };
    let launch = launch_from(g, Mode::Run, &args, driving, limits, run_id, Some(resuming))?;
    finish(launch.run()?, "resume", Mode::Run, &args)
}

impl LaunchArgs {
    /// The guardrail limits given on the command line.
    fn limits(&self) -> Limits {
        Limits {
            max_resources: self.max_resources,
            kill_switch: self.kill_switch.clone(),
            // A fleet-wide kill parameter comes from hooks.toml; runs from the command line
            // have none of their own.
            kill_parameter: None,
        }
    }
}

impl DriveArgs {
    /// Interactive when asked, or by default on a terminal unless `--yes` gave confirmation in
    /// advance (a plan asks nothing: it sends nothing).
    fn driving(&self, mode: Mode, approval_timeout: Option<std::time::Duration>) -> Driving {
        let interactive = self.interactive
            || (!self.no_interactive
                && !self.yes
                && mode == Mode::Run
                && std::io::stdin().is_terminal());
        if interactive {
            Driving::Interactive
        } else {
            Driving::Unattended {
                yes: self.yes.then(|| "--yes".to_string()),
                approval_timeout,
            }
        }
    }
}

/// `run` and `plan`: a new run.
fn command_line(
    g: &Global,
    command: &str,
    mode: Mode,
    args: PlanArgs,
    driving: Driving,
    limits: Limits,
) -> Result<()> {
    let run_id = crate::base::identity::new_run_id();
    let launch = launch_from(g, mode, &args, driving, limits, run_id, None)?;
    finish(launch.run()?, command, mode, &args)
}

/// What the command line decides for a run: the environment from runbook.toml, the transcript
/// (by default a new one named after the run), and how writes are confirmed.
fn launch_from(
    g: &Global,
    mode: Mode,
    args: &PlanArgs,
    driving: Driving,
    limits: Limits,
    run_id: String,
    resume: Option<Resuming>,
) -> Result<Launch> {
    let config = g.load_config()?;
    let env = config.select(args.env.as_deref())?;
    let transcript = args
        .transcript
        .clone()
        .unwrap_or_else(|| executor::default_transcript_path(&run_id));
    let protection = match driving {
        // The interactive driver asks for the environment's name at the first write.
        Driving::Interactive => Protection::AtTheTerminal,
        Driving::Unattended { .. } | Driving::Replay(_) => {
            Protection::ConfirmEnv(args.launch.confirm_env.clone())
        }
    };
    Ok(Launch {
        mode,
        cloud: CloudAccess::new(env),
        source: Source::Search {
            dirs: g.dirs.clone(),
            target: args.target.clone(),
        },
        params: args.launch.params.clone(),
        limits,
        protection,
        driving,
        operator: crate::base::identity::operator(),
        slack_lifecycle: true,
        observers: Vec::new(),
        run_id,
        transcript,
        // A plan never sleeps: its waits advance a simulated clock. A run acts in real time.
        simulated_clock: mode == Mode::Plan,
        console: Console::detect(g.quiet),
        abort: Arc::new(AtomicBool::new(false)),
        // The operator's way to stop a step (and, pressed twice, the run).
        ctrl_c: true,
        // Credentials for another account than the environment names are refused before any
        // step; the banner says which account the run acts on.
        verify_account: true,
        resume,
        trigger: None,
        // A run takes a lease on the targets it acts on (its `target: true` parameters); a plan
        // acts on nothing.
        lock: (mode == Mode::Run)
            .then(|| -> Result<TargetLock> {
                Ok(TargetLock {
                    store: Store::open(config.state())?,
                    wait: args.launch.wait_lock,
                    targets: None,
                    // Nobody takes a CLI run over: a failed upload is reported, not a stop.
                    archive_intents: false,
                })
            })
            .transpose()?,
    })
}

/// The run's summary on stderr (a plan's list of would-be calls on stdout, or with `--output
/// json` the run's document), the simulated cloud's state when asked, and the exit status the
/// run ended with.
fn finish(done: Launched, command: &str, mode: Mode, args: &PlanArgs) -> Result<()> {
    let sim_state_out = args.launch.sim_state_out.as_deref();
    let Launched {
        rb,
        report,
        archived,
        ..
    } = done;
    if let Some(path) = sim_state_out {
        write_sim_state(&rb.host, path)?;
    }
    let console = &rb.host.console;
    let c = &report.counts;
    let undelivered = executor::undelivered_note(report.undelivered_notifications);
    console.line(&format!(
        "{} {}: {} ok, {} failed, {} skipped, {} timed out, {} aborted, {} not run{undelivered} · {:.1?}",
        // A plan ran nothing: it never says "run ok".
        if mode == Mode::Plan { "plan" } else { "run" },
        report.status.as_str(),
        c.ok,
        c.failed,
        c.skipped,
        c.timed_out,
        c.aborted,
        c.not_run,
        report.duration
    ));
    console.line(&format!("transcript: {}", report.transcript.display()));
    match &archived {
        Some(done @ Archived::Done { .. }) => console.line(&done.describe()),
        // Said even with --quiet: an audit trail that did not leave the box must be noticed.
        Some(pending @ Archived::Pending { .. }) => console.force_line(&pending.describe()),
        None => {}
    }
    if args.output == Output::Json {
        let mut doc = match transcript::read_verified(&report.transcript) {
            Ok((events, _)) => super::json::run_summary(&events),
            // The run's own word when its transcript cannot be read back (a disk that filled):
            // the status still holds, the steps are the transcript's to tell.
            Err(e) => serde_json::json!({
                "run_id": report.run_id,
                "status": report.status.as_str(),
                "reason": report.reason,
                "steps": [],
                "writes": [],
                "transcript_error": e.to_string(),
            }),
        };
        doc["transcript"] = serde_json::json!(report.transcript.display().to_string());
        doc["notes"] = serde_json::json!(report.notes.display().to_string());
        doc["undelivered_notifications"] = serde_json::json!(report.undelivered_notifications);
        doc["archived"] = match &archived {
            Some(Archived::Done { url, .. }) => serde_json::json!(url),
            Some(Archived::Pending { .. }) => serde_json::json!("pending"),
            None => serde_json::Value::Null,
        };
        let result = report.into_result().map(|_| ());
        return super::json::finish(command, doc, result);
    }
    if mode == Mode::Plan {
        super::out(&executor::plan_summary(&report));
    }
    report.into_result().map(|_| ())
}

fn write_sim_state(host: &Host, path: &Path) -> Result<()> {
    if host.cloud.environment().backend != crate::data::config::Backend::Sim {
        return Err(Error::Usage(
            "--sim-state-out needs a sim environment".into(),
        ));
    }
    // Connect even when the runbook never touched the cloud, so the state is always written.
    host.cloud
        .get(&host.io)
        .map_err(|e| crate::services::cloud::setup_error(host.cloud.environment(), e))?;
    let mut state = host.cloud.sim_state().unwrap_or_default();
    // Messages captured instead of sent are part of what a drill asserts on.
    state["notifications"] = serde_json::Value::Array(host.notifier.captured());
    let text = serde_json::to_string_pretty(&state).unwrap_or_default();
    std::fs::write(path, text).map_err(|e| Error::io("cannot write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::cli::args::Cli;
    use clap::Parser;

    /// `runbook ARGS...` in a folder holding `runbooks/t.rhai` and a runbook.toml with a
    /// protected sim environment, up to the launch's loaded host.
    fn loaded(dir: &Path, args: &[&str]) -> Result<crate::run::launch::Loaded> {
        let cli = Cli::try_parse_from(["runbook"].iter().chain(args)).unwrap();
        let g = Global {
            dirs: vec![dir.join("runbooks")],
            config: Some(dir.join("runbook.toml")),
            quiet: true,
            aws: crate::data::config::AwsFlags::default(),
        };
        let run_id = "run-1".to_string();
        let launch = match cli.command {
            super::super::args::Command::Run(a) => {
                let mode = if a.plan { Mode::Plan } else { Mode::Run };
                let driving = a.drive.driving(mode, a.approval_timeout);
                let limits = a.common.launch.limits();
                launch_from(&g, mode, &a.common, driving, limits, run_id, None)?
            }
            super::super::args::Command::Plan(a) => {
                let driving = Driving::Unattended {
                    yes: None,
                    approval_timeout: None,
                };
                let limits = a.launch.limits();
                launch_from(&g, Mode::Plan, &a, driving, limits, run_id, None)?
            }
            other => panic!("not a run: {other:?}"),
        };
        launch.load()
    }

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("runbooks")).unwrap();
        std::fs::write(
            dir.path().join("runbooks/t.rhai"),
            "runbook(#{ id: \"t\", version: \"1.0.0\", title: \"Test t\", severity: \"P3\" });\n\
             containment(\"Note\", |ctx| { log(\"noted\"); });\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("runbook.toml"),
            "[environments.guarded]\nbackend = \"sim\"\nprotected = true\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn run_flags_reach_the_host_before_the_runbook_loads() {
        let dir = folder();
        let ks = dir.path().join("stop");
        let loaded = loaded(
            dir.path(),
            &[
                "run",
                "t",
                "--env",
                "guarded",
                "--confirm-env",
                "guarded",
                "--no-interactive",
                "--max-resources",
                "2",
                "--kill-switch",
                ks.to_str().unwrap(),
            ],
        )
        .unwrap();
        let host = &loaded.rb.host;
        assert_eq!(host.recorder.mode(), Mode::Run);
        assert!(!host.interrupt.clock().is_simulated());
        assert!(host.protected_confirmed.get());
        assert!(host.prompt.borrow().is_none());
        let g = host.guardrails.recorded();
        assert_eq!(g["max_resources"], 2);
        assert_eq!(g["kill_switch"], ks.to_str().unwrap());
    }

    #[test]
    fn run_plan_and_plan_give_the_same_host() {
        let dir = folder();
        let config = |args: &[&str]| {
            let l = loaded(dir.path(), args).unwrap();
            let host = &l.rb.host;
            (
                host.recorder.mode(),
                host.interrupt.clock().is_simulated(),
                host.protected_confirmed.get(),
                host.guardrails.recorded(),
            )
        };
        let plan = config(&["plan", "t", "--env", "guarded", "--max-resources", "4"]);
        let run_plan = config(&[
            "run",
            "--plan",
            "t",
            "--env",
            "guarded",
            "--max-resources",
            "4",
        ]);
        assert_eq!(plan, run_plan);
        assert_eq!(plan.0, Mode::Plan);
        assert!(plan.1, "a plan's clock is simulated");
        assert!(!plan.2, "a plan needs no confirmation");
    }

    #[test]
    fn an_unattended_run_in_a_protected_environment_needs_confirm_env() {
        let dir = folder();
        let err = loaded(
            dir.path(),
            &["run", "t", "--env", "guarded", "--no-interactive"],
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("--confirm-env guarded"), "{err}");
    }
}
