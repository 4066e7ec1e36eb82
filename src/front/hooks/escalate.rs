//! Escalation to tier 2: when automation steps back (a guardrail refused an alert that is still
//! firing, or a run did not end ok), the on-call engineer gets a message with the alert, the
//! reason and where the record is. The wording follows the seed's incident template.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use super::Alert;
use crate::base::redact::Redactor;
use crate::data::config::{Delivery, NotifySettings};
use crate::services::notify::{Notifier, slack_blocks, teams_card};

/// Escalations kept in memory when nothing is configured to send them (they are journaled
/// either way): the newest this many.
const CAPTURED_KEPT: usize = 100;

/// The most labels listed in a message.
const MAX_LABELS: usize = 20;

/// The most bytes of one attacker-influenced value (a label, the alert name) in a message.
const MAX_FIELD: usize = 200;

/// What went wrong, for the message.
pub(crate) struct Escalation<'a> {
    pub alert: &'a Alert,
    pub environment: Option<&'a str>,
    pub runbook: Option<&'a str>,
    /// The runbook's declared severity: used when the alert carries no `severity` label.
    pub severity: Option<&'a str>,
    /// The guardrail or run outcome, as a token (`cooldown`, `run_failed`, ...).
    pub reason: &'a str,
    /// The sentence a person reads.
    pub detail: &'a str,
    pub run_id: Option<&'a str>,
    pub transcript: Option<&'a str>,
    pub journal: &'a str,
}

/// Whether an escalation goes out, and why not.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Send it; `suppressed` similar ones were held back by the rate limit since the last one.
    Send { suppressed: u64 },
    /// The same alert was escalated for the same reason within the window.
    Duplicate,
    /// Over the hourly limit.
    RateLimited,
}

/// Deduplication and rate limiting of escalations: a person is paged once per alert and reason
/// per window, and at most `max_per_hour` times an hour in all, whatever arrives. Both maps are
/// bounded: entries are only added for escalations sent, which the hourly limit caps.
pub(crate) struct Limiter {
    window_ms: i64,
    max_per_hour: usize,
    /// (fingerprint, reason) → when it was last sent (Unix ms).
    last: HashMap<(String, String), i64>,
    /// When the escalations of the last hour were sent, oldest first.
    sent: VecDeque<i64>,
    suppressed: u64,
}

impl Limiter {
    /// Entries: (alert, reason) pairs remembered for dedupe, escalations sent in the last hour.
    pub(crate) fn sizes(&self) -> (usize, usize) {
        (self.last.len(), self.sent.len())
    }

    pub(crate) fn new(window: Duration, max_per_hour: usize) -> Self {
        Limiter {
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            max_per_hour,
            last: HashMap::new(),
            sent: VecDeque::new(),
            suppressed: 0,
        }
    }

    /// Decides on one escalation at `now_ms`. `dedupe` is false for escalations that are
    /// distinct by nature (a run's failure: each run is its own event).
    pub(crate) fn admit(
        &mut self,
        fingerprint: &str,
        reason: &str,
        dedupe: bool,
        now_ms: i64,
    ) -> Admission {
        let window = self.window_ms;
        self.last
            .retain(|_, at| now_ms.saturating_sub(*at) < window);
        while self
            .sent
            .front()
            .is_some_and(|at| now_ms.saturating_sub(*at) >= 3_600_000)
        {
            self.sent.pop_front();
        }
        let key = (fingerprint.to_string(), reason.to_string());
        if dedupe && self.last.contains_key(&key) {
            return Admission::Duplicate;
        }
        if self.sent.len() >= self.max_per_hour {
            self.suppressed = self.suppressed.saturating_add(1);
            return Admission::RateLimited;
        }
        self.sent.push_back(now_ms);
        if dedupe {
            self.last.insert(key, now_ms);
        }
        Admission::Send {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

pub(crate) struct Escalator {
    notifier: Notifier,
    channel: Option<String>,
    mention: String,
    /// Secrets of the receiver (tokens, webhook URLs), redacted from every message.
    secrets: Vec<String>,
    capture: bool,
    captured: Mutex<VecDeque<Value>>,
    pub limiter: Mutex<Limiter>,
}

/// `value` made inert in a Slack mrkdwn message: one line (control characters, newlines
/// included, become spaces, so a label cannot forge a "Status: Resolved" line), `&`, `<` and
/// `>` escaped (so `<!channel>` or `<https://evil|click>` stay text), and at most
/// [`MAX_FIELD`] bytes.
pub(crate) fn inert(value: &str) -> String {
    let mut one_line: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if crate::base::error::truncate_utf8(&mut one_line, MAX_FIELD) {
        one_line.push('…');
    }
    one_line
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Escalator {
    /// Sends through whatever runbook.toml and the environment configure (Slack webhook, Slack
    /// bot, Teams); with none configured, messages are journaled and the last few kept, not sent.
    pub(crate) fn new(
        settings: NotifySettings,
        channel: Option<String>,
        mention: Option<String>,
        limiter: Limiter,
    ) -> Self {
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
        let secrets = settings.secrets();
        Escalator {
            notifier: Notifier::new(settings),
            channel,
            mention: mention.unwrap_or_else(|| "@oncall-engineer".into()),
            secrets,
            capture: !configured,
            captured: Mutex::new(VecDeque::new()),
            limiter: Mutex::new(limiter),
        }
    }

    pub(crate) fn secrets(&self) -> Vec<String> {
        self.secrets.clone()
    }

    /// Also redacted from every message (the receiver's own tokens).
    pub(crate) fn add_secrets(&mut self, more: impl IntoIterator<Item = String>) {
        self.secrets.extend(more);
    }

    /// The newest messages kept because nothing is configured to send them.
    #[cfg(test)]
    pub(crate) fn captured(&self) -> Vec<Value> {
        self.captured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The message. Everything from the alert is the sender's text: each value is made inert
    /// ([`inert`]), and the whole is redacted (secrets and credential-shaped strings) before it
    /// leaves.
    pub(crate) fn text(&self, e: &Escalation) -> String {
        let a = e.alert;
        let severity = a
            .labels
            .get("severity")
            .map(String::as_str)
            .or(e.severity)
            .unwrap_or("unknown");
        // At most MAX_LABELS labels: each is bounded, and so must be the message (a sender
        // may attach thousands).
        let shown: Vec<String> = a
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "alertname")
            .map(|(k, v)| format!("{}={}", inert(k), inert(v)))
            .take(MAX_LABELS)
            .collect();
        let hidden = a
            .labels
            .keys()
            .filter(|k| k.as_str() != "alertname")
            .count()
            .saturating_sub(shown.len());
        let mut labels = shown.join(", ");
        if hidden > 0 {
            labels.push_str(&format!(" (and {hidden} more)"));
        }
        let mut lines = vec![
            "🚨 INCIDENT ALERT 🚨 (escalated from tier-1 automation)".to_string(),
            format!("Severity: {}", inert(severity)),
            format!("Environment: {}", inert(e.environment.unwrap_or("unknown"))),
            format!(
                "Alert: {} ({}, fingerprint {})",
                inert(&a.name),
                a.source.as_str(),
                inert(&a.fingerprint)
            ),
        ];
        if !labels.is_empty() {
            lines.push(format!("Labels: {labels}"));
        }
        if let Some(summary) = a.annotations.get("summary") {
            lines.push(format!("Description: {}", inert(summary)));
        }
        if let Some(rb) = e.runbook {
            lines.push(format!("Runbook: {}", inert(rb)));
        }
        lines.push(format!("Reason: {} ({})", inert(e.detail), inert(e.reason)));
        if let Some(run) = e.run_id {
            lines.push(format!("Run: {}", inert(run)));
        }
        if let Some(t) = e.transcript {
            lines.push(format!("Transcript: {}", inert(t)));
        }
        lines.push(format!("Journal: {}", inert(e.journal)));
        lines.push("Status: Needs a person (tier 2)".into());
        lines.push(format!("Incident Commander: {}", self.mention));
        let redactor = Redactor::new();
        for s in &self.secrets {
            redactor.add_secret(s);
        }
        redactor.redact(&lines.join("\n"))
    }

    /// Sends the message everywhere configured; Ok when every configured target took it.
    pub(crate) async fn send(&self, text: &str) -> Result<(), String> {
        let s = self.notifier.settings();
        let mut errors = Vec::new();
        let mut payload = json!({ "text": text, "blocks": slack_blocks(text) });
        if let Some(ch) = &self.channel {
            payload["channel"] = json!(ch);
        }
        if self.capture {
            let mut kept = self.captured.lock().unwrap_or_else(|p| p.into_inner());
            if kept.len() >= CAPTURED_KEPT {
                kept.pop_front();
            }
            kept.push_back(payload);
            return Ok(());
        }
        if s.slack_webhook_url.is_some() {
            if let Err(e) = self.notifier.slack_webhook(payload.clone()).await {
                errors.push(format!("slack webhook: {}", e.message));
            }
        } else if s.slack_bot_token.is_some()
            && let Err(e) = self.notifier.slack_api("chat.postMessage", payload).await
        {
            errors.push(format!("slack: {}", e.message));
        }
        if s.teams_webhook_url.is_some()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::hooks::Source;
    use std::collections::BTreeMap;

    fn escalator() -> Escalator {
        let settings = NotifySettings {
            delivery: Delivery::Capture,
            slack_webhook_url: None,
            slack_bot_token: None,
            slack_api_url: String::new(),
            slack_channel: None,
            teams_webhook_url: None,
        };
        Escalator::new(
            settings,
            None,
            None,
            Limiter::new(Duration::from_secs(900), 60),
        )
    }

    fn alert(labels: &[(&str, &str)]) -> Alert {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Alert {
            source: Source::Generic,
            name: "ec2-cpu-high".into(),
            firing: true,
            fingerprint: "f1".into(),
            labels,
            annotations: BTreeMap::new(),
            starts_at: None,
        }
    }

    fn escalation<'a>(a: &'a Alert, severity: Option<&'a str>) -> Escalation<'a> {
        Escalation {
            alert: a,
            environment: Some("sim"),
            runbook: Some("tag-target@1.0.0"),
            severity,
            reason: "bad_params",
            detail: "the alert has no value for {labels.instance_id}",
            run_id: None,
            transcript: None,
            journal: "journal.jsonl",
        }
    }

    #[test]
    fn labels_cannot_ping_link_forge_lines_or_leak_keys_in_an_escalation() {
        let a = alert(&[
            ("who", "<!channel> look"),
            ("link", "<https://evil.example|click here>"),
            ("note", "fine\nStatus: Resolved"),
            ("key", "AKIAABCDEFGHIJKLMNOP"),
        ]);
        let text = escalator().text(&escalation(&a, None));
        assert!(!text.contains("<!channel>"), "{text}");
        assert!(!text.contains("<https://"), "{text}");
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
        assert!(!text.contains("AKIAABCDEFGHIJKLMNOP"), "{text}");
        assert!(
            !text.lines().any(|l| l.starts_with("Status: Resolved")),
            "{text}"
        );
        assert_eq!(
            text.lines().filter(|l| l.starts_with("Status:")).count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn a_message_is_bounded_whatever_the_alert_carries() {
        let many: Vec<(String, String)> = (0..5000)
            .map(|i| (format!("k{i:05}"), "v".repeat(10_000)))
            .collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let a = alert(&refs);
        let text = escalator().text(&escalation(&a, None));
        assert!(text.len() < 8 * 1024, "{} bytes", text.len());
        assert!(text.contains("(and 4980 more)"), "{text}");
    }

    #[test]
    fn the_severity_comes_from_the_label_else_from_the_runbook() {
        let e = escalator();
        let labelled = alert(&[("severity", "P2")]);
        assert!(
            e.text(&escalation(&labelled, Some("P1")))
                .contains("Severity: P2")
        );
        let bare = alert(&[]);
        assert!(
            e.text(&escalation(&bare, Some("P1")))
                .contains("Severity: P1")
        );
    }

    #[test]
    fn escalations_are_deduplicated_and_rate_limited() {
        let mut l = Limiter::new(Duration::from_secs(60), 3);
        assert_eq!(
            l.admit("f", "bad_params", true, 0),
            Admission::Send { suppressed: 0 }
        );
        assert_eq!(l.admit("f", "bad_params", true, 1), Admission::Duplicate);
        assert_eq!(
            l.admit("f", "cooldown", true, 2),
            Admission::Send { suppressed: 0 }
        );
        assert_eq!(
            l.admit("g", "bad_params", true, 3),
            Admission::Send { suppressed: 0 }
        );
        assert_eq!(l.admit("h", "bad_params", true, 4), Admission::RateLimited);
        assert_eq!(l.admit("i", "bad_params", true, 5), Admission::RateLimited);
        // After the window the same alert may page again; after the hour the limit frees up.
        assert_eq!(
            l.admit("f", "bad_params", true, 61_000),
            Admission::RateLimited
        );
        assert_eq!(
            l.admit("f", "bad_params", true, 3_600_001),
            Admission::Send { suppressed: 3 }
        );
    }

    #[tokio::test]
    async fn captured_escalations_are_bounded() {
        let e = escalator();
        for i in 0..(CAPTURED_KEPT + 50) {
            e.send(&format!("message {i}")).await.unwrap();
        }
        let kept = e.captured();
        assert_eq!(kept.len(), CAPTURED_KEPT);
        assert_eq!(
            kept[CAPTURED_KEPT - 1]["text"],
            format!("message {}", CAPTURED_KEPT + 49)
        );
    }
}
