//! `local::`: a program on the runner's machine (`aws`, `kubectl`, ...), the escape hatch for
//! what has no binding yet. It runs only when the runbook declares the program (`commands` in its
//! metadata) and the environment allows it (`commands` in runbook.toml, aws backend); never
//! through a shell (the program and each argument are passed as they are), with a bounded time
//! and output, its output redacted. It is a write unless the call declares it read-only, so a
//! plan shows it as a would-call (a declared read-only call runs in plans too). On the sim no
//! program starts: the fleet's `local_commands` answer.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rhai::plugin::*;
use rhai::{Array, Map};
use serde_json::{Value, json};

use super::args;
use super::ec2::{arg_error, planned_value};
use crate::base::error::BindingError;
use crate::sandbox::engine::Host;
use crate::sandbox::recorder::{self, Binding, Effect, ScriptResult};
use crate::services::cloud::Cloud;
use crate::services::cloud::sim::LocalOutput;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_OUTPUT: i64 = 64 * 1024;
const MAX_OUTPUT_CAP: i64 = 4 * 1024 * 1024;
/// How often a running program is checked for its end, the deadline and Ctrl-C.
const POLL: Duration = Duration::from_millis(10);

static RUN: Binding = Binding {
    name: "local::run",
    effect: Effect::Mutating,
    placeholder: run_placeholder,
};
static RUN_READ_ONLY: Binding = Binding {
    name: "local::run",
    effect: Effect::DeclaredReadOnly,
    placeholder: run_placeholder,
};

fn run_placeholder(args: &Value) -> Dynamic {
    planned_value(json!({
        "program": args["program"], "exit_code": 0, "ok": true, "stdout": "", "stderr": "",
        "truncated": false, "planned": true,
    }))
}

/// Reads a pipe to its end, keeping the first `max` bytes; past them it sets `over` (the
/// program is then stopped: its output is bounded, not its appetite).
fn read_bounded(mut pipe: impl Read, max: usize, over: Arc<AtomicBool>) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                if n > room {
                    over.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

struct Finished {
    exit_code: i64,
    stdout: String,
    stderr: String,
    truncated: bool,
    timed_out: bool,
}

/// Starts `program` with `args` (no shell), stdin closed, and waits at most `limit` (or until
/// the run is interrupted), stopping it when its output passes `max` bytes.
fn execute(
    host: &Host,
    program: &str,
    args: &[String],
    limit: Duration,
    max: usize,
) -> Result<Finished, BindingError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BindingError::new("spawn_failed", format!("cannot start {program}: {e}")))?;
    let over = Arc::new(AtomicBool::new(false));
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        let over = over.clone();
        pipe.map(|p| std::thread::spawn(move || read_bounded(p, max, over)))
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {
                let late = started.elapsed() >= limit;
                if late || over.load(Ordering::SeqCst) || host.interrupt.check().is_some() {
                    timed_out = late;
                    let _ = child.kill();
                    break child.wait().ok();
                }
                std::thread::sleep(POLL);
            }
            Err(e) => {
                let _ = child.kill();
                return Err(BindingError::new(
                    "spawn_failed",
                    format!("cannot wait for {program}: {e}"),
                ));
            }
        }
    };
    let text = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        let bytes = h.and_then(|h| h.join().ok()).unwrap_or_default();
        host.redactor.redact(&String::from_utf8_lossy(&bytes))
    };
    Ok(Finished {
        // A program ended by a signal (ours, on a timeout or too much output) has no exit code.
        exit_code: status.and_then(|s| s.code()).map_or(-1, i64::from),
        stdout: text(out),
        stderr: text(err),
        truncated: over.load(Ordering::SeqCst),
        timed_out,
    })
}

/// Declared local programs.
#[export_module]
pub mod local_api {
    /// Runs a program the runbook declares (`commands: ["kubectl"]` in its metadata) with `args`
    /// (an array of strings, passed as they are: no shell, no globbing, no `|`), where the
    /// environment allows it (`commands = ["kubectl"]` in runbook.toml; on the sim the fleet's
    /// `local_commands` answer and nothing starts). Returns `#{ program, exit_code, ok, stdout,
    /// stderr, truncated }` (a non-zero exit is `ok: false`, not an error); output is redacted.
    /// Mutating (see `run(program, args, options)` for a read-only call). In a plan: `#{ program,
    /// exit_code: 0, ok: true, stdout: "", stderr: "", truncated: false, planned: true }`.
    #[rhai_fn(name = "run", return_raw)]
    pub(crate) fn run(ctx: NativeCallContext, program: &str, args: Array) -> ScriptResult<Map> {
        run_with(ctx, program, args, Map::new())
    }

    /// `run` with options: `read_only` (default false: a call that changes nothing, such as
    /// `kubectl get`, declared so runs in plans too, recorded as declared by the runbook; in a
    /// run it is still held to the write guardrails), `timeout` (default `"60s"`, cut to the
    /// step's deadline; the program is stopped and the call fails with `CommandTimedOut`),
    /// `max_output` (bytes kept of stdout and of stderr, default 65536: past it the program is
    /// stopped and `truncated` is true).
    #[rhai_fn(name = "run", return_raw)]
    pub(crate) fn run_with(
        ctx: NativeCallContext,
        program: &str,
        args: Array,
        options: Map,
    ) -> ScriptResult<Map> {
        let parsed = (|| -> Result<_, BindingError> {
            args::known(&options, &["read_only", "timeout", "max_output"])?;
            let argv = args
                .iter()
                .map(|a| a.clone().into_string().ok())
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| {
                    BindingError::new("bad_argument", "args must be an array of strings")
                })?;
            Ok((
                argv,
                args::boolean(&options, "read_only", false)?,
                args::duration(&options, "timeout", DEFAULT_TIMEOUT)?,
                args::int(&options, "max_output", DEFAULT_MAX_OUTPUT)?.clamp(1, MAX_OUTPUT_CAP),
            ))
        })();
        let (argv, read_only, timeout, max_output) = parsed.map_err(|e| arg_error(&ctx, e))?;
        let host = recorder::host_of(&ctx)?;
        // Refused before the recorder decides anything: a plan must not show an undeclared
        // program as something a run could do.
        if !host.commands_allow.borrow().iter().any(|p| p == program) {
            return Err(arg_error(
                &ctx,
                BindingError::new(
                    "denied",
                    format!(
                        "local::run({program:?}) is not allowed: list it in the runbook's `commands` metadata"
                    ),
                ),
            ));
        }
        let program = program.to_string();
        let spec = if read_only { &RUN_READ_ONLY } else { &RUN };
        let recorded = json!({
            "program": program, "args": argv, "read_only": read_only,
            "timeout": humantime::format_duration(timeout).to_string(),
            "command": format!("local:{program}"),
        });
        recorder::call(&ctx, spec, recorded, |host| {
            let env = host.cloud.environment();
            let finished = match host.cloud.get(&host.io)? {
                Cloud::Sim(sim) => {
                    let LocalOutput {
                        exit_code,
                        stdout,
                        stderr,
                    } = sim.local_command(&program, &argv, !read_only)?;
                    Finished {
                        exit_code,
                        stdout: host.redactor.redact(&stdout),
                        stderr: host.redactor.redact(&stderr),
                        truncated: false,
                        timed_out: false,
                    }
                }
                Cloud::Aws(_) => {
                    if !env.commands.contains(&program) {
                        return Err(BindingError::new(
                            "denied",
                            format!(
                                "environment {} does not allow local program {program}: list it in its `commands` in runbook.toml",
                                env.name
                            ),
                        ));
                    }
                    let limit = crate::bindings::wait_limit(host, Some(timeout)).limit;
                    execute(
                        host,
                        &program,
                        &argv,
                        limit,
                        usize::try_from(max_output).unwrap_or(usize::MAX),
                    )?
                }
            };
            if finished.timed_out {
                return Err(BindingError::new(
                    "CommandTimedOut",
                    format!(
                        "{program} did not finish within {}: stopped",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            args::to_dynamic(&json!({
                "program": program, "exit_code": finished.exit_code, "ok": finished.exit_code == 0,
                "stdout": finished.stdout, "stderr": finished.stderr, "truncated": finished.truncated,
            }))
        })
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }
}
