//! Timelines for people: `transcript show` (one line per event) and `transcript render --format
//! md|html` (the incident timeline for the post-incident review: time working and waiting for
//! people, who decided and who resumed, what each write changed; as Markdown or one
//! self-contained HTML file).
//!
//! Both read each verified line as an [`Event`] (a [`JournalEvent`] for the hook journal) and
//! match on it. A line that does not read as one (an event type from a newer version, or fields
//! that do not fit) is still shown, as its type and fields: the chain verified it, so it is part
//! of the record even when this version cannot interpret it.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::event::{ErrorRecord, Event, JournalEvent, RunbookRef, StepInfo};
use super::reader::VerifyReport;

fn ms(v: Option<u64>) -> String {
    match v {
        Some(ms) if ms >= 1000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => format!("{ms} ms"),
        None => "-".into(),
    }
}

/// A step's time waiting for a person, after its working time (nothing when it did not wait).
fn waiting(waiting_ms: u64) -> String {
    match waiting_ms {
        0 => String::new(),
        n => format!(", {} waiting for a person", ms(Some(n))),
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

/// Time of day (`HH:MM:SS.mmm`) of a line.
fn clock(line: &Value) -> &str {
    let ts = line["ts"].as_str().unwrap_or("");
    ts.get(11..23).unwrap_or(ts)
}

/// The `type` of a line as written (empty when it has none).
fn tag(line: &Value) -> &str {
    line["type"].as_str().unwrap_or("")
}

fn step_label(steps: &[StepInfo], index: Option<usize>) -> String {
    index
        .and_then(|i| steps.get(i))
        .map(|s| format!("{} · {}", s.phase, s.title))
        .unwrap_or_else(|| "run".into())
}

fn error_text(e: Option<&ErrorRecord>) -> String {
    match e {
        None => String::new(),
        Some(e) => match &e.location {
            Some(loc) => format!("{} (at {loc})", e.message),
            None => e.message.clone(),
        },
    }
}

/// The AWS-shaped resource ids (`i-…`, `vol-…`, `sg-…`, ...) among the values of a call's
/// arguments and result, in order of appearance: what a write touched, for the reader.
fn resources_named(args: &Value, result: Option<&Value>) -> Vec<String> {
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
        walk(args, shape, &mut out);
        if let Some(result) = result {
            walk(result, shape, &mut out);
        }
    }
    out
}

/// The fields of a line other than the chain's, compact: the line for event types without one
/// of their own, and for lines this version cannot read.
fn fields(line: &Value) -> String {
    let mut rest = line.clone();
    if let Value::Object(map) = &mut rest {
        for k in ["seq", "ts", "prev", "hash", "type"] {
            map.remove(k);
        }
    }
    clip(&rest.to_string())
}

/// The fallback line: the type as written and the fields as they are.
fn as_written(line: &Value) -> String {
    format!("{} {}", tag(line), fields(line))
}

/// A line about a resume, for both timelines (`e` is a `run_resumed`).
fn resumed_text(e: &Event) -> String {
    let Event::RunResumed {
        from_step,
        operator,
        identity,
        allow_changed,
        replayed_writes,
        appended_run_finished,
        ..
    } = e
    else {
        return String::new();
    };
    let operator = established(operator, identity.as_ref());
    if *appended_run_finished {
        return format!(
            "resumed by {operator} only to record the run's end (every step had finished before the crash)"
        );
    }
    let mut text = format!(
        "resumed by {operator} at step {}",
        from_step.saturating_add(1)
    );
    if *replayed_writes > 0 {
        let _ = write!(
            text,
            ", {replayed_writes} finished write(s) answered from the transcript"
        );
    }
    if *allow_changed {
        text.push_str(", runbook changed since the start (accepted)");
    }
    text
}

/// Who acted, as recorded, and how the identity was established (`os`, `aws`, `slack`) when the
/// transcript says.
fn established(operator: &str, identity: Option<&crate::base::identity::Who>) -> String {
    match identity {
        Some(who) => format!("{operator} (established via {})", who.via),
        None => operator.to_string(),
    }
}

/// What the first line (`run_started`) says, with `?` for what it does not.
struct Head {
    run_id: String,
    runbook: RunbookRef,
    mode: String,
    environment: String,
    operator: String,
    params: Value,
    steps: Vec<StepInfo>,
}

impl Head {
    fn of(first: &Value) -> Head {
        match Event::parse(first) {
            Ok(Event::RunStarted {
                run_id,
                runbook,
                mode,
                environment,
                operator,
                identity,
                params,
                steps,
                ..
            }) => Head {
                run_id,
                runbook,
                mode,
                environment,
                operator: established(&operator, identity.as_ref()),
                params,
                steps,
            },
            _ => {
                let unknown = || "?".to_string();
                Head {
                    run_id: unknown(),
                    runbook: RunbookRef {
                        id: unknown(),
                        version: unknown(),
                        title: unknown(),
                        severity: unknown(),
                        sha256: unknown(),
                        ..RunbookRef::default()
                    },
                    mode: unknown(),
                    environment: unknown(),
                    operator: unknown(),
                    params: Value::Null,
                    steps: Vec::new(),
                }
            }
        }
    }
}

/// A readable timeline of a hook journal: the server's records, one per line.
fn show_journal(events: &[Value]) -> String {
    let mut out = String::new();
    if let Some(Ok(JournalEvent::JournalStarted {
        config,
        routes,
        pid,
        tool,
        ..
    })) = events.first().map(JournalEvent::parse)
    {
        let routes: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        let _ = writeln!(
            out,
            "hook journal · {config} · pid {pid} · {tool} · routes: {}",
            if routes.is_empty() {
                "none".to_string()
            } else {
                routes.join(", ")
            }
        );
    }
    for line in events {
        let text = match JournalEvent::parse(line) {
            Ok(JournalEvent::JournalStarted { .. }) => "journal started".to_string(),
            Ok(JournalEvent::Listening { addr }) => format!("listening on {addr}"),
            Ok(JournalEvent::Alert {
                source,
                alert,
                firing,
                outcome,
                reason,
                detail,
                route,
                run_id,
                ..
            }) => {
                let mut text = format!(
                    "alert {alert} ({source}, {}) → {outcome}",
                    if firing { "firing" } else { "resolved" },
                );
                for (k, v) in [
                    ("route", route),
                    ("run_id", run_id),
                    ("reason", reason),
                    ("detail", detail),
                ] {
                    if let Some(v) = v {
                        let _ = write!(text, " · {k} {}", clip(&v));
                    }
                }
                text
            }
            Ok(JournalEvent::RequestRefused {
                source,
                status,
                reason,
                detail,
            }) => format!(
                "refused {source} request ({status} {reason}): {}",
                clip(&detail)
            ),
            Ok(JournalEvent::RunFinished {
                run_id,
                route,
                runbook,
                status,
                reason,
                duration_ms,
                ..
            }) => format!(
                "run {run_id} of {runbook} ({route}) {status} [{}] {reason}",
                ms(Some(duration_ms))
            ),
            Ok(JournalEvent::RunNotStarted { run_id, .. }) => {
                format!("run {run_id} not started: {}", fields(line))
            }
            Ok(JournalEvent::Escalation {
                alert,
                reason,
                delivered,
                error,
                ..
            }) => format!(
                "escalation for {alert} ({reason}): {}",
                if delivered {
                    "delivered".to_string()
                } else {
                    format!("NOT delivered: {}", error.as_deref().unwrap_or("?"))
                }
            ),
            Ok(JournalEvent::Stopped { aborted_runs }) => {
                format!("stopped ({aborted_runs} run(s) aborted)")
            }
            Ok(
                JournalEvent::SnsSubscription { .. }
                | JournalEvent::SnsUnsubscribed { .. }
                | JournalEvent::BreakerReset { .. },
            )
            | Err(_) => as_written(line),
        };
        let _ = writeln!(out, "{}  {}", clock(line), text.trim_end());
    }
    out
}

/// A readable timeline of a (verified) transcript, one line per event.
pub fn show(events: &[Value]) -> String {
    let Some(first) = events.first() else {
        return String::new();
    };
    if let Ok(JournalEvent::JournalStarted { .. }) = JournalEvent::parse(first) {
        return show_journal(events);
    }
    let head = Head::of(first);
    let steps = &head.steps;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {} · {}@{} · {} · env {} · by {}",
        head.run_id,
        head.runbook.id,
        head.runbook.version,
        head.mode,
        head.environment,
        head.operator,
    );
    for line in events {
        let event = Event::parse(line);
        let text = match &event {
            Ok(Event::RunStarted { .. }) => format!("run started ({} steps)", steps.len()),
            Ok(Event::StepStarted { step, attempt, .. }) => {
                format!("▶ {} (attempt {attempt})", step_label(steps, Some(*step)))
            }
            Ok(Event::Call {
                binding,
                args,
                mutating,
                planned,
                duration_ms,
                result,
                error,
                replayed,
                ..
            }) => {
                let tag = if *planned {
                    "would call"
                } else if *mutating {
                    "call [write]"
                } else {
                    "call"
                };
                let tail = match error {
                    None => result
                        .as_ref()
                        .map_or_else(|| "null".to_string(), Value::to_string),
                    Some(e) => format!("error: {}", error_text(Some(e))),
                };
                let replayed = if *replayed {
                    " (answered from the transcript)"
                } else {
                    ""
                };
                format!(
                    "  {tag} {binding}({}) → {} [{}]{replayed}",
                    clip(&args.to_string()),
                    clip(&tail),
                    ms(Some(*duration_ms))
                )
            }
            Ok(e @ Event::RunResumed { .. }) => resumed_text(e),
            Ok(Event::Signature { alg, key_id, .. }) => format!("signed ({alg}, key {key_id})"),
            Ok(Event::Intent { binding, args, .. }) => {
                format!("  sending {binding}({})", clip(&args.to_string()))
            }
            Ok(Event::Log { level, message, .. }) => format!("  {level}: {message}"),
            Ok(Event::Decision {
                action, by, reason, ..
            }) => format!("  decision: {} by {by} ({reason})", action.as_str()),
            Ok(Event::Retry {
                attempt,
                delay_ms,
                error,
                ..
            }) => format!(
                "  retry #{attempt} in {} after: {}",
                ms(Some(*delay_ms)),
                error_text(Some(error))
            ),
            Ok(Event::OnFailureStarted { .. }) => "  ↺ on_failure started".to_string(),
            Ok(Event::OnFailureFinished {
                status,
                duration_ms,
                error,
                ..
            }) => format!(
                "  ↺ on_failure {} [{}] {}",
                status.as_str(),
                ms(Some(*duration_ms)),
                error_text(error.as_ref())
            ),
            Ok(Event::StepFinished {
                step,
                status,
                duration_ms,
                waiting_ms,
                error,
                ..
            }) => format!(
                "■ {} {} [{}{}] {}",
                step_label(steps, Some(*step)),
                status.as_str(),
                ms(Some(*duration_ms)),
                waiting(*waiting_ms),
                error_text(error.as_ref())
            ),
            Ok(Event::RunFinished {
                status,
                reason,
                duration_ms,
                ..
            }) => format!("run {} [{}] {reason}", status.as_str(), ms(*duration_ms)),
            Ok(
                Event::Inspected { .. } | Event::Guardrail { .. } | Event::ResumeDiverged { .. },
            )
            | Err(_) => as_written(line),
        };
        let _ = writeln!(out, "{}  {}", clock(line), text.trim_end());
    }
    out
}

/// What a post-incident review asks first: how long the work took and how long people were
/// waited for, who decided, who resumed the run, and what each write changed.
fn postmortem(out: &mut String, events: &[Value], steps: &[StepInfo]) {
    let (mut working, mut waiting_for) = (0u64, 0u64);
    let mut deciders: std::collections::BTreeMap<String, usize> = Default::default();
    let mut resumes = Vec::new();
    let mut writes = Vec::new();
    for line in events {
        match Event::parse(line) {
            Ok(Event::StepFinished {
                duration_ms,
                waiting_ms,
                ..
            }) => {
                working = working.saturating_add(duration_ms);
                waiting_for = waiting_for.saturating_add(waiting_ms);
            }
            Ok(Event::Decision { by, .. })
                if !matches!(by.as_str(), "" | "auto" | "unattended" | "runbook" | "plan") =>
            {
                *deciders.entry(by).or_default() += 1;
            }
            Ok(e @ Event::RunResumed { .. }) => {
                resumes.push(format!("{} {}", clock(line), resumed_text(&e)));
            }
            Ok(Event::Call {
                step,
                binding,
                args,
                mutating: true,
                planned,
                result,
                error,
                replayed,
                ..
            }) => {
                let resources = resources_named(&args, result.as_ref());
                let outcome = match (&error, planned, replayed) {
                    (Some(e), _, _) => format!("failed: {}", error_text(Some(e))),
                    (None, true, _) => "not sent (plan)".into(),
                    (None, false, true) => "made before a crash, answered on resume".into(),
                    (None, false, false) => "done".into(),
                };
                writes.push((step, binding, resources, outcome));
            }
            Ok(Event::Guardrail {
                step,
                binding,
                rule,
                ..
            }) => writes.push((
                step,
                binding,
                Vec::new(),
                format!("refused by the guardrails ({rule}), not sent"),
            )),
            _ => {}
        }
    }
    let _ = writeln!(out, "\n## Time and people\n");
    let _ = writeln!(
        out,
        "- Working: {} (the steps' own time)\n- Waiting for a person: {} (decisions, prompts, approvals)",
        ms(Some(working)),
        ms(Some(waiting_for))
    );
    if !deciders.is_empty() {
        let who: Vec<String> = deciders
            .iter()
            .map(|(by, n)| format!("{by} ({n})"))
            .collect();
        let _ = writeln!(out, "- Decided by: {}", cell(&who.join(", ")));
    }
    match resumes.len() {
        0 => {
            let _ = writeln!(out, "- Resumes: none");
        }
        n => {
            let _ = writeln!(out, "- Resumes: {n}");
            for r in resumes {
                let _ = writeln!(out, "  - {}", cell(&r));
            }
        }
    }
    let _ = writeln!(out, "\n## What changed\n");
    if writes.is_empty() {
        let _ = writeln!(out, "No write was made.");
        return;
    }
    let _ = writeln!(
        out,
        "| Step | Write | Resources | Outcome |\n|---|---|---|---|"
    );
    for (step, binding, resources, outcome) in writes {
        let named: Vec<String> = resources.iter().map(|r| format!("`{r}`")).collect();
        let _ = writeln!(
            out,
            "| {} | `{binding}` | {} | {} |",
            cell(&step_label(steps, step)),
            if named.is_empty() {
                "-".to_string()
            } else {
                named.join(", ")
            },
            cell(&outcome)
        );
    }
}

/// The incident timeline as one self-contained HTML file (no script, no external resource):
/// [`render_markdown`]'s document, converted, with its styles inline.
pub fn render_html(events: &[Value], report: &VerifyReport, path: &Path) -> String {
    let md = render_markdown(events, report, path);
    let title = md
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .unwrap_or("Incident timeline");
    let mut body = String::new();
    let mut lines = md.lines().peekable();
    let mut in_list = false;
    while let Some(line) = lines.next() {
        if in_list && !line.starts_with("- ") && !line.starts_with("  - ") {
            body.push_str("</ul>\n");
            in_list = false;
        }
        if let Some(h) = line.strip_prefix("## ") {
            let _ = writeln!(body, "<h2>{}</h2>", inline(h));
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = writeln!(body, "<h1>{}</h1>", inline(h));
        } else if line.starts_with("```") {
            body.push_str("<pre>");
            for code in lines.by_ref() {
                if code.starts_with("```") {
                    break;
                }
                let _ = writeln!(body, "{}", escape(code));
            }
            body.push_str("</pre>\n");
        } else if line.starts_with('|') {
            body.push_str("<table>\n");
            let mut row = Some(line);
            let mut first = true;
            while let Some(r) = row {
                let cells = table_cells(r);
                let separator = cells.iter().all(|c| c.chars().all(|ch| ch == '-'));
                // The separator row, and an empty header (the facts table has none), are not rows.
                let empty_head = first && cells.iter().all(String::is_empty);
                if !(separator || empty_head) {
                    let tag = if first { "th" } else { "td" };
                    body.push_str("<tr>");
                    for c in &cells {
                        let _ = write!(body, "<{tag}>{}</{tag}>", inline(c));
                    }
                    body.push_str("</tr>\n");
                }
                first = false;
                row = lines.next_if(|l| l.starts_with('|'));
            }
            body.push_str("</table>\n");
        } else if let Some(item) = line
            .strip_prefix("- ")
            .or_else(|| line.strip_prefix("  - "))
        {
            if !in_list {
                body.push_str("<ul>\n");
                in_list = true;
            }
            let _ = writeln!(body, "<li>{}</li>", inline(item));
        } else if !line.trim().is_empty() {
            let _ = writeln!(body, "<p>{}</p>", inline(line));
        }
    }
    if in_list {
        body.push_str("</ul>\n");
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\nbody {{ font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}\ntable {{ border-collapse: collapse; margin: 1rem 0; }}\nth, td {{ border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }}\nth {{ background: #f3f3f3; }}\ncode, pre {{ font-family: ui-monospace, monospace; background: #f6f6f6; }}\npre {{ padding: .75rem; overflow-x: auto; }}\n</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

/// The cells of a Markdown table row, unescaped (`\\|` is a `|` inside a cell).
fn table_cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                if let Some(last) = cells.last_mut() {
                    last.push('|');
                }
            }
            '|' => cells.push(String::new()),
            c => {
                if let Some(last) = cells.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    cells.iter().map(|c| c.trim().to_string()).collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `code` and **bold** of one line, escaped.
fn inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", escape(part));
        } else {
            for (j, piece) in part.split("**").enumerate() {
                if j % 2 == 1 {
                    let _ = write!(out, "<strong>{}</strong>", escape(piece));
                } else {
                    out.push_str(&escape(piece));
                }
            }
        }
    }
    out
}

/// Escapes text for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The seed's resolution template's root cause and resolution, filled from the run: the
/// runbook's own resolution message when it posted one; else the alert that started the run and
/// the writes it made, with the resources each touched.
fn resolution_of(events: &[Value], runbook: &str) -> (String, String) {
    const MAX_WRITES: usize = 8;
    let line_after = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut posted: (Option<String>, Option<String>) = (None, None);
    let mut writes: Vec<String> = Vec::new();
    for e in events {
        if e["type"] != "call" || e["mutating"] != true || e["planned"] == true {
            continue;
        }
        if !e["error"].is_null() {
            continue;
        }
        let binding = e["binding"].as_str().unwrap_or_default();
        if binding.starts_with("slack::") || binding.starts_with("notify::") {
            if let Some(text) = e["args"]["text"].as_str()
                && text.contains("INCIDENT RESOLVED")
            {
                posted = (
                    line_after(text, "Root Cause:"),
                    line_after(text, "Resolution:"),
                );
            }
            continue;
        }
        if binding.starts_with("notes::") {
            continue;
        }
        let resources = resources_named(&e["args"], e.get("result"));
        let w = if resources.is_empty() {
            format!("`{binding}`")
        } else {
            format!("`{binding}` ({})", resources.join(", "))
        };
        if !writes.contains(&w) {
            writes.push(w);
        }
    }
    let trigger = &events
        .first()
        .map(|f| f["trigger"].clone())
        .unwrap_or_default();
    let root_cause = posted.0.unwrap_or_else(|| match trigger["alert"].as_str() {
        Some(alert) => format!(
            "alert {alert} ({}; to be completed in the post-incident review)",
            trigger["source"].as_str().unwrap_or("hook")
        ),
        None => "(to be completed in the post-incident review)".into(),
    });
    let resolution = posted.1.unwrap_or_else(|| {
        if writes.is_empty() {
            return format!("{runbook} ran to completion");
        }
        let more = writes.len().saturating_sub(MAX_WRITES);
        writes.truncate(MAX_WRITES);
        let mut text = format!("{runbook} ran to completion: {}", writes.join("; "));
        if more > 0 {
            text.push_str(&format!("; and {more} more change(s)"));
        }
        text
    });
    (root_cause, resolution)
}

/// An incident timeline in Markdown for the post-incident review, after the seed's
/// communication templates (initial incident report, resolution notification).
pub fn render_markdown(events: &[Value], report: &VerifyReport, path: &Path) -> String {
    let Some(first) = events.first() else {
        return String::new();
    };
    let head = Head::of(first);
    let rb = &head.runbook;
    let steps = &head.steps;
    let last = events.last().unwrap_or(first);
    let finished = events.iter().rev().find_map(|e| match Event::parse(e) {
        Ok(Event::RunFinished { duration_ms, .. }) => Some(duration_ms),
        _ => None,
    });
    let status = report
        .finished
        .as_deref()
        .unwrap_or("unfinished (no run_finished at the end: the run crashed or is still going)");
    let incident = head.params["incident"]
        .as_str()
        .unwrap_or(head.run_id.as_str());
    let started_ts = first["ts"].as_str().unwrap_or("?");
    let mut out = String::new();
    let _ = writeln!(out, "# Incident timeline: {}\n", rb.title);
    let _ = writeln!(out, "| | |\n|---|---|");
    let rows = [
        ("Incident", incident.to_string()),
        ("Severity", rb.severity.clone()),
        (
            "Runbook",
            format!(
                "`{}@{}` (sha256 `{}`)",
                rb.id,
                rb.version,
                rb.sha256.get(..12).unwrap_or("?")
            ),
        ),
        ("Run", format!("`{}`", head.run_id)),
        ("Mode", head.mode.clone()),
        ("Environment", head.environment.clone()),
        ("Operator", head.operator.clone()),
        ("Started", started_ts.to_string()),
        ("Last event", last["ts"].as_str().unwrap_or("?").to_string()),
        ("Status", status.to_string()),
        ("Parameters", format!("`{}`", head.params)),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {} |", cell(&v));
    }
    postmortem(&mut out, events, steps);

    let _ = writeln!(out, "\n## Timeline (UTC)\n");
    let _ = writeln!(out, "| Time | Step | Event |\n|---|---|---|");
    for line in events {
        let Ok(event) = Event::parse(line) else {
            continue;
        };
        let what = match &event {
            Event::StepStarted { attempt, .. } => format!("started (attempt {attempt})"),
            Event::StepFinished {
                status,
                duration_ms,
                waiting_ms,
                error,
                ..
            } => {
                let err = error_text(error.as_ref());
                format!(
                    "**{}** in {}{}{}",
                    status.as_str(),
                    ms(Some(*duration_ms)),
                    waiting(*waiting_ms),
                    if err.is_empty() {
                        String::new()
                    } else {
                        format!(": {err}")
                    }
                )
            }
            Event::Call {
                binding,
                args,
                mutating: true,
                planned,
                result,
                error,
                replayed,
                ..
            } => {
                let resources = resources_named(args, result.as_ref());
                format!(
                    "{} `{binding}`{}{}{}",
                    if *planned { "would change" } else { "changed" },
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
                    if *replayed {
                        " (recorded before a crash, not sent again)"
                    } else {
                        ""
                    },
                    match error {
                        None => String::new(),
                        Some(e) => format!(" — failed: {}", error_text(Some(e))),
                    }
                )
            }
            e @ Event::RunResumed { .. } => format!("**{}**", resumed_text(e)),
            Event::Decision {
                action, by, reason, ..
            } => format!("decision: {} by {by} ({reason})", action.as_str()),
            Event::Retry { error, .. } => format!("retry after: {}", error_text(Some(error))),
            Event::OnFailureFinished { status, .. } => format!("rollback {}", status.as_str()),
            Event::RunFinished { status, .. } => format!("run **{}**", status.as_str()),
            _ => continue,
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            clock(line),
            cell(&step_label(steps, event.step())),
            cell(&what)
        );
    }

    let duration = finished.map(ms).unwrap_or("-".into());
    let _ = writeln!(out, "\n## Notification\n\n```");
    if status == "ok" {
        let (root_cause, resolution) = resolution_of(events, &rb.id);
        let _ = writeln!(
            out,
            "✅ INCIDENT RESOLVED\nIncident: #{incident}\nDuration: {duration}\nRoot Cause: {root_cause}\nResolution: {resolution}\nPost-mortem: [Link to document]"
        );
    } else {
        let _ = writeln!(
            out,
            "🚨 INCIDENT ALERT 🚨\nSeverity: {}\nEnvironment: {}\nService: {}\nDescription: runbook {} ended {}\nStarted: {}\nStatus: Investigating\nIncident Commander: {}",
            rb.severity,
            head.environment,
            rb.service.as_deref().unwrap_or("?"),
            rb.id,
            status,
            started_ts,
            head.operator,
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
