//! Planning: every route's runbook located at its pinned version and checked with its
//! parameters and environment at start-up, and `runbook serve --check`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::super::config::{Hooks, Route};
use crate::base::console::Console;
use crate::base::error::{Error, Result};
use crate::data::config::Config;
use crate::runbook::catalog::{self, Target};
use crate::sandbox::engine::Host;
use crate::sandbox::recorder::Mode;

/// A route checked at start-up: its runbook located, its environment selected (once: each run
/// gets a copy, so no run re-reads runbook.toml's fleet fixture).
pub(super) struct Planned {
    pub(super) file: PathBuf,
    pub(super) target: Target,
    pub(super) env: crate::data::config::Environment,
    /// The runbook's declared severity (escalations use it when the alert has none).
    pub(super) severity: String,
}

/// Plans every route (see [`plan_route`]), reporting every problem at once.
pub(super) fn plan_all(
    hooks: &Hooks,
    dirs: &[PathBuf],
    config: &Config,
) -> Result<BTreeMap<String, Planned>> {
    let mut planned = BTreeMap::new();
    let mut problems = Vec::new();
    for route in &hooks.file.routes {
        match plan_route(route, dirs, config) {
            Ok(p) => {
                planned.insert(route.name.clone(), p);
            }
            Err(e) => problems.push(format!("route {:?}: {e}", route.name)),
        }
    }
    if problems.is_empty() {
        Ok(planned)
    } else {
        Err(Error::config(
            &hooks.path,
            format!("\n  {}", problems.join("\n  ")),
        ))
    }
}

/// `runbook serve --check`: the configuration checked whole, with nothing started or written.
/// Returns one line per route.
pub(crate) fn check(hooks: &Hooks, dirs: &[PathBuf], config: &Config) -> Result<Vec<String>> {
    super::slack_secret_required(hooks)?;
    let planned = plan_all(hooks, dirs, config)?;
    Ok(hooks
        .file
        .routes
        .iter()
        .filter_map(|r| Some((r, planned.get(&r.name)?)))
        .map(|(r, p)| {
            let (file, env) = (p.file.display().to_string(), &p.env);
            let mut flags = Vec::new();
            if r.allow_confirm {
                flags.push("allow_confirm");
            }
            if env.protected {
                flags.push(if r.allow_protected {
                    "protected (allowed)"
                } else {
                    "protected (refused: escalates)"
                });
            }
            format!(
                "{}: {}{} -> {} ({file}) on {}{}",
                r.name,
                r.alert,
                r.source
                    .map(|s| format!(" from {}", s.as_str()))
                    .unwrap_or_default(),
                r.runbook,
                env.name,
                if flags.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", flags.join(", "))
                }
            )
        })
        .collect())
}

/// Locates a route's runbook at its pinned version and checks its parameters and environment.
fn plan_route(route: &Route, dirs: &[PathBuf], config: &Config) -> Result<Planned> {
    let target = Target::parse(&route.runbook);
    let file = catalog::locate(&target, dirs, catalog::id_of)?;
    let host = Host::new(
        Mode::Plan,
        Console::silent(),
        Arc::new(AtomicBool::new(false)),
    );
    let rb = catalog::load_at(&file, &target, host)?;
    let unknown: Vec<&String> = route
        .params
        .keys()
        .filter(|k| rb.param(k).is_none())
        .collect();
    if !unknown.is_empty() {
        return Err(Error::Input(format!(
            "{} has no parameter(s) {}",
            route.runbook,
            unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // A literal value (no `{...}` placeholder) is known now: check it as `--param` would be.
    let refused: Vec<String> = route
        .params
        .iter()
        .filter(|(_, template)| !template.contains('{'))
        .filter_map(|(name, text)| rb.param_text_problem(name, text))
        .collect();
    if !refused.is_empty() {
        return Err(Error::Usage(format!(
            "{}: {}",
            route.runbook,
            refused.join("; ")
        )));
    }
    let env = config.select(route.environment.as_deref())?;
    Ok(Planned {
        file,
        target,
        env,
        severity: rb.meta.severity.as_str().to_string(),
    })
}
