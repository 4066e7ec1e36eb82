//! End-to-end behaviour of the core, through the real binary.

use crate::common;

use common::{Workspace, events, header, of_type};
use serde_json::Value;

const ORDERED: &str = r#"
runbook(#{ id: "ordered", version: "1.2.0", title: "Three steps", severity: "P2" });

containment("First", |ctx| { ctx.order = ["a"]; notes::append("first"); });
eradication("Second", |ctx| { ctx.order.push("b"); notes::append("second"); });
recovery("Third", |ctx| { ctx.order.push("c"); log(`order: ${ctx.order}`); });
"#;

#[test]
fn a_runbook_runs_every_step_in_order_and_its_transcript_verifies() {
    let ws = Workspace::new();
    ws.write("runbooks/ordered.rhai", ORDERED);
    ws.run(&["run", "ordered", "--transcript", "t.jsonl"])
        .expect_code(0);

    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(ev[0]["type"], "run_started");
    assert_eq!(ev[0]["runbook"]["id"], "ordered");
    assert_eq!(ev[0]["runbook"]["version"], "1.2.0");
    // RUNBOOK_OPERATOR is a claimed name; the identity is the account the kernel runs us as.
    assert!(
        ev[0]["operator"]
            .as_str()
            .unwrap()
            .starts_with("tester@ci (claimed; "),
        "{}",
        ev[0]["operator"]
    );
    assert_eq!(ev[0]["identity"]["via"], "os");
    assert_eq!(ev[0]["identity"]["claimed"], "tester@ci");
    assert_eq!(ev[0]["runbook"]["sha256"].as_str().unwrap().len(), 64);
    let started: Vec<u64> = of_type(&ev, "step_started")
        .iter()
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(started, vec![0, 1, 2]);
    let finished = of_type(&ev, "step_finished");
    assert!(finished.iter().all(|e| e["status"] == "ok"));
    // The context is recorded after each step and carries what earlier steps stored.
    assert_eq!(
        finished[2]["ctx"]["order"],
        serde_json::json!(["a", "b", "c"])
    );
    assert_eq!(ev.last().unwrap()["type"], "run_finished");
    assert_eq!(ev.last().unwrap()["status"], "ok");
    assert_eq!(ev.last().unwrap()["counts"]["ok"], 3);

    let notes = ws.read("t.notes.md");
    let first = notes.find("first").expect("first note");
    let second = notes.find("second").expect("second note");
    assert!(first < second);

    let verify = ws.run(&["transcript", "verify", "t.jsonl"]);
    verify.expect_code(0);
    assert!(verify.stdout.contains("chain intact"), "{}", verify.stdout);
    assert!(
        verify.stdout.contains("run finished: ok"),
        "{}",
        verify.stdout
    );
}

#[test]
fn flipping_one_byte_of_any_line_breaks_verify_at_that_line() {
    let ws = Workspace::new();
    ws.write("runbooks/ordered.rhai", ORDERED);
    ws.run(&["run", "ordered", "--transcript", "t.jsonl"])
        .expect_code(0);
    let original = std::fs::read(ws.path().join("t.jsonl")).unwrap();
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(
            original
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .filter(|i| *i < original.len())
        .collect();
    assert!(line_starts.len() >= 10, "expected a real transcript");

    for (n, start) in line_starts.iter().enumerate() {
        let end = line_starts.get(n + 1).copied().unwrap_or(original.len()) - 1;
        // Flip a byte in the middle of the line (its content, not the newline).
        let at = start + (end - start) / 2;
        let mut tampered = original.clone();
        tampered[at] ^= 0x01;
        std::fs::write(ws.path().join("tampered.jsonl"), &tampered).unwrap();
        let run = ws.run(&["transcript", "verify", "tampered.jsonl"]);
        run.expect_code(1);
        let needle = format!("tampered.jsonl:{}:", n + 1);
        assert!(
            run.stderr.contains(&needle),
            "line {} flipped, expected {needle} in: {}",
            n + 1,
            run.stderr
        );
    }

    // Dropping a line and swapping two lines are caught at the first line out of place.
    let text = String::from_utf8(original).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let dropped: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, l)| *l)
        .collect();
    ws.write("dropped.jsonl", &(dropped.join("\n") + "\n"));
    let run = ws.run(&["transcript", "verify", "dropped.jsonl"]);
    run.expect_code(1);
    assert!(run.stderr.contains("dropped.jsonl:4:"), "{}", run.stderr);
    let mut swapped = lines.clone();
    swapped.swap(2, 5);
    ws.write("swapped.jsonl", &(swapped.join("\n") + "\n"));
    let run = ws.run(&["transcript", "verify", "swapped.jsonl"]);
    run.expect_code(1);
    assert!(run.stderr.contains("swapped.jsonl:3:"), "{}", run.stderr);
}

#[test]
fn a_syntax_error_shows_line_col_and_a_caret_and_nothing_runs() {
    let ws = Workspace::new();
    let src = format!(
        "{}\ncontainment(\"Broken\", |ctx| {{\n    let x = ;\n}});\n",
        header("broken")
    );
    ws.write("runbooks/broken.rhai", &src);
    let run = ws.run(&["run", "runbooks/broken.rhai", "--transcript", "t.jsonl"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("runbooks/broken.rhai:4:13: syntax error"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("let x = ;"), "{}", run.stderr);
    assert!(run.stderr.contains('┬'), "expected a caret: {}", run.stderr);
    assert!(!ws.exists("t.jsonl"), "no transcript may be written");
    assert!(!ws.exists("transcripts"));
}

#[test]
fn invalid_metadata_steps_and_params_are_refused_before_any_step() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "runbook(#{ id: \"x\", version: \"1.0.0\", title: \"t\", severity: \"P3\",\n  colour: \"blue\" });\ncontainment(\"a\", |ctx| { notes::append(\"ran\"); });\n",
            "x.rhai:2:3: unknown metadata key `colour`",
            "",
        ),
        (
            "runbook(#{ id: \"x\",\n version: \"1.0\", title: \"t\", severity: \"P3\" });\ncontainment(\"a\", |ctx| { notes::append(\"ran\"); });\n",
            "x.rhai:2:2: version \"1.0\" is not semver",
            "",
        ),
        (
            "runbook(#{ id: \"x\", version: \"1.0.0\", title: \"t\", severity: \"P3\" });\ncontainment(\"a\", |ctx| { notes::append(\"ran\"); });\nrecovery(\"A\", |ctx| {});\n",
            "x.rhai:3:1: duplicate step title \"A\"",
            "",
        ),
        (
            "runbook(#{ id: \"x\", version: \"1.0.0\", title: \"t\", severity: \"P3\",\n  params: #{\n    instance_id: #{ type: \"string\", required: true, pattern: \"^i-[0-9a-f]{8,17}$\" } } });\ncontainment(\"a\", |ctx| { notes::append(\"ran\"); });\n",
            "x.rhai:3:5: missing required parameter instance_id",
            "",
        ),
        (
            "runbook(#{ id: \"x\", version: \"1.0.0\", title: \"t\", severity: \"P3\",\n  params: #{\n    instance_id: #{ type: \"string\", required: true, pattern: \"^i-[0-9a-f]{8,17}$\" } } });\ncontainment(\"a\", |ctx| { notes::append(\"ran\"); });\n",
            "x.rhai:3:5: parameter instance_id: \"i-XYZ\" does not match the pattern",
            "instance_id=i-XYZ",
        ),
        (
            "runbook(#{ id: \"x\", version: \"1.0.0\", title: \"t\", severity: \"P3\",\n  params: #{ count: #{ type: \"int\" } } });\ncontainment(\"a\", |ctx| { notes::append(\"ran\"); });\n",
            "x.rhai:2:14: parameter count: \"many\" is not an int",
            "count=many",
        ),
        (
            "runbook(#{ id: \"x\", version: \"1.0.0\", title: \"t\", severity: \"P3\" });\nnotes::append(\"at load\");\ncontainment(\"a\", |ctx| {});\n",
            "x.rhai:2:8: while loading the runbook: notes::append cannot be called while the runbook loads",
            "",
        ),
        (
            "runbook(#{ id: \"x\", version: \"1.0.0\", title: \"t\", severity: \"P3\" });\ncontainment(\"a\", |ctx| { eval(\"1\"); });\n",
            "x.rhai:2:26: syntax error",
            "",
        ),
    ];
    for (src, expected, param) in cases {
        let ws = Workspace::new();
        ws.write("x.rhai", src);
        let mut args = vec!["run", "x.rhai", "--transcript", "t.jsonl"];
        if !param.is_empty() {
            args.extend(["--param", param]);
        }
        let run = ws.run(&args);
        run.expect_code(2);
        assert!(
            run.stderr.contains(expected),
            "expected {expected:?} in:\n{}",
            run.stderr
        );
        assert!(
            !ws.exists("t.jsonl"),
            "{expected}: no transcript may be written"
        );
        assert!(!ws.exists("t.notes.md"), "{expected}: no step may run");
    }
}

#[test]
fn an_endless_loop_stops_at_the_step_timeout() {
    let ws = Workspace::new();
    let src = format!(
        "{}containment(\"Spin\", |ctx| {{ let n = 0; loop {{ n += 1; }} }}, #{{ timeout: \"300ms\" }});\nrecovery(\"After\", |ctx| {{ notes::append(\"must not run\"); }});\n",
        header("spin")
    );
    ws.write("runbooks/spin.rhai", &src);
    let run = ws.run(&["run", "spin", "--transcript", "t.jsonl"]);
    run.expect_code(3);
    assert!(
        run.stderr.contains("ran past its timeout of 300ms"),
        "{}",
        run.stderr
    );
    let ev = events(&ws.path().join("t.jsonl"));
    let finished = of_type(&ev, "step_finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["status"], "timed_out");
    assert!(finished[0]["duration_ms"].as_u64().unwrap() >= 300);
    assert_eq!(ev.last().unwrap()["status"], "timed_out");
    assert_eq!(ev.last().unwrap()["counts"]["not_run"], 1);
    assert!(!ws.exists("t.notes.md"));
    ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);
}

#[test]
fn imports_resolve_only_inside_stdlib_and_the_runbook_folder() {
    let ws = Workspace::new();
    ws.write("stdlib/greet.rhai", "fn hello(name) { `hello ${name}` }\n");
    ws.write("runbooks/local_helpers.rhai", "fn twice(x) { x * 2 }\n");
    ws.write("outside.rhai", "fn leak() { \"leaked\" }\n");
    let ok = format!(
        "import \"stdlib/greet\" as g;\nimport \"local_helpers\" as h;\n{}containment(\"Use\", |ctx| {{ ctx.msg = g::hello(\"ops\"); ctx.n = h::twice(21); }});\n",
        header("imports")
    );
    ws.write("runbooks/imports.rhai", &ok);
    ws.run(&["run", "imports", "--transcript", "t.jsonl"])
        .expect_code(0);
    let ev = events(&ws.path().join("t.jsonl"));
    let ctx = &of_type(&ev, "step_finished")[0]["ctx"];
    assert_eq!(ctx["msg"], "hello ops");
    assert_eq!(ctx["n"], 42);
    let modules = ev[0]["runbook"]["modules"].as_array().unwrap();
    assert_eq!(
        modules.len(),
        2,
        "every imported module is hashed: {modules:?}"
    );
    assert!(
        modules
            .iter()
            .all(|m| m["sha256"].as_str().unwrap().len() == 64)
    );

    for bad in ["../outside", "/etc/passwd", "stdlib/../../outside"] {
        let src = format!(
            "import \"{bad}\" as x;\n{}containment(\"a\", |ctx| {{ notes::append(\"ran\"); }});\n",
            header("bad")
        );
        ws.write("runbooks/bad.rhai", &src);
        let run = ws.run(&["run", "runbooks/bad.rhai", "--transcript", "bad.jsonl"]);
        run.expect_code(2);
        assert!(run.stderr.contains("refused"), "{bad}: {}", run.stderr);
        assert!(run.stderr.contains("bad.rhai:1:8"), "{bad}: {}", run.stderr);
        assert!(!ws.exists("bad.jsonl"));
    }
}

#[test]
fn plan_mode_sends_no_mutating_call() {
    let ws = Workspace::new();
    ws.write("runbooks/ordered.rhai", ORDERED);
    let plan = ws.run(&["plan", "ordered", "--transcript", "p.jsonl"]);
    plan.expect_code(0);
    // What a planned step logs is what would happen: marked, so it never reads as done.
    assert!(
        plan.stderr
            .contains("plan: info: order: [\"a\", \"b\", \"c\"]"),
        "{}",
        plan.stderr
    );
    let run = ws.run(&["run", "ordered", "--transcript", "logged.jsonl"]);
    assert!(run.stderr.contains("    info: order:"), "{}", run.stderr);
    assert!(!run.stderr.contains("plan: info"), "{}", run.stderr);
    assert!(
        !ws.exists("p.notes.md"),
        "plan must not write the notes file"
    );
    assert!(
        plan.stdout.trim_end().ends_with("plan: 2 would-be writes"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("notes::append({\"text\":\"first\"})"),
        "{}",
        plan.stdout
    );
    let ev = events(&ws.path().join("p.jsonl"));
    assert_eq!(ev[0]["mode"], "plan");
    assert!(
        of_type(&ev, "intent").is_empty(),
        "no intent: nothing was about to be sent"
    );
    let calls = of_type(&ev, "call");
    let writes: Vec<&&Value> = calls.iter().filter(|c| c["mutating"] == true).collect();
    assert_eq!(writes.len(), 2);
    assert!(writes.iter().all(|c| c["planned"] == true));
    assert_eq!(ev.last().unwrap()["mutating_calls_sent"], 0);

    // The same runbook, run for real, does write: the plan's silence is not an accident.
    ws.run(&["run", "ordered", "--transcript", "r.jsonl"])
        .expect_code(0);
    assert!(ws.read("r.notes.md").contains("second"));
    assert_eq!(
        events(&ws.path().join("r.jsonl")).last().unwrap()["mutating_calls_sent"],
        2
    );
}

#[test]
fn a_planted_secret_never_reaches_the_transcript_notes_or_terminal() {
    let ws = Workspace::new();
    let secret = "pl4nted-S3CRET-value";
    let src = r#"
runbook(#{ id: "secret", version: "1.0.0", title: "t", severity: "P3",
  params: #{ token: #{ type: "string", secret: true, required: true },
             note:  #{ type: "string", "default": "" } } });
containment("Use the secret", |ctx| {
    log(`token=${ctx.token}`);
    print(ctx.token);
    ctx.copy = "prefix-" + ctx.token + "-suffix";
    ctx.nested = #{ list: [ctx.token] };
    notes::append(`calling with ${ctx.token} and ${ctx.note}`);
});
recovery("Fail with it", |ctx| { fail(`bad token ${ctx.token}`); });
"#;
    ws.write("runbooks/secret.rhai", src);
    let slack = "xoxb-123456789-abcdefghij";
    let run = ws.run(&[
        "run",
        "secret",
        "--transcript",
        "t.jsonl",
        "--param",
        &format!("token={secret}"),
        "--param",
        &format!("note={slack}"),
    ]);
    run.expect_code(1);
    let transcript = ws.read("t.jsonl");
    let notes = ws.read("t.notes.md");
    for (what, text) in [
        ("transcript", &transcript),
        ("notes", &notes),
        ("stderr", &run.stderr),
        ("stdout", &run.stdout),
    ] {
        assert!(!text.contains(secret), "secret found in {what}:\n{text}");
        assert!(
            !text.contains(slack),
            "token shape found in {what}:\n{text}"
        );
    }
    assert!(transcript.contains("[redacted:"), "{transcript}");
    ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);
}

#[test]
fn a_failing_step_runs_its_on_failure_and_the_run_exits_1() {
    let ws = Workspace::new();
    let src = format!(
        "{}containment(\"Change\", |ctx| {{ notes::append(\"changed\"); fail(\"boom\"); }},\n  #{{ on_failure: |ctx| {{ notes::append(\"rolled back\"); }} }});\nrecovery(\"Never\", |ctx| {{ notes::append(\"must not run\"); }});\n",
        header("rollback")
    );
    ws.write("runbooks/rollback.rhai", &src);
    let run = ws.run(&["run", "rollback", "--transcript", "t.jsonl"]);
    run.expect_code(1);
    assert!(run.stderr.contains("boom"), "{}", run.stderr);
    let notes = ws.read("t.notes.md");
    assert!(notes.contains("changed") && notes.contains("rolled back"));
    assert!(!notes.contains("must not run"));
    let ev = events(&ws.path().join("t.jsonl"));
    let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let rb_start = kinds
        .iter()
        .position(|k| *k == "on_failure_started")
        .unwrap();
    let rb_end = kinds
        .iter()
        .position(|k| *k == "on_failure_finished")
        .unwrap();
    let step_end = kinds.iter().position(|k| *k == "step_finished").unwrap();
    assert!(rb_start < rb_end && rb_end < step_end);
    assert_eq!(ev[rb_end]["status"], "ok");
    let finished = of_type(&ev, "step_finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["status"], "failed");
    assert_eq!(finished[0]["error"]["code"], "fail");
    assert!(
        finished[0]["error"]["location"]
            .as_str()
            .unwrap()
            .ends_with("rollback.rhai:2:57"),
        "{}",
        finished[0]["error"]
    );
    assert_eq!(ev.last().unwrap()["status"], "failed");
    assert_eq!(ev.last().unwrap()["counts"]["not_run"], 1);
}

#[test]
fn retries_back_off_and_then_succeed() {
    let ws = Workspace::new();
    let src = format!(
        "{}containment(\"Flaky\", |ctx| {{\n  ctx.tries = (ctx.tries ?? 0) + 1;\n  if ctx.tries < 3 {{ fail(`attempt ${{ctx.tries}}`); }}\n}}, #{{ retries: 2, backoff: \"10ms\" }});\n",
        header("flaky")
    );
    ws.write("runbooks/flaky.rhai", &src);
    ws.run(&["run", "flaky", "--transcript", "t.jsonl"])
        .expect_code(0);
    let ev = events(&ws.path().join("t.jsonl"));
    let retries = of_type(&ev, "retry");
    assert_eq!(retries.len(), 2);
    assert_eq!(retries[0]["delay_ms"], 10);
    assert_eq!(retries[1]["delay_ms"], 20, "backoff doubles");
    assert_eq!(of_type(&ev, "step_started").len(), 3);
    assert_eq!(of_type(&ev, "step_finished")[0]["attempts"], 3);
}

#[test]
fn a_step_that_needs_confirmation_stops_an_unattended_run_unless_yes() {
    let ws = Workspace::new();
    let src = format!(
        "{}containment(\"Look\", |ctx| {{ notes::append(\"looked\"); }});\neradication(\"Terminate\", |ctx| {{ notes::append(\"terminated\"); }}, #{{ confirm: \"TERMINATE\" }});\n",
        header("confirm")
    );
    ws.write("runbooks/confirm.rhai", &src);
    let run = ws.run(&["run", "confirm", "--transcript", "t.jsonl"]);
    run.expect_code(3);
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    assert!(!ws.read("t.notes.md").contains("terminated"));
    let ev = events(&ws.path().join("t.jsonl"));
    let decision = of_type(&ev, "decision");
    assert_eq!(decision.len(), 1);
    assert_eq!(decision[0]["action"], "abort");
    assert_eq!(ev.last().unwrap()["status"], "aborted");

    ws.run(&["run", "confirm", "--yes", "--transcript", "y.jsonl"])
        .expect_code(0);
    assert!(ws.read("y.notes.md").contains("terminated"));
    let ev = events(&ws.path().join("y.jsonl"));
    let given = of_type(&ev, "decision")[0].clone();
    assert!(
        given["by"]
            .as_str()
            .unwrap()
            .starts_with("tester@ci (claimed; "),
        "{given}"
    );
    assert_eq!(given["identity"]["via"], "os");
    assert_eq!(given["identity"]["claimed"], "tester@ci");
}

#[test]
fn a_version_pin_refuses_any_other_version() {
    let ws = Workspace::new();
    ws.write("runbooks/ordered.rhai", ORDERED);
    let run = ws.run(&["run", "ordered@1.3.0", "--transcript", "t.jsonl"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("version 1.2.0, but 1.3.0 was pinned"),
        "{}",
        run.stderr
    );
    assert!(!ws.exists("t.jsonl"));
    ws.run(&["run", "ordered@1.2.0", "--transcript", "t.jsonl"])
        .expect_code(0);
}

#[test]
fn env_reads_only_declared_variables_and_redacts_them() {
    let ws = Workspace::new();
    let src = r#"
runbook(#{ id: "envy", version: "1.0.0", title: "t", severity: "P3", env: ["PAGER_KEY"] });
containment("Read", |ctx| { ctx.key = env("PAGER_KEY"); ctx.missing = env("PAGER_KEY") == (); });
recovery("Sneak", |ctx| { env("HOME"); });
"#;
    ws.write("runbooks/envy.rhai", src);
    let run = ws
        .cmd()
        .args(&["run", "envy", "--transcript", "t.jsonl"])
        .env("PAGER_KEY", "pager-key-0123456789")
        .output();
    run.expect_code(1);
    let text = ws.read("t.jsonl");
    assert!(!text.contains("pager-key-0123456789"));
    let ev = events(&ws.path().join("t.jsonl"));
    let finished = of_type(&ev, "step_finished");
    assert_eq!(finished[0]["status"], "ok");
    assert_eq!(finished[0]["ctx"]["missing"], false);
    assert_eq!(finished[1]["error"]["code"], "denied");
}

#[test]
fn ctrl_c_aborts_the_running_step_and_the_transcript_still_ends_properly() {
    let ws = Workspace::new();
    let src = format!(
        "{}containment(\"Wait\", |ctx| {{ loop {{ sleep(\"50ms\"); }} }}, #{{ timeout: \"60s\" }});\n",
        header("interrupt")
    );
    ws.write("runbooks/interrupt.rhai", &src);
    let child = ws
        .cmd()
        .args(&["run", "interrupt", "--transcript", "t.jsonl"])
        .spawn();
    let path = ws.path().join("t.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&path).is_ok_and(|t| t.contains("step_started")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the step never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&path);
    assert_eq!(of_type(&ev, "step_finished")[0]["status"], "aborted");
    assert_eq!(ev.last().unwrap()["type"], "run_finished");
    assert_eq!(ev.last().unwrap()["status"], "aborted");
    ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);
}

#[test]
fn the_repository_runbooks_check_clean_and_render() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let ws = Workspace::new();
    let runbooks = format!("{repo}/runbooks");
    let check = ws.run(&["check", &runbooks]);
    check.expect_code(0);
    assert!(check.stdout.contains("ok      "), "{}", check.stdout);

    let json = ws.run(&["check", &runbooks, "--output", "json"]);
    json.expect_code(0);
    let doc: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["status"], "ok");
    let rows = doc["files"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["ok"] == true));

    let list = ws.run(&["list", "--runbooks", &runbooks]);
    list.expect_code(0);
    assert!(list.stdout.contains("incident-record"), "{}", list.stdout);
    let show = ws.run(&["show", "incident-record", "--runbooks", &runbooks]);
    show.expect_code(0);
    assert!(show.stdout.contains("## Containment"), "{}", show.stdout);

    ws.run(&[
        "run",
        "incident-record",
        "--runbooks",
        &runbooks,
        "--param",
        "incident=2026-1123-001",
        "--transcript",
        "t.jsonl",
    ])
    .expect_code(0);
    let md = ws.run(&["transcript", "render", "t.jsonl", "--format", "md"]);
    md.expect_code(0);
    assert!(md.stdout.contains("✅ INCIDENT RESOLVED"), "{}", md.stdout);
    assert!(
        md.stdout.contains("Incident: #2026-1123-001"),
        "{}",
        md.stdout
    );
    assert!(md.stdout.contains("hash chain verified"), "{}", md.stdout);
    assert!(ws.read("t.notes.md").contains("🚨 INCIDENT ALERT 🚨"));
}

#[test]
fn check_reports_every_problem_and_warns_on_phase_order() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/order.rhai",
        &format!(
            "{}recovery(\"Back\", |ctx| {{}});\ncontainment(\"Late\", |ctx| {{}});\n",
            header("order")
        ),
    );
    ws.write(
        "runbooks/two.rhai",
        "runbook(#{ id: \"Two_Bad\", version: \"x\", title: \"t\", severity: \"P9\" });\ncontainment(\"a\", |ctx| {});\n",
    );
    let run = ws.run(&["check"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("order.rhai:3:1: containment step \"Late\" comes after a recovery step"),
        "{}",
        run.stderr
    );
    for expected in [
        "must be kebab-case",
        "is not semver",
        "must be one of P1, P2, P3, P4",
    ] {
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
    }
    assert!(
        run.stdout.contains("ok      runbooks/order.rhai"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("INVALID runbooks/two.rhai"),
        "{}",
        run.stdout
    );
}

#[test]
fn verify_refuses_a_transcript_cut_short_unless_told_it_is_unfinished() {
    let ws = Workspace::new();
    ws.write("runbooks/ordered.rhai", ORDERED);
    ws.run(&["run", "ordered", "--transcript", "t.jsonl"])
        .expect_code(0);
    let text = ws.read("t.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    for keep in [1, lines.len() / 2, lines.len() - 1] {
        ws.write("cut.jsonl", &(lines[..keep].join("\n") + "\n"));
        let cut = ws.run(&["transcript", "verify", "cut.jsonl"]);
        cut.expect_code(1);
        assert!(cut.stderr.contains("never finished"), "{}", cut.stderr);
        let allowed = ws.run(&["transcript", "verify", "cut.jsonl", "--allow-unfinished"]);
        allowed.expect_code(0);
        assert!(
            allowed.stdout.contains("never finished"),
            "{}",
            allowed.stdout
        );
    }
}

#[test]
fn verify_refuses_a_line_whose_bytes_are_not_the_form_its_hash_covers() {
    let ws = Workspace::new();
    ws.write("runbooks/ordered.rhai", ORDERED);
    ws.run(&["run", "ordered", "--transcript", "t.jsonl"])
        .expect_code(0);
    let text = ws.read("t.jsonl");
    let n = text.lines().count();
    let last = text.lines().last().unwrap().to_string();
    assert!(last.contains(r#""status":"ok""#), "{last}");
    // Each keeps the parsed content, and so the hash, while grep reads something else.
    let hash_field = &last[last.rfind(r#","hash":"#).unwrap()..last.len() - 1];
    let forms = [
        last.replacen(r#""status":"ok""#, r#""status":"failed","status":"ok""#, 1),
        last.replacen('{', "{ ", 1),
        last.replacen(r#""run_finished""#, r#""\u0072un_finished""#, 1),
        // The same fields in another order.
        format!(
            "{{{},{}}}",
            &hash_field[1..],
            &last[1..last.len() - 1].replace(hash_field, "")
        ),
    ];
    for form in forms {
        assert_ne!(form, last);
        let mut lines: Vec<&str> = text.lines().collect();
        lines[n - 1] = &form;
        ws.write("tampered.jsonl", &(lines.join("\n") + "\n"));
        let run = ws.run(&["transcript", "verify", "tampered.jsonl"]);
        run.expect_code(1);
        assert!(
            run.stderr.contains(&format!("tampered.jsonl:{n}:"))
                && run.stderr.contains("not in its canonical form"),
            "{form}: {}",
            run.stderr
        );
    }
}

#[test]
fn a_signed_transcript_verifies_with_its_key_and_not_when_cut_or_with_another_key() {
    let ws = Workspace::new();
    ws.write("runbooks/ordered.rhai", ORDERED);
    ws.write("keys/run.key", "0123456789abcdef-signing-key\n");
    ws.write("keys/other.key", "another-key-of-enough-length\n");
    ws.cmd()
        .args(&["run", "ordered", "--transcript", "tx/t.jsonl"])
        .env("RUNBOOK_SIGNING_KEY_FILE", "keys/run.key")
        .output()
        .expect_code(0);
    let ev = events(&ws.path().join("tx/t.jsonl"));
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "signature");
    assert_eq!(last["signed"], ev[ev.len() - 2]["hash"]);
    assert_eq!(ev[ev.len() - 2]["type"], "run_finished");

    let ok = ws.run(&[
        "transcript",
        "verify",
        "tx/t.jsonl",
        "--key-file",
        "keys/run.key",
    ]);
    ok.expect_code(0);
    assert!(
        ok.stdout.contains("1 signature(s) verified"),
        "{}",
        ok.stdout
    );
    let other = ws.run(&[
        "transcript",
        "verify",
        "tx/t.jsonl",
        "--key-file",
        "keys/other.key",
    ]);
    other.expect_code(1);

    // Without its signature line the chain still holds, but the key says it was cut.
    let text = ws.read("tx/t.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    ws.write(
        "tx/cut.jsonl",
        &(lines[..lines.len() - 1].join("\n") + "\n"),
    );
    ws.run(&["transcript", "verify", "tx/cut.jsonl"])
        .expect_code(0);
    let cut = ws.run(&[
        "transcript",
        "verify",
        "tx/cut.jsonl",
        "--key-file",
        "keys/run.key",
    ]);
    cut.expect_code(1);
    assert!(
        cut.stderr.contains("does not end with a signature"),
        "{}",
        cut.stderr
    );

    // A key beside the transcripts protects nothing: refused before anything is written.
    ws.write("tx/inside.key", "0123456789abcdef-signing-key\n");
    let inside = ws
        .cmd()
        .args(&["run", "ordered", "--transcript", "tx/u.jsonl"])
        .env("RUNBOOK_SIGNING_KEY_FILE", "tx/inside.key")
        .output();
    inside.expect_code(2);
    assert!(
        inside.stderr.contains("inside the transcript folder"),
        "{}",
        inside.stderr
    );
    assert!(!ws.exists("tx/u.jsonl"));
}

#[test]
fn a_failed_transcript_write_is_cut_back_to_the_last_complete_line_and_fails_the_run() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/chatty.rhai",
        &format!(
            "{}containment(\"Chatty\", |ctx| {{ for i in 0..400 {{ log(`line ${{i}} of a transcript that outgrows its file size limit`); }} }});\n",
            header("chatty")
        ),
    );
    // A file size limit stands in for a full disk: the write that crosses it is cut short.
    let out = std::process::Command::new("sh")
        .current_dir(ws.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUNBOOK_OPERATOR", "tester@ci")
        .env("NO_COLOR", "1")
        .args([
            "-c",
            "trap '' XFSZ; ulimit -f 24; exec \"$0\" run chatty --transcript t.jsonl",
            env!("CARGO_BIN_EXE_runbook"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("cut back to its last complete line"),
        "{stderr}"
    );
    let text = ws.read("t.jsonl");
    assert!(text.ends_with('\n'), "no partial line");
    assert!(
        text.lines().count() > 2,
        "the limit is past the first lines"
    );
    ws.run(&["transcript", "verify", "t.jsonl", "--allow-unfinished"])
        .expect_code(0);
}

#[test]
fn transcripts_are_private_and_never_written_through_a_planted_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new();
    ws.write("runbooks/ordered.rhai", ORDERED);
    ws.run(&["run", "ordered", "--transcript", "tx/day/t.jsonl"])
        .expect_code(0);
    let mode = |rel: &str| {
        std::fs::metadata(ws.path().join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("tx/day/t.jsonl"), 0o600);
    assert_eq!(mode("tx/day"), 0o700);
    assert_eq!(mode("tx"), 0o700);

    ws.write("victim.txt", "precious\n");
    std::os::unix::fs::symlink(ws.path().join("victim.txt"), ws.path().join("l.jsonl")).unwrap();
    ws.run(&["run", "ordered", "--transcript", "l.jsonl"])
        .expect_code(1);
    assert_eq!(ws.read("victim.txt"), "precious\n");

    // A link planted where the run's notes go: the run is refused before any step.
    std::os::unix::fs::symlink(ws.path().join("victim.txt"), ws.path().join("n.notes.md")).unwrap();
    let planted = ws.run(&["run", "ordered", "--transcript", "n.jsonl"]);
    planted.expect_code(2);
    assert!(
        planted.stderr.contains("n.notes.md is a symlink"),
        "{}",
        planted.stderr
    );
    assert_eq!(ws.read("victim.txt"), "precious\n");
    assert!(!ws.exists("n.jsonl"));
}

#[test]
fn the_incident_notes_file_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new();
    ws.write(
        "runbooks/noting.rhai",
        &format!(
            "{}containment(\"Note\", |ctx| {{ notes::append(\"first\"); }});\n",
            header("noting")
        ),
    );
    ws.run(&["run", "noting", "--transcript", "t.jsonl"])
        .expect_code(0);
    let notes = ws.path().join("t.notes.md");
    let mode = std::fs::metadata(&notes).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "notes::append opens the notes file as the transcript is opened"
    );
    assert!(ws.read("t.notes.md").contains("first"));
}

#[test]
fn render_names_the_resources_a_write_touched_and_shows_resumes() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/tagging.rhai",
        &format!(
            "{}containment(\"Tag\", |ctx| {{ ec2::tag([\"i-0a1b2c3d4e5f60001\"], #{{ Seen: \"yes\" }}); }});\nrecovery(\"Confirm\", |ctx| {{ log(\"done\"); }}, #{{ confirm: true }});\n",
            header("tagging")
        ),
    );
    ws.run(&[
        "run",
        "tagging",
        "--no-interactive",
        "--transcript",
        "t.jsonl",
    ])
    .expect_code(3);
    ws.run(&["resume", "t.jsonl", "--yes", "--no-interactive"])
        .expect_code(0);
    let md = ws.run(&["transcript", "render", "t.jsonl"]);
    md.expect_code(0);
    assert!(
        md.stdout
            .contains("changed `ec2::tag` (`i-0a1b2c3d4e5f60001`)"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout.contains("resumed by tester@ci (claimed; ") && md.stdout.contains(") at step 2"),
        "{}",
        md.stdout
    );
    let shown = ws.run(&["transcript", "show", "t.jsonl"]);
    assert!(
        shown.stdout.contains("resumed by tester@ci (claimed; ")
            && shown.stdout.contains(") at step 2"),
        "{}",
        shown.stdout
    );
}

#[test]
fn a_hook_journal_verifies_without_a_run_finished_and_show_prints_its_records() {
    let ws = Workspace::new();
    ws.write(
        "hooks.toml",
        "[server]\ntranscripts = \"tx\"\n\n[escalation]\nchannel = \"#oncall\"\n",
    );
    let payload = ws.write(
        "alert.json",
        r#"{"alert":"nothing-routes-here","labels":{"team":"infra"}}"#,
    );
    ws.cmd()
        .args(&["hook", "--source", "generic", "--hooks", "hooks.toml"])
        .stdin_file(&payload)
        .output()
        .expect_code(0);
    let journal = std::fs::read_dir(ws.path().join("tx"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("journal-")
        })
        .expect("a journal");
    let journal = journal.to_str().unwrap();
    let verify = ws.run(&["transcript", "verify", journal]);
    verify.expect_code(0);
    assert!(verify.stdout.contains("hook journal"), "{}", verify.stdout);
    let shown = ws.run(&["transcript", "show", journal]);
    shown.expect_code(0);
    assert!(
        shown.stdout.starts_with("hook journal · hooks.toml"),
        "{}",
        shown.stdout
    );
    assert!(
        shown
            .stdout
            .contains("alert nothing-routes-here (generic, firing) → unmatched"),
        "{}",
        shown.stdout
    );
    assert!(!shown.stdout.contains("?@?"), "{}", shown.stdout);
    // A journal is no run: render says so instead of inventing one.
    ws.run(&["transcript", "render", journal]).expect_code(2);
}

#[test]
fn the_repl_records_multi_line_input_whole_under_a_session_named_like_its_file() {
    use expectrl::{Eof, Expect};
    let ws = Workspace::new();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"));
    cmd.current_dir(ws.path()).arg("repl");
    for (k, _) in std::env::vars() {
        if ["AWS_", "SLACK_", "TEAMS_", "RUNBOOK_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cmd.env_remove(&k);
        }
    }
    cmd.env("RUNBOOK_OPERATOR", "oncall@pager")
        .env("RUNBOOK_TRANSCRIPTS", "tx")
        .env("NO_COLOR", "1")
        .env("TERM", "xterm");
    let mut s = expectrl::session::OsSession::spawn(cmd).expect("spawn in a pty");
    s.set_expect_timeout(Some(std::time::Duration::from_secs(30)));
    s.expect("repl> ").unwrap();
    s.send_line("if true {").unwrap();
    s.expect("...> ").unwrap();
    s.send_line("  log(\"inside\");").unwrap();
    s.expect("...> ").unwrap();
    s.send_line("}").unwrap();
    s.expect("repl> ").unwrap();
    s.send_line(":q").unwrap();
    s.expect(Eof).unwrap();

    let day = std::fs::read_dir(ws.path().join("tx"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let file = std::fs::read_dir(&day)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    let ev = events(&file);
    let stem = file.file_stem().unwrap().to_string_lossy().to_string();
    assert!(stem.starts_with("repl-"), "{stem}");
    assert_eq!(
        ev[0]["run_id"],
        stem.as_str(),
        "the session id is the file's name"
    );
    let inputs: Vec<&str> = of_type(&ev, "log")
        .iter()
        .filter(|e| e["level"] == "repl")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(inputs, vec!["if true {\n  log(\"inside\");\n}"]);
    ws.run(&["transcript", "verify", file.to_str().unwrap()])
        .expect_code(0);
}

#[test]
fn a_script_holding_a_thousand_4mb_strings_is_refused_by_check_with_the_memory_limit_named() {
    let ws = Workspace::new();
    let mut src = header("hoard");
    src.push_str("let big = \"\";\nbig.pad(4000000, \"x\");\n");
    for i in 0..1000 {
        src.push_str(&format!("let v{i} = big + \"{i}\";\n"));
    }
    src.push_str("containment(\"Never\", |ctx| { });\n");
    ws.write("runbooks/hoard.rhai", &src);
    // Under an address-space limit far below the 4 GB the script asks for: without the sandbox's
    // bound the process would die of a failed allocation instead of answering.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 3000000 && exec \"$0\" check runbooks/hoard.rhai")
        .arg(env!("CARGO_BIN_EXE_runbook"))
        .current_dir(ws.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let run = common::Run::from(out);
    run.expect_code(2);
    assert!(
        run.stderr.contains("memory limit of 256 MiB"),
        "{}",
        run.stderr
    );
    // Where it happened: the runbook, on one of the `let vN = big + ...` lines.
    let at = regex_line(&run.stderr, "runbooks/hoard.rhai:");
    assert!((4..1004).contains(&at), "line {at}: {}", run.stderr);
}

/// The line number after the first `prefix` in `text`.
fn regex_line(text: &str, prefix: &str) -> usize {
    let start = text.find(prefix).map(|i| i + prefix.len()).unwrap_or(0);
    text[start..]
        .split(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_step_that_exhausts_the_operation_budget_fails_naming_the_limit() {
    let ws = Workspace::new();
    let src = format!(
        "{}containment(\"Spin\", |ctx| {{ let n = 0; loop {{ n += 1; }} }}, #{{ timeout: \"1h\" }});\n",
        header("spin")
    );
    ws.write("runbooks/spin.rhai", &src);
    let run = ws
        .cmd()
        .env("RUNBOOK_MAX_OPERATIONS", "100000")
        .args(&["run", "spin", "--transcript", "t.jsonl"])
        .output();
    run.expect_code(1);
    assert!(
        run.stderr.contains("budget of 100000 operations"),
        "{}",
        run.stderr
    );
    // Rhai gives the limit no position inside the closure: the step's declaration stands in.
    let declared_at = format!("spin.rhai:{}:1", header("spin").lines().count() + 1);
    assert!(
        run.stderr.contains("in the step declared at") && run.stderr.contains(&declared_at),
        "{declared_at}: {}",
        run.stderr
    );
    let ev = events(&ws.path().join("t.jsonl"));
    let finished = of_type(&ev, "step_finished");
    assert_eq!(finished[0]["status"], "failed");
    assert_eq!(finished[0]["error"]["code"], "too_many_operations");
    assert_eq!(ev.last().unwrap()["status"], "failed");
}

#[test]
fn a_step_option_error_points_at_the_step_s_own_option() {
    let ws = Workspace::new();
    let src = format!(
        "{}containment(\"Wait\", |ctx| {{\n    let probe = #{{ timeout: \"5s\" }};\n    log(probe.timeout);\n}}, #{{\n    retries: 1,\n    timeout: \"banana\",\n}});\n",
        header("opts")
    );
    ws.write("runbooks/opts.rhai", &src);
    let run = ws.run(&["check", "runbooks/opts.rhai"]);
    run.expect_code(2);
    assert!(run.stderr.contains("not \"banana\""), "{}", run.stderr);
    assert!(
        run.stderr.contains("runbooks/opts.rhai:7:5"),
        "the option on line 7, not the `timeout:` on line 3:\n{}",
        run.stderr
    );
}

#[test]
fn only_rhai_files_can_be_imported_and_the_refusal_shows_no_content() {
    let ws = Workspace::new();
    ws.write("runbooks/notes.txt", "db_password = pl4nted-n0tes-secret\n");
    let src = format!(
        "import \"notes.txt\" as notes_file;\n{}containment(\"x\", |ctx| {{ }});\n",
        header("imports-notes")
    );
    ws.write("runbooks/imports-notes.rhai", &src);
    let run = ws.run(&["check", "runbooks/imports-notes.rhai"]);
    run.expect_code(2);
    assert!(run.stderr.contains("only .rhai files"), "{}", run.stderr);
    assert!(!run.stderr.contains("pl4nted"), "{}", run.stderr);
    assert!(!run.stdout.contains("pl4nted"), "{}", run.stdout);
}

#[test]
fn two_runbook_files_with_one_id_are_refused_by_run_and_reported_by_check() {
    let ws = Workspace::new();
    let body = format!("{}containment(\"x\", |ctx| {{ }});\n", header("twin"));
    ws.write("runbooks/twin.rhai", &body);
    ws.write("runbooks/twin-copy.rhai", &body);
    let run = ws.run(&["run", "twin", "--transcript", "t.jsonl"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("twin.rhai") && run.stderr.contains("twin-copy.rhai"),
        "{}",
        run.stderr
    );
    assert!(!ws.exists("t.jsonl"), "nothing may run");
    let check = ws.run(&["check"]);
    check.expect_code(2);
    assert!(
        check.stderr.contains("id \"twin\" is already used"),
        "{}",
        check.stderr
    );
}

const PIN: &str = r#"
runbook(#{ id: "pin", version: "1.0.0", title: "t", severity: "P3",
  params: #{ pin:  #{ type: "int", secret: true, required: true },
             code: #{ type: "string", secret: true },
             user: #{ type: "string", pattern: "^[a-z]+$" } } });
containment("Use", |ctx| { notes::append("used"); });
"#;

#[test]
fn parameter_errors_never_echo_a_secret_or_a_credential() {
    let ws = Workspace::new();
    ws.write("runbooks/pin.rhai", PIN);
    let run = ws.run(&[
        "run",
        "pin",
        "--param",
        "pin=SECRETPIN-998877",
        "--param",
        "user=key_AKIAIOSFODNN7EXAMPLE",
    ]);
    run.expect_code(2);
    assert!(run.stderr.contains("parameter pin"), "{}", run.stderr);
    assert!(run.stderr.contains("parameter user"), "{}", run.stderr);
    for leaked in ["SECRETPIN", "998877", "AKIAIOSFODNN7EXAMPLE"] {
        assert!(!run.stderr.contains(leaked), "{leaked}: {}", run.stderr);
        assert!(!run.stdout.contains(leaked), "{leaked}: {}", run.stdout);
    }
    assert!(!ws.exists("runbooks/pin.notes.md"));
}

#[test]
fn a_param_given_without_its_name_is_refused_without_echoing_it() {
    let ws = Workspace::new();
    ws.write("runbooks/pin.rhai", PIN);
    // `--param VALUE` (the name forgotten) is the easy slip with a secret in hand.
    for given in ["SECRETPIN-998877", "=SECRETPIN-998877"] {
        let run = ws.run(&["run", "pin", "--param", given]);
        run.expect_code(2);
        assert!(run.stderr.contains("NAME=VALUE"), "{}", run.stderr);
        assert!(!run.stderr.contains("SECRETPIN"), "{}", run.stderr);
        assert!(!run.stdout.contains("SECRETPIN"), "{}", run.stdout);
    }
}

#[test]
fn a_secret_shorter_than_four_characters_is_refused_without_echoing_it() {
    let ws = Workspace::new();
    ws.write("runbooks/pin.rhai", PIN);
    let run = ws.run(&[
        "run",
        "pin",
        "--param",
        "pin=123456",
        "--param",
        "code=Zq9",
        "--transcript",
        "t.jsonl",
    ]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("at least 4 characters"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("Zq9"), "{}", run.stderr);
    assert!(!ws.exists("t.jsonl"), "nothing may run");
}

/// One runbook written with its step options last (`step(title, body, options)`) or first
/// (`step(title, options, body)`); `{body}` is where the closure goes.
fn options_first_or_last(id: &str, first: bool) -> String {
    let step = |phase: &str, title: &str, options: &str, body: &str| {
        if first {
            format!("{phase}(\"{title}\", {options}, |ctx| {{ {body} }});\n")
        } else {
            format!("{phase}(\"{title}\", |ctx| {{ {body} }}, {options});\n")
        }
    };
    format!(
        "{}{}{}{}",
        header(id),
        step(
            "containment",
            "Look",
            "#{ timeout: \"2m\", retries: 1, backoff: \"1ms\" }",
            "notes::append(\"looked\");"
        ),
        step(
            "eradication",
            "Terminate",
            "#{ confirm: \"TERMINATE\", timeout: \"5m\", on_failure: |ctx| { notes::append(\"undo\"); } }",
            "notes::append(\"terminated\");"
        ),
        step(
            "recovery",
            "Skipped",
            "#{ when: |ctx| false, allow_failure: true }",
            "notes::append(\"never\");"
        ),
    )
}

#[test]
fn the_options_first_step_form_runs_plans_and_checks_like_the_options_last_form() {
    let mut seen = Vec::new();
    for first in [false, true] {
        let ws = Workspace::new();
        ws.write("runbooks/form.rhai", &options_first_or_last("form", first));
        ws.run(&["check", "runbooks/form.rhai"]).expect_code(0);
        // The declared steps, as `show` lists them (the file's hash aside: the text differs).
        let show = ws.run(&["show", "form"]);
        show.expect_code(0);
        assert!(
            show.stdout.contains("type `TERMINATE` to confirm"),
            "{}",
            show.stdout
        );
        let steps: Vec<&str> = show
            .stdout
            .lines()
            .filter(|l| !l.contains("sha256"))
            .collect();
        let plan = ws.run(&["plan", "form", "--transcript", "p.jsonl"]);
        plan.expect_code(0);
        assert!(
            plan.stdout
                .contains("notes::append({\"text\":\"terminated\"})"),
            "{}",
            plan.stdout
        );
        // The guard holds in both forms: unattended, nobody types TERMINATE.
        let stopped = ws.run(&["run", "form", "--transcript", "s.jsonl"]);
        stopped.expect_code(3);
        assert!(!ws.read("s.notes.md").contains("terminated"));
        ws.run(&["run", "form", "--yes", "--transcript", "y.jsonl"])
            .expect_code(0);
        let notes = ws.read("y.notes.md");
        assert!(
            notes.contains("terminated") && !notes.contains("never"),
            "{notes}"
        );
        let ev = events(&ws.path().join("y.jsonl"));
        let statuses: Vec<Value> = of_type(&ev, "step_finished")
            .iter()
            .map(|e| e["status"].clone())
            .collect();
        seen.push((steps.join("\n"), statuses));
    }
    assert_eq!(seen[0].1, vec!["ok", "ok", "skipped"]);
    assert_eq!(
        seen[0], seen[1],
        "both forms declare and run the same steps"
    );
}

#[test]
fn an_option_error_in_the_options_first_form_points_at_its_own_key() {
    let ws = Workspace::new();
    let src = format!(
        "{}eradication(\"Terminate\", #{{\n    confirm: \"TERMINATE\",\n    on_failure: |ctx| {{ log(#{{ timeout: \"5s\", bogus: 3 }}); }},\n    timeout: \"banana\",\n    bogus: 1,\n}}, |ctx| {{\n    let probe = #{{ timeout: \"5s\", bogus: 2 }};\n    log(probe.timeout);\n}});\n",
        header("opts-first")
    );
    ws.write("runbooks/opts-first.rhai", &src);
    let run = ws.run(&["check", "runbooks/opts-first.rhai"]);
    run.expect_code(2);
    assert!(run.stderr.contains("not \"banana\""), "{}", run.stderr);
    assert!(
        run.stderr.contains("runbooks/opts-first.rhai:5:5"),
        "the option on line 5, not the `timeout:` in the rollback on line 4:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("runbooks/opts-first.rhai:6:5")
            && run.stderr.contains("unknown step option `bogus`"),
        "`bogus` on line 6:\n{}",
        run.stderr
    );
}

const PAUSE: &str = r#"
runbook(#{ id: "pause", version: "1.0.0", title: "t", severity: "P3",
  params: #{ pause: #{ type: "duration", "default": "1ms" } } });
containment("Wait a moment", |ctx| { sleep(ctx.pause); notes::append(`paused ${ctx.pause}`); });
"#;

#[test]
fn a_duration_parameter_with_a_bad_default_is_refused_by_check_at_the_default() {
    // Not a duration, a bare number, one that overflows, one over the 366-day maximum.
    for (bad, why) in [
        ("banana", "is not a duration"),
        ("5", "is not a duration"),
        ("18446744073709551616s", "is not a duration"),
        ("400d", "is longer than the maximum duration"),
    ] {
        let ws = Workspace::new();
        ws.write(
            "runbooks/pause.rhai",
            &PAUSE.replace("\"default\": \"1ms\"", &format!("\"default\": \"{bad}\"")),
        );
        let check = ws.run(&["check", "runbooks/pause.rhai"]);
        check.expect_code(2);
        assert!(
            check.stderr.contains("runbooks/pause.rhai:3:42")
                && check
                    .stderr
                    .contains(&format!("parameter pause: the default {why}")),
            "{bad}: {}",
            check.stderr
        );
    }
    let ws = Workspace::new();
    ws.write(
        "runbooks/pause.rhai",
        &PAUSE.replace("\"duration\"", "\"interval\""),
    );
    let check = ws.run(&["check", "runbooks/pause.rhai"]);
    check.expect_code(2);
    assert!(check.stderr.contains("or duration"), "{}", check.stderr);
}

#[test]
fn a_bad_duration_param_is_refused_before_any_step_and_a_good_one_reaches_sleep() {
    let ws = Workspace::new();
    ws.write("runbooks/pause.rhai", PAUSE);
    for (bad, why) in [
        ("banana", "is not a duration"),
        ("18446744073709551616s", "is not a duration"),
        ("300000000000y", "is longer than the maximum duration"),
    ] {
        let run = ws.run(&[
            "run",
            "pause",
            "--param",
            &format!("pause={bad}"),
            "--transcript",
            "t.jsonl",
        ]);
        run.expect_code(2);
        assert!(
            run.stderr
                .contains(&format!("parameter pause: \"{bad}\" {why}")),
            "{bad}: {}",
            run.stderr
        );
        assert!(!ws.exists("t.jsonl"), "nothing may run");
        assert!(!ws.exists("runbooks/pause.notes.md"));
    }
    ws.run(&[
        "run",
        "pause",
        "--param",
        "pause=2ms",
        "--transcript",
        "t.jsonl",
    ])
    .expect_code(0);
    assert!(ws.read("t.notes.md").contains("paused 2ms"));
    let ev = events(&ws.path().join("t.jsonl"));
    let sleep = of_type(&ev, "call")
        .into_iter()
        .find(|c| c["binding"] == "sleep")
        .cloned();
    assert_eq!(
        sleep.as_ref().map(|c| c["args"]["duration"].clone()),
        Some(Value::from("2ms")),
        "{sleep:?}"
    );
}
