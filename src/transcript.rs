//! The audit transcript: one append-only JSON-lines file per run, chained by hashes.
//!
//! Every line carries `seq`, `ts`, `prev` (the hash of the line before) and `hash`, the SHA-256 of
//! the line's canonical form (keys sorted, no spaces, `hash` left out). Changing, dropping or
//! reordering any line breaks the chain at that line, which is what `transcript verify` reports.
//!
//! Every string is redacted *before* hashing, so the chain covers exactly what is on disk and a
//! secret can never be recovered from it. Each line is written with one `write` call (no user-space
//! buffering) so a crashed process loses nothing it recorded; the file is also fsync'd at step
//! boundaries and after every mutating call, so a crashed *machine* loses nothing that finished.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::redact::Redactor;

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How a step ended. Recorded verbatim; drills and resume read it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Ok,
    Failed,
    Skipped,
    TimedOut,
    Aborted,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Ok => "ok",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::TimedOut => "timed_out",
            StepStatus::Aborted => "aborted",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Ok,
    Failed,
    TimedOut,
    Aborted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Aborted => "aborted",
        }
    }
}

/// Step counts by status, for `run_finished`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    pub ok: usize,
    pub failed: usize,
    pub skipped: usize,
    pub timed_out: usize,
    pub aborted: usize,
    pub not_run: usize,
}

impl Counts {
    pub fn add(&mut self, status: StepStatus) {
        match status {
            StepStatus::Ok => self.ok += 1,
            StepStatus::Failed => self.failed += 1,
            StepStatus::Skipped => self.skipped += 1,
            StepStatus::TimedOut => self.timed_out += 1,
            StepStatus::Aborted => self.aborted += 1,
        }
    }
}

/// Whether an event must be on disk before the run goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written to the OS (survives a process crash).
    Written,
    /// Written and fsync'd (survives a machine crash).
    Synced,
}

/// Appends events to one transcript file, keeping the hash chain.
pub struct TranscriptWriter {
    path: PathBuf,
    file: File,
    seq: u64,
    prev: String,
    redactor: Rc<Redactor>,
    /// Read by the benchmarks; when false, [`Durability::Synced`] behaves like `Written`.
    fsync: bool,
}

impl TranscriptWriter {
    /// Creates a new transcript; refuses to overwrite an existing file (a transcript is evidence).
    pub fn create(path: &Path, redactor: Rc<Redactor>) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("cannot create transcript folder", parent, e))?;
        }
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io("cannot create transcript", path, e))?;
        Ok(TranscriptWriter {
            path: path.to_path_buf(),
            file,
            seq: 0,
            prev: GENESIS.to_string(),
            redactor,
            fsync: true,
        })
    }

    /// Opens an existing, verified transcript to append to it (resume): the chain continues
    /// from its last line. Returns the writer and the events already in it.
    pub fn open_append(path: &Path, redactor: Rc<Redactor>) -> Result<(Self, Vec<Value>)> {
        let (events, report) = read_verified(path)?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io("cannot open transcript", path, e))?;
        let writer = TranscriptWriter {
            path: path.to_path_buf(),
            file,
            seq: events.len() as u64,
            prev: report.head,
            redactor,
            fsync: true,
        };
        Ok((writer, events))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Turns fsync off (benchmarks only: it measures the cost of the durability guarantee).
    pub fn set_fsync(&mut self, on: bool) {
        self.fsync = on;
    }

    /// Number of events written so far.
    pub fn len(&self) -> u64 {
        self.seq
    }

    pub fn is_empty(&self) -> bool {
        self.seq == 0
    }

    /// Appends one event. `event` must serialize to a JSON object with a `type` field.
    pub fn append(&mut self, event: &impl Serialize, durability: Durability) -> Result<()> {
        let body = serde_json::to_value(event).map_err(|e| {
            Error::io(
                "cannot encode event for",
                &self.path,
                std::io::Error::other(e),
            )
        })?;
        let mut line = Map::new();
        line.insert("seq".into(), json!(self.seq));
        line.insert("ts".into(), json!(now_utc()));
        if let Value::Object(fields) = body {
            for (k, v) in fields {
                line.insert(k, v);
            }
        }
        // The chain's own fields win over an event's: an event carrying a `seq` would otherwise
        // write a line the reader refuses. (Re-inserting keeps `seq` first in the line.)
        line.insert("seq".into(), json!(self.seq));
        line.insert("prev".into(), json!(self.prev));
        let mut line = Value::Object(line);
        self.redactor.redact_json(&mut line);
        let hash = hash_line(&line);
        if let Value::Object(map) = &mut line {
            map.insert("hash".into(), json!(hash));
        }
        let mut text = line.to_string();
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .map_err(|e| Error::io("cannot write transcript", &self.path, e))?;
        if durability == Durability::Synced && self.fsync {
            self.file
                .sync_data()
                .map_err(|e| Error::io("cannot sync transcript", &self.path, e))?;
        }
        self.seq += 1;
        self.prev = hash;
        crash_point();
        Ok(())
    }
}

/// Test hook for the crash tests: with `RUNBOOK_TEST_KILL_AFTER_EVENTS=N` the process kills
/// itself with SIGKILL right after writing its Nth event, exactly like `kill -9` from outside
/// but at a chosen point. Never set in production; read once.
fn crash_point() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LIMIT: std::sync::LazyLock<Option<u64>> = std::sync::LazyLock::new(|| {
        std::env::var("RUNBOOK_TEST_KILL_AFTER_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    static WRITTEN: AtomicU64 = AtomicU64::new(0);
    let Some(limit) = *LIMIT else { return };
    if WRITTEN.fetch_add(1, Ordering::SeqCst) + 1 == limit {
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        // The signal is on its way; nothing more may be written.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

/// UTC with milliseconds, the one timestamp format of the project.
pub fn now_utc() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// SHA-256 of the canonical form of `line` without its `hash` field.
fn hash_line(line: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(line, &mut canonical, true);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Compact JSON with object keys sorted, recursively. `skip_hash` drops the top-level `hash`.
fn write_canonical(value: &Value, out: &mut String, skip_hash: bool) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .keys()
                .filter(|k| !(skip_hash && *k == "hash"))
                .collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&map[k.as_str()], out, false);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out, false);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// What a verified transcript holds, in brief.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub events: usize,
    pub head: String,
    pub runbook: Option<String>,
    pub run_id: Option<String>,
    /// `run_finished.status`, or None when the run never finished (crash, or still running).
    pub finished: Option<String>,
}

/// Reads and checks a transcript. Returns its events, or the first broken line (1-based).
pub fn read_verified(path: &Path) -> Result<(Vec<Value>, VerifyReport)> {
    let file = File::open(path).map_err(|e| Error::io("cannot open transcript", path, e))?;
    read_verified_from(BufReader::new(file), path)
}

/// [`read_verified`] of a transcript from any reader (`path` names it in errors). For the fuzz
/// targets (`fuzz/`), which check millions of generated transcripts without files.
#[doc(hidden)]
pub fn read_verified_from(reader: impl BufRead, path: &Path) -> Result<(Vec<Value>, VerifyReport)> {
    let broken = |line: usize, reason: String| Error::TranscriptBroken {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut prev = GENESIS.to_string();
    let mut events = Vec::new();
    for (i, raw) in reader.split(b'\n').enumerate() {
        let lineno = i + 1;
        let raw = raw.map_err(|e| Error::io("cannot read transcript", path, e))?;
        let text = std::str::from_utf8(&raw).map_err(|_| broken(lineno, "not UTF-8".into()))?;
        let value: Value = serde_json::from_str(text)
            .map_err(|e| broken(lineno, format!("not a JSON event ({e})")))?;
        let Some(obj) = value.as_object() else {
            return Err(broken(lineno, "not a JSON object".into()));
        };
        let stored = obj.get("hash").and_then(Value::as_str).unwrap_or_default();
        let computed = hash_line(&value);
        if stored != computed {
            return Err(broken(
                lineno,
                "hash does not match the line's content (the line was changed)".into(),
            ));
        }
        if obj.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            return Err(broken(
                lineno,
                "prev does not match the hash of the line before (a line was removed, added or moved)"
                    .into(),
            ));
        }
        if obj.get("seq").and_then(Value::as_u64) != Some(i as u64) {
            return Err(broken(lineno, format!("seq should be {i}")));
        }
        // A run's transcript opens with run_started; the hook journal, written by the same
        // writer, with journal_started.
        if i == 0
            && !matches!(
                obj.get("type").and_then(Value::as_str),
                Some("run_started" | "journal_started")
            )
        {
            return Err(broken(
                lineno,
                "the first event must be run_started (or journal_started)".into(),
            ));
        }
        prev = computed;
        events.push(value);
    }
    if events.is_empty() {
        return Err(broken(1, "the transcript is empty".into()));
    }
    let first = &events[0];
    let finished = events
        .iter()
        .rev()
        .find(|e| e["type"] == "run_finished")
        .and_then(|e| e["status"].as_str())
        .map(str::to_string);
    let report = VerifyReport {
        events: events.len(),
        head: prev,
        runbook: first["runbook"]["id"].as_str().map(|id| {
            format!(
                "{id}@{}",
                first["runbook"]["version"].as_str().unwrap_or("?")
            )
        }),
        run_id: first["run_id"].as_str().map(str::to_string),
        finished,
    };
    Ok((events, report))
}

fn ms(v: &Value) -> String {
    match v.as_u64() {
        Some(ms) if ms >= 1000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => format!("{ms} ms"),
        None => "-".into(),
    }
}

/// Shortens long values for one-line display (the transcript itself keeps them whole).
fn clip(text: &str) -> String {
    const MAX: usize = 160;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// Time of day (`HH:MM:SS.mmm`) of an event.
fn clock(e: &Value) -> &str {
    let ts = e["ts"].as_str().unwrap_or("");
    ts.get(11..23).unwrap_or(ts)
}

fn step_label(steps: &[Value], index: &Value) -> String {
    index
        .as_u64()
        .and_then(|i| steps.get(i as usize))
        .map(|s| {
            format!(
                "{} · {}",
                s["phase"].as_str().unwrap_or("?"),
                s["title"].as_str().unwrap_or("?")
            )
        })
        .unwrap_or_else(|| "run".into())
}

fn error_text(e: &Value) -> String {
    match e {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => {
            let msg = other["message"].as_str().unwrap_or("");
            match other["location"].as_str() {
                Some(loc) => format!("{msg} (at {loc})"),
                None => msg.to_string(),
            }
        }
    }
}

/// A readable timeline of a (verified) transcript, one line per event.
pub fn show(events: &[Value]) -> String {
    let first = &events[0];
    let steps = first["steps"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {} · {}@{} · {} · env {} · by {}",
        first["run_id"].as_str().unwrap_or("?"),
        first["runbook"]["id"].as_str().unwrap_or("?"),
        first["runbook"]["version"].as_str().unwrap_or("?"),
        first["mode"].as_str().unwrap_or("?"),
        first["environment"].as_str().unwrap_or("?"),
        first["operator"].as_str().unwrap_or("?"),
    );
    for e in events {
        let t = clock(e);
        let line = match e["type"].as_str().unwrap_or("") {
            "run_started" => format!("run started ({} steps)", steps.len()),
            "step_started" => format!(
                "▶ {} (attempt {})",
                step_label(&steps, &e["step"]),
                e["attempt"]
            ),
            "call" => {
                let tag = if e["planned"] == true {
                    "would call"
                } else if e["mutating"] == true {
                    "call [write]"
                } else {
                    "call"
                };
                let tail = if e["error"].is_null() {
                    e["result"].to_string()
                } else {
                    format!("error: {}", error_text(&e["error"]))
                };
                format!(
                    "  {tag} {}({}) → {} [{}]",
                    e["binding"].as_str().unwrap_or("?"),
                    clip(&e["args"].to_string()),
                    clip(&tail),
                    ms(&e["duration_ms"])
                )
            }
            "intent" => format!(
                "  sending {}({})",
                e["binding"].as_str().unwrap_or("?"),
                clip(&e["args"].to_string())
            ),
            "log" => format!(
                "  {}: {}",
                e["level"].as_str().unwrap_or("log"),
                e["message"].as_str().unwrap_or("")
            ),
            "decision" => format!(
                "  decision: {} by {} ({})",
                e["action"].as_str().unwrap_or("?"),
                e["by"].as_str().unwrap_or("?"),
                e["reason"].as_str().unwrap_or("")
            ),
            "retry" => format!(
                "  retry #{} in {} after: {}",
                e["attempt"],
                ms(&e["delay_ms"]),
                error_text(&e["error"])
            ),
            "on_failure_started" => "  ↺ on_failure started".to_string(),
            "on_failure_finished" => format!(
                "  ↺ on_failure {} [{}] {}",
                e["status"].as_str().unwrap_or("?"),
                ms(&e["duration_ms"]),
                error_text(&e["error"])
            ),
            "step_finished" => format!(
                "■ {} {} [{}] {}",
                step_label(&steps, &e["step"]),
                e["status"].as_str().unwrap_or("?"),
                ms(&e["duration_ms"]),
                error_text(&e["error"])
            ),
            "run_finished" => format!(
                "run {} [{}] {}",
                e["status"].as_str().unwrap_or("?"),
                ms(&e["duration_ms"]),
                e["reason"].as_str().unwrap_or("")
            ),
            other => other.to_string(),
        };
        let _ = writeln!(out, "{t}  {}", line.trim_end());
    }
    out
}

/// Escapes text for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// An incident timeline in Markdown for the post-incident review, after the seed's
/// communication templates (initial incident report, resolution notification).
pub fn render_markdown(events: &[Value], report: &VerifyReport, path: &Path) -> String {
    let first = &events[0];
    let rb = &first["runbook"];
    let steps = first["steps"].as_array().cloned().unwrap_or_default();
    let last = events.last().unwrap_or(first);
    let finished = events.iter().rev().find(|e| e["type"] == "run_finished");
    let status = finished
        .and_then(|e| e["status"].as_str())
        .unwrap_or("unfinished (no run_finished: the run crashed or is still going)");
    let incident = first["params"]["incident"]
        .as_str()
        .unwrap_or_else(|| first["run_id"].as_str().unwrap_or("?"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Incident timeline: {}\n",
        rb["title"].as_str().unwrap_or("?")
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    let rows = [
        ("Incident", incident.to_string()),
        (
            "Severity",
            rb["severity"].as_str().unwrap_or("?").to_string(),
        ),
        (
            "Runbook",
            format!(
                "`{}@{}` (sha256 `{}`)",
                rb["id"].as_str().unwrap_or("?"),
                rb["version"].as_str().unwrap_or("?"),
                rb["sha256"]
                    .as_str()
                    .unwrap_or("?")
                    .get(..12)
                    .unwrap_or("?")
            ),
        ),
        (
            "Run",
            format!("`{}`", first["run_id"].as_str().unwrap_or("?")),
        ),
        ("Mode", first["mode"].as_str().unwrap_or("?").to_string()),
        (
            "Environment",
            first["environment"].as_str().unwrap_or("?").to_string(),
        ),
        (
            "Operator",
            first["operator"].as_str().unwrap_or("?").to_string(),
        ),
        ("Started", first["ts"].as_str().unwrap_or("?").to_string()),
        ("Last event", last["ts"].as_str().unwrap_or("?").to_string()),
        ("Status", status.to_string()),
        ("Parameters", format!("`{}`", first["params"])),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {} |", cell(&v));
    }

    let _ = writeln!(out, "\n## Timeline (UTC)\n");
    let _ = writeln!(out, "| Time | Step | Event |\n|---|---|---|");
    for e in events {
        let what = match e["type"].as_str().unwrap_or("") {
            "step_started" => format!("started (attempt {})", e["attempt"]),
            "step_finished" => {
                let err = error_text(&e["error"]);
                format!(
                    "**{}** in {}{}",
                    e["status"].as_str().unwrap_or("?"),
                    ms(&e["duration_ms"]),
                    if err.is_empty() {
                        String::new()
                    } else {
                        format!(": {err}")
                    }
                )
            }
            "call" if e["mutating"] == true => format!(
                "{} `{}` {}",
                if e["planned"] == true {
                    "would change"
                } else {
                    "changed"
                },
                e["binding"].as_str().unwrap_or("?"),
                if e["error"].is_null() {
                    String::new()
                } else {
                    format!("— failed: {}", error_text(&e["error"]))
                }
            ),
            "decision" => format!(
                "decision: {} by {} ({})",
                e["action"].as_str().unwrap_or("?"),
                e["by"].as_str().unwrap_or("?"),
                e["reason"].as_str().unwrap_or("")
            ),
            "retry" => format!("retry after: {}", error_text(&e["error"])),
            "on_failure_finished" => {
                format!("rollback {}", e["status"].as_str().unwrap_or("?"))
            }
            "run_finished" => format!("run **{}**", e["status"].as_str().unwrap_or("?")),
            _ => continue,
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            clock(e),
            cell(&step_label(&steps, &e["step"])),
            cell(&what)
        );
    }

    let duration = finished
        .map(|e| ms(&e["duration_ms"]))
        .unwrap_or("-".into());
    let _ = writeln!(out, "\n## Notification\n\n```");
    if status == "ok" {
        let _ = writeln!(
            out,
            "✅ INCIDENT RESOLVED\nIncident: #{incident}\nDuration: {duration}\nRoot Cause: (to be completed in the post-incident review)\nResolution: {} ran to completion\nPost-mortem: [Link to document]",
            rb["id"].as_str().unwrap_or("?")
        );
    } else {
        let _ = writeln!(
            out,
            "🚨 INCIDENT ALERT 🚨\nSeverity: {}\nEnvironment: {}\nService: {}\nDescription: runbook {} ended {}\nStarted: {}\nStatus: Investigating\nIncident Commander: {}",
            rb["severity"].as_str().unwrap_or("?"),
            first["environment"].as_str().unwrap_or("?"),
            rb["service"].as_str().unwrap_or("?"),
            rb["id"].as_str().unwrap_or("?"),
            status,
            first["ts"].as_str().unwrap_or("?"),
            first["operator"].as_str().unwrap_or("?"),
        );
    }
    let _ = writeln!(out, "```");
    let _ = writeln!(
        out,
        "\n## Integrity\n\n`{}`: {} events, hash chain verified, head `{}`.",
        path.display(),
        report.events,
        report.head
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_keys_at_every_depth() {
        let v = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": "x"}, "hash": "h"});
        let mut s = String::new();
        write_canonical(&v, &mut s, true);
        assert_eq!(s, r#"{"a":{"c":"x","d":[1,{"y":1,"z":0}]},"b":1}"#);
    }

    #[test]
    fn an_event_with_its_own_seq_field_still_writes_a_verifiable_chain() {
        // Seen with the `transcript` fuzz target's writer mode (docs/fuzzing.md): the event's
        // `seq` replaced the chain's, and the reader refused line 1.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut w = TranscriptWriter::create(&path, Rc::new(Redactor::new())).unwrap();
        w.append(
            &json!({"type": "run_started", "seq": 5, "prev": "x", "hash": "y"}),
            Durability::Written,
        )
        .unwrap();
        w.append(&json!({"type": "log", "seq": "one"}), Durability::Written)
            .unwrap();
        let (events, report) = read_verified(&path).unwrap();
        assert_eq!(report.events, 2);
        assert_eq!(events[1]["seq"], 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(r#"{"seq":0,"#), "{text}");
    }

    #[test]
    fn written_transcript_verifies_and_detects_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut w = TranscriptWriter::create(&path, Rc::new(Redactor::new())).unwrap();
        w.append(
            &json!({"type": "run_started", "run_id": "r1"}),
            Durability::Synced,
        )
        .unwrap();
        w.append(
            &json!({"type": "log", "message": "hi"}),
            Durability::Written,
        )
        .unwrap();
        w.append(
            &json!({"type": "run_finished", "status": "ok"}),
            Durability::Synced,
        )
        .unwrap();
        let (events, report) = read_verified(&path).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(report.finished.as_deref(), Some("ok"));

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"hi\"", "\"ho\"")).unwrap();
        match read_verified(&path) {
            Err(Error::TranscriptBroken { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    #[test]
    fn an_existing_transcript_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, "evidence").unwrap();
        assert!(TranscriptWriter::create(&path, Rc::new(Redactor::new())).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "evidence");
    }
}
