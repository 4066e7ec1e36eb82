//! Crash and resume: the runner is killed with SIGKILL at many points of the compromised-instance
//! runbook on a sim whose state persists across processes, then `runbook resume` finishes the run.
//! Every transcript must verify and no write may ever be made twice.

mod common;

use common::{Workspace, events, of_type};
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const POINTS: usize = 20;

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "runbook.toml",
        "[environments.crash]\nbackend = \"sim\"\nstate = \"sim-state.json\"\n",
    );
    ws
}

fn start(ws: &Workspace, kill_after: Option<usize>) -> common::Run {
    let runbooks = format!("{REPO}/runbooks");
    let mut cmd = ws.cmd().args(&[
        "run",
        "ec2-compromised-instance",
        "--runbooks",
        &runbooks,
        "--env",
        "crash",
        "--yes",
        "--no-interactive",
        "--param",
        "instance_id=i-0a1b2c3d4e5f60001",
        "--param",
        "incident=2026-1123-011",
        "--transcript",
        "t.jsonl",
    ]);
    if let Some(n) = kill_after {
        cmd = cmd.env("RUNBOOK_TEST_KILL_AFTER_EVENTS", &n.to_string());
    }
    cmd.output()
}

fn mutations(ws: &Workspace) -> Vec<String> {
    let state: Value = serde_json::from_str(&ws.read("sim-state.json")).unwrap();
    state["mutations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect()
}

/// Mutating calls actually sent (not planned, not answered from the transcript), in order.
fn sent(ev: &[Value]) -> Vec<String> {
    of_type(ev, "call")
        .iter()
        .filter(|c| {
            c["mutating"] == true
                && c["planned"] == false
                && c["replayed"] != true
                && c["error"].is_null()
        })
        .map(|c| c["binding"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn killed_at_twenty_points_and_resumed_no_write_is_ever_made_twice() {
    let clean = workspace();
    start(&clean, None).expect_code(0);
    let reference_mutations = mutations(&clean);
    let clean_events = events(&clean.path().join("t.jsonl"));
    let reference_sent = sent(&clean_events);
    let total = clean_events.len();
    assert!(total > POINTS + 2, "the runbook writes {total} events");

    let mut uncertain = 0;
    let stride = (total - 2) as f64 / POINTS as f64;
    for k in 0..POINTS {
        let point = 1 + (k as f64 * stride) as usize;
        let ws = workspace();
        let killed = start(&ws, Some(point));
        assert_eq!(
            killed.code, -1,
            "point {point}: the runner must die by the signal, stderr: {}",
            killed.stderr
        );
        // Whatever was written before the kill is a valid chain.
        ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);

        let resumed = ws.run(&["resume", "t.jsonl", "--yes", "--no-interactive"]);
        ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);
        let ev = events(&ws.path().join("t.jsonl"));
        let done = mutations(&ws);
        match resumed.code {
            0 => {
                assert_eq!(
                    done, reference_mutations,
                    "point {point}: the cloud saw exactly the clean run's writes"
                );
                assert_eq!(
                    sent(&ev),
                    reference_sent,
                    "point {point}: each write sent exactly once"
                );
                assert_eq!(ev.last().unwrap()["status"], "ok");
            }
            3 => {
                // Killed between a write's intent and its result: the resume stops for a person.
                uncertain += 1;
                assert!(
                    resumed.stderr.contains("uncertain"),
                    "point {point}: {}",
                    resumed.stderr
                );
                assert!(
                    reference_mutations.starts_with(&done),
                    "point {point}: nothing repeated: {done:?}"
                );
                let decision = of_type(&ev, "decision").into_iter().last().unwrap().clone();
                assert_eq!(decision["by"], "resume");
            }
            other => panic!("point {point}: resume exited {other}: {}", resumed.stderr),
        }
    }
    assert!(
        uncertain < POINTS / 2,
        "most crash points resume on their own ({uncertain} were uncertain)"
    );
}

#[test]
fn resume_refuses_a_changed_runbook_unless_allowed_and_needs_secrets_again() {
    let ws = workspace();
    let rb = concat!(
        "runbook(#{ id: \"two\", version: \"1.0.0\", title: \"t\", severity: \"P3\",\n",
        "  params: #{ token: #{ type: \"string\", secret: true, required: true } } });\n",
        "containment(\"One\", |ctx| { notes::append(\"one\"); });\n",
        "recovery(\"Two\", |ctx| { notes::append(`two ${ctx.token.len()}`); }, #{ confirm: true });\n",
    );
    ws.write("runbooks/two.rhai", rb);
    // Stops at the confirmation (no --yes): an aborted run to resume.
    ws.run(&[
        "run",
        "two",
        "--env",
        "crash",
        "--no-interactive",
        "--param",
        "token=s3cret-token",
        "--transcript",
        "t.jsonl",
    ])
    .expect_code(3);
    let missing = ws.run(&["resume", "t.jsonl", "--yes", "--no-interactive"]);
    missing.expect_code(2);
    assert!(
        missing.stderr.contains("token is secret"),
        "{}",
        missing.stderr
    );

    ws.write(
        "runbooks/two.rhai",
        &rb.replace("notes::append(\"one\")", "notes::append(\"uno\")"),
    );
    let changed = ws.run(&[
        "resume",
        "t.jsonl",
        "--yes",
        "--no-interactive",
        "--param",
        "token=s3cret-token",
    ]);
    changed.expect_code(2);
    assert!(
        changed.stderr.contains("--allow-changed"),
        "{}",
        changed.stderr
    );

    ws.run(&[
        "resume",
        "t.jsonl",
        "--yes",
        "--no-interactive",
        "--allow-changed",
        "--param",
        "token=s3cret-token",
    ])
    .expect_code(0);
    let notes = ws.read("t.notes.md");
    assert_eq!(
        notes.matches("- ").count(),
        2,
        "step one is not run again: {notes}"
    );
    assert!(
        notes.contains("two 12"),
        "the secret is back in ctx: {notes}"
    );
    let ev = events(&ws.path().join("t.jsonl"));
    let resumed = of_type(&ev, "run_resumed");
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0]["allow_changed"], true);
    assert_eq!(resumed[0]["from_step"], 1);
    assert!(!ws.read("t.jsonl").contains("s3cret-token"));
    ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);
}
