//! CloudWatch in the sim: metric series scripted on the sim's time (see `FleetMetric`) and
//! alarms evaluated on them, so "CPU at 97% for ten minutes, then falling after the restart"
//! is what `GetMetricData` and the alarm's state say, in simulated time.

use super::{SimCloud, State, err};
use crate::services::cloud::{Alarm, CloudResult, Datapoint, MetricQuery, Tags};

const MINUTE_MS: i64 = 60_000;
/// At most this many datapoints per query (AWS answers up to 100,800; a drill needs far fewer).
const MAX_POINTS: i64 = 1_440;

/// Whether `value` breaches `threshold` under an alarm's comparison operator.
pub(super) fn breaches(comparison: &str, value: f64, threshold: f64) -> bool {
    match comparison {
        "GreaterThanOrEqualToThreshold" => value >= threshold,
        "LessThanThreshold" => value < threshold,
        "LessThanOrEqualToThreshold" => value <= threshold,
        _ => value > threshold,
    }
}

fn comparison_words(comparison: &str) -> &'static str {
    match comparison {
        "GreaterThanOrEqualToThreshold" => "greater than or equal to",
        "LessThanThreshold" => "less than",
        "LessThanOrEqualToThreshold" => "less than or equal to",
        _ => "greater than",
    }
}

impl SimCloud {
    fn metric_index(&self, namespace: &str, name: &str, dimensions: &Tags) -> Option<usize> {
        self.fleet
            .metrics
            .iter()
            .position(|m| m.namespace == namespace && m.name == name && &m.dimensions == dimensions)
    }

    /// The metric's value at `t` (ms since the Unix epoch on the sim's time).
    fn value_at(&self, s: &State, index: usize, t: i64) -> f64 {
        let Some(m) = self.fleet.metrics.get(index) else {
            return 0.0;
        };
        let trigger = s.metric_triggered_at.get(index).copied().flatten();
        match (trigger, m.recovered) {
            (Some(at), Some(to)) if t >= at => {
                let since = t.saturating_sub(at);
                let ramp = i64::try_from(m.ramp_minutes)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(MINUTE_MS);
                if ramp == 0 || since >= ramp {
                    to
                } else {
                    m.value + (to - m.value) * (since as f64 / ramp as f64)
                }
            }
            _ => m.value,
        }
    }

    /// Datapoints of a fleet metric, oldest first: one per `period` over `window` ending now,
    /// each aggregating a sample a minute.
    fn series(
        &self,
        s: &State,
        index: usize,
        stat: &str,
        period_s: i32,
        window_s: i64,
    ) -> Vec<Datapoint> {
        let period = i64::from(period_s.max(1)).saturating_mul(1000);
        let now = self.now_ms();
        let n = (window_s.saturating_mul(1000) / period).clamp(1, MAX_POINTS);
        let samples = (period / MINUTE_MS).max(1);
        let mut out = Vec::new();
        for k in 0..n {
            let end =
                now.saturating_sub(n.saturating_sub(1).saturating_sub(k).saturating_mul(period));
            let values: Vec<f64> = (0..samples)
                .map(|j| self.value_at(s, index, end.saturating_sub(j.saturating_mul(MINUTE_MS))))
                .collect();
            let value = match stat {
                "Maximum" => values.iter().copied().fold(f64::MIN, f64::max),
                "Minimum" => values.iter().copied().fold(f64::MAX, f64::min),
                "Sum" => values.iter().sum(),
                "SampleCount" => values.len() as f64,
                // A percentile of a step series: its highest sample is the honest upper bound.
                p if p.starts_with('p') => values.iter().copied().fold(f64::MIN, f64::max),
                _ => values.iter().sum::<f64>() / values.len() as f64,
            };
            let start = end.saturating_sub(period);
            let stamp = chrono::DateTime::from_timestamp_millis(start).unwrap_or(self.epoch);
            out.push(Datapoint {
                timestamp: stamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                value: (value * 1000.0).round() / 1000.0,
            });
        }
        out
    }

    pub(crate) async fn metric_data(&self, q: &MetricQuery) -> CloudResult<Vec<Datapoint>> {
        self.enter("GetMetricData", &[]).await?;
        if q.period_seconds <= 0 || q.window_seconds <= 0 {
            return Err(err(
                "ValidationError",
                "the period and the window must be positive",
            ));
        }
        let s = self.lock()?;
        // An unknown metric has no datapoints, as in CloudWatch.
        Ok(
            match self.metric_index(&q.namespace, &q.name, &q.dimensions) {
                Some(i) => self.series(&s, i, &q.stat, q.period_seconds, q.window_seconds),
                None => Vec::new(),
            },
        )
    }

    pub(crate) async fn describe_alarms(&self, names: &[String]) -> CloudResult<Vec<Alarm>> {
        self.enter("DescribeAlarms", names).await?;
        let s = self.lock()?;
        let now = chrono::DateTime::from_timestamp_millis(self.now_ms())
            .unwrap_or(self.epoch)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Ok(self
            .fleet
            .alarms
            .iter()
            .filter(|a| names.is_empty() || names.contains(&a.name))
            .map(|a| {
                let points = match self.metric_index(&a.namespace, &a.metric, &a.dimensions) {
                    Some(i) => self.series(
                        &s,
                        i,
                        &a.statistic,
                        a.period,
                        i64::from(a.period).saturating_mul(a.evaluation_periods.max(1)),
                    ),
                    None => Vec::new(),
                };
                let values: Vec<String> = points.iter().map(|p| p.value.to_string()).collect();
                let breaching = points
                    .iter()
                    .filter(|p| breaches(&a.comparison, p.value, a.threshold))
                    .count();
                let words = comparison_words(&a.comparison);
                let (state, reason) = if points.is_empty() {
                    (
                        "INSUFFICIENT_DATA",
                        "Insufficient Data: no datapoints were received".to_string(),
                    )
                } else if breaching == points.len() {
                    (
                        "ALARM",
                        format!(
                            "Threshold Crossed: {} datapoints [{}] were {words} the threshold ({}).",
                            points.len(),
                            values.join(", "),
                            a.threshold
                        ),
                    )
                } else {
                    (
                        "OK",
                        format!(
                            "Threshold Crossed: {} of {} datapoints [{}] were not {words} the threshold ({}).",
                            points.len().saturating_sub(breaching),
                            points.len(),
                            values.join(", "),
                            a.threshold
                        ),
                    )
                };
                Alarm {
                    name: a.name.clone(),
                    state: state.into(),
                    reason,
                    updated: now.clone(),
                    actions_enabled: !s.alarm_actions_disabled.contains(&a.name),
                    namespace: a.namespace.clone(),
                    metric: a.metric.clone(),
                    threshold: a.threshold,
                    comparison: a.comparison.clone(),
                }
            })
            .collect())
    }

    pub(crate) async fn set_alarm_actions(
        &self,
        names: &[String],
        enabled: bool,
    ) -> CloudResult<()> {
        let op = if enabled {
            "EnableAlarmActions"
        } else {
            "DisableAlarmActions"
        };
        self.enter(op, names).await?;
        let mut s = self.lock()?;
        // CloudWatch ignores names it does not know; so does the sim.
        for name in names {
            s.alarm_actions_disabled.retain(|n| n != name);
            if !enabled && self.fleet.alarms.iter().any(|a| &a.name == name) {
                s.alarm_actions_disabled.push(name.clone());
            }
        }
        self.mutated(&mut s, format!("{op} {}", names.join(",")));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::SimCloud;
    use super::super::fleet::DEFAULT_FLEET;
    use super::super::tests::block;
    use crate::services::cloud::{CommandRequest, MetricQuery, Tags};

    fn cpu() -> MetricQuery {
        MetricQuery {
            namespace: "AWS/EC2".into(),
            name: "CPUUtilization".into(),
            dimensions: Tags::from([("InstanceId".to_string(), "i-0a1b2c3d4e5f60005".to_string())]),
            stat: "Average".into(),
            period_seconds: 60,
            window_seconds: 600,
        }
    }

    #[test]
    fn a_metric_stays_at_its_level_until_the_call_that_remedies_it_and_its_alarm_clears() {
        let sim = SimCloud::from_toml(DEFAULT_FLEET).unwrap();
        let points = block(sim.metric_data(&cpu())).unwrap();
        assert_eq!(points.len(), 10, "one per minute of the window");
        assert!(points.iter().all(|p| p.value == 97.0), "{points:?}");
        let alarm = &block(sim.describe_alarms(&["worker-cpu-high".into()])).unwrap()[0];
        assert_eq!(alarm.state, "ALARM", "{alarm:?}");
        assert!(
            alarm.reason.contains("greater than the threshold (85)"),
            "{alarm:?}"
        );

        // A command that is not the remedy changes nothing; the restart does.
        let send = |text: &str| CommandRequest {
            instances: vec!["i-0a1b2c3d4e5f60005".into()],
            document: "AWS-RunShellScript".into(),
            parameters: [("commands".to_string(), vec![text.to_string()])].into(),
            max_concurrency: "1".into(),
            max_errors: "0".into(),
            timeout_seconds: 60,
            comment: String::new(),
        };
        block(sim.send_command(&send("uptime"))).unwrap();
        assert_eq!(
            block(sim.metric_data(&cpu()))
                .unwrap()
                .last()
                .unwrap()
                .value,
            97.0
        );
        block(sim.send_command(&send("systemctl restart ec2-manager-worker"))).unwrap();
        assert_eq!(
            block(sim.metric_data(&cpu()))
                .unwrap()
                .last()
                .unwrap()
                .value,
            12.0
        );
        let alarm = &block(sim.describe_alarms(&["worker-cpu-high".into()])).unwrap()[0];
        assert_eq!(alarm.state, "OK", "{alarm:?}");
    }

    #[test]
    fn a_run_sharing_the_sim_sees_a_metric_an_earlier_run_remedied_as_remedied_at_once() {
        // `serve` gives every run its own handle on one sim, each with a clock that starts at
        // zero when the run does. The restart happens 50 ms into the first run's clock; the
        // second run starts after it, so on its own clock the restart would lie 50 ms ahead and
        // its CPU would still read 97 (its alarm in ALARM) until then.
        let sim = SimCloud::from_toml(DEFAULT_FLEET).unwrap();
        let first = sim.share();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let restart = CommandRequest {
            instances: vec!["i-0a1b2c3d4e5f60005".into()],
            document: "AWS-RunShellScript".into(),
            parameters: [(
                "commands".to_string(),
                vec!["systemctl restart ec2-manager-worker".to_string()],
            )]
            .into(),
            max_concurrency: "1".into(),
            max_errors: "0".into(),
            timeout_seconds: 60,
            comment: String::new(),
        };
        block(first.send_command(&restart)).unwrap();
        let second = sim.share();
        let last = block(second.metric_data(&cpu())).unwrap();
        assert_eq!(last.last().unwrap().value, 12.0, "{last:?}");
        let alarm = &block(second.describe_alarms(&["worker-cpu-high".into()])).unwrap()[0];
        assert_eq!(alarm.state, "OK", "{alarm:?}");
    }

    #[test]
    fn disabled_alarm_actions_are_kept_and_enabled_again() {
        let sim = SimCloud::from_toml(DEFAULT_FLEET).unwrap();
        let names = vec!["worker-cpu-high".to_string()];
        block(sim.set_alarm_actions(&names, false)).unwrap();
        assert!(!block(sim.describe_alarms(&names)).unwrap()[0].actions_enabled);
        block(sim.set_alarm_actions(&names, true)).unwrap();
        assert!(block(sim.describe_alarms(&names)).unwrap()[0].actions_enabled);
    }
}
