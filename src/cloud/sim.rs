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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    CloudResult, CommandRequest, Eni, Filter, Instance, InstanceStatus, Invocation, LaunchSpec,
    Snapshot, StateAction, StateChange, Tags,
};
use crate::recorder::BindingError;

/// The fleet a fresh checkout runs against.
pub const DEFAULT_FLEET: &str = include_str!("../../sim/default-fleet.toml");

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    #[serde(default = "default_account")]
    pub account_id: String,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub instances: Vec<FleetInstance>,
    #[serde(default)]
    pub security_groups: Vec<FleetGroup>,
    #[serde(default)]
    pub launch_templates: Vec<LaunchTemplate>,
    #[serde(default)]
    pub parameters: Vec<FleetParameter>,
    #[serde(default)]
    pub command_outputs: Vec<CommandOutput>,
    #[serde(default)]
    pub faults: Faults,
    /// HTTP endpoints the `health::` bindings answer for, with scripted behaviour.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// A health endpoint: healthy by default, down or slow until a step, or flaky.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub url: String,
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub latency_ms: u64,
    /// Answers 503 while the running step's number (1-based, as in `[3/8]`) is below this.
    #[serde(default)]
    pub down_before_step: Option<usize>,
    /// Answers after `slow_latency_ms` while the step number is below this.
    #[serde(default)]
    pub slow_before_step: Option<usize>,
    #[serde(default)]
    pub slow_latency_ms: u64,
    /// Every Nth request to it answers 500.
    #[serde(default)]
    pub flaky_every: Option<u64>,
}

fn default_status() -> u16 {
    200
}

fn default_account() -> String {
    "123456789012".into()
}

fn default_region() -> String {
    "eu-west-1".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FleetInstance {
    pub id: String,
    #[serde(rename = "type", default = "default_type")]
    pub instance_type: String,
    #[serde(default = "default_state")]
    pub state: String,
    #[serde(default = "default_image")]
    pub image: String,
    pub vpc: String,
    pub subnet: String,
    #[serde(default)]
    pub private_ip: String,
    #[serde(default)]
    pub security_groups: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub tags: Tags,
    #[serde(default = "default_launch_time")]
    pub launch_time: String,
}

fn default_type() -> String {
    "t3.medium".into()
}
fn default_state() -> String {
    "running".into()
}
fn default_image() -> String {
    "ami-0fab1e0000000000a".into()
}
fn default_launch_time() -> String {
    "2026-11-01T08:00:00Z".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FleetGroup {
    pub id: String,
    pub name: String,
    pub vpc: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchTemplate {
    pub name: String,
    pub image: String,
    #[serde(rename = "type", default = "default_type")]
    pub instance_type: String,
    pub subnet: String,
    #[serde(default)]
    pub security_groups: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FleetParameter {
    pub name: String,
    pub value: String,
    #[serde(rename = "type", default = "default_param_type")]
    pub kind: String,
}

fn default_param_type() -> String {
    "String".into()
}

/// Scripted command output: the first rule whose `match` occurs in the command text answers.
/// Successive invocations take successive `stdout` entries (the last one repeats), so a runbook
/// can see a CPU at 97% before a restart and at 12% after it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandOutput {
    #[serde(rename = "match")]
    pub pattern: String,
    #[serde(default)]
    pub stdout: Vec<String>,
    #[serde(default)]
    pub exit_code: i64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Added to every API call.
    #[serde(default)]
    pub latency_ms: u64,
    /// 1-based call numbers that answer with a throttling error (retried like the SDK does).
    #[serde(default)]
    pub throttle_calls: Vec<u64>,
    /// Attempts per call before a throttle becomes the caller's error (the SDK's standard mode: 3).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default)]
    pub errors: Vec<ApiFault>,
    #[serde(default)]
    pub command_failure: Option<CommandFailure>,
    /// Instances that never finish stopping.
    #[serde(default)]
    pub stuck_stopping: Vec<String>,
    /// Instances whose status checks report `impaired`.
    #[serde(default)]
    pub impaired: Vec<String>,
    /// Instances whose status checks report `initializing` until the run's clock has run this
    /// many milliseconds (simulated in drills): a slow boot, for waits longer than a default.
    #[serde(default)]
    pub initializing_ms: std::collections::BTreeMap<String, u64>,
}

fn default_attempts() -> u32 {
    3
}

/// An API error returned whenever `operation` is called for `instance` (any instance if empty).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiFault {
    pub operation: String,
    #[serde(default)]
    pub instance: String,
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// A command that fails on the first `share` of its targets (sorted by instance id).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandFailure {
    pub share: f64,
    #[serde(default = "default_exit")]
    pub exit_code: i64,
    #[serde(default)]
    pub stderr: String,
}

fn default_exit() -> i64 {
    1
}

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
    clock: crate::clock::Clock,
}

fn err(code: &str, message: impl Into<String>) -> BindingError {
    BindingError::new(code, message)
}

impl SimCloud {
    /// The simulated cloud of a sim environment: its fleet fixture (or the embedded one), and
    /// its state file when it has one.
    pub fn for_environment(env: &crate::config::Environment) -> CloudResult<Self> {
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

    pub fn new(fleet: Fleet) -> Self {
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
        let probes = vec![0; fleet.endpoints.len()];
        SimCloud {
            state: Arc::new(Mutex::new(State {
                instances,
                groups,
                snapshots: Vec::new(),
                images: Vec::new(),
                commands: Vec::new(),
                parameters,
                output_uses,
                calls: 0,
                next_id: 0,
                mutations: Vec::new(),
                probes,
            })),
            fleet: Arc::new(fleet),
            request_ids: Mutex::new(Vec::new()),
            persist_to: None,
            clock: crate::clock::Clock::real(),
        }
    }

    /// Waits (latency, throttling back-off) on `clock` instead of a real one of its own.
    pub fn set_clock(&mut self, clock: crate::clock::Clock) {
        self.clock = clock;
    }

    /// Keeps the state in `path`: loaded from it when it exists (the fleet fixture only seeds a
    /// new one), saved after every mutating call.
    pub fn persistent(mut self, path: &std::path::Path) -> Result<Self, String> {
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
        s.mutations.push(what);
        self.persist(s);
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
    pub fn share(&self) -> SimCloud {
        SimCloud {
            fleet: self.fleet.clone(),
            state: self.state.clone(),
            request_ids: Mutex::new(Vec::new()),
            persist_to: self.persist_to.clone(),
            // Each run on a shared sim keeps its own clock: runs on the hook server are real-time.
            clock: crate::clock::Clock::real(),
        }
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    pub fn take_request_ids(&self) -> Vec<String> {
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
            let call = {
                let mut s = self.lock()?;
                s.calls += 1;
                s.calls
            };
            if let Ok(mut ids) = self.request_ids.lock() {
                ids.push(format!("sim-{call:08}"));
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
                if f.operation == operation
                    && (f.instance.is_empty() || instances.contains(&f.instance))
                {
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

    /// The scripted answer of a declared endpoint at step number `step` (1-based; 0 outside a
    /// step): `(status, latency_ms, body)`, or None when `url` is not declared.
    pub fn http(&self, url: &str, step: usize) -> Option<(u16, u64, String)> {
        let index = self.fleet.endpoints.iter().position(|e| e.url == url)?;
        let e = &self.fleet.endpoints[index];
        let n = {
            let mut s = self.state.lock().ok()?;
            s.probes[index] += 1;
            s.probes[index]
        };
        if e.down_before_step.is_some_and(|d| step < d) {
            return Some((503, e.latency_ms, "service unavailable".into()));
        }
        if e.flaky_every.is_some_and(|k| k > 0 && n % k == 0) {
            return Some((500, e.latency_ms, "internal error".into()));
        }
        let latency = if e.slow_before_step.is_some_and(|d| step < d) {
            e.slow_latency_ms
        } else {
            e.latency_ms
        };
        Some((e.status, latency, e.body.clone()))
    }

    pub async fn account_id(&self) -> CloudResult<String> {
        self.enter("DescribeSecurityGroups", &[]).await?;
        Ok(self.fleet.account_id.clone())
    }

    pub async fn describe_instances(&self, f: &Filter) -> CloudResult<Vec<Instance>> {
        self.enter("DescribeInstances", &f.ids).await?;
        let s = self.lock()?;
        for id in &f.ids {
            if !s.instances.iter().any(|i| &i.id == id) {
                return Err(err(
                    "InvalidInstanceID.NotFound",
                    format!("The instance ID '{id}' does not exist"),
                ));
            }
        }
        Ok(s.instances
            .iter()
            .filter(|i| f.ids.is_empty() || f.ids.contains(&i.id))
            .filter(|i| f.states.is_empty() || f.states.contains(&i.state))
            .filter(|i| f.tags.iter().all(|(k, v)| i.tags.get(k) == Some(v)))
            .cloned()
            .collect())
    }

    pub async fn instance_status(&self, ids: &[String]) -> CloudResult<Vec<InstanceStatus>> {
        self.enter("DescribeInstanceStatus", ids).await?;
        let s = self.lock()?;
        ids.iter()
            .map(|id| {
                let i = s.instances.iter().find(|i| &i.id == id).ok_or_else(|| {
                    err(
                        "InvalidInstanceID.NotFound",
                        format!("The instance ID '{id}' does not exist"),
                    )
                })?;
                let check = if i.state != "running" {
                    "not-applicable"
                } else if self.fleet.faults.impaired.contains(id) {
                    "impaired"
                } else if self
                    .fleet
                    .faults
                    .initializing_ms
                    .get(id)
                    .is_some_and(|&ms| self.clock.elapsed() < Duration::from_millis(ms))
                {
                    "initializing"
                } else {
                    "ok"
                };
                Ok(InstanceStatus {
                    id: id.clone(),
                    state: i.state.clone(),
                    system_status: check.into(),
                    instance_status: check.into(),
                })
            })
            .collect()
    }

    pub async fn create_tags(&self, ids: &[String], tags: &Tags) -> CloudResult<()> {
        self.enter("CreateTags", ids).await?;
        let mut s = self.lock()?;
        for id in ids {
            if let Some(snap) = s.snapshots.iter_mut().find(|x| &x.id == id) {
                snap.tags.extend(tags.clone());
                continue;
            }
            Self::instance_mut(&mut s, id)?.tags.extend(tags.clone());
        }
        self.mutated(&mut s, format!("CreateTags {}", ids.join(",")));
        Ok(())
    }

    pub async fn delete_tags(&self, ids: &[String], keys: &[String]) -> CloudResult<()> {
        self.enter("DeleteTags", ids).await?;
        let mut s = self.lock()?;
        for id in ids {
            let i = Self::instance_mut(&mut s, id)?;
            for k in keys {
                i.tags.remove(k);
            }
        }
        self.mutated(&mut s, format!("DeleteTags {}", ids.join(",")));
        Ok(())
    }

    pub async fn find_security_group(&self, vpc: &str, name: &str) -> CloudResult<Option<String>> {
        self.enter("DescribeSecurityGroups", &[]).await?;
        let s = self.lock()?;
        Ok(s.groups
            .iter()
            .find(|g| g.vpc == vpc && g.name == name)
            .map(|g| g.id.clone()))
    }

    pub async fn create_closed_security_group(
        &self,
        vpc: &str,
        name: &str,
        _description: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        self.enter("CreateSecurityGroup", &[]).await?;
        let id = {
            let mut s = self.lock()?;
            if s.groups.iter().any(|g| g.vpc == vpc && g.name == name) {
                return Err(err(
                    "InvalidGroup.Duplicate",
                    format!("The security group '{name}' already exists for VPC '{vpc}'"),
                ));
            }
            let id = Self::new_id(&mut s, "sg");
            s.groups.push(Group {
                id: id.clone(),
                name: name.into(),
                vpc: vpc.into(),
                egress_open: true,
                tags: tags.clone(),
            });
            self.mutated(&mut s, format!("CreateSecurityGroup {name}"));
            id
        };
        self.enter("RevokeSecurityGroupEgress", &[]).await?;
        let mut s = self.lock()?;
        if let Some(g) = s.groups.iter_mut().find(|g| g.id == id) {
            g.egress_open = false;
        }
        self.mutated(&mut s, format!("RevokeSecurityGroupEgress {id}"));
        Ok(id)
    }

    pub async fn set_eni_groups(&self, eni: &str, groups: &[String]) -> CloudResult<()> {
        let owner = {
            let s = self.lock()?;
            s.instances
                .iter()
                .find(|i| i.network_interfaces.iter().any(|n| n.id == eni))
                .map(|i| i.id.clone())
        };
        let owner = owner.ok_or_else(|| {
            err(
                "InvalidNetworkInterfaceID.NotFound",
                format!("The networkInterface ID '{eni}' does not exist"),
            )
        })?;
        self.enter(
            "ModifyNetworkInterfaceAttribute",
            std::slice::from_ref(&owner),
        )
        .await?;
        let mut s = self.lock()?;
        for g in groups {
            if !s.groups.iter().any(|x| &x.id == g) {
                return Err(err(
                    "InvalidGroup.NotFound",
                    format!("The security group '{g}' does not exist"),
                ));
            }
        }
        let i = Self::instance_mut(&mut s, &owner)?;
        if let Some(n) = i.network_interfaces.iter_mut().find(|n| n.id == eni) {
            n.groups = groups.to_vec();
        }
        let mut all: Vec<String> = i
            .network_interfaces
            .iter()
            .flat_map(|n| n.groups.clone())
            .collect();
        all.dedup();
        i.security_groups = all;
        self.mutated(&mut s, format!("ModifyNetworkInterfaceAttribute {eni}"));
        Ok(())
    }

    pub async fn create_snapshot(
        &self,
        volume: &str,
        _description: &str,
        tags: &Tags,
    ) -> CloudResult<Snapshot> {
        let owner = {
            let s = self.lock()?;
            s.instances
                .iter()
                .find(|i| i.volumes.iter().any(|v| v == volume))
                .map(|i| i.id.clone())
        };
        let owner = owner.ok_or_else(|| {
            err(
                "InvalidVolume.NotFound",
                format!("The volume '{volume}' does not exist"),
            )
        })?;
        self.enter("CreateSnapshot", &[owner]).await?;
        let mut s = self.lock()?;
        let snap = Snapshot {
            id: Self::new_id(&mut s, "snap"),
            volume: volume.into(),
            state: "completed".into(),
            tags: tags.clone(),
        };
        s.snapshots.push(snap.clone());
        self.mutated(&mut s, format!("CreateSnapshot {volume}"));
        Ok(snap)
    }

    pub async fn describe_snapshots(&self, ids: &[String]) -> CloudResult<Vec<Snapshot>> {
        self.enter("DescribeSnapshots", &[]).await?;
        let s = self.lock()?;
        Ok(s.snapshots
            .iter()
            .filter(|x| ids.is_empty() || ids.contains(&x.id))
            .cloned()
            .collect())
    }

    pub async fn change_state(
        &self,
        ids: &[String],
        action: StateAction,
    ) -> CloudResult<Vec<StateChange>> {
        self.enter(action.api_name(), ids).await?;
        let stuck = &self.fleet.faults.stuck_stopping;
        let mut s = self.lock()?;
        let mut out = Vec::new();
        for id in ids {
            let i = Self::instance_mut(&mut s, id)?;
            let previous = i.state.clone();
            let next = match (action, previous.as_str()) {
                (_, "terminated") if action != StateAction::Terminate => {
                    return Err(err(
                        "IncorrectInstanceState",
                        format!(
                            "The instance '{id}' is not in a state from which it can be {}",
                            action.target_state()
                        ),
                    ));
                }
                (StateAction::Stop { force: false }, _) if stuck.contains(id) => "stopping",
                (StateAction::Stop { .. }, _) => "stopped",
                (StateAction::Start, "stopped" | "running") => "running",
                (StateAction::Start, _) => {
                    return Err(err(
                        "IncorrectInstanceState",
                        format!(
                            "The instance '{id}' is not in a state from which it can be started"
                        ),
                    ));
                }
                (StateAction::Reboot, "running") => "running",
                (StateAction::Reboot, _) => {
                    return Err(err(
                        "IncorrectInstanceState",
                        format!("The instance '{id}' is not running"),
                    ));
                }
                (StateAction::Terminate, _) => "terminated",
            };
            i.state = next.into();
            out.push(StateChange {
                id: id.clone(),
                previous_state: previous,
                state: next.into(),
            });
        }
        self.mutated(&mut s, format!("{} {}", action.api_name(), ids.join(",")));
        Ok(out)
    }

    pub async fn create_image(
        &self,
        instance: &str,
        name: &str,
        _no_reboot: bool,
        tags: &Tags,
    ) -> CloudResult<String> {
        self.enter("CreateImage", &[instance.to_string()]).await?;
        let mut s = self.lock()?;
        Self::instance_mut(&mut s, instance)?;
        let id = Self::new_id(&mut s, "ami");
        s.images.push(Image {
            id: id.clone(),
            name: name.into(),
            source: instance.into(),
            tags: tags.clone(),
        });
        self.mutated(&mut s, format!("CreateImage {instance}"));
        Ok(id)
    }

    pub async fn run_instances(&self, spec: &LaunchSpec) -> CloudResult<Vec<Instance>> {
        self.enter("RunInstances", &[]).await?;
        let template = match &spec.launch_template {
            Some(name) => Some(
                self.fleet
                    .launch_templates
                    .iter()
                    .find(|t| &t.name == name)
                    .ok_or_else(|| {
                        err(
                            "InvalidLaunchTemplateName.NotFoundException",
                            format!("launch template '{name}' does not exist"),
                        )
                    })?,
            ),
            None => None,
        };
        let mut s = self.lock()?;
        let image = spec
            .image
            .clone()
            .or_else(|| template.map(|t| t.image.clone()))
            .ok_or_else(|| {
                err(
                    "MissingParameter",
                    "an image or a launch template is required",
                )
            })?;
        let subnet = spec
            .subnet
            .clone()
            .or_else(|| template.map(|t| t.subnet.clone()))
            .or_else(|| s.instances.first().map(|i| i.subnet.clone()))
            .ok_or_else(|| err("MissingParameter", "no subnet given and none known"))?;
        let vpc = s
            .instances
            .iter()
            .find(|i| i.subnet == subnet)
            .map(|i| i.vpc.clone())
            .ok_or_else(|| {
                err(
                    "InvalidSubnetID.NotFound",
                    format!("The subnet ID '{subnet}' does not exist"),
                )
            })?;
        let groups = if spec.security_groups.is_empty() {
            template
                .map(|t| t.security_groups.clone())
                .unwrap_or_default()
        } else {
            spec.security_groups.clone()
        };
        let instance_type = spec
            .instance_type
            .clone()
            .or_else(|| template.map(|t| t.instance_type.clone()))
            .unwrap_or_else(default_type);
        let mut out = Vec::new();
        for _ in 0..spec.count.max(1) {
            let id = Self::new_id(&mut s, "i");
            let volume = Self::new_id(&mut s, "vol");
            let n = s.next_id;
            let inst = Instance {
                id: id.clone(),
                state: "running".into(),
                instance_type: instance_type.clone(),
                image: image.clone(),
                vpc: vpc.clone(),
                subnet: subnet.clone(),
                private_ip: format!("10.0.9.{}", n % 250 + 2),
                security_groups: groups.clone(),
                network_interfaces: vec![Eni {
                    id: format!("eni-{}", id.trim_start_matches("i-")),
                    groups: groups.clone(),
                }],
                volumes: vec![volume],
                tags: spec.tags.clone(),
                launch_time: crate::transcript::now_utc(),
            };
            s.instances.push(inst.clone());
            out.push(inst);
        }
        self.mutated(&mut s, format!("RunInstances {image}"));
        Ok(out)
    }

    pub async fn send_command(&self, req: &CommandRequest) -> CloudResult<String> {
        self.enter("SsmSendCommand", &req.instances).await?;
        let mut s = self.lock()?;
        for id in &req.instances {
            let i = s.instances.iter().find(|i| &i.id == id).ok_or_else(|| {
                err(
                    "InvalidInstanceId",
                    format!("Instance {id} is not a managed instance"),
                )
            })?;
            if i.state != "running" {
                return Err(err(
                    "InvalidInstanceId",
                    format!("Instance {id} is not in a valid state ({})", i.state),
                ));
            }
        }
        let text = req
            .parameters
            .values()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        let rule = self
            .fleet
            .command_outputs
            .iter()
            .position(|o| text.contains(&o.pattern));
        let (stdout, exit_code) = match rule {
            Some(r) => {
                let o = &self.fleet.command_outputs[r];
                let n = s.output_uses[r];
                s.output_uses[r] += 1;
                let out = o
                    .stdout
                    .get(n)
                    .or(o.stdout.last())
                    .cloned()
                    .unwrap_or_default();
                (out, o.exit_code)
            }
            None => (String::new(), 0),
        };
        let mut targets = req.instances.clone();
        targets.sort();
        let failing = match &self.fleet.faults.command_failure {
            Some(f) => ((targets.len() as f64) * f.share).round() as usize,
            None => 0,
        };
        let invocations = targets
            .iter()
            .enumerate()
            .map(
                |(k, id)| match (&self.fleet.faults.command_failure, k < failing) {
                    (Some(f), true) => Invocation {
                        instance: id.clone(),
                        status: "Failed".into(),
                        exit_code: f.exit_code,
                        stdout: String::new(),
                        stderr: if f.stderr.is_empty() {
                            "simulated command failure".into()
                        } else {
                            f.stderr.clone()
                        },
                    },
                    _ => Invocation {
                        instance: id.clone(),
                        status: if exit_code == 0 {
                            "Success".into()
                        } else {
                            "Failed".into()
                        },
                        exit_code,
                        stdout: stdout.clone(),
                        stderr: String::new(),
                    },
                },
            )
            .collect();
        let id = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            s.commands.len() + 1,
            s.calls
        );
        s.commands.push(Command {
            id: id.clone(),
            document: req.document.clone(),
            parameters: req.parameters.clone(),
            invocations,
        });
        self.mutated(
            &mut s,
            format!("SendCommand {} {}", req.document, req.instances.join(",")),
        );
        Ok(id)
    }

    pub async fn command_invocation(
        &self,
        command_id: &str,
        instance: &str,
    ) -> CloudResult<Invocation> {
        self.enter("SsmGetCommandInvocation", &[instance.to_string()])
            .await?;
        let s = self.lock()?;
        s.commands
            .iter()
            .find(|c| c.id == command_id)
            .and_then(|c| c.invocations.iter().find(|i| i.instance == instance))
            .cloned()
            .ok_or_else(|| {
                err(
                    "InvocationDoesNotExist",
                    format!("no invocation of {command_id} on {instance}"),
                )
            })
    }

    pub async fn get_parameter(&self, name: &str, _decrypt: bool) -> CloudResult<String> {
        self.enter("SsmGetParameter", &[]).await?;
        let s = self.lock()?;
        s.parameters
            .get(name)
            .map(|p| p.value.clone())
            .ok_or_else(|| err("ParameterNotFound", format!("Parameter {name} not found.")))
    }

    pub async fn put_parameter(
        &self,
        name: &str,
        value: &str,
        kind: &str,
        overwrite: bool,
    ) -> CloudResult<i64> {
        self.enter("SsmPutParameter", &[]).await?;
        let mut s = self.lock()?;
        let version = match s.parameters.get(name) {
            Some(_) if !overwrite => {
                return Err(err(
                    "ParameterAlreadyExists",
                    format!("The parameter {name} already exists."),
                ));
            }
            Some(p) => p.version + 1,
            None => 1,
        };
        s.parameters.insert(
            name.into(),
            Parameter {
                value: value.into(),
                kind: kind.into(),
                version,
            },
        );
        self.mutated(&mut s, format!("PutParameter {name}"));
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn the_embedded_fleet_loads() {
        let sim = SimCloud::from_toml(DEFAULT_FLEET).unwrap();
        assert!(sim.fleet().instances.len() >= 4);
        let all = block(sim.describe_instances(&Filter::default())).unwrap();
        assert_eq!(all.len(), sim.fleet().instances.len());
    }

    #[test]
    fn endpoints_are_down_slow_or_flaky_as_scripted() {
        let sim = SimCloud::from_toml(
            "[[endpoints]]\nurl = \"http://api/health\"\nlatency_ms = 100\ndown_before_step = 2\nslow_before_step = 3\nslow_latency_ms = 900\n\n[[endpoints]]\nurl = \"http://api/flaky\"\nflaky_every = 3\n",
        )
        .unwrap();
        assert_eq!(
            sim.http("http://api/health", 1).unwrap().0,
            503,
            "down before step 2"
        );
        assert_eq!(
            sim.http("http://api/health", 2).unwrap(),
            (200, 900, String::new()),
            "slow at step 2"
        );
        assert_eq!(
            sim.http("http://api/health", 3).unwrap().1,
            100,
            "healthy from step 3"
        );
        let statuses: Vec<u16> = (0..6)
            .map(|_| sim.http("http://api/flaky", 1).unwrap().0)
            .collect();
        assert_eq!(statuses, vec![200, 200, 500, 200, 200, 500]);
        assert!(
            sim.http("http://elsewhere", 1).is_none(),
            "undeclared URLs are probed for real"
        );
    }

    #[test]
    fn unknown_fixture_keys_are_refused() {
        assert!(SimCloud::from_toml("instancez = []").is_err());
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
    fn a_command_fails_on_its_share_of_targets_deterministically() {
        let mut text =
            String::from("[faults.command_failure]\nshare = 0.3\nstderr = \"disk full\"\n");
        for n in 0..10 {
            text.push_str(&format!("[[instances]]\nid = \"i-00000000000000{n:02}\"\nvpc = \"vpc-1\"\nsubnet = \"subnet-1\"\n"));
        }
        let sim = SimCloud::from_toml(&text).unwrap();
        let ids: Vec<String> = (0..10).map(|n| format!("i-00000000000000{n:02}")).collect();
        let req = CommandRequest {
            instances: ids.clone(),
            document: "AWS-RunShellScript".into(),
            parameters: BTreeMap::from([("commands".into(), vec!["uptime".into()])]),
            max_concurrency: "50".into(),
            max_errors: "0".into(),
            timeout_seconds: 60,
            comment: String::new(),
        };
        let cmd = block(sim.send_command(&req)).unwrap();
        let failed: Vec<String> = ids
            .iter()
            .filter(|id| block(sim.command_invocation(&cmd, id)).unwrap().status == "Failed")
            .cloned()
            .collect();
        assert_eq!(failed, ids[..3].to_vec());
    }
}
