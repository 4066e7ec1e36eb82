//! `local::run`: a program the runbook declares and the environment allows, run without a shell,
//! bounded in time and output, redacted and recorded; shown as a would-call in plans unless
//! declared read-only; answered by the fleet's `local_commands` on the sim.

use crate::common;

use common::moto::with_credentials;
use common::{Workspace, events, of_type};
use serde_json::Value;

/// A workspace whose `box` environment is the aws backend pointed at a closed loopback port (no
/// AWS call is made by these runbooks) and allows `printf`, `yes`, `sleep` and `true`.
fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "runbook.toml",
        "[environments.box]\nbackend = \"aws\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:9\"\nmax_attempts = 1\ncommands = [\"printf\", \"yes\", \"sleep\", \"true\"]\n\n[environments.drill]\nbackend = \"sim\"\nfleet = \"fleet.toml\"\n",
    );
    ws
}

fn ctx_of(ws: &Workspace, transcript: &str) -> Value {
    let ev = events(&ws.path().join(transcript));
    of_type(&ev, "step_finished")[0]["ctx"].clone()
}

const BOX: &str = r#"runbook(#{ id: "box", version: "1.0.0", title: "Local programs", severity: "P3",
    commands: ["printf", "yes", "sleep", "sh"],
    params: #{ token: #{ type: "string", secret: true, required: true } } });
containment("Run local programs", |ctx| {
    let r = local::run("printf", ["%s|%s", "a b", "$HOME;ls *"]);
    ctx.out = r.stdout;
    ctx.ok = r.ok;
    ctx.secret_out = local::run("printf", ["token=%s", ctx.token], #{ read_only: true }).stdout;
    try { local::run("sh", ["-c", "true"]); ctx.sh = "ran"; } catch (e) { ctx.sh = e.code; }
    try { local::run("true", []); ctx.undeclared = "ran"; } catch (e) { ctx.undeclared = e.code; }
    let big = local::run("yes", [], #{ max_output: 1000, read_only: true });
    ctx.truncated = big.truncated;
    ctx.kept = big.stdout.len();
    try { local::run("sleep", ["30"], #{ timeout: "200ms" }); ctx.slept = "ran"; } catch (e) { ctx.slept = e.code; }
});
"#;

#[test]
fn a_local_program_runs_without_a_shell_only_when_declared_and_allowed() {
    let ws = workspace();
    ws.write("runbooks/box.rhai", BOX);
    let token = "tok-3f9a8c7d6e5b4a39";
    with_credentials(ws.cmd())
        .args(&[
            "run",
            "box",
            "--env",
            "box",
            "--param",
            &format!("token={token}"),
            "--transcript",
            "t.jsonl",
        ])
        .output()
        .expect_code(0);
    let ctx = ctx_of(&ws, "t.jsonl");
    assert_eq!(
        ctx["out"], "a b|$HOME;ls *",
        "no shell expanded anything: {ctx}"
    );
    assert_eq!(ctx["ok"], true);
    assert_eq!(
        ctx["sh"], "denied",
        "declared, but the environment does not allow it"
    );
    assert_eq!(
        ctx["undeclared"], "denied",
        "allowed, but the runbook does not declare it"
    );
    assert_eq!(ctx["truncated"], true, "{ctx}");
    assert_eq!(ctx["kept"], 1000);
    assert_eq!(ctx["slept"], "CommandTimedOut");
    assert!(
        !ctx["secret_out"].as_str().unwrap().contains(token),
        "the output is redacted: {ctx}"
    );
    let raw = ws.read("t.jsonl");
    assert!(
        !raw.contains(token),
        "the secret never reaches the transcript"
    );
    let ev = events(&ws.path().join("t.jsonl"));
    let calls: Vec<&Value> = of_type(&ev, "call")
        .into_iter()
        .filter(|c| c["binding"] == "local::run")
        .collect();
    assert_eq!(calls[0]["mutating"], true);
    assert_eq!(calls[0]["args"]["program"], "printf");
    assert_eq!(calls[0]["args"]["args"][1], "a b");
}

#[test]
fn a_plan_shows_a_local_program_as_a_would_call_and_runs_the_read_only_one() {
    let ws = workspace();
    ws.write(
        "runbooks/plan.rhai",
        r#"runbook(#{ id: "plan", version: "1.0.0", title: "Plan", severity: "P3", commands: ["printf"] });
containment("Look, then act", |ctx| {
    ctx.seen = local::run("printf", ["seen"], #{ read_only: true }).stdout;
    ctx.acted = local::run("printf", ["acted"]);
});
"#,
    );
    let plan = with_credentials(ws.cmd())
        .args(&["plan", "plan", "--env", "box", "--transcript", "p.jsonl"])
        .output();
    plan.expect_code(0);
    assert!(plan.stdout.contains("local::run"), "{}", plan.stdout);
    let ctx = ctx_of(&ws, "p.jsonl");
    assert_eq!(ctx["seen"], "seen", "the read-only call ran: {ctx}");
    assert_eq!(
        ctx["acted"]["planned"], true,
        "the write was only planned: {ctx}"
    );
    let ev = events(&ws.path().join("p.jsonl"));
    let calls: Vec<&Value> = of_type(&ev, "call");
    assert_eq!(calls[0]["planned"], false);
    assert_eq!(calls[0]["read_only"], "declared by the runbook");
    assert_eq!(calls[1]["planned"], true);
}

#[test]
fn on_the_sim_a_local_program_is_answered_by_the_fleet_and_starts_nothing() {
    let ws = workspace();
    ws.write(
        "fleet.toml",
        "[[local_commands]]\nprogram = \"kubectl\"\nmatch = \"rollout restart\"\nstdout = [\"deployment.apps/api restarted\"]\n",
    );
    ws.write(
        "runbooks/kube.rhai",
        r#"runbook(#{ id: "kube", version: "1.0.0", title: "Kube", severity: "P3", commands: ["kubectl"] });
containment("Restart the deployment", |ctx| {
    ctx.out = local::run("kubectl", ["rollout", "restart", "deploy/api"]).stdout;
    ctx.unknown = local::run("kubectl", ["get", "pods"], #{ read_only: true }).exit_code;
});
"#,
    );
    ws.run(&[
        "run",
        "kube",
        "--env",
        "drill",
        "--transcript",
        "k.jsonl",
        "--sim-state-out",
        "state.json",
    ])
    .expect_code(0);
    let ctx = ctx_of(&ws, "k.jsonl");
    assert_eq!(ctx["out"], "deployment.apps/api restarted");
    assert_eq!(
        ctx["unknown"], 127,
        "no rule answers like a missing program"
    );
    let state: Value = serde_json::from_str(&ws.read("state.json")).unwrap();
    let mutations: Vec<&str> = state["mutations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(mutations, ["Local kubectl rollout restart deploy/api"]);
}
