//! Crash and resume: the runner is killed with SIGKILL at many points of the compromised-instance
//! runbook on a sim whose state persists across processes, then `runbook resume` finishes the run.
//! Every transcript must verify and no write may ever be made twice.

use crate::common;

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
        // Whatever was written before the kill is a valid chain, of a run that never finished.
        ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(1);
        ws.run(&["transcript", "verify", "t.jsonl", "--allow-unfinished"])
            .expect_code(0);

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

#[test]
fn run_resumed_records_who_resumed_and_how_that_identity_was_established() {
    let ws = workspace();
    ws.write(
        "runbooks/two.rhai",
        concat!(
            "runbook(#{ id: \"two\", version: \"1.0.0\", title: \"t\", severity: \"P3\" });\n",
            "containment(\"One\", |ctx| { notes::append(\"one\"); });\n",
            "recovery(\"Two\", |ctx| { notes::append(\"two\"); }, #{ confirm: true });\n",
        ),
    );
    // Stops at the confirmation (no --yes): an aborted run to resume.
    ws.run(&[
        "run",
        "two",
        "--env",
        "crash",
        "--no-interactive",
        "--transcript",
        "t.jsonl",
    ])
    .expect_code(3);
    ws.cmd()
        .args(&["resume", "t.jsonl", "--yes", "--no-interactive"])
        .env("RUNBOOK_OPERATOR", "someone-else")
        .output()
        .expect_code(0);
    let ev = events(&ws.path().join("t.jsonl"));
    let started = &of_type(&ev, "run_started")[0];
    let resumed = &of_type(&ev, "run_resumed")[0];
    // The same established identity as the start (this account), the claimed name kept apart.
    assert_eq!(resumed["identity"]["via"], "os", "{resumed}");
    assert_eq!(
        resumed["identity"]["id"], started["identity"]["id"],
        "{resumed}"
    );
    assert_eq!(resumed["identity"]["claimed"], "someone-else", "{resumed}");
    assert!(
        resumed["operator"]
            .as_str()
            .unwrap()
            .starts_with("someone-else (claimed; ")
    );
    let shown = ws.run(&["transcript", "render", "t.jsonl"]);
    shown.expect_code(0);
    assert!(
        shown.stdout.contains(&format!(
            "resumed by {} (established via os) at step 2",
            resumed["operator"].as_str().unwrap()
        )),
        "{}",
        shown.stdout
    );
}

/// Runs `args` (after `run ID`) in the crash environment, transcript `t.jsonl`.
fn run_rb(ws: &Workspace, id: &str, extra: &[&str]) -> common::Run {
    let mut args = vec!["run", id, "--env", "crash", "--transcript", "t.jsonl"];
    args.extend_from_slice(extra);
    ws.run(&args)
}

/// A runbook: step one tags instance 1, step two (confirmed) tags instance 2.
const TWO_TAGS: &str = concat!(
    "runbook(#{ id: \"two-tags\", version: \"1.0.0\", title: \"t\", severity: \"P3\" });\n",
    "containment(\"One\", |ctx| { ec2::tag([\"i-0a1b2c3d4e5f60001\"], #{ Step: \"one\" }); });\n",
    "recovery(\"Two\", |ctx| { ec2::tag([\"i-0a1b2c3d4e5f60002\"], #{ Step: \"two\" }); }, #{ confirm: true });\n",
);

#[test]
fn resume_keeps_the_kill_switch_and_the_resource_cap_the_run_started_with() {
    // The kill switch: thrown while the run was stopped, it holds the resumed run's writes.
    let ws = workspace();
    ws.write("runbooks/two-tags.rhai", TWO_TAGS);
    run_rb(
        &ws,
        "two-tags",
        &["--no-interactive", "--kill-switch", "STOP"],
    )
    .expect_code(3);
    let ev = events(&ws.path().join("t.jsonl"));
    let recorded = &ev[0]["guardrails"];
    assert!(
        recorded["kill_switch"]
            .as_str()
            .is_some_and(|p| p.ends_with("/STOP") && p.starts_with('/')),
        "{recorded}"
    );
    assert_eq!(mutations(&ws).len(), 1);
    ws.write("STOP", "");
    let resumed = ws.run(&["resume", "t.jsonl", "--yes", "--no-interactive"]);
    assert_ne!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(
        mutations(&ws).len(),
        1,
        "no write after the switch was thrown"
    );
    let ev = events(&ws.path().join("t.jsonl"));
    let refused = of_type(&ev, "guardrail");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["rule"], "kill_switch");

    // The cap: the instance step one changed still counts after the resume.
    let ws = workspace();
    ws.write("runbooks/two-tags.rhai", TWO_TAGS);
    run_rb(
        &ws,
        "two-tags",
        &["--no-interactive", "--max-resources", "1"],
    )
    .expect_code(3);
    let resumed = ws.run(&["resume", "t.jsonl", "--yes", "--no-interactive"]);
    assert_ne!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(
        mutations(&ws).len(),
        1,
        "the second instance is over the cap"
    );
    let ev = events(&ws.path().join("t.jsonl"));
    let refused = of_type(&ev, "guardrail");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["rule"], "blast_radius");
    assert_eq!(
        of_type(&ev, "run_resumed")[0]["guardrails"]["max_resources"],
        1
    );
}

#[test]
fn a_crash_during_a_rollback_resumes_without_sending_a_finished_write_again() {
    let rb = concat!(
        "runbook(#{ id: \"rollback\", version: \"1.0.0\", title: \"t\", severity: \"P3\" });\n",
        "containment(\"Contain\", |ctx| {\n",
        "    ec2::tag([\"i-0a1b2c3d4e5f60001\"], #{ Stage: \"contained\" });\n",
        "    throw \"containment cannot finish\";\n",
        "}, #{ retries: 1, backoff: \"1ms\", on_failure: |ctx| {\n",
        "    ec2::tag([\"i-0a1b2c3d4e5f60001\"], #{ Stage: \"restored\" });\n",
        "    ec2::tag([\"i-0a1b2c3d4e5f60002\"], #{ Stage: \"restored\" });\n",
        "} });\n",
    );
    let clean = workspace();
    clean.write("runbooks/rollback.rhai", rb);
    run_rb(&clean, "rollback", &["--no-interactive"]).expect_code(1);
    let reference = mutations(&clean);
    assert_eq!(
        reference.len(),
        4,
        "two attempts and two rollback writes: {reference:?}"
    );
    let clean_events = events(&clean.path().join("t.jsonl"));
    // Killed right after the rollback's first write was recorded, before step_finished.
    let restore = clean_events
        .iter()
        .position(|e| e["type"] == "call" && e["args"].to_string().contains("restored"))
        .unwrap();

    let ws = workspace();
    ws.write("runbooks/rollback.rhai", rb);
    let killed = ws
        .cmd()
        .args(&[
            "run",
            "rollback",
            "--env",
            "crash",
            "--no-interactive",
            "--transcript",
            "t.jsonl",
        ])
        .env("RUNBOOK_TEST_KILL_AFTER_EVENTS", &(restore + 1).to_string())
        .output();
    assert_eq!(killed.code, -1, "{}", killed.stderr);
    assert_eq!(mutations(&ws).len(), 3);

    let resumed = ws.run(&["resume", "t.jsonl", "--yes", "--no-interactive"]);
    resumed.expect_code(1);
    assert_eq!(
        mutations(&ws),
        reference,
        "every write exactly once, the rollback's included"
    );
    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(sent(&ev), sent(&clean_events));
    ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);
}

#[test]
fn a_resume_that_diverges_from_its_transcript_stops_and_is_never_retried() {
    let rb = concat!(
        "runbook(#{ id: \"diverge\", version: \"1.0.0\", title: \"t\", severity: \"P3\" });\n",
        "containment(\"Tag\", |ctx| {\n",
        "    ec2::tag([\"i-0a1b2c3d4e5f60001\"], #{ Mark: \"first\" });\n",
        "    ec2::tag([\"i-0a1b2c3d4e5f60002\"], #{ Mark: \"second\" });\n",
        "}, #{ retries: 2, backoff: \"1ms\", on_failure: |ctx| {\n",
        "    ec2::tag([\"i-0a1b2c3d4e5f60003\"], #{ Mark: \"rolled back\" });\n",
        "} });\n",
    );
    let ws = workspace();
    ws.write("runbooks/diverge.rhai", rb);
    let clean = events_of_clean_run(rb);
    let first_call = clean
        .iter()
        .position(|e| e["type"] == "call" && e["mutating"] == true)
        .unwrap();
    let killed = ws
        .cmd()
        .args(&[
            "run",
            "diverge",
            "--env",
            "crash",
            "--no-interactive",
            "--transcript",
            "t.jsonl",
        ])
        .env(
            "RUNBOOK_TEST_KILL_AFTER_EVENTS",
            &(first_call + 1).to_string(),
        )
        .output();
    assert_eq!(killed.code, -1, "{}", killed.stderr);
    assert_eq!(mutations(&ws).len(), 1);

    // The runbook now makes a different first write: the resumed step is not the one recorded.
    ws.write(
        "runbooks/diverge.rhai",
        &rb.replace("\"first\"", "\"other\""),
    );
    let resumed = ws.run(&[
        "resume",
        "t.jsonl",
        "--yes",
        "--no-interactive",
        "--allow-changed",
    ]);
    resumed.expect_code(3);
    assert!(resumed.stderr.contains("diverged"), "{}", resumed.stderr);
    assert_eq!(
        mutations(&ws).len(),
        1,
        "nothing sent: no retry, no rollback"
    );
    let ev = events(&ws.path().join("t.jsonl"));
    let from = ev.iter().position(|e| e["type"] == "run_resumed").unwrap();
    let after = &ev[from..];
    assert!(of_type(after, "retry").is_empty(), "never retried");
    assert!(
        of_type(after, "on_failure_started").is_empty(),
        "never rolled back"
    );
    assert_eq!(of_type(after, "resume_diverged").len(), 1);
    assert_eq!(ev.last().unwrap()["status"], "aborted");
    ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);
}

/// The events of a clean run of `rb` (id taken from the file) in a fresh workspace.
fn events_of_clean_run(rb: &str) -> Vec<Value> {
    let ws = workspace();
    let id = rb.split('"').nth(1).unwrap();
    ws.write(&format!("runbooks/{id}.rhai"), rb);
    run_rb(&ws, id, &["--no-interactive"]);
    events(&ws.path().join("t.jsonl"))
}

#[test]
fn a_second_resume_is_refused_while_the_transcript_is_locked_and_resume_says_where_it_picks_up() {
    let ws = workspace();
    ws.write("runbooks/two-tags.rhai", TWO_TAGS);
    run_rb(&ws, "two-tags", &["--no-interactive"]).expect_code(3);
    let before = ws.read("t.jsonl");

    // Another process holds the transcript (as a running resume does, for its whole run).
    let held = std::fs::File::open(ws.path().join("t.jsonl")).unwrap();
    held.try_lock().unwrap();
    let second = ws.run(&["resume", "t.jsonl", "--yes", "--no-interactive"]);
    // Another process holding the file is the environment refusing, not bad input: 69.
    second.expect_code(69);
    assert!(second.stderr.contains("in use by"), "{}", second.stderr);
    assert!(
        second
            .stderr
            .contains(&format!("process {}", std::process::id())),
        "the holder is named: {}",
        second.stderr
    );
    assert_eq!(ws.read("t.jsonl"), before, "nothing appended");
    assert_eq!(mutations(&ws).len(), 1);

    drop(held);
    let resumed = ws.run(&["resume", "t.jsonl", "--yes", "--no-interactive"]);
    resumed.expect_code(0);
    assert!(
        resumed.stderr.contains("at step 2/2 \"Two\"")
            || resumed.stdout.contains("at step 2/2 \"Two\""),
        "{}",
        resumed.stderr
    );
    assert_eq!(mutations(&ws).len(), 2);
}

#[test]
fn resume_never_uses_a_redaction_marker_as_a_value() {
    let ws = workspace();
    let fleet = std::fs::read_to_string(format!("{REPO}/sim/default-fleet.toml")).unwrap();
    ws.write(
        "fleet.toml",
        &format!(
            "{fleet}\n[[parameters]]\nname = \"/app/token\"\nvalue = \"tok-9f8e7d6c5b4a\"\ntype = \"SecureString\"\n"
        ),
    );
    ws.write(
        "runbook.toml",
        "[environments.crash]\nbackend = \"sim\"\nfleet = \"fleet.toml\"\nstate = \"sim-state.json\"\n",
    );
    ws.write(
        "runbooks/secret.rhai",
        concat!(
            "runbook(#{ id: \"secret\", version: \"1.0.0\", title: \"t\", severity: \"P3\" });\n",
            "containment(\"Read\", |ctx| { ctx.token = ssm::get_parameter(\"/app/token\"); });\n",
            "recovery(\"Use\", |ctx| { notes::append(`token is ${ctx.token.len()} long, starts ${ctx.token.sub_string(0, 4)}`); }, #{ confirm: true });\n",
        ),
    );
    run_rb(&ws, "secret", &["--no-interactive"]).expect_code(3);
    assert!(ws.read("t.jsonl").contains("[redacted:"));

    let refused = ws.run(&["resume", "t.jsonl", "--yes", "--no-interactive"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("ctx.token") && refused.stderr.contains("--param token="),
        "{}",
        refused.stderr
    );
    assert!(
        !ws.exists("t.notes.md"),
        "the step never ran with the marker"
    );

    ws.run(&[
        "resume",
        "t.jsonl",
        "--yes",
        "--no-interactive",
        "--param",
        "token=tok-9f8e7d6c5b4a",
    ])
    .expect_code(0);
    assert!(
        ws.read("t.notes.md")
            .contains("token is 16 long, starts tok-"),
        "{}",
        ws.read("t.notes.md")
    );
    assert!(!ws.read("t.jsonl").contains("tok-9f8e7d6c5b4a"));
    ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);
}

#[test]
fn resume_records_the_end_of_a_run_whose_last_step_finished_before_the_crash() {
    let rb = concat!(
        "runbook(#{ id: \"ends\", version: \"1.0.0\", title: \"t\", severity: \"P3\" });\n",
        "containment(\"One\", |ctx| { notes::append(\"one\"); });\n",
        "recovery(\"Two\", |ctx| { notes::append(\"two\"); });\n",
    );
    let clean = events_of_clean_run(rb);
    assert_eq!(clean.last().unwrap()["type"], "run_finished");
    let ws = workspace();
    ws.write("runbooks/ends.rhai", rb);
    // Killed right after the last step_finished: only run_finished is missing.
    let killed = ws
        .cmd()
        .args(&[
            "run",
            "ends",
            "--env",
            "crash",
            "--no-interactive",
            "--transcript",
            "t.jsonl",
        ])
        .env(
            "RUNBOOK_TEST_KILL_AFTER_EVENTS",
            &(clean.len() - 1).to_string(),
        )
        .output();
    assert_eq!(killed.code, -1, "{}", killed.stderr);
    ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(1);

    let resumed = ws.run(&["resume", "t.jsonl", "--yes", "--no-interactive"]);
    resumed.expect_code(0);
    assert!(
        resumed.stderr.contains("recording it"),
        "{}",
        resumed.stderr
    );
    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(ev.last().unwrap()["type"], "run_finished");
    assert_eq!(ev.last().unwrap()["status"], "ok");
    assert_eq!(
        ws.read("t.notes.md").matches("- ").count(),
        2,
        "no step ran again"
    );
    let shown = ws.run(&["transcript", "show", "t.jsonl"]);
    assert!(
        shown.stdout.contains("only to record the run's end"),
        "{}",
        shown.stdout
    );
    ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);
    // Once recorded, there is nothing left to resume.
    ws.run(&["resume", "t.jsonl", "--yes", "--no-interactive"])
        .expect_code(2);
}
