//! The command line: argument definitions (clap derive) and one function per command.
//!
//! stdout carries what a command produces (a listing, a plan, a rendered timeline); stderr carries
//! progress and diagnostics, so `runbook show x > x.md` and `runbook plan ... | tee` work.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::catalog;
use crate::config::Config;
use crate::console::Console;
use crate::engine::Host;
use crate::error::{Error, Result, ScriptDiagnostic, exit};
use crate::executor::{self, Executor, RunOptions, Unattended};
use crate::recorder::Mode;
use crate::runbook::{Phase, Runbook};
use crate::transcript;

#[derive(Debug, Parser)]
#[command(
    name = "runbook",
    version,
    about = "Run incident runbooks step by step, with a verifiable audit transcript",
    after_help = "Exit codes: 0 ok, 1 run failed (or check/verify found a problem), 2 invalid input, 3 aborted or timed out."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Folders that hold runbooks (default: ./runbooks)
    #[arg(long, global = true, env = "RUNBOOK_PATH", value_delimiter = ':')]
    pub runbooks: Vec<PathBuf>,

    /// Print only results and errors, no progress
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// The environments file (default: the first runbook.toml walking up from here)
    #[arg(long, global = true, env = "RUNBOOK_CONFIG")]
    pub config: Option<PathBuf>,

    /// Diagnostic log format on stderr (json: one object per line, for log aggregation)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "RUNBOOK_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every step of a runbook, unattended
    Run(RunArgs),
    /// Run a runbook without sending any mutating call: each is recorded as "would call"
    Plan(PlanArgs),
    /// Validate runbooks (files or folders; default: the runbook folders)
    Check {
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
        /// Also check the runbook mandate: a runbook with all three phases for every P1/P2 alert,
        /// reviewed and drilled within 90 days, versions bumped when content changes
        #[arg(long)]
        policy: bool,
        /// The alert catalogue
        #[arg(long, default_value = "alerts.toml")]
        alerts: PathBuf,
        /// Where drill records are
        #[arg(long, default_value = "drills/results")]
        results: PathBuf,
        /// Check as of this date (YYYY-MM-DD; default today), for reproducible results
        #[arg(long)]
        now: Option<chrono::NaiveDate>,
    },
    /// Run drill scenarios (files, folders, or runbook ids; default: every scenario in drills/)
    Drill {
        targets: Vec<PathBuf>,
        /// The scenarios folder
        #[arg(long, default_value = "drills")]
        drills: PathBuf,
        /// Where each drill's transcript is kept
        #[arg(long, default_value = "drills/out")]
        out: PathBuf,
        /// Where passing drills leave their dated records (read by `check --policy`)
        #[arg(long, default_value = "drills/results")]
        results: PathBuf,
        /// Write JUnit XML here
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Write a Markdown report here
        #[arg(long)]
        report: Option<PathBuf>,
        /// Scenarios run at once
        #[arg(long, default_value_t = 2)]
        jobs: usize,
    },
    /// List the runbooks in the runbook folders
    List {
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Print a runbook's metadata and steps as Markdown
    Show {
        /// A runbook file, or ID[@VERSION]
        target: String,
    },
    /// Verify, show or render a run transcript
    #[command(subcommand)]
    Transcript(TranscriptCommand),
    /// The shared state backend ([state] in runbook.toml): create it, check access
    #[command(subcommand)]
    State(StateCommand),
    /// Continue an interrupted run from its transcript (appending to it)
    Resume {
        /// The run's transcript
        transcript: PathBuf,
        /// Secret parameters, given again (they were never recorded), as NAME=VALUE
        #[arg(short = 'p', long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Accept that the runbook changed since the run started (recorded)
        #[arg(long)]
        allow_changed: bool,
        /// Give confirmation in advance to steps that ask for it
        #[arg(long)]
        yes: bool,
        /// Ask before every step (default on a terminal without --yes)
        #[arg(long, conflicts_with = "no_interactive")]
        interactive: bool,
        /// Never ask
        #[arg(long)]
        no_interactive: bool,
        /// Confirm mutating calls in a protected environment by naming it
        #[arg(long, value_name = "ENV")]
        confirm_env: Option<String>,
        /// With the sim backend: write the simulated cloud's final state here (JSON)
        #[arg(long, value_name = "PATH")]
        sim_state_out: Option<PathBuf>,
        /// A tighter cap than the run started with (the recorded one always holds)
        #[arg(long, value_name = "N")]
        max_resources: Option<usize>,
        /// A kill switch, when the run started without one (the recorded one always holds)
        #[arg(long, value_name = "PATH", env = "RUNBOOK_KILL_SWITCH")]
        kill_switch: Option<PathBuf>,
    },
    /// Approve (or deny) a run's pending approval request, as yourself (RUNBOOK_OPERATOR or user@host)
    Approve {
        /// The run id (its transcript is searched under RUNBOOK_TRANSCRIPTS or ./transcripts)
        run_id: String,
        /// The run's transcript, when it is elsewhere
        #[arg(long)]
        transcript: Option<PathBuf>,
        /// Which request (default: the newest)
        #[arg(long)]
        request: Option<u32>,
        /// Deny instead of approving
        #[arg(long)]
        deny: bool,
    },
    /// Every binding at a prompt, recorded in a session transcript
    Repl {
        /// The environment (from runbook.toml; default: its `default`, else `sim`)
        #[arg(long = "env", env = "RUNBOOK_ENV")]
        env: Option<String>,
        /// Where to write the session transcript
        #[arg(long)]
        transcript: Option<PathBuf>,
        /// Start in plan mode (mutating calls recorded, not sent)
        #[arg(long)]
        plan: bool,
    },
    /// Tier 1: receive alerts over HTTP (Alertmanager, SNS, signed webhooks) and start the
    /// runbooks hooks.toml routes them to, under guardrails; escalate when they trip
    Serve {
        /// The routing and guardrails file
        #[arg(long, default_value = crate::hooks::config::FILE_NAME, env = "RUNBOOK_HOOKS")]
        hooks: PathBuf,
        /// Listen here instead of hooks.toml's server.listen (port 0 picks a free one)
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Once listening, write the bound address to this file
        #[arg(long, value_name = "PATH")]
        addr_file: Option<PathBuf>,
        /// Only check hooks.toml (every route's runbook, pin, parameters and environment) and
        /// print the routes; start nothing
        #[arg(long)]
        check: bool,
    },
    /// Handle one alert payload from stdin exactly as `serve` would (for cron or exec
    /// integrations); its runs finish before this returns
    Hook {
        /// What sent the payload
        #[arg(long, value_enum, required_unless_present = "reset_breakers")]
        source: Option<crate::hooks::Source>,
        /// The routing and guardrails file
        #[arg(long, default_value = crate::hooks::config::FILE_NAME, env = "RUNBOOK_HOOKS")]
        hooks: PathBuf,
        /// Instead: close open circuit breakers in the saved state (all, or `--scope RUNBOOK`)
        #[arg(long)]
        reset_breakers: bool,
        /// With --reset-breakers: only this runbook's breaker (`*` is the overall one)
        #[arg(long, requires = "reset_breakers")]
        scope: Option<String>,
    },
    /// Print the API reference of every function a runbook can call (or `docs drills`: the
    /// drill scenario format)
    Docs {
        /// `api` (default) or `drills`
        #[arg(value_enum, default_value = "api")]
        topic: DocsTopic,
    },
    /// Print shell completions
    Completions { shell: clap_complete::Shell },
}

/// What `runbook docs` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DocsTopic {
    /// The functions a runbook can call, and what mutating ones return in a plan
    Api,
    /// The drill scenario format (`drills/*.toml`)
    Drills,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// A runbook file, or ID[@VERSION] (the version pin refuses any other version)
    pub target: String,
    /// A parameter, as NAME=VALUE (repeatable)
    #[arg(short = 'p', long = "param", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Where to write the transcript (default: transcripts/YYYY-MM-DD/<run-id>.jsonl)
    #[arg(long)]
    pub transcript: Option<PathBuf>,
    /// The environment to run against, from runbook.toml (default: its `default`, else `sim`)
    #[arg(long = "env", env = "RUNBOOK_ENV")]
    pub env: Option<String>,
    /// Confirm mutating calls in a protected environment by naming it (e.g. --confirm-env prod)
    #[arg(long, value_name = "ENV")]
    pub confirm_env: Option<String>,
    /// With the sim backend: write the simulated cloud's final state here (JSON)
    #[arg(long, value_name = "PATH")]
    pub sim_state_out: Option<PathBuf>,
    /// Refuse any write that would make this run change more than N distinct resources
    #[arg(long, value_name = "N")]
    pub max_resources: Option<usize>,
    /// Refuse every write while this file exists (an emergency stop for unattended runs)
    #[arg(long, value_name = "PATH", env = "RUNBOOK_KILL_SWITCH")]
    pub kill_switch: Option<PathBuf>,
    /// When another run holds a target this one acts on, wait up to this long for it (runs only)
    #[arg(long, value_name = "DURATION", value_parser = crate::clock::parse_duration)]
    pub wait_lock: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: PlanArgs,
    /// Give confirmation in advance to steps that ask for it (recorded as your decision)
    #[arg(long)]
    pub yes: bool,
    /// Same as `runbook plan`
    #[arg(long)]
    pub plan: bool,
    /// Unattended: a step that asks for confirmation waits this long for `runbook approve`
    /// (instead of stopping the run)
    #[arg(long, value_name = "DURATION", value_parser = crate::clock::parse_duration)]
    pub approval_timeout: Option<std::time::Duration>,
    /// Ask before every step (the default when stdin is a terminal and --yes is not given)
    #[arg(long, conflicts_with = "no_interactive")]
    pub interactive: bool,
    /// Never ask: run unattended even on a terminal
    #[arg(long)]
    pub no_interactive: bool,
}

#[derive(Debug, Subcommand)]
pub enum TranscriptCommand {
    /// Check the hash chain, that every line is in its canonical form and that the run finished;
    /// exit 1 naming the first broken line
    Verify {
        file: PathBuf,
        /// Accept a run that never finished (crashed or still running; `runbook resume` continues it)
        #[arg(long)]
        allow_unfinished: bool,
        /// Also check the HMAC signatures made with this key (RUNBOOK_SIGNING_KEY_FILE when the
        /// run was recorded): every signature must hold and the transcript must end with one
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
    },
    /// A readable timeline of the run
    Show { file: PathBuf },
    /// An incident timeline for the post-incident review
    Render {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = RenderFormat::Md)]
        format: RenderFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Create the DynamoDB table and S3 bucket of `[state] backend = "aws"` (what exists is
    /// kept) and print the least-privilege IAM policies
    Init,
    /// Check that this identity can use the table and bucket
    Check,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RenderFormat {
    Md,
}

/// `NAME=VALUE`. Text without a name is kept as an empty name for `resolve_params` to refuse:
/// clap would quote the whole text in its error, and `--param` is how secrets are given.
fn parse_param(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Ok((String::new(), String::new())),
    }
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server's decisions are its log; a one-shot command stays quiet unless asked.
    let level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    init_tracing(cli.log_format, level);
    match dispatch(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            report(&err);
            ExitCode::from(err.exit_code())
        }
    }
}

fn init_tracing(format: LogFormat, level: &str) {
    // Quiet unless asked: diagnostics are for developers, progress is the console's job.
    // The SDK's credential chain warns about every provider it tries (IMDS off a cloud host,
    // absent profiles); the outcome is reported by us, so its chatter waits for RUST_LOG.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},aws_config=error"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(color()).try_init(),
    };
}

fn color() -> bool {
    // TERM=dumb cannot show escapes either (the console draws plain lines there too).
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

fn render_all(diags: &[ScriptDiagnostic]) -> String {
    diags
        .iter()
        .map(|d| d.render(color()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn report(err: &Error) {
    let mut stderr = std::io::stderr().lock();
    match err {
        Error::Script(diags) => {
            let _ = write!(stderr, "{}", render_all(diags));
        }
        other => {
            let _ = writeln!(stderr, "error: {other}");
        }
    }
}

pub fn dispatch(cli: Cli) -> Result<()> {
    let dirs = catalog::search_dirs(&cli.runbooks);
    match cli.command {
        Command::Run(args) => {
            let mode = if args.plan { Mode::Plan } else { Mode::Run };
            let interactive = args.interactive
                || (!args.no_interactive
                    && !args.yes
                    && mode == Mode::Run
                    && std::io::stdin().is_terminal());
            let how = How {
                mode,
                yes: args.yes,
                interactive,
                quiet: cli.quiet,
                resume: None,
                approval_timeout: args.approval_timeout,
            };
            run(&dirs, cli.config.as_deref(), &args.common, how)
        }
        Command::Plan(args) => {
            let how = How {
                mode: Mode::Plan,
                yes: false,
                interactive: false,
                quiet: cli.quiet,
                resume: None,
                approval_timeout: None,
            };
            run(&dirs, cli.config.as_deref(), &args, how)
        }
        Command::Check {
            paths,
            output,
            policy,
            alerts,
            results,
            now,
        } => {
            check(&dirs, &paths, output)?;
            if policy {
                check_policy(&dirs, &alerts, &results, now, output)?;
            }
            Ok(())
        }
        Command::Drill {
            targets,
            drills,
            out,
            results,
            junit,
            report,
            jobs,
        } => drill(
            &dirs,
            &targets,
            &drills,
            &out,
            &results,
            junit.as_deref(),
            report.as_deref(),
            jobs,
        ),
        Command::List { output } => list(&dirs, output),
        Command::Show { target } => {
            let rb = catalog::load(&dirs, &target, silent_host(Mode::Plan))?;
            print!("{}", rb.to_markdown());
            Ok(())
        }
        Command::Transcript(cmd) => transcript_command(cmd),
        Command::State(cmd) => {
            let config = Config::load(cli.config.as_deref())?;
            println!(
                "{}",
                match cmd {
                    StateCommand::Init => crate::state::ops::init(config.state())?,
                    StateCommand::Check => crate::state::ops::check(config.state())?,
                }
            );
            Ok(())
        }
        Command::Resume {
            transcript,
            params,
            allow_changed,
            yes,
            interactive,
            no_interactive,
            confirm_env,
            sim_state_out,
            max_resources,
            kill_switch,
        } => {
            let (events, _) = transcript::read_verified(&transcript)?;
            let first = &events[0];
            let target = first["runbook"]["path"]
                .as_str()
                .filter(|p| Path::new(p).is_file())
                .or_else(|| first["runbook"]["file"].as_str())
                .unwrap_or_default()
                .to_string();
            let args = PlanArgs {
                target,
                params,
                transcript: Some(transcript.clone()),
                env: first["environment"].as_str().map(str::to_string),
                confirm_env,
                sim_state_out,
                max_resources,
                kill_switch,
                wait_lock: None,
            };
            let interactive =
                interactive || (!no_interactive && !yes && std::io::stdin().is_terminal());
            let run_id = first["run_id"].as_str().unwrap_or_default().to_string();
            let how = How {
                mode: Mode::Run,
                yes,
                interactive,
                quiet: cli.quiet,
                resume: Some((allow_changed, run_id)),
                approval_timeout: None,
            };
            run(&dirs, cli.config.as_deref(), &args, how)
        }
        Command::Approve {
            run_id,
            transcript,
            request,
            deny,
        } => {
            let path = match transcript {
                Some(p) => p,
                None => crate::approvals::find_transcript(&run_id)?,
            };
            let r = crate::approvals::answer(&path, request, !deny)?;
            print!("{}", r.describe());
            println!(
                "{} request {} of run {}: {}",
                if deny { "denied" } else { "approved" },
                r.number,
                r.run_id,
                r.question
            );
            Ok(())
        }
        Command::Repl {
            env,
            transcript,
            plan,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            let env = config.select(env.as_deref())?;
            let name = env.name.clone();
            let mode = if plan { Mode::Plan } else { Mode::Run };
            let host = Host::with_environment(
                mode,
                Console::detect(cli.quiet),
                Arc::new(AtomicBool::new(false)),
                env,
            );
            if host.cloud.environment().protected {
                // The REPL has no per-step confirmation: a protected environment is plan-only.
                host.recorder.set_mode(Mode::Plan);
            }
            let (flag, presses) = (
                host.interrupt.abort_flag().clone(),
                host.interrupt.presses_counter().clone(),
            );
            let _ = ctrlc::set_handler(move || {
                presses.fetch_add(1, Ordering::SeqCst);
                flag.store(true, Ordering::SeqCst);
            });
            let id = executor::new_run_id();
            let path = transcript
                .unwrap_or_else(|| executor::default_transcript_path(&format!("repl-{id}")));
            crate::repl::run(host, path, &name, &executor::operator())
        }
        Command::Serve {
            hooks,
            listen,
            addr_file,
            check,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            if check {
                let hooks = crate::hooks::config::Hooks::load(&hooks)?;
                for line in crate::hooks::hub::check(&hooks, &dirs, &config)? {
                    println!("{line}");
                }
                return Ok(());
            }
            crate::hooks::serve(&hooks, dirs, config, listen, addr_file.as_deref())
        }
        Command::Hook {
            source,
            hooks,
            reset_breakers,
            scope,
        } => {
            if reset_breakers {
                let closed = crate::hooks::reset_breakers(&hooks, scope.as_deref())?;
                println!(
                    "closed: {}",
                    if closed.is_empty() {
                        "none (no breaker was open)".to_string()
                    } else {
                        closed.join(", ")
                    }
                );
                return Ok(());
            }
            let Some(source) = source else {
                return Err(Error::Usage("--source is required".into()));
            };
            let mut payload = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut payload)
                .map_err(|e| Error::io("cannot read", Path::new("<stdin>"), e))?;
            let config = Config::load(cli.config.as_deref())?;
            crate::hooks::one_shot(&hooks, dirs, config, source, &payload)
        }
        Command::Docs { topic } => {
            match topic {
                DocsTopic::Api => print!("{}", crate::docs::markdown()?),
                DocsTopic::Drills => print!("{}", crate::drill::format_reference()),
            }
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "runbook",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

fn silent_host(mode: Mode) -> Rc<Host> {
    Host::new(mode, Console::silent(), Arc::new(AtomicBool::new(false)))
}

/// How a run is driven.
struct How {
    mode: Mode,
    yes: bool,
    interactive: bool,
    quiet: bool,
    /// `runbook resume`: whether a changed runbook is accepted, and the run's id.
    resume: Option<(bool, String)>,
    /// Unattended confirmations wait this long for `runbook approve`.
    approval_timeout: Option<std::time::Duration>,
}

fn run(dirs: &[PathBuf], config_path: Option<&Path>, args: &PlanArgs, how: How) -> Result<()> {
    let How {
        mode,
        yes,
        interactive,
        quiet,
        resume,
        approval_timeout,
    } = how;
    let abort = Arc::new(AtomicBool::new(false));

    let config = Config::load(config_path)?;
    let env = config.select(args.env.as_deref())?;
    let env_name = env.name.clone();
    let protected = env.protected;
    let host = Host::with_environment(mode, Console::detect(quiet), abort.clone(), env);
    let rb = catalog::load(dirs, &args.target, host)?;
    rb.host
        .guardrails
        .configure(args.max_resources, args.kill_switch.clone());
    // Ctrl-C asks the running step to stop at its next operation or wait; the executor then
    // asks what to do (interactive) or records the abort, and finishes the transcript properly.
    // A second Ctrl-C stops the run.
    let (flag, presses) = (abort.clone(), rb.host.interrupt.presses_counter().clone());
    let _ = ctrlc::set_handler(move || {
        presses.fetch_add(1, Ordering::SeqCst);
        flag.store(true, Ordering::SeqCst);
    });
    if protected && !interactive {
        match (&args.confirm_env, mode) {
            (Some(given), _) if *given == env_name => rb.host.protected_confirmed.set(true),
            (Some(given), _) => {
                return Err(Error::Usage(format!(
                    "--confirm-env {given} does not name the environment of this run ({env_name})"
                )));
            }
            // A plan sends nothing, so it needs no confirmation.
            (None, Mode::Plan) => {}
            (None, Mode::Run) => {
                return Err(Error::Usage(format!(
                    "environment {env_name} is protected: mutating calls need confirmation; pass --confirm-env {env_name} (or plan first with `runbook plan`)"
                )));
            }
        }
    }
    let account = crate::cloud::verify_account(&rb.host)?;
    for w in &rb.warnings {
        rb.host
            .console
            .line(&format!("warning: {}", w.render(color()).trim_end()));
    }
    let (params, resume, run_id, transcript) = match resume {
        Some((allow_changed, run_id)) => {
            let path = args.transcript.clone().unwrap_or_default();
            let (resume, ctx) = crate::resume::prepare(&rb, &path, &args.params, allow_changed)?;
            let total = rb.steps.len();
            let at = match rb.steps.get(resume.start_step) {
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
            };
            rb.host.console.line(&at);
            (ctx, Some(resume), run_id, path)
        }
        None => {
            let run_id = executor::new_run_id();
            let transcript = args
                .transcript
                .clone()
                .unwrap_or_else(|| executor::default_transcript_path(&run_id));
            (rb.resolve_params(&args.params)?, None, run_id, transcript)
        }
    };
    let operator = executor::operator();
    let _locks = crate::state::Store::open(config.state())?.lock_run(
        mode == Mode::Run,
        &env_name,
        &rb.targets(&params),
        &operator,
        &run_id,
        args.wait_lock,
    )?;
    let console = &rb.host.console;
    console.set_planning(mode == Mode::Plan);
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
    let mut unattended = Unattended {
        yes: yes.then(|| "--yes".to_string()),
        operator: operator.clone(),
        approval_timeout,
    };
    rb.host.console.set_overall(!interactive);
    if interactive {
        // Approvals asked by the script (`approve(...)`) are answered at this terminal.
        *rb.host.prompt.borrow_mut() = Some(Box::new(|question: &str| {
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
        }));
    }
    let mut on_call;
    let driver: &mut dyn executor::Driver = if interactive {
        on_call =
            crate::interactive::Interactive::new(operator.clone()).map_err(Error::Environment)?;
        &mut on_call
    } else {
        &mut unattended
    };
    let mut executor = Executor::new(&rb, driver);
    if let Some(lifecycle) = crate::bindings::slack::SlackLifecycle::for_runbook(&rb) {
        executor = executor.observe(lifecycle);
    }
    let report = executor.run(RunOptions {
        resume,
        run_id,
        transcript,
        environment: env_name.clone(),
        account,
        operator,
        params,
        trigger: None,
    })?;
    if let Some(path) = &args.sim_state_out {
        write_sim_state(&rb.host, path)?;
    }
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
    if mode == Mode::Plan {
        print!("{}", executor::plan_summary(&report));
    }
    report.into_result().map(|_| ())
}

/// runbook.toml's `region`/`endpoint` win over `AWS_REGION`/`AWS_ENDPOINT_URL`: when both are
/// set and differ, say which one the run uses (a person who exported a variable expects it to count).
fn overridden_variables(host: &Host) -> Vec<String> {
    let env = host.cloud.environment();
    if env.backend != crate::config::Backend::Aws {
        return Vec::new();
    }
    let pairs = [
        ("endpoint", &env.aws.endpoint, "AWS_ENDPOINT_URL"),
        ("region", &env.aws.region, "AWS_REGION"),
    ];
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

/// Where a run acts, for its banner: `sim`, or the AWS account, region and endpoint as resolved.
fn acts_on(host: &Host, account: Option<&str>) -> String {
    if host.cloud.environment().backend == crate::config::Backend::Sim {
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

fn write_sim_state(host: &Host, path: &Path) -> Result<()> {
    if host.cloud.environment().backend != crate::config::Backend::Sim {
        return Err(Error::Usage(
            "--sim-state-out needs a sim environment".into(),
        ));
    }
    // Connect even when the runbook never touched the cloud, so the state is always written.
    host.cloud
        .get(&host.io)
        .map_err(|e| crate::cloud::setup_error(host.cloud.environment(), e))?;
    let mut state = host.cloud.sim_state().unwrap_or_default();
    // Messages captured instead of sent are part of what a drill asserts on.
    state["notifications"] = serde_json::Value::Array(host.notifier.captured());
    let text = serde_json::to_string_pretty(&state).unwrap_or_default();
    std::fs::write(path, text).map_err(|e| Error::io("cannot write", path, e))
}

fn check_policy(
    dirs: &[PathBuf],
    alerts: &Path,
    results: &Path,
    now: Option<chrono::NaiveDate>,
    output: Output,
) -> Result<()> {
    let catalogue = crate::policy::load_catalogue(alerts)?;
    let runbooks: Vec<Runbook> = catalog::runbook_files(dirs)
        .iter()
        .filter_map(|f| Runbook::load(f, silent_host(Mode::Plan)).ok())
        .collect();
    let records = crate::drill::read_records(results);
    let today = now.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let violations = crate::policy::check(&runbooks, &catalogue, &records, today);
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "date": today.to_string(), "violations": violations })
            )
            .unwrap_or_default()
        ),
        Output::Human => {
            if violations.is_empty() {
                println!(
                    "policy ok: {} alert(s), {} runbook(s), {} drill record(s), as of {today}",
                    catalogue.alerts.len(),
                    runbooks.len(),
                    records.len()
                );
            }
            for v in &violations {
                println!("POLICY  {} [{}]: {}", v.subject, v.rule, v.message);
            }
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::PolicyViolations {
            count: violations.len(),
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn drill(
    dirs: &[PathBuf],
    targets: &[PathBuf],
    drills: &Path,
    out: &Path,
    results: &Path,
    junit: Option<&Path>,
    report: Option<&Path>,
    jobs: usize,
) -> Result<()> {
    let files = crate::drill::scenarios(targets, drills)?;
    if files.is_empty() {
        return Err(Error::Usage(format!(
            "no drill scenarios in {}",
            drills.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io("cannot create", out, e))?;
    let outcomes = crate::drill::run_all(&files, dirs, out, jobs);
    for (file, r) in &outcomes {
        println!("{}", crate::drill::summary_line(file, r));
    }
    let today = chrono::Utc::now().date_naive().to_string();
    let passed: Vec<&crate::drill::Outcome> = outcomes
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .collect();
    crate::drill::write_records(&passed, results, &today)?;
    if let Some(path) = junit {
        std::fs::write(path, crate::drill::junit(&outcomes)?)
            .map_err(|e| Error::io("cannot write", path, e))?;
    }
    if let Some(path) = report {
        std::fs::write(path, crate::drill::markdown(&outcomes))
            .map_err(|e| Error::io("cannot write", path, e))?;
    }
    let failed = outcomes
        .iter()
        .filter(|(_, r)| !r.as_ref().is_ok_and(|o| o.passed))
        .count();
    println!(
        "{} drill(s): {} passed, {failed} failed",
        outcomes.len(),
        outcomes.len() - failed
    );
    if failed > 0 {
        Err(Error::DrillsFailed { count: failed })
    } else {
        Ok(())
    }
}

/// One file's `check` result.
struct Checked {
    file: PathBuf,
    result: Result<Runbook>,
}

fn check(dirs: &[PathBuf], paths: &[PathBuf], output: Output) -> Result<()> {
    let roots: Vec<PathBuf> = if paths.is_empty() {
        dirs.to_vec()
    } else {
        paths.to_vec()
    };
    let mut files = Vec::new();
    for root in &roots {
        if root.is_dir() {
            files.extend(catalog::runbook_files(std::slice::from_ref(root)));
        } else if root.is_file() {
            files.push(root.clone());
        } else {
            return Err(Error::NotFound(root.display().to_string()));
        }
    }
    if files.is_empty() {
        return Err(Error::Usage(format!(
            "no runbooks found in {}",
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let checked: Vec<Checked> = files
        .into_iter()
        .map(|file| Checked {
            result: Runbook::load(&file, silent_host(Mode::Plan)),
            file,
        })
        .collect();

    // Problems that only show across files: two runbooks with one id.
    let mut cross: Vec<(usize, String)> = Vec::new();
    for (i, c) in checked.iter().enumerate() {
        if let Ok(rb) = &c.result
            && let Some(first) = checked[..i]
                .iter()
                .find(|o| o.result.as_ref().is_ok_and(|r| r.meta.id == rb.meta.id))
        {
            cross.push((
                i,
                format!(
                    "id {:?} is already used by {}",
                    rb.meta.id,
                    first.file.display()
                ),
            ));
        }
    }

    let mut bad = 0;
    let mut json_rows = Vec::new();
    for (i, c) in checked.iter().enumerate() {
        let mut errors: Vec<serde_json::Value> = Vec::new();
        let mut warnings: Vec<serde_json::Value> = Vec::new();
        let diag_json = |d: &ScriptDiagnostic| json!({"file": d.location.file, "line": d.location.line, "col": d.location.col, "message": d.message});
        let mut text = String::new();
        match &c.result {
            Ok(rb) => {
                for w in &rb.warnings {
                    warnings.push(diag_json(w));
                    text.push_str(&format!("warning: {}", w.render(color())));
                }
                let stem = c.file.file_stem().map(|s| s.to_string_lossy().into_owned());
                if stem.as_deref() != Some(rb.meta.id.as_str()) {
                    let msg = format!(
                        "file name does not match the id {:?}: `runbook run {}` will have to search for it",
                        rb.meta.id, rb.meta.id
                    );
                    warnings.push(json!({"file": rb.file, "line": 1, "col": 1, "message": msg}));
                    text.push_str(&format!("warning: {}: {msg}\n", rb.file));
                }
                for (_, msg) in cross.iter().filter(|(j, _)| *j == i) {
                    errors.push(json!({"file": rb.file, "line": 1, "col": 1, "message": msg}));
                    text.push_str(&format!("{}:1:1: {msg}\n", rb.file));
                }
            }
            Err(Error::Script(diags)) => {
                errors.extend(diags.iter().map(diag_json));
                text.push_str(&render_all(diags));
            }
            Err(other) => {
                errors.push(
                    json!({"file": c.file.display().to_string(), "message": other.to_string()}),
                );
                text.push_str(&format!("{}: {other}\n", c.file.display()));
            }
        }
        if !errors.is_empty() {
            bad += 1;
        }
        match output {
            Output::Human => {
                let head = match (&c.result, errors.is_empty()) {
                    (Ok(rb), true) => format!(
                        "ok      {} ({}@{}, {} steps)",
                        c.file.display(),
                        rb.meta.id,
                        rb.meta.version,
                        rb.steps.len()
                    ),
                    _ => format!("INVALID {}", c.file.display()),
                };
                println!("{head}");
                if !text.is_empty() {
                    eprint!("{text}");
                }
            }
            Output::Json => {
                let (id, version) = match &c.result {
                    Ok(rb) => (json!(rb.meta.id), json!(rb.meta.version.to_string())),
                    Err(_) => (json!(null), json!(null)),
                };
                json_rows.push(json!({
                    "file": c.file.display().to_string(),
                    "id": id,
                    "version": version,
                    "ok": errors.is_empty(),
                    "errors": errors,
                    "warnings": warnings,
                }));
            }
        }
    }
    if let Output::Json = output {
        println!(
            "{}",
            serde_json::to_string_pretty(&json_rows).unwrap_or_default()
        );
    }
    if bad > 0 {
        Err(Error::Invalid { count: bad })
    } else {
        Ok(())
    }
}

fn list(dirs: &[PathBuf], output: Output) -> Result<()> {
    let mut rows = Vec::new();
    for file in catalog::runbook_files(dirs) {
        let row = match Runbook::load(&file, silent_host(Mode::Plan)) {
            Ok(rb) => {
                let phases: Vec<String> = Phase::ALL
                    .iter()
                    .map(|p| {
                        let n = rb.steps.iter().filter(|s| s.phase == *p).count();
                        format!("{}{n}", &p.as_str()[..1].to_uppercase())
                    })
                    .collect();
                json!({
                    "id": rb.meta.id,
                    "version": rb.meta.version.to_string(),
                    "severity": rb.meta.severity.as_str(),
                    "phases": phases.join(" "),
                    "reviewed": rb.meta.reviewed.map(|d| d.to_string()),
                    "title": rb.meta.title,
                    "file": file.display().to_string(),
                    "valid": true,
                })
            }
            Err(_) => json!({"id": null, "file": file.display().to_string(), "valid": false}),
        };
        rows.push(row);
    }
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        ),
        Output::Human => {
            println!(
                "{:<28} {:<9} {:<4} {:<10} {:<11} TITLE",
                "ID", "VERSION", "SEV", "PHASES", "REVIEWED"
            );
            for r in &rows {
                if r["valid"] == true {
                    println!(
                        "{:<28} {:<9} {:<4} {:<10} {:<11} {}",
                        r["id"].as_str().unwrap_or(""),
                        r["version"].as_str().unwrap_or(""),
                        r["severity"].as_str().unwrap_or(""),
                        r["phases"].as_str().unwrap_or(""),
                        r["reviewed"].as_str().unwrap_or("never"),
                        r["title"].as_str().unwrap_or("")
                    );
                } else {
                    println!(
                        "{:<28} (invalid: run `runbook check {}`)",
                        "?",
                        r["file"].as_str().unwrap_or("")
                    );
                }
            }
        }
    }
    Ok(())
}

fn transcript_command(cmd: TranscriptCommand) -> Result<()> {
    match cmd {
        TranscriptCommand::Verify {
            file,
            allow_unfinished,
            key_file,
        } => {
            let (events, report) = transcript::read_verified(&file)?;
            let signed = match &key_file {
                Some(key) => {
                    let signer = transcript::Signer::from_file(key)?;
                    let n = transcript::check_signatures(&file, &events, &report, &signer)?;
                    format!(" · {n} signature(s) verified with key {}", signer.key_id)
                }
                None => String::new(),
            };
            let end = match (report.kind, &report.finished) {
                (transcript::Kind::Journal, _) => "hook journal (a log: it has no end to check)".into(),
                (transcript::Kind::Run, Some(status)) => format!("run finished: {status}"),
                (transcript::Kind::Run, None) if allow_unfinished => {
                    "the run never finished (crashed, still running, or cut short; accepted with --allow-unfinished)".into()
                }
                (transcript::Kind::Run, None) => {
                    return Err(Error::TranscriptBroken {
                        path: file.clone(),
                        line: report.events,
                        reason: "the run never finished: the transcript does not end with run_finished (it crashed, is still running, or was cut short); `runbook resume` continues it, --allow-unfinished accepts it as it is".into(),
                    });
                }
            };
            let legacy = match report.legacy_lines {
                0 => String::new(),
                n => format!(
                    " · {n} line(s) in the form of an earlier version (keys in the writer's order)"
                ),
            };
            println!(
                "ok: {} · {} events · chain intact · head {} · {end}{signed}{legacy}",
                file.display(),
                report.events,
                report.head
            );
            Ok(())
        }
        TranscriptCommand::Show { file } => {
            let (events, _) = transcript::read_verified(&file)?;
            print!("{}", transcript::show(&events));
            Ok(())
        }
        TranscriptCommand::Render {
            file,
            format: RenderFormat::Md,
        } => {
            let (events, report) = transcript::read_verified(&file)?;
            if report.kind == transcript::Kind::Journal {
                return Err(Error::Usage(format!(
                    "{} is a hook journal, not a run: `runbook transcript show` prints it",
                    file.display()
                )));
            }
            print!("{}", transcript::render_markdown(&events, &report, &file));
            Ok(())
        }
    }
}
