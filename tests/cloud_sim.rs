//! The EC2/SSM bindings and the repository's runbooks against the simulated cloud.

use crate::common;

use common::{Workspace, events, of_type};
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const BLUE_1: &str = "i-0a1b2c3d4e5f60001";
const WORKER: &str = "i-0a1b2c3d4e5f60005";

fn runbooks() -> String {
    format!("{REPO}/runbooks")
}

/// A workspace whose runbook.toml defines a sim environment `drill` on the default fleet plus
/// `extra` appended to it (faults, more instances).
fn with_fleet(extra: &str) -> Workspace {
    let ws = Workspace::new();
    let fleet = std::fs::read_to_string(format!("{REPO}/sim/default-fleet.toml")).unwrap();
    ws.write("fleet.toml", &format!("{fleet}\n{extra}"));
    ws.write(
        "runbook.toml",
        "[environments.drill]\nbackend = \"sim\"\nfleet = \"fleet.toml\"\n\n[environments.prod-sim]\nbackend = \"sim\"\nprotected = true\n",
    );
    ws
}

fn state(ws: &Workspace, file: &str) -> Value {
    serde_json::from_str(&ws.read(file)).unwrap()
}

fn instance<'a>(state: &'a Value, id: &str) -> &'a Value {
    state["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in state"))
}

/// The mutating calls a transcript sent, by binding name, in order.
fn writes(ev: &[Value]) -> Vec<String> {
    of_type(ev, "call")
        .iter()
        .filter(|c| c["mutating"] == true && c["planned"] == false)
        .map(|c| c["binding"].as_str().unwrap().to_string())
        .collect()
}

fn compromised(ws: &Workspace, env: &str, extra: &[&str]) -> common::Run {
    let runbooks = runbooks();
    let mut args = vec![
        "run",
        "ec2-compromised-instance",
        "--runbooks",
        runbooks.as_str(),
        "--env",
        env,
        "--param",
        "incident=2026-1123-002",
        "--transcript",
        "t.jsonl",
        "--sim-state-out",
        "state.json",
    ];
    args.extend_from_slice(extra);
    ws.run(&args)
}

#[test]
fn the_compromised_instance_runbook_contains_eradicates_and_recovers_on_the_sim() {
    let ws = with_fleet("");
    compromised(
        &ws,
        "drill",
        &["--param", &format!("instance_id={BLUE_1}"), "--yes"],
    )
    .expect_code(0);
    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(ev[0]["environment"], "drill");
    assert_eq!(ev[0]["backend"], "sim");
    assert_eq!(ev[0]["account"], "123456789012");
    assert_eq!(
        writes(&ev),
        vec![
            "ec2::isolate",
            "ec2::snapshot_volumes",
            "ec2::tag",
            "ec2::stop",
            "ec2::create_image",
            "ec2::terminate",
            "ec2::launch",
            "notes::append"
        ]
    );
    // Every cloud call carries the request ids of the API calls behind it.
    assert!(
        of_type(&ev, "call")
            .iter()
            .filter(|c| c["binding"].as_str().unwrap().starts_with("ec2::"))
            .all(|c| c["request_ids"]
                .as_array()
                .is_some_and(|ids| !ids.is_empty()))
    );

    let s = state(&ws, "state.json");
    let old = instance(&s, BLUE_1);
    assert_eq!(old["state"], "terminated");
    let quarantine = s["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "runbook-quarantine")
        .unwrap();
    assert_eq!(
        quarantine["egress_open"], false,
        "the quarantine group must allow no egress"
    );
    assert_eq!(
        old["network_interfaces"][0]["groups"],
        serde_json::json!([quarantine["id"]])
    );
    assert_eq!(old["tags"]["Compromised"], "true");
    let snaps = s["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "one snapshot per attached volume");
    assert!(
        snaps
            .iter()
            .all(|x| x["tags"]["Incident"] == "2026-1123-002")
    );
    assert_eq!(s["images"][0]["source"], BLUE_1);
    let replacement = s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["tags"]["ReplacementFor"] == BLUE_1)
        .unwrap();
    assert_eq!(replacement["state"], "running");
    assert_eq!(replacement["tags"]["Name"], "api-blue-1");
    assert_eq!(
        replacement["security_groups"],
        serde_json::json!(["sg-0a1b2c3d4e5f60002"]),
        "the original groups, not the quarantine"
    );
    ws.run(&["transcript", "verify", "t.jsonl"]).expect_code(0);
}

#[test]
fn without_confirmation_the_run_stops_before_terminating() {
    let ws = with_fleet("");
    compromised(&ws, "drill", &["--param", &format!("instance_id={BLUE_1}")]).expect_code(3);
    let s = state(&ws, "state.json");
    assert_eq!(instance(&s, BLUE_1)["state"], "stopped");
    assert!(s["images"].as_array().unwrap().len() == 1);
    let ev = events(&ws.path().join("t.jsonl"));
    assert!(!writes(&ev).contains(&"ec2::terminate".to_string()));
}

#[test]
fn a_containment_failure_restores_the_previous_groups() {
    let ws = with_fleet(&format!(
        "[[faults.errors]]\noperation = \"CreateSnapshot\"\ninstance = \"{BLUE_1}\"\ncode = \"SnapshotCreationPerVolumeRateExceeded\"\n"
    ));
    compromised(
        &ws,
        "drill",
        &["--param", &format!("instance_id={BLUE_1}"), "--yes"],
    )
    .expect_code(1);
    let ev = events(&ws.path().join("t.jsonl"));
    let failed = of_type(&ev, "step_finished");
    assert_eq!(failed.last().unwrap()["status"], "failed");
    assert_eq!(
        failed.last().unwrap()["error"]["code"],
        "SnapshotCreationPerVolumeRateExceeded"
    );
    assert_eq!(
        of_type(&ev, "retry").len(),
        1,
        "the snapshot step retries once"
    );
    assert_eq!(of_type(&ev, "on_failure_finished")[0]["status"], "ok");
    assert!(writes(&ev).contains(&"ec2::restore".to_string()));
    let s = state(&ws, "state.json");
    let i = instance(&s, BLUE_1);
    assert_eq!(
        i["network_interfaces"][0]["groups"],
        serde_json::json!(["sg-0a1b2c3d4e5f60002"])
    );
    assert_eq!(i["state"], "running", "nothing past containment ran");
}

#[test]
fn api_errors_are_catchable_by_code_and_throttling_is_retried() {
    let ws = with_fleet("[faults]\nthrottle_calls = [1]\n");
    ws.write(
        "runbooks/probe.rhai",
        r#"runbook(#{ id: "probe", version: "1.0.0", title: "t", severity: "P3" });
containment("Probe", |ctx| {
    ctx.found = ec2::find(#{ tags: #{ Color: "blue" }, states: ["running"] }).len();
    try { ec2::describe("i-00000000deadbeef"); } catch (e) { ctx.code = e.code; ctx.message = e.message; }
});
"#,
    );
    ws.run(&["run", "probe", "--env", "drill", "--transcript", "t.jsonl"])
        .expect_code(0);
    let ev = events(&ws.path().join("t.jsonl"));
    let ctx = &of_type(&ev, "step_finished")[0]["ctx"];
    assert_eq!(ctx["found"], 2, "the throttled first call was retried");
    assert_eq!(ctx["code"], "InvalidInstanceID.NotFound");
    let failed_call = of_type(&ev, "call")
        .into_iter()
        .find(|c| c["binding"] == "ec2::describe")
        .unwrap();
    assert_eq!(failed_call["error"]["code"], "InvalidInstanceID.NotFound");
}

#[test]
fn the_high_cpu_runbook_restarts_the_service_and_verifies_recovery() {
    let ws = with_fleet("");
    let runbooks = runbooks();
    let id = format!("instance_id={WORKER}");
    ws.run(&[
        "run",
        "ec2-high-cpu",
        "--runbooks",
        &runbooks,
        "--env",
        "drill",
        "--param",
        &id,
        "--transcript",
        "t.jsonl",
    ])
    .expect_code(0);
    let ev = events(&ws.path().join("t.jsonl"));
    let ctx = &of_type(&ev, "step_finished")[2]["ctx"];
    assert!(ctx["cpu_before"].as_f64().unwrap() > 85.0, "{ctx}");
    assert!(ctx["cpu_after"].as_f64().unwrap() < 85.0, "{ctx}");
    assert_eq!(ctx["remedy"], "restart");
    assert_eq!(
        writes(&ev),
        vec![
            "ssm::run_command",
            "notes::append",
            "ssm::run_command",
            "ssm::run_command",
            "notes::append"
        ]
    );

    // A restart that fails everywhere: without allow_reboot the run fails; with it, the instance reboots.
    let ws = with_fleet(
        "[faults.command_failure]\nshare = 1.0\nstderr = \"Job for ec2-manager-worker.service failed\"\n",
    );
    ws.run(&[
        "run",
        "ec2-high-cpu",
        "--runbooks",
        &runbooks,
        "--env",
        "drill",
        "--param",
        &id,
        "--transcript",
        "t.jsonl",
    ])
    .expect_code(1);
    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(
        of_type(&ev, "step_finished")[0]["status"],
        "failed",
        "diagnostics fail too"
    );
}

#[test]
fn run_command_fans_out_and_reports_each_instance() {
    let mut extra = String::from("[faults.command_failure]\nshare = 0.3\nstderr = \"disk full\"\n");
    for n in 0..10 {
        extra.push_str(&format!(
            "[[instances]]\nid = \"i-0fee0000000000{n:03}\"\nvpc = \"vpc-0a1b2c3d4e5f60001\"\nsubnet = \"subnet-0a1b2c3d4e5f60001\"\ntags = {{ Service = \"batch\" }}\n"
        ));
    }
    let ws = with_fleet(&extra);
    ws.write(
        "runbooks/fanout.rhai",
        r#"runbook(#{ id: "fanout", version: "1.0.0", title: "t", severity: "P3" });
containment("Run everywhere", |ctx| {
    let r = ssm::run_command(#{ tags: #{ Service: "batch" }, commands: ["df -h"], max_concurrency: 4, poll: "10ms" });
    ctx.ok = r.ok; ctx.failed = r.failed; ctx.succeeded = r.succeeded; ctx.n = r.results.len();
    ctx.first_error = r.results.filter(|x| x.status == "Failed")[0].stderr;
});
"#,
    );
    ws.run(&["run", "fanout", "--env", "drill", "--transcript", "t.jsonl"])
        .expect_code(0);
    let ev = events(&ws.path().join("t.jsonl"));
    let ctx = &of_type(&ev, "step_finished")[0]["ctx"];
    assert_eq!(ctx["n"], 10);
    assert_eq!(ctx["failed"], 3);
    assert_eq!(ctx["succeeded"], 7);
    assert_eq!(ctx["ok"], false);
    assert_eq!(ctx["first_error"], "disk full");
}

#[test]
fn a_plan_changes_nothing_in_the_cloud() {
    let ws = with_fleet("");
    let runbooks = runbooks();
    let id = format!("instance_id={BLUE_1}");
    let plan = ws.run(&[
        "plan",
        "ec2-compromised-instance",
        "--runbooks",
        &runbooks,
        "--env",
        "drill",
        "--param",
        &id,
        "--param",
        "incident=2026-1123-002",
        "--transcript",
        "p.jsonl",
        "--sim-state-out",
        "state.json",
    ]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains(
            r#"ec2::isolate({"id":"i-0a1b2c3d4e5f60001","group_name":"runbook-quarantine"})"#
        ),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("ec2::terminate"), "{}", plan.stdout);
    let s = state(&ws, "state.json");
    assert_eq!(
        s["mutations"],
        serde_json::json!([]),
        "a plan sends no mutating API call"
    );
    assert_eq!(instance(&s, BLUE_1)["state"], "running");
    let ev = events(&ws.path().join("p.jsonl"));
    assert!(
        of_type(&ev, "call")
            .iter()
            .any(|c| c["binding"] == "ec2::describe" && c["planned"] == false),
        "reads run for real"
    );
}

#[test]
fn a_protected_environment_needs_its_name_confirmed() {
    let ws = with_fleet("");
    let refused = compromised(
        &ws,
        "prod-sim",
        &["--param", &format!("instance_id={BLUE_1}"), "--yes"],
    );
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("--confirm-env prod-sim"),
        "{}",
        refused.stderr
    );
    assert!(!ws.exists("t.jsonl"));
    compromised(
        &ws,
        "prod-sim",
        &[
            "--param",
            &format!("instance_id={BLUE_1}"),
            "--yes",
            "--confirm-env",
            "drill",
        ],
    )
    .expect_code(2);
    compromised(
        &ws,
        "prod-sim",
        &[
            "--param",
            &format!("instance_id={BLUE_1}"),
            "--yes",
            "--confirm-env",
            "prod-sim",
        ],
    )
    .expect_code(0);
}

#[test]
fn an_instance_stuck_stopping_ends_in_a_waiter_timeout() {
    let ws = with_fleet(&format!("[faults]\nstuck_stopping = [\"{BLUE_1}\"]\n"));
    ws.write(
        "runbooks/stop.rhai",
        &format!(
            "runbook(#{{ id: \"stop\", version: \"1.0.0\", title: \"t\", severity: \"P3\" }});\neradication(\"Stop\", |ctx| {{ ec2::stop(\"{BLUE_1}\", #{{ timeout: \"200ms\", every: \"50ms\" }}); }});\n"
        ),
    );
    let run = ws.run(&["run", "stop", "--env", "drill", "--transcript", "t.jsonl"]);
    run.expect_code(1);
    let ev = events(&ws.path().join("t.jsonl"));
    let end = &of_type(&ev, "step_finished")[0];
    assert_eq!(end["error"]["code"], "WaiterTimeout");
    assert!(
        end["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is stopping"),
        "{end}"
    );
}

#[test]
fn parameters_read_from_ssm_are_secrets() {
    let ws = with_fleet(
        "[[parameters]]\nname = \"/ec2-manager/production/api-token\"\nvalue = \"tok-9f8e7d6c5b4a\"\ntype = \"SecureString\"\n",
    );
    ws.write(
        "runbooks/param.rhai",
        r#"runbook(#{ id: "param", version: "1.0.0", title: "t", severity: "P3" });
containment("Read", |ctx| {
    ctx.token = ssm::get_parameter("/ec2-manager/production/api-token");
    log(`using ${ctx.token}`);
    ctx.version = ssm::put_parameter("/ec2-manager/production/rotated", "new-" + ctx.token, #{ type: "SecureString" });
});
"#,
    );
    let run = ws.run(&[
        "run",
        "param",
        "--env",
        "drill",
        "--transcript",
        "t.jsonl",
        "--sim-state-out",
        "state.json",
    ]);
    run.expect_code(0);
    assert!(!ws.read("t.jsonl").contains("tok-9f8e7d6c5b4a"));
    assert!(!run.stderr.contains("tok-9f8e7d6c5b4a"));
    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(of_type(&ev, "step_finished")[0]["ctx"]["version"], 1);
}

#[test]
fn the_blast_radius_cap_stops_a_run_mid_way_and_keeps_earlier_writes() {
    let ws = with_fleet("");
    ws.write(
        "runbooks/wide.rhai",
        r#"runbook(#{ id: "wide", version: "1.0.0", title: "t", severity: "P3" });
containment("Tag one", |ctx| { ec2::tag("i-0a1b2c3d4e5f60001", #{ Checked: "yes" }); });
containment("Tag it again", |ctx| { ec2::tag("i-0a1b2c3d4e5f60001", #{ Checked: "twice" }); });
eradication("Tag two more", |ctx| { ec2::tag(["i-0a1b2c3d4e5f60002", "i-0a1b2c3d4e5f60003"], #{ Checked: "yes" }); });
"#,
    );
    let run = ws.run(&[
        "run",
        "wide",
        "--env",
        "drill",
        "--max-resources",
        "2",
        "--transcript",
        "t.jsonl",
        "--sim-state-out",
        "state.json",
    ]);
    run.expect_code(1);
    assert!(run.stderr.contains("at most 2"), "{}", run.stderr);
    let ev = events(&ws.path().join("t.jsonl"));
    let statuses: Vec<&str> = of_type(&ev, "step_finished")
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        vec!["ok", "ok", "failed"],
        "re-touching a resource is not a new one"
    );
    let guard = of_type(&ev, "guardrail");
    assert_eq!(guard.len(), 1);
    assert_eq!(guard[0]["rule"], "blast_radius");
    let s = state(&ws, "state.json");
    assert_eq!(
        s["mutations"].as_array().unwrap().len(),
        2,
        "the two earlier writes happened, the third did not"
    );
    assert!(
        instance(&s, "i-0a1b2c3d4e5f60002")["tags"]
            .get("Checked")
            .is_none()
    );
}

#[test]
fn the_kill_switch_refuses_every_write_while_it_is_set() {
    let ws = with_fleet("");
    let switch = ws.write("STOP", "incident commander says stop\n");
    let runbooks = runbooks();
    let id = format!("instance_id={BLUE_1}");
    let run = ws.run(&[
        "run",
        "ec2-compromised-instance",
        "--runbooks",
        &runbooks,
        "--env",
        "drill",
        "--yes",
        "--param",
        &id,
        "--param",
        "incident=2026-1123-014",
        "--kill-switch",
        switch.to_str().unwrap(),
        "--transcript",
        "t.jsonl",
        "--sim-state-out",
        "state.json",
    ]);
    run.expect_code(1);
    let ev = events(&ws.path().join("t.jsonl"));
    assert!(
        of_type(&ev, "intent").is_empty(),
        "nothing was about to be sent"
    );
    assert!(
        of_type(&ev, "guardrail")
            .iter()
            .all(|g| g["rule"] == "kill_switch")
    );
    assert_eq!(state(&ws, "state.json")["mutations"], serde_json::json!([]));
}
