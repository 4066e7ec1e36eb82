//! `runbook drill capture TRANSCRIPT`: a drill scenario written from a real run.
//!
//! The scenario pins the recorded runbook version and its parameters (a secret stays its
//! redaction marker: the drill passes the marker, never the secret), seeds the simulated cloud
//! with what the run's read-only calls saw (`seed`, a whole fleet inline: the instances with
//! their groups and volumes as first seen, the SSM parameters, the HTTP answers, the Run Command
//! outputs, and through [`Newer`] the listeners and target groups, CloudWatch series and alarms,
//! Auto Scaling groups, EBS snapshots and local programs' answers), scripts the faults that
//! happened at the operations and instances where they happened, and expects what the run
//! recorded: its status, each step's status, the writes sent in order, and the cloud state those
//! writes left (isolated, snapshotted, terminated, replaced, weights, desired capacity, restored).
//! Resource ids are the recorded ones, so the run's parameters and expectations hold unchanged.
//!
//! A metric is seeded as the sim models one: its level before the run, and `recovers_on` the
//! last cloud write before it was seen to change (at the level last seen). That keeps the cause:
//! a version of the runbook that no longer makes the write never sees the metric recover.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use toml::Value as T;

use crate::base::error::{Error, Result};
use crate::data::transcript::{self, ErrorRecord, Event, StepStatus};

/// The API operation a binding's failure is scripted at, in the sim's fault table.
fn operation(binding: &str) -> Option<&'static str> {
    Some(match binding {
        "ec2::describe" | "ec2::find" | "ec2::by_color" => "DescribeInstances",
        "ec2::status" | "ec2::wait_status_ok" => "DescribeInstanceStatus",
        "ec2::isolate" | "ec2::restore" => "ModifyNetworkInterfaceAttribute",
        "ec2::snapshot_volumes" => "CreateSnapshot",
        "ec2::stop" => "StopInstances",
        "ec2::start" => "StartInstances",
        "ec2::reboot" => "RebootInstances",
        "ec2::terminate" => "TerminateInstances",
        "ec2::create_image" => "CreateImage",
        "ec2::launch" => "RunInstances",
        "ec2::tag" => "CreateTags",
        "ec2::untag" => "DeleteTags",
        // The sim names Systems Manager's operations with their service (`SsmSendCommand`).
        "ssm::get_parameter" => "SsmGetParameter",
        "ssm::put_parameter" => "SsmPutParameter",
        "ssm::run_command" => "SsmSendCommand",
        "ssm::patch_states" => "SsmDescribeInstancePatchStates",
        "ec2::snapshots" => "DescribeSnapshots",
        "ec2::restore_volume" => "CreateVolume",
        "ec2::delete_volume" => "DeleteVolume",
        "elb::listener" => "DescribeListeners",
        "elb::target_health" | "elb::wait_healthy" => "DescribeTargetHealth",
        "elb::register" => "RegisterTargets",
        "elb::deregister" => "DeregisterTargets",
        "elb::set_weights" | "elb::shift" => "ModifyListener",
        "cloudwatch::metric" => "GetMetricData",
        "cloudwatch::alarm" | "cloudwatch::wait_alarm_ok" => "DescribeAlarms",
        "cloudwatch::disable_actions" => "DisableAlarmActions",
        "cloudwatch::enable_actions" => "EnableAlarmActions",
        "autoscaling::group" => "DescribeAutoScalingGroups",
        "autoscaling::set_desired" => "SetDesiredCapacity",
        "autoscaling::suspend" => "SuspendProcesses",
        "autoscaling::resume" => "ResumeProcesses",
        "autoscaling::refresh" => "StartInstanceRefresh",
        _ => return None,
    })
}

/// The API operation a failed call is scripted at: a restore whose new volume was made (and
/// deleted again) failed attaching it.
fn failed_operation(binding: &str, message: &str) -> Option<&'static str> {
    match binding {
        "ec2::restore_volume" if message.contains("the new volume") => Some("AttachVolume"),
        _ => operation(binding),
    }
}

/// Whether the sim scripts a fault of this operation per instance (it is told the instances
/// involved); the load balancer, CloudWatch, Auto Scaling, snapshot and volume-creation
/// operations are not.
fn per_instance(op: &str) -> bool {
    !matches!(
        op,
        "SsmGetParameter"
            | "SsmPutParameter"
            | "DescribeSnapshots"
            | "CreateVolume"
            | "DeleteVolume"
            | "DescribeListeners"
            | "DescribeTargetHealth"
            | "ModifyListener"
            | "GetMetricData"
            | "DescribeAlarms"
            | "DisableAlarmActions"
            | "EnableAlarmActions"
            | "DescribeAutoScalingGroups"
            | "SetDesiredCapacity"
            | "SuspendProcesses"
            | "ResumeProcesses"
            | "StartInstanceRefresh"
    )
}

/// Codes that are not the cloud's answer (the run's own stops, a waiter running out).
fn scripted(code: &str) -> bool {
    !matches!(
        code,
        "timed_out"
            | "aborted"
            | "WaiterTimeout"
            | "condition_failed"
            | "bad_argument"
            | "denied"
            // A shift's gates and a local program's own deadline: the sim's targets and
            // programs answer them (`unhealthy_with_traffic`, `impaired`), not an API error.
            | "ShiftRolledBack"
            | "ShiftGateFailed"
            | "TargetsUnhealthy"
            | "CommandTimedOut"
            // A refresh that ended badly is scripted as `refresh_failures`, not as an error of
            // the call that started it.
            | "RefreshFailed"
    )
}

/// The API requests a binding call makes, in order, as far as a `faults.calls` count needs
/// them: the lookups before its own operation (an instance described first) count too.
fn requests(binding: &str) -> Vec<&'static str> {
    let lookup: &[&'static str] = match binding {
        "ec2::isolate" | "ec2::snapshot_volumes" | "ec2::restore_volume" => &["DescribeInstances"],
        "autoscaling::set_desired" => &["DescribeAutoScalingGroups"],
        _ => &[],
    };
    let mut out = lookup.to_vec();
    out.extend(operation(binding));
    match binding {
        "ec2::restore_volume" => out.push("AttachVolume"),
        // It reads the group it set back (once, or polling: see [`polls`]).
        "autoscaling::set_desired" => out.push("DescribeAutoScalingGroups"),
        _ => {}
    }
    out
}

/// The requests a binding call makes, its lookups and any polling included (see [`requests`]
/// and [`polls`]), and the operation it polls.
fn made(binding: &str, args: &Value) -> (Vec<&'static str>, Option<&'static str>) {
    let mut ops = requests(binding);
    let polled = polls(binding, args);
    if let Some(p) = polled.filter(|p| !ops.contains(p)) {
        ops.push(p);
    }
    (ops, polled)
}

/// The operation a binding polls while it waits (as many requests as the wait took, which the
/// transcript does not say): a call count past one of these may be off.
fn polls(binding: &str, args: &Value) -> Option<&'static str> {
    Some(match binding {
        "ec2::wait_status_ok" => "DescribeInstanceStatus",
        "ec2::stop" | "ec2::start" | "ec2::terminate" if args["wait"] != false => {
            "DescribeInstances"
        }
        "ec2::wait_state" => "DescribeInstances",
        "elb::wait_healthy" => "DescribeTargetHealth",
        "cloudwatch::wait_alarm_ok" => "DescribeAlarms",
        "autoscaling::set_desired" if args["wait"] != false => "DescribeAutoScalingGroups",
        _ => return None,
    })
}

/// The Auto Scaling groups, SSM parameters or alarms (by name) a call is for: the sim matches a
/// `faults.calls` entry's `resource` against them.
fn resources(binding: &str, args: &Value) -> Vec<String> {
    let key = match binding {
        "autoscaling::group" => "group",
        b if b.starts_with("autoscaling::") => "auto_scaling_group",
        "ssm::get_parameter" | "ssm::put_parameter" => "name",
        "cloudwatch::alarm" | "cloudwatch::wait_alarm_ok" => "alarm",
        "cloudwatch::disable_actions" | "cloudwatch::enable_actions" => "alarms",
        _ => return Vec::new(),
    };
    match &args[key] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// One recorded call as the sim counts it for `faults.calls`.
struct Counted {
    /// The requests it made (see [`requests`]), up to the one that failed.
    ops: Vec<&'static str>,
    /// The instances it was for.
    ids: Vec<String>,
    /// The named resources it was for (see [`resources`]).
    names: Vec<String>,
    /// The operation it failed at, with the error the cloud answered.
    failed: Option<(&'static str, String, String)>,
    polled: Option<&'static str>,
    binding: String,
}

impl Counted {
    /// How many of this call's requests the sim counts for a fault of `op` on `on` (an
    /// instance, a resource).
    fn counts(&self, op: &str, on: &On) -> usize {
        let for_it = match on {
            On::Any => true,
            On::Instance(i) => self.ids.contains(i),
            On::Resource(r) => self.names.contains(r),
        };
        if for_it {
            self.ops.iter().filter(|o| **o == op).count()
        } else {
            0
        }
    }

    /// What a fault of `op` at this call is scripted on.
    fn on(&self, op: &str) -> On {
        if per_instance(op) {
            self.ids.first().cloned().map_or(On::Any, On::Instance)
        } else {
            // A resource only for a call of exactly one (a call of several fails for any of them).
            match self.names.as_slice() {
                [one] => On::Resource(one.clone()),
                _ => On::Any,
            }
        }
    }
}

/// What a call fault is scripted on: any call of its operation, or those for one instance or
/// one named resource.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum On {
    Any,
    Instance(String),
    Resource(String),
}

/// The faults of the calls that failed: an operation that failed every time it was called
/// fails always (`errors`); one that failed and then went through fails the same calls
/// (`calls`, counted per operation and instance). Notes where a wait's polling makes the count
/// uncertain.
fn call_faults(counted: &[Counted], notes: &mut Vec<String>) -> (Vec<T>, Vec<T>) {
    let keys: BTreeSet<(&'static str, On)> = counted
        .iter()
        .filter_map(|c| {
            let (op, _, _) = c.failed.as_ref()?;
            Some((*op, c.on(op)))
        })
        .collect();
    let (mut always, mut calls) = (Vec::new(), Vec::new());
    for (op, on) in keys {
        // (n, code, message) of every counted call, None for one that went through.
        let mut seq: Vec<Option<(String, String)>> = Vec::new();
        let mut polled_by: Option<&str> = None;
        for c in counted {
            let n = c.counts(op, &on);
            if n == 0 {
                continue;
            }
            let failed_here = c.failed.as_ref().filter(|f| f.0 == op);
            if polled_by.is_none()
                && seq.iter().all(Option::is_none)
                && c.polled == Some(op)
                && failed_here.is_none()
            {
                polled_by = Some(c.binding.as_str());
            }
            // Its requests before the last went through; the last failed if the call did there.
            seq.extend(std::iter::repeat_n(None, n - 1));
            seq.push(failed_here.map(|f| (f.1.clone(), f.2.clone())));
        }
        let fault = |pairs: Vec<(&str, T)>| -> toml::Table {
            let mut t = toml::Table::new();
            t.insert("operation".into(), T::String(op.to_string()));
            match &on {
                On::Any => {}
                On::Instance(i) => {
                    t.insert("instance".into(), T::String(i.clone()));
                }
                On::Resource(r) => {
                    t.insert("resource".into(), T::String(r.clone()));
                }
            }
            for (k, v) in pairs {
                t.insert(k.into(), v);
            }
            t
        };
        if seq.iter().all(Option::is_some) {
            if let Some(Some((code, message))) = seq.first() {
                always.push(T::Table(fault(vec![
                    ("code", T::String(code.clone())),
                    ("message", T::String(message.clone())),
                ])));
            }
            continue;
        }
        if let Some(b) = polled_by {
            notes.push(format!(
                "{op}{}: {b} polled it before it failed, once per try, and the transcript does not say how often: the drill may fail another call of it",
                match &on {
                    On::Any => String::new(),
                    On::Instance(x) | On::Resource(x) => format!(" on {x}"),
                }
            ));
        }
        // Runs of calls in a row that failed with the same error.
        let mut n = 0usize;
        while n < seq.len() {
            let Some((code, message)) = seq[n].clone() else {
                n += 1;
                continue;
            };
            let mut end = n + 1;
            while seq
                .get(end)
                .is_some_and(|s| s.as_ref().is_some_and(|s| s.0 == code))
            {
                end += 1;
            }
            let int = |v: usize| T::Integer(i64::try_from(v).unwrap_or(i64::MAX));
            calls.push(T::Table(fault(vec![
                ("nth", int(n + 1)),
                ("attempts", int(end - n)),
                ("error", T::String(code)),
                ("message", T::String(message)),
            ])));
            n = end;
        }
    }
    (always, calls)
}

/// `...: instance refresh not finished ...: ID P% (STATUS)` (a refresh's wait that ran out): the
/// status and the percentage it was last seen at.
fn refresh_stuck(message: &str) -> Option<(String, i64)> {
    let (_, last) = message.rsplit_once(": ")?;
    let mut words = last.split_whitespace().skip(1);
    let percent = words.next()?.strip_suffix('%')?.parse().ok()?;
    let status = words.next()?.strip_prefix('(')?.strip_suffix(')')?;
    Some((status.to_string(), percent))
}

/// `instance refresh ID of GROUP ended STATUS at P%: REASON` (the binding's `RefreshFailed`):
/// the status, the percentage and the reason.
fn refresh_ending(message: &str) -> Option<(String, i64, String)> {
    let (_, rest) = message.split_once(" ended ")?;
    let (status, rest) = rest.split_once(" at ")?;
    let (percent, reason) = rest.split_once('%')?;
    let reason = reason.strip_prefix(':').unwrap_or(reason).trim();
    Some((
        status.trim().to_string(),
        percent.trim().parse().ok()?,
        reason.to_string(),
    ))
}

/// The instance ids a call's arguments name (the first is the one a fault is scripted for).
fn targets(args: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["id", "ids", "instances"] {
        match args.get(key) {
            Some(Value::String(s)) => out.push(s.clone()),
            Some(Value::Array(a)) => {
                out.extend(a.iter().filter_map(|v| v.as_str().map(String::from)))
            }
            _ => {}
        }
    }
    for outer in ["targets", "resolved"] {
        if let Some(Value::Array(a)) = args.get(outer).and_then(|t| t.get("instances")) {
            out.extend(a.iter().filter_map(|v| v.as_str().map(String::from)));
        }
    }
    out.retain(|s| s.starts_with("i-"));
    out.dedup();
    out
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn strings(v: &Value) -> T {
    T::Array(
        v.as_array()
            .map(|a| a.iter().map(|s| T::String(text(s))).collect())
            .unwrap_or_default(),
    )
}

/// Where an instance no read described is placed (the fixture requires a VPC and a subnet).
const SOME_VPC: &str = "vpc-00000000000000000";
const SOME_SUBNET: &str = "subnet-00000000000000000";

/// An instance as the fleet fixture declares it, from a read result.
fn instance(v: &Value) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("vpc".into(), T::String(SOME_VPC.into()));
    t.insert("subnet".into(), T::String(SOME_SUBNET.into()));
    t.insert("id".into(), T::String(text(&v["id"])));
    for (key, field) in [
        ("type", "type"),
        ("state", "state"),
        ("image", "image"),
        ("vpc", "vpc"),
        ("subnet", "subnet"),
        ("private_ip", "private_ip"),
        ("launch_time", "launch_time"),
    ] {
        if let Some(s) = v[field].as_str().filter(|s| !s.is_empty()) {
            t.insert(key.into(), T::String(s.to_string()));
        }
    }
    t.insert("security_groups".into(), strings(&v["security_groups"]));
    t.insert("volumes".into(), strings(&v["volumes"]));
    let mut tags = toml::Table::new();
    if let Some(m) = v["tags"].as_object() {
        for (k, val) in m {
            tags.insert(k.clone(), T::String(text(val)));
        }
    }
    t.insert("tags".into(), T::Table(tags));
    t
}

/// Every instance-shaped object in a result (a map with an `i-` id and a state).
fn instances_in(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| instances_in(x, out)),
        Value::Object(m)
            if m.get("id")
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with("i-"))
                && m.contains_key("state")
                && m.contains_key("security_groups") =>
        {
            out.push(v.clone())
        }
        _ => {}
    }
}

/// The text the sim notes for a write, which a metric's `recovers_on` is matched against (see
/// `FleetMetric`); None for a write that changes nothing in the cloud (a note, a post).
fn trigger(binding: &str, args: &Value) -> Option<String> {
    let first_id = || targets(args).first().cloned();
    match binding {
        "ssm::run_command" => args["parameters"]["commands"]
            .as_array()
            .and_then(|c| c.first())
            .map(text)
            .filter(|c| !c.is_empty()),
        "autoscaling::set_desired" => Some(format!(
            "SetDesiredCapacity {}",
            text(&args["auto_scaling_group"])
        )),
        "elb::shift" | "elb::set_weights" => {
            Some(format!("ModifyListener {}", text(&args["listener"])))
        }
        "local::run" => Some(format!(
            "Local {} {}",
            text(&args["program"]),
            local_line(args)
        )),
        "ec2::stop" | "ec2::start" | "ec2::reboot" | "ec2::terminate" => {
            let op = operation(binding)?;
            Some(first_id().map_or_else(|| op.to_string(), |id| format!("{op} {id}")))
        }
        b if b.starts_with("ec2::") => operation(b).map(str::to_string),
        _ => None,
    }
}

/// A local program's arguments as the sim matches its `local_commands` rules (joined by spaces).
fn local_line(args: &Value) -> String {
    args["args"]
        .as_array()
        .map(|a| a.iter().map(text).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The datapoints an alarm's reason lists (`... datapoints [97, 97, 12] were ...`).
fn reason_points(reason: &str) -> Vec<f64> {
    let Some((_, rest)) = reason.split_once('[') else {
        return Vec::new();
    };
    let Some((inside, _)) = rest.split_once(']') else {
        return Vec::new();
    };
    inside
        .split(',')
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .collect()
}

/// The threshold and comparison an alarm's reason states (`were not greater than the threshold (85)`).
fn reason_threshold(reason: &str) -> Option<(f64, &'static str)> {
    let (words, rest) = reason.split_once(" the threshold (")?;
    let threshold = rest.split_once(')')?.0.trim().parse::<f64>().ok()?;
    let comparison = [
        ("greater than or equal to", "GreaterThanOrEqualToThreshold"),
        ("less than or equal to", "LessThanOrEqualToThreshold"),
        ("less than", "LessThanThreshold"),
        ("greater than", "GreaterThanThreshold"),
    ]
    .into_iter()
    .find(|(w, _)| words.ends_with(w))?
    .1;
    Some((threshold, comparison))
}

/// The instance ids a message names (`i-0123 is unhealthy (...)`).
fn ids_in(message: &str) -> Vec<String> {
    let mut out: Vec<String> = message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("i-") && w.len() > 2)
        .map(str::to_string)
        .collect();
    out.dedup();
    out
}

/// `a=100, b=0` after `marker` in a message, as weights by group name.
fn weights_after(message: &str, marker: &str) -> Option<BTreeMap<String, i64>> {
    let (_, rest) = message.split_once(marker)?;
    let list = rest.split(" (").next().unwrap_or(rest);
    let weights: BTreeMap<String, i64> = list
        .split(',')
        .filter_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect();
    (!weights.is_empty()).then_some(weights)
}

/// A target group's name, from its name or ARN (`...:targetgroup/NAME/hex`).
fn group_name(group: &str) -> String {
    match group.split_once(":targetgroup/") {
        Some((_, rest)) => rest.split('/').next().unwrap_or(rest).to_string(),
        None => group.to_string(),
    }
}

/// A listener as first seen: its load balancer, port, protocol and forward (group, weight).
struct ListenerSeen {
    load_balancer: String,
    port: i64,
    protocol: String,
    forward: Vec<(String, i64)>,
}

/// A target group as seen: its ARN, port and registered targets.
#[derive(Default)]
struct GroupSeen {
    arn: String,
    port: Option<i64>,
    targets: BTreeSet<String>,
}

/// A metric series as seen: its level before the run, the last level seen, and the write after
/// which it changed (Some(None): it changed after no write the sim can tie it to).
struct MetricSeen {
    namespace: String,
    name: String,
    dimensions: BTreeMap<String, String>,
    first: f64,
    last: f64,
    changed_after: Option<Option<String>>,
}

/// An alarm as seen: its definition, and its datapoints when first and last seen.
struct AlarmSeen {
    namespace: Option<String>,
    metric: Option<String>,
    threshold: f64,
    comparison: String,
    periods: usize,
    actions_enabled: bool,
    first: Vec<f64>,
    last: Vec<f64>,
    changed_after: Option<Option<String>>,
}

/// An Auto Scaling group as first seen.
struct ScalingSeen {
    min: i64,
    max: i64,
    desired: i64,
    instances: Vec<String>,
    suspended: Vec<String>,
}

/// A local program's answers, in the order the run got them.
struct LocalSeen {
    program: String,
    line: String,
    stdout: Vec<String>,
    stderr: String,
    exit_code: i64,
}

/// What the calls of the load balancer, CloudWatch, Auto Scaling, EBS snapshot and local program
/// bindings saw, and what their writes left: seeded into the drill's fleet and expected.
#[derive(Default)]
struct Newer {
    listeners: BTreeMap<String, ListenerSeen>,
    groups: BTreeMap<String, GroupSeen>,
    unhealthy_with_traffic: BTreeSet<String>,
    impaired: BTreeSet<String>,
    /// Targets a health read showed, and whether every read of them said `unhealthy` (true
    /// until one says `healthy`): those fail their health checks for the whole drill.
    never_healthy: BTreeMap<String, bool>,
    weights: BTreeMap<String, i64>,
    metrics: Vec<MetricSeen>,
    alarms: BTreeMap<String, AlarmSeen>,
    scaling: BTreeMap<String, ScalingSeen>,
    desired: BTreeMap<String, i64>,
    /// Groups an instance refresh was started on, and how the ones that failed ended
    /// (status, percentage, reason).
    refreshed: BTreeSet<String>,
    refresh_failures: BTreeMap<String, (String, i64, String)>,
    launched: BTreeSet<String>,
    snapshots: BTreeMap<String, Value>,
    restored_volumes: BTreeMap<String, String>,
    restored: BTreeSet<String>,
    deleted: BTreeSet<String>,
    local: Vec<LocalSeen>,
    /// The last write the sim notes (see [`trigger`]): what a metric that changes next follows.
    last_write: Option<String>,
    notes: Vec<String>,
}

impl Newer {
    fn group(&mut self, name_or_arn: &str) -> &mut GroupSeen {
        let g = self.groups.entry(group_name(name_or_arn)).or_default();
        if g.arn.is_empty() && name_or_arn.starts_with("arn:") {
            g.arn = name_or_arn.to_string();
        }
        g
    }

    /// A listener view (`elb::listener`'s result, or a shift's): first seen wins; `weights`
    /// replaces the view's when given (the weights before a write).
    fn listener(&mut self, view: &Value, arn: &str, weights: Option<&BTreeMap<String, i64>>) {
        let mut forward = Vec::new();
        for f in view["forward"].as_array().into_iter().flatten() {
            let name = f["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map_or_else(|| group_name(&text(&f["target_group"])), str::to_string);
            let arn_of = text(&f["target_group"]);
            if arn_of.starts_with("arn:") {
                self.group(&arn_of);
            } else {
                self.group(&name);
            }
            let weight = weights
                .and_then(|w| w.get(&name).copied())
                .or_else(|| f["weight"].as_i64())
                .unwrap_or(0);
            forward.push((name, weight));
        }
        if forward.is_empty()
            && let Some(w) = weights
        {
            for (name, weight) in w {
                self.group(name);
                forward.push((name.clone(), *weight));
            }
        }
        self.listeners
            .entry(arn.to_string())
            .or_insert_with(|| ListenerSeen {
                load_balancer: view["load_balancer"]
                    .as_str()
                    .map_or_else(|| format!("{arn} (load balancer)"), str::to_string),
                port: view["port"].as_i64().unwrap_or(443),
                protocol: view["protocol"]
                    .as_str()
                    .map_or_else(|| "HTTPS".to_string(), str::to_string),
                forward,
            });
    }

    fn metric(&mut self, namespace: &str, name: &str, dims: BTreeMap<String, String>) -> usize {
        match self
            .metrics
            .iter()
            .position(|m| m.namespace == namespace && m.name == name && m.dimensions == dims)
        {
            Some(i) => i,
            None => {
                self.metrics.push(MetricSeen {
                    namespace: namespace.into(),
                    name: name.into(),
                    dimensions: dims,
                    first: f64::NAN,
                    last: f64::NAN,
                    changed_after: None,
                });
                self.metrics.len() - 1
            }
        }
    }

    fn alarm(&mut self, name: &str, view: &Value, reason: &str) {
        let points = reason_points(reason);
        let write = self.last_write.clone();
        let (threshold, comparison) = view["threshold"]
            .as_f64()
            .map(|t| (t, text(&view["comparison"])))
            .or_else(|| reason_threshold(reason).map(|(t, c)| (t, c.to_string())))
            .unwrap_or((0.0, "GreaterThanThreshold".into()));
        let a = self
            .alarms
            .entry(name.to_string())
            .or_insert_with(|| AlarmSeen {
                namespace: view["namespace"].as_str().map(str::to_string),
                metric: view["metric"].as_str().map(str::to_string),
                threshold,
                comparison,
                periods: points.len().max(1),
                actions_enabled: view["actions_enabled"].as_bool().unwrap_or(true),
                first: points.clone(),
                last: points.clone(),
                changed_after: None,
            });
        if a.namespace.is_none() {
            a.namespace = view["namespace"].as_str().map(str::to_string);
            a.metric = view["metric"].as_str().map(str::to_string);
        }
        if !points.is_empty() {
            if a.changed_after.is_none() && points.last() != a.first.last() {
                a.changed_after = Some(write);
            }
            a.last = points;
        }
    }

    /// One recorded call (neither planned nor echoed on resume).
    fn see(&mut self, binding: &str, args: &Value, result: &Value, error: Option<&ErrorRecord>) {
        let message = error.map(|e| e.message.as_str()).unwrap_or_default();
        let code = error.and_then(|e| e.code.as_deref()).unwrap_or_default();
        match (binding, error.is_some()) {
            ("elb::listener", false) => {
                let arn = text(&args["listener"]);
                self.listener(result, &arn, None);
            }
            ("elb::target_health" | "elb::wait_healthy", false) => {
                let g = self.group(&text(&args["group"]));
                let mut states = Vec::new();
                for h in result.as_array().into_iter().flatten() {
                    g.targets.insert(text(&h["id"]));
                    g.port = g.port.or(h["port"].as_i64());
                    states.push((text(&h["id"]), text(&h["state"])));
                }
                for (id, state) in states {
                    match state.as_str() {
                        "unhealthy" => {
                            self.never_healthy.entry(id).or_insert(true);
                        }
                        "healthy" => {
                            self.never_healthy.insert(id, false);
                        }
                        _ => {}
                    }
                }
            }
            // Targets that never became healthy: they fail their health checks in the drill.
            ("elb::wait_healthy", true) if code == "WaiterTimeout" => {
                let ids = ids_in(message);
                self.impaired.extend(ids.iter().cloned());
                self.group(&text(&args["group"])).targets.extend(ids);
            }
            ("elb::shift", false) => {
                let arn = text(&args["listener"]);
                let (from, to) = (text(&result["from"]), text(&result["to"]));
                // Before its first step the shift moves weights on a 100 basis: all of it on
                // `from` (what a listener whose weights no read showed is seeded with).
                let mut before: BTreeMap<String, i64> = BTreeMap::new();
                before.insert(from, 100);
                before.insert(to.clone(), 0);
                self.listener(result, &arn, Some(&before));
                let g = self.group(&to);
                for t in result["targets"].as_array().into_iter().flatten() {
                    g.targets.insert(text(t));
                }
                self.final_weights(result);
            }
            ("elb::shift", true) => {
                let arn = text(&args["listener"]);
                let (from, to) = (text(&args["from"]), text(&args["to"]));
                let ids = ids_in(message.split_once("; ").map_or(message, |m| m.0));
                match code {
                    "ShiftRolledBack" | "ShiftGateFailed" => {
                        // Healthy until traffic reached it: it fails under traffic.
                        self.unhealthy_with_traffic.insert(to.clone());
                        let original = weights_after(message, "weights are back to ");
                        let mut before = original.clone().unwrap_or_default();
                        if before.is_empty() && !from.is_empty() {
                            before.insert(from, 100);
                            before.insert(to.clone(), 0);
                        }
                        self.listener(&Value::Null, &arn, Some(&before));
                        if let Some(w) = original.or_else(|| weights_after(message, "left at ")) {
                            self.weights = w;
                        }
                    }
                    "TargetsUnhealthy" => {
                        // Failing before any traffic: the targets fail their health checks.
                        self.impaired.extend(ids.iter().cloned());
                        let mut before = BTreeMap::new();
                        if !from.is_empty() {
                            before.insert(from, 100);
                        }
                        before.insert(to.clone(), 0);
                        self.listener(&Value::Null, &arn, Some(&before));
                    }
                    _ => {}
                }
                let g = self.group(&to);
                g.targets.extend(ids);
            }
            ("elb::set_weights", false) => {
                let arn = text(&args["listener"]);
                if !self.listeners.contains_key(&arn) {
                    self.notes.push(format!(
                        "the weights of {arn} before elb::set_weights were not read: seeded as it left them"
                    ));
                }
                self.listener(result, &arn, None);
                self.final_weights(result);
            }
            ("cloudwatch::metric", false) => {
                let dims: BTreeMap<String, String> = args["dimensions"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                    .unwrap_or_default();
                let points: Vec<f64> = result["points"]
                    .as_array()
                    .map(|p| p.iter().filter_map(|x| x["value"].as_f64()).collect())
                    .unwrap_or_default();
                let Some(latest) = result["latest"].as_f64().or(points.last().copied()) else {
                    return;
                };
                let write = self.last_write.clone();
                let i = self.metric(&text(&args["namespace"]), &text(&args["name"]), dims);
                let m = &mut self.metrics[i];
                if m.first.is_nan() {
                    m.first = points.first().copied().unwrap_or(latest);
                    m.last = m.first;
                }
                if m.changed_after.is_none() && latest != m.first {
                    m.changed_after = Some(write.clone());
                    // Changed before the run made any write: it was at this level already.
                    if write.is_none() {
                        m.first = latest;
                        m.changed_after = None;
                    }
                }
                m.last = latest;
            }
            ("cloudwatch::alarm" | "cloudwatch::wait_alarm_ok", false) => {
                let name = text(&args["alarm"]);
                let reason = text(&result["reason"]);
                self.alarm(&name, result, &reason);
            }
            ("cloudwatch::wait_alarm_ok", true) if code == "WaiterTimeout" => {
                let name = text(&args["alarm"]);
                self.alarm(&name, &Value::Null, message);
            }
            ("autoscaling::group", false) => self.scaling_group(result),
            ("autoscaling::set_desired", _) => {
                self.scaling_group(&args["resolved"]);
                let name = text(&args["auto_scaling_group"]);
                if error.is_none() {
                    let before: BTreeSet<String> = self
                        .scaling
                        .get(&name)
                        .map(|g| g.instances.iter().cloned().collect())
                        .unwrap_or_default();
                    for i in result["instances"].as_array().into_iter().flatten() {
                        let id = text(&i["id"]);
                        if !before.contains(&id) {
                            self.launched.insert(id);
                        }
                    }
                    let desired = result["desired"].as_i64().or(args["desired"].as_i64());
                    if let Some(d) = desired {
                        self.desired.insert(name, d);
                    }
                }
            }
            ("autoscaling::refresh", _) => {
                let name = text(&args["auto_scaling_group"]);
                if message.contains("instance refresh not finished") {
                    // A wait that ran out: the refresh stays where it was last seen.
                    match refresh_stuck(message) {
                        Some((status, percent)) => {
                            self.refresh_failures
                                .insert(name.clone(), (status, percent, String::new()));
                        }
                        None => self.notes.push(format!(
                            "the instance refresh of {name} did not finish, at a progress the capture cannot read ({message}): not scripted"
                        )),
                    }
                } else if code == "RefreshFailed" {
                    match refresh_ending(message) {
                        Some(ending) => {
                            self.refresh_failures.insert(name.clone(), ending);
                        }
                        None => self.notes.push(format!(
                            "the instance refresh of {name} failed in words the capture does not know ({message}): not scripted"
                        )),
                    }
                }
                self.refreshed.insert(name);
            }
            ("ec2::snapshots", false) => {
                for s in result.as_array().into_iter().flatten() {
                    self.snapshots
                        .entry(text(&s["id"]))
                        .or_insert_with(|| s.clone());
                }
            }
            ("ec2::restore_volume", _) => {
                let snap = text(&args["snapshot"]);
                if let Some(vol) = result["volume"].as_str() {
                    self.restored.insert(snap.clone());
                    self.restored_volumes.insert(vol.to_string(), snap.clone());
                }
                // The binding deletes the volume it made when the restore fails after it.
                if message.contains("the new volume") && message.contains("was deleted") {
                    self.restored.insert(snap.clone());
                    self.deleted.insert(snap);
                }
            }
            ("ec2::delete_volume", false) => {
                if let Some(snap) = self.restored_volumes.get(&text(&args["id"])) {
                    self.deleted.insert(snap.clone());
                }
            }
            ("local::run", false) => {
                let program = text(&args["program"]);
                let line = local_line(args);
                let stdout = text(&result["stdout"]);
                match self
                    .local
                    .iter_mut()
                    .find(|l| l.program == program && l.line == line)
                {
                    Some(l) => l.stdout.push(stdout),
                    None => self.local.push(LocalSeen {
                        program,
                        line,
                        stdout: vec![stdout],
                        stderr: text(&result["stderr"]),
                        exit_code: result["exit_code"].as_i64().unwrap_or(0),
                    }),
                }
            }
            _ => {}
        }
    }

    fn final_weights(&mut self, view: &Value) {
        if let Some(w) = view["weights"].as_object() {
            self.weights = w
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_i64()?)))
                .collect();
        }
    }

    fn scaling_group(&mut self, g: &Value) {
        let Some(name) = g["name"].as_str() else {
            return;
        };
        self.scaling
            .entry(name.to_string())
            .or_insert_with(|| ScalingSeen {
                min: g["min"].as_i64().unwrap_or(0),
                max: g["max"].as_i64().unwrap_or(0),
                desired: g["desired"].as_i64().unwrap_or(0),
                instances: g["instances"]
                    .as_array()
                    .map(|a| a.iter().map(|i| text(&i["id"])).collect())
                    .unwrap_or_default(),
                suspended: g["suspended"]
                    .as_array()
                    .map(|a| a.iter().map(text).collect())
                    .unwrap_or_default(),
            });
    }

    /// The instances the seed must declare (targets, group members) and must leave out (those a
    /// group launched during the run).
    fn instances(&self, seen: &mut BTreeMap<String, Value>) {
        let needed = self
            .groups
            .values()
            .flat_map(|g| g.targets.iter())
            .chain(self.scaling.values().flat_map(|g| g.instances.iter()));
        for id in needed {
            if !self.launched.contains(id) {
                seen.entry(id.clone()).or_insert_with(|| {
                    serde_json::json!({ "id": id, "state": "running", "security_groups": [], "volumes": [] })
                });
            }
        }
        for id in &self.launched {
            seen.remove(id);
        }
    }

    /// Writes what was seen into the seed, the faults and the expected cloud.
    fn write(
        mut self,
        seed: &mut toml::Table,
        faults: &mut toml::Table,
        cloud: &mut toml::Table,
        seen: &BTreeMap<String, Value>,
        started: &str,
        head: &mut Vec<String>,
    ) {
        let table = |pairs: Vec<(&str, T)>| -> T {
            T::Table(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        };
        let strs = |v: &mut dyn Iterator<Item = &String>| -> T {
            T::Array(v.map(|s| T::String(s.clone())).collect())
        };
        if !self.groups.is_empty() {
            let groups = self
                .groups
                .iter()
                .map(|(name, g)| {
                    let mut pairs = vec![("name", T::String(name.clone()))];
                    if !g.arn.is_empty() {
                        pairs.push(("arn", T::String(g.arn.clone())));
                    }
                    pairs.push(("port", T::Integer(g.port.unwrap_or(80))));
                    pairs.push(("targets", strs(&mut g.targets.iter())));
                    table(pairs)
                })
                .collect();
            seed.insert("target_groups".into(), T::Array(groups));
        }
        if !self.listeners.is_empty() {
            let listeners = self
                .listeners
                .iter()
                .map(|(arn, l)| {
                    let forward = l
                        .forward
                        .iter()
                        .map(|(g, w)| {
                            table(vec![
                                ("target_group", T::String(g.clone())),
                                ("weight", T::Integer(*w)),
                            ])
                        })
                        .collect();
                    table(vec![
                        ("arn", T::String(arn.clone())),
                        ("load_balancer", T::String(l.load_balancer.clone())),
                        ("port", T::Integer(l.port)),
                        ("protocol", T::String(l.protocol.clone())),
                        ("forward", T::Array(forward)),
                    ])
                })
                .collect();
            seed.insert("listeners".into(), T::Array(listeners));
        }
        // An alarm whose metric no read named: its datapoints are the series.
        let mut metrics = self.metrics;
        let mut alarms = Vec::new();
        for (name, a) in &self.alarms {
            let candidates: Vec<usize> = metrics
                .iter()
                .enumerate()
                .filter(|(_, m)| {
                    a.namespace.as_ref().is_none_or(|n| *n == m.namespace)
                        && a.metric.as_ref().is_none_or(|n| *n == m.name)
                })
                .map(|(i, _)| i)
                .collect();
            let (namespace, metric, dims) = match (candidates.first(), &a.namespace, &a.metric) {
                (Some(&i), _, _) => (
                    metrics[i].namespace.clone(),
                    metrics[i].name.clone(),
                    metrics[i].dimensions.clone(),
                ),
                (None, Some(ns), Some(m)) => {
                    match (a.first.last(), a.last.last()) {
                        (Some(first), Some(last)) => metrics.push(MetricSeen {
                            namespace: ns.clone(),
                            name: m.clone(),
                            dimensions: BTreeMap::new(),
                            first: *first,
                            last: *last,
                            changed_after: a.changed_after.clone(),
                        }),
                        _ => head.push(format!(
                            "alarm {name}: no datapoints seen, its metric is not seeded"
                        )),
                    }
                    (ns.clone(), m.clone(), BTreeMap::new())
                }
                _ => {
                    head.push(format!(
                        "alarm {name}: which metric it watches was never seen, so it is not seeded"
                    ));
                    continue;
                }
            };
            let mut pairs = vec![
                ("name", T::String(name.clone())),
                ("namespace", T::String(namespace)),
                ("metric", T::String(metric)),
            ];
            if !dims.is_empty() {
                pairs.push((
                    "dimensions",
                    T::Table(dims.into_iter().map(|(k, v)| (k, T::String(v))).collect()),
                ));
            }
            pairs.push(("threshold", T::Float(a.threshold)));
            pairs.push(("comparison", T::String(a.comparison.clone())));
            pairs.push((
                "evaluation_periods",
                T::Integer(i64::try_from(a.periods).unwrap_or(5)),
            ));
            pairs.push(("actions_enabled", T::Boolean(a.actions_enabled)));
            alarms.push(table(pairs));
        }
        let mut series = Vec::new();
        for m in metrics.into_iter().filter(|m| !m.first.is_nan()) {
            let mut pairs = vec![
                ("namespace", T::String(m.namespace.clone())),
                ("name", T::String(m.name.clone())),
                (
                    "dimensions",
                    T::Table(
                        m.dimensions
                            .into_iter()
                            .map(|(k, v)| (k, T::String(v)))
                            .collect(),
                    ),
                ),
                ("value", T::Float(m.first)),
            ];
            match &m.changed_after {
                Some(Some(write)) => {
                    pairs.push(("recovers_on", T::String(write.clone())));
                    pairs.push(("recovered", T::Float(m.last)));
                }
                Some(None) => head.push(format!(
                    "{} {} went from {} to {} after no write the sim can tie it to: seeded at {}",
                    m.namespace, m.name, m.first, m.last, m.first
                )),
                None => {}
            }
            series.push(table(pairs));
        }
        if !series.is_empty() {
            seed.insert("metrics".into(), T::Array(series));
        }
        if !alarms.is_empty() {
            seed.insert("alarms".into(), T::Array(alarms));
        }
        // A group refreshed but never read: the sim needs it to start the refresh.
        for name in &self.refreshed {
            if !self.scaling.contains_key(name) {
                head.push(format!(
                    "Auto Scaling group {name} was refreshed but never read: seeded empty, so its refresh takes the sim's minute"
                ));
                self.scaling.insert(
                    name.clone(),
                    ScalingSeen {
                        min: 0,
                        max: 0,
                        desired: 0,
                        instances: Vec::new(),
                        suspended: Vec::new(),
                    },
                );
            }
        }
        if !self.refresh_failures.is_empty() {
            let list = std::mem::take(&mut self.refresh_failures)
                .into_iter()
                .map(|(group, (status, percent, reason))| {
                    table(vec![
                        ("group", T::String(group)),
                        ("status", T::String(status)),
                        ("percent", T::Integer(percent)),
                        ("reason", T::String(reason)),
                    ])
                })
                .collect();
            faults.insert("refresh_failures".into(), T::Array(list));
        }
        if !self.scaling.is_empty() {
            let mut templates = Vec::new();
            let mut groups = Vec::new();
            for (name, g) in &self.scaling {
                // The group launches like its first member (no read shows its launch template).
                let like = g.instances.iter().find_map(|id| seen.get(id));
                let field = |k: &str, default: &str| {
                    like.and_then(|i| i[k].as_str())
                        .filter(|s| !s.is_empty())
                        .unwrap_or(default)
                        .to_string()
                };
                let groups_of =
                    like.map_or(T::Array(Vec::new()), |i| strings(&i["security_groups"]));
                templates.push(table(vec![
                    ("name", T::String(name.clone())),
                    ("image", T::String(field("image", "ami-0fab1e0000000000a"))),
                    ("type", T::String(field("type", "t3.medium"))),
                    ("subnet", T::String(field("subnet", SOME_SUBNET))),
                    ("security_groups", groups_of),
                ]));
                groups.push(table(vec![
                    ("name", T::String(name.clone())),
                    ("min", T::Integer(g.min)),
                    ("max", T::Integer(g.max)),
                    ("desired", T::Integer(g.desired)),
                    ("instances", strs(&mut g.instances.iter())),
                    ("launch_template", T::String(name.clone())),
                    ("suspended", strs(&mut g.suspended.iter())),
                ]));
            }
            seed.insert("launch_templates".into(), T::Array(templates));
            seed.insert("auto_scaling_groups".into(), T::Array(groups));
        }
        let mut snapshots: BTreeMap<String, Value> = self.snapshots;
        for snap in &self.restored {
            snapshots.entry(snap.clone()).or_insert_with(|| {
                head.push(format!(
                    "snapshot {snap} was restored but never listed: seeded completed, of an unknown volume"
                ));
                serde_json::json!({ "id": snap, "volume": "vol-00000000000000000", "state": "completed", "start_time": started })
            });
        }
        if !snapshots.is_empty() {
            let list = snapshots
                .values()
                .map(|s| {
                    let mut tags = toml::Table::new();
                    for (k, v) in s["tags"].as_object().into_iter().flatten() {
                        tags.insert(k.clone(), T::String(text(v)));
                    }
                    table(vec![
                        ("id", T::String(text(&s["id"]))),
                        ("volume", T::String(text(&s["volume"]))),
                        ("state", T::String(text(&s["state"]))),
                        ("start_time", T::String(text(&s["start_time"]))),
                        ("tags", T::Table(tags)),
                    ])
                })
                .collect();
            seed.insert("snapshots".into(), T::Array(list));
        }
        if !self.local.is_empty() {
            let mut rules = self.local;
            // The sim answers with the first rule whose `match` occurs in the arguments: the
            // longest first, so one line that contains another keeps its own answers.
            rules.sort_by_key(|r| std::cmp::Reverse(r.line.len()));
            let list = rules
                .into_iter()
                .map(|r| {
                    table(vec![
                        ("program", T::String(r.program)),
                        ("match", T::String(r.line)),
                        (
                            "stdout",
                            T::Array(r.stdout.into_iter().map(T::String).collect()),
                        ),
                        ("stderr", T::String(r.stderr)),
                        ("exit_code", T::Integer(r.exit_code)),
                    ])
                })
                .collect();
            seed.insert("local_commands".into(), T::Array(list));
        }
        if !self.unhealthy_with_traffic.is_empty() {
            faults.insert(
                "unhealthy_with_traffic".into(),
                strs(&mut self.unhealthy_with_traffic.iter()),
            );
        }
        self.impaired.extend(
            std::mem::take(&mut self.never_healthy)
                .into_iter()
                .filter_map(|(id, never)| never.then_some(id)),
        );
        if !self.impaired.is_empty() {
            let mut all = faults
                .remove("impaired")
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default();
            for id in self.impaired {
                if !all.iter().any(|v| v.as_str() == Some(id.as_str())) {
                    all.push(T::String(id));
                }
            }
            faults.insert("impaired".into(), T::Array(all));
        }
        if !self.weights.is_empty() {
            cloud.insert(
                "weights".into(),
                T::Table(
                    self.weights
                        .into_iter()
                        .map(|(k, v)| (k, T::Integer(v)))
                        .collect(),
                ),
            );
        }
        if !self.desired.is_empty() {
            cloud.insert(
                "desired_capacity".into(),
                T::Table(
                    self.desired
                        .into_iter()
                        .map(|(k, v)| (k, T::Integer(v)))
                        .collect(),
                ),
            );
        }
        if !self.restored.is_empty() {
            cloud.insert("restored".into(), strs(&mut self.restored.iter()));
        }
        if !self.deleted.is_empty() {
            cloud.insert(
                "restored_volumes_deleted".into(),
                strs(&mut self.deleted.iter()),
            );
        }
        head.extend(self.notes);
    }
}

/// Writes the scenario for the run recorded in `path`, as TOML text.
pub(crate) fn capture(path: &Path) -> Result<String> {
    let (lines, _) = transcript::read_verified(path)?;
    let events = crate::run::resume::read_events(&lines)?;
    let Some(Event::RunStarted {
        run_id,
        runbook,
        params,
        steps,
        mode,
        account,
        region,
        ..
    }) = events.first().cloned()
    else {
        return Err(Error::Input(
            "not a run's transcript (a hook journal?): nothing to capture".into(),
        ));
    };
    if mode != "run" {
        return Err(Error::Input(format!(
            "a {mode} transcript sent no writes: only a run can become a drill"
        )));
    }
    let title = |i: Option<usize>| i.and_then(|i| steps.get(i)).map(|s| s.title.clone());
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    let mut parameters: BTreeMap<String, String> = BTreeMap::new();
    let mut endpoints: BTreeMap<String, Vec<(Option<usize>, Value)>> = BTreeMap::new();
    let mut outputs: Vec<(String, Vec<String>, i64)> = Vec::new();
    let mut counted: Vec<Counted> = Vec::new();
    let mut stuck: BTreeSet<String> = BTreeSet::new();
    let mut impaired: BTreeSet<String> = BTreeSet::new();
    let mut command_failure: Option<toml::Table> = None;
    let mut calls: Vec<String> = Vec::new();
    let mut writes: Vec<(String, Vec<String>, Value)> = Vec::new();
    let mut unscripted: Vec<String> = Vec::new();
    let mut tagged: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    // Status checks as first seen, and what had been done to the instance when they first
    // passed: the sim's `impaired_until` heals on that (a reboot, or a stop and start).
    let mut first_status: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut healed_by: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut missing_patches: BTreeMap<String, i64> = BTreeMap::new();
    let mut patch_failure: BTreeSet<String> = BTreeSet::new();
    let mut newer = Newer::default();
    for e in &events {
        let Event::Call {
            step,
            binding,
            args,
            mutating,
            planned: false,
            replayed: false,
            result,
            error,
            ..
        } = e
        else {
            continue;
        };
        let result = result.clone().unwrap_or(Value::Null);
        newer.see(binding, args, &result, error.as_ref());
        // What the run saw first is how the world was before it acted.
        let mut found = Vec::new();
        instances_in(&result, &mut found);
        for i in found {
            seen.entry(text(&i["id"])).or_insert(i);
        }
        let ids = targets(args);
        // A command sent to instances by tag: they carried those tags (the drill resolves
        // the same tags on the sim).
        if let (Some(tags), Some(resolved)) = (
            args["targets"]["tags"].as_object(),
            args["resolved"]["instances"].as_array(),
        ) {
            for id in resolved.iter().filter_map(Value::as_str) {
                let known = tagged.entry(id.to_string()).or_default();
                for (k, v) in tags {
                    known.insert(k.clone(), v.clone());
                }
            }
        }
        match (binding.as_str(), error) {
            ("ec2::status" | "ec2::wait_status_ok", None) => {
                for st in result.as_array().into_iter().flatten() {
                    let id = text(&st["id"]);
                    if !id.starts_with("i-") {
                        continue;
                    }
                    seen.entry(id.clone()).or_insert_with(|| {
                        serde_json::json!({ "id": id, "state": st["state"], "security_groups": [], "volumes": [] })
                    });
                    let checks = (text(&st["system_status"]), text(&st["instance_status"]));
                    let ok = checks.0 == "ok" && checks.1 == "ok";
                    let was = first_status.entry(id.clone()).or_insert(checks);
                    let impaired_first = was.0 == "impaired" || was.1 == "impaired";
                    if ok && impaired_first && !healed_by.contains_key(&id) {
                        let done =
                            |name: &str| writes.iter().any(|w| w.0 == name && w.1.contains(&id));
                        let heal = if was.0 == "impaired" || done("ec2::start") {
                            "stop_start"
                        } else {
                            "reboot"
                        };
                        healed_by.insert(id, heal);
                    }
                }
            }
            ("ssm::patch_states", None) => {
                for st in result.as_array().into_iter().flatten() {
                    let missing = st["missing"].as_i64().unwrap_or(0);
                    missing_patches.entry(text(&st["id"])).or_insert(missing);
                }
            }
            ("ssm::get_parameter", None) => {
                parameters
                    .entry(text(&args["name"]))
                    .or_insert_with(|| text(&result));
            }
            ("health::http", _) => endpoints
                .entry(text(&args["url"]))
                .or_default()
                .push((*step, result.clone())),
            // Samples of one endpoint: one answer at their median latency.
            ("health::latency", None) => {
                let errors = result["errors"].as_u64().unwrap_or(0);
                let all_failed = errors > 0 && Some(errors) >= result["samples"].as_u64();
                endpoints.entry(text(&args["url"])).or_default().push((
                    *step,
                    serde_json::json!({
                        "status": if all_failed { 503 } else { 200 },
                        "latency_ms": result["p50"].as_f64().unwrap_or(0.0),
                    }),
                ));
            }
            // Patch Manager's failures are per instance (`patch_failure`), not a share of
            // every command's targets, and its documents have no command text to match.
            ("ssm::run_command", None) if args["document"] == "AWS-RunPatchBaseline" => {
                let install = args["parameters"]["Operation"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|v| v == "Install"));
                for r in result["results"].as_array().into_iter().flatten() {
                    if install && r["status"] != "Success" {
                        patch_failure.insert(text(&r["instance"]));
                    }
                }
            }
            ("ssm::run_command", None) => {
                let command = args["parameters"]["commands"]
                    .as_array()
                    .and_then(|c| c.first())
                    .map(text)
                    .unwrap_or_default();
                // `#{ status, results: [#{ instance, status, exit_code, stdout, stderr }] }`.
                let per: Vec<&Value> = result["results"]
                    .as_array()
                    .or(result.as_array())
                    .map(|a| a.iter().collect())
                    .unwrap_or_default();
                let failed = per.iter().filter(|r| r["status"] != "Success").count();
                if let Some(first) = per.first().filter(|_| !command.is_empty()) {
                    match outputs.iter_mut().find(|o| o.0 == command) {
                        Some(o) => o.1.push(text(&first["stdout"])),
                        None => outputs.push((
                            command.clone(),
                            vec![text(&first["stdout"])],
                            first["exit_code"].as_i64().unwrap_or(0),
                        )),
                    }
                }
                if failed > 0 && !per.is_empty() && command_failure.is_none() {
                    let bad = per.iter().find(|r| r["status"] != "Success");
                    let mut t = toml::Table::new();
                    t.insert("share".into(), T::Float(failed as f64 / per.len() as f64));
                    if let Some(b) = bad {
                        t.insert(
                            "exit_code".into(),
                            T::Integer(b["exit_code"].as_i64().unwrap_or(1)),
                        );
                        t.insert("stderr".into(), T::String(text(&b["stderr"])));
                    }
                    command_failure = Some(t);
                }
            }
            _ => {}
        }
        // The requests this call made, for the per-operation counts of `faults.calls`.
        let (mut made, polled) = made(binding, args);
        let mut failed = None;
        if let Some(err) = error {
            let code = err.code.clone().unwrap_or_default();
            match (binding.as_str(), code.as_str()) {
                ("ec2::stop", "WaiterTimeout") => stuck.extend(ids.iter().cloned()),
                // The instances the wait names as not ok (all of them when it names none).
                ("ec2::wait_status_ok", "WaiterTimeout") => {
                    let named: Vec<String> = ids_in(&err.message)
                        .into_iter()
                        .filter(|id| ids.contains(id))
                        .collect();
                    impaired.extend(if named.is_empty() { ids.clone() } else { named });
                }
                (_, c) if scripted(c) => match failed_operation(binding, &err.message) {
                    Some(op) => {
                        // The requests after the one that failed were not made.
                        match made.iter().position(|m| *m == op) {
                            Some(at) => made.truncate(at + 1),
                            None => made = vec![op],
                        }
                        failed = Some((op, code.clone(), err.message.clone()));
                    }
                    None => unscripted.push(format!("{binding}: {code}")),
                },
                _ => {}
            }
        }
        counted.push(Counted {
            ops: made,
            ids: ids.clone(),
            names: resources(binding, args),
            failed,
            polled,
            binding: binding.clone(),
        });
        if error.is_none()
            && *mutating
            && let Some(t) = trigger(binding, args)
        {
            newer.last_write = Some(t);
        }
        if *mutating && error.is_none() {
            calls.push(binding.clone());
            writes.push((binding.clone(), ids, result.clone()));
        }
        let _ = title(*step);
    }
    let mut faults = toml::Table::new();
    let mut count_notes = Vec::new();
    let (errors, failed_calls) = call_faults(&counted, &mut count_notes);
    if !errors.is_empty() {
        faults.insert("errors".into(), T::Array(errors));
    }
    if !failed_calls.is_empty() {
        faults.insert("calls".into(), T::Array(failed_calls));
    }
    if !stuck.is_empty() {
        faults.insert(
            "stuck_stopping".into(),
            T::Array(stuck.into_iter().map(T::String).collect()),
        );
    }
    if !impaired.is_empty() {
        faults.insert(
            "impaired".into(),
            T::Array(impaired.iter().cloned().map(T::String).collect()),
        );
    }
    if let Some(c) = command_failure {
        faults.insert("command_failure".into(), T::Table(c));
    }
    let heals: toml::Table = healed_by
        .into_iter()
        .filter(|(id, _)| !impaired.contains(id))
        .map(|(id, heal)| (id, T::String(heal.into())))
        .collect();
    if !heals.is_empty() {
        faults.insert("impaired_until".into(), T::Table(heals));
    }
    // Impaired when first seen and never seen passing (without a wait that ran out, which
    // `impaired` above already covers): impaired for the whole drill.
    let never: Vec<T> = first_status
        .iter()
        .filter(|(id, (sys, inst))| {
            (sys == "impaired" || inst == "impaired")
                && !faults
                    .get("impaired_until")
                    .and_then(T::as_table)
                    .is_some_and(|t| t.contains_key(*id))
                && !impaired.contains(*id)
        })
        .map(|(id, _)| T::String(id.clone()))
        .collect();
    let mut impaired_all: Vec<T> = faults
        .remove("impaired")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    impaired_all.extend(never);
    if !impaired_all.is_empty() {
        faults.insert("impaired".into(), T::Array(impaired_all));
    }
    let missing: toml::Table = missing_patches
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(id, n)| (id, T::Integer(n)))
        .collect();
    if !missing.is_empty() {
        faults.insert("missing_patches".into(), T::Table(missing));
    }
    if !patch_failure.is_empty() {
        faults.insert(
            "patch_failure".into(),
            T::Array(patch_failure.into_iter().map(T::String).collect()),
        );
    }

    // Instances the run launched were not there before it: the drill launches its own.
    for (binding, _, result) in &writes {
        if binding == "ec2::launch" {
            let mut made = Vec::new();
            instances_in(result, &mut made);
            for i in made {
                seen.remove(&text(&i["id"]));
            }
        }
    }
    newer.instances(&mut seen);
    // The fleet, inline.
    let mut seed = toml::Table::new();
    if let Some(Some(a)) = &account {
        seed.insert("account_id".into(), T::String(a.clone()));
    }
    if let Some(Some(r)) = &region {
        seed.insert("region".into(), T::String(r.clone()));
    }
    // An instance a write targets but no read showed: declared as the write found it.
    for (binding, ids, result) in &writes {
        for id in ids {
            if seen.contains_key(id) {
                continue;
            }
            let state = result
                .as_array()
                .and_then(|a| a.iter().find(|r| r["id"] == id.as_str()))
                .and_then(|r| r["previous_state"].as_str())
                .unwrap_or("running");
            let _ = binding;
            seen.insert(
                id.clone(),
                serde_json::json!({ "id": id, "state": state, "security_groups": [], "volumes": [] }),
            );
        }
    }
    for (id, tags) in tagged {
        let entry = seen.entry(id.clone()).or_insert_with(|| {
            serde_json::json!({ "id": id, "state": "running", "security_groups": [], "volumes": [] })
        });
        if !entry["tags"].is_object() {
            entry["tags"] = Value::Object(serde_json::Map::new());
        }
        if let Some(have) = entry["tags"].as_object_mut() {
            for (k, v) in tags {
                have.entry(k).or_insert(v);
            }
        }
    }
    let mut groups: BTreeMap<String, String> = BTreeMap::new();
    for i in seen.values() {
        for g in i["security_groups"].as_array().into_iter().flatten() {
            groups
                .entry(text(g))
                .or_insert_with(|| i["vpc"].as_str().unwrap_or_default().to_string());
        }
    }
    let mut group_list = Vec::new();
    for (id, vpc) in groups {
        let mut t = toml::Table::new();
        t.insert("name".into(), T::String(id.clone()));
        t.insert("id".into(), T::String(id));
        if !vpc.is_empty() {
            t.insert("vpc".into(), T::String(vpc));
        }
        group_list.push(T::Table(t));
    }
    seed.insert("security_groups".into(), T::Array(group_list));
    seed.insert(
        "instances".into(),
        T::Array(seen.values().map(|i| T::Table(instance(i))).collect()),
    );
    if !parameters.is_empty() {
        seed.insert(
            "parameters".into(),
            T::Array(
                parameters
                    .into_iter()
                    .map(|(name, value)| {
                        let mut t = toml::Table::new();
                        t.insert("name".into(), T::String(name));
                        t.insert("value".into(), T::String(value));
                        T::Table(t)
                    })
                    .collect(),
            ),
        );
    }
    if !outputs.is_empty() {
        seed.insert(
            "command_outputs".into(),
            T::Array(
                outputs
                    .into_iter()
                    .map(|(m, stdout, exit)| {
                        let mut t = toml::Table::new();
                        t.insert("match".into(), T::String(m));
                        t.insert(
                            "stdout".into(),
                            T::Array(stdout.into_iter().map(T::String).collect()),
                        );
                        t.insert("exit_code".into(), T::Integer(exit));
                        T::Table(t)
                    })
                    .collect(),
            ),
        );
    }
    if !endpoints.is_empty() {
        seed.insert(
            "endpoints".into(),
            T::Array(
                endpoints
                    .into_iter()
                    .map(|(url, seen)| endpoint(url, &seen))
                    .collect(),
            ),
        );
    }
    let mut cloud = toml::Table::new();
    let mut head_notes: Vec<String> = count_notes;
    let started = lines
        .first()
        .and_then(|l| l["ts"].as_str())
        .unwrap_or_default()
        .to_string();
    newer.write(
        &mut seed,
        &mut faults,
        &mut cloud,
        &seen,
        &started,
        &mut head_notes,
    );
    if !faults.is_empty() {
        seed.insert("faults".into(), T::Table(faults));
    }

    // What the run recorded.
    let mut expect = toml::Table::new();
    let status = events.iter().rev().find_map(|e| match e {
        Event::RunFinished { status, .. } => Some(status.as_str()),
        _ => None,
    });
    if let Some(s) = status {
        expect.insert("status".into(), T::String(s.into()));
    }
    let mut ended: BTreeMap<usize, StepStatus> = BTreeMap::new();
    for e in &events {
        if let Event::StepFinished { step, status, .. } = e {
            ended.insert(*step, *status);
        }
    }
    let mut step_table = toml::Table::new();
    for (i, s) in steps.iter().enumerate() {
        let got = ended.get(&i).map_or("not run", |s| s.as_str());
        step_table.insert(s.title.clone(), T::String(got.into()));
    }
    expect.insert("steps".into(), T::Table(step_table));
    expect.insert(
        "calls".into(),
        T::Array(calls.iter().cloned().map(T::String).collect()),
    );
    let mut put = |key: &str, ids: BTreeSet<String>| {
        if !ids.is_empty() {
            cloud.insert(
                key.into(),
                T::Array(ids.into_iter().map(T::String).collect()),
            );
        }
    };
    let by = |name: &str| -> BTreeSet<String> {
        writes
            .iter()
            .filter(|w| w.0 == name)
            .flat_map(|w| w.1.iter().cloned())
            .collect()
    };
    let restored = by("ec2::restore");
    put(
        "isolated",
        by("ec2::isolate").difference(&restored).cloned().collect(),
    );
    put("snapshotted", by("ec2::snapshot_volumes"));
    put("terminated", by("ec2::terminate"));
    put("original_groups", restored);
    let replaced: BTreeSet<String> = writes
        .iter()
        .filter(|w| w.0 == "ec2::launch")
        .flat_map(|w| w.2.as_array().cloned().unwrap_or_default())
        .filter_map(|i| i["tags"]["ReplacementFor"].as_str().map(str::to_string))
        .collect();
    put("replaced", replaced);
    if !cloud.is_empty() {
        expect.insert("cloud".into(), T::Table(cloud));
    }

    let mut scenario = toml::Table::new();
    scenario.insert(
        "runbook".into(),
        T::String(format!("{}@{}", runbook.id, runbook.version)),
    );
    let ended_as = status.unwrap_or("unfinished");
    scenario.insert(
        "description".into(),
        T::String(format!(
            "Captured from run {run_id} ({} {}, ended {ended_as}, sha256 {}).",
            runbook.id,
            runbook.version,
            runbook.sha256.get(..12).unwrap_or(&runbook.sha256)
        )),
    );
    // The recorded decisions: a confirmation nobody could give stopped the run, unless a
    // resume then gave it (the step's last decision is what the run did).
    let mut last_decision: BTreeMap<usize, (crate::data::transcript::Action, &str)> =
        BTreeMap::new();
    for e in &events {
        if let Event::Decision {
            step,
            action,
            reason,
            ..
        } = e
        {
            last_decision.insert(*step, (*action, reason.as_str()));
        }
    }
    let refused = last_decision.values().any(|(action, reason)| {
        *action == crate::data::transcript::Action::Abort && reason.contains("nobody can give it")
    });
    scenario.insert("yes".into(), T::Boolean(!refused));
    let mut p = toml::Table::new();
    if let Some(m) = params.as_object() {
        for (k, v) in m {
            match v {
                Value::Null => {}
                Value::Bool(b) => {
                    p.insert(k.clone(), T::Boolean(*b));
                }
                Value::Number(n) if n.is_i64() => {
                    p.insert(k.clone(), T::Integer(n.as_i64().unwrap_or(0)));
                }
                other => {
                    p.insert(k.clone(), T::String(text(other)));
                }
            }
        }
    }
    scenario.insert("params".into(), T::Table(p));
    scenario.insert("seed".into(), T::Table(seed));
    scenario.insert("expect".into(), T::Table(expect));
    let body = toml::to_string(&scenario)
        .map_err(|e| Error::Internal(format!("cannot write the scenario: {e}")))?;
    let mut head = format!(
        "# Captured by `runbook drill capture` from {} (run {run_id}).\n# The cloud is seeded with what the run read; secrets stay redaction markers.\n",
        path.display()
    );
    for n in &head_notes {
        head.push_str(&format!("# note: {n}\n"));
    }
    for u in &unscripted {
        head.push_str(&format!(
            "# not scripted (no simulated operation answers this binding): {u}\n"
        ));
    }
    Ok(format!("{head}{body}"))
}

/// An HTTP endpoint as the run saw it: its last answer, down (503) or slow before the step where
/// it first answered well.
fn endpoint(url: String, seen: &[(Option<usize>, Value)]) -> T {
    let mut t = toml::Table::new();
    let last = seen.last().map(|s| &s.1).cloned().unwrap_or(Value::Null);
    // Recorded as a float (`850.0`).
    let millis = |v: &Value| v["latency_ms"].as_f64().map_or(0, |f| f.round() as i64);
    t.insert("url".into(), T::String(url));
    t.insert(
        "status".into(),
        T::Integer(last["status"].as_i64().unwrap_or(200)),
    );
    if let Some(body) = seen.iter().rev().find_map(|s| s.1["body"].as_str()) {
        t.insert("body".into(), T::String(body.to_string()));
    }
    let latency = millis(&last);
    t.insert("latency_ms".into(), T::Integer(latency));
    let ok = |v: &Value| {
        v["status"]
            .as_i64()
            .is_some_and(|s| (200..500).contains(&s))
    };
    if seen.first().is_some_and(|s| !ok(&s.1))
        && let Some((Some(step), _)) = seen.iter().find(|s| ok(&s.1))
    {
        t.insert("down_before_step".into(), T::Integer(*step as i64));
    }
    let first = seen.first().map_or(0, |s| millis(&s.1));
    if first > latency.saturating_mul(2)
        && let Some((Some(step), _)) = seen
            .iter()
            .find(|s| millis(&s.1) <= latency.saturating_mul(2))
    {
        t.insert("slow_before_step".into(), T::Integer(*step as i64));
        t.insert("slow_latency_ms".into(), T::Integer(first));
    }
    T::Table(t)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn error(code: &str, message: &str) -> ErrorRecord {
        ErrorRecord {
            message: message.into(),
            code: Some(code.into()),
            location: None,
            request_id: None,
        }
    }

    fn call(binding: &str, ids: &[&str], failed: Option<(&'static str, &str)>) -> Counted {
        // An Auto Scaling call's "ids" are its group's name.
        let args = json!({ "ids": ids, "group": ids.first(), "auto_scaling_group": ids.first() });
        let (ops, polled) = made(binding, &args);
        Counted {
            ops,
            ids: targets(&args),
            names: resources(binding, &args),
            failed: failed.map(|(op, code)| (op, code.to_string(), format!("{code}!"))),
            polled,
            binding: binding.into(),
        }
    }

    #[test]
    fn a_call_that_failed_and_then_went_through_is_scripted_at_its_call_of_the_operation() {
        let throttled = Some(("DescribeInstances", "RequestLimitExceeded"));
        let counted = [
            // The lookup isolate makes first is a DescribeInstances call of i-1 too.
            call("ec2::isolate", &["i-1"], None),
            call("ec2::describe", &["i-2"], None),
            call("ec2::describe", &["i-1"], throttled),
            call("ec2::describe", &["i-1"], throttled),
            call("ec2::describe", &["i-1"], None),
            // Failed every time it was called: it fails always.
            call(
                "ec2::snapshot_volumes",
                &["i-1"],
                Some(("CreateSnapshot", "InternalError")),
            ),
        ];
        let mut notes = Vec::new();
        let (always, calls) = call_faults(&counted, &mut notes);
        assert_eq!(calls.len(), 1, "{calls:?}");
        let c = calls[0].as_table().unwrap();
        assert_eq!(c["operation"].as_str(), Some("DescribeInstances"));
        assert_eq!(c["instance"].as_str(), Some("i-1"));
        assert_eq!(c["nth"].as_integer(), Some(2));
        assert_eq!(c["attempts"].as_integer(), Some(2));
        assert_eq!(c["error"].as_str(), Some("RequestLimitExceeded"));
        assert_eq!(always.len(), 1);
        assert_eq!(always[0]["operation"].as_str(), Some("CreateSnapshot"));
        assert_eq!(always[0]["code"].as_str(), Some("InternalError"));
        assert!(notes.is_empty(), "{notes:?}");

        // A stop that polled the instance first: the count is said to be uncertain.
        let counted = [
            call("ec2::stop", &["i-1"], None),
            call("ec2::describe", &["i-1"], throttled),
            call("ec2::describe", &["i-1"], None),
        ];
        let (_, calls) = call_faults(&counted, &mut notes);
        assert_eq!(calls[0]["nth"].as_integer(), Some(2));
        assert!(notes[0].contains("ec2::stop polled it"), "{notes:?}");

        // An Auto Scaling group's calls are counted for that group (its name the resource),
        // set_desired's lookup of it and its read after included.
        let throttled = Some(("DescribeAutoScalingGroups", "Throttling"));
        let mut set = call("autoscaling::set_desired", &["workers"], None);
        set.polled = None;
        let counted = [
            call("autoscaling::group", &["other"], None),
            set,
            call("autoscaling::group", &["workers"], throttled),
            call("autoscaling::group", &["workers"], None),
        ];
        let (_, calls) = call_faults(&counted, &mut notes);
        assert_eq!(calls[0]["resource"].as_str(), Some("workers"));
        assert!(calls[0].get("instance").is_none());
        assert_eq!(calls[0]["nth"].as_integer(), Some(3), "{calls:?}");
        assert_eq!(notes.len(), 1, "no wait polled the group: {notes:?}");
    }

    #[test]
    fn a_failed_instance_refresh_is_scripted_to_end_the_same_way_on_a_seeded_group() {
        // What a capture saw of `autoscaling::refresh` on the group "workers" that ended in `code`.
        let refreshed = |code: &str, message: &str| {
            let mut n = Newer::default();
            n.see(
                "autoscaling::refresh",
                &json!({ "auto_scaling_group": "workers", "min_healthy": 90, "wait": true }),
                &Value::Null,
                Some(&error(code, message)),
            );
            n
        };
        let n = refreshed(
            "RefreshFailed",
            "instance refresh refresh-1 of workers ended Cancelled at 40%: Instances failed to pass their health checks",
        );
        let (mut seed, mut faults, mut cloud, mut head) = (
            toml::Table::new(),
            toml::Table::new(),
            toml::Table::new(),
            Vec::new(),
        );
        n.write(
            &mut seed,
            &mut faults,
            &mut cloud,
            &BTreeMap::new(),
            "",
            &mut head,
        );
        let f = &faults["refresh_failures"][0];
        assert_eq!(f["group"].as_str(), Some("workers"));
        assert_eq!(f["status"].as_str(), Some("Cancelled"));
        assert_eq!(f["percent"].as_integer(), Some(40));
        assert_eq!(
            f["reason"].as_str(),
            Some("Instances failed to pass their health checks")
        );
        assert_eq!(
            seed["auto_scaling_groups"][0]["name"].as_str(),
            Some("workers")
        );
        assert!(head[0].contains("refreshed but never read"), "{head:?}");
        assert!(!scripted("RefreshFailed"));

        // One whose wait ran out stays unfinished where it was last seen.
        let n = refreshed(
            "WaiterTimeout",
            "instance refresh not finished after 10m: refresh-00000002 60% (InProgress)",
        );
        assert_eq!(
            n.refresh_failures["workers"],
            ("InProgress".to_string(), 60, String::new())
        );
    }

    #[test]
    fn an_alarm_reason_gives_its_datapoints_threshold_and_comparison() {
        let r = "Threshold Crossed: 1 of 5 datapoints [97, 97, 97, 90.999, 82.399] were not greater than the threshold (85).";
        assert_eq!(reason_points(r), [97.0, 97.0, 97.0, 90.999, 82.399]);
        assert_eq!(reason_threshold(r), Some((85.0, "GreaterThanThreshold")));
        let r = "alarm not OK after 5m: low is ALARM: Threshold Crossed: 2 datapoints [3, 4] were less than or equal to the threshold (5).";
        assert_eq!(
            reason_threshold(r),
            Some((5.0, "LessThanOrEqualToThreshold"))
        );
    }

    #[test]
    fn a_shift_rolled_back_scripts_its_pool_as_failing_under_traffic_with_the_original_weights() {
        let mut n = Newer::default();
        let listener = "arn:aws:elasticloadbalancing:eu-west-1:1:listener/app/x/1/1";
        n.see(
            "elb::shift",
            &json!({ "listener": listener, "from": "blue", "to": "green" }),
            &Value::Null,
            Some(&error(
                "ShiftRolledBack",
                "at 10% to green: green: i-0a1 is unhealthy (Target.ResponseCodeMismatch); the listener's weights are back to blue=100, green=0",
            )),
        );
        assert!(n.unhealthy_with_traffic.contains("green"));
        assert_eq!(
            n.weights,
            BTreeMap::from([("blue".into(), 100), ("green".into(), 0)])
        );
        assert!(n.groups["green"].targets.contains("i-0a1"));
        assert_eq!(
            n.listeners[listener].forward,
            [("blue".to_string(), 100), ("green".to_string(), 0)]
        );
    }

    #[test]
    fn targets_a_wait_found_unhealthy_are_impaired_in_the_drill() {
        let mut n = Newer::default();
        n.see(
            "elb::wait_healthy",
            &json!({ "group": "green", "timeout": "1m" }),
            &Value::Null,
            Some(&error(
                "WaiterTimeout",
                "targets not healthy after 1m: green: i-0a2 is unhealthy (Target.FailedHealthChecks)",
            )),
        );
        assert!(n.impaired.contains("i-0a2"));
        assert!(n.groups["green"].targets.contains("i-0a2"));
    }

    #[test]
    fn a_metric_recovers_on_the_last_cloud_write_before_it_changed() {
        let mut n = Newer::default();
        let q = json!({ "namespace": "AWS/EC2", "name": "CPUUtilization", "dimensions": { "InstanceId": "i-1" } });
        let read = |latest: f64| json!({ "points": [{ "value": 97.0 }, { "value": latest }], "latest": latest });
        n.see("cloudwatch::metric", &q, &read(97.0), None);
        n.last_write = trigger(
            "ssm::run_command",
            &json!({ "parameters": { "commands": ["systemctl restart app"] } }),
        );
        n.see("cloudwatch::metric", &q, &read(12.0), None);
        let m = &n.metrics[0];
        assert_eq!((m.first, m.last), (97.0, 12.0));
        assert_eq!(
            m.changed_after,
            Some(Some("systemctl restart app".to_string()))
        );
        assert_eq!(trigger("notes::append", &json!({ "text": "x" })), None);
    }
}
