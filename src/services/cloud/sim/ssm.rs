//! The simulated SSM API: Run Command with per-instance results, scripted output and failures
//! on a share of targets, and Parameter Store.

use super::super::{CloudResult, CommandRequest, Invocation};
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

    pub(crate) async fn get_parameter(&self, name: &str, _decrypt: bool) -> CloudResult<String> {
        self.enter("SsmGetParameter", &[]).await?;
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
}
