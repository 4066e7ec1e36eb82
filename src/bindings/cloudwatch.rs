//! `cloudwatch::`: the metric evidence behind an alert, alarm state, waiting for an alarm to
//! clear, and muting an alarm's actions during maintenance.

use std::time::Duration;

use rhai::plugin::*;
use rhai::{Array, Map};
use serde_json::{Value, json};

use super::args;
use super::ec2::{arg_error, on_cloud, poll};
use crate::base::error::BindingError;
use crate::sandbox::recorder::{self, Binding, Effect, ScriptResult, unit_placeholder};
use crate::services::cloud::{Alarm, Cloud, CloudResult, Datapoint, MetricQuery};

const DEFAULT_EVERY: Duration = Duration::from_secs(30);

static METRIC: Binding = Binding {
    name: "cloudwatch::metric",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static ALARM: Binding = Binding {
    name: "cloudwatch::alarm",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
// A plan never sends the writes an alarm would clear after: it answers `OK` without waiting.
static WAIT_OK: Binding = Binding {
    name: "cloudwatch::wait_alarm_ok",
    effect: Effect::Wait,
    placeholder: ok_placeholder,
};
static DISABLE: Binding = Binding {
    name: "cloudwatch::disable_actions",
    effect: Effect::Mutating,
    placeholder: unit_placeholder,
};
static ENABLE: Binding = Binding {
    name: "cloudwatch::enable_actions",
    effect: Effect::Mutating,
    placeholder: unit_placeholder,
};

/// The alarm as a wait that succeeded would return it.
fn ok_placeholder(args: &Value) -> Dynamic {
    super::ec2::planned_value(json!({
        "name": args["alarm"], "state": "OK", "reason": "planned", "planned": true,
    }))
}

fn query_of(spec: &Map) -> Result<MetricQuery, BindingError> {
    args::known(
        spec,
        &[
            "namespace",
            "name",
            "dimensions",
            "stat",
            "period",
            "window",
        ],
    )?;
    let need = |key: &str| -> Result<String, BindingError> {
        args::string(spec, key)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| BindingError::new("bad_argument", format!("metric needs `{key}`")))
    };
    let period = args::duration(spec, "period", Duration::from_secs(60))?;
    let window = args::duration(spec, "window", Duration::from_secs(600))?;
    if period.as_secs() == 0 || window < period {
        return Err(BindingError::new(
            "bad_argument",
            "`period` must be at least 1s and `window` at least one period",
        ));
    }
    Ok(MetricQuery {
        namespace: need("namespace")?,
        name: need("name")?,
        dimensions: args::tags(spec.get("dimensions"))?,
        stat: args::string(spec, "stat")?.unwrap_or_else(|| "Average".into()),
        period_seconds: i32::try_from(period.as_secs()).unwrap_or(i32::MAX),
        window_seconds: i64::try_from(window.as_secs()).unwrap_or(i64::MAX),
    })
}

/// The datapoints with the figures a runbook decides on.
fn summary(q: &MetricQuery, points: &[Datapoint]) -> Value {
    let values: Vec<f64> = points.iter().map(|p| p.value).collect();
    let (max, min, average, latest) = if values.is_empty() {
        (Value::Null, Value::Null, Value::Null, Value::Null)
    } else {
        let max = values.iter().copied().fold(f64::MIN, f64::max);
        let min = values.iter().copied().fold(f64::MAX, f64::min);
        let avg = values.iter().sum::<f64>() / values.len() as f64;
        (
            json!(max),
            json!(min),
            json!((avg * 1000.0).round() / 1000.0),
            json!(values.last()),
        )
    };
    json!({
        "namespace": q.namespace, "name": q.name, "dimensions": q.dimensions, "stat": q.stat,
        "period": q.period_seconds, "points": points, "count": points.len(),
        "latest": latest, "max": max, "min": min, "average": average,
    })
}

async fn one_alarm(c: &Cloud, name: &str) -> CloudResult<Alarm> {
    c.describe_alarms(&[name.to_string()])
        .await?
        .into_iter()
        .find(|a| a.name == name)
        .ok_or_else(|| BindingError::new("AlarmNotFound", format!("no alarm named {name}")))
}

fn names_of(ctx: &NativeCallContext, names: &Dynamic) -> ScriptResult<Vec<String>> {
    let list = if names.is_string() {
        vec![names.to_string()]
    } else {
        names
            .clone()
            .try_cast::<Array>()
            .and_then(|a| {
                a.into_iter()
                    .map(|x| x.into_string().ok())
                    .collect::<Option<Vec<_>>>()
            })
            .unwrap_or_default()
    };
    if list.is_empty() || list.iter().any(String::is_empty) {
        return Err(arg_error(
            ctx,
            BindingError::new("bad_argument", "alarms must be a name or an array of names"),
        ));
    }
    Ok(list)
}

fn actions(
    ctx: &NativeCallContext,
    spec: &'static Binding,
    names: Dynamic,
    enabled: bool,
) -> ScriptResult<()> {
    let names = names_of(ctx, &names)?;
    recorder::call(ctx, spec, json!({ "alarms": names }), |host| {
        on_cloud(host, async |c: &Cloud| {
            c.set_alarm_actions(&names, enabled).await
        })
    })
    .map(|_| ())
}

/// CloudWatch: metrics, alarm state, and alarm actions.
#[export_module]
pub mod cloudwatch_api {
    /// A metric's statistic over a window ending now (GetMetricData). `spec`: `namespace`
    /// (`"AWS/EC2"`), `name` (`"CPUUtilization"`), `dimensions` (`#{ InstanceId: "i-..." }`),
    /// `stat` (default `"Average"`; `Maximum`, `Minimum`, `Sum`, `SampleCount`, `p95`, ...),
    /// `period` (default `"1m"`), `window` (default `"10m"`). Returns `#{ namespace, name,
    /// dimensions, stat, period, points: [#{ timestamp, value }] (oldest first), count, latest,
    /// max, min, average }`; the figures are `()` when there are no datapoints. Read-only.
    #[rhai_fn(return_raw)]
    pub(crate) fn metric(ctx: NativeCallContext, spec: Map) -> ScriptResult<Map> {
        let q = query_of(&spec).map_err(|e| arg_error(&ctx, e))?;
        let recorded = serde_json::to_value(&q).unwrap_or_default();
        recorder::call(&ctx, &METRIC, recorded, |host| {
            on_cloud(host, async |c: &Cloud| {
                let points = c.metric_data(&q).await?;
                Ok(summary(&q, &points))
            })
        })
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }

    /// An alarm: `#{ name, state, reason, updated, actions_enabled, namespace, metric,
    /// threshold, comparison }`, `state` being `OK`, `ALARM` or `INSUFFICIENT_DATA`. Fails with
    /// `AlarmNotFound` when there is none of that name. Read-only.
    #[rhai_fn(return_raw)]
    pub(crate) fn alarm(ctx: NativeCallContext, name: &str) -> ScriptResult<Map> {
        let name = name.to_string();
        recorder::call(&ctx, &ALARM, json!({ "alarm": name }), |host| {
            on_cloud(host, async |c: &Cloud| one_alarm(c, &name).await)
        })
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }

    /// Waits until the alarm is `OK`. Options: `timeout` (default: the step's deadline),
    /// `every` (default `"30s"`). Returns the alarm (see `alarm`); fails with `WaiterTimeout`
    /// (its state and reason in the message) when its own `timeout` runs out. Read-only; a plan
    /// does not wait (the writes the alarm would clear after were never sent): it answers
    /// `#{ name, state: "OK", reason: "planned", planned: true }`.
    #[rhai_fn(return_raw)]
    pub(crate) fn wait_alarm_ok(
        ctx: NativeCallContext,
        name: &str,
        options: Map,
    ) -> ScriptResult<Map> {
        let (timeout, every) =
            args::wait_options(&options, DEFAULT_EVERY).map_err(|e| arg_error(&ctx, e))?;
        let name = name.to_string();
        recorder::call(
            &ctx,
            &WAIT_OK,
            json!({ "alarm": name, "timeout": args::wait_timeout_recorded(timeout) }),
            |host| {
                let clock = host.interrupt.clock();
                let limit = crate::bindings::wait_limit(host, timeout);
                on_cloud(host, async |c: &Cloud| {
                    poll(clock, &limit, every, "alarm not OK", async || {
                        let a = one_alarm(c, &name).await?;
                        Ok(if a.state == "OK" {
                            Ok(a)
                        } else {
                            Err(vec![format!("{} is {}: {}", a.name, a.state, a.reason)])
                        })
                    })
                    .await
                })
            },
        )
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }

    /// Stops alarms (a name or an array of names) from acting (notifications, Auto Scaling,
    /// EC2 actions) while their state still changes: for planned maintenance. Mutating.
    #[rhai_fn(return_raw)]
    pub(crate) fn disable_actions(ctx: NativeCallContext, alarms: Dynamic) -> ScriptResult<()> {
        actions(&ctx, &DISABLE, alarms, false)
    }

    /// Lets alarms act again (undoes `disable_actions`). Mutating.
    #[rhai_fn(return_raw)]
    pub(crate) fn enable_actions(ctx: NativeCallContext, alarms: Dynamic) -> ScriptResult<()> {
        actions(&ctx, &ENABLE, alarms, true)
    }
}
