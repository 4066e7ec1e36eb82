//! Escalation: refusals and failed runs told to a person, held back when repeated or over the
//! hourly limit, sent in the background (requests) or waited for (workers), and journaled.

use crate::data::transcript::JournalEvent;
use std::sync::Arc;

use super::super::config::Route;
use super::super::escalate::{Admission, Escalation};
use super::{Alert, AlertOutcome, Hub, Metrics, lock};

impl Hub {
    pub(super) fn escalate_refusal(
        self: &Arc<Self>,
        alert: &Alert,
        route: &Route,
        out: &AlertOutcome,
    ) {
        let reason = out.reason.clone().unwrap_or_default();
        let detail = out.detail.clone().unwrap_or_default();
        self.spawn_escalation(Escalation {
            alert,
            environment: route.environment.as_deref(),
            runbook: Some(&route.runbook),
            severity: self.severity_of(route),
            reason: &reason,
            detail: &detail,
            run_id: None,
            transcript: None,
            journal: &self.journal_path(),
        });
    }

    pub(super) fn severity_of(&self, route: &Route) -> Option<&str> {
        self.planned.get(&route.name).map(|p| p.severity.as_str())
    }

    /// The message for `e`, or None when it is held back: the same alert was escalated for
    /// the same reason within the window (a refusal repeated is not news), or the hourly
    /// limit is reached (counted; the next message sent says how many were held back).
    fn message(&self, e: &Escalation) -> Option<String> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let dedupe = e.run_id.is_none();
        let admission =
            lock(&self.escalator.limiter).admit(&e.alert.fingerprint, e.reason, dedupe, now_ms);
        let held = |why: &str| {
            Metrics::inc(&self.metrics.escalations, &[("delivered", why)]);
            None
        };
        match admission {
            Admission::Duplicate => held("deduplicated"),
            Admission::RateLimited => held("rate_limited"),
            Admission::Send { suppressed } => {
                let mut text = self.escalator.text(e);
                if suppressed > 0 {
                    text.push_str(&format!(
                        "\n({suppressed} escalation(s) before this one were held back by escalation.max_per_hour: see the journal)"
                    ));
                }
                Some(text)
            }
        }
    }

    /// Sends an escalation in the background (a request's answer does not wait on Slack).
    fn spawn_escalation(self: &Arc<Self>, e: Escalation) {
        let Some(text) = self.message(&e) else {
            return;
        };
        let reason = e.reason.to_string();
        let alert = e.alert.name.clone();
        let hub = self.clone();
        let handle = self.rt.spawn(async move {
            hub.deliver(&alert, &reason, &text).await;
        });
        let mut pending = lock(&self.escalations);
        pending.retain(|h| !h.is_finished());
        pending.push(handle);
    }

    /// Sends an escalation and waits for it (worker threads).
    pub(super) fn escalate_blocking(&self, e: &Escalation) {
        let Some(text) = self.message(e) else {
            return;
        };
        self.rt
            .block_on(self.deliver(&e.alert.name, e.reason, &text));
    }

    async fn deliver(&self, alert: &str, reason: &str, text: &str) {
        let result = self.escalator.send(text).await;
        Metrics::inc(
            &self.metrics.escalations,
            &[("delivered", if result.is_ok() { "true" } else { "false" })],
        );
        if let Err(e) = &result {
            tracing::error!(
                alert = %super::clip(alert),
                reason,
                "escalation not delivered: {}",
                super::clip(e)
            );
        }
        let _ = self
            .journal
            .record(JournalEvent::Escalation {
                alert: alert.to_string(),
                reason: reason.to_string(),
                text: text.to_string(),
                delivered: result.is_ok(),
                error: result.err(),
            })
            .await;
    }

    /// Waits for escalations still being sent.
    pub(crate) async fn flush_escalations(&self) {
        let pending: Vec<_> = std::mem::take(&mut *lock(&self.escalations));
        for h in pending {
            let _ = h.await;
        }
    }
}
