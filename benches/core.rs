//! Criterion benchmarks of the core, through the library API (no process spawn).
//!
//! - `load_check/50_steps`: `Runbook::load` (compile, declaration pass, validation) of a generated
//!   50-step runbook, with a fresh `Host` each time, as `runbook check` does it.
//! - `executor/*`: whole `Executor::run`s of generated N-step runbooks whose steps do trivial work.
//!   The executor creates its own `TranscriptWriter` and offers no way to turn fsync off, so the
//!   "no fsync" numbers put the transcript on tmpfs (`/dev/shm`), where fsync returns at once.
//!   Per-step overhead is the slope between the 50- and 200-step runs, which cancels the per-run
//!   costs (transcript creation, `git status` for `run_started`, `run_finished`).
//! - `transcript/*`: one `TranscriptWriter::append` of a step_finished-sized event, written only,
//!   fsync'd, and "Synced" with `set_fsync(false)`, on a real disk folder under `target/`.
//!
//! Run with `cargo bench --bench core`; see docs/benchmarks.md.

// A test or bench crate has no users outside itself: its `pub` helpers are for its modules.
#![allow(unreachable_pub)]

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

use runbook::base::console::Console;
use runbook::base::redact::Redactor;
use runbook::data::transcript::{Durability, RunStatus, TranscriptWriter};
use runbook::run::executor::{Executor, RunOptions, Unattended};
use runbook::runbook::Runbook;
use runbook::sandbox::engine::Host;
use runbook::sandbox::recorder::Mode;

/// A runbook with `steps` trivial steps spread over the three phases in order; every fifth step
/// carries options (timeout, retries) so validation has something to check.
fn runbook_source(steps: usize) -> String {
    let mut src = format!(
        r#"runbook(#{{
    id: "bench-{steps}-steps",
    version: "1.0.0",
    title: "Benchmark fixture: {steps} trivial steps",
    severity: "P4",
    service: "bench",
    owner: "bench",
    params: #{{
        target: #{{ type: "string", "default": "i-0123456789abcdef0", description: "a target" }},
    }},
}});
"#
    );
    for i in 0..steps {
        let phase = ["containment", "eradication", "recovery"][i * 3 / steps];
        let options = if i % 5 == 4 {
            r#", #{ timeout: "30s", retries: 1, backoff: "1s" }"#
        } else {
            ""
        };
        src.push_str(&format!(
            "\n{phase}(\"Step {i}: touch the target\", |ctx| {{\n    let n = {i} * 2 + 1;\n    ctx.last = `${{ctx.target}}/${{n}}`;\n}}{options});\n"
        ));
    }
    src
}

fn write_runbook(dir: &Path, steps: usize) -> PathBuf {
    let path = dir.join(format!("bench-{steps}-steps.rhai"));
    std::fs::write(&path, runbook_source(steps)).expect("write generated runbook");
    path
}

fn host(mode: Mode) -> Rc<Host> {
    Host::new(mode, Console::silent(), Arc::new(AtomicBool::new(false)))
}

/// A scratch folder on a real disk, under `target/` (not tmpfs).
fn disk_dir(prefix: &str) -> tempfile::TempDir {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).expect("create target/");
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(target)
        .expect("scratch folder under target/")
}

/// A scratch folder on tmpfs when the machine has `/dev/shm`.
fn tmpfs_dir(prefix: &str) -> tempfile::TempDir {
    let builder = tempfile::Builder::new().prefix(prefix).clone();
    match builder.tempdir_in("/dev/shm") {
        Ok(dir) => dir,
        Err(_) => {
            eprintln!("warning: no /dev/shm; the \"tmpfs\" executor numbers include real fsyncs");
            builder.tempdir().expect("scratch folder")
        }
    }
}

fn load_check(c: &mut Criterion) {
    let dir = disk_dir("bench-load-");
    let path = write_runbook(dir.path(), 50);
    let mut group = c.benchmark_group("load_check");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    // The one-step fixture of the cold-start bench: what loading costs before any step.
    let trivial = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/trivial.rhai");
    group.bench_function("1_step_fixture", |b| {
        b.iter_with_large_drop(|| Runbook::load(&trivial, host(Mode::Plan)).expect("loads"))
    });
    group.bench_function("50_steps", |b| {
        b.iter_with_large_drop(|| {
            let rb = Runbook::load(&path, host(Mode::Plan)).expect("runbook loads");
            assert_eq!(rb.steps.len(), 50);
            rb
        })
    });
    group.finish();
}

/// Times `iters` whole runs of `rb`, each with a fresh transcript in `dir`; deleting the files is
/// left out of the timing.
fn time_runs(rb: &Runbook, dir: &Path, iters: u64, counter: &Cell<u64>) -> Duration {
    let params = rb.resolve_params(&[]).expect("defaults resolve");
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let n = counter.get();
        counter.set(n + 1);
        let transcript = dir.join(format!("run-{n}.jsonl"));
        let mut driver = Unattended {
            yes: None,
            operator: "bench".into(),
            approval_timeout: None,
        };
        let opts = RunOptions {
            resume: None,
            run_id: format!("bench-{n}"),
            transcript: transcript.clone(),
            environment: "bench".into(),
            account: None,
            operator: "bench".into(),
            params: params.clone(),
            trigger: None,
        };
        let start = Instant::now();
        let report = Executor::new(rb, &mut driver).run(opts).expect("run");
        total += start.elapsed();
        assert_eq!(report.status, RunStatus::Ok, "{}", report.reason);
        let _ = std::fs::remove_file(&transcript);
        let _ = std::fs::remove_file(transcript.with_extension("notes.md"));
    }
    total
}

fn executor(c: &mut Criterion) {
    let shm = tmpfs_dir("runbook-bench-exec-");
    let disk = disk_dir("bench-exec-");
    let counter = Cell::new(0);
    let mut group = c.benchmark_group("executor");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    // Runbooks and transcripts on tmpfs: fsync is free there, so this is the executor's own cost.
    for steps in [50, 200] {
        let rb = Runbook::load(&write_runbook(shm.path(), steps), host(Mode::Run)).expect("load");
        group.bench_function(format!("{steps}_steps_tmpfs"), |b| {
            b.iter_custom(|iters| time_runs(&rb, shm.path(), iters, &counter))
        });
    }
    // The same 50 steps with the transcript on a real disk: two fsyncs per step plus two per run.
    let rb = Runbook::load(&write_runbook(shm.path(), 50), host(Mode::Run)).expect("load");
    group.measurement_time(Duration::from_secs(6));
    group.bench_function("50_steps_disk_fsync", |b| {
        b.iter_custom(|iters| time_runs(&rb, disk.path(), iters, &counter))
    });
    group.finish();
}

fn transcript(c: &mut Criterion) {
    let disk = disk_dir("bench-transcript-");
    let event = json!({
        "type": "step_finished",
        "step": 3,
        "status": "ok",
        "duration_ms": 12,
        "attempts": 1,
        "ctx": {
            "incident": "2025-0914-001",
            "severity": "P2",
            "environment": "prod",
            "started": "2026-11-23T10:30:00.000Z",
            "run": {
                "id": "01jbench0000000000000000000",
                "mode": "run",
                "environment": "prod",
                "runbook": "incident-record",
                "version": "1.0.0",
            },
        },
    });
    let mut group = c.benchmark_group("transcript");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    let cases = [
        ("append_written", Durability::Written, true),
        ("append_synced_fsync", Durability::Synced, true),
        ("append_synced_fsync_off", Durability::Synced, false),
    ];
    for (name, durability, fsync) in cases {
        let path = disk.path().join(format!("{name}.jsonl"));
        append_bench(&mut group, name, &path, &event, durability, fsync);
    }
    // The same event on tmpfs: what the executor's per-step numbers above pay per event.
    let shm = tmpfs_dir("runbook-bench-transcript-");
    let path = shm.path().join("append_written_tmpfs.jsonl");
    append_bench(
        &mut group,
        "append_written_tmpfs",
        &path,
        &event,
        Durability::Written,
        true,
    );
    group.finish();
}

fn append_bench(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    path: &Path,
    event: &serde_json::Value,
    durability: Durability,
    fsync: bool,
) {
    let mut writer =
        TranscriptWriter::create(path, Rc::new(Redactor::new())).expect("create transcript");
    writer.set_fsync(fsync);
    group.bench_function(name, |b| {
        b.iter(|| writer.append(event, durability).expect("append"))
    });
}

/// `run_started` asks git for the runbook's commit (one `git status` process per run): the
/// largest part of the executor's per-run cost.
fn git_info(c: &mut Criterion) {
    let shm = tmpfs_dir("runbook-bench-git-");
    let outside = write_runbook(shm.path(), 1);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/trivial.rhai");
    let mut group = c.benchmark_group("git_info");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for (name, file) in [("in_work_tree", repo), ("outside_work_tree", outside)] {
        let dir = file.parent().expect("a folder").to_path_buf();
        group.bench_function(name, |b| {
            b.iter(|| runbook::base::git::info(&dir, &[file.as_path()]))
        });
    }
    group.finish();
}

criterion_group!(benches, load_check, executor, transcript, git_info);
criterion_main!(benches);
