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
    } = args;
    if let Some(DrillCommand::Capture { transcript }) = command {
        let text = crate::front::capture::capture(transcript)?;
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
        return Ok(());
    }
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
    for (file, r) in &outcomes {
        println!("{}", crate::front::drill::summary_line(file, r));
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
    let text = match output {
        Output::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&report).map_err(|e| Error::Internal(e.to_string()))?
        ),
        Output::Human => report.text(),
    };
    // A closed pipe (`| head`) is the reader's choice, not a failure of the replay.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    if report.matches {
        Ok(())
    } else {
        Err(Error::ReplayDiverged {
            count: report.divergences.len(),
        })
    }
}
