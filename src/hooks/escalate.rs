//! Escalation to tier 2: when automation steps back (a guardrail refused an alert that is still
//! firing, or a run did not end ok), the on-call engineer gets a message with the alert, the
//! reason and where the record is. The wording follows the seed's incident template.

use serde_json::{Value, json};

use super::Alert;
use crate::notify::{Delivery, Notifier, NotifySettings, slack_blocks, teams_card};

/// What went wrong, for the message.
pub struct Escalation<'a> {
    pub alert: &'a Alert,
    pub environment: Option<&'a str>,
    pub runbook: Option<&'a str>,
    /// The guardrail or run outcome, as a token (`cooldown`, `run_failed`, ...).
    pub reason: &'a str,
    /// The sentence a person reads.
    pub detail: &'a str,
    pub run_id: Option<&'a str>,
    pub transcript: Option<&'a str>,
    pub journal: &'a str,
}

pub struct Escalator {
    notifier: Notifier,
    channel: Option<String>,
    mention: String,
}

impl Escalator {
    /// Sends through whatever runbook.toml and the environment configure (Slack webhook, Slack
    /// bot, Teams); with none configured, messages are kept (and journaled) but not sent.
    pub fn new(settings: NotifySettings, channel: Option<String>, mention: Option<String>) -> Self {
        let configured = settings.slack_webhook_url.is_some()
            || settings.slack_bot_token.is_some()
            || settings.teams_webhook_url.is_some();
        let settings = NotifySettings {
            delivery: if configured {
                Delivery::Send
            } else {
                Delivery::Capture
            },
            ..settings
        };
        let channel = channel.or_else(|| settings.slack_channel.clone());
        Escalator {
            notifier: Notifier::new(settings),
            channel,
            mention: mention.unwrap_or_else(|| "@oncall-engineer".into()),
        }
    }

    pub fn secrets(&self) -> Vec<String> {
        self.notifier.settings().secrets()
    }

    /// Messages kept because nothing is configured to send them.
    pub fn captured(&self) -> Vec<Value> {
        self.notifier.captured()
    }

    pub fn text(&self, e: &Escalation) -> String {
        let a = e.alert;
        let severity = a
            .labels
            .get("severity")
            .map(String::as_str)
            .unwrap_or("unknown");
        let labels = a
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "alertname")
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut lines = vec![
            "🚨 INCIDENT ALERT 🚨 (escalated from tier-1 automation)".to_string(),
            format!("Severity: {severity}"),
            format!("Environment: {}", e.environment.unwrap_or("unknown")),
            format!(
                "Alert: {} ({}, fingerprint {})",
                a.name,
                a.source.as_str(),
                a.fingerprint
            ),
        ];
        if !labels.is_empty() {
            lines.push(format!("Labels: {labels}"));
        }
        if let Some(summary) = a.annotations.get("summary") {
            lines.push(format!("Description: {summary}"));
        }
        if let Some(rb) = e.runbook {
            lines.push(format!("Runbook: {rb}"));
        }
        lines.push(format!("Reason: {} ({})", e.detail, e.reason));
        if let Some(run) = e.run_id {
            lines.push(format!("Run: {run}"));
        }
        if let Some(t) = e.transcript {
            lines.push(format!("Transcript: {t}"));
        }
        lines.push(format!("Journal: {}", e.journal));
        lines.push("Status: Needs a person (tier 2)".into());
        lines.push(format!("Incident Commander: {}", self.mention));
        lines.join("\n")
    }

    /// Sends the message everywhere configured; Ok when every configured target took it.
    pub async fn send(&self, text: &str) -> Result<(), String> {
        let s = self.notifier.settings();
        let mut errors = Vec::new();
        let mut payload = json!({ "text": text, "blocks": slack_blocks(text) });
        if let Some(ch) = &self.channel {
            payload["channel"] = json!(ch);
        }
        let capture = s.delivery == Delivery::Capture;
        if capture || s.slack_webhook_url.is_some() {
            if let Err(e) = self.notifier.slack_webhook(payload.clone()).await {
                errors.push(format!("slack webhook: {}", e.message));
            }
        } else if s.slack_bot_token.is_some()
            && let Err(e) = self.notifier.slack_api("chat.postMessage", payload).await
        {
            errors.push(format!("slack: {}", e.message));
        }
        if !capture
            && s.teams_webhook_url.is_some()
            && let Err(e) = self.notifier.teams(teams_card(text)).await
        {
            errors.push(format!("teams: {}", e.message));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}
