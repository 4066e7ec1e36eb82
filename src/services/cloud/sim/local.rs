//! Declared local commands in the sim: answered from the fleet's `local_commands`, so a drill of
//! a runbook that runs `kubectl` starts no program. A command with no rule answers exit 127, as
//! a shell would for a program it cannot find.

use serde::{Deserialize, Serialize};

use super::SimCloud;
use crate::services::cloud::CloudResult;

/// What a local command answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocalOutput {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl SimCloud {
    /// Runs `program args` in the simulated world; `mutating` calls count as writes (they can
    /// trigger a metric's `recovers_on`).
    pub(crate) fn local_command(
        &self,
        program: &str,
        args: &[String],
        mutating: bool,
    ) -> CloudResult<LocalOutput> {
        let line = args.join(" ");
        let mut s = self.lock()?;
        s.local_uses.resize(self.fleet.local_commands.len(), 0);
        let rule = self
            .fleet
            .local_commands
            .iter()
            .position(|r| r.program == program && line.contains(&r.pattern));
        let out = match rule {
            Some(k) => {
                let r = &self.fleet.local_commands[k];
                let used = s.local_uses[k];
                s.local_uses[k] = used.saturating_add(1);
                LocalOutput {
                    exit_code: r.exit_code,
                    stdout: r
                        .stdout
                        .get(used)
                        .or(r.stdout.last())
                        .cloned()
                        .unwrap_or_default(),
                    stderr: r.stderr.clone(),
                }
            }
            None => LocalOutput {
                exit_code: 127,
                stdout: String::new(),
                stderr: format!("{program}: no answer in the sim's local_commands"),
            },
        };
        if mutating {
            self.mutated(&mut s, format!("Local {program} {line}"));
        }
        Ok(out)
    }
}
