//! The hook journal: every request turned away, every alert and what was decided about it, every
//! run's end and every escalation, as one hash-chained JSONL file (the transcript format, so
//! `runbook transcript verify` checks it).
//!
//! One thread owns the file; callers hand it events and wait for the acknowledgement, so an answer
//! ("accepted", "503 queue full") is only given once its record is on disk. Alerts are synced
//! (fsync) because they are the evidence that nothing was silently dropped.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc;

use serde_json::Value;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::redact::Redactor;
use crate::transcript::{Durability, TranscriptWriter};

type Ack = oneshot::Sender<std::result::Result<(), String>>;

pub struct Journal {
    tx: mpsc::Sender<(Value, Ack)>,
    path: PathBuf,
}

impl Journal {
    /// Creates `path` (never overwriting one) with a writer thread. `secrets` are redacted from
    /// everything written.
    pub fn create(path: &Path, secrets: Vec<String>, header: Value) -> Result<Journal> {
        let (tx, rx) = mpsc::channel::<(Value, Ack)>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let owned = path.to_path_buf();
        std::thread::Builder::new()
            .name("hook-journal".into())
            .spawn(move || {
                let redactor = Rc::new(Redactor::new());
                for s in &secrets {
                    redactor.add_secret(s);
                }
                let mut writer = match TranscriptWriter::create(&owned, redactor) {
                    Ok(mut w) => match w.append(&header, Durability::Synced) {
                        Ok(()) => {
                            let _ = ready_tx.send(Ok(()));
                            w
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    },
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
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
                    let last = batch.len() - 1;
                    let mut results = Vec::with_capacity(batch.len());
                    for (i, (event, _)) in batch.iter().enumerate() {
                        let durability = if i == last {
                            Durability::Synced
                        } else {
                            Durability::Written
                        };
                        results.push(writer.append(event, durability).map_err(|e| e.to_string()));
                    }
                    // An event is durable only once the batch's sync succeeded.
                    let synced = results[last].clone();
                    for ((_, ack), result) in batch.into_iter().zip(results) {
                        let result = result.and(synced.clone());
                        if let Err(e) = &result {
                            tracing::error!("hook journal: {e}");
                        }
                        let _ = ack.send(result);
                    }
                }
            })
            .map_err(|e| Error::io("cannot start the journal thread for", path, e))?;
        ready_rx
            .recv()
            .map_err(|_| Error::Usage("the journal thread stopped".into()))??;
        Ok(Journal {
            tx,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, event: Value) -> oneshot::Receiver<std::result::Result<(), String>> {
        let (ack, done) = oneshot::channel();
        if let Err(mpsc::SendError((_, ack))) = self.tx.send((event, ack)) {
            let _ = ack.send(Err("the journal is closed".into()));
        }
        done
    }

    /// Records `event` and waits until it is on disk (from async code).
    pub async fn record(&self, event: Value) -> std::result::Result<(), String> {
        self.send(event)
            .await
            .unwrap_or_else(|_| Err("the journal is closed".into()))
    }

    /// Records `event` and waits until it is on disk (from a plain thread).
    pub fn record_blocking(&self, event: Value) -> std::result::Result<(), String> {
        self.send(event)
            .blocking_recv()
            .unwrap_or_else(|_| Err("the journal is closed".into()))
    }
}
