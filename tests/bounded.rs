//! `serve` runs for weeks (issue 19): its in-memory structures stay bounded however many alerts
//! arrive (read from `/metrics`), and the retention policy prunes the transcripts folder
//! (`runbook transcript prune`, and `serve`'s own pass) without touching a run still running or
//! a transcript not uploaded yet.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::Workspace;
use common::serve::Served;
use serde_json::json;

const KEY: &str = "hmac-key-bounded-19";

/// One write and one SSM command per run: both grow the simulated cloud's history.
const TAG_AND_CHECK: &str = r#"runbook(#{ id: "tag-and-check", version: "1.0.0", title: "Tag and check", severity: "P2",
    params: #{ instance_id: #{ type: "string", required: true } } });
containment("Tag and look", |ctx| {
    ec2::tag(ctx.instance_id, #{ Seen: "true" });
    let r = ssm::shell(ctx.instance_id, ["uptime"], #{ timeout: "1m", poll: "1s" });
    if !r.ok { fail("uptime failed"); }
});
"#;

const INSTANCES: [&str; 3] = [
    "i-0a1b2c3d4e5f60001",
    "i-0a1b2c3d4e5f60002",
    "i-0a1b2c3d4e5f60003",
];

fn workspace(server: &str, retention: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write("runbooks/tag-and-check.rhai", TAG_AND_CHECK);
    let fleet = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sim/default-fleet.toml"
    ))
    .unwrap();
    ws.write("fleet.toml", &fleet);
    ws.write(
        "runbook.toml",
        "default = \"sim\"\n[environments.sim]\nbackend = \"sim\"\nfleet = \"fleet.toml\"\n",
    );
    ws.write(
        "hooks.toml",
        &format!(
            r#"[server]
workers = 2
queue = 256
{server}

[guardrails]
cooldown = "0s"
dedupe_window = "10m"
max_runs_per_hour = 100000
max_runs_per_hour_per_runbook = 100000
max_resources = 5

[retention]
{retention}

[[route]]
name = "check"
alert = "check-me"
runbook = "tag-and-check@1.0.0"
environment = "sim"
params = {{ instance_id = "{{labels.instance_id}}" }}
target = "{{labels.instance_id}}"
"#
        ),
    );
    ws
}

fn post_alert(s: &Served, i: usize) -> u16 {
    let body = serde_json::to_vec(&json!({
        "alert": "check-me",
        "labels": { "instance_id": INSTANCES[i % INSTANCES.len()], "n": i.to_string() },
        "fingerprint": format!("bounded-{i:06}"),
    }))
    .unwrap();
    let ts = chrono::Utc::now().timestamp();
    let sig = runbook::front::hooks::generic::sign(KEY.as_bytes(), ts, &body);
    let ts = ts.to_string();
    s.post(
        "/hooks/generic",
        &[
            ("x-runbook-timestamp", ts.as_str()),
            ("x-runbook-signature", sig.as_str()),
            ("content-type", "application/json"),
        ],
        &body,
    )
    .0
}

/// `/metrics` as (name with labels, value) pairs.
fn metrics(s: &Served) -> Vec<(String, f64)> {
    let (status, body) = s.get("/metrics");
    assert_eq!(status, 200);
    body.as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn value(m: &[(String, f64)], name: &str) -> f64 {
    m.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("{name} is not in /metrics: {m:#?}"))
}

fn bounded(m: &[(String, f64)], structure: &str) -> f64 {
    value(
        m,
        &format!("runbook_bounded_entries{{structure=\"{structure}\"}}"),
    )
}

fn runs_finished(m: &[(String, f64)]) -> f64 {
    m.iter()
        .filter(|(n, _)| n.starts_with("runbook_runs_total"))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn many_alerts_through_serve_leave_every_structure_within_its_bound() {
    let sim_history = 100;
    let history = 20;
    let ws = workspace(
        &format!("history = {history}\nsim_history = {sim_history}"),
        "",
    );
    let served = Served::start(&ws, &[("RUNBOOK_HOOK_SECRET", KEY)]);
    // More alerts than either bound holds: two writes each (a tag, a command), so the sim's
    // history would hold 2 × alerts without its ring.
    let alerts = 130;
    let posting = Instant::now();
    for i in 0..alerts {
        assert_eq!(post_alert(&served, i), 200, "{}", served.log_text());
    }
    // The minutes the admissions can have spanned (the hourly count keeps one entry a minute).
    let minutes = posting.elapsed().as_secs() / 60 + 2;
    let started = Instant::now();
    let m = loop {
        let m = metrics(&served);
        if runs_finished(&m) >= alerts as f64 {
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "runs did not finish: {m:?}\n{}",
            served.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        value(&m, "runbook_runs_total{status=\"ok\"}"),
        alerts as f64,
        "{}",
        served.log_text()
    );
    // The sim's per-run history is a ring of `sim_history`, full by now.
    assert_eq!(bounded(&m, "sim_mutations"), sim_history as f64);
    assert_eq!(bounded(&m, "sim_commands"), sim_history as f64);
    // `GET /runs` keeps `history` finished runs; none active.
    assert_eq!(bounded(&m, "run_records_finished"), history as f64);
    assert_eq!(bounded(&m, "run_records_active"), 0.0);
    // Bounded by their windows: every alert is within them, each remembered once.
    assert_eq!(bounded(&m, "replay_memory"), alerts as f64);
    assert_eq!(bounded(&m, "guard_fingerprints_seen"), alerts as f64);
    // The hourly limits count per runbook and minute: one runbook, a minute or two of alerts.
    let hourly = bounded(&m, "guard_hourly_starts");
    assert!(
        (1.0..=minutes as f64).contains(&hourly),
        "{hourly} entries for {alerts} runs of one runbook"
    );
    // One cooldown per target at most (with `0s`, each expires at the next prune).
    assert!(bounded(&m, "guard_cooldowns") <= INSTANCES.len() as f64);
    for gone in [
        "escalations_in_flight",
        "owned_runs",
        "slack_approvals_waiting",
        "uploads_in_flight",
        "run_records_to_share",
    ] {
        assert_eq!(bounded(&m, gone), 0.0, "{gone}");
    }
    // The process itself, from /proc/self.
    let rss = value(&m, "runbook_process_resident_memory_bytes");
    assert!(rss > 1e6);
    assert!(value(&m, "runbook_process_open_fds") >= 3.0);
    // The binary's counting allocator: what the heap holds, which resident memory contains.
    let heap = value(&m, "runbook_process_heap_live_bytes");
    assert!(heap > 1e5 && heap < rss, "heap {heap} of rss {rss}");
    assert!(value(&m, "runbook_transcripts_bytes") >= 0.0);
}

/// Writes `bytes` to `rel` under the transcripts folder, last modified `age_days` ago.
fn file(ws: &Workspace, rel: &str, bytes: usize, age_days: u64) -> std::path::PathBuf {
    let path = ws.write(&format!("transcripts/hooks/{rel}"), &"x".repeat(bytes));
    let at = SystemTime::now() - Duration::from_secs(age_days * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(at)
        .unwrap();
    path
}

fn listed(out: &str, verb: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix(verb))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn prune_keeps_running_and_not_uploaded_runs_and_its_dry_run_lists_exactly_what_it_deletes() {
    let ws = workspace("", "keep_days = 30");
    // The aws backend: a transcript with a pending upload marker is the only copy.
    ws.write(
        "runbook.toml",
        "default = \"sim\"\n[environments.sim]\nbackend = \"sim\"\nfleet = \"fleet.toml\"\n\n[state]\nbackend = \"aws\"\ntable = \"runbook-state\"\nbucket = \"runbook-transcripts\"\n",
    );
    let old = file(&ws, "2026-09-01/rb-01OLDRUN.jsonl", 300, 60);
    let notes = file(&ws, "2026-09-01/rb-01OLDRUN.notes.md", 40, 60);
    let approval = file(&ws, "2026-09-01/rb-01OLDRUN.approvals/1.json", 20, 60);
    let running = file(&ws, "2026-09-01/rb-01RUNNING.jsonl", 300, 60);
    let pending = file(&ws, "2026-09-01/rb-01PENDING.jsonl", 300, 60);
    let journal = file(&ws, "journal-01OLDJOURNAL.jsonl", 500, 45);
    let fresh = file(&ws, "2026-11-29/rb-01FRESH.jsonl", 300, 1);
    let state = file(&ws, "guardrails.json", 10, 90);
    ws.write(
        ".runbook/uploads/01PENDING.json",
        &json!({ "transcript": pending.display().to_string(), "entry": { "run_id": "01PENDING" } })
            .to_string(),
    );
    // A run still running: its writer holds the transcript's lock (here, this test does).
    let lock = std::fs::File::open(&running).unwrap();
    lock.lock().unwrap();

    let dry = ws.run(&["transcript", "prune", "--dry-run"]);
    dry.expect_code(0);
    let would = listed(&dry.stdout, "would delete ");
    assert!(
        dry.stdout.contains(
            "would delete 4 files (860 bytes) of 1 runs and 1 journals; 4 files (910 bytes) kept; left alone: 1 being written, 1 not uploaded yet"
        ),
        "{}",
        dry.stdout
    );
    // Nothing deleted by the dry run.
    for p in [&old, &notes, &approval, &journal] {
        assert!(p.exists(), "{} deleted by a dry run", p.display());
    }
    let real = ws.run(&["transcript", "prune"]);
    real.expect_code(0);
    let deleted = listed(&real.stdout, "delete ");
    assert_eq!(would.len(), 4 + 1, "{}", dry.stdout); // four files and the totals line
    assert_eq!(deleted[..4], would[..4], "{}\n{}", dry.stdout, real.stdout);
    assert!(
        real.stdout
            .contains("deleted 4 files (860 bytes); 4 files (910 bytes) kept"),
        "{}",
        real.stdout
    );
    for p in [&old, &notes, &approval, &journal] {
        assert!(!p.exists(), "{} kept", p.display());
    }
    assert!(
        !ws.path()
            .join("transcripts/hooks/2026-09-01/rb-01OLDRUN.approvals")
            .exists()
    );
    for p in [&running, &pending, &fresh, &state] {
        assert!(p.exists(), "{} deleted", p.display());
    }
    drop(lock);
    // Once the run ended and the upload finished, the next pass takes them.
    std::fs::remove_file(ws.path().join(".runbook/uploads/01PENDING.json")).unwrap();
    let again = ws.run(&["transcript", "prune"]);
    again.expect_code(0);
    assert!(!running.exists() && !pending.exists(), "{}", again.stdout);
    assert!(fresh.exists() && state.exists());
}

#[test]
fn prune_without_a_policy_is_refused_and_by_size_the_oldest_go_first() {
    let ws = workspace("", "");
    let out = ws.run(&["transcript", "prune", "--dry-run"]);
    out.expect_code(2);
    assert!(out.stderr.contains("no retention policy"), "{}", out.stderr);
    let oldest = file(&ws, "2026-11-01/rb-01A.jsonl", 1000, 20);
    let middle = file(&ws, "2026-11-02/rb-01B.jsonl", 1000, 10);
    let newest = file(&ws, "2026-11-03/rb-01C.jsonl", 1000, 5);
    ws.run(&["transcript", "prune", "--max-size", "2500B"])
        .expect_code(0);
    assert!(!oldest.exists() && middle.exists() && newest.exists());
}

#[test]
fn serve_prunes_on_start_and_reports_the_bytes_it_keeps() {
    let ws = workspace("", "keep_days = 30\nevery = \"1h\"");
    let old = file(&ws, "2026-09-01/rb-01OLDRUN.jsonl", 300, 60);
    let fresh = file(&ws, "2026-11-29/rb-01FRESH.jsonl", 300, 1);
    let served = Served::start(&ws, &[("RUNBOOK_HOOK_SECRET", KEY)]);
    // The first pass runs as the server starts: wait for its measurement.
    let started = Instant::now();
    let m = loop {
        let m = metrics(&served);
        if value(&m, "runbook_retention_deleted_files_total") >= 1.0
            && value(&m, "runbook_transcripts_files") > 0.0
        {
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no retention pass: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!old.exists() && fresh.exists());
    assert_eq!(value(&m, "runbook_retention_deleted_files_total"), 1.0);
    // The fresh run and the journal being written (its first line by then; it grew since)
    // are what is kept.
    let kept = value(&m, "runbook_transcripts_bytes");
    let on_disk: u64 = [fresh.as_path(), Path::new(&journal_of(&ws))]
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        kept > 300.0 && kept <= on_disk as f64,
        "{kept} of {on_disk}"
    );
    assert_eq!(value(&m, "runbook_transcripts_files"), 2.0);
}

fn journal_of(ws: &Workspace) -> std::path::PathBuf {
    std::fs::read_dir(ws.path().join("transcripts/hooks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("journal-"))
        })
        .expect("a journal")
}

#[test]
fn a_server_timeout_of_zero_or_beyond_its_bound_is_refused_at_check() {
    for (setting, value, range) in [
        ("header_timeout", "0s", "1ms and 1h"),
        ("body_timeout", "2h", "1ms and 1h"),
        ("health_timeout", "0ms", "1ms and 4s"),
        (
            "health_timeout",
            "5s",
            "1ms and 4s (under the 5s `serve --healthcheck` waits",
        ),
    ] {
        let ws = workspace(&format!("{setting} = \"{value}\""), "");
        let out = ws.run(&["serve", "--check"]);
        out.expect_code(2);
        assert!(
            out.stderr
                .contains(&format!("server.{setting} must be between {range}")),
            "{setting} = {value}: {}",
            out.stderr
        );
    }
    let ws = workspace("health_timeout = \"2s\"", "");
    ws.run(&["serve", "--check"]).expect_code(0);
}

#[test]
fn a_sim_history_too_small_for_a_running_command_or_a_bad_size_is_refused_at_check() {
    let ws = workspace("sim_history = 10", "");
    let out = ws.run(&["serve", "--check"]);
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("server.sim_history must be at least 100"),
        "{}",
        out.stderr
    );
    let ws = workspace("", "max_size = \"20 parsecs\"");
    let out = ws.run(&["serve", "--check"]);
    out.expect_code(2);
    assert!(out.stderr.contains("unknown size unit"), "{}", out.stderr);
    let ws = workspace("", "max_size = \"20GB\"\njournal_max_size = 1048576");
    ws.run(&["serve", "--check"]).expect_code(0);
}
