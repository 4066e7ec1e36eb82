//! The cloud behind the `ec2::` and `ssm::` bindings: one interface, two backends.
//!
//! - [`aws::AwsCloud`] talks to AWS (or LocalStack, or moto) through aws-sdk-ec2 and aws-sdk-ssm.
//! - [`sim::SimCloud`] is an in-process, deterministic model of a fleet, loaded from a fixture,
//!   with scripted faults. It is the default environment, so a fresh clone runs a real runbook
//!   with no AWS account, and drills run anywhere.
//!
//! The interface is a small set of *primitive* API operations (describe, tag, create a group, ...).
//! Everything composite (isolate an instance, wait for a state, fan a command out and collect its
//! results) is written once, in the bindings, on top of these primitives, so both backends run
//! the same logic and the conformance suite compares like with like.
//!
//! Dispatch is an enum rather than a trait object because the operations are `async` and there
//! are exactly two backends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::base::error::BindingError;

pub(crate) mod aws;
pub mod sim;

pub type CloudResult<T> = Result<T, BindingError>;
pub type Tags = BTreeMap<String, String>;

/// A network interface and the security groups on it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Eni {
    pub id: String,
    pub groups: Vec<String>,
}

/// An EC2 instance as runbooks see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Instance {
    pub id: String,
    pub state: String,
    #[serde(rename = "type")]
    pub instance_type: String,
    pub image: String,
    pub vpc: String,
    pub subnet: String,
    pub private_ip: String,
    pub security_groups: Vec<String>,
    pub network_interfaces: Vec<Eni>,
    pub volumes: Vec<String>,
    pub tags: Tags,
    pub launch_time: String,
}

/// Which instances to describe. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub ids: Vec<String>,
    pub tags: Tags,
    pub states: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceStatus {
    pub id: String,
    pub state: String,
    /// `ok`, `impaired`, `initializing`, `insufficient-data` or `not-applicable`.
    pub system_status: String,
    pub instance_status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub id: String,
    pub volume: String,
    pub state: String,
    pub tags: Tags,
    /// When the snapshot was taken (RFC 3339, UTC): what "the latest backup" is sorted by.
    #[serde(default)]
    pub start_time: String,
}

/// A state change request and its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateAction {
    Stop { force: bool },
    Start,
    Reboot,
    Terminate,
}

impl StateAction {
    pub fn api_name(self) -> &'static str {
        match self {
            StateAction::Stop { .. } => "StopInstances",
            StateAction::Start => "StartInstances",
            StateAction::Reboot => "RebootInstances",
            StateAction::Terminate => "TerminateInstances",
        }
    }

    /// The state a waiter waits for (reboot has none: the instance stays running).
    pub fn target_state(self) -> &'static str {
        match self {
            StateAction::Stop { .. } => "stopped",
            StateAction::Start | StateAction::Reboot => "running",
            StateAction::Terminate => "terminated",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateChange {
    pub id: String,
    pub previous_state: String,
    pub state: String,
}

/// What to launch.
#[derive(Debug, Clone, Default)]
pub struct LaunchSpec {
    pub image: Option<String>,
    pub launch_template: Option<String>,
    pub instance_type: Option<String>,
    pub subnet: Option<String>,
    pub security_groups: Vec<String>,
    pub tags: Tags,
    pub count: i32,
}

/// An SSM Run Command request.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    pub instances: Vec<String>,
    pub document: String,
    pub parameters: BTreeMap<String, Vec<String>>,
    pub max_concurrency: String,
    pub max_errors: String,
    pub timeout_seconds: i32,
    pub comment: String,
}

/// One instance's result of a command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Invocation {
    pub instance: String,
    /// `Pending`, `InProgress`, `Delayed`, `Success`, `Failed`, `TimedOut`, `Cancelled`, ...
    pub status: String,
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl Invocation {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status.as_str(),
            "Success" | "Failed" | "TimedOut" | "Cancelled" | "Undeliverable" | "Terminated"
        )
    }
}

/// One target group of a listener's forward action and the share of requests it gets
/// (weights are relative: 90 and 10 send 90% and 10%).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WeightedTarget {
    /// The target group's ARN.
    pub target_group: String,
    pub weight: i64,
}

/// An ELBv2 listener and its default forward action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Listener {
    pub arn: String,
    pub load_balancer: String,
    pub port: i64,
    pub protocol: String,
    /// The target groups its default action forwards to (empty when it does not forward).
    pub forward: Vec<WeightedTarget>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetGroup {
    pub arn: String,
    pub name: String,
    pub port: i64,
}

/// One registered target and what the load balancer's health checks say of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetHealth {
    pub id: String,
    pub port: i64,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining` or `unavailable`.
    pub state: String,
    pub reason: String,
    pub description: String,
}

/// A CloudWatch metric and the statistic asked of it over a window ending now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricQuery {
    pub namespace: String,
    pub name: String,
    pub dimensions: Tags,
    /// `Average`, `Maximum`, `Minimum`, `Sum`, `SampleCount` or a percentile such as `p95`.
    pub stat: String,
    pub period_seconds: i32,
    /// How far back the window reaches from now, in seconds.
    pub window_seconds: i64,
}

/// One aggregated value of a metric.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Datapoint {
    pub timestamp: String,
    pub value: f64,
}

/// A CloudWatch metric alarm as runbooks see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alarm {
    pub name: String,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub state: String,
    pub reason: String,
    pub updated: String,
    pub actions_enabled: bool,
    pub namespace: String,
    pub metric: String,
    pub threshold: f64,
    pub comparison: String,
}

/// One instance of an Auto Scaling group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupInstance {
    pub id: String,
    /// `Pending`, `InService`, `Terminating`, ...
    pub lifecycle_state: String,
    /// `Healthy` or `Unhealthy`.
    pub health_status: String,
}

/// An Auto Scaling group as runbooks see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScalingGroup {
    pub name: String,
    pub min: i64,
    pub max: i64,
    pub desired: i64,
    pub instances: Vec<GroupInstance>,
    /// Suspended scaling processes (`Launch`, `Terminate`, `HealthCheck`, `AlarmNotification`, ...).
    pub suspended: Vec<String>,
}

/// An instance refresh of an Auto Scaling group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceRefresh {
    pub id: String,
    /// `Pending`, `InProgress`, `Successful`, `Failed`, `Cancelled`, `RollbackSuccessful`, ...
    pub status: String,
    pub percent_complete: i64,
    pub reason: String,
}

impl InstanceRefresh {
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self.status.as_str(),
            "Pending" | "InProgress" | "Cancelling" | "RollbackInProgress" | "Baking"
        )
    }
}

/// The selected backend.
/// An instance's patch compliance, as Patch Manager last reported it
/// (`DescribeInstancePatchStates`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PatchState {
    pub id: String,
    /// The last `AWS-RunPatchBaseline` operation: `Scan` or `Install`.
    pub operation: String,
    pub installed: i64,
    pub installed_pending_reboot: i64,
    pub missing: i64,
    pub failed: i64,
    /// Missing patches the baseline classifies as critical (the seeds' CVE 9.0+ mandate).
    pub critical_non_compliant: i64,
    pub operation_end: String,
}

pub enum Cloud {
    Aws(Box<aws::AwsCloud>),
    Sim(Box<sim::SimCloud>),
}

macro_rules! dispatch {
    ($self:ident, $c:ident => $call:expr) => {
        match $self {
            Cloud::Aws($c) => $call.await,
            Cloud::Sim($c) => $call.await,
        }
    };
}

impl Cloud {
    pub fn backend_name(&self) -> &'static str {
        match self {
            Cloud::Aws(_) => "aws",
            Cloud::Sim(_) => "sim",
        }
    }

    /// AWS request ids of the calls made since the last time this was asked (for the transcript).
    pub fn take_request_ids(&self) -> Vec<String> {
        match self {
            Cloud::Aws(c) => c.take_request_ids(),
            Cloud::Sim(c) => c.take_request_ids(),
        }
    }

    pub async fn account_id(&self) -> CloudResult<String> {
        dispatch!(self, c => c.account_id())
    }

    pub async fn describe_instances(&self, f: &Filter) -> CloudResult<Vec<Instance>> {
        dispatch!(self, c => c.describe_instances(f))
    }

    pub async fn instance_status(&self, ids: &[String]) -> CloudResult<Vec<InstanceStatus>> {
        dispatch!(self, c => c.instance_status(ids))
    }

    pub async fn create_tags(&self, ids: &[String], tags: &Tags) -> CloudResult<()> {
        dispatch!(self, c => c.create_tags(ids, tags))
    }

    pub async fn delete_tags(&self, ids: &[String], keys: &[String]) -> CloudResult<()> {
        dispatch!(self, c => c.delete_tags(ids, keys))
    }

    pub async fn find_security_group(&self, vpc: &str, name: &str) -> CloudResult<Option<String>> {
        dispatch!(self, c => c.find_security_group(vpc, name))
    }

    /// Creates a group with no ingress and *no egress* (the default allow-all egress is revoked).
    pub async fn create_closed_security_group(
        &self,
        vpc: &str,
        name: &str,
        description: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        dispatch!(self, c => c.create_closed_security_group(vpc, name, description, tags))
    }

    pub async fn set_eni_groups(&self, eni: &str, groups: &[String]) -> CloudResult<()> {
        dispatch!(self, c => c.set_eni_groups(eni, groups))
    }

    pub async fn create_snapshot(
        &self,
        volume: &str,
        description: &str,
        tags: &Tags,
    ) -> CloudResult<Snapshot> {
        dispatch!(self, c => c.create_snapshot(volume, description, tags))
    }

    pub async fn describe_snapshots(&self, ids: &[String]) -> CloudResult<Vec<Snapshot>> {
        dispatch!(self, c => c.describe_snapshots(ids))
    }

    pub async fn change_state(
        &self,
        ids: &[String],
        action: StateAction,
    ) -> CloudResult<Vec<StateChange>> {
        dispatch!(self, c => c.change_state(ids, action))
    }

    pub async fn create_image(
        &self,
        instance: &str,
        name: &str,
        no_reboot: bool,
        tags: &Tags,
    ) -> CloudResult<String> {
        dispatch!(self, c => c.create_image(instance, name, no_reboot, tags))
    }

    pub async fn run_instances(&self, spec: &LaunchSpec) -> CloudResult<Vec<Instance>> {
        dispatch!(self, c => c.run_instances(spec))
    }

    pub async fn send_command(&self, req: &CommandRequest) -> CloudResult<String> {
        dispatch!(self, c => c.send_command(req))
    }

    pub async fn command_invocation(
        &self,
        command_id: &str,
        instance: &str,
    ) -> CloudResult<Invocation> {
        dispatch!(self, c => c.command_invocation(command_id, instance))
    }

    pub async fn get_parameter(&self, name: &str, decrypt: bool) -> CloudResult<String> {
        dispatch!(self, c => c.get_parameter(name, decrypt))
    }

    pub async fn patch_states(&self, ids: &[String]) -> CloudResult<Vec<PatchState>> {
        dispatch!(self, c => c.patch_states(ids))
    }

    pub async fn put_parameter(
        &self,
        name: &str,
        value: &str,
        kind: &str,
        overwrite: bool,
    ) -> CloudResult<i64> {
        dispatch!(self, c => c.put_parameter(name, value, kind, overwrite))
    }

    pub async fn describe_listener(&self, arn: &str) -> CloudResult<Listener> {
        dispatch!(self, c => c.describe_listener(arn))
    }

    /// Replaces the listener's default action with a weighted forward to `targets`.
    pub async fn set_listener_forward(
        &self,
        arn: &str,
        targets: &[WeightedTarget],
    ) -> CloudResult<()> {
        dispatch!(self, c => c.set_listener_forward(arn, targets))
    }

    /// Target groups by name or by ARN (one of the two lists is used, names first).
    pub async fn describe_target_groups(
        &self,
        names: &[String],
        arns: &[String],
    ) -> CloudResult<Vec<TargetGroup>> {
        dispatch!(self, c => c.describe_target_groups(names, arns))
    }

    pub async fn target_health(&self, target_group: &str) -> CloudResult<Vec<TargetHealth>> {
        dispatch!(self, c => c.target_health(target_group))
    }

    pub async fn register_targets(&self, target_group: &str, ids: &[String]) -> CloudResult<()> {
        dispatch!(self, c => c.register_targets(target_group, ids))
    }

    pub async fn deregister_targets(&self, target_group: &str, ids: &[String]) -> CloudResult<()> {
        dispatch!(self, c => c.deregister_targets(target_group, ids))
    }

    pub async fn metric_data(&self, q: &MetricQuery) -> CloudResult<Vec<Datapoint>> {
        dispatch!(self, c => c.metric_data(q))
    }

    pub async fn describe_alarms(&self, names: &[String]) -> CloudResult<Vec<Alarm>> {
        dispatch!(self, c => c.describe_alarms(names))
    }

    pub async fn set_alarm_actions(&self, names: &[String], enabled: bool) -> CloudResult<()> {
        dispatch!(self, c => c.set_alarm_actions(names, enabled))
    }

    pub async fn describe_scaling_groups(
        &self,
        names: &[String],
    ) -> CloudResult<Vec<ScalingGroup>> {
        dispatch!(self, c => c.describe_scaling_groups(names))
    }

    pub async fn set_desired_capacity(&self, name: &str, desired: i64) -> CloudResult<()> {
        dispatch!(self, c => c.set_desired_capacity(name, desired))
    }

    /// Suspends (`suspend`) or resumes scaling processes (all of them when `processes` is empty).
    pub async fn set_processes(
        &self,
        name: &str,
        processes: &[String],
        suspend: bool,
    ) -> CloudResult<()> {
        dispatch!(self, c => c.set_processes(name, processes, suspend))
    }

    pub async fn start_instance_refresh(
        &self,
        name: &str,
        min_healthy_percent: i64,
    ) -> CloudResult<String> {
        dispatch!(self, c => c.start_instance_refresh(name, min_healthy_percent))
    }

    pub async fn describe_instance_refresh(
        &self,
        name: &str,
        id: &str,
    ) -> CloudResult<InstanceRefresh> {
        dispatch!(self, c => c.describe_instance_refresh(name, id))
    }
}

// --- EBS volumes restored from backups (`ec2::snapshots`, `ec2::restore_volume`,
// `ec2::delete_volume`): the monthly backup restoration test. ---

/// Which snapshots to list (owned by the account). Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub volume: Option<String>,
    pub tags: Tags,
    pub states: Vec<String>,
}

/// An EBS volume and its attachment (empty `instance` when detached).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Volume {
    pub id: String,
    /// `creating`, `available`, `in-use`, `deleting`, `deleted` or `error`.
    pub state: String,
    pub snapshot: String,
    pub zone: String,
    pub instance: String,
    pub device: String,
    /// The attachment's state: `attaching`, `attached`, `detaching`, or empty.
    pub attachment: String,
    pub tags: Tags,
}

impl Cloud {
    pub async fn find_snapshots(&self, f: &SnapshotFilter) -> CloudResult<Vec<Snapshot>> {
        dispatch!(self, c => c.find_snapshots(f))
    }

    /// The availability zone an instance runs in (a volume attaches only within its zone).
    pub async fn instance_zone(&self, instance: &str) -> CloudResult<String> {
        dispatch!(self, c => c.instance_zone(instance))
    }

    pub async fn create_volume(
        &self,
        snapshot: &str,
        zone: &str,
        tags: &Tags,
    ) -> CloudResult<Volume> {
        dispatch!(self, c => c.create_volume(snapshot, zone, tags))
    }

    /// The volumes with these ids; `InvalidVolume.NotFound` when one does not exist.
    pub async fn describe_volumes(&self, ids: &[String]) -> CloudResult<Vec<Volume>> {
        dispatch!(self, c => c.describe_volumes(ids))
    }

    pub async fn attach_volume(
        &self,
        volume: &str,
        instance: &str,
        device: &str,
    ) -> CloudResult<()> {
        dispatch!(self, c => c.attach_volume(volume, instance, device))
    }

    /// Detaches `volume` from `instance` at `device` (AWS takes the volume alone; moto needs all
    /// three).
    pub async fn detach_volume(
        &self,
        volume: &str,
        instance: &str,
        device: &str,
        force: bool,
    ) -> CloudResult<()> {
        dispatch!(self, c => c.detach_volume(volume, instance, device, force))
    }

    pub async fn delete_volume(&self, volume: &str) -> CloudResult<()> {
        dispatch!(self, c => c.delete_volume(volume))
    }
}

/// The error for an environment whose cloud cannot be set up. A fleet fixture that does not parse
/// is the configuration's fault (named first, as every configuration error is); a simulated state
/// file that does not is ours, since only we write it; anything else is the outside world's.
pub(crate) fn setup_error(
    env: &crate::data::config::Environment,
    e: BindingError,
) -> crate::base::error::Error {
    use crate::base::error::Error;
    match e.code.as_str() {
        "bad_fleet" => {
            // The simulator's message names the fixture too; the error shows it once, first.
            let prefix = format!("fleet fixture {}: ", env.fleet_source);
            let detail = e.message.strip_prefix(&prefix).unwrap_or(&e.message);
            Error::config(
                &env.fleet_source,
                format!("environment {}: {detail}", env.name),
            )
        }
        "bad_sim_state" => Error::Internal(format!("environment {}: {}", env.name, e.message)),
        _ => Error::Environment(format!(
            "environment {}: {}: {}",
            env.name, e.code, e.message
        )),
    }
}

/// The run's way to the cloud: the chosen environment and its backend, connected on first use
/// (a runbook that never touches the cloud pays nothing for it).
pub struct CloudAccess {
    env: crate::data::config::Environment,
    cloud: std::sync::OnceLock<Cloud>,
    /// The run's clock, handed to the simulated cloud so its latency is simulated time too.
    clock: std::sync::OnceLock<crate::base::clock::Clock>,
}

impl CloudAccess {
    pub fn new(env: crate::data::config::Environment) -> Self {
        CloudAccess {
            env,
            cloud: std::sync::OnceLock::new(),
            clock: std::sync::OnceLock::new(),
        }
    }

    /// Gives the simulated cloud the run's clock (before its first use; a cloud connected
    /// earlier, such as the hook server's shared sim, keeps its own real clock).
    pub fn set_clock(&self, clock: crate::base::clock::Clock) {
        let _ = self.clock.set(clock);
    }

    /// An environment whose backend is already connected (the hook server hands each run a
    /// handle on its one simulated cloud).
    pub fn connected(env: crate::data::config::Environment, cloud: Cloud) -> Self {
        CloudAccess {
            env,
            cloud: std::sync::OnceLock::from(cloud),
            clock: std::sync::OnceLock::new(),
        }
    }

    pub fn environment(&self) -> &crate::data::config::Environment {
        &self.env
    }

    /// The backend, connected on first use.
    pub fn get(&self, io: &crate::services::runtime::AsyncIo) -> CloudResult<&Cloud> {
        if let Some(c) = self.cloud.get() {
            return Ok(c);
        }
        let cloud = match self.env.backend {
            crate::data::config::Backend::Sim => {
                let mut sim = sim::SimCloud::for_environment(&self.env)?;
                if let Some(clock) = self.clock.get() {
                    sim.set_clock(clock.clone());
                }
                Cloud::Sim(Box::new(sim))
            }
            crate::data::config::Backend::Aws => {
                let rt = io.runtime()?;
                Cloud::Aws(Box::new(rt.block_on(aws::AwsCloud::connect(&self.env.aws))))
            }
        };
        Ok(self.cloud.get_or_init(|| cloud))
    }

    /// The account the environment resolves to. For the sim it is the fleet's, read without an
    /// API call (so the fixture's call-numbered faults stay where the drill put them).
    pub fn account(
        &self,
        io: &crate::services::runtime::AsyncIo,
        interrupt: &crate::base::interrupt::Interrupt,
    ) -> CloudResult<String> {
        match self.get(io)? {
            Cloud::Sim(sim) => Ok(sim.fleet().account_id.clone()),
            Cloud::Aws(aws) => io.block_on(interrupt, aws.account_id()),
        }
    }

    /// The caller ARN STS named when the account was verified (aws environments only).
    pub fn caller_arn(&self) -> Option<String> {
        match self.cloud.get() {
            Some(Cloud::Aws(aws)) => aws.caller_arn(),
            _ => None,
        }
    }

    /// The account the environment's credentials resolve to, refusing the run when it is not the
    /// one `runbook.toml` expects (a staging profile pointed at production is how outages start).
    pub fn verify_account(
        &self,
        io: &crate::services::runtime::AsyncIo,
        interrupt: &crate::base::interrupt::Interrupt,
    ) -> crate::base::error::Result<Option<String>> {
        let env = self.environment();
        let found = self.account(io, interrupt);
        match (&env.account_id, found) {
            (Some(expected), Ok(found)) if *expected != found => {
                Err(crate::base::error::Error::Environment(format!(
                    "environment {}: the credentials resolve to account {found}, not {expected}: refusing to run",
                    env.name
                )))
            }
            (Some(_), Err(e)) => Err(crate::base::error::Error::Environment(format!(
                "environment {}: cannot confirm the account ({}: {}): refusing to run",
                env.name, e.code, e.message
            ))),
            (_, Ok(found)) => Ok(Some(found)),
            (None, Err(e)) => {
                tracing::warn!(code = %e.code, "could not resolve the account: {}", e.message);
                Ok(None)
            }
        }
    }

    /// The region and endpoint the run acts on, as resolved: the SDK's configuration chain on
    /// AWS (once connected; the configured values before), the fleet's region and `sim` on the sim.
    pub fn region_endpoint(&self) -> (Option<String>, Option<String>) {
        match self.cloud.get() {
            Some(Cloud::Aws(aws)) => aws.target(),
            Some(Cloud::Sim(sim)) => (Some(sim.fleet().region.clone()), Some("sim".into())),
            None => (self.env.aws.region.clone(), self.env.aws.endpoint.clone()),
        }
    }

    /// Request ids gathered since the last call (empty when the cloud was never used).
    pub fn take_request_ids(&self) -> Vec<String> {
        self.cloud
            .get()
            .map(Cloud::take_request_ids)
            .unwrap_or_default()
    }

    /// The simulated state, when the backend is the sim and it was used.
    pub fn sim_state(&self) -> Option<serde_json::Value> {
        match self.cloud.get() {
            Some(Cloud::Sim(s)) => Some(s.state_json()),
            _ => None,
        }
    }

    /// The simulated cloud, when that is the backend and it is connected.
    pub fn sim(&self) -> Option<&sim::SimCloud> {
        match self.cloud.get() {
            Some(Cloud::Sim(s)) => Some(s),
            _ => None,
        }
    }
}
