//! The simulated EC2 API: instances and their states, tags, security groups and network
//! interfaces, snapshots, images and launches, each call through `enter` and recorded.

use super::super::{
    CloudResult, Eni, Filter, Instance, InstanceStatus, LaunchSpec, Snapshot, StateAction,
    StateChange, Tags,
};
use super::fleet::{Heal, default_type};
use super::{Group, Image, SimCloud, err};

impl SimCloud {
    pub(crate) async fn account_id(&self) -> CloudResult<String> {
        self.enter("DescribeSecurityGroups", &[]).await?;
        Ok(self.fleet.account_id.clone())
    }

    pub(crate) async fn describe_instances(&self, f: &Filter) -> CloudResult<Vec<Instance>> {
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

    pub(crate) async fn instance_status(&self, ids: &[String]) -> CloudResult<Vec<InstanceStatus>> {
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
                let until = self.fleet.faults.impaired_until.get(id);
                let unhealed = until.is_some() && !s.healed.contains(id);
                let check = if i.state != "running" {
                    "not-applicable"
                } else if self.fleet.faults.impaired.contains(id) {
                    "impaired"
                } else if unhealed && until == Some(&Heal::StopStart) {
                    // The host is at fault: both checks fail (as EC2 reports a system failure).
                    "impaired"
                } else if unhealed {
                    // The instance is at fault: the system check passes, the instance check fails.
                    return Ok(InstanceStatus {
                        id: id.clone(),
                        state: i.state.clone(),
                        system_status: "ok".into(),
                        instance_status: "impaired".into(),
                    });
                } else if self
                    .fleet
                    .faults
                    .initializing_ms
                    .get(id)
                    .is_some_and(|&ms| self.clock.elapsed() < std::time::Duration::from_millis(ms))
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

    pub(crate) async fn create_tags(&self, ids: &[String], tags: &Tags) -> CloudResult<()> {
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

    pub(crate) async fn delete_tags(&self, ids: &[String], keys: &[String]) -> CloudResult<()> {
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

    pub(crate) async fn find_security_group(
        &self,
        vpc: &str,
        name: &str,
    ) -> CloudResult<Option<String>> {
        self.enter("DescribeSecurityGroups", &[]).await?;
        let s = self.lock()?;
        Ok(s.groups
            .iter()
            .find(|g| g.vpc == vpc && g.name == name)
            .map(|g| g.id.clone()))
    }

    pub(crate) async fn create_closed_security_group(
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

    pub(crate) async fn set_eni_groups(&self, eni: &str, groups: &[String]) -> CloudResult<()> {
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

    pub(crate) async fn create_snapshot(
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
            start_time: crate::base::clock::now_utc(),
        };
        s.snapshots.push(snap.clone());
        self.mutated(&mut s, format!("CreateSnapshot {volume}"));
        Ok(snap)
    }

    pub(crate) async fn describe_snapshots(&self, ids: &[String]) -> CloudResult<Vec<Snapshot>> {
        self.enter("DescribeSnapshots", &[]).await?;
        let s = self.lock()?;
        Ok(s.snapshots
            .iter()
            .filter(|x| ids.is_empty() || ids.contains(&x.id))
            .cloned()
            .collect())
    }

    pub(crate) async fn change_state(
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
            // A stop and start moves the instance to other hardware and boots it afresh, which
            // clears either kind of fault; a reboot clears only one inside the instance.
            let heals = match (action, previous.as_str()) {
                (StateAction::Start, "stopped") => true,
                (StateAction::Reboot, _) => {
                    self.fleet.faults.impaired_until.get(id) == Some(&Heal::Reboot)
                }
                _ => false,
            };
            if heals && self.fleet.faults.impaired_until.contains_key(id) {
                s.healed.insert(id.clone());
            }
            out.push(StateChange {
                id: id.clone(),
                previous_state: previous,
                state: next.into(),
            });
        }
        self.mutated(&mut s, format!("{} {}", action.api_name(), ids.join(",")));
        Ok(out)
    }

    pub(crate) async fn create_image(
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

    pub(crate) async fn run_instances(&self, spec: &LaunchSpec) -> CloudResult<Vec<Instance>> {
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
                launch_time: crate::base::clock::now_utc(),
            };
            s.instances.push(inst.clone());
            out.push(inst);
        }
        self.mutated(&mut s, format!("RunInstances {image}"));
        Ok(out)
    }
}
