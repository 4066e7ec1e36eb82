//! Alertmanager's webhook payload (version 4), as its `webhook_config` receiver POSTs it.
//!
//! Alertmanager does not sign its requests; it can send a bearer token (`http_config:
//! authorization: credentials_file: ...`), which the receiver requires.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Alert, Rejection, Source};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    version: String,
    #[serde(default)]
    alerts: Vec<AmAlert>,
    #[serde(default)]
    common_labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmAlert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: Option<String>,
    #[serde(default)]
    fingerprint: String,
}

/// The alerts in a webhook body.
pub fn parse(body: &[u8]) -> Result<Vec<Alert>, Rejection> {
    let p: Payload = serde_json::from_slice(body)
        .map_err(|e| Rejection::Malformed(format!("not an Alertmanager webhook payload: {e}")))?;
    if p.version != "4" {
        return Err(Rejection::Malformed(format!(
            "Alertmanager webhook version {:?} (only version 4 is understood)",
            p.version
        )));
    }
    p.alerts
        .into_iter()
        .map(|a| {
            let mut labels = p.common_labels.clone();
            labels.extend(a.labels);
            let name = labels.get("alertname").cloned().ok_or_else(|| {
                Rejection::Malformed("an alert without an alertname label".into())
            })?;
            let fingerprint = if a.fingerprint.is_empty() {
                Alert::fingerprint_of(Source::Alertmanager, &name, &labels)
            } else {
                a.fingerprint
            };
            Ok(Alert {
                source: Source::Alertmanager,
                firing: a.status == "firing",
                name,
                labels,
                annotations: a.annotations,
                fingerprint,
                starts_at: a.starts_at,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "version": "4", "groupKey": "{}:{alertname=\"ec2-cpu-high\"}", "truncatedAlerts": 0,
      "status": "firing", "receiver": "runbook",
      "groupLabels": {"alertname": "ec2-cpu-high"},
      "commonLabels": {"alertname": "ec2-cpu-high", "severity": "P2"},
      "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
      "alerts": [
        {"status": "firing", "labels": {"alertname": "ec2-cpu-high", "instance_id": "i-0a1b2c3d4e5f60718"},
         "annotations": {"summary": "CPU above 85%"}, "startsAt": "2026-11-23T10:30:00Z",
         "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph", "fingerprint": "c0ffee0123456789"},
        {"status": "resolved", "labels": {"alertname": "ec2-cpu-high", "instance_id": "i-0b"},
         "annotations": {}, "startsAt": "2026-11-23T10:00:00Z", "endsAt": "2026-11-23T10:20:00Z",
         "generatorURL": "", "fingerprint": ""}
      ]
    }"#;

    #[test]
    fn parses_firing_and_resolved_alerts() {
        let alerts = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(alerts.len(), 2);
        let a = &alerts[0];
        assert_eq!(a.name, "ec2-cpu-high");
        assert!(a.firing);
        assert_eq!(a.labels["instance_id"], "i-0a1b2c3d4e5f60718");
        assert_eq!(a.labels["severity"], "P2", "common labels are merged in");
        assert_eq!(a.fingerprint, "c0ffee0123456789");
        assert_eq!(a.annotations["summary"], "CPU above 85%");
        assert!(!alerts[1].firing);
        assert_eq!(
            alerts[1].fingerprint.len(),
            16,
            "a fingerprint is made when none is sent"
        );
    }

    #[test]
    fn refuses_other_versions_and_garbage() {
        let v3 = SAMPLE.replace(r#""version": "4""#, r#""version": "3""#);
        assert!(
            matches!(parse(v3.as_bytes()), Err(Rejection::Malformed(m)) if m.contains("version"))
        );
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"version":"4","alerts":[{"status":"firing","labels":{}}]}"#).is_err());
    }
}
