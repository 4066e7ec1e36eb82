//! The CLI as scripts use it: `--output json` documents (docs/json.md) parsed field by field,
//! `list --alert`, a closed pipe, colour, and runs from a subfolder of the project.

use crate::common;

use std::io::Read;
use std::process::{Command, Stdio};

use common::{Workspace, events, header, of_type};
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const INSTANCE: &str = "i-0a1b2c3d4e5f60001";

/// Runs `args` and parses stdout as exactly one JSON document; the exit code and the document.
fn document(ws: &Workspace, args: &[&str]) -> (i32, Value) {
    let run = ws.run(args);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): exit {}\n--- stdout\n{}\n--- stderr\n{}",
            run.code, run.stdout, run.stderr
        )
    });
    assert_eq!(doc["schema"], 1, "{doc}");
    assert_eq!(
        doc["exit_code"], run.code,
        "the document's exit code is the process's: {doc}"
    );
    (run.code, doc)
}

const TWO_STEPS_FAILING: &str = r#"containment("Boom", |ctx| { fail("the disk is on fire"); });
recovery("Never", |ctx| { notes::append("never"); });
"#;

#[test]
fn a_plan_as_json_lists_its_steps_and_names_the_resource_of_each_would_be_write() {
    let ws = Workspace::new();
    let runbooks = format!("{REPO}/runbooks");
    let (code, doc) = document(
        &ws,
        &[
            "plan",
            "ec2-compromised-instance",
            "--runbooks",
            &runbooks,
            "--param",
            &format!("instance_id={INSTANCE}"),
            "--param",
            "incident=2026-1123-001",
            "--output",
            "json",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(doc["command"], "plan");
    assert_eq!(doc["mode"], "plan");
    assert_eq!(doc["status"], "ok");
    assert_eq!(doc["runbook"]["id"], "ec2-compromised-instance");
    let transcript = ws.path().join(doc["transcript"].as_str().unwrap());
    let run_id = doc["run_id"].as_str().unwrap();
    assert!(transcript.ends_with(format!("{run_id}.jsonl")), "{doc}");
    let ev = events(&transcript);
    assert_eq!(ev[0]["run_id"], run_id);
    // Every step the transcript declares, each with how it ended there.
    let steps = doc["steps"].as_array().unwrap();
    assert_eq!(steps.len(), ev[0]["steps"].as_array().unwrap().len());
    for (i, step) in steps.iter().enumerate() {
        assert_eq!(step["index"], i);
        assert_eq!(step["title"], ev[0]["steps"][i]["title"]);
        assert_eq!(step["phase"], ev[0]["steps"][i]["phase"]);
        let finished = of_type(&ev, "step_finished")
            .into_iter()
            .find(|f| f["step"] == i)
            .unwrap();
        assert_eq!(step["status"], finished["status"]);
        assert_eq!(step["duration_ms"], finished["duration_ms"]);
    }
    // Each would-be write once, with its resource and the transcript's own arguments.
    let writes = doc["writes"].as_array().unwrap();
    let planned: Vec<&Value> = of_type(&ev, "call")
        .into_iter()
        .filter(|c| c["planned"] == true && c["mutating"] == true)
        .collect();
    assert_eq!(writes.len(), planned.len());
    assert!(!writes.is_empty());
    for (w, c) in writes.iter().zip(planned) {
        assert_eq!(w["planned"], true);
        assert_eq!(w["status"], "planned");
        assert_eq!(w["binding"], c["binding"]);
        assert_eq!(w["args"], c["args"]);
    }
    assert_eq!(writes[0]["binding"], "ec2::isolate");
    assert_eq!(writes[0]["resources"], serde_json::json!([INSTANCE]));
    // Nothing else on stdout: the human list of would-be writes is not printed.
    assert!(
        !ws.run(&["transcript", "verify", transcript.to_str().unwrap()])
            .stdout
            .is_empty()
    );
}

#[test]
fn a_failed_run_as_json_says_failed_for_the_run_and_the_step_and_exits_1() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/boom.rhai",
        &format!("{}{TWO_STEPS_FAILING}", header("boom")),
    );
    let (code, doc) = document(
        &ws,
        &["run", "boom", "--transcript", "t.jsonl", "--output", "json"],
    );
    assert_eq!(code, 1);
    assert_eq!(doc["command"], "run");
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["transcript"], "t.jsonl");
    assert_eq!(doc["steps"][0]["status"], "failed");
    assert_eq!(doc["steps"][0]["error"], "the disk is on fire");
    assert_eq!(doc["steps"][1]["status"], "not_run");
    assert_eq!(doc["steps"][1]["duration_ms"], Value::Null);
    assert_eq!(doc["writes"], serde_json::json!([]));
    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(doc["run_id"], ev[0]["run_id"]);
    assert_eq!(ev.last().unwrap()["status"], "failed");
}

#[test]
fn a_run_as_json_shows_a_secret_argument_only_as_its_redaction_marker() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/secret.rhai",
        r#"runbook(#{ id: "secret", version: "1.0.0", title: "Secret", severity: "P3",
    params: #{ token: #{ type: "string", secret: true, required: true } } });
containment("Note", |ctx| { notes::append(`token ${ctx.token}`); });
"#,
    );
    let secret = "hunter2-correct-horse-battery";
    let (code, doc) = document(
        &ws,
        &[
            "run",
            "secret",
            "--param",
            &format!("token={secret}"),
            "--transcript",
            "t.jsonl",
            "--output",
            "json",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(doc["status"], "ok");
    let text = doc.to_string();
    assert!(!text.contains(secret), "{text}");
    let w = &doc["writes"][0];
    assert_eq!(w["binding"], "notes::append");
    assert_eq!(w["status"], "ok");
    assert_eq!(w["planned"], false);
    assert!(w["args"].to_string().contains("[redacted:"), "{w}");
}

#[test]
fn a_resumed_run_as_json_says_resume_and_how_the_run_ended() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/t.rhai",
        &format!(
            "{}containment(\"Note\", |ctx| {{ notes::append(\"x\"); }});\n",
            header("t")
        ),
    );
    ws.run(&["run", "t", "--transcript", "t.jsonl"])
        .expect_code(0);
    // Cut the run's end off: the chain still holds, and resume only records the end.
    let text = ws.read("t.jsonl");
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("run_finished"))
        .collect();
    ws.write("t.jsonl", &format!("{}\n", kept.join("\n")));
    let (code, doc) = document(&ws, &["resume", "t.jsonl", "--output", "json"]);
    assert_eq!(code, 0);
    assert_eq!(doc["command"], "resume");
    assert_eq!(doc["status"], "ok");
    assert_eq!(doc["steps"][0]["status"], "ok");
    assert_eq!(doc["transcript"], "t.jsonl");
}

#[test]
fn an_error_before_any_run_still_prints_one_document_with_its_exit_code() {
    let ws = Workspace::new();
    let (code, doc) = document(&ws, &["run", "nope", "--output", "json"]);
    assert_eq!(code, 2);
    assert_eq!(doc["command"], "run");
    assert_eq!(doc["status"], "error");
    assert!(doc["error"].as_str().unwrap().contains("nope"), "{doc}");
}

#[test]
fn a_failed_drill_as_json_says_failed_and_exits_1() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/t.rhai",
        &format!(
            "{}containment(\"Note\", |ctx| {{ log(\"x\"); }});\n",
            header("t")
        ),
    );
    // The run ends ok; the scenario expects a failure, so the drill fails.
    ws.write(
        "drills/t-fails.toml",
        "runbook = \"t@1.0.0\"\n[expect]\nstatus = \"failed\"\n",
    );
    let (code, doc) = document(&ws, &["drill", "--output", "json"]);
    assert_eq!(code, 1);
    assert_eq!(doc["command"], "drill");
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["failed"], 1);
    assert_eq!(doc["passed"], 0);
    let d = &doc["drills"][0];
    assert_eq!(d["scenario"], "t-fails");
    assert_eq!(d["status"], "failed");
    assert_eq!(d["run_status"], "ok");
    assert!(!d["failures"].as_array().unwrap().is_empty(), "{d}");
    assert!(ws.path().join(d["transcript"].as_str().unwrap()).is_file());

    ws.write(
        "drills/t-fails.toml",
        "runbook = \"t@1.0.0\"\n[expect]\nstatus = \"ok\"\n",
    );
    let (code, doc) = document(&ws, &["drill", "--output", "json"]);
    assert_eq!(code, 0);
    assert_eq!(doc["status"], "passed");
    assert_eq!(doc["drills"][0]["status"], "passed");
}

#[test]
fn check_as_json_is_one_document_with_each_problem_at_its_line() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/bad.rhai",
        &format!(
            "{}containment(\"Broken\", |ctx| {{\n    let x = ;\n}});\n",
            header("bad")
        ),
    );
    let (code, doc) = document(&ws, &["check", "--output", "json"]);
    assert_eq!(code, 2);
    assert_eq!(doc["command"], "check");
    assert_eq!(doc["status"], "invalid");
    assert_eq!(doc["files"][0]["ok"], false);
    assert_eq!(doc["files"][0]["errors"][0]["line"], 3);
    assert_eq!(doc["policy"], Value::Null);
}

#[test]
fn list_show_and_the_transcript_commands_each_print_one_document() {
    let ws = Workspace::new();
    let runbooks = format!("{REPO}/runbooks");
    let (code, doc) = document(&ws, &["list", "--runbooks", &runbooks, "--output", "json"]);
    assert_eq!(code, 0);
    let rows = doc["runbooks"].as_array().unwrap();
    let cpu = rows.iter().find(|r| r["id"] == "ec2-high-cpu").unwrap();
    assert_eq!(cpu["alerts"], serde_json::json!(["ec2-cpu-high"]));
    assert_eq!(cpu["severity"], "P2");

    let (code, doc) = document(
        &ws,
        &[
            "show",
            "incident-record",
            "--runbooks",
            &runbooks,
            "--output",
            "json",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(doc["runbook"]["id"], "incident-record");
    assert!(
        doc["runbook"]["params"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "incident")
    );
    assert_eq!(doc["steps"][0]["index"], 0);

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
    let (code, doc) = document(
        &ws,
        &["transcript", "verify", "t.jsonl", "--output", "json"],
    );
    assert_eq!(code, 0);
    assert_eq!(doc["status"], "ok");
    assert_eq!(doc["finished"], "ok");
    assert_eq!(doc["events"], events(&ws.path().join("t.jsonl")).len());
    let (code, doc) = document(&ws, &["transcript", "show", "t.jsonl", "--output", "json"]);
    assert_eq!(code, 0);
    assert_eq!(doc["status"], "ok");
    assert_eq!(doc["kind"], "run");
    assert_eq!(doc["steps"][0]["status"], "ok");
    assert_eq!(doc["events"][0]["type"], "run_started");

    // A changed line: verify says broken, naming it, and exits 1.
    let text = ws
        .read("t.jsonl")
        .replacen("2026-1123-001", "2026-1123-002", 1);
    ws.write("t.jsonl", &text);
    let (code, doc) = document(
        &ws,
        &["transcript", "verify", "t.jsonl", "--output", "json"],
    );
    assert_eq!(code, 1);
    assert_eq!(doc["status"], "broken");
    assert_eq!(doc["line"], 1);
}

#[test]
fn list_names_the_alerts_and_finds_the_runbooks_that_answer_one() {
    let ws = Workspace::new();
    let runbooks = format!("{REPO}/runbooks");
    let list = ws.run(&["list", "--runbooks", &runbooks]);
    list.expect_code(0);
    assert!(
        list.stdout.lines().next().unwrap().contains("ALERTS"),
        "{}",
        list.stdout
    );
    let cpu = list
        .stdout
        .lines()
        .find(|l| l.starts_with("ec2-high-cpu "))
        .unwrap();
    assert!(cpu.contains("ec2-cpu-high"), "{cpu}");
    let incident = list
        .stdout
        .lines()
        .find(|l| l.starts_with("incident-record "))
        .unwrap();
    assert!(incident.contains(" - "), "no alerts shows as -: {incident}");

    // Two runbooks answer ec2-cpu-high; nothing else is listed.
    let found = ws.run(&["list", "--runbooks", &runbooks, "--alert", "ec2-cpu-high"]);
    found.expect_code(0);
    let mut ids: Vec<&str> = found
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["ec2-high-cpu", "ec2-high-cpu-scale-out"]);

    let none = ws.run(&["list", "--runbooks", &runbooks, "--alert", "disk-full"]);
    none.expect_code(1);
    assert_eq!(none.stdout, "");
    assert!(
        none.stderr.contains("no runbook in")
            && none.stderr.contains("answers alert \"disk-full\""),
        "{}",
        none.stderr
    );
    let (code, doc) = document(
        &ws,
        &[
            "list",
            "--runbooks",
            &runbooks,
            "--alert",
            "disk-full",
            "--output",
            "json",
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(doc["status"], "no_match");
    assert_eq!(doc["runbooks"], serde_json::json!([]));
}

/// Runs the binary with stdout a pipe whose reading end is closed before it writes: what
/// `| head -1` does to everything after the first line. The exit code and stderr.
fn into_a_closed_pipe(ws: &Workspace, args: &[&str]) -> (i32, String) {
    let mut child = ws.cmd().args(args).spawn();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn a_closed_pipe_ends_list_docs_and_a_plan_quietly_with_their_own_status() {
    let ws = Workspace::new();
    let runbooks = format!("{REPO}/runbooks");
    for args in [
        vec!["list", "--runbooks", &runbooks],
        vec!["docs"],
        vec!["docs", "transcript"],
    ] {
        let (code, stderr) = into_a_closed_pipe(&ws, &args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
    // A run's output: the run still ends and its transcript with it.
    let param = format!("instance_id={INSTANCE}");
    let (code, stderr) = into_a_closed_pipe(
        &ws,
        &[
            "plan",
            "ec2-compromised-instance",
            "--runbooks",
            &runbooks,
            "--param",
            &param,
            "--param",
            "incident=2026-1123-001",
            "--transcript",
            "t.jsonl",
            "--quiet",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.to_lowercase().contains("broken pipe"),
        "{stderr}"
    );
    assert_eq!(
        events(&ws.path().join("t.jsonl")).last().unwrap()["type"],
        "run_finished"
    );
    // A list of runbooks answering no alert still says so, and exits 1.
    let (code, stderr) =
        into_a_closed_pipe(&ws, &["list", "--runbooks", &runbooks, "--alert", "x"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("answers alert"), "{stderr}");
}

/// `runbook check` of a broken runbook in a pseudo-terminal with these variables: all it drew.
fn check_on_a_terminal(vars: &[(&str, &str)], shell: Option<&str>) -> String {
    use expectrl::Expect;
    let ws = Workspace::new();
    ws.write(
        "runbooks/bad.rhai",
        &format!(
            "{}containment(\"Broken\", |ctx| {{\n    let x = ;\n}});\n",
            header("bad")
        ),
    );
    let mut cmd = match shell {
        Some(script) => {
            let mut c = Command::new("sh");
            c.args(["-c", script, env!("CARGO_BIN_EXE_runbook")]);
            c
        }
        None => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_runbook"));
            c.arg("check");
            c
        }
    };
    cmd.current_dir(ws.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNBOOK_") || k == "NO_COLOR" || k == "TERM" {
            cmd.env_remove(&k);
        }
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut s = expectrl::session::OsSession::spawn(cmd).expect("spawn in a pty");
    s.set_expect_timeout(Some(std::time::Duration::from_secs(30)));
    let found = s.expect(expectrl::Eof).expect("check ends");
    String::from_utf8_lossy(found.as_bytes()).into_owned()
}

#[test]
fn colour_is_for_a_terminal_without_no_color_and_never_for_a_pipe() {
    let coloured = check_on_a_terminal(&[("TERM", "xterm-256color")], None);
    assert!(coloured.contains("let x = ;"), "{coloured}");
    assert!(
        coloured.contains("\x1b["),
        "a terminal gets colour: {coloured:?}"
    );

    let plain = check_on_a_terminal(&[("TERM", "xterm-256color"), ("NO_COLOR", "1")], None);
    assert!(plain.contains("let x = ;"), "{plain}");
    assert!(!plain.contains("\x1b["), "NO_COLOR: {plain:?}");

    let dumb = check_on_a_terminal(&[("TERM", "dumb")], None);
    assert!(dumb.contains("let x = ;"), "{dumb}");
    assert!(!dumb.contains("\x1b["), "TERM=dumb: {dumb:?}");

    // Both streams into a pipe (shown on the terminal by cat): no colour.
    let piped = check_on_a_terminal(
        &[("TERM", "xterm-256color")],
        Some("\"$0\" check 2>&1 | cat"),
    );
    assert!(piped.contains("let x = ;"), "{piped}");
    assert!(!piped.contains("\x1b["), "piped: {piped:?}");
}

/// The binary started in `dir`, with none of the variables that would point it away from the
/// project `dir` is in.
fn in_folder(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
    cmd.current_dir(dir)
        .env_remove("RUNBOOK_TRANSCRIPTS")
        .env_remove("RUNBOOK_PATH")
        .env_remove("RUNBOOK_CONFIG")
        .env_remove("RUNBOOK_ENV")
        .env_remove("RUNBOOK_HOOKS")
        .env("RUNBOOK_OPERATOR", "tester@ci")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn a_run_from_a_subfolder_uses_the_projects_runbooks_config_and_transcripts() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/t.rhai",
        &format!(
            "{}containment(\"Note\", |ctx| {{ log(\"x\"); }});\n",
            header("t")
        ),
    );
    ws.write(
        "runbook.toml",
        "default = \"lab\"\n[environments.lab]\nbackend = \"sim\"\n",
    );
    let sub = ws.path().join("docs/notes");
    std::fs::create_dir_all(&sub).unwrap();
    let out = in_folder(&sub)
        .args(["run", "t", "--output", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["environment"], "lab", "runbook.toml of the root: {doc}");
    let run_id = doc["run_id"].as_str().unwrap();
    // The transcript is under the root's transcripts/, and nothing is left in the subfolder.
    let transcript = sub.join(doc["transcript"].as_str().unwrap());
    let root_transcripts = ws.path().join("transcripts").canonicalize().unwrap();
    assert!(
        transcript
            .canonicalize()
            .unwrap()
            .starts_with(&root_transcripts),
        "{}",
        transcript.display()
    );
    assert!(transcript.ends_with(format!("{run_id}.jsonl")));
    assert!(!sub.join("transcripts").exists());
    // And the commands that find runs by id find it from there too.
    let shown = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .current_dir(&sub)
        .env("NO_COLOR", "1")
        .args(["transcript", "show", run_id])
        .output()
        .unwrap();
    assert_eq!(
        shown.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let listed = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .current_dir(&sub)
        .env("NO_COLOR", "1")
        .args(["list", "--output", "json"])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(doc["runbooks"][0]["id"], "t");
}

#[test]
fn drill_policy_and_serve_from_a_subfolder_use_the_projects_drills_alerts_and_hooks() {
    let ws = Workspace::new();
    // Reviewed today, so the policy's only question is whether the drill's record is found.
    let today = chrono::Utc::now().date_naive();
    ws.write(
        "runbooks/t.rhai",
        &format!(
            "runbook(#{{ id: \"t\", version: \"1.0.0\", title: \"Test t\", severity: \"P3\", reviewed: \"{today}\" }});\ncontainment(\"Note\", |ctx| {{ log(\"x\"); }});\n"
        ),
    );
    ws.write(
        "runbook.toml",
        "default = \"lab\"\n[environments.lab]\nbackend = \"sim\"\n",
    );
    ws.write(
        "drills/t-clean.toml",
        "runbook = \"t@1.0.0\"\n[expect]\nstatus = \"ok\"\n",
    );
    ws.write(
        "alerts.toml",
        "[[alert]]\nname = \"t-alert\"\nseverity = \"P3\"\ncondition = \"x\"\nsource = \"test\"\n",
    );
    ws.write(
        "hooks.toml",
        "[[route]]\nname = \"t-route\"\nalert = \"t-alert\"\nrunbook = \"t@1.0.0\"\nenvironment = \"lab\"\n",
    );
    let sub = ws.path().join("runbooks/notes");
    std::fs::create_dir_all(&sub).unwrap();
    let from_sub = |args: &[&str]| {
        let out = in_folder(&sub).args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr)
    };

    // The root's drills/ is found; its transcripts and records are written there.
    let (code, stdout, stderr) = from_sub(&["drill", "--output", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["drills"].as_array().map(Vec::len), Some(1), "{doc}");
    assert!(ws.path().join("drills/out").is_dir());
    let records = std::fs::read_dir(ws.path().join("drills/results"))
        .unwrap()
        .count();
    assert_eq!(records, 1, "one dated record in the root's drills/results");
    assert!(
        !sub.join("drills").exists(),
        "nothing written in the subfolder"
    );

    // The policy check reads the root's alert catalogue and the drill record just written.
    let now = today.to_string();
    let (code, stdout, stderr) =
        from_sub(&["check", "--policy", "--now", &now, "--output", "json"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["policy"]["alerts"], 1, "{doc}");
    assert_eq!(doc["policy"]["drill_records"], 1, "{doc}");

    // serve finds the root's hooks.toml.
    let (code, stdout, stderr) = from_sub(&["serve", "--check"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("t-route"), "{stdout}");
}

const FIND: &str = r#"runbook(#{ id: "hello", version: "1.0.0", title: "Hello", severity: "P3" });
containment("Count", |ctx| { ctx.n = ec2::find(#{ tags: #{ Name: "api-blue-1" } }).len(); });
"#;

#[test]
fn profile_and_region_follow_the_aws_clis_precedence_and_the_run_says_where_it_acted() {
    use common::moto::{Moto, with_credentials};
    let moto = Moto::start();
    let ws = Workspace::new();
    ws.write(
        "runbook.toml",
        &format!(
            "[environments.pinned]\nbackend = \"aws\"\nregion = \"us-east-1\"\nendpoint = \"{0}\"\naccount_id = \"123456789012\"\nmax_attempts = 1\n\n\
             [environments.open]\nbackend = \"aws\"\nendpoint = \"{0}\"\nmax_attempts = 1\n\n\
             [environments.lab]\nbackend = \"sim\"\n",
            moto.endpoint()
        ),
    );
    ws.write(
        "aws-config",
        "[default]\nregion = sa-east-1\n\n[profile oncall]\nregion = ca-central-1\n",
    );
    ws.write("runbooks/hello.rhai", FIND);
    let config = ws.path().join("aws-config");
    // Where a run acted, from its document and from its transcript, which must agree.
    let acted = |env: &str, vars: &[(&str, &str)], flags: &[&str]| -> String {
        let mut cmd = with_credentials(ws.cmd())
            .env("AWS_CONFIG_FILE", config.to_str().unwrap())
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
        for (k, v) in vars {
            cmd = cmd.env(k, v);
        }
        let mut args = vec!["run", "hello", "--env", env, "--output", "json"];
        args.extend(flags);
        let r = cmd.args(&args).output();
        r.expect_code(0);
        let doc: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(doc["account"], "123456789012", "{doc}");
        assert_eq!(doc["endpoint"], moto.endpoint().as_str());
        let region = doc["region"].as_str().unwrap().to_string();
        let banner = format!(
            "env {env}: aws account 123456789012, region {region}, endpoint {}",
            moto.endpoint()
        );
        assert!(r.stderr.contains(&banner), "{banner}\n{}", r.stderr);
        let ev = events(&ws.path().join(doc["transcript"].as_str().unwrap()));
        assert_eq!(ev[0]["region"], region.as_str());
        assert_eq!(ev[0]["account"], "123456789012");
        region
    };
    // runbook.toml over the shared config; the environment variable over runbook.toml; the flag
    // over both.
    assert_eq!(acted("pinned", &[], &[]), "us-east-1");
    assert_eq!(
        acted("pinned", &[("AWS_REGION", "eu-west-1")], &[]),
        "eu-west-1"
    );
    assert_eq!(
        acted(
            "pinned",
            &[("AWS_REGION", "eu-west-1")],
            &["--region", "ap-south-1"]
        ),
        "ap-south-1"
    );
    // Nothing in runbook.toml: the shared config's default profile, or the profile named by
    // AWS_PROFILE or --profile (the flag over the variable).
    assert_eq!(acted("open", &[], &[]), "sa-east-1");
    assert_eq!(
        acted("open", &[("AWS_PROFILE", "oncall")], &[]),
        "ca-central-1"
    );
    assert_eq!(
        acted(
            "open",
            &[("AWS_PROFILE", "nonesuch")],
            &["--profile", "oncall"]
        ),
        "ca-central-1"
    );

    // The simulator has no profile or region to set, and `list` talks to no AWS.
    let sim = ws.run(&["run", "hello", "--env", "lab", "--region", "eu-west-1"]);
    sim.expect_code(2);
    assert!(
        sim.stderr.contains("lab is the simulator"),
        "{}",
        sim.stderr
    );
    let list = ws.run(&["list", "--region", "eu-west-1"]);
    list.expect_code(2);
    assert!(
        list.stderr.contains("does not talk to AWS"),
        "{}",
        list.stderr
    );
}

/// What the shell's completion gets for `words` (the last one being completed), through bash's
/// own registration script and completion function, run by bash in the workspace.
fn bash_completes(ws: &Workspace, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "eval \"$(RUNBOOK_COMPLETE=bash \"$0\")\"\n\
         COMP_WORDS=(runbook {words}); COMP_CWORD={index}; COMP_TYPE=9\n\
         _clap_complete_runbook runbook {last} runbook\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        words = quoted.join(" "),
        index = words.len(),
        last = quoted.last().map_or("''", |w| w.as_str()),
    );
    let mut bash = Command::new("bash");
    bash.current_dir(ws.path())
        .args(["-c", &script, env!("CARGO_BIN_EXE_runbook")]);
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNBOOK_") {
            bash.env_remove(&k);
        }
    }
    let out = bash.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}

#[test]
fn completion_offers_runbook_ids_versions_environments_and_parameter_names() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/restart-api.rhai",
        r#"runbook(#{ id: "restart-api", version: "1.2.0", title: "Restart the API", severity: "P3",
    params: #{ instance_id: #{ type: "string", description: "the instance" }, incident: #{} } });
containment("Note", |ctx| { log("x"); });
"#,
    );
    ws.write(
        "runbook.toml",
        "[environments.staging]\nbackend = \"sim\"\n",
    );
    let targets = bash_completes(&ws, &["run", "re"]);
    assert!(targets.contains(&"restart-api".to_string()), "{targets:?}");
    assert!(
        targets.contains(&"restart-api@1.2.0".to_string()),
        "{targets:?}"
    );
    let params = bash_completes(&ws, &["plan", "restart-api", "--param", ""]);
    assert!(params.contains(&"instance_id=".to_string()), "{params:?}");
    assert!(params.contains(&"incident=".to_string()), "{params:?}");
    let envs = bash_completes(&ws, &["run", "restart-api", "--env", "st"]);
    assert_eq!(envs, ["staging"]);

    // zsh and fish register the same completer; fish's answer carries the runbook's title.
    for shell in ["zsh", "fish"] {
        let script = ws.cmd().env("RUNBOOK_COMPLETE", shell).output();
        script.expect_code(0);
        assert!(
            script.stdout.contains("RUNBOOK_COMPLETE"),
            "{shell}: {}",
            script.stdout
        );
    }
    let fish = ws
        .cmd()
        .env("RUNBOOK_COMPLETE", "fish")
        .args(&["--", "runbook", "show", ""])
        .output();
    fish.expect_code(0);
    assert!(
        fish.stdout
            .lines()
            .any(|l| l == "restart-api\tRestart the API"),
        "{}",
        fish.stdout
    );
}
