//! The soak of issue 19: `runbook serve` fed signed generic alerts at a steady rate, every one
//! with its own fingerprint, routed to `ec2-memory-high@2.0.0` on the simulated cloud, for many
//! minutes (the worker's memory already back under 90%: each run reads CloudWatch, runs the SSM
//! diagnostics, writes its notes and checks the alarm, and restarts nothing; see `workspace`). What it shows is whether the server stays flat: RSS every sample (VmRSS of
//! `/proc/PID/status`, and `runbook_process_resident_memory_bytes` from `/metrics`, with the
//! heap's live bytes `runbook_process_heap_live_bytes` beside it), the sizes of
//! the bounded structures (`runbook_bounded_entries`), the disk used under the transcripts folder
//! with the retention policy applied (`[retention] max_size`, measured by walking the folder and
//! by `runbook_transcripts_bytes`), open files, and the latency (alert to the run's first API
//! call, from `GET /runs`; and the sender's HTTP answer) p50/p99 of the first and the last sample
//! window. Goals (issue 19, reported against, not asserted): RSS flat after warm-up and under
//! 60 MB, p99 unchanged from start to end.
//!
//! Parameters (environment):
//! - `SOAK_RATE` alerts per second (default 50), `SOAK_MINUTES` (default 60; fractions work),
//! - `SOAK_SAMPLE_SECS` seconds between samples (default 60),
//! - `SOAK_MAX_SIZE` the retention policy's `max_size` (default "200MB"), applied every sample,
//! - `SOAK_SIM_HISTORY` `[server] sim_history` (default 1000; a huge one shows the growth of an
//!   unbounded sim history, as before issue 19),
//! - `SOAK_BIN` the `runbook` binary to drive (default: the one cargo built with this bench),
//! - `SOAK_JSON` a file to write every sample to, as JSON,
//! - `SOAK_STATE=moto`: the aws state backend (`[state] backend = "aws"`: admission, run
//!   records, ownership, the journal's copy in DynamoDB, every transcript uploaded to S3) on a
//!   moto server this bench starts (`python3` with `moto[server]`), the cloud still the sim. The
//!   issue's variant: `SOAK_STATE=moto SOAK_RATE=10 SOAK_MINUTES=10`, more than moto serves on a
//!   2-core machine (about 4.5 alerts/s with a core to itself); `SOAK_RATE=2` is what it
//!   sustains beside other work (docs/benchmarks.md section 13).
//!
//! The release soak: `SOAK_RATE=50 SOAK_MINUTES=60 cargo bench --bench soak`. Under
//! `cargo test --benches` (no `--bench` argument) it runs 10 s at 5/s, sampling every 2 s, as a
//! smoke test. A short validation on a debug build: `cargo test --bench soak --no-run`, then run
//! the printed executable with `--bench` and `SOAK_MINUTES=2 SOAK_SAMPLE_SECS=30`.
//!
//! Checked (the exit status is non-zero when one fails): every alert was answered 200 and
//! accepted, and the server was still healthy at the end. A request that got no answer at all
//! (the connection closed under it) is sent once more, as Alertmanager and SNS do, and listed;
//! a resend that is refused (say, as a replay of a first attempt that was admitted) fails.

// A test or bench crate has no users outside itself: its `pub` helpers are for its modules.
#![allow(unreachable_pub)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{KillOnDrop, MOTO_ENV, env_num, pct, sorted, start_moto, status_kb};

const SECRET: &str = "soak-bench-secret";
const INSTANCE: &str = "i-0a1b2c3d4e5f60005";

/// The workspace: the repository's runbooks and stdlib, the default fleet, one route; `state`
/// is runbook.toml's `[state]` section (empty: local).
fn workspace(dir: &Path, max_size: &str, every_secs: u64, state: &str, sim_history: usize) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["runbooks", "stdlib"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for entry in std::fs::read_dir(repo.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.join(sub).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    // The default fleet with the worker's memory already under the threshold: every run takes
    // the runbook's whole path (CloudWatch read, SSM diagnostics with their output, notes, the
    // alarm checked) but restarts nothing, so the alarm is OK at once. With the memory high, only
    // the first run would restart the worker: the runs of a server share one sim, so every later
    // run sees the memory it remedied, and takes the short path.
    let fleet = std::fs::read_to_string(repo.join("sim/default-fleet.toml")).unwrap();
    let normal = fleet.replacen(
        "dimensions = { InstanceId = \"i-0a1b2c3d4e5f60005\" }\nvalue = 94.6",
        "dimensions = { InstanceId = \"i-0a1b2c3d4e5f60005\" }\nvalue = 28.3",
        1,
    );
    assert_ne!(
        normal, fleet,
        "the default fleet's memory metric moved: update the soak"
    );
    std::fs::write(dir.join("fleet.toml"), normal).unwrap();
    std::fs::write(
        dir.join("runbook.toml"),
        format!(
            "default = \"sim\"\n[environments.sim]\nbackend = \"sim\"\nfleet = \"fleet.toml\"\n\n{state}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("hooks.toml"),
        format!(
            r#"[server]
workers = 4
queue = 256
history = 1000
sim_history = {sim_history}

[guardrails]
cooldown = "0s"
dedupe_window = "15m"
max_runs_per_hour = 1000000
max_runs_per_hour_per_runbook = 1000000
max_resources = 5

[retention]
max_size = "{max_size}"
every = "{every_secs}s"

[[route]]
name = "memory-high"
alert = "ec2-memory-high"
runbook = "ec2-memory-high@2.0.0"
environment = "sim"
params = {{ instance_id = "{{labels.instance_id}}" }}
# Every alert its own target: the runs of a soak act on the one instance with memory metrics, and
# with the instance as the target they would wait for each other's lock, one at a time.
target = "{{labels.soak_seq}}"
"#
        ),
    )
    .unwrap();
}

/// Bytes and files under `dir`.
fn du(dir: &Path) -> (u64, u64) {
    let (mut bytes, mut files) = (0, 0);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            match e.metadata() {
                Ok(m) if m.is_dir() => {
                    let (b, f) = du(&e.path());
                    bytes += b;
                    files += f;
                }
                Ok(m) => {
                    bytes += m.len();
                    files += 1;
                }
                Err(_) => {}
            }
        }
    }
    (bytes, files)
}

/// Starts `serve`; returns it with its alert address and its probe address (`/healthz` and
/// `/metrics` on connections of their own, so a sample is taken even while alerts queue).
fn start_serve(bin: &Path, dir: &Path, env: &[(&str, &str)]) -> (KillOnDrop, String, String) {
    let addr_file = dir.join("serve.addr");
    let probe_file = dir.join("probe.addr");
    let mut command = support::serve_command(bin, dir);
    command
        .arg("--addr-file")
        .arg(&addr_file)
        .args(["--probe-listen", "127.0.0.1:0", "--probe-addr-file"])
        .arg(&probe_file)
        .envs(env.iter().copied())
        .env("RUNBOOK_HOOK_SECRET", SECRET)
        .env("RUNBOOK_OPERATOR", "soak");
    let (child, mut addrs) = support::spawn_serve(command, dir, &[&addr_file, &probe_file]);
    let probe = addrs.pop().expect("the probe address");
    let base = addrs.pop().expect("the alert address");
    (child, base, probe)
}

/// What the sender saw of one alert: when it was sent (since t0), status, latency.
#[derive(Clone)]
struct Sent {
    at: Duration,
    status: u16,
    accepted: bool,
    latency: Duration,
    /// What an alert that was not accepted got: the outcome and reason in the answer, or the
    /// client's error (a soak that fails must say why, its server's log is gone with its folder).
    why: Option<String>,
    /// The client error of a first attempt that got no HTTP answer, when the alert was sent
    /// again (as Alertmanager and SNS do): the answer above is the second attempt's.
    resent_after: Option<String>,
}

/// Sends `count` alerts at `rate`/s from t0, each on its own task at its scheduled time.
async fn generate(base: String, count: usize, rate: f64, t0: Instant, out: Arc<Mutex<Vec<Sent>>>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .expect("HTTP client");
    let url = format!("{base}/hooks/generic");
    let start = tokio::time::Instant::from_std(t0);
    let mut tasks = Vec::new();
    for i in 0..count {
        let offset = Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(start + offset).await;
        let body = serde_json::to_vec(&json!({
            "alert": "ec2-memory-high",
            "labels": { "instance_id": INSTANCE, "soak_seq": i.to_string() },
            "annotations": { "summary": "soak" },
            "fingerprint": format!("soak-{i:08}"),
        }))
        .unwrap();
        let ts = chrono::Utc::now().timestamp();
        let signature = runbook::front::hooks::generic::sign(SECRET.as_bytes(), ts, &body);
        let request = client
            .post(&url)
            .header("Content-Type", "application/json")
            .header("X-Runbook-Timestamp", ts.to_string())
            .header("X-Runbook-Signature", signature)
            .body(body);
        let out = out.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            // A request that got no answer at all is sent once more, as a real sender would:
            // an HTTP/1.1 server may close an idle kept-alive connection just as the client
            // reuses it. The resend is reported, never hidden, and if the first attempt had
            // been admitted after all the second is refused as a replay and counts as failed.
            let retry = request.try_clone();
            let mut resent_after = None;
            let mut answer = request.send().await;
            if let (Err(e), Some(retry)) = (&answer, retry)
                && e.status().is_none()
            {
                resent_after = Some(format!("{e:?}"));
                answer = retry.send().await;
            }
            let (status, accepted, why) = match answer {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let v: Value = resp.json().await.unwrap_or(Value::Null);
                    let answer = &v["alerts"][0];
                    let accepted = answer["outcome"] == "accepted";
                    let why = (!accepted || status != 200).then(|| {
                        format!("{} {} {}", answer["outcome"], answer["reason"], v["error"])
                    });
                    (status, accepted, why)
                }
                Err(e) => (0, false, Some(format!("client error: {e}"))),
            };
            out.lock().unwrap().push(Sent {
                at: sent.saturating_duration_since(t0),
                status,
                accepted,
                latency: sent.elapsed(),
                why,
                resent_after,
            });
        }));
        // Finished tasks are dropped as they go: a long soak must not grow the sender either.
        if tasks.len() > 4096 {
            tasks.retain(|t| !t.is_finished());
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn get_text(client: &reqwest::Client, url: &str) -> String {
    match client.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One sample of the server.
#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    minute: f64,
    alerts_sent: usize,
    runs_finished: f64,
    rss_mb: f64,
    rss_anon_mb: f64,
    rss_file_mb: f64,
    metrics_rss_mb: f64,
    open_fds: f64,
    /// What the heap holds (the binary's counting allocator): the part of RSS that is live.
    heap_mb: f64,
    disk_mb: f64,
    disk_files: u64,
    metrics_transcripts_mb: f64,
    retention_deleted_files: f64,
    sim_mutations: f64,
    sim_commands: f64,
    replay_memory: f64,
    fingerprints_seen: f64,
    run_records: f64,
    /// Alert to first API call of the runs that finished in this window, ms.
    first_call_p50: f64,
    first_call_p99: f64,
    /// Run duration of the runs that finished in this window, ms.
    run_p50: f64,
    /// The sender's HTTP answer of the alerts sent in this window, ms.
    http_p50: f64,
    http_p99: f64,
}

/// The server under soak: its alert and probe addresses and its process.
struct Server<'a> {
    base: &'a str,
    probe: &'a str,
    pid: u32,
}

async fn sample(
    client: &reqwest::Client,
    server: &Server<'_>,
    transcripts: &Path,
    t0: Instant,
    window: Duration,
    sent: &[Sent],
) -> Sample {
    let Server { base, probe, pid } = *server;
    let m = get_text(client, &format!("{probe}/metrics")).await;
    let runs: Value =
        serde_json::from_str(&get_text(client, &format!("{base}/runs?limit=1000")).await)
            .unwrap_or(Value::Null);
    let now = chrono::Utc::now();
    let since = now - chrono::Duration::from_std(window).unwrap_or_default();
    let recent: Vec<&Value> = runs["runs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| {
                    r["finished_at"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| t >= since)
                })
                .collect()
        })
        .unwrap_or_default();
    let first_calls = sorted(
        recent
            .iter()
            .filter_map(|r| r["first_call_ms"].as_f64())
            .collect(),
    );
    let durations = sorted(
        recent
            .iter()
            .filter_map(|r| r["duration_ms"].as_f64())
            .collect(),
    );
    let elapsed = t0.elapsed();
    let from = elapsed.saturating_sub(window);
    let http = sorted(
        sent.iter()
            .filter(|s| s.at >= from)
            .map(|s| s.latency.as_secs_f64() * 1000.0)
            .collect(),
    );
    let (bytes, files) = du(transcripts);
    let b = |s: &str| metric(&m, &format!("runbook_bounded_entries{{structure=\"{s}\"}}"));
    Sample {
        minute: elapsed.as_secs_f64() / 60.0,
        alerts_sent: sent.len(),
        runs_finished: metric(&m, "runbook_runs_total"),
        rss_mb: status_kb(pid, "VmRSS").unwrap_or(0) as f64 / 1024.0,
        rss_anon_mb: status_kb(pid, "RssAnon").unwrap_or(0) as f64 / 1024.0,
        rss_file_mb: status_kb(pid, "RssFile").unwrap_or(0) as f64 / 1024.0,
        metrics_rss_mb: metric(&m, "runbook_process_resident_memory_bytes") / 1048576.0,
        open_fds: metric(&m, "runbook_process_open_fds"),
        heap_mb: metric(&m, "runbook_process_heap_live_bytes") / 1048576.0,
        disk_mb: bytes as f64 / 1048576.0,
        disk_files: files,
        metrics_transcripts_mb: metric(&m, "runbook_transcripts_bytes") / 1048576.0,
        retention_deleted_files: metric(&m, "runbook_retention_deleted_files_total"),
        sim_mutations: b("sim_mutations"),
        sim_commands: b("sim_commands"),
        replay_memory: b("replay_memory"),
        fingerprints_seen: b("guard_fingerprints_seen"),
        run_records: b("run_records_finished"),
        first_call_p50: pct(&first_calls, 50.0),
        first_call_p99: pct(&first_calls, 99.0),
        run_p50: pct(&durations, 50.0),
        http_p50: pct(&http, 50.0),
        http_p99: pct(&http, 99.0),
    }
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (default_minutes, default_rate, default_sample) = if benching {
        (60.0, 50.0, 60.0)
    } else {
        (10.0 / 60.0, 5.0, 2.0)
    };
    let minutes: f64 = env_num("SOAK_MINUTES").unwrap_or(default_minutes);
    let rate: f64 = env_num("SOAK_RATE").unwrap_or(default_rate);
    let sample_secs: f64 = env_num("SOAK_SAMPLE_SECS").unwrap_or(default_sample);
    let max_size = std::env::var("SOAK_MAX_SIZE").unwrap_or_else(|_| "200MB".into());
    let bin = std::env::var_os("SOAK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_runbook")));
    let count = (minutes * 60.0 * rate).round() as usize;
    assert!(count > 0, "nothing to send: SOAK_MINUTES × SOAK_RATE is 0");

    let dir = tempfile::Builder::new()
        .prefix("bench-soak-")
        .tempdir()
        .expect("temp dir");
    let every = sample_secs.max(1.0).round() as u64;
    let on_moto = std::env::var("SOAK_STATE").is_ok_and(|v| v == "moto");
    let (_moto, state, env): (Option<KillOnDrop>, String, &[(&str, &str)]) = if on_moto {
        let (moto, port) = start_moto();
        let state = format!(
            "[state]\nbackend = \"aws\"\ntable = \"runbook-state\"\nbucket = \"runbook-transcripts\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:{port}\"\n"
        );
        (Some(moto), state, &MOTO_ENV)
    } else {
        (None, String::new(), &[])
    };
    let sim_history: usize = env_num("SOAK_SIM_HISTORY").unwrap_or(1000);
    workspace(dir.path(), &max_size, every, &state, sim_history);
    if on_moto {
        let init = Command::new(&bin)
            .current_dir(dir.path())
            .args(["state", "init"])
            .envs(MOTO_ENV)
            .output()
            .expect("runbook state init");
        assert!(
            init.status.success(),
            "runbook state init: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }
    let (mut child, base, probe) = start_serve(&bin, dir.path(), env);
    let pid = child.0.id();
    let transcripts = dir.path().join("transcripts/hooks");
    println!(
        "soak: {count} alerts at {rate}/s for {minutes} min to {base} (serve pid {pid}, {}), \
         route ec2-memory-high@2.0.0 on the sim, state {}, retention max_size {max_size}, a sample every {sample_secs} s",
        bin.display(),
        if on_moto { "aws (moto)" } else { "local" }
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sent = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let t0 = Instant::now() + Duration::from_millis(200);
    let sender = rt.spawn(generate(base.clone(), count, rate, t0, sent.clone()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let window = Duration::from_secs_f64(sample_secs);
    let mut samples: Vec<Sample> = Vec::new();
    let print = |s: &Sample| {
        println!(
            "{:>6.1} min  sent {:>7}  runs {:>7}  RSS {:>6.1} MB (/metrics {:>6.1}; anon {:>5.1}, file {:>5.1}; heap {:>5.1})  fds {:>4}  disk {:>7.1} MB {:>6} files  deleted {:>6}  sim {:>4}/{:>4}  replay {:>6}  seen {:>6}  first call p50/p99 {:>6.1}/{:>6.1} ms  run p50 {:>7.0} ms  http p50/p99 {:>6.1}/{:>6.1} ms",
            s.minute,
            s.alerts_sent,
            s.runs_finished,
            s.rss_mb,
            s.metrics_rss_mb,
            s.rss_anon_mb,
            s.rss_file_mb,
            s.heap_mb,
            s.open_fds,
            s.disk_mb,
            s.disk_files,
            s.retention_deleted_files,
            s.sim_mutations,
            s.sim_commands,
            s.replay_memory,
            s.fingerprints_seen,
            s.first_call_p50,
            s.first_call_p99,
            s.run_p50,
            s.http_p50,
            s.http_p99
        )
    };
    let mut next = t0 + window;
    loop {
        let done = sender.is_finished();
        let wait = next.saturating_duration_since(Instant::now());
        std::thread::sleep(wait);
        next += window;
        let snapshot = sent.lock().unwrap().clone();
        let s = rt.block_on(sample(
            &client,
            &Server {
                base: &base,
                probe: &probe,
                pid,
            },
            &transcripts,
            t0,
            window,
            &snapshot,
        ));
        print(&s);
        samples.push(s);
        if done {
            break;
        }
    }
    let _ = rt.block_on(sender);
    let sent = sent.lock().unwrap().clone();
    let refused = sent
        .iter()
        .filter(|s| s.status != 200 || !s.accepted)
        .count();
    let health: Value =
        serde_json::from_str(&rt.block_on(get_text(&client, &format!("{probe}/healthz"))))
            .unwrap_or(Value::Null);

    // Start and end: the first and the last window in which runs finished (the one after the
    // sender stopped may have none).
    let with_runs = |s: &&Sample| !s.first_call_p99.is_nan();
    let first = samples.iter().find(with_runs).cloned();
    let last = samples.iter().rev().find(with_runs).cloned();
    // The warm-up is the first fifth; flat means the later samples stay near the first after it.
    let warm = samples.len() / 5;
    let after: Vec<f64> = samples.iter().skip(warm).map(|s| s.rss_mb).collect();
    let (lo, hi) = after
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    println!("\nsoak summary ({} samples):", samples.len());
    println!(
        "  alerts sent {}, not accepted {refused}; serve /healthz {}",
        sent.len(),
        health["status"]
    );
    let resent: Vec<&Sent> = sent.iter().filter(|s| s.resent_after.is_some()).collect();
    println!(
        "  alerts sent again after a first attempt got no answer: {}",
        resent.len()
    );
    for s in resent.iter().take(10) {
        println!(
            "    resent at {:.1} s (then HTTP {}, {}): {}",
            s.at.as_secs_f64(),
            s.status,
            if s.accepted {
                "accepted"
            } else {
                "not accepted"
            },
            s.resent_after.as_deref().unwrap_or("?")
        );
    }
    for s in sent
        .iter()
        .filter(|s| s.status != 200 || !s.accepted)
        .take(10)
    {
        println!(
            "    not accepted at {:.1} s: HTTP {} after {:.0} ms: {}",
            s.at.as_secs_f64(),
            s.status,
            s.latency.as_secs_f64() * 1000.0,
            s.why.as_deref().unwrap_or("?")
        );
    }
    println!(
        "  RSS after warm-up (sample {}+): {lo:.1} .. {hi:.1} MB (goal: flat, under 60 MB)",
        warm + 1
    );
    let heap: Vec<f64> = samples.iter().skip(warm).map(|s| s.heap_mb).collect();
    println!(
        "  heap held after warm-up: {:.1} .. {:.1} MB (the rest of RSS is code, stacks and what the allocator keeps)",
        heap.iter().copied().fold(f64::MAX, f64::min),
        heap.iter().copied().fold(0.0, f64::max)
    );
    if let (Some(f), Some(l)) = (first, last) {
        println!(
            "  first call p50/p99: start {:.1}/{:.1} ms, end {:.1}/{:.1} ms (goal: unchanged)",
            f.first_call_p50, f.first_call_p99, l.first_call_p50, l.first_call_p99
        );
        println!(
            "  HTTP answer p50/p99: start {:.1}/{:.1} ms, end {:.1}/{:.1} ms",
            f.http_p50, f.http_p99, l.http_p50, l.http_p99
        );
    }
    if let Some(end) = samples.last() {
        println!(
            "  disk at the end: {:.1} MB in {} files (max_size {max_size}), {} files deleted by retention",
            end.disk_mb, end.disk_files, end.retention_deleted_files
        );
    }
    if let Ok(path) = std::env::var("SOAK_JSON") {
        let _ = std::fs::write(
            &path,
            serde_json::to_vec_pretty(&samples).unwrap_or_default(),
        );
    }
    // Stop the server (SIGTERM: it drains).
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.0.wait();
    let ok = refused == 0 && health["status"] == "ok";
    if !ok {
        eprintln!(
            "soak: FAILED ({refused} alerts not accepted, /healthz {})\n{}",
            health["status"],
            std::fs::read_to_string(dir.path().join("serve.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::process::exit(1);
    }
}
