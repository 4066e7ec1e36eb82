//! `runbook serve` behind a real Alertmanager (Debian's `prometheus-alertmanager`, which
//! `.ci/run` installs): an alert posted to Alertmanager's API reaches the receiver through its
//! `webhook_config` with a bearer token, and becomes a verified, correctly triggered run on the
//! simulated cloud. A wrong token starts nothing and is counted.
//!
//! Both processes run on free loopback ports in a scratch workspace; nothing leaves the machine.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::{Served, block_on, client, send};
use common::{Workspace, events, of_type};
use serde_json::{Value, json};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const TOKEN: &str = "am-test-token-3f9c1d";
const INSTANCE: &str = "i-0a1b2c3d4e5f60001";
const ALERT: &str = "ec2-cpu-high";

const TAG_TARGET: &str = r#"
runbook(#{ id: "tag-target", version: "1.0.0", title: "Tag the target", severity: "P2",
    params: #{ instance_id: #{ type: "string", required: true } } });
containment("Mark the instance", |ctx| { ec2::tag(ctx.instance_id, #{ Remediated: "true" }); });
"#;

const HOOKS: &str = r#"
[server]
workers = 2
queue = 16

[guardrails]
dedupe_window = "15m"
cooldown = "30m"
max_runs_per_hour = 20
max_resources = 3

[[route]]
name = "cpu-high"
alert = "ec2-cpu-high"
source = "alertmanager"
runbook = "tag-target@1.0.0"
environment = "sim"
params = { instance_id = "{labels.instance_id}" }
target = "{labels.instance_id}"
"#;

/// A workspace with the sim environment (its state kept in sim-state.json), the tag-target
/// runbook and hooks.toml routing `ec2-cpu-high` from Alertmanager to it.
fn workspace() -> Workspace {
    let ws = Workspace::new();
    let fleet = std::fs::read_to_string(format!("{REPO}/sim/default-fleet.toml")).unwrap();
    ws.write("fleet.toml", &fleet);
    ws.write(
        "runbook.toml",
        "default = \"sim\"\n[environments.sim]\nbackend = \"sim\"\nfleet = \"fleet.toml\"\nstate = \"sim-state.json\"\n",
    );
    ws.write("runbooks/tag-target.rhai", TAG_TARGET);
    ws.write("hooks.toml", HOOKS);
    ws
}

/// The Alertmanager binary on PATH. Missing is a failure, not a skip: this is the only test of
/// the receiver against the real sender.
fn alertmanager_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["prometheus-alertmanager", "alertmanager"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "prometheus-alertmanager is not on PATH: this test drives a real Alertmanager. \
         `.ci/run` installs it (apt-get install -y --no-install-recommends prometheus-alertmanager); \
         install it the same way to run this test locally"
    );
}

/// A loopback port nothing listens on now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

/// alertmanager.yml: every alert to one webhook receiver (serve's /hooks/alertmanager) with
/// `token` as its bearer credentials, sent at once and again each second while it changes.
fn alertmanager_config(serve_base: &str, token: &str) -> String {
    format!(
        r#"route:
  receiver: runbook
  group_by: ['alertname', 'instance_id']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 4h
receivers:
  - name: runbook
    webhook_configs:
      - url: "{serve_base}/hooks/alertmanager"
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: "{token}"
"#
    )
}

/// A running Alertmanager, killed when dropped (also when a test fails).
struct Alertmanager {
    child: Option<Child>,
    base: String,
    log: PathBuf,
}

impl Alertmanager {
    /// Starts Alertmanager in `dir` (its config, storage and log go there), without clustering,
    /// and waits until it is ready. Retries on a new port if the chosen one was taken meanwhile.
    fn start(dir: &Path, config: &str) -> Alertmanager {
        let binary = alertmanager_binary();
        let config_file = dir.join("alertmanager.yml");
        std::fs::write(&config_file, config).unwrap();
        let log = dir.join("alertmanager.log");
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let file = std::fs::File::create(&log).expect("create the Alertmanager log");
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!("--storage.path={}", dir.join("am-data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .arg("--log.level=debug")
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::from(file.try_clone().unwrap()))
                .stderr(Stdio::from(file))
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
            let mut am = Alertmanager {
                child: Some(child),
                base: format!("http://127.0.0.1:{port}"),
                log: log.clone(),
            };
            if am.wait_ready(Duration::from_secs(20)) {
                return am;
            }
            last_log = am.log_text();
            drop(am);
            if !last_log.contains("address already in use") {
                break;
            }
        }
        panic!("Alertmanager did not become ready:\n{last_log}");
    }

    /// Polls `/-/ready`; false if the process exited or the time ran out.
    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let started = Instant::now();
        let url = format!("{}/-/ready", self.base);
        let child = self.child.as_mut().expect("started");
        // One runtime for the whole wait: the client's pooled connections belong to it.
        block_on(async {
            // A short timeout: a poll must not outlast the deadline.
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("client");
            while started.elapsed() < timeout {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
                let ready = http.get(&url).send().await;
                if ready.is_ok_and(|r| r.status().is_success()) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        })
    }

    /// Posts alerts to Alertmanager's v2 API (as Prometheus would).
    fn post_alerts(&self, alerts: &Value) {
        let (status, body) = block_on(send(
            &client(),
            reqwest::Method::POST,
            &format!("{}/api/v2/alerts", self.base),
            &[("Content-Type", "application/json")],
            serde_json::to_vec(alerts).unwrap(),
        ));
        assert_eq!(status, 200, "Alertmanager refused the alerts: {body}");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The alert as Prometheus would post it.
fn cpu_alert(ends_at: Option<String>) -> Value {
    let mut alert = json!({
        "labels": { "alertname": ALERT, "instance_id": INSTANCE, "severity": "P2" },
        "annotations": { "summary": "CPU above 85% for 10 minutes" },
        "generatorURL": "http://prometheus.test/graph",
    });
    if let Some(t) = ends_at {
        alert["endsAt"] = json!(t);
    }
    json!([alert])
}

/// Every event of serve's hook journal(s) in the workspace.
fn journal(ws: &Workspace) -> Vec<Value> {
    let dir = ws.path().join("transcripts/hooks");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("journal-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no journal in {}", dir.display());
    files.iter().flat_map(|f| events(f)).collect()
}

/// Waits until `pred` holds for the journal, or fails with what is there.
fn wait_journal(ws: &Workspace, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) {
    let started = Instant::now();
    loop {
        let ev = journal(ws);
        if pred(&ev) {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "no {what} in the journal within {timeout:?}: {ev:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sum of a Prometheus counter's samples whose labels include every `labels` pair.
fn counter(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metrics_text(served: &Served) -> String {
    let (status, body) = served.get("/metrics");
    assert_eq!(status, 200, "{body}");
    body.as_str().map(str::to_string).unwrap_or_default()
}

fn resolve(ws: &Workspace, path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        p
    } else {
        ws.path().join(p)
    }
}

#[test]
fn an_alert_through_a_real_alertmanager_runs_the_routed_runbook() {
    // Fail fast (before building anything) when the binary is missing.
    alertmanager_binary();
    let ws = workspace();
    let served = Served::start(&ws, &[("RUNBOOK_ALERTMANAGER_TOKEN", TOKEN)]);
    let am = Alertmanager::start(ws.path(), &alertmanager_config(&served.base, TOKEN));

    am.post_alerts(&cpu_alert(None));

    // Alertmanager → serve → a run on the sim, within group_wait plus a retry or two.
    let runs = {
        let started = Instant::now();
        loop {
            let (_, body) = served.get("/runs?limit=100");
            let runs = body["runs"].as_array().cloned().unwrap_or_default();
            if runs
                .iter()
                .any(|r| r["status"] != "queued" && r["status"] != "running")
            {
                break runs;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no finished run within 30 s: {runs:#?}\n--- serve\n{}\n--- alertmanager\n{}",
                served.log_text(),
                am.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(runs.len(), 1, "one alert, one run: {runs:#?}");
    let run = &runs[0];
    assert_eq!(
        run["status"],
        "ok",
        "{run:#?}\n--- serve\n{}",
        served.log_text()
    );
    assert_eq!(run["source"], "alertmanager");
    assert_eq!(run["alert"], ALERT);
    assert_eq!(run["route"], "cpu-high");
    assert_eq!(run["runbook"], "tag-target@1.0.0");
    let fingerprint = run["fingerprint"].as_str().unwrap().to_string();
    assert!(
        fingerprint.len() == 16 && fingerprint.chars().all(|c| c.is_ascii_hexdigit()),
        "Alertmanager's own fingerprint is kept: {fingerprint}"
    );
    assert!(
        run["first_call_ms"].as_f64().is_some(),
        "the run made an API call: {run:#?}"
    );

    // The transcript is intact and says who started the run and on what.
    let transcript = resolve(&ws, run["transcript"].as_str().unwrap());
    ws.run(&["transcript", "verify", transcript.to_str().unwrap()])
        .expect_code(0);
    let ev = events(&transcript);
    let started = of_type(&ev, "run_started");
    assert_eq!(started.len(), 1);
    let trigger = &started[0]["trigger"];
    assert_eq!(trigger["source"], "alertmanager", "{trigger:#}");
    assert_eq!(trigger["alert"], ALERT);
    assert_eq!(trigger["route"], "cpu-high");
    assert_eq!(trigger["fingerprint"], fingerprint.as_str());
    assert_eq!(trigger["labels"]["severity"], "P2");
    assert_eq!(started[0]["params"]["instance_id"], INSTANCE);
    assert_eq!(started[0]["operator"], "hook:cpu-high");
    assert_eq!(started[0]["environment"], "sim");

    // The simulated cloud was changed, on that instance only.
    let state: Value = serde_json::from_str(&ws.read("sim-state.json")).unwrap();
    let instances = state["instances"].as_array().unwrap();
    for i in instances {
        let tagged = i["tags"]["Remediated"] == "true";
        assert_eq!(tagged, i["id"] == INSTANCE, "{}: {}", i["id"], i["tags"]);
    }

    // The decision is on record: the alert accepted, from Alertmanager, with its run.
    let ev = journal(&ws);
    let accepted: Vec<&Value> = of_type(&ev, "alert")
        .into_iter()
        .filter(|e| e["outcome"] == "accepted")
        .collect();
    assert_eq!(accepted.len(), 1, "{ev:#?}");
    assert_eq!(accepted[0]["source"], "alertmanager");
    assert_eq!(accepted[0]["via"], "alertmanager");
    assert_eq!(accepted[0]["labels"]["instance_id"], INSTANCE);
    assert_eq!(accepted[0]["fingerprint"], fingerprint.as_str());
    assert_eq!(accepted[0]["run_id"], run["run_id"]);
    let finished = of_type(&ev, "run_finished");
    assert!(
        finished
            .iter()
            .any(|e| e["run_id"] == run["run_id"] && e["status"] == "ok"),
        "{ev:#?}"
    );

    // Resolving it (send_resolved) is recorded and starts nothing.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    am.post_alerts(&cpu_alert(Some(now)));
    wait_journal(&ws, "resolved alert", Duration::from_secs(30), |ev| {
        of_type(ev, "alert")
            .iter()
            .any(|e| e["outcome"] == "resolved" && e["fingerprint"] == fingerprint.as_str())
    });
    let (_, body) = served.get("/runs?limit=100");
    assert_eq!(
        body["runs"].as_array().map(Vec::len),
        Some(1),
        "a resolved alert starts no run: {body:#}"
    );
    let metrics = metrics_text(&served);
    assert_eq!(
        counter(
            &metrics,
            "runbook_hook_requests_rejected_total",
            &[("source", "alertmanager")]
        ),
        0.0,
        "{metrics}"
    );
    drop(am);
}

#[test]
fn a_wrong_token_in_alertmanager_starts_nothing_and_is_counted() {
    alertmanager_binary();
    let ws = workspace();
    let served = Served::start(&ws, &[("RUNBOOK_ALERTMANAGER_TOKEN", TOKEN)]);
    let am = Alertmanager::start(
        ws.path(),
        &alertmanager_config(&served.base, "not-the-token"),
    );

    am.post_alerts(&cpu_alert(None));

    let started = Instant::now();
    let rejected = loop {
        let metrics = metrics_text(&served);
        let n = counter(
            &metrics,
            "runbook_hook_requests_rejected_total",
            &[("source", "alertmanager"), ("reason", "unauthenticated")],
        );
        if n > 0.0 {
            break n;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no unauthenticated request counted within 30 s:\n{metrics}\n--- serve\n{}\n--- alertmanager\n{}",
            served.log_text(),
            am.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(rejected >= 1.0);

    // Give a (wrongly) accepted delivery time to show up before concluding there was none.
    std::thread::sleep(Duration::from_secs(2));
    let (_, body) = served.get("/runs?limit=100");
    assert_eq!(
        body["runs"].as_array().map(Vec::len),
        Some(0),
        "a refused request starts nothing: {body:#}"
    );
    let ev = journal(&ws);
    assert!(
        of_type(&ev, "alert").is_empty(),
        "nothing unauthenticated is parsed into an alert: {ev:#?}"
    );
    let refused = of_type(&ev, "request_refused");
    assert!(
        refused
            .iter()
            .any(|e| e["source"] == "alertmanager" && e["reason"] == "unauthenticated"),
        "{ev:#?}"
    );
    assert!(
        !journal_text(&ws).contains("not-the-token"),
        "the offered token is not written down"
    );
    let state: Value = serde_json::from_str(&ws.read("sim-state.json")).unwrap();
    assert!(
        state["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["tags"]["Remediated"].is_null()),
        "nothing was changed"
    );
    drop(am);
}

fn journal_text(ws: &Workspace) -> String {
    journal(ws)
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
