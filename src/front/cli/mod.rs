//! The command line, in three layers as just and ripgrep have it: [`args`] defines what each
//! command accepts (clap derive), this module parses, dispatches and maps the library's one
//! error type to exit codes and diagnostics, and one module per command group does the work
//! (`run`, `plan` and `resume` hand a [`crate::run::launch::Launch`] to the one way runs start).
//!
//! stdout carries what a command produces (a listing, a plan, a rendered timeline); stderr carries
//! progress and diagnostics, so `runbook show x > x.md` and `runbook plan ... | tee` work.

mod args;
mod check;
mod complete;
mod drill;
mod json;
mod man;
mod run;
mod serve;
mod session;
mod transcript;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{CommandFactory, Parser};

use crate::base::console::Console;
use crate::base::error::{Error, Result, ScriptDiagnostic, exit};
use crate::data::config::{AwsFlags, Config};
use crate::runbook::catalog;
use crate::sandbox::engine::Host;
use crate::sandbox::recorder::Mode;
use args::{Cli, Command, DocsTopic, LogFormat, Output, TranscriptCommand};

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    // A shell asking for completions (`RUNBOOK_COMPLETE=bash runbook -- runbook run <Tab>`)
    // is answered here and the process ends; otherwise this returns at once.
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(complete::VAR)
        .complete();
    let cli = Cli::parse();
    let json_command = json_command(&cli.command);
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
            // A script reading `--output json` gets a document whatever happened.
            if let Some(command) = json_command {
                json::emit_error(command, &err);
            }
            ExitCode::from(err.exit_code())
        }
    }
}

/// The command's name when it was asked for `--output json`.
fn json_command(command: &Command) -> Option<&'static str> {
    let json = |o: &Output, name| (*o == Output::Json).then_some(name);
    match command {
        Command::Run(a) => json(&a.common.output, "run"),
        Command::Plan(a) => json(&a.output, "plan"),
        Command::Resume(a) => json(&a.output, "resume"),
        Command::Check { output, .. } => json(output, "check"),
        Command::Drill(a) => json(&a.output, "drill"),
        Command::Replay(a) => json(&a.output, "replay"),
        Command::List { output, .. } => json(output, "list"),
        Command::Show { output, .. } => json(output, "show"),
        Command::Transcript(TranscriptCommand::Verify { output, .. }) => {
            json(output, "transcript verify")
        }
        Command::Transcript(TranscriptCommand::Show { output, .. }) => {
            json(output, "transcript show")
        }
        Command::Transcript(TranscriptCommand::List { output, .. }) => {
            json(output, "transcript list")
        }
        _ => None,
    }
}

/// Writes a command's output to stdout. A reader that closes the pipe early (`runbook list |
/// head -1`) is not an error: the rest is dropped without a word and the command ends with the
/// status it would have had. Any other failure to write is said once on stderr.
pub(crate) fn out(text: &str) {
    static FAILED: AtomicBool = AtomicBool::new(false);
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
        && !FAILED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        let _ = writeln!(
            std::io::stderr().lock(),
            "error: cannot write to stdout: {e}"
        );
    }
}

/// Writes diagnostics to stderr, ignoring a closed stderr the same way as [`out`].
pub(crate) fn err(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn init_tracing(format: LogFormat, level: &str) {
    // Quiet unless asked: diagnostics are for developers, progress is the console's job.
    // The SDK's credential chain warns about every provider it tries (IMDS off a cloud host,
    // absent profiles); the outcome is reported by us, so its chatter waits for RUST_LOG.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},aws_config=error"))
    });
    // A log line that cannot be written (a full disk or a file-size limit on the file stderr
    // goes to) is lost, nothing more: tracing-subscriber would otherwise report the failure
    // with `eprintln!` to that same stderr, and that panics, taking down the request or run
    // that logged (seen: `serve` dropping an alert's connection once its log hit LimitFSIZE).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(color()).try_init(),
    };
}

pub(crate) fn color() -> bool {
    // TERM=dumb cannot show escapes either (the console draws plain lines there too).
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

pub(crate) fn render_all(diags: &[ScriptDiagnostic]) -> String {
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

/// What every command may use from the global flags.
pub(crate) struct Global {
    /// The runbook folders (`--runbooks`, `RUNBOOK_PATH`, or `./runbooks`).
    pub(crate) dirs: Vec<PathBuf>,
    /// `--config`: the environments file.
    pub(crate) config: Option<PathBuf>,
    pub(crate) quiet: bool,
    /// `--profile`, `--region`.
    pub(crate) aws: AwsFlags,
}

impl Global {
    /// runbook.toml (`--config`, or the first one walking up), with `--profile`/`--region`.
    pub(crate) fn load_config(&self) -> Result<Config> {
        Ok(Config::load(self.config.as_deref())?.with_aws_flags(self.aws.clone()))
    }
}

/// Commands that never talk to AWS refuse `--profile`/`--region` rather than ignore them.
fn refuse_aws_flags(cli: &Cli) -> Result<()> {
    let name = match &cli.command {
        Command::Check { .. } => "check",
        Command::List { .. } => "list",
        Command::Show { .. } => "show",
        Command::Drill(_) => "drill",
        Command::Replay(_) => "replay",
        Command::Docs { .. } => "docs",
        Command::Completions { .. } => "completions",
        _ => return Ok(()),
    };
    if cli.profile.is_some() || cli.region.is_some() {
        return Err(Error::Usage(format!(
            "`runbook {name}` does not talk to AWS: --profile and --region do not apply"
        )));
    }
    Ok(())
}

fn dispatch(cli: Cli) -> Result<()> {
    refuse_aws_flags(&cli)?;
    let g = Global {
        dirs: catalog::search_dirs(&cli.runbooks),
        config: cli.config,
        quiet: cli.quiet,
        aws: AwsFlags {
            profile: cli.profile,
            region: cli.region,
        },
    };
    match cli.command {
        Command::Run(args) => run::run(&g, args),
        Command::Plan(args) => run::plan(&g, args),
        Command::Resume(args) => run::resume(&g, args),
        Command::Check {
            paths,
            output,
            policy,
            alerts,
            results,
            now,
        } => {
            use crate::data::config::in_project;
            let alerts = in_project(alerts.as_deref(), "alerts.toml");
            let results = in_project(results.as_deref(), "drills/results");
            let policy = policy.then_some((alerts.as_path(), results.as_path(), now));
            check::command(&g.dirs, &paths, output, policy)
        }
        Command::Drill(args) => drill::drill(&g, &args),
        Command::Replay(args) => drill::replay(&g, args),
        Command::List { output, alert } => check::list(&g.dirs, output, alert.as_deref()),
        Command::Show { target, output } => check::show(&g.dirs, &target, output),
        Command::Transcript(cmd) => transcript::command(&g, cmd),
        Command::State(cmd) => {
            use crate::services::state::ops;
            let config = g.load_config()?;
            out(&format!(
                "{}\n",
                match cmd {
                    args::StateCommand::Init => ops::init(config.state())?,
                    args::StateCommand::Check => ops::check(config.state())?,
                }
            ));
            Ok(())
        }
        Command::Approve {
            run_id,
            transcript,
            request,
            deny,
        } => session::approve(&g, &run_id, transcript, request, deny),
        Command::Repl {
            env,
            transcript,
            plan,
        } => session::repl(&g, env.as_deref(), transcript, plan),
        Command::Serve {
            hooks,
            listen,
            addr_file,
            probe_listen,
            probe_addr_file,
            check: _,
            healthcheck: Some(url),
        } => serve::healthcheck(
            &hooks_file(hooks),
            &url,
            crate::front::hooks::Listen {
                listen,
                addr_file,
                probe_listen,
                probe_addr_file,
            },
        ),
        Command::Serve {
            hooks,
            listen,
            addr_file,
            probe_listen,
            probe_addr_file,
            check,
            healthcheck: None,
        } => serve::serve(
            g,
            &hooks_file(hooks),
            crate::front::hooks::Listen {
                listen,
                addr_file,
                probe_listen,
                probe_addr_file,
            },
            check,
        ),
        Command::Hook {
            source,
            hooks,
            reset_breakers,
            scope,
        } => serve::hook(
            g,
            source,
            &hooks_file(hooks),
            reset_breakers,
            scope.as_deref(),
        ),
        Command::Docs { topic } => {
            match topic {
                DocsTopic::Api => out(&crate::front::docs::markdown()?),
                DocsTopic::Drills => out(&crate::front::drill::format_reference()),
                DocsTopic::Transcript => out(&crate::data::transcript::format_reference()),
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
        Command::Man { dir } => man::man(dir.as_deref()),
    }
}

/// A host that only loads runbooks (`check`, `list`, `show`): it prints nothing.
/// `--hooks` (or `RUNBOOK_HOOKS`) as given, else `hooks.toml` in the project's folder.
pub(super) fn hooks_file(given: Option<std::path::PathBuf>) -> std::path::PathBuf {
    crate::data::config::in_project(given.as_deref(), crate::front::hooks::config::FILE_NAME)
}

fn silent_host(mode: Mode) -> Rc<Host> {
    Host::new(mode, Console::silent(), Arc::new(AtomicBool::new(false)))
}
