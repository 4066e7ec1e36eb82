//! `runbook replay` of the repository's drill transcripts, and what recording read results whole
//! up to 64 KiB costs the transcript writer.
//!
//! Not a criterion bench: a replay is a whole process (load the runbook, read and verify the
//! transcript, run every step with every call answered from it, compare). It runs every drill in
//! `drills/` once into a scratch folder, takes the longest transcript by events and the longest
//! by recorded (simulated) duration, and spawns `runbook replay` on each `REPLAY_RUNS` times
//! (default 20), reporting the whole-process wall time and the replay's own step time
//! (`wall_ms` of its JSON report). Then it appends call events whose result is 2 KB (the bound
//! before) and 60 KB (under the bound now) to a transcript, written and fsync'd, and reports
//! the time per event and the line size.
//!
//! Run with `cargo bench --bench replay` (or `--profile dev` for the debug build the numbers in
//! docs/benchmarks.md were taken with). Under `cargo test --benches` it runs once as a smoke test.

// A test or bench crate has no users outside itself: its `pub` helpers are for its modules.
#![allow(unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use runbook::base::redact::Redactor;
use runbook::data::transcript::{Durability, TranscriptWriter};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn binary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbook"));
    c.current_dir(REPO);
    c.env("RUNBOOK_OPERATOR", "bench").env("NO_COLOR", "1");
    c
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (events, recorded duration ms) of a transcript.
fn shape(path: &Path) -> (usize, u64) {
    let text = std::fs::read_to_string(path).expect("read transcript");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let duration = lines
        .iter()
        .rev()
        .find(|e| e["type"] == "run_finished")
        .and_then(|e| e["duration_ms"].as_u64())
        .unwrap_or(0);
    (lines.len(), duration)
}

fn replay_runs(name: &str, transcript: &Path, runs: usize, report: bool) {
    let mut whole = Vec::new();
    let mut steps = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let out = binary()
            .args([
                "replay",
                &transcript.display().to_string(),
                "--output",
                "json",
            ])
            .output()
            .expect("spawn runbook replay");
        whole.push(started.elapsed());
        assert!(
            out.status.success(),
            "replay of {name} did not match: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let r: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
        steps.push(Duration::from_millis(r["wall_ms"].as_u64().unwrap_or(0)));
    }
    if !report {
        return;
    }
    whole.sort();
    steps.sort();
    let (events, recorded) = shape(transcript);
    println!(
        "{name}: {events} events, incident {recorded} ms (simulated) | replay whole process median {:.1} ms, p90 {:.1} ms, min {:.1} ms | its steps median {:.1} ms",
        ms(percentile(&whole, 0.5)),
        ms(percentile(&whole, 0.9)),
        ms(whole[0]),
        ms(percentile(&steps, 0.5)),
    );
}

fn append_cost(dir: &Path, bytes: usize, n: usize, report: bool) {
    let path = dir.join(format!("append-{bytes}.jsonl"));
    let mut writer = TranscriptWriter::create(&path, Rc::new(Redactor::new())).expect("create");
    // A read result shaped like instances: many small objects.
    let item = json!({ "id": "i-0a1b2c3d4e5f60001", "state": "running", "type": "t3.large",
        "subnet": "subnet-0a1b2c3d4e5f60001", "volumes": ["vol-0a1b2c3d4e5f60001"] });
    let per = item.to_string().len() + 1;
    let result = Value::Array(vec![item; bytes / per]);
    let event = json!({ "type": "call", "step": 0, "binding": "ec2::find", "args": {},
        "mutating": false, "planned": false, "duration_ms": 3, "result": result });
    for (label, durability) in [
        ("written", Durability::Written),
        ("fsync'd", Durability::Synced),
    ] {
        let started = Instant::now();
        for _ in 0..n {
            writer.append(&event, durability).expect("append");
        }
        let each = started.elapsed() / u32::try_from(n).unwrap_or(1);
        if report {
            println!(
                "append of a call event with a {:.1} KB result, {label}: {:.3} ms per event",
                event.to_string().len() as f64 / 1024.0,
                ms(each)
            );
        }
    }
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let runs = if benching {
        std::env::var("REPLAY_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20)
    } else {
        1
    };
    let scratch = tempfile::tempdir().expect("scratch folder");
    let out = scratch.path().join("out");
    let results = scratch.path().join("results");
    let drill = binary()
        .args(["drill", "--out"])
        .arg(&out)
        .arg("--results")
        .arg(&results)
        .output()
        .expect("spawn runbook drill");
    assert!(drill.status.success(), "the drills must pass");
    let transcripts: Vec<PathBuf> = std::fs::read_dir(&out)
        .expect("drill output")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    let by_events = transcripts
        .iter()
        .max_by_key(|p| shape(p).0)
        .expect("a transcript");
    let by_duration = transcripts
        .iter()
        .max_by_key(|p| shape(p).1)
        .expect("a transcript");
    let name = |p: &Path| {
        p.file_stem()
            .map(|s| {
                s.to_string_lossy()
                    .rsplit_once('-')
                    .map_or(String::new(), |(a, _)| a.to_string())
            })
            .unwrap_or_default()
    };
    replay_runs(&name(by_events), by_events, runs, benching);
    replay_runs(&name(by_duration), by_duration, runs, benching);
    let n = if benching { 200 } else { 2 };
    append_cost(scratch.path(), 2 * 1024, n, benching);
    append_cost(scratch.path(), 60 * 1024, n, benching);
}
