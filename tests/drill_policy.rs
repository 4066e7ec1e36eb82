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
    // `check --output json` prints the runbook list first, then the policy object.
    let start = run.stdout.rfind("{\n  \"date\"").expect("policy JSON");
    let v: Value = serde_json::from_str(&run.stdout[start..]).unwrap();
    v["violations"]
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
