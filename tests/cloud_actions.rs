//! The `elb::`, `cloudwatch::` and `autoscaling::` bindings: the same script on the sim and on
//! moto's server, compared, and the effects read back from the emulator with the SDK.
//!
//! What moto 5.2 models is compared for real: listeners with weighted forward actions, target
//! groups and registration, target health (moto answers `healthy` for every running target),
//! Auto Scaling groups, desired capacity and suspended processes. moto does not implement
//! `StartInstanceRefresh`: `autoscaling::refresh` is tested on the sim alone. CloudWatch is compared
//! too: `PutMetricData` (seeded here with the SDK), `GetMetricData`, alarms with `SetAlarmState`,
//! and (from moto 5.2.3) `DisableAlarmActions`/`EnableAlarmActions`. That needs aws-sdk-cloudwatch
//! pinned to 1.99.0, the last release that speaks awsQuery (see Cargo.toml): later ones speak
//! only Smithy RPC v2 CBOR, which moto's server does not route (404). moto does not evaluate
//! alarms: their state is what the test sets.

use crate::common;

use common::moto::{Moto, block, with_credentials};
use common::{Workspace, events, of_type};
use serde_json::Value;

const SIM_LISTENER: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/ec2-manager-api/0a1b2c3d4e5f6001/0a1b2c3d4e5f6001";
const SIM_WORKER: &str = "i-0a1b2c3d4e5f60005";

fn run(ws: &Workspace, args: &[&str]) -> common::Run {
    with_credentials(ws.cmd()).args(args).output()
}

/// Runs the workspace's runbook `id` on `env` with `params`, and returns the first step's ctx
/// and the writes sent, after checking the run's exit code.
fn run_script(
    ws: &Workspace,
    env: &str,
    id: &str,
    params: &[String],
    code: i32,
) -> (Value, Vec<String>) {
    let transcript = format!("{env}-{id}.jsonl");
    let mut args = vec!["run", id, "--env", env, "--transcript", &transcript];
    for p in params {
        args.extend(["--param", p.as_str()]);
    }
    let r = run(ws, &args);
    r.expect_code(code);
    let ev = events(&ws.path().join(&transcript));
    let ctx = of_type(&ev, "step_finished")
        .first()
        .map(|s| s["ctx"].clone())
        .unwrap_or(Value::Null);
    let writes = of_type(&ev, "call")
        .iter()
        .filter(|c| c["mutating"] == true && c["planned"] == false)
        .map(|c| c["binding"].as_str().unwrap().to_string())
        .collect();
    (ctx, writes)
}

/// The subnet and VPC of an instance the seed launched.
fn network_of(moto: &Moto, id: &str) -> (String, String) {
    block(async {
        let out = moto
            .ec2()
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .unwrap();
        let i = &out.reservations()[0].instances()[0];
        (
            i.subnet_id().unwrap().to_string(),
            i.vpc_id().unwrap().to_string(),
        )
    })
}

const SHIFT: &str = r#"runbook(#{ id: "shift", version: "1.0.0", title: "Blue/green shift", severity: "P3",
    params: #{ listener: #{ type: "string", required: true }, extra: #{ type: "string", required: true } } });
containment("Shift traffic to green", |ctx| {
    ctx.before = elb::listener(ctx.listener).weights;
    ctx.all_healthy = elb::target_health("api-green").all(|h| h.state == "healthy");
    elb::register("api-green", ctx.extra);
    ctx.registered = elb::target_health("api-green").some(|h| h.id == ctx.extra);
    elb::deregister("api-green", ctx.extra);
    let r = elb::shift(ctx.listener, #{ to: "api-green", steps: [50, 100], gate: "1s", every: "1s" });
    ctx.steps = r.steps.map(|s| s.percent);
    ctx.from = r.from;
    ctx.after = elb::listener(ctx.listener).weights;
    ctx.back = elb::set_weights(ctx.listener, #{ "api-blue": 100, "api-green": 0 }).weights;
});
"#;

/// On moto: the API's load balancer with an HTTP listener forwarding all traffic to `api-blue`
/// (the blue instance registered) and none to `api-green` (the worker registered). Returns the
/// listener's ARN.
pub(crate) fn moto_listener(moto: &Moto, blue: &str, worker: &str) -> String {
    let (subnet, vpc) = network_of(moto, blue);
    block(async {
        use aws_sdk_elasticloadbalancingv2::types as t;
        let elb = moto.elb();
        let lb = elb
            .create_load_balancer()
            .name("ec2-manager-api")
            .subnets(&subnet)
            .send()
            .await
            .unwrap();
        let lb = lb.load_balancers()[0]
            .load_balancer_arn()
            .unwrap()
            .to_string();
        let mut groups = Vec::new();
        for name in ["api-blue", "api-green"] {
            let g = elb
                .create_target_group()
                .name(name)
                .protocol(t::ProtocolEnum::Http)
                .port(8080)
                .vpc_id(&vpc)
                .target_type(t::TargetTypeEnum::Instance)
                .send()
                .await
                .unwrap();
            groups.push(g.target_groups()[0].target_group_arn().unwrap().to_string());
        }
        for (group, id) in groups.iter().zip([blue, worker]) {
            elb.register_targets()
                .target_group_arn(group)
                .targets(t::TargetDescription::builder().id(id).build())
                .send()
                .await
                .unwrap();
        }
        let forward = t::ForwardActionConfig::builder()
            .target_groups(
                t::TargetGroupTuple::builder()
                    .target_group_arn(&groups[0])
                    .weight(100)
                    .build(),
            )
            .target_groups(
                t::TargetGroupTuple::builder()
                    .target_group_arn(&groups[1])
                    .weight(0)
                    .build(),
            )
            .build();
        let l = elb
            .create_listener()
            .load_balancer_arn(&lb)
            .protocol(t::ProtocolEnum::Http)
            .port(80)
            .default_actions(
                t::Action::builder()
                    .r#type(t::ActionTypeEnum::Forward)
                    .forward_config(forward)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        l.listeners()[0].listener_arn().unwrap().to_string()
    })
}

#[test]
fn a_blue_green_shift_moves_the_listener_weights_on_moto_as_on_the_sim() {
    let moto = Moto::start();
    let (blue, worker) = moto.seed();
    let listener = moto_listener(&moto, &blue, &worker);
    let ws = moto.workspace("123456789012");
    ws.write("runbooks/shift.rhai", SHIFT);

    let (on_moto, moto_writes) = run_script(
        &ws,
        "moto",
        "shift",
        &[format!("listener={listener}"), format!("extra={blue}")],
        0,
    );
    let (on_sim, sim_writes) = run_script(
        &ws,
        "drill",
        "shift",
        &[
            format!("listener={SIM_LISTENER}"),
            format!("extra={SIM_WORKER}"),
        ],
        0,
    );
    assert_eq!(moto_writes, sim_writes);
    assert_eq!(
        moto_writes,
        [
            "elb::register",
            "elb::deregister",
            "elb::shift",
            "elb::set_weights"
        ]
    );
    for key in [
        "before",
        "all_healthy",
        "registered",
        "steps",
        "from",
        "after",
        "back",
    ] {
        assert_eq!(
            on_moto[key], on_sim[key],
            "{key}: moto {on_moto} sim {on_sim}"
        );
    }
    assert_eq!(on_moto["before"]["api-green"], 0);
    assert_eq!(on_moto["after"]["api-green"], 100);
    assert_eq!(on_moto["after"]["api-blue"], 0);

    // The last write put blue back: read from the emulator itself.
    let weights = block(async {
        let out = moto
            .elb()
            .describe_listeners()
            .listener_arns(&listener)
            .send()
            .await
            .unwrap();
        out.listeners()[0].default_actions()[0]
            .forward_config()
            .unwrap()
            .target_groups()
            .iter()
            .map(|t| t.weight().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(weights, [100, 0]);
}

const WATCH: &str = r#"runbook(#{ id: "watch", version: "1.0.0", title: "CPU evidence", severity: "P3",
    params: #{ instance: #{ type: "string", required: true } } });
containment("Read the CPU and its alarm", |ctx| {
    let m = cloudwatch::metric(#{ namespace: "AWS/EC2", name: "CPUUtilization",
                                 dimensions: #{ InstanceId: ctx.instance }, stat: "Maximum", window: "10m" });
    ctx.has_points = m.count > 0;
    ctx.max = m.max;
    ctx.values = m.points.map(|p| p.value);
    ctx.latest = m.latest;
    let a = cloudwatch::alarm("worker-cpu-high");
    ctx.state = a.state;
    ctx.reason = a.reason;
    ctx.threshold = a.threshold;
    ctx.comparison = a.comparison;
    try {
        cloudwatch::wait_alarm_ok("worker-cpu-high", #{ timeout: "2s", every: "1s" });
        ctx.waited = "ok";
    } catch (e) {
        ctx.waited = e.code;
        ctx.wait_message = e.message;
    }
    try { cloudwatch::alarm("no-such-alarm"); } catch (e) { ctx.missing = e.code; }
});
"#;

const MUTE: &str = r#"runbook(#{ id: "mute", version: "1.0.0", title: "Maintenance", severity: "P3" });
containment("Mute the alarm, then unmute it", |ctx| {
    cloudwatch::disable_actions("worker-cpu-high");
    ctx.muted = !cloudwatch::alarm("worker-cpu-high").actions_enabled;
    cloudwatch::enable_actions(["worker-cpu-high"]);
    ctx.unmuted = cloudwatch::alarm("worker-cpu-high").actions_enabled;
});
"#;

/// The sim's side of the CloudWatch scripts: its scripted series and the alarm it derives.
#[test]
fn cloudwatch_metrics_and_alarms_read_as_the_sim_scripts_them() {
    let ws = Workspace::new();
    ws.write("runbook.toml", "[environments.drill]\nbackend = \"sim\"\n");
    ws.write("runbooks/watch.rhai", WATCH);
    ws.write("runbooks/mute.rhai", MUTE);

    let (on_sim, writes) = run_script(
        &ws,
        "drill",
        "watch",
        &[format!("instance={SIM_WORKER}")],
        0,
    );
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(on_sim["has_points"], true, "{on_sim}");
    assert_eq!(on_sim["max"], 97.0);
    assert_eq!(on_sim["state"], "ALARM");
    assert_eq!(on_sim["threshold"], 85.0);
    assert_eq!(on_sim["comparison"], "GreaterThanThreshold");
    assert_eq!(on_sim["waited"], "WaiterTimeout");
    assert_eq!(on_sim["missing"], "AlarmNotFound");

    // Muting an alarm for maintenance, then unmuting it.
    let (muted, writes) = run_script(&ws, "drill", "mute", &[], 0);
    assert_eq!(
        writes,
        ["cloudwatch::disable_actions", "cloudwatch::enable_actions"]
    );
    assert_eq!(muted["muted"], true, "{muted}");
    assert_eq!(muted["unmuted"], true, "{muted}");
}

const WAIT_OK: &str = r#"runbook(#{ id: "wait-ok", version: "1.0.0", title: "Alarm cleared", severity: "P3" });
containment("Wait for the latency alarm to clear", |ctx| {
    let a = cloudwatch::wait_alarm_ok("api-latency-high", #{ timeout: "30s", every: "1s" });
    ctx.state = a.state;
    ctx.reason = a.reason;
});
"#;

const ALARM_REASON: &str =
    "Threshold Crossed: 3 datapoints [95.0, 97.0, 93.0] were greater than the threshold (85.0).";

/// Seeds moto as the sim's fleet has it: the worker's CPU at 93, 97 and 95 over the last three
/// minutes (PutMetricData through the SDK), `worker-cpu-high` over it in ALARM, and
/// `api-latency-high` back to OK. moto evaluates no alarm: SetAlarmState is the state.
fn seed_cloudwatch(moto: &Moto, worker: &str) {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types as cwt;
    block(async {
        let cw = moto.cloudwatch();
        let now = std::time::SystemTime::now();
        let dim = cwt::Dimension::builder()
            .name("InstanceId")
            .value(worker)
            .build();
        let mut put = cw.put_metric_data().namespace("AWS/EC2");
        for (ago, value) in [(180, 93.0), (120, 97.0), (60, 95.0)] {
            put = put.metric_data(
                cwt::MetricDatum::builder()
                    .metric_name("CPUUtilization")
                    .dimensions(dim.clone())
                    .timestamp(DateTime::from(now - std::time::Duration::from_secs(ago)))
                    .value(value)
                    .unit(cwt::StandardUnit::Percent)
                    .build(),
            );
        }
        put.send().await.unwrap();
        for (name, namespace, metric, threshold, state, reason) in [
            (
                "worker-cpu-high",
                "AWS/EC2",
                "CPUUtilization",
                85.0,
                cwt::StateValue::Alarm,
                ALARM_REASON,
            ),
            (
                "api-latency-high",
                "AWS/ApplicationELB",
                "TargetResponseTime",
                0.5,
                cwt::StateValue::Ok,
                "Threshold Crossed: 1 datapoint [0.21] was not greater than the threshold (0.5).",
            ),
        ] {
            let mut alarm = cw
                .put_metric_alarm()
                .alarm_name(name)
                .namespace(namespace)
                .metric_name(metric)
                .statistic(cwt::Statistic::Maximum)
                .period(60)
                .evaluation_periods(5)
                .threshold(threshold)
                .comparison_operator(cwt::ComparisonOperator::GreaterThanThreshold);
            if name == "worker-cpu-high" {
                alarm = alarm.dimensions(dim.clone());
            }
            alarm.send().await.unwrap();
            cw.set_alarm_state()
                .alarm_name(name)
                .state_value(state)
                .state_reason(reason)
                .send()
                .await
                .unwrap();
        }
    })
}

/// What moto says of an alarm's actions, read with the SDK.
fn actions_enabled_on_moto(moto: &Moto, alarm: &str) -> bool {
    block(async {
        let out = moto
            .cloudwatch()
            .describe_alarms()
            .alarm_names(alarm)
            .send()
            .await
            .unwrap();
        out.metric_alarms()[0].actions_enabled().unwrap()
    })
}

#[test]
fn cloudwatch_metrics_and_alarms_read_on_moto_as_on_the_sim() {
    let moto = Moto::start();
    let (_, worker) = moto.seed();
    seed_cloudwatch(&moto, &worker);
    let ws = moto.workspace("123456789012");
    ws.write("runbooks/watch.rhai", WATCH);

    let (on_moto, writes) = run_script(&ws, "moto", "watch", &[format!("instance={worker}")], 0);
    assert!(writes.is_empty(), "{writes:?}");
    let (on_sim, _) = run_script(
        &ws,
        "drill",
        "watch",
        &[format!("instance={SIM_WORKER}")],
        0,
    );
    for key in [
        "has_points",
        "max",
        "state",
        "threshold",
        "comparison",
        "waited",
        "missing",
    ] {
        assert_eq!(
            on_moto[key], on_sim[key],
            "{key}: moto {on_moto} sim {on_sim}"
        );
    }
    // GetMetricData gave back what PutMetricData put, oldest first, one point a minute.
    assert_eq!(on_moto["values"], serde_json::json!([93.0, 97.0, 95.0]));
    assert_eq!(on_moto["latest"], 95.0);
    assert_eq!(on_moto["reason"], ALARM_REASON);
    // The wait that ran out says why: the alarm's state and reason.
    let message = on_moto["wait_message"].as_str().unwrap_or_default();
    assert!(
        message.contains("worker-cpu-high is ALARM") && message.contains(ALARM_REASON),
        "{message}"
    );
}

#[test]
fn waiting_for_an_alarm_that_is_ok_on_moto_returns_its_state_and_reason() {
    let moto = Moto::start();
    let (_, worker) = moto.seed();
    seed_cloudwatch(&moto, &worker);
    let ws = moto.workspace("123456789012");
    ws.write("runbooks/wait-ok.rhai", WAIT_OK);

    let (on_moto, writes) = run_script(&ws, "moto", "wait-ok", &[], 0);
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(on_moto["state"], "OK", "{on_moto}");
    assert_eq!(
        on_moto["reason"],
        "Threshold Crossed: 1 datapoint [0.21] was not greater than the threshold (0.5)."
    );
}

/// DisableAlarmActions / EnableAlarmActions exist in moto from 5.2.3 (5.2.1 answers 500);
/// .ci/run installs at least that.
#[test]
fn muting_an_alarm_for_maintenance_disables_and_enables_its_actions_on_moto() {
    let moto = Moto::start();
    let (_, worker) = moto.seed();
    seed_cloudwatch(&moto, &worker);
    let ws = moto.workspace("123456789012");
    ws.write("runbooks/mute.rhai", MUTE);

    let (on_moto, writes) = run_script(&ws, "moto", "mute", &[], 0);
    assert_eq!(
        writes,
        ["cloudwatch::disable_actions", "cloudwatch::enable_actions"]
    );
    assert_eq!(on_moto["muted"], true, "{on_moto}");
    assert_eq!(on_moto["unmuted"], true, "{on_moto}");
    assert!(actions_enabled_on_moto(&moto, "worker-cpu-high"));

    // A run that only mutes leaves moto's alarm muted: the write reached the emulator.
    ws.write(
        "runbooks/mute-only.rhai",
        r#"runbook(#{ id: "mute-only", version: "1.0.0", title: "Maintenance", severity: "P3" });
containment("Mute", |ctx| { cloudwatch::disable_actions(["worker-cpu-high"]); });
"#,
    );
    let (_, writes) = run_script(&ws, "moto", "mute-only", &[], 0);
    assert_eq!(writes, ["cloudwatch::disable_actions"]);
    assert!(!actions_enabled_on_moto(&moto, "worker-cpu-high"));
}

const SCALE: &str = r#"runbook(#{ id: "scale", version: "1.0.0", title: "Scale out", severity: "P3" });
containment("Scale the workers", |ctx| {
    let g = autoscaling::group("ec2-manager-worker");
    ctx.limits = [g.min, g.max, g.desired];
    let after = autoscaling::set_desired("ec2-manager-worker", 2, #{ timeout: "60s", every: "1s" });
    ctx.desired = after.desired;
    ctx.in_service = after.instances.filter(|i| i.lifecycle_state == "InService").len();
    try {
        autoscaling::set_desired("ec2-manager-worker", 9, #{});
        ctx.refused = "no";
    } catch (e) {
        ctx.refused = e.code;
    }
    autoscaling::suspend("ec2-manager-worker", ["Launch"]);
    ctx.suspended = autoscaling::group("ec2-manager-worker").suspended;
    autoscaling::resume("ec2-manager-worker", []);
    ctx.resumed = autoscaling::group("ec2-manager-worker").suspended;
});
"#;

#[test]
fn auto_scaling_capacity_and_processes_agree_between_moto_and_the_sim() {
    let moto = Moto::start();
    let (blue, _) = moto.seed();
    moto.scaling_group("ec2-manager-worker", &blue);
    let ws = moto.workspace("123456789012");
    ws.write("runbooks/scale.rhai", SCALE);
    let (on_moto, moto_writes) = run_script(&ws, "moto", "scale", &[], 0);
    let (on_sim, sim_writes) = run_script(&ws, "drill", "scale", &[], 0);
    assert_eq!(moto_writes, sim_writes);
    assert_eq!(
        moto_writes,
        [
            "autoscaling::set_desired",
            "autoscaling::suspend",
            "autoscaling::resume"
        ],
        "the capacity outside the limits is refused before it is sent"
    );
    for key in [
        "limits",
        "desired",
        "in_service",
        "refused",
        "suspended",
        "resumed",
    ] {
        assert_eq!(
            on_moto[key], on_sim[key],
            "{key}: moto {on_moto} sim {on_sim}"
        );
    }
    assert_eq!(on_moto["desired"], 2);
    assert_eq!(on_moto["refused"], "OutOfLimits");
    let desired = block(async {
        let out = moto
            .autoscaling()
            .describe_auto_scaling_groups()
            .auto_scaling_group_names("ec2-manager-worker")
            .send()
            .await
            .unwrap();
        out.auto_scaling_groups()[0].desired_capacity()
    });
    assert_eq!(desired, Some(2));
}

const REFRESH: &str = r#"runbook(#{ id: "refresh", version: "1.0.0", title: "Refresh", severity: "P3" });
containment("Refresh the workers", |ctx| {
    try {
        let r = autoscaling::refresh("ec2-manager-worker", #{ min_healthy: 50, every: "30s" });
        ctx.status = r.status;
        ctx.percent = r.percent_complete;
    } catch (e) {
        ctx.status = e.code;
        ctx.message = e.message;
    }
});
"#;

/// moto has no StartInstanceRefresh: the refresh and its wait are drilled on the sim, whose
/// refresh takes a minute per instance of simulated time.
#[test]
fn an_instance_refresh_is_waited_for_and_a_failed_one_fails_the_call() {
    let ws = Workspace::new();
    ws.write("runbooks/refresh.rhai", REFRESH);
    ws.write(
        "drills/refresh-clean.toml",
        "runbook = \"refresh@1.0.0\"\n[expect]\nstatus = \"ok\"\ncalls = [\"autoscaling::refresh\"]\n",
    );
    ws.write(
        "drills/refresh-fails.toml",
        "runbook = \"refresh@1.0.0\"\n[faults]\nrefresh_fails = [\"ec2-manager-worker\"]\n[expect]\nstatus = \"ok\"\n",
    );
    let r = ws.run(&[
        "drill",
        "--runbooks",
        "runbooks",
        "--drills",
        "drills",
        "--out",
        "out",
        "--results",
        "results",
    ]);
    r.expect_code(0);
    let ctx_of = |name: &str| {
        let path = std::fs::read_dir(ws.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.to_string_lossy().contains(name) && p.extension().is_some_and(|e| e == "jsonl")
            })
            .unwrap_or_else(|| panic!("a transcript for {name}"));
        of_type(&events(&path), "step_finished")[0]["ctx"].clone()
    };
    let clean = ctx_of("refresh-clean");
    assert_eq!(clean["status"], "Successful", "{clean}");
    assert_eq!(clean["percent"], 100);
    let failed = ctx_of("refresh-fails");
    assert_eq!(failed["status"], "RefreshFailed", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("ended Failed at 50%"),
        "{failed}"
    );
}
