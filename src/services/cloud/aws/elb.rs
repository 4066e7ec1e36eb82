//! ELBv2 on AWS: listeners' weighted forward actions, target groups and target health.

use aws_sdk_elasticloadbalancingv2::types as elbt;

use super::AwsCloud;
use crate::base::error::BindingError;
use crate::services::cloud::{CloudResult, Listener, TargetGroup, TargetHealth, WeightedTarget};

fn i64_of(v: Option<i32>) -> i64 {
    i64::from(v.unwrap_or_default())
}

impl AwsCloud {
    pub async fn describe_listener(&self, arn: &str) -> CloudResult<Listener> {
        let out = self
            .elb
            .describe_listeners()
            .listener_arns(arn)
            .send()
            .await
            .map_err(|e| self.sdk_error("DescribeListeners", e))?;
        self.note(&out);
        let l = out.listeners().first().ok_or_else(|| {
            BindingError::new("ListenerNotFound", format!("Listener '{arn}' not found"))
        })?;
        let forward = l
            .default_actions()
            .iter()
            .find(|a| a.r#type() == Some(&elbt::ActionTypeEnum::Forward))
            .map(|a| match a.forward_config() {
                Some(cfg) if !cfg.target_groups().is_empty() => cfg
                    .target_groups()
                    .iter()
                    .map(|t| WeightedTarget {
                        target_group: t.target_group_arn().unwrap_or_default().to_string(),
                        // AWS's default weight when a tuple names none.
                        weight: i64::from(t.weight().unwrap_or(1)),
                    })
                    .collect(),
                _ => a
                    .target_group_arn()
                    .map(|tg| {
                        vec![WeightedTarget {
                            target_group: tg.to_string(),
                            weight: 1,
                        }]
                    })
                    .unwrap_or_default(),
            })
            .unwrap_or_default();
        Ok(Listener {
            arn: l.listener_arn().unwrap_or(arn).to_string(),
            load_balancer: l.load_balancer_arn().unwrap_or_default().to_string(),
            port: i64_of(l.port()),
            protocol: l
                .protocol()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            forward,
        })
    }

    pub async fn set_listener_forward(
        &self,
        arn: &str,
        targets: &[WeightedTarget],
    ) -> CloudResult<()> {
        let mut tuples = Vec::new();
        for t in targets {
            let weight = i32::try_from(t.weight).map_err(|_| {
                BindingError::new(
                    "ValidationError",
                    format!("weight {} is too large", t.weight),
                )
            })?;
            tuples.push(
                elbt::TargetGroupTuple::builder()
                    .target_group_arn(&t.target_group)
                    .weight(weight)
                    .build(),
            );
        }
        let action = elbt::Action::builder()
            .r#type(elbt::ActionTypeEnum::Forward)
            .forward_config(
                elbt::ForwardActionConfig::builder()
                    .set_target_groups(Some(tuples))
                    .build(),
            )
            .build();
        let out = self
            .elb
            .modify_listener()
            .listener_arn(arn)
            .default_actions(action)
            .send()
            .await
            .map_err(|e| self.sdk_error("ModifyListener", e))?;
        self.note(&out);
        Ok(())
    }

    pub async fn describe_target_groups(
        &self,
        names: &[String],
        arns: &[String],
    ) -> CloudResult<Vec<TargetGroup>> {
        let mut req = self.elb.describe_target_groups();
        if !names.is_empty() {
            req = req.set_names(Some(names.to_vec()));
        } else if !arns.is_empty() {
            req = req.set_target_group_arns(Some(arns.to_vec()));
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.sdk_error("DescribeTargetGroups", e))?;
        self.note(&out);
        Ok(out
            .target_groups()
            .iter()
            .map(|g| TargetGroup {
                arn: g.target_group_arn().unwrap_or_default().to_string(),
                name: g.target_group_name().unwrap_or_default().to_string(),
                port: i64_of(g.port()),
            })
            .collect())
    }

    pub async fn target_health(&self, target_group: &str) -> CloudResult<Vec<TargetHealth>> {
        let out = self
            .elb
            .describe_target_health()
            .target_group_arn(target_group)
            .send()
            .await
            .map_err(|e| self.sdk_error("DescribeTargetHealth", e))?;
        self.note(&out);
        Ok(out
            .target_health_descriptions()
            .iter()
            .map(|d| {
                let h = d.target_health();
                TargetHealth {
                    id: d
                        .target()
                        .map(|t| t.id().unwrap_or_default().to_string())
                        .unwrap_or_default(),
                    port: i64_of(d.target().and_then(|t| t.port())),
                    state: h
                        .and_then(|h| h.state())
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    reason: h
                        .and_then(|h| h.reason())
                        .map(|r| r.as_str().to_string())
                        .unwrap_or_default(),
                    description: h
                        .and_then(|h| h.description())
                        .unwrap_or_default()
                        .to_string(),
                }
            })
            .collect())
    }

    fn targets(ids: &[String]) -> Vec<elbt::TargetDescription> {
        ids.iter()
            .map(|id| elbt::TargetDescription::builder().id(id).build())
            .collect()
    }

    pub async fn register_targets(&self, target_group: &str, ids: &[String]) -> CloudResult<()> {
        let out = self
            .elb
            .register_targets()
            .target_group_arn(target_group)
            .set_targets(Some(Self::targets(ids)))
            .send()
            .await
            .map_err(|e| self.sdk_error("RegisterTargets", e))?;
        self.note(&out);
        Ok(())
    }

    pub async fn deregister_targets(&self, target_group: &str, ids: &[String]) -> CloudResult<()> {
        let out = self
            .elb
            .deregister_targets()
            .target_group_arn(target_group)
            .set_targets(Some(Self::targets(ids)))
            .send()
            .await
            .map_err(|e| self.sdk_error("DeregisterTargets", e))?;
        self.note(&out);
        Ok(())
    }
}
