//! Which commit a runbook came from, for the first transcript event.

use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, serde::Serialize)]
pub struct GitInfo {
    pub commit: String,
    /// True when any of the files differs from that commit (modified, staged or untracked).
    pub dirty: bool,
}

/// How long an answer is reused for the same files with the same content. `runbook serve` starts
/// many runs of the same runbook a second; asking git (a process, ~2 ms) for each would cost more
/// than the run. The content hashes in the key mean an edited file is always asked about afresh.
const REUSE_FOR: std::time::Duration = std::time::Duration::from_secs(2);

type Cache = std::collections::HashMap<String, (std::time::Instant, Option<GitInfo>)>;

/// [`info`], answered from a short-lived cache keyed by the files and their content hashes.
pub fn info_cached(dir: &Path, files: &[&Path], content_key: &str) -> Option<GitInfo> {
    static CACHE: std::sync::LazyLock<std::sync::Mutex<Cache>> =
        std::sync::LazyLock::new(Default::default);
    let key = format!("{}|{files:?}|{content_key}", dir.display());
    if let Ok(cache) = CACHE.lock()
        && let Some((at, answer)) = cache.get(&key)
        && at.elapsed() < REUSE_FOR
    {
        return answer.clone();
    }
    let answer = info(dir, files);
    if let Ok(mut cache) = CACHE.lock() {
        cache.retain(|_, (at, _)| at.elapsed() < REUSE_FOR);
        cache.insert(key, (std::time::Instant::now(), answer.clone()));
    }
    answer
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
