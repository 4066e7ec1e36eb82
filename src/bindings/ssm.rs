//! `ssm::`: Run Command across the fleet, patching, and Parameter Store.
//!
//! Fleet-wide work goes through SSM Run Command, the distributed engine the fleet already has;
//! `runbook` only sends the command and collects each instance's result (concurrently), it never
//! opens SSH connections of its own.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use rhai::Map;
use rhai::plugin::*;
use serde_json::{Value, json};

use super::args;
use crate::base::clock::{WaitBound, WaitLimit};
use crate::base::error::BindingError;
use crate::sandbox::engine::Host;
use crate::sandbox::recorder::{self, Binding, Effect, ScriptResult, unit_placeholder};
use crate::services::cloud::{Cloud, CloudResult, CommandRequest, Filter, Invocation};

/// Output kept per instance and stream (SSM's own GetCommandInvocation limit is 24,000 chars).
pub(crate) const OUTPUT_LIMIT: usize = 24_000;
const DEFAULT_POLL: Duration = Duration::from_secs(2);

static RUN_COMMAND: Binding = Binding {
    name: "ssm::run_command",
    effect: Effect::Mutating,
    placeholder: command_placeholder,
};
/// `run_command` with `read_only: true`: a diagnostic the runbook vouches for, run in plans.
static RUN_COMMAND_READ_ONLY: Binding = Binding {
    name: "ssm::run_command",
    effect: Effect::DeclaredReadOnly,
    placeholder: command_placeholder,
};
static GET_PARAMETER: Binding = Binding {
    name: "ssm::get_parameter",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static PATCH_STATES: Binding = Binding {
    name: "ssm::patch_states",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static PUT_PARAMETER: Binding = Binding {
    name: "ssm::put_parameter",
    effect: Effect::Mutating,
    placeholder: version_placeholder,
};

/// A plan's stand-in for a command result: the shape of a real one, one entry per target
/// instance (tag targets resolved), each `Planned` with exit code 0 and empty output.
fn command_placeholder(args: &Value) -> Dynamic {
    let instances = args["resolved"]["instances"]
        .as_array()
        .or_else(|| args["targets"]["instances"].as_array())
        .cloned()
        .unwrap_or_default();
    let results: Vec<Value> = instances
        .iter()
        .map(|id| {
            json!({
                "instance": id,
                "status": "Planned",
                "exit_code": 0,
                "stdout": "",
                "stderr": "",
            })
        })
        .collect();
    let value = json!({
        "command_id": "planned",
        "document": args["document"],
        "status": "Planned",
        "ok": true,
        "succeeded": results.len(),
        "failed": 0,
        "results": results,
        "planned": true,
    });
    rhai::serde::to_dynamic(value).unwrap_or_default()
}

fn version_placeholder(_: &Value) -> Dynamic {
    Dynamic::from(0_i64)
}

fn arg_error(ctx: &NativeCallContext, e: BindingError) -> Box<EvalAltResult> {
    recorder::runtime_error(&e.code, &e.message, ctx.call_position())
}

fn clip(mut text: String) -> String {
    let bytes = text.len();
    if crate::base::error::truncate_utf8(&mut text, OUTPUT_LIMIT) {
        text.push_str(&format!("\n[truncated: {bytes} bytes in all]"));
    }
    text
}

/// Who a command goes to: explicit instances, or the running instances with these tags.
#[derive(Debug, Clone)]
enum Targets {
    Ids(Vec<String>),
    Tags(crate::services::cloud::Tags),
}

struct Request {
    targets: Targets,
    document: String,
    parameters: BTreeMap<String, Vec<String>>,
    max_concurrency: String,
    max_errors: String,
    /// The `timeout` option; None: the step's deadline bounds the command.
    timeout: Option<Duration>,
    poll: Duration,
    comment: String,
    /// Declared read-only by the runbook (`read_only: true`): run in plans too.
    read_only: bool,
}

fn parse_request(spec: &Map) -> Result<Request, BindingError> {
    args::known(
        spec,
        &[
            "instances",
            "tags",
            "document",
            "commands",
            "parameters",
            "max_concurrency",
            "max_errors",
            "timeout",
            "poll",
            "comment",
            "read_only",
        ],
    )?;
    let targets = match (spec.get("instances"), spec.get("tags")) {
        (Some(ids), None) => Targets::Ids(args::ids(ids, "instances")?),
        (None, Some(tags)) => Targets::Tags(args::tags(Some(tags))?),
        _ => {
            return Err(BindingError::new(
                "bad_argument",
                "give exactly one of `instances` or `tags`",
            ));
        }
    };
    let mut parameters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(p) = spec.get("parameters") {
        let map = p.clone().try_cast::<Map>().ok_or_else(|| {
            BindingError::new(
                "bad_argument",
                "`parameters` must be a map of name to string or array",
            )
        })?;
        for key in map.keys() {
            parameters.insert(key.to_string(), args::strings(&map, key)?);
        }
    }
    let commands = args::strings(spec, "commands")?;
    if !commands.is_empty() {
        parameters.insert("commands".into(), commands);
    }
    let max = |key: &str, default: &str| -> Result<String, BindingError> {
        Ok(match spec.get(key) {
            None => default.to_string(),
            Some(v) if v.is_int() => v.to_string(),
            Some(_) => args::string(spec, key)?.unwrap_or_else(|| default.to_string()),
        })
    };
    Ok(Request {
        targets,
        document: args::string(spec, "document")?.unwrap_or_else(|| "AWS-RunShellScript".into()),
        parameters,
        max_concurrency: max("max_concurrency", "50")?,
        max_errors: max("max_errors", "0")?,
        timeout: args::wait_timeout(spec, "timeout")?,
        poll: args::duration(spec, "poll", DEFAULT_POLL)?,
        comment: args::string(spec, "comment")?.unwrap_or_else(|| "sent by runbook".into()),
        read_only: args::boolean(spec, "read_only", false)?,
    })
}

/// How many result requests to keep in flight: SSM's own max_concurrency when it is a number.
fn fan_out(max_concurrency: &str) -> usize {
    max_concurrency.parse::<usize>().unwrap_or(50).clamp(1, 500)
}

async fn resolve(c: &Cloud, targets: &Targets) -> CloudResult<Vec<String>> {
    let ids = match targets {
        Targets::Ids(ids) => ids.clone(),
        // Resolved here rather than with SSM `Targets`, so the per-instance results are known
        // without ListCommandInvocations (which moto, among others, does not implement).
        Targets::Tags(tags) => c
            .describe_instances(&Filter {
                ids: Vec::new(),
                tags: tags.clone(),
                states: vec!["running".into()],
            })
            .await?
            .into_iter()
            .map(|i| i.id)
            .collect(),
    };
    if ids.is_empty() {
        return Err(BindingError::new(
            "NoTargets",
            "no running instance matches the command's targets",
        ));
    }
    Ok(ids)
}

async fn run(
    host: &Host,
    c: &Cloud,
    req: &Request,
    limit: &WaitLimit,
    ids: Vec<String>,
) -> CloudResult<Value> {
    let command = CommandRequest {
        instances: ids.clone(),
        document: req.document.clone(),
        parameters: req.parameters.clone(),
        max_concurrency: req.max_concurrency.clone(),
        max_errors: req.max_errors.clone(),
        // SSM's own timeout for the command is the wait's bound (SSM's allowed range).
        timeout_seconds: limit.limit.as_secs().clamp(30, 172_800) as i32,
        comment: req.comment.clone(),
    };
    let command_id = c.send_command(&command).await?;
    let bar = host.console.progress(
        ids.len() as u64,
        &format!("{} on {} instance(s)", req.document, ids.len()),
    );
    let clock = host.interrupt.clock();
    let started = clock.now();
    let mut done: BTreeMap<String, Invocation> = BTreeMap::new();
    loop {
        let pending: Vec<&String> = ids.iter().filter(|id| !done.contains_key(*id)).collect();
        let command_id = command_id.as_str();
        let answers: Vec<(String, CloudResult<Invocation>)> = futures_util::stream::iter(pending)
            .map(|id| async move { (id.clone(), c.command_invocation(command_id, id).await) })
            .buffer_unordered(fan_out(&req.max_concurrency))
            .collect()
            .await;
        for (id, answer) in answers {
            match answer {
                Ok(inv) if inv.is_terminal() => {
                    done.insert(id, inv);
                }
                Ok(_) => {}
                // Right after SendCommand, AWS may not know the invocation yet: still pending.
                Err(e) if e.code == "InvocationDoesNotExist" => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(bar) = &bar {
            bar.set_position(done.len() as u64);
        }
        if done.len() == ids.len() {
            break;
        }
        let Some(pause) = limit.next_poll(started.elapsed(), req.poll) else {
            if limit.bound == WaitBound::StepDeadline {
                // The step's deadline ends the step: the command is not "done with timeouts".
                let pending = ids
                    .iter()
                    .filter(|id| !done.contains_key(*id))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                let what = format!("no result from {}", req.document);
                return Err(crate::bindings::wait_ran_out(clock, limit, &what, &pending).await);
            }
            for id in &ids {
                done.entry(id.clone()).or_insert_with(|| Invocation {
                    instance: id.clone(),
                    status: "TimedOut".into(),
                    exit_code: -1,
                    stdout: String::new(),
                    stderr: format!(
                        "no result within {}",
                        humantime::format_duration(limit.limit)
                    ),
                });
            }
            break;
        };
        clock.sleep(pause).await;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let results: Vec<Value> = ids
        .iter()
        .filter_map(|id| done.remove(id))
        .map(|i| {
            json!({
                "instance": i.instance,
                "status": i.status,
                "exit_code": i.exit_code,
                "stdout": clip(i.stdout),
                "stderr": clip(i.stderr),
            })
        })
        .collect();
    let succeeded = results.iter().filter(|r| r["status"] == "Success").count();
    let failed = results.len() - succeeded;
    let status = if failed == 0 {
        "Success"
    } else if results.iter().any(|r| r["status"] == "TimedOut") {
        "TimedOut"
    } else {
        "Failed"
    };
    Ok(json!({
        "command_id": command_id,
        "document": req.document,
        "status": status,
        "ok": failed == 0,
        "succeeded": succeeded,
        "failed": failed,
        "results": results,
    }))
}

fn send(ctx: &NativeCallContext, req: Request) -> ScriptResult<Map> {
    let recorded = json!({
        "targets": match &req.targets { Targets::Ids(ids) => json!({ "instances": ids }), Targets::Tags(t) => json!({ "tags": t }) },
        "document": req.document,
        "parameters": req.parameters,
        "max_concurrency": req.max_concurrency,
        "max_errors": req.max_errors,
        "timeout": args::wait_timeout_recorded(req.timeout),
    });
    let spec = if req.read_only {
        &RUN_COMMAND_READ_ONLY
    } else {
        &RUN_COMMAND
    };
    // The instances are resolved before the call is decided, so the blast radius counts every
    // instance a tag target reaches, and a plan answers with one result per instance.
    let resolve = |host: &Host| -> Result<Value, BindingError> {
        let ids = match &req.targets {
            Targets::Ids(ids) => ids.clone(),
            targets => {
                let cloud = host.cloud.get(&host.io)?;
                host.io.block_on(&host.interrupt, resolve(cloud, targets))?
            }
        };
        Ok(json!({ "instances": ids }))
    };
    recorder::call_resolved(
        ctx,
        spec,
        recorded,
        recorder::Resolve::Always(&resolve),
        |host, resolved| {
            let ids: Vec<String> = match resolved["instances"].as_array() {
                Some(ids) => ids
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect(),
                None => match &req.targets {
                    Targets::Ids(ids) => ids.clone(),
                    Targets::Tags(_) => Vec::new(),
                },
            };
            if ids.is_empty() {
                return Err(BindingError::new(
                    "NoTargets",
                    "no running instance matches the command's targets",
                ));
            }
            let cloud = host.cloud.get(&host.io)?;
            let limit = crate::bindings::wait_limit(host, req.timeout);
            let value = host
                .io
                .block_on(&host.interrupt, run(host, cloud, &req, &limit, ids))?;
            args::to_dynamic(&value)
        },
    )
    .map(|d| d.try_cast::<Map>().unwrap_or_default())
}

/// SSM Run Command and Parameter Store.
#[export_module]
pub mod ssm_api {
    /// Runs an SSM document on instances and waits for every result. `spec`: `instances` (ids,
    /// or instances from `ec2::find`) or `tags` (the running instances with these tags);
    /// `document` (default `AWS-RunShellScript`); `commands` (string or array, for shell
    /// documents) or `parameters` (map); `max_concurrency` and `max_errors` (passed to SSM;
    /// defaults 50 and 0); `timeout` (default: the step's deadline; a longer one is cut to
    /// what the step has left; also SSM's own timeout for the command); `poll` (default `"2s"`);
    /// `comment`.
    /// Returns `#{ command_id, document, status, ok, succeeded, failed, results }` with one
    /// `#{ instance, status, exit_code, stdout, stderr }` per instance (output truncated at 24,000
    /// characters). A failed command does not fail the step: check `ok`; nor does its own
    /// `timeout` (the instances without a result have status `TimedOut`). Reaching the step's
    /// deadline ends the step `timed_out`. Mutating.
    ///
    /// Tag targets are resolved to instances (a read-only `DescribeInstances`) before anything is
    /// sent: `--max-resources` counts every instance the command would reach.
    ///
    /// `read_only: true` declares the command a read-only diagnostic (`top`, `free -m`, `ps`): a
    /// plan then runs it for real and records the call with `read_only: "declared by the
    /// runbook"`; a run still treats it as a write (intent, kill switch, blast radius). The
    /// runbook's author vouches for it: declare only commands that change nothing.
    ///
    /// In a plan (without `read_only`) nothing is sent and the result has the same shape:
    /// `#{ command_id: "planned", document, status: "Planned", ok: true, succeeded: N, failed: 0,
    /// planned: true, results }` with one `#{ instance, status: "Planned", exit_code: 0, stdout:
    /// "", stderr: "" }` per target instance, so `r.results[0].stdout` works in plans as in runs.
    #[rhai_fn(return_raw)]
    pub(crate) fn run_command(ctx: NativeCallContext, spec: Map) -> ScriptResult<Map> {
        let req = parse_request(&spec).map_err(|e| arg_error(&ctx, e))?;
        send(&ctx, req)
    }

    /// Runs shell commands (`AWS-RunShellScript`) on `targets` (ids, instances, or a tag map).
    /// Same result (and plan placeholder) as `run_command`. Mutating.
    #[rhai_fn(name = "shell", return_raw)]
    pub(crate) fn shell(
        ctx: NativeCallContext,
        targets: Dynamic,
        commands: Dynamic,
    ) -> ScriptResult<Map> {
        shell_with(ctx, targets, commands, Map::new())
    }

    /// `shell` with `run_command` options (`timeout`, `max_concurrency`, `max_errors`, ...), and
    /// `read_only: true` for a diagnostic that may run in plans:
    /// `ssm::shell(id, ["top -b -n 1"], #{ read_only: true })`.
    #[rhai_fn(name = "shell", return_raw)]
    pub(crate) fn shell_with(
        ctx: NativeCallContext,
        targets: Dynamic,
        commands: Dynamic,
        options: Map,
    ) -> ScriptResult<Map> {
        let mut spec = options;
        if targets.is_map() {
            spec.insert("tags".into(), targets);
        } else {
            spec.insert("instances".into(), targets);
        }
        spec.insert("commands".into(), commands);
        let req = parse_request(&spec).map_err(|e| arg_error(&ctx, e))?;
        send(&ctx, req)
    }

    /// Patches instances with `AWS-RunPatchBaseline` (the critical-CVE mandate: patch at once
    /// when a CVE of 9.0 or higher is released). Options: `operation` (`"Install"`, default, or
    /// `"Scan"`), `reboot` (`"RebootIfNeeded"`, default, or `"NoReboot"`), and the
    /// `run_command` options. Mutating.
    #[rhai_fn(return_raw)]
    pub(crate) fn patch(
        ctx: NativeCallContext,
        targets: Dynamic,
        options: Map,
    ) -> ScriptResult<Map> {
        let mut spec = options;
        let operation = spec
            .remove("operation")
            .map(|d| d.to_string())
            .unwrap_or_else(|| "Install".into());
        let reboot = spec
            .remove("reboot")
            .map(|d| d.to_string())
            .unwrap_or_else(|| "RebootIfNeeded".into());
        if targets.is_map() {
            spec.insert("tags".into(), targets);
        } else {
            spec.insert("instances".into(), targets);
        }
        spec.insert("document".into(), "AWS-RunPatchBaseline".into());
        let mut params = Map::new();
        params.insert("Operation".into(), operation.into());
        params.insert("RebootOption".into(), reboot.into());
        spec.insert("parameters".into(), params.into());
        let req = parse_request(&spec).map_err(|e| arg_error(&ctx, e))?;
        send(&ctx, req)
    }

    /// Patch Manager's compliance of instances (`DescribeInstancePatchStates`): an array of
    /// `#{ id, operation, installed, installed_pending_reboot, missing, failed,
    /// critical_non_compliant, operation_end }`, one per instance Patch Manager has scanned or
    /// patched (an instance it never did is absent: `ssm::patch(ids, #{ operation: "Scan" })`
    /// first). Read-only.
    #[rhai_fn(return_raw)]
    pub(crate) fn patch_states(ctx: NativeCallContext, ids: Dynamic) -> ScriptResult<rhai::Array> {
        let ids = args::ids(&ids, "ids").map_err(|e| arg_error(&ctx, e))?;
        recorder::call(&ctx, &PATCH_STATES, json!({ "ids": ids }), |host| {
            let cloud = host.cloud.get(&host.io)?;
            let states = host
                .io
                .block_on(&host.interrupt, cloud.patch_states(&ids))?;
            args::to_dynamic(&states)
        })
        .map(|d| d.into_array().unwrap_or_default())
    }

    /// Reads a parameter (decrypting SecureStrings). The value is treated as a secret from then
    /// on: it is redacted from the transcript, logs and the terminal. Read-only.
    #[rhai_fn(return_raw)]
    pub(crate) fn get_parameter(ctx: NativeCallContext, name: &str) -> ScriptResult<String> {
        let name = name.to_string();
        recorder::call(&ctx, &GET_PARAMETER, json!({ "name": name }), |host| {
            let cloud = host.cloud.get(&host.io)?;
            let value = host
                .io
                .block_on(&host.interrupt, cloud.get_parameter(&name, true))?;
            host.redactor.add_secret(&value);
            Ok(value.into())
        })
        .map(|d| d.to_string())
    }

    /// Writes a parameter and returns its new version. Options: `type` (`"String"`, default,
    /// `"SecureString"`, `"StringList"`), `overwrite` (default true). Mutating.
    #[rhai_fn(return_raw)]
    pub(crate) fn put_parameter(
        ctx: NativeCallContext,
        name: &str,
        value: &str,
        options: Map,
    ) -> ScriptResult<i64> {
        let parsed = (|| -> Result<_, BindingError> {
            args::known(&options, &["type", "overwrite"])?;
            Ok((
                args::string(&options, "type")?.unwrap_or_else(|| "String".into()),
                args::boolean(&options, "overwrite", true)?,
            ))
        })();
        let (kind, overwrite) = parsed.map_err(|e| arg_error(&ctx, e))?;
        let host = recorder::host_of(&ctx)?;
        if kind == "SecureString" {
            host.redactor.add_secret(value);
        }
        let (name, value) = (name.to_string(), value.to_string());
        recorder::call(
            &ctx,
            &PUT_PARAMETER,
            json!({ "name": name, "value": value, "type": kind, "overwrite": overwrite }),
            |host| {
                let cloud = host.cloud.get(&host.io)?;
                let version = host.io.block_on(
                    &host.interrupt,
                    cloud.put_parameter(&name, &value, &kind, overwrite),
                )?;
                Ok(Dynamic::from(version))
            },
        )
        .map(|d| d.as_int().unwrap_or_default())
    }
}
