//! `runbook drill`: runs scenario files and writes their records and reports.

use super::Global;
use super::args::{DrillArgs, DrillCommand, Output, ReplayArgs};
use crate::base::error::{Error, Result};

pub(super) fn drill(g: &Global, args: &DrillArgs) -> Result<()> {
    let DrillArgs {
        command,
        targets,
        drills,
        out,
        results,
        junit,
        report,
        jobs,
        output,
    } = args;
    let json = *output == Output::Json;
    if let Some(DrillCommand::Capture { transcript }) = command {
        if json {
            return Err(Error::Usage(
                "`drill capture` writes a TOML scenario: --output json does not apply".into(),
            ));
        }
        super::out(&crate::front::capture::capture(transcript)?);
        return Ok(());
    }
    use crate::data::config::in_project;
    let drills = &in_project(drills.as_deref(), "drills");
    let out = &in_project(out.as_deref(), "drills/out");
    let results = &in_project(results.as_deref(), "drills/results");
    let dirs = &g.dirs;
    let files = crate::front::drill::scenarios(targets, drills)?;
    if files.is_empty() {
        return Err(Error::Usage(format!(
            "no drill scenarios in {}",
            drills.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io("cannot create", out, e))?;
    let outcomes = crate::front::drill::run_all(&files, dirs, out, *jobs);
    if !json {
        for (file, r) in &outcomes {
            super::out(&format!("{}\n", crate::front::drill::summary_line(file, r)));
        }
    }
    let today = chrono::Utc::now().date_naive().to_string();
    let passed: Vec<&crate::front::drill::Outcome> = outcomes
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .collect();
    crate::front::drill::write_records(&passed, results, &today)?;
    if let Some(path) = junit {
        std::fs::write(path, crate::front::drill::junit(&outcomes)?)
            .map_err(|e| Error::io("cannot write", path, e))?;
    }
    if let Some(path) = report {
        std::fs::write(path, crate::front::drill::markdown(&outcomes))
            .map_err(|e| Error::io("cannot write", path, e))?;
    }
    let failed = outcomes
        .iter()
        .filter(|(_, r)| !r.as_ref().is_ok_and(|o| o.passed))
        .count();
    let result = if failed > 0 {
        Err(Error::DrillsFailed { count: failed })
    } else {
        Ok(())
    };
    if json {
        let drills: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|(file, r)| match r {
                Ok(o) => serde_json::json!({
                    "file": file.display().to_string(),
                    "scenario": o.scenario,
                    "runbook": o.runbook,
                    "version": o.version,
                    "status": if o.passed { "passed" } else { "failed" },
                    "run_status": o.status,
                    "failures": o.failures,
                    "duration_ms": o.duration_ms,
                    "wall_ms": o.wall_ms,
                    "clock": o.clock,
                    "transcript": o.transcript.display().to_string(),
                }),
                Err(e) => serde_json::json!({
                    "file": file.display().to_string(),
                    "status": "error",
                    "failures": [e.to_string()],
                }),
            })
            .collect();
        let doc = serde_json::json!({
            "status": if failed > 0 { "failed" } else { "passed" },
            "passed": outcomes.len().saturating_sub(failed),
            "failed": failed,
            "drills": drills,
        });
        return super::json::finish("drill", doc, result);
    }
    super::out(&format!(
        "{} drill(s): {} passed, {failed} failed\n",
        outcomes.len(),
        outcomes.len().saturating_sub(failed)
    ));
    result
}

/// `runbook replay`: the report on stdout (text or JSON), the exit code from what it found.
pub(super) fn replay(g: &Global, args: ReplayArgs) -> Result<()> {
    let ReplayArgs {
        transcript,
        runbook,
        params,
        output,
    } = args;
    let report = crate::run::replay::replay(crate::run::replay::Replay {
        transcript,
        runbook,
        dirs: g.dirs.clone(),
        params,
    })?;
    let result = if report.matches {
        Ok(())
    } else {
        Err(Error::ReplayDiverged {
            count: report.divergences.len(),
        })
    };
    match output {
        Output::Json => super::json::finish(
            "replay",
            serde_json::to_value(&report).map_err(|e| Error::Internal(e.to_string()))?,
            result,
        ),
        Output::Human => {
            super::out(&report.text());
            result
        }
    }
}
