//! `runbook docs transcript`: the transcript format, generated from the event declarations
//! ([`Event`] and [`JournalEvent`]) so it cannot drift from what is written.

use std::fmt::Write as _;

use super::event::{Event, JournalEvent, VariantDoc, paragraph};

/// The format reference in Markdown.
pub fn format_reference() -> String {
    let mut out = String::from(
        "# The transcript format\n\n\
         A transcript is a JSON-lines file, one event a line, written by `runbook run`, `plan`, \
         `drill`, `resume` and `repl` (one file per run) and by `runbook serve` (its hook journal). \
         Every line is an object with the event's own fields, named by `type`, and four fields of \
         the hash chain:\n\n\
         - `seq`: the line's number, from 0;\n\
         - `ts`: when it was written (UTC, milliseconds; wall time even under a simulated clock);\n\
         - `prev`: the `hash` of the line before (64 zeros for the first);\n\
         - `hash`: the SHA-256 of the line's canonical form (keys sorted at every depth, compact, \
         `hash` left out).\n\n\
         The line on disk is that canonical text with `\"hash\":\"…\"` appended last, so what `grep` \
         or `jq` read is exactly what the hash covers. `runbook transcript verify` checks every \
         line of the chain whatever its `type`; an event type this version does not know (written \
         by a newer one) still verifies, `transcript show` prints it as its type and fields, and \
         `runbook resume` refuses to continue a run with a line it cannot read. With `[state] \
         backend = \"aws\"` a run's lines are also uploaded to S3 as they are (never \
         overwritten) and its last hash is stored in the state table: `verify` then fails a file \
         whose last hash is not that head (a cut tail, a whole rewrite; see docs/state.md).\n\n\
         A field marked *absent when it does not apply* is left out of the line rather than \
         written as `null`; *null when it does not apply* is written as `null`.\n\n\
         ## A run's transcript\n\n\
         The first line is `run_started`; a finished run's last line is `run_finished` (followed \
         by a `signature` when a signing key is configured).\n\n",
    );
    section(&mut out, Event::DOCS);
    out.push_str(
        "## The hook journal\n\n\
         `runbook serve` writes one journal per server process (`journal-<id>.jsonl` in the \
         transcripts folder), chained and verified the same way. Its first line is \
         `journal_started`; it is a log and has no end to check.\n\n",
    );
    section(&mut out, JournalEvent::DOCS);
    out
}

fn section(out: &mut String, docs: &[VariantDoc]) {
    for v in docs {
        let _ = writeln!(out, "### `{}`\n\n{}\n", v.tag(), paragraph(v.about));
        if v.fields.is_empty() {
            continue;
        }
        let _ = writeln!(out, "| Field | Type | Meaning |\n|---|---|---|");
        for f in v.fields {
            let mut meaning = paragraph(f.about);
            if let Some(presence) = f.presence() {
                let _ = write!(meaning, " *({presence})*");
            }
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                f.name,
                json_type(f.ty).unwrap_or_else(|| format!("`{}`", f.ty)),
                meaning.replace('|', "\\|")
            );
        }
        out.push('\n');
    }
}

/// The JSON shape of a field's Rust type, for readers who never see the Rust (None for a type
/// this table does not know: a test keeps it complete).
fn json_type(ty: &str) -> Option<String> {
    let ty: String = ty.chars().filter(|c| !c.is_whitespace()).collect();
    let inner = |prefix: &str| {
        ty.strip_prefix(prefix)
            .and_then(|t| t.strip_suffix('>'))
            .map(str::to_string)
    };
    if let Some(t) = inner("Nullable<") {
        return json_type(&t);
    }
    if let Some(t) = inner("Option<") {
        return json_type(&t);
    }
    if let Some(t) = inner("Vec<") {
        return json_type(&t).map(|t| format!("array of {t}"));
    }
    let name = match ty.as_str() {
        "String" => "string".into(),
        "bool" => "boolean".into(),
        "usize" | "u64" | "u32" | "u16" => "integer".into(),
        "f64" => "number".into(),
        "Value" => "any JSON".into(),
        "StepStatus" => "`ok` \\| `failed` \\| `skipped` \\| `timed_out` \\| `aborted`".into(),
        "RunStatus" => "`ok` \\| `failed` \\| `timed_out` \\| `aborted`".into(),
        "Action" => "`run` \\| `skip` \\| `abort` \\| `inspect` \\| `refused` \\| `retry` \\| `continue` \\| `approval`".into(),
        "ErrorRecord" => "error: `message`, `code`, `location`, `request_id`".into(),
        "Counts" => "object of integers".into(),
        "Who" => "identity: `via` (`os` \\| `aws` \\| `slack`), `id`, `name`, `claimed`".into(),
        "RunbookRef" | "StepInfo" | "RouteRef" => "object".into(),
        _ => return None,
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_reference_names_every_event_type_with_its_fields() {
        let text = format_reference();
        for v in Event::DOCS.iter().chain(JournalEvent::DOCS) {
            assert!(
                text.contains(&format!("### `{}`", v.tag())),
                "{} is not documented",
                v.tag()
            );
            assert!(!paragraph(v.about).is_empty(), "{} has no doc", v.variant);
            for f in v.fields {
                assert!(
                    !paragraph(f.about).is_empty(),
                    "{}.{} has no doc comment",
                    v.tag(),
                    f.name
                );
                assert!(text.contains(&format!("| `{}` |", f.name)));
            }
        }
    }

    #[test]
    fn every_field_type_has_a_json_name() {
        for v in Event::DOCS.iter().chain(JournalEvent::DOCS) {
            for f in v.fields {
                assert!(
                    json_type(f.ty).is_some(),
                    "{}.{}: no JSON name for {}",
                    v.tag(),
                    f.name,
                    f.ty
                );
            }
        }
    }
}
