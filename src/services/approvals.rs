//! Approvals: a run asks, a person answers, both recorded.
//!
//! A request is a file next to the transcript (`<run>.approvals/<n>.request.json`); an answer is
//! another file written by `runbook approve RUN_ID` in a second shell, under the approver's
//! identity (`<n>.answer.<identity>.json`). Files keep the mechanism working across processes and
//! machines that share the transcript folder, with nothing to run beside the runbook. The waiting
//! run polls, honours its step timeout and Ctrl-C, and records who approved or denied, and when.
//! When `others` is set, the requester's own answer does not count: four eyes, enforced.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::base::console::Console;
use crate::base::error::{BindingError, Error, Result};
use crate::base::interrupt::Interrupt;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Request {
    pub run_id: String,
    pub number: u32,
    pub question: String,
    pub requester: String,
    /// Approvals needed (distinct people).
    pub approvers: u32,
    /// The requester's own answer does not count.
    pub others: bool,
    pub created: String,
    /// What is being approved, for the approver to read before answering (absent in requests
    /// filed by older versions): `id@version` of the runbook, the step, the transcript.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
}

impl Request {
    /// The request as `runbook approve` shows it before answering.
    pub(crate) fn describe(&self) -> String {
        let mut out = format!(
            "request {} of run {}
",
            self.number, self.run_id
        );
        for (label, value) in [
            ("runbook", self.runbook.as_deref()),
            ("step", self.step.as_deref()),
            ("transcript", self.transcript.as_deref()),
        ] {
            if let Some(v) = value {
                out.push_str(&format!(
                    "  {label:<10} {v}
"
                ));
            }
        }
        out.push_str(&format!(
            "  {:<10} {} at {}
  {:<10} {}
  {:<10} {} approval(s){}
",
            "asked by",
            self.requester,
            self.created,
            "question",
            self.question,
            "needs",
            self.approvers,
            if self.others {
                ", not the requester's own"
            } else {
                ""
            }
        ));
        out
    }
}

/// Writes `text` to `path` without ever writing through a symlink: into a new private (0600)
/// file beside it, then linked (`create_new`: refuses to replace anything) or renamed (replaces
/// the name itself, never what a link there points at) into place. Readers see whole files.
fn write_private(path: &Path, text: &str, replace: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        crate::base::identity::new_run_id()
    ));
    let mut file = crate::data::transcript::create_private(&tmp)?;
    let done = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_data())
        .and_then(|()| {
            if replace {
                std::fs::rename(&tmp, path)
            } else {
                std::fs::hard_link(&tmp, path)
            }
        });
    let _ = std::fs::remove_file(&tmp);
    done
}

/// What the transcript says about the run and the step asking, for the request.
fn describe_run(transcript: &Path, step: Option<usize>) -> (Option<String>, Option<String>) {
    use std::io::BufRead as _;
    let first: Option<serde_json::Value> = std::fs::File::open(transcript).ok().and_then(|f| {
        let mut line = String::new();
        std::io::BufReader::new(f).read_line(&mut line).ok()?;
        serde_json::from_str(&line).ok()
    });
    let Some(first) = first else {
        return (None, None);
    };
    let runbook = first["runbook"]["id"].as_str().map(|id| {
        format!(
            "{id}@{} ({})",
            first["runbook"]["version"].as_str().unwrap_or("?"),
            first["runbook"]["title"].as_str().unwrap_or("?")
        )
    });
    let steps = first["steps"].as_array();
    let step = step.map(|i| {
        let s = steps.and_then(|s| s.get(i));
        format!(
            "{}/{} {:?} ({})",
            i + 1,
            steps.map_or(0, Vec::len),
            s.and_then(|s| s["title"].as_str()).unwrap_or("?"),
            s.and_then(|s| s["phase"].as_str()).unwrap_or("?")
        )
    });
    (runbook, step)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Answer {
    pub approver: String,
    pub approve: bool,
    pub at: String,
}

/// The approvals folder of a transcript.
pub(crate) fn folder(transcript: &Path) -> PathBuf {
    transcript.with_extension("approvals")
}

/// Identities become file names: keep them to a safe alphabet.
fn file_safe(identity: &str) -> String {
    identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn answers(dir: &Path, number: u32) -> Vec<Answer> {
    let prefix = format!("{number}.answer.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect()
}

/// Asks the operator at the terminal: Some(true) approves, Some(false) denies, None stops.
pub(crate) type Ask = dyn FnMut(&str) -> Option<bool>;

/// How a wait for approval ended.
pub(crate) struct Outcome {
    pub approved_by: Vec<String>,
    pub waited: Duration,
}

/// The run asking: what a request is filed next to and describes, and where the wait is shown
/// and interrupted.
pub(crate) struct Asker<'a> {
    /// The run's transcript (None: the run keeps none, so there is nowhere to file a request).
    pub transcript: Option<PathBuf>,
    /// The step asking (0-based), if a step is.
    pub step: Option<usize>,
    pub console: &'a Console,
    pub interrupt: &'a Interrupt,
}

/// Files a request and waits for enough approvals, a denial, the timeout, or an interrupt.
/// `ask_here` is the terminal (interactive runs): its answer counts as the operator's.
pub(crate) fn request_and_wait(
    run: Asker,
    question: &str,
    approvers: u32,
    others: bool,
    timeout: Duration,
    ask_here: Option<&mut Ask>,
) -> Result<Outcome, BindingError> {
    let transcript = run.transcript.ok_or_else(|| {
        BindingError::new("no_transcript", "approvals need a run with a transcript")
    })?;
    let dir = folder(&transcript);
    crate::data::transcript::create_private_dir(&dir)
        .map_err(|e| BindingError::new("io", format!("cannot create {}: {e}", dir.display())))?;
    let requester = crate::base::identity::operator();
    let run_id = transcript
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (runbook, step) = describe_run(&transcript, run.step);
    let mut number = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".request.json"))
                .count()
        })
        .unwrap_or(0) as u32;
    // Two requests filed at once take different numbers: linking into place claims one.
    let request = loop {
        number += 1;
        let request = Request {
            run_id: run_id.clone(),
            number,
            question: question.to_string(),
            requester: requester.clone(),
            approvers: approvers.max(1),
            others,
            created: crate::base::clock::now_utc(),
            runbook: runbook.clone(),
            step: step.clone(),
            transcript: Some(transcript.display().to_string()),
        };
        let text = serde_json::to_string_pretty(&request)
            .map_err(|e| BindingError::new("internal", e.to_string()))?;
        match write_private(&dir.join(format!("{number}.request.json")), &text, false) {
            Ok(()) => break request,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && number < 10_000 => {}
            Err(e) => {
                return Err(BindingError::new(
                    "io",
                    format!("cannot file the approval request: {e}"),
                ));
            }
        }
    };
    run.console.line(&format!(
        "    approval needed: {question}\n    (waiting up to {}; approve with: runbook approve {run_id})",
        humantime::format_duration(timeout)
    ));

    let started = Instant::now();
    let mut approved: Vec<String> = Vec::new();
    if let (Some(ask), false) = (ask_here, others) {
        match ask(&format!(
            "approve \"{question}\"? type yes to approve, no to deny: "
        )) {
            Some(true) => approved.push(requester.clone()),
            Some(false) => {
                return Err(BindingError::new(
                    "approval_denied",
                    format!("denied by {requester}"),
                ));
            }
            None => {
                return Err(BindingError::new(
                    "aborted",
                    "stopped at the approval prompt",
                ));
            }
        }
    }
    loop {
        for a in answers(&dir, number) {
            if others && a.approver == requester {
                continue;
            }
            if !a.approve {
                return Err(BindingError::new(
                    "approval_denied",
                    format!("denied by {}", a.approver),
                ));
            }
            if !approved.contains(&a.approver) {
                approved.push(a.approver);
            }
        }
        if approved.len() as u32 >= request.approvers {
            return Ok(Outcome {
                approved_by: approved,
                waited: started.elapsed(),
            });
        }
        if started.elapsed() >= timeout {
            return Err(BindingError::new(
                "approval_timeout",
                format!(
                    "{} of {} approval(s) within {}",
                    approved.len(),
                    request.approvers,
                    humantime::format_duration(timeout)
                ),
            ));
        }
        run.interrupt
            .sleep(Duration::from_millis(200))
            .map_err(|stop| {
                BindingError::new(stop.token(), "interrupted while waiting for approval")
            })?;
    }
}

/// Finds a run's transcript under the transcripts folder (`RUNBOOK_TRANSCRIPTS` or ./transcripts).
pub(crate) fn find_transcript(run_id: &str) -> Result<PathBuf> {
    let root = std::env::var_os("RUNBOOK_TRANSCRIPTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("transcripts"));
    let name = format!("{run_id}.jsonl");
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if e.file_name().to_string_lossy() == name {
                return Ok(path);
            }
        }
    }
    Err(Error::NotFound(format!(
        "run {run_id} (no {name} under {})",
        root.display()
    )))
}

/// `runbook approve`: answers the newest pending request of a run (or request `number`).
pub(crate) fn answer(transcript: &Path, number: Option<u32>, approve: bool) -> Result<Request> {
    let dir = folder(transcript);
    let mut requests: Vec<Request> = std::fs::read_dir(&dir)
        .map_err(|_| {
            Error::Usage(format!(
                "run {} has no approval requests",
                transcript.display()
            ))
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".request.json"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect();
    requests.sort_by_key(|r| r.number);
    let request = match number {
        Some(n) => requests.into_iter().find(|r| r.number == n),
        None => requests.into_iter().last(),
    }
    .ok_or_else(|| Error::Usage("no such approval request".into()))?;
    let me = crate::base::identity::operator();
    if request.others && me == request.requester {
        return Err(Error::Usage(format!(
            "{me} asked for this approval and it needs another person: the requester cannot approve their own run"
        )));
    }
    let answer = Answer {
        approver: me.clone(),
        approve,
        at: crate::base::clock::now_utc(),
    };
    let path = dir.join(format!("{}.answer.{}.json", request.number, file_safe(&me)));
    let text = serde_json::to_string_pretty(&answer).map_err(|e| Error::Internal(e.to_string()))?;
    write_private(&path, &text, true).map_err(|e| Error::io("cannot write", &path, e))?;
    Ok(request)
}
