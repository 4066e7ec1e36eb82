//! `runbook drill capture TRANSCRIPT`: a drill scenario written from a real run.
//!
//! The scenario pins the recorded runbook version and its parameters (a secret stays its
//! redaction marker: the drill passes the marker, never the secret), seeds the simulated cloud
//! with what the run's read-only calls saw (`seed`, a whole fleet inline: the instances with
//! their groups and volumes as first seen, the SSM parameters, the HTTP answers, the Run Command
//! outputs), scripts the faults that happened at the operations and instances where they
//! happened, and expects what the run recorded: its status, each step's status, the writes sent
//! in order, and the cloud state those writes left (isolated, snapshotted, terminated, replaced).
//! Resource ids are the recorded ones, so the run's parameters and expectations hold unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use toml::Value as T;

use crate::base::error::{Error, Result};
use crate::data::transcript::{self, Event, StepStatus};

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
        "ssm::get_parameter" => "GetParameter",
        "ssm::put_parameter" => "PutParameter",
        "ssm::run_command" => "SendCommand",
        _ => return None,
    })
}

/// Whether capture can seed the sim from what this binding's calls saw (or needs nothing from
/// them): the EC2 instance and SSM calls, HTTP probes, notes and notifications. The load
/// balancer, CloudWatch, Auto Scaling, local programs and EBS snapshot/volume calls cannot be
/// captured yet.
fn seedable(binding: &str) -> bool {
    let (namespace, name) = binding.split_once("::").unwrap_or(("", binding));
    match namespace {
        "elb" | "cloudwatch" | "autoscaling" | "local" => false,
        "ec2" => !matches!(name, "snapshots" | "restore_volume" | "delete_volume"),
        _ => true,
    }
}

/// Codes that are not the cloud's answer (the run's own stops, a waiter running out).
fn scripted(code: &str) -> bool {
    !matches!(
        code,
        "timed_out" | "aborted" | "WaiterTimeout" | "condition_failed" | "bad_argument" | "denied"
    )
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
    // A drill that leaves out what the run read would fail on the sim for the wrong reason (a
    // listener, a metric or a snapshot that is not there): refused, naming the call, instead.
    let unseedable: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Call {
                binding,
                planned: false,
                ..
            } if !seedable(binding) => Some(binding.as_str()),
            _ => None,
        })
        .collect();
    if !unseedable.is_empty() {
        return Err(Error::Input(format!(
            "cannot capture this run yet: the sim cannot be seeded from what {} read (capture seeds instances, security groups, SSM parameters and command output, HTTP answers, status checks and patch compliance)",
            unseedable.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }

    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    let mut parameters: BTreeMap<String, String> = BTreeMap::new();
    let mut endpoints: BTreeMap<String, Vec<(Option<usize>, Value)>> = BTreeMap::new();
    let mut outputs: Vec<(String, Vec<String>, i64)> = Vec::new();
    let mut errors: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    let mut recovered: BTreeSet<(String, String)> = BTreeSet::new();
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
        if let Some(err) = error {
            let code = err.code.clone().unwrap_or_default();
            let instance = ids.first().cloned().unwrap_or_default();
            match (binding.as_str(), code.as_str()) {
                ("ec2::stop", "WaiterTimeout") => stuck.extend(ids.iter().cloned()),
                ("ec2::wait_status_ok", "WaiterTimeout") => impaired.extend(ids.iter().cloned()),
                (_, c) if scripted(c) => match operation(binding) {
                    Some(op) => {
                        errors.insert((
                            op.to_string(),
                            instance,
                            code.clone(),
                            err.message.clone(),
                        ));
                    }
                    None => unscripted.push(format!("{binding}: {code}")),
                },
                _ => {}
            }
        } else if let Some(op) = operation(binding) {
            // A call that failed earlier and then went through: a sim fault would fail it always.
            recovered.insert((op.to_string(), ids.first().cloned().unwrap_or_default()));
        }
        if *mutating && error.is_none() {
            calls.push(binding.clone());
            writes.push((binding.clone(), ids, result.clone()));
        }
        let _ = title(*step);
    }
    let mut faults = toml::Table::new();
    let errors: Vec<T> = errors
        .into_iter()
        .filter(|(op, inst, code, _)| {
            let keep = !recovered.contains(&(op.clone(), inst.clone()));
            if !keep {
                unscripted.push(format!(
                    "{op} on {inst}: {code} (failed, then went through)"
                ));
            }
            keep
        })
        .map(|(op, inst, code, message)| {
            let mut t = toml::Table::new();
            t.insert("operation".into(), T::String(op));
            if !inst.is_empty() {
                t.insert("instance".into(), T::String(inst));
            }
            t.insert("code".into(), T::String(code));
            t.insert("message".into(), T::String(message));
            T::Table(t)
        })
        .collect();
    if !errors.is_empty() {
        faults.insert("errors".into(), T::Array(errors));
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
    let mut cloud = toml::Table::new();
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
    // The recorded decisions: a confirmation nobody could give stopped the run.
    let refused = events.iter().any(|e| {
        matches!(e, Event::Decision { action: crate::data::transcript::Action::Abort, reason, .. }
            if reason.contains("nobody can give it"))
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
    for u in &unscripted {
        head.push_str(&format!(
            "# not scripted (the sim cannot fail only some calls): {u}\n"
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
