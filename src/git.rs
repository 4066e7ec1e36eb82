//! Which commit a runbook came from, for the first transcript event.

use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, serde::Serialize)]
pub struct GitInfo {
    pub commit: String,
    /// True when any of the files differs from that commit (modified, staged or untracked).
    pub dirty: bool,
}

/// The HEAD commit of the work tree holding `files` and whether any of them is changed.
/// None outside a work tree or when git is not installed: provenance is best effort, never fatal.
pub fn info(dir: &Path, files: &[&Path]) -> Option<GitInfo> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "status",
            "--porcelain=v2",
            "--branch",
            "--untracked-files=all",
            "--",
        ])
        .args(files)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let commit = text
        .lines()
        .find_map(|l| l.strip_prefix("# branch.oid "))?
        .to_string();
    let dirty = text.lines().any(|l| !l.starts_with('#'));
    Some(GitInfo { commit, dirty })
}
