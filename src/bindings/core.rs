//! Core bindings: logging, time, failure, JSON, allow-listed environment and the incident notes.

use std::io::Write as _;
use std::time::Duration;

use rhai::FnPtr;
use rhai::plugin::*;
use serde_json::json;

use crate::base::error::BindingError;
use crate::sandbox::recorder::{self, Binding, Effect, ScriptResult, unit_placeholder};

static SLEEP: Binding = Binding {
    name: "sleep",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static NOW: Binding = Binding {
    name: "now",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static ENV: Binding = Binding {
    name: "env",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static WAIT_UNTIL: Binding = Binding {
    name: "wait_until",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static APPROVE: Binding = Binding {
    name: "approve",
    effect: Effect::Wait,
    placeholder: approved_placeholder,
};

fn approved_placeholder(_: &serde_json::Value) -> Dynamic {
    true.into()
}

static NOTES_APPEND: Binding = Binding {
    name: "notes::append",
    effect: Effect::Mutating,
    placeholder: unit_placeholder,
};

/// The group an approval needs: the runbook's `group` and the environment's `approvers`, both
/// when both are set (only people in both count).
fn approver_group(
    env: &crate::data::config::Environment,
    named: Option<&str>,
) -> Result<Option<crate::services::approvals::Group>, BindingError> {
    use crate::services::approvals::Group;
    let asked = match named {
        Some(name) => Some(Group::new(
            name,
            env.approver_groups.get(name).cloned().ok_or_else(|| {
                BindingError::new(
                    "bad_argument",
                    format!("group {name:?} is not in [approvers] of runbook.toml"),
                )
            })?,
        )),
        None => None,
    };
    let required = env
        .approvers
        .as_ref()
        .map(|(name, members)| Group::new(name, members.clone()));
    Ok(match (asked, required) {
        // Each judged by its own rules: a Slack user group on either side still means its
        // members, which a list intersection could not say.
        (Some(a), Some(r)) if a.name != r.name => Some(Group {
            and: Some(Box::new(r)),
            ..a
        }),
        (a, r) => a.or(r),
    })
}

fn parse_duration(text: &str) -> Result<Duration, BindingError> {
    crate::base::clock::parse_duration(text).map_err(|e| BindingError::new("bad_argument", e))
}

fn sleep_for(ctx: &NativeCallContext, d: Duration, shown: String) -> ScriptResult<()> {
    recorder::call(ctx, &SLEEP, json!({ "duration": shown }), |host| {
        host.interrupt
            .sleep(d)
            .map(|()| Dynamic::UNIT)
            .map_err(|stop| BindingError::new(stop.token(), "sleep interrupted"))
    })
    .map(|_| ())
}

/// Whether a condition's answer means "done": `true`, or a map whose `ok` is true (so a probe
/// result such as `health::http(url)` can be the condition itself).
fn satisfied(value: &Dynamic) -> Option<bool> {
    if let Ok(b) = value.as_bool() {
        return Some(b);
    }
    value
        .read_lock::<rhai::Map>()
        .and_then(|m| m.get("ok").and_then(|ok| ok.as_bool().ok()))
}

fn wait(ctx: &NativeCallContext, condition: FnPtr, options: rhai::Map) -> ScriptResult<i64> {
    let pos = ctx.call_position();
    let bad = |e: BindingError| recorder::runtime_error(&e.code, &e.message, pos);
    let (timeout, every) =
        super::args::wait_options(&options, Duration::from_secs(10)).map_err(bad)?;
    // An error raised by the condition itself (a failed binding, a timeout) is the script's error,
    // not the wait's: it is kept here and re-raised as it was.
    let mut raised: Option<Box<EvalAltResult>> = None;
    let recorded = json!({ "timeout": super::args::wait_timeout_recorded(timeout), "every": humantime::format_duration(every).to_string() });
    let outcome = recorder::call(ctx, &WAIT_UNTIL, recorded, |host| {
        let limit = super::wait_limit(host, timeout);
        let started = host.interrupt.clock().now();
        let mut attempt: i64 = 0;
        loop {
            attempt += 1;
            host.console.status(&format!("waiting: attempt {attempt}"));
            let value = match condition.call_within_context::<Dynamic>(ctx, ()) {
                Ok(v) => v,
                Err(e) => {
                    raised = Some(e);
                    return Err(BindingError::new(
                        "condition_failed",
                        "the condition raised an error",
                    ));
                }
            };
            let done = satisfied(&value).ok_or_else(|| {
                BindingError::new(
                    "bad_condition",
                    format!(
                        "the condition must return a bool (or a map with `ok`), not {}",
                        value.type_name()
                    ),
                )
            })?;
            host.recorder.log(
                "wait",
                &format!(
                    "attempt {attempt}: {}",
                    if done { "done" } else { "not yet" }
                ),
            );
            if done {
                return Ok(Dynamic::from(attempt));
            }
            let Some(pause) = limit.next_poll(started.elapsed(), every) else {
                if limit.bound == crate::base::clock::WaitBound::StepDeadline {
                    // Waited out to the deadline, so the step ends `timed_out` naming this wait.
                    let why =
                        limit.ran_out("condition still false", &format!("{attempt} attempt(s)"));
                    let clock = host.interrupt.clock();
                    clock.note_ended_wait(why.clone());
                    // A hair past it, so the deadline (not this sleep) is what ends the wait.
                    let left = clock
                        .remaining()
                        .unwrap_or_default()
                        .saturating_add(Duration::from_millis(5));
                    return Err(match host.interrupt.sleep(left) {
                        Err(stop) => BindingError::new(stop.token(), why),
                        Ok(()) => BindingError::new("WaiterTimeout", why),
                    });
                }
                return Err(BindingError::new(
                    "WaiterTimeout",
                    format!(
                        "condition still false after {attempt} attempt(s) over {}",
                        humantime::format_duration(limit.limit)
                    ),
                ));
            };
            host.interrupt
                .sleep(pause)
                .map_err(|stop| BindingError::new(stop.token(), "wait interrupted"))?;
        }
    });
    match (outcome, raised) {
        (_, Some(e)) => Err(e),
        (Ok(v), None) => Ok(v.as_int().unwrap_or_default()),
        (Err(e), None) => Err(e),
    }
}

fn log_at(ctx: &NativeCallContext, level: &str, message: &Dynamic) -> ScriptResult<()> {
    let host = recorder::host_of(ctx)?;
    let text = message.to_string();
    host.console.log(level, &host.redactor.redact(&text));
    host.recorder.log(level, &text);
    Ok(())
}

/// Logging, time, failing and the allow-listed environment.
#[export_module]
pub mod core_api {
    /// Writes `message` to the run log: shown on the terminal and recorded in the transcript
    /// (secrets redacted). Any value is accepted and printed as text.
    #[rhai_fn(name = "log", return_raw)]
    pub(crate) fn log(ctx: NativeCallContext, message: Dynamic) -> ScriptResult<()> {
        log_at(&ctx, "info", &message)
    }

    /// Writes `message` at a level: `"info"`, `"warn"` or `"error"`.
    #[rhai_fn(name = "log", return_raw)]
    pub(crate) fn log_level(
        ctx: NativeCallContext,
        level: &str,
        message: Dynamic,
    ) -> ScriptResult<()> {
        if !matches!(level, "info" | "warn" | "error") {
            return Err(recorder::runtime_error(
                "bad_argument",
                &format!("log level {level:?} must be \"info\", \"warn\" or \"error\""),
                ctx.call_position(),
            ));
        }
        log_at(&ctx, level, &message)
    }

    /// Waits for a duration such as `"500ms"`, `"2s"` or `"1m"`. Ends early, with the step, on
    /// its timeout or on Ctrl-C.
    #[rhai_fn(name = "sleep", return_raw)]
    pub(crate) fn sleep(ctx: NativeCallContext, duration: &str) -> ScriptResult<()> {
        let d = parse_duration(duration)
            .map_err(|e| recorder::runtime_error(&e.code, &e.message, ctx.call_position()))?;
        sleep_for(&ctx, d, duration.to_string())
    }

    /// Waits for `millis` milliseconds (see `sleep(duration)`).
    #[rhai_fn(name = "sleep", return_raw)]
    pub(crate) fn sleep_ms(ctx: NativeCallContext, millis: i64) -> ScriptResult<()> {
        let millis = u64::try_from(millis).unwrap_or(0);
        let d =
            crate::base::clock::check_duration(Duration::from_millis(millis)).map_err(|why| {
                recorder::runtime_error(
                    "bad_argument",
                    &format!("sleep({millis}) {why}"),
                    ctx.call_position(),
                )
            })?;
        sleep_for(&ctx, d, format!("{millis}ms"))
    }

    /// The current time in UTC, as `"2026-11-23T10:30:00.000Z"`.
    #[rhai_fn(return_raw)]
    pub(crate) fn now(ctx: NativeCallContext) -> ScriptResult<String> {
        recorder::call(&ctx, &NOW, json!({}), |_| {
            Ok(crate::base::clock::now_utc().into())
        })
        .map(|v| v.to_string())
    }

    /// Calls `condition` (a closure such as `|| health::http(url).ok`) until it returns true (or
    /// a map whose `ok` is true), every `every` (default `"10s"`) for at most `timeout`; returns
    /// the number of attempts. Without `timeout` it waits until the step's deadline, and the step
    /// then ends `timed_out` (outside a step, at most 10 minutes); a `timeout` longer than the
    /// step has left is cut to the deadline. Fails with `WaiterTimeout` when its own `timeout`
    /// runs out. Each attempt is recorded, and which bound applied.
    #[rhai_fn(name = "wait_until", return_raw)]
    pub(crate) fn wait_until(
        ctx: NativeCallContext,
        condition: FnPtr,
        options: rhai::Map,
    ) -> ScriptResult<i64> {
        wait(&ctx, condition, options)
    }

    /// `wait_until` until the step's deadline, every `"10s"`.
    #[rhai_fn(name = "wait_until", return_raw)]
    pub(crate) fn wait_until_default(
        ctx: NativeCallContext,
        condition: FnPtr,
    ) -> ScriptResult<i64> {
        wait(&ctx, condition, rhai::Map::new())
    }

    /// Waits for a person to approve `question` (see `approve(question, options)`); returns true
    /// or fails the step (`approval_denied`, `approval_timeout`).
    #[rhai_fn(name = "approve", return_raw)]
    pub(crate) fn approve(ctx: NativeCallContext, question: &str) -> ScriptResult<bool> {
        approve_with(ctx, question, rhai::Map::new())
    }

    /// Waits for approval: at the terminal in an interactive run, or from `runbook approve RUN_ID`
    /// (another shell on this host with the `local` state backend; any machine with `aws`).
    /// Options: `approvers` (distinct identities needed, default 1), `others` (default false;
    /// true: four-eyes, the requester's own answer does not count, whatever name it claims),
    /// `group` (a group from `[approvers]` in runbook.toml: only its members count, a Slack
    /// user group among them asked of Slack when an answer comes; an environment's `approvers`
    /// group applies too), `timeout` (default `"15m"`). The request carries the step's plan
    /// (previewed, unattended runs included), the run's parameters and the plan's hash; each
    /// answer binds to that hash, and the step's writes after the approval must be in the plan. Each answer is recorded with the approver's established identity (`os`, `aws`,
    /// `slack`); refused answers are recorded too. Plans do not wait.
    #[rhai_fn(name = "approve", return_raw)]
    pub(crate) fn approve_with(
        ctx: NativeCallContext,
        question: &str,
        options: rhai::Map,
    ) -> ScriptResult<bool> {
        let pos = ctx.call_position();
        let bad = |e: BindingError| recorder::runtime_error(&e.code, &e.message, pos);
        crate::bindings::args::known(&options, &["approvers", "others", "timeout", "group"])
            .map_err(bad)?;
        let approvers = crate::bindings::args::int(&options, "approvers", 1)
            .map_err(bad)?
            .clamp(1, 10) as u32;
        let others = crate::bindings::args::boolean(&options, "others", false).map_err(bad)?;
        let timeout =
            crate::bindings::args::duration(&options, "timeout", Duration::from_secs(15 * 60))
                .map_err(bad)?;
        let group_name = crate::bindings::args::string(&options, "group").map_err(bad)?;
        let recorded = json!({ "question": question, "approvers": approvers, "others": others, "group": group_name });
        recorder::call(&ctx, &APPROVE, recorded, |host| {
            let group = approver_group(host.cloud.environment(), group_name.as_deref())?;
            let plan = host.recorder.step_plan();
            let mut prompt = host.prompt.borrow_mut().take();
            // Waiting for a person: no spinner over the question, and not the step's work.
            let outcome = host.console.person(|| {
                crate::services::approvals::request_and_wait(
                    host.asker(),
                    crate::services::approvals::Question {
                        text: question,
                        approvers,
                        others,
                        group,
                        plan,
                    },
                    timeout,
                    prompt
                        .as_mut()
                        .map(|p| p.as_mut() as &mut dyn FnMut(&str) -> Option<bool>),
                )
            });
            *host.prompt.borrow_mut() = prompt;
            let outcome = outcome?;
            // The approval binds: the step's writes from here on must be in the plan approved
            // (another one is not sent: drift, and the step asks again). Only the step's body
            // is planned, so only it is held to the plan.
            if let crate::sandbox::recorder::Stage::Step(i) = host.recorder.stage() {
                host.recorder
                    .bind_approved_plan(Some((i, outcome.request.plan.clone())));
            }
            host.recorder.log(
                "approval",
                &format!(
                    "approved by {} after {} s (plan sha256 {})",
                    outcome.names(),
                    outcome.waited.as_secs(),
                    outcome.request.plan_hash
                ),
            );
            Ok(json!({
                "approved_by": outcome.approved_by.iter().map(|w| w.display()).collect::<Vec<_>>(),
                "identities": outcome.approved_by,
                "plan_sha256": outcome.request.plan_hash,
            })
            .to_string()
            .into())
        })
        .map(|_| true)
    }

    /// Fails the current step with `message` (its `on_failure` runs, if it has one).
    /// Scripts can catch it: the error is `#{ code: "fail", message }`.
    #[rhai_fn(return_raw)]
    pub(crate) fn fail(ctx: NativeCallContext, message: &str) -> ScriptResult<()> {
        Err(recorder::runtime_error(
            "fail",
            message,
            ctx.call_position(),
        ))
    }

    /// Fails the current step with `message` unless `condition` is true.
    #[rhai_fn(name = "assert", return_raw)]
    pub(crate) fn assert(
        ctx: NativeCallContext,
        condition: bool,
        message: &str,
    ) -> ScriptResult<()> {
        if condition {
            Ok(())
        } else {
            Err(recorder::runtime_error(
                "assertion_failed",
                &format!("assertion failed: {message}"),
                ctx.call_position(),
            ))
        }
    }

    /// Reads an environment variable the runbook lists in its metadata (`env: ["NAME"]`), or `()`
    /// when it is unset. Values are treated as secrets: they never reach the transcript.
    #[rhai_fn(return_raw)]
    pub(crate) fn env(ctx: NativeCallContext, name: &str) -> ScriptResult<Dynamic> {
        recorder::call(&ctx, &ENV, json!({ "name": name }), |host| {
            if !host.env_allow.borrow().iter().any(|n| n == name) {
                return Err(BindingError::new(
                    "denied",
                    format!(
                        "env({name:?}) is not allowed: list it in the runbook's `env` metadata"
                    ),
                ));
            }
            match std::env::var(name) {
                Ok(value) => {
                    host.redactor.add_secret(&value);
                    Ok(value.into())
                }
                Err(_) => Ok(Dynamic::UNIT),
            }
        })
    }
}

/// JSON conversion (pure functions: nothing is recorded).
#[export_module]
pub mod json_api {
    /// Parses JSON text into maps, arrays, strings, numbers, booleans and `()` for null.
    #[rhai_fn(return_raw)]
    pub(crate) fn parse(ctx: NativeCallContext, text: &str) -> ScriptResult<Dynamic> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            recorder::runtime_error(
                "bad_json",
                &format!("invalid JSON: {e}"),
                ctx.call_position(),
            )
        })?;
        rhai::serde::to_dynamic(value)
    }

    /// Encodes a value as compact JSON text.
    #[rhai_fn(return_raw)]
    pub(crate) fn encode(ctx: NativeCallContext, value: Dynamic) -> ScriptResult<String> {
        let _ = ctx;
        Ok(recorder::to_json(&value).to_string())
    }

    /// Encodes a value as indented JSON text.
    #[rhai_fn(return_raw)]
    pub(crate) fn encode_pretty(ctx: NativeCallContext, value: Dynamic) -> ScriptResult<String> {
        serde_json::to_string_pretty(&recorder::to_json(&value))
            .map_err(|e| recorder::runtime_error("bad_json", &e.to_string(), ctx.call_position()))
    }
}

/// The incident notes file, kept next to the transcript (`<run-id>.notes.md`).
#[export_module]
pub mod notes_api {
    /// Appends a timestamped line to the incident notes (mutating: plan mode only records it).
    /// Secrets are redacted before the line is written.
    #[rhai_fn(return_raw)]
    pub(crate) fn append(ctx: NativeCallContext, text: &str) -> ScriptResult<()> {
        recorder::call(&ctx, &NOTES_APPEND, json!({ "text": text }), |host| {
            let path = host.notes_path.borrow().clone().ok_or_else(|| {
                BindingError::new(
                    "no_notes",
                    "this run has no notes file (it has no transcript)",
                )
            })?;
            // A Markdown list item; continuation lines are indented so they stay inside it.
            let body = host.redactor.redact(text).replace('\n', "\n  ");
            let line = format!("- {} {body}\n", crate::base::clock::now_utc());
            // Private, and never through a link planted after the run started.
            crate::data::transcript::open_private_append(&path)
                .and_then(|mut f| {
                    f.write_all(line.as_bytes())?;
                    f.sync_data()
                })
                .map_err(|e| {
                    BindingError::new("io", format!("cannot append to {}: {e}", path.display()))
                })?;
            Ok(Dynamic::UNIT)
        })
        .map(|_| ())
    }
}
