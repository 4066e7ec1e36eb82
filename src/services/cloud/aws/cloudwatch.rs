//! CloudWatch on AWS: GetMetricData for one metric, alarms and their actions.

use aws_sdk_cloudwatch::primitives::{DateTime, DateTimeFormat};
use aws_sdk_cloudwatch::types as cwt;

use super::AwsCloud;
use crate::services::cloud::{Alarm, CloudResult, Datapoint, MetricQuery};

fn stamp(t: Option<&DateTime>) -> String {
    t.and_then(|t| t.fmt(DateTimeFormat::DateTime).ok())
        .unwrap_or_default()
}

impl AwsCloud {
    pub async fn metric_data(&self, q: &MetricQuery) -> CloudResult<Vec<Datapoint>> {
        let end = std::time::SystemTime::now();
        let start = end
            .checked_sub(std::time::Duration::from_secs(
                u64::try_from(q.window_seconds).unwrap_or(0),
            ))
            .unwrap_or(std::time::UNIX_EPOCH);
        let metric = cwt::Metric::builder()
            .namespace(&q.namespace)
            .metric_name(&q.name)
            .set_dimensions(Some(
                q.dimensions
                    .iter()
                    .map(|(k, v)| cwt::Dimension::builder().name(k).value(v).build())
                    .collect(),
            ))
            .build();
        let query = cwt::MetricDataQuery::builder()
            .id("m1")
            .metric_stat(
                cwt::MetricStat::builder()
                    .metric(metric)
                    .period(q.period_seconds)
                    .stat(&q.stat)
                    .build(),
            )
            .return_data(true)
            .build();
        let mut points = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let out = self
                .cloudwatch
                .get_metric_data()
                .metric_data_queries(query.clone())
                .start_time(DateTime::from(start))
                .end_time(DateTime::from(end))
                .scan_by(cwt::ScanBy::TimestampAscending)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| self.sdk_error("GetMetricData", e))?;
            self.note(&out);
            for r in out.metric_data_results() {
                for (t, v) in r.timestamps().iter().zip(r.values()) {
                    points.push(Datapoint {
                        timestamp: stamp(Some(t)),
                        value: *v,
                    });
                }
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => break,
            }
        }
        points.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
        Ok(points)
    }

    pub async fn describe_alarms(&self, names: &[String]) -> CloudResult<Vec<Alarm>> {
        let mut alarms = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut req = self
                .cloudwatch
                .describe_alarms()
                .set_next_token(next.take());
            if !names.is_empty() {
                req = req.set_alarm_names(Some(names.to_vec()));
            }
            let out = req
                .send()
                .await
                .map_err(|e| self.sdk_error("DescribeAlarms", e))?;
            self.note(&out);
            alarms.extend(out.metric_alarms().iter().map(|a| {
                Alarm {
                    name: a.alarm_name().unwrap_or_default().to_string(),
                    state: a
                        .state_value()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    reason: a.state_reason().unwrap_or_default().to_string(),
                    updated: stamp(a.state_updated_timestamp()),
                    actions_enabled: a.actions_enabled().unwrap_or(true),
                    namespace: a.namespace().unwrap_or_default().to_string(),
                    metric: a.metric_name().unwrap_or_default().to_string(),
                    threshold: a.threshold().unwrap_or_default(),
                    comparison: a
                        .comparison_operator()
                        .map(|c| c.as_str().to_string())
                        .unwrap_or_default(),
                }
            }));
            match out.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(alarms)
    }

    pub async fn set_alarm_actions(&self, names: &[String], enabled: bool) -> CloudResult<()> {
        if enabled {
            let out = self
                .cloudwatch
                .enable_alarm_actions()
                .set_alarm_names(Some(names.to_vec()))
                .send()
                .await
                .map_err(|e| self.sdk_error("EnableAlarmActions", e))?;
            self.note(&out);
        } else {
            let out = self
                .cloudwatch
                .disable_alarm_actions()
                .set_alarm_names(Some(names.to_vec()))
                .send()
                .await
                .map_err(|e| self.sdk_error("DisableAlarmActions", e))?;
            self.note(&out);
        }
        Ok(())
    }
}
