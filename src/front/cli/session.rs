//! `runbook approve` and `runbook repl`: a person acting on runs by hand.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::Global;
use crate::base::console::Console;
use crate::base::error::Result;
use crate::data::config::Config;
use crate::run::executor;
use crate::sandbox::engine::{Host, HostParts};
use crate::sandbox::recorder::Mode;

pub(super) fn approve(
    run_id: &str,
    transcript: Option<PathBuf>,
    request: Option<u32>,
    deny: bool,
) -> Result<()> {
    let path = match transcript {
        Some(p) => p,
        None => crate::services::approvals::find_transcript(run_id)?,
    };
    let r = crate::services::approvals::answer(&path, request, !deny)?;
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

pub(super) fn repl(
    g: &Global,
    env: Option<&str>,
    transcript: Option<PathBuf>,
    plan: bool,
) -> Result<()> {
    let config = Config::load(g.config.as_deref())?;
    let env = config.select(env)?;
    let name = env.name.clone();
    // The REPL has no per-step confirmation: a protected environment is plan-only.
    let mode = if plan || env.protected {
        Mode::Plan
    } else {
        Mode::Run
    };
    let mut parts = HostParts::new(
        mode,
        Console::detect(g.quiet),
        Arc::new(AtomicBool::new(false)),
        crate::services::cloud::CloudAccess::new(env),
    );
    // The session's clock follows the mode it started in, as a run's does.
    parts.simulated_clock = plan;
    let host = Host::build(parts);
    crate::run::launch::on_ctrl_c(&host);
    let id = crate::base::identity::new_run_id();
    let path =
        transcript.unwrap_or_else(|| executor::default_transcript_path(&format!("repl-{id}")));
    crate::front::repl::run(host, path, &name, &crate::base::identity::operator())
}
