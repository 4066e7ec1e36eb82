//! `ec2::`: find, tag, isolate, snapshot, stop/start/reboot/terminate, image and launch instances.
//!
//! Composite operations (isolate, waits, fan-out) are written here once, on top of the cloud's
//! primitive calls, so the sim and AWS backends run exactly the same logic.

use std::time::Duration;

use futures_util::StreamExt;
use rhai::plugin::*;
use rhai::{Array, Map};
use serde_json::{Value, json};

use super::args;
use crate::base::clock::{Clock, WaitLimit};
use crate::base::error::BindingError;
use crate::sandbox::engine::Host;
use crate::sandbox::recorder::{self, Binding, Effect, ScriptResult, unit_placeholder};
use crate::services::cloud::{
    Cloud, CloudResult, Filter, Instance, InstanceStatus, LaunchSpec, StateAction, Tags,
};
use crate::services::cloud::{SnapshotFilter, Volume};

const DEFAULT_EVERY: Duration = Duration::from_secs(5);
/// The name of the security group `isolate` creates (or reuses) in the instance's VPC.
pub(crate) const QUARANTINE_GROUP: &str = "runbook-quarantine";

static FIND: Binding = Binding {
    name: "ec2::find",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static DESCRIBE: Binding = Binding {
    name: "ec2::describe",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static STATUS: Binding = Binding {
    name: "ec2::status",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static WAIT_STATUS_OK: Binding = Binding {
    name: "ec2::wait_status_ok",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static BY_COLOR: Binding = Binding {
    name: "ec2::by_color",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static WAIT_STATE: Binding = Binding {
    name: "ec2::wait_state",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static TAG: Binding = Binding {
    name: "ec2::tag",
    effect: Effect::Mutating,
    placeholder: unit_placeholder,
};
static UNTAG: Binding = Binding {
    name: "ec2::untag",
    effect: Effect::Mutating,
    placeholder: unit_placeholder,
};
static ISOLATE: Binding = Binding {
    name: "ec2::isolate",
    effect: Effect::Mutating,
    placeholder: isolate_placeholder,
};
static RESTORE: Binding = Binding {
    name: "ec2::restore",
    effect: Effect::Mutating,
    placeholder: unit_placeholder,
};
static SNAPSHOT: Binding = Binding {
    name: "ec2::snapshot_volumes",
    effect: Effect::Mutating,
    placeholder: snapshot_placeholder,
};
static STOP: Binding = Binding {
    name: "ec2::stop",
    effect: Effect::Mutating,
    placeholder: state_placeholder,
};
static START: Binding = Binding {
    name: "ec2::start",
    effect: Effect::Mutating,
    placeholder: state_placeholder,
};
static REBOOT: Binding = Binding {
    name: "ec2::reboot",
    effect: Effect::Mutating,
    placeholder: state_placeholder,
};
static TERMINATE: Binding = Binding {
    name: "ec2::terminate",
    effect: Effect::Mutating,
    placeholder: state_placeholder,
};
static CREATE_IMAGE: Binding = Binding {
    name: "ec2::create_image",
    effect: Effect::Mutating,
    placeholder: image_placeholder,
};
static LAUNCH: Binding = Binding {
    name: "ec2::launch",
    effect: Effect::Mutating,
    placeholder: launch_placeholder,
};

pub(crate) fn planned_value(value: Value) -> Dynamic {
    rhai::serde::to_dynamic(value).unwrap_or_default()
}

/// One `#{ volume, snapshot, state }` per volume of the instance (looked up read-only in plans).
fn snapshot_placeholder(args: &Value) -> Dynamic {
    let volumes = args["resolved"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    planned_value(Value::Array(
        volumes
            .iter()
            .map(|v| json!({ "volume": v, "snapshot": "snap-planned", "state": "planned" }))
            .collect(),
    ))
}

fn isolate_placeholder(args: &Value) -> Dynamic {
    let resolved = &args["resolved"];
    planned_value(json!({
        "instance": args["id"],
        "vpc": resolved["vpc"].as_str().unwrap_or("vpc-planned"),
        "quarantine_group": "sg-planned",
        "created": false,
        "previous_groups": resolved.get("previous_groups").cloned().unwrap_or(json!({})),
        "planned": true,
    }))
}

fn state_placeholder(args: &Value) -> Dynamic {
    let ids = args["ids"].as_array().cloned().unwrap_or_default();
    planned_value(Value::Array(
        ids.iter()
            .map(|id| json!({ "id": id, "previous_state": "planned", "state": "planned" }))
            .collect(),
    ))
}

fn image_placeholder(_: &Value) -> Dynamic {
    "ami-planned".into()
}

/// `count` instances with every field `find` returns, ids `i-planned00000000`, ...
fn launch_placeholder(args: &Value) -> Dynamic {
    let spec = &args["spec"];
    let n = spec["count"].as_i64().unwrap_or(1).clamp(1, 100);
    planned_value(Value::Array(
        (0..n)
            .map(|k| {
                json!({
                    "id": format!("i-planned{k:08}"),
                    "state": "planned",
                    "type": spec["instance_type"].as_str().unwrap_or("planned"),
                    "image": spec["image"].as_str().unwrap_or("ami-planned"),
                    "vpc": "vpc-planned",
                    "subnet": spec["subnet"].as_str().unwrap_or("subnet-planned"),
                    "private_ip": "",
                    "security_groups": spec["security_groups"].as_array().cloned().unwrap_or_default(),
                    "network_interfaces": [],
                    "volumes": [],
                    "tags": spec["tags"].as_object().cloned().unwrap_or_default(),
                    "launch_time": "",
                })
            })
            .collect(),
    ))
}

/// Runs `f` against the environment's cloud, interruptibly, and converts its result.
pub(crate) fn on_cloud<T: serde::Serialize>(
    host: &Host,
    f: impl AsyncFnOnce(&Cloud) -> CloudResult<T>,
) -> Result<Dynamic, BindingError> {
    let cloud = host.cloud.get(&host.io)?;
    let value = host.io.block_on(&host.interrupt, f(cloud))?;
    args::to_dynamic(&value)
}

pub(crate) fn arg_error(ctx: &NativeCallContext, e: BindingError) -> Box<EvalAltResult> {
    recorder::runtime_error(&e.code, &e.message, ctx.call_position())
}

/// One instance, or `InvalidInstanceID.NotFound` (as AWS words it) when it does not exist.
pub(crate) async fn describe_one(c: &Cloud, id: &str) -> CloudResult<Instance> {
    let filter = Filter {
        ids: vec![id.to_string()],
        ..Filter::default()
    };
    c.describe_instances(&filter)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            BindingError::new(
                "InvalidInstanceID.NotFound",
                format!("The instance ID '{id}' does not exist"),
            )
        })
}

/// The one waiter: asks `probe` every `every` until it answers `Ok` (done) or `limit` passes.
/// Its own `timeout` running out fails with `WaiterTimeout` naming what is still pending
/// (`Err(pending)` from the probe); the step's deadline running out ends the step `timed_out`
/// (see [`super::wait_ran_out`]). Sleeping happens on the runtime, so a step timeout or Ctrl-C
/// ends the wait at once. Waits on the run's clock: in a drill or a plan the time between probes
/// is simulated.
pub(crate) async fn poll<T>(
    clock: &Clock,
    limit: &WaitLimit,
    every: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> CloudResult<Result<T, Vec<String>>>,
) -> CloudResult<T> {
    let started = clock.now();
    loop {
        match probe().await? {
            Ok(done) => return Ok(done),
            Err(pending) => match limit.next_poll(started.elapsed(), every) {
                Some(pause) => clock.sleep(pause).await,
                None => {
                    return Err(crate::bindings::wait_ran_out(
                        clock,
                        limit,
                        what,
                        &pending.join(", "),
                    )
                    .await);
                }
            },
        }
    }
}

/// Polls until every instance is in `state`, or fails with `WaiterTimeout` naming the laggards.
pub(crate) async fn wait_for_state(
    clock: &Clock,
    cloud: &Cloud,
    ids: &[String],
    state: &str,
    limit: &WaitLimit,
    every: Duration,
) -> CloudResult<Vec<Instance>> {
    let filter = Filter {
        ids: ids.to_vec(),
        ..Filter::default()
    };
    poll(
        clock,
        limit,
        every,
        &format!("still not {state}"),
        async || {
            let found = cloud.describe_instances(&filter).await?;
            let waiting: Vec<String> = found
                .iter()
                .filter(|i| i.state != state)
                .map(|i| format!("{} is {}", i.id, i.state))
                .collect();
            Ok(if waiting.is_empty() {
                Ok(found)
            } else {
                Err(waiting)
            })
        },
    )
    .await
}

/// Polls until both status checks of every instance report `ok`.
pub(crate) async fn wait_status_ok(
    clock: &Clock,
    cloud: &Cloud,
    ids: &[String],
    limit: &WaitLimit,
    every: Duration,
) -> CloudResult<Vec<InstanceStatus>> {
    poll(clock, limit, every, "status checks not ok", async || {
        let statuses = cloud.instance_status(ids).await?;
        let bad: Vec<String> = ids
            .iter()
            .filter(|id| {
                !statuses
                    .iter()
                    .any(|s| &s.id == *id && s.system_status == "ok" && s.instance_status == "ok")
            })
            .map(|id| match statuses.iter().find(|s| &s.id == id) {
                Some(s) => format!(
                    "{id} (system {}, instance {})",
                    s.system_status, s.instance_status
                ),
                None => format!("{id} (no status yet)"),
            })
            .collect();
        Ok(if bad.is_empty() {
            Ok(statuses)
        } else {
            Err(bad)
        })
    })
    .await
}

fn filter_from(spec: &Map) -> Result<Filter, BindingError> {
    args::known(spec, &["ids", "tags", "states"])?;
    Ok(Filter {
        ids: args::strings(spec, "ids")?,
        tags: args::tags(spec.get("tags"))?,
        states: args::strings(spec, "states")?,
    })
}

fn change_state(
    ctx: &NativeCallContext,
    spec: &'static Binding,
    ids: Dynamic,
    opts: Map,
    action: fn(bool) -> StateAction,
) -> ScriptResult<Array> {
    let ids = args::ids(&ids, "ids").map_err(|e| arg_error(ctx, e))?;
    let parsed = (|| -> Result<_, BindingError> {
        args::known(&opts, &["wait", "timeout", "every", "force"])?;
        Ok((
            args::boolean(&opts, "wait", true)?,
            args::wait_timeout(&opts, "timeout")?,
            args::duration(&opts, "every", DEFAULT_EVERY)?,
            args::boolean(&opts, "force", false)?,
        ))
    })();
    let (wait, timeout, every, force) = parsed.map_err(|e| arg_error(ctx, e))?;
    let action = action(force);
    let recorded = json!({ "ids": ids, "wait": wait, "force": force });
    recorder::call(ctx, spec, recorded, |host| {
        let clock = host.interrupt.clock();
        let limit = (wait && action != StateAction::Reboot)
            .then(|| crate::bindings::wait_limit(host, timeout));
        on_cloud(host, async |cloud: &Cloud| {
            let mut changes = cloud.change_state(&ids, action).await?;
            if let Some(limit) = &limit {
                let done =
                    wait_for_state(clock, cloud, &ids, action.target_state(), limit, every).await?;
                for c in &mut changes {
                    if let Some(i) = done.iter().find(|i| i.id == c.id) {
                        c.state = i.state.clone();
                    }
                }
            }
            Ok(changes)
        })
    })
    .map(|d| d.into_array().unwrap_or_default())
}

// --- Backup restoration (`snapshots`, `restore_volume`, `delete_volume`): the seeds' monthly
// backup restoration test restores the latest snapshot to a scratch volume and deletes it. ---

static SNAPSHOTS: Binding = Binding {
    name: "ec2::snapshots",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static RESTORE_VOLUME: Binding = Binding {
    name: "ec2::restore_volume",
    effect: Effect::Mutating,
    placeholder: restore_volume_placeholder,
};
static DELETE_VOLUME: Binding = Binding {
    name: "ec2::delete_volume",
    effect: Effect::Mutating,
    placeholder: delete_volume_placeholder,
};

/// Where a restored volume is attached unless the runbook says otherwise (AWS's recommended
/// range for data volumes is `/dev/sd[f-p]`).
const DEFAULT_DEVICE: &str = "/dev/sdf";

fn restore_volume_placeholder(args: &Value) -> Dynamic {
    planned_value(json!({
        "volume": "vol-planned",
        "device": args["device"],
        "state": "planned",
        "snapshot": args["snapshot"],
        "instance": args["id"],
        "zone": "planned",
        "seconds": 0,
        "planned": true,
    }))
}

fn delete_volume_placeholder(args: &Value) -> Dynamic {
    planned_value(json!({ "volume": args["id"], "detached_from": (), "state": "planned" }))
}

/// Polls one volume until `done` says so; `what` names the wait in a `WaiterTimeout`.
async fn wait_volume(
    clock: &Clock,
    cloud: &Cloud,
    id: &str,
    limit: &WaitLimit,
    every: Duration,
    what: &str,
    done: impl Fn(&Volume) -> bool,
) -> CloudResult<Volume> {
    let ids = [id.to_string()];
    poll(clock, limit, every, what, async || {
        let found = cloud.describe_volumes(&ids).await?;
        Ok(match found.into_iter().next() {
            Some(v) if done(&v) => Ok(v),
            Some(v) => Err(vec![format!("{id} is {} ({})", v.state, v.attachment)]),
            None => Err(vec![format!("{id} is not listed yet")]),
        })
    })
    .await
}

/// Detaches `id` when attached (waiting until it is `available`), deletes it and waits until
/// EC2 no longer lists it (or lists it `deleted`). Answers the instance it was detached from.
async fn remove_volume(
    clock: &Clock,
    cloud: &Cloud,
    id: &str,
    force: bool,
    limit: &WaitLimit,
    every: Duration,
) -> CloudResult<Option<String>> {
    let ids = [id.to_string()];
    let current = cloud.describe_volumes(&ids).await?;
    let attached = current
        .first()
        .filter(|v| !v.instance.is_empty() && v.state == "in-use");
    let attached_to = attached.map(|v| v.instance.clone());
    if let Some(v) = attached {
        cloud
            .detach_volume(id, &v.instance, &v.device, force)
            .await?;
        wait_volume(clock, cloud, id, limit, every, "volume not detached", |v| {
            v.state == "available"
        })
        .await?;
    }
    cloud.delete_volume(id).await?;
    poll(
        clock,
        limit,
        every,
        "volume not deleted",
        async || match cloud.describe_volumes(&ids).await {
            Err(e) if e.code == "InvalidVolume.NotFound" => Ok(Ok(())),
            Err(e) => Err(e),
            Ok(found) => Ok(match found.first() {
                Some(v) if v.state != "deleted" => Err(vec![format!("{id} is {}", v.state)]),
                _ => Ok(()),
            }),
        },
    )
    .await?;
    Ok(attached_to)
}

/// EC2 instances: read, tag, contain, stop, image and launch.
#[export_module]
pub mod ec2_api {
    /// Finds instances. `filter` may hold `ids` (array), `tags` (map: every tag must match) and
    /// `states` (array such as `["running"]`). Returns an array of maps: `id`, `state`, `type`,
    /// `image`, `vpc`, `subnet`, `private_ip`, `security_groups`, `network_interfaces`
    /// (`#{ id, groups }`), `volumes`, `tags`, `launch_time`. Read-only.
    #[rhai_fn(return_raw)]
    pub(crate) fn find(ctx: NativeCallContext, filter: Map) -> ScriptResult<Array> {
        let f = filter_from(&filter).map_err(|e| arg_error(&ctx, e))?;
        let recorded = json!({ "ids": f.ids, "tags": f.tags, "states": f.states });
        recorder::call(&ctx, &FIND, recorded, |host| {
            on_cloud(host, async |c: &Cloud| c.describe_instances(&f).await)
        })
        .map(|d| d.into_array().unwrap_or_default())
    }

    /// Describes one instance (see `find` for its fields). Fails with
    /// `InvalidInstanceID.NotFound` when it does not exist. Read-only.
    #[rhai_fn(return_raw)]
    pub(crate) fn describe(ctx: NativeCallContext, id: &str) -> ScriptResult<Map> {
        let id = id.to_string();
        recorder::call(&ctx, &DESCRIBE, json!({ "id": id }), |host| {
            on_cloud(host, async |c: &Cloud| describe_one(c, &id).await)
        })
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }

    /// Status checks of instances: an array of `#{ id, state, system_status, instance_status }`,
    /// each status `ok`, `impaired`, `initializing`, ... Read-only.
    #[rhai_fn(return_raw)]
    pub(crate) fn status(ctx: NativeCallContext, ids: Dynamic) -> ScriptResult<Array> {
        let ids = args::ids(&ids, "ids").map_err(|e| arg_error(&ctx, e))?;
        recorder::call(&ctx, &STATUS, json!({ "ids": ids }), |host| {
            on_cloud(host, async |c: &Cloud| c.instance_status(&ids).await)
        })
        .map(|d| d.into_array().unwrap_or_default())
    }

    /// Waits until both status checks of every instance are `ok` (options: `timeout`; `every`,
    /// default `"5s"`). Without `timeout` it waits until the step's deadline (and the step ends
    /// `timed_out` if they never are); a `timeout` longer than the step has left is cut to it.
    /// When its own `timeout` runs out, fails with `WaiterTimeout` naming the instances that are
    /// not. Read-only.
    #[rhai_fn(return_raw)]
    pub(crate) fn wait_status_ok(
        ctx: NativeCallContext,
        ids: Dynamic,
        options: Map,
    ) -> ScriptResult<Array> {
        let ids = args::ids(&ids, "ids").map_err(|e| arg_error(&ctx, e))?;
        let timeout = args::wait_timeout(&options, "timeout").map_err(|e| arg_error(&ctx, e))?;
        let every =
            args::duration(&options, "every", DEFAULT_EVERY).map_err(|e| arg_error(&ctx, e))?;
        recorder::call(
            &ctx,
            &WAIT_STATUS_OK,
            json!({ "ids": ids, "timeout": args::wait_timeout_recorded(timeout) }),
            |host| {
                let clock = host.interrupt.clock();
                let limit = crate::bindings::wait_limit(host, timeout);
                on_cloud(host, async |c: &Cloud| {
                    super::wait_status_ok(clock, c, &ids, &limit, every).await
                })
            },
        )
        .map(|d| d.into_array().unwrap_or_default())
    }

    /// Waits until every instance is in `state` (`"running"`, `"stopped"`, `"terminated"`, ...).
    /// Options as for `wait_status_ok`. Read-only.
    #[rhai_fn(return_raw)]
    pub(crate) fn wait_state(
        ctx: NativeCallContext,
        ids: Dynamic,
        state: &str,
        options: Map,
    ) -> ScriptResult<Array> {
        let ids = args::ids(&ids, "ids").map_err(|e| arg_error(&ctx, e))?;
        let timeout = args::wait_timeout(&options, "timeout").map_err(|e| arg_error(&ctx, e))?;
        let every =
            args::duration(&options, "every", DEFAULT_EVERY).map_err(|e| arg_error(&ctx, e))?;
        let state = state.to_string();
        recorder::call(
            &ctx,
            &WAIT_STATE,
            json!({ "ids": ids, "state": state }),
            |host| {
                let clock = host.interrupt.clock();
                let limit = crate::bindings::wait_limit(host, timeout);
                on_cloud(host, async |c: &Cloud| {
                    wait_for_state(clock, c, &ids, &state, &limit, every).await
                })
            },
        )
        .map(|d| d.into_array().unwrap_or_default())
    }

    /// The running instances of a blue/green colour: tags `Service = service` and `Color = color`
    /// (`"blue"` or `"green"`). Read-only.
    #[rhai_fn(return_raw)]
    pub(crate) fn by_color(
        ctx: NativeCallContext,
        service: &str,
        color: &str,
    ) -> ScriptResult<Array> {
        let f = Filter {
            ids: Vec::new(),
            tags: Tags::from([
                ("Service".to_string(), service.to_string()),
                ("Color".to_string(), color.to_string()),
            ]),
            states: vec!["running".into()],
        };
        recorder::call(
            &ctx,
            &BY_COLOR,
            json!({ "service": service, "color": color }),
            |host| on_cloud(host, async |c: &Cloud| c.describe_instances(&f).await),
        )
        .map(|d| d.into_array().unwrap_or_default())
    }

    /// Adds (or overwrites) tags on instances, snapshots or images. Mutating.
    #[rhai_fn(name = "tag", return_raw)]
    pub(crate) fn tag(ctx: NativeCallContext, ids: Dynamic, tags: Map) -> ScriptResult<()> {
        tag_with(ctx, ids, tags, Map::new())
    }

    /// Adds tags with fan-out options: `chunk` (resource ids per CreateTags call, default 100) and
    /// `concurrency` (calls in flight, default 10). Returns nothing. Mutating.
    #[rhai_fn(name = "tag", return_raw)]
    pub(crate) fn tag_with(
        ctx: NativeCallContext,
        ids: Dynamic,
        tags: Map,
        options: Map,
    ) -> ScriptResult<()> {
        let ids = args::ids(&ids, "ids").map_err(|e| arg_error(&ctx, e))?;
        let tags = args::tags(Some(&Dynamic::from_map(tags))).map_err(|e| arg_error(&ctx, e))?;
        let parsed = (|| -> Result<_, BindingError> {
            args::known(&options, &["chunk", "concurrency"])?;
            Ok((
                args::int(&options, "chunk", 100)?.clamp(1, 1000) as usize,
                args::int(&options, "concurrency", 10)?.clamp(1, 1000) as usize,
            ))
        })();
        let (chunk, concurrency) = parsed.map_err(|e| arg_error(&ctx, e))?;
        let recorded = json!({ "ids": ids, "tags": tags });
        recorder::call(&ctx, &TAG, recorded, |host| {
            on_cloud(host, async |c: &Cloud| {
                let results: Vec<CloudResult<()>> = futures_util::stream::iter(ids.chunks(chunk))
                    .map(|part| c.create_tags(part, &tags))
                    .buffer_unordered(concurrency)
                    .collect()
                    .await;
                results
                    .into_iter()
                    .collect::<CloudResult<Vec<()>>>()
                    .map(|_| ())
            })
        })
        .map(|_| ())
    }

    /// Removes tags (by key) from instances. Mutating.
    #[rhai_fn(return_raw)]
    pub(crate) fn untag(ctx: NativeCallContext, ids: Dynamic, keys: Array) -> ScriptResult<()> {
        let ids = args::ids(&ids, "ids").map_err(|e| arg_error(&ctx, e))?;
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        recorder::call(&ctx, &UNTAG, json!({ "ids": ids, "keys": keys }), |host| {
            on_cloud(host, async |c: &Cloud| c.delete_tags(&ids, &keys).await)
        })
        .map(|_| ())
    }

    /// Quarantines an instance: creates (or reuses) the security group `runbook-quarantine` in its
    /// VPC with no ingress and no egress, puts it on every network interface in place of the
    /// current groups, and returns `#{ instance, vpc, quarantine_group, created, previous_groups }`
    /// where `previous_groups` maps each interface to the groups it had: keep it for
    /// `ec2::restore`. Mutating. In a plan: the same map with `quarantine_group: "sg-planned"`,
    /// `planned: true` and the instance's real `vpc` and `previous_groups` (read-only lookup).
    #[rhai_fn(name = "isolate", return_raw)]
    pub(crate) fn isolate(ctx: NativeCallContext, id: &str) -> ScriptResult<Map> {
        isolate_with(ctx, id, Map::new())
    }

    /// `isolate` with options: `group_name` (default `runbook-quarantine`) and `incident` (tagged
    /// on a group it creates).
    #[rhai_fn(name = "isolate", return_raw)]
    pub(crate) fn isolate_with(
        ctx: NativeCallContext,
        id: &str,
        options: Map,
    ) -> ScriptResult<Map> {
        let parsed = (|| -> Result<_, BindingError> {
            args::known(&options, &["group_name", "incident"])?;
            Ok((
                args::string(&options, "group_name")?.unwrap_or_else(|| QUARANTINE_GROUP.into()),
                args::string(&options, "incident")?,
            ))
        })();
        let (group_name, incident) = parsed.map_err(|e| arg_error(&ctx, e))?;
        let id = id.to_string();
        let recorded = json!({ "id": id, "group_name": group_name });
        // A plan shows the groups isolate would replace, so code that keeps them works.
        let lookup = |host: &Host| -> Result<Value, BindingError> {
            let cloud = host.cloud.get(&host.io)?;
            let inst = host
                .io
                .block_on(&host.interrupt, describe_one(cloud, &id))?;
            let previous: serde_json::Map<String, Value> = inst
                .network_interfaces
                .iter()
                .map(|e| (e.id.clone(), json!(e.groups)))
                .collect();
            Ok(json!({ "vpc": inst.vpc, "previous_groups": previous }))
        };
        let resolve = recorder::Resolve::PlanOnly(&lookup);
        recorder::call_resolved(&ctx, &ISOLATE, recorded, resolve, |host, _| {
            on_cloud(host, async |c: &Cloud| {
                let inst = describe_one(c, &id).await?;
                let (group, created) = match c.find_security_group(&inst.vpc, &group_name).await? {
                    Some(g) => (g, false),
                    None => {
                        let mut tags = Tags::from([
                            ("Purpose".to_string(), "quarantine".to_string()),
                            ("CreatedBy".to_string(), "runbook".to_string()),
                        ]);
                        if let Some(i) = &incident {
                            tags.insert("Incident".into(), i.clone());
                        }
                        let g = c
                            .create_closed_security_group(
                                &inst.vpc,
                                &group_name,
                                "Quarantine: no ingress, no egress (created by runbook)",
                                &tags,
                            )
                            .await?;
                        (g, true)
                    }
                };
                let mut previous = serde_json::Map::new();
                for eni in &inst.network_interfaces {
                    previous.insert(eni.id.clone(), json!(eni.groups));
                    if eni.groups != [group.clone()] {
                        c.set_eni_groups(&eni.id, std::slice::from_ref(&group))
                            .await?;
                    }
                }
                Ok(json!({
                    "instance": inst.id,
                    "vpc": inst.vpc,
                    "quarantine_group": group,
                    "created": created,
                    "previous_groups": previous,
                }))
            })
        })
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }

    /// Puts back the groups `isolate` replaced: `previous` is its result (or its
    /// `previous_groups` map). Mutating.
    #[rhai_fn(return_raw)]
    pub(crate) fn restore(ctx: NativeCallContext, id: &str, previous: Map) -> ScriptResult<()> {
        let previous = match previous
            .get("previous_groups")
            .and_then(|p| p.clone().try_cast::<Map>())
        {
            Some(inner) => inner,
            None => previous,
        };
        let mut plan: Vec<(String, Vec<String>)> = Vec::new();
        for eni in previous.keys() {
            let groups = args::strings(&previous, eni).map_err(|e| arg_error(&ctx, e))?;
            plan.push((eni.to_string(), groups));
        }
        let recorded = json!({ "id": id, "previous_groups": plan.iter().cloned().collect::<std::collections::BTreeMap<_, _>>() });
        recorder::call(&ctx, &RESTORE, recorded, |host| {
            on_cloud(host, async |c: &Cloud| {
                for (eni, groups) in &plan {
                    c.set_eni_groups(eni, groups).await?;
                }
                Ok(())
            })
        })
        .map(|_| ())
    }

    /// Snapshots every EBS volume attached to an instance, tagged `Incident` and
    /// `SourceInstance`. Options: `incident`, `wait` (default true: until `completed`), `timeout`
    /// (default: the step's deadline, as for `wait_status_ok`). Returns an array of `#{ volume, snapshot, state }`. Mutating. In a plan: one entry per
    /// attached volume (read-only lookup) with `snapshot: "snap-planned"`, `state: "planned"`.
    #[rhai_fn(return_raw)]
    pub(crate) fn snapshot_volumes(
        ctx: NativeCallContext,
        id: &str,
        options: Map,
    ) -> ScriptResult<Array> {
        let parsed = (|| -> Result<_, BindingError> {
            args::known(&options, &["incident", "wait", "timeout", "every"])?;
            Ok((
                args::string(&options, "incident")?,
                args::boolean(&options, "wait", true)?,
                args::wait_timeout(&options, "timeout")?,
                args::duration(&options, "every", DEFAULT_EVERY)?,
            ))
        })();
        let (incident, wait, timeout, every) = parsed.map_err(|e| arg_error(&ctx, e))?;
        let id = id.to_string();
        let recorded = json!({ "id": id, "incident": incident, "wait": wait });
        // A plan answers with one entry per volume, as a run would.
        let lookup = |host: &Host| -> Result<Value, BindingError> {
            let cloud = host.cloud.get(&host.io)?;
            let inst = host
                .io
                .block_on(&host.interrupt, describe_one(cloud, &id))?;
            Ok(json!({ "volumes": inst.volumes }))
        };
        let resolve = recorder::Resolve::PlanOnly(&lookup);
        recorder::call_resolved(&ctx, &SNAPSHOT, recorded, resolve, |host, _| {
            let clock = host.interrupt.clock();
            let limit = wait.then(|| crate::bindings::wait_limit(host, timeout));
            on_cloud(host, async |c: &Cloud| {
                let inst = describe_one(c, &id).await?;
                let mut tags = Tags::from([
                    ("SourceInstance".to_string(), id.clone()),
                    ("CreatedBy".to_string(), "runbook".to_string()),
                ]);
                if let Some(i) = &incident {
                    tags.insert("Incident".into(), i.clone());
                }
                let description = format!(
                    "runbook forensics snapshot of {id}{}",
                    incident
                        .as_deref()
                        .map(|i| format!(" (incident {i})"))
                        .unwrap_or_default()
                );
                let mut snaps = Vec::new();
                for volume in &inst.volumes {
                    snaps.push(c.create_snapshot(volume, &description, &tags).await?);
                }
                if let Some(limit) = limit.as_ref().filter(|_| !snaps.is_empty()) {
                    let ids: Vec<String> = snaps.iter().map(|s| s.id.clone()).collect();
                    let done = poll(clock, limit, every, "snapshots not completed", async || {
                        let now = c.describe_snapshots(&ids).await?;
                        let pending: Vec<String> = now
                            .iter()
                            .filter(|s| s.state != "completed")
                            .map(|s| s.id.clone())
                            .collect();
                        Ok(if pending.is_empty() {
                            Ok(now)
                        } else {
                            Err(pending)
                        })
                    })
                    .await?;
                    for s in &mut snaps {
                        if let Some(n) = done.iter().find(|n| n.id == s.id) {
                            s.state = n.state.clone();
                        }
                    }
                }
                Ok(snaps
                    .iter()
                    .map(|s| json!({ "volume": s.volume, "snapshot": s.id, "state": s.state }))
                    .collect::<Vec<_>>())
            })
        })
        .map(|d| d.into_array().unwrap_or_default())
    }

    /// Stops instances and waits until they are `stopped` (see `stop(ids, options)`). Mutating.
    #[rhai_fn(name = "stop", return_raw)]
    pub(crate) fn stop(ctx: NativeCallContext, ids: Dynamic) -> ScriptResult<Array> {
        change_state(&ctx, &STOP, ids, Map::new(), |force| StateAction::Stop {
            force,
        })
    }

    /// Stops instances. Options: `wait` (default true), `timeout` (default: the step's deadline,
    /// as for `wait_status_ok`), `every`,
    /// `force`. Returns an array of `#{ id, previous_state, state }`. Mutating. In a plan: one
    /// entry per id with both states `"planned"` (the same for `start`, `reboot`, `terminate`).
    #[rhai_fn(name = "stop", return_raw)]
    pub(crate) fn stop_with(
        ctx: NativeCallContext,
        ids: Dynamic,
        options: Map,
    ) -> ScriptResult<Array> {
        change_state(&ctx, &STOP, ids, options, |force| StateAction::Stop {
            force,
        })
    }

    /// Starts instances and waits until they are `running`. Mutating.
    #[rhai_fn(name = "start", return_raw)]
    pub(crate) fn start(ctx: NativeCallContext, ids: Dynamic) -> ScriptResult<Array> {
        change_state(&ctx, &START, ids, Map::new(), |_| StateAction::Start)
    }

    /// Starts instances (options as for `stop`). Mutating.
    #[rhai_fn(name = "start", return_raw)]
    pub(crate) fn start_with(
        ctx: NativeCallContext,
        ids: Dynamic,
        options: Map,
    ) -> ScriptResult<Array> {
        change_state(&ctx, &START, ids, options, |_| StateAction::Start)
    }

    /// Reboots instances (they stay `running`). Mutating.
    #[rhai_fn(name = "reboot", return_raw)]
    pub(crate) fn reboot(ctx: NativeCallContext, ids: Dynamic) -> ScriptResult<Array> {
        change_state(&ctx, &REBOOT, ids, Map::new(), |_| StateAction::Reboot)
    }

    /// Terminates instances and waits until they are `terminated`. Mutating.
    #[rhai_fn(name = "terminate", return_raw)]
    pub(crate) fn terminate(ctx: NativeCallContext, ids: Dynamic) -> ScriptResult<Array> {
        change_state(&ctx, &TERMINATE, ids, Map::new(), |_| {
            StateAction::Terminate
        })
    }

    /// Terminates instances (options as for `stop`). Mutating.
    #[rhai_fn(name = "terminate", return_raw)]
    pub(crate) fn terminate_with(
        ctx: NativeCallContext,
        ids: Dynamic,
        options: Map,
    ) -> ScriptResult<Array> {
        change_state(&ctx, &TERMINATE, ids, options, |_| StateAction::Terminate)
    }

    /// Creates an AMI of an instance (for forensics or recovery) and returns its id. Options:
    /// `name` (default `runbook-<id>-<time>`), `no_reboot` (default true: do not disturb
    /// evidence), `incident`, `tags`. Mutating. In a plan: `"ami-planned"`.
    #[rhai_fn(return_raw)]
    pub(crate) fn create_image(
        ctx: NativeCallContext,
        id: &str,
        options: Map,
    ) -> ScriptResult<String> {
        let parsed = (|| -> Result<_, BindingError> {
            args::known(&options, &["name", "no_reboot", "incident", "tags"])?;
            let mut tags = args::tags(options.get("tags"))?;
            if let Some(i) = args::string(&options, "incident")? {
                tags.insert("Incident".into(), i);
            }
            tags.insert("SourceInstance".into(), id.to_string());
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
            Ok((
                args::string(&options, "name")?.unwrap_or_else(|| format!("runbook-{id}-{stamp}")),
                args::boolean(&options, "no_reboot", true)?,
                tags,
            ))
        })();
        let (name, no_reboot, tags) = parsed.map_err(|e| arg_error(&ctx, e))?;
        let id = id.to_string();
        recorder::call(
            &ctx,
            &CREATE_IMAGE,
            json!({ "id": id, "name": name, "no_reboot": no_reboot, "tags": tags }),
            |host| {
                on_cloud(host, async |c: &Cloud| {
                    c.create_image(&id, &name, no_reboot, &tags).await
                })
            },
        )
        .map(|d| d.to_string())
    }

    /// Launches instances. `spec`: `image` or `launch_template` (a name), and optionally
    /// `instance_type`, `subnet`, `security_groups`, `tags`, `count` (default 1), `wait`
    /// (default true: until `running`), `timeout` (default: the step's deadline, as for
    /// `wait_status_ok`). Returns the new instances (see `find`). Mutating.
    /// `--max-resources` counts the `count` new instances before the call is sent. In a plan:
    /// `count` instances with every `find` field, ids `i-planned00000000`, ... and state `"planned"`.
    #[rhai_fn(return_raw)]
    pub(crate) fn launch(ctx: NativeCallContext, spec: Map) -> ScriptResult<Array> {
        let parsed = (|| -> Result<_, BindingError> {
            args::known(
                &spec,
                &[
                    "image",
                    "launch_template",
                    "instance_type",
                    "subnet",
                    "security_groups",
                    "tags",
                    "count",
                    "wait",
                    "timeout",
                    "every",
                ],
            )?;
            let launch = LaunchSpec {
                image: args::string(&spec, "image")?,
                launch_template: args::string(&spec, "launch_template")?,
                instance_type: args::string(&spec, "instance_type")?,
                subnet: args::string(&spec, "subnet")?,
                security_groups: args::strings(&spec, "security_groups")?,
                tags: args::tags(spec.get("tags"))?,
                count: args::int(&spec, "count", 1)?.clamp(1, 100) as i32,
            };
            if launch.image.is_none() && launch.launch_template.is_none() {
                return Err(BindingError::new(
                    "bad_argument",
                    "launch needs an `image` or a `launch_template`",
                ));
            }
            Ok((
                launch,
                args::boolean(&spec, "wait", true)?,
                args::wait_timeout(&spec, "timeout")?,
                args::duration(&spec, "every", DEFAULT_EVERY)?,
            ))
        })();
        let (launch, wait, timeout, every) = parsed.map_err(|e| arg_error(&ctx, e))?;
        let recorded = json!({ "spec": {
            "image": launch.image, "launch_template": launch.launch_template, "instance_type": launch.instance_type,
            "subnet": launch.subnet, "security_groups": launch.security_groups, "tags": launch.tags, "count": launch.count,
        }});
        recorder::call(&ctx, &LAUNCH, recorded, |host| {
            let clock = host.interrupt.clock();
            let limit = wait.then(|| crate::bindings::wait_limit(host, timeout));
            on_cloud(host, async |c: &Cloud| {
                let created = c.run_instances(&launch).await?;
                let Some(limit) = &limit else {
                    return Ok(created);
                };
                let ids: Vec<String> = created.iter().map(|i| i.id.clone()).collect();
                wait_for_state(clock, c, &ids, "running", limit, every).await
            })
        })
        .map(|d| d.into_array().unwrap_or_default())
    }

    /// The account's own EBS snapshots, newest first. `filter` may hold `volume` (the volume
    /// they were taken of), `tags` (map: every tag must match) and `states` (e.g.
    /// `["completed"]`). Returns an array of `#{ id, volume, state, tags, start_time }`
    /// (`start_time`: RFC 3339, UTC). Read-only.
    #[rhai_fn(return_raw)]
    pub(crate) fn snapshots(ctx: NativeCallContext, filter: Map) -> ScriptResult<Array> {
        let parsed = (|| -> Result<_, BindingError> {
            args::known(&filter, &["volume", "tags", "states"])?;
            Ok(SnapshotFilter {
                volume: args::string(&filter, "volume")?,
                tags: args::tags(filter.get("tags"))?,
                states: args::strings(&filter, "states")?,
            })
        })();
        let f = parsed.map_err(|e| arg_error(&ctx, e))?;
        let recorded = json!({ "volume": f.volume, "tags": f.tags, "states": f.states });
        recorder::call(&ctx, &SNAPSHOTS, recorded, |host| {
            on_cloud(host, async |c: &Cloud| {
                let mut found = c.find_snapshots(&f).await?;
                // RFC 3339 UTC times sort as text; the id breaks a tie so the order is stable.
                found.sort_by(|a, b| {
                    b.start_time
                        .cmp(&a.start_time)
                        .then_with(|| b.id.cmp(&a.id))
                });
                Ok(found)
            })
        })
        .map(|d| d.into_array().unwrap_or_default())
    }

    /// Restores a snapshot to a new volume in the instance's availability zone, waits until it
    /// is `available`, attaches it at `device` and waits until it is `in-use`. Options:
    /// `device` (default `"/dev/sdf"`), `tags` (added to `CreatedBy=runbook`,
    /// `Purpose=restore-test`, `SourceSnapshot`), `timeout` (for the whole restore; default:
    /// the step's deadline, as for `wait_status_ok`), `every` (default `"5s"`). Returns
    /// `#{ volume, device, state, snapshot, instance, zone, seconds }` (`seconds`: how long the
    /// restore took, on the run's clock: simulated in drills). When attaching fails after the
    /// volume was created, the volume is deleted again and the error says so (or says it could
    /// not be, naming it). Mutating; `--max-resources` counts the instance. In a plan:
    /// `volume: "vol-planned"`, `state: "planned"`, `planned: true` (nothing is attached, so a
    /// check of the device has nothing to read).
    #[rhai_fn(return_raw)]
    pub(crate) fn restore_volume(
        ctx: NativeCallContext,
        snapshot: &str,
        instance: &str,
        options: Map,
    ) -> ScriptResult<Map> {
        let parsed = (|| -> Result<_, BindingError> {
            args::known(&options, &["device", "tags", "timeout", "every"])?;
            let device =
                args::string(&options, "device")?.unwrap_or_else(|| DEFAULT_DEVICE.to_string());
            if !device.starts_with("/dev/") || device.len() <= "/dev/".len() {
                return Err(BindingError::new(
                    "bad_argument",
                    format!("device must be a device name such as /dev/sdf, not {device:?}"),
                ));
            }
            let mut tags = args::tags(options.get("tags"))?;
            tags.insert("CreatedBy".into(), "runbook".into());
            tags.insert("Purpose".into(), "restore-test".into());
            tags.insert("SourceSnapshot".into(), snapshot.to_string());
            Ok((
                device,
                tags,
                args::wait_timeout(&options, "timeout")?,
                args::duration(&options, "every", DEFAULT_EVERY)?,
            ))
        })();
        let (device, tags, timeout, every) = parsed.map_err(|e| arg_error(&ctx, e))?;
        let (snapshot, instance) = (snapshot.to_string(), instance.to_string());
        let recorded = json!({
            "id": instance, "snapshot": snapshot, "device": device, "tags": tags,
            "timeout": args::wait_timeout_recorded(timeout),
        });
        recorder::call(&ctx, &RESTORE_VOLUME, recorded, |host| {
            let clock = host.interrupt.clock();
            let limit = crate::bindings::wait_limit(host, timeout);
            on_cloud(host, async |c: &Cloud| {
                let started = clock.now();
                let zone = c.instance_zone(&instance).await?;
                let created = c.create_volume(&snapshot, &zone, &tags).await?;
                let attached = async {
                    wait_volume(clock, c, &created.id, &limit, every, "volume not available", |v| {
                        v.state == "available"
                    })
                    .await?;
                    c.attach_volume(&created.id, &instance, &device).await?;
                    wait_volume(clock, c, &created.id, &limit, every, "volume not attached", |v| {
                        v.state == "in-use" && v.attachment == "attached"
                    })
                    .await
                }
                .await;
                match attached {
                    Ok(v) => Ok(json!({
                        "volume": v.id, "device": v.device, "state": v.state,
                        "snapshot": snapshot, "instance": v.instance, "zone": v.zone,
                        "seconds": started.elapsed().as_secs(),
                    })),
                    Err(mut e) => {
                        // Nothing else knows the new volume's id: leaving it would leak it.
                        let cleanup =
                            remove_volume(clock, c, &created.id, true, &limit, every).await;
                        e.message = match cleanup {
                            Ok(_) => format!("{} (the new volume {} was deleted)", e.message, created.id),
                            Err(d) => format!(
                                "{} (the new volume {} could not be deleted: {}: {}; delete it by hand)",
                                e.message, created.id, d.code, d.message
                            ),
                        };
                        Err(e)
                    }
                }
            })
        })
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }

    /// Deletes a volume: detaches it first when it is attached (waiting until it is
    /// `available`), then deletes it and waits until EC2 no longer lists it. Options: `force`
    /// (a forced detach, default false), `timeout` (default: the step's deadline), `every`.
    /// Returns `#{ volume, detached_from, state: "deleted" }` (`detached_from`: the instance,
    /// or `()`). Fails with `InvalidVolume.NotFound` when it does not exist. Mutating. In a
    /// plan: `state: "planned"`.
    #[rhai_fn(return_raw)]
    pub(crate) fn delete_volume(
        ctx: NativeCallContext,
        volume: &str,
        options: Map,
    ) -> ScriptResult<Map> {
        let parsed = (|| -> Result<_, BindingError> {
            args::known(&options, &["force", "timeout", "every"])?;
            Ok((
                args::boolean(&options, "force", false)?,
                args::wait_timeout(&options, "timeout")?,
                args::duration(&options, "every", DEFAULT_EVERY)?,
            ))
        })();
        let (force, timeout, every) = parsed.map_err(|e| arg_error(&ctx, e))?;
        let volume = volume.to_string();
        let recorded = json!({
            "id": volume, "force": force, "timeout": args::wait_timeout_recorded(timeout),
        });
        recorder::call(&ctx, &DELETE_VOLUME, recorded, |host| {
            let clock = host.interrupt.clock();
            let limit = crate::bindings::wait_limit(host, timeout);
            on_cloud(host, async |c: &Cloud| {
                let from = remove_volume(clock, c, &volume, force, &limit, every).await?;
                Ok(json!({ "volume": volume, "detached_from": from, "state": "deleted" }))
            })
        })
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_blast_radius_counts_the_instance_a_restore_attaches_to_and_the_volume_deleted() {
        use crate::sandbox::recorder::changed_resources;
        let restore =
            serde_json::json!({ "id": "i-0000000000000001", "snapshot": "snap-0000000000000001" });
        assert_eq!(
            changed_resources("ec2::restore_volume", &restore),
            ["i-0000000000000001"]
        );
        let delete = serde_json::json!({ "id": "vol-0000000000000009" });
        assert_eq!(
            changed_resources("ec2::delete_volume", &delete),
            ["vol-0000000000000009"]
        );
    }
}
