//! Uploading a run's transcript as the run goes (the `aws` backend; the layout is `archive`'s).
//!
//! An [`Archiver`] runs beside the run on a thread of its own: at every step boundary it is
//! nudged ([`Nudge::boundary`]) and uploads the complete lines written since the last part, so a
//! step never waits for S3. When the run ends, [`Archiver::finish`] uploads the rest and the whole
//! transcript and records the head in the table, waiting a bounded time.
//!
//! Nothing is lost silently: before the first upload a marker `<spool>/<run id>.json` is written
//! (`.runbook/uploads/` beside runbook.toml), and it is removed only when the whole transcript and
//! its head are archived. A failed upload is retried at the next boundary and at the end, logged,
//! and reported (the CLI prints it, `serve` escalates it); a marker left behind is finished by
//! `runbook transcript upload`, or by `serve`, which retries pending uploads every minute.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::archive::{RunEntry, short};
use super::aws::AwsStore;
use crate::base::error::{Error, Result};
use crate::data::transcript;

/// How archiving a run's transcript ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Archived {
    /// Every line is in the bucket and the head in the table.
    Done {
        /// `s3://bucket/key` of the whole transcript (a run that never finished: its last part).
        url: String,
        head: String,
        events: u64,
    },
    /// Not everything: why, and the marker a later `runbook transcript upload` finishes.
    Pending { reason: String, marker: PathBuf },
}

impl Archived {
    /// One line for a person: where the transcript is archived, or loudly that it is not.
    pub fn describe(&self) -> String {
        match self {
            Archived::Done { url, head, events } => {
                format!(
                    "transcript archived: {url} ({events} lines, head {})",
                    short(head)
                )
            }
            Archived::Pending { reason, marker } if marker.as_os_str().is_empty() => format!(
                "warning: the transcript is NOT archived: {reason}; no upload is pending either (fix the upload folder, then copy the transcript to the bucket)"
            ),
            Archived::Pending { reason, marker } => format!(
                "warning: the transcript is NOT archived yet: {reason}; the upload stays pending ({}) and `runbook transcript upload` finishes it",
                marker.display()
            ),
        }
    }
}

/// Runs whose archiver is working in this process (a pending marker of one is not retried).
static ACTIVE: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn active(run_id: &str, on: bool) {
    let mut set = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
    let set = set.get_or_insert_with(HashSet::new);
    if on {
        set.insert(run_id.to_string());
    } else {
        set.remove(run_id);
    }
}

/// Uploads working in this process now (each removed when its run's archiver ends).
pub(crate) fn active_count() -> usize {
    ACTIVE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map_or(0, HashSet::len)
}

fn is_active(run_id: &str) -> bool {
    ACTIVE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|s| s.contains(run_id))
}

/// The marker of an upload not finished yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Marker {
    entry: RunEntry,
    /// The transcript (absolute).
    transcript: PathBuf,
    host: String,
    pid: u32,
    /// The last upload error, for `transcript upload`'s report.
    error: Option<String>,
}

enum Msg {
    Boundary,
    /// Upload now and say whether everything written is archived.
    Flush(mpsc::SyncSender<std::result::Result<(), String>>),
    Finish,
}

/// Tells the archiver a step boundary passed (cheap; never blocks the run).
#[derive(Clone)]
pub struct Nudge(mpsc::Sender<Msg>);

impl Nudge {
    pub fn boundary(&self) {
        let _ = self.0.send(Msg::Boundary);
    }

    /// Uploads every complete line written so far and waits (at most `wait`) until it is
    /// archived: before a write is sent, its intent must be where another replica taking the
    /// run over will read it.
    pub fn flush(&self, wait: Duration) -> std::result::Result<(), String> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.0
            .send(Msg::Flush(tx))
            .map_err(|_| "the transcript upload has stopped".to_string())?;
        rx.recv_timeout(wait).unwrap_or_else(|_| {
            Err(format!(
                "the transcript upload did not answer within {}",
                humantime::format_duration(wait)
            ))
        })
    }
}

/// Uploads one run's transcript as it is written (see the module's documentation).
pub struct Archiver {
    tx: mpsc::Sender<Msg>,
    done: mpsc::Receiver<Option<Archived>>,
    marker: PathBuf,
}

impl Archiver {
    /// Starts archiving the run `entry` describes, whose transcript will be `path`: the upload
    /// thread waits for the run's first nudge (its transcript exists and is the run's own from
    /// then on), writes the pending marker and uploads. A resumed run continues after the lines
    /// already archived.
    pub fn start(store: Arc<AwsStore>, entry: RunEntry, path: &Path) -> Result<Archiver> {
        super::archive::checked_run_id(&entry.run_id)?;
        let transcript = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let marker_path = store.spool.join(format!("{}.json", entry.run_id));
        let marker = Marker {
            entry: entry.clone(),
            transcript,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            error: None,
        };
        let (tx, rx) = mpsc::channel();
        let (done_tx, done) = mpsc::sync_channel(1);
        let mut up = Uploader::new(store, marker, marker_path.clone(), true);
        active(&entry.run_id, true);
        let run_id = entry.run_id.clone();
        let spawned = std::thread::Builder::new()
            .name("transcript-upload".into())
            .spawn(move || {
                let mut began = false;
                // Until the run ends (Finish) or the archiver is dropped without one.
                loop {
                    let mut waiting = Vec::new();
                    match rx.recv() {
                        Ok(Msg::Boundary) => {}
                        Ok(Msg::Flush(ack)) => waiting.push(ack),
                        Ok(Msg::Finish) | Err(_) => break,
                    }
                    if !began {
                        began = true;
                        // Before the first upload: from here on, nothing is lost silently.
                        if let Err(e) = write_marker(&up.marker_path, &up.marker) {
                            tracing::error!("run {run_id}: {e}");
                        }
                    }
                    // Boundaries queued while a part was uploading: one part covers them.
                    let mut finish = false;
                    while let Ok(m) = rx.try_recv() {
                        match m {
                            Msg::Boundary => {}
                            Msg::Flush(ack) => waiting.push(ack),
                            Msg::Finish => finish = true,
                        }
                    }
                    up.upload_new();
                    let archived = match (&up.fatal, &up.error) {
                        (Some(e), _) | (None, Some(e)) => Err(e.clone()),
                        (None, None) => Ok(()),
                    };
                    for ack in waiting {
                        let _ = ack.send(archived.clone());
                    }
                    if finish {
                        break;
                    }
                }
                // A run that never began (refused, or its transcript could not be created)
                // has nothing of its own to archive: the file at its path may be another's.
                let outcome = began.then(|| up.finish(FINISH_ATTEMPTS));
                active(&run_id, false);
                let _ = done_tx.send(outcome);
            });
        if let Err(e) = spawned {
            active(&entry.run_id, false);
            return Err(Error::Internal(format!(
                "cannot start the upload thread: {e}"
            )));
        }
        Ok(Archiver {
            tx,
            done,
            marker: marker_path,
        })
    }

    pub fn nudge(&self) -> Nudge {
        Nudge(self.tx.clone())
    }

    /// Uploads what is left and the whole transcript, records the head, and says how it went
    /// (None: the run never began, nothing is archived); waits at most `wait` (the upload goes
    /// on meanwhile, and its marker stays until it ends).
    pub fn finish(self, wait: Duration) -> Option<Archived> {
        let _ = self.tx.send(Msg::Finish);
        match self.done.recv_timeout(wait) {
            Ok(outcome) => outcome,
            Err(_) => Some(Archived::Pending {
                reason: format!(
                    "the upload did not finish within {}",
                    humantime::format_duration(wait)
                ),
                marker: self.marker,
            }),
        }
    }
}

/// How often the end of a run tries to archive what is left before leaving it pending.
const FINISH_ATTEMPTS: u32 = 3;

struct Uploader {
    store: Arc<AwsStore>,
    marker: Marker,
    marker_path: PathBuf,
    indexed: bool,
    /// The run is going on in this process (its entry says `running`), not finished later.
    live: bool,
    /// Lines archived (contiguous from line 0) and the byte offset of the next one in the file;
    /// None until the archive was asked (a resumed run continues after what is there).
    at: Option<(u64, u64)>,
    head: Option<String>,
    last_key: Option<String>,
    /// An error no retry can fix (the local file disagrees with the archive).
    fatal: Option<String>,
    error: Option<String>,
}

impl Uploader {
    fn new(store: Arc<AwsStore>, marker: Marker, marker_path: PathBuf, live: bool) -> Uploader {
        Uploader {
            store,
            marker,
            marker_path,
            indexed: false,
            live,
            at: None,
            head: None,
            last_key: None,
            fatal: None,
            error: None,
        }
    }

    fn run_id(&self) -> &str {
        &self.marker.entry.run_id
    }

    /// Uploads the complete lines written since the last part (one part); remembers a failure
    /// for the next attempt instead of returning it.
    fn upload_new(&mut self) {
        if self.fatal.is_some() {
            return;
        }
        match self.try_upload_new() {
            Ok(()) => self.error = None,
            Err(e) => {
                tracing::warn!(
                    "run {}: transcript upload failed (retried later): {e}",
                    self.run_id()
                );
                self.error = Some(e.to_string());
            }
        }
    }

    fn try_upload_new(&mut self) -> Result<()> {
        if !self.indexed {
            self.store.index_started(&self.marker.entry, self.live)?;
            self.indexed = true;
        }
        let path = self.marker.transcript.clone();
        let (lines, offset) = match self.at {
            Some(at) => at,
            None => {
                let archived = self.store.archived_lines(self.run_id())?;
                let offset = offset_of_line(&path, archived)?;
                let Some(offset) = offset else {
                    let why = format!(
                        "the archive holds {archived} line(s) of run {}, more than {} has: it is not the transcript archived (fetch it with the state layer's fetch_transcript)",
                        self.run_id(),
                        path.display()
                    );
                    self.fatal = Some(why.clone());
                    return Err(Error::Environment(why));
                };
                self.at = Some((archived, offset));
                (archived, offset)
            }
        };
        let chunk = complete_lines_from(&path, offset)?;
        if chunk.is_empty() {
            return Ok(());
        }
        let count = chunk.iter().filter(|b| **b == b'\n').count() as u64;
        let last = lines.saturating_add(count).saturating_sub(1);
        let head = last_hash(&chunk)?;
        let key = self.store.part_key(self.run_id(), lines, last)?;
        let size = chunk.len() as u64;
        self.store.put_if_absent(&key, chunk)?;
        let lines = lines.saturating_add(count);
        self.at = Some((lines, offset.saturating_add(size)));
        self.store.index_head(self.run_id(), &head, lines, None)?;
        self.head = Some(head);
        self.last_key = Some(key);
        Ok(())
    }

    /// The rest, then (the run finished) the whole transcript and its head with the status.
    fn finish(&mut self, attempts: u32) -> Archived {
        let mut backoff = Duration::from_millis(500);
        for attempt in 1..=attempts.max(1) {
            match self.try_finish() {
                Ok(done) => {
                    if let Err(e) = std::fs::remove_file(&self.marker_path) {
                        tracing::error!(
                            "run {}: archived, but its upload marker {} stays: {e}",
                            self.run_id(),
                            self.marker_path.display()
                        );
                    }
                    return done;
                }
                Err(e) => {
                    self.error = Some(e.to_string());
                    if self.fatal.is_some() || attempt == attempts {
                        break;
                    }
                    std::thread::sleep(backoff);
                    backoff = backoff.saturating_mul(2);
                }
            }
        }
        let reason = self
            .fatal
            .clone()
            .or_else(|| self.error.clone())
            .unwrap_or_else(|| "unknown".into());
        tracing::error!(
            "run {}: the transcript is not archived: {reason}",
            self.run_id()
        );
        self.marker.error = Some(reason.clone());
        match write_marker(&self.marker_path, &self.marker) {
            Ok(()) => Archived::Pending {
                reason,
                marker: self.marker_path.clone(),
            },
            Err(e) => {
                tracing::error!("{e}");
                Archived::Pending {
                    reason: format!("{reason}; and {e}"),
                    marker: PathBuf::new(),
                }
            }
        }
    }

    fn try_finish(&mut self) -> Result<Archived> {
        if let Some(fatal) = &self.fatal {
            return Err(Error::Environment(fatal.clone()));
        }
        self.try_upload_new()?;
        let path = self.marker.transcript.clone();
        let bytes =
            std::fs::read(&path).map_err(|e| Error::io("cannot read transcript", &path, e))?;
        let (events, report) = transcript::read_verified_from(std::io::Cursor::new(&bytes), &path)?;
        let lines = report.events as u64;
        let bucket = self.store.bucket.clone();
        let Some(status) = report.finished.clone() else {
            // The run ended without its end recorded (its transcript failed, or the process is
            // gone): every line is archived; `resume` continues it.
            self.store.index_interrupted(self.run_id())?;
            return Ok(Archived::Done {
                url: format!(
                    "s3://{bucket}/{}",
                    self.last_key
                        .clone()
                        .unwrap_or(self.store.run_folder(self.run_id())?)
                ),
                head: report.head,
                events: lines,
            });
        };
        let finished_at = events
            .iter()
            .rev()
            .find(|e| e["type"] == "run_finished")
            .and_then(|e| e["ts"].as_str())
            .unwrap_or_default()
            .to_string();
        let key = self.store.whole_key(self.run_id(), lines)?;
        self.store.put_if_absent(&key, bytes)?;
        self.store.index_head(
            self.run_id(),
            &report.head,
            lines,
            Some((&status, &finished_at, &key)),
        )?;
        Ok(Archived::Done {
            url: format!("s3://{bucket}/{key}"),
            head: report.head,
            events: lines,
        })
    }
}

/// Finishes the uploads left pending in the spool (by runs whose process ended, or whose upload
/// failed): one line per run, and whether all of them are archived now. Uploads still running
/// (in this process or another live one on this host) are left alone.
pub fn retry_pending(store: &Arc<AwsStore>) -> (Vec<String>, bool) {
    let mut report = Vec::new();
    let mut all = true;
    let Ok(dir) = std::fs::read_dir(&store.spool) else {
        return (report, true);
    };
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let mut markers: Vec<PathBuf> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    markers.sort();
    for path in markers {
        let marker: Marker = match std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(m) => m,
            None => {
                report.push(format!(
                    "{}: not an upload marker (left alone)",
                    path.display()
                ));
                all = false;
                continue;
            }
        };
        let run_id = marker.entry.run_id.clone();
        let alive = marker.host == host
            && marker.pid != std::process::id()
            && Path::new("/proc").join(marker.pid.to_string()).exists();
        if is_active(&run_id) || alive {
            report.push(format!(
                "run {run_id}: still running (pid {}), left to its own upload",
                marker.pid
            ));
            continue;
        }
        active(&run_id, true);
        let mut up = Uploader::new(store.clone(), marker, path, false);
        let outcome = up.finish(1);
        active(&run_id, false);
        if matches!(outcome, Archived::Pending { .. }) {
            all = false;
        }
        report.push(format!("run {run_id}: {}", outcome.describe()));
    }
    (report, all)
}

fn write_marker(path: &Path, marker: &Marker) -> Result<()> {
    if let Some(dir) = path.parent() {
        transcript::create_private_dir(dir)
            .map_err(|e| Error::io("cannot create the upload folder", dir, e))?;
    }
    let text = serde_json::to_vec_pretty(marker)
        .map_err(|e| Error::Internal(format!("cannot encode an upload marker: {e}")))?;
    // Written whole then renamed: a crash never leaves half a marker.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io("cannot write the upload marker", path, e))
}

/// The byte offset where line `line` (0-based) starts in the file, None if it has fewer lines.
fn offset_of_line(path: &Path, line: u64) -> Result<Option<u64>> {
    if line == 0 {
        return Ok(Some(0));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read transcript", path, e))?;
    let mut seen = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            seen = seen.saturating_add(1);
            if seen == line {
                return Ok(Some((i as u64).saturating_add(1)));
            }
        }
    }
    Ok(None)
}

/// The complete lines of the file from `offset` (up to its last newline: a line being written
/// waits for the next part).
fn complete_lines_from(path: &Path, offset: u64) -> Result<Vec<u8>> {
    let mut file =
        std::fs::File::open(path).map_err(|e| Error::io("cannot read transcript", path, e))?;
    let mut out = Vec::new();
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_to_end(&mut out))
        .map_err(|e| Error::io("cannot read transcript", path, e))?;
    let end = out.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    out.truncate(end);
    Ok(out)
}

/// The `hash` of the last line of `chunk` (complete lines).
fn last_hash(chunk: &[u8]) -> Result<String> {
    let last = chunk
        .strip_suffix(b"\n")
        .unwrap_or(chunk)
        .rsplit(|b| *b == b'\n')
        .next()
        .unwrap_or_default();
    serde_json::from_slice::<Value>(last)
        .ok()
        .and_then(|v| v["hash"].as_str().map(str::to_string))
        .ok_or_else(|| Error::Environment("the transcript's last line has no hash".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_lines_are_uploaded_and_offsets_count_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, "{\"hash\":\"a\"}\n{\"hash\":\"b\"}\n{\"ha").unwrap();
        assert_eq!(offset_of_line(&path, 0).unwrap(), Some(0));
        assert_eq!(offset_of_line(&path, 1).unwrap(), Some(13));
        assert_eq!(offset_of_line(&path, 2).unwrap(), Some(26));
        assert_eq!(offset_of_line(&path, 3).unwrap(), None);
        let chunk = complete_lines_from(&path, 13).unwrap();
        assert_eq!(chunk, b"{\"hash\":\"b\"}\n");
        assert_eq!(last_hash(&chunk).unwrap(), "b");
        assert!(complete_lines_from(&path, 26).unwrap().is_empty());
    }
}
