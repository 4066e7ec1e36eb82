//! Transcripts off the box (`[state] backend = "aws"`, moto's server on loopback): every run's
//! transcript goes to S3 as it is written, put-if-absent, its head to the table; `transcript
//! verify` checks a file against that head; `transcript list/show` find runs by id.

use crate::common;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use common::Workspace;
use common::moto::{Moto, block, with_credentials};
use serde_json::Value;

const TAG: &str = r#"runbook(#{ id: "tag-target", version: "1.0.0", title: "Tag the target", severity: "P2",
    params: #{ instance_id: #{ type: "string", required: true, target: true } } });
containment("Mark the instance", |ctx| {
    ec2::tag(ctx.instance_id, #{ Remediated: "true" });
});
recovery("Say it is done", |ctx| {
    log("tagged " + ctx.instance_id);
});
"#;

/// The same, its second step waiting for `runbook approve`: the run is held between steps
/// until the test has seen the first step archived.
const GATED: &str = r#"runbook(#{ id: "gated", version: "1.0.0", title: "Tag, then wait", severity: "P2",
    params: #{ instance_id: #{ type: "string", required: true, target: true } } });
containment("Mark the instance", |ctx| {
    ec2::tag(ctx.instance_id, #{ Remediated: "true" });
});
recovery("Wait for a person", |ctx| {
    approve("done?", #{ timeout: "60s" });
});
"#;

const INSTANCE: &str = "i-0a1b2c3d4e5f60001";
const BUCKET: &str = "runbook-transcripts";

/// A workspace whose state is on moto (table and bucket made by `runbook state init`, with
/// Object Lock for one day), and the sim as the cloud the runbook acts on.
fn workspace(moto: &Moto) -> Workspace {
    let ws = colleague(moto);
    let init = with_credentials(ws.cmd().args(&["state", "init"])).output();
    assert_eq!(init.code, 0, "{}{}", init.stdout, init.stderr);
    ws
}

/// Another workspace on the same table and bucket (another operator's, another host's).
fn colleague(moto: &Moto) -> Workspace {
    let ws = Workspace::new();
    ws.write("runbooks/tag-target.rhai", TAG);
    ws.write("runbooks/gated.rhai", GATED);
    ws.write(
        "runbook.toml",
        &format!(
            "default = \"sim\"\n\n[environments.sim]\nbackend = \"sim\"\n\n[state]\nbackend = \"aws\"\ntable = \"runbook-state\"\nbucket = \"{BUCKET}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nretention_days = 1\n",
            moto.endpoint()
        ),
    );
    ws
}

fn runbook(ws: &Workspace, args: &[&str]) -> common::Run {
    with_credentials(ws.cmd().args(args)).output()
}

/// Runs tag-target on INSTANCE: the run's id, its local transcript and the archive URL the run
/// printed.
fn archived_run(ws: &Workspace) -> (String, PathBuf, String) {
    let run = runbook(
        ws,
        &[
            "run",
            "tag-target",
            "-p",
            &format!("instance_id={INSTANCE}"),
            "--no-interactive",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let url = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("transcript archived: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("the run says where it archived: {}", run.stderr))
        .to_string();
    let local = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("transcript: "))
        .map(|p| ws.path().join(p.trim()))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    let run_id = common::events(&local)[0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    (run_id, local, url)
}

/// The keys of a run's archived objects.
fn objects(moto: &Moto, run_id: &str) -> Vec<String> {
    block(async {
        let out = moto
            .s3()
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(format!("transcripts/{run_id}/"))
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    })
}

fn object(moto: &Moto, key: &str) -> Vec<u8> {
    block(async {
        let out = moto
            .s3()
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        out.body.collect().await.unwrap().into_bytes().to_vec()
    })
}

/// The same events written again by the transcript writer: a valid chain with fresh hashes,
/// `change` applied to each event first.
fn rewrite(path: &Path, change: impl Fn(&mut Value)) {
    let events = common::events(path);
    std::fs::remove_file(path).unwrap();
    let redactor = Rc::new(runbook::base::redact::Redactor::new());
    let mut w = runbook::data::transcript::TranscriptWriter::create(path, redactor).unwrap();
    for mut e in events {
        for chain in ["seq", "ts", "prev", "hash"] {
            e.as_object_mut().unwrap().remove(chain);
        }
        change(&mut e);
        w.append(&e, runbook::data::transcript::Durability::Written)
            .unwrap();
    }
}

/// Waits (polling, up to a minute) until `ready` returns something.
fn await_some<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(v) = ready() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_run_is_archived_as_it_goes_with_object_lock_and_its_s3_copy_verifies_against_the_head() {
    let moto = Moto::start();
    let ws = workspace(&moto);
    let child = with_credentials(ws.cmd().args(&[
        "run",
        "gated",
        "-p",
        &format!("instance_id={INSTANCE}"),
        "--no-interactive",
    ]))
    .spawn();
    // The run's id, from its transcript's first line (with the aws backend its approval
    // request is in the table, not in a file beside the transcript).
    let run_id = await_some("the run's transcript", || {
        walk(&ws.path().join("transcripts"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .find_map(|p| {
                let text = std::fs::read_to_string(p).ok()?;
                let first: Value = serde_json::from_str(text.lines().next()?).ok()?;
                first["run_id"].as_str().map(str::to_string)
            })
    });
    // The first step is in the bucket while the run is still going, and another workspace
    // reads it by run id (its parts joined) and lists the run as running.
    let other = colleague(&moto);
    let shown = await_some("the first step archived", || {
        let shown = runbook(&other, &["transcript", "show", &run_id]);
        (shown.code == 0 && shown.stdout.contains("Mark the instance")).then_some(shown)
    });
    assert!(!shown.stdout.contains("run finished"), "{}", shown.stdout);
    let keys = objects(&moto, &run_id);
    assert!(
        keys.iter().all(|k| k.contains("/part-")),
        "only parts while it runs: {keys:?}"
    );
    let listed = runbook(&other, &["transcript", "list", "--output", "json"]);
    let doc: Value = serde_json::from_str(&listed.stdout).unwrap();
    let runs = &doc["runs"];
    assert_eq!(runs[0]["status"], "running", "{}", listed.stdout);

    // Held at the last step's approval (asked of anyone: no `others`), answered once its
    // request is in the table.
    let approved = await_some("the approval request in the table", || {
        let out = with_credentials(ws.cmd().args(&["approve", &run_id])).output();
        (!out.stderr.contains("has no approval requests")).then_some(out)
    });
    assert_eq!(approved.code, 0, "{}", approved.stderr);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let local = walk(&ws.path().join("transcripts"))
        .into_iter()
        .find(|p| p.ends_with(format!("{run_id}.jsonl")))
        .unwrap();
    let lines = common::events(&local).len();
    let whole = format!("transcripts/{run_id}/transcript-{lines:08}.jsonl");
    let url = format!("s3://{BUCKET}/{whole}");
    assert!(
        stderr.contains(&format!("transcript archived: {url} ({lines} lines")),
        "{stderr}"
    );
    // Parts at the step boundaries, then the whole transcript: no object written twice.
    let keys = objects(&moto, &run_id);
    assert!(
        keys.iter().filter(|k| k.contains("/part-")).count() >= 2,
        "{keys:?}"
    );
    assert!(keys.contains(&whole), "{keys:?}");
    assert_eq!(object(&moto, &whole), std::fs::read(&local).unwrap());
    // Object Lock in compliance mode on what was uploaded (moto keeps and reports it).
    let head = block(async {
        moto.s3()
            .head_object()
            .bucket(BUCKET)
            .key(&whole)
            .send()
            .await
            .unwrap()
    });
    assert_eq!(
        head.object_lock_mode(),
        Some(&aws_sdk_s3::types::ObjectLockMode::Compliance)
    );
    assert!(head.object_lock_retain_until_date().is_some());

    let verified = runbook(&other, &["transcript", "verify", &url]);
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    assert!(
        verified.stdout.contains("chain intact")
            && verified.stdout.contains(&format!(
                "head matches state table runbook-state (run {run_id}, ok)"
            )),
        "{}",
        verified.stdout
    );
    let local_verified = runbook(&ws, &["transcript", "verify", local.to_str().unwrap()]);
    assert_eq!(local_verified.code, 0, "{}", local_verified.stderr);
    assert!(
        local_verified.stdout.contains("head matches"),
        "{}",
        local_verified.stdout
    );
}

#[test]
fn a_transcript_whose_tail_was_cut_fails_verification_against_the_stored_head() {
    let moto = Moto::start();
    let ws = workspace(&moto);
    let (_, local, _) = archived_run(&ws);
    let text = std::fs::read_to_string(&local).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    let cut = kept[..kept.len() - 2].join("\n") + "\n";
    std::fs::write(&local, cut).unwrap();
    let path = local.to_str().unwrap();
    // The chain of what is left is intact: only the head in the table tells.
    let chain = runbook(
        &ws,
        &[
            "transcript",
            "verify",
            path,
            "--allow-unfinished",
            "--chain-only",
        ],
    );
    assert_eq!(chain.code, 0, "{}", chain.stderr);
    let checked = runbook(&ws, &["transcript", "verify", path, "--allow-unfinished"]);
    assert_eq!(checked.code, 1, "{}", checked.stdout);
    assert!(
        checked.stderr.contains("its tail was cut"),
        "{}",
        checked.stderr
    );

    // A drill is never archived (the simulator, no lock): its chain is all `verify` checks.
    ws.write(
        "drills/tag.toml",
        &format!("runbook = \"tag-target@1.0.0\"\n[params]\ninstance_id = \"{INSTANCE}\"\n"),
    );
    let drill = runbook(&ws, &["drill", "drills/tag.toml", "--out", "out"]);
    assert_eq!(drill.code, 0, "{}{}", drill.stdout, drill.stderr);
    let drilled = walk(&ws.path().join("out"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .unwrap();
    let verified = runbook(&ws, &["transcript", "verify", drilled.to_str().unwrap()]);
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    assert!(
        !verified.stdout.contains("head matches"),
        "{}",
        verified.stdout
    );
}

#[test]
fn a_transcript_rewritten_whole_with_fresh_hashes_fails_verification_against_the_stored_head() {
    let moto = Moto::start();
    let ws = workspace(&moto);
    let (_, local, _) = archived_run(&ws);
    rewrite(&local, |e| {
        if e["type"] == "log" {
            e["message"] = Value::from("nothing was tagged");
        }
    });
    let path = local.to_str().unwrap();
    let chain = runbook(&ws, &["transcript", "verify", path, "--chain-only"]);
    assert_eq!(
        chain.code, 0,
        "a rewrite makes a valid chain: {}",
        chain.stderr
    );
    let checked = runbook(&ws, &["transcript", "verify", path]);
    assert_eq!(checked.code, 1, "{}", checked.stdout);
    assert!(
        checked.stderr.contains("was rewritten"),
        "{}",
        checked.stderr
    );
}

#[test]
fn a_failed_upload_is_reported_left_pending_and_never_overwrites_what_was_archived() {
    let moto = Moto::start();
    let ws = workspace(&moto);
    // The bucket is gone: every upload of the run fails.
    block(async {
        moto.s3()
            .delete_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
    });
    let run = runbook(
        &ws,
        &[
            "-q",
            "run",
            "tag-target",
            "-p",
            &format!("instance_id={INSTANCE}"),
            "--no-interactive",
        ],
    );
    assert_eq!(run.code, 0, "the run itself went fine: {}", run.stderr);
    assert!(
        run.stderr
            .contains("warning: the transcript is NOT archived yet")
            && run.stderr.contains("runbook transcript upload"),
        "said even with -q: {}",
        run.stderr
    );
    let markers: Vec<PathBuf> = std::fs::read_dir(ws.path().join(".runbook/uploads"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(markers.len(), 1, "{markers:?}");
    let marker = std::fs::read(&markers[0]).unwrap();
    let still = runbook(&ws, &["transcript", "upload"]);
    assert_ne!(still.code, 0, "still pending: {}", still.stdout);
    assert!(still.stdout.contains("NoSuchBucket"), "{}", still.stdout);

    // The bucket is back: a later command finishes the upload.
    let init = runbook(&ws, &["state", "init"]);
    assert_eq!(init.code, 0, "{}", init.stderr);
    let done = runbook(&ws, &["transcript", "upload"]);
    assert_eq!(done.code, 0, "{}{}", done.stdout, done.stderr);
    assert!(
        done.stdout.contains("transcript archived: s3://"),
        "{}",
        done.stdout
    );
    assert!(!markers[0].exists());
    let run_id = markers[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let shown = runbook(&ws, &["transcript", "verify", &run_id]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);

    // The local copy rewritten, and its upload asked again: the archived object is refused
    // to it (put-if-absent), and stays as it was.
    let keys = objects(&moto, &run_id);
    let whole = keys.iter().find(|k| k.contains("/transcript-")).unwrap();
    let archived = object(&moto, whole);
    let local = PathBuf::from(
        serde_json::from_slice::<Value>(&marker).unwrap()["transcript"]
            .as_str()
            .unwrap(),
    );
    rewrite(&local, |e| {
        if e["type"] == "log" {
            e["message"] = Value::from("nothing was tagged");
        }
    });
    std::fs::write(&markers[0], &marker).unwrap();
    let refused = runbook(&ws, &["transcript", "upload"]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stdout.contains("is never overwritten"),
        "{}",
        refused.stdout
    );
    assert_eq!(object(&moto, whole), archived);
    // What moto answers a put-if-absent on a key that exists, as S3 does.
    let put = block(async {
        moto.s3()
            .put_object()
            .bucket(BUCKET)
            .key(whole)
            .if_none_match("*")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"forged"))
            .send()
            .await
    });
    let code = put.err().and_then(|e| {
        use aws_sdk_s3::error::ProvideErrorMetadata;
        e.code().map(str::to_string)
    });
    assert_eq!(code.as_deref(), Some("PreconditionFailed"));
}

#[test]
fn transcript_list_and_show_find_a_run_by_id_from_the_state_table() {
    let moto = Moto::start();
    let ws = workspace(&moto);
    let (run_id, _, _) = archived_run(&ws);
    // Another operator's workspace on the same table finds it without its file.
    let other = colleague(&moto);
    for filter in [
        vec![],
        vec!["--runbook", "tag-target"],
        vec!["--target", INSTANCE],
        vec!["--since", "2020-01-01"],
    ] {
        let mut args = vec!["transcript", "list"];
        args.extend(filter.iter());
        let listed = runbook(&other, &args);
        assert_eq!(listed.code, 0, "{}", listed.stderr);
        assert!(
            listed.stdout.contains(&run_id) && listed.stdout.contains("tag-target@1.0.0"),
            "{filter:?}: {}",
            listed.stdout
        );
    }
    let none = runbook(
        &other,
        &["transcript", "list", "--target", "i-0ffffffffffffffff"],
    );
    assert!(!none.stdout.contains(&run_id), "{}", none.stdout);
    let json = runbook(&other, &["transcript", "list", "--output", "json"]);
    let doc: Value = serde_json::from_str(&json.stdout).unwrap();
    let run = &doc["runs"][0];
    assert_eq!(run["run_id"], run_id.as_str());
    assert_eq!(run["status"], "ok");
    assert_eq!(run["targets"][0], INSTANCE);
    assert_eq!(run["environment"], "sim");
    let shown = runbook(&other, &["transcript", "show", &run_id]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(
        shown.stdout.contains("Mark the instance"),
        "{}",
        shown.stdout
    );
}

#[test]
fn transcript_list_and_show_find_a_local_run_by_id() {
    let ws = Workspace::new();
    ws.write("runbooks/tag-target.rhai", TAG);
    let run = ws.run(&[
        "run",
        "tag-target",
        "-p",
        &format!("instance_id={INSTANCE}"),
        "--no-interactive",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("archived"), "local: nothing archived");
    let listed = ws.run(&["transcript", "list", "--target", INSTANCE]);
    let run_id = listed
        .stdout
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("one run listed: {}{}", listed.stdout, listed.stderr))
        .to_string();
    assert!(
        listed.stdout.contains("tag-target@1.0.0  sim"),
        "{}",
        listed.stdout
    );
    let shown = ws.run(&["transcript", "show", &run_id]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(
        shown.stdout.contains("Mark the instance"),
        "{}",
        shown.stdout
    );
    let none = ws.run(&["transcript", "list", "--runbook", "other"]);
    assert!(!none.stdout.contains(&run_id), "{}", none.stdout);
}

#[test]
fn a_run_cut_off_by_a_crash_is_fetched_by_id_on_another_host_and_taken_over_there() {
    let moto = Moto::start();
    let ws = workspace(&moto);
    // Killed (SIGKILL) right after its first step finished: its archiver dies with it.
    let crashed = with_credentials(ws.cmd().args(&[
        "run",
        "tag-target",
        "-p",
        &format!("instance_id={INSTANCE}"),
        "--no-interactive",
    ]))
    .env("RUNBOOK_TEST_KILL_AFTER_EVENTS", "5")
    .output();
    assert_ne!(crashed.code, 0, "{}", crashed.stderr);
    let local = walk(&ws.path().join("transcripts"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .unwrap();
    let run_id = common::events(&local)[0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Its host finishes the upload it left pending; the run is recorded as interrupted.
    let pending = runbook(&ws, &["transcript", "upload"]);
    assert_eq!(pending.code, 0, "{}{}", pending.stdout, pending.stderr);
    assert!(
        pending
            .stdout
            .contains(&format!("run {run_id}: transcript archived")),
        "{}",
        pending.stdout
    );
    let listed = runbook(&ws, &["transcript", "list", "--output", "json"]);
    let doc: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(doc["runs"][0]["status"], "interrupted", "{}", listed.stdout);

    // Another host fetches it by id and resumes it: the run finishes there, archived whole.
    let other = colleague(&moto);
    let fetched = runbook(
        &other,
        &["transcript", "fetch", &run_id, "--to", "taken.jsonl"],
    );
    assert_eq!(fetched.code, 0, "{}", fetched.stderr);
    assert!(
        fetched.stdout.contains("5 lines") && fetched.stdout.contains("never finished"),
        "{}",
        fetched.stdout
    );
    assert_eq!(
        std::fs::read(other.path().join("taken.jsonl")).unwrap(),
        std::fs::read(&local).unwrap()
    );
    let again = runbook(
        &other,
        &["transcript", "fetch", &run_id, "--to", "taken.jsonl"],
    );
    assert_ne!(again.code, 0, "an existing file is never overwritten");
    let resumed = runbook(&other, &["resume", "taken.jsonl", "--no-interactive"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let url = resumed
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("transcript archived: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{}", resumed.stderr))
        .to_string();
    let verified = runbook(&ws, &["transcript", "verify", &url]);
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    assert!(
        verified.stdout.contains(&format!("(run {run_id}, ok)")),
        "{}",
        verified.stdout
    );
    // The first host's copy stops where it crashed: the table's head says it is cut short.
    let stale = runbook(
        &ws,
        &[
            "transcript",
            "verify",
            local.to_str().unwrap(),
            "--allow-unfinished",
        ],
    );
    assert_ne!(stale.code, 0, "{}", stale.stdout);
    assert!(
        stale.stderr.contains("its tail was cut"),
        "{}",
        stale.stderr
    );
}

#[test]
fn a_run_refused_before_its_transcript_exists_archives_nothing_not_even_the_file_in_its_way() {
    let moto = Moto::start();
    let ws = workspace(&moto);
    // Another run's evidence where this run would write: the run is refused, and that file is
    // not uploaded under the refused run's id.
    ws.write("theirs.jsonl", "{\"someone\":\"else\"}\n");
    let refused = runbook(
        &ws,
        &[
            "run",
            "tag-target",
            "-p",
            &format!("instance_id={INSTANCE}"),
            "--no-interactive",
            "--transcript",
            "theirs.jsonl",
        ],
    );
    assert_ne!(refused.code, 0, "{}", refused.stderr);
    assert!(!refused.stderr.contains("archived"), "{}", refused.stderr);
    let everything = block(async {
        moto.s3()
            .list_objects_v2()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap()
            .key_count()
    });
    assert_eq!(everything, Some(0));
    assert!(walk(&ws.path().join(".runbook/uploads")).is_empty());
    let listed = runbook(&ws, &["transcript", "list", "--output", "json"]);
    let doc: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(doc["runs"], serde_json::json!([]), "{}", listed.stderr);
}

#[test]
fn serve_escalates_a_hook_run_whose_transcript_could_not_be_archived() {
    let moto = Moto::start();
    let ws = workspace(&moto);
    block(async {
        moto.s3()
            .delete_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
    });
    ws.write(
        "hooks.toml",
        "[server]\nworkers = 1\nqueue = 8\ndrain = \"5s\"\n\n[guardrails]\ncooldown = \"10m\"\n\n[escalation]\nchannel = \"#oncall\"\n\n[[route]]\nname = \"cpu\"\nalert = \"ec2-cpu-high\"\nrunbook = \"tag-target@1.0.0\"\nenvironment = \"sim\"\nparams = { instance_id = \"{labels.instance_id}\" }\ntarget = \"{labels.instance_id}\"\n",
    );
    let slack = common::http::Server::start();
    let webhook = slack.url("/hooks/T000/B000/escalations");
    let env = [
        ("RUNBOOK_ALERTMANAGER_TOKEN", "am-token-5e02b7"),
        ("SLACK_WEBHOOK_URL", webhook.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let mut served = common::serve::Served::start(&ws, &env);
    let alert = serde_json::json!({ "version": "4", "status": "firing", "receiver": "runbook",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
        "groupKey": "{}", "truncatedAlerts": 0,
        "alerts": [{ "status": "firing", "labels": { "alertname": "ec2-cpu-high", "instance_id": INSTANCE },
                     "annotations": {}, "startsAt": "2026-11-23T10:30:00Z", "fingerprint": "" }] });
    let (status, body) = served.post(
        "/hooks/alertmanager",
        &[
            ("authorization", "Bearer am-token-5e02b7"),
            ("content-type", "application/json"),
        ],
        &serde_json::to_vec(&alert).unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    let finished = served.wait_finished(1, std::time::Duration::from_secs(60));
    assert_eq!(
        finished[0]["status"], "ok",
        "the run itself went fine: {finished:?}"
    );
    let message = await_some("the escalation", || {
        slack
            .captured()
            .into_iter()
            .filter(|c| c.path.starts_with("/hooks/T000"))
            .filter_map(|c| c.body["text"].as_str().map(str::to_string))
            .find(|t| t.contains("transcript_not_archived"))
    });
    assert!(message.contains("NoSuchBucket"), "{message}");
    assert!(message.contains("runbook transcript upload"), "{message}");
    served.terminate(std::time::Duration::from_secs(30));
}
