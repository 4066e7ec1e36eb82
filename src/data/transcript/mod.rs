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
//!
//! The module's parts: [`event`] (what a line says, typed: the format's documentation),
//! `writer` (appending, locking, fsync), `sign` (the optional HMAC of a run's head),
//! `reader` (verifying and reading back), `render` (`transcript show` and `render`), `docs`
//! (`runbook docs transcript`, generated from [`event`]).

mod docs;
mod event;
mod reader;
mod render;
mod sign;
mod writer;

use std::fmt::Write as _;

use serde_json::Value;

pub use docs::format_reference;
pub use event::{
    Action, Counts, ErrorRecord, Event, JournalEvent, Nullable, RouteRef, RunStatus, RunbookRef,
    StepInfo, StepStatus, Unreadable,
};
pub use reader::{Kind, VerifyReport, check_signatures, read_verified, read_verified_from};
pub use render::{render_html, render_markdown, show};
pub use sign::{SIGNATURE_ALG, Signer};
pub use writer::{Durability, TranscriptWriter};
pub(crate) use writer::{create_private, create_private_dir, open_private_append};

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use serde_json::json;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::base::error::Error;
    use crate::base::redact::Redactor;

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

    /// A writer on `path` whose transcript has begun (its `run_started` written).
    fn started(path: &std::path::Path) -> TranscriptWriter {
        let mut w = TranscriptWriter::create(path, Rc::new(Redactor::new())).unwrap();
        w.append(
            &json!({"type": "run_started", "run_id": "r1"}),
            Durability::Synced,
        )
        .unwrap();
        w
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
    fn a_signature_line_appended_as_an_event_is_refused_and_the_transcript_still_verifies() {
        // Found by the transcript fuzz target: a `signature` event written through `append`
        // signed nothing, and the file never verified again.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut w = started(&path);
        let forged = json!({"type": "signature", "alg": "hmac-sha256", "key_id": "00",
                            "signed": "ab", "signature": "cd"});
        let err = w
            .append(&forged, Durability::Synced)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("written by the transcript writer alone"),
            "{err}"
        );
        w.append(
            &json!({"type": "run_finished", "status": "ok"}),
            Durability::Synced,
        )
        .unwrap();
        drop(w);
        let (events, report) = read_verified(&path).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(report.finished.as_deref(), Some("ok"));
    }

    #[test]
    fn an_old_form_line_after_a_canonical_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        drop(started(&path));
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
        let mut w = started(&path);
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
