//! The hook journal: every request turned away, every alert and what was decided about it, every
//! run's end and every escalation, as one hash-chained JSONL file (the transcript format, so
//! `runbook transcript verify` checks it).
//!
//! One thread owns the file; callers hand it events and wait for the acknowledgement, so an answer
//! ("accepted", "503 queue full") is only given once its record is on disk. Alerts are synced
//! (fsync) because they are the evidence that nothing was silently dropped.
//!
//! A write that fails (a full disk) is rolled back to the last whole line, so the chain stays
//! verifiable; while writes fail, alerts are answered 503 and `/healthz` is unhealthy.
//!
//! With the aws state backend every batch is also stored in the table (`JOURNAL#<journal>`, the
//! very lines of the file, see `state::records`) before it is acknowledged: a batch the table
//! refuses is rolled back in the file too and fails like a full disk, so the team's copy never
//! misses a line the replica answered for.
//!
//! Rotation (`[retention]` in hooks.toml): once the file reaches `journal_max_size`, or a new
//! UTC day begins, the next batch goes to a new file `journal-<ulid>.jsonl` whose first line (the
//! same `journal_started`) names the file it `continues`; the old file is whole and closed, so
//! the retention pass can ship and prune it like a finished run's transcript.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::base::error::{Error, Result};
use crate::base::redact::Redactor;
use crate::data::transcript::{Durability, JournalEvent, TranscriptWriter};

type Ack = oneshot::Sender<std::result::Result<(), String>>;

pub(crate) struct Journal {
    tx: mpsc::Sender<(JournalEvent, Ack)>,
    /// The file written now (rotation changes it).
    path: Arc<std::sync::Mutex<PathBuf>>,
    /// False from a failed write until the next one succeeds (`/healthz` reports it, and
    /// alerts are answered 503 meanwhile).
    writable: Arc<AtomicBool>,
}

/// The file and the chain appended to, and the file's length after the last line that was
/// written whole (what a failed write is rolled back to).
struct Appender {
    path: PathBuf,
    redactor: Rc<Redactor>,
    writer: Option<TranscriptWriter>,
    good_len: u64,
    team: Option<TeamCopy>,
    rotation: Rotation,
    /// The UTC day the file was started on.
    day: chrono::NaiveDate,
    /// Where the path of the file written now is published (`Journal::path`).
    shared_path: Arc<std::sync::Mutex<PathBuf>>,
}

/// When the journal moves on to a new file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rotation {
    /// At this size (bytes); 0 never.
    pub max_bytes: u64,
    /// At the first write of a new UTC day.
    pub daily: bool,
}

impl Appender {
    fn due(&self) -> bool {
        (self.rotation.max_bytes > 0 && self.good_len >= self.rotation.max_bytes)
            || (self.rotation.daily && chrono::Utc::now().date_naive() != self.day)
    }

    /// Starts a new file continuing this one (after a batch was written whole). On failure the
    /// current file goes on (logged; tried again after the next batch).
    fn rotate(&mut self, header: &JournalEvent) {
        let Some(dir) = self.path.parent() else {
            return;
        };
        let next = dir.join(format!(
            "journal-{}.jsonl",
            crate::base::identity::new_run_id()
        ));
        let mut header = header.clone();
        if let JournalEvent::JournalStarted { continues, .. } = &mut header {
            *continues = self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
        }
        let created = TranscriptWriter::create(&next, self.redactor.clone())
            .and_then(|mut w| {
                w.append(&header, Durability::Synced)?;
                Ok(w)
            })
            .map_err(|e| e.to_string());
        let writer = match created {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("hook journal: cannot rotate to {}: {e}", next.display());
                let _ = std::fs::remove_file(&next);
                return;
            }
        };
        let len = std::fs::metadata(&next).map(|m| m.len()).unwrap_or(0);
        let team = match &self.team {
            Some(old) => {
                let mut team = TeamCopy {
                    store: old.store.clone(),
                    journal: next
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    next: 0,
                };
                if let Err(e) = team.store(&next, 0, len) {
                    tracing::error!("hook journal: cannot rotate (the state table): {e}");
                    let _ = std::fs::remove_file(&next);
                    return;
                }
                Some(team)
            }
            None => None,
        };
        tracing::info!(
            from = %self.path.display(),
            to = %next.display(),
            "hook journal rotated"
        );
        // The old writer is dropped here: its file is closed and its lock released.
        self.writer = Some(writer);
        self.team = team;
        self.good_len = len;
        self.day = chrono::Utc::now().date_naive();
        self.path = next.clone();
        *self.shared_path.lock().unwrap_or_else(|p| p.into_inner()) = next;
    }
}

/// The journal's copy in the state table (aws backend).
struct TeamCopy {
    store: Arc<crate::services::state::aws::AwsStore>,
    /// The journal's name in the table: its file's stem (`journal-<ulid>`).
    journal: String,
    /// The number of the next line.
    next: u64,
}

impl TeamCopy {
    /// Stores the lines of `path` from byte `from` to `to` (what the last batch wrote).
    fn store(&mut self, path: &Path, from: u64, to: u64) -> std::result::Result<(), String> {
        let lines = written_lines(path, from, to)?;
        self.store
            .put_journal_lines(&self.journal, self.next, &lines)
            .map_err(|e| e.to_string())?;
        self.next = self
            .next
            .saturating_add(u64::try_from(lines.len()).unwrap_or(u64::MAX));
        Ok(())
    }
}

/// The whole lines of `path` between byte offsets `from` and `to`.
fn written_lines(path: &Path, from: u64, to: u64) -> std::result::Result<Vec<String>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(fail)?;
    file.seek(SeekFrom::Start(from)).map_err(fail)?;
    let mut text = String::new();
    file.take(to.saturating_sub(from))
        .read_to_string(&mut text)
        .map_err(fail)?;
    Ok(text.lines().map(str::to_string).collect())
}

impl Appender {
    /// Appends `batch` (synced once, at its end). All or nothing: on any failure the file is cut
    /// back to the last line that was whole and synced, so no half line (or line whose chain
    /// the writer never advanced to) is left for later lines to hang from.
    fn append_all(&mut self, batch: &[JournalEvent]) -> std::result::Result<(), String> {
        let result = self.try_append(batch);
        if result.is_err() {
            self.roll_back();
        }
        result
    }

    fn try_append(&mut self, batch: &[JournalEvent]) -> std::result::Result<(), String> {
        let writer = match &mut self.writer {
            Some(w) => w,
            None => return Err(format!("{}: not writable", self.path.display())),
        };
        let last = batch.len().saturating_sub(1);
        for (i, event) in batch.iter().enumerate() {
            let durability = if i == last {
                Durability::Synced
            } else {
                Durability::Written
            };
            writer
                .append(event, durability)
                .map_err(|e| e.to_string())?;
        }
        let len = std::fs::metadata(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?
            .len();
        if let Some(team) = &mut self.team {
            team.store(&self.path, self.good_len, len)?;
        }
        self.good_len = len;
        Ok(())
    }

    /// Cuts the file back to `good_len` and reopens the chain from its last line. Until both
    /// work, nothing is appended (the next batch tries again).
    fn roll_back(&mut self) {
        self.writer = None;
        let cut = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|f| {
                f.set_len(self.good_len)?;
                f.sync_all()
            });
        if let Err(e) = cut {
            tracing::error!(
                "hook journal: cannot roll {} back: {e}",
                self.path.display()
            );
            return;
        }
        match TranscriptWriter::open_append(&self.path, self.redactor.clone()) {
            Ok((w, _)) => self.writer = Some(w),
            Err(e) => tracing::error!("hook journal: cannot reopen: {e}"),
        }
    }
}

impl Journal {
    /// Creates `path` (never overwriting one) with a writer thread. `secrets` are redacted from
    /// everything written. With `team`, every line is also stored in the state table.
    pub(crate) fn create(
        path: &Path,
        secrets: Vec<String>,
        header: JournalEvent,
        team: Option<Arc<crate::services::state::aws::AwsStore>>,
        rotation: Rotation,
    ) -> Result<Journal> {
        let shared_path = Arc::new(std::sync::Mutex::new(path.to_path_buf()));
        let published = shared_path.clone();
        let mut team = team.map(|store| TeamCopy {
            store,
            journal: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            next: 0,
        });
        let (tx, rx) = mpsc::channel::<(JournalEvent, Ack)>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let owned = path.to_path_buf();
        let writable = Arc::new(AtomicBool::new(true));
        let flag = writable.clone();
        std::thread::Builder::new()
            .name("hook-journal".into())
            .spawn(move || {
                let redactor = Rc::new(Redactor::new());
                for s in &secrets {
                    redactor.add_secret(s);
                }
                let created =
                    TranscriptWriter::create(&owned, redactor.clone()).and_then(|mut w| {
                        w.append(&header, Durability::Synced)?;
                        Ok(w)
                    });
                let writer = match created {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let good_len = std::fs::metadata(&owned).map(|m| m.len()).unwrap_or(0);
                // A replica whose journal the team cannot see does not start.
                if let Some(team) = &mut team
                    && let Err(e) = team.store(&owned, 0, good_len)
                {
                    let _ = ready_tx.send(Err(Error::Environment(format!(
                        "the hook journal cannot be stored in the state table: {e}"
                    ))));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                let mut appender = Appender {
                    path: owned,
                    redactor,
                    writer: Some(writer),
                    good_len,
                    team,
                    rotation,
                    day: chrono::Utc::now().date_naive(),
                    shared_path: published,
                };
                // Group commit: everything that queued up while the last fsync ran is written
                // and then synced once, so a burst of alerts costs one fsync, not one each.
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < 512 {
                        match rx.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    let (events, acks): (Vec<JournalEvent>, Vec<Ack>) = batch.into_iter().unzip();
                    // An event is durable only once the batch's sync succeeded.
                    let result = appender.append_all(&events);
                    flag.store(result.is_ok(), Ordering::SeqCst);
                    if let Err(e) = &result {
                        tracing::error!("hook journal: {e}");
                    }
                    for ack in acks {
                        let _ = ack.send(result.clone());
                    }
                    if result.is_ok() && appender.due() {
                        appender.rotate(&header);
                    }
                }
            })
            .map_err(|e| {
                Error::Internal(format!(
                    "cannot start the journal thread for {}: {e}",
                    path.display()
                ))
            })?;
        ready_rx
            .recv()
            .map_err(|_| Error::Internal("the journal thread stopped".into()))??;
        Ok(Journal {
            tx,
            path: shared_path,
            writable,
        })
    }

    /// The file written now.
    pub(crate) fn path(&self) -> PathBuf {
        self.path.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// False while the last write failed (until one succeeds again).
    pub(crate) fn writable(&self) -> bool {
        self.writable.load(Ordering::SeqCst)
    }

    fn send(&self, event: JournalEvent) -> oneshot::Receiver<std::result::Result<(), String>> {
        let (ack, done) = oneshot::channel();
        if let Err(mpsc::SendError((_, ack))) = self.tx.send((event, ack)) {
            let _ = ack.send(Err("the journal is closed".into()));
        }
        done
    }

    /// Records `event` and waits until it is on disk (from async code).
    pub(crate) async fn record(&self, event: JournalEvent) -> std::result::Result<(), String> {
        self.send(event)
            .await
            .unwrap_or_else(|_| Err("the journal is closed".into()))
    }

    /// Records `event` and waits until it is on disk (from a plain thread).
    pub(crate) fn record_blocking(&self, event: JournalEvent) -> std::result::Result<(), String> {
        self.send(event)
            .blocking_recv()
            .unwrap_or_else(|_| Err("the journal is closed".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> JournalEvent {
        JournalEvent::JournalStarted {
            config: "hooks.toml".into(),
            routes: Vec::new(),
            pid: 1,
            tool: "runbook test".into(),
            continues: None,
        }
    }

    fn journals(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    #[test]
    fn the_journal_rotates_once_it_reaches_its_size_and_the_new_file_names_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("journal-00000000000000000000000000.jsonl");
        let max = 1500;
        let rotation = Rotation {
            max_bytes: max,
            daily: false,
        };
        let journal = Journal::create(&first, Vec::new(), header(), None, rotation).unwrap();
        let mut rotated_at = None;
        for i in 0..40 {
            journal
                .record_blocking(JournalEvent::Listening {
                    addr: format!("127.0.0.1:{i}"),
                })
                .unwrap();
            // Each record is its own batch; rotation follows the batch that reached the size.
            let len = std::fs::metadata(&first).unwrap().len();
            if len >= max {
                rotated_at = Some(len);
                break;
            }
        }
        let len = rotated_at.expect("the journal never reached its size");
        // One more record is written after the rotation: into the new file.
        journal
            .record_blocking(JournalEvent::Listening {
                addr: "after".into(),
            })
            .unwrap();
        let files = journals(dir.path());
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(
            std::fs::metadata(&first).unwrap().len(),
            len,
            "the old file grew"
        );
        let (old, _) = crate::data::transcript::read_verified(&first).unwrap();
        // It was cut at the first line that reached the size, not later.
        let last_line = serde_json::to_vec(old.last().unwrap()).unwrap().len() as u64;
        assert!(len.saturating_sub(last_line) < max, "rotated late: {len}");
        let (new, _) = crate::data::transcript::read_verified(&files[1]).unwrap();
        assert_eq!(new[0]["type"], "journal_started");
        assert_eq!(
            new[0]["continues"],
            "journal-00000000000000000000000000.jsonl"
        );
        assert_eq!(new[1]["addr"], "after");
        assert_eq!(journal.path(), files[1]);
    }
}
