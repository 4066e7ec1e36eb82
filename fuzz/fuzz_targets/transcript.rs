//! The transcript reader and verifier (`transcript::read_verified`), and what is done with a
//! verified transcript: `show`, `render_markdown` and resume's pickup.
//!
//! The first byte says what the rest is:
//! - `W`: JSON events, one a line, that the target first writes with the real `TranscriptWriter`
//!   (which chains and hashes them), so the reader sees a valid chain and gets past the hash
//!   checks: the written transcript must then verify, with every event;
//! - anything else: a transcript file's bytes, read as they are.
#![no_main]

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use runbook::base::redact::Redactor;
use runbook::data::transcript::{self, Durability, TranscriptWriter, VerifyReport};
use serde_json::Value;

/// A private folder on tmpfs for the written transcripts (one file, replaced per input).
static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("runbook-fuzz-transcript-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the scratch folder");
    dir
});

fn use_verified(events: &[Value], report: &VerifyReport, path: &Path) {
    let _ = transcript::show(events);
    let _ = transcript::render_markdown(events, report, path);
    // Resume's reading of where the run stopped, for a runbook of a few steps.
    let _ = runbook::run::resume::pickup(events, 8);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode != b'W' {
        let path = Path::new("fuzz.jsonl");
        if let Ok((events, report)) = transcript::read_verified_from(rest, path) {
            assert_eq!(events.len(), report.events);
            use_verified(&events, &report, path);
        }
        return;
    }
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // The writer's contract: each event is a JSON object with a `type`, never a `signature`
    // (the writer's own line; it refuses one appended), and a transcript opens with
    // run_started (or journal_started).
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t != "signature")
        })
        .collect();
    let opens = events.first().and_then(|e| e["type"].as_str());
    if !matches!(opens, Some("run_started" | "journal_started")) {
        return;
    }
    let path = DIR.join("t.jsonl");
    let _ = std::fs::remove_file(&path);
    let mut writer =
        TranscriptWriter::create(&path, Rc::new(Redactor::new())).expect("create the transcript");
    writer.set_fsync(false);
    for e in &events {
        writer.append(e, Durability::Written).expect("append");
    }
    drop(writer);
    match transcript::read_verified(&path) {
        Ok((read, report)) => {
            assert_eq!(read.len(), events.len(), "the reader lost events");
            use_verified(&read, &report, &path);
        }
        Err(e) => panic!("a transcript the writer wrote does not verify: {e}"),
    }
});
