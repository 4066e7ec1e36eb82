//! The command line, in three layers as just and ripgrep have it: [`args`] defines what each
//! command accepts (clap derive), this module parses, dispatches and maps the library's one
//! error type to exit codes and diagnostics, and one module per command group does the work
//! (`run`, `plan` and `resume` hand a [`crate::run::launch::Launch`] to the one way runs start).
//!
//! stdout carries what a command produces (a listing, a plan, a rendered timeline); stderr carries
//! progress and diagnostics, so `runbook show x > x.md` and `runbook plan ... | tee` work.

mod args;
mod check;
mod drill;
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
use crate::runbook::catalog;
use crate::sandbox::engine::Host;
use crate::sandbox::recorder::Mode;
use args::{Cli, Command, DocsTopic, LogFormat};

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
}

fn dispatch(cli: Cli) -> Result<()> {
    let g = Global {
        dirs: catalog::search_dirs(&cli.runbooks),
        config: cli.config,
        quiet: cli.quiet,
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
            check::check(&g.dirs, &paths, output)?;
            if policy {
                check::policy(&g.dirs, &alerts, &results, now, output)?;
            }
            Ok(())
        }
        Command::Drill(args) => drill::drill(&g, &args),
        Command::Replay(args) => drill::replay(&g, args),
        Command::List { output } => check::list(&g.dirs, output),
        Command::Show { target } => check::show(&g.dirs, &target),
        Command::Transcript(cmd) => transcript::command(&g, cmd),
        Command::State(cmd) => {
            use crate::services::state::ops;
            let config = crate::data::config::Config::load(g.config.as_deref())?;
            println!(
                "{}",
                match cmd {
                    args::StateCommand::Init => ops::init(config.state())?,
                    args::StateCommand::Check => ops::check(config.state())?,
                }
            );
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
            check: _,
            healthcheck: Some(url),
        } => serve::healthcheck(&hooks, &url, listen, addr_file.as_deref()),
        Command::Serve {
            hooks,
            listen,
            addr_file,
            check,
            healthcheck: None,
        } => serve::serve(g, &hooks, listen, addr_file.as_deref(), check),
        Command::Hook {
            source,
            hooks,
            reset_breakers,
            scope,
        } => serve::hook(g, source, &hooks, reset_breakers, scope.as_deref()),
        Command::Docs { topic } => {
            match topic {
                DocsTopic::Api => print!("{}", crate::front::docs::markdown()?),
                DocsTopic::Drills => print!("{}", crate::front::drill::format_reference()),
                DocsTopic::Transcript => print!("{}", crate::data::transcript::format_reference()),
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
fn silent_host(mode: Mode) -> Rc<Host> {
    Host::new(mode, Console::silent(), Arc::new(AtomicBool::new(false)))
}
