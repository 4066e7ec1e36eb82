//! The transcript format through the binary: transcripts written before the typed events (drill
//! transcripts of an earlier version, a REPL session, a panicked run, a hook journal, and one
//! with every event type plus one from a "newer version") still verify, and `transcript show`
//! and `transcript render` print exactly what they printed before (the `.show` and `.md` files
//! next to them were produced by the version before the change); `runbook docs transcript`
//! documents every event type.

use std::path::PathBuf;

use crate::common::{self, Workspace};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/transcript")
        .join(name)
}

/// Every transcript fixture, by its stem.
fn fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixture(""))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".jsonl").map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 7, "{names:?}");
    names
}

#[test]
fn transcripts_written_before_the_typed_events_still_verify() {
    let ws = Workspace::new();
    for name in fixtures() {
        let file = fixture(&format!("{name}.jsonl"));
        let out = ws.run(&["transcript", "verify", file.to_str().unwrap()]);
        out.expect_code(0);
        assert!(out.stdout.starts_with("ok: "), "{name}: {}", out.stdout);
    }
    // The drill transcripts are in the writer's own key order of an earlier version.
    let old = ws.run(&[
        "transcript",
        "verify",
        fixture("drill-ec2-high-cpu-clean.jsonl").to_str().unwrap(),
    ]);
    assert!(
        old.stdout.contains("in the form of an earlier version"),
        "{}",
        old.stdout
    );
}

#[test]
fn transcript_show_and_render_print_what_they_printed_before() {
    let ws = Workspace::new();
    for name in fixtures() {
        let file = fixture(&format!("{name}.jsonl"));
        let file = file.to_str().unwrap();
        let shown = ws.run(&["transcript", "show", file]);
        shown.expect_code(0);
        let before = std::fs::read_to_string(fixture(&format!("{name}.show"))).unwrap();
        assert_eq!(shown.stdout, before, "transcript show {name}");
        let md = fixture(&format!("{name}.md"));
        if md.exists() {
            let rendered = ws.run(&["transcript", "render", file, "--format", "md"]);
            rendered.expect_code(0);
            // The integrity line names the file as given: compare with the path it was made with.
            let before = std::fs::read_to_string(md)
                .unwrap()
                .replace(&format!("`{name}.jsonl`"), &format!("`{file}`"));
            assert_eq!(rendered.stdout, before, "transcript render {name}");
        }
    }
}

#[test]
fn an_event_type_from_a_newer_version_is_shown_as_written_not_dropped() {
    let ws = Workspace::new();
    let file = fixture("every-event.jsonl");
    let shown = ws.run(&["transcript", "show", file.to_str().unwrap()]);
    shown.expect_code(0);
    assert!(
        shown
            .stdout
            .contains(r#"future_event {"detail":"written by a newer version","step":1}"#),
        "{}",
        shown.stdout
    );
    let journal = fixture("hook-journal.jsonl");
    let shown = ws.run(&["transcript", "show", journal.to_str().unwrap()]);
    assert!(
        shown.stdout.contains(r#"future_journal_thing {"x":1}"#),
        "{}",
        shown.stdout
    );
}

#[test]
fn docs_transcript_documents_every_event_type_and_its_fields() {
    let ws = Workspace::new();
    let out = ws.run(&["docs", "transcript"]);
    out.expect_code(0);
    let text = &out.stdout;
    // Every type any fixture holds (but the made-up future ones) has its section.
    let mut kinds = std::collections::BTreeSet::new();
    for name in fixtures() {
        for e in common::events(&fixture(&format!("{name}.jsonl"))) {
            let kind = e["type"].as_str().unwrap().to_string();
            if !kind.starts_with("future_") {
                kinds.insert(kind);
            }
        }
    }
    assert!(kinds.len() >= 25, "{kinds:?}");
    for kind in &kinds {
        assert!(text.contains(&format!("### `{kind}`")), "{kind} missing");
    }
    for needle in [
        "- `prev`:",
        "- `hash`:",
        "| `decided_ms` | integer |",
        "*(absent when it does not apply)*",
        "| `account` | string |",
        "*(may be absent or null)*",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn resume_refuses_a_run_whose_transcript_holds_an_event_type_it_does_not_know() {
    use std::rc::Rc;

    use runbook::base::redact::Redactor;
    use runbook::data::transcript::{Durability, TranscriptWriter};

    let ws = Workspace::new();
    ws.write(
        "runbook.toml",
        "[environments.crash]\nbackend = \"sim\"\nstate = \"sim-state.json\"\n",
    );
    ws.write(
        "runbooks/two.rhai",
        concat!(
            "runbook(#{ id: \"two\", version: \"1.0.0\", title: \"t\", severity: \"P3\" });\n",
            "containment(\"One\", |ctx| { notes::append(\"one\"); });\n",
            "recovery(\"Two\", |ctx| { notes::append(\"two\"); }, #{ confirm: true });\n",
        ),
    );
    // Stops at the confirmation (no --yes): an aborted run to resume.
    ws.run(&[
        "run",
        "two",
        "--env",
        "crash",
        "--no-interactive",
        "--transcript",
        "t.jsonl",
    ])
    .expect_code(3);
    // A newer version of runbook wrote an event this one does not know, chained as it must be.
    let path = ws.path().join("t.jsonl");
    let (mut writer, _) = TranscriptWriter::open_append(&path, Rc::new(Redactor::new())).unwrap();
    writer
        .append(
            &serde_json::json!({"type": "future_event", "detail": "from a newer version"}),
            Durability::Synced,
        )
        .unwrap();
    drop(writer);
    let lines = common::events(&path).len();
    ws.run(&["transcript", "verify", "t.jsonl", "--allow-unfinished"])
        .expect_code(0);

    let resumed = ws.run(&["resume", "t.jsonl", "--yes", "--no-interactive"]);
    resumed.expect_code(2);
    assert!(
        resumed.stderr.contains(&format!(
            "line {lines} of the transcript cannot be read: unknown event type \"future_event\""
        )),
        "{}",
        resumed.stderr
    );
    assert_eq!(common::events(&path).len(), lines, "nothing was appended");
    assert!(!ws.read("t.notes.md").contains("two"), "no step ran");
}

#[test]
fn render_says_who_resumed_what_each_write_touched_and_time_waiting_apart_from_working() {
    let ws = Workspace::new();
    let file = fixture("every-event.jsonl");
    let file = file.to_str().unwrap();
    let md = ws.run(&["transcript", "render", file]);
    md.expect_code(0);
    for expected in [
        "- Working: 4.3 s (the steps' own time)",
        "- Waiting for a person: 1.2 s (decisions, prompts, approvals)",
        "- Decided by: alice (1)",
        "resumed by bob at step 2",
        "| mitigate · Stop it | `ec2::stop_instances` | `i-0123456789abcdef0` | made before a crash, answered on resume |",
        "| `ec2::terminate_instances` | - | refused by the guardrails",
    ] {
        assert!(md.stdout.contains(expected), "{expected}\n{}", md.stdout);
    }

    let html = ws.run(&["transcript", "render", file, "--format", "html"]);
    html.expect_code(0);
    let page = &html.stdout;
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.trim_end().ends_with("</html>"));
    for expected in [
        "<title>Incident timeline: Every event a run writes</title>",
        "<h2>Time and people</h2>",
        "<li>Waiting for a person: 1.2 s (decisions, prompts, approvals)</li>",
        "<td><code>i-0123456789abcdef0</code></td>",
        "resumed by bob at step 2",
    ] {
        assert!(page.contains(expected), "{expected}\n{page}");
    }
    // One file: nothing loaded from elsewhere, nothing run.
    for foreign in ["<script", " src=", " href=", "<link", "@import"] {
        assert!(!page.contains(foreign), "{foreign} in\n{page}");
    }
}
