//! Reading a transcript back: every line verified against the chain before anything is believed.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::sign::Signer;
use super::{Event, GENESIS, JournalEvent, with_hash, write_canonical};
use crate::base::error::{Error, Result};

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
            let Ok(Event::Signature {
                signed,
                key_id,
                signature,
                ..
            }) = Event::parse(&value)
            else {
                return Err(broken(
                    lineno,
                    "a signature line without its alg, key_id, signed and signature".into(),
                ));
            };
            if signed != prev {
                return Err(broken(
                    lineno,
                    "the signature line does not sign the line before it".into(),
                ));
            }
            signatures.push((lineno, prev.clone(), key_id, signature));
        }
        prev = computed;
        events.push(value);
    }
    if events.is_empty() {
        return Err(broken(1, "the transcript is empty".into()));
    }
    let first = &events[0];
    let kind = if let Ok(JournalEvent::JournalStarted { .. }) = JournalEvent::parse(first) {
        Kind::Journal
    } else {
        Kind::Run
    };
    // Finished means the file *ends* with run_finished: a run_finished followed by a resume
    // that never finished is not a finished run.
    let finished = events
        .iter()
        .rev()
        .map(Event::parse)
        .find(|e| !matches!(e, Ok(Event::Signature { .. })))
        .and_then(|e| match e {
            Ok(Event::RunFinished { status, .. }) if kind == Kind::Run => {
                Some(status.as_str().to_string())
            }
            _ => None,
        });
    let (runbook, run_id) = match Event::parse(first) {
        Ok(Event::RunStarted {
            runbook, run_id, ..
        }) => (
            Some(format!("{}@{}", runbook.id, runbook.version)),
            Some(run_id),
        ),
        _ => (None, None),
    };
    let report = VerifyReport {
        kind,
        events: events.len(),
        head: prev,
        runbook,
        run_id,
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
    if report.kind == Kind::Run
        && events
            .last()
            .is_some_and(|e| !matches!(Event::parse(e), Ok(Event::Signature { .. })))
    {
        return Err(broken(
            events.len(),
            "the transcript does not end with a signature: it was cut short, extended, or written without the signing key".into(),
        ));
    }
    Ok(report.signatures.len())
}
