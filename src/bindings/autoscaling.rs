//! `autoscaling::`: read a group, set its desired capacity within its limits, suspend and
//! resume its processes, and refresh its instances.

use std::time::Duration;

use rhai::plugin::*;
use rhai::{Array, Map};
use serde_json::{Value, json};

use super::args;
use super::ec2::{arg_error, on_cloud, planned_value, poll};
use crate::base::error::BindingError;
use crate::sandbox::engine::Host;
use crate::sandbox::recorder::{self, Binding, Effect, ScriptResult, unit_placeholder};
use crate::services::cloud::{Cloud, CloudResult, ScalingGroup};

const DEFAULT_EVERY: Duration = Duration::from_secs(15);

static GROUP: Binding = Binding {
    name: "autoscaling::group",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static SET_DESIRED: Binding = Binding {
    name: "autoscaling::set_desired",
    effect: Effect::Mutating,
    placeholder: desired_placeholder,
};
static SUSPEND: Binding = Binding {
    name: "autoscaling::suspend",
    effect: Effect::Mutating,
    placeholder: unit_placeholder,
};
static RESUME: Binding = Binding {
    name: "autoscaling::resume",
    effect: Effect::Mutating,
    placeholder: unit_placeholder,
};
static REFRESH: Binding = Binding {
    name: "autoscaling::refresh",
    effect: Effect::Mutating,
    placeholder: refresh_placeholder,
};

/// The group as it would be: its real limits (looked up read-only) and the desired capacity.
fn desired_placeholder(args: &Value) -> Dynamic {
    let mut group = args["resolved"].clone();
    if group.is_object() {
        group["desired"] = args["desired"].clone();
        group["planned"] = json!(true);
    }
    planned_value(group)
}

fn refresh_placeholder(_: &Value) -> Dynamic {
    planned_value(json!({
        "id": "refresh-planned", "status": "planned", "percent_complete": 0, "reason": "",
    }))
}

async fn one_group(c: &Cloud, name: &str) -> CloudResult<ScalingGroup> {
    c.describe_scaling_groups(&[name.to_string()])
        .await?
        .into_iter()
        .find(|g| g.name == name)
        .ok_or_else(|| {
            BindingError::new(
                "ValidationError",
                format!("no Auto Scaling group named {name}"),
            )
        })
}

fn in_service(g: &ScalingGroup) -> i64 {
    let n = g
        .instances
        .iter()
        .filter(|i| i.lifecycle_state == "InService")
        .count();
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn processes(
    ctx: &NativeCallContext,
    spec: &'static Binding,
    name: &str,
    list: Array,
    suspend: bool,
) -> ScriptResult<()> {
    let list: Vec<String> = list.iter().map(|p| p.to_string()).collect();
    let name = name.to_string();
    recorder::call(
        ctx,
        spec,
        json!({ "auto_scaling_group": name, "processes": list }),
        |host| {
            on_cloud(host, async |c: &Cloud| {
                c.set_processes(&name, &list, suspend).await
            })
        },
    )
    .map(|_| ())
}

/// Auto Scaling groups: capacity, processes, instance refresh.
#[export_module]
pub mod autoscaling_api {
    /// An Auto Scaling group: `#{ name, min, max, desired, instances: [#{ id, lifecycle_state,
    /// health_status }], suspended }`. Read-only.
    #[rhai_fn(return_raw)]
    pub(crate) fn group(ctx: NativeCallContext, name: &str) -> ScriptResult<Map> {
        let name = name.to_string();
        recorder::call(&ctx, &GROUP, json!({ "group": name }), |host| {
            on_cloud(host, async |c: &Cloud| one_group(c, &name).await)
        })
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }

    /// Sets a group's desired capacity. The group's limits are read first and a capacity outside
    /// `min..=max` is refused (`OutOfLimits`) before anything is sent, in a plan too. Options:
    /// `wait` (default true: until that many instances are `InService`), `timeout` (default: the
    /// step's deadline), `every` (default `"15s"`). Returns the group (see `group`). Mutating.
    /// In a plan: the group as read, with the new `desired` and `planned: true`.
    #[rhai_fn(return_raw)]
    pub(crate) fn set_desired(
        ctx: NativeCallContext,
        name: &str,
        desired: i64,
        options: Map,
    ) -> ScriptResult<Map> {
        let parsed = (|| -> Result<_, BindingError> {
            args::known(&options, &["wait", "timeout", "every"])?;
            Ok((
                args::boolean(&options, "wait", true)?,
                args::wait_timeout(&options, "timeout")?,
                args::duration(&options, "every", DEFAULT_EVERY)?,
            ))
        })();
        let (wait, timeout, every) = parsed.map_err(|e| arg_error(&ctx, e))?;
        let name = name.to_string();
        let lookup = |host: &Host| -> Result<Value, BindingError> {
            let cloud = host.cloud.get(&host.io)?;
            let g = host.io.block_on(&host.interrupt, one_group(cloud, &name))?;
            if !(g.min..=g.max).contains(&desired) {
                return Err(BindingError::new(
                    "OutOfLimits",
                    format!(
                        "{name} takes {} to {} instances; {desired} is outside its limits",
                        g.min, g.max
                    ),
                ));
            }
            serde_json::to_value(&g)
                .map_err(|e| BindingError::new("internal", format!("cannot record a group: {e}")))
        };
        let recorded = json!({ "auto_scaling_group": name, "desired": desired, "wait": wait });
        recorder::call_resolved(
            &ctx,
            &SET_DESIRED,
            recorded,
            recorder::Resolve::Always(&lookup),
            |host, _| {
                let clock = host.interrupt.clock();
                let limit = wait.then(|| crate::bindings::wait_limit(host, timeout));
                on_cloud(host, async |c: &Cloud| {
                    c.set_desired_capacity(&name, desired).await?;
                    let Some(limit) = &limit else {
                        return one_group(c, &name).await;
                    };
                    poll(clock, limit, every, "instances not InService", async || {
                        let g = one_group(c, &name).await?;
                        let n = in_service(&g);
                        Ok(if n == desired {
                            Ok(g)
                        } else {
                            Err(vec![format!("{n} of {desired} InService")])
                        })
                    })
                    .await
                })
            },
        )
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }

    /// Suspends scaling processes of a group (`["Launch", "Terminate", "AlarmNotification", ...]`;
    /// an empty array suspends them all). Mutating.
    #[rhai_fn(return_raw)]
    pub(crate) fn suspend(
        ctx: NativeCallContext,
        name: &str,
        processes: Array,
    ) -> ScriptResult<()> {
        super::processes(&ctx, &SUSPEND, name, processes, true)
    }

    /// Resumes scaling processes (an empty array resumes them all). Mutating.
    #[rhai_fn(return_raw)]
    pub(crate) fn resume(ctx: NativeCallContext, name: &str, processes: Array) -> ScriptResult<()> {
        super::processes(&ctx, &RESUME, name, processes, false)
    }

    /// Starts an instance refresh (replacing the group's instances in batches) and, with `wait`
    /// (default true), waits until it ends. Options: `min_healthy` (percent of the group kept in
    /// service, default 90), `wait`, `timeout` (default: the step's deadline), `every` (default
    /// `"15s"`). Returns `#{ id, status, percent_complete, reason }`; a refresh that ends other
    /// than `Successful` fails the call with `RefreshFailed`. Mutating. In a plan: `#{ id:
    /// "refresh-planned", status: "planned", ... }`.
    #[rhai_fn(return_raw)]
    pub(crate) fn refresh(ctx: NativeCallContext, name: &str, options: Map) -> ScriptResult<Map> {
        let parsed = (|| -> Result<_, BindingError> {
            args::known(&options, &["min_healthy", "wait", "timeout", "every"])?;
            Ok((
                args::int(&options, "min_healthy", 90)?,
                args::boolean(&options, "wait", true)?,
                args::wait_timeout(&options, "timeout")?,
                args::duration(&options, "every", DEFAULT_EVERY)?,
            ))
        })();
        let (min_healthy, wait, timeout, every) = parsed.map_err(|e| arg_error(&ctx, e))?;
        if !(0..=100).contains(&min_healthy) {
            return Err(arg_error(
                &ctx,
                BindingError::new("bad_argument", "`min_healthy` is a percentage (0 to 100)"),
            ));
        }
        let name = name.to_string();
        let recorded =
            json!({ "auto_scaling_group": name, "min_healthy": min_healthy, "wait": wait });
        recorder::call(&ctx, &REFRESH, recorded, |host| {
            let clock = host.interrupt.clock();
            let limit = wait.then(|| crate::bindings::wait_limit(host, timeout));
            on_cloud(host, async |c: &Cloud| {
                let id = c.start_instance_refresh(&name, min_healthy).await?;
                let Some(limit) = &limit else {
                    return c.describe_instance_refresh(&name, &id).await;
                };
                let done = poll(
                    clock,
                    limit,
                    every,
                    "instance refresh not finished",
                    async || {
                        let r = c.describe_instance_refresh(&name, &id).await?;
                        Ok(if r.is_terminal() {
                            Ok(r)
                        } else {
                            Err(vec![format!(
                                "{} {}% ({})",
                                r.id, r.percent_complete, r.status
                            )])
                        })
                    },
                )
                .await?;
                if done.status != "Successful" {
                    return Err(BindingError::new(
                        "RefreshFailed",
                        format!(
                            "instance refresh {} of {name} ended {} at {}%: {}",
                            done.id, done.status, done.percent_complete, done.reason
                        ),
                    ));
                }
                Ok(done)
            })
        })
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }
}
