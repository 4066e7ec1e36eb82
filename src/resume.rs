//! `runbook resume`: continue an interrupted run from its transcript.
//!
//! The transcript says everything needed: which runbook (and its hash), the environment, the
//! parameters, the context after the last finished step, and, for a step that was cut off, which
//! writes it had finished (a `call` after its `intent`) and which it had only started (an `intent`
//! with no `call`). Finished writes are answered from the transcript when the step runs again,
//! never sent twice; started-but-unconfirmed ones make the step uncertain, which only a person may
//! clear. Secret parameters were never recorded, so they must be given again.

use rhai::Map;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::executor::Resume;
use crate::recorder::{Limits, ReplayCall, contains_marker};
use crate::runbook::Runbook;
use crate::transcript::{StepStatus, TranscriptWriter};

/// What the transcript says about where to pick up.
pub struct Pickup {
    pub start_step: usize,
    pub prior: Vec<StepStatus>,
    /// The context after the last finished step (secrets in it are redaction markers).
    pub ctx: Value,
    pub uncertain: Vec<String>,
    pub replay: Vec<ReplayCall>,
}

fn status_of(v: &Value) -> Option<StepStatus> {
    serde_json::from_value(v.clone()).ok()
}

/// Reads the transcript's events into a pickup point for a runbook of `total` steps.
///
/// When every step finished but the transcript does not end with `run_finished` (a crash in
/// between), the pickup point is `total`: nothing runs, and the resume records the run's end.
pub fn pickup(events: &[Value], total: usize) -> Result<Pickup> {
    let mut latest: Vec<Option<StepStatus>> = vec![None; total];
    let mut ctx = Value::Null;
    for e in events.iter().filter(|e| e["type"] == "step_finished") {
        if let (Some(i), Some(status)) = (e["step"].as_u64(), status_of(&e["status"]))
            && let Some(slot) = latest.get_mut(i as usize)
        {
            *slot = Some(status);
            ctx = e["ctx"].clone();
        }
    }
    let start_step = latest
        .iter()
        .position(|s| !matches!(s, Some(StepStatus::Ok | StepStatus::Skipped)))
        .unwrap_or(total);
    let ends_finished = events
        .iter()
        .rev()
        .find(|e| e["type"] != "signature")
        .is_some_and(|e| e["type"] == "run_finished");
    if start_step == total && ends_finished {
        return Err(Error::Usage(
            "every step of this run already finished and its end is recorded: nothing to resume"
                .into(),
        ));
    }
    let prior = latest[..start_step]
        .iter()
        .map(|s| s.unwrap_or(StepStatus::Ok))
        .collect();

    // The start step's latest execution, if it was cut off before step_finished: every attempt
    // and its on_failure since the last process (run or resume) began it. Its writes are
    // replayed in order, successes and failures alike, so the resumed step takes the same path.
    let mut replay = Vec::new();
    let mut uncertain = Vec::new();
    let is_start =
        |e: &Value| e["type"] == "step_started" && e["step"].as_u64() == Some(start_step as u64);
    if let Some(last) = events.iter().rposition(is_start) {
        let boundary = events[..last]
            .iter()
            .rposition(|e| matches!(e["type"].as_str(), Some("run_started" | "run_resumed")))
            .unwrap_or(0);
        let from = events[boundary..last + 1]
            .iter()
            .position(is_start)
            .map_or(last, |i| boundary + i);
        let after = &events[from + 1..];
        let cut_off = !after
            .iter()
            .any(|e| e["type"] == "step_finished" && e["step"].as_u64() == Some(start_step as u64));
        if cut_off {
            let mut pending: Vec<&Value> = Vec::new();
            for e in after {
                match e["type"].as_str() {
                    Some("intent") => pending.push(e),
                    Some("call") if e["mutating"] == true && e["planned"] == false => {
                        if let Some(k) = pending
                            .iter()
                            .position(|i| i["binding"] == e["binding"] && i["args"] == e["args"])
                            .or_else(|| pending.iter().position(|i| i["binding"] == e["binding"]))
                        {
                            pending.remove(k);
                        }
                        replay.push(ReplayCall {
                            binding: e["binding"].as_str().unwrap_or_default().to_string(),
                            args: e["args"].clone(),
                            result: e["result"].clone(),
                            error: (!e["error"].is_null()).then(|| e["error"].clone()),
                        });
                    }
                    _ => {}
                }
            }
            uncertain = pending
                .iter()
                .map(|i| format!("{}({})", i["binding"].as_str().unwrap_or("?"), i["args"]))
                .collect();
        }
    }
    Ok(Pickup {
        start_step,
        prior,
        ctx,
        uncertain,
        replay,
    })
}

/// The parameters for the resumed run: the recorded ones, with secrets given again on the
/// command line (they were never recorded). Validated like a fresh run's.
pub fn params(rb: &Runbook, recorded: &Value, given: &[(String, String)]) -> Result<Map> {
    crate::runbook::refuse_nameless(given)?;
    let mut all: Vec<(String, String)> = Vec::new();
    for p in &rb.meta.params {
        if let Some((_, v)) = given.iter().rev().find(|(n, _)| *n == p.name) {
            all.push((p.name.clone(), v.clone()));
            continue;
        }
        if p.secret {
            if p.required || p.default.is_none() {
                return Err(Error::Usage(format!(
                    "parameter {} is secret and was never recorded: give it again with --param {}=...",
                    p.name, p.name
                )));
            }
            continue;
        }
        match &recorded[&p.name] {
            Value::Null => {}
            // Redacted when recorded (it looked like a credential): the marker is not the value.
            v if contains_marker(v) => {
                return Err(Error::Usage(format!(
                    "parameter {} was recorded redacted (it looks like a credential), so its value is unknown: give it again with --param {}=...",
                    p.name, p.name
                )));
            }
            Value::String(s) => all.push((p.name.clone(), s.clone())),
            other => all.push((p.name.clone(), other.to_string())),
        }
    }
    rb.resolve_params(&all)
}

/// The guardrail limits a resumed run holds: the ones the run started with (`first` is its
/// `run_started`) still hold, and limits given now can only tighten them. Decided before the
/// resumed run's host is built.
pub(crate) fn limits(first: &Value, given: Limits) -> Limits {
    let recorded = &first["guardrails"];
    let max_resources = match (
        recorded["max_resources"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok()),
        given.max_resources,
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // Recorded absolute (a resume may start in another folder); one given now is made absolute
    // the same way.
    let kill_switch = match recorded["kill_switch"].as_str() {
        Some(path) => Some(std::path::PathBuf::from(path)),
        None => given
            .kill_switch
            .map(|p| std::path::absolute(&p).unwrap_or(p)),
    };
    Limits {
        max_resources,
        kill_switch,
        kill_parameter: recorded["kill_switch_parameter"]
            .as_str()
            .map(str::to_string)
            .or(given.kill_parameter),
    }
}

/// Builds the resume state: the writer continuing the chain (holding the transcript's lock),
/// the context to restore, and the resources the run already changed counted again.
pub fn prepare(
    rb: &Runbook,
    path: &std::path::Path,
    given: &[(String, String)],
    allow_changed: bool,
) -> Result<(Resume, Map)> {
    let (writer, events) = TranscriptWriter::open_append(path, rb.host.redactor.clone())?;
    let first = &events[0];
    if first["type"] != "run_started" || first["mode"] != "run" {
        return Err(Error::Usage(format!(
            "a {} transcript has nothing to resume",
            first["mode"].as_str().unwrap_or("hook journal")
        )));
    }
    if events
        .last()
        .is_some_and(|e| e["type"] == "run_finished" && e["status"] == "ok")
    {
        return Err(Error::Usage(
            "this run finished ok: nothing to resume".into(),
        ));
    }
    let recorded_sha = first["runbook"]["sha256"].as_str().unwrap_or_default();
    if recorded_sha != rb.sha256 && !allow_changed {
        return Err(Error::Usage(format!(
            "{} changed since the run started (sha256 {} then, {} now): resume with --allow-changed to accept that (recorded)",
            rb.file,
            &recorded_sha.get(..12).unwrap_or(recorded_sha),
            rb.sha256.get(..12).unwrap_or(&rb.sha256)
        )));
    }
    let params = params(rb, &first["params"], given)?;
    let pick = pickup(&events, rb.steps.len())?;
    let mut ctx: Map = rhai::serde::to_dynamic(&pick.ctx)
        .ok()
        .and_then(|d| d.try_cast::<Map>())
        .unwrap_or_default();
    // The recorded context has redaction markers where secrets were: put the real ones back.
    for (name, value) in params {
        let secret = rb.param(&name).is_some_and(|p| p.secret);
        if secret || !ctx.contains_key(name.as_str()) {
            ctx.insert(name, value);
        }
    }
    // Values a step stored that held a secret were recorded as markers. A marker is never a
    // value: it is given again (`--param KEY=...`, kept secret), or the resume is refused.
    let recorded_ctx = pick.ctx.as_object().cloned().unwrap_or_default();
    let mut missing = Vec::new();
    for (key, value) in &recorded_ctx {
        if rb.param(key).is_some() || !contains_marker(value) {
            continue;
        }
        match given.iter().rev().find(|(n, _)| n == key) {
            Some((_, text)) => {
                rb.host.redactor.add_secret(text);
                let value = if value.is_string() {
                    rhai::Dynamic::from(text.clone())
                } else {
                    serde_json::from_str::<Value>(text)
                        .ok()
                        .and_then(|v| rhai::serde::to_dynamic(&v).ok())
                        .unwrap_or_else(|| rhai::Dynamic::from(text.clone()))
                };
                ctx.insert(key.as_str().into(), value);
            }
            None => missing.push(key.clone()),
        }
    }
    if !missing.is_empty() {
        let flags: Vec<String> = missing.iter().map(|k| format!("--param {k}=...")).collect();
        return Err(Error::Usage(format!(
            "ctx.{} held a secret when the run stopped and was recorded only as a redaction marker, which is not its value: give it again with {} (kept secret; JSON for a map or an array)",
            missing.join(", ctx."),
            flags.join(" ")
        )));
    }

    // The guardrails the run started with were put back when the host was built (`limits`);
    // every resource it already changed still counts.
    let g = &rb.host.guardrails;
    for e in events.iter() {
        g.restore_touched(e);
    }

    let note = json!({
        "allow_changed": recorded_sha != rb.sha256,
        "sha256_then": recorded_sha,
        "sha256_now": rb.sha256,
        "replayed_writes": pick.replay.len(),
        "uncertain": pick.uncertain,
        "guardrails": g.recorded(),
        "given_again": recorded_ctx.keys().filter(|k| given.iter().any(|(n, _)| n == *k)).collect::<Vec<_>>(),
        "appended_run_finished": pick.start_step == rb.steps.len(),
    });
    let resume = Resume {
        writer,
        start_step: pick.start_step,
        prior: pick.prior,
        note,
        uncertain: pick.uncertain,
        replay: pick.replay,
    };
    Ok((resume, ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_run_keeps_its_recorded_limits_and_may_only_tighten_the_cap() {
        let first = json!({ "guardrails": {
            "max_resources": 5, "kill_switch": "/srv/stop", "kill_switch_parameter": "/rb/kill" } });
        let given = |max: Option<usize>| Limits {
            max_resources: max,
            kill_switch: Some("/elsewhere".into()),
            kill_parameter: None,
        };
        let tighter = limits(&first, given(Some(2)));
        assert_eq!(tighter.max_resources, Some(2));
        assert_eq!(tighter.kill_switch, Some("/srv/stop".into()));
        assert_eq!(tighter.kill_parameter.as_deref(), Some("/rb/kill"));
        assert_eq!(limits(&first, given(Some(9))).max_resources, Some(5));
        assert_eq!(limits(&first, given(None)).max_resources, Some(5));
        // A run that started without limits takes the ones given now.
        let bare = json!({ "guardrails": { "max_resources": null, "kill_switch": null } });
        let now = limits(&bare, given(Some(3)));
        assert_eq!(now.max_resources, Some(3));
        assert_eq!(now.kill_switch, Some("/elsewhere".into()));
        assert_eq!(now.kill_parameter, None);
    }

    fn call(binding: &str, arg: &str, replayed: bool) -> Value {
        json!({ "type": "call", "binding": binding, "args": { "id": arg }, "mutating": true,
                "planned": false, "result": null, "replayed": replayed })
    }

    fn intent(binding: &str, arg: &str) -> Value {
        json!({ "type": "intent", "binding": binding, "args": { "id": arg } })
    }

    fn started(step: u64, attempt: u64) -> Value {
        json!({ "type": "step_started", "step": step, "attempt": attempt })
    }

    #[test]
    fn the_replay_covers_every_attempt_and_the_rollback_of_the_latest_execution() {
        let events = vec![
            json!({ "type": "run_started" }),
            started(0, 1),
            intent("ec2::tag", "a"),
            call("ec2::tag", "a", false),
            json!({ "type": "retry", "step": 0 }),
            started(0, 2),
            intent("ec2::tag", "a"),
            call("ec2::tag", "a", false),
            json!({ "type": "on_failure_started", "step": 0 }),
            intent("ec2::restore", "a"),
            call("ec2::restore", "a", false),
            intent("ec2::restore", "b"),
        ];
        let pick = pickup(&events, 2).unwrap();
        assert_eq!(pick.start_step, 0);
        let replayed: Vec<&str> = pick.replay.iter().map(|c| c.binding.as_str()).collect();
        assert_eq!(replayed, ["ec2::tag", "ec2::tag", "ec2::restore"]);
        assert_eq!(pick.uncertain, [r#"ec2::restore({"id":"b"})"#]);
    }

    #[test]
    fn a_second_resume_replays_what_the_first_resume_replayed_and_sent() {
        let events = vec![
            json!({ "type": "run_started" }),
            started(0, 1),
            intent("ec2::tag", "old"),
            call("ec2::tag", "old", false),
            json!({ "type": "run_resumed" }),
            started(0, 1),
            call("ec2::tag", "old", true),
            intent("ec2::tag", "new"),
            call("ec2::tag", "new", false),
            // Killed again right after the next resume began, before its step started.
            json!({ "type": "run_resumed" }),
        ];
        let pick = pickup(&events, 1).unwrap();
        let args: Vec<String> = pick
            .replay
            .iter()
            .map(|c| c.args["id"].to_string())
            .collect();
        assert_eq!(args, [r#""old""#, r#""new""#]);
        assert!(pick.uncertain.is_empty());
    }

    #[test]
    fn a_run_whose_steps_all_finished_is_picked_up_only_to_record_its_end() {
        let finished = json!({ "type": "step_finished", "step": 0, "status": "ok", "ctx": {} });
        let pick = pickup(&[json!({ "type": "run_started" }), finished.clone()], 1).unwrap();
        assert_eq!(pick.start_step, 1);
        assert!(pick.replay.is_empty());
        let ended = [
            json!({ "type": "run_started" }),
            finished,
            json!({ "type": "run_finished", "status": "ok" }),
            json!({ "type": "signature" }),
        ];
        assert!(pickup(&ended, 1).is_err());
    }
}
