//! Tier-1 auto-remediation: `runbook serve` and `runbook hook`, driven over real HTTP on
//! loopback, with escalations captured by a local Slack stand-in and SNS certificates served on
//! loopback.

use crate::common;

use std::time::Duration;

use common::http::Server;
use common::serve::{Served, block_on, client, send};
use common::{Workspace, events, of_type};
use serde_json::{Value, json};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const TOKEN: &str = "am-token-7d1f0c";
const KEY: &str = "hmac-key-4b9e2a";
const ADMIN: &str = "admin-token-c3a8";
const I1: &str = "i-0a1b2c3d4e5f60001";
const I2: &str = "i-0a1b2c3d4e5f60002";
const I3: &str = "i-0a1b2c3d4e5f60003";

const TAG_TARGET: &str = r#"runbook(#{ id: "tag-target", version: "1.0.0", title: "Tag the target", severity: "P2",
    params: #{ instance_id: #{ type: "string", required: true },
               pause: #{ type: "string", "default": "0s" } } });
containment("Mark the instance", |ctx| {
    sleep(ctx.pause);
    ec2::tag(ctx.instance_id, #{ Remediated: "true" });
});
"#;

const WIDE: &str = r#"runbook(#{ id: "wide", version: "1.0.0", title: "Tag three instances", severity: "P2",
    params: #{ instance_id: #{ type: "string", required: true } } });
containment("Tag one", |ctx| { ec2::tag("i-0a1b2c3d4e5f60001", #{ Wide: "1" }); });
containment("Tag two", |ctx| { ec2::tag("i-0a1b2c3d4e5f60002", #{ Wide: "2" }); });
eradication("Tag three", |ctx| { ec2::tag("i-0a1b2c3d4e5f60003", #{ Wide: "3" }); });
"#;

const CONFIRMING: &str = r#"runbook(#{ id: "confirming", version: "1.0.0", title: "Asks first", severity: "P2",
    params: #{ instance_id: #{ type: "string", required: true } } });
containment("Tag after confirmation", |ctx| {
    ec2::tag(ctx.instance_id, #{ Confirmed: "true" });
}, #{ confirm: "TAG" });
"#;

const NOTIFYING: &str = r##"runbook(#{ id: "notifying", version: "1.0.0", title: "Tells the channel", severity: "P3" });
containment("Tell the incident channel", |ctx| {
    let sent = slack::post("#incidents", "instance quarantined");
    log(`sent: ${sent.ok}`);
});
"##;

/// The route table most tests use.
const ROUTES: &str = r#"
[[route]]
name = "cpu"
alert = "ec2-cpu-high"
runbook = "tag-target@1.0.0"
environment = "sim"
params = { instance_id = "{labels.instance_id}", pause = "{labels.pause|0s}" }
target = "{labels.instance_id}"

[[route]]
name = "wide"
alert = "wide"
runbook = "wide@1.0.0"
environment = "sim"
params = { instance_id = "{labels.instance_id}" }
target = "{labels.instance_id}"

[[route]]
name = "confirm-denied"
alert = "needs-confirm"
runbook = "confirming@1.0.0"
environment = "sim"
params = { instance_id = "{labels.instance_id}" }
target = "{labels.instance_id}"

[[route]]
name = "confirm-allowed"
alert = "confirm-ok"
runbook = "confirming@1.0.0"
environment = "sim"
params = { instance_id = "{labels.instance_id}" }
allow_confirm = true
target = "{labels.instance_id}"

[[route]]
name = "prod"
alert = "prod-cpu"
runbook = "tag-target@1.0.0"
environment = "prod-sim"
params = { instance_id = "{labels.instance_id}" }
target = "{labels.instance_id}"

[[route]]
name = "prod-allowed"
alert = "prod-cpu-allowed"
runbook = "tag-target@1.0.0"
environment = "prod-sim"
params = { instance_id = "{labels.instance_id}" }
allow_protected = true
target = "{labels.instance_id}"

[[route]]
name = "notify"
alert = "notify-me"
runbook = "notifying@1.0.0"
environment = "sim-send"

[[route]]
name = "cloudwatch"
alert = "ec2-cpu-high-cw"
source = "sns"
runbook = "tag-target@1.0.0"
environment = "sim"
params = { instance_id = "{labels.InstanceId}" }
target = "{labels.InstanceId}"
"#;

struct Setup {
    ws: Workspace,
    slack: Server,
}

/// `defaults` (TOML `key = value` lines) with the keys `overrides` sets replaced by its lines.
fn section(defaults: &str, overrides: &str) -> String {
    let set: Vec<&str> = overrides
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    defaults
        .lines()
        .filter(|l| {
            l.split_once('=')
                .is_none_or(|(k, _)| !set.contains(&k.trim()))
        })
        .chain(overrides.lines())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A workspace with the test runbooks, a sim (state kept in sim-state.json), a protected sim,
/// and hooks.toml: `server` and `guardrails` lines over the defaults, `extra` sections, and
/// [`ROUTES`].
fn setup(server: &str, guardrails: &str, extra: &str) -> Setup {
    let ws = Workspace::new();
    ws.write("runbooks/tag-target.rhai", TAG_TARGET);
    ws.write("runbooks/wide.rhai", WIDE);
    ws.write("runbooks/confirming.rhai", CONFIRMING);
    ws.write("runbooks/notifying.rhai", NOTIFYING);
    let fleet = std::fs::read_to_string(format!("{REPO}/sim/default-fleet.toml")).unwrap();
    ws.write("fleet.toml", &fleet);
    ws.write(
        "runbook.toml",
        "default = \"sim\"\n\n[environments.sim]\nbackend = \"sim\"\nfleet = \"fleet.toml\"\nstate = \"sim-state.json\"\n\n[environments.prod-sim]\nbackend = \"sim\"\nfleet = \"fleet.toml\"\nstate = \"prod-state.json\"\nprotected = true\n\n# Notifications really sent (to the stand-ins), as on a real account.\n[environments.sim-send]\nbackend = \"sim\"\nfleet = \"fleet.toml\"\nstate = \"send-state.json\"\nnotifications = \"send\"\n",
    );
    let server = section(
        "workers = 2\nqueue = 16\nmax_body = 65536\ndrain = \"10s\"",
        server,
    );
    let guardrails = section(
        "cooldown = \"10m\"\nmax_runs_per_hour = 50\nmax_runs_per_hour_per_runbook = 20\nmax_resources = 5",
        guardrails,
    );
    ws.write(
        "hooks.toml",
        &format!(
            "[server]\n{server}\n\n[guardrails]\n{guardrails}\n\n[escalation]\nchannel = \"#ec2-manager-oncall\"\n\n{extra}\n{ROUTES}"
        ),
    );
    Setup {
        ws,
        slack: Server::start(),
    }
}

impl Setup {
    /// `serve` started on this setup's configuration, expected to refuse it (exit 2) before
    /// listening; its output.
    fn serve_refused(&self) -> common::Run {
        let env = self.env();
        let mut cmd = self.ws.cmd().args(&["serve", "--listen", "127.0.0.1:0"]);
        for (k, v) in env.refs() {
            cmd = cmd.env(k, v);
        }
        let out = cmd.output();
        out.expect_code(2);
        out
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RUNBOOK_ALERTMANAGER_TOKEN", TOKEN.to_string()),
            ("RUNBOOK_HOOK_SECRET", KEY.to_string()),
            ("RUNBOOK_ADMIN_TOKEN", ADMIN.to_string()),
            (
                "SLACK_WEBHOOK_URL",
                self.slack.url("/hooks/T000/B000/escalations"),
            ),
        ]
    }

    /// Escalation messages the Slack stand-in received.
    fn escalations(&self) -> Vec<String> {
        self.slack
            .captured()
            .into_iter()
            .filter(|c| c.path.starts_with("/hooks/T000"))
            .map(|c| c.body["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn journal(&self) -> Vec<Value> {
        let dir = self.ws.path().join("transcripts/hooks");
        let mut all = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("journal-") {
                all.extend(events(&path));
            }
        }
        all
    }

    fn sim_state(&self, file: &str) -> Value {
        serde_json::from_str(&self.ws.read(file)).unwrap()
    }

    fn tag_of(&self, file: &str, id: &str, key: &str) -> Option<String> {
        let state = self.sim_state(file);
        state["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .and_then(|i| i["tags"][key].as_str().map(str::to_string))
    }
}

trait Env {
    fn refs(&self) -> Vec<(&str, &str)>;
}

impl Env for Vec<(&'static str, String)> {
    fn refs(&self) -> Vec<(&str, &str)> {
        self.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

impl Setup {
    /// `runbook hook --source generic` with `payload` on stdin, in this setup's environment.
    fn hook(&self, payload: &str) -> common::Run {
        let path = self.ws.write("payload.json", payload);
        let mut cmd = self
            .ws
            .cmd()
            .args(&["hook", "--source", "generic"])
            .stdin_file(&path);
        for (k, v) in self.env().refs() {
            cmd = cmd.env(k, v);
        }
        cmd.output()
    }

    fn served(&self) -> Served {
        let env = self.env();
        let mut served = Served::start(&self.ws, &env.refs());
        served.admin = Some(ADMIN.to_string());
        served
    }
}

fn am_payload(alerts: &[(&str, &[(&str, &str)])]) -> Vec<u8> {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(name, labels)| {
            let mut l = serde_json::Map::new();
            l.insert("alertname".into(), json!(name));
            for (k, v) in labels.iter() {
                l.insert(k.to_string(), json!(v));
            }
            json!({ "status": "firing", "labels": l, "annotations": { "summary": "test" },
                    "startsAt": "2026-11-23T10:30:00Z", "fingerprint": "" })
        })
        .collect();
    serde_json::to_vec(
        &json!({ "version": "4", "status": "firing", "receiver": "runbook",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
        "groupKey": "{}", "truncatedAlerts": 0, "alerts": alerts }),
    )
    .unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A generic webhook request's headers, signed with `key` at `ts`.
fn signed(key: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("x-runbook-timestamp", ts.to_string()),
        (
            "x-runbook-signature",
            runbook::front::hooks::generic::sign(key.as_bytes(), ts, body),
        ),
        ("content-type", "application/json".into()),
    ]
}

fn post_am(s: &Served, body: &[u8]) -> (u16, Value) {
    let auth = bearer(TOKEN);
    s.post(
        "/hooks/alertmanager",
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        body,
    )
}

fn outcome(body: &Value, i: usize) -> (String, String) {
    let a = &body["alerts"][i];
    (
        a["outcome"].as_str().unwrap_or_default().to_string(),
        a["reason"].as_str().unwrap_or_default().to_string(),
    )
}

fn metric(s: &Served, name_and_labels: &str) -> f64 {
    let (_, body) = s.get("/metrics");
    let text = body.as_str().unwrap_or_default().to_string();
    text.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn an_alertmanager_alert_runs_its_runbook_and_a_resolved_one_is_only_recorded() {
    let s = setup("", "", "");
    let served = s.served();
    let body = am_payload(&[("ec2-cpu-high", &[("instance_id", I1), ("severity", "P2")])]);
    let (status, answer) = post_am(&served, &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcome(&answer, 0).0, "accepted", "{answer}");
    let runs = served.wait_finished(1, Duration::from_secs(20));
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["status"], "ok", "{run}");
    assert!(run["first_call_ms"].as_f64().unwrap() > 0.0);
    // The transcript says what started the run, and verifies.
    let transcript = std::path::PathBuf::from(run["transcript"].as_str().unwrap());
    let transcript = if transcript.is_absolute() {
        transcript
    } else {
        s.ws.path().join(transcript)
    };
    s.ws.run(&["transcript", "verify", transcript.to_str().unwrap()])
        .expect_code(0);
    let ev = events(&transcript);
    let started = &of_type(&ev, "run_started")[0];
    assert_eq!(started["trigger"]["source"], "alertmanager");
    assert_eq!(started["trigger"]["route"], "cpu");
    assert_eq!(started["operator"], "hook:cpu");
    assert_eq!(started["params"]["instance_id"], I1);
    assert_eq!(
        s.tag_of("sim-state.json", I1, "Remediated").as_deref(),
        Some("true")
    );

    // Resolved: acknowledged and journaled, never run.
    let resolved = String::from_utf8(body).unwrap().replace(
        r#""status":"firing","labels""#,
        r#""status":"resolved","labels""#,
    );
    let (status, answer) = post_am(&served, resolved.as_bytes());
    assert_eq!(status, 200);
    assert_eq!(outcome(&answer, 0).0, "resolved", "{answer}");
    assert_eq!(served.get("/runs").1["runs"].as_array().unwrap().len(), 1);
    let journal = s.journal();
    let alerts = of_type(&journal, "alert");
    assert_eq!(
        alerts
            .iter()
            .map(|a| a["outcome"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["accepted", "resolved"]
    );
    assert!(!of_type(&journal, "run_finished").is_empty());
    // The journal is hash-chained like a transcript, and verifies.
    for entry in std::fs::read_dir(s.ws.path().join("transcripts/hooks")).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("journal-")
        {
            s.ws.run(&["transcript", "verify", path.to_str().unwrap()])
                .expect_code(0);
        }
    }
    assert!(
        s.escalations().is_empty(),
        "nothing to escalate: {:?}",
        s.escalations()
    );
}

#[test]
fn unmatched_alerts_are_acknowledged_and_recorded_not_run() {
    let s = setup("", "", "");
    let served = s.served();
    let (status, answer) = post_am(&served, &am_payload(&[("disk-full", &[("host", "db1")])]));
    assert_eq!(status, 200);
    assert_eq!(outcome(&answer, 0).0, "unmatched");
    std::thread::sleep(Duration::from_millis(200));
    assert!(served.get("/runs").1["runs"].as_array().unwrap().is_empty());
    let journal = s.journal();
    assert_eq!(of_type(&journal, "alert")[0]["outcome"], "unmatched");
    assert_eq!(
        metric(&served, "runbook_alerts_total{outcome=\"unmatched\""),
        1.0
    );
}

#[test]
fn requests_that_are_not_authenticated_never_start_a_run() {
    let s = setup("", "", "");
    let served = s.served();
    let am = am_payload(&[("ec2-cpu-high", &[("instance_id", I1)])]);
    // Alertmanager without, or with a wrong, bearer token.
    assert_eq!(served.post("/hooks/alertmanager", &[], &am).0, 401);
    assert_eq!(
        served
            .post(
                "/hooks/alertmanager",
                &[("authorization", "Bearer nope")],
                &am
            )
            .0,
        401
    );
    let body = br#"{"alert":"ec2-cpu-high","labels":{"instance_id":"i-0a1b2c3d4e5f60001"}}"#;
    // Generic: unsigned, signed with another key, tampered, old, from the future.
    assert_eq!(served.post("/hooks/generic", &[], body).0, 401);
    let wrong = signed("not-the-key", now(), body);
    assert_eq!(served.post("/hooks/generic", &wrong.refs(), body).0, 401);
    let good = signed(KEY, now(), body);
    let tampered = br#"{"alert":"ec2-cpu-high","labels":{"instance_id":"i-0a1b2c3d4e5f60002"}}"#;
    assert_eq!(served.post("/hooks/generic", &good.refs(), tampered).0, 401);
    // A minute past the 5-minute window either way: the server's clock may tick between the
    // test signing and the server checking.
    let old = signed(KEY, now() - 360, body);
    assert_eq!(served.post("/hooks/generic", &old.refs(), body).0, 401);
    let future = signed(KEY, now() + 360, body);
    assert_eq!(served.post("/hooks/generic", &future.refs(), body).0, 401);
    // Oversized (the limit is 64 KiB here), even when signed.
    let mut big = br#"{"alert":"ec2-cpu-high","labels":{"pad":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 70_000));
    big.extend(br#""}}"#);
    let big_sig = signed(KEY, now(), &big);
    assert_eq!(served.post("/hooks/generic", &big_sig.refs(), &big).0, 413);
    let auth = bearer(TOKEN);
    assert_eq!(
        served
            .post(
                "/hooks/alertmanager",
                &[("authorization", auth.as_str())],
                &big
            )
            .0,
        413
    );

    // The real one goes through once; the identical request again is a replay.
    let (status, answer) = served.post("/hooks/generic", &good.refs(), body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcome(&answer, 0).0, "accepted");
    assert_eq!(served.post("/hooks/generic", &good.refs(), body).0, 401);

    let runs = served.wait_finished(1, Duration::from_secs(20));
    assert_eq!(
        runs.len(),
        1,
        "exactly the authenticated request ran: {runs:#?}"
    );
    assert_eq!(
        metric(
            &served,
            "runbook_hook_requests_rejected_total{source=\"generic\",reason=\"unauthenticated\"}"
        ),
        6.0
    );
    assert_eq!(
        metric(
            &served,
            "runbook_hook_requests_rejected_total{source=\"alertmanager\",reason=\"unauthenticated\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &served,
            "runbook_hook_requests_rejected_total{source=\"generic\",reason=\"too_large\"}"
        ),
        1.0
    );
    let journal = s.journal();
    assert_eq!(of_type(&journal, "request_refused").len(), 10);
    // Secrets never reach the journal.
    let text = serde_json::to_string(&journal).unwrap();
    assert!(!text.contains(KEY) && !text.contains(TOKEN));
}

#[test]
fn a_flood_of_a_thousand_requests_starts_exactly_what_the_guardrails_allow() {
    // 250 unsigned, 250 wrongly signed, 250 copies of one alert, 250 alerts for distinct
    // targets; one runbook may run 5 times an hour.
    let s = setup(
        "",
        "max_runs_per_hour_per_runbook = 5\ndedupe_window = \"10m\"",
        "",
    );
    // A fleet this size is not needed: targets need only be distinct, the runbook only tags.
    let served = s.served();
    let url = served.url("/hooks/generic");
    let statuses: Vec<u16> = block_on(async {
        let client = client();
        let mut futures = Vec::new();
        for i in 0..1000 {
            let (url, client) = (url.clone(), client.clone());
            futures.push(async move {
                let (body, headers): (Vec<u8>, Vec<(&str, String)>) = match i % 4 {
                    0 => (br#"{"alert":"ec2-cpu-high","labels":{"instance_id":"i-0a1b2c3d4e5f60001"}}"#.to_vec(), vec![]),
                    1 => {
                        let b = br#"{"alert":"ec2-cpu-high","labels":{"instance_id":"i-0a1b2c3d4e5f60001"}}"#.to_vec();
                        let h = signed("wrong", now(), &b);
                        (b, h)
                    }
                    2 => {
                        // The same alert, each request signed separately (not a replay).
                        let b = format!(r#"{{"alert":"ec2-cpu-high","labels":{{"instance_id":"{I1}","n":"x"}},"fingerprint":"same","starts_at":"{i}"}}"#).into_bytes();
                        let h = signed(KEY, now(), &b);
                        (b, h)
                    }
                    _ => {
                        let b = format!(r#"{{"alert":"ec2-cpu-high","labels":{{"instance_id":"i-{i:017x}"}}}}"#).into_bytes();
                        let h = signed(KEY, now(), &b);
                        (b, h)
                    }
                };
                let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                send(&client, reqwest::Method::POST, &url, &refs, body).await.0
            });
        }
        futures_util::future::join_all(futures).await
    });
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        unauthorized, 500,
        "every unsigned and wrongly signed request is refused"
    );
    assert_eq!(
        ok, 500,
        "every authenticated request is answered: {statuses:?}"
    );
    let runs = served.wait_finished(5, Duration::from_secs(60));
    assert_eq!(runs.len(), 5, "exactly the hourly limit of runs: {runs:#?}");
    let journal = s.journal();
    let alerts = of_type(&journal, "alert");
    assert_eq!(alerts.len(), 500, "every authenticated alert is recorded");
    let count = |outcome: &str, reason: &str| {
        alerts
            .iter()
            .filter(|a| a["outcome"] == outcome && (reason.is_empty() || a["reason"] == reason))
            .count()
    };
    assert_eq!(count("accepted", ""), 5);
    assert_eq!(
        count("refused", "rate_limited"),
        1,
        "one alert trips the breaker"
    );
    assert_eq!(
        count("deduplicated", "") + count("refused", "breaker_open"),
        494
    );
    assert_eq!(of_type(&journal, "request_refused").len(), 500);
    // The trip is escalated once, not once per refused alert.
    let breaker_messages = s
        .escalations()
        .iter()
        .filter(|t| t.contains("rate_limited"))
        .count();
    assert_eq!(breaker_messages, 1, "{:#?}", s.escalations());
}

#[test]
fn duplicates_are_deduplicated_and_a_target_cools_down() {
    let s = setup("", "dedupe_window = \"10m\"", "");
    let served = s.served();
    let first = am_payload(&[("ec2-cpu-high", &[("instance_id", I1)])]);
    assert_eq!(outcome(&post_am(&served, &first).1, 0).0, "accepted");
    assert_eq!(outcome(&post_am(&served, &first).1, 0).0, "deduplicated");
    // Another alert (other labels, other fingerprint) for the same instance: cooldown.
    let again = am_payload(&[("ec2-cpu-high", &[("instance_id", I1), ("severity", "P1")])]);
    let (_, answer) = post_am(&served, &again);
    assert_eq!(
        outcome(&answer, 0),
        ("refused".into(), "cooldown".into()),
        "{answer}"
    );
    // Another instance is not cooling down.
    let other = am_payload(&[("ec2-cpu-high", &[("instance_id", I2)])]);
    assert_eq!(outcome(&post_am(&served, &other).1, 0).0, "accepted");
    let runs = served.wait_finished(2, Duration::from_secs(20));
    assert_eq!(runs.len(), 2);
    // The cooldown refusal is escalated: the alert came back after remediation.
    let msgs = s.escalations();
    let wait_start = std::time::Instant::now();
    let msgs = if msgs.is_empty() {
        while s.escalations().is_empty() && wait_start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        s.escalations()
    } else {
        msgs
    };
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert!(
        msgs[0].contains("ec2-cpu-high") && msgs[0].contains("cooldown"),
        "{}",
        msgs[0]
    );
    assert!(msgs[0].contains("Journal: "), "{}", msgs[0]);
    assert_eq!(
        metric(&served, "runbook_guardrail_trips_total{rule=\"cooldown\"}"),
        1.0
    );
}

fn wait_for_escalations(s: &Setup, n: usize) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let msgs = s.escalations();
        if msgs.len() >= n || start.elapsed() > Duration::from_secs(15) {
            return msgs;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_breaker_stays_open_across_a_restart_until_reset() {
    let s = setup("", "max_runs_per_hour = 2", "");
    let mut served = s.served();
    for id in [I1, I2] {
        let p = am_payload(&[("ec2-cpu-high", &[("instance_id", id)])]);
        assert_eq!(outcome(&post_am(&served, &p).1, 0).0, "accepted");
    }
    let third = am_payload(&[("ec2-cpu-high", &[("instance_id", I3)])]);
    assert_eq!(outcome(&post_am(&served, &third).1, 0).1, "rate_limited");
    served.wait_finished(2, Duration::from_secs(20));
    let health = served.get("/healthz").1;
    assert!(health["breakers"]["*"].is_object(), "{health}");
    assert_eq!(served.terminate(Duration::from_secs(20)), 0);

    // A restart does not close it.
    let served = s.served();
    let fourth = am_payload(&[("ec2-cpu-high", &[("instance_id", I3), ("try", "2")])]);
    assert_eq!(outcome(&post_am(&served, &fourth).1, 0).1, "breaker_open");
    // Only with the admin token.
    assert_eq!(served.post("/admin/breaker/reset", &[], b"").0, 401);
    let auth = bearer(ADMIN);
    let (status, closed) = served.post(
        "/admin/breaker/reset",
        &[("authorization", auth.as_str())],
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(closed["closed"], json!(["*"]));
    let fifth = am_payload(&[("ec2-cpu-high", &[("instance_id", I3), ("try", "3")])]);
    assert_eq!(outcome(&post_am(&served, &fifth).1, 0).0, "accepted");
    served.wait_finished(1, Duration::from_secs(20));
    let resets = of_type(&s.journal(), "breaker_reset").len();
    assert_eq!(resets, 1);
}

#[test]
fn the_blast_radius_stops_a_run_mid_way_and_is_escalated() {
    let s = setup("", "max_resources = 2", "");
    let served = s.served();
    let (_, answer) = post_am(&served, &am_payload(&[("wide", &[("instance_id", I1)])]));
    assert_eq!(outcome(&answer, 0).0, "accepted", "{answer}");
    let runs = served.wait_finished(1, Duration::from_secs(20));
    assert_eq!(runs[0]["status"], "failed", "{:#?}", runs[0]);
    let ev = events(&s.ws.path().join(runs[0]["transcript"].as_str().unwrap()));
    let guard = of_type(&ev, "guardrail");
    assert_eq!(guard.len(), 1);
    assert_eq!(guard[0]["rule"], "blast_radius");
    assert_eq!(
        of_type(&ev, "call")
            .iter()
            .filter(|c| c["mutating"] == true)
            .count(),
        2
    );
    assert_eq!(s.tag_of("sim-state.json", I1, "Wide").as_deref(), Some("1"));
    assert_eq!(s.tag_of("sim-state.json", I2, "Wide").as_deref(), Some("2"));
    assert_eq!(s.tag_of("sim-state.json", I3, "Wide"), None);
    let msgs = wait_for_escalations(&s, 1);
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert!(msgs[0].contains("blast_radius"), "{}", msgs[0]);
    assert!(
        msgs[0].contains(runs[0]["transcript"].as_str().unwrap()),
        "{}",
        msgs[0]
    );
    assert_eq!(
        metric(&served, "runbook_runs_total{status=\"failed\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &served,
            "runbook_guardrail_trips_total{rule=\"blast_radius\"}"
        ),
        1.0
    );
}

#[test]
fn the_kill_switch_file_stops_starts_and_the_parameter_stops_writes() {
    let s = setup(
        "",
        "kill_switch = \"STOP\"\nkill_switch_parameter = \"/runbook/kill-switch\"",
        "",
    );
    // The switch file: nothing starts.
    s.ws.write("STOP", "incident commander says stop\n");
    let served = s.served();
    let (_, answer) = post_am(
        &served,
        &am_payload(&[("ec2-cpu-high", &[("instance_id", I1)])]),
    );
    assert_eq!(
        outcome(&answer, 0),
        ("refused".into(), "kill_switch".into())
    );
    std::fs::remove_file(s.ws.path().join("STOP")).unwrap();
    // The parameter, set in the (simulated) account: the run starts, its write is refused.
    let fleet = s.ws.read("fleet.toml");
    s.ws.write(
        "fleet.toml",
        &format!("{fleet}\n[[parameters]]\nname = \"/runbook/kill-switch\"\nvalue = \"on\"\n"),
    );
    drop(served);
    let _ = std::fs::remove_file(s.ws.path().join("sim-state.json"));
    let served = s.served();
    let (_, answer) = post_am(
        &served,
        &am_payload(&[("ec2-cpu-high", &[("instance_id", I2)])]),
    );
    assert_eq!(outcome(&answer, 0).0, "accepted", "{answer}");
    let runs = served.wait_finished(1, Duration::from_secs(20));
    assert_eq!(runs[0]["status"], "failed");
    let ev = events(&s.ws.path().join(runs[0]["transcript"].as_str().unwrap()));
    assert_eq!(of_type(&ev, "guardrail")[0]["rule"], "kill_switch");
    assert!(of_type(&ev, "intent").is_empty(), "nothing was sent");
    assert_eq!(s.tag_of("sim-state.json", I2, "Remediated"), None);
    let msgs = wait_for_escalations(&s, 2);
    assert!(msgs.iter().any(|m| m.contains("kill_switch")), "{msgs:#?}");
}

#[test]
fn confirm_steps_and_protected_environments_need_a_rule_that_allows_them() {
    let s = setup("", "", "");
    let served = s.served();
    let post =
        |alert: &str, id: &str| post_am(&served, &am_payload(&[(alert, &[("instance_id", id)])]));
    assert_eq!(outcome(&post("needs-confirm", I1).1, 0).0, "accepted");
    assert_eq!(outcome(&post("confirm-ok", I2).1, 0).0, "accepted");
    assert_eq!(
        outcome(&post("prod-cpu", I1).1, 0),
        ("refused".into(), "protected".into())
    );
    assert_eq!(outcome(&post("prod-cpu-allowed", I3).1, 0).0, "accepted");
    let runs = served.wait_finished(3, Duration::from_secs(30));
    let by_route = |route: &str| runs.iter().find(|r| r["route"] == route).unwrap().clone();
    // Without allow_confirm the confirm step is not run: the run stops, recorded and escalated.
    assert_eq!(by_route("confirm-denied")["status"], "aborted");
    assert_eq!(s.tag_of("sim-state.json", I1, "Confirmed"), None);
    // With it, the rule is the confirmation, and the transcript says so.
    let allowed = by_route("confirm-allowed");
    assert_eq!(allowed["status"], "ok");
    let ev = events(&s.ws.path().join(allowed["transcript"].as_str().unwrap()));
    let decision = of_type(&ev, "decision")[0];
    assert!(
        decision["reason"]
            .as_str()
            .unwrap()
            .contains("allow_confirm"),
        "{decision}"
    );
    assert_eq!(
        s.tag_of("sim-state.json", I2, "Confirmed").as_deref(),
        Some("true")
    );
    // The protected environment, allowed by its rule.
    assert_eq!(by_route("prod-allowed")["status"], "ok");
    assert_eq!(
        s.tag_of("prod-state.json", I3, "Remediated").as_deref(),
        Some("true")
    );
    let msgs = wait_for_escalations(&s, 2);
    assert!(msgs.iter().any(|m| m.contains("protected")), "{msgs:#?}");
    assert!(msgs.iter().any(|m| m.contains("run_aborted")), "{msgs:#?}");
}

#[test]
fn a_full_queue_answers_503_and_records_the_alert() {
    let s = setup("workers = 1\nqueue = 1", "", "");
    let served = s.served();
    let slow = |id: &str| am_payload(&[("ec2-cpu-high", &[("instance_id", id), ("pause", "3s")])]);
    let first = post_am(&served, &slow(I1));
    assert_eq!(outcome(&first.1, 0).0, "accepted", "{:?}", first);
    // The one worker is busy with it; the queue has room for one more.
    served.wait_running(1, Duration::from_secs(20));
    assert_eq!(outcome(&post_am(&served, &slow(I2)).1, 0).0, "accepted");
    let (status, answer) = post_am(&served, &slow(I3));
    assert_eq!(status, 503, "{answer}");
    assert_eq!(outcome(&answer, 0).0, "queue_full");
    // Not deduplicated or cooling down on the retry, once there is room.
    served.wait_finished(2, Duration::from_secs(20));
    let (status, answer) = post_am(&served, &slow(I3));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcome(&answer, 0).0, "accepted");
    served.wait_finished(3, Duration::from_secs(20));
    let journal = s.journal();
    assert_eq!(
        of_type(&journal, "alert")
            .iter()
            .filter(|a| a["outcome"] == "queue_full")
            .count(),
        1
    );
}

#[test]
fn sigterm_drains_running_runs_then_aborts_them_on_the_deadline() {
    let s = setup("drain = \"1s\"", "", "");
    let mut served = s.served();
    let body = am_payload(&[("ec2-cpu-high", &[("instance_id", I1), ("pause", "30s")])]);
    assert_eq!(outcome(&post_am(&served, &body).1, 0).0, "accepted");
    served.wait_running(1, Duration::from_secs(20));
    let started = std::time::Instant::now();
    assert_eq!(
        served.terminate(Duration::from_secs(20)),
        0,
        "{}",
        served.log_text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the drain deadline was kept"
    );
    let journal = s.journal();
    let finished = of_type(&journal, "run_finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["status"], "aborted");
    let ev = events(
        &s.ws
            .path()
            .join(finished[0]["transcript"].as_str().unwrap()),
    );
    assert_eq!(of_type(&ev, "run_finished")[0]["status"], "aborted");
    s.ws.run(&[
        "transcript",
        "verify",
        finished[0]["transcript"].as_str().unwrap(),
    ])
    .expect_code(0);
    assert_eq!(of_type(&journal, "stopped")[0]["aborted_runs"], 1);
    assert!(
        wait_for_escalations(&s, 1)
            .iter()
            .any(|m| m.contains("run_aborted"))
    );
}

#[test]
fn health_metrics_and_runs_endpoints() {
    let s = setup("", "", "");
    let served = s.served();
    let (status, health) = served.get("/healthz");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    post_am(
        &served,
        &am_payload(&[("ec2-cpu-high", &[("instance_id", I1)])]),
    );
    let runs = served.wait_finished(1, Duration::from_secs(20));
    let id = runs[0]["run_id"].as_str().unwrap();
    // With an admin token configured, /runs needs it.
    let (status, _) = block_on(send(
        &client(),
        reqwest::Method::GET,
        &served.url("/runs"),
        &[],
        vec![],
    ));
    assert_eq!(status, 401);
    let (status, one) = served.get(&format!("/runs/{id}"));
    assert_eq!(status, 200);
    assert_eq!(one["status"], "ok");
    assert_eq!(served.get("/runs/nope").0, 404);
    let (_, m) = served.get("/metrics");
    let m = m.as_str().unwrap();
    for name in [
        "runbook_alerts_received_total",
        "runbook_alerts_total",
        "runbook_runs_total",
        "runbook_run_duration_seconds_bucket",
        "runbook_alert_to_first_call_seconds_count",
        "runbook_runs_running",
        "runbook_breakers_open",
    ] {
        assert!(m.contains(name), "{name} missing from:\n{m}");
    }
    assert_eq!(metric(&served, "runbook_runs_total{status=\"ok\"}"), 1.0);
}

#[test]
fn sns_signatures_are_refused_over_an_expired_a_not_yet_valid_or_another_key_s_certificate() {
    let topic = "arn:aws:sns:us-east-1:123456789012:ec2-manager-alarms";
    let s = setup(
        "",
        "",
        &format!(
            "[sns]\ntopics = [\"{topic}\"]\ncert_url = '^http://127\\.0\\.0\\.1:\\d+/files/SimpleNotificationService-[0-9a-f]+\\.pem$'\n"
        ),
    );
    // Each certificate at its own URL: the receiver caches certificates by URL.
    let certs = [
        ("0e1", common::sns::EXPIRED_CERT),
        ("0e2", common::sns::NOT_YET_VALID_CERT),
        ("0e3", common::sns::OTHER_CERT),
        ("0e4", common::sns::CERT),
    ];
    for (name, pem) in certs {
        s.slack
            .serve_file(&format!("SimpleNotificationService-{name}.pem"), pem);
    }
    let served = s.served();
    let post = |name: &str, instance: &str| {
        let cert_url = s
            .slack
            .url(&format!("/files/SimpleNotificationService-{name}.pem"));
        let alarm = common::sns::cloudwatch_alarm_message(
            "ec2-cpu-high-cw",
            "ALARM",
            &[("InstanceId", instance)],
        );
        let envelope =
            common::sns::signed_notification(topic, &cert_url, &alarm, None, "2", common::sns::KEY);
        served.post(
            "/hooks/sns",
            &[("content-type", "text/plain; charset=UTF-8")],
            &serde_json::to_vec(&envelope).unwrap(),
        )
    };
    // The expired and not-yet-valid certificates hold the signing key itself: only their
    // validity window refuses them, so a check that looked at the key alone would let them in.
    for name in ["0e1", "0e2", "0e3"] {
        let (status, answer) = post(name, I1);
        assert_eq!(status, 401, "certificate {name}: {answer}");
    }
    // The same message over the good certificate runs: the refusals above were the certificates'.
    let (status, answer) = post("0e4", I1);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcome(&answer, 0).0, "accepted", "{answer}");
}

#[test]
fn sns_notifications_are_verified_before_they_run() {
    let topic = "arn:aws:sns:us-east-1:123456789012:ec2-manager-alarms";
    let s = setup(
        "",
        "",
        &format!(
            "[sns]\ntopics = [\"{topic}\"]\ncert_url = '^http://127\\.0\\.0\\.1:\\d+/files/SimpleNotificationService-[0-9a-f]+\\.pem$'\nsubscribe_url = '^http://127\\.0\\.0\\.1:\\d+/confirm\\?'\n"
        ),
    );
    s.slack
        .serve_file("SimpleNotificationService-0a1b.pem", common::sns::CERT);
    let cert_url = s.slack.url("/files/SimpleNotificationService-0a1b.pem");
    let served = s.served();
    let alarm =
        common::sns::cloudwatch_alarm_message("ec2-cpu-high-cw", "ALARM", &[("InstanceId", I1)]);
    let post = |v: &Value| {
        served.post(
            "/hooks/sns",
            &[("content-type", "text/plain; charset=UTF-8")],
            &serde_json::to_vec(v).unwrap(),
        )
    };

    // Subscription for an allow-listed topic: confirmed by visiting SubscribeURL.
    let sub_url = format!(
        "{}?Action=ConfirmSubscription&Token=t0k",
        s.slack.url("/confirm")
    );
    let sub = common::sns::signed_subscription_confirmation(
        topic,
        &cert_url,
        &sub_url,
        "2",
        common::sns::KEY,
    );
    assert_eq!(post(&sub).0, 200);
    assert!(
        s.slack
            .captured()
            .iter()
            .any(|c| c.path.starts_with("/confirm?Action=ConfirmSubscription"))
    );

    // v1 and v2 notifications run.
    let v1 = common::sns::signed_notification(
        topic,
        &cert_url,
        &alarm,
        Some("ALARM"),
        "1",
        common::sns::KEY,
    );
    let (status, answer) = post(&v1);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcome(&answer, 0).0, "accepted", "{answer}");
    let alarm2 =
        common::sns::cloudwatch_alarm_message("ec2-cpu-high-cw", "ALARM", &[("InstanceId", I2)]);
    let v2 =
        common::sns::signed_notification(topic, &cert_url, &alarm2, None, "2", common::sns::KEY);
    assert_eq!(outcome(&post(&v2).1, 0).0, "accepted");
    // The same message again (SNS retries) is not processed twice.
    assert_eq!(post(&v2).0, 401);

    // Refused: wrong key, another topic, a certificate URL off the allow-list, tampering.
    let alarm3 =
        common::sns::cloudwatch_alarm_message("ec2-cpu-high-cw", "ALARM", &[("InstanceId", I3)]);
    let bad_key = common::sns::signed_notification(
        topic,
        &cert_url,
        &alarm3,
        None,
        "2",
        common::sns::OTHER_KEY,
    );
    assert_eq!(post(&bad_key).0, 401);
    let other_topic = "arn:aws:sns:us-east-1:123456789012:someone-elses";
    let wrong_topic = common::sns::signed_notification(
        other_topic,
        &cert_url,
        &alarm3,
        None,
        "2",
        common::sns::KEY,
    );
    assert_eq!(post(&wrong_topic).0, 401);
    let off_list = "http://127.0.0.1:1/evil/cert.pem";
    let off =
        common::sns::signed_notification(topic, off_list, &alarm3, None, "2", common::sns::KEY);
    assert_eq!(post(&off).0, 401);
    let mut tampered =
        common::sns::signed_notification(topic, &cert_url, &alarm3, None, "2", common::sns::KEY);
    tampered["Message"] = json!(alarm3.replace(I3, I1));
    assert_eq!(post(&tampered).0, 401);

    // Correctly signed but two hours old: a captured message replayed later.
    let two_hours_ago = (chrono::Utc::now() - chrono::Duration::hours(2))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let old = common::sns::signed_notification_at(
        topic,
        &cert_url,
        &alarm3,
        None,
        "2",
        common::sns::KEY,
        &two_hours_ago,
    );
    assert_eq!(post(&old).0, 401);
    assert!(
        of_type(&s.journal(), "request_refused")
            .iter()
            .any(|r| r["detail"]
                .as_str()
                .unwrap()
                .contains("outside the accepted age")),
        "the old message is refused for its age"
    );
    let runs = served.wait_finished(2, Duration::from_secs(20));
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert!(
        runs.iter()
            .all(|r| r["status"] == "ok" && r["source"] == "sns")
    );
    // The alarm's dimensions and its region code (from AlarmArn) are the run's trigger labels.
    let ev = events(&s.ws.path().join(runs[0]["transcript"].as_str().unwrap()));
    let labels = &of_type(&ev, "run_started")[0]["trigger"]["labels"];
    assert_eq!(labels["region"], "us-east-1", "{labels}");
    assert_eq!(labels["alarm_name"], "ec2-cpu-high-cw");
    assert!(
        labels["InstanceId"] == I1 || labels["InstanceId"] == I2,
        "{labels}"
    );
    assert_eq!(s.tag_of("sim-state.json", I3, "Remediated"), None);
    // The certificate was fetched once, and never from off the allow-list.
    let fetches = s
        .slack
        .captured()
        .iter()
        .filter(|c| c.path.starts_with("/files/"))
        .count();
    assert_eq!(fetches, 1);
}

#[test]
fn hook_one_shot_runs_from_stdin_and_fails_when_the_run_fails() {
    let s = setup("", "max_resources = 2", "");
    let run = |payload: &str| s.hook(payload);
    let ok = run(&format!(
        r#"{{"alert":"ec2-cpu-high","labels":{{"instance_id":"{I1}"}}}}"#
    ));
    ok.expect_code(0);
    let out: Value = serde_json::from_str(&ok.stdout).unwrap();
    assert_eq!(out["runs"][0]["status"], "ok", "{out}");
    // The same alert again: the guardrail state persisted between invocations.
    let again = run(&format!(
        r#"{{"alert":"ec2-cpu-high","labels":{{"instance_id":"{I1}"}}}}"#
    ));
    again.expect_code(0);
    let out: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(out["alerts"][0]["outcome"], "deduplicated");
    // A run that fails: exit 1, escalated.
    let failing = run(&format!(
        r#"{{"alert":"wide","labels":{{"instance_id":"{I2}"}}}}"#
    ));
    failing.expect_code(1);
    assert!(
        wait_for_escalations(&s, 1)
            .iter()
            .any(|m| m.contains("blast_radius"))
    );
    // Garbage is refused before anything runs.
    run("not json").expect_code(2);
}

#[test]
fn a_broken_hooks_file_is_refused_whole_before_anything_listens() {
    let s = setup("", "", "");
    s.ws.run(&["serve", "--check"]).expect_code(0);
    let good = s.ws.read("hooks.toml");
    s.ws.write(
        "hooks.toml",
        &format!(
            "{good}\n[[route]]\nname = \"typo\"\nalert = \"x\"\nrunbook = \"tag-target@1.0.0\"\nparams = {{ instanceid = \"{{labels.instance_id}}\" }}\ntarget = \"{{labels.instance_id}}\"\n\n[[route]]\nname = \"old\"\nalert = \"y\"\nrunbook = \"tag-target@2.0.0\"\n\n[[route]]\nname = \"nowhere\"\nalert = \"z\"\nrunbook = \"tag-target@1.0.0\"\nenvironment = \"staging\"\n"
        ),
    );
    let check = s.ws.run(&["serve", "--check"]);
    check.expect_code(2);
    for needle in [
        "\"typo\"",
        "instanceid",
        "\"old\"",
        "2.0.0",
        "\"nowhere\"",
        "staging",
    ] {
        assert!(
            check.stderr.contains(needle),
            "{needle} not in:\n{}",
            check.stderr
        );
    }
    // `serve` itself refuses the same file, and journals nothing.
    s.serve_refused();
    assert!(!s.ws.exists("transcripts/hooks"));
    // An unpinned route is refused too: unattended runs never take "whatever is there".
    s.ws.write(
        "hooks.toml",
        &format!("{good}\n[[route]]\nname = \"loose\"\nalert = \"x\"\nrunbook = \"tag-target\"\n"),
    );
    let loose = s.ws.run(&["serve", "--check"]);
    loose.expect_code(2);
    assert!(loose.stderr.contains("pin"), "{}", loose.stderr);
}

#[test]
fn a_route_with_params_but_no_target_is_refused_at_check_and_start_up() {
    let s = setup("", "", "");
    let good = s.ws.read("hooks.toml");
    // Keyed on every parameter, `pause=1ms` and `pause=2ms` would be two targets: the same
    // instance remediated again and again inside its cooldown.
    s.ws.write(
        "hooks.toml",
        &format!(
            "{good}\n[[route]]\nname = \"untargeted\"\nalert = \"x\"\nrunbook = \"tag-target@1.0.0\"\nenvironment = \"sim\"\nparams = {{ instance_id = \"{{labels.instance_id}}\", pause = \"{{labels.pause|0s}}\" }}\n"
        ),
    );
    let check = s.ws.run(&["serve", "--check"]);
    check.expect_code(2);
    assert!(
        check.stderr.contains("\"untargeted\"") && check.stderr.contains("set `target`"),
        "{}",
        check.stderr
    );
    let started = s.serve_refused();
    assert!(
        started.stderr.contains("set `target`"),
        "{}",
        started.stderr
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let s = setup("", "", "");
    let mut env = s.env();
    env.push(("RUNBOOK_LOG_FORMAT", "json".into()));
    let mut served = Served::start(&s.ws, &env.refs());
    served.admin = Some(ADMIN.to_string());
    post_am(
        &served,
        &am_payload(&[("ec2-cpu-high", &[("instance_id", I1)])]),
    );
    served.wait_finished(1, Duration::from_secs(20));
    assert_eq!(served.terminate(Duration::from_secs(20)), 0);
    let log = served.log_text();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "alert" && l["fields"]["outcome"] == "accepted"),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "listening"),
        "{log}"
    );
    assert!(!log.contains(TOKEN) && !log.contains(KEY));
}

#[test]
fn hook_reset_breakers_closes_a_breaker_left_open_in_the_saved_state() {
    let s = setup("", "max_runs_per_hour = 1", "");
    let hook = |payload: &str| {
        let run = s.hook(payload);
        run.expect_code(0);
        let out: Value = serde_json::from_str(&run.stdout).unwrap();
        out["alerts"][0]["reason"]
            .as_str()
            .unwrap_or(out["alerts"][0]["outcome"].as_str().unwrap())
            .to_string()
    };
    let alert =
        |id: &str| format!(r#"{{"alert":"ec2-cpu-high","labels":{{"instance_id":"{id}"}}}}"#);
    assert_eq!(hook(&alert(I1)), "accepted");
    assert_eq!(hook(&alert(I2)), "rate_limited");
    assert_eq!(hook(&alert(I3)), "breaker_open");
    let reset = s.ws.run(&["hook", "--reset-breakers"]);
    reset.expect_code(0);
    assert!(reset.stdout.contains("closed: *"), "{}", reset.stdout);
    assert_eq!(
        hook(&format!(
            r#"{{"alert":"ec2-cpu-high","labels":{{"instance_id":"{I3}","try":"2"}}}}"#
        )),
        "accepted"
    );
    let again = s.ws.run(&["hook", "--reset-breakers"]);
    assert!(again.stdout.contains("none"), "{}", again.stdout);
}

// ---- hardening (issue 12) ---------------------------------------------------------------------

/// A generic webhook request for `body`, signed now, with the signature's hex as `case` makes it.
fn signed_with_case(body: &[u8], case: fn(&str) -> String) -> Vec<(&'static str, String)> {
    let mut headers = signed(KEY, now(), body);
    let sig = headers[1].1.trim_start_matches("sha256=").to_string();
    headers[1].1 = format!("sha256={}", case(&sig));
    headers
}

#[test]
fn a_replayed_generic_request_is_refused_whatever_the_case_of_its_signature_hex() {
    let s = setup("", "", "");
    let served = s.served();
    let body = br#"{"alert":"ec2-cpu-high","labels":{"instance_id":"i-0a1b2c3d4e5f60001"}}"#;
    let lower = signed(KEY, now(), body);
    let (status, answer) = served.post("/hooks/generic", &lower.refs(), body);
    assert_eq!(status, 200, "{answer}");
    // The same MAC in upper and in mixed case is the same request.
    let mut upper = lower.clone();
    upper[1].1 = format!(
        "sha256={}",
        lower[1].1.trim_start_matches("sha256=").to_uppercase()
    );
    let (status, answer) = served.post("/hooks/generic", &upper.refs(), body);
    assert_eq!(status, 401, "{answer}");
    let mut mixed = lower.clone();
    let hex: String = lower[1]
        .1
        .trim_start_matches("sha256=")
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    mixed[1].1 = format!("sha256={hex}");
    assert_eq!(served.post("/hooks/generic", &mixed.refs(), body).0, 401);
    // A fresh request signed in upper case is fine (the case is not what is refused).
    let other = br#"{"alert":"ec2-cpu-high","labels":{"instance_id":"i-0a1b2c3d4e5f60002"}}"#;
    let fresh = signed_with_case(other, |h| h.to_uppercase());
    assert_eq!(served.post("/hooks/generic", &fresh.refs(), other).0, 200);
    assert_eq!(served.wait_finished(2, Duration::from_secs(20)).len(), 2);
}

#[test]
fn a_generic_alert_answered_503_for_a_full_queue_runs_when_the_sender_retries_it() {
    let s = setup("workers = 1\nqueue = 1", "", "");
    let served = s.served();
    let slow = |id: &str| {
        format!(r#"{{"alert":"ec2-cpu-high","labels":{{"instance_id":"{id}","pause":"2s"}}}}"#)
    };
    let send = |body: &str, headers: &[(&'static str, String)]| {
        served.post("/hooks/generic", &headers.to_vec().refs(), body.as_bytes())
    };
    let first = slow(I1);
    assert_eq!(send(&first, &signed(KEY, now(), first.as_bytes())).0, 200);
    served.wait_running(1, Duration::from_secs(20));
    let second = slow(I2);
    assert_eq!(send(&second, &signed(KEY, now(), second.as_bytes())).0, 200);
    let third = slow(I3);
    let third_headers = signed(KEY, now(), third.as_bytes());
    let (status, answer) = send(&third, &third_headers);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(outcome(&answer, 0).0, "queue_full");
    served.wait_finished(2, Duration::from_secs(20));
    // The sender's retry is the very same signed request: not a replay, it runs.
    let (status, answer) = send(&third, &third_headers);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcome(&answer, 0).0, "accepted", "{answer}");
    let runs = served.wait_finished(3, Duration::from_secs(20));
    assert_eq!(
        runs.iter().filter(|r| r["status"] == "ok").count(),
        3,
        "{runs:#?}"
    );
    // Once handled, it is remembered: a third copy is a replay.
    assert_eq!(send(&third, &third_headers).0, 401);
}

#[test]
fn a_panicking_run_is_recorded_as_failed_and_escalated_and_its_worker_takes_the_next_alert() {
    let s = setup("workers = 2", "cooldown = \"0s\"", "");
    let mut env = s.env();
    env.push(("RUNBOOK_TEST_PANIC_RUN_FOR_INSTANCE", I3.to_string()));
    let mut served = Served::start(&s.ws, &env.refs());
    served.admin = Some(ADMIN.to_string());
    // As many panicking runs as there are workers: with a worker lost to each, nothing would
    // be left to run the next alert.
    for n in ["1", "2"] {
        let (status, answer) = post_am(
            &served,
            &am_payload(&[("ec2-cpu-high", &[("instance_id", I3), ("n", n)])]),
        );
        assert_eq!(status, 200, "{answer}");
        assert_eq!(outcome(&answer, 0).0, "accepted", "{answer}");
    }
    let runs = served.wait_finished(2, Duration::from_secs(20));
    for run in &runs {
        assert_eq!(run["status"], "failed", "{run}");
        assert!(
            run["reason"].as_str().unwrap().contains("panicked"),
            "{run}"
        );
        // The transcript says how the run ended, and still verifies.
        let path = s.ws.path().join(run["transcript"].as_str().unwrap());
        let ev = events(&path);
        let finished = of_type(&ev, "run_finished");
        assert_eq!(finished.len(), 1, "{ev:#?}");
        assert_eq!(finished[0]["status"], "failed");
        s.ws.run(&["transcript", "verify", path.to_str().unwrap()])
            .expect_code(0);
    }
    let (status, health) = served.get("/healthz");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["workers_alive"], 2, "{health}");
    // The next alert is taken and runs to the end.
    let (status, answer) = post_am(
        &served,
        &am_payload(&[("ec2-cpu-high", &[("instance_id", I1)])]),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcome(&answer, 0).0, "accepted", "{answer}");
    let runs = served.wait_finished(3, Duration::from_secs(20));
    assert_eq!(runs.iter().filter(|r| r["status"] == "ok").count(), 1);
    let journal = s.journal();
    let panicked: Vec<&Value> = of_type(&journal, "run_finished")
        .into_iter()
        .filter(|r| r["status"] == "failed")
        .collect();
    assert_eq!(panicked.len(), 2, "{journal:#?}");
    let msgs = wait_for_escalations(&s, 2);
    assert_eq!(
        msgs.iter().filter(|m| m.contains("run_failed")).count(),
        2,
        "{msgs:#?}"
    );
    assert_eq!(metric(&served, "runbook_runs_panicked_total"), 2.0);
    assert_eq!(served.terminate(Duration::from_secs(20)), 0);
}

#[test]
fn the_kill_switch_fails_closed_when_unreadable_and_the_alert_runs_once_it_is_removed() {
    let s = setup("", "kill_switch = \"STOP\"", "");
    // A dangling link: `exists()` says no; something was put there on purpose.
    std::os::unix::fs::symlink(s.ws.path().join("nowhere"), s.ws.path().join("STOP")).unwrap();
    let served = s.served();
    let alert = am_payload(&[("ec2-cpu-high", &[("instance_id", I1)])]);
    assert_eq!(
        outcome(&post_am(&served, &alert).1, 0),
        ("refused".into(), "kill_switch".into())
    );
    assert_eq!(served.get("/healthz").1["kill_switch"], true);
    // A symlink loop cannot be checked at all.
    std::fs::remove_file(s.ws.path().join("STOP")).unwrap();
    std::os::unix::fs::symlink(s.ws.path().join("STOP"), s.ws.path().join("STOP")).unwrap();
    assert_eq!(
        outcome(&post_am(&served, &alert).1, 0),
        ("refused".into(), "kill_switch".into())
    );
    // Removed: the alert, still firing and re-sent, runs (the refusal was not "handled").
    std::fs::remove_file(s.ws.path().join("STOP")).unwrap();
    let (status, answer) = post_am(&served, &alert);
    assert_eq!(status, 200);
    assert_eq!(outcome(&answer, 0).0, "accepted", "{answer}");
    let runs = served.wait_finished(1, Duration::from_secs(20));
    assert_eq!(runs[0]["status"], "ok");
}

#[test]
fn escalations_make_alert_labels_inert_redact_keys_and_name_the_severity() {
    let s = setup("", "", "");
    let served = s.served();
    // No instance_id: the route cannot fill its parameter, the alert is refused and escalated.
    let labels: &[(&str, &str)] = &[
        ("who", "<!channel> wake up"),
        ("link", "<https://evil.example|click>"),
        ("note", "fine\nStatus: Resolved"),
        ("key", "AKIAABCDEFGHIJKLMNOP"),
    ];
    let (_, answer) = post_am(&served, &am_payload(&[("ec2-cpu-high", labels)]));
    assert_eq!(outcome(&answer, 0), ("refused".into(), "bad_params".into()));
    let msgs = wait_for_escalations(&s, 1);
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    let m = &msgs[0];
    assert!(
        !m.contains("<!channel>") && m.contains("&lt;!channel&gt;"),
        "{m}"
    );
    assert!(!m.contains("<https://evil"), "{m}");
    assert!(!m.contains("AKIAABCDEFGHIJKLMNOP"), "{m}");
    assert_eq!(
        m.lines().filter(|l| l.starts_with("Status:")).count(),
        1,
        "{m}"
    );
    // No severity label: the runbook's own (P2), not "unknown".
    assert!(m.contains("Severity: P2"), "{m}");
    // A Slack block carries the same text: nothing unescaped hides there either.
    let bodies: Vec<Value> = s.slack.captured().into_iter().map(|c| c.body).collect();
    let raw = serde_json::to_string(&bodies).unwrap();
    assert!(!raw.contains("<!channel>") && !raw.contains("AKIAABCDEFGHIJKLMNOP"));
}

#[test]
fn escalations_for_bad_params_are_deduplicated_and_rate_limited() {
    let s = setup("", "", "[escalation]\nmax_per_hour = 3\n");
    // `setup` writes its own [escalation] table first; the test's overrides it in a second one.
    let hooks = s.ws.read("hooks.toml").replace(
        "[escalation]\nchannel = \"#ec2-manager-oncall\"\n\n[escalation]\nmax_per_hour = 3\n",
        "[escalation]\nchannel = \"#ec2-manager-oncall\"\nmax_per_hour = 3\n",
    );
    s.ws.write("hooks.toml", &hooks);
    let served = s.served();
    // The same bad alert again and again: one escalation.
    for _ in 0..5 {
        let (_, answer) = post_am(
            &served,
            &am_payload(&[("ec2-cpu-high", &[("host", "db1")])]),
        );
        assert_eq!(outcome(&answer, 0).1, "bad_params");
    }
    // Forty distinct ones: two more, then the hourly limit holds.
    for n in 0..40 {
        let n = n.to_string();
        post_am(
            &served,
            &am_payload(&[("ec2-cpu-high", &[("host", "db1"), ("n", &n)])]),
        );
    }
    let msgs = wait_for_escalations(&s, 3);
    assert_eq!(msgs.len(), 3, "{msgs:#?}");
    assert_eq!(
        metric(
            &served,
            "runbook_escalations_total{delivered=\"deduplicated\"}"
        ),
        4.0
    );
    assert_eq!(
        metric(
            &served,
            "runbook_escalations_total{delivered=\"rate_limited\"}"
        ),
        38.0
    );
    // Every alert is still on record.
    assert_eq!(of_type(&s.journal(), "alert").len(), 45);
}

/// A valid-looking SNS envelope from an unknown topic (refused before any fetch).
fn sns_from_topic(topic: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "Type": "Notification", "MessageId": "m-1", "TopicArn": topic, "Message": "{}",
        "Timestamp": "2026-11-23T10:30:00.000Z", "SignatureVersion": "2", "Signature": "AAAA",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-01.pem",
    }))
    .unwrap()
}

#[test]
fn refusals_quote_at_most_a_clipped_line_of_an_unauthenticated_body() {
    let s = setup("", "", "");
    let served = s.served();
    let huge = format!("arn:x\nFORGED LOG LINE level=ERROR {}", "A".repeat(60_000));
    let (status, answer) = served.post("/hooks/sns", &[], &sns_from_topic(&huge));
    assert_eq!(status, 401, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.len() < 400, "{} bytes", error.len());
    assert!(!error.contains('\n'), "{error}");
    // A JSON string where an envelope belongs: parsers quote what they were given.
    let quoted = format!("\"{}\"", "B".repeat(60_000));
    let (status, answer) = served.post("/hooks/sns", &[], quoted.as_bytes());
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().len() < 400, "{answer}");
    let journal = s.journal();
    let refused = of_type(&journal, "request_refused");
    assert_eq!(refused.len(), 2);
    for r in refused {
        assert!(r["detail"].as_str().unwrap().len() < 400, "{r}");
    }
    let log = served.log_text();
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED LOG LINE")),
        "a newline in a field forged a log line:\n{log}"
    );
    assert!(
        !log.contains(&"A".repeat(1000)),
        "the body reached the log whole"
    );
    assert!(
        !log.contains(&"B".repeat(1000)),
        "the body reached the log whole"
    );
}

/// Reads from `stream` until the server closes it; false if it was still open after `patience`
/// (a generous bound: the server's own timeout is what closes it).
fn closed_by_server(stream: &mut std::net::TcpStream, patience: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(patience)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_half_sent_request_is_cut_off_after_the_configured_timeouts() {
    use std::io::Write;
    let s = setup("header_timeout = \"1s\"\nbody_timeout = \"1s\"", "", "");
    let served = s.served();
    let addr = served.base.trim_start_matches("http://").to_string();
    // Half a header.
    let mut head = std::net::TcpStream::connect(&addr).unwrap();
    head.write_all(b"POST /hooks/generic HTTP/1.1\r\nHost: x\r\nContent-Le")
        .unwrap();
    assert!(closed_by_server(&mut head, Duration::from_secs(30)));
    // A whole header, half a body.
    let mut body = std::net::TcpStream::connect(&addr).unwrap();
    body.write_all(
        b"POST /hooks/generic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"alert\":",
    )
    .unwrap();
    assert!(closed_by_server(&mut body, Duration::from_secs(30)));
    let journal = s.journal();
    assert!(
        of_type(&journal, "request_refused")
            .iter()
            .any(|r| r["reason"] == "timed_out" && r["status"] == 408),
        "{journal:#?}"
    );
    // Nothing else was hurt: a real alert is answered.
    let (status, _) = post_am(
        &served,
        &am_payload(&[("ec2-cpu-high", &[("instance_id", I1)])]),
    );
    assert_eq!(status, 200);
}

#[test]
fn idle_connections_beyond_the_cap_do_not_keep_a_real_alert_out() {
    let s = setup("header_timeout = \"1s\"\nmax_connections = 16", "", "");
    let served = s.served();
    // The server may hold 128 descriptors: without a cap, the idle connections below would
    // take them all and the real alert could never be accepted.
    let limited = std::process::Command::new("prlimit")
        .args([&format!("--pid={}", served.pid()), "--nofile=128:128"])
        .status()
        .unwrap();
    assert!(limited.success());
    let addr = served.base.trim_start_matches("http://").to_string();
    let idle: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let (status, answer) = post_am(
        &served,
        &am_payload(&[("ec2-cpu-high", &[("instance_id", I1)])]),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcome(&answer, 0).0, "accepted");
    drop(idle);
    assert_eq!(
        served.wait_finished(1, Duration::from_secs(20))[0]["status"],
        "ok"
    );
}

#[test]
fn health_checks_and_scrapes_on_the_probe_listener_are_answered_while_every_alert_slot_is_taken() {
    let s = setup("header_timeout = \"60s\"\nmax_connections = 2", "", "");
    let probe_file = s.ws.path().join("probe.addr");
    let served = Served::start_with(
        &s.ws,
        &s.env().refs(),
        &[
            "--probe-listen",
            "127.0.0.1:0",
            "--probe-addr-file",
            probe_file.to_str().unwrap(),
        ],
    );
    let probe = format!(
        "http://{}",
        std::fs::read_to_string(&probe_file).unwrap().trim()
    );
    assert_ne!(probe, served.base);
    // Two idle connections take both alert slots for the minute of the header timeout.
    let addr = served.base.trim_start_matches("http://").to_string();
    let idle: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A client of its own for each request: a pooled connection belongs to the runtime that
    // opened it, and each `block_on` is a new one.
    let request = |method: reqwest::Method, url: String| {
        block_on(async {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap();
            let response = client.request(method, url).send().await?;
            let status = response.status().as_u16();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        })
    };
    let get = |url: String| request(reqwest::Method::GET, url);
    // The alert listener cannot answer now: what the probe listener is for.
    assert!(
        get(served.url("/healthz")).is_err(),
        "the alert listener answered with every slot taken"
    );
    assert_eq!(get(format!("{probe}/healthz")).unwrap().0, 200);
    let (status, metrics) = get(format!("{probe}/metrics")).unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("runbook_process_resident_memory_bytes"),
        "{metrics}"
    );
    // Nothing else is served there: no alert, no run list.
    for path in ["/runs", "/hooks/generic", "/admin/breaker/reset"] {
        assert_eq!(get(format!("{probe}{path}")).unwrap().0, 404, "{path}");
    }
    let posted = request(reqwest::Method::POST, format!("{probe}/hooks/generic"));
    assert_eq!(posted.unwrap().0, 404);
    // The container probe finds it from the file, and passes.
    let probed =
        s.ws.cmd()
            .args(&[
                "serve",
                "--healthcheck",
                "--probe-addr-file",
                probe_file.to_str().unwrap(),
            ])
            .output();
    assert_eq!(probed.code, 0, "{}", probed.stderr);
    assert!(probed.stdout.contains(&probe), "{}", probed.stdout);
    drop(idle);
}

fn prlimit(pid: u32, limit: &str) {
    let status = std::process::Command::new("prlimit")
        .args([&format!("--pid={pid}"), limit])
        .status()
        .unwrap();
    assert!(status.success(), "prlimit {limit}");
}

#[test]
fn a_journal_write_that_fails_is_rolled_back_answered_503_and_reported_unhealthy() {
    let s = setup("", "", "");
    let served = s.served();
    // Unmatched alerts: journaled, never run (run transcripts would hit the limit too).
    let unmatched = |n: usize| am_payload(&[("disk-full", &[("host", &format!("db{n}"))])]);
    assert_eq!(post_am(&served, &unmatched(0)).0, 200);
    let path = std::fs::read_dir(s.ws.path().join("transcripts/hooks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("journal-"))
        .unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    // A file-size limit 40 bytes on: the next line is written in part, then refused (EFBIG),
    // like a disk filling up mid-line.
    prlimit(served.pid(), &format!("--fsize={}:unlimited", size + 40));
    let (status, answer) = post_am(&served, &unmatched(1));
    assert_eq!(status, 503, "{answer}");
    assert_eq!(outcome(&answer, 0).1, "journal_unavailable", "{answer}");
    let (status, health) = served.get("/healthz");
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "journal_unwritable");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        size,
        "the half-written line was rolled back"
    );
    prlimit(served.pid(), "--fsize=unlimited:unlimited");
    // The next alert's record finds the journal writable again (that alert is still answered
    // 503: it was decided while the journal was down); the one after is taken.
    let mut answered = Vec::new();
    for n in 2..6 {
        let status = post_am(&served, &unmatched(n)).0;
        answered.push(status);
        if status == 200 {
            break;
        }
    }
    assert_eq!(answered.last(), Some(&200), "{answered:?}");
    assert_eq!(served.get("/healthz").0, 200);
    // Every line is whole and the chain verifies.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    s.ws.run(&["transcript", "verify", path.to_str().unwrap()])
        .expect_code(0);
}

#[test]
fn a_run_that_ends_ok_but_could_not_deliver_its_notification_is_escalated() {
    let s = setup("", "", "");
    let mut env = s.env();
    // The bot token's API is a port nothing listens on: the run's post fails (not `required`,
    // so the run goes on and ends ok).
    env.push(("SLACK_BOT_TOKEN", "xoxb-test-token".to_string()));
    env.push(("SLACK_API_URL", "http://127.0.0.1:9/api".to_string()));
    let mut served = Served::start(&s.ws, &env.refs());
    served.admin = Some(ADMIN.to_string());
    let (status, answer) = post_am(&served, &am_payload(&[("notify-me", &[])]));
    assert_eq!(status, 200, "{answer}");
    let runs = served.wait_finished(1, Duration::from_secs(20));
    assert_eq!(runs[0]["status"], "ok", "{runs:#?}");
    let ev = events(&s.ws.path().join(runs[0]["transcript"].as_str().unwrap()));
    let calls = of_type(&ev, "call");
    assert_eq!(calls[0]["result"]["ok"], false, "{calls:#?}");
    let msgs = wait_for_escalations(&s, 1);
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert!(
        msgs[0].contains("notification_undelivered") && msgs[0].contains("slack::post"),
        "{}",
        msgs[0]
    );
    // The runbook's severity, not "unknown".
    assert!(msgs[0].contains("Severity: P3"), "{}", msgs[0]);
    let journal = s.journal();
    let finished = &of_type(&journal, "run_finished")[0];
    assert_eq!(
        finished["undelivered_notifications"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Sends `request` as raw bytes and returns the status code of the answer.
fn raw_status(addr: &str, request: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The server may answer (413) before the whole body is written, and close.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&answer).to_string();
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {line:?}"))
}

#[test]
fn chunked_oversized_bodies_malformed_json_deep_nesting_and_admin_without_a_token_are_refused() {
    let s = setup("", "", "");
    let served = s.served();
    let addr = served.base.trim_start_matches("http://").to_string();
    // 413 for a chunked body over the limit (no Content-Length to refuse it by).
    let mut chunked = format!(
        "POST /hooks/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..10 {
        chunked.extend(format!("{:x}\r\n", 8000).as_bytes());
        chunked.extend(std::iter::repeat_n(b'x', 8000));
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    assert_eq!(raw_status(&addr, &chunked), 413);
    // 400 for malformed JSON and for JSON nested 20,000 deep (no stack overflow).
    assert_eq!(post_am(&served, b"{\"version\": \"4\", ").0, 400);
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    assert_eq!(post_am(&served, deep.as_bytes()).0, 400);
    let key = KEY;
    let deep_generic = format!("{{\"alert\":{}{}}}", "[".repeat(20_000), "]".repeat(20_000));
    let headers = signed(key, now(), deep_generic.as_bytes());
    assert_eq!(
        served
            .post("/hooks/generic", &headers.refs(), deep_generic.as_bytes())
            .0,
        400
    );
    // The admin endpoint: no token, a wrong one.
    assert_eq!(served.post("/admin/breaker/reset", &[], b"").0, 401);
    assert_eq!(
        served
            .post(
                "/admin/breaker/reset",
                &[("authorization", "Bearer not-the-admin")],
                b""
            )
            .0,
        401
    );
    let admin = bearer(ADMIN);
    assert_eq!(
        served
            .post(
                "/admin/breaker/reset",
                &[("authorization", admin.as_str())],
                b""
            )
            .0,
        200
    );
    // Still alive and nothing ran.
    assert_eq!(served.get("/healthz").0, 200);
    assert!(served.get("/runs").1["runs"].as_array().unwrap().is_empty());
}

#[test]
fn an_sns_alarm_answered_503_for_a_full_queue_runs_when_sns_retries_it() {
    let topic = "arn:aws:sns:us-east-1:123456789012:ec2-manager-alarms";
    let s = setup(
        "workers = 1\nqueue = 1",
        "",
        &format!(
            "[sns]\ntopics = [\"{topic}\"]\ncert_url = '^http://127\\.0\\.0\\.1:\\d+/files/SimpleNotificationService-[0-9a-f]+\\.pem$'\n"
        ),
    );
    s.slack
        .serve_file("SimpleNotificationService-0a1b.pem", common::sns::CERT);
    let cert_url = s.slack.url("/files/SimpleNotificationService-0a1b.pem");
    let served = s.served();
    let slow = |id: &str| am_payload(&[("ec2-cpu-high", &[("instance_id", id), ("pause", "2s")])]);
    assert_eq!(outcome(&post_am(&served, &slow(I1)).1, 0).0, "accepted");
    served.wait_running(1, Duration::from_secs(20));
    assert_eq!(outcome(&post_am(&served, &slow(I2)).1, 0).0, "accepted");
    let alarm =
        common::sns::cloudwatch_alarm_message("ec2-cpu-high-cw", "ALARM", &[("InstanceId", I3)]);
    let envelope =
        common::sns::signed_notification(topic, &cert_url, &alarm, None, "2", common::sns::KEY);
    let body = serde_json::to_vec(&envelope).unwrap();
    let (status, answer) = served.post("/hooks/sns", &[], &body);
    assert_eq!(status, 503, "{answer}");
    served.wait_finished(2, Duration::from_secs(20));
    // SNS re-delivers the same message (same MessageId): it is not a replay, it runs.
    let (status, answer) = served.post("/hooks/sns", &[], &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcome(&answer, 0).0, "accepted", "{answer}");
    let runs = served.wait_finished(3, Duration::from_secs(20));
    assert_eq!(
        runs.iter().filter(|r| r["status"] == "ok").count(),
        3,
        "{runs:#?}"
    );
    // Handled now: the next re-delivery is a replay.
    assert_eq!(served.post("/hooks/sns", &[], &body).0, 401);
}

#[test]
fn a_literal_route_param_that_is_no_duration_is_refused_at_check_and_start_up() {
    let s = setup("", "", "");
    s.ws.write(
        "runbooks/pausing.rhai",
        r#"runbook(#{ id: "pausing", version: "1.0.0", title: "Pauses", severity: "P3",
    params: #{ instance_id: #{ type: "string", required: true },
               pause: #{ type: "duration", "default": "0s" } } });
containment("Pause", |ctx| { sleep(ctx.pause); });
"#,
    );
    let good = s.ws.read("hooks.toml");
    let route = |pause: &str| {
        format!(
            "{good}\n[[route]]\nname = \"pausing\"\nalert = \"p\"\nrunbook = \"pausing@1.0.0\"\nenvironment = \"sim\"\nparams = {{ instance_id = \"{{labels.instance_id}}\", pause = \"{pause}\" }}\ntarget = \"{{labels.instance_id}}\"\n"
        )
    };
    // A placeholder is only known when an alert arrives; a literal is known now.
    s.ws.write("hooks.toml", &route("{labels.pause|banana}"));
    s.ws.run(&["serve", "--check"]).expect_code(0);
    s.ws.write("hooks.toml", &route("45s"));
    s.ws.run(&["serve", "--check"]).expect_code(0);
    s.ws.write("hooks.toml", &route("banana"));
    let check = s.ws.run(&["serve", "--check"]);
    check.expect_code(2);
    assert!(
        check.stderr.contains("\"pausing\"")
            && check
                .stderr
                .contains("parameter pause: \"banana\" is not a duration"),
        "{}",
        check.stderr
    );
    let started = s.serve_refused();
    assert!(
        started.stderr.contains("parameter pause"),
        "{}",
        started.stderr
    );
    assert!(!s.ws.exists("transcripts/hooks"));
}
