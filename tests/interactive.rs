//! On-call mode, driven through a real pseudo-terminal (expectrl): the prompt, skip/abort,
//! inspect, typed confirmations and Ctrl-C.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Workspace, events, header, of_type};
use expectrl::process::unix::WaitStatus;
use expectrl::session::OsSession as Session;
use expectrl::{ControlCode, Eof, Expect};
use serde_json::Value;

const PROMPT: &str = "[r]un [s]kip [i]nspect [p]lan [a]bort [h]elp > ";

fn session(ws: &Workspace, args: &[&str]) -> Session {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
    cmd.current_dir(ws.path()).args(args);
    for (k, _) in std::env::vars() {
        if ["AWS_", "SLACK_", "TEAMS_", "RUNBOOK_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cmd.env_remove(&k);
        }
    }
    // A real terminal type: rustyline then reads Ctrl-C as a key at its prompt (raw mode).
    cmd.env("RUNBOOK_OPERATOR", "oncall@pager")
        .env("NO_COLOR", "1")
        .env("TERM", "xterm");
    let mut s = Session::spawn(cmd).expect("spawn in a pty");
    s.set_expect_timeout(Some(Duration::from_secs(30)));
    s
}

fn exit_code(mut s: Session) -> i32 {
    s.expect(Eof).expect("the run ends");
    match s.get_process().wait().expect("wait") {
        WaitStatus::Exited(_, code) => code,
        other => panic!("unexpected end: {other:?}"),
    }
}

fn decisions(ev: &[Value]) -> Vec<(u64, String)> {
    of_type(ev, "decision")
        .iter()
        .map(|d| {
            (
                d["step"].as_u64().unwrap(),
                d["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const THREE: &str = r#"containment("First", |ctx| { notes::append("first ran"); });
eradication("Second", |ctx| { notes::append(`second ran with ${ctx.answer}`); });
recovery("Third", |ctx| { notes::append("third ran"); });
"#;

#[test]
fn the_operator_runs_skips_and_aborts_step_by_step() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/three.rhai",
        &format!("{}{THREE}", header("three")),
    );
    let mut s = session(&ws, &["run", "three", "--transcript", "t.jsonl"]);
    s.expect("[1/3] containment · First").unwrap();
    s.expect("notes::append({\"text\":\"first ran\"})").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    s.expect("[2/3] eradication · Second").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("s").unwrap();
    s.expect("[3/3] recovery · Third").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("a").unwrap();
    assert_eq!(exit_code(s), 3);

    let notes = ws.read("t.notes.md");
    assert!(
        notes.contains("first ran")
            && !notes.contains("second ran")
            && !notes.contains("third ran")
    );
    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(
        decisions(&ev),
        vec![(0, "run".into()), (1, "skip".into()), (2, "abort".into())]
    );
    for d in of_type(&ev, "decision") {
        assert_eq!(d["by"], "oncall@pager");
        assert!(d["decided_ms"].is_u64(), "time to decide is recorded: {d}");
    }
    let statuses: Vec<&str> = of_type(&ev, "step_finished")
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["ok", "skipped", "aborted"]);
    assert_eq!(ev.last().unwrap()["status"], "aborted");
    // The preview is a plan: nothing was sent for the steps that did not run.
    assert_eq!(ev.last().unwrap()["mutating_calls_sent"], 1);
}

#[test]
fn inspect_opens_a_repl_on_ctx_and_changes_are_kept() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/three.rhai",
        &format!("{}{THREE}", header("three")),
    );
    let mut s = session(&ws, &["run", "three", "--transcript", "t.jsonl"]);
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    s.expect("[2/3]").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("i").unwrap();
    s.expect("inspect> ").unwrap();
    s.send_line("ctx.answer = 42;").unwrap();
    s.expect("inspect> ").unwrap();
    s.send_line("ctx.answer * 2").unwrap();
    s.expect("= 84").unwrap();
    s.expect("inspect> ").unwrap();
    s.send_line("").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    s.expect("[3/3]").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    assert_eq!(exit_code(s), 0);
    assert!(ws.read("t.notes.md").contains("second ran with 42"));
    let ev = events(&ws.path().join("t.jsonl"));
    let inspected = of_type(&ev, "inspected");
    assert_eq!(inspected.len(), 1);
    assert_eq!(inspected[0]["ctx"]["answer"], 42);
    ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);
}

#[test]
fn a_typed_confirmation_that_does_not_match_is_refused_and_recorded() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/confirm.rhai",
        &format!(
            "{}eradication(\"Terminate\", |ctx| {{ notes::append(\"terminated\"); }}, #{{ confirm: \"TERMINATE\" }});\n",
            header("confirm")
        ),
    );
    let mut s = session(&ws, &["run", "confirm", "--transcript", "t.jsonl"]);
    s.expect("needs the typed confirmation TERMINATE").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    s.expect("type TERMINATE to confirm: ").unwrap();
    s.send_line("terminate").unwrap();
    s.expect("does not match: refused").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    s.expect("type TERMINATE to confirm: ").unwrap();
    s.send_line("TERMINATE").unwrap();
    assert_eq!(exit_code(s), 0);
    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(
        decisions(&ev),
        vec![(0, "refused".into()), (0, "run".into())]
    );
    assert!(ws.read("t.notes.md").contains("terminated"));
}

#[test]
fn a_protected_environment_asks_for_its_name_before_the_first_write() {
    let ws = Workspace::new();
    ws.write(
        "runbook.toml",
        "[environments.prod-sim]\nbackend = \"sim\"\nprotected = true\n",
    );
    ws.write(
        "runbooks/three.rhai",
        &format!("{}{THREE}", header("three")),
    );
    let mut s = session(
        &ws,
        &[
            "run",
            "three",
            "--env",
            "prod-sim",
            "--transcript",
            "t.jsonl",
        ],
    );
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    s.expect("type prod-sim to allow writes in the protected environment prod-sim: ")
        .unwrap();
    s.send_line("prod").unwrap();
    s.expect("does not match: refused").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    s.expect("type prod-sim").unwrap();
    s.send_line("prod-sim").unwrap();
    // Asked once per run: the next steps only ask run/skip.
    s.expect("[2/3]").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    assert_eq!(exit_code(s), 0);
    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(decisions(&ev)[0], (0, "refused".into()));
}

const WAITING: &str = r#"containment("Wait", |ctx| { loop { sleep("50ms"); } }, #{ timeout: "60s" });
recovery("After", |ctx| { notes::append("after ran"); });
"#;

#[test]
fn ctrl_c_once_interrupts_the_step_and_asks() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/wait.rhai",
        &format!("{}{WAITING}", header("wait")),
    );
    let mut s = session(&ws, &["run", "wait", "--transcript", "t.jsonl"]);
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    s.send(ControlCode::EndOfText).unwrap();
    s.expect("interrupted \"Wait\"").unwrap();
    s.expect("[r]etry, [s]kip to the next step, or [a]bort? > ")
        .unwrap();
    s.send_line("s").unwrap();
    s.expect("[2/2] recovery · After").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    assert_eq!(exit_code(s), 0);
    let ev = events(&ws.path().join("t.jsonl"));
    let statuses: Vec<&str> = of_type(&ev, "step_finished")
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["aborted", "ok"]);
    assert!(decisions(&ev).contains(&(0, "continue".into())));
    ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);
}

#[test]
fn ctrl_c_twice_aborts_the_run_and_the_transcript_ends_properly() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/wait.rhai",
        &format!("{}{WAITING}", header("wait")),
    );
    let mut s = session(&ws, &["run", "wait", "--transcript", "t.jsonl"]);
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    s.send(ControlCode::EndOfText).unwrap();
    s.expect("[r]etry, [s]kip to the next step, or [a]bort? > ")
        .unwrap();
    // The second Ctrl-C, at the question.
    s.send(ControlCode::EndOfText).unwrap();
    assert_eq!(exit_code(s), 3);
    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(ev.last().unwrap()["type"], "run_finished");
    assert_eq!(ev.last().unwrap()["status"], "aborted");
    assert!(!ws.exists("t.notes.md"), "the next step never ran");
    ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);
}

#[test]
fn the_repl_loads_every_binding_plans_on_request_and_records_the_session() {
    let ws = Workspace::new();
    let mut s = session(&ws, &["repl", "--transcript", "r.jsonl"]);
    s.expect("repl> ").unwrap();
    s.send_line("ec2::find(#{ tags: #{ Color: \"blue\" }, states: [\"running\"] }).len()")
        .unwrap();
    s.expect("= 2").unwrap();
    s.send_line(":plan on").unwrap();
    s.expect("repl (plan)> ").unwrap();
    s.send_line("ec2::stop(\"i-0a1b2c3d4e5f60001\")[0].state")
        .unwrap();
    s.expect("= \"planned\"").unwrap();
    s.expect("repl (plan)> ").unwrap();
    s.send_line(":plan off").unwrap();
    s.expect("repl> ").unwrap();
    // Multi-line input.
    s.send_line("let n = ec2::find(#{ tags: #{ Service: \"ec2-manager-api\" } }).filter(|i| {")
        .unwrap();
    s.expect("...> ").unwrap();
    s.send_line("i.state == \"running\" }).len(); n * 10")
        .unwrap();
    s.expect("= 40").unwrap();
    // Ctrl-D only means "end" to a reader at its prompt: wait for it (sent earlier, while the
    // terminal is still in line mode between prompts, the EOF would be lost).
    s.expect("repl> ").unwrap();
    s.send(expectrl::ControlCode::EndOfTransmission).unwrap();
    assert_eq!(exit_code(s), 0);
    let ev = events(&ws.path().join("r.jsonl"));
    assert_eq!(ev[0]["mode"], "repl");
    let calls = of_type(&ev, "call");
    assert!(
        calls
            .iter()
            .any(|c| c["binding"] == "ec2::stop" && c["planned"] == true)
    );
    assert_eq!(
        calls.iter().filter(|c| c["binding"] == "ec2::find").count(),
        2
    );
    assert_eq!(ev.last().unwrap()["type"], "run_finished");
    ws.run(&["transcript", "verify", "r.jsonl"]).expect_code(0);
}
