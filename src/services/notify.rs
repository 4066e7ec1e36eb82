//! Slack and Teams delivery: incoming webhooks, Slack's Web API (`chat.postMessage`,
//! `chat.update`, thread replies) and Teams webhooks, with 429 `Retry-After` handling and bounded
//! retries.
//!
//! URLs and the bot token come from the environment (`SLACK_WEBHOOK_URL`, `SLACK_BOT_TOKEN`,
//! `TEAMS_WEBHOOK_URL`; base URL `SLACK_API_URL`) or `runbook.toml`'s `[notifications]`; they are
//! registered as secrets at start-up so they never reach a transcript or a log. In `capture` mode
//! (the default on the sim backend) nothing is sent: each message is kept in memory, answered like
//! Slack would, and written out with the simulated state so drills can assert on it.
//!
//! Every payload is redacted here, before it is captured or sent: a chat channel is a log too,
//! and the script that composed the message may have put a secret parameter or a credential
//! pasted into an alert label into it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::base::error::BindingError;
use crate::data::config::{Delivery, NotifySettings};

/// Attempts per message (the first try included) before a failure is reported.
pub const MAX_ATTEMPTS: u32 = 4;
/// The longest `Retry-After` we honour; a longer one is reported as a failure instead of stalling
/// an incident for minutes.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
pub struct Notifier {
    settings: NotifySettings,
    redactor: crate::base::redact::Redactor,
    client: OnceLock<reqwest::Client>,
    captured: Mutex<Vec<Value>>,
    /// Messages that could not be delivered, ever (a run counts the difference over its span).
    undelivered: AtomicUsize,
}

fn fail(code: &str, message: impl Into<String>) -> BindingError {
    BindingError::new(code, message)
}

impl Notifier {
    /// A notifier with its own redactor, which knows the notification secrets.
    pub fn new(settings: NotifySettings) -> Self {
        Self::with_redactor(settings, crate::base::redact::Redactor::new())
    }

    /// A notifier that redacts with `redactor` (a run's, so secret parameters registered later
    /// are redacted too).
    pub(crate) fn with_redactor(
        settings: NotifySettings,
        redactor: crate::base::redact::Redactor,
    ) -> Self {
        for secret in settings.secrets() {
            redactor.add_secret(&secret);
        }
        Notifier {
            settings,
            redactor,
            client: OnceLock::new(),
            captured: Mutex::new(Vec::new()),
            undelivered: AtomicUsize::new(0),
        }
    }

    pub fn settings(&self) -> &NotifySettings {
        &self.settings
    }

    /// How many messages could not be delivered so far.
    pub fn undelivered(&self) -> usize {
        self.undelivered.load(Ordering::SeqCst)
    }

    /// Counts a message that did not go out (the binding reports it; see `slack::deliver`).
    pub(crate) fn note_undelivered(&self) {
        self.undelivered.fetch_add(1, Ordering::SeqCst);
    }

    /// Messages kept in capture mode, in order.
    pub fn captured(&self) -> Vec<Value> {
        self.captured.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn client(&self) -> Result<&reqwest::Client, BindingError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| fail("http_client", e.to_string()))?;
        Ok(self.client.get_or_init(|| c))
    }

    /// Keeps a message in capture mode and answers like the service would.
    fn capture(&self, target: &str, payload: &Value) -> Value {
        let mut captured = match self.captured.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        let ts = format!("1700000000.{:06}", captured.len() + 1);
        captured.push(json!({ "target": target, "payload": payload, "ts": ts }));
        json!({ "ok": true, "ts": ts, "channel": payload.get("channel").cloned().unwrap_or(Value::Null) })
    }

    /// POSTs JSON, retrying 429s (after `Retry-After`) and 5xx/transport errors (with backoff).
    async fn post(
        &self,
        url: &str,
        payload: &Value,
        bearer: Option<&str>,
    ) -> Result<(u16, String), BindingError> {
        self.send(url, Body::Json(payload), bearer).await
    }

    /// POSTs `body`, retrying as [`Notifier::post`] says.
    async fn send(
        &self,
        url: &str,
        body: Body<'_>,
        bearer: Option<&str>,
    ) -> Result<(u16, String), BindingError> {
        let client = self.client()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = match body {
                Body::Json(payload) => client.post(url).json(payload),
                Body::Form(text) => client
                    .post(url)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(text.to_string()),
            };
            if let Some(token) = bearer {
                req = req.bearer_auth(token);
            }
            let outcome = req.send().await;
            // Server errors and transport failures back off 200 ms, 400 ms, 800 ms, ...
            let backoff = Duration::from_millis(200 * 2u64.pow(attempt - 1));
            let wait = match outcome {
                Ok(resp) if resp.status().as_u16() == 429 => {
                    let after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs)
                        .unwrap_or(Duration::from_secs(1));
                    if after > MAX_RETRY_AFTER || attempt >= MAX_ATTEMPTS {
                        return Err(fail(
                            "rate_limited",
                            format!(
                                "rate limited (429, Retry-After {}s) after {attempt} attempt(s)",
                                after.as_secs()
                            ),
                        ));
                    }
                    after
                }
                Ok(resp) if resp.status().is_server_error() && attempt < MAX_ATTEMPTS => backoff,
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.text().await.unwrap_or_default();
                    return Ok((status, body));
                }
                Err(_) if attempt < MAX_ATTEMPTS => backoff,
                // The error text can carry the URL (a secret for webhooks): report its kind only.
                Err(e) => {
                    let kind = if e.is_timeout() {
                        "timed out"
                    } else if e.is_connect() {
                        "could not connect"
                    } else {
                        "request failed"
                    };
                    return Err(fail(
                        "unreachable",
                        format!("{kind} after {attempt} attempt(s)"),
                    ));
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends to a Slack incoming webhook.
    pub async fn slack_webhook(&self, mut payload: Value) -> Result<Value, BindingError> {
        self.redactor.redact_json(&mut payload);
        if self.settings.delivery == Delivery::Capture {
            return Ok(self.capture("slack_webhook", &payload));
        }
        let url = self
            .settings
            .slack_webhook_url
            .as_deref()
            .ok_or_else(|| fail("not_configured", "no Slack webhook: set SLACK_WEBHOOK_URL"))?;
        let (status, body) = self.post(url, &payload, None).await?;
        if (200..300).contains(&status) {
            Ok(json!({ "ok": true }))
        } else {
            Err(fail(
                "slack_error",
                format!(
                    "webhook answered {status}: {}",
                    body.chars().take(200).collect::<String>()
                ),
            ))
        }
    }

    /// Calls a Slack Web API method (`chat.postMessage`, `chat.update`) with the bot token.
    pub async fn slack_api(&self, method: &str, mut payload: Value) -> Result<Value, BindingError> {
        self.redactor.redact_json(&mut payload);
        if self.settings.delivery == Delivery::Capture {
            return Ok(self.capture(&format!("slack_api:{method}"), &payload));
        }
        let token = self
            .settings
            .slack_bot_token
            .as_deref()
            .ok_or_else(|| fail("not_configured", "no Slack bot token: set SLACK_BOT_TOKEN"))?;
        let url = format!("{}/{method}", self.settings.slack_api_url);
        let (status, body) = self.post(&url, &payload, Some(token)).await?;
        let answer: Value = serde_json::from_str(&body).map_err(|_| {
            fail(
                "slack_error",
                format!("{method} answered {status} with a body that is not JSON"),
            )
        })?;
        if answer["ok"] == true {
            Ok(json!({ "ok": true, "ts": answer["ts"], "channel": answer["channel"] }))
        } else {
            Err(fail(
                "slack_error",
                format!(
                    "{method}: {}",
                    answer["error"].as_str().unwrap_or("unknown error")
                ),
            ))
        }
    }

    /// Reads from Slack's Web API with the bot token (`usergroups.users.list`): `args`
    /// form-encoded, as every Web API method takes them (read methods take no JSON), and the
    /// whole answer returned. A read is never captured: with messages captured (a sim run) there
    /// is no Slack to ask, and that is an error, not a made-up answer.
    pub(crate) async fn slack_read(
        &self,
        method: &str,
        args: &[(&str, &str)],
    ) -> Result<Value, BindingError> {
        if self.settings.delivery == Delivery::Capture {
            return Err(fail(
                "not_configured",
                "Slack messages are captured in this run (no Slack to ask)",
            ));
        }
        let token = self
            .settings
            .slack_bot_token
            .as_deref()
            .ok_or_else(|| fail("not_configured", "no Slack bot token: set SLACK_BOT_TOKEN"))?;
        let url = format!("{}/{method}", self.settings.slack_api_url);
        let form = args
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let (status, body) = self.send(&url, Body::Form(&form), Some(token)).await?;
        let answer: Value = serde_json::from_str(&body).map_err(|_| {
            fail(
                "slack_error",
                format!("{method} answered {status} with a body that is not JSON"),
            )
        })?;
        if answer["ok"] == true {
            Ok(answer)
        } else {
            Err(fail(
                "slack_error",
                format!(
                    "{method}: {}",
                    answer["error"].as_str().unwrap_or("unknown error")
                ),
            ))
        }
    }

    /// Sends to a Teams incoming webhook.
    pub async fn teams(&self, mut payload: Value) -> Result<Value, BindingError> {
        self.redactor.redact_json(&mut payload);
        if self.settings.delivery == Delivery::Capture {
            return Ok(self.capture("teams_webhook", &payload));
        }
        let url = self
            .settings
            .teams_webhook_url
            .as_deref()
            .ok_or_else(|| fail("not_configured", "no Teams webhook: set TEAMS_WEBHOOK_URL"))?;
        let (status, body) = self.post(url, &payload, None).await?;
        if (200..300).contains(&status) {
            Ok(json!({ "ok": true }))
        } else {
            Err(fail(
                "teams_error",
                format!(
                    "webhook answered {status}: {}",
                    body.chars().take(200).collect::<String>()
                ),
            ))
        }
    }
}

/// A request body: JSON (messages) or form-encoded (Web API reads).
#[derive(Clone, Copy)]
enum Body<'a> {
    Json(&'a Value),
    Form(&'a str),
}

/// `application/x-www-form-urlencoded` encoding of one key or value.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The seed's "Initial Incident Report", as text.
pub fn incident_alert_text(f: &Value) -> String {
    let get = |k: &str, d: &str| f.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
    format!(
        "🚨 INCIDENT ALERT 🚨\nSeverity: {}\nEnvironment: {}\nService: {}\nDescription: {}\nStarted: {}\nStatus: {}\nIncident Commander: {}",
        get("severity", "P1"),
        get("environment", "Production"),
        get("service", "EC2 Manager API"),
        get("description", "(no description)"),
        get(
            "started",
            &chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()
        ),
        get("status", "Investigating"),
        get("commander", "@oncall-engineer"),
    )
}

/// The seed's "Resolution Notification", as text.
pub fn resolution_text(f: &Value) -> String {
    let get = |k: &str, d: &str| f.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
    format!(
        "✅ INCIDENT RESOLVED\nIncident: #{}\nDuration: {}\nRoot Cause: {}\nResolution: {}\nPost-mortem: {}",
        get("incident", "?"),
        get("duration", "?"),
        get("root_cause", "(to be determined)"),
        get("resolution", "(see the run transcript)"),
        get("postmortem", "[Link to document]"),
    )
}

/// Block Kit for a template: a header and the remaining lines as a section.
pub fn slack_blocks(text: &str) -> Value {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let rest: Vec<&str> = lines.collect();
    json!([
        { "type": "header", "text": { "type": "plain_text", "text": header, "emoji": true } },
        { "type": "section", "text": { "type": "mrkdwn", "text": rest.join("\n") } },
    ])
}

/// A Teams message with an Adaptive Card: a title and the remaining `Key: value` lines as facts.
pub fn teams_card(text: &str) -> Value {
    let mut lines = text.lines();
    let title = lines.next().unwrap_or_default();
    let facts: Vec<Value> = lines
        .map(|l| match l.split_once(": ") {
            Some((k, v)) => json!({ "title": k, "value": v }),
            None => json!({ "title": "", "value": l }),
        })
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    { "type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true },
                    { "type": "FactSet", "facts": facts },
                ],
            },
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_follow_the_devops_document() {
        let alert = incident_alert_text(
            &json!({"severity": "P1", "environment": "Production", "description": "High error rate detected", "started": "2025-09-14 10:30 UTC"}),
        );
        assert_eq!(
            alert,
            "🚨 INCIDENT ALERT 🚨\nSeverity: P1\nEnvironment: Production\nService: EC2 Manager API\nDescription: High error rate detected\nStarted: 2025-09-14 10:30 UTC\nStatus: Investigating\nIncident Commander: @oncall-engineer"
        );
        let resolved = resolution_text(
            &json!({"incident": "2025-0914-001", "duration": "45 minutes", "root_cause": "DynamoDB throttling", "resolution": "Capacity increased"}),
        );
        assert!(resolved.starts_with("✅ INCIDENT RESOLVED\nIncident: #2025-0914-001\nDuration: 45 minutes\nRoot Cause: DynamoDB throttling"));
        let card = teams_card(&alert);
        assert_eq!(
            card["attachments"][0]["content"]["body"][1]["facts"][0],
            json!({"title": "Severity", "value": "P1"})
        );
    }
}
