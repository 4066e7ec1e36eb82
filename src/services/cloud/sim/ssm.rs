//! The simulated SSM API: Run Command with per-instance results, scripted output and failures
//! on a share of targets, and Parameter Store.

use super::super::{CloudResult, CommandRequest, Invocation, PatchState};
use super::{Command, Parameter, SimCloud, err};

impl SimCloud {
    pub(crate) async fn send_command(&self, req: &CommandRequest) -> CloudResult<String> {
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
        let mut invocations: Vec<Invocation> = invocations;
        if req.document == "AWS-RunPatchBaseline" {
            let at = format!("simulated+{}ms", self.clock.elapsed().as_millis());
            for inv in invocations.iter_mut().filter(|i| i.status == "Success") {
                self.run_patch_baseline(&mut s, req, inv, &at);
            }
        }
        // Counted, not the list's length: the oldest commands may have been dropped (and a
        // state saved before the counter existed has only its length).
        s.commands_sent = s
            .commands_sent
            .max(s.commands.len() as u64)
            .saturating_add(1);
        let id = format!("{:08x}-0000-4000-8000-{:012x}", s.commands_sent, s.calls);
        s.commands.push(Command {
            id: id.clone(),
            document: req.document.clone(),
            parameters: req.parameters.clone(),
            invocations,
        });
        // A metric that recovers on a command (`systemctl restart`) reads the commands themselves.
        let commands: Vec<String> = req.parameters.values().flatten().cloned().collect();
        self.trigger_metrics(&mut s, &commands.join("\n"));
        self.mutated(
            &mut s,
            format!("SendCommand {} {}", req.document, req.instances.join(",")),
        );
        Ok(id)
    }

    pub(crate) async fn command_invocation(
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

    /// `AWS-RunPatchBaseline` on one instance whose invocation would otherwise succeed: `Scan`
    /// reports the fixture's missing patches, `Install` installs them, or fails on an instance
    /// of `faults.patch_failure` (the patches stay missing and count as failed).
    fn run_patch_baseline(
        &self,
        s: &mut super::State,
        req: &CommandRequest,
        inv: &mut Invocation,
        at: &str,
    ) {
        let operation = req
            .parameters
            .get("Operation")
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_else(|| "Scan".into());
        let faults = &self.fleet.faults;
        let id = inv.instance.clone();
        let fixture_missing = i64::from(faults.missing_patches.get(&id).copied().unwrap_or(0));
        let state = s.patch_states.entry(id.clone()).or_insert(PatchState {
            id: id.clone(),
            operation: String::new(),
            installed: 0,
            installed_pending_reboot: 0,
            missing: fixture_missing,
            failed: 0,
            critical_non_compliant: fixture_missing,
            operation_end: String::new(),
        });
        state.operation.clone_from(&operation);
        state.operation_end = at.to_string();
        if operation != "Install" {
            inv.stdout = format!(
                "Scan: {} missing, {} installed",
                state.missing, state.installed
            );
            return;
        }
        if faults.patch_failure.contains(&id) {
            state.failed = state.missing;
            inv.status = "Failed".into();
            inv.exit_code = 1;
            inv.stderr = format!(
                "Install: {} patch(es) failed to install (simulated package failure)",
                state.missing
            );
            return;
        }
        state.installed = state.installed.saturating_add(state.missing);
        inv.stdout = format!("Install: {} patch(es) installed", state.missing);
        state.missing = 0;
        state.failed = 0;
        state.critical_non_compliant = 0;
    }

    pub(crate) async fn patch_states(&self, ids: &[String]) -> CloudResult<Vec<PatchState>> {
        self.enter("SsmDescribeInstancePatchStates", ids).await?;
        let s = self.lock()?;
        // As AWS: an instance Patch Manager never scanned or patched has no entry.
        Ok(ids
            .iter()
            .filter_map(|id| s.patch_states.get(id).cloned())
            .collect())
    }

    pub(crate) async fn get_parameter(&self, name: &str, _decrypt: bool) -> CloudResult<String> {
        self.enter("SsmGetParameter", &[name.to_string()]).await?;
        let s = self.lock()?;
        s.parameters
            .get(name)
            .map(|p| p.value.clone())
            .ok_or_else(|| err("ParameterNotFound", format!("Parameter {name} not found.")))
    }

    pub(crate) async fn put_parameter(
        &self,
        name: &str,
        value: &str,
        kind: &str,
        overwrite: bool,
    ) -> CloudResult<i64> {
        self.enter("SsmPutParameter", &[name.to_string()]).await?;
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
    use std::collections::BTreeMap;

    use super::super::SimCloud;
    use super::super::tests::block;
    use crate::services::cloud::CommandRequest;

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

    #[test]
    fn patch_baseline_scans_installs_and_fails_where_the_fixture_says() {
        let mut text = String::from(
            "[faults]\npatch_failure = [\"i-0000000000000002\"]\n[faults.missing_patches]\n\"i-0000000000000001\" = 3\n\"i-0000000000000002\" = 2\n",
        );
        for n in 1..=3 {
            text.push_str(&format!("[[instances]]\nid = \"i-000000000000000{n}\"\nvpc = \"vpc-1\"\nsubnet = \"subnet-1\"\n"));
        }
        let sim = SimCloud::from_toml(&text).unwrap();
        let ids: Vec<String> = (1..=3).map(|n| format!("i-000000000000000{n}")).collect();
        let patch = |operation: &str| CommandRequest {
            instances: ids.clone(),
            document: "AWS-RunPatchBaseline".into(),
            parameters: BTreeMap::from([("Operation".into(), vec![operation.into()])]),
            max_concurrency: "50".into(),
            max_errors: "0".into(),
            timeout_seconds: 60,
            comment: String::new(),
        };
        // Never scanned: no compliance entry at all, as AWS answers.
        assert!(block(sim.patch_states(&ids)).unwrap().is_empty());
        block(sim.send_command(&patch("Scan"))).unwrap();
        let missing = |sim: &SimCloud| -> Vec<(i64, i64)> {
            block(sim.patch_states(&ids))
                .unwrap()
                .iter()
                .map(|s| (s.missing, s.failed))
                .collect()
        };
        assert_eq!(missing(&sim), vec![(3, 0), (2, 0), (0, 0)]);
        let cmd = block(sim.send_command(&patch("Install"))).unwrap();
        assert_eq!(missing(&sim), vec![(0, 0), (2, 2), (0, 0)]);
        let status = |id: &String| block(sim.command_invocation(&cmd, id)).unwrap().status;
        assert_eq!(
            ids.iter().map(status).collect::<Vec<_>>(),
            vec!["Success", "Failed", "Success"]
        );
    }
}
