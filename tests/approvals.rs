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

/// Lets the account `uid`/`gid` 0 reach the run's approvals folder, as a second person in the
/// run's group would (the workspace and transcript folders are private by default).
fn open_to_the_group(ws: &Workspace, transcript: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut dir = transcript.parent();
    while let Some(d) = dir {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o750)).unwrap();
        if d == ws.path() {
            break;
        }
        dir = d.parent();
    }
}

/// This test process's uid: the name of its own answer files.
fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// The uid tests use for a second person: `nobody`, in root's group.
const SECOND: u32 = 65534;

#[test]
fn four_eyes_needs_another_account_and_a_claimed_name_is_not_one() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/gated.rhai",
        &format!(
            "{}eradication(\"Terminate\", |ctx| {{\n  approve(\"Terminate i-0a1b2c3d4e5f60001 in prod?\", #{{ others: true, timeout: \"60s\" }});\n  notes::append(\"terminated\");\n}});\n",
            header("gated")
        ),
    );
    let child = ws
        .cmd()
        .env("RUNBOOK_TRANSCRIPTS", "tx")
        .args(&["run", "gated"])
        .spawn();
    let run_id = pending_request(&ws);

    // The requester's own account, under any name it claims, is the requester.
    for claimed in ["tester@ci", "someone-else"] {
        let own = ws
            .cmd()
            .env("RUNBOOK_TRANSCRIPTS", "tx")
            .env("RUNBOOK_OPERATOR", claimed)
            .args(&["approve", &run_id])
            .output();
        own.expect_code(2);
        assert!(
            own.stderr.contains("cannot approve their own run"),
            "{}",
            own.stderr
        );
    }
    if !common::is_root() {
        eprintln!("not root: the second account's approval is not exercised here");
        let _ = child.wait_with_output();
        return;
    }
    let path = transcript_of(&ws, &run_id);
    open_to_the_group(&ws, &path);
    let other = ws
        .cmd()
        .run_as(SECOND, 0)
        .env("RUNBOOK_OPERATOR", "carol (CISO)")
        .args(&["approve", &run_id, "--transcript", path.to_str().unwrap()])
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
    let ev = events(&path);
    let logged: Vec<String> = of_type(&ev, "log")
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        logged
            .iter()
            .any(|m| m.starts_with("approved by carol (CISO) (claimed; nobody@")),
        "{logged:?}"
    );
    let call = of_type(&ev, "call")
        .into_iter()
        .find(|c| c["binding"] == "approve")
        .unwrap()
        .clone();
    let result: serde_json::Value = serde_json::from_str(call["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["identities"][0]["via"], "os", "{result}");
    assert!(
        result["identities"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("nobody@"),
        "{result}"
    );
    assert_eq!(result["identities"][0]["claimed"], "carol (CISO)");
    assert!(
        std::fs::read_to_string(path.with_extension("notes.md"))
            .unwrap()
            .contains("terminated")
    );
    ws.run(&["transcript", "verify", path.to_str().unwrap()])
        .expect_code(0);
}

/// Runs `gated` (one `approve` with `options`) with the transcript at `t.jsonl`, so its
/// approvals folder (`t.approvals`) is known before the run starts.
fn gated_at_t(ws: &Workspace, options: &str) -> std::process::Child {
    ws.write(
        "runbooks/gated.rhai",
        &format!(
            "{}eradication(\"Wait\", |ctx| {{ approve(\"go?\", #{{ {options} }}); notes::append(\"went\"); }});\n",
            header("gated")
        ),
    );
    ws.cmd()
        .args(&["run", "gated", "--transcript", "t.jsonl"])
        .spawn()
}

fn wait_for(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `approval` lines the run recorded.
fn approval_log(path: &std::path::Path) -> Vec<String> {
    of_type(&events(path), "log")
        .iter()
        .filter(|e| e["level"] == "approval")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

fn step_error(path: &std::path::Path) -> String {
    of_type(&events(path), "step_finished")[0]["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_hand_written_answer_is_its_file_owner_s_and_never_the_person_it_names() {
    let ws = Workspace::new();
    let child = gated_at_t(&ws, "others: true, timeout: \"2s\"");
    let request = ws.path().join("t.approvals/1.request.json");
    wait_for(&request);
    let asked: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&request).unwrap()).unwrap();
    // Written by the requester's own account, bound to the request, naming someone else.
    ws.write(
        &format!("t.approvals/1.answer.{}.json", my_uid()),
        &serde_json::json!({
            "run_id": asked["run_id"], "number": 1, "nonce": asked["nonce"], "approve": true,
            "plan_hash": asked["plan_hash"], "at": "2026-11-30T00:00:00Z",
            "claimed": "carol (CISO)", "approver": "carol (CISO)"
        })
        .to_string(),
    );
    // And one without the request's nonce, under a name no account has.
    ws.write(
        "t.approvals/1.answer.carol.json",
        "{\"approver\":\"carol (CISO)\",\"approve\":true,\"at\":\"2026-11-30T00:00:00Z\"}",
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let path = ws.path().join("t.jsonl");
    assert_eq!(step_error(&path), "approval_timeout");
    let log = approval_log(&path);
    assert!(
        log.iter().any(|m| m.contains("carol (CISO) (claimed; ")
            && m.contains("the requester's own answer does not count")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|m| m.contains(&format!(
            "1.answer.carol.json: owned by uid {}, but named for another account",
            my_uid()
        ))),
        "{log:?}"
    );
    assert!(!ws.exists("t.notes.md"));
}

#[test]
fn an_answer_planted_before_its_request_is_refused() {
    let ws = Workspace::new();
    // The folder and an answer, there before the run files its request.
    ws.write(
        &format!("t.approvals/1.answer.{}.json", my_uid()),
        "{\"run_id\":\"t\",\"number\":1,\"nonce\":\"guessed\",\"approve\":true,\"plan_hash\":\"\",\"at\":\"2026-11-30T00:00:00Z\"}",
    );
    let child = gated_at_t(&ws, "timeout: \"2s\"");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let path = ws.path().join("t.jsonl");
    assert_eq!(step_error(&path), "approval_timeout");
    let log = approval_log(&path);
    assert!(
        log.iter().any(|m| m.contains("older than its request")),
        "{log:?}"
    );
}

#[test]
fn two_approvals_need_two_accounts_not_one_account_under_two_names() {
    let ws = Workspace::new();
    let child = gated_at_t(&ws, "approvers: 2, timeout: \"2s\"");
    wait_for(&ws.path().join("t.approvals/1.request.json"));
    ws.cmd()
        .env("RUNBOOK_OPERATOR", "alice")
        .args(&["approve", "t", "--transcript", "t.jsonl"])
        .output()
        .expect_code(0);
    let again = ws
        .cmd()
        .env("RUNBOOK_OPERATOR", "bob")
        .args(&["approve", "t", "--transcript", "t.jsonl"])
        .output();
    again.expect_code(2);
    assert!(
        again
            .stderr
            .contains("already has an answer from this account"),
        "{}",
        again.stderr
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let path = ws.path().join("t.jsonl");
    assert_eq!(step_error(&path), "approval_timeout");
    let ev = events(&path);
    let finished = &of_type(&ev, "step_finished")[0];
    assert!(
        finished["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("1 of 2 approval(s)"),
        "{finished}"
    );
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
    let path = transcript_of(&ws, &run_id);
    let ev = events(&path);
    assert_eq!(
        of_type(&ev, "step_finished")[0]["error"]["code"],
        "approval_denied"
    );
    // The denial is recorded with who gave it, as established.
    let log = approval_log(&path);
    assert!(
        log.iter()
            .any(|m| m.starts_with("denied by second@ops (claimed; ")
                && m.contains("\"via\":\"os\"")),
        "{log:?}"
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
    let approved = decisions.last().unwrap();
    assert!(
        approved["by"]
            .as_str()
            .unwrap()
            .starts_with("lead@ops (claimed; "),
        "{approved}"
    );
    assert_eq!(approved["approvers"][0]["via"], "os");
    assert_eq!(approved["approvers"][0]["claimed"], "lead@ops");
    assert_eq!(approved["action"], "run");
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
fn approve_shows_the_runbook_step_question_and_plan_and_no_file_is_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new();
    ws.write(
        "runbooks/gated.rhai",
        &format!(
            "{}containment(\"Look\", |ctx| {{ log(\"looked\"); }});\neradication(\"Terminate\", |ctx| {{\n  approve(\"Terminate i-0a1b2c3d4e5f60001 in prod?\", #{{ timeout: \"30s\" }});\n}});\n",
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
        "asked by   tester@ci (claimed; ".to_string(),
        "plan       0 would-be write(s), sha256 ".to_string(),
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
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    // Group-writable, sticky (no one removes another's answer), setgid (answers take the group).
    assert_eq!(mode(&dir), 0o3770);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o640, "{}", path.display());
    }
    assert_eq!(mode(&transcript_of(&ws, &run_id)), 0o600);
}

#[test]
fn an_answer_never_writes_through_a_planted_symlink_nor_reads_one() {
    let ws = Workspace::new();
    let child = gated_at_t(&ws, "timeout: \"2s\"");
    wait_for(&ws.path().join("t.approvals/1.request.json"));
    ws.write("victim.txt", "precious\n");
    std::os::unix::fs::symlink(
        ws.path().join("victim.txt"),
        ws.path()
            .join(format!("t.approvals/1.answer.{}.json", my_uid())),
    )
    .unwrap();
    let answered = ws
        .cmd()
        .args(&["approve", "t", "--transcript", "t.jsonl"])
        .output();
    answered.expect_code(2);
    assert_eq!(ws.read("victim.txt"), "precious\n");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = approval_log(&ws.path().join("t.jsonl"));
    assert!(
        log.iter().any(|m| m.contains(&format!(
            "1.answer.{}.json: a symlink, never followed",
            my_uid()
        ))),
        "{log:?}"
    );
}

#[test]
fn a_step_whose_writes_change_after_approval_stops_and_asks_again() {
    use std::sync::atomic::Ordering;
    let server = common::http::Server::start();
    let ws = Workspace::new();
    ws.write(
        "runbooks/drift.rhai",
        &format!(
            "{}eradication(\"Record\", |ctx| {{\n  let r = health::http(\"{}\");\n  notes::append(`status ${{r.status}}`);\n}}, #{{ confirm: true }});\n",
            header("drift"),
            server.url("/health")
        ),
    );
    let child = ws
        .cmd()
        .args(&[
            "run",
            "drift",
            "--approval-timeout",
            "60s",
            "--transcript",
            "t.jsonl",
        ])
        .spawn();
    let first = ws.path().join("t.approvals/1.request.json");
    wait_for(&first);
    let asked: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&first).unwrap()).unwrap();
    assert_eq!(asked["plan"][0]["binding"], "notes::append", "{asked}");
    assert_eq!(asked["plan"][0]["args"]["text"], "status 200", "{asked}");
    // What the step reads changes between the approval and the run: so does what it writes.
    server.control.health_status.store(503, Ordering::SeqCst);
    let shown = ws
        .cmd()
        .args(&["approve", "t", "--transcript", "t.jsonl"])
        .output();
    shown.expect_code(0);
    assert!(
        shown
            .stdout
            .contains("notes::append({\"text\":\"status 200\"})"),
        "{}",
        shown.stdout
    );

    let second = ws.path().join("t.approvals/2.request.json");
    wait_for(&second);
    let asked_again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&second).unwrap()).unwrap();
    assert_eq!(asked_again["plan"][0]["args"]["text"], "status 503");
    assert_ne!(asked_again["plan_hash"], asked["plan_hash"]);
    ws.cmd()
        .args(&["approve", "t", "--transcript", "t.jsonl"])
        .output()
        .expect_code(0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Only the write approved the second time was sent.
    let notes = ws.read("t.notes.md");
    assert!(
        notes.contains("status 503") && !notes.contains("status 200"),
        "{notes}"
    );
    let ev = events(&ws.path().join("t.jsonl"));
    let drift = of_type(&ev, "guardrail");
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0]["rule"], "plan_drift");
    assert!(
        drift[0]["reason"].as_str().unwrap().contains("status 503"),
        "{}",
        drift[0]
    );
    let approvals: Vec<&serde_json::Value> = of_type(&ev, "decision")
        .into_iter()
        .filter(|d| d["approvers"].is_array())
        .collect();
    assert_eq!(approvals.len(), 2, "asked twice, approved twice");
    assert!(
        approvals[1]["reason"]
            .as_str()
            .unwrap()
            .contains(asked_again["plan_hash"].as_str().unwrap())
    );
    ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);
}

/// Makes IAM user `name` on moto and returns its access key (id, secret): STS then names that
/// user as the caller of whatever uses the key.
fn moto_user(moto: &common::moto::Moto, name: &str) -> (String, String) {
    let endpoint = moto.endpoint();
    let call = |form: String| {
        let endpoint = endpoint.clone();
        common::moto::block(async move {
            // moto routes by the credential scope and checks no signature.
            reqwest::Client::new()
                .post(&endpoint)
                .header(
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=testing/20261130/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
                )
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    };
    call(format!(
        "Action=CreateUser&UserName={name}&Version=2010-05-08"
    ));
    let xml = call(format!(
        "Action=CreateAccessKey&UserName={name}&Version=2010-05-08"
    ));
    let field = |tag: &str| {
        let start = xml.find(&format!("<{tag}>")).unwrap() + tag.len() + 2;
        let end = xml[start..].find(&format!("</{tag}>")).unwrap() + start;
        xml[start..end].to_string()
    };
    (field("AccessKeyId"), field("SecretAccessKey"))
}

fn as_user(cmd: common::Cmd, key: &(String, String)) -> common::Cmd {
    cmd.env("AWS_ACCESS_KEY_ID", &key.0)
        .env("AWS_SECRET_ACCESS_KEY", &key.1)
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

#[test]
fn with_the_aws_backend_a_request_filed_by_one_process_is_approved_from_another_folder() {
    let moto = common::moto::Moto::start();
    let state = format!(
        "[state]\nbackend = \"aws\"\ntable = \"runbook-state\"\nbucket = \"runbook-transcripts\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n",
        moto.endpoint()
    );
    let requester = Workspace::new();
    requester.write("runbook.toml", &state);
    requester.write(
        "runbooks/gated.rhai",
        &format!(
            "{}eradication(\"Terminate\", |ctx| {{\n  approve(\"Terminate i-0a1b2c3d4e5f60001?\", #{{ others: true, timeout: \"60s\" }});\n  notes::append(\"terminated\");\n}});\n",
            header("gated")
        ),
    );
    let init = common::moto::with_credentials(requester.cmd().args(&["state", "init"])).output();
    assert_eq!(init.code, 0, "{}{}", init.stdout, init.stderr);
    let (alice, bob) = (moto_user(&moto, "alice"), moto_user(&moto, "bob"));

    let child = as_user(requester.cmd(), &alice)
        .args(&["run", "gated", "--transcript", "t.jsonl"])
        .spawn();
    // The run's id, as its banner (or a Slack message) gives it to the approver.
    let deadline = Instant::now() + Duration::from_secs(30);
    let run_id = loop {
        let started = std::fs::read_to_string(requester.path().join("t.jsonl"))
            .ok()
            .and_then(|t| t.lines().next().map(str::to_string))
            .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok());
        if let Some(id) = started.and_then(|s| s["run_id"].as_str().map(str::to_string)) {
            break id;
        }
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(50));
    };

    // Another machine: its own folder, no transcript, the same table.
    let approver = Workspace::new();
    approver.write("runbook.toml", &state);
    let own = loop {
        let own = as_user(approver.cmd(), &alice)
            .args(&["approve", &run_id])
            .output();
        if !own.stderr.contains("has no approval requests") {
            break own;
        }
        assert!(Instant::now() < deadline, "no request reached the table");
        std::thread::sleep(Duration::from_millis(100));
    };
    own.expect_code(2);
    assert!(
        own.stderr.contains("cannot approve their own run")
            && own.stderr.contains("arn:aws:iam::123456789012:user/alice"),
        "{}",
        own.stderr
    );
    let approved = as_user(approver.cmd(), &bob)
        .env("RUNBOOK_OPERATOR", "Bob B.")
        .args(&["approve", &run_id])
        .output();
    approved.expect_code(0);
    for shown in [
        format!("request 1 of run {run_id}"),
        "Terminate i-0a1b2c3d4e5f60001?".to_string(),
        "aws arn:aws:iam::123456789012:user/alice".to_string(),
        "as Bob B. (claimed; aws arn:aws:iam::123456789012:user/bob)".to_string(),
    ] {
        assert!(
            approved.stdout.contains(&shown),
            "{shown}: {}",
            approved.stdout
        );
    }
    let again = as_user(approver.cmd(), &bob)
        .args(&["approve", &run_id])
        .output();
    again.expect_code(2);
    assert!(
        again.stderr.contains("an answer is given once"),
        "{}",
        again.stderr
    );

    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&requester.path().join("t.jsonl"));
    // The state backend is AWS: the run is its STS caller too, even on the sim.
    assert_eq!(
        ev[0]["identity"]["id"],
        "arn:aws:iam::123456789012:user/alice"
    );
    let call = of_type(&ev, "call")
        .into_iter()
        .find(|c| c["binding"] == "approve")
        .unwrap()
        .clone();
    let result: serde_json::Value = serde_json::from_str(call["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["identities"][0]["via"], "aws", "{result}");
    assert_eq!(
        result["identities"][0]["id"],
        "arn:aws:iam::123456789012:user/bob"
    );
    assert!(requester.read("t.notes.md").contains("terminated"));
}

const SIGNING: &str = "slack-signing-secret-8f2a61";
const HOOK_KEY: &str = "hook-key-0c7e19";

/// This process's local identity key (`os:user@host`), as a run of it is recorded.
fn my_os_key() -> String {
    let uid = my_uid();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let user = passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
        })
        .unwrap_or_else(|| format!("uid:{uid}"));
    format!("os:{user}@{}", gethostname::gethostname().to_string_lossy())
}

/// A Slack `block_actions` click on `action` of a button whose value is `value`, by `user`, as
/// Slack sends it: form-encoded, signed with `secret` at `ts`.
fn click(
    served: &common::serve::Served,
    secret: &str,
    ts: i64,
    user: &str,
    action: &str,
    value: &str,
) -> (u16, serde_json::Value, Vec<u8>, Vec<(String, String)>) {
    let payload = serde_json::json!({
        "type": "block_actions", "team": {"id": "T0TEAM"},
        "user": {"id": user, "username": user.to_lowercase()},
        "actions": [{"action_id": action, "value": value}],
        "trigger_id": format!("trigger-{user}-{ts}"),
    })
    .to_string();
    let encoded: String = payload
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = format!("payload={encoded}").into_bytes();
    let headers = vec![
        ("x-slack-request-timestamp".to_string(), ts.to_string()),
        (
            "x-slack-signature".to_string(),
            runbook::front::hooks::slack::sign(secret.as_bytes(), ts, &body),
        ),
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
    ];
    let (status, answer) = post_raw(served, &body, &headers);
    (status, answer, body, headers)
}

fn post_raw(
    served: &common::serve::Served,
    body: &[u8],
    headers: &[(String, String)],
) -> (u16, serde_json::Value) {
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    served.post("/hooks/slack/interactions", &refs, body)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_signed_slack_click_approves_a_served_run_and_forged_old_replayed_or_own_clicks_do_not() {
    let slack = common::http::Server::start();
    let ws = Workspace::new();
    ws.write(
        "runbooks/gated.rhai",
        &format!(
            "{}eradication(\"Terminate\", |ctx| {{\n  approve(\"Terminate i-0a1b2c3d4e5f60001?\", #{{ others: true, timeout: \"60s\" }});\n  notes::append(\"terminated\");\n}});\n",
            header("gated")
        ),
    );
    // The requester (serve's own account) is U0ALICE in Slack: her click is still hers.
    ws.write(
        "runbook.toml",
        &format!(
            "default = \"sim\"\n\n[environments.sim]\nbackend = \"sim\"\nnotifications = \"send\"\n\n[slack_users]\nU0ALICE = \"{}\"\n",
            my_os_key()
        ),
    );
    ws.write(
        "hooks.toml",
        "[server]\nworkers = 1\nqueue = 8\ndrain = \"1s\"\n\n[escalation]\nchannel = \"#oncall\"\n\n[[route]]\nname = \"gate\"\nalert = \"gated\"\nrunbook = \"gated@1.0.0\"\nenvironment = \"sim\"\n",
    );
    let api = slack.url("/api");
    let served = common::serve::Served::start(
        &ws,
        &[
            ("RUNBOOK_HOOK_SECRET", HOOK_KEY),
            ("RUNBOOK_SLACK_SIGNING_SECRET", SIGNING),
            ("SLACK_BOT_TOKEN", "xoxb-approvals-test"),
            ("SLACK_API_URL", api.as_str()),
            ("SLACK_CHANNEL", "#approvals"),
        ],
    );
    let alert = br#"{"alert": "gated", "labels": {"instance_id": "i-0a1b2c3d4e5f60001"}}"#;
    let ts = unix_now();
    let sig = runbook::front::hooks::generic::sign(HOOK_KEY.as_bytes(), ts, alert);
    let (status, answer) = served.post(
        "/hooks/generic",
        &[
            ("x-runbook-timestamp", ts.to_string().as_str()),
            ("x-runbook-signature", sig.as_str()),
            ("content-type", "application/json"),
        ],
        alert,
    );
    assert_eq!(status, 200, "{answer}");

    // The request, as Block Kit with the plan and two buttons.
    let deadline = Instant::now() + Duration::from_secs(30);
    let posted = loop {
        if let Some(c) = slack
            .captured()
            .into_iter()
            .find(|c| c.path == "/api/chat.postMessage")
        {
            break c;
        }
        assert!(Instant::now() < deadline, "no approval request was posted");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(posted.body["channel"], "#approvals");
    let blocks = posted.body["blocks"].to_string();
    assert!(
        blocks.contains("Terminate i-0a1b2c3d4e5f60001?"),
        "{blocks}"
    );
    assert!(blocks.contains("*Plan*"), "{blocks}");
    let buttons = &posted.body["blocks"][2]["elements"];
    assert_eq!(buttons[0]["action_id"], "approve");
    assert_eq!(buttons[1]["action_id"], "deny");
    let value = buttons[0]["value"].as_str().unwrap().to_string();

    let now = unix_now();
    let (forged, _, _, _) = click(&served, "not-the-secret", now, "U0BOB", "approve", &value);
    assert_eq!(forged, 401);
    let (old, _, _, _) = click(&served, SIGNING, now - 600, "U0BOB", "approve", &value);
    assert_eq!(old, 401);
    let (own, answer, body, headers) = click(&served, SIGNING, now, "U0ALICE", "approve", &value);
    assert_eq!(own, 200, "{answer}");
    let (replayed, answer) = post_raw(&served, &body, &headers);
    assert_eq!(replayed, 401, "{answer}");
    let (bob, answer, _, _) = click(&served, SIGNING, now, "U0BOB", "approve", &value);
    assert_eq!(bob, 200, "{answer}");
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains("slack T0TEAM/U0BOB"),
        "{answer}"
    );

    let runs = served.wait_finished(1, Duration::from_secs(30));
    assert_eq!(runs[0]["status"], "ok", "{}", runs[0]);
    let transcript = ws.path().join(runs[0]["transcript"].as_str().unwrap());
    let log = approval_log(&transcript);
    assert!(
        log.iter()
            .any(|m| m.contains("slack T0TEAM/U0ALICE") && m.contains("four-eyes")),
        "the requester's own click is refused and recorded: {log:?}"
    );
    assert!(
        log.iter()
            .any(|m| m.starts_with("approved by slack T0TEAM/U0BOB (u0bob)")),
        "{log:?}"
    );
    // The message now says who decided, and has no buttons left.
    let updated = slack
        .captured()
        .into_iter()
        .find(|c| c.path == "/api/chat.update")
        .expect("the request's message is updated");
    assert_eq!(updated.body["ts"], posted_ts(&slack));
    assert!(
        updated.body["text"]
            .as_str()
            .unwrap()
            .starts_with("Approved by slack T0TEAM/U0BOB"),
        "{}",
        updated.body
    );
    assert!(!updated.body["blocks"].to_string().contains("button"));
    // A stale copy of the button, clicked after the run stopped waiting, records nothing.
    let (late, answer, _, _) = click(&served, SIGNING, unix_now(), "U0CAROL", "approve", &value);
    assert_eq!(late, 200);
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .starts_with("no run in this server is waiting on request 1"),
        "{answer}"
    );
    // The three requests turned away are journaled as refused.
    let journal = walk(ws.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("journal"))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<String>();
    let refused: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains("\"request_refused\"") && l.contains("\"slack\""))
        .collect();
    assert_eq!(refused.len(), 3, "{journal}");
    for why in ["bad signature", "five-minute window", "replayed request"] {
        assert!(
            refused.iter().any(|l| l.contains(why)),
            "{why}: {refused:?}"
        );
    }
    assert!(!journal.contains(SIGNING));
}

fn posted_ts(slack: &common::http::Server) -> serde_json::Value {
    let posted = slack
        .captured()
        .into_iter()
        .position(|c| c.path == "/api/chat.postMessage")
        .unwrap();
    // The stand-in answers `1700000001.<n>` with n the captured count at that moment.
    serde_json::json!(format!("1700000001.{:06}", posted + 1))
}

#[test]
fn an_environment_s_approver_group_refuses_anyone_outside_it() {
    let ws = Workspace::new();
    ws.write(
        "runbook.toml",
        "default = \"guarded\"\n\n[approvers]\nleads = [\"arn:aws:iam::123456789012:user/carol\", \"U0CAROL\"]\n\n[environments.guarded]\nbackend = \"sim\"\napprovers = \"leads\"\n",
    );
    let child = gated_at_t(&ws, "timeout: \"60s\"");
    wait_for(&ws.path().join("t.approvals/1.request.json"));
    let outsider = ws
        .cmd()
        .args(&["approve", "t", "--transcript", "t.jsonl"])
        .output();
    outsider.expect_code(2);
    assert!(
        outsider
            .stderr
            .contains("is not in the approver group leads"),
        "{}",
        outsider.stderr
    );
    assert!(outsider.stdout.is_empty(), "nothing was approved");
    // Stopping is never refused: the requester's own denial ends the wait.
    ws.cmd()
        .args(&["approve", "t", "--transcript", "t.jsonl", "--deny"])
        .output()
        .expect_code(0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(step_error(&ws.path().join("t.jsonl")), "approval_denied");

    // A group the environment names must exist.
    ws.write(
        "runbook.toml",
        "[environments.guarded]\nbackend = \"sim\"\napprovers = \"nobody-defined-this\"\n",
    );
    let refused = ws.run(&["run", "gated", "--env", "guarded"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("names no group in [approvers]"),
        "{}",
        refused.stderr
    );
}

/// `serve` in `ws` running `gated` (its script given) on the sim, posting approval requests to
/// the Slack stand-in `slack`, with `runbook_toml` appended to the config and `hooks_auth` as
/// hooks.toml's `[auth]` lines; `env` on top of the hook key, the bot token and the channel.
fn serve_gated(
    ws: &Workspace,
    slack: &common::http::Server,
    body: &str,
    runbook_toml: &str,
    hooks_auth: &str,
    env: &[(&str, &str)],
) -> common::serve::Served {
    ws.write(
        "runbooks/gated.rhai",
        &format!(
            "{}eradication(\"Terminate\", |ctx| {{\n{body}\n}});\n",
            header("gated")
        ),
    );
    ws.write(
        "runbook.toml",
        &format!(
            "default = \"sim\"\n\n[environments.sim]\nbackend = \"sim\"\nnotifications = \"send\"\n\n[slack_users]\nU0ALICE = \"{}\"\n{runbook_toml}",
            my_os_key()
        ),
    );
    ws.write(
        "hooks.toml",
        &format!("[server]\nworkers = 1\nqueue = 8\ndrain = \"1s\"\n\n[auth]\n{hooks_auth}\n[escalation]\nchannel = \"#oncall\"\n\n[[route]]\nname = \"gate\"\nalert = \"gated\"\nrunbook = \"gated@1.0.0\"\nenvironment = \"sim\"\n"),
    );
    let api = slack.url("/api");
    let mut all: Vec<(&str, &str)> = vec![
        ("RUNBOOK_HOOK_SECRET", HOOK_KEY),
        ("SLACK_BOT_TOKEN", "xoxb-approvals-test"),
        ("SLACK_API_URL", api.as_str()),
        ("SLACK_CHANNEL", "#approvals"),
    ];
    all.extend_from_slice(env);
    let served = common::serve::Served::start(ws, &all);
    let alert = br#"{"alert": "gated", "labels": {"instance_id": "i-0a1b2c3d4e5f60001"}}"#;
    let ts = unix_now();
    let sig = runbook::front::hooks::generic::sign(HOOK_KEY.as_bytes(), ts, alert);
    let (status, answer) = served.post(
        "/hooks/generic",
        &[
            ("x-runbook-timestamp", ts.to_string().as_str()),
            ("x-runbook-signature", sig.as_str()),
            ("content-type", "application/json"),
        ],
        alert,
    );
    assert_eq!(status, 200, "{answer}");
    served
}

/// The `n`th (1-based) approval request posted to the Slack stand-in, once it is.
fn nth_request(slack: &common::http::Server, n: usize) -> common::http::Captured {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let posted: Vec<_> = slack
            .captured()
            .into_iter()
            .filter(|c| {
                c.path == "/api/chat.postMessage"
                    && c.body["blocks"].to_string().contains("approve")
            })
            .collect();
        if let Some(c) = posted.get(n - 1) {
            return c.clone();
        }
        assert!(
            Instant::now() < deadline,
            "approval request {n} was not posted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn approve_value(posted: &common::http::Captured) -> String {
    posted.body["blocks"][2]["elements"][0]["value"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_slack_user_group_admits_its_members_at_decision_time_and_an_unresolvable_one_admits_nobody() {
    let slack = common::http::Server::start();
    slack.slack_usergroup("S0LEADS", &["U0CAROL"]);
    let ws = Workspace::new();
    let served = serve_gated(
        &ws,
        &slack,
        "  approve(\"Terminate?\", #{ group: \"leads\", timeout: \"60s\" });\n  approve(\"Really?\", #{ group: \"ghosts\", timeout: \"60s\" });\n  notes::append(\"terminated\");",
        "\n[approvers]\nleads = [\"slack-group:S0LEADS\"]\nghosts = [\"slack-group:S0GONE\"]\n",
        "",
        &[("RUNBOOK_SLACK_SIGNING_SECRET", SIGNING)],
    );
    let posted = nth_request(&slack, 1);
    // No incident thread yet: the request goes to the configured channel, top-level.
    assert_eq!(posted.body["channel"], "#approvals");
    assert!(posted.body["thread_ts"].is_null(), "{}", posted.body);
    // Who may approve is said where they click.
    assert!(
        posted.body["blocks"]
            .to_string()
            .contains("from group leads"),
        "{}",
        posted.body
    );
    let first = approve_value(&posted);
    let now = unix_now();
    let (bob, answer, _, _) = click(&served, SIGNING, now, "U0BOB", "approve", &first);
    assert_eq!(bob, 200, "{answer}");
    let (carol, answer, _, _) = click(&served, SIGNING, now, "U0CAROL", "approve", &first);
    assert_eq!(carol, 200, "{answer}");

    // The second request's group cannot be resolved (Slack: no_such_subteam): carol's click is
    // refused; the requester's own denial still stops the run.
    let second = approve_value(&nth_request(&slack, 2));
    let (carol, answer, _, _) = click(&served, SIGNING, now, "U0CAROL", "approve", &second);
    assert_eq!(carol, 200, "{answer}");
    let (alice, answer, _, _) = click(&served, SIGNING, now, "U0ALICE", "deny", &second);
    assert_eq!(alice, 200, "{answer}");

    let runs = served.wait_finished(1, Duration::from_secs(30));
    assert_eq!(runs[0]["status"], "failed", "{}", runs[0]);
    let transcript = ws.path().join(runs[0]["transcript"].as_str().unwrap());
    let log = approval_log(&transcript);
    assert!(
        log.iter().any(|m| m.contains("slack T0TEAM/U0BOB (u0bob) is not in the approver group leads (nor a member of Slack user group S0LEADS")),
        "a non-member is refused, saying why: {log:?}"
    );
    assert!(
        log.iter()
            .any(|m| m.starts_with("approved by slack T0TEAM/U0CAROL (u0carol)")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|m| m.contains("cannot tell whether slack T0TEAM/U0CAROL (u0carol) is in the approver group ghosts: Slack user group S0GONE could not be resolved (usergroups.users.list: no_such_subteam)")),
        "a Slack failure refuses and is recorded: {log:?}"
    );
    assert_eq!(step_error(&transcript), "approval_denied");
    // Membership was asked of Slack, by group id, with the bot token.
    let asked: Vec<_> = slack
        .captured()
        .into_iter()
        .filter(|c| c.path == "/api/usergroups.users.list")
        .collect();
    assert!(
        asked.iter().any(|c| c.body["usergroup"] == "S0LEADS"),
        "{asked:?}"
    );
    assert!(
        asked.iter().any(|c| c.body["usergroup"] == "S0GONE"),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .all(|c| c.authorization.as_deref() == Some("Bearer xoxb-approvals-test"))
    );
}

#[test]
fn a_script_approval_in_an_unattended_run_carries_the_step_s_plan_and_binds_to_it() {
    use std::sync::atomic::Ordering;
    let server = common::http::Server::start();
    let ws = Workspace::new();
    ws.write(
        "runbooks/scripted.rhai",
        &format!(
            "runbook(#{{ id: \"scripted\", version: \"1.0.0\", title: \"Test scripted\", severity: \"P3\",\n  params: #{{ label: #{{ type: \"string\", required: true }} }} }});\neradication(\"Record\", |ctx| {{\n  let r = health::http(\"{}\");\n  approve(\"record it?\", #{{ timeout: \"60s\" }});\n  let again = health::http(\"{}\");\n  notes::append(`${{ctx.label}} ${{again.status}}`);\n}});\n",
            server.url("/health"),
            server.url("/health")
        ),
    );
    let child = ws
        .cmd()
        .args(&[
            "run",
            "scripted",
            "--param",
            "label=web-1",
            "--transcript",
            "t.jsonl",
        ])
        .spawn();
    let first = ws.path().join("t.approvals/1.request.json");
    wait_for(&first);
    let asked: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&first).unwrap()).unwrap();
    // What is approved: the step, its would-be write with its resolved arguments, the
    // parameters, and the plan's hash (not an empty plan).
    assert_eq!(asked["plan"][0]["binding"], "notes::append", "{asked}");
    assert_eq!(asked["plan"][0]["args"]["text"], "web-1 200", "{asked}");
    assert_eq!(asked["params"]["label"], "web-1", "{asked}");
    assert!(
        asked["step"].as_str().unwrap().contains("\"Record\""),
        "{asked}"
    );
    assert_eq!(asked["plan_hash"].as_str().unwrap().len(), 64, "{asked}");
    let shown = ws
        .cmd()
        .args(&["approve", "t", "--transcript", "t.jsonl", "--deny"])
        .output();
    // (a denial: shown first, like an approval)
    shown.expect_code(0);
    assert!(
        shown.stdout.contains("params     {\"label\":\"web-1\"}"),
        "{}",
        shown.stdout
    );
    assert!(
        shown
            .stdout
            .contains("notes::append({\"text\":\"web-1 200\"})"),
        "{}",
        shown.stdout
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));

    // Approved, and then the step's write changes: it is not sent (drift), the step asks again.
    let child = ws
        .cmd()
        .args(&[
            "run",
            "scripted",
            "--param",
            "label=web-1",
            "--transcript",
            "u.jsonl",
        ])
        .spawn();
    wait_for(&ws.path().join("u.approvals/1.request.json"));
    server.control.health_status.store(503, Ordering::SeqCst);
    ws.cmd()
        .args(&["approve", "u", "--transcript", "u.jsonl"])
        .output()
        .expect_code(0);
    let second = ws.path().join("u.approvals/2.request.json");
    wait_for(&second);
    let asked_again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&second).unwrap()).unwrap();
    assert_eq!(
        asked_again["plan"][0]["args"]["text"], "web-1 503",
        "{asked_again}"
    );
    ws.cmd()
        .args(&["approve", "u", "--transcript", "u.jsonl", "--deny"])
        .output()
        .expect_code(0);
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let ev = events(&ws.path().join("u.jsonl"));
    let drift = of_type(&ev, "guardrail");
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0]["rule"], "plan_drift");
    assert!(!ws.path().join("u.notes.md").exists() || !ws.read("u.notes.md").contains("web-1"));
}

#[test]
fn an_approval_request_is_posted_in_the_run_s_incident_thread_once_there_is_one() {
    let slack = common::http::Server::start();
    let ws = Workspace::new();
    let served = serve_gated(
        &ws,
        &slack,
        "  slack::incident_alert(#{ severity: \"P3\", service: \"web\", description: \"cpu high\" }, #{ channel: \"#incidents\" });\n  approve(\"Terminate?\", #{ timeout: \"60s\" });",
        "",
        "",
        &[("RUNBOOK_SLACK_SIGNING_SECRET", SIGNING)],
    );
    let request = nth_request(&slack, 1);
    let alert = slack
        .captured()
        .into_iter()
        .find(|c| c.path == "/api/chat.postMessage" && c.body["channel"] == "#incidents")
        .expect("the incident alert was posted");
    // The stand-in answers each post with ts `1700000001.<n>` in channel C0INCIDENTS.
    let alert_n = slack
        .captured()
        .iter()
        .position(|c| c.at == alert.at)
        .unwrap()
        + 1;
    assert_eq!(request.body["channel"], "C0INCIDENTS", "{}", request.body);
    assert_eq!(
        request.body["thread_ts"],
        format!("1700000001.{alert_n:06}"),
        "{}",
        request.body
    );
    let (bob, answer, _, _) = click(
        &served,
        SIGNING,
        unix_now(),
        "U0BOB",
        "approve",
        &approve_value(&request),
    );
    assert_eq!(bob, 200, "{answer}");
    let runs = served.wait_finished(1, Duration::from_secs(30));
    assert_eq!(runs[0]["status"], "ok", "{}", runs[0]);
}

#[test]
fn the_signing_secret_s_variable_is_configurable_and_serve_check_refuses_interactions_without_it() {
    let slack = common::http::Server::start();
    let ws = Workspace::new();
    let auth = "slack_signing_secret_env = \"ACME_SLACK_SIGNING\"\nslack_interactions = true\n";
    let served = serve_gated(
        &ws,
        &slack,
        "  approve(\"Terminate?\", #{ timeout: \"60s\" });",
        "",
        auth,
        &[("ACME_SLACK_SIGNING", SIGNING)],
    );
    // Without the variable hooks.toml names, the configuration is refused, naming it.
    let refused = ws
        .cmd()
        .args(&["serve", "--hooks", "hooks.toml", "--check"])
        .env("RUNBOOK_SLACK_SIGNING_SECRET", "not-the-one-named")
        .output();
    refused.expect_code(2);
    assert!(
        refused
            .stderr
            .contains("ACME_SLACK_SIGNING (slack_signing_secret_env) is not set"),
        "{}",
        refused.stderr
    );
    ws.cmd()
        .args(&["serve", "--hooks", "hooks.toml", "--check"])
        .env("ACME_SLACK_SIGNING", SIGNING)
        .output()
        .expect_code(0);

    // The server reads the secret from that variable: a click signed with it is believed.
    let value = approve_value(&nth_request(&slack, 1));
    let (bob, answer, _, _) = click(&served, SIGNING, unix_now(), "U0BOB", "approve", &value);
    assert_eq!(bob, 200, "{answer}");
    let runs = served.wait_finished(1, Duration::from_secs(30));
    assert_eq!(runs[0]["status"], "ok", "{}", runs[0]);
    let (forged, _, _, _) = click(
        &served,
        "not-the-secret",
        unix_now(),
        "U0BOB",
        "approve",
        &value,
    );
    assert_eq!(forged, 401);
    // Never logged, never journaled.
    let written: String = walk(ws.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl" || e == "log"))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert!(
        written.contains("bad signature"),
        "the forged click is journaled"
    );
    assert!(!written.contains(SIGNING));
}

#[test]
fn the_rollback_of_an_approved_step_that_failed_is_not_refused_as_drift() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/undo.rhai",
        &format!(
            "{}eradication(\"Change\", |ctx| {{ notes::append(\"changed\"); fail(\"boom\"); }},\n  #{{ confirm: true, on_failure: |ctx| {{ notes::append(\"rolled back\"); }} }});\n",
            header("undo")
        ),
    );
    let child = ws
        .cmd()
        .args(&[
            "run",
            "undo",
            "--approval-timeout",
            "60s",
            "--transcript",
            "t.jsonl",
        ])
        .spawn();
    wait_for(&ws.path().join("t.approvals/1.request.json"));
    ws.cmd()
        .args(&["approve", "t", "--transcript", "t.jsonl"])
        .output()
        .expect_code(0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The approved plan covers the step's body; its rollback undoes it, and is not asked again.
    let notes = ws.read("t.notes.md");
    assert!(
        notes.contains("changed") && notes.contains("rolled back"),
        "{notes}"
    );
    let ev = events(&ws.path().join("t.jsonl"));
    assert!(
        of_type(&ev, "guardrail").is_empty(),
        "{:?}",
        of_type(&ev, "guardrail")
    );
    assert!(!ws.path().join("t.approvals/2.request.json").exists());
}

/// A workspace whose runs keep their state in moto's DynamoDB and S3: approval requests are
/// then posted to Slack with buttons from a CLI run (a click reaches the run through the table).
fn threaded_workspace(moto: &common::moto::Moto) -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "runbook.toml",
        &format!(
            "default = \"sim\"\n\n[environments.sim]\nbackend = \"sim\"\nstate = \"sim-state.json\"\nnotifications = \"send\"\n\n[state]\nbackend = \"aws\"\ntable = \"runbook-state\"\nbucket = \"runbook-transcripts\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n",
            moto.endpoint()
        ),
    );
    common::moto::with_credentials(ws.cmd().args(&["state", "init"]))
        .output()
        .expect_code(0);
    ws
}

/// `args` with Slack's Web API at `slack` and moto's credentials.
fn with_slack(ws: &Workspace, slack: &common::http::Server, args: &[&str]) -> common::Cmd {
    common::moto::with_credentials(ws.cmd().args(args))
        .env("SLACK_BOT_TOKEN", "xoxb-approvals-test")
        .env("SLACK_API_URL", &slack.url("/api"))
        .env("SLACK_CHANNEL", "#approvals")
}

/// Runs `body` as one runbook, unattended, with the transcript at `t.jsonl`; `kill_after`:
/// die by SIGKILL after that many events.
fn threaded_run(
    ws: &Workspace,
    slack: &common::http::Server,
    body: &str,
    kill_after: Option<usize>,
) -> common::Run {
    ws.write(
        "runbooks/threaded.rhai",
        &format!("{}{body}", header("threaded")),
    );
    let args = [
        "run",
        "threaded",
        "--yes",
        "--no-interactive",
        "--transcript",
        "t.jsonl",
    ];
    let mut cmd = with_slack(ws, slack, &args);
    if let Some(n) = kill_after {
        cmd = cmd.env("RUNBOOK_TEST_KILL_AFTER_EVENTS", &n.to_string());
    }
    cmd.output()
}

/// Kills a run of `body` after the first event `cut` picks, resumes it, and returns what the
/// Slack stand-in received.
fn killed_and_resumed(
    body: &str,
    cut: impl Fn(&serde_json::Value) -> bool,
) -> Vec<common::http::Captured> {
    let moto = common::moto::Moto::start();
    // Where to cut: counted on an uninterrupted run of the same runbook.
    let reference = threaded_workspace(&moto);
    threaded_run(&reference, &common::http::Server::start(), body, None);
    let point = events(&reference.path().join("t.jsonl"))
        .iter()
        .position(cut)
        .expect("the reference run has the cut point")
        + 1;

    let ws = threaded_workspace(&moto);
    let slack = common::http::Server::start();
    let killed = threaded_run(&ws, &slack, body, Some(point));
    assert_eq!(
        killed.code, -1,
        "the run must die by the signal: {}",
        killed.stderr
    );
    let resumed = with_slack(
        &ws,
        &slack,
        &["resume", "t.jsonl", "--yes", "--no-interactive"],
    )
    .output();
    // Nobody answers: the approval times out and the step fails, which is not the point here.
    assert_ne!(resumed.code, 0, "{}", resumed.stderr);
    let ev = events(&ws.path().join("t.jsonl"));
    let last = of_type(&ev, "step_finished").into_iter().last().cloned();
    assert_eq!(
        last.map(|s| s["error"]["code"].clone()),
        Some(serde_json::json!("approval_timeout")),
        "the resumed run asked for approval and waited for it: {}",
        resumed.stderr
    );
    common::moto::with_credentials(ws.cmd().args(&["transcript", "verify", "t.jsonl"]))
        .output()
        .expect_code(0);
    slack.captured()
}
/// The incident alert (the first post to #incidents) and the approval request, with the ts
/// the stand-in gave the alert (`1700000001.<n>`, n counting every request it received).
fn alert_and_request(posted: &[common::http::Captured]) -> (String, serde_json::Value) {
    let alerts: Vec<usize> = posted
        .iter()
        .enumerate()
        .filter(|(_, c)| c.path == "/api/chat.postMessage" && c.body["channel"] == "#incidents")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        alerts.len(),
        1,
        "the incident alert went out once, not again on resume"
    );
    let request = posted
        .iter()
        .find(|c| {
            c.path == "/api/chat.postMessage" && c.body["blocks"].to_string().contains("approve")
        })
        .unwrap_or_else(|| {
            let seen: Vec<String> = posted
                .iter()
                .map(|c| format!("{} {}", c.path, c.body))
                .collect();
            panic!("the resumed run posted no approval request: {seen:#?}")
        });
    (
        format!("1700000001.{:06}", alerts[0] + 1),
        request.body.clone(),
    )
}

#[test]
fn a_run_resumed_after_the_step_that_opened_the_incident_thread_asks_for_approval_in_that_thread() {
    let body = concat!(
        "containment(\"Alert\", |ctx| { slack::incident_alert(#{ severity: \"P3\", service: \"web\", description: \"cpu high\" }, #{ channel: \"#incidents\" }); });\n",
        "eradication(\"Terminate\", |ctx| { approve(\"Terminate?\", #{ timeout: \"1s\" }); });\n",
    );
    let posted = killed_and_resumed(body, |e| e["type"] == "step_finished");
    let (thread, request) = alert_and_request(&posted);
    assert_eq!(request["channel"], "C0INCIDENTS", "{request}");
    assert_eq!(request["thread_ts"], thread, "{request}");
}

#[test]
fn a_run_resumed_inside_the_step_that_opened_the_incident_thread_asks_for_approval_in_that_thread()
{
    // Killed right after the alert's call was recorded: the resumed step gets the alert's
    // answer from the transcript (it is not sent again) and must still know the thread.
    let body = concat!(
        "containment(\"Alert and terminate\", |ctx| {\n",
        "  slack::incident_alert(#{ severity: \"P3\", service: \"web\", description: \"cpu high\" }, #{ channel: \"#incidents\" });\n",
        "  approve(\"Terminate?\", #{ timeout: \"1s\" });\n",
        "});\n",
    );
    let posted = killed_and_resumed(body, |e| {
        e["type"] == "call" && e["binding"] == "slack::post"
    });
    let (thread, request) = alert_and_request(&posted);
    assert_eq!(request["channel"], "C0INCIDENTS", "{request}");
    assert_eq!(request["thread_ts"], thread, "{request}");
}
