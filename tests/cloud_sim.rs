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
            "notes::append"
        ],
        "diagnostics, notes, restart, notes: recovery is read from CloudWatch"
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

// ---- durations, plans, simulated time and guardrail counting (issues 11 and 12) ----

/// Runs `body` as the one step of a fresh runbook on the sim; returns the run and its events.
fn one_step(ws: &Workspace, id: &str, body: &str, options: &str, extra: &[&str]) -> common::Run {
    ws.write(
        &format!("runbooks/{id}.rhai"),
        &format!(
            "runbook(#{{ id: \"{id}\", version: \"1.0.0\", title: \"t\", severity: \"P3\" }});\ncontainment(\"Only step\", |ctx| {{\n{body}\n}}{options});\n"
        ),
    );
    let transcript = format!("{id}.jsonl");
    let mut args = vec![
        "run",
        id,
        "--env",
        "drill",
        "--transcript",
        transcript.as_str(),
    ];
    args.extend_from_slice(extra);
    ws.run(&args)
}

#[test]
fn an_overflowing_sleep_wait_or_timeout_is_a_clear_error_not_a_panic() {
    let ws = with_fleet("");
    for (id, body) in [
        ("huge-sleep", r#"sleep("18446744073709551615s");"#),
        (
            "huge-wait",
            r#"wait_until(|| false, #{ timeout: "18446744073709551615s", every: "1s" });"#,
        ),
        (
            "huge-every",
            r#"wait_until(|| false, #{ timeout: "1s", every: "300000000000y" });"#,
        ),
        (
            "huge-waiter",
            r#"ec2::wait_state("i-0a1b2c3d4e5f60001", "stopped", #{ timeout: "18446744073709551615s" });"#,
        ),
    ] {
        let run = one_step(&ws, id, body, "", &[]);
        assert_ne!(run.code, 101, "{id} panicked: {}", run.stderr);
        assert_eq!(run.code, 1, "{id}: {}", run.stderr);
        assert!(
            run.stderr.contains("maximum duration") || run.stderr.contains("not a duration"),
            "{id}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{id}: {}", run.stderr);
    }

    // A step timeout out of range is refused by `check` (and so before any run), at its line.
    ws.write(
        "runbooks/huge-timeout.rhai",
        "runbook(#{ id: \"huge-timeout\", version: \"1.0.0\", title: \"t\", severity: \"P3\" });\ncontainment(\"Only step\", |ctx| { log(\"x\"); },\n    #{ timeout: \"300000000000y\" });\n",
    );
    for cmd in ["check", "run"] {
        let run = ws.run(&[cmd, "runbooks/huge-timeout.rhai"]);
        assert_ne!(run.code, 101, "{cmd} panicked: {}", run.stderr);
        assert_eq!(run.code, 2, "{cmd}: {}", run.stderr);
        assert!(run.stderr.contains("timeout"), "{cmd}: {}", run.stderr);
        assert!(
            run.stderr.contains("huge-timeout.rhai:3"),
            "{cmd}: {}",
            run.stderr
        );
    }
    ws.write(
        "runbooks/long-timeout.rhai",
        "runbook(#{ id: \"long-timeout\", version: \"1.0.0\", title: \"t\", severity: \"P3\" });\ncontainment(\"Only step\", |ctx| { log(\"x\"); }, #{ timeout: \"18446744073709551615s\" });\n",
    );
    let run = ws.run(&["check", "runbooks/long-timeout.rhai"]);
    run.expect_code(2);
    assert!(run.stderr.contains("maximum duration"), "{}", run.stderr);
}

#[test]
fn a_plan_of_every_repository_runbook_succeeds_on_a_simulated_clock() {
    let ws = with_fleet("");
    let runbooks = runbooks();
    let cases: [(&str, &[&str]); 7] = [
        (
            "ec2-compromised-instance",
            &["instance_id=i-0a1b2c3d4e5f60001", "incident=2026-1130-001"],
        ),
        ("ec2-high-cpu", &["instance_id=i-0a1b2c3d4e5f60005"]),
        ("ec2-memory-high", &["instance_id=i-0a1b2c3d4e5f60005"]),
        ("ec2-high-cpu-scale-out", &[]),
        ("api-high-latency", &["incident=2026-1130-001"]),
        ("api-server-errors", &["incident=2026-1130-001"]),
        ("incident-record", &["incident=2026-1130-001"]),
    ];
    for (id, params) in cases {
        let transcript = format!("{id}.jsonl");
        let mut args = vec![
            "plan",
            id,
            "--runbooks",
            runbooks.as_str(),
            "--env",
            "drill",
            "--transcript",
            &transcript,
            "--sim-state-out",
            "state.json",
        ];
        for p in params {
            args.extend(["--param", p]);
        }
        let plan = ws.run(&args);
        plan.expect_code(0);
        assert!(
            plan.stdout
                .trim_end()
                .lines()
                .last()
                .is_some_and(|l| { l.starts_with("plan: ") && l.contains("would-be write") }),
            "{id}: {}",
            plan.stdout
        );
        assert!(!plan.stderr.contains("run ok"), "{id}: {}", plan.stderr);
        let ev = events(&ws.path().join(&transcript));
        assert_eq!(ev[0]["clock"], "simulated", "{id}");
        assert_eq!(
            of_type(&ev, "step_finished")
                .iter()
                .filter(|s| s["status"] != "ok" && s["status"] != "skipped")
                .count(),
            0,
            "{id}: {}",
            plan.stderr
        );
        // Declared read-only diagnostics really run in a plan; nothing else is sent.
        let s = state(&ws, "state.json");
        let sent: Vec<&str> = s["mutations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        assert!(
            sent.iter().all(|m| m.starts_with("SendCommand")),
            "{id}: a plan sends no write: {sent:?}"
        );
    }
}

#[test]
fn a_runbook_indexing_command_results_plans_cleanly_with_one_result_per_target() {
    let ws = with_fleet("");
    ws.write(
        "runbooks/uptime.rhai",
        r#"runbook(#{ id: "uptime", version: "1.0.0", title: "t", severity: "P3" });
containment("Restart everywhere", |ctx| {
    let r = ssm::shell(#{ Environment: "production" }, ["systemctl restart app"]);
    ctx.first = r.results[0].instance;
    ctx.out = r.results[0].stdout;
    ctx.n = r.results.len();
    ctx.ok = r.ok;
    let one = ssm::shell("i-0a1b2c3d4e5f60005", ["systemctl restart app"]);
    ctx.one = one.results[0].instance;
});
"#,
    );
    let plan = ws.run(&[
        "plan",
        "uptime",
        "--env",
        "drill",
        "--transcript",
        "p.jsonl",
    ]);
    plan.expect_code(0);
    let ev = events(&ws.path().join("p.jsonl"));
    let ctx = &of_type(&ev, "step_finished")[0]["ctx"];
    assert_eq!(ctx["n"], 6, "{ctx}");
    assert_eq!(ctx["first"], "i-0a1b2c3d4e5f60001", "{ctx}");
    assert_eq!(ctx["out"], "");
    assert_eq!(ctx["ok"], true);
    assert_eq!(ctx["one"], "i-0a1b2c3d4e5f60005");
    assert!(
        plan.stdout.contains("plan: 2 would-be writes"),
        "{}",
        plan.stdout
    );
}

#[test]
fn a_plan_does_not_sleep_and_lists_a_retried_write_once() {
    let ws = with_fleet("");
    ws.write(
        "runbooks/slow.rhai",
        r#"runbook(#{ id: "slow", version: "1.0.0", title: "t", severity: "P3" });
containment("Wait a long time, then fail", |ctx| {
    notes::append("about to wait");
    sleep("2h");
    wait_until(|| false, #{ timeout: "3h", every: "10m" });
}, #{ timeout: "366days", retries: 2, backoff: "1m" });
"#,
    );
    let plan = ws.run(&["plan", "slow", "--env", "drill", "--transcript", "p.jsonl"]);
    plan.expect_code(1);
    assert!(
        plan.stdout.trim_end().ends_with("plan: 1 would-be write"),
        "{}",
        plan.stdout
    );
    assert!(plan.stderr.contains("plan failed:"), "{}", plan.stderr);
    assert!(!plan.stderr.contains("run ok"), "{}", plan.stderr);
    let ev = events(&ws.path().join("p.jsonl"));
    assert_eq!(ev[0]["clock"], "simulated");
    let retries = of_type(&ev, "retry");
    assert_eq!(retries.len(), 2);
    assert_eq!(
        retries[1]["delay_ms"], 120_000,
        "backoff doubles, simulated"
    );
    // Three attempts of 2 h of sleep and 2 h 50 min of polling, and 3 min of backoff.
    let took = ev.last().unwrap()["duration_ms"].as_u64().unwrap();
    assert!(took >= 14 * 3_600_000, "{took}");
}

#[test]
fn a_declared_read_only_diagnostic_runs_in_a_plan_and_is_recorded_as_declared() {
    let ws = with_fleet("");
    ws.write(
        "runbooks/diag.rhai",
        r#"runbook(#{ id: "diag", version: "1.0.0", title: "t", severity: "P3" });
containment("Look", |ctx| {
    let r = ssm::shell("i-0a1b2c3d4e5f60005", ["top -b -n 1"], #{ read_only: true });
    ctx.top = r.results[0].stdout;
});
"#,
    );
    let plan = ws.run(&[
        "plan",
        "diag",
        "--env",
        "drill",
        "--transcript",
        "p.jsonl",
        "--sim-state-out",
        "state.json",
    ]);
    plan.expect_code(0);
    assert!(
        plan.stdout.contains("plan: 0 would-be writes"),
        "{}",
        plan.stdout
    );
    let ev = events(&ws.path().join("p.jsonl"));
    let ctx = &of_type(&ev, "step_finished")[0]["ctx"];
    assert!(ctx["top"].as_str().unwrap().contains("%Cpu(s)"), "{ctx}");
    let call = of_type(&ev, "call")[0];
    assert_eq!(call["read_only"], "declared by the runbook");
    assert_eq!(call["planned"], false);
    assert_eq!(call["mutating"], false);
    assert_eq!(
        state(&ws, "state.json")["mutations"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "the diagnostic really ran"
    );

    // In a run it is still treated as a write: intent first, and the kill switch holds it.
    let switch = ws.write("STOP", "stop\n");
    let run = ws.run(&[
        "run",
        "diag",
        "--env",
        "drill",
        "--transcript",
        "r.jsonl",
        "--kill-switch",
        switch.to_str().unwrap(),
    ]);
    run.expect_code(1);
    assert_eq!(
        of_type(&events(&ws.path().join("r.jsonl")), "guardrail")[0]["rule"],
        "kill_switch"
    );
}

#[test]
fn a_guardrail_refusal_is_not_retried_with_backoff() {
    let ws = with_fleet("");
    let run = one_step(
        &ws,
        "refused",
        r#"ec2::tag(["i-0a1b2c3d4e5f60001", "i-0a1b2c3d4e5f60002"], #{ Checked: "yes" });"#,
        r#", #{ retries: 3, backoff: "1h" }"#,
        &["--max-resources", "1"],
    );
    run.expect_code(1);
    let ev = events(&ws.path().join("refused.jsonl"));
    assert_eq!(of_type(&ev, "guardrail").len(), 1);
    assert!(of_type(&ev, "retry").is_empty(), "a refusal is not retried");
    assert_eq!(of_type(&ev, "step_started").len(), 1);
}

#[test]
fn an_on_failure_undoing_the_runs_own_change_is_not_refused_by_the_blast_radius_cap() {
    let ws = with_fleet("");
    ws.write(
        "runbooks/undo.rhai",
        r#"runbook(#{ id: "undo", version: "1.0.0", title: "t", severity: "P3" });
containment("Quarantine, then fail", |ctx| {
    ctx.iso = ec2::isolate("i-0a1b2c3d4e5f60001");
    // A tag value naming a security group is not a resource this call changes.
    ec2::tag("i-0a1b2c3d4e5f60001", #{ Quarantine: ctx.iso.quarantine_group });
    fail("something later went wrong");
}, #{ on_failure: |ctx| { ec2::restore("i-0a1b2c3d4e5f60001", ctx.iso); } });
"#,
    );
    let run = ws.run(&[
        "run",
        "undo",
        "--env",
        "drill",
        "--max-resources",
        "1",
        "--transcript",
        "t.jsonl",
        "--sim-state-out",
        "state.json",
    ]);
    run.expect_code(1);
    let ev = events(&ws.path().join("t.jsonl"));
    assert!(of_type(&ev, "guardrail").is_empty(), "{}", run.stderr);
    assert_eq!(of_type(&ev, "on_failure_finished")[0]["status"], "ok");
    let s = state(&ws, "state.json");
    let fleet: toml::Table =
        toml::from_str(&std::fs::read_to_string(format!("{REPO}/sim/default-fleet.toml")).unwrap())
            .unwrap();
    let original = fleet["instances"].as_array().unwrap()[0]["security_groups"].clone();
    assert_eq!(
        instance(&s, BLUE_1)["security_groups"].to_string(),
        serde_json::to_value(&original).unwrap().to_string(),
        "the instance is not left quarantined"
    );
}

#[test]
fn tag_targets_and_launch_counts_are_counted_before_the_call_is_sent() {
    let ws = with_fleet("");
    let run = one_step(
        &ws,
        "everywhere",
        r#"ssm::shell(#{ Environment: "production" }, ["uptime"]);"#,
        "",
        &["--max-resources", "1", "--sim-state-out", "state.json"],
    );
    run.expect_code(1);
    assert!(run.stderr.contains("6 more resource(s)"), "{}", run.stderr);
    let ev = events(&ws.path().join("everywhere.jsonl"));
    assert!(
        of_type(&ev, "intent").is_empty(),
        "refused before it was sent"
    );
    assert_eq!(state(&ws, "state.json")["mutations"], serde_json::json!([]));

    let run = one_step(
        &ws,
        "fifty",
        r#"ec2::launch(#{ image: "ami-0a1b2c3d4e5f60001", count: 50, wait: false });"#,
        "",
        &["--max-resources", "10", "--sim-state-out", "state.json"],
    );
    run.expect_code(1);
    assert!(run.stderr.contains("50 new instance(s)"), "{}", run.stderr);
    assert_eq!(state(&ws, "state.json")["mutations"], serde_json::json!([]));
}

/// A workspace whose blue instance boots slowly: its status checks report `initializing` for the
/// first `boot_minutes` of the run's (simulated) clock.
fn with_slow_boot(boot_minutes: u64, wait_options: &str) -> Workspace {
    let ws = with_fleet(&format!(
        "[faults]\ninitializing_ms = {{ \"{BLUE_1}\" = {} }}\n",
        boot_minutes * 60_000
    ));
    ws.write(
        "runbooks/boot.rhai",
        &format!(
            r#"runbook(#{{ id: "boot", version: "1.0.0", title: "t", severity: "P3" }});
recovery("Wait for the slow boot", |ctx| {{
    ctx.checks = ec2::wait_status_ok(["{BLUE_1}"], #{{ {wait_options} }});
}}, #{{ timeout: "30m" }});
"#
        ),
    );
    ws
}

/// The `wait` log lines of a transcript (which bound applied to each wait).
fn wait_logs(ev: &[Value]) -> Vec<String> {
    of_type(ev, "log")
        .into_iter()
        .filter(|e| e["level"] == "wait")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_wait_longer_than_ten_minutes_succeeds_when_the_step_has_thirty() {
    let ws = with_slow_boot(20, "");
    let plan = ws.run(&["plan", "boot", "--env", "drill", "--transcript", "p.jsonl"]);
    plan.expect_code(0);
    let ev = events(&ws.path().join("p.jsonl"));
    let finished = of_type(&ev, "step_finished");
    assert_eq!(finished[0]["status"], "ok", "{}", finished[0]);
    assert_eq!(finished[0]["ctx"]["checks"][0]["instance_status"], "ok");
    // Ready at minute 20, polled every 5 s: the wait took 20 minutes of simulated time.
    let took = finished[0]["duration_ms"].as_u64().unwrap();
    assert!((1_200_000..1_260_000).contains(&took), "{took}");
    let logs = wait_logs(&ev);
    assert!(
        logs[0].contains("until the step's deadline (no `timeout` given)"),
        "{logs:?}"
    );
    let call = of_type(&ev, "call")[0];
    assert_eq!(call["args"]["timeout"], "step deadline", "{call}");
}

#[test]
fn a_wait_without_a_timeout_ends_the_step_timed_out_at_its_deadline() {
    let ws = with_slow_boot(40, "");
    let plan = ws.run(&["plan", "boot", "--env", "drill", "--transcript", "p.jsonl"]);
    plan.expect_code(3);
    assert!(
        plan.stderr
            .contains("the step's deadline ended the wait after"),
        "{}",
        plan.stderr
    );
    let ev = events(&ws.path().join("p.jsonl"));
    let finished = of_type(&ev, "step_finished");
    assert_eq!(finished[0]["status"], "timed_out", "{}", finished[0]);
    let message = finished[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "the step ran past its timeout of 30m: the step's deadline ended the wait"
        ),
        "{message}"
    );
    assert!(message.contains("status checks not ok"), "{message}");
    assert!(!message.contains("WaiterTimeout"), "{message}");
    let call = of_type(&ev, "call")[0];
    assert_eq!(call["error"]["code"], "timed_out", "{call}");
    assert_eq!(ev.last().unwrap()["status"], "timed_out");
}

#[test]
fn an_explicit_wait_timeout_beyond_the_deadline_is_cut_to_it_and_reported_as_the_deadline() {
    let ws = with_slow_boot(50, r#"timeout: "45m""#);
    let plan = ws.run(&["plan", "boot", "--env", "drill", "--transcript", "p.jsonl"]);
    plan.expect_code(3);
    let ev = events(&ws.path().join("p.jsonl"));
    let logs = wait_logs(&ev);
    assert!(
        logs[0].contains(
            "until the step's deadline (its `timeout` of 45m is longer than the step has left)"
        ),
        "{logs:?}"
    );
    let finished = of_type(&ev, "step_finished");
    assert_eq!(finished[0]["status"], "timed_out", "{}", finished[0]);
    let message = finished[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the step's deadline ended the wait after 30m")
            && message.contains("before the wait's own timeout of 45m"),
        "{message}"
    );
    // Simulated time stops at the deadline: the wait did not run to its own 45 minutes.
    let took = finished[0]["duration_ms"].as_u64().unwrap();
    assert!((1_800_000..1_860_000).contains(&took), "{took}");
}

#[test]
fn a_wait_timeout_shorter_than_the_step_fails_the_call_with_waiter_timeout() {
    let ws = with_slow_boot(20, r#"timeout: "12m""#);
    let plan = ws.run(&["plan", "boot", "--env", "drill", "--transcript", "p.jsonl"]);
    plan.expect_code(1);
    let ev = events(&ws.path().join("p.jsonl"));
    assert!(wait_logs(&ev)[0].contains("waits at most 12m (its `timeout`)"));
    let finished = of_type(&ev, "step_finished");
    assert_eq!(finished[0]["status"], "failed", "{}", finished[0]);
    let call = of_type(&ev, "call")[0];
    assert_eq!(call["error"]["code"], "WaiterTimeout", "{call}");
}
