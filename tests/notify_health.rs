//! Slack, Teams and health checks against real loopback servers.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::http::Server;
use common::{Workspace, events, of_type};
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const TOKEN: &str = "xoxb-4242-planted-bot-token";
const HOOK_SECRET: &str = "T0PLANTED/B0PLANTED/planted-webhook-secret";

/// A workspace whose `live` environment (sim cloud) really sends, to `server`.
fn live(server: &Server) -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "runbook.toml",
        "[environments.live]\nbackend = \"sim\"\nnotifications = \"send\"\n",
    );
    let _ = server;
    ws
}

fn run(ws: &Workspace, server: &Server, args: &[&str]) -> common::Run {
    ws.cmd()
        .env("SLACK_API_URL", &server.url("/api"))
        .env(
            "SLACK_WEBHOOK_URL",
            &server.url(&format!("/hooks/{HOOK_SECRET}")),
        )
        .env("SLACK_BOT_TOKEN", TOKEN)
        .env(
            "TEAMS_WEBHOOK_URL",
            &server.url("/teams/planted-teams-secret"),
        )
        .args(args)
        .output()
}

fn ctx_of(ws: &Workspace, step: usize) -> Value {
    let ev = events(&ws.path().join("t.jsonl"));
    of_type(&ev, "step_finished")[step]["ctx"].clone()
}

#[test]
fn health_probes_report_status_latency_and_body_of_a_real_server() {
    let server = Server::start();
    let ws = Workspace::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    ws.write(
        "runbooks/probe.rhai",
        &format!(
            r#"runbook(#{{ id: "probe", version: "1.0.0", title: "t", severity: "P3" }});
containment("Probe", |ctx| {{
    let url = "{url}";
    ctx.ok = health::http(url, #{{ expect_body: "HEALTHY" }});
    ctx.wrong_body = health::http(url, #{{ expect_body: "DEGRADED" }}).ok;
    ctx.too_slow = health::http(url, #{{ max_latency: "20ms" }});
    ctx.tcp_open = health::tcp("127.0.0.1", {port}).ok;
    ctx.tcp_closed = health::tcp("127.0.0.1", {closed}).ok;
    ctx.latency = health::latency(url, #{{ samples: 12, concurrency: 3 }});
}});
"#,
            url = server.url("/health"),
            port = server.port,
        ),
    );
    server.control.health_delay_ms.store(60, Ordering::SeqCst);
    ws.run(&["run", "probe", "--transcript", "t.jsonl"])
        .expect_code(0);
    let ctx = ctx_of(&ws, 0);
    assert_eq!(ctx["ok"]["ok"], true, "{ctx}");
    assert_eq!(ctx["ok"]["status"], 200);
    assert!(ctx["ok"]["latency_ms"].as_f64().unwrap() >= 60.0, "{ctx}");
    assert!(ctx["ok"]["body"].as_str().unwrap().contains("HEALTHY"));
    assert_eq!(ctx["wrong_body"], false);
    assert_eq!(ctx["too_slow"]["ok"], false);
    assert!(
        ctx["too_slow"]["error"]
            .as_str()
            .unwrap()
            .contains("over 20 ms"),
        "{ctx}"
    );
    assert_eq!(ctx["tcp_open"], true);
    assert_eq!(ctx["tcp_closed"], false);
    assert_eq!(ctx["latency"]["samples"], 12);
    assert_eq!(ctx["latency"]["errors"], 0);
    assert!(ctx["latency"]["p50"].as_f64().unwrap() >= 60.0, "{ctx}");
    assert!(ctx["latency"]["p99"].as_f64().unwrap() >= ctx["latency"]["p50"].as_f64().unwrap());
    assert_eq!(server.control.health_hits.load(Ordering::SeqCst), 3 + 12);

    // A failing target: 503 is not ok, and says so.
    server.control.health_status.store(503, Ordering::SeqCst);
    server.control.health_delay_ms.store(0, Ordering::SeqCst);
    ws.run(&["run", "probe", "--transcript", "t2.jsonl"])
        .expect_code(0);
    let ev = events(&ws.path().join("t2.jsonl"));
    let ctx = &of_type(&ev, "step_finished")[0]["ctx"];
    assert_eq!(ctx["ok"]["ok"], false);
    assert_eq!(ctx["ok"]["status"], 503);
    assert_eq!(
        ctx["latency"]["errors"], 12,
        "non-2xx answers are not latency samples"
    );
}

#[test]
fn wait_until_retries_until_the_target_recovers_and_records_each_attempt() {
    let server = Server::start();
    let ws = Workspace::new();
    ws.write(
        "runbooks/wait.rhai",
        &format!(
            r#"runbook(#{{ id: "wait", version: "1.0.0", title: "t", severity: "P3" }});
recovery("Wait", |ctx| {{
    ctx.attempts = wait_until(|| health::http("{url}"), #{{ timeout: "20s", every: "100ms" }});
}});
recovery("Give up", |ctx| {{
    wait_until(|| false, #{{ timeout: "300ms", every: "100ms" }});
}});
"#,
            url = server.url("/health")
        ),
    );
    server.control.health_status.store(503, Ordering::SeqCst);
    let control = server.control.clone();
    let flip = std::thread::spawn(move || {
        while control.health_hits.load(Ordering::SeqCst) < 3 {
            std::thread::sleep(Duration::from_millis(10));
        }
        control.health_status.store(200, Ordering::SeqCst);
    });
    ws.run(&["run", "wait", "--transcript", "t.jsonl"])
        .expect_code(1);
    flip.join().unwrap();
    let ev = events(&ws.path().join("t.jsonl"));
    let finished = of_type(&ev, "step_finished");
    let attempts = finished[0]["ctx"]["attempts"].as_i64().unwrap();
    assert!(attempts >= 4, "down for 3 probes, then up: {attempts}");
    let waits = of_type(&ev, "log")
        .into_iter()
        .filter(|e| e["level"] == "wait")
        .count();
    assert!(waits as i64 >= attempts, "each attempt is recorded");
    assert_eq!(finished[1]["status"], "failed");
    assert_eq!(finished[1]["error"]["code"], "WaiterTimeout");
}

const NOTIFYING: &str = r##"runbook(#{ id: "notifying", version: "1.0.0", title: "Notify", severity: "P2",
    notify: #{ slack: "#incidents" } });
containment("Alert", |ctx| {
    let a = slack::incident_alert(#{ severity: "P2", environment: "Production", description: "High error rate detected", started: "2025-09-14 10:30 UTC" }, #{ channel: "#incidents" });
    ctx.alert_ts = a.ts;
    ctx.reply = slack::reply("#incidents", a.ts, "isolating the instance").ok;
    ctx.hook = slack::post("via the webhook").ok;
    ctx.teams = teams::incident_alert(#{ severity: "P2", description: "High error rate detected" }).ok;
});
recovery("Break", |ctx| { fail("deliberate failure"); });
"##;

#[test]
fn slack_and_teams_messages_have_the_right_shape_threads_and_token() {
    let server = Server::start();
    let ws = live(&server);
    ws.write("runbooks/notifying.rhai", NOTIFYING);
    let run = run(
        &ws,
        &server,
        &[
            "run",
            "notifying",
            "--env",
            "live",
            "--transcript",
            "t.jsonl",
        ],
    );
    run.expect_code(1);
    let ctx = ctx_of(&ws, 0);
    assert_eq!(ctx["reply"], true);
    assert_eq!(ctx["hook"], true);
    assert_eq!(ctx["teams"], true);

    let got = server.captured();
    let api: Vec<_> = got.iter().filter(|c| c.path.starts_with("/api/")).collect();
    assert!(
        api.iter()
            .all(|c| c.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))),
        "bot token on every Web API call"
    );
    // Lifecycle: the parent message opens the thread.
    let parent = &api[0];
    assert_eq!(parent.path, "/api/chat.postMessage");
    assert!(
        parent.body["text"]
            .as_str()
            .unwrap()
            .starts_with("▶ Notify (notifying@1.0.0)")
    );
    let parent_ts = "1700000001.000001";
    // The incident alert is Block Kit with the DevOps template.
    let alert = api
        .iter()
        .find(|c| {
            c.body["text"]
                .as_str()
                .unwrap_or("")
                .starts_with("🚨 INCIDENT ALERT 🚨")
        })
        .unwrap();
    assert_eq!(alert.body["channel"], "#incidents");
    assert_eq!(alert.body["blocks"][0]["type"], "header");
    assert!(
        alert.body["blocks"][1]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("Severity: P2")
    );
    let reply = api
        .iter()
        .find(|c| c.body["text"] == "isolating the instance")
        .unwrap();
    assert_eq!(reply.body["thread_ts"], ctx["alert_ts"]);
    // The step failure and the final status are replies in the lifecycle thread; the parent is updated.
    let threaded: Vec<_> = api
        .iter()
        .filter(|c| c.body["thread_ts"] == parent_ts)
        .collect();
    assert!(
        threaded.iter().any(|c| c.body["text"]
            .as_str()
            .unwrap()
            .contains("deliberate failure")),
        "{threaded:?}"
    );
    assert!(
        threaded
            .iter()
            .any(|c| c.body["text"].as_str().unwrap().starts_with("run failed"))
    );
    let update = api.iter().find(|c| c.path == "/api/chat.update").unwrap();
    assert_eq!(update.body["ts"], parent_ts);
    assert!(update.body["text"].as_str().unwrap().starts_with("❌"));
    // Webhook and Teams.
    let hook = got
        .iter()
        .find(|c| c.path.contains("planted-webhook-secret"))
        .unwrap();
    assert_eq!(hook.body["text"], "via the webhook");
    let teams = got
        .iter()
        .find(|c| c.path.contains("planted-teams-secret"))
        .unwrap();
    let card = &teams.body["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert_eq!(card["content"]["body"][0]["text"], "🚨 INCIDENT ALERT 🚨");

    // The planted webhook URL and token never reach the transcript or the terminal.
    let transcript = ws.read("t.jsonl");
    for secret in [TOKEN, "planted-webhook-secret", "planted-teams-secret"] {
        assert!(!transcript.contains(secret), "{secret} in the transcript");
        assert!(!run.stderr.contains(secret), "{secret} on stderr");
    }
}

#[test]
fn a_429_is_retried_after_retry_after_and_a_failed_post_does_not_crash_the_run() {
    let server = Server::start();
    let ws = live(&server);
    ws.write(
        "runbooks/throttled.rhai",
        r##"runbook(#{ id: "throttled", version: "1.0.0", title: "t", severity: "P3" });
containment("Post", |ctx| {
    ctx.first = slack::post("#incidents", "after a 429");
    ctx.hook = slack::post("webhook is down");
});
recovery("Must arrive", |ctx| { slack::post("must arrive", #{ required: true }); });
"##,
    );
    server.control.throttle.store(1, Ordering::SeqCst);
    server.control.fail_webhooks.store(true, Ordering::SeqCst);
    run(
        &ws,
        &server,
        &[
            "run",
            "throttled",
            "--env",
            "live",
            "--transcript",
            "t.jsonl",
        ],
    )
    .expect_code(1);
    let ctx = ctx_of(&ws, 0);
    assert_eq!(ctx["first"]["ok"], true, "{ctx}");
    assert_eq!(
        ctx["hook"]["ok"], false,
        "a failed post is an answer, not a crash: {ctx}"
    );
    assert_eq!(ctx["hook"]["code"], "slack_error");
    let got = server.captured();
    let tries: Vec<_> = got
        .iter()
        .filter(|c| c.body["text"] == "after a 429")
        .collect();
    assert_eq!(tries.len(), 2, "one 429, one success");
    assert!(
        tries[1].at.duration_since(tries[0].at) >= Duration::from_millis(950),
        "Retry-After: 1 honoured"
    );
    let hooks = got
        .iter()
        .filter(|c| c.body["text"] == "webhook is down")
        .count();
    assert_eq!(
        hooks as u32,
        runbook::services::notify::MAX_ATTEMPTS,
        "5xx retried a bounded number of times"
    );
    // `required: true` turns the same failure into a step failure.
    let ev = events(&ws.path().join("t.jsonl"));
    let ends = of_type(&ev, "step_finished");
    assert_eq!(ends[1]["status"], "failed");
    assert_eq!(ends[1]["error"]["code"], "slack_error");
    let recorded = of_type(&ev, "call")
        .into_iter()
        .find(|c| c["args"]["text"] == "webhook is down")
        .unwrap();
    assert_eq!(
        recorded["result"]["ok"], false,
        "the failed post is recorded"
    );
}

#[test]
fn on_the_sim_posts_are_captured_and_in_a_plan_they_are_only_listed() {
    let server = Server::start();
    let ws = Workspace::new();
    let runbooks = format!("{REPO}/runbooks");
    // The api-high-latency runbook on the default sim: the health endpoint is slow until recovery.
    run(
        &ws,
        &server,
        &[
            "run",
            "api-high-latency",
            "--runbooks",
            &runbooks,
            "--param",
            "incident=2026-1123-008",
            "--param",
            "settle=50ms",
            "--transcript",
            "t.jsonl",
            "--sim-state-out",
            "state.json",
        ],
    )
    .expect_code(0);
    assert!(
        server.captured().is_empty(),
        "the sim captures instead of sending"
    );
    let state: Value = serde_json::from_str(&ws.read("state.json")).unwrap();
    let texts: Vec<&str> = state["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["payload"]["text"].as_str().unwrap_or(""))
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("🚨 INCIDENT ALERT 🚨\nSeverity: P2")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("✅ INCIDENT RESOLVED\nIncident: #2026-1123-008")),
        "{texts:?}"
    );
    let ev = events(&ws.path().join("t.jsonl"));
    let ends = of_type(&ev, "step_finished");
    assert!(ends[0]["ctx"]["p95_before"].as_f64().unwrap() > 500.0);
    assert!(ends[2]["ctx"]["p95_after"].as_f64().unwrap() < 500.0);

    // A plan with a sending environment: listed, never sent.
    let live = live(&server);
    let plan = run(
        &live,
        &server,
        &[
            "plan",
            "api-high-latency",
            "--runbooks",
            &runbooks,
            "--env",
            "live",
            "--param",
            "incident=2026-1123-009",
            "--param",
            "settle=50ms",
            "--transcript",
            "p.jsonl",
        ],
    );
    plan.expect_code(0);
    assert!(plan.stdout.contains("slack::post"), "{}", plan.stdout);
    assert!(server.captured().is_empty(), "a plan sends nothing");
}

const ALERT: &str = r##"runbook(#{ id: "alerting", version: "1.0.0", title: "t", severity: "P1" });
containment("Raise the incident alert", |ctx| {
    ctx.alert = slack::incident_alert(#{ severity: "P1", description: "api down" }, #{ channel: "#incidents" });
});
"##;

#[test]
fn with_only_a_webhook_the_incident_alert_goes_to_the_webhook_and_the_terminal_says_so() {
    let server = Server::start();
    let ws = live(&server);
    ws.write("runbooks/alerting.rhai", ALERT);
    let r = ws
        .cmd()
        .env(
            "SLACK_WEBHOOK_URL",
            &server.url(&format!("/hooks/{HOOK_SECRET}")),
        )
        .args(&[
            "run",
            "alerting",
            "--env",
            "live",
            "--transcript",
            "t.jsonl",
        ])
        .output();
    r.expect_code(0);
    assert!(
        r.stderr.contains(
            "no SLACK_BOT_TOKEN: the message for #incidents goes to the Slack webhook's own channel"
        ),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("not delivered"), "{}", r.stderr);
    let got = server.captured();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].path.starts_with("/hooks/"));
    assert!(
        got[0].body["text"]
            .as_str()
            .unwrap()
            .contains("INCIDENT ALERT")
    );
    assert_eq!(ctx_of(&ws, 0)["alert"]["ok"], true);
    let ev = events(&ws.path().join("t.jsonl"));
    let call = of_type(&ev, "call")
        .into_iter()
        .find(|c| c["binding"] == "slack::post")
        .unwrap();
    assert_eq!(call["args"]["instead_of"], "#incidents", "{call}");
}

#[test]
fn a_notification_that_cannot_be_delivered_is_said_on_the_terminal_and_in_the_summary() {
    let server = Server::start();
    let ws = live(&server);
    ws.write("runbooks/alerting.rhai", ALERT);
    server.control.fail_webhooks.store(true, Ordering::SeqCst);
    let r = ws
        .cmd()
        .env(
            "SLACK_WEBHOOK_URL",
            &server.url(&format!("/hooks/{HOOK_SECRET}")),
        )
        .args(&[
            "run",
            "alerting",
            "--env",
            "live",
            "--transcript",
            "t.jsonl",
        ])
        .output();
    // The containment itself went fine: the run is ok, and says what did not go out.
    r.expect_code(0);
    assert!(
        r.stderr.contains(
            "warning: Slack message for #incidents (through the webhook) NOT delivered: slack_error"
        ),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("run ok: 1 ok") && r.stderr.contains("(1 notification not delivered)"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(HOOK_SECRET), "{}", r.stderr);
    assert_eq!(ctx_of(&ws, 0)["alert"]["ok"], false);
    let ev = events(&ws.path().join("t.jsonl"));
    assert_eq!(ev.last().unwrap()["undelivered_notifications"], 1);
}

#[test]
fn with_neither_token_nor_webhook_the_missing_alert_is_counted() {
    let server = Server::start();
    let ws = live(&server);
    ws.write("runbooks/alerting.rhai", ALERT);
    let r = ws.run(&[
        "run",
        "alerting",
        "--env",
        "live",
        "--transcript",
        "t.jsonl",
    ]);
    r.expect_code(0);
    assert!(
        r.stderr.contains("NOT delivered: not_configured")
            && r.stderr.contains("(1 notification not delivered)"),
        "{}",
        r.stderr
    );
}

#[test]
fn lifecycle_notifications_fall_back_to_the_webhook_without_a_bot_token() {
    let server = Server::start();
    let ws = live(&server);
    ws.write(
        "runbooks/lifecycle.rhai",
        r##"runbook(#{ id: "lifecycle", version: "1.0.0", title: "Lifecycle", severity: "P2",
    notify: #{ slack: "#ops" } });
containment("Break", |ctx| { fail("deliberate failure"); });
"##,
    );
    let r = ws
        .cmd()
        .env(
            "SLACK_WEBHOOK_URL",
            &server.url(&format!("/hooks/{HOOK_SECRET}")),
        )
        .args(&[
            "run",
            "lifecycle",
            "--env",
            "live",
            "--transcript",
            "t.jsonl",
        ])
        .output();
    r.expect_code(1);
    let texts: Vec<String> = server
        .captured()
        .iter()
        .map(|c| {
            assert!(c.path.starts_with("/hooks/"), "{c:?}");
            c.body["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(texts.len(), 3, "start, the failed step, the end: {texts:?}");
    assert!(texts[0].starts_with("▶ Lifecycle (lifecycle@1.0.0)"));
    assert!(texts[1].contains("\"Break\" failed"));
    assert!(texts[2].starts_with("run failed"));
    assert!(!r.stderr.contains("not delivered"), "{}", r.stderr);
}

/// A secret with the characters JSON escapes, posted in clear, inside `json::encode`, and next to
/// credential-shaped text an alert could carry.
const SECRET: &str = r#"pl4nted"pass\word-7788"#;
const LEAKY: &str = r##"runbook(#{ id: "leaky", version: "1.0.0", title: "Leaky", severity: "P2",
    params: #{ pin: #{ type: "string", secret: true, required: true } } });
containment("Tell everyone", |ctx| {
    slack::post(`pin is ${ctx.pin}`);
    slack::post("#incidents", json::encode(#{ pin: ctx.pin }));
    slack::post("label key_AKIAIOSFODNN7EXAMPLE and HTTPS://HOOKS.SLACK.COM:443/services/T1/B1/abc");
    teams::post(`pin ${ctx.pin} in ${json::encode(#{ pin: ctx.pin })}`);
    log(json::encode(#{ pin: ctx.pin }));
});
"##;

/// What would show a secret: the secret itself, its JSON-escaped form, or the planted key shapes.
fn assert_no_leak(what: &str, text: &str) {
    let escaped = serde_json::to_string(SECRET).unwrap();
    let escaped = escaped.trim_matches('"');
    for needle in [
        SECRET,
        escaped,
        "pl4nted",
        "AKIAIOSFODNN7EXAMPLE",
        "services/T1/B1",
    ] {
        assert!(
            !text.contains(needle),
            "{needle} leaked into {what}:\n{text}"
        );
    }
}

#[test]
fn secret_params_are_redacted_in_sent_slack_and_teams_payloads() {
    let server = Server::start();
    let ws = live(&server);
    ws.write("runbooks/leaky.rhai", LEAKY);
    let pin = format!("pin={SECRET}");
    let run = run(
        &ws,
        &server,
        &[
            "run",
            "leaky",
            "--env",
            "live",
            "--param",
            &pin,
            "--transcript",
            "t.jsonl",
        ],
    );
    run.expect_code(0);
    let got = server.captured();
    assert!(got.len() >= 4, "{got:?}");
    for c in &got {
        assert_no_leak(&format!("the payload to {}", c.path), &c.body.to_string());
    }
    assert!(
        got.iter()
            .any(|c| c.body.to_string().contains("[redacted:")),
        "{got:?}"
    );
    assert_no_leak("the transcript", &ws.read("t.jsonl"));
    assert_no_leak("stderr", &run.stderr);
}

#[test]
fn secret_params_are_redacted_in_captured_payloads_of_the_sim_state() {
    let ws = Workspace::new();
    ws.write("runbooks/leaky.rhai", LEAKY);
    let pin = format!("pin={SECRET}");
    let run = ws.run(&[
        "run",
        "leaky",
        "--param",
        &pin,
        "--transcript",
        "t.jsonl",
        "--sim-state-out",
        "state.json",
    ]);
    run.expect_code(0);
    let state = ws.read("state.json");
    let parsed: Value = serde_json::from_str(&state).unwrap();
    assert!(
        parsed["notifications"].as_array().unwrap().len() >= 4,
        "{state}"
    );
    assert_no_leak("--sim-state-out", &state);
    assert!(state.contains("pin is [redacted:"), "{state}");
    assert_no_leak("the transcript", &ws.read("t.jsonl"));
}
