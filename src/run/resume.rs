//! `runbook resume`: continue an interrupted run from its transcript.
//!
//! The transcript says everything needed: which runbook (and its hash), the environment, the
//! parameters, the context after the last finished step, and, for a step that was cut off, which
//! writes it had finished (a `call` after its `intent`) and which it had only started (an `intent`
//! with no `call`). Finished writes are answered from the transcript when the step runs again,
//! never sent twice; started-but-unconfirmed ones make the step uncertain, which only a person may
//! clear. Secret parameters were never recorded, so they must be given again.

use rhai::Map;
use serde_json::Value;

use crate::base::error::{Error, Result};
use crate::data::transcript::{Event, RunStatus, StepStatus, TranscriptWriter};
use crate::run::executor::Resume;
use crate::runbook::Runbook;
use crate::sandbox::recorder::{Limits, ReplayCall, contains_marker};

/// What the transcript says about where to pick up.
pub struct Pickup {
    pub start_step: usize,
    pub prior: Vec<StepStatus>,
    /// The context after the last finished step (secrets in it are redaction markers).
    pub ctx: Value,
    pub uncertain: Vec<String>,
    pub replay: Vec<ReplayCall>,
}

/// Reads every line of a verified transcript as an [`Event`]. A line this version cannot read
/// (an event type from a newer version, or fields that do not fit) stops the resume: what the
/// run did must be known before anything is sent again.
pub fn read_events(events: &[Value]) -> Result<Vec<Event>> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            Event::parse(e).map_err(|why| {
                Error::Usage(format!(
                    "line {} of the transcript cannot be read: {why}; resume it with the version of runbook that wrote it",
                    i + 1
                ))
            })
        })
        .collect()
}

/// Reads the transcript's events into a pickup point for a runbook of `total` steps.
///
/// When every step finished but the transcript does not end with `run_finished` (a crash in
/// between), the pickup point is `total`: nothing runs, and the resume records the run's end.
pub fn pickup(events: &[Value], total: usize) -> Result<Pickup> {
    let events = read_events(events)?;
    let mut latest: Vec<Option<StepStatus>> = vec![None; total];
    let mut ctx = Value::Null;
    for e in &events {
        if let Event::StepFinished {
            step,
            status,
            ctx: after,
            ..
        } = e
            && let Some(slot) = latest.get_mut(*step)
        {
            *slot = Some(*status);
            ctx = after.clone();
        }
    }
    let start_step = latest
        .iter()
        .position(|s| !matches!(s, Some(StepStatus::Ok | StepStatus::Skipped)))
        .unwrap_or(total);
    let ends_finished = events
        .iter()
        .rev()
        .find(|e| !matches!(e, Event::Signature { .. }))
        .is_some_and(|e| matches!(e, Event::RunFinished { .. }));
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
    let is_start = |e: &Event| matches!(e, Event::StepStarted { step, .. } if *step == start_step);
    if let Some(last) = events.iter().rposition(is_start) {
        let boundary = events[..last]
            .iter()
            .rposition(|e| matches!(e, Event::RunStarted { .. } | Event::RunResumed { .. }))
            .unwrap_or(0);
        let from = events[boundary..last + 1]
            .iter()
            .position(is_start)
            .map_or(last, |i| boundary + i);
        let after = &events[from + 1..];
        let cut_off = !after
            .iter()
            .any(|e| matches!(e, Event::StepFinished { step, .. } if *step == start_step));
        if cut_off {
            // The intents not yet answered by a call: (binding, args).
            let mut pending: Vec<(&String, &Value)> = Vec::new();
            for e in after {
                match e {
                    Event::Intent { binding, args, .. } => pending.push((binding, args)),
                    Event::Call {
                        binding,
                        args,
                        mutating: true,
                        planned: false,
                        result,
                        error,
                        ..
                    } => {
                        if let Some(k) = pending
                            .iter()
                            .position(|(b, a)| *b == binding && *a == args)
                            .or_else(|| pending.iter().position(|(b, _)| *b == binding))
                        {
                            pending.remove(k);
                        }
                        replay.push(ReplayCall {
                            binding: binding.clone(),
                            args: args.clone(),
                            result: result.clone().unwrap_or(Value::Null),
                            error: error.clone(),
                        });
                    }
                    _ => {}
                }
            }
            uncertain = pending
                .iter()
                .map(|(binding, args)| format!("{binding}({args})"))
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
    // The recorded guardrails are read before the host is built (`limits`).
    let (recorded_sha, recorded_params) = match events.first().map(Event::parse) {
        Some(Ok(Event::RunStarted {
            mode,
            runbook,
            params,
            ..
        })) if mode == "run" => (runbook.sha256, params),
        Some(Ok(Event::RunStarted { mode, .. })) => {
            return Err(Error::Usage(format!(
                "a {mode} transcript has nothing to resume"
            )));
        }
        _ => {
            return Err(Error::Usage(
                "a hook journal transcript has nothing to resume".into(),
            ));
        }
    };
    let typed = read_events(&events)?;
    if typed
        .last()
        .is_some_and(|e| matches!(e, Event::RunFinished { status, .. } if *status == RunStatus::Ok))
    {
        return Err(Error::Usage(
            "this run finished ok: nothing to resume".into(),
        ));
    }
    let recorded_sha = recorded_sha.as_str();
    if recorded_sha != rb.sha256 && !allow_changed {
        return Err(Error::Usage(format!(
            "{} changed since the run started (sha256 {} then, {} now): resume with --allow-changed to accept that (recorded)",
            rb.file,
            &recorded_sha.get(..12).unwrap_or(recorded_sha),
            rb.sha256.get(..12).unwrap_or(&rb.sha256)
        )));
    }
    let params = params(rb, &recorded_params, given)?;
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
    for e in &typed {
        g.restore_touched(e);
    }
    // The run's incident thread, from the posts it made before the crash: the resumed run's
    // approval requests go there, as the first process's would have.
    for e in &typed {
        if let Event::Call {
            binding,
            args,
            result: Some(answer),
            planned: false,
            ..
        } = e
            && let Some((channel, ts)) = crate::bindings::slack::thread_noted(binding, args, answer)
        {
            rb.host.note_incident_thread(&channel, &ts);
        }
    }

    let note = Event::RunResumed {
        from_step: pick.start_step,
        // Filled in by the executor, which knows who runs it.
        operator: String::new(),
        identity: None,
        allow_changed: recorded_sha != rb.sha256,
        sha256_then: recorded_sha.to_string(),
        sha256_now: rb.sha256.clone(),
        replayed_writes: pick.replay.len(),
        uncertain: pick.uncertain.clone(),
        guardrails: g.recorded(),
        given_again: recorded_ctx
            .keys()
            .filter(|k| given.iter().any(|(n, _)| n == *k))
            .cloned()
            .collect(),
        appended_run_finished: pick.start_step == rb.steps.len(),
    };
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
    use serde_json::json;

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
    fn a_transcript_with_an_event_type_this_version_does_not_know_is_not_resumed() {
        let events = [
            json!({ "type": "run_started" }),
            started(0, 1),
            json!({ "type": "future_event", "step": 0 }),
        ];
        let Err(e) = pickup(&events, 1) else {
            panic!("a run it cannot fully read was picked up");
        };
        let e = e.to_string();
        assert!(
            e.contains("line 3") && e.contains("unknown event type \"future_event\""),
            "{e}"
        );
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
