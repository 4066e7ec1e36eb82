//! `runbook approve` and `runbook repl`: a person acting on runs by hand.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::Global;
use crate::base::console::Console;
use crate::base::error::Result;
use crate::run::executor;
use crate::sandbox::engine::{Host, HostParts};
use crate::sandbox::recorder::Mode;

pub(super) fn approve(
    g: &Global,
    run_id: &str,
    transcript: Option<PathBuf>,
    request: Option<u32>,
    deny: bool,
) -> Result<()> {
    use crate::services::approvals::Answering;
    // With the `aws` state backend the request is in the table (any machine, any folder);
    // otherwise in the folder next to the run's transcript on this host.
    let config = g.load_config()?;
    let at = match (
        transcript,
        crate::services::state::Store::open(config.state())?,
    ) {
        (Some(p), _) => Answering::Local(p),
        (None, crate::services::state::Store::Aws(store)) => Answering::Table(store),
        (None, crate::services::state::Store::Local(_)) => {
            Answering::Local(crate::services::approvals::find_transcript(run_id)?)
        }
    };
    let (r, who) = crate::services::approvals::answer(run_id, at, request, !deny)?;
    super::out(&r.describe());
    super::out(&format!(
        "{} request {} of run {} as {}: {}\n",
        if deny { "denied" } else { "approved" },
        r.number,
        r.run_id,
        who.display(),
        r.question
    ));
    Ok(())
}

pub(super) fn repl(
    g: &Global,
    env: Option<&str>,
    transcript: Option<PathBuf>,
    plan: bool,
) -> Result<()> {
    let config = g.load_config()?;
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
