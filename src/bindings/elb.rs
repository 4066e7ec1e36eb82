//! `elb::`: Elastic Load Balancing v2 target health, targets, and blue/green traffic shifts.
//!
//! A blue/green shift is one composite call (`elb::shift`) written here once on top of the
//! cloud's primitives: weighted forwarding on a listener moved in steps, the new colour's target
//! health watched for a gate after each step, and the listener's original forward action put
//! back when a gate fails. Target groups are named by name or ARN.

use std::time::Duration;

use rhai::plugin::*;
use rhai::{Array, Map};
use serde_json::{Value, json};

use super::args;
use super::ec2::{arg_error, on_cloud, planned_value, poll};
use crate::base::clock::Clock;
use crate::base::error::BindingError;
use crate::sandbox::recorder::{self, Binding, Effect, ScriptResult, unit_placeholder};
use crate::services::cloud::{Cloud, CloudResult, Listener, TargetGroup, WeightedTarget};

const DEFAULT_EVERY: Duration = Duration::from_secs(10);
const DEFAULT_GATE: Duration = Duration::from_secs(60);
const DEFAULT_STEPS: [i64; 3] = [10, 50, 100];

static LISTENER: Binding = Binding {
    name: "elb::listener",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static TARGET_HEALTH: Binding = Binding {
    name: "elb::target_health",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static WAIT_HEALTHY: Binding = Binding {
    name: "elb::wait_healthy",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static REGISTER: Binding = Binding {
    name: "elb::register",
    effect: Effect::Mutating,
    placeholder: unit_placeholder,
};
static DEREGISTER: Binding = Binding {
    name: "elb::deregister",
    effect: Effect::Mutating,
    placeholder: unit_placeholder,
};
static SET_WEIGHTS: Binding = Binding {
    name: "elb::set_weights",
    effect: Effect::Mutating,
    placeholder: weights_placeholder,
};
static SHIFT: Binding = Binding {
    name: "elb::shift",
    effect: Effect::Mutating,
    placeholder: shift_placeholder,
};

/// The listener as `elb::listener` returns it, with the weights asked for.
fn weights_placeholder(args: &Value) -> Dynamic {
    planned_value(json!({
        "arn": args["listener"],
        "weights": args["weights"],
        "planned": true,
    }))
}

/// What a shift that passed every gate returns.
fn shift_placeholder(args: &Value) -> Dynamic {
    let steps = args["steps"].as_array().cloned().unwrap_or_default();
    planned_value(json!({
        "listener": args["listener"],
        "to": args["to"],
        "from": args["from"],
        "steps": steps.iter().map(|p| json!({ "percent": p, "healthy": true })).collect::<Vec<_>>(),
        "rolled_back": false,
        "planned": true,
    }))
}

/// A target group named by name or by ARN.
async fn resolve_group(c: &Cloud, group: &str) -> CloudResult<TargetGroup> {
    let found = if group.starts_with("arn:") {
        c.describe_target_groups(&[], &[group.to_string()]).await?
    } else {
        c.describe_target_groups(&[group.to_string()], &[]).await?
    };
    found.into_iter().next().ok_or_else(|| {
        BindingError::new(
            "TargetGroupNotFound",
            format!("no target group named {group}"),
        )
    })
}

/// The listener as runbooks see it: its forward action with each group's name, and `weights`
/// (name -> weight).
async fn listener_view(c: &Cloud, arn: &str) -> CloudResult<Value> {
    let l = c.describe_listener(arn).await?;
    let arns: Vec<String> = l.forward.iter().map(|f| f.target_group.clone()).collect();
    let groups = if arns.is_empty() {
        Vec::new()
    } else {
        c.describe_target_groups(&[], &arns).await?
    };
    Ok(view_of(&l, &groups))
}

fn name_of<'a>(groups: &'a [TargetGroup], arn: &'a str) -> &'a str {
    groups
        .iter()
        .find(|g| g.arn == arn)
        .map_or(arn, |g| g.name.as_str())
}

fn view_of(l: &Listener, groups: &[TargetGroup]) -> Value {
    let forward: Vec<Value> = l
        .forward
        .iter()
        .map(|f| json!({ "target_group": f.target_group, "name": name_of(groups, &f.target_group), "weight": f.weight }))
        .collect();
    let weights: serde_json::Map<String, Value> = l
        .forward
        .iter()
        .map(|f| {
            (
                name_of(groups, &f.target_group).to_string(),
                json!(f.weight),
            )
        })
        .collect();
    json!({
        "arn": l.arn, "load_balancer": l.load_balancer, "port": l.port, "protocol": l.protocol,
        "forward": forward, "weights": weights,
    })
}

/// What is wrong with a group's targets for traffic: every registered target must be healthy,
/// and there must be at least one. None when all is well.
async fn unhealthy(c: &Cloud, group: &TargetGroup) -> CloudResult<Option<String>> {
    Ok(verdict(c, group).await?.err())
}

/// The group's targets when all of them are healthy (and there is one), else what is wrong.
async fn verdict(c: &Cloud, group: &TargetGroup) -> CloudResult<Result<Vec<String>, String>> {
    let health = c.target_health(&group.arn).await?;
    if health.is_empty() {
        return Ok(Err(format!("{} has no registered targets", group.name)));
    }
    let bad: Vec<String> = health
        .iter()
        .filter(|h| h.state != "healthy")
        .map(|h| {
            if h.reason.is_empty() {
                format!("{} is {}", h.id, h.state)
            } else {
                format!("{} is {} ({})", h.id, h.state, h.reason)
            }
        })
        .collect();
    if bad.is_empty() {
        Ok(Ok(health.into_iter().map(|h| h.id).collect()))
    } else {
        Ok(Err(format!("{}: {}", group.name, bad.join(", "))))
    }
}

/// Watches `group` for `gate`, asking every `every`: the first unhealthy answer ends the watch.
/// Passed: the group's targets (all healthy), which the shift's result names.
async fn gate_passes(
    clock: &Clock,
    c: &Cloud,
    group: &TargetGroup,
    gate: Duration,
    every: Duration,
) -> CloudResult<Result<Vec<String>, String>> {
    let started = clock.now();
    loop {
        let targets = match verdict(c, group).await? {
            Ok(t) => t,
            Err(why) => return Ok(Err(why)),
        };
        if started.elapsed() >= gate {
            return Ok(Ok(targets));
        }
        clock
            .sleep(every.min(gate.saturating_sub(started.elapsed())))
            .await;
    }
}

fn weights_text(targets: &[WeightedTarget], groups: &[TargetGroup]) -> String {
    targets
        .iter()
        .map(|t| format!("{}={}", name_of(groups, &t.target_group), t.weight))
        .collect::<Vec<_>>()
        .join(", ")
}

struct ShiftPlan {
    listener: String,
    to: String,
    from: Option<String>,
    steps: Vec<i64>,
    gate: Duration,
    every: Duration,
    rollback: bool,
}

fn shift_plan(listener: &str, options: &Map) -> Result<ShiftPlan, BindingError> {
    args::known(
        options,
        &["to", "from", "steps", "gate", "every", "rollback"],
    )?;
    let to = args::string(options, "to")?.ok_or_else(|| {
        BindingError::new(
            "bad_argument",
            "shift needs `to`: the target group (name or ARN) traffic moves to",
        )
    })?;
    let steps = match options.get("steps") {
        None => DEFAULT_STEPS.to_vec(),
        Some(v) => v
            .clone()
            .try_cast::<Array>()
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_int().ok())
                    .collect::<Option<Vec<i64>>>()
            })
            .ok_or_else(|| {
                BindingError::new("bad_argument", "`steps` must be an array of percentages")
            })?,
    };
    let rising = steps.windows(2).all(|w| w[0] < w[1]);
    if steps.is_empty() || !rising || steps.iter().any(|p| !(1..=100).contains(p)) {
        return Err(BindingError::new(
            "bad_argument",
            "`steps` must be rising percentages between 1 and 100, such as [10, 50, 100]",
        ));
    }
    Ok(ShiftPlan {
        listener: listener.to_string(),
        to,
        from: args::string(options, "from")?,
        steps,
        gate: args::duration(options, "gate", DEFAULT_GATE)?,
        every: args::duration(options, "every", DEFAULT_EVERY)?.max(Duration::from_millis(1)),
        rollback: args::boolean(options, "rollback", true)?,
    })
}

/// The shift itself: see `elb::shift`.
async fn shift(clock: &Clock, c: &Cloud, p: &ShiftPlan) -> CloudResult<Value> {
    let original = c.describe_listener(&p.listener).await?;
    let to = resolve_group(c, &p.to).await?;
    let from = match &p.from {
        Some(f) => resolve_group(c, f).await?,
        None => {
            let others: Vec<String> = original
                .forward
                .iter()
                .filter(|f| f.target_group != to.arn)
                .map(|f| f.target_group.clone())
                .collect();
            match others.as_slice() {
                [one] => resolve_group(c, one).await?,
                _ => {
                    return Err(BindingError::new(
                        "bad_argument",
                        format!(
                            "the listener forwards to {} other target group(s): say which one traffic leaves with `from`",
                            others.len()
                        ),
                    ));
                }
            }
        }
    };
    let groups = vec![from.clone(), to.clone()];
    // The gate before the first step: no traffic goes to a colour that is already failing.
    if let Some(why) = unhealthy(c, &to).await? {
        return Err(BindingError::new(
            "TargetsUnhealthy",
            format!("not shifting: {why}"),
        ));
    }
    let mut done = Vec::new();
    let mut healthy: Vec<String> = Vec::new();
    for &percent in &p.steps {
        let weights = [
            WeightedTarget {
                target_group: from.arn.clone(),
                weight: 100 - percent,
            },
            WeightedTarget {
                target_group: to.arn.clone(),
                weight: percent,
            },
        ];
        c.set_listener_forward(&p.listener, &weights).await?;
        match gate_passes(clock, c, &to, p.gate, p.every).await? {
            Ok(targets) => {
                done.push(json!({ "percent": percent, "healthy": true }));
                healthy = targets;
            }
            Err(why) => {
                if !p.rollback {
                    return Err(BindingError::new(
                        "ShiftGateFailed",
                        format!(
                            "at {percent}% to {}: {why}; weights left at {} (rollback: false)",
                            to.name,
                            weights_text(&weights, &groups)
                        ),
                    ));
                }
                c.set_listener_forward(&p.listener, &original.forward)
                    .await?;
                let all = c
                    .describe_target_groups(
                        &[],
                        &original
                            .forward
                            .iter()
                            .map(|f| f.target_group.clone())
                            .collect::<Vec<_>>(),
                    )
                    .await
                    .unwrap_or_default();
                return Err(BindingError::new(
                    "ShiftRolledBack",
                    format!(
                        "at {percent}% to {}: {why}; the listener's weights are back to {}",
                        to.name,
                        weights_text(&original.forward, &all)
                    ),
                ));
            }
        }
    }
    let mut view = listener_view(c, &p.listener).await?;
    view["listener"] = json!(p.listener);
    view["from"] = json!(from.name);
    view["to"] = json!(to.name);
    view["steps"] = json!(done);
    view["rolled_back"] = json!(false);
    // The new colour's targets as the last gate saw them, all healthy: what a drill captured
    // from this run registers in the group.
    view["targets"] = json!(healthy);
    Ok(view)
}

/// Elastic Load Balancing v2: target health, targets, and weighted blue/green shifts.
#[export_module]
pub mod elb_api {
    /// A listener and where its default action forwards: `#{ arn, load_balancer, port,
    /// protocol, forward: [#{ target_group, name, weight }], weights: #{ <group name>: weight } }`.
    /// Read-only.
    #[rhai_fn(return_raw)]
    pub(crate) fn listener(ctx: NativeCallContext, arn: &str) -> ScriptResult<Map> {
        let arn = arn.to_string();
        recorder::call(&ctx, &LISTENER, json!({ "listener": arn }), |host| {
            on_cloud(host, async |c: &Cloud| listener_view(c, &arn).await)
        })
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }

    /// The health of a target group's registered targets (by name or ARN): an array of
    /// `#{ id, port, state, reason, description }`, `state` being `healthy`, `unhealthy`,
    /// `initial`, `unused`, `draining` or `unavailable`. Read-only.
    #[rhai_fn(return_raw)]
    pub(crate) fn target_health(ctx: NativeCallContext, target_group: &str) -> ScriptResult<Array> {
        let group = target_group.to_string();
        recorder::call(&ctx, &TARGET_HEALTH, json!({ "group": group }), |host| {
            on_cloud(host, async |c: &Cloud| {
                let g = resolve_group(c, &group).await?;
                c.target_health(&g.arn).await
            })
        })
        .map(|d| d.into_array().unwrap_or_default())
    }

    /// Waits until every registered target of the group is `healthy` (and there is at least
    /// one). Options: `timeout` (default: the step's deadline), `every` (default `"10s"`). Fails
    /// with `WaiterTimeout` naming the targets that are not. Returns their health. Read-only.
    #[rhai_fn(return_raw)]
    pub(crate) fn wait_healthy(
        ctx: NativeCallContext,
        target_group: &str,
        options: Map,
    ) -> ScriptResult<Array> {
        let (timeout, every) =
            args::wait_options(&options, DEFAULT_EVERY).map_err(|e| arg_error(&ctx, e))?;
        let group = target_group.to_string();
        recorder::call(
            &ctx,
            &WAIT_HEALTHY,
            json!({ "group": group, "timeout": args::wait_timeout_recorded(timeout) }),
            |host| {
                let clock = host.interrupt.clock();
                let limit = crate::bindings::wait_limit(host, timeout);
                on_cloud(host, async |c: &Cloud| {
                    let g = resolve_group(c, &group).await?;
                    poll(clock, &limit, every, "targets not healthy", async || {
                        let health = c.target_health(&g.arn).await?;
                        Ok(match unhealthy(c, &g).await? {
                            None => Ok(health),
                            Some(why) => Err(vec![why]),
                        })
                    })
                    .await
                })
            },
        )
        .map(|d| d.into_array().unwrap_or_default())
    }

    /// Registers instances (ids, or instances from `ec2::find`) with a target group. Mutating.
    #[rhai_fn(return_raw)]
    pub(crate) fn register(
        ctx: NativeCallContext,
        target_group: &str,
        ids: Dynamic,
    ) -> ScriptResult<()> {
        targets(&ctx, &REGISTER, target_group, ids, true)
    }

    /// Deregisters instances from a target group (the load balancer drains them). Mutating.
    #[rhai_fn(return_raw)]
    pub(crate) fn deregister(
        ctx: NativeCallContext,
        target_group: &str,
        ids: Dynamic,
    ) -> ScriptResult<()> {
        targets(&ctx, &DEREGISTER, target_group, ids, false)
    }

    /// Sets the listener's default action to forward to target groups with weights:
    /// `weights` maps a group's name (or ARN) to its weight (0 to 999; relative, so
    /// `#{ "api-blue": 90, "api-green": 10 }` sends 10% to green). Returns the listener as
    /// `elb::listener` does. Mutating. In a plan: `#{ arn, weights, planned: true }`.
    #[rhai_fn(return_raw)]
    pub(crate) fn set_weights(
        ctx: NativeCallContext,
        listener: &str,
        weights: Map,
    ) -> ScriptResult<Map> {
        let mut wanted: Vec<(String, i64)> = Vec::new();
        for (k, v) in &weights {
            let w = v.as_int().map_err(|t| {
                arg_error(
                    &ctx,
                    BindingError::new(
                        "bad_argument",
                        format!("weight of {k} must be an int, not {t}"),
                    ),
                )
            })?;
            wanted.push((k.to_string(), w));
        }
        if wanted.is_empty() {
            return Err(arg_error(
                &ctx,
                BindingError::new(
                    "bad_argument",
                    "weights must name at least one target group",
                ),
            ));
        }
        let arn = listener.to_string();
        let shown: serde_json::Map<String, Value> =
            wanted.iter().map(|(k, w)| (k.clone(), json!(w))).collect();
        let recorded = json!({ "listener": arn, "weights": shown });
        recorder::call(&ctx, &SET_WEIGHTS, recorded, |host| {
            on_cloud(host, async |c: &Cloud| {
                let mut targets = Vec::new();
                for (group, weight) in &wanted {
                    targets.push(WeightedTarget {
                        target_group: resolve_group(c, group).await?.arn,
                        weight: *weight,
                    });
                }
                c.set_listener_forward(&arn, &targets).await?;
                listener_view(c, &arn).await
            })
        })
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }

    /// Shifts a listener's traffic to another target group in steps (blue/green), with a health
    /// gate after each step, and shifts it back when a gate fails. Options: `to` (required: the
    /// group traffic moves to), `from` (default: the one other group the listener forwards to),
    /// `steps` (rising percentages for `to`, default `[10, 50, 100]`), `gate` (how long `to`'s
    /// targets must stay healthy after each step, default `"1m"`), `every` (how often they are
    /// asked, default `"10s"`), `rollback` (default true). Before the first step every target of
    /// `to` must be healthy (else `TargetsUnhealthy`, nothing changed). When a gate fails the
    /// listener's original forward action is put back and the call fails with `ShiftRolledBack`
    /// (`ShiftGateFailed` with `rollback: false`, weights left as they were). Returns the
    /// listener (see `elb::listener`) with `from`, `to`, `steps: [#{ percent, healthy }]`,
    /// `targets` (`to`'s targets, healthy at the last gate) and `rolled_back: false`. The step's timeout must cover every gate. Mutating. In a plan:
    /// `#{ listener, from, to, steps, rolled_back: false, planned: true }`.
    #[rhai_fn(return_raw)]
    pub(crate) fn shift(ctx: NativeCallContext, listener: &str, options: Map) -> ScriptResult<Map> {
        let plan = shift_plan(listener, &options).map_err(|e| arg_error(&ctx, e))?;
        let recorded = json!({
            "listener": plan.listener, "to": plan.to, "from": plan.from, "steps": plan.steps,
            "gate": humantime::format_duration(plan.gate).to_string(),
            "every": humantime::format_duration(plan.every).to_string(), "rollback": plan.rollback,
        });
        recorder::call(&ctx, &SHIFT, recorded, |host| {
            let clock = host.interrupt.clock();
            on_cloud(host, async |c: &Cloud| super::shift(clock, c, &plan).await)
        })
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }
}

fn targets(
    ctx: &NativeCallContext,
    spec: &'static Binding,
    target_group: &str,
    ids: Dynamic,
    register: bool,
) -> ScriptResult<()> {
    let ids = args::ids(&ids, "ids").map_err(|e| arg_error(ctx, e))?;
    let group = target_group.to_string();
    recorder::call(
        ctx,
        spec,
        json!({ "target_group": group, "ids": ids }),
        |host| {
            on_cloud(host, async |c: &Cloud| {
                let g = resolve_group(c, &group).await?;
                if register {
                    c.register_targets(&g.arn, &ids).await
                } else {
                    c.deregister_targets(&g.arn, &ids).await
                }
            })
        },
    )
    .map(|_| ())
}
