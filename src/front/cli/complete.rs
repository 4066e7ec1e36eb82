//! Shell completion that knows the project: runbook ids (and `ID@VERSION`), environments and
//! parameter names, through clap_complete's dynamic completion. The shell runs
//! `RUNBOOK_COMPLETE=<shell> runbook -- <words>` at each Tab, and these functions answer from
//! the runbook folders and runbook.toml as they are now (`source <(RUNBOOK_COMPLETE=bash runbook)`
//! registers it; zsh and fish the same way).
//!
//! A completion must never fail loudly: a runbook that does not load is left out, a
//! runbook.toml that does not parse offers no environments.

use clap_complete::engine::CompletionCandidate;

use crate::data::config::Config;
use crate::runbook::{Runbook, catalog};
use crate::sandbox::recorder::Mode;

/// The environment variable the shells' registration scripts set.
pub(super) const VAR: &str = "RUNBOOK_COMPLETE";

/// The runbooks the command would search (`RUNBOOK_PATH`, else the project's runbooks/; a
/// `--runbooks` on the line being completed is not seen), loaded.
fn runbooks() -> Vec<Runbook> {
    let given: Vec<std::path::PathBuf> = std::env::var_os("RUNBOOK_PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    catalog::runbook_files(&catalog::search_dirs(&given))
        .iter()
        .filter_map(|f| Runbook::load(f, super::silent_host(Mode::Plan)).ok())
        .collect()
}

/// `ID` and `ID@VERSION` of every runbook, with its title.
pub(super) fn targets() -> Vec<CompletionCandidate> {
    let mut out = Vec::new();
    for rb in runbooks() {
        let title = rb.meta.title.clone();
        out.push(CompletionCandidate::new(rb.meta.id.clone()).help(Some(title.clone().into())));
        out.push(
            CompletionCandidate::new(format!("{}@{}", rb.meta.id, rb.meta.version))
                .help(Some(title.into())),
        );
    }
    out
}

/// `NAME=` for every parameter any runbook declares, with its description.
pub(super) fn params() -> Vec<CompletionCandidate> {
    let mut seen = std::collections::BTreeMap::new();
    for rb in runbooks() {
        for p in &rb.meta.params {
            seen.entry(p.name.clone()).or_insert_with(|| {
                let mut help = format!("{} (runbook {})", p.description, rb.meta.id);
                if p.description.is_empty() {
                    help = format!("runbook {}", rb.meta.id);
                }
                help
            });
        }
    }
    seen.into_iter()
        .map(|(name, help)| CompletionCandidate::new(format!("{name}=")).help(Some(help.into())))
        .collect()
}

/// The environments runbook.toml names (and the built-in `sim`).
pub(super) fn environments() -> Vec<CompletionCandidate> {
    Config::load(
        std::env::var_os("RUNBOOK_CONFIG")
            .as_deref()
            .map(std::path::Path::new),
    )
    .map(|c| c.names())
    .unwrap_or_default()
    .into_iter()
    .map(CompletionCandidate::new)
    .collect()
}
