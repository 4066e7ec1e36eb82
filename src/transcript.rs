//! The audit transcript: one append-only JSON-lines file per run, chained by hashes.
//!
//! Every line carries `seq`, `ts`, `prev` (the hash of the line before) and `hash`, the SHA-256 of
//! the line's canonical form (keys sorted at every depth, compact, `hash` left out). The line on
//! disk *is* that canonical text with `"hash":"…"` appended as its last field, and `verify` refuses
//! any other spelling, so what `grep` or `jq` read is exactly what the hash covers. Changing,
//! dropping or reordering any line breaks the chain at that line, which is what `transcript
//! verify` reports.
//!
//! Every string is redacted *before* hashing, so the chain covers exactly what is on disk and a
//! secret can never be recovered from it. Each line is written with one `write` call (no user-space
//! buffering) so a crashed process loses nothing it recorded; the file is also fsync'd at step
//! boundaries and after every mutating call, so a crashed *machine* loses nothing that finished.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::redact::Redactor;

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How a step ended. Recorded verbatim; drills and resume read it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Ok,
    Failed,
    Skipped,
    TimedOut,
    Aborted,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Ok => "ok",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::TimedOut => "timed_out",
            StepStatus::Aborted => "aborted",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Ok,
    Failed,
    TimedOut,
    Aborted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Aborted => "aborted",
        }
    }
}

/// Step counts by status, for `run_finished`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    pub ok: usize,
    pub failed: usize,
    pub skipped: usize,
    pub timed_out: usize,
    pub aborted: usize,
    pub not_run: usize,
}

impl Counts {
    pub fn add(&mut self, status: StepStatus) {
        match status {
            StepStatus::Ok => self.ok += 1,
            StepStatus::Failed => self.failed += 1,
            StepStatus::Skipped => self.skipped += 1,
            StepStatus::TimedOut => self.timed_out += 1,
            StepStatus::Aborted => self.aborted += 1,
        }
    }
}

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
        self.append_line(body, durability)?;
        if self.seq == 1 && kind.as_deref() == Some("run_started") {
            self.is_run = true;
        }
        if self.is_run
            && kind.as_deref() == Some("run_finished")
            && let Some(signer) = &self.signer
        {
            let signature = signer.sign(&self.prev);
            let line = json!({
                "type": "signature",
                "alg": SIGNATURE_ALG,
                "key_id": signer.key_id,
                "signed": self.prev,
                "signature": signature,
            });
            self.append_line(line, Durability::Synced)?;
        }
        Ok(())
    }

    /// Adds the chain fields to `body`, writes it as one line and moves the chain on.
    fn append_line(&mut self, body: Value, durability: Durability) -> Result<()> {
        let mut line = Map::new();
        line.insert("seq".into(), json!(self.seq));
        line.insert("ts".into(), json!(crate::clock::now_utc()));
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
    let last = File::open(path).ok().and_then(|f| {
        BufReader::new(f)
            .lines()
            .map_while(std::result::Result::ok)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .filter(|e| matches!(e["type"].as_str(), Some("run_started" | "run_resumed")))
            .last()
    });
    if let Some(e) = last {
        parts.push(format!(
            "{} by {} at {}",
            if e["type"] == "run_started" {
                "started"
            } else {
                "resumed"
            },
            e["operator"].as_str().unwrap_or("?"),
            e["ts"].as_str().unwrap_or("?")
        ));
    }
    if parts.is_empty() {
        "another runbook process".into()
    } else {
        format!("another runbook process ({})", parts.join(", "))
    }
}

/// `alg` of a `signature` line.
pub const SIGNATURE_ALG: &str = "hmac-sha256";

/// Signs a run's final head with a key kept outside the transcript folder.
///
/// The key comes from `RUNBOOK_SIGNING_KEY_FILE` (a file) or `RUNBOOK_SIGNING_KEY` (the key
/// itself), at least 16 bytes. A signature proves the transcript up to that head was written by
/// someone holding the key, so a cut or rewritten file no longer verifies with `--key-file`. It
/// does not protect against the key's owner: only a copy off the machine (the S3/DynamoDB anchor
/// of the team-state work) does.
pub struct Signer {
    key: Vec<u8>,
    /// The first 8 hex digits of the key's SHA-256: which key signed, without revealing it.
    pub key_id: String,
}

impl Signer {
    pub const MIN_KEY_BYTES: usize = 16;

    pub fn new(key: Vec<u8>) -> Result<Self> {
        if key.len() < Self::MIN_KEY_BYTES {
            return Err(Error::Usage(format!(
                "the signing key has {} bytes; it needs at least {}",
                key.len(),
                Self::MIN_KEY_BYTES
            )));
        }
        let key_id = hex::encode(&Sha256::digest(&key)[..4]);
        Ok(Signer { key, key_id })
    }

    /// Reads a key file (trailing newlines are not part of the key).
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut key =
            std::fs::read(path).map_err(|e| Error::io("cannot read signing key", path, e))?;
        while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            key.pop();
        }
        Self::new(key)
    }

    /// The key configured in the environment, if any. A key file inside the transcript's own
    /// folder is refused: whoever can rewrite the transcript could read the key beside it.
    pub fn from_env(transcript: &Path) -> Result<Option<Self>> {
        if let Some(file) = std::env::var_os("RUNBOOK_SIGNING_KEY_FILE").filter(|f| !f.is_empty()) {
            let file = PathBuf::from(file);
            let parent = |p: &Path| {
                p.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf()
            };
            // The transcript's own folder and the transcripts root (RUNBOOK_TRANSCRIPTS).
            let folders = [
                Some(parent(transcript)),
                std::env::var_os("RUNBOOK_TRANSCRIPTS").map(PathBuf::from),
            ];
            let key_dir = parent(&file).canonicalize();
            for folder in folders.into_iter().flatten() {
                if let (Ok(key_dir), Ok(folder)) = (&key_dir, folder.canonicalize())
                    && key_dir.starts_with(&folder)
                {
                    return Err(Error::Usage(format!(
                        "the signing key {} is inside the transcript folder {}: keep it elsewhere (whoever can rewrite a transcript could read a key beside it)",
                        file.display(),
                        folder.display()
                    )));
                }
            }
            return Self::from_file(&file).map(Some);
        }
        match std::env::var("RUNBOOK_SIGNING_KEY") {
            Ok(key) if !key.is_empty() => Self::new(key.into_bytes()).map(Some),
            _ => Ok(None),
        }
    }

    /// HMAC-SHA256 of the head (its hex text), in hex.
    pub fn sign(&self, head: &str) -> String {
        use hmac::{KeyInit, Mac};
        // HMAC accepts keys of any length; the error arm cannot happen but must not panic.
        match <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.key) {
            Ok(mut mac) => {
                mac.update(head.as_bytes());
                hex::encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        }
    }

    /// Whether `signature` (hex) signs `head`, compared in constant time.
    pub fn verify(&self, head: &str, signature: &str) -> bool {
        use hmac::{KeyInit, Mac};
        let (Ok(given), Ok(mut mac)) = (
            hex::decode(signature),
            <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.key),
        ) else {
            return false;
        };
        mac.update(head.as_bytes());
        mac.verify_slice(&given).is_ok()
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

/// Appends `"hash":"…"` as the last field of a canonical object's text.
fn with_hash(canonical: &mut String, hash: &str) {
    if canonical.ends_with('}') {
        canonical.pop();
        if canonical.len() > 1 {
            canonical.push(',');
        }
        let _ = write!(canonical, "\"hash\":\"{hash}\"}}");
    }
}

/// The canonical text of a value (compact, keys sorted at every depth): equal for equal content,
/// whatever order its keys were built or read in.
pub(crate) fn canonical_text(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out, false);
    out
}

/// Compact JSON with object keys sorted, recursively. `skip_hash` drops the top-level `hash`.
fn write_canonical(value: &Value, out: &mut String, skip_hash: bool) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .keys()
                .filter(|k| !(skip_hash && *k == "hash"))
                .collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&map[k.as_str()], out, false);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out, false);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// What a transcript file is, from its first event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A run's transcript (`run_started` first): done when its last event is `run_finished`.
    Run,
    /// The hook server's journal (`journal_started` first): a log that is never "finished".
    Journal,
}

/// What a verified transcript holds, in brief.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub kind: Kind,
    pub events: usize,
    pub head: String,
    pub runbook: Option<String>,
    pub run_id: Option<String>,
    /// The status of the `run_finished` the transcript ends with (a `signature` line may follow
    /// it), or None when the run never finished: it crashed, is still running, or was cut short.
    pub finished: Option<String>,
    /// `signature` lines (one per finished run or resume), each as (line, signed head, key id,
    /// signature). Checked against a key by [`check_signatures`].
    #[serde(skip)]
    pub signatures: Vec<(usize, String, String, String)>,
    /// Lines at the start written by a version before the canonical line form (see
    /// [`read_verified`]); 0 for every transcript this version began.
    pub legacy_lines: usize,
}

/// Reads and checks a transcript. Returns its events, or the first broken line (1-based).
///
/// Every line must be exactly the bytes the writer produces for its content (compact JSON, no
/// duplicate keys, no added whitespace, no escapes the writer would not make): the hash covers
/// the parsed content, so any other spelling of a line would let `grep` read something the hash
/// does not cover. A run that never finished is not an error here (`resume` reads such files);
/// `transcript verify` refuses it unless told otherwise.
pub fn read_verified(path: &Path) -> Result<(Vec<Value>, VerifyReport)> {
    let file = File::open(path).map_err(|e| Error::io("cannot open transcript", path, e))?;
    read_verified_from(BufReader::new(file), path)
}

/// [`read_verified`] of a transcript from any reader (`path` names it in errors). For the fuzz
/// targets (`fuzz/`), which check millions of generated transcripts without files.
#[doc(hidden)]
pub fn read_verified_from(reader: impl BufRead, path: &Path) -> Result<(Vec<Value>, VerifyReport)> {
    let broken = |line: usize, reason: String| Error::TranscriptBroken {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut prev = GENESIS.to_string();
    let mut events = Vec::new();
    let mut signatures = Vec::new();
    let mut legacy_lines = 0usize;
    let mut reader = reader;
    let mut raw = Vec::new();
    for i in 0.. {
        raw.clear();
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| Error::io("cannot read transcript", path, e))?;
        if n == 0 {
            break;
        }
        let lineno = i + 1;
        if raw.pop() != Some(b'\n') {
            return Err(broken(
                lineno,
                "the last line is incomplete (no newline: a write was cut off)".into(),
            ));
        }
        let text = std::str::from_utf8(&raw).map_err(|_| broken(lineno, "not UTF-8".into()))?;
        let value: Value = serde_json::from_str(text)
            .map_err(|e| broken(lineno, format!("not a JSON event ({e})")))?;
        let Some(obj) = value.as_object() else {
            return Err(broken(lineno, "not a JSON object".into()));
        };
        let stored = obj.get("hash").and_then(Value::as_str).unwrap_or_default();
        let mut canonical = String::new();
        write_canonical(&value, &mut canonical, true);
        let computed = hex::encode(Sha256::digest(canonical.as_bytes()));
        if stored != computed {
            return Err(broken(
                lineno,
                "hash does not match the line's content (the line was changed)".into(),
            ));
        }
        with_hash(&mut canonical, stored);
        // Transcripts begun before lines were written in their canonical form (keys in the
        // writer's own order) still verify, as long as every such line is byte for byte the
        // compact form of itself: a duplicate key, added whitespace or a re-escaped character
        // changes that too. Only a prefix may be in the old form (a resume by this version
        // appends canonical lines), so a new transcript can never be read leniently.
        let legacy = canonical != text
            && (i == 0 || legacy_lines == i)
            && serde_json::to_string(&value).is_ok_and(|own| own == text);
        if legacy {
            legacy_lines += 1;
        } else if canonical != text {
            return Err(broken(
                lineno,
                "the line is not in its canonical form (keys sorted, compact, the hash last; here a duplicate key, added whitespace, a re-escaped character or moved keys): its bytes are not what its hash covers".into(),
            ));
        }
        if obj.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            return Err(broken(
                lineno,
                "prev does not match the hash of the line before (a line was removed, added or moved)"
                    .into(),
            ));
        }
        if obj.get("seq").and_then(Value::as_u64) != Some(i as u64) {
            return Err(broken(lineno, format!("seq should be {i}")));
        }
        // A run's transcript opens with run_started; the hook journal, written by the same
        // writer, with journal_started.
        if i == 0
            && !matches!(
                obj.get("type").and_then(Value::as_str),
                Some("run_started" | "journal_started")
            )
        {
            return Err(broken(
                lineno,
                "the first event must be run_started (or journal_started)".into(),
            ));
        }
        if obj.get("type").and_then(Value::as_str) == Some("signature") {
            if obj.get("signed").and_then(Value::as_str) != Some(prev.as_str()) {
                return Err(broken(
                    lineno,
                    "the signature line does not sign the line before it".into(),
                ));
            }
            signatures.push((
                lineno,
                prev.clone(),
                obj.get("key_id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                obj.get("signature")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ));
        }
        prev = computed;
        events.push(value);
    }
    if events.is_empty() {
        return Err(broken(1, "the transcript is empty".into()));
    }
    let first = &events[0];
    let kind = if first["type"] == "journal_started" {
        Kind::Journal
    } else {
        Kind::Run
    };
    // Finished means the file *ends* with run_finished: a run_finished followed by a resume
    // that never finished is not a finished run.
    let finished = events
        .iter()
        .rev()
        .find(|e| e["type"] != "signature")
        .filter(|e| kind == Kind::Run && e["type"] == "run_finished")
        .and_then(|e| e["status"].as_str())
        .map(str::to_string);
    let report = VerifyReport {
        kind,
        events: events.len(),
        head: prev,
        runbook: first["runbook"]["id"].as_str().map(|id| {
            format!(
                "{id}@{}",
                first["runbook"]["version"].as_str().unwrap_or("?")
            )
        }),
        run_id: first["run_id"].as_str().map(str::to_string),
        finished,
        signatures,
        legacy_lines,
    };
    Ok((events, report))
}

/// Checks a verified transcript's signatures against `signer`'s key: every `signature` line
/// must be valid, and a run's transcript must end with one (after its `run_finished`), so a
/// file cut short or rewritten by someone without the key is refused. Returns how many held.
pub fn check_signatures(
    path: &Path,
    events: &[Value],
    report: &VerifyReport,
    signer: &Signer,
) -> Result<usize> {
    let broken = |line: usize, reason: String| Error::TranscriptBroken {
        path: path.to_path_buf(),
        line,
        reason,
    };
    for (line, head, key_id, signature) in &report.signatures {
        if *key_id != signer.key_id {
            return Err(broken(
                *line,
                format!(
                    "signed with key {key_id}, not with the given key ({})",
                    signer.key_id
                ),
            ));
        }
        if !signer.verify(head, signature) {
            return Err(broken(
                *line,
                "the signature does not match: the lines before it were changed, or it was forged"
                    .into(),
            ));
        }
    }
    if report.kind == Kind::Run && events.last().is_some_and(|e| e["type"] != "signature") {
        return Err(broken(
            events.len(),
            "the transcript does not end with a signature: it was cut short, extended, or written without the signing key".into(),
        ));
    }
    Ok(report.signatures.len())
}

fn ms(v: &Value) -> String {
    match v.as_u64() {
        Some(ms) if ms >= 1000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => format!("{ms} ms"),
        None => "-".into(),
    }
}

/// A step's time waiting for a person, after its working time (nothing when it did not wait).
fn waiting(v: &Value) -> String {
    match v.as_u64() {
        Some(n) if n > 0 => format!(", {} waiting for a person", ms(v)),
        _ => String::new(),
    }
}

/// Shortens long values for one-line display (the transcript itself keeps them whole).
fn clip(text: &str) -> String {
    const MAX: usize = 160;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// Time of day (`HH:MM:SS.mmm`) of an event.
fn clock(e: &Value) -> &str {
    let ts = e["ts"].as_str().unwrap_or("");
    ts.get(11..23).unwrap_or(ts)
}

fn step_label(steps: &[Value], index: &Value) -> String {
    index
        .as_u64()
        .and_then(|i| steps.get(i as usize))
        .map(|s| {
            format!(
                "{} · {}",
                s["phase"].as_str().unwrap_or("?"),
                s["title"].as_str().unwrap_or("?")
            )
        })
        .unwrap_or_else(|| "run".into())
}

fn error_text(e: &Value) -> String {
    match e {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => {
            let msg = other["message"].as_str().unwrap_or("");
            match other["location"].as_str() {
                Some(loc) => format!("{msg} (at {loc})"),
                None => msg.to_string(),
            }
        }
    }
}

/// The AWS-shaped resource ids (`i-…`, `vol-…`, `sg-…`, ...) among the values of a call's
/// arguments and result, in order of appearance: what a write touched, for the reader.
fn resources_named(call: &Value) -> Vec<String> {
    static SHAPE: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^(i|vol|snap|sg|ami|eni|subnet|vpc)-[0-9a-f]{8,17}$").ok()
    });
    fn walk(v: &Value, shape: &regex::Regex, out: &mut Vec<String>) {
        match v {
            Value::String(s) if shape.is_match(s) && !out.contains(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|v| walk(v, shape, out)),
            Value::Object(map) => map.values().for_each(|v| walk(v, shape, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(shape) = SHAPE.as_ref() {
        walk(&call["args"], shape, &mut out);
        walk(&call["result"], shape, &mut out);
    }
    out
}

/// The fields of an event other than the chain's, compact: the fallback line for event types
/// without one of their own.
fn fields(e: &Value) -> String {
    let mut rest = e.clone();
    if let Value::Object(map) = &mut rest {
        for k in ["seq", "ts", "prev", "hash", "type"] {
            map.remove(k);
        }
    }
    clip(&rest.to_string())
}

/// A line about a resume, for both timelines.
fn resumed_text(e: &Value) -> String {
    if e["appended_run_finished"] == true {
        return format!(
            "resumed by {} only to record the run's end (every step had finished before the crash)",
            e["operator"].as_str().unwrap_or("?")
        );
    }
    let mut text = format!(
        "resumed by {} at step {}",
        e["operator"].as_str().unwrap_or("?"),
        e["from_step"]
            .as_u64()
            .map_or("?".into(), |s| (s + 1).to_string())
    );
    if let Some(n) = e["replayed_writes"].as_u64().filter(|n| *n > 0) {
        let _ = write!(text, ", {n} finished write(s) answered from the transcript");
    }
    if e["allow_changed"] == true {
        text.push_str(", runbook changed since the start (accepted)");
    }
    text
}

/// A readable timeline of a hook journal: the server's records, one per line.
fn show_journal(events: &[Value]) -> String {
    let first = &events[0];
    let mut out = String::new();
    let routes: Vec<&str> = first["routes"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "hook journal · {} · pid {} · {} · routes: {}",
        first["config"].as_str().unwrap_or("?"),
        first["pid"],
        first["tool"].as_str().unwrap_or("?"),
        if routes.is_empty() {
            "none".to_string()
        } else {
            routes.join(", ")
        }
    );
    for e in events {
        let s = |k: &str| e[k].as_str().unwrap_or("?").to_string();
        let line = match e["type"].as_str().unwrap_or("") {
            "journal_started" => "journal started".to_string(),
            "listening" => format!("listening on {}", s("addr")),
            "alert" => {
                let mut line = format!(
                    "alert {} ({}, {}) → {}",
                    s("alert"),
                    s("source"),
                    if e["firing"] == false {
                        "resolved"
                    } else {
                        "firing"
                    },
                    s("outcome")
                );
                for k in ["route", "run_id", "reason", "detail"] {
                    if let Some(v) = e[k].as_str() {
                        let _ = write!(line, " · {k} {}", clip(v));
                    }
                }
                line
            }
            "request_refused" => format!(
                "refused {} request ({} {}): {}",
                s("source"),
                e["status"],
                s("reason"),
                clip(&s("detail"))
            ),
            "run_finished" => format!(
                "run {} of {} ({}) {} [{}] {}",
                s("run_id"),
                s("runbook"),
                s("route"),
                s("status"),
                ms(&e["duration_ms"]),
                e["reason"].as_str().unwrap_or("")
            ),
            "run_not_started" => format!("run {} not started: {}", s("run_id"), fields(e)),
            "escalation" => format!(
                "escalation for {} ({}): {}",
                s("alert"),
                s("reason"),
                if e["delivered"] == true {
                    "delivered".to_string()
                } else {
                    format!("NOT delivered: {}", e["error"].as_str().unwrap_or("?"))
                }
            ),
            "stopped" => format!("stopped ({} run(s) aborted)", e["aborted_runs"]),
            other => format!("{other} {}", fields(e)),
        };
        let _ = writeln!(out, "{}  {}", clock(e), line.trim_end());
    }
    out
}

/// A readable timeline of a (verified) transcript, one line per event.
pub fn show(events: &[Value]) -> String {
    let first = &events[0];
    if first["type"] == "journal_started" {
        return show_journal(events);
    }
    let steps = first["steps"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {} · {}@{} · {} · env {} · by {}",
        first["run_id"].as_str().unwrap_or("?"),
        first["runbook"]["id"].as_str().unwrap_or("?"),
        first["runbook"]["version"].as_str().unwrap_or("?"),
        first["mode"].as_str().unwrap_or("?"),
        first["environment"].as_str().unwrap_or("?"),
        first["operator"].as_str().unwrap_or("?"),
    );
    for e in events {
        let t = clock(e);
        let line = match e["type"].as_str().unwrap_or("") {
            "run_started" => format!("run started ({} steps)", steps.len()),
            "step_started" => format!(
                "▶ {} (attempt {})",
                step_label(&steps, &e["step"]),
                e["attempt"]
            ),
            "call" => {
                let tag = if e["planned"] == true {
                    "would call"
                } else if e["mutating"] == true {
                    "call [write]"
                } else {
                    "call"
                };
                let tail = if e["error"].is_null() {
                    e["result"].to_string()
                } else {
                    format!("error: {}", error_text(&e["error"]))
                };
                let replayed = if e["replayed"] == true {
                    " (answered from the transcript)"
                } else {
                    ""
                };
                format!(
                    "  {tag} {}({}) → {} [{}]{replayed}",
                    e["binding"].as_str().unwrap_or("?"),
                    clip(&e["args"].to_string()),
                    clip(&tail),
                    ms(&e["duration_ms"])
                )
            }
            "run_resumed" => resumed_text(e),
            "signature" => format!(
                "signed ({}, key {})",
                e["alg"].as_str().unwrap_or("?"),
                e["key_id"].as_str().unwrap_or("?")
            ),
            "intent" => format!(
                "  sending {}({})",
                e["binding"].as_str().unwrap_or("?"),
                clip(&e["args"].to_string())
            ),
            "log" => format!(
                "  {}: {}",
                e["level"].as_str().unwrap_or("log"),
                e["message"].as_str().unwrap_or("")
            ),
            "decision" => format!(
                "  decision: {} by {} ({})",
                e["action"].as_str().unwrap_or("?"),
                e["by"].as_str().unwrap_or("?"),
                e["reason"].as_str().unwrap_or("")
            ),
            "retry" => format!(
                "  retry #{} in {} after: {}",
                e["attempt"],
                ms(&e["delay_ms"]),
                error_text(&e["error"])
            ),
            "on_failure_started" => "  ↺ on_failure started".to_string(),
            "on_failure_finished" => format!(
                "  ↺ on_failure {} [{}] {}",
                e["status"].as_str().unwrap_or("?"),
                ms(&e["duration_ms"]),
                error_text(&e["error"])
            ),
            "step_finished" => format!(
                "■ {} {} [{}{}] {}",
                step_label(&steps, &e["step"]),
                e["status"].as_str().unwrap_or("?"),
                ms(&e["duration_ms"]),
                waiting(&e["waiting_ms"]),
                error_text(&e["error"])
            ),
            "run_finished" => format!(
                "run {} [{}] {}",
                e["status"].as_str().unwrap_or("?"),
                ms(&e["duration_ms"]),
                e["reason"].as_str().unwrap_or("")
            ),
            other => format!("{other} {}", fields(e)),
        };
        let _ = writeln!(out, "{t}  {}", line.trim_end());
    }
    out
}

/// Escapes text for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// An incident timeline in Markdown for the post-incident review, after the seed's
/// communication templates (initial incident report, resolution notification).
pub fn render_markdown(events: &[Value], report: &VerifyReport, path: &Path) -> String {
    let first = &events[0];
    let rb = &first["runbook"];
    let steps = first["steps"].as_array().cloned().unwrap_or_default();
    let last = events.last().unwrap_or(first);
    let finished = events.iter().rev().find(|e| e["type"] == "run_finished");
    let status = report
        .finished
        .as_deref()
        .unwrap_or("unfinished (no run_finished at the end: the run crashed or is still going)");
    let incident = first["params"]["incident"]
        .as_str()
        .unwrap_or_else(|| first["run_id"].as_str().unwrap_or("?"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Incident timeline: {}\n",
        rb["title"].as_str().unwrap_or("?")
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    let rows = [
        ("Incident", incident.to_string()),
        (
            "Severity",
            rb["severity"].as_str().unwrap_or("?").to_string(),
        ),
        (
            "Runbook",
            format!(
                "`{}@{}` (sha256 `{}`)",
                rb["id"].as_str().unwrap_or("?"),
                rb["version"].as_str().unwrap_or("?"),
                rb["sha256"]
                    .as_str()
                    .unwrap_or("?")
                    .get(..12)
                    .unwrap_or("?")
            ),
        ),
        (
            "Run",
            format!("`{}`", first["run_id"].as_str().unwrap_or("?")),
        ),
        ("Mode", first["mode"].as_str().unwrap_or("?").to_string()),
        (
            "Environment",
            first["environment"].as_str().unwrap_or("?").to_string(),
        ),
        (
            "Operator",
            first["operator"].as_str().unwrap_or("?").to_string(),
        ),
        ("Started", first["ts"].as_str().unwrap_or("?").to_string()),
        ("Last event", last["ts"].as_str().unwrap_or("?").to_string()),
        ("Status", status.to_string()),
        ("Parameters", format!("`{}`", first["params"])),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {} |", cell(&v));
    }

    let _ = writeln!(out, "\n## Timeline (UTC)\n");
    let _ = writeln!(out, "| Time | Step | Event |\n|---|---|---|");
    for e in events {
        let what = match e["type"].as_str().unwrap_or("") {
            "step_started" => format!("started (attempt {})", e["attempt"]),
            "step_finished" => {
                let err = error_text(&e["error"]);
                format!(
                    "**{}** in {}{}{}",
                    e["status"].as_str().unwrap_or("?"),
                    ms(&e["duration_ms"]),
                    waiting(&e["waiting_ms"]),
                    if err.is_empty() {
                        String::new()
                    } else {
                        format!(": {err}")
                    }
                )
            }
            "call" if e["mutating"] == true => {
                let resources = resources_named(e);
                format!(
                    "{} `{}`{}{}{}",
                    if e["planned"] == true {
                        "would change"
                    } else {
                        "changed"
                    },
                    e["binding"].as_str().unwrap_or("?"),
                    if resources.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({})",
                            resources
                                .iter()
                                .map(|r| format!("`{r}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                    if e["replayed"] == true {
                        " (recorded before a crash, not sent again)"
                    } else {
                        ""
                    },
                    if e["error"].is_null() {
                        String::new()
                    } else {
                        format!(" — failed: {}", error_text(&e["error"]))
                    }
                )
            }
            "run_resumed" => format!("**{}**", resumed_text(e)),
            "decision" => format!(
                "decision: {} by {} ({})",
                e["action"].as_str().unwrap_or("?"),
                e["by"].as_str().unwrap_or("?"),
                e["reason"].as_str().unwrap_or("")
            ),
            "retry" => format!("retry after: {}", error_text(&e["error"])),
            "on_failure_finished" => {
                format!("rollback {}", e["status"].as_str().unwrap_or("?"))
            }
            "run_finished" => format!("run **{}**", e["status"].as_str().unwrap_or("?")),
            _ => continue,
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            clock(e),
            cell(&step_label(&steps, &e["step"])),
            cell(&what)
        );
    }

    let duration = finished
        .map(|e| ms(&e["duration_ms"]))
        .unwrap_or("-".into());
    let _ = writeln!(out, "\n## Notification\n\n```");
    if status == "ok" {
        let _ = writeln!(
            out,
            "✅ INCIDENT RESOLVED\nIncident: #{incident}\nDuration: {duration}\nRoot Cause: (to be completed in the post-incident review)\nResolution: {} ran to completion\nPost-mortem: [Link to document]",
            rb["id"].as_str().unwrap_or("?")
        );
    } else {
        let _ = writeln!(
            out,
            "🚨 INCIDENT ALERT 🚨\nSeverity: {}\nEnvironment: {}\nService: {}\nDescription: runbook {} ended {}\nStarted: {}\nStatus: Investigating\nIncident Commander: {}",
            rb["severity"].as_str().unwrap_or("?"),
            first["environment"].as_str().unwrap_or("?"),
            rb["service"].as_str().unwrap_or("?"),
            rb["id"].as_str().unwrap_or("?"),
            status,
            first["ts"].as_str().unwrap_or("?"),
            first["operator"].as_str().unwrap_or("?"),
        );
    }
    let _ = writeln!(out, "```");
    let _ = writeln!(
        out,
        "\n## Integrity\n\n`{}`: {} events, hash chain verified, head `{}`.",
        path.display(),
        report.events,
        report.head
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line as writers before the canonical form wrote it: its own key order, hash last.
    fn legacy_line(seq: u64, prev: &str, body: Value) -> String {
        let mut v = json!({"seq": seq, "prev": prev});
        if let (Some(m), Some(b)) = (v.as_object_mut(), body.as_object()) {
            for (k, x) in b {
                m.insert(k.clone(), x.clone());
            }
        }
        let mut canonical = String::new();
        write_canonical(&v, &mut canonical, true);
        let hash = hex::encode(Sha256::digest(canonical.as_bytes()));
        v["hash"] = json!(hash);
        serde_json::to_string(&v).unwrap()
    }

    fn hash_of(line: &str) -> String {
        serde_json::from_str::<Value>(line).unwrap()["hash"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_transcript_begun_by_an_earlier_version_verifies_but_only_in_its_own_compact_form() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.jsonl");
        let l0 = legacy_line(0, GENESIS, json!({"type": "run_started", "run_id": "r1"}));
        let l1 = legacy_line(
            1,
            &hash_of(&l0),
            json!({"type": "run_finished", "status": "ok"}),
        );
        assert!(
            l0.starts_with(r#"{"seq":0,"prev""#),
            "the writer's order: {l0}"
        );
        std::fs::write(&path, format!("{l0}\n{l1}\n")).unwrap();
        let (_, report) = read_verified(&path).unwrap();
        assert_eq!(report.legacy_lines, 2);
        assert_eq!(report.finished.as_deref(), Some("ok"));

        // The spellings that make grep and jq read something else fail in the old form too.
        for form in [
            l1.replacen(r#""status":"ok""#, r#""status":"failed","status":"ok""#, 1),
            l1.replacen(r#"{"seq":"#, r#"{ "seq":"#, 1),
            l1.replacen(r#""run_finished""#, r#""\u0072un_finished""#, 1),
        ] {
            std::fs::write(&path, format!("{l0}\n{form}\n")).unwrap();
            assert!(read_verified(&path).is_err(), "{form}");
        }
    }

    #[test]
    fn an_old_form_line_after_a_canonical_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut w = TranscriptWriter::create(&path, Rc::new(Redactor::new())).unwrap();
        w.append(
            &json!({"type": "run_started", "run_id": "r1"}),
            Durability::Synced,
        )
        .unwrap();
        drop(w);
        let text = std::fs::read_to_string(&path).unwrap();
        let head = hash_of(text.lines().last().unwrap());
        let old = legacy_line(1, &head, json!({"type": "run_finished", "status": "ok"}));
        std::fs::write(&path, format!("{text}{old}\n")).unwrap();
        let err = read_verified(&path).unwrap_err().to_string();
        assert!(err.contains("canonical form"), "{err}");
    }

    #[test]
    fn appending_privately_refuses_a_planted_link_and_creates_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "precious\n").unwrap();
        let link = dir.path().join("t.notes.md");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(
            open_private_append(&link).is_err(),
            "a link is never followed"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

        let fresh = dir.path().join("u.notes.md");
        open_private_append(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn canonical_form_sorts_keys_at_every_depth() {
        let v = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": "x"}, "hash": "h"});
        let mut s = String::new();
        write_canonical(&v, &mut s, true);
        assert_eq!(s, r#"{"a":{"c":"x","d":[1,{"y":1,"z":0}]},"b":1}"#);
    }

    #[test]
    fn an_event_with_its_own_seq_field_still_writes_a_verifiable_chain() {
        // Seen with the `transcript` fuzz target's writer mode (docs/fuzzing.md): the event's
        // `seq` replaced the chain's, and the reader refused line 1.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut w = TranscriptWriter::create(&path, Rc::new(Redactor::new())).unwrap();
        w.append(
            &json!({"type": "run_started", "seq": 5, "prev": "x", "hash": "y"}),
            Durability::Written,
        )
        .unwrap();
        w.append(&json!({"type": "log", "seq": "one"}), Durability::Written)
            .unwrap();
        let (events, report) = read_verified(&path).unwrap();
        assert_eq!(report.events, 2);
        assert_eq!(events[1]["seq"], 1);
        assert_eq!(events[0]["seq"], 0);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(r#""seq":5"#), "{text}");
    }

    #[test]
    fn written_transcript_verifies_and_detects_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut w = TranscriptWriter::create(&path, Rc::new(Redactor::new())).unwrap();
        w.append(
            &json!({"type": "run_started", "run_id": "r1"}),
            Durability::Synced,
        )
        .unwrap();
        w.append(
            &json!({"type": "log", "message": "hi"}),
            Durability::Written,
        )
        .unwrap();
        w.append(
            &json!({"type": "run_finished", "status": "ok"}),
            Durability::Synced,
        )
        .unwrap();
        let (events, report) = read_verified(&path).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(report.finished.as_deref(), Some("ok"));

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"hi\"", "\"ho\"")).unwrap();
        match read_verified(&path) {
            Err(Error::TranscriptBroken { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    #[test]
    fn an_existing_transcript_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, "evidence").unwrap();
        assert!(TranscriptWriter::create(&path, Rc::new(Redactor::new())).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "evidence");
    }
}
