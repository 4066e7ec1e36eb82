//! Cold process start of the real binary: `runbook run <trivial.rhai>` spawned N times.
//!
//! Not a criterion bench: what matters here is the distribution of whole-process times and the
//! time from `spawn` to the first step, which criterion's statistics do not give. For every run
//! it records, relative to the instant just before `spawn`:
//!
//! - `loaded`: the first stderr line ("running <id>@<version> ..."), printed after the runbook is
//!   loaded and checked and before the executor starts;
//! - `first step`: the first step's "[1/1] containment · ... ..." line, printed by the console just
//!   before `step_started` is recorded (so after `run_started` was written and fsync'd);
//! - `exit`: the process has exited (`wait` returned);
//! - `ts(step_started)`: the same moment read back from the transcript's `ts` field, which has
//!   millisecond resolution (a cross-check of the stderr timestamps, truncated to the ms).
//!
//! Run with `cargo bench --bench cold_start` (the bench profile builds `target/release/runbook`).
//! `COLD_START_RUNS` sets the runs per case (default 60). Under `cargo test --benches` (no
//! `--bench` argument) every case runs once as a smoke test and nothing is reported.

// A test or bench crate has no users outside itself: its `pub` helpers are for its modules.
#![allow(unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const WARMUP_RUNS: usize = 5;
const DEFAULT_RUNS: usize = 60;

/// One spawn of the binary.
#[derive(Default)]
struct Sample {
    loaded: Option<Duration>,
    first_step: Option<Duration>,
    exit: Duration,
    /// `ts` of the first `step_started` minus the wall clock at spawn, in ms (ms resolution).
    ts_first_step_ms: Option<f64>,
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    /// Where `run` writes its transcript, when the case runs one (a fresh file per spawn).
    transcript_dir: Option<PathBuf>,
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/trivial.rhai")
}

fn run_once(case: &Case, n: usize) -> Sample {
    let mut args = case.args.clone();
    let transcript = case
        .transcript_dir
        .as_ref()
        .map(|dir| dir.join(format!("run-{n}.jsonl")));
    if let Some(t) = &transcript {
        args.push("--transcript".into());
        args.push(t.display().to_string());
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
    command
        .args(&args)
        .env("RUNBOOK_OPERATOR", "bench")
        .env_remove("RUNBOOK_PATH")
        .env_remove("RUNBOOK_TRANSCRIPTS")
        .env_remove("RUNBOOK_CONFIG")
        .env_remove("RUNBOOK_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());

    let wall_at_spawn = SystemTime::now();
    let start = Instant::now();
    let mut child = command.spawn().expect("spawn target/release/runbook");
    let mut sample = Sample::default();
    let stderr = child.stderr.take().expect("piped stderr");
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let at = start.elapsed();
        if sample.loaded.is_none() && line.starts_with("running ") {
            sample.loaded = Some(at);
        }
        if sample.first_step.is_none() && line.starts_with("[1/") && line.ends_with(" ...") {
            sample.first_step = Some(at);
        }
    }
    let status = child.wait().expect("wait for runbook");
    sample.exit = start.elapsed();
    assert!(status.success(), "{} exited with {status}", case.name);

    if let Some(t) = &transcript {
        sample.ts_first_step_ms = first_step_ts(t).map(|ts| {
            let spawn_ms = wall_at_spawn
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_secs_f64()
                * 1000.0;
            ts - spawn_ms
        });
        let _ = std::fs::remove_file(t);
        let _ = std::fs::remove_file(t.with_extension("notes.md"));
    }
    sample
}

/// The `ts` of the first `step_started` event, in ms since the epoch.
fn first_step_ts(transcript: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(transcript).ok()?;
    text.lines().find_map(|line| {
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        if event["type"] != "step_started" {
            return None;
        }
        let ts = chrono::DateTime::parse_from_rfc3339(event["ts"].as_str()?).ok()?;
        Some(ts.timestamp_millis() as f64)
    })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn row(label: &str, values: impl Iterator<Item = f64>) {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        println!("  {label:<22} (not seen)");
        return;
    }
    v.sort_by(f64::total_cmp);
    println!(
        "  {label:<22} min {:>6.2}  median {:>6.2}  p90 {:>6.2}  max {:>6.2}  ms  (n={})",
        v[0],
        percentile(&v, 50.0),
        percentile(&v, 90.0),
        v[v.len() - 1],
        v.len()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let runs = if benching {
        std::env::var("COLD_START_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_RUNS)
    } else {
        1
    };

    // Transcripts go to a real disk folder (fsync is part of the cost), under target/.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).expect("create target/");
    let scratch = tempfile::Builder::new()
        .prefix("bench-cold-start-")
        .tempdir_in(&target)
        .expect("scratch folder under target/");
    // The same fixture outside any git work tree: `run_started` asks git for the runbook's commit,
    // and this shows what that costs.
    let outside = tempfile::Builder::new()
        .prefix("runbook-bench-")
        .tempdir()
        .expect("scratch folder outside the repository");
    let outside_fixture = outside.path().join("trivial.rhai");
    std::fs::copy(fixture(), &outside_fixture).expect("copy fixture");

    let in_repo = fixture().display().to_string();
    let cases = [
        Case {
            name: "--version (bare process start)",
            args: vec!["--version".into()],
            transcript_dir: None,
        },
        Case {
            name: "check trivial.rhai (start + load)",
            args: vec!["check".into(), in_repo.clone()],
            transcript_dir: None,
        },
        Case {
            name: "run trivial.rhai, in the git work tree",
            args: vec!["run".into(), in_repo],
            transcript_dir: Some(scratch.path().join("in-repo")),
        },
        Case {
            name: "run trivial.rhai, outside any git work tree",
            args: vec!["run".into(), outside_fixture.display().to_string()],
            transcript_dir: Some(scratch.path().join("outside")),
        },
    ];

    if benching {
        println!(
            "cold start: {} ({} runs per case after {WARMUP_RUNS} warm-up runs)",
            env!("CARGO_BIN_EXE_runbook"),
            runs
        );
    }
    for case in &cases {
        let warmup = if benching { WARMUP_RUNS } else { 0 };
        let samples: Vec<Sample> = (0..warmup + runs)
            .map(|n| run_once(case, n))
            .skip(warmup)
            .collect();
        if !benching {
            continue;
        }
        println!("{}", case.name);
        row("process exit", samples.iter().map(|s| ms(s.exit)));
        if case.transcript_dir.is_some() {
            row(
                "loaded (stderr)",
                samples.iter().filter_map(|s| s.loaded.map(ms)),
            );
            row(
                "first step (stderr)",
                samples.iter().filter_map(|s| s.first_step.map(ms)),
            );
            row(
                "first step (ts, 1 ms)",
                samples.iter().filter_map(|s| s.ts_first_step_ms),
            );
        }
    }
}
