//! `POST /hooks/slack/interactions`: Slack's button clicks on approval requests.
//!
//! Slack signs every request: `X-Slack-Signature: v0=<hex>` is HMAC-SHA256 under the app's
//! signing secret (read from the variable hooks.toml's `[auth] slack_signing_secret_env` names,
//! `RUNBOOK_SLACK_SIGNING_SECRET` by default) of `v0:{X-Slack-Request-Timestamp}:{body}`.
//! A request is believed only with a good signature (compared in constant time), a timestamp
//! within five minutes, and not seen before (the same signed request twice is a replay). The
//! clicking user is then the approver, as `slack` (team and user id), or as the person
//! `[slack_users]` in runbook.toml says they are elsewhere. The signing secret is never logged,
//! journaled or echoed.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::Rejection;
use crate::base::identity::Who;

pub(crate) const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
pub(crate) const SIGNATURE_HEADER: &str = "x-slack-signature";
/// How far a request's timestamp may be from now (Slack's own recommendation).
pub(crate) const WINDOW: Duration = Duration::from_secs(5 * 60);

/// What `serve` knows to answer clicks: the signing secret (and the variable it came from) and
/// who Slack users are elsewhere.
pub(crate) struct Interactions {
    secret: Option<String>,
    var: String,
    users: BTreeMap<String, String>,
}

impl Interactions {
    /// `secret` is the value of the variable `var` (None: unset or blank).
    pub(crate) fn new(var: &str, secret: Option<String>, users: BTreeMap<String, String>) -> Self {
        if secret.is_some() {
            // Runs this server runs may post buttons: their clicks come here.
            crate::services::approvals::slack::receive_in_process();
        }
        Interactions {
            secret,
            var: var.to_string(),
            users,
        }
    }

    /// The signing secret, or why every click is refused (naming the variable, never a value).
    pub(crate) fn secret(&self) -> Result<&str, Rejection> {
        self.secret.as_deref().ok_or_else(|| {
            Rejection::Unauthenticated(format!(
                "no Slack signing secret configured (set {})",
                self.var
            ))
        })
    }

    /// The identity of a verified click's user.
    pub(crate) fn who(&self, click: &Click) -> Who {
        let mut who = Who::slack(&click.team, &click.user, click.name.as_deref());
        who.same_as = self.users.get(&click.user).cloned();
        who
    }
}

/// The signature header's value for `body` sent at `timestamp` (for tests and tools).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // A key of any length is valid for HMAC, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a request's signature, then its freshness (`now` in Unix seconds). Returns the decoded
/// signature, the key a replay is recognised by.
pub(crate) fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<Vec<u8>, Rejection> {
    let unauth = |m: &str| Err(Rejection::Unauthenticated(m.to_string()));
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return unauth("missing X-Slack-Request-Timestamp or X-Slack-Signature");
    };
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return unauth("X-Slack-Request-Timestamp is not Unix seconds");
    };
    let Some(given) = signature
        .trim()
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return unauth("X-Slack-Signature must be v0=<hex>");
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else {
        return unauth("the signing secret cannot be used");
    };
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    // verify_slice compares in constant time.
    if mac.verify_slice(&given).is_err() {
        return unauth("bad signature");
    }
    if now.abs_diff(ts) > WINDOW.as_secs() {
        return unauth("timestamp outside the five-minute window");
    }
    Ok(given)
}

/// One click on one of our buttons.
#[derive(Debug, Clone)]
pub(crate) struct Click {
    pub team: String,
    pub user: String,
    pub name: Option<String>,
    pub action_id: String,
    pub value: String,
}

/// Reads a `block_actions` interaction (`payload=<JSON>`, form-encoded).
pub(crate) fn parse(body: &[u8]) -> Result<Click, Rejection> {
    let bad = |m: &str| Rejection::Malformed(m.to_string());
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
    let payload = text
        .split('&')
        .find_map(|pair| pair.strip_prefix("payload="))
        .ok_or_else(|| bad("no payload field"))?;
    let payload: Value = serde_json::from_str(&form_decode(payload)?)
        .map_err(|e| bad(&format!("the payload is not JSON: {e}")))?;
    if payload["type"] != "block_actions" {
        return Err(bad("not a block_actions interaction"));
    }
    let action = &payload["actions"][0];
    let text = |v: &Value| v.as_str().map(str::to_string);
    Ok(Click {
        team: text(&payload["team"]["id"])
            .or_else(|| text(&payload["user"]["team_id"]))
            .unwrap_or_default(),
        user: text(&payload["user"]["id"]).ok_or_else(|| bad("no user id"))?,
        name: text(&payload["user"]["username"]).or_else(|| text(&payload["user"]["name"])),
        action_id: text(&action["action_id"]).ok_or_else(|| bad("no action"))?,
        value: text(&action["value"]).unwrap_or_default(),
    })
}

/// `application/x-www-form-urlencoded` decoding of one value (`+` is a space).
fn form_decode(text: &str) -> Result<String, Rejection> {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| Rejection::Malformed("bad percent-encoding".into()))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Rejection::Malformed("the payload is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_is_believed_within_five_minutes_only() {
        let body = b"payload=%7B%7D";
        let sig = sign(b"s3cret", 1_000, body);
        assert!(verify(b"s3cret", Some("1000"), Some(&sig), body, 1_100).is_ok());
        let refused = |r: Result<Vec<u8>, Rejection>| r.err().map(|e| e.to_string());
        assert!(
            refused(verify(b"s3cret", Some("1000"), Some(&sig), body, 1_301))
                .unwrap()
                .contains("five-minute")
        );
        assert!(
            refused(verify(b"other", Some("1000"), Some(&sig), body, 1_000))
                .unwrap()
                .contains("bad signature")
        );
        assert!(refused(verify(b"s3cret", Some("1001"), Some(&sig), body, 1_001)).is_some());
        assert!(refused(verify(b"s3cret", None, Some(&sig), body, 1_000)).is_some());
    }

    #[test]
    fn a_click_is_read_from_the_form_encoded_payload() {
        let payload = serde_json::json!({
            "type": "block_actions", "team": {"id": "T1"},
            "user": {"id": "U2", "username": "bob b"},
            "actions": [{"action_id": "approve", "value": "r|1|n|h"}],
        })
        .to_string();
        let encoded: String = payload
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let click = parse(format!("payload={encoded}").as_bytes()).unwrap();
        assert_eq!(
            (
                click.team.as_str(),
                click.user.as_str(),
                click.name.as_deref()
            ),
            ("T1", "U2", Some("bob b"))
        );
        assert_eq!(
            (click.action_id.as_str(), click.value.as_str()),
            ("approve", "r|1|n|h")
        );
        assert!(parse(b"payload=%ZZ").is_err());
    }
}
