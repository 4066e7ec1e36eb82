//! CPU per alert of what a `runbook serve` worker does for every admitted alert, in process and
//! on one thread (issue 14: "serve reuses the compiled runbook per route"):
//!
//! - `load`: `Runbook::load` of the route's runbook on a fresh `Host`: build the sandboxed engine
//!   with every binding, compile, run the declaration pass, validate;
//! - `load+run`: the same, then the whole run (`Executor::run` of its one step), its transcript on
//!   tmpfs (`/dev/shm`) so fsync costs nothing and what is left is CPU.
//!
//! CPU time is the thread's own (`CLOCK_THREAD_CPUTIME_ID`), read around each iteration, so other processes on the machine do not count (they only make the
//! caches colder). The first load on a fresh thread is reported apart: that is what `runbook
//! check` pays once per process, and what a `serve` worker pays once for its first alert.
//! The runbook's one step only logs: the cloud call a real route makes is the sim's (or AWS's)
//! cost, not the load path's, and `benches/hooks_load.rs` measures the whole server.
//!
//! Run with `cargo bench --bench alert_cpu`; `ALERT_CPU_ITERS` sets the iterations (default
//! 2000). Under `cargo test --benches` it does 20 as a smoke test. See docs/benchmarks.md.

// A test or bench crate has no users outside itself: its `pub` helpers are for its modules.
#![allow(unreachable_pub)]

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use runbook::base::console::Console;
use runbook::data::transcript::RunStatus;
use runbook::run::executor::{Executor, RunOptions, Unattended};
use runbook::runbook::Runbook;
use runbook::sandbox::engine::Host;
use runbook::sandbox::recorder::Mode;

/// A route's runbook as `benches/hooks_load.rs` has it, with a step that makes no cloud call.
const ROUTE_RUNBOOK: &str = r#"
runbook(#{ id: "tag-target", version: "1.0.0", title: "Tag the target", severity: "P2",
    params: #{ instance_id: #{ type: "string", required: true } } });
containment("Mark the instance", |ctx| { log(`would tag ${ctx.instance_id}`); });
"#;

/// CPU time this thread has used so far (`CLOCK_THREAD_CPUTIME_ID`: nanoseconds, exact at the
/// read; `/proc/thread-self/schedstat` only moves at scheduler ticks).
#[allow(unsafe_code)] // One libc call with a valid out-pointer; there is no safe std API.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

fn host() -> Rc<Host> {
    Host::new(
        Mode::Run,
        Console::silent(),
        Arc::new(AtomicBool::new(false)),
    )
}

/// One alert's load and, with `run`, its run; returns its CPU time.
fn one(path: &Path, transcripts: &Path, n: usize, run: bool) -> Duration {
    let start = thread_cpu();
    let rb = Runbook::load(path, host()).expect("the route's runbook loads");
    if run {
        let params = rb
            .resolve_params(&[("instance_id".into(), "i-0123456789abcdef0".into())])
            .expect("params resolve");
        let transcript = transcripts.join(format!("run-{n}.jsonl"));
        let mut driver = Unattended {
            yes: None,
            operator: "bench".into(),
            approval_timeout: None,
        };
        let report = Executor::new(&rb, &mut driver)
            .run(RunOptions {
                resume: None,
                run_id: format!("bench-{n}"),
                transcript: transcript.clone(),
                environment: "sim".into(),
                account: None,
                operator: "hook:bench".into(),
                params,
                trigger: None,
            })
            .expect("the run runs");
        assert_eq!(report.status, RunStatus::Ok, "{}", report.reason);
    }
    drop(rb);
    let used = thread_cpu().saturating_sub(start);
    let _ = std::fs::remove_file(transcripts.join(format!("run-{n}.jsonl")));
    let _ = std::fs::remove_file(transcripts.join(format!("run-{n}.notes.md")));
    used
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let iters: usize = std::env::var("ALERT_CPU_ITERS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(if benching { 2000 } else { 20 });
    let dir = tempfile::Builder::new()
        .prefix("runbook-alert-cpu-")
        .tempdir_in(if Path::new("/dev/shm").is_dir() {
            Path::new("/dev/shm")
        } else {
            Path::new("/tmp")
        })
        .expect("scratch folder");
    let path = dir.path().join("tag-target.rhai");
    std::fs::write(&path, ROUTE_RUNBOOK).expect("write the runbook");

    println!("alert_cpu: {iters} iterations per case, CPU time of the measuring thread");
    for (case, run) in [("load", false), ("load+run", true)] {
        let (path, scratch) = (path.clone(), dir.path().to_path_buf());
        // A fresh thread per case, so its first iteration is a first load on a thread.
        let times = std::thread::Builder::new()
            .stack_size(8 * 1024 * 1024)
            .spawn(move || {
                (0..iters)
                    .map(|n| one(&path, &scratch, n, run))
                    .collect::<Vec<_>>()
            })
            .expect("spawn")
            .join()
            .expect("the bench thread");
        let first = times[0];
        let mut rest = times[1..].to_vec();
        rest.sort();
        let mean = rest.iter().sum::<Duration>() / rest.len().max(1) as u32;
        println!(
            "  {case:<9} first on a thread {:>8}; then mean {:>7}, p50 {:>7}, p90 {:>7}, p99 {:>7}",
            us(first),
            us(mean),
            us(percentile(&rest, 0.5)),
            us(percentile(&rest, 0.9)),
            us(percentile(&rest, 0.99)),
        );
    }
}
