//! Authentication: bearer tokens, generic webhook signatures, SNS messages, and the memory of
//! what was seen that refuses a replay. Everything here decides whether a request is believed.

use crate::base::digest::Digest;
use crate::data::transcript::JournalEvent;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::{Alert, Hub, Rejection, Source, lock, sns};

/// The shared secrets, read from the environment variables hooks.toml names.
pub(super) struct Secrets {
    pub(super) alertmanager: Option<String>,
    pub(super) generic: Option<String>,
    pub(super) admin: Option<String>,
    /// The Slack app's signing secret (approval clicks).
    pub(super) slack: Option<String>,
}

pub(super) fn secret(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// Refuses a configuration that expects Slack approval clicks (`[auth] slack_interactions`)
/// without the signing secret to believe them: every click would be refused, and every run
/// waiting on one would time out. Says which variable, never a value.
pub(crate) fn slack_secret_required(hooks: &super::Hooks) -> crate::base::error::Result<()> {
    let auth = &hooks.file.auth;
    if auth.slack_interactions && secret(&auth.slack_signing_secret_env).is_none() {
        return Err(crate::base::error::Error::config(
            &hooks.path,
            format!(
                "[auth] slack_interactions = true, but {} (slack_signing_secret_env) is not set: Slack approval clicks could not be verified",
                auth.slack_signing_secret_env
            ),
        ));
    }
    Ok(())
}

/// Signatures and SNS message ids seen, until when they could still be replayed (Unix
/// seconds), and when the map was last pruned. Bounded by time: an entry is dropped once its
/// timestamp would refuse the request anyway (2 × `replay_window`, 2 × `sns.max_age`), so it
/// holds at most the requests of that span. Kept by a 128-bit digest of the key, not the key
/// (16 bytes instead of a 72-byte string at 50 alerts/s for 10 minutes).
#[derive(Default)]
pub(super) struct ReplayMemory {
    until: HashMap<Digest, i64>,
    pruned_at: i64,
}

impl ReplayMemory {
    /// Remembers `key` until `until` unless it is remembered now (`Err`); drops what expired
    /// (once a second at most: a scan per request would be quadratic under load).
    pub(super) fn sight(&mut self, key: &str, now: i64, until: i64) -> std::result::Result<(), ()> {
        if self.pruned_at != now {
            self.until.retain(|_, u| *u >= now);
            self.pruned_at = now;
        }
        let k = Digest::of(key);
        if self.until.get(&k).is_some_and(|u| *u >= now) {
            return Err(());
        }
        self.until.insert(k, until);
        Ok(())
    }

    pub(super) fn forget(&mut self, key: &str) {
        self.until.remove(&Digest::of(key));
    }

    pub(super) fn len(&self) -> usize {
        self.until.len()
    }
}

impl Hub {
    /// Endpoints that refuse everything because their secret is not set (warned about by
    /// `serve`; `runbook hook` needs none of them).
    pub(crate) fn closed_endpoints(&self) -> Vec<String> {
        let auth = &self.hooks.file.auth;
        let s = &self.secrets;
        let mut closed: Vec<String> = [
            (
                &auth.alertmanager_token_env,
                &s.alertmanager,
                "/hooks/alertmanager refuses every request",
            ),
            (
                &auth.generic_secret_env,
                &s.generic,
                "/hooks/generic refuses every request",
            ),
            (
                &auth.admin_token_env,
                &s.admin,
                "/admin refuses every request and GET /runs is open",
            ),
        ]
        .into_iter()
        .filter(|(_, value, _)| value.is_none())
        .map(|(var, _, what)| format!("{var} is not set: {what}"))
        .collect();
        if s.slack.is_none() {
            closed.push(format!(
                "{} is not set: /hooks/slack/interactions refuses every click",
                auth.slack_signing_secret_env
            ));
        }
        if self.hooks.file.sns.topics.is_empty() {
            closed.push("no SNS topics are allow-listed: /hooks/sns refuses every message".into());
        }
        closed
    }

    /// Checks the bearer token Alertmanager sends.
    pub(crate) fn check_bearer(&self, header: Option<&str>) -> std::result::Result<(), Rejection> {
        check_token(self.secrets.alertmanager.as_deref(), header, "alertmanager")
    }

    /// Checks the admin token (`GET /runs`, `POST /admin/...`). Without one configured, the
    /// read-only endpoints are open and the admin ones closed.
    pub(crate) fn check_admin(
        &self,
        header: Option<&str>,
        write: bool,
    ) -> std::result::Result<(), Rejection> {
        if self.secrets.admin.is_none() && !write {
            return Ok(());
        }
        check_token(self.secrets.admin.as_deref(), header, "admin")
    }

    /// Checks a generic webhook's signature, freshness, and that it was not seen before.
    /// Returns the key it is remembered under: forget it ([`Hub::forget`]) when the request is
    /// answered with a "retry" (503), or the sender's retry would be refused as a replay.
    pub(crate) fn check_generic(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> std::result::Result<String, Rejection> {
        let Some(key) = self.secrets.generic.as_deref() else {
            return Err(Rejection::Unauthenticated(format!(
                "no key configured (set {})",
                self.hooks.file.auth.generic_secret_env
            )));
        };
        let now = chrono::Utc::now().timestamp();
        let window = self.hooks.file.auth.replay_window;
        let mac = super::generic::verify(key.as_bytes(), timestamp, signature, body, now, window)?;
        // The decoded MAC, not the header's text: `ABC…` and `abc…` are one signature.
        let replay_key = format!("generic:{}", hex::encode(mac));
        self.first_sighting(&replay_key, now, window)?;
        Ok(replay_key)
    }

    /// Refuses what was seen within `window` (the same signed request sent twice). The key is
    /// remembered at once, so two copies racing in are not both admitted.
    pub(crate) fn first_sighting(
        &self,
        key: &str,
        now: i64,
        window: Duration,
    ) -> std::result::Result<(), Rejection> {
        // Remembered for the window on both sides of now: a timestamp can be that far ahead.
        let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        lock(&self.seen)
            .sight(key, now, now.saturating_add(window.saturating_mul(2)))
            .map_err(|()| Rejection::Unauthenticated("replayed request".into()))
    }

    /// Forgets a request remembered by the replay check: it was answered "retry later" (503),
    /// so its retry is the same request, and must be judged afresh.
    pub(crate) fn forget(&self, replay_key: &str) {
        lock(&self.seen).forget(replay_key);
    }

    /// An SNS message: verified, then a subscription confirmed or a CloudWatch alarm returned.
    /// The replay key (see [`Hub::check_generic`]) comes with the alerts.
    pub(crate) async fn sns_message(
        &self,
        body: &[u8],
    ) -> std::result::Result<(Vec<Alert>, String), Rejection> {
        let unauth = |e: sns::SnsError| Rejection::Unauthenticated(format!("sns: {e}"));
        let envelope = sns::parse(body).map_err(|e| Rejection::Malformed(e.to_string()))?;
        self.certs
            .verify(&envelope, &self.sns_trust)
            .await
            .map_err(unauth)?;
        // A signed message stays valid forever, so its age is what stops a replay: SNS's own
        // retries of an HTTP delivery end well within the window; the MessageId is remembered
        // for the window, so a retry of a message already handled is processed once.
        let now = chrono::Utc::now().timestamp();
        let max_age = self.hooks.file.sns.max_age;
        let sent = chrono::DateTime::parse_from_rfc3339(&envelope.timestamp)
            .map_err(|_| Rejection::Malformed("sns: Timestamp is not RFC 3339".into()))?
            .timestamp();
        let max_age_secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        if now.saturating_sub(sent) > max_age_secs || sent.saturating_sub(now) > 300 {
            return Err(Rejection::Unauthenticated(format!(
                "sns: message sent at {} is outside the accepted age of {}",
                envelope.timestamp,
                humantime::format_duration(max_age)
            )));
        }
        let replay_key = format!("sns:{}", envelope.message_id);
        self.first_sighting(&replay_key, now, max_age)?;
        match envelope.kind {
            sns::Kind::SubscriptionConfirmation => {
                let result =
                    sns::confirm_subscription(&self.http, &envelope, &self.sns_trust).await;
                let _ = self
                    .journal
                    .record(JournalEvent::SnsSubscription {
                        topic: envelope.topic_arn.clone(),
                        confirmed: result.is_ok(),
                        error: result.as_ref().err().map(|e| e.to_string()),
                    })
                    .await;
                if let Err(e) = result {
                    // SNS re-sends the confirmation; that retry must not be a "replay".
                    self.forget(&replay_key);
                    return Err(Rejection::Malformed(format!("sns: {e}")));
                }
                Ok((Vec::new(), replay_key))
            }
            sns::Kind::UnsubscribeConfirmation => {
                let _ = self
                    .journal
                    .record(JournalEvent::SnsUnsubscribed {
                        topic: envelope.topic_arn.clone(),
                    })
                    .await;
                Ok((Vec::new(), replay_key))
            }
            sns::Kind::Notification => {
                let alarm = sns::cloudwatch_alarm(&envelope.message)
                    .map_err(|e| Rejection::Malformed(format!("sns: {e}")))?;
                Ok((vec![alarm_to_alert(&alarm)], replay_key))
            }
        }
    }
}

fn check_token(
    expected: Option<&str>,
    header: Option<&str>,
    what: &str,
) -> std::result::Result<(), Rejection> {
    let Some(expected) = expected else {
        return Err(Rejection::Unauthenticated(format!(
            "no {what} token is configured"
        )));
    };
    let given = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    if super::secret_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Rejection::Unauthenticated(format!(
            "bad or missing {what} bearer token"
        )))
    }
}

/// A CloudWatch alarm as an alert: the alarm name is the alert name, the dimensions are labels.
fn alarm_to_alert(a: &sns::CloudWatchAlarm) -> Alert {
    let mut labels = a.dimensions.clone();
    labels.insert("alarm_name".into(), a.alarm_name.clone());
    labels.insert(
        "region".into(),
        a.region_code.clone().unwrap_or_else(|| a.region.clone()),
    );
    labels.insert("region_name".into(), a.region.clone());
    labels.insert("account".into(), a.account.clone());
    if let Some(n) = &a.namespace {
        labels.insert("namespace".into(), n.clone());
    }
    if let Some(m) = &a.metric_name {
        labels.insert("metric_name".into(), m.clone());
    }
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".into(), a.reason.clone());
    if let Some(d) = &a.description {
        annotations.insert("description".into(), d.clone());
    }
    annotations.insert("state".into(), a.new_state.clone());
    Alert {
        source: Source::Sns,
        firing: a.new_state == "ALARM",
        fingerprint: Alert::fingerprint_of(Source::Sns, &a.alarm_name, &a.dimensions),
        name: a.alarm_name.clone(),
        labels,
        annotations,
        starts_at: Some(a.state_change_time.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::ReplayMemory;

    #[test]
    fn the_replay_memory_holds_only_what_can_still_be_replayed() {
        let mut m = ReplayMemory::default();
        let window = 600;
        // N requests in the first second, k more each later second, for twice the window.
        for i in 0..1000 {
            assert!(m.sight(&format!("generic:{i}"), 0, window).is_ok());
        }
        assert!(
            m.sight("generic:7", 0, window).is_err(),
            "a replay was taken"
        );
        for t in 1..=2 * window {
            for i in 0..3 {
                m.sight(&format!("generic:{t}:{i}"), t, t + window).unwrap();
            }
            // Never more than the requests of the last `window` seconds (plus this one's).
            assert!(
                m.len() <= 3 * (window as usize + 1) + 1000,
                "{} at {t}",
                m.len()
            );
        }
        assert_eq!(m.len(), 3 * (window as usize + 1));
        m.forget(&format!("generic:{}:0", 2 * window));
        assert_eq!(m.len(), 3 * (window as usize + 1) - 1);
    }
}
