//! The CloudWatch alarm a verified SNS Notification carries: its JSON shape, apart from the
//! envelope and signature checks, since it is the one part that is about alarms, not SNS.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::SnsError;

/// The CloudWatch alarm an SNS Notification carries (Message is a JSON string).
#[derive(Debug, Clone, PartialEq)]
pub struct CloudWatchAlarm {
    /// `AlarmName`.
    pub alarm_name: String,
    /// `AlarmDescription`, when the alarm has one.
    pub description: Option<String>,
    /// `AWSAccountId`.
    pub account: String,
    /// `Region`: the display name AWS sends ("US East (N. Virginia)"), not the region code.
    pub region: String,
    /// `NewStateValue`: "ALARM", "OK" or "INSUFFICIENT_DATA".
    pub new_state: String,
    /// `OldStateValue`.
    pub old_state: String,
    /// `NewStateReason`.
    pub reason: String,
    /// `StateChangeTime`, as sent.
    pub state_change_time: String,
    /// `Trigger.MetricName`; absent for metric-math and composite alarms.
    pub metric_name: Option<String>,
    /// `Trigger.Namespace`; absent for metric-math and composite alarms.
    pub namespace: Option<String>,
    /// `Trigger.Dimensions`, name to value (AWS sends `[{"value": .., "name": ..}]`).
    pub dimensions: BTreeMap<String, String>,
    /// The region code (`us-east-1`), from `AlarmArn`; routes and runbooks want the code, and
    /// `Region` only has the display name.
    pub region_code: Option<String>,
}

#[derive(Deserialize)]
struct RawAlarm {
    #[serde(rename = "AlarmName")]
    alarm_name: String,
    #[serde(rename = "AlarmDescription", default)]
    description: Option<String>,
    #[serde(rename = "AWSAccountId")]
    account: String,
    #[serde(rename = "Region")]
    region: String,
    #[serde(rename = "NewStateValue")]
    new_state: String,
    #[serde(rename = "OldStateValue")]
    old_state: String,
    #[serde(rename = "NewStateReason")]
    reason: String,
    #[serde(rename = "StateChangeTime")]
    state_change_time: String,
    #[serde(rename = "Trigger", default)]
    trigger: Option<RawTrigger>,
    #[serde(rename = "AlarmArn", default)]
    alarm_arn: Option<String>,
}

#[derive(Deserialize)]
struct RawTrigger {
    #[serde(rename = "MetricName", default)]
    metric_name: Option<String>,
    #[serde(rename = "Namespace", default)]
    namespace: Option<String>,
    #[serde(rename = "Dimensions", default)]
    dimensions: Option<Vec<RawDimension>>,
}

/// AWS uses lower-case keys here, unlike everywhere else in the alarm; the capitalised spelling
/// is accepted too in case that is ever "fixed".
#[derive(Deserialize)]
struct RawDimension {
    #[serde(alias = "Name")]
    name: String,
    #[serde(alias = "Value")]
    value: String,
}

/// Parse the CloudWatch alarm in a Notification's `Message`.
pub fn cloudwatch_alarm(message: &str) -> Result<CloudWatchAlarm, SnsError> {
    let raw: RawAlarm = serde_json::from_str(message)
        .map_err(|e| SnsError::Malformed(format!("not a CloudWatch alarm: {e}")))?;
    let (metric_name, namespace, dimensions) = match raw.trigger {
        Some(t) => (t.metric_name, t.namespace, t.dimensions.unwrap_or_default()),
        None => (None, None, Vec::new()),
    };
    // arn:aws:cloudwatch:REGION:ACCOUNT:alarm:NAME
    let region_code = raw
        .alarm_arn
        .as_deref()
        .and_then(|arn| arn.split(':').nth(3))
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    Ok(CloudWatchAlarm {
        region_code,
        alarm_name: raw.alarm_name,
        description: raw.description,
        account: raw.account,
        region: raw.region,
        new_state: raw.new_state,
        old_state: raw.old_state,
        reason: raw.reason,
        state_change_time: raw.state_change_time,
        metric_name,
        namespace,
        dimensions: dimensions.into_iter().map(|d| (d.name, d.value)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::test_signer;
    use super::*;

    #[test]
    fn cloudwatch_alarm_parses_what_aws_sends() {
        let message = test_signer::cloudwatch_alarm_message(
            "cpu-high",
            "ALARM",
            &[("InstanceId", "i-0abc"), ("AutoScalingGroupName", "web")],
        );
        let alarm = cloudwatch_alarm(&message).unwrap();
        assert_eq!(
            alarm,
            CloudWatchAlarm {
                alarm_name: "cpu-high".into(),
                description: Some("cpu-high: CPU above 80% for 10 minutes".into()),
                account: "123456789012".into(),
                region: "US East (N. Virginia)".into(),
                region_code: Some("us-east-1".into()),
                new_state: "ALARM".into(),
                old_state: "OK".into(),
                reason: alarm.reason.clone(),
                state_change_time: "2025-03-01T10:10:27.358+0000".into(),
                metric_name: Some("CPUUtilization".into()),
                namespace: Some("AWS/EC2".into()),
                dimensions: [("AutoScalingGroupName", "web"), ("InstanceId", "i-0abc")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }
        );
        assert!(
            alarm.reason.starts_with("Threshold Crossed"),
            "{}",
            alarm.reason
        );
    }

    #[test]
    fn cloudwatch_alarm_without_a_metric_trigger() {
        // Composite alarms have no Trigger; metric-math alarms have one without MetricName, and
        // AlarmDescription is null when unset.
        let mut message: Value =
            serde_json::from_str(&test_signer::cloudwatch_alarm_message("a", "OK", &[])).unwrap();
        message["AlarmDescription"] = Value::Null;
        message["Trigger"] = json!({ "Metrics": [], "Dimensions": null });
        let alarm = cloudwatch_alarm(&message.to_string()).unwrap();
        assert_eq!(
            (alarm.description, alarm.metric_name, alarm.namespace),
            (None, None, None)
        );
        assert!(alarm.dimensions.is_empty());
        assert_eq!(
            (alarm.new_state.as_str(), alarm.old_state.as_str()),
            ("OK", "ALARM")
        );
        message.as_object_mut().unwrap().remove("Trigger");
        assert!(
            cloudwatch_alarm(&message.to_string())
                .unwrap()
                .dimensions
                .is_empty()
        );
    }

    #[test]
    fn cloudwatch_alarm_rejects_garbage() {
        let mut missing_name: Value =
            serde_json::from_str(&test_signer::cloudwatch_alarm_message("a", "ALARM", &[]))
                .unwrap();
        missing_name.as_object_mut().unwrap().remove("AlarmName");
        let mut bad_dimension: Value =
            serde_json::from_str(&test_signer::cloudwatch_alarm_message("a", "ALARM", &[]))
                .unwrap();
        bad_dimension["Trigger"]["Dimensions"] = json!([{ "name": "InstanceId" }]);
        for message in [
            "".to_string(),
            "hello".to_string(),
            "{}".to_string(),
            "[1,2]".to_string(),
            missing_name.to_string(),
            bad_dimension.to_string(),
        ] {
            let err = cloudwatch_alarm(&message).unwrap_err();
            assert!(
                matches!(err, SnsError::Malformed(_)),
                "{err:?} for {message}"
            );
        }
    }
}
