//! The fleet fixture's schema (`runbook.toml`'s `fleet` or `sim/default-fleet.toml`): the
//! instances, groups, parameters, scripted outputs and faults a simulated cloud starts from.

use serde::{Deserialize, Serialize};

use super::super::Tags;
use super::http::Endpoint;

/// The fleet a fresh checkout runs against.
pub const DEFAULT_FLEET: &str = include_str!("../../../../sim/default-fleet.toml");

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fleet {
    #[serde(default = "default_account")]
    pub(crate) account_id: String,
    #[serde(default = "default_region")]
    pub(crate) region: String,
    #[serde(default)]
    pub(crate) instances: Vec<FleetInstance>,
    #[serde(default)]
    pub(crate) security_groups: Vec<FleetGroup>,
    #[serde(default)]
    pub(crate) launch_templates: Vec<LaunchTemplate>,
    #[serde(default)]
    pub(crate) parameters: Vec<FleetParameter>,
    #[serde(default)]
    pub(crate) command_outputs: Vec<CommandOutput>,
    #[serde(default)]
    pub(crate) faults: Faults,
    /// HTTP endpoints the `health::` bindings answer for, with scripted behaviour.
    #[serde(default)]
    pub(crate) endpoints: Vec<Endpoint>,
    /// ELBv2 target groups (blue/green pools) and the listeners that forward to them.
    #[serde(default)]
    pub(crate) target_groups: Vec<FleetTargetGroup>,
    #[serde(default)]
    pub(crate) listeners: Vec<FleetListener>,
    /// CloudWatch metric series, scripted on the run's clock, and the alarms watching them.
    #[serde(default)]
    pub(crate) metrics: Vec<FleetMetric>,
    #[serde(default)]
    pub(crate) alarms: Vec<FleetAlarm>,
    #[serde(default)]
    pub(crate) auto_scaling_groups: Vec<FleetScalingGroup>,
    /// What declared local commands (`local::run`) answer on the sim: no program is started.
    #[serde(default)]
    pub(crate) local_commands: Vec<LocalCommand>,
    /// Backup snapshots that exist before the run (the backup restoration test restores one).
    #[serde(default)]
    pub(crate) snapshots: Vec<super::volumes::FleetSnapshot>,
}

/// A local command's scripted answer: the first rule whose `program` is the program run and
/// whose `match` occurs in its arguments (joined by spaces) answers; successive runs take
/// successive `stdout` entries (the last one repeats).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocalCommand {
    pub(crate) program: String,
    #[serde(rename = "match", default)]
    pub(crate) pattern: String,
    #[serde(default)]
    pub(crate) stdout: Vec<String>,
    #[serde(default)]
    pub(crate) stderr: String,
    #[serde(default)]
    pub(crate) exit_code: i64,
}

fn default_account() -> String {
    "123456789012".into()
}

fn default_region() -> String {
    "eu-west-1".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetInstance {
    pub(crate) id: String,
    #[serde(rename = "type", default = "default_type")]
    pub(crate) instance_type: String,
    #[serde(default = "default_state")]
    pub(crate) state: String,
    #[serde(default = "default_image")]
    pub(crate) image: String,
    pub(crate) vpc: String,
    pub(crate) subnet: String,
    #[serde(default)]
    pub(crate) private_ip: String,
    #[serde(default)]
    pub(crate) security_groups: Vec<String>,
    #[serde(default)]
    pub(crate) volumes: Vec<String>,
    #[serde(default)]
    pub(crate) tags: Tags,
    #[serde(default = "default_launch_time")]
    pub(crate) launch_time: String,
}

pub(super) fn default_type() -> String {
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
pub(crate) struct FleetGroup {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) vpc: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LaunchTemplate {
    pub(crate) name: String,
    pub(crate) image: String,
    #[serde(rename = "type", default = "default_type")]
    pub(crate) instance_type: String,
    pub(crate) subnet: String,
    #[serde(default)]
    pub(crate) security_groups: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetParameter {
    pub(crate) name: String,
    pub(crate) value: String,
    #[serde(rename = "type", default = "default_param_type")]
    pub(crate) kind: String,
}

/// A target group: `arn` defaults to one made from the fleet's region, account and `name`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetTargetGroup {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) arn: String,
    #[serde(default = "default_port")]
    pub(crate) port: i64,
    /// Registered instance ids.
    #[serde(default)]
    pub(crate) targets: Vec<String>,
}

fn default_port() -> i64 {
    80
}

/// A listener whose default action forwards to target groups (by name) with weights.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetListener {
    pub(crate) arn: String,
    pub(crate) load_balancer: String,
    #[serde(default = "default_listener_port")]
    pub(crate) port: i64,
    #[serde(default = "default_protocol")]
    pub(crate) protocol: String,
    #[serde(default)]
    pub(crate) forward: Vec<FleetForward>,
}

fn default_listener_port() -> i64 {
    443
}
fn default_protocol() -> String {
    "HTTPS".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetForward {
    pub(crate) target_group: String,
    pub(crate) weight: i64,
}

/// A metric series on the run's clock: `value` from ever before the run until the first
/// mutating call whose text contains `recovers_on` (a Run Command's commands count), then moving
/// to `recovered` over `ramp_minutes` of the run's clock (simulated in drills).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetMetric {
    pub(crate) namespace: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) dimensions: Tags,
    pub(crate) value: f64,
    #[serde(default)]
    pub(crate) recovers_on: Option<String>,
    #[serde(default)]
    pub(crate) recovered: Option<f64>,
    #[serde(default)]
    pub(crate) ramp_minutes: u64,
}

/// A metric alarm, evaluated on the fleet's series: `ALARM` when each of the last
/// `evaluation_periods` periods breaches the threshold, `OK` otherwise.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetAlarm {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) metric: String,
    #[serde(default)]
    pub(crate) dimensions: Tags,
    #[serde(default = "default_statistic")]
    pub(crate) statistic: String,
    #[serde(default = "default_period")]
    pub(crate) period: i32,
    #[serde(default = "default_evaluation_periods")]
    pub(crate) evaluation_periods: i64,
    pub(crate) threshold: f64,
    #[serde(default = "default_comparison")]
    pub(crate) comparison: String,
    #[serde(default = "default_true")]
    pub(crate) actions_enabled: bool,
}

fn default_statistic() -> String {
    "Average".into()
}
fn default_period() -> i32 {
    60
}
fn default_evaluation_periods() -> i64 {
    5
}
fn default_comparison() -> String {
    "GreaterThanThreshold".into()
}
fn default_true() -> bool {
    true
}

/// An Auto Scaling group over fleet instances; it launches from `launch_template` (a fleet
/// launch template) and registers what it launches with `target_groups` (names).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetScalingGroup {
    pub(crate) name: String,
    pub(crate) min: i64,
    pub(crate) max: i64,
    pub(crate) desired: i64,
    #[serde(default)]
    pub(crate) instances: Vec<String>,
    pub(crate) launch_template: String,
    #[serde(default)]
    pub(crate) target_groups: Vec<String>,
    #[serde(default)]
    pub(crate) suspended: Vec<String>,
}

fn default_param_type() -> String {
    "String".into()
}

/// Scripted command output: the first rule whose `match` occurs in the command text answers.
/// Successive invocations take successive `stdout` entries (the last one repeats), so a runbook
/// can see a CPU at 97% before a restart and at 12% after it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandOutput {
    #[serde(rename = "match")]
    pub(crate) pattern: String,
    #[serde(default)]
    pub(crate) stdout: Vec<String>,
    #[serde(default)]
    pub(crate) exit_code: i64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Faults {
    /// Added to every API call.
    #[serde(default)]
    pub(crate) latency_ms: u64,
    /// 1-based call numbers that answer with a throttling error (retried like the SDK does).
    #[serde(default)]
    pub(crate) throttle_calls: Vec<u64>,
    /// Attempts per call before a throttle becomes the caller's error (the SDK's standard mode: 3).
    #[serde(default = "default_attempts")]
    pub(crate) max_attempts: u32,
    #[serde(default)]
    pub(crate) errors: Vec<ApiFault>,
    #[serde(default)]
    pub(crate) command_failure: Option<CommandFailure>,
    /// Instances that never finish stopping.
    #[serde(default)]
    pub(crate) stuck_stopping: Vec<String>,
    /// Instances whose status checks report `impaired`, whatever is done to them.
    #[serde(default)]
    pub(crate) impaired: Vec<String>,
    /// Instances whose status checks report `impaired` until what heals them happens:
    /// `"reboot"` (a fault inside the instance: its instance check fails, a reboot or a stop and
    /// start clears it) or `"stop_start"` (a fault of the host: its system check fails too, and
    /// only a stop and start, which moves the instance to other hardware, clears it).
    #[serde(default)]
    pub(crate) impaired_until: std::collections::BTreeMap<String, Heal>,
    /// Critical patches each instance is missing (what `AWS-RunPatchBaseline` finds with
    /// `Scan` and installs with `Install`); an instance not listed is missing none.
    #[serde(default)]
    pub(crate) missing_patches: std::collections::BTreeMap<String, u32>,
    /// Instances where `AWS-RunPatchBaseline`'s `Install` fails (a package that will not
    /// install): the invocation fails and the patches stay missing.
    #[serde(default)]
    pub(crate) patch_failure: Vec<String>,
    /// Instances whose status checks report `initializing` until the run's clock has run this
    /// many milliseconds (simulated in drills): a slow boot, for waits longer than a default.
    #[serde(default)]
    pub(crate) initializing_ms: std::collections::BTreeMap<String, u64>,
    /// Target groups (names) whose targets fail their health checks while any listener sends
    /// them traffic (weight above 0): a new colour that breaks under load.
    #[serde(default)]
    pub(crate) unhealthy_with_traffic: Vec<String>,
    /// Auto Scaling groups (names) whose instance refreshes fail halfway.
    #[serde(default)]
    pub(crate) refresh_fails: Vec<String>,
    /// Instance refreshes that end other than `Successful`, as a real one was seen to: the
    /// group, the status, the percentage it stops at and the reason AWS gave.
    #[serde(default)]
    pub(crate) refresh_failures: Vec<RefreshFailure>,
    /// Errors on given calls of an operation, after which it goes through: what a throttle
    /// or a transient error that a retry answered looks like (`throttle_calls` counts every
    /// call; these count the operation's own).
    #[serde(default)]
    pub(crate) calls: Vec<CallFault>,
}

/// An error on the `nth` call of `operation` (counting only the calls for `instance`, or for
/// `resource` on an operation of Auto Scaling groups, SSM parameters or alarms, when given) and
/// the `attempts - 1` calls after it; the calls before and after go through. The
/// caller sees the error: it is what the SDK returned after its own retries, so they are not
/// tried again. A call is one API request as the caller makes it, so a binding that looks an
/// instance up first or polls counts each of its requests.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallFault {
    pub(crate) operation: String,
    #[serde(default)]
    pub(crate) instance: String,
    /// The Auto Scaling group, SSM parameter or alarm (by name) the call is for.
    #[serde(default)]
    pub(crate) resource: String,
    /// 1-based: the first call that fails.
    #[serde(default = "one")]
    pub(crate) nth: u64,
    /// How many calls in a row fail from the `nth` on.
    #[serde(default = "one")]
    pub(crate) attempts: u64,
    /// The AWS error code the caller sees (`Throttling`, `RequestLimitExceeded`,
    /// `InternalError`, `Timeout`, ...).
    pub(crate) error: String,
    #[serde(default)]
    pub(crate) message: String,
}

impl CallFault {
    /// Whether the `n`th call (1-based) of the operation for this fault fails.
    pub(crate) fn fails(&self, n: u64) -> bool {
        n >= self.nth && n < self.nth.saturating_add(self.attempts)
    }
}

fn one() -> u64 {
    1
}

/// How an instance refresh of `group` ends when it does not succeed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshFailure {
    pub(crate) group: String,
    /// `Failed`, `Cancelled`, `RollbackSuccessful`, `RollbackFailed` (default `Failed`); or a
    /// status that does not end it (`InProgress`): it never finishes, stuck at `percent`.
    #[serde(default = "failed")]
    pub(crate) status: String,
    /// The percentage it reaches and stops at (default 50).
    #[serde(default = "half")]
    pub(crate) percent: i64,
    #[serde(default)]
    pub(crate) reason: String,
}

fn failed() -> String {
    "Failed".into()
}

fn half() -> i64 {
    50
}

/// What clears an instance's failing status checks (see [`Faults::impaired_until`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Heal {
    Reboot,
    StopStart,
}

fn default_attempts() -> u32 {
    3
}

/// An API error returned whenever `operation` is called for `instance` (any instance if empty)
/// and `resource` (any if empty).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiFault {
    pub(crate) operation: String,
    #[serde(default)]
    pub(crate) instance: String,
    /// The Auto Scaling group, SSM parameter or alarm (by name) the call is for.
    #[serde(default)]
    pub(crate) resource: String,
    pub(crate) code: String,
    #[serde(default)]
    pub(crate) message: String,
}

/// A command that fails on the first `share` of its targets (sorted by instance id).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandFailure {
    pub(crate) share: f64,
    #[serde(default = "default_exit")]
    pub(crate) exit_code: i64,
    #[serde(default)]
    pub(crate) stderr: String,
}

fn default_exit() -> i64 {
    1
}

#[cfg(test)]
mod tests {
    use super::super::SimCloud;
    use super::super::tests::block;
    use super::DEFAULT_FLEET;
    use crate::services::cloud::Filter;

    #[test]
    fn the_embedded_fleet_loads() {
        let sim = SimCloud::from_toml(DEFAULT_FLEET).unwrap();
        assert!(sim.fleet().instances.len() >= 4);
        let all = block(sim.describe_instances(&Filter::default())).unwrap();
        assert_eq!(all.len(), sim.fleet().instances.len());
    }

    #[test]
    fn unknown_fixture_keys_are_refused() {
        assert!(SimCloud::from_toml("instancez = []").is_err());
    }
}
