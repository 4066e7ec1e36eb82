//! The simulated EBS volumes of the monthly backup restoration test: the fleet's backup
//! snapshots (`[[snapshots]]`), `DescribeSnapshots` with filters, and volumes created from a
//! snapshot, attached, detached and deleted, each call through `enter` and recorded.
//!
//! Volumes created here are modelled in full. An instance's own volumes (the fleet's `volumes`)
//! are described as attached, but the sim refuses to detach or delete them: no runbook should,
//! and modelling a root volume's rules is not worth getting wrong.

use serde::{Deserialize, Serialize};

use super::super::{CloudResult, Snapshot, SnapshotFilter, Tags, Volume};
use super::fleet::Fleet;
use super::{SimCloud, State, err};

/// A backup snapshot the fleet starts with (`[[snapshots]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetSnapshot {
    pub(crate) id: String,
    pub(crate) volume: String,
    #[serde(default = "default_snapshot_state")]
    pub(crate) state: String,
    #[serde(default)]
    pub(crate) tags: Tags,
    /// RFC 3339, UTC: when the backup was taken.
    pub(crate) start_time: String,
}

fn default_snapshot_state() -> String {
    "completed".into()
}

/// The snapshots a new simulated cloud starts with.
pub(super) fn fleet_snapshots(fleet: &Fleet) -> Vec<Snapshot> {
    fleet
        .snapshots
        .iter()
        .map(|s| Snapshot {
            id: s.id.clone(),
            volume: s.volume.clone(),
            state: s.state.clone(),
            tags: s.tags.clone(),
            start_time: s.start_time.clone(),
        })
        .collect()
}

fn not_found(id: &str) -> crate::base::error::BindingError {
    err(
        "InvalidVolume.NotFound",
        format!("The volume '{id}' does not exist."),
    )
}

impl SimCloud {
    /// Every instance is in the fleet region's first zone.
    fn zone(&self) -> String {
        format!("{}a", self.fleet.region)
    }

    /// A volume as `DescribeVolumes` shows it: one created here, or an instance's own.
    fn volume_of(&self, s: &State, id: &str) -> Option<Volume> {
        if let Some(v) = s.volumes.iter().find(|v| v.id == id) {
            return Some(v.clone());
        }
        let owner = s
            .instances
            .iter()
            .find(|i| i.volumes.iter().any(|v| v == id))?;
        let k = owner.volumes.iter().position(|v| v == id).unwrap_or(0);
        Some(Volume {
            id: id.into(),
            state: "in-use".into(),
            snapshot: String::new(),
            zone: self.zone(),
            instance: owner.id.clone(),
            device: if k == 0 {
                "/dev/xvda".into()
            } else {
                format!("/dev/sd{}", char::from(b'f'.saturating_add(k as u8)))
            },
            attachment: "attached".into(),
            tags: Tags::new(),
        })
    }

    /// The created volume `id` (an instance's own volume is refused: see the module comment).
    fn created_mut<'a>(s: &'a mut State, id: &str, operation: &str) -> CloudResult<&'a mut Volume> {
        let own = s
            .instances
            .iter()
            .any(|i| i.volumes.iter().any(|v| v == id))
            && !s.volumes.iter().any(|v| v.id == id);
        if own {
            return Err(err(
                "UnsupportedOperation",
                format!(
                    "{operation}: the simulated cloud detaches and deletes only volumes created from snapshots, not an instance's own volume {id}"
                ),
            ));
        }
        s.volumes
            .iter_mut()
            .find(|v| v.id == id)
            .ok_or_else(|| not_found(id))
    }

    pub(crate) async fn find_snapshots(&self, f: &SnapshotFilter) -> CloudResult<Vec<Snapshot>> {
        self.enter("DescribeSnapshots", &[]).await?;
        let s = self.lock()?;
        Ok(s.snapshots
            .iter()
            .filter(|x| f.volume.as_ref().is_none_or(|v| &x.volume == v))
            .filter(|x| f.states.is_empty() || f.states.contains(&x.state))
            .filter(|x| f.tags.iter().all(|(k, v)| x.tags.get(k) == Some(v)))
            .cloned()
            .collect())
    }

    pub(crate) async fn instance_zone(&self, instance: &str) -> CloudResult<String> {
        self.enter("DescribeInstances", &[instance.to_string()])
            .await?;
        let mut s = self.lock()?;
        Self::instance_mut(&mut s, instance)?;
        Ok(self.zone())
    }

    pub(crate) async fn create_volume(
        &self,
        snapshot: &str,
        zone: &str,
        tags: &Tags,
    ) -> CloudResult<Volume> {
        self.enter("CreateVolume", &[]).await?;
        let mut s = self.lock()?;
        let snap = s
            .snapshots
            .iter()
            .find(|x| x.id == snapshot)
            .ok_or_else(|| {
                err(
                    "InvalidSnapshot.NotFound",
                    format!("The snapshot '{snapshot}' does not exist."),
                )
            })?;
        if snap.state != "completed" {
            return Err(err(
                "IncorrectState",
                format!("Snapshot is in invalid state - {}", snap.state),
            ));
        }
        if zone != self.zone() {
            return Err(err(
                "InvalidParameterValue",
                format!("Invalid availability zone: [{zone}]"),
            ));
        }
        let volume = Volume {
            id: Self::new_id(&mut s, "vol"),
            state: "available".into(),
            snapshot: snapshot.into(),
            zone: zone.into(),
            instance: String::new(),
            device: String::new(),
            attachment: String::new(),
            tags: tags.clone(),
        };
        s.volumes.push(volume.clone());
        self.mutated(&mut s, format!("CreateVolume {snapshot}"));
        Ok(volume)
    }

    pub(crate) async fn describe_volumes(&self, ids: &[String]) -> CloudResult<Vec<Volume>> {
        self.enter("DescribeVolumes", &[]).await?;
        let s = self.lock()?;
        ids.iter()
            .map(|id| self.volume_of(&s, id).ok_or_else(|| not_found(id)))
            .collect()
    }

    pub(crate) async fn attach_volume(
        &self,
        volume: &str,
        instance: &str,
        device: &str,
    ) -> CloudResult<()> {
        self.enter("AttachVolume", &[instance.to_string()]).await?;
        let mut s = self.lock()?;
        let inst = Self::instance_mut(&mut s, instance)?;
        if inst.state != "running" && inst.state != "stopped" {
            return Err(err(
                "IncorrectState",
                format!("Instance '{instance}' is not 'running' or 'stopped'."),
            ));
        }
        let taken = s
            .volumes
            .iter()
            .any(|v| v.instance == instance && v.device == device);
        if taken {
            return Err(err(
                "InvalidParameterValue",
                format!("Attachment point {device} is already in use"),
            ));
        }
        let v = Self::created_mut(&mut s, volume, "AttachVolume")?;
        if v.state != "available" {
            return Err(err(
                "VolumeInUse",
                format!("{volume} is already attached to an instance"),
            ));
        }
        v.state = "in-use".into();
        v.instance = instance.into();
        v.device = device.into();
        v.attachment = "attached".into();
        Self::instance_mut(&mut s, instance)?
            .volumes
            .push(volume.into());
        self.mutated(&mut s, format!("AttachVolume {volume} {instance}"));
        Ok(())
    }

    pub(crate) async fn detach_volume(
        &self,
        volume: &str,
        instance: &str,
        _device: &str,
        _force: bool,
    ) -> CloudResult<()> {
        let owner = {
            let s = self.lock()?;
            s.volumes
                .iter()
                .find(|v| v.id == volume)
                .map(|v| vec![v.instance.clone()])
                .unwrap_or_default()
        };
        self.enter("DetachVolume", &owner).await?;
        let mut s = self.lock()?;
        let v = Self::created_mut(&mut s, volume, "DetachVolume")?;
        if v.state != "in-use" {
            return Err(err(
                "IncorrectState",
                format!("Volume '{volume}' is in the '{}' state.", v.state),
            ));
        }
        if v.instance != instance {
            return Err(err(
                "IncorrectState",
                format!("Volume '{volume}' is not attached to '{instance}'."),
            ));
        }
        v.instance.clear();
        v.state = "available".into();
        v.device.clear();
        v.attachment.clear();
        if let Some(i) = s.instances.iter_mut().find(|i| i.id == instance) {
            i.volumes.retain(|x| x != volume);
        }
        self.mutated(&mut s, format!("DetachVolume {volume} {instance}"));
        Ok(())
    }

    pub(crate) async fn delete_volume(&self, volume: &str) -> CloudResult<()> {
        self.enter("DeleteVolume", &[]).await?;
        let mut s = self.lock()?;
        let v = Self::created_mut(&mut s, volume, "DeleteVolume")?;
        if v.state != "available" {
            return Err(err(
                "VolumeInUse",
                format!("Volume {volume} is currently attached to {}", v.instance),
            ));
        }
        s.volumes.retain(|x| x.id != volume);
        self.mutated(&mut s, format!("DeleteVolume {volume}"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::SimCloud;
    use super::super::tests::block;
    use crate::services::cloud::{SnapshotFilter, Tags};

    const FLEET: &str = r#"
[[instances]]
id = "i-0000000000000001"
vpc = "vpc-1"
subnet = "subnet-1"
volumes = ["vol-0000000000000001"]
[[snapshots]]
id = "snap-0000000000000001"
volume = "vol-0000000000000001"
start_time = "2026-11-29T03:00:00Z"
[[snapshots]]
id = "snap-0000000000000002"
volume = "vol-0000000000000001"
state = "pending"
start_time = "2026-11-30T03:00:00Z"
"#;

    #[test]
    fn an_attached_restored_volume_cannot_be_deleted_until_it_is_detached() {
        let sim = SimCloud::from_toml(FLEET).unwrap();
        let zone = block(sim.instance_zone("i-0000000000000001")).unwrap();
        let v = block(sim.create_volume("snap-0000000000000001", &zone, &Tags::new())).unwrap();
        block(sim.attach_volume(&v.id, "i-0000000000000001", "/dev/sdf")).unwrap();
        let e = block(sim.delete_volume(&v.id)).unwrap_err();
        assert_eq!(e.code, "VolumeInUse");
        block(sim.detach_volume(&v.id, "i-0000000000000001", "/dev/sdf", false)).unwrap();
        block(sim.delete_volume(&v.id)).unwrap();
        let e = block(sim.describe_volumes(std::slice::from_ref(&v.id))).unwrap_err();
        assert_eq!(e.code, "InvalidVolume.NotFound");
    }

    #[test]
    fn a_pending_snapshot_cannot_be_restored_and_an_instances_own_volume_is_never_deleted() {
        let sim = SimCloud::from_toml(FLEET).unwrap();
        let e = block(sim.create_volume("snap-0000000000000002", "eu-west-1a", &Tags::new()))
            .unwrap_err();
        assert_eq!(e.code, "IncorrectState");
        let e = block(sim.delete_volume("vol-0000000000000001")).unwrap_err();
        assert_eq!(e.code, "UnsupportedOperation");
        let completed = SnapshotFilter {
            states: vec!["completed".into()],
            ..SnapshotFilter::default()
        };
        let found = block(sim.find_snapshots(&completed)).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].start_time, "2026-11-29T03:00:00Z");
    }
}
