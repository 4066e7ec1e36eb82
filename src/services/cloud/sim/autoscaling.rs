//! Auto Scaling in the sim: groups over fleet instances, desired capacity within the group's
//! limits (launching from its launch template and registering with its target groups, or
//! terminating the newest), suspended processes, and instance refreshes that progress on the
//! run's clock (a minute per instance; `faults.refresh_fails` fails one halfway, `faults.refresh_failures`
//! ends one as a real one was seen to end).

use serde::{Deserialize, Serialize};

use super::fleet::Fleet;
use super::{SimCloud, State, err};
use crate::services::cloud::{
    CloudResult, Eni, GroupInstance, Instance, InstanceRefresh, ScalingGroup, Tags,
};

/// Every process Auto Scaling can suspend (what "all" means in SuspendProcesses).
const PROCESSES: &[&str] = &[
    "Launch",
    "Terminate",
    "AddToLoadBalancer",
    "AlarmNotification",
    "AZRebalance",
    "HealthCheck",
    "InstanceRefresh",
    "ReplaceUnhealthy",
    "ScheduledActions",
];
/// Why a refresh of `faults.refresh_fails` fails (AWS's words for the commonest cause).
const HEALTH_CHECKS_FAILED: &str = "Instances failed to pass their health checks";
/// How long the sim's instance refresh takes per instance, on the run's clock.
const REFRESH_PER_INSTANCE_MS: u64 = 60_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SimScalingGroup {
    pub(super) name: String,
    pub(super) min: i64,
    pub(super) max: i64,
    pub(super) desired: i64,
    pub(super) instances: Vec<String>,
    pub(super) launch_template: String,
    pub(super) target_groups: Vec<String>,
    pub(super) suspended: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SimRefresh {
    id: String,
    group: String,
    started_ms: u64,
    instances: u64,
}

pub(super) fn groups_of(fleet: &Fleet) -> Vec<SimScalingGroup> {
    fleet
        .auto_scaling_groups
        .iter()
        .map(|g| SimScalingGroup {
            name: g.name.clone(),
            min: g.min,
            max: g.max,
            desired: g.desired,
            instances: g.instances.clone(),
            launch_template: g.launch_template.clone(),
            target_groups: g.target_groups.clone(),
            suspended: g.suspended.clone(),
        })
        .collect()
}

fn no_group(name: &str) -> crate::base::error::BindingError {
    err(
        "ValidationError",
        format!("AutoScalingGroup name not found - AutoScalingGroup {name} not found"),
    )
}

impl SimCloud {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn group_view(&self, s: &State, g: &SimScalingGroup) -> ScalingGroup {
        ScalingGroup {
            name: g.name.clone(),
            min: g.min,
            max: g.max,
            desired: g.desired,
            instances: g
                .instances
                .iter()
                .filter_map(|id| s.instances.iter().find(|i| &i.id == id))
                .map(|i| GroupInstance {
                    id: i.id.clone(),
                    lifecycle_state: match i.state.as_str() {
                        "running" => "InService",
                        "pending" => "Pending",
                        "stopping" | "stopped" => "Standby",
                        _ => "Terminating",
                    }
                    .into(),
                    health_status: if self.fleet.faults.impaired.contains(&i.id) {
                        "Unhealthy".into()
                    } else {
                        "Healthy".into()
                    },
                })
                .collect(),
            suspended: g.suspended.clone(),
        }
    }

    pub(crate) async fn describe_scaling_groups(
        &self,
        names: &[String],
    ) -> CloudResult<Vec<ScalingGroup>> {
        self.enter("DescribeAutoScalingGroups", names).await?;
        let s = self.lock()?;
        Ok(s.scaling_groups
            .iter()
            .filter(|g| names.is_empty() || names.contains(&g.name))
            .map(|g| self.group_view(&s, g))
            .collect())
    }

    pub(crate) async fn set_desired_capacity(&self, name: &str, desired: i64) -> CloudResult<()> {
        self.enter("SetDesiredCapacity", &[name.to_string()])
            .await?;
        let mut s = self.lock()?;
        let k = s
            .scaling_groups
            .iter()
            .position(|g| g.name == name)
            .ok_or_else(|| no_group(name))?;
        let g = s.scaling_groups[k].clone();
        if desired > g.max {
            return Err(err(
                "ValidationError",
                format!(
                    "New SetDesiredCapacity value {desired} is above max value {} for the AutoScalingGroup.",
                    g.max
                ),
            ));
        }
        if desired < g.min {
            return Err(err(
                "ValidationError",
                format!(
                    "New SetDesiredCapacity value {desired} is below min value {} for the AutoScalingGroup.",
                    g.min
                ),
            ));
        }
        let mut members = g.instances.clone();
        let current = i64::try_from(members.len()).unwrap_or(i64::MAX);
        if desired > current && !g.suspended.iter().any(|p| p == "Launch") {
            let template = self
                .fleet
                .launch_templates
                .iter()
                .find(|t| t.name == g.launch_template)
                .ok_or_else(|| {
                    err(
                        "ValidationError",
                        format!("launch template '{}' does not exist", g.launch_template),
                    )
                })?;
            let vpc = s
                .instances
                .iter()
                .find(|i| i.subnet == template.subnet)
                .map(|i| i.vpc.clone())
                .unwrap_or_default();
            for _ in current..desired {
                let id = Self::new_id(&mut s, "i");
                let volume = Self::new_id(&mut s, "vol");
                let n = s.next_id;
                s.instances.push(Instance {
                    id: id.clone(),
                    state: "running".into(),
                    instance_type: template.instance_type.clone(),
                    image: template.image.clone(),
                    vpc: vpc.clone(),
                    subnet: template.subnet.clone(),
                    private_ip: format!("10.0.8.{}", n % 250 + 2),
                    security_groups: template.security_groups.clone(),
                    network_interfaces: vec![Eni {
                        id: format!("eni-{}", id.trim_start_matches("i-")),
                        groups: template.security_groups.clone(),
                    }],
                    volumes: vec![volume],
                    tags: Tags::from([("aws:autoscaling:groupName".to_string(), name.to_string())]),
                    launch_time: crate::base::clock::now_utc(),
                });
                for tg in &g.target_groups {
                    if let Some(t) = s.target_groups.iter_mut().find(|t| &t.name == tg) {
                        t.targets.push(id.clone());
                    }
                }
                members.push(id);
            }
        }
        if desired < current && !g.suspended.iter().any(|p| p == "Terminate") {
            // The newest instances go first (the sim's termination policy).
            let keep = usize::try_from(desired).unwrap_or(0);
            for id in members.split_off(keep) {
                if let Some(i) = s.instances.iter_mut().find(|i| i.id == id) {
                    i.state = "terminated".into();
                }
                for t in &mut s.target_groups {
                    t.targets.retain(|x| x != &id);
                }
            }
        }
        s.scaling_groups[k].desired = desired;
        s.scaling_groups[k].instances = members;
        self.mutated(&mut s, format!("SetDesiredCapacity {name} {desired}"));
        Ok(())
    }

    pub(crate) async fn set_processes(
        &self,
        name: &str,
        processes: &[String],
        suspend: bool,
    ) -> CloudResult<()> {
        let op = if suspend {
            "SuspendProcesses"
        } else {
            "ResumeProcesses"
        };
        self.enter(op, &[name.to_string()]).await?;
        let mut s = self.lock()?;
        if let Some(bad) = processes.iter().find(|p| !PROCESSES.contains(&p.as_str())) {
            return Err(err(
                "ValidationError",
                format!("Process type {bad} is not recognised"),
            ));
        }
        let all: Vec<String> = if processes.is_empty() {
            PROCESSES.iter().map(|p| p.to_string()).collect()
        } else {
            processes.to_vec()
        };
        let g = s
            .scaling_groups
            .iter_mut()
            .find(|g| g.name == name)
            .ok_or_else(|| no_group(name))?;
        g.suspended.retain(|p| !all.contains(p));
        if suspend {
            g.suspended.extend(all.iter().cloned());
        }
        self.mutated(&mut s, format!("{op} {name} {}", all.join(",")));
        Ok(())
    }

    pub(crate) async fn start_instance_refresh(
        &self,
        name: &str,
        _min_healthy_percent: i64,
    ) -> CloudResult<String> {
        self.enter("StartInstanceRefresh", &[name.to_string()])
            .await?;
        let now = self.elapsed_ms();
        let mut s = self.lock()?;
        let g = s
            .scaling_groups
            .iter()
            .find(|g| g.name == name)
            .ok_or_else(|| no_group(name))?;
        let instances = u64::try_from(g.instances.len()).unwrap_or(0);
        if s.refreshes.iter().any(|r| {
            r.group == name
                && now.saturating_sub(r.started_ms)
                    < REFRESH_PER_INSTANCE_MS.saturating_mul(r.instances)
        }) {
            return Err(err(
                "InstanceRefreshInProgress",
                format!("An Instance Refresh is already in progress for {name}"),
            ));
        }
        s.next_id += 1;
        let id = format!("refresh-{:08x}", s.next_id);
        s.refreshes.push(SimRefresh {
            id: id.clone(),
            group: name.to_string(),
            started_ms: now,
            instances,
        });
        self.mutated(&mut s, format!("StartInstanceRefresh {name}"));
        Ok(id)
    }

    pub(crate) async fn describe_instance_refresh(
        &self,
        name: &str,
        id: &str,
    ) -> CloudResult<InstanceRefresh> {
        self.enter("DescribeInstanceRefreshes", &[name.to_string()])
            .await?;
        let now = self.elapsed_ms();
        let s = self.lock()?;
        let r = s
            .refreshes
            .iter()
            .find(|r| r.id == id && r.group == name)
            .ok_or_else(|| {
                err(
                    "ValidationError",
                    format!("no instance refresh {id} for {name}"),
                )
            })?;
        let total = REFRESH_PER_INSTANCE_MS.saturating_mul(r.instances.max(1));
        let percent = i64::try_from(
            now.saturating_sub(r.started_ms)
                .saturating_mul(100)
                .checked_div(total)
                .unwrap_or(100)
                .min(100),
        )
        .unwrap_or(100);
        let faults = &self.fleet.faults;
        let failure = faults
            .refresh_failures
            .iter()
            .find(|f| f.group == name)
            .map(|f| {
                let reason = if f.reason.is_empty() {
                    HEALTH_CHECKS_FAILED.to_string()
                } else {
                    f.reason.clone()
                };
                (f.status.as_str(), f.percent.clamp(0, 100), reason)
            })
            .or_else(|| {
                faults
                    .refresh_fails
                    .iter()
                    .any(|g| g == name)
                    .then(|| ("Failed", 50, HEALTH_CHECKS_FAILED.to_string()))
            });
        let (status, percent, reason) = match failure {
            Some((status, at, reason)) if percent >= at => (status, at, reason),
            _ if percent >= 100 => ("Successful", 100, String::new()),
            _ if percent == 0 => ("Pending", 0, String::new()),
            _ => ("InProgress", percent, String::new()),
        };
        Ok(InstanceRefresh {
            id: r.id.clone(),
            status: status.into(),
            percent_complete: percent,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::SimCloud;
    use super::super::fleet::DEFAULT_FLEET;
    use super::super::tests::block;

    const GROUP: &str = "ec2-manager-worker";

    fn group(sim: &SimCloud) -> crate::services::cloud::ScalingGroup {
        block(sim.describe_scaling_groups(&[GROUP.into()]))
            .unwrap()
            .remove(0)
    }

    #[test]
    fn desired_capacity_outside_the_limits_is_refused_and_inside_launches_and_registers() {
        let sim = SimCloud::from_toml(DEFAULT_FLEET).unwrap();
        let e = block(sim.set_desired_capacity(GROUP, 5)).unwrap_err();
        assert_eq!(e.code, "ValidationError");
        assert!(e.message.contains("above max value 4"), "{e:?}");
        block(sim.set_desired_capacity(GROUP, 3)).unwrap();
        let g = group(&sim);
        assert_eq!(g.desired, 3);
        assert_eq!(g.instances.len(), 3);
        assert!(g.instances.iter().all(|i| i.lifecycle_state == "InService"));
        block(sim.set_desired_capacity(GROUP, 1)).unwrap();
        assert_eq!(group(&sim).instances.len(), 1, "the newest go first");
        assert_eq!(group(&sim).instances[0].id, "i-0a1b2c3d4e5f60005");
    }

    #[test]
    fn a_suspended_launch_process_keeps_the_capacity_from_launching() {
        let sim = SimCloud::from_toml(DEFAULT_FLEET).unwrap();
        block(sim.set_processes(GROUP, &["Launch".into()], true)).unwrap();
        block(sim.set_desired_capacity(GROUP, 2)).unwrap();
        assert_eq!(group(&sim).instances.len(), 1);
        assert_eq!(group(&sim).suspended, ["Launch"]);
        block(sim.set_processes(GROUP, &[], false)).unwrap();
        assert!(group(&sim).suspended.is_empty());
        let e = block(sim.set_processes(GROUP, &["Lunch".into()], true)).unwrap_err();
        assert_eq!(e.code, "ValidationError");
    }

    /// A sim of `fleet` on a simulated clock the test moves on.
    fn on_simulated_time(fleet: &str) -> (SimCloud, crate::base::clock::Clock) {
        let mut sim = SimCloud::from_toml(fleet).unwrap();
        let clock = crate::base::clock::Clock::real();
        clock.set_simulated(true);
        sim.set_clock(clock.clone());
        (sim, clock)
    }

    #[test]
    fn an_instance_refresh_progresses_on_the_run_clock_and_a_scripted_one_fails_halfway() {
        let (sim, clock) = on_simulated_time(DEFAULT_FLEET);
        let id = block(sim.start_instance_refresh(GROUP, 90)).unwrap();
        assert_eq!(
            block(sim.start_instance_refresh(GROUP, 90))
                .unwrap_err()
                .code,
            "InstanceRefreshInProgress"
        );
        clock.skip(Duration::from_secs(30));
        let r = block(sim.describe_instance_refresh(GROUP, &id)).unwrap();
        assert_eq!((r.status.as_str(), r.percent_complete), ("InProgress", 50));
        clock.skip(Duration::from_secs(30));
        let r = block(sim.describe_instance_refresh(GROUP, &id)).unwrap();
        assert_eq!((r.status.as_str(), r.percent_complete), ("Successful", 100));

        let fleet = format!("{DEFAULT_FLEET}\n[faults]\nrefresh_fails = [\"{GROUP}\"]\n");
        let (sim, clock) = on_simulated_time(&fleet);
        let id = block(sim.start_instance_refresh(GROUP, 90)).unwrap();
        clock.skip(Duration::from_secs(120));
        let r = block(sim.describe_instance_refresh(GROUP, &id)).unwrap();
        assert_eq!((r.status.as_str(), r.percent_complete), ("Failed", 50));
    }

    #[test]
    fn a_scripted_refresh_failure_ends_with_its_status_percentage_and_reason() {
        let fleet = format!(
            "{DEFAULT_FLEET}\n[[faults.refresh_failures]]\ngroup = \"{GROUP}\"\n\
             status = \"Cancelled\"\npercent = 20\nreason = \"launch template not found\"\n"
        );
        let (sim, clock) = on_simulated_time(&fleet);
        let id = block(sim.start_instance_refresh(GROUP, 90)).unwrap();
        clock.skip(Duration::from_secs(6));
        let r = block(sim.describe_instance_refresh(GROUP, &id)).unwrap();
        assert_eq!((r.status.as_str(), r.percent_complete), ("InProgress", 10));
        clock.skip(Duration::from_secs(60));
        let r = block(sim.describe_instance_refresh(GROUP, &id)).unwrap();
        assert_eq!(
            (r.status.as_str(), r.percent_complete, r.reason.as_str()),
            ("Cancelled", 20, "launch template not found")
        );

        // One scripted `InProgress` never finishes: a wait on it runs out again.
        let fleet = format!(
            "{DEFAULT_FLEET}\n[[faults.refresh_failures]]\ngroup = \"{GROUP}\"\n\
             status = \"InProgress\"\npercent = 60\n"
        );
        let (sim, clock) = on_simulated_time(&fleet);
        let id = block(sim.start_instance_refresh(GROUP, 90)).unwrap();
        clock.skip(Duration::from_secs(3600));
        let r = block(sim.describe_instance_refresh(GROUP, &id)).unwrap();
        assert_eq!((r.status.as_str(), r.percent_complete), ("InProgress", 60));
        assert!(!r.is_terminal());
    }
}
