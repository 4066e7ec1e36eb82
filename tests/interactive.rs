//! On-call mode, driven through a real pseudo-terminal (expectrl): the prompt, skip/abort,
//! inspect, typed confirmations and Ctrl-C.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{Workspace, events, header, of_type};
use expectrl::process::unix::WaitStatus;
use expectrl::session::OsSession as Session;
use expectrl::{ControlCode, Eof, Expect};
use serde_json::Value;

const PROMPT: &str = "[r]un [s]kip [i]nspect [p]lan [a]bort [h]elp > ";

const AFTER: &str = "[r]etry, [s]kip to the next step, [a]bort, [h]elp? > ";
const REASON: &str = "reason for skipping (recorded; h for help): ";

fn session(ws: &Workspace, args: &[&str]) -> Session {
    session_with(ws, args, &[("NO_COLOR", "1"), ("TERM", "xterm")])
}

/// A session with its own terminal variables (`TERM`, `NO_COLOR`).
fn session_with(ws: &Workspace, args: &[&str], vars: &[(&str, &str)]) -> Session {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
    cmd.current_dir(ws.path()).args(args);
    for (k, _) in std::env::vars() {
        if ["AWS_", "SLACK_", "TEAMS_", "RUNBOOK_"]
            .iter()
            .any(|p| k.starts_with(p))
            || k == "NO_COLOR"
        {
            cmd.env_remove(&k);
        }
    }
    // A real terminal type (by default): rustyline then reads Ctrl-C as a key at its prompt.
    cmd.env("RUNBOOK_OPERATOR", "oncall@pager");
    for (k, v) in vars {
        cmd.env(k, v);
    }
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
    // Enter alone chooses nothing: the question comes again.
    s.send_line("").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    s.expect("[2/3] eradication · Second").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("s").unwrap();
    s.expect(REASON).unwrap();
    s.send_line("").unwrap();
    s.expect("a reason is needed").unwrap();
    s.expect(REASON).unwrap();
    s.send_line("h").unwrap();
    s.expect("go into the transcript").unwrap();
    s.expect(REASON).unwrap();
    s.send_line("second is done by hand tonight").unwrap();
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
        assert!(
            d["by"]
                .as_str()
                .unwrap()
                .starts_with("oncall@pager (claimed; "),
            "{d}"
        );
        assert_eq!(d["identity"]["via"], "os", "{d}");
        assert!(d["decided_ms"].is_u64(), "time to decide is recorded: {d}");
    }
    assert_eq!(
        of_type(&ev, "decision")[1]["reason"],
        "operator skipped the step: second is done by hand tonight"
    );
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
    s.expect("type TERMINATE to confirm (h for help): ")
        .unwrap();
    s.send_line("h").unwrap();
    s.expect("type TERMINATE exactly").unwrap();
    s.expect("type TERMINATE to confirm (h for help): ")
        .unwrap();
    s.send_line("terminate").unwrap();
    s.expect("does not match: refused").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    s.expect("type TERMINATE to confirm (h for help): ")
        .unwrap();
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
    s.expect("type prod-sim to allow writes in the protected environment prod-sim (h for help): ")
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

const WAITING: &str = r#"containment("Wait", |ctx| { log("waiting for the probe"); loop { sleep("50ms"); } }, #{ timeout: "60s" });
recovery("After", |ctx| { notes::append("after ran"); });
"#;

/// Starts the waiting step and presses Ctrl-C once it is running (its log line is the sign).
fn interrupt_the_waiting_step(s: &mut Session) {
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    // Four spaces: the real line, not the preview's ("   preview: info: ...").
    s.expect("    info: waiting for the probe").unwrap();
    s.send(ControlCode::EndOfText).unwrap();
}

#[test]
fn ctrl_c_once_asks_and_skipping_the_interrupted_step_ends_the_run_aborted() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/wait.rhai",
        &format!("{}{WAITING}", header("wait")),
    );
    let mut s = session(&ws, &["run", "wait", "--transcript", "t.jsonl"]);
    interrupt_the_waiting_step(&mut s);
    let found = s.expect("interrupted \"Wait\"").unwrap();
    let asked = String::from_utf8_lossy(found.before()).into_owned();
    // Asking is not aborting: nothing may claim the run was aborted while the question is open.
    assert!(!asked.contains("the run was aborted"), "{asked}");
    s.expect(AFTER).unwrap();
    s.send_line("h").unwrap();
    let help = s.expect("r, retry").unwrap();
    assert!(
        !String::from_utf8_lossy(help.before()).contains("containment · Wait ("),
        "the spinner is gone before the question"
    );
    s.expect(AFTER).unwrap();
    s.send_line("").unwrap();
    s.expect(AFTER).unwrap();
    s.send_line("s").unwrap();
    s.expect(REASON).unwrap();
    s.send_line("probe is known to hang").unwrap();
    s.expect("[2/2] recovery · After").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    let done = s.expect("run aborted: 1 ok").unwrap();
    assert!(
        !String::from_utf8_lossy(done.before()).contains("run ok"),
        "a run with an aborted step is not ok"
    );
    assert_eq!(exit_code(s), 3);
    let ev = events(&ws.path().join("t.jsonl"));
    let statuses: Vec<&str> = of_type(&ev, "step_finished")
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["aborted", "ok"]);
    assert!(decisions(&ev).contains(&(0, "continue".into())));
    let end = ev.last().unwrap();
    assert_eq!(end["type"], "run_finished");
    assert_eq!(end["status"], "aborted");
    assert!(of_type(&ev, "decision").iter().any(|d| {
        d["reason"]
            .as_str()
            .unwrap()
            .contains("probe is known to hang")
    }));
    assert!(ws.read("t.notes.md").contains("after ran"));
    ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);
}

#[test]
fn going_on_past_a_failed_step_ends_the_run_failed_and_exits_1() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/fails.rhai",
        &format!(
            "{}containment(\"Probe\", |ctx| {{ fail(\"probe refused\"); }});\nrecovery(\"After\", |ctx| {{ notes::append(\"after ran\"); }});\n",
            header("fails")
        ),
    );
    let mut s = session(&ws, &["run", "fails", "--transcript", "t.jsonl"]);
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    s.expect("did not succeed").unwrap();
    s.expect(AFTER).unwrap();
    s.send_line("s").unwrap();
    s.expect(REASON).unwrap();
    s.send_line("checked by hand").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    s.expect("run failed: 1 ok, 1 failed").unwrap();
    assert_eq!(exit_code(s), 1);
    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(ev.last().unwrap()["status"], "failed");
    assert!(
        ev.last().unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("the operator went on")
    );
}

#[test]
fn the_preview_is_marked_as_a_preview_and_dimmed_on_a_colour_terminal() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/wait.rhai",
        &format!("{}{WAITING}", header("wait")),
    );
    let mut s = session_with(
        &ws,
        &["run", "wait", "--transcript", "t.jsonl"],
        &[("TERM", "xterm")],
    );
    // Shown with the step it previews, after its header, marked and dim.
    s.expect("━━ [1/2] containment · Wait").unwrap();
    s.expect("\x1b[2mpreview: info: waiting for the probe")
        .unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("a").unwrap();
    assert_eq!(exit_code(s), 3);
    // The plan's log lines are not the run's: nothing was logged for real.
    let ev = events(&ws.path().join("t.jsonl"));
    assert!(of_type(&ev, "log").is_empty(), "{ev:?}");
}

#[test]
fn step_durations_leave_out_the_time_spent_waiting_for_the_operator() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/three.rhai",
        &format!("{}{THREE}", header("three")),
    );
    let mut s = session(&ws, &["run", "three", "--transcript", "t.jsonl"]);
    s.expect(PROMPT).unwrap();
    // The operator takes (at least) a second in the inspect REPL before deciding.
    s.send_line("i").unwrap();
    s.expect("inspect> ").unwrap();
    s.send_line("h").unwrap();
    s.expect("an empty line, :q or exit returns").unwrap();
    s.expect("inspect> ").unwrap();
    s.send_line("sleep(\"1s\"); 7").unwrap();
    s.expect("= 7").unwrap();
    s.expect("inspect> ").unwrap();
    s.send_line("").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    s.expect("s waiting for a person)").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("a").unwrap();
    assert_eq!(exit_code(s), 3);
    let ev = events(&ws.path().join("t.jsonl"));
    let first = of_type(&ev, "step_finished")[0];
    let (working, waiting) = (
        first["working_ms"].as_u64().unwrap(),
        first["waiting_ms"].as_u64().unwrap(),
    );
    assert!(waiting >= 1000, "{first}");
    assert!(
        working < waiting,
        "the step's work excludes the wait: {first}"
    );
    assert_eq!(first["duration_ms"], first["working_ms"]);
    let shown = ws.run(&["transcript", "show", "t.jsonl"]);
    assert!(
        shown.stdout.contains("waiting for a person"),
        "{}",
        shown.stdout
    );
}

#[test]
fn a_dumb_terminal_still_shows_every_step_line() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/three.rhai",
        &format!("{}{THREE}", header("three")),
    );
    let mut s = session_with(
        &ws,
        &[
            "run",
            "three",
            "--no-interactive",
            "--transcript",
            "t.jsonl",
        ],
        &[("TERM", "dumb"), ("NO_COLOR", "1")],
    );
    s.expect("[1/3] containment · First").unwrap();
    s.expect("✓ [1/3] First: ok").unwrap();
    s.expect("✓ [2/3] Second: ok").unwrap();
    s.expect("✓ [3/3] Third: ok").unwrap();
    s.expect("run ok: 3 ok").unwrap();
    assert_eq!(exit_code(s), 0);
}

#[test]
fn ctrl_c_twice_aborts_the_run_and_the_transcript_ends_properly() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/wait.rhai",
        &format!("{}{WAITING}", header("wait")),
    );
    let mut s = session(&ws, &["run", "wait", "--transcript", "t.jsonl"]);
    interrupt_the_waiting_step(&mut s);
    s.expect(AFTER).unwrap();
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

#[test]
fn going_on_past_a_timed_out_step_ends_the_run_timed_out_and_exits_3() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/slow.rhai",
        &format!(
            "{}containment(\"Slow\", |ctx| {{ loop {{ sleep(\"50ms\"); }} }}, #{{ timeout: \"1s\" }});\nrecovery(\"After\", |ctx| {{ notes::append(\"after ran\"); }});\n",
            header("slow")
        ),
    );
    let mut s = session(&ws, &["run", "slow", "--transcript", "t.jsonl"]);
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    s.expect("ran past its timeout").unwrap();
    s.expect(AFTER).unwrap();
    s.send_line("s").unwrap();
    s.expect(REASON).unwrap();
    s.send_line("will look at it after the incident").unwrap();
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    s.expect("run timed_out: 1 ok").unwrap();
    assert_eq!(exit_code(s), 3);
    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(ev.last().unwrap()["status"], "timed_out");
    assert!(ws.read("t.notes.md").contains("after ran"));
}

#[test]
fn the_approval_prompt_answers_h_and_enter_alone_decides_nothing() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/approve.rhai",
        &format!(
            "{}eradication(\"Terminate\", |ctx| {{ approve(\"Terminate api-blue-1?\"); notes::append(\"approved\"); }});\n",
            header("approve")
        ),
    );
    let mut s = session(&ws, &["run", "approve", "--transcript", "t.jsonl"]);
    s.expect(PROMPT).unwrap();
    s.send_line("r").unwrap();
    let question = "type yes to approve, no to deny: ";
    s.expect(question).unwrap();
    s.send_line("h").unwrap();
    s.expect("type yes to approve (recorded with your name)")
        .unwrap();
    s.expect(question).unwrap();
    s.send_line("").unwrap();
    s.expect(question).unwrap();
    s.send_line("yes").unwrap();
    s.expect("✓ [1/1] Terminate: ok").unwrap();
    assert_eq!(exit_code(s), 0);
    assert!(ws.read("t.notes.md").contains("approved"));
    let ev = events(&ws.path().join("t.jsonl"));
    assert!(of_type(&ev, "step_finished")[0]["waiting_ms"].is_u64());
}
