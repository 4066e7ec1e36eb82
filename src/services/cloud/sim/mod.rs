//! The simulated cloud: a deterministic, in-process model of EC2 and SSM.
//!
//! It is loaded from a fleet fixture (TOML; the embedded default is `sim/default-fleet.toml`) and
//! models instances (with their network interfaces and volumes), security groups, snapshots, AMIs,
//! SSM commands with per-instance results and output, and parameters. Scripted faults reproduce
//! what goes wrong in real incidents: throttling on the Nth call, an API error for one instance,
//! a command failing on a share of its targets, an instance stuck in `stopping`, an impaired
//! status check, and latency added to every call.
//!
//! Determinism: ids come from counters, outputs from the fixture, failures from sorted target
//! lists; nothing depends on the clock or randomness, so a drill fails the same way every time.
//! Throttling is retried like the SDK's standard retry mode does (up to `max_attempts`).
//!
//! The model is split by concern: `fleet` is the fixture's schema, `ec2` and `ssm` the API
//! operations, `volumes` the backup snapshots and restored EBS volumes, `http` the declared
//! health endpoints; this file holds the state they share and
//! the entry every call passes (latency, throttling, scripted errors).

mod autoscaling;
mod cloudwatch;
mod ec2;
mod elb;
mod fleet;
mod http;
mod local;
mod ssm;
mod volumes;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CloudResult, Eni, Instance, Invocation, Snapshot, Tags};
use crate::base::error::BindingError;

pub use fleet::DEFAULT_FLEET;
use fleet::Fleet;
pub use local::LocalOutput;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Group {
    id: String,
    name: String,
    vpc: String,
    /// Whether the group allows outbound traffic (a new group does, until revoked).
    egress_open: bool,
    tags: Tags,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Command {
    id: String,
    document: String,
    parameters: BTreeMap<String, Vec<String>>,
    invocations: Vec<Invocation>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Image {
    id: String,
    name: String,
    source: String,
    tags: Tags,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Parameter {
    value: String,
    kind: String,
    version: i64,
}

/// Everything mutable, behind one lock (calls are short; fan-out waits happen outside it).
#[derive(Debug, Serialize, Deserialize)]
struct State {
    instances: Vec<Instance>,
    groups: Vec<Group>,
    snapshots: Vec<Snapshot>,
    images: Vec<Image>,
    commands: Vec<Command>,
    parameters: BTreeMap<String, Parameter>,
    output_uses: Vec<usize>,
    calls: u64,
    next_id: u64,
    /// Every mutating API call, in order: what drills and the conformance suite compare.
    mutations: Vec<String>,
    /// Requests answered per declared endpoint (same order as the fixture's `endpoints`).
    probes: Vec<u64>,
    /// Instances of the fleet's `impaired_until` that what heals them has happened to.
    #[serde(default)]
    healed: std::collections::BTreeSet<String>,
    /// Patch Manager's compliance per instance, once `AWS-RunPatchBaseline` ran on it.
    #[serde(default)]
    patch_states: BTreeMap<String, super::PatchState>,
    /// The load balancers' target groups and listeners (what drills assert weights on).
    #[serde(default)]
    target_groups: Vec<elb::SimTargetGroup>,
    #[serde(default)]
    listeners: Vec<super::Listener>,
    /// When each fleet metric's `recovers_on` call happened, in ms since the Unix epoch on the
    /// sim's time ([`SimCloud::now_ms`]). Not on a run's own clock: runs sharing one sim in
    /// `serve`, and a resumed run, each start their clock at zero, and must all see a metric
    /// that an earlier run remedied as remedied. (Renamed from `metric_triggers`, which held
    /// run-clock times: a state file with the old field starts with no metric remedied.)
    #[serde(default)]
    metric_triggered_at: Vec<Option<i64>>,
    /// Alarms whose actions were disabled (by name).
    #[serde(default)]
    alarm_actions_disabled: Vec<String>,
    #[serde(default)]
    scaling_groups: Vec<autoscaling::SimScalingGroup>,
    #[serde(default)]
    refreshes: Vec<autoscaling::SimRefresh>,
    /// Answers used per `local_commands` rule.
    #[serde(default)]
    local_uses: Vec<usize>,
    /// Volumes created from snapshots (the backup restoration test); an instance's own volumes
    /// are its `volumes`.
    #[serde(default)]
    volumes: Vec<super::Volume>,
    /// SSM commands ever sent: a command's id counts on from it, so ids stay unique when the
    /// oldest commands are dropped from `commands`.
    #[serde(default)]
    commands_sent: u64,
    /// Entries dropped from the front of `mutations` and `commands` by the history bound.
    #[serde(default)]
    history_dropped: u64,
    /// Calls counted so far for each of `faults.calls` (same order).
    #[serde(default)]
    fault_calls: Vec<u64>,
    /// The most entries `mutations` and `commands` keep (`serve`'s `server.sim_history`): a
    /// server's runs share one simulated cloud for weeks, and these lists are per-run history,
    /// not state the next run needs. None (drills, plans, the CLI) keeps everything a run did.
    #[serde(skip)]
    keep: Option<usize>,
}

impl State {
    /// Drops the oldest history entries beyond `keep`.
    fn trim_history(&mut self) {
        let Some(keep) = self.keep else { return };
        for excess in [
            self.mutations.len().saturating_sub(keep),
            self.commands.len().saturating_sub(keep),
        ] {
            self.history_dropped = self.history_dropped.saturating_add(excess as u64);
        }
        let m = self.mutations.len().saturating_sub(keep);
        self.mutations.drain(..m);
        let c = self.commands.len().saturating_sub(keep);
        self.commands.drain(..c);
    }
}

/// The sizes of the simulated cloud's per-run history (`/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct HistorySizes {
    pub mutations: usize,
    pub commands: usize,
    /// Command invocations kept (each holds its output).
    pub invocations: usize,
}

pub struct SimCloud {
    fleet: Arc<Fleet>,
    /// Shared by every handle made with [`SimCloud::share`] (the hook server's concurrent runs
    /// act on one simulated cloud, as they would on one account).
    state: Arc<Mutex<State>>,
    request_ids: Mutex<Vec<String>>,
    /// Where the state is kept across processes (a drill that resumes after a crash, `runbook
    /// approve` from a second shell); None keeps it in memory only.
    persist_to: Option<std::path::PathBuf>,
    /// Latency and throttling back-off are waited on this clock: simulated in drills and plans.
    clock: crate::base::clock::Clock,
    /// The wall time the run's clock started from: metric timestamps are this plus the clock's
    /// elapsed time, so a simulated ten minutes are ten minutes of datapoints.
    epoch: chrono::DateTime<chrono::Utc>,
}

fn err(code: &str, message: impl Into<String>) -> BindingError {
    BindingError::new(code, message)
}

impl SimCloud {
    /// The simulated cloud of a sim environment: its fleet fixture (or the embedded one), and
    /// its state file when it has one.
    pub(crate) fn for_environment(env: &crate::data::config::Environment) -> CloudResult<Self> {
        let text = env.fleet.as_deref().unwrap_or(DEFAULT_FLEET);
        let sim = Self::from_toml(text).map_err(|e| {
            err(
                "bad_fleet",
                format!("fleet fixture {}: {e}", env.fleet_source),
            )
        })?;
        match &env.sim_state {
            Some(path) => sim.persistent(path).map_err(|e| err("bad_sim_state", e)),
            None => Ok(sim),
        }
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let fleet: Fleet = toml::from_str(text).map_err(|e| e.to_string())?;
        Ok(Self::new(fleet))
    }

    pub(crate) fn new(fleet: Fleet) -> Self {
        let instances = fleet
            .instances
            .iter()
            .map(|f| Instance {
                id: f.id.clone(),
                state: f.state.clone(),
                instance_type: f.instance_type.clone(),
                image: f.image.clone(),
                vpc: f.vpc.clone(),
                subnet: f.subnet.clone(),
                private_ip: f.private_ip.clone(),
                security_groups: f.security_groups.clone(),
                network_interfaces: vec![Eni {
                    id: format!("eni-{}", f.id.trim_start_matches("i-")),
                    groups: f.security_groups.clone(),
                }],
                volumes: f.volumes.clone(),
                tags: f.tags.clone(),
                launch_time: f.launch_time.clone(),
            })
            .collect();
        let groups = fleet
            .security_groups
            .iter()
            .map(|g| Group {
                id: g.id.clone(),
                name: g.name.clone(),
                vpc: g.vpc.clone(),
                egress_open: true,
                tags: Tags::new(),
            })
            .collect();
        let parameters = fleet
            .parameters
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    Parameter {
                        value: p.value.clone(),
                        kind: p.kind.clone(),
                        version: 1,
                    },
                )
            })
            .collect();
        let output_uses = vec![0; fleet.command_outputs.len()];
        let target_groups = elb::target_groups_of(&fleet);
        let listeners = elb::listeners_of(&fleet, &target_groups);
        let metric_triggered_at = vec![None; fleet.metrics.len()];
        let alarm_actions_disabled = fleet
            .alarms
            .iter()
            .filter(|a| !a.actions_enabled)
            .map(|a| a.name.clone())
            .collect();
        let scaling_groups = autoscaling::groups_of(&fleet);
        let probes = vec![0; fleet.endpoints.len()];
        SimCloud {
            state: Arc::new(Mutex::new(State {
                instances,
                groups,
                snapshots: volumes::fleet_snapshots(&fleet),
                images: Vec::new(),
                commands: Vec::new(),
                parameters,
                output_uses,
                calls: 0,
                next_id: 0,
                mutations: Vec::new(),
                probes,
                healed: Default::default(),
                patch_states: BTreeMap::new(),
                target_groups,
                listeners,
                metric_triggered_at,
                alarm_actions_disabled,
                scaling_groups,
                refreshes: Vec::new(),
                local_uses: Vec::new(),
                volumes: Vec::new(),
                commands_sent: 0,
                history_dropped: 0,
                fault_calls: Vec::new(),
                keep: None,
            })),
            fleet: Arc::new(fleet),
            request_ids: Mutex::new(Vec::new()),
            persist_to: None,
            clock: crate::base::clock::Clock::real(),
            epoch: chrono::Utc::now(),
        }
    }

    /// Waits (latency, throttling back-off) on `clock` instead of a real one of its own.
    pub(crate) fn set_clock(&mut self, clock: crate::base::clock::Clock) {
        self.clock = clock;
    }

    /// Keeps the state in `path`: loaded from it when it exists (the fleet fixture only seeds a
    /// new one), saved after every mutating call.
    pub(crate) fn persistent(mut self, path: &std::path::Path) -> Result<Self, String> {
        if path.exists() {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let state: State =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            self.state = Arc::new(Mutex::new(state));
        }
        self.persist_to = Some(path.to_path_buf());
        self.persist(&*self.lock().map_err(|e| e.message)?);
        Ok(self)
    }

    /// Notes a mutating API call and saves the state (when persistent): every write goes through here.
    fn mutated(&self, s: &mut State, what: String) {
        self.trigger_metrics(s, &what);
        s.mutations.push(what);
        s.trim_history();
        self.persist(s);
    }

    /// Keeps at most `keep` entries of the per-run history (the mutations and SSM commands,
    /// oldest dropped first) on every handle of this cloud: `serve` shares one for weeks.
    pub(crate) fn keep_history(&self, keep: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.keep = Some(keep);
            s.trim_history();
        }
    }

    /// How much per-run history the simulated cloud holds now.
    pub(crate) fn history_sizes(&self) -> HistorySizes {
        match self.state.lock() {
            Ok(s) => HistorySizes {
                mutations: s.mutations.len(),
                commands: s.commands.len(),
                invocations: s.commands.iter().map(|c| c.invocations.len()).sum(),
            },
            Err(_) => HistorySizes::default(),
        }
    }

    /// Writes the state atomically (temp file + rename), so a crash leaves the old or the new.
    fn persist(&self, state: &State) {
        let Some(path) = &self.persist_to else { return };
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec(state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::error!("cannot save the simulated state to {}: {e}", path.display());
        }
    }

    /// Another handle on the same simulated cloud, with its own request ids (so concurrent runs
    /// each record the ids of their own calls).
    pub(crate) fn share(&self) -> SimCloud {
        SimCloud {
            fleet: self.fleet.clone(),
            state: self.state.clone(),
            request_ids: Mutex::new(Vec::new()),
            persist_to: self.persist_to.clone(),
            // Each run on a shared sim keeps its own clock: runs on the hook server are real-time.
            clock: crate::base::clock::Clock::real(),
            epoch: chrono::Utc::now(),
        }
    }

    pub(crate) fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    pub(crate) fn take_request_ids(&self) -> Vec<String> {
        self.request_ids
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    /// The whole simulated state as JSON (for drills, tests and `--sim-state-out`).
    pub fn state_json(&self) -> serde_json::Value {
        match self.state.lock() {
            Ok(s) => serde_json::to_value(&*s).unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    }

    fn lock(&self) -> CloudResult<std::sync::MutexGuard<'_, State>> {
        // A poisoned lock means a previous call panicked mid-change: refuse rather than guess.
        self.state
            .lock()
            .map_err(|_| err("InternalError", "simulated cloud state is poisoned"))
    }

    /// Every API call starts here: latency, call counting, throttling (retried like the SDK's
    /// standard mode), scripted errors for the instances involved, and a request id.
    /// `instances` are the instances the call is for or, for an operation on another resource,
    /// its names (the Auto Scaling groups, parameters, alarms): what a fault's `instance` or
    /// `resource` is matched against.
    async fn enter(&self, operation: &str, instances: &[String]) -> CloudResult<()> {
        let faults = &self.fleet.faults;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if faults.latency_ms > 0 {
                self.clock
                    .sleep(Duration::from_millis(faults.latency_ms))
                    .await;
            }
            let (call, scripted) = {
                let mut s = self.lock()?;
                s.calls += 1;
                // A call counts once for `faults.calls`, however often it is retried.
                let scripted = if attempt == 1 {
                    Self::count_call(&mut s, &faults.calls, operation, instances)
                } else {
                    None
                };
                (s.calls, scripted)
            };
            if let Ok(mut ids) = self.request_ids.lock() {
                ids.push(format!("sim-{call:08}"));
            }
            if let Some(f) = scripted {
                let message = if f.message.is_empty() {
                    format!("simulated {} ({operation}, call {call})", f.error)
                } else {
                    f.message.clone()
                };
                return Err(err(&f.error, message));
            }
            if faults.throttle_calls.contains(&call) {
                if attempt < faults.max_attempts.max(1) {
                    // The SDK backs off before retrying; a short fixed pause keeps drills fast.
                    self.clock.sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let code = if operation.starts_with("Ssm") {
                    "ThrottlingException"
                } else {
                    "RequestLimitExceeded"
                };
                return Err(err(
                    code,
                    format!("Rate exceeded ({operation}, call {call})"),
                ));
            }
            for f in &faults.errors {
                if f.operation == operation && names_call(&f.instance, &f.resource, instances) {
                    let message = if f.message.is_empty() {
                        format!("simulated failure of {operation}")
                    } else {
                        f.message.clone()
                    };
                    return Err(err(&f.code, message));
                }
            }
            return Ok(());
        }
    }

    /// Counts a call of `operation` for every `faults.calls` entry it matches; the first whose
    /// count falls on a failing call is the error it answers with.
    fn count_call<'f>(
        s: &mut State,
        faults: &'f [fleet::CallFault],
        operation: &str,
        instances: &[String],
    ) -> Option<&'f fleet::CallFault> {
        s.fault_calls.resize(faults.len(), 0);
        let mut failing = None;
        for (f, n) in faults.iter().zip(s.fault_calls.iter_mut()) {
            if f.operation == operation && names_call(&f.instance, &f.resource, instances) {
                *n = n.saturating_add(1);
                if failing.is_none() && f.fails(*n) {
                    failing = Some(f);
                }
            }
        }
        failing
    }

    /// Notes the first call whose text contains a metric's `recovers_on`: from then on, on the
    /// run's clock, the metric moves to its `recovered` level.
    fn trigger_metrics(&self, s: &mut State, text: &str) {
        let now = self.now_ms();
        s.metric_triggered_at.resize(self.fleet.metrics.len(), None);
        for (m, at) in self
            .fleet
            .metrics
            .iter()
            .zip(s.metric_triggered_at.iter_mut())
        {
            if at.is_none()
                && m.recovers_on
                    .as_deref()
                    .is_some_and(|p| !p.is_empty() && text.contains(p))
            {
                *at = Some(now);
            }
        }
    }

    /// The sim's time, in ms since the Unix epoch: when this handle was made, plus its run's
    /// clock (real time, or simulated in drills and plans). Every handle on one shared state
    /// reads metric history on this one time line.
    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.clock.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.epoch.timestamp_millis().saturating_add(elapsed)
    }

    fn new_id(s: &mut State, prefix: &str) -> String {
        s.next_id += 1;
        format!("{prefix}-05{:015x}", s.next_id)
    }

    fn instance_mut<'a>(s: &'a mut State, id: &str) -> CloudResult<&'a mut Instance> {
        s.instances.iter_mut().find(|i| i.id == id).ok_or_else(|| {
            err(
                "InvalidInstanceID.NotFound",
                format!("The instance ID '{id}' does not exist"),
            )
        })
    }
}

/// Whether a fault scripted for `instance` and `resource` (either empty: any) applies to a call
/// for `names` (the instances, groups, parameters or alarms [`SimCloud::enter`] was given). One
/// rule for the faults that always fail (`errors`) and those that fail a given call (`calls`).
fn names_call(instance: &str, resource: &str, names: &[String]) -> bool {
    [instance, resource]
        .iter()
        .all(|on| on.is_empty() || names.iter().any(|n| n == on))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::cloud::Filter;

    pub(super) fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_bounded_sim_keeps_only_the_newest_history_and_command_ids_stay_unique() {
        let sim = SimCloud::from_toml(DEFAULT_FLEET).unwrap();
        let shared = sim.share();
        let keep = 5;
        sim.keep_history(keep);
        let instance = sim.fleet().instances[0].id.clone();
        let req = crate::services::cloud::CommandRequest {
            instances: vec![instance.clone()],
            document: "AWS-RunShellScript".into(),
            parameters: [("commands".to_string(), vec!["uptime".to_string()])].into(),
            max_concurrency: "1".into(),
            max_errors: "0".into(),
            timeout_seconds: 60,
            comment: String::new(),
        };
        let mut ids = std::collections::BTreeSet::new();
        // N + k commands, half through a second handle: the bound is the cloud's, not a handle's.
        for n in 0..keep + 7 {
            let on = if n % 2 == 0 { &sim } else { &shared };
            ids.insert(block(on.send_command(&req)).unwrap());
            let sizes = sim.history_sizes();
            assert!(
                sizes.mutations <= keep && sizes.commands <= keep,
                "{sizes:?}"
            );
        }
        assert_eq!(ids.len(), keep + 7, "a command id was given twice");
        let sizes = sim.history_sizes();
        assert_eq!((sizes.mutations, sizes.commands), (keep, keep));
        // The newest command is still there to be polled.
        let newest = ids.iter().max_by_key(|id| id[..8].to_string()).unwrap();
        assert!(block(sim.command_invocation(newest, &instance)).is_ok());
        // Without a bound (drills, the CLI), everything a run did is kept.
        let unbounded = SimCloud::from_toml(DEFAULT_FLEET).unwrap();
        for _ in 0..keep + 7 {
            block(unbounded.send_command(&req)).unwrap();
        }
        assert_eq!(unbounded.history_sizes().commands, keep + 7);
    }

    #[test]
    fn throttling_is_retried_like_the_sdk_and_surfaces_after_max_attempts() {
        let base =
            "[[instances]]\nid = \"i-0000000000000001\"\nvpc = \"vpc-1\"\nsubnet = \"subnet-1\"\n";
        // Call 1 throttled, call 2 succeeds: the caller sees success.
        let sim = SimCloud::from_toml(&format!("{base}[faults]\nthrottle_calls = [1]\n")).unwrap();
        assert!(block(sim.describe_instances(&Filter::default())).is_ok());
        // Three throttles in a row exhaust the three attempts.
        let sim =
            SimCloud::from_toml(&format!("{base}[faults]\nthrottle_calls = [1, 2, 3]\n")).unwrap();
        let e = block(sim.describe_instances(&Filter::default())).unwrap_err();
        assert_eq!(e.code, "RequestLimitExceeded");
    }

    #[test]
    fn the_nth_call_of_an_operation_on_an_instance_fails_as_scripted_and_the_next_goes_through() {
        let base = "[[instances]]\nid = \"i-1\"\nvpc = \"vpc-1\"\nsubnet = \"subnet-1\"\n\
                    [[instances]]\nid = \"i-2\"\nvpc = \"vpc-1\"\nsubnet = \"subnet-1\"\n";
        let fleet = format!(
            "{base}[[faults.calls]]\noperation = \"DescribeInstances\"\ninstance = \"i-1\"\n\
             nth = 2\nattempts = 2\nerror = \"Throttling\"\n"
        );
        let sim = SimCloud::from_toml(&fleet).unwrap();
        let of = |id: &str| Filter {
            ids: vec![id.to_string()],
            ..Filter::default()
        };
        let outcomes: Vec<Result<(), String>> = ["i-1", "i-2", "i-1", "i-1", "i-1"]
            .iter()
            .map(|id| {
                block(sim.describe_instances(&of(id)))
                    .map(|_| ())
                    .map_err(|e| e.code)
            })
            .collect();
        // i-2's call is not counted; i-1's second and third fail, once each (no SDK retry).
        assert_eq!(
            outcomes,
            [
                Ok(()),
                Ok(()),
                Err("Throttling".to_string()),
                Err("Throttling".to_string()),
                Ok(())
            ]
        );
        assert_eq!(sim.take_request_ids().len(), 5, "one request per call");
    }

    #[test]
    fn a_call_fault_on_a_named_resource_counts_and_fails_only_the_calls_for_it() {
        let fleet = "[[parameters]]\nname = \"/a\"\nvalue = \"1\"\n\
                     [[parameters]]\nname = \"/b\"\nvalue = \"2\"\n\
                     [[faults.calls]]\noperation = \"SsmGetParameter\"\nresource = \"/b\"\n\
                     error = \"InternalError\"\n";
        let sim = SimCloud::from_toml(fleet).unwrap();
        let get = |name: &str| block(sim.get_parameter(name, false)).map_err(|e| e.code);
        assert_eq!(get("/a"), Ok("1".to_string()));
        assert_eq!(get("/b"), Err("InternalError".to_string()));
        assert_eq!(get("/b"), Ok("2".to_string()));
    }
}
