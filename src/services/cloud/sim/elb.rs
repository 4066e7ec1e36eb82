//! Elastic Load Balancing v2 in the sim: target groups, their targets' health, and listeners
//! whose default action forwards to weighted target groups (blue/green).
//!
//! A target's health follows its instance: `healthy` when it is running with passing status
//! checks, `unhealthy` when it is impaired (or its group is in `faults.unhealthy_with_traffic`
//! and some listener sends the group traffic), `initial` while it is still initializing, `unused`
//! when the instance is not running.

use serde::{Deserialize, Serialize};

use super::fleet::Fleet;
use super::{SimCloud, State, err};
use crate::services::cloud::{CloudResult, Listener, TargetGroup, TargetHealth, WeightedTarget};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SimTargetGroup {
    pub(super) arn: String,
    pub(super) name: String,
    pub(super) port: i64,
    pub(super) targets: Vec<String>,
}

pub(super) fn target_groups_of(fleet: &Fleet) -> Vec<SimTargetGroup> {
    fleet
        .target_groups
        .iter()
        .enumerate()
        .map(|(k, g)| SimTargetGroup {
            arn: if g.arn.is_empty() {
                format!(
                    "arn:aws:elasticloadbalancing:{}:{}:targetgroup/{}/{:016x}",
                    fleet.region,
                    fleet.account_id,
                    g.name,
                    k.saturating_add(1)
                )
            } else {
                g.arn.clone()
            },
            name: g.name.clone(),
            port: g.port,
            targets: g.targets.clone(),
        })
        .collect()
}

pub(super) fn listeners_of(fleet: &Fleet, groups: &[SimTargetGroup]) -> Vec<Listener> {
    fleet
        .listeners
        .iter()
        .map(|l| Listener {
            arn: l.arn.clone(),
            load_balancer: l.load_balancer.clone(),
            port: l.port,
            protocol: l.protocol.clone(),
            forward: l
                .forward
                .iter()
                .map(|f| WeightedTarget {
                    // A name the fixture gives is resolved; an ARN is kept as written.
                    target_group: groups
                        .iter()
                        .find(|g| g.name == f.target_group)
                        .map_or_else(|| f.target_group.clone(), |g| g.arn.clone()),
                    weight: f.weight,
                })
                .collect(),
        })
        .collect()
}

fn group_not_found(arn: &str) -> crate::base::error::BindingError {
    err(
        "TargetGroupNotFound",
        format!("Target groups '{arn}' not found"),
    )
}

impl SimCloud {
    pub(crate) async fn describe_listener(&self, arn: &str) -> CloudResult<Listener> {
        self.enter("DescribeListeners", &[]).await?;
        let s = self.lock()?;
        s.listeners
            .iter()
            .find(|l| l.arn == arn)
            .cloned()
            .ok_or_else(|| err("ListenerNotFound", format!("Listener '{arn}' not found")))
    }

    pub(crate) async fn set_listener_forward(
        &self,
        arn: &str,
        targets: &[WeightedTarget],
    ) -> CloudResult<()> {
        self.enter("ModifyListener", &[]).await?;
        let mut s = self.lock()?;
        for t in targets {
            if !s.target_groups.iter().any(|g| g.arn == t.target_group) {
                return Err(group_not_found(&t.target_group));
            }
            // AWS's limits on a weight.
            if !(0..=999).contains(&t.weight) {
                return Err(err(
                    "ValidationError",
                    format!("weight {} is not between 0 and 999", t.weight),
                ));
            }
        }
        let listener = s
            .listeners
            .iter_mut()
            .find(|l| l.arn == arn)
            .ok_or_else(|| err("ListenerNotFound", format!("Listener '{arn}' not found")))?;
        listener.forward = targets.to_vec();
        let weights: Vec<String> = targets
            .iter()
            .map(|t| format!("{}={}", t.target_group, t.weight))
            .collect();
        self.mutated(
            &mut s,
            format!("ModifyListener {arn} {}", weights.join(",")),
        );
        Ok(())
    }

    pub(crate) async fn describe_target_groups(
        &self,
        names: &[String],
        arns: &[String],
    ) -> CloudResult<Vec<TargetGroup>> {
        self.enter("DescribeTargetGroups", &[]).await?;
        let s = self.lock()?;
        let wanted: &[String] = if names.is_empty() { arns } else { names };
        let mut out = Vec::new();
        for w in wanted {
            let g = s
                .target_groups
                .iter()
                .find(|g| {
                    if names.is_empty() {
                        &g.arn == w
                    } else {
                        &g.name == w
                    }
                })
                .ok_or_else(|| {
                    err(
                        "TargetGroupNotFound",
                        format!("One or more target groups not found: {w}"),
                    )
                })?;
            out.push(TargetGroup {
                arn: g.arn.clone(),
                name: g.name.clone(),
                port: g.port,
            });
        }
        if wanted.is_empty() {
            out = s
                .target_groups
                .iter()
                .map(|g| TargetGroup {
                    arn: g.arn.clone(),
                    name: g.name.clone(),
                    port: g.port,
                })
                .collect();
        }
        Ok(out)
    }

    pub(crate) async fn target_health(&self, target_group: &str) -> CloudResult<Vec<TargetHealth>> {
        self.enter("DescribeTargetHealth", &[]).await?;
        let s = self.lock()?;
        let g = s
            .target_groups
            .iter()
            .find(|g| g.arn == target_group)
            .ok_or_else(|| group_not_found(target_group))?;
        Ok(g.targets
            .iter()
            .map(|id| self.health_of(&s, g, id))
            .collect())
    }

    fn health_of(&self, s: &State, g: &SimTargetGroup, id: &str) -> TargetHealth {
        let faults = &self.fleet.faults;
        let instance = s.instances.iter().find(|i| i.id == id);
        let with_traffic = s.listeners.iter().any(|l| {
            l.forward
                .iter()
                .any(|f| f.target_group == g.arn && f.weight > 0)
        });
        let (state, reason, description) = match instance {
            None => (
                "unavailable",
                "Target.InvalidState",
                "Target is not a known instance".to_string(),
            ),
            Some(i) if i.state != "running" => (
                "unused",
                "Target.InvalidState",
                format!("Target is in the {} state", i.state),
            ),
            Some(_) if faults.impaired.iter().any(|x| x == id) => (
                "unhealthy",
                "Target.FailedHealthChecks",
                "Health checks failed".to_string(),
            ),
            Some(_) if with_traffic && faults.unhealthy_with_traffic.contains(&g.name) => (
                "unhealthy",
                "Target.ResponseCodeMismatch",
                "Health checks failed with these codes: [502]".to_string(),
            ),
            Some(_)
                if faults.initializing_ms.get(id).is_some_and(|&ms| {
                    self.clock.elapsed() < std::time::Duration::from_millis(ms)
                }) =>
            {
                (
                    "initial",
                    "Elb.RegistrationInProgress",
                    "Target registration is in progress".to_string(),
                )
            }
            Some(_) => ("healthy", "", String::new()),
        };
        TargetHealth {
            id: id.to_string(),
            port: g.port,
            state: state.into(),
            reason: reason.into(),
            description,
        }
    }

    pub(crate) async fn register_targets(
        &self,
        target_group: &str,
        ids: &[String],
    ) -> CloudResult<()> {
        self.enter("RegisterTargets", ids).await?;
        let mut s = self.lock()?;
        if let Some(missing) = ids
            .iter()
            .find(|id| !s.instances.iter().any(|i| &i.id == *id))
        {
            return Err(err(
                "InvalidTarget",
                format!("The following targets are not valid: {missing}"),
            ));
        }
        let g = s
            .target_groups
            .iter_mut()
            .find(|g| g.arn == target_group)
            .ok_or_else(|| group_not_found(target_group))?;
        for id in ids {
            if !g.targets.contains(id) {
                g.targets.push(id.clone());
            }
        }
        self.mutated(
            &mut s,
            format!("RegisterTargets {target_group} {}", ids.join(",")),
        );
        Ok(())
    }

    pub(crate) async fn deregister_targets(
        &self,
        target_group: &str,
        ids: &[String],
    ) -> CloudResult<()> {
        self.enter("DeregisterTargets", ids).await?;
        let mut s = self.lock()?;
        let g = s
            .target_groups
            .iter_mut()
            .find(|g| g.arn == target_group)
            .ok_or_else(|| group_not_found(target_group))?;
        g.targets.retain(|t| !ids.contains(t));
        self.mutated(
            &mut s,
            format!("DeregisterTargets {target_group} {}", ids.join(",")),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::SimCloud;
    use super::super::fleet::DEFAULT_FLEET;
    use super::super::tests::block;
    use crate::services::cloud::WeightedTarget;

    const LISTENER: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/ec2-manager-api/0a1b2c3d4e5f6001/0a1b2c3d4e5f6001";

    #[test]
    fn a_group_that_fails_under_traffic_is_healthy_until_a_listener_sends_it_some() {
        let fleet =
            format!("{DEFAULT_FLEET}\n[faults]\nunhealthy_with_traffic = [\"api-green\"]\n");
        let sim = SimCloud::from_toml(&fleet).unwrap();
        let green = block(sim.describe_target_groups(&["api-green".into()], &[]))
            .unwrap()
            .remove(0);
        let blue = block(sim.describe_target_groups(&["api-blue".into()], &[]))
            .unwrap()
            .remove(0);
        let states = |sim: &SimCloud| -> Vec<String> {
            block(sim.target_health(&green.arn))
                .unwrap()
                .into_iter()
                .map(|h| h.state)
                .collect()
        };
        assert_eq!(states(&sim), ["healthy", "healthy"]);
        let weights = [
            WeightedTarget {
                target_group: blue.arn.clone(),
                weight: 90,
            },
            WeightedTarget {
                target_group: green.arn.clone(),
                weight: 10,
            },
        ];
        block(sim.set_listener_forward(LISTENER, &weights)).unwrap();
        assert_eq!(states(&sim), ["unhealthy", "unhealthy"]);
        assert_eq!(
            block(sim.describe_listener(LISTENER)).unwrap().forward,
            weights
        );
    }

    #[test]
    fn a_weight_outside_aws_limits_or_an_unknown_group_is_refused() {
        let sim = SimCloud::from_toml(DEFAULT_FLEET).unwrap();
        let bad = [WeightedTarget {
            target_group: "arn:nope".into(),
            weight: 1,
        }];
        let e = block(sim.set_listener_forward(LISTENER, &bad)).unwrap_err();
        assert_eq!(e.code, "TargetGroupNotFound");
        let blue = block(sim.describe_target_groups(&["api-blue".into()], &[]))
            .unwrap()
            .remove(0);
        let bad = [WeightedTarget {
            target_group: blue.arn,
            weight: 1000,
        }];
        let e = block(sim.set_listener_forward(LISTENER, &bad)).unwrap_err();
        assert_eq!(e.code, "ValidationError");
    }
}
