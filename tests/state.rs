//! Shared state (`[state]`): two `runbook serve` replicas on one DynamoDB table (moto's server
//! on loopback) share their guardrails; target locks refuse a second run on a target.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use common::Workspace;
use common::moto::{Moto, block, with_credentials};
use common::serve::{Served, block_on, client, send};
use serde_json::{Value, json};

const TOKEN: &str = "am-token-5e02b7";
const ADMIN: &str = "admin-token-91c4";

const TAG: &str = r#"runbook(#{ id: "tag-target", version: "1.0.0", title: "Tag the target", severity: "P2",
    params: #{ instance_id: #{ type: "string", required: true, target: true },
               pause: #{ type: "string", "default": "0s" } } });
containment("Mark the instance", |ctx| {
    sleep(ctx.pause);
    ec2::tag(ctx.instance_id, #{ Remediated: "true" });
});
"#;

const ROUTE: &str = r#"
[[route]]
name = "cpu"
alert = "ec2-cpu-high"
runbook = "tag-target@1.0.0"
environment = "sim"
params = { instance_id = "{labels.instance_id}", pause = "{labels.pause|0s}" }
target = "{labels.instance_id}"
"#;

/// `/healthz` reads the breakers from the table: a test machine running every test at once
/// can make moto slower than the 800 ms default, and a test that reads the breakers there must
/// not see "the table did not answer" instead. 4 s is the most hooks.toml allows.
const HEALTH_TIMEOUT: &str = "health_timeout = \"4s\"";

/// One replica's (or one operator's) workspace: the runbook, the sim, `[state]` as given, and
/// hooks.toml with `guardrails` lines.
fn workspace(state: &str, guardrails: &str) -> Workspace {
    workspace_cooling(state, guardrails, "10m")
}

/// [`workspace`] with the global `cooldown` given.
fn workspace_cooling(state: &str, guardrails: &str, cooldown: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write("runbooks/tag-target.rhai", TAG);
    ws.write(
        "runbook.toml",
        &format!("default = \"sim\"\n\n[environments.sim]\nbackend = \"sim\"\n\n{state}\n"),
    );
    ws.write(
        "hooks.toml",
        &format!(
            "[server]\nworkers = 2\nqueue = 64\ndrain = \"1s\"\n{HEALTH_TIMEOUT}\n\n[guardrails]\ncooldown = \"{cooldown}\"\ndedupe_window = \"10m\"\n{guardrails}\n\n[escalation]\nchannel = \"#oncall\"\n{ROUTE}"
        ),
    );
    ws
}

fn aws_state(moto: &Moto) -> String {
    format!(
        "[state]\nbackend = \"aws\"\ntable = \"runbook-state\"\nbucket = \"runbook-transcripts\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n",
        moto.endpoint()
    )
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("RUNBOOK_ALERTMANAGER_TOKEN", TOKEN),
        ("RUNBOOK_ADMIN_TOKEN", ADMIN),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// Two replicas on one table (made by `runbook state init`), each in a workspace of its own as
/// on two hosts.
fn two_replicas(moto: &Moto, guardrails: &str) -> (Vec<Workspace>, Vec<Served>) {
    two_replicas_cooling(moto, guardrails, "10m")
}

/// [`two_replicas`] with the global `cooldown` given.
fn two_replicas_cooling(
    moto: &Moto,
    guardrails: &str,
    cooldown: &str,
) -> (Vec<Workspace>, Vec<Served>) {
    let workspaces = vec![
        workspace_cooling(&aws_state(moto), guardrails, cooldown),
        workspace_cooling(&aws_state(moto), guardrails, cooldown),
    ];
    let init = with_credentials(workspaces[0].cmd().args(&["state", "init"])).output();
    assert_eq!(init.code, 0, "{}{}", init.stdout, init.stderr);
    assert!(init.stdout.contains("dynamodb:PutItem"), "{}", init.stdout);
    let replicas = workspaces
        .iter()
        .map(|ws| {
            let mut s = Served::start(ws, &env());
            s.admin = Some(ADMIN.into());
            s
        })
        .collect();
    (workspaces, replicas)
}

fn alert(instance: &str, labels: &[(&str, &str)]) -> Vec<u8> {
    let mut l = serde_json::Map::new();
    l.insert("alertname".into(), json!("ec2-cpu-high"));
    l.insert("instance_id".into(), json!(instance));
    for (k, v) in labels {
        l.insert(k.to_string(), json!(v));
    }
    serde_json::to_vec(
        &json!({ "version": "4", "status": "firing", "receiver": "runbook",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
        "groupKey": "{}", "truncatedAlerts": 0,
        "alerts": [{ "status": "firing", "labels": l, "annotations": {},
                     "startsAt": "2026-11-23T10:30:00Z", "fingerprint": "" }] }),
    )
    .unwrap()
}

/// Sends every (replica, body) at once; returns each alert's (outcome, reason) in order.
fn send_all(sends: Vec<(&Served, Vec<u8>)>) -> Vec<(String, String)> {
    let auth = format!("Bearer {TOKEN}");
    block_on(async {
        let client = client();
        let futures = sends.into_iter().map(|(replica, body)| {
            let (client, url, auth) = (
                client.clone(),
                replica.url("/hooks/alertmanager"),
                auth.clone(),
            );
            async move {
                let headers = [
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ];
                let (status, body) =
                    send(&client, reqwest::Method::POST, &url, &headers, body).await;
                assert_eq!(status, 200, "{body}");
                let a = &body["alerts"][0];
                (
                    a["outcome"].as_str().unwrap_or_default().to_string(),
                    a["reason"].as_str().unwrap_or_default().to_string(),
                )
            }
        });
        futures_util::future::join_all(futures).await
    })
}

fn count(outcomes: &[(String, String)], outcome: &str, reason: &str) -> usize {
    outcomes
        .iter()
        .filter(|(o, r)| o == outcome && (reason.is_empty() || r == reason))
        .count()
}

fn runs(replica: &Served) -> Vec<Value> {
    let (status, body) = replica.get("/runs?limit=1000");
    assert_eq!(status, 200, "{body}");
    body["runs"].as_array().cloned().unwrap_or_default()
}

/// The runs the replicas list between them (each lists the team's; its own always).
fn run_ids(replicas: &[Served]) -> BTreeSet<String> {
    replicas
        .iter()
        .flat_map(runs)
        .filter_map(|r| r["run_id"].as_str().map(str::to_string))
        .collect()
}

/// Polls `f` until it returns Some (a condition on the replicas), at most 30 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The journal lines the table holds for the replica's journal file, in order.
fn table_journal(moto: &Moto, journal_file: &str) -> Vec<String> {
    let stem = std::path::Path::new(journal_file)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let ddb = moto.dynamodb();
    let out = block(async move {
        ddb.query()
            .table_name("runbook-state")
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("JOURNAL#{stem}")))
            .consistent_read(true)
            .send()
            .await
    })
    .unwrap();
    out.items()
        .iter()
        .filter_map(|i| i.get("lines")?.as_s().ok())
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

#[test]
fn the_same_alert_sent_to_two_replicas_at_once_starts_exactly_one_run() {
    let moto = Moto::start();
    let (_ws, replicas) = two_replicas(&moto, "");
    for round in 0..5 {
        let instance = format!("i-0a1b2c3d4e5f6000{round}");
        let outcomes = send_all(vec![
            (&replicas[0], alert(&instance, &[])),
            (&replicas[1], alert(&instance, &[])),
        ]);
        assert_eq!(count(&outcomes, "accepted", ""), 1, "{outcomes:?}");
        assert_eq!(count(&outcomes, "deduplicated", ""), 1, "{outcomes:?}");
    }
    assert_eq!(
        run_ids(&replicas).len(),
        5,
        "one run per alert across both replicas"
    );
}

#[test]
fn with_no_cooldown_distinct_alerts_on_one_target_at_both_replicas_at_once_all_run() {
    // Found by benches/hooks_load.rs on two replicas: with `cooldown = "0s"` the shared gate
    // still held a cooldown until "now", so an alert whose arrival time was a moment earlier
    // than one admitted before it on the other replica was refused by a cooldown of zero.
    let moto = Moto::start();
    let (_ws, replicas) = two_replicas_cooling(
        &moto,
        "max_runs_per_hour = 1000\nmax_runs_per_hour_per_runbook = 1000",
        "0s",
    );
    let sends: Vec<(&Served, Vec<u8>)> = (0..24)
        .map(|i| {
            let n = i.to_string();
            (
                &replicas[i % 2],
                alert("i-0a1b2c3d4e5f60001", &[("n", n.as_str())]),
            )
        })
        .collect();
    let outcomes = send_all(sends);
    assert_eq!(count(&outcomes, "accepted", ""), 24, "{outcomes:?}");
    assert_eq!(run_ids(&replicas).len(), 24);
}

#[test]
fn a_flood_split_across_two_replicas_keeps_the_global_hourly_limit_exactly() {
    let moto = Moto::start();
    let (_ws, replicas) = two_replicas(
        &moto,
        "max_runs_per_hour = 7\nmax_runs_per_hour_per_runbook = 100",
    );
    let sends: Vec<(&Served, Vec<u8>)> = (0..40)
        .map(|i| (&replicas[i % 2], alert(&format!("i-{i:017x}"), &[])))
        .collect();
    let outcomes = send_all(sends);
    assert_eq!(
        count(&outcomes, "accepted", ""),
        7,
        "exactly the limit, not twice it: {outcomes:?}"
    );
    let tripped = count(&outcomes, "refused", "rate_limited");
    assert!(
        tripped >= 1,
        "the run over the limit trips the breaker: {outcomes:?}"
    );
    assert_eq!(
        tripped + count(&outcomes, "refused", "breaker_open"),
        33,
        "{outcomes:?}"
    );
    assert_eq!(run_ids(&replicas).len(), 7);
}

#[test]
fn a_runbook_s_breaker_opened_on_one_replica_refuses_that_runbook_on_the_other() {
    // Admission reads the two breakers that can refuse it by key (the overall one and its
    // runbook's); this pins the runbook's.
    let moto = Moto::start();
    let (_ws, replicas) = two_replicas(
        &moto,
        "max_runs_per_hour = 100\nmax_runs_per_hour_per_runbook = 1",
    );
    let first = send_all(vec![(&replicas[0], alert("i-0000000000000001a", &[]))]);
    assert_eq!(first[0].0, "accepted", "{first:?}");
    let tripped = send_all(vec![(&replicas[0], alert("i-0000000000000001b", &[]))]);
    assert_eq!(tripped[0].1, "rate_limited", "{tripped:?}");
    let other = send_all(vec![(&replicas[1], alert("i-0000000000000001c", &[]))]);
    assert_eq!(
        other[0],
        ("refused".to_string(), "breaker_open".to_string()),
        "the other replica sees the runbook's breaker"
    );
    assert_eq!(breakers_in_health(&replicas[1]), ["tag-target"]);
}

#[test]
fn health_answers_state_unavailable_within_its_timeout_while_the_table_does_not_answer() {
    let moto = Moto::start();
    let ws = workspace(&aws_state(&moto), "");
    let hooks = ws.read("hooks.toml");
    ws.write(
        "hooks.toml",
        &hooks.replacen(HEALTH_TIMEOUT, "health_timeout = \"2s\"", 1),
    );
    let init = with_credentials(ws.cmd().args(&["state", "init"])).output();
    assert_eq!(init.code, 0, "{}{}", init.stdout, init.stderr);
    let replica = Served::start(&ws, &env());
    let (status, health) = replica.get("/healthz");
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{health}");
    assert_eq!(health["state_error"], Value::Null);
    {
        let _paused = moto.pause();
        // Without the deadline this waits on the table for the client's whole 30 s and fails.
        let (status, health) = replica.get("/healthz");
        assert_eq!(status, 503, "{health}");
        assert_eq!(health["status"], "state_unavailable");
        assert_eq!(
            health["state_error"],
            "the state table did not answer within 2s"
        );
        assert_eq!(
            health["breakers"],
            Value::Null,
            "unknown, not this replica's guess"
        );
    }
    let (status, health) = replica.get("/healthz");
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{health}");
    assert!(
        replica
            .log_text()
            .contains("the state table did not answer within 2s (server.health_timeout)"),
        "{}",
        replica.log_text()
    );
}

/// The scopes of the breakers a replica's `/healthz` shows open.
fn breakers_in_health(replica: &Served) -> Vec<String> {
    let (_, health) = replica.get("/healthz");
    let open = health["breakers"].as_object().cloned().unwrap_or_default();
    open.keys().cloned().collect()
}

#[test]
fn a_breaker_opened_on_one_replica_refuses_on_the_other_until_reset() {
    let moto = Moto::start();
    let (ws, replicas) = two_replicas(&moto, "max_runs_per_hour = 1");
    let first = send_all(vec![(&replicas[0], alert("i-0000000000000000a", &[]))]);
    assert_eq!(first[0].0, "accepted");
    let tripped = send_all(vec![(&replicas[0], alert("i-0000000000000000b", &[]))]);
    assert_eq!(tripped[0].1, "rate_limited", "{tripped:?}");
    let other = send_all(vec![(&replicas[1], alert("i-0000000000000000c", &[]))]);
    assert_eq!(
        other[0],
        ("refused".to_string(), "breaker_open".to_string()),
        "the other replica sees the breaker"
    );
    let breakers = breakers_in_health;
    assert_eq!(breakers(&replicas[1]), ["*"], "its health shows it too");
    // Reset on the second replica closes it for the first.
    let auth = format!("Bearer {ADMIN}");
    let (status, body) = replicas[1].post(
        "/admin/breaker/reset",
        &[("authorization", auth.as_str())],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["closed"], json!(["*"]));
    assert!(
        breakers(&replicas[0]).is_empty(),
        "closed for the first too"
    );
    let again = send_all(vec![(&replicas[0], alert("i-0000000000000000d", &[]))]);
    assert_eq!(again[0].0, "accepted", "{again:?}");
    // Tripped again, `runbook hook --reset-breakers` on a host of the team closes it for both
    // running replicas.
    let tripped = send_all(vec![(&replicas[1], alert("i-0000000000000000e", &[]))]);
    assert_eq!(tripped[0].1, "rate_limited", "{tripped:?}");
    let reset = with_credentials(ws[1].cmd().args(&["hook", "--reset-breakers"])).output();
    assert_eq!(reset.code, 0, "{}", reset.stderr);
    assert!(reset.stdout.contains("closed: *"), "{}", reset.stdout);
    assert!(breakers(&replicas[0]).is_empty() && breakers(&replicas[1]).is_empty());
    let after = send_all(vec![(&replicas[0], alert("i-0000000000000000f", &[]))]);
    assert_eq!(after[0].0, "accepted", "{after:?}");
}

#[test]
fn get_runs_on_either_replica_lists_both_replicas_runs_and_the_journal_is_in_the_table() {
    let moto = Moto::start();
    let (ws, replicas) = two_replicas(&moto, "");
    let run_of = |replica: &Served, instance: &str| {
        let auth = format!("Bearer {TOKEN}");
        let headers = [("authorization", auth.as_str())];
        let (status, body) = replica.post("/hooks/alertmanager", &headers, &alert(instance, &[]));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["alerts"][0]["outcome"], "accepted", "{body}");
        body["alerts"][0]["run_id"].as_str().unwrap().to_string()
    };
    let ids = [
        run_of(&replicas[0], "i-0a1b2c3d4e5f60001"),
        run_of(&replicas[1], "i-0a1b2c3d4e5f60002"),
    ];
    for replica in &replicas {
        let listed = eventually("both runs listed as ok on each replica", || {
            let runs = runs(replica);
            let ok = |id: &str| {
                runs.iter()
                    .find(|r| r["run_id"] == id && r["status"] == "ok")
            };
            Some((ok(&ids[0])?.clone(), ok(&ids[1])?.clone()))
        });
        assert_ne!(
            listed.0["replica"], listed.1["replica"],
            "each names the replica that ran it: {listed:?}"
        );
        // One run by id, whichever replica ran it.
        for id in &ids {
            let (status, body) = replica.get(&format!("/runs/{id}"));
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["run_id"], json!(id));
            assert_eq!(body["status"], "ok");
        }
    }
    // Each replica's journal is in the table line for line, chain hashes and all.
    for (replica, ws) in replicas.iter().zip(&ws) {
        let (_, health) = replica.get("/healthz");
        let file = ws.path().join(health["journal"].as_str().unwrap());
        let file = file.to_string_lossy().into_owned();
        let lines = eventually("the table holds every line of the journal", || {
            let on_disk: Vec<String> = std::fs::read_to_string(&file)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            (table_journal(&moto, &file) == on_disk).then_some(on_disk)
        });
        assert!(
            lines.iter().any(|l| l.contains("\"run_finished\"")),
            "{lines:?}"
        );
    }
}

#[test]
fn a_journal_the_table_cannot_store_refuses_alerts_with_503_and_is_unhealthy() {
    let moto = Moto::start();
    let (ws, replicas) = two_replicas(&moto, "");
    let before = send_all(vec![(&replicas[0], alert("i-0a1b2c3d4e5f6b001", &[]))]);
    assert_eq!(before[0].0, "accepted", "{before:?}");
    // The table goes away: nothing is decided without it, and no answer claims a record.
    drop(moto);
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str())];
    let (status, body) = replicas[0].post(
        "/hooks/alertmanager",
        &headers,
        &alert("i-0a1b2c3d4e5f6b002", &[]),
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["alerts"][0]["outcome"], "refused", "{body}");
    let (status, health) = replicas[0].get("/healthz");
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "journal_unwritable", "{health}");
    assert_eq!(health["journal_writable"], false);
    // And `GET /runs`, which answers for the team, says it cannot instead of a partial list;
    // a breaker reset that cannot reach the table closes nothing and says so.
    let (status, body) = replicas[0].get("/runs");
    assert_eq!(status, 503, "{body}");
    let admin = format!("Bearer {ADMIN}");
    let (status, body) = replicas[0].post(
        "/admin/breaker/reset",
        &[("authorization", admin.as_str())],
        b"",
    );
    assert_eq!(status, 503, "{body}");
    let reset = with_credentials(ws[0].cmd().args(&["hook", "--reset-breakers"])).output();
    assert_ne!(reset.code, 0, "{}", reset.stdout);
    assert!(
        reset.stderr.contains("could not be reset"),
        "{}",
        reset.stderr
    );
}

#[test]
fn a_cli_run_on_a_target_serve_is_remediating_is_refused_naming_the_holder() {
    // The local backend: one host, lock files beside runbook.toml.
    let ws = workspace("", "");
    let mut served = Served::start(&ws, &env());
    served.admin = Some(ADMIN.into());
    let target = "i-0a1b2c3d4e5f60001";
    let outcomes = send_all(vec![(&served, alert(target, &[("pause", "10m")]))]);
    assert_eq!(outcomes[0].0, "accepted", "{outcomes:?}");
    served.wait_running(1, Duration::from_secs(30));
    let instance = format!("instance_id={target}");
    let holder = format!("target {target} (sim) is locked by hook:cpu (run ");
    // A run on the held target is refused naming the holder; the stderr of that refusal.
    let refused_with = |extra: &[&str]| {
        let mut args = vec!["run", "tag-target", "-p", &instance, "--no-interactive"];
        args.extend_from_slice(extra);
        let out = ws.run(&args);
        assert_ne!(out.code, 0, "{}", out.stderr);
        assert!(out.stderr.contains(&holder), "{}", out.stderr);
        out.stderr
    };
    let refused = refused_with(&[]);
    assert!(refused.contains("since "), "{refused}");
    // With --wait-lock the run waits for the holder, and when the lease is still held at the
    // end of the wait it is refused the same way, saying how long it waited.
    let waited = refused_with(&["--wait-lock", "1s"]);
    assert!(waited.contains("(waited 1s)"), "{waited}");
    // Another target is free, and a plan takes no lock at all.
    let other = ws.run(&[
        "run",
        "tag-target",
        "-p",
        "instance_id=i-0a1b2c3d4e5f60002",
        "--no-interactive",
    ]);
    assert_eq!(other.code, 0, "{}", other.stderr);
    let plan = ws.run(&["plan", "tag-target", "-p", &instance]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    served.terminate(Duration::from_secs(30));
}

const SNAP_WAIT_TAG: &str = r#"runbook(#{ id: "snap-wait-tag", version: "1.0.0", title: "Snapshot, wait, tag", severity: "P2",
    params: #{ instance_id: #{ type: "string", required: true, target: true },
               pause: #{ type: "string", "default": "0s" } } });
containment("Snapshot the volumes", |ctx| {
    ec2::snapshot_volumes(ctx.instance_id, #{ incident: "takeover" });
});
containment("Wait", |ctx| { sleep(ctx.pause); });
recovery("Mark it done", |ctx| { ec2::tag(ctx.instance_id, #{ Remediated: "true" }); });
"#;

/// A replica acting on moto's EC2 (so its writes are visible in moto), its state on moto too,
/// with a 3 s lease (the shortest) so a dead replica's run is taken over quickly.
fn moto_replica(moto: &Moto) -> Workspace {
    let ws = Workspace::new();
    ws.write("runbooks/snap-wait-tag.rhai", SNAP_WAIT_TAG);
    ws.write(
        "runbook.toml",
        &format!(
            "default = \"moto\"\n\n[environments.moto]\nbackend = \"aws\"\nregion = \"us-east-1\"\nendpoint = \"{0}\"\nmax_attempts = 2\n\n{1}lease = \"3s\"\n",
            moto.endpoint(),
            aws_state(moto)
        ),
    );
    ws.write(
        "hooks.toml",
        "[server]\nworkers = 2\nqueue = 64\ndrain = \"1s\"\n\n[guardrails]\ncooldown = \"0s\"\ndedupe_window = \"10m\"\n\n[escalation]\nchannel = \"#oncall\"\n\n[[route]]\nname = \"snap\"\nalert = \"ec2-cpu-high\"\nrunbook = \"snap-wait-tag@1.0.0\"\nenvironment = \"moto\"\nparams = { instance_id = \"{labels.instance_id}\", pause = \"{labels.pause|0s}\" }\ntarget = \"{labels.instance_id}\"\n",
    );
    ws
}

/// The events of run `run_id`'s archived transcript, fetched from the bucket into `ws`.
fn archived_events(ws: &Workspace, run_id: &str, n: usize) -> Vec<Value> {
    let to = format!("fetched-{n}.jsonl");
    let out =
        with_credentials(ws.cmd().args(&["transcript", "fetch", run_id, "--to", &to])).output();
    if out.code != 0 {
        return Vec::new();
    }
    common::events(&ws.path().join(&to))
}

#[test]
fn a_killed_replicas_run_is_taken_over_by_the_other_and_no_finished_write_is_sent_twice() {
    let moto = Moto::start();
    let (instance, _) = moto.seed();
    let ws = [moto_replica(&moto), moto_replica(&moto)];
    let init = with_credentials(ws[0].cmd().args(&["state", "init"])).output();
    assert_eq!(init.code, 0, "{}{}", init.stdout, init.stderr);
    let mut replicas: Vec<Served> = ws
        .iter()
        .map(|w| {
            let mut s = Served::start(w, &env());
            s.admin = Some(ADMIN.into());
            s
        })
        .collect();
    // The first replica takes the alert: it snapshots, then waits in step 2.
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = replicas[0].post(
        "/hooks/alertmanager",
        &[("authorization", auth.as_str())],
        &alert(&instance, &[("pause", "8s")]),
    );
    assert_eq!(status, 200, "{body}");
    let run_id = body["alerts"][0]["run_id"].as_str().unwrap().to_string();
    // Killed (SIGKILL) once the archive shows the snapshot step finished: no chance to say
    // anything, release anything or upload anything more.
    let mut tries = 0;
    eventually("the first step archived", || {
        tries += 1;
        let events = archived_events(&ws[1], &run_id, tries);
        events
            .iter()
            .any(|e| e["type"] == "step_finished" && e["step"] == 0)
            .then_some(())
    });
    let killed = std::process::Command::new("kill")
        .args(["-9", &replicas[0].pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The second replica takes it over after the lease and finishes it.
    let finished = eventually(
        "the run taken over and finished on the other replica",
        || {
            let (status, run) = replicas[1].get(&format!("/runs/{run_id}"));
            (status == 200
                && run["status"] != "queued"
                && run["status"] != "running"
                && run["reason"]
                    .as_str()
                    .is_none_or(|r| !r.starts_with("taken over")))
            .then_some(run)
        },
    );
    assert_eq!(
        finished["status"],
        "ok",
        "{finished}\n{}",
        replicas[1].log_text()
    );
    // moto's state: one snapshot per volume (the finished write was not sent again), and the
    // last step's tag.
    let ec2 = moto.ec2();
    let (snapshots, tags) = block(async {
        let snaps = ec2
            .describe_snapshots()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:SourceInstance")
                    .values(&instance)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let tags = ec2
            .describe_tags()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("resource-id")
                    .values(&instance)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        (
            snaps.snapshots().len(),
            tags.tags()
                .iter()
                .filter_map(|t| t.key().map(str::to_string))
                .collect::<Vec<_>>(),
        )
    });
    assert_eq!(
        snapshots, 2,
        "api-blue-1 has two volumes: one snapshot each, once"
    );
    assert!(tags.contains(&"Remediated".to_string()), "{tags:?}");
    // The taken-over transcript: the snapshot answered from the archive, the rest run here.
    let events = archived_events(&ws[1], &run_id, 1000);
    let snapshot_calls = events
        .iter()
        .filter(|e| e["type"] == "call" && e["binding"] == "ec2::snapshot_volumes")
        .count();
    assert_eq!(snapshot_calls, 1, "{events:#?}");
    assert_eq!(events.last().unwrap()["type"], "run_finished");
    replicas[1].terminate(Duration::from_secs(30));
    replicas.clear();
}
