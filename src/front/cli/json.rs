//! `--output json`: one JSON document on stdout per command, in the shape docs/json.md
//! describes. Every document is an object whose first field is `"schema": SCHEMA`; a field is
//! only ever added under one schema number, so a script written against it keeps working.
//!
//! What a run did is read back from its transcript, not from the executor's memory: the document
//! then says exactly what the audit trail says (the same step statuses, the same redacted
//! arguments), and `transcript show --output json` gives the same summary for any past run.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value, json};

use crate::base::error::Error;

/// The version of every document's shape (docs/json.md).
pub(crate) const SCHEMA: u64 = 1;

/// Set once a document is on stdout: an error after it (the run's own status) must not print a
/// second one.
static PRINTED: AtomicBool = AtomicBool::new(false);

/// Prints `doc` (an object) as the command's one document, `schema` first.
pub(super) fn emit(command: &str, doc: Value) {
    let mut out = Map::new();
    out.insert("schema".into(), json!(SCHEMA));
    out.insert("command".into(), json!(command));
    if let Value::Object(fields) = doc {
        for (k, v) in fields {
            out.entry(k).or_insert(v);
        }
    }
    let text = serde_json::to_string_pretty(&Value::Object(out)).unwrap_or_default();
    super::out(&format!("{text}\n"));
    PRINTED.store(true, Ordering::Relaxed);
}

/// The document of a command that ended in an error before it had one of its own (a runbook
/// not found, a bad parameter, a broken transcript): the error and the exit code it ends with.
pub(super) fn emit_error(command: &str, err: &Error) {
    if PRINTED.load(Ordering::Relaxed) {
        return;
    }
    let mut doc = json!({
        "status": "error",
        "exit_code": err.exit_code(),
        "error": err.to_string(),
    });
    match err {
        Error::TranscriptBroken { path, line, reason } => {
            doc["status"] = json!("broken");
            doc["file"] = json!(path.display().to_string());
            doc["line"] = json!(line);
            doc["reason"] = json!(reason);
        }
        Error::Script(diags) => {
            doc["diagnostics"] = diags
                .iter()
                .map(|d| {
                    json!({"file": d.location.file, "line": d.location.line,
                           "col": d.location.col, "message": d.message})
                })
                .collect();
        }
        _ => {}
    }
    emit(command, doc);
}

/// A run's transcript (verified events) as the summary every run document carries: who ran
/// what where, how it ended, each step and each write.
pub(crate) fn run_summary(events: &[Value]) -> Value {
    let first = events.first().cloned().unwrap_or_default();
    let finished = events.iter().rev().find(|e| e["type"] == "run_finished");
    let mut steps: Vec<Value> = first["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    json!({
                        "index": s["index"],
                        "phase": s["phase"],
                        "title": s["title"],
                        "status": "not_run",
                        "duration_ms": null,
                        "attempts": 0,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    // The last word on each step (a resume may finish a step the first run left).
    for e in events.iter().filter(|e| e["type"] == "step_finished") {
        if let Some(step) = e["step"]
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| steps.get_mut(i))
        {
            step["status"] = e["status"].clone();
            step["duration_ms"] = e["duration_ms"].clone();
            step["attempts"] = e["attempts"].clone();
            if let Some(reason) = e.get("reason") {
                step["reason"] = reason.clone();
            }
            if let Some(error) = e.get("error") {
                step["error"] = error["message"].clone();
            }
        }
    }
    json!({
        "run_id": first["run_id"],
        "runbook": {
            "id": first["runbook"]["id"],
            "version": first["runbook"]["version"],
            "file": first["runbook"]["file"],
            "sha256": first["runbook"]["sha256"],
        },
        "mode": first["mode"],
        "environment": first["environment"],
        "backend": first.get("backend").cloned().unwrap_or(Value::Null),
        "account": first.get("account").cloned().unwrap_or(Value::Null),
        "region": first.get("region").cloned().unwrap_or(Value::Null),
        "endpoint": first.get("endpoint").cloned().unwrap_or(Value::Null),
        "operator": first["operator"],
        "status": finished.map_or(json!("unfinished"), |f| f["status"].clone()),
        "reason": finished.map_or(Value::Null, |f| f["reason"].clone()),
        "duration_ms": finished.and_then(|f| f.get("duration_ms").cloned()).unwrap_or(Value::Null),
        "counts": finished.and_then(|f| f.get("counts").cloned()).unwrap_or(Value::Null),
        "steps": steps,
        "writes": writes(events),
    })
}

/// Every write the run sent, planned (a plan's would-be writes) or had refused, in order, with
/// the resources it names and its arguments as the transcript holds them (redacted).
fn writes(events: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for e in events {
        match e["type"].as_str() {
            Some("call") if e["mutating"] == true => {
                let binding = e["binding"].as_str().unwrap_or_default();
                let status = if e["planned"] == true {
                    "planned"
                } else if e.get("error").is_some() {
                    "failed"
                } else {
                    "ok"
                };
                let mut w = json!({
                    "step": e["step"],
                    "binding": binding,
                    "resources": resources(binding, &e["args"]),
                    "args": e["args"],
                    "planned": e["planned"] == true,
                    "status": status,
                });
                if let Some(error) = e.get("error") {
                    w["error"] = error["message"].clone();
                }
                if e.get("replayed") == Some(&json!(true)) {
                    w["replayed"] = json!(true);
                }
                out.push(w);
            }
            Some("guardrail") => out.push(json!({
                "step": e["step"],
                "binding": e["binding"],
                "resources": [],
                "args": null,
                "planned": false,
                "status": "refused",
                "error": e["reason"],
                "rule": e["rule"],
            })),
            _ => {}
        }
    }
    out
}

/// The resources a write names (instance, volume, group ids; a listener, an alarm), as the
/// guardrails count them; a launch's instances do not exist yet and are not named.
fn resources(binding: &str, args: &Value) -> Vec<String> {
    crate::sandbox::recorder::changed_resources(binding, args)
        .into_iter()
        .filter(|r| !r.starts_with(crate::sandbox::recorder::NEW_INSTANCE))
        .collect()
}

/// Prints `doc` with the exit code `result` ends the command with, and hands `result` back:
/// the document and the exit status always agree.
pub(super) fn finish(
    command: &str,
    mut doc: Value,
    result: crate::base::error::Result<()>,
) -> crate::base::error::Result<()> {
    doc["exit_code"] = json!(result.as_ref().err().map_or(0, Error::exit_code));
    emit(command, doc);
    result
}
