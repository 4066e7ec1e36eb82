//! The hook receiver under load (issue 7): `runbook serve` on loopback against the simulated
//! cloud, fed signed generic alerts at a steady rate, every alert a distinct one (its own
//! fingerprint) routed to a runbook that makes one API call.
//!
//! Reported: alerts sent and the rate achieved, HTTP statuses, runs by status, the receiver's
//! alert-to-first-API-call latency (`first_call_ms` of `GET /runs`: from the request's arrival to
//! the run's first call), the sender's HTTP response latency, and the serve process's peak RSS
//! (`VmHWM`, plus `VmRSS` sampled every 100 ms). Goals (reported against, not asserted): p99 of
//! alert-to-first-call ≤ 25 ms, peak RSS ≤ 60 MB.
//!
//! Checked (the exit status is non-zero when one fails): every alert sent has exactly one run
//! (nothing lost, nothing run twice), one transcript file per alert on disk, every run ended ok,
//! and the hook journal recorded every alert and every run's end.
//!
//! Sends are scheduled by absolute time (alert `i` goes at `t0 + i / rate`), each on its own
//! task, so a slow answer delays no later send.
//!
//! Run with `cargo bench --bench hooks_load` (builds `target/release/runbook`).
//! `HOOKS_LOAD_SECS` sets the duration (default 60), `HOOKS_LOAD_RATE` the alerts per second
//! (default 200). Under `cargo test --benches` (no `--bench` argument) it sends for 2 s at
//! 50/s as a smoke test.
//!
//! The team set-up (issue 14): `HOOKS_LOAD_BACKEND=aws` gives every replica the `aws` state
//! backend on moto's server (started here on a free loopback port, serialised as the tests run
//! it: `tests/common/serialised_moto.py`), so admission, the journal, run records and
//! transcripts go through DynamoDB and S3. `HOOKS_LOAD_REPLICAS=N` starts N `serve` processes,
//! each in its own folder as on its own host, and the sender spreads the alerts over them in
//! turn (a load balancer); `HOOKS_LOAD_DUPLICATE=1` sends every alert to every replica instead
//! (an Alertmanager HA pair), so the shared dedupe must start each exactly once. With the aws
//! backend a counting proxy between the replicas and moto reports the state calls per alert
//! (what real DynamoDB's latency would multiply), and the check also waits for every
//! transcript to be uploaded.

// A test or bench crate has no users outside itself: its `pub` helpers are for its modules.
#![allow(unreachable_pub)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{KillOnDrop, MOTO_ENV, env_num, pct, sorted, start_moto, status_kb};

const SECRET: &str = "hooks-load-bench-secret";
const ALERT: &str = "ec2-cpu-high";
const GOAL_P99_MS: f64 = 25.0;
const GOAL_RSS_MB: f64 = 60.0;

const TAG_TARGET: &str = r#"
runbook(#{ id: "tag-target", version: "1.0.0", title: "Tag the target", severity: "P2",
    params: #{ instance_id: #{ type: "string", required: true } } });
containment("Mark the instance", |ctx| { ec2::tag(ctx.instance_id, #{ Remediated: "true" }); });
"#;

/// `server.history`: the finished runs `GET /runs` can list.
const HISTORY: usize = 20000;

const HOOKS: &str = r#"
[server]
workers = 4
queue = 256
history = 20000

[guardrails]
cooldown = "0s"
dedupe_window = "1m"
max_runs_per_hour = 1000000
max_runs_per_hour_per_runbook = 1000000
max_resources = 10

[[route]]
name = "cpu-high"
alert = "ec2-cpu-high"
runbook = "tag-target@1.0.0"
environment = "sim"
params = { instance_id = "{labels.instance_id}" }
target = "{labels.instance_id}"
"#;

/// What the sender saw of one alert.
struct Sent {
    status: u16,
    /// From just before the request was handed to the client to the whole answer read.
    latency: Duration,
    /// How late the send started against its schedule.
    lateness: Duration,
    outcome: Option<String>,
    error: Option<String>,
}

/// The workspace `runbook serve` runs in: the sim environment on the default fleet, the
/// tag-target runbook, hooks.toml. Returns the fleet's instance ids.
fn workspace(dir: &Path, state: Option<&str>) -> Vec<String> {
    let fleet = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("sim/default-fleet.toml"),
    )
    .expect("read sim/default-fleet.toml");
    let parsed: toml::Table = toml::from_str(&fleet).expect("the default fleet is TOML");
    let instances: Vec<String> = parsed["instances"]
        .as_array()
        .expect("the fleet has instances")
        .iter()
        .filter_map(|i| i.get("id")?.as_str().map(str::to_string))
        .collect();
    assert!(!instances.is_empty(), "the default fleet has no instances");
    for sub in ["runbooks", "stdlib"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("fleet.toml"), fleet).unwrap();
    std::fs::write(
        dir.join("runbook.toml"),
        format!(
            "default = \"sim\"\n[environments.sim]\nbackend = \"sim\"\nfleet = \"fleet.toml\"\n\n{}",
            state.unwrap_or_default()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("runbooks/tag-target.rhai"), TAG_TARGET).unwrap();
    std::fs::write(dir.join("hooks.toml"), HOOKS).unwrap();
    instances
}

/// Starts `runbook serve` in `dir` on a free loopback port, with a clean environment, its log
/// in `serve.log`; with `aws`, moto's test credentials. Returns it and its address.
fn start_serve(dir: &Path, aws: bool) -> (KillOnDrop, String) {
    let addr_file = dir.join("serve.addr");
    let mut command = support::serve_command(Path::new(env!("CARGO_BIN_EXE_runbook")), dir);
    if aws {
        command.envs(MOTO_ENV);
    }
    command
        .arg("--addr-file")
        .arg(&addr_file)
        .env("RUNBOOK_HOOK_SECRET", SECRET)
        .env("RUNBOOK_OPERATOR", "bench");
    let (child, mut addrs) = support::spawn_serve(command, dir, &[&addr_file]);
    (child, addrs.pop().expect("the alert address"))
}

/// Counts the requests that pass through a loopback TCP proxy in front of moto, by operation:
/// `dynamodb.<Op>` from the `X-Amz-Target` header, `s3.<METHOD>` for a request to a path (S3
/// is addressed path-style at a custom endpoint), `other.POST` for the rest (STS).
#[derive(Default)]
struct CallCounter {
    counts: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl CallCounter {
    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Scans the client-to-server bytes of one connection, chunk by chunk: a request line or
    /// target header split across two reads is still counted once (the last KEEP bytes are
    /// scanned again with the next chunk; a match starting before `skip` was counted already).
    fn scan(&self, window: &mut Vec<u8>, skip: &mut usize, chunk: &[u8]) {
        const KEEP: usize = 1024;
        static PATTERN: std::sync::LazyLock<regex::bytes::Regex> = std::sync::LazyLock::new(|| {
            regex::bytes::Regex::new(
                r"(?i)x-amz-target: *DynamoDB_20120810\.(?P<op>[A-Za-z]+)\r\n|(?m:^)(?P<method>GET|PUT|HEAD|DELETE|POST) (?P<path>/\S*) HTTP/1\.1\r\n",
            )
            .expect("the call pattern")
        });
        window.extend_from_slice(chunk);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = None;
        for caps in PATTERN.captures_iter(window) {
            let whole = caps.get(0).expect("group 0");
            if whole.start() < *skip {
                continue;
            }
            last = Some(whole.start());
            let key = if let Some(op) = caps.name("op") {
                format!("dynamodb.{}", String::from_utf8_lossy(op.as_bytes()))
            } else {
                let method = String::from_utf8_lossy(&caps["method"]).to_uppercase();
                if &caps["path"] == b"/" && method == "POST" {
                    // DynamoDB's requests are counted by their target header instead.
                    continue;
                }
                format!("s3.{method}")
            };
            *counts.entry(key).or_default() += 1;
        }
        if let Some(start) = last {
            *skip = start + 1;
        }
        if window.len() > KEEP {
            let cut = window.len() - KEEP;
            window.drain(..cut);
            *skip = skip.saturating_sub(cut);
        }
    }
}

/// A loopback proxy to `upstream` that counts the calls passing through; returns its port.
fn start_counting_proxy(upstream: u16, counter: Arc<CallCounter>) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy listener");
    let port = listener.local_addr().expect("proxy address").port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (Ok(mut client_back), Ok(mut server_back)) =
                (client.try_clone(), server.try_clone())
            else {
                continue;
            };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let (mut window, mut skip, mut buf) = (Vec::new(), 0usize, [0u8; 16384]);
                while let Ok(n) = client.read(&mut buf) {
                    if n == 0 || server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    counter.scan(&mut window, &mut skip, &buf[..n]);
                }
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_back, &mut client_back);
                let _ = client_back.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// `VmRSS` and `VmHWM` of `pid`, in kB.
fn memory_kb(pid: u32) -> Option<(u64, u64)> {
    Some((status_kb(pid, "VmRSS")?, status_kb(pid, "VmHWM")?))
}

/// CPU time (user + system) `pid` has used so far, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_sec = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(100);
    Some(Duration::from_secs_f64(ticks as f64 / per_sec as f64))
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Sends `count` alerts at `rate` per second, each on its own task at its scheduled time: alert
/// `i` to replica `i mod N`, or to every replica with `duplicate`.
async fn generate(
    bases: &[String],
    duplicate: bool,
    instances: &[String],
    count: usize,
    rate: f64,
) -> (Vec<Sent>, Duration) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .expect("HTTP client");
    let urls: Vec<String> = bases.iter().map(|b| format!("{b}/hooks/generic")).collect();
    let t0 = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::with_capacity(count * if duplicate { urls.len() } else { 1 });
    let mut last_dispatch = t0;
    for i in 0..count {
        let at = t0 + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at).await;
        let lateness = tokio::time::Instant::now().saturating_duration_since(at);
        last_dispatch = tokio::time::Instant::now();
        let body = serde_json::to_vec(&json!({
            "alert": ALERT,
            "labels": {
                "instance_id": instances[i % instances.len()],
                "load_seq": i.to_string(),
            },
            "annotations": { "summary": "load test" },
            "fingerprint": format!("load-{i:07}"),
        }))
        .unwrap();
        let ts = chrono::Utc::now().timestamp();
        let signature = runbook::front::hooks::generic::sign(SECRET.as_bytes(), ts, &body);
        let targets: Vec<&String> = if duplicate {
            urls.iter().collect()
        } else {
            vec![&urls[i % urls.len()]]
        };
        for url in targets {
            let request = client
                .post(url)
                .header("Content-Type", "application/json")
                .header("X-Runbook-Timestamp", ts.to_string())
                .header("X-Runbook-Signature", signature.clone())
                .body(body.clone());
            tasks.push(tokio::spawn(send(request, lateness)));
        }
    }
    let span = last_dispatch.saturating_duration_since(t0);
    let mut sent = Vec::with_capacity(tasks.len());
    for t in tasks {
        sent.push(t.await.expect("sender task"));
    }
    (sent, span)
}

/// Sends one alert and reads the whole answer.
async fn send(request: reqwest::RequestBuilder, lateness: Duration) -> Sent {
    let started = Instant::now();
    let answer = match request.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            match resp.bytes().await {
                Ok(b) => Ok((status, b)),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    let latency = started.elapsed();
    match answer {
        Ok((status, body)) => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            Sent {
                status,
                latency,
                lateness,
                outcome: v["alerts"][0]["outcome"].as_str().map(str::to_string),
                error: None,
            }
        }
        Err(e) => Sent {
            status: 0,
            latency,
            lateness,
            outcome: None,
            error: Some(e),
        },
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let resp = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    resp.json().await.unwrap_or(Value::Null)
}

/// Waits until `/healthz` shows nothing queued or running (or `timeout` passed).
async fn wait_idle(base: &str, timeout: Duration) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client");
    let started = Instant::now();
    while started.elapsed() < timeout {
        let health = get_json(&client, &format!("{base}/healthz")).await;
        let busy = health["running"].as_u64().unwrap_or(1)
            + health["queued"].as_i64().unwrap_or(1).max(0) as u64;
        if busy == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until nothing is queued or running, then returns every run `GET /runs` knows, and the
/// server's VmHWM (kB) read just before its first `GET /runs` (which builds all of them at once).
async fn wait_for_runs(base: &str, pid: u32, timeout: Duration) -> (Vec<Value>, u64) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let runs_url = format!("{base}/runs?limit=100000");
    let started = Instant::now();
    let mut hwm_before = None;
    loop {
        let health = get_json(&client, &format!("{base}/healthz")).await;
        let busy = health["running"].as_u64().unwrap_or(1)
            + health["queued"].as_i64().unwrap_or(1).max(0) as u64;
        let late = started.elapsed() > timeout;
        if busy == 0 || late {
            if late {
                eprintln!("runs still active after {timeout:?}: {health}");
            }
            let hwm = *hwm_before.get_or_insert_with(|| memory_kb(pid).map_or(0, |m| m.1));
            let body = get_json(&client, &runs_url).await;
            let runs = body["runs"].as_array().cloned().unwrap_or_default();
            let active = runs
                .iter()
                .filter(|r| r["status"] == "queued" || r["status"] == "running")
                .count();
            // Every answer was in before this wait began, so every accepted run was in the
            // table by then: none queued or running means all have finished. (Fewer than
            // the alerts sent means lost runs, or more runs than `server.history` keeps.)
            if active == 0 || late {
                return (runs, hwm);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Files under `dir` (recursively) whose name satisfies `pred`.
fn count_files(dir: &Path, pred: &dyn Fn(&str) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .map(|p| {
            if p.is_dir() {
                count_files(&p, pred)
            } else {
                usize::from(p.file_name().and_then(|n| n.to_str()).is_some_and(pred))
            }
        })
        .sum()
}

/// The hook journal's events (every journal file in `dir`).
fn journal_events(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("journal-") && n.ends_with(".jsonl"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (default_secs, default_rate) = if benching { (60.0, 200.0) } else { (2.0, 50.0) };
    let secs: f64 = env_num("HOOKS_LOAD_SECS").unwrap_or(default_secs);
    let rate: f64 = env_num("HOOKS_LOAD_RATE").unwrap_or(default_rate);
    let count = (secs * rate).round() as usize;
    assert!(
        count > 0,
        "nothing to send: HOOKS_LOAD_SECS × HOOKS_LOAD_RATE is 0"
    );
    if count > HISTORY {
        eprintln!(
            "hooks_load: {count} alerts is more than the {HISTORY} runs GET /runs keeps \
             (server.history): the exactly-one-run check will fail"
        );
    }

    let aws = match std::env::var("HOOKS_LOAD_BACKEND").as_deref() {
        Ok("aws") => true,
        Ok("local") | Err(_) => false,
        Ok(other) => panic!("HOOKS_LOAD_BACKEND is local or aws, not {other:?}"),
    };
    let replicas: usize = env_num("HOOKS_LOAD_REPLICAS").unwrap_or(1).max(1);
    let duplicate = env_num::<u8>("HOOKS_LOAD_DUPLICATE").unwrap_or(0) == 1;

    // The team's shared state: moto behind the counting proxy, the table and bucket made once.
    let counter = Arc::new(CallCounter::default());
    let moto = aws.then(|| {
        let (child, port) = start_moto();
        (child, start_counting_proxy(port, counter.clone()))
    });
    let state = moto.as_ref().map(|(_, proxy)| {
        format!(
            "[state]\nbackend = \"aws\"\ntable = \"runbook-state\"\nbucket = \"runbook-transcripts\"\nregion = \"us-east-1\"\nendpoint = \"http://127.0.0.1:{proxy}\"\n"
        )
    });

    let root = tempfile::Builder::new()
        .prefix("bench-hooks-load-")
        .tempdir()
        .expect("temp dir");
    let dirs: Vec<PathBuf> = (0..replicas)
        .map(|n| root.path().join(format!("replica-{n}")))
        .collect();
    let mut instances = Vec::new();
    for dir in &dirs {
        std::fs::create_dir_all(dir).unwrap();
        instances = workspace(dir, state.as_deref());
    }
    if aws {
        let out = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .envs(MOTO_ENV)
            .current_dir(&dirs[0])
            .args(["state", "init"])
            .output()
            .expect("runbook state init");
        assert!(
            out.status.success(),
            "runbook state init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let calls_before = counter.snapshot();
    let mut servers = Vec::new();
    let mut bases = Vec::new();
    for dir in &dirs {
        let (child, base) = start_serve(dir, aws);
        servers.push(child);
        bases.push(base);
    }
    let pids: Vec<u32> = servers.iter().map(|c| c.0.id()).collect();
    let pid = pids[0];
    let idle = memory_kb(pid).unwrap_or((0, 0));
    println!(
        "hooks_load: {count} alerts at {rate}/s for {secs} s to {} replica(s) {bases:?}{} (serve pids {pids:?}, {} state backend, {} instances, 4 workers each)",
        replicas,
        if duplicate {
            ", every alert to every replica"
        } else {
            ""
        },
        if aws { "aws (moto)" } else { "local" },
        instances.len()
    );

    // Sample the first server's memory while it works: the highest VmRSS, one reading a second.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let begun = Instant::now();
            let (mut max_rss, mut timeline) = (0u64, Vec::new());
            while sampling.load(Ordering::Relaxed) {
                if let Some((rss, _)) = memory_kb(pid) {
                    max_rss = max_rss.max(rss);
                    if begun.elapsed().as_secs() as usize >= timeline.len() {
                        timeline.push(rss);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (max_rss, timeline)
        })
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server_cpu = || -> Duration { pids.iter().filter_map(|p| cpu_time(*p)).sum() };
    let moto_pid = moto.as_ref().map(|(m, _)| m.0.id());
    let moto_cpu = || moto_pid.and_then(cpu_time).unwrap_or_default();
    let (cpu_before, moto_cpu_before) = (server_cpu(), moto_cpu());
    let started = Instant::now();
    let (sent, span) = rt.block_on(generate(&bases, duplicate, &instances, count, rate));
    let sending = started.elapsed();
    let cpu_sending = server_cpu().saturating_sub(cpu_before);
    let moto_cpu_sending = moto_cpu().saturating_sub(moto_cpu_before);
    let timeout = Duration::from_secs_f64(secs * 2.0 + 120.0);
    // Idle first, and (aws backend) every transcript uploaded, before the state calls are
    // counted: the listing of every run below makes calls of its own.
    for base in &bases {
        rt.block_on(wait_idle(base, timeout));
    }
    // With the aws backend, a run's transcript is uploaded after it ends, off its worker: wait
    // for every replica's spool of pending uploads to empty.
    let pending_uploads = || {
        dirs.iter()
            .map(|d| count_files(&d.join(".runbook/uploads"), &|_| true))
            .sum::<usize>()
    };
    let upload_wait = Instant::now();
    while aws && pending_uploads() > 0 && upload_wait.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(250));
    }
    let uploads_left = pending_uploads();
    let calls = counter.snapshot();
    // Every replica's runs, by run id (with the aws backend each replica lists the table's).
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    let mut hwm_before_dump = 0;
    for (base, pid) in bases.iter().zip(&pids) {
        let (runs, hwm) = rt.block_on(wait_for_runs(base, *pid, timeout));
        hwm_before_dump = hwm_before_dump.max(hwm);
        for r in runs {
            by_id.insert(r["run_id"].as_str().unwrap_or("?").to_string(), r);
        }
    }
    let runs: Vec<Value> = by_id.into_values().collect();
    let drained = started.elapsed();

    sampling.store(false, Ordering::Relaxed);
    let (sampled_rss, timeline) = sampler.join().expect("sampler");
    // Read last, just before SIGTERM: the high-water mark of the whole life, including the
    // final `GET /runs` of every run.
    let (end_rss, peak_hwm) = memory_kb(pid).unwrap_or((0, 0));

    // SIGTERM, and time the drain.
    let stop = Instant::now();
    for pid in &pids {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let mut exits = Vec::new();
    for child in &mut servers {
        exits.push(loop {
            if let Ok(Some(status)) = child.0.try_wait() {
                break status.code();
            }
            if stop.elapsed() > Duration::from_secs(120) {
                let _ = child.0.kill();
                let _ = child.0.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        });
    }
    let stopped_in = stop.elapsed();

    // ---- the sender's view ----------------------------------------------------------------
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for s in &sent {
        *statuses.entry(s.status).or_default() += 1;
        *outcomes
            .entry(s.outcome.clone().unwrap_or_else(|| "-".into()))
            .or_default() += 1;
    }
    let errors: Vec<&String> = sent.iter().filter_map(|s| s.error.as_ref()).collect();
    let non_200 = sent.iter().filter(|s| s.status != 200).count();
    let http_ms = sorted(
        sent.iter()
            .map(|s| s.latency.as_secs_f64() * 1000.0)
            .collect(),
    );
    let late_ms = sorted(
        sent.iter()
            .map(|s| s.lateness.as_secs_f64() * 1000.0)
            .collect(),
    );
    let achieved = if span.is_zero() {
        f64::NAN
    } else {
        (count.saturating_sub(1)) as f64 / span.as_secs_f64()
    };

    // ---- the receiver's view --------------------------------------------------------------
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_fingerprint: BTreeMap<String, usize> = BTreeMap::new();
    for r in &runs {
        *by_status
            .entry(r["status"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        *per_fingerprint
            .entry(r["fingerprint"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let expected_fps: std::collections::BTreeSet<String> =
        (0..count).map(|i| format!("load-{i:07}")).collect();
    let exactly_once = expected_fps
        .iter()
        .filter(|f| per_fingerprint.get(*f) == Some(&1))
        .count();
    let missing = expected_fps
        .iter()
        .filter(|f| !per_fingerprint.contains_key(*f))
        .count();
    let doubled = per_fingerprint.values().filter(|n| **n > 1).count();
    let first_call = sorted(
        runs.iter()
            .filter_map(|r| r["first_call_ms"].as_f64())
            .collect(),
    );
    let duration_ms = sorted(
        runs.iter()
            .filter_map(|r| r["duration_ms"].as_f64())
            .collect(),
    );
    let transcripts: usize = dirs
        .iter()
        .map(|d| {
            count_files(&d.join("transcripts/hooks"), &|n| {
                n.starts_with("tag-target-") && n.ends_with(".jsonl")
            })
        })
        .sum();
    let journal: Vec<Value> = dirs
        .iter()
        .flat_map(|d| journal_events(&d.join("transcripts/hooks")))
        .collect();
    let journal_accepted = journal
        .iter()
        .filter(|e| e["type"] == "alert" && e["outcome"] == "accepted")
        .count();
    let journal_finished = journal
        .iter()
        .filter(|e| e["type"] == "run_finished")
        .count();
    let not_ok = runs.iter().filter(|r| r["status"] != "ok").count();

    // ---- report ---------------------------------------------------------------------------
    let f = |v: f64| format!("{v:.2}");
    println!();
    println!("sender");
    println!(
        "  alerts sent          {count} in {:.2} s of sending (achieved {:.1}/s; target {rate}/s)",
        span.as_secs_f64(),
        achieved
    );
    println!(
        "  send lateness        p50 {} ms, p99 {} ms, max {} ms (start against schedule)",
        f(pct(&late_ms, 50.0)),
        f(pct(&late_ms, 99.0)),
        f(pct(&late_ms, 100.0))
    );
    println!("  HTTP statuses        {statuses:?} (non-200: {non_200})");
    println!("  outcomes             {outcomes:?}");
    if !errors.is_empty() {
        println!(
            "  transport errors     {} (first: {})",
            errors.len(),
            errors[0]
        );
    }
    println!(
        "  HTTP response        p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        f(pct(&http_ms, 50.0)),
        f(pct(&http_ms, 90.0)),
        f(pct(&http_ms, 99.0)),
        f(pct(&http_ms, 100.0))
    );
    println!("receiver");
    println!(
        "  runs                 {} by status {by_status:?}",
        runs.len()
    );
    println!(
        "  alert → first call   p50 {} ms, p90 {} ms, p99 {} ms, max {} ms (n = {}); goal p99 ≤ {GOAL_P99_MS} ms: {}",
        f(pct(&first_call, 50.0)),
        f(pct(&first_call, 90.0)),
        f(pct(&first_call, 99.0)),
        f(pct(&first_call, 100.0)),
        first_call.len(),
        if pct(&first_call, 99.0) <= GOAL_P99_MS {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "  run duration         p50 {} ms, p99 {} ms, max {} ms",
        f(pct(&duration_ms, 50.0)),
        f(pct(&duration_ms, 99.0)),
        f(pct(&duration_ms, 100.0))
    );
    println!(
        "  memory               peak RSS (VmHWM, at the end) {:.1} MB; goal ≤ {GOAL_RSS_MB} MB: {}",
        mb(peak_hwm),
        if mb(peak_hwm) <= GOAL_RSS_MB {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "                       VmHWM once every run had finished, before the one GET /runs?limit=100000: {:.1} MB ({})",
        mb(hwm_before_dump),
        if mb(hwm_before_dump) <= GOAL_RSS_MB {
            "within the goal"
        } else {
            "over the goal"
        }
    );
    println!(
        "                       at start {:.1} MB; sampled max VmRSS {:.1} MB; VmRSS at the end {:.1} MB",
        mb(idle.0),
        mb(sampled_rss),
        mb(end_rss),
    );
    let step = (timeline.len() / 12).max(1);
    let points: Vec<String> = timeline
        .iter()
        .enumerate()
        .filter(|(t, _)| t % step == 0 || *t + 1 == timeline.len())
        .map(|(t, kb)| format!("{t}s {:.1}", mb(*kb)))
        .collect();
    println!("  VmRSS over time (MB) {}", points.join(", "));
    println!(
        "  CPU                  {:.1} s of CPU while sending ({:.0}% of one core; {:.0} µs per alert)",
        cpu_sending.as_secs_f64(),
        100.0 * cpu_sending.as_secs_f64() / sending.as_secs_f64(),
        1e6 * cpu_sending.as_secs_f64() / count as f64
    );
    if aws {
        println!(
            "  moto                 {:.1} s of CPU while sending ({:.0} µs per alert)",
            moto_cpu_sending.as_secs_f64(),
            1e6 * moto_cpu_sending.as_secs_f64() / count as f64
        );
        let mut total = 0u64;
        let per_alert: Vec<String> = calls
            .iter()
            .filter_map(|(op, n)| {
                let n = n.saturating_sub(calls_before.get(op).copied().unwrap_or(0));
                total += n;
                (n > 0).then(|| format!("{op} {:.2}", n as f64 / count as f64))
            })
            .collect();
        println!(
            "  state calls          {:.2} per alert ({total} from serve's start to the last upload, before listing the runs): {}",
            total as f64 / count as f64,
            per_alert.join(", ")
        );
    }
    println!(
        "  timing               sending {:.1} s, all runs finished {:.1} s after the first send, SIGTERM → exit {:.2} s (exit codes {exits:?})",
        sending.as_secs_f64(),
        drained.as_secs_f64(),
        stopped_in.as_secs_f64()
    );

    let checks = [
        (
            "every alert has exactly one run",
            exactly_once == count && doubled == 0 && runs.len() == count,
            format!(
                "{exactly_once} of {count} fingerprints with exactly one run; {missing} without, {doubled} with more; {} runs",
                runs.len()
            ),
        ),
        (
            "one transcript file per alert",
            transcripts == count,
            format!("{transcripts} transcript files for {count} alerts"),
        ),
        (
            "every run ended ok",
            not_ok == 0 && !runs.is_empty(),
            format!("{not_ok} runs not ok"),
        ),
        (
            "the journal has every alert and every run's end",
            journal_accepted == count && journal_finished == count,
            format!("{journal_accepted} accepted alerts, {journal_finished} run_finished events"),
        ),
        (
            "serve stopped cleanly on SIGTERM",
            exits.iter().all(|e| *e == Some(0)),
            format!("exit codes {exits:?}"),
        ),
        (
            "every transcript uploaded (aws backend)",
            uploads_left == 0,
            format!("{uploads_left} uploads still pending"),
        ),
    ];
    println!("checks");
    let mut failed = 0;
    for (name, ok, detail) in &checks {
        println!("  {} {name}: {detail}", if *ok { "ok  " } else { "FAIL" });
        failed += usize::from(!ok);
    }
    let summary = json!({
        "alerts": count,
        "backend": if aws { "aws" } else { "local" },
        "replicas": replicas,
        "duplicate": duplicate,
        "rate_target": rate,
        "rate_achieved": achieved,
        "non_200": non_200,
        "runs": by_status,
        "first_call_ms": { "p50": pct(&first_call, 50.0), "p90": pct(&first_call, 90.0), "p99": pct(&first_call, 99.0), "max": pct(&first_call, 100.0) },
        "http_ms": { "p50": pct(&http_ms, 50.0), "p99": pct(&http_ms, 99.0) },
        "serve_cpu_s_while_sending": cpu_sending.as_secs_f64(),
        "moto_cpu_s_while_sending": moto_cpu_sending.as_secs_f64(),
        "peak_rss_mb": mb(peak_hwm),
        "peak_rss_mb_before_runs_dump": mb(hwm_before_dump),
        "checks_failed": failed,
    });
    println!("summary {summary}");
    if failed > 0 {
        println!("serve logs: {}/replica-*/serve.log", root.path().display());
        // Keep the workspace for a look.
        let kept = root.keep();
        eprintln!(
            "hooks_load: {failed} check(s) failed; workspace kept at {}",
            kept.display()
        );
        std::process::exit(1);
    }
}
