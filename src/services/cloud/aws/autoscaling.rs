//! Auto Scaling on AWS: groups, desired capacity, scaling processes and instance refreshes.

use aws_sdk_autoscaling::types as ast;

use super::AwsCloud;
use crate::base::error::BindingError;
use crate::services::cloud::{CloudResult, GroupInstance, InstanceRefresh, ScalingGroup};

impl AwsCloud {
    pub async fn describe_scaling_groups(
        &self,
        names: &[String],
    ) -> CloudResult<Vec<ScalingGroup>> {
        let mut groups = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut req = self
                .autoscaling
                .describe_auto_scaling_groups()
                .set_next_token(next.take());
            if !names.is_empty() {
                req = req.set_auto_scaling_group_names(Some(names.to_vec()));
            }
            let out = req
                .send()
                .await
                .map_err(|e| self.sdk_error("DescribeAutoScalingGroups", e))?;
            self.note(&out);
            groups.extend(out.auto_scaling_groups().iter().map(|g| {
                ScalingGroup {
                    name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
                    min: i64::from(g.min_size().unwrap_or_default()),
                    max: i64::from(g.max_size().unwrap_or_default()),
                    desired: i64::from(g.desired_capacity().unwrap_or_default()),
                    instances: g
                        .instances()
                        .iter()
                        .map(|i| GroupInstance {
                            id: i.instance_id().unwrap_or_default().to_string(),
                            lifecycle_state: i
                                .lifecycle_state()
                                .map(|s| s.as_str().to_string())
                                .unwrap_or_default(),
                            health_status: i.health_status().unwrap_or_default().to_string(),
                        })
                        .collect(),
                    suspended: g
                        .suspended_processes()
                        .iter()
                        .filter_map(|p| p.process_name().map(str::to_string))
                        .collect(),
                }
            }));
            match out.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(groups)
    }

    pub async fn set_desired_capacity(&self, name: &str, desired: i64) -> CloudResult<()> {
        let desired = i32::try_from(desired).map_err(|_| {
            BindingError::new(
                "ValidationError",
                format!("capacity {desired} is too large"),
            )
        })?;
        let out = self
            .autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(name)
            .desired_capacity(desired)
            .send()
            .await
            .map_err(|e| self.sdk_error("SetDesiredCapacity", e))?;
        self.note(&out);
        Ok(())
    }

    pub async fn set_processes(
        &self,
        name: &str,
        processes: &[String],
        suspend: bool,
    ) -> CloudResult<()> {
        let list = (!processes.is_empty()).then(|| processes.to_vec());
        if suspend {
            let out = self
                .autoscaling
                .suspend_processes()
                .auto_scaling_group_name(name)
                .set_scaling_processes(list)
                .send()
                .await
                .map_err(|e| self.sdk_error("SuspendProcesses", e))?;
            self.note(&out);
        } else {
            let out = self
                .autoscaling
                .resume_processes()
                .auto_scaling_group_name(name)
                .set_scaling_processes(list)
                .send()
                .await
                .map_err(|e| self.sdk_error("ResumeProcesses", e))?;
            self.note(&out);
        }
        Ok(())
    }

    pub async fn start_instance_refresh(
        &self,
        name: &str,
        min_healthy_percent: i64,
    ) -> CloudResult<String> {
        let percent = i32::try_from(min_healthy_percent.clamp(0, 100)).unwrap_or(90);
        let out = self
            .autoscaling
            .start_instance_refresh()
            .auto_scaling_group_name(name)
            .preferences(
                ast::RefreshPreferences::builder()
                    .min_healthy_percentage(percent)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.sdk_error("StartInstanceRefresh", e))?;
        self.note(&out);
        out.instance_refresh_id()
            .map(str::to_string)
            .ok_or_else(|| BindingError::new("Unknown", "StartInstanceRefresh returned no id"))
    }

    pub async fn describe_instance_refresh(
        &self,
        name: &str,
        id: &str,
    ) -> CloudResult<InstanceRefresh> {
        let out = self
            .autoscaling
            .describe_instance_refreshes()
            .auto_scaling_group_name(name)
            .instance_refresh_ids(id)
            .send()
            .await
            .map_err(|e| self.sdk_error("DescribeInstanceRefreshes", e))?;
        self.note(&out);
        let r = out.instance_refreshes().first().ok_or_else(|| {
            BindingError::new(
                "ValidationError",
                format!("no instance refresh {id} for {name}"),
            )
        })?;
        Ok(InstanceRefresh {
            id: r.instance_refresh_id().unwrap_or(id).to_string(),
            status: r
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            percent_complete: i64::from(r.percentage_complete().unwrap_or_default()),
            reason: r.status_reason().unwrap_or_default().to_string(),
        })
    }
}
