//! `runbook drill` and `runbook check --policy` on the repository's own runbooks and drills.

use crate::common;

use common::Workspace;
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn drill(ws: &Workspace, extra: &[&str]) -> common::Run {
    let runbooks = format!("{REPO}/runbooks");
    let drills = format!("{REPO}/drills");
    let mut args = vec![
        "drill",
        "--runbooks",
        &runbooks,
        "--drills",
        &drills,
        "--out",
        "out",
        "--results",
        "results",
        "--junit",
        "junit.xml",
        "--report",
        "report.md",
    ];
    args.extend_from_slice(extra);
    ws.run(&args)
}

fn policy(ws: &Workspace, alerts: &str, now: &str) -> common::Run {
    let runbooks = format!("{REPO}/runbooks");
    ws.run(&[
        "check",
        "--policy",
        "--runbooks",
        &runbooks,
        "--alerts",
        alerts,
        "--results",
        "results",
        "--now",
        now,
        "--output",
        "json",
    ])
}

fn violations(run: &common::Run) -> Vec<(String, String)> {
    // `check --policy --output json` prints one document: the files, then the policy.
    let doc: Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    assert_eq!(doc["schema"], 1);
    doc["policy"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["rule"].as_str().unwrap().to_string(),
                x["subject"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn every_repository_drill_passes_with_junit_report_records_and_coverage() {
    let ws = Workspace::new();
    let run = drill(&ws, &[]);
    run.expect_code(0);
    let scenarios = std::fs::read_dir(format!("{REPO}/drills"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "toml")
        })
        .count();
    assert!(
        run.stdout.contains(&format!(
            "{scenarios} drill(s): {scenarios} passed, 0 failed"
        )),
        "{}",
        run.stdout
    );

    let junit = ws.read("junit.xml");
    assert!(
        junit.contains(&format!("tests=\"{scenarios}\"")) && junit.contains("failures=\"0\""),
        "{junit}"
    );
    let report = ws.read("report.md");
    assert!(
        report.contains("| ec2-compromised-instance-clean | ec2-compromised-instance@"),
        "{report}"
    );
    assert!(
        report.contains("rollback never exercised by any drill"),
        "coverage flags untested rollbacks: {report}"
    );

    // Every runbook has at least two drills, and every passing drill left a record and a transcript.
    let mut per_runbook = std::collections::BTreeMap::<String, usize>::new();
    for dir in std::fs::read_dir(ws.path().join("results")).unwrap() {
        let dir = dir.unwrap();
        per_runbook.insert(
            dir.file_name().to_string_lossy().into_owned(),
            std::fs::read_dir(dir.path()).unwrap().count(),
        );
    }
    let runbooks = std::fs::read_dir(format!("{REPO}/runbooks"))
        .unwrap()
        .count();
    assert_eq!(per_runbook.len(), runbooks, "{per_runbook:?}");
    assert!(per_runbook.values().all(|n| *n >= 2), "{per_runbook:?}");
    let transcripts = std::fs::read_dir(ws.path().join("out"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "jsonl")
        })
        .count();
    assert_eq!(transcripts, scenarios);

    // With fresh records the repository satisfies the mandate.
    let today = chrono::Utc::now().date_naive().to_string();
    let ok = policy(&ws, &format!("{REPO}/alerts.toml"), &today);
    ok.expect_code(0);
    assert!(violations(&ok).is_empty());
}

#[test]
fn a_failing_expectation_fails_the_drill_with_its_reason() {
    let ws = Workspace::new();
    ws.write(
        "drills/wrong.toml",
        r#"runbook = "ec2-compromised-instance@1.1.0"
[params]
instance_id = "i-0a1b2c3d4e5f60001"
incident = "2026-0000-010"
[expect]
status = "ok"
[expect.cloud]
running = ["i-0a1b2c3d4e5f60001"]
"#,
    );
    let runbooks = format!("{REPO}/runbooks");
    let run = ws.run(&[
        "drill",
        "drills/wrong.toml",
        "--runbooks",
        &runbooks,
        "--out",
        "out",
        "--results",
        "results",
        "--junit",
        "junit.xml",
    ]);
    run.expect_code(1);
    assert!(run.stdout.contains("FAIL  wrong"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("i-0a1b2c3d4e5f60001 is terminated (expected running)"),
        "{}",
        run.stdout
    );
    let junit = ws.read("junit.xml");
    assert!(
        junit.contains("failures=\"1\"") && junit.contains("expected running"),
        "{junit}"
    );
    assert!(
        !ws.exists("results/ec2-compromised-instance"),
        "a failing drill leaves no record"
    );

    let unpinned = ws.write(
        "drills/unpinned.toml",
        "runbook = \"ec2-high-cpu\"\n[params]\ninstance_id = \"i-0a1b2c3d4e5f60005\"\n",
    );
    let run = ws.run(&[
        "drill",
        unpinned.to_str().unwrap(),
        "--runbooks",
        &runbooks,
        "--out",
        "out",
        "--results",
        "results",
    ]);
    run.expect_code(1);
    assert!(
        run.stdout.contains("pin the runbook's version"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_policy_names_each_violation() {
    let ws = Workspace::new();
    drill(&ws, &[]).expect_code(0);
    let today = chrono::Utc::now().date_naive();

    // An alert nobody answers, and a review and drills that are too old, as of a later date.
    let alerts = ws.write(
        "alerts.toml",
        &format!(
            "{}\n[[alert]]\nname = \"disk-full\"\nseverity = \"P1\"\ncondition = \"root volume over 95%\"\n",
            std::fs::read_to_string(format!("{REPO}/alerts.toml")).unwrap()
        ),
    );
    let later = (today + chrono::Duration::days(120)).to_string();
    let run = policy(&ws, alerts.to_str().unwrap(), &later);
    run.expect_code(1);
    let v = violations(&run);
    assert!(
        v.contains(&("runbook-for-alert".into(), "disk-full".into())),
        "{v:?}"
    );
    assert!(
        v.contains(&("reviewed".into(), "ec2-high-cpu".into())),
        "{v:?}"
    );
    assert!(
        v.contains(&("drilled".into(), "ec2-high-cpu".into())),
        "{v:?}"
    );

    // A record of the same version with other content: the version was not bumped.
    let dir = ws.path().join("results/ec2-high-cpu");
    let record = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut r: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    r["sha256"] = Value::String("0".repeat(64));
    r["scenario"] = Value::String("older-content".into());
    std::fs::write(dir.join("older.json"), r.to_string()).unwrap();
    let run = policy(&ws, &format!("{REPO}/alerts.toml"), &today.to_string());
    run.expect_code(1);
    assert_eq!(
        violations(&run),
        vec![("version-bump".to_string(), "ec2-high-cpu".to_string())]
    );
}

fn drill_files(ws: &Workspace, args: &[&str]) -> common::Run {
    let runbooks = format!("{REPO}/runbooks");
    let mut all = vec!["drill"];
    all.extend_from_slice(args);
    all.extend([
        "--runbooks",
        &runbooks,
        "--out",
        "out",
        "--results",
        "results",
    ]);
    ws.run(&all)
}

#[test]
fn scenario_errors_name_the_field_and_the_allowed_values() {
    let ws = Workspace::new();
    let base =
        "runbook = \"ec2-high-cpu@2.0.0\"\n[params]\ninstance_id = \"i-0a1b2c3d4e5f60005\"\n";
    ws.write(
        "drills/banana.toml",
        &format!("{base}[expect.steps]\n\"Restart the offending service\" = \"banana\"\n"),
    );
    let run = drill_files(&ws, &["drills/banana.toml"]);
    run.expect_code(1);
    assert!(run.stdout.contains("banana"), "{}", run.stdout);
    assert!(run.stdout.contains("not run"), "{}", run.stdout);
    assert!(
        run.stdout.contains("unparsable drill scenario"),
        "{}",
        run.stdout
    );

    ws.write(
        "drills/notify.toml",
        &format!("{base}[expect]\nnotifications = \"x\"\n"),
    );
    let run = drill_files(&ws, &["drills/notify.toml"]);
    run.expect_code(1);
    assert!(!run.stdout.contains("NotifyExpect"), "{}", run.stdout);
    assert!(run.stdout.contains("at_least"), "{}", run.stdout);
    assert!(run.stdout.contains("notifications"), "{}", run.stdout);

    ws.write(
        "drills/status.toml",
        &format!("{base}[expect]\nstatus = \"fine\"\n"),
    );
    let run = drill_files(&ws, &["drills/status.toml"]);
    run.expect_code(1);
    assert!(run.stdout.contains("timed_out"), "{}", run.stdout);
}

#[test]
fn both_spellings_of_not_run_are_accepted() {
    let ws = Workspace::new();
    ws.write(
        "drills/spellings.toml",
        r#"runbook = "ec2-high-cpu@2.0.0"
[params]
instance_id = "i-0a1b2c3d4e5f60005"
[faults.command_failure]
share = 1.0
[expect]
status = "failed"
[expect.steps]
"Confirm the CPU from CloudWatch and collect diagnostics" = "failed"
"Restart the offending service" = "not_run"
"Wait for the CPU alarm to clear" = "not run"
"#,
    );
    let run = drill_files(&ws, &["drills/spellings.toml"]);
    run.expect_code(0);
    assert!(run.stdout.contains("pass  spellings"), "{}", run.stdout);
}

#[test]
fn a_drill_id_with_an_unparsable_scenario_says_it_is_unparsable() {
    let ws = Workspace::new();
    ws.write(
        "drills/broken.toml",
        "runbook = \"ec2-high-cpu@2.0.0\"\n[expect]\nstatus = \"banana\"\n",
    );
    let run = drill_files(&ws, &["ec2-high-cpu", "--drills", "drills"]);
    assert_ne!(run.code, 0);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("unparsable drill scenario"), "{all}");
    assert!(all.contains("broken.toml"), "{all}");
    assert!(all.contains("banana"), "{all}");
    assert!(!all.contains("no drill scenario"), "{all}");
}

#[test]
fn a_drill_on_the_sim_runs_on_a_simulated_clock() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/slow-recovery.rhai",
        r#"runbook(#{ id: "slow-recovery", version: "1.0.0", title: "t", severity: "P3" });
recovery("Wait for the service to come back", |ctx| {
    let n = 0;
    // Ten minutes of polling, then healthy.
    wait_until(|| { n += 1; n > 20 }, #{ timeout: "15m", every: "30s" });
    ctx.attempts = n;
}, #{ timeout: "20m" });
recovery("Settle", |ctx| { sleep("5m"); }, #{ timeout: "10m" });
"#,
    );
    ws.write(
        "drills/slow.toml",
        "runbook = \"slow-recovery@1.0.0\"\n[expect]\nstatus = \"ok\"\nmax_duration = \"16m\"\n",
    );
    let run = ws.run(&[
        "drill",
        "drills/slow.toml",
        "--runbooks",
        "runbooks",
        "--out",
        "out",
        "--results",
        "results",
    ]);
    run.expect_code(0);
    assert!(run.stdout.contains("simulated"), "{}", run.stdout);
    let transcript = std::fs::read_dir(ws.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .unwrap();
    let ev = common::events(&transcript);
    assert_eq!(ev[0]["clock"], "simulated");
    let steps = common::of_type(&ev, "step_finished");
    assert!(
        steps[0]["duration_ms"].as_u64().unwrap() >= 600_000,
        "{}",
        steps[0]
    );
    assert!(
        steps[1]["duration_ms"].as_u64().unwrap() >= 300_000,
        "{}",
        steps[1]
    );
    let total = ev.last().unwrap()["duration_ms"].as_u64().unwrap();
    assert!((900_000..960_000).contains(&total), "{total}");
}

#[test]
fn runbook_docs_drills_documents_every_scenario_field() {
    let ws = Workspace::new();
    let run = ws.run(&["docs", "drills"]);
    run.expect_code(0);
    for needle in [
        "# Drill scenario format",
        "| `runbook` |",
        "| `max_duration` |",
        "| `command_outputs` |",
        "| `at_least` |",
        "| `original_groups` |",
        "not_run",
        "timed_out",
    ] {
        assert!(run.stdout.contains(needle), "{needle}: {}", run.stdout);
    }
    let api = ws.run(&["docs"]);
    api.expect_code(0);
    assert!(
        api.stdout.contains("## Plans, time and guardrails"),
        "{}",
        api.stdout
    );
    assert!(api.stdout.contains("read_only: true"), "{}", api.stdout);
}

#[test]
fn a_phase_that_finishes_later_than_its_within_limit_fails_the_drill_naming_it() {
    let ws = Workspace::new();
    // The stop waits 10 minutes for an instance that never stops (simulated time), so the
    // eradication phase cannot finish at all, and containment cannot finish in a millisecond.
    ws.write(
        "drills/slow.toml",
        r#"runbook = "ec2-compromised-instance@1.1.0"
[params]
instance_id = "i-0a1b2c3d4e5f60002"
incident = "2026-0000-011"
stop_timeout = "10m"
[faults]
latency_ms = 50
stuck_stopping = ["i-0a1b2c3d4e5f60002"]
[expect]
status = "failed"
[expect.within]
containment = "1ms"
eradication = "1h"
"Quarantine the instance" = "1h"
"#,
    );
    let run = drill_files(&ws, &["drills/slow.toml"]);
    run.expect_code(1);
    assert!(
        run.stdout.contains("\"containment\" finished")
            && run.stdout.contains("(expected within 1ms)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\"eradication\" did not finish: step \"Stop the instance\" ended failed"),
        "{}",
        run.stdout
    );
    // The step that did finish in time is not reported.
    assert!(
        !run.stdout.contains("\"Quarantine the instance\""),
        "{}",
        run.stdout
    );

    ws.write(
        "drills/typo.toml",
        "runbook = \"ec2-status-check-failed@1.0.0\"\n[params]\ninstance_id = \"i-0a1b2c3d4e5f60005\"\n[expect.within]\ncontainmnet = \"5m\"\n",
    );
    let run = drill_files(&ws, &["drills/typo.toml"]);
    run.expect_code(1);
    assert!(
        run.stdout
            .contains("names \"containmnet\", which is neither a phase nor a step"),
        "{}",
        run.stdout
    );
}

/// The mandate (a runbook with containment, eradication and recovery) is for P1 and P2 alerts:
/// the notify-only P3/P4 runbooks have no eradication step and pass, but like every runbook
/// they must be reviewed and drilled.
#[test]
fn p3_and_p4_runbooks_are_outside_the_mandate_but_must_be_drilled() {
    let ws = Workspace::new();
    drill(&ws, &[]).expect_code(0);
    let today = chrono::Utc::now().date_naive().to_string();
    let ok = policy(&ws, &format!("{REPO}/alerts.toml"), &today);
    ok.expect_code(0);
    assert!(violations(&ok).is_empty(), "{:?}", violations(&ok));

    // The same alert made P2: the notify-only runbook now falls short of the mandate.
    let alerts = std::fs::read_to_string(format!("{REPO}/alerts.toml")).unwrap();
    let p2 = alerts.replace(
        "name = \"dynamodb-throttling\"\nseverity = \"P3\"",
        "name = \"dynamodb-throttling\"\nseverity = \"P2\"",
    );
    assert_ne!(p2, alerts, "alerts.toml lists dynamodb-throttling as P3");
    let p2 = ws.write("alerts-p2.toml", &p2);
    let run = policy(&ws, p2.to_str().unwrap(), &today);
    run.expect_code(1);
    assert_eq!(
        violations(&run),
        vec![(
            "three-phases".to_string(),
            "dynamodb-throttling".to_string()
        )]
    );

    // Without their drill records, both are reported undrilled.
    for id in ["dynamodb-throttling", "api-low-activity"] {
        std::fs::remove_dir_all(ws.path().join("results").join(id)).unwrap();
    }
    let run = policy(&ws, &format!("{REPO}/alerts.toml"), &today);
    run.expect_code(1);
    let mut v = violations(&run);
    v.sort();
    assert_eq!(
        v,
        vec![
            ("drilled".to_string(), "api-low-activity".to_string()),
            ("drilled".to_string(), "dynamodb-throttling".to_string()),
        ]
    );
}
