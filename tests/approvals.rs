//! Approvals from a second process: `approve(...)` in a script and `confirm` steps in an
//! unattended run wait for `runbook approve RUN_ID`, run by someone else.

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Workspace, events, header, of_type};

/// Waits for the run's first approval request and returns its run id.
fn pending_request(ws: &Workspace) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found: Option<PathBuf> = walk(&ws.path().join("tx"))
            .into_iter()
            .find(|p| p.ends_with("1.request.json"));
        if let Some(path) = found {
            let request: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            return request["run_id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no approval request appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn transcript_of(ws: &Workspace, run_id: &str) -> PathBuf {
    walk(&ws.path().join("tx"))
        .into_iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy() == format!("{run_id}.jsonl"))
        })
        .unwrap()
}

#[test]
fn a_second_person_approves_and_the_requester_cannot_approve_their_own_run() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/gated.rhai",
        &format!(
            "{}eradication(\"Terminate\", |ctx| {{\n  approve(\"Terminate i-0a1b2c3d4e5f60001 in prod?\", #{{ others: true, timeout: \"30s\" }});\n  notes::append(\"terminated\");\n}});\n",
            header("gated")
        ),
    );
    let child = ws
        .cmd()
        .env("RUNBOOK_TRANSCRIPTS", "tx")
        .args(&["run", "gated"])
        .spawn();
    let run_id = pending_request(&ws);

    let own = ws
        .cmd()
        .env("RUNBOOK_TRANSCRIPTS", "tx")
        .args(&["approve", &run_id])
        .output();
    own.expect_code(2);
    assert!(
        own.stderr.contains("cannot approve their own run"),
        "{}",
        own.stderr
    );

    let other = ws
        .cmd()
        .env("RUNBOOK_TRANSCRIPTS", "tx")
        .env("RUNBOOK_OPERATOR", "second@ops")
        .args(&["approve", &run_id])
        .output();
    other.expect_code(0);
    assert!(
        other.stdout.contains("approved request 1"),
        "{}",
        other.stdout
    );

    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = transcript_of(&ws, &run_id);
    let ev = events(&path);
    let logged: Vec<String> = of_type(&ev, "log")
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        logged
            .iter()
            .any(|m| m.starts_with("approved by second@ops")),
        "{logged:?}"
    );
    assert!(
        std::fs::read_to_string(path.with_extension("notes.md"))
            .unwrap()
            .contains("terminated")
    );
    ws.run(&["transcript", "verify", path.to_str().unwrap()])
        .expect_code(0);
}

#[test]
fn a_denial_or_a_timeout_fails_the_step() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/gated.rhai",
        &format!("{}eradication(\"Wait\", |ctx| {{ approve(\"go?\", #{{ timeout: \"30s\" }}); notes::append(\"went\"); }});\n", header("gated")),
    );
    let child = ws
        .cmd()
        .env("RUNBOOK_TRANSCRIPTS", "tx")
        .args(&["run", "gated"])
        .spawn();
    let run_id = pending_request(&ws);
    ws.cmd()
        .env("RUNBOOK_TRANSCRIPTS", "tx")
        .env("RUNBOOK_OPERATOR", "second@ops")
        .args(&["approve", &run_id, "--deny"])
        .output()
        .expect_code(0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let ev = events(&transcript_of(&ws, &run_id));
    assert_eq!(
        of_type(&ev, "step_finished")[0]["error"]["code"],
        "approval_denied"
    );

    let ws = Workspace::new();
    ws.write(
        "runbooks/gated.rhai",
        &format!(
            "{}eradication(\"Wait\", |ctx| {{ approve(\"go?\", #{{ timeout: \"300ms\" }}); }});\n",
            header("gated")
        ),
    );
    ws.run(&["run", "gated", "--transcript", "t.jsonl"])
        .expect_code(1);
    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(
        of_type(&ev, "step_finished")[0]["error"]["code"],
        "approval_timeout"
    );
}

#[test]
fn an_unattended_confirm_step_waits_for_approval_when_asked_to() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/confirm.rhai",
        &format!("{}eradication(\"Terminate\", |ctx| {{ notes::append(\"terminated\"); }}, #{{ confirm: \"TERMINATE\" }});\n", header("confirm")),
    );
    let child = ws
        .cmd()
        .env("RUNBOOK_TRANSCRIPTS", "tx")
        .args(&["run", "confirm", "--approval-timeout", "30s"])
        .spawn();
    let run_id = pending_request(&ws);
    ws.cmd()
        .env("RUNBOOK_TRANSCRIPTS", "tx")
        .env("RUNBOOK_OPERATOR", "lead@ops")
        .args(&["approve", &run_id])
        .output()
        .expect_code(0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&transcript_of(&ws, &run_id));
    let decisions = of_type(&ev, "decision");
    assert_eq!(decisions.last().unwrap()["by"], "lead@ops");
    assert_eq!(decisions.last().unwrap()["action"], "run");
}

#[test]
fn a_plan_does_not_wait_for_approval() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/gated.rhai",
        &format!("{}eradication(\"Wait\", |ctx| {{ ctx.ok = approve(\"go?\", #{{ timeout: \"30s\" }}); }});\n", header("gated")),
    );
    ws.run(&["plan", "gated", "--transcript", "p.jsonl"])
        .expect_code(0);
    let ev = events(&ws.path().join("p.jsonl"));
    let call = of_type(&ev, "call")
        .into_iter()
        .find(|c| c["binding"] == "approve")
        .unwrap()
        .clone();
    assert_eq!(call["planned"], true);
    assert!(!ws.exists("p.approvals"), "no request is filed by a plan");
}

#[test]
fn approve_shows_the_runbook_step_and_question_and_the_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new();
    ws.write(
        "runbooks/gated.rhai",
        &format!(
            "{}containment(\"Look\", |ctx| {{ log(\"looked\"); }});\neradication(\"Terminate\", |ctx| {{\n  approve(\"Terminate i-0a1b2c3d4e5f60001 in prod?\", #{{ others: true, timeout: \"30s\" }});\n}});\n",
            header("gated")
        ),
    );
    let child = ws
        .cmd()
        .env("RUNBOOK_TRANSCRIPTS", "tx")
        .args(&["run", "gated"])
        .spawn();
    let run_id = pending_request(&ws);
    let other = ws
        .cmd()
        .env("RUNBOOK_TRANSCRIPTS", "tx")
        .env("RUNBOOK_OPERATOR", "second@ops")
        .args(&["approve", &run_id])
        .output();
    other.expect_code(0);
    for shown in [
        format!("request 1 of run {run_id}"),
        "gated@1.0.0".to_string(),
        "2/2 \"Terminate\" (eradication)".to_string(),
        "Terminate i-0a1b2c3d4e5f60001 in prod?".to_string(),
        "asked by   tester@ci".to_string(),
    ] {
        assert!(other.stdout.contains(&shown), "{shown}: {}", other.stdout);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = transcript_of(&ws, &run_id).with_extension("approvals");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    assert_eq!(mode(&transcript_of(&ws, &run_id)), 0o600);
}

#[test]
fn an_answer_never_writes_through_a_planted_symlink() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/gated.rhai",
        &format!(
            "{}eradication(\"Wait\", |ctx| {{ approve(\"go?\", #{{ timeout: \"30s\" }}); }});\n",
            header("gated")
        ),
    );
    let child = ws
        .cmd()
        .env("RUNBOOK_TRANSCRIPTS", "tx")
        .args(&["run", "gated"])
        .spawn();
    let run_id = pending_request(&ws);
    let dir = transcript_of(&ws, &run_id).with_extension("approvals");
    ws.write("victim.txt", "precious\n");
    std::os::unix::fs::symlink(
        ws.path().join("victim.txt"),
        dir.join("1.answer.second@ops.json"),
    )
    .unwrap();
    ws.cmd()
        .env("RUNBOOK_TRANSCRIPTS", "tx")
        .env("RUNBOOK_OPERATOR", "second@ops")
        .args(&["approve", &run_id])
        .output()
        .expect_code(0);
    assert_eq!(ws.read("victim.txt"), "precious\n");
    assert!(!dir.join("1.answer.second@ops.json").is_symlink());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
