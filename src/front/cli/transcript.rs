//! `runbook transcript verify|show|render`.

use super::args::{RenderFormat, TranscriptCommand};
use crate::base::error::{Error, Result};
use crate::data::transcript;

pub(super) fn command(cmd: TranscriptCommand) -> Result<()> {
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
        TranscriptCommand::Render { file, format } => {
            let (events, report) = transcript::read_verified(&file)?;
            if report.kind == transcript::Kind::Journal {
                return Err(Error::Usage(format!(
                    "{} is a hook journal, not a run: `runbook transcript show` prints it",
                    file.display()
                )));
            }
            let text = match format {
                RenderFormat::Md => transcript::render_markdown(&events, &report, &file),
                RenderFormat::Html => transcript::render_html(&events, &report, &file),
            };
            print!("{text}");
            Ok(())
        }
    }
}
