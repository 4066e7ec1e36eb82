//! Appending to a transcript: the hash chain, the file's lock, durability.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::Serialize;
use serde_json::{Map, Value, json};

use sha2::{Digest, Sha256};

use super::reader::{Kind, read_verified};
use super::sign::{SIGNATURE_ALG, Signer};
use super::{Event, GENESIS, with_hash, write_canonical};
use crate::base::error::{Error, Result};
use crate::base::redact::Redactor;

/// Whether an event must be on disk before the run goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written to the OS (survives a process crash).
    Written,
    /// Written and fsync'd (survives a machine crash).
    Synced,
}

/// Appends events to one transcript file, keeping the hash chain.
///
/// The writer holds an exclusive lock (`flock`) on the file for as long as it lives, so one run
/// (or one `resume` of it) at a time can append: a second `resume` of the same transcript is
/// refused instead of forking the chain.
pub struct TranscriptWriter {
    path: PathBuf,
    file: File,
    seq: u64,
    prev: String,
    /// The file's length after the last complete line: a failed write is cut back to it.
    good_len: u64,
    /// Set once the writer knows the file is a run's transcript (its first event is
    /// `run_started`); only those get a `signature` line after `run_finished`.
    is_run: bool,
    signer: Option<Signer>,
    redactor: Rc<Redactor>,
    /// Read by the benchmarks; when false, [`Durability::Synced`] behaves like `Written`.
    fsync: bool,
}

impl TranscriptWriter {
    /// Creates a new transcript; refuses to overwrite an existing file (a transcript is evidence)
    /// and to follow a symlink planted where it should go. The file is private to its owner
    /// (0600), and so is every folder created for it (0700).
    pub fn create(path: &Path, redactor: Rc<Redactor>) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent)
                .map_err(|e| Error::io("cannot create transcript folder", parent, e))?;
        }
        refuse_planted_links(path)?;
        // The key is checked before the file exists: a refused key leaves nothing behind.
        let signer = Signer::from_env(path)?;
        let file =
            create_private(path).map_err(|e| Error::io("cannot create transcript", path, e))?;
        lock(&file, path)?;
        Ok(TranscriptWriter {
            path: path.to_path_buf(),
            file,
            seq: 0,
            prev: GENESIS.to_string(),
            good_len: 0,
            is_run: false,
            signer,
            redactor,
            fsync: true,
        })
    }

    /// Opens an existing, verified transcript to append to it (resume): the chain continues
    /// from its last line. Returns the writer and the events already in it. The file is locked
    /// before it is read, so what was read is what the chain continues from.
    pub fn open_append(path: &Path, redactor: Rc<Redactor>) -> Result<(Self, Vec<Value>)> {
        refuse_planted_links(path)?;
        let file =
            open_private_append(path).map_err(|e| Error::io("cannot open transcript", path, e))?;
        lock(&file, path)?;
        let (events, report) = read_verified(path)?;
        let good_len = file
            .metadata()
            .map_err(|e| Error::io("cannot read transcript", path, e))?
            .len();
        let signer = Signer::from_env(path)?;
        let writer = TranscriptWriter {
            path: path.to_path_buf(),
            file,
            seq: events.len() as u64,
            prev: report.head,
            good_len,
            is_run: report.kind == Kind::Run,
            signer,
            redactor,
            fsync: true,
        };
        Ok((writer, events))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Turns fsync off (benchmarks only: it measures the cost of the durability guarantee).
    pub fn set_fsync(&mut self, on: bool) {
        self.fsync = on;
    }

    /// Number of events written so far.
    pub fn len(&self) -> u64 {
        self.seq
    }

    pub fn is_empty(&self) -> bool {
        self.seq == 0
    }

    /// Appends one event. `event` must serialize to a JSON object with a `type` field.
    ///
    /// A write that fails (disk full, a file size limit, an I/O error) is cut back to the last
    /// complete line before the error is returned: half a line would make every later line
    /// unverifiable forever. After a run's `run_finished`, a `signature` line follows when a
    /// signing key is configured (see [`Signer`]).
    pub fn append(&mut self, event: &impl Serialize, durability: Durability) -> Result<()> {
        let mut body = serde_json::to_value(event).map_err(|e| {
            Error::io(
                "cannot encode event for",
                &self.path,
                std::io::Error::other(e),
            )
        })?;
        // Only the event is redacted: the chain fields are hex the writer made, and a short
        // secret that happened to occur in a hash must not break the chain.
        self.redactor.redact_json(&mut body);
        let kind = body.get("type").and_then(Value::as_str).map(str::to_string);
        // A `signature` line is the writer's own, made below from the chain it holds: one
        // appended as an event would sign nothing, and the transcript would never verify again.
        if kind.as_deref() == Some("signature") {
            return Err(Error::Internal(format!(
                "{}: a signature line is written by the transcript writer alone, never appended as an event",
                self.path.display()
            )));
        }
        self.append_line(body, durability)?;
        if self.seq == 1 && kind.as_deref() == Some("run_started") {
            self.is_run = true;
        }
        if self.is_run
            && kind.as_deref() == Some("run_finished")
            && let Some(signer) = &self.signer
        {
            let signature = signer.sign(&self.prev);
            let line = Event::Signature {
                alg: SIGNATURE_ALG.to_string(),
                key_id: signer.key_id.clone(),
                signed: self.prev.clone(),
                signature,
            };
            let line = serde_json::to_value(&line).map_err(|e| {
                Error::io(
                    "cannot encode event for",
                    &self.path,
                    std::io::Error::other(e),
                )
            })?;
            self.append_line(line, Durability::Synced)?;
        }
        Ok(())
    }

    /// Adds the chain fields to `body`, writes it as one line and moves the chain on.
    fn append_line(&mut self, body: Value, durability: Durability) -> Result<()> {
        let mut line = Map::new();
        line.insert("seq".into(), json!(self.seq));
        line.insert("ts".into(), json!(crate::base::clock::now_utc()));
        if let Value::Object(fields) = body {
            for (k, v) in fields {
                line.insert(k, v);
            }
        }
        // The chain's own fields win over an event's: an event carrying a `seq` would otherwise
        // write a line the reader refuses. (Re-inserting keeps `seq` first in the line.)
        line.insert("seq".into(), json!(self.seq));
        line.insert("prev".into(), json!(self.prev));
        let line = Value::Object(line);
        // The line on disk is the very text that is hashed, with the hash appended as its last
        // field: one spelling per content, so what grep reads is what the hash covers.
        let mut text = String::new();
        write_canonical(&line, &mut text, true);
        let hash = hex::encode(Sha256::digest(text.as_bytes()));
        with_hash(&mut text, &hash);
        text.push('\n');
        let written = self.file.write_all(text.as_bytes()).and_then(|()| {
            if durability == Durability::Synced && self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            return Err(self.roll_back(e));
        }
        self.good_len = self.good_len.saturating_add(text.len() as u64);
        self.seq += 1;
        self.prev = hash;
        crash_point();
        Ok(())
    }

    /// Cuts the file back to its last complete line after a failed write, and says so.
    fn roll_back(&mut self, cause: std::io::Error) -> Error {
        let kept = match self
            .file
            .set_len(self.good_len)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => format!(
                "the line was not recorded; the transcript was cut back to its last complete line ({} events)",
                self.seq
            ),
            Err(e) => format!(
                "and cutting the transcript back to its last complete line ({} bytes) failed too ({e}): it ends in a partial line",
                self.good_len
            ),
        };
        Error::io(
            "cannot write transcript",
            &self.path,
            std::io::Error::new(cause.kind(), format!("{cause}; {kept}")),
        )
    }
}

/// Refuses a run whose notes file or approvals folder (named after the transcript) is a symlink:
/// a link planted there would have the run append its notes to, or file approvals in, whatever
/// it points at.
fn refuse_planted_links(transcript: &Path) -> Result<()> {
    for sibling in [
        transcript.with_extension("notes.md"),
        transcript.with_extension("approvals"),
    ] {
        if std::fs::symlink_metadata(&sibling).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::Usage(format!(
                "{} is a symlink: the run's notes and approvals are never written through one (remove it)",
                sibling.display()
            )));
        }
    }
    Ok(())
}

/// Creates `dir` and its missing parents, private to the owner (0700). Folders that exist keep
/// their mode (they may be shared on purpose).
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates a new file only its owner can read (0600). Never follows a symlink and never opens a
/// file that exists: a link planted at `path` is refused, not written through.
pub(crate) fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Opens a file to append to it, creating it private (0600) if it is missing; never through a
/// symlink (a planted `notes.md` link must not append to the file it points at).
pub(crate) fn open_private_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Takes the transcript's exclusive lock, or says who holds it.
fn lock(file: &File, path: &Path) -> Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Environment(format!(
            "{} is in use by {}: one run or resume at a time may append to a transcript",
            path.display(),
            lock_holder(file, path)
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("cannot lock transcript", path, e)),
    }
}

/// Who holds a transcript's lock, as far as can be told: the process (from /proc/locks on
/// Linux) and the last operator the transcript names.
fn lock_holder(file: &File, path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut parts = Vec::new();
    if let (Ok(meta), Ok(locks)) = (file.metadata(), std::fs::read_to_string("/proc/locks")) {
        let inode = meta.ino().to_string();
        let pid = locks.lines().find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let (kind, pid, dev) = (fields.get(1)?, fields.get(4)?, fields.get(5)?);
            (*kind == "FLOCK" && dev.rsplit(':').next() == Some(inode.as_str()))
                .then(|| pid.to_string())
        });
        if let Some(pid) = pid {
            parts.push(format!("process {pid}"));
        }
    }
    // The last start or resume the file names (its lines are read as they are: this is only
    // a hint for the message, the file is not verified here).
    let last = File::open(path).ok().and_then(|f| {
        BufReader::new(f)
            .lines()
            .map_while(std::result::Result::ok)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .filter_map(|line| {
                let ts = line["ts"].as_str().unwrap_or("?").to_string();
                match Event::parse(&line) {
                    Ok(Event::RunStarted { operator, .. }) => Some(("started", operator, ts)),
                    Ok(Event::RunResumed { operator, .. }) => Some(("resumed", operator, ts)),
                    _ => None,
                }
            })
            .last()
    });
    if let Some((what, operator, ts)) = last {
        parts.push(format!("{what} by {operator} at {ts}"));
    }
    if parts.is_empty() {
        "another runbook process".into()
    } else {
        format!("another runbook process ({})", parts.join(", "))
    }
}

/// Test hook for the crash tests: with `RUNBOOK_TEST_KILL_AFTER_EVENTS=N` the process kills
/// itself with SIGKILL right after writing its Nth event, exactly like `kill -9` from outside
/// but at a chosen point. Never set in production; read once.
fn crash_point() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LIMIT: std::sync::LazyLock<Option<u64>> = std::sync::LazyLock::new(|| {
        std::env::var("RUNBOOK_TEST_KILL_AFTER_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    static WRITTEN: AtomicU64 = AtomicU64::new(0);
    let Some(limit) = *LIMIT else { return };
    if WRITTEN.fetch_add(1, Ordering::SeqCst) + 1 == limit {
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        // The signal is on its way; nothing more may be written.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}
