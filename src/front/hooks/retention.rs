//! Disk retention of the hook transcripts folder (`[retention]` in hooks.toml): what `serve`
//! deletes every `retention.every`, and `runbook transcript prune [--dry-run]`.
//!
//! What is deleted, as whole units: a run (its transcript `<day>/<runbook>-<run id>.jsonl`, the
//! transcripts of its takeovers, its `.notes.md` and `.approvals/`, all named from the same stem)
//! and a closed hook journal (`journal-<ulid>.jsonl`). Nothing else in the folder is touched (the
//! guardrail state, files a person put there). A unit is deleted when it was last written more
//! than `keep_days` ago, then the oldest first while the folder is over `max_size`.
//!
//! Never deleted: a run still running and the journal being written (their writer holds the
//! file's `flock`, which the pass tries to take and keeps while it deletes, so a writer cannot
//! start on a file as it goes), and with the aws state backend a transcript whose upload is
//! still pending (`.runbook/uploads/<run id>.json`): it is the only copy.
//!
//! The dry run computes the same plan and deletes nothing; the real run deletes exactly that
//! plan (less a unit that became busy in between, which it reports).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::config::RetentionSettings;

/// The policy: by age, by size, or both (neither deletes nothing).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Policy {
    pub keep: Option<Duration>,
    pub max_bytes: Option<u64>,
}

impl Policy {
    pub(crate) fn of(settings: &RetentionSettings) -> Self {
        Policy {
            keep: settings
                .keep_days
                .map(|d| Duration::from_secs(u64::from(d).saturating_mul(86_400))),
            max_bytes: settings.max_size,
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.keep.is_some() || self.max_bytes.is_some()
    }
}

/// What a unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Run,
    Journal,
}

/// One run's files or one journal: deleted together or not at all.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    pub kind: Kind,
    /// Regular files (those inside an `.approvals/` folder too), sorted.
    pub files: Vec<PathBuf>,
    /// Folders removed after their files (`.approvals/`).
    pub dirs: Vec<PathBuf>,
    pub bytes: u64,
    /// The newest modification time of its files.
    pub newest: SystemTime,
}

impl Unit {
    fn transcripts(&self) -> impl Iterator<Item = &PathBuf> {
        self.files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "jsonl"))
    }
}

/// Why a unit is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    Age,
    Size,
}

#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub delete: Vec<(Unit, Why)>,
    /// Left alone: still being written (a run running, the current journal).
    pub running: Vec<Unit>,
    /// Left alone: the upload to the archive is still pending (aws backend).
    pub not_uploaded: Vec<Unit>,
    /// Every regular file under the folder, and their bytes (before deleting).
    pub files: u64,
    pub bytes: u64,
}

impl Plan {
    pub(crate) fn delete_files(&self) -> usize {
        self.delete.iter().map(|(u, _)| u.files.len()).sum()
    }

    pub(crate) fn delete_bytes(&self) -> u64 {
        self.delete.iter().map(|(u, _)| u.bytes).sum()
    }
}

/// What a real pass did.
#[derive(Debug, Default)]
pub(crate) struct Pruned {
    pub deleted: Vec<PathBuf>,
    pub deleted_bytes: u64,
    /// Units of the plan that became busy before they were deleted (kept).
    pub became_busy: usize,
    pub errors: Vec<String>,
    /// Under the folder after the pass.
    pub kept_files: u64,
    pub kept_bytes: u64,
}

/// The plan for `root` at `now`. `spool` is the aws backend's pending-upload folder.
pub(crate) fn plan(root: &Path, policy: Policy, spool: Option<&Path>, now: SystemTime) -> Plan {
    let mut plan = Plan::default();
    let mut units = Vec::new();
    scan(root, &mut units, &mut plan.files, &mut plan.bytes);
    let pending = pending_uploads(spool);
    let mut candidates = Vec::new();
    for unit in units {
        if unit.transcripts().any(|t| busy(t).is_none()) {
            plan.running.push(unit);
        } else if unit.kind == Kind::Run && is_pending(&unit, &pending) {
            plan.not_uploaded.push(unit);
        } else {
            candidates.push(unit);
        }
    }
    // Oldest first: the order of deletion by size, and a stable order to report.
    candidates.sort_by(|a, b| a.newest.cmp(&b.newest).then(a.files.cmp(&b.files)));
    let mut left = plan.bytes;
    let mut rest = Vec::new();
    for unit in candidates {
        let old = policy
            .keep
            .is_some_and(|keep| now.duration_since(unit.newest).is_ok_and(|age| age > keep));
        if old {
            left = left.saturating_sub(unit.bytes);
            plan.delete.push((unit, Why::Age));
        } else {
            rest.push(unit);
        }
    }
    if let Some(max) = policy.max_bytes {
        for unit in rest {
            if left <= max {
                break;
            }
            left = left.saturating_sub(unit.bytes);
            plan.delete.push((unit, Why::Size));
        }
    }
    plan
}

/// Deletes what `plan` says, each unit under its transcripts' locks (a unit that is busy by now
/// is kept and counted).
pub(crate) fn apply(root: &Path, plan: &Plan) -> Pruned {
    let mut done = Pruned::default();
    for (unit, _) in &plan.delete {
        let mut held = Vec::new();
        let mut busy_now = false;
        for t in unit.transcripts() {
            match busy(t) {
                Some(Some(file)) => held.push(file),
                // Gone already: nothing of it to protect.
                Some(None) => {}
                None => busy_now = true,
            }
        }
        if busy_now {
            done.became_busy = done.became_busy.saturating_add(1);
            continue;
        }
        for f in &unit.files {
            let size = std::fs::symlink_metadata(f).map(|m| m.len()).unwrap_or(0);
            match std::fs::remove_file(f) {
                Ok(()) => {
                    done.deleted.push(f.clone());
                    done.deleted_bytes = done.deleted_bytes.saturating_add(size);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => done.errors.push(format!("{}: {e}", f.display())),
            }
        }
        for d in unit.dirs.iter().rev() {
            if let Err(e) = std::fs::remove_dir(d)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                done.errors.push(format!("{}: {e}", d.display()));
            }
        }
        drop(held);
    }
    let (mut files, mut bytes) = (0, 0);
    scan(root, &mut Vec::new(), &mut files, &mut bytes);
    done.kept_files = files;
    done.kept_bytes = bytes;
    done
}

/// The regular files and bytes under `root` (what `/metrics` reports as kept).
pub(crate) fn usage(root: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    scan(root, &mut Vec::new(), &mut files, &mut bytes);
    (files, bytes)
}

/// Whether `transcript` is free: Some(the open file, locked) when no writer holds it (None
/// inside when it does not exist), None while a writer holds its lock.
fn busy(transcript: &Path) -> Option<Option<File>> {
    let Ok(file) = File::open(transcript) else {
        return Some(None);
    };
    match file.try_lock() {
        Ok(()) => Some(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => None,
        // A lock that cannot be asked about is treated as held: never delete on a guess.
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

/// The transcripts and run ids of the uploads still pending in the spool.
fn pending_uploads(spool: Option<&Path>) -> (BTreeSet<PathBuf>, BTreeSet<String>) {
    let mut paths = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let Some(Ok(dir)) = spool.map(std::fs::read_dir) else {
        return (paths, ids);
    };
    for entry in dir.filter_map(|e| e.ok()) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // A marker being written (`.json.tmp`) still names its run.
        let Some(id) = name
            .strip_suffix(".json")
            .or_else(|| name.strip_suffix(".json.tmp"))
        else {
            continue;
        };
        ids.insert(id.to_string());
        if let Some(t) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["transcript"].as_str().map(PathBuf::from))
        {
            paths.insert(std::fs::canonicalize(&t).unwrap_or(t));
        }
    }
    (paths, ids)
}

fn is_pending(unit: &Unit, (paths, ids): &(BTreeSet<PathBuf>, BTreeSet<String>)) -> bool {
    unit.files.iter().any(|f| {
        let canonical = std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
        paths.contains(&canonical)
            || f.file_name()
                .and_then(|n| n.to_str())
                .map(stem)
                .is_some_and(|s| ids.iter().any(|id| s.ends_with(id.as_str())))
    })
}

/// A file name up to its first dot: what a run's files (and a journal's) share.
fn stem(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// `YYYY-MM-DD`: the day folders runs are filed in.
fn is_day(name: &str) -> bool {
    chrono::NaiveDate::parse_from_str(name, "%Y-%m-%d").is_ok()
}

/// Counts every regular file under `root` and collects the units: journals at the top, runs in
/// the day folders.
fn scan(root: &Path, units: &mut Vec<Unit>, files: &mut u64, bytes: &mut u64) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut journals: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() && is_day(&name) {
            scan_day(&path, units, files, bytes);
        } else if meta.is_dir() {
            count(&path, files, bytes);
        } else {
            if meta.is_file() {
                *files = files.saturating_add(1);
                *bytes = bytes.saturating_add(meta.len());
            }
            if meta.is_file() && name.starts_with("journal-") && name.ends_with(".jsonl") {
                journals
                    .entry(stem(&name).to_string())
                    .or_default()
                    .push(path);
            }
        }
    }
    for (_, paths) in journals {
        if let Some(unit) = unit_of(Kind::Journal, paths, Vec::new()) {
            units.push(unit);
        }
    }
}

/// The runs in one day folder (their files grouped by stem), counting every file.
fn scan_day(day: &Path, units: &mut Vec<Unit>, files: &mut u64, bytes: &mut u64) {
    let Ok(entries) = std::fs::read_dir(day) else {
        return;
    };
    let mut by_stem: BTreeMap<String, (Vec<PathBuf>, Vec<PathBuf>)> = BTreeMap::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let slot = by_stem.entry(stem(&name).to_string()).or_default();
        if meta.is_dir() {
            count(&path, files, bytes);
            if name.ends_with(".approvals") {
                collect(&path, &mut slot.0, &mut slot.1);
                slot.1.push(path);
            }
        } else {
            if meta.is_file() {
                *files = files.saturating_add(1);
                *bytes = bytes.saturating_add(meta.len());
            }
            slot.0.push(path);
        }
    }
    for (_, (paths, dirs)) in by_stem {
        // Only a run's files: a transcript or notes (never something else put there).
        let is_run = paths.iter().any(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".jsonl") || n.ends_with(".notes.md"))
        });
        if is_run && let Some(unit) = unit_of(Kind::Run, paths, dirs) {
            units.push(unit);
        }
    }
}

fn unit_of(kind: Kind, mut paths: Vec<PathBuf>, dirs: Vec<PathBuf>) -> Option<Unit> {
    paths.sort();
    let mut bytes = 0u64;
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut files = Vec::new();
    for p in paths {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            continue;
        }
        bytes = bytes.saturating_add(meta.len());
        if let Ok(m) = meta.modified() {
            newest = newest.max(m);
        }
        files.push(p);
    }
    (!files.is_empty()).then_some(Unit {
        kind,
        files,
        dirs,
        bytes,
        newest,
    })
}

/// Every regular file under `dir` (recursively) into `files`, its folders into `dirs` (deepest
/// last).
fn collect(dir: &Path, files: &mut Vec<PathBuf>, dirs: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                dirs.push(path.clone());
                collect(&path, files, dirs);
            }
            Ok(_) => files.push(path),
            Err(_) => {}
        }
    }
}

fn count(dir: &Path, files: &mut u64, bytes: &mut u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        match std::fs::symlink_metadata(entry.path()) {
            Ok(m) if m.is_dir() => count(&entry.path(), files, bytes),
            Ok(m) if m.is_file() => {
                *files = files.saturating_add(1);
                *bytes = bytes.saturating_add(m.len());
            }
            _ => {}
        }
    }
}

/// The plan as lines for a person, paths relative to `root`: what is (or would be) deleted and
/// why, then the totals.
pub(crate) fn describe(root: &Path, plan: &Plan, dry_run: bool) -> Vec<String> {
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let mut out = Vec::new();
    for (unit, why) in &plan.delete {
        let why = match why {
            Why::Age => "older than keep_days",
            Why::Size => "over max_size",
        };
        for f in &unit.files {
            out.push(format!(
                "{} {} ({why})",
                if dry_run { "would delete" } else { "delete" },
                rel(f)
            ));
        }
    }
    for unit in &plan.running {
        if let Some(f) = unit.transcripts().next() {
            out.push(format!("keep {} (still being written)", rel(f)));
        }
    }
    for unit in &plan.not_uploaded {
        if let Some(f) = unit.transcripts().next().or(unit.files.first()) {
            out.push(format!(
                "keep {} (upload to the archive still pending)",
                rel(f)
            ));
        }
    }
    let runs = plan
        .delete
        .iter()
        .filter(|(u, _)| u.kind == Kind::Run)
        .count();
    let journals = plan.delete.len().saturating_sub(runs);
    out.push(format!(
        "{} {} files ({} bytes) of {runs} runs and {journals} journals; {} files ({} bytes) kept; left alone: {} being written, {} not uploaded yet",
        if dry_run { "would delete" } else { "deleting" },
        plan.delete_files(),
        plan.delete_bytes(),
        plan.files.saturating_sub(plan.delete_files() as u64),
        plan.bytes.saturating_sub(plan.delete_bytes()),
        plan.running.len(),
        plan.not_uploaded.len(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: usize, age_days: u64) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![b'x'; bytes]).unwrap();
        let at = SystemTime::now() - Duration::from_secs(age_days * 86_400);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(at)
            .unwrap();
    }

    #[test]
    fn old_runs_go_whole_and_running_or_unrelated_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let old = root.join("2026-01-01/rb-01OLD.jsonl");
        write(&old, 100, 40);
        write(&root.join("2026-01-01/rb-01OLD.notes.md"), 10, 40);
        write(&root.join("2026-01-01/rb-01OLD.approvals/1.json"), 5, 40);
        let running = root.join("2026-01-01/rb-01RUN.jsonl");
        write(&running, 100, 40);
        let fresh = root.join("2026-11-30/rb-01NEW.jsonl");
        write(&fresh, 100, 0);
        write(&root.join("guardrails.json"), 50, 40);
        write(&root.join("2026-01-01/README.txt"), 7, 40);
        let lock = File::open(&running).unwrap();
        lock.lock().unwrap();
        let policy = Policy {
            keep: Some(Duration::from_secs(30 * 86_400)),
            max_bytes: None,
        };
        let plan = plan(root, policy, None, SystemTime::now());
        assert_eq!(plan.delete.len(), 1);
        assert_eq!(plan.delete_files(), 3);
        assert_eq!(plan.running.len(), 1);
        let done = apply(root, &plan);
        assert_eq!(done.deleted.len(), 3);
        assert!(!old.exists() && !root.join("2026-01-01/rb-01OLD.approvals").exists());
        assert!(running.exists() && fresh.exists());
        assert!(
            root.join("guardrails.json").exists() && root.join("2026-01-01/README.txt").exists()
        );
        assert_eq!(done.kept_bytes, 100 + 100 + 50 + 7);
    }

    #[test]
    fn over_the_size_the_oldest_go_first_until_it_fits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (i, age) in [(1, 5), (2, 4), (3, 3), (4, 2)] {
            write(&root.join(format!("2026-11-2{i}/rb-0{i}.jsonl")), 1000, age);
        }
        let policy = Policy {
            keep: None,
            max_bytes: Some(2500),
        };
        let plan = plan(root, policy, None, SystemTime::now());
        let names: Vec<String> = plan
            .delete
            .iter()
            .map(|(u, _)| {
                u.files[0]
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, ["rb-01.jsonl", "rb-02.jsonl"]);
        // No policy, nothing deleted.
        assert!(
            super::plan(root, Policy::default(), None, SystemTime::now())
                .delete
                .is_empty()
        );
    }
}
