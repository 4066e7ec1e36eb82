//! The generic signed webhook, for senders that are neither Alertmanager nor SNS (a paging
//! service, a cron job on another host, a SIEM).
//!
//! The sender signs `"{timestamp}.{body}"` with HMAC-SHA256 under a shared key and sends
//!
//! ```text
//! X-Runbook-Timestamp: 1795430400            (Unix seconds)
//! X-Runbook-Signature: sha256=<hex digest>
//! ```
//!
//! The timestamp is inside the signature, so an old request cannot be made new; a request
//! outside the replay window is refused, and within it the receiver remembers signatures it has
//! seen, so the same request twice is refused too. Comparison is constant-time.
//!
//! The body is one alert or `{"alerts": [...]}`:
//!
//! ```json
//! {"alert": "ec2-cpu-high", "status": "firing", "labels": {"instance_id": "i-0a1b2c3d"},
//!  "annotations": {"summary": "CPU above 85%"}, "fingerprint": "optional"}
//! ```

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{Alert, Rejection, Source};

pub const TIMESTAMP_HEADER: &str = "x-runbook-timestamp";
pub const SIGNATURE_HEADER: &str = "x-runbook-signature";

/// The signature header's value for `body` sent at `timestamp` (for senders and tests).
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    // A key of any length is valid for HMAC, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a request's signature and freshness. `now` is Unix seconds. Returns the decoded MAC:
/// the replay memory is keyed on its bytes, never on the header's text (hex in upper or mixed
/// case is the same signature, and must be the same replay).
pub fn verify(
    key: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    window: std::time::Duration,
) -> Result<Vec<u8>, Rejection> {
    let unauth = |m: &str| Err(Rejection::Unauthenticated(m.to_string()));
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return unauth("missing X-Runbook-Timestamp or X-Runbook-Signature");
    };
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return unauth("X-Runbook-Timestamp is not Unix seconds");
    };
    let Some(hex_sig) = signature.trim().strip_prefix("sha256=") else {
        return unauth("X-Runbook-Signature must be sha256=<hex>");
    };
    let Ok(given) = hex::decode(hex_sig) else {
        return unauth("X-Runbook-Signature is not hex");
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return unauth("the configured key cannot be used");
    };
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    // verify_slice compares in constant time.
    if mac.verify_slice(&given).is_err() {
        return unauth("bad signature");
    }
    // Checked after the signature, so an attacker learns nothing about the window from timing
    // either; the timestamp itself is authentic from here on.
    // abs_diff, not `now - ts`: a signed timestamp near i64::MIN or MAX would overflow.
    if now.abs_diff(ts) > window.as_secs() {
        return unauth("timestamp outside the replay window");
    }
    Ok(given)
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Body {
    Many { alerts: Vec<One> },
    One(One),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct One {
    alert: String,
    #[serde(default = "firing")]
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    fingerprint: Option<String>,
    starts_at: Option<String>,
}

fn firing() -> String {
    "firing".into()
}

pub fn parse(body: &[u8]) -> Result<Vec<Alert>, Rejection> {
    let parsed: Body = serde_json::from_slice(body).map_err(|e| {
        Rejection::Malformed(format!(
            "expected {{\"alert\": NAME, \"labels\": {{...}}}} or {{\"alerts\": [...]}}: {e}"
        ))
    })?;
    let many = match parsed {
        Body::Many { alerts } => alerts,
        Body::One(one) => vec![one],
    };
    many.into_iter()
        .map(|o| {
            if !matches!(o.status.as_str(), "firing" | "resolved") {
                return Err(Rejection::Malformed(format!(
                    "status {:?}: expected firing or resolved",
                    o.status
                )));
            }
            let fingerprint = o
                .fingerprint
                .unwrap_or_else(|| Alert::fingerprint_of(Source::Generic, &o.alert, &o.labels));
            Ok(Alert {
                source: Source::Generic,
                firing: o.status == "firing",
                name: o.alert,
                labels: o.labels,
                annotations: o.annotations,
                fingerprint,
                starts_at: o.starts_at,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const KEY: &[u8] = b"test-key";
    const W: Duration = Duration::from_secs(300);

    #[test]
    fn a_signed_fresh_request_verifies() {
        let body = br#"{"alert":"x"}"#;
        let sig = sign(KEY, 1000, body);
        assert!(verify(KEY, Some("1000"), Some(&sig), body, 1010, W).is_ok());
    }

    #[test]
    fn refuses_tampering_wrong_keys_replays_and_missing_headers() {
        let body = br#"{"alert":"x"}"#;
        let sig = sign(KEY, 1000, body);
        let refused =
            |r: Result<Vec<u8>, Rejection>| matches!(r, Err(Rejection::Unauthenticated(_)));
        assert!(refused(verify(
            KEY,
            Some("1000"),
            Some(&sig),
            br#"{"alert":"y"}"#,
            1000,
            W
        )));
        assert!(refused(verify(
            b"other",
            Some("1000"),
            Some(&sig),
            body,
            1000,
            W
        )));
        // The timestamp is signed: moving it forward breaks the signature.
        assert!(refused(verify(
            KEY,
            Some("1400"),
            Some(&sig),
            body,
            1400,
            W
        )));
        // Outside the window, even correctly signed.
        assert!(refused(verify(
            KEY,
            Some("1000"),
            Some(&sig),
            body,
            1301,
            W
        )));
        assert!(refused(verify(KEY, Some("1000"), Some(&sig), body, 699, W)));
        assert!(refused(verify(KEY, None, Some(&sig), body, 1000, W)));
        assert!(refused(verify(KEY, Some("1000"), None, body, 1000, W)));
        let bare = sig.trim_start_matches("sha256=");
        assert!(refused(verify(
            KEY,
            Some("1000"),
            Some(bare),
            body,
            1000,
            W
        )));
    }

    #[test]
    fn the_mac_is_the_same_whatever_the_case_of_its_hex() {
        let body = br#"{"alert":"x"}"#;
        let sig = sign(KEY, 1000, body);
        let upper = format!("sha256={}", sig["sha256=".len()..].to_uppercase());
        let a = verify(KEY, Some("1000"), Some(&sig), body, 1000, W).unwrap();
        let b = verify(KEY, Some("1000"), Some(&upper), body, 1000, W).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn a_signed_timestamp_at_either_end_of_the_i64_range_is_refused_not_overflowed() {
        // `now - ts` overflowed here (a panic with overflow checks, a wrapped difference
        // without); reproduced through the `generic` fuzz target (docs/fuzzing.md).
        let body = br#"{"alert":"x"}"#;
        for ts in [i64::MIN, i64::MAX] {
            let sig = sign(KEY, ts, body);
            let r = verify(
                KEY,
                Some(&ts.to_string()),
                Some(&sig),
                body,
                1_795_430_400,
                W,
            );
            assert!(
                matches!(&r, Err(Rejection::Unauthenticated(m)) if m.contains("replay window")),
                "{ts}: {r:?}"
            );
        }
    }

    #[test]
    fn parses_one_or_many_alerts() {
        let one = parse(br#"{"alert":"ec2-cpu-high","labels":{"instance_id":"i-1"}}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert!(one[0].firing);
        assert_eq!(one[0].labels["instance_id"], "i-1");
        let many = parse(
            br#"{"alerts":[{"alert":"a","status":"resolved"},{"alert":"b","fingerprint":"f1"}]}"#,
        )
        .unwrap();
        assert_eq!(many.len(), 2);
        assert!(!many[0].firing);
        assert_eq!(many[1].fingerprint, "f1");
        assert!(parse(br#"{"alert":"a","status":"maybe"}"#).is_err());
        assert!(parse(br#"{"name":"a"}"#).is_err());
    }
}
