//! `runbook replay`: a past run's transcript replayed against a runbook version, every call
//! answered from the transcript and nothing sent.

use crate::common;

use common::Workspace;
use common::moto::{Moto, compromised};
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Runs the given drill scenarios of the repository into `ws/out` and returns their transcripts.
fn drill_transcripts(ws: &Workspace, scenarios: &[&str]) -> Vec<std::path::PathBuf> {
    let runbooks = format!("{REPO}/runbooks");
    let mut args = vec!["drill", "--runbooks", &runbooks];
    let files: Vec<String> = scenarios
        .iter()
        .map(|s| format!("{REPO}/drills/{s}"))
        .collect();
    if scenarios.is_empty() {
        args.push(concat!(env!("CARGO_MANIFEST_DIR"), "/drills"));
    }
    args.extend(files.iter().map(String::as_str));
    args.extend(["--out", "out", "--results", "results"]);
    ws.run(&args).expect_code(0);
    let mut out: Vec<std::path::PathBuf> = std::fs::read_dir(ws.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    out.sort();
    out
}

/// `runbook replay TRANSCRIPT [extra] --output json`: the exit code and the report.
fn replay(ws: &Workspace, transcript: &std::path::Path, extra: &[&str]) -> (i32, Value) {
    let runbooks = format!("{REPO}/runbooks");
    let t = transcript.display().to_string();
    let mut args = vec!["replay", &t, "--runbooks", &runbooks, "--output", "json"];
    args.extend(extra);
    let run = ws.run(&args);
    let report = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "replay printed no JSON report ({e}): exit {}\n{}\n{}",
            run.code, run.stdout, run.stderr
        )
    });
    (run.code, report)
}

/// The (kind, step) of every divergence, in the report's order.
fn kinds(report: &Value) -> Vec<(String, String)> {
    report["divergences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["step"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

/// Nothing left the replay: no write sent, no cloud connected, no notification.
fn sent_nothing(report: &Value) {
    assert_eq!(report["writes_sent"], 0, "{report:#}");
    assert_eq!(report["cloud_connected"], false, "{report:#}");
    assert_eq!(report["notifications"], 0, "{report:#}");
}

#[test]
fn the_transcript_of_every_repository_drill_replays_as_matching_itself() {
    let ws = Workspace::new();
    let transcripts = drill_transcripts(&ws, &[]);
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
    assert_eq!(transcripts.len(), scenarios);
    let mut answered = 0;
    for t in &transcripts {
        let (code, report) = replay(&ws, t, &[]);
        assert_eq!(code, 0, "{}: {report:#}", t.display());
        assert_eq!(report["matches"], true);
        assert_eq!(report["incident_status"], report["replay_status"]);
        // A drill may end before its first call (a runbook refusing its parameters).
        answered += report["calls"].as_u64().unwrap();
        sent_nothing(&report);
    }
    assert!(answered > 0, "the replays answered no call at all");
    // A replay is a test, not a run: it leaves no transcript behind.
    assert!(!ws.exists("transcripts"));
}

/// A copy of a repository runbook in the workspace, with `edit` applied to its text.
fn edited(ws: &Workspace, name: &str, edit: impl Fn(&str) -> String) -> String {
    let text = std::fs::read_to_string(format!("{REPO}/runbooks/{name}")).unwrap();
    let changed = edit(&text);
    assert_ne!(changed, text, "the edit changed nothing");
    let helpers = std::fs::read_to_string(format!("{REPO}/stdlib/ec2_helpers.rhai")).unwrap();
    ws.write("stdlib/ec2_helpers.rhai", &helpers);
    ws.write(&format!("runbooks/{name}"), &changed)
        .display()
        .to_string()
}

#[test]
fn an_edited_runbook_is_reported_as_the_divergence_it_is() {
    let ws = Workspace::new();
    let ts = drill_transcripts(
        &ws,
        &[
            "ec2-compromised-instance-clean.toml",
            "ec2-high-cpu-clean.toml",
        ],
    );
    let (compromised, cpu) = (&ts[0], &ts[1]);

    // One argument changed: the write is compared and answered, and the difference named.
    let file = edited(&ws, "ec2-compromised-instance.rhai", |t| {
        t.replace(r#"Compromised: "true""#, r#"Compromised: "yes""#)
    });
    let (code, report) = replay(&ws, compromised, &["--runbook", &file]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        kinds(&report),
        [(
            "different_arguments".into(),
            "Tag the instance as compromised".into()
        )]
    );
    let d = &report["divergences"][0];
    assert_eq!(d["recorded"]["tags"]["Compromised"], "true");
    assert_eq!(d["replayed"]["tags"]["Compromised"], "yes");
    sent_nothing(&report);

    // One step removed: the step and the write it made are missing (and what used its result).
    let file = edited(&ws, "ec2-compromised-instance.rhai", |t| {
        let a = t
            .find(r#"eradication("Image the instance for forensics""#)
            .unwrap();
        let b = t.find(r#"eradication("Terminate the instance""#).unwrap();
        format!("{}{}", &t[..a], &t[b..])
    });
    let (code, report) = replay(&ws, compromised, &["--runbook", &file]);
    assert_eq!(code, 1, "{report:#}");
    let k = kinds(&report);
    let image = "Image the instance for forensics".to_string();
    assert!(k.contains(&("step_removed".into(), image.clone())), "{k:?}");
    assert!(k.contains(&("write_not_made".into(), image)), "{k:?}");
    let text = ws.run(&[
        "replay",
        &compromised.display().to_string(),
        "--runbook",
        &file,
        "--runbooks",
        &format!("{REPO}/runbooks"),
    ]);
    text.expect_code(1);
    assert!(
        text.stdout.contains("write_not_made: ec2::create_image(")
            && text
                .stdout
                .contains("the incident made this write; this version does not"),
        "{}",
        text.stdout
    );

    // A condition flipped: the step is skipped now, and the restart it sent is not made.
    let file = edited(&ws, "ec2-high-cpu.rhai", |t| {
        t.replace(
            "when: |ctx| cpu_needs_remedy(ctx)",
            "when: |ctx| !cpu_needs_remedy(ctx)",
        )
    });
    let (code, report) = replay(&ws, cpu, &["--runbook", &file]);
    assert_eq!(code, 1, "{report:#}");
    let k = kinds(&report);
    let restart = "Restart the offending service".to_string();
    assert!(k.contains(&("branch".into(), restart.clone())), "{k:?}");
    assert!(k.contains(&("write_not_made".into(), restart)), "{k:?}");

    // A write the incident never made is not sent, and a step that now fails is named.
    let file = edited(&ws, "ec2-compromised-instance.rhai", |t| {
        t.replace(
            "ec2::stop(ctx.instance_id, #{ timeout: ctx.stop_timeout });",
            "ec2::reboot(ctx.instance_id); ec2::stop(ctx.instance_id, #{ timeout: ctx.stop_timeout });",
        )
        .replace(
            r#"log(`forensic image ${ctx.forensic_image}`);"#,
            r#"assert(ctx.forensic_image == "", "no image expected");"#,
        )
    });
    let (code, report) = replay(&ws, compromised, &["--runbook", &file]);
    assert_eq!(code, 1, "{report:#}");
    let k = kinds(&report);
    assert!(
        k.contains(&("unrecorded_write".into(), "Stop the instance".into())),
        "{k:?}"
    );
    assert!(
        k.contains(&(
            "step_status".into(),
            "Image the instance for forensics".into()
        )),
        "{k:?}"
    );
    assert_eq!(report["replay_status"], "failed");
    sent_nothing(&report);
}

#[test]
fn a_replay_of_a_run_on_aws_sends_nothing_even_with_the_emulator_gone() {
    let moto = Moto::start();
    let (blue, _) = moto.seed();
    let ws = moto.workspace("123456789012");
    compromised(&ws, "moto", &blue, "moto.jsonl").expect_code(0);
    // The emulator is gone: a replay that tried to reach it would fail or diverge.
    drop(moto);
    let (code, report) = replay(&ws, &ws.path().join("moto.jsonl"), &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["matches"], true);
    assert_eq!(report["replay_status"], "ok");
    sent_nothing(&report);
}

#[test]
fn a_transcript_that_cannot_be_replayed_exits_2_saying_why() {
    let ws = Workspace::new();
    // A parameter far larger than a result is recorded whole (64 KiB).
    let fleet = std::fs::read_to_string(format!("{REPO}/sim/default-fleet.toml")).unwrap();
    let big = "x".repeat(70 * 1024);
    ws.write(
        "big-fleet.toml",
        &format!("{fleet}\n[[parameters]]\nname = \"/big\"\nvalue = \"{big}\"\n"),
    );
    ws.write(
        "runbook.toml",
        "[environments.big]\nbackend = \"sim\"\nfleet = \"big-fleet.toml\"\n",
    );
    ws.write(
        "runbooks/big.rhai",
        &format!(
            "{}containment(\"Read it\", |ctx| {{ log(ssm::get_parameter(\"/big\").len()); }});\n",
            common::header("big")
        ),
    );
    ws.run(&["run", "big", "--env", "big", "--transcript", "big.jsonl"])
        .expect_code(0);
    let run = ws.run(&["replay", "big.jsonl"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("unusable transcript")
            && run.stderr.contains("ssm::get_parameter(")
            && run.stderr.contains("recorded truncated"),
        "{}",
        run.stderr
    );

    // The recorded file changed since: replaying it by default would test another version.
    ws.write(
        "runbooks/note.rhai",
        &format!(
            "{}containment(\"Note\", |ctx| {{ log(\"noted\"); }});\n",
            common::header("note")
        ),
    );
    ws.run(&["run", "note", "--transcript", "note.jsonl"])
        .expect_code(0);
    ws.run(&["replay", "note.jsonl"]).expect_code(0);
    ws.write(
        "runbooks/note.rhai",
        &format!(
            "{}containment(\"Note\", |ctx| {{ log(\"changed\"); }});\n",
            common::header("note")
        ),
    );
    let run = ws.run(&["replay", "note.jsonl"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("changed since the incident") && run.stderr.contains("--runbook"),
        "{}",
        run.stderr
    );
    // A plan sent no writes: nothing to compare a version with.
    ws.run(&["plan", "note", "--transcript", "plan.jsonl"])
        .expect_code(0);
    let run = ws.run(&["replay", "plan.jsonl"]);
    run.expect_code(2);
    assert!(run.stderr.contains("a plan transcript"), "{}", run.stderr);
}

/// `runbook drill FILE` with the runbooks of `runbooks` (a folder path).
fn drill_file(ws: &Workspace, file: &str, runbooks: &str) -> common::Run {
    ws.run(&[
        "drill",
        file,
        "--runbooks",
        runbooks,
        "--out",
        "out",
        "--results",
        "results",
    ])
}

#[test]
fn a_run_on_moto_captured_as_a_drill_passes_on_the_sim_and_fails_a_runbook_that_no_longer_quarantines()
 {
    let moto = Moto::start();
    let (blue, _) = moto.seed();
    let ws = moto.workspace("123456789012");
    compromised(&ws, "moto", &blue, "incident.jsonl").expect_code(0);
    drop(moto);
    let captured = ws.run(&["drill", "capture", "incident.jsonl"]);
    captured.expect_code(0);
    let scenario: toml::Table = toml::from_str(&captured.stdout).unwrap();
    // The cloud as the run saw it, with the run's own ids; its outcome expected.
    let seeded = scenario["seed"]["instances"].as_array().unwrap();
    assert!(
        seeded
            .iter()
            .any(|i| i["id"].as_str() == Some(blue.as_str()))
    );
    assert_eq!(
        scenario["seed"]["account_id"].as_str(),
        Some("123456789012")
    );
    let cloud = &scenario["expect"]["cloud"];
    for key in ["isolated", "snapshotted", "terminated", "replaced"] {
        assert_eq!(
            cloud[key].as_array().unwrap(),
            &[toml::Value::String(blue.clone())],
            "{key}"
        );
    }
    assert_eq!(scenario["expect"]["status"].as_str(), Some("ok"));
    ws.write("drills/captured.toml", &captured.stdout);

    let run = drill_file(&ws, "drills/captured.toml", &format!("{REPO}/runbooks"));
    run.expect_code(0);
    assert!(run.stdout.contains("pass  captured"), "{}", run.stdout);

    // The runbook broken the way the incident shows it must not be: the instance left reachable.
    edited(&ws, "ec2-compromised-instance.rhai", |t| {
        t.replace(
            "ctx.isolation = ec2::isolate(ctx.instance_id, #{ incident: ctx.incident });",
            r#"ctx.isolation = #{ quarantine_group: "none" };"#,
        )
    });
    let run = drill_file(&ws, "drills/captured.toml", "runbooks");
    run.expect_code(1);
    assert!(
        run.stdout.contains(&format!("{blue} is not isolated")),
        "{}",
        run.stdout
    );
}

#[test]
fn a_captured_drill_scripts_the_fault_the_run_met_where_it_met_it() {
    let ws = Workspace::new();
    let ts = drill_transcripts(&ws, &["ec2-compromised-instance-snapshot-fails.toml"]);
    let captured = ws.run(&["drill", "capture", &ts[0].display().to_string()]);
    captured.expect_code(0);
    let scenario: toml::Table = toml::from_str(&captured.stdout).unwrap();
    let errors = scenario["seed"]["faults"]["errors"].as_array().unwrap();
    assert_eq!(errors[0]["operation"].as_str(), Some("CreateSnapshot"));
    assert_eq!(errors[0]["instance"].as_str(), Some("i-0a1b2c3d4e5f60001"));
    assert_eq!(scenario["expect"]["status"].as_str(), Some("failed"));
    ws.write("drills/captured.toml", &captured.stdout);
    drill_file(&ws, "drills/captured.toml", &format!("{REPO}/runbooks")).expect_code(0);
}

#[test]
fn the_transcript_of_every_repository_drill_captured_as_a_drill_passes_on_the_sim() {
    let ws = Workspace::new();
    let transcripts = drill_transcripts(&ws, &[]);
    // Every binding's reads are seeded: the load balancer, CloudWatch, Auto Scaling and
    // snapshot runs are captured like the EC2 and SSM ones, none refused.
    for t in &transcripts {
        let captured = ws.run(&["drill", "capture", &t.display().to_string()]);
        let name = t.file_stem().unwrap().to_string_lossy().into_owned();
        captured.expect_code(0);
        ws.write(&format!("captured/{name}.toml"), &captured.stdout);
    }
    let n = transcripts.len();
    assert!(n >= 30, "only {n} drill transcripts");
    let run = drill_file(&ws, "captured", &format!("{REPO}/runbooks"));
    run.expect_code(0);
    assert!(
        run.stdout
            .contains(&format!("{n} drill(s): {n} passed, 0 failed")),
        "{}",
        run.stdout
    );
}

/// The scenario `runbook drill capture` writes for the transcript of the repository drill
/// `scenario`, saved as `drills/captured.toml`.
fn captured_from(ws: &Workspace, scenario: &str) -> toml::Table {
    let ts = drill_transcripts(ws, &[scenario]);
    let captured = ws.run(&["drill", "capture", &ts[0].display().to_string()]);
    captured.expect_code(0);
    ws.write("drills/captured.toml", &captured.stdout);
    toml::from_str(&captured.stdout).unwrap()
}

/// The captured drill run with the repository's runbooks passes; with the workspace's (edited)
/// ones it fails, and its report says `because`.
fn passes_then_fails(ws: &Workspace, because: &str) {
    let run = drill_file(ws, "drills/captured.toml", &format!("{REPO}/runbooks"));
    run.expect_code(0);
    assert!(run.stdout.contains("pass  captured"), "{}", run.stdout);
    let run = drill_file(ws, "drills/captured.toml", "runbooks");
    run.expect_code(1);
    assert!(
        run.stdout.contains("FAIL") && run.stdout.contains(because),
        "{}",
        run.stdout
    );
}

#[test]
fn a_captured_traffic_shift_seeds_the_listener_as_it_was_and_fails_a_runbook_that_stops_halfway() {
    let ws = Workspace::new();
    let scenario = captured_from(&ws, "api-high-latency-shift.toml");
    let seed = &scenario["seed"];
    // The listener as it was before the shift: all traffic on blue.
    let forward = seed["listeners"][0]["forward"].as_array().unwrap();
    let weights: Vec<(String, i64)> = forward
        .iter()
        .map(|f| {
            (
                f["target_group"].as_str().unwrap().to_string(),
                f["weight"].as_integer().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        weights,
        [("api-blue".to_string(), 100), ("api-green".to_string(), 0)]
    );
    // The green pool's targets, as the shift's gates saw them healthy.
    let green = seed["target_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"].as_str() == Some("api-green"))
        .unwrap();
    assert_eq!(green["targets"].as_array().unwrap().len(), 2, "{green:?}");
    let expected = &scenario["expect"]["cloud"]["weights"];
    assert_eq!(expected["api-blue"].as_integer(), Some(0));
    assert_eq!(expected["api-green"].as_integer(), Some(100));
    // Broken the way the incident shows it must not be: half the traffic left on the slow pool.
    edited(&ws, "api-high-latency.rhai", |t| {
        t.replace("steps: [10, 50, 100]", "steps: [10, 50]")
    });
    passes_then_fails(&ws, "target group api-green has weight [50] (expected 100)");
}

#[test]
fn a_captured_cpu_incident_seeds_the_metric_and_alarm_and_fails_a_runbook_that_no_longer_restarts()
{
    let ws = Workspace::new();
    let scenario = captured_from(&ws, "ec2-high-cpu-clean.toml");
    let seed = &scenario["seed"];
    let metric = &seed["metrics"][0];
    assert_eq!(metric["name"].as_str(), Some("CPUUtilization"));
    assert_eq!(
        metric["dimensions"]["InstanceId"].as_str(),
        Some("i-0a1b2c3d4e5f60005")
    );
    // 97% before the run; 12% once the restart the run sent had happened.
    assert_eq!(metric["value"].as_float(), Some(97.0));
    assert_eq!(metric["recovered"].as_float(), Some(12.0));
    assert_eq!(
        metric["recovers_on"].as_str(),
        Some("systemctl restart ec2-manager-worker")
    );
    let alarm = &seed["alarms"][0];
    assert_eq!(alarm["name"].as_str(), Some("worker-cpu-high"));
    assert_eq!(alarm["threshold"].as_float(), Some(85.0));
    assert_eq!(
        alarm["dimensions"]["InstanceId"].as_str(),
        Some("i-0a1b2c3d4e5f60005")
    );
    edited(&ws, "ec2-high-cpu.rhai", |t| {
        t.replace(
            "[`systemctl restart ${ctx.service}`]",
            "[`systemctl status ${ctx.service}`]",
        )
    });
    passes_then_fails(&ws, "Wait for the CPU alarm to clear");
}

#[test]
fn a_captured_scale_out_seeds_the_group_and_expects_its_capacity_and_fails_a_runbook_that_does_not_scale()
 {
    let ws = Workspace::new();
    let scenario = captured_from(&ws, "ec2-high-cpu-scale-out-clean.toml");
    let seed = &scenario["seed"];
    let group = &seed["auto_scaling_groups"][0];
    assert_eq!(group["name"].as_str(), Some("ec2-manager-worker"));
    // The group as it was before the run scaled it: the instance it launched is not seeded.
    assert_eq!(group["desired"].as_integer(), Some(1));
    assert_eq!(group["instances"].as_array().unwrap().len(), 1);
    assert_eq!(seed["instances"].as_array().unwrap().len(), 1);
    assert_eq!(
        seed["metrics"][0]["recovers_on"].as_str(),
        Some("SetDesiredCapacity ec2-manager-worker")
    );
    assert_eq!(
        scenario["expect"]["cloud"]["desired_capacity"]["ec2-manager-worker"].as_integer(),
        Some(2)
    );
    edited(&ws, "ec2-high-cpu-scale-out.rhai", |t| {
        t.replace(
            "let target = g.desired + ctx.step;",
            "let target = g.desired;",
        )
    });
    passes_then_fails(
        &ws,
        "Auto Scaling group ec2-manager-worker has desired capacity 1 (expected 2)",
    );
}

#[test]
fn a_captured_restore_test_seeds_the_backups_and_fails_a_runbook_that_leaves_the_scratch_volume() {
    let ws = Workspace::new();
    let scenario = captured_from(&ws, "backup-restore-test-clean.toml");
    let snapshots = scenario["seed"]["snapshots"].as_array().unwrap();
    // Every backup of the volume the run listed, the pending one too.
    assert_eq!(snapshots.len(), 3, "{snapshots:?}");
    assert!(
        snapshots
            .iter()
            .any(|s| s["state"].as_str() == Some("pending"))
    );
    let cloud = &scenario["expect"]["cloud"];
    for key in ["restored", "restored_volumes_deleted"] {
        assert_eq!(
            cloud[key].as_array().unwrap(),
            &[toml::Value::String("snap-0a1b2c3d4e5f60502".into())],
            "{key}"
        );
    }
    edited(&ws, "backup-restore-test.rhai", |t| {
        t.replace(
            "ec2::delete_volume(ctx.scratch, #{ timeout: \"15m\", every: \"10s\" });",
            "",
        )
    });
    passes_then_fails(
        &ws,
        "volumes restored from snap-0a1b2c3d4e5f60502 are left behind",
    );
}

#[test]
fn a_captured_failed_shift_scripts_the_pool_that_fails_under_traffic() {
    let ws = Workspace::new();
    let scenario = captured_from(&ws, "api-high-latency-shift-back.toml");
    let faults = &scenario["seed"]["faults"];
    assert_eq!(
        faults["unhealthy_with_traffic"].as_array().unwrap(),
        &[toml::Value::String("api-green".into())]
    );
    assert_eq!(
        scenario["expect"]["cloud"]["weights"]["api-blue"].as_integer(),
        Some(100)
    );
    drill_file(&ws, "drills/captured.toml", &format!("{REPO}/runbooks")).expect_code(0);
}

#[test]
fn a_run_reading_a_declared_local_program_is_captured_with_its_answers() {
    let ws = Workspace::new();
    ws.write(
        "runbook.toml",
        "[environments.box]\nbackend = \"aws\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:9\"\nmax_attempts = 1\ncommands = [\"printf\"]\n",
    );
    let runbook = |act: &str| {
        format!(
            r#"runbook(#{{ id: "box", version: "1.0.0", title: "Box", severity: "P3", commands: ["printf"] }});
containment("Read the state", |ctx| {{
    ctx.state = local::run("printf", ["degraded"], #{{ read_only: true }}).stdout;
}});
recovery("Restart when degraded", |ctx| {{
    {act}
}}, #{{ when: |ctx| ctx.state == "degraded" }});
"#
        )
    };
    ws.write(
        "runbooks/box.rhai",
        &runbook(r#"let r = local::run("printf", ["restarted"]); if r.stdout != "restarted" { fail("no restart"); }"#),
    );
    common::moto::with_credentials(ws.cmd())
        .args(&["run", "box", "--env", "box", "--transcript", "box.jsonl"])
        .output()
        .expect_code(0);
    let captured = ws.run(&["drill", "capture", "box.jsonl"]);
    captured.expect_code(0);
    let scenario: toml::Table = toml::from_str(&captured.stdout).unwrap();
    let rules = scenario["seed"]["local_commands"].as_array().unwrap();
    let answers: Vec<(&str, &str)> = rules
        .iter()
        .map(|r| {
            (
                r["match"].as_str().unwrap(),
                r["stdout"][0].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        answers,
        [("restarted", "restarted"), ("degraded", "degraded")]
    );
    ws.write("drills/captured.toml", &captured.stdout);
    ws.write("ok/box.rhai", &runbook(r#"let r = local::run("printf", ["restarted"]); if r.stdout != "restarted" { fail("no restart"); }"#));
    drill_file(&ws, "drills/captured.toml", "ok").expect_code(0);
    // The restart dropped: the captured drill expected it.
    ws.write("runbooks/box.rhai", &runbook(r#"log("not restarting");"#));
    let run = drill_file(&ws, "drills/captured.toml", "runbooks");
    run.expect_code(1);
    assert!(run.stdout.contains("local::run"), "{}", run.stdout);
}

#[test]
fn a_run_stopped_at_a_confirmation_nobody_gave_replays_stopped_there_too() {
    let ws = Workspace::new();
    let runbooks = format!("{REPO}/runbooks");
    ws.run(&[
        "run",
        "ec2-compromised-instance",
        "--runbooks",
        &runbooks,
        "--param",
        "instance_id=i-0a1b2c3d4e5f60001",
        "--param",
        "incident=2026-1130-001",
        "--transcript",
        "stopped.jsonl",
    ])
    .expect_code(3);
    let (code, report) = replay(&ws, &ws.path().join("stopped.jsonl"), &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["incident_status"], "aborted");
    assert_eq!(report["replay_status"], "aborted");
    sent_nothing(&report);
    // Dropping the confirmation changes what the run does: it would now terminate.
    let file = edited(&ws, "ec2-compromised-instance.rhai", |t| {
        t.replace(
            r#"#{ confirm: "TERMINATE", timeout: "12m" }"#,
            r#"#{ timeout: "12m" }"#,
        )
    });
    let (code, report) = replay(&ws, &ws.path().join("stopped.jsonl"), &["--runbook", &file]);
    assert_eq!(code, 1, "{report:#}");
    let k = kinds(&report);
    assert!(
        k.contains(&("unrecorded_write".into(), "Terminate the instance".into())),
        "{k:?}"
    );
    assert!(
        k.contains(&("step_status".into(), "Terminate the instance".into())),
        "{k:?}"
    );
}

/// `ec2-compromised-instance` on a sim whose state persists across processes (so a resume acts
/// on the cloud the interrupted run left), with `extra` flags and environment.
fn compromised_run(ws: &Workspace, verb: &[&str], env: Option<(&str, &str)>) -> common::Run {
    let runbooks = format!("{REPO}/runbooks");
    let mut args: Vec<&str> = verb.to_vec();
    args.extend(["--runbooks", &runbooks, "--no-interactive"]);
    if verb[0] == "run" {
        args.extend([
            "ec2-compromised-instance",
            "--env",
            "crash",
            "--param",
            "instance_id=i-0a1b2c3d4e5f60001",
            "--param",
            "incident=2026-1130-017",
            "--transcript",
            "t.jsonl",
        ]);
    }
    let mut cmd = ws.cmd().args(&args);
    if let Some((k, v)) = env {
        cmd = cmd.env(k, v);
    }
    cmd.output()
}

#[test]
fn a_run_interrupted_twice_and_resumed_replays_as_the_one_run_it_was() {
    let ws = Workspace::new();
    ws.write(
        "runbook.toml",
        "[environments.crash]\nbackend = \"sim\"\nstate = \"sim-state.json\"\n",
    );
    // Killed in the third step, resumed without `--yes` (so it stops at the confirmation to
    // terminate), then resumed with it.
    let killed = compromised_run(
        &ws,
        &["run", "--yes"],
        Some(("RUNBOOK_TEST_KILL_AFTER_EVENTS", "14")),
    );
    assert_ne!(killed.code, 0);
    compromised_run(&ws, &["resume", "t.jsonl"], None).expect_code(3);
    compromised_run(&ws, &["resume", "t.jsonl", "--yes"], None).expect_code(0);
    let transcript = ws.path().join("t.jsonl");
    let ev = common::events(&transcript);
    assert_eq!(common::of_type(&ev, "run_resumed").len(), 2);
    let (code, report) = replay(&ws, &transcript, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["matches"], true);
    assert_eq!(report["incident_status"], "ok");
    assert_eq!(report["replay_status"], "ok");
    sent_nothing(&report);
    // Captured as a drill, it is the run that finished: the confirmation the resume gave is given.
    let captured = ws.run(&["drill", "capture", "t.jsonl"]);
    captured.expect_code(0);
    assert!(
        captured.stdout.contains("yes = true"),
        "{}",
        captured.stdout
    );
    ws.write("drills/resumed.toml", &captured.stdout);
    drill_file(&ws, "drills/resumed.toml", &format!("{REPO}/runbooks")).expect_code(0);

    // A change after the last resume is named at its step, and nothing before it diverges.
    let file = edited(&ws, "ec2-compromised-instance.rhai", |t| {
        t.replace(
            "${ctx.instance_id} contained (snapshots",
            "${ctx.instance_id} isolated (snapshots",
        )
    });
    let (code, report) = replay(&ws, &transcript, &["--runbook", &file]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        kinds(&report),
        [(
            "different_arguments".into(),
            "Wait for the replacement's status checks".into()
        )]
    );
}

#[test]
fn an_approval_that_never_came_replays_as_never_coming_not_as_a_divergence() {
    let ws = Workspace::new();
    ws.write(
        "runbooks/confirm.rhai",
        &format!(
            "{}eradication(\"Terminate\", |ctx| {{ notes::append(\"terminated\"); }}, #{{ confirm: \"TERMINATE\" }});\n",
            common::header("confirm")
        ),
    );
    // Nobody approved within the timeout: the step failed.
    ws.run(&[
        "run",
        "confirm",
        "--approval-timeout",
        "300ms",
        "--transcript",
        "timed-out.jsonl",
    ])
    .expect_code(1);
    let (code, report) = replay(&ws, &ws.path().join("timed-out.jsonl"), &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["matches"], true);
    assert_eq!(report["replay_status"], "failed");
    sent_nothing(&report);

    // The run ended (killed) while still waiting: the replay stops there too.
    let mut child = ws
        .cmd()
        .args(&[
            "run",
            "confirm",
            "--approval-timeout",
            "10m",
            "--transcript",
            "waiting.jsonl",
        ])
        .spawn();
    let request = ws.path().join("waiting.approvals/1.request.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !request.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no approval request appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (code, report) = replay(&ws, &ws.path().join("waiting.jsonl"), &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["matches"], true);
    assert_eq!(report["incident_status"], "unfinished");
    assert!(
        report["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("still waiting for its approval")),
        "{report:#}"
    );
    sent_nothing(&report);
    // A version that no longer asks runs the step: that is a divergence.
    let file = ws.write(
        "other/confirm.rhai",
        &format!(
            "{}eradication(\"Terminate\", |ctx| {{ notes::append(\"terminated\"); }});\n",
            common::header("confirm")
        ),
    );
    let (code, report) = replay(
        &ws,
        &ws.path().join("timed-out.jsonl"),
        &["--runbook", &file.display().to_string()],
    );
    assert_eq!(code, 1, "{report:#}");
    assert!(
        kinds(&report).contains(&("unrecorded_write".into(), "Terminate".into())),
        "{report:#}"
    );
}

#[test]
fn the_postmortem_fills_the_resolution_template_from_the_run() {
    let ws = Workspace::new();
    let ts = drill_transcripts(
        &ws,
        &[
            "api-high-latency-shift.toml",
            "ec2-compromised-instance-clean.toml",
        ],
    );
    let render = |t: &std::path::Path| {
        let md = ws.run(&[
            "transcript",
            "render",
            &t.display().to_string(),
            "--format",
            "md",
        ]);
        md.expect_code(0);
        md.stdout
    };
    // The runbook posted its own resolution: its words.
    let md = render(&ts[0]);
    assert!(
        md.contains("Root Cause: API latency (p95 850.0 ms)")
            && md.contains("Resolution: shifted traffic from blue to green"),
        "{md}"
    );
    // It did not: what it changed, and where.
    let md = render(&ts[1]);
    assert!(
        md.contains("Root Cause: (to be completed in the post-incident review)")
            && md.contains("Resolution: ec2-compromised-instance ran to completion: `ec2::isolate` (i-0a1b2c3d4e5f60001")
            && md.contains("`ec2::terminate` (i-0a1b2c3d4e5f60001)"),
        "{md}"
    );
}

const MOTO_SHIFT: &str = r#"runbook(#{ id: "shift", version: "1.0.0", title: "Blue/green shift", severity: "P3",
    params: #{ listener: #{ type: "string", required: true } } });
containment("Shift traffic to green", |ctx| {
    ctx.before = elb::listener(ctx.listener).weights;
    let r = elb::shift(ctx.listener, #{ to: "api-green", steps: [50, 100], gate: "1s", every: "1s" });
    ctx.after = r.weights;
});
"#;

#[test]
fn a_traffic_shift_on_moto_captured_as_a_drill_passes_on_the_sim_and_fails_a_shift_that_stops_halfway()
 {
    let moto = Moto::start();
    let (blue, worker) = moto.seed();
    let listener = crate::cloud_actions::moto_listener(&moto, &blue, &worker);
    let ws = moto.workspace("123456789012");
    ws.write("runbooks/shift.rhai", MOTO_SHIFT);
    common::moto::with_credentials(ws.cmd())
        .args(&[
            "run",
            "shift",
            "--env",
            "moto",
            "--param",
            &format!("listener={listener}"),
            "--transcript",
            "incident.jsonl",
        ])
        .output()
        .expect_code(0);
    drop(moto);
    let captured = ws.run(&["drill", "capture", "incident.jsonl"]);
    captured.expect_code(0);
    let scenario: toml::Table = toml::from_str(&captured.stdout).unwrap();
    // The emulator's listener, with its own ARN and the weights the run read before shifting.
    let l = &scenario["seed"]["listeners"][0];
    assert_eq!(l["arn"].as_str(), Some(listener.as_str()));
    assert_eq!(l["forward"][0]["weight"].as_integer(), Some(100));
    let green = scenario["seed"]["target_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"].as_str() == Some("api-green"))
        .unwrap();
    assert_eq!(
        green["targets"].as_array().unwrap(),
        &[toml::Value::String(worker.clone())]
    );
    assert_eq!(
        scenario["expect"]["cloud"]["weights"]["api-green"].as_integer(),
        Some(100)
    );
    ws.write("drills/captured.toml", &captured.stdout);
    ws.write("good/shift.rhai", MOTO_SHIFT);
    let run = drill_file(&ws, "drills/captured.toml", "good");
    run.expect_code(0);
    ws.write(
        "runbooks/shift.rhai",
        &MOTO_SHIFT.replace("steps: [50, 100]", "steps: [50]"),
    );
    let run = drill_file(&ws, "drills/captured.toml", "runbooks");
    run.expect_code(1);
    assert!(
        run.stdout
            .contains("target group api-green has weight [50] (expected 100)"),
        "{}",
        run.stdout
    );
}

/// Runs the drill scenario `scenario` (TOML text) with the runbooks of the workspace folder
/// `runbooks` and returns its transcript: the "incident" a capture test starts from.
fn incident_from(ws: &Workspace, scenario: &str, runbooks: &str) -> std::path::PathBuf {
    ws.write("incident/scenario.toml", scenario);
    ws.run(&[
        "drill",
        "incident/scenario.toml",
        "--runbooks",
        runbooks,
        "--out",
        "incident/out",
        "--results",
        "incident/results",
    ])
    .expect_code(0);
    let mut out: Vec<std::path::PathBuf> = std::fs::read_dir(ws.path().join("incident/out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert_eq!(out.len(), 1, "{out:?}");
    out.remove(0)
}

/// `runbook drill capture` of `transcript`, saved as `drills/captured.toml`.
fn capture(ws: &Workspace, transcript: &std::path::Path) -> (String, toml::Table) {
    let captured = ws.run(&["drill", "capture", &transcript.display().to_string()]);
    captured.expect_code(0);
    ws.write("drills/captured.toml", &captured.stdout);
    let scenario = toml::from_str(&captured.stdout).unwrap();
    (captured.stdout, scenario)
}

const FLAKY_READ: &str = r#"runbook(#{ id: "flaky-read", version: "1.0.0", title: "Tag the worker", severity: "P3",
    params: #{ instance_id: #{ type: "string", required: true } } });
containment("Read the worker", |ctx| {
    ctx.state = ec2::describe(ctx.instance_id).state;
}, #{ retries: 1, backoff: "1s" });
containment("Tag the worker", |ctx| {
    ec2::tag(ctx.instance_id, #{ Checked: "yes" });
});
"#;

#[test]
fn a_call_throttled_and_then_retried_is_scripted_at_that_call_and_fails_a_runbook_that_no_longer_retries()
 {
    let ws = Workspace::new();
    ws.write("good/flaky-read.rhai", FLAKY_READ);
    // The incident: the read is throttled past the SDK's three attempts once, and the step's
    // retry goes through.
    let incident = incident_from(
        &ws,
        r#"runbook = "flaky-read@1.0.0"
[params]
instance_id = "i-0a1b2c3d4e5f60005"
[[faults.calls]]
operation = "DescribeInstances"
instance = "i-0a1b2c3d4e5f60005"
error = "RequestLimitExceeded"
message = "Request limit exceeded."
[expect]
status = "ok"
"#,
        "good",
    );
    let (text, scenario) = capture(&ws, &incident);
    // Scripted, not left in a comment.
    assert!(!text.contains("# not scripted"), "{text}");
    let faults = &scenario["seed"]["faults"];
    assert!(faults.get("errors").is_none(), "{text}");
    let call = &faults["calls"][0];
    assert_eq!(call["operation"].as_str(), Some("DescribeInstances"));
    assert_eq!(call["instance"].as_str(), Some("i-0a1b2c3d4e5f60005"));
    assert_eq!(call["nth"].as_integer(), Some(1));
    assert_eq!(call["attempts"].as_integer(), Some(1));
    assert_eq!(call["error"].as_str(), Some("RequestLimitExceeded"));
    assert_eq!(
        scenario["expect"]["steps"]["Read the worker"].as_str(),
        Some("ok")
    );
    let run = drill_file(&ws, "drills/captured.toml", "good");
    run.expect_code(0);
    assert!(run.stdout.contains("pass  captured"), "{}", run.stdout);
    // Without the step's retry the same throttled call fails the run.
    ws.write(
        "runbooks/flaky-read.rhai",
        &FLAKY_READ.replace(r#"#{ retries: 1, backoff: "1s" }"#, "#{}"),
    );
    let run = drill_file(&ws, "drills/captured.toml", "runbooks");
    run.expect_code(1);
    assert!(
        run.stdout.contains("FAIL")
            && run
                .stdout
                .contains("\"Read the worker\" failed: Request limit exceeded."),
        "{}",
        run.stdout
    );
}

const ROLL_WORKERS: &str = r#"runbook(#{ id: "roll-workers", version: "1.0.0", title: "Roll the workers", severity: "P3" });
recovery("Refresh the workers", |ctx| {
    ctx.before = autoscaling::group("ec2-manager-worker").desired;
    autoscaling::suspend("ec2-manager-worker", ["AlarmNotification"]);
    try {
        ctx.refresh = autoscaling::refresh("ec2-manager-worker", #{ every: "15s" }).status;
    } catch (e) {
        // The incident: a refresh that failed left the alarms muted until someone noticed.
        ctx.refresh = e.code;
    }
    autoscaling::resume("ec2-manager-worker", ["AlarmNotification"]);
});
"#;

#[test]
fn a_failed_instance_refresh_is_scripted_to_fail_again_and_fails_a_runbook_that_stops_at_it() {
    let ws = Workspace::new();
    ws.write("good/roll-workers.rhai", ROLL_WORKERS);
    let incident = incident_from(
        &ws,
        r#"runbook = "roll-workers@1.0.0"
[[faults.refresh_failures]]
group = "ec2-manager-worker"
status = "Cancelled"
percent = 25
reason = "Instances failed to pass their health checks"
[expect]
status = "ok"
"#,
        "good",
    );
    let (text, scenario) = capture(&ws, &incident);
    let f = &scenario["seed"]["faults"]["refresh_failures"][0];
    assert_eq!(f["group"].as_str(), Some("ec2-manager-worker"), "{text}");
    assert_eq!(f["status"].as_str(), Some("Cancelled"));
    assert_eq!(f["percent"].as_integer(), Some(25));
    // The refresh's end is not an error of the call that started it.
    assert!(scenario["seed"]["faults"].get("errors").is_none(), "{text}");
    ws.write("runbooks/roll-workers.rhai", &ROLL_WORKERS.replace(
        "    try {\n        ctx.refresh = autoscaling::refresh(\"ec2-manager-worker\", #{ every: \"15s\" }).status;\n    } catch (e) {\n        // The incident: a refresh that failed left the alarms muted until someone noticed.\n        ctx.refresh = e.code;\n    }\n",
        "    ctx.refresh = autoscaling::refresh(\"ec2-manager-worker\", #{ every: \"15s\" }).status;\n",
    ));
    assert!(
        !std::fs::read_to_string(ws.path().join("runbooks/roll-workers.rhai"))
            .unwrap()
            .contains("try")
    );
    let run = drill_file(&ws, "drills/captured.toml", "good");
    run.expect_code(0);
    assert!(run.stdout.contains("pass  captured"), "{}", run.stdout);
    let run = drill_file(&ws, "drills/captured.toml", "runbooks");
    run.expect_code(1);
    assert!(
        run.stdout.contains("FAIL") && run.stdout.contains("Cancelled at 25%"),
        "{}",
        run.stdout
    );
}

const MOTO_SCALE_OUT: &str = r#"runbook(#{ id: "workers-scale-out", version: "1.0.0", title: "Scale out the workers", severity: "P3" });
containment("Scale out the workers", |ctx| {
    let g = autoscaling::group("ec2-manager-worker");
    ctx.suspended = g.suspended;
    // What the incident exposed: a deploy had left `Launch` suspended, so a scale-out launched nothing.
    if g.suspended.contains("Launch") {
        autoscaling::resume("ec2-manager-worker", ["Launch"]);
    }
    ctx.desired = autoscaling::set_desired("ec2-manager-worker", 2, #{ timeout: "60s", every: "1s" }).desired;
});
"#;

/// moto keeps a group's suspended processes but launches whatever they say (it ignores a
/// suspended `Launch`), and starts its instances `InService` at once: on moto the broken runbook
/// would pass. The sim honours a suspended `Launch`, which is what makes the captured drill fail it.
/// moto (5.2) does not implement `StartInstanceRefresh`, so a failed refresh is captured from a
/// sim run (`a_failed_instance_refresh_is_scripted_to_fail_again_...`).
#[test]
fn an_auto_scaling_run_on_moto_captured_as_a_drill_passes_on_the_sim_and_fails_a_runbook_that_no_longer_resumes_launch()
 {
    let moto = Moto::start();
    let (blue, _) = moto.seed();
    moto.scaling_group("ec2-manager-worker", &blue);
    common::moto::block(async {
        moto.autoscaling()
            .suspend_processes()
            .auto_scaling_group_name("ec2-manager-worker")
            .scaling_processes("Launch")
            .send()
            .await
            .unwrap();
    });
    let ws = moto.workspace("123456789012");
    ws.write("runbooks/workers-scale-out.rhai", MOTO_SCALE_OUT);
    common::moto::with_credentials(ws.cmd())
        .args(&[
            "run",
            "workers-scale-out",
            "--env",
            "moto",
            "--transcript",
            "incident.jsonl",
        ])
        .output()
        .expect_code(0);
    drop(moto);
    let (text, scenario) = capture(&ws, std::path::Path::new("incident.jsonl"));
    // The group as the run first read it: one instance, Launch suspended; its outcome expected.
    let g = &scenario["seed"]["auto_scaling_groups"][0];
    assert_eq!(g["name"].as_str(), Some("ec2-manager-worker"), "{text}");
    assert_eq!(
        (
            g["min"].as_integer(),
            g["max"].as_integer(),
            g["desired"].as_integer()
        ),
        (Some(1), Some(4), Some(1))
    );
    assert_eq!(g["instances"].as_array().unwrap().len(), 1);
    assert_eq!(
        g["suspended"].as_array().unwrap(),
        &[toml::Value::String("Launch".into())]
    );
    assert_eq!(
        scenario["expect"]["cloud"]["desired_capacity"]["ec2-manager-worker"].as_integer(),
        Some(2)
    );
    let calls: Vec<&str> = scenario["expect"]["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(calls, ["autoscaling::resume", "autoscaling::set_desired"]);
    ws.write("good/workers-scale-out.rhai", MOTO_SCALE_OUT);
    let run = drill_file(&ws, "drills/captured.toml", "good");
    run.expect_code(0);
    assert!(run.stdout.contains("pass  captured"), "{}", run.stdout);
    // Broken the way the incident exposed: the scale-out without resuming Launch.
    ws.write(
        "runbooks/workers-scale-out.rhai",
        &MOTO_SCALE_OUT.replace(
            "        autoscaling::resume(\"ec2-manager-worker\", [\"Launch\"]);\n",
            "",
        ),
    );
    let run = drill_file(&ws, "drills/captured.toml", "runbooks");
    run.expect_code(1);
    assert!(
        run.stdout.contains("FAIL") && run.stdout.contains("1 of 2 InService"),
        "{}",
        run.stdout
    );
}
