//! `check` (and `--policy`), `list` and `show`: what the runbook folders hold.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::args::Output;
use super::{color, err, out, render_all, silent_host};
use crate::base::error::{Error, Result, ScriptDiagnostic};
use crate::runbook::Runbook;
use crate::runbook::catalog;
use crate::sandbox::declare::Phase;
use crate::sandbox::recorder::Mode;

/// One file's `check` result.
struct Checked {
    file: PathBuf,
    result: Result<Runbook>,
}

/// `check` (and with `--policy`, the mandate): with `--output json` one document holding both.
pub(super) fn command(
    dirs: &[PathBuf],
    paths: &[PathBuf],
    output: Output,
    policy_args: Option<(&Path, &Path, Option<chrono::NaiveDate>)>,
) -> Result<()> {
    let (files, bad) = check(dirs, paths, output)?;
    let mut doc = json!({ "status": "ok", "files": files, "policy": null });
    let mut result = Ok(());
    if bad > 0 {
        doc["status"] = json!("invalid");
        result = Err(Error::Invalid { count: bad });
    } else if let Some((alerts, results, now)) = policy_args {
        let (policy_doc, count) = policy(dirs, alerts, results, now, output)?;
        doc["policy"] = policy_doc;
        if count > 0 {
            doc["status"] = json!("policy_violations");
            result = Err(Error::PolicyViolations { count });
        }
    }
    match output {
        Output::Json => super::json::finish("check", doc, result),
        Output::Human => result,
    }
}

/// Checks every file, printing the human report; the JSON rows and how many files are invalid.
fn check(
    dirs: &[PathBuf],
    paths: &[PathBuf],
    output: Output,
) -> Result<(Vec<serde_json::Value>, usize)> {
    let roots: Vec<PathBuf> = if paths.is_empty() {
        dirs.to_vec()
    } else {
        paths.to_vec()
    };
    let mut files = Vec::new();
    for root in &roots {
        if root.is_dir() {
            files.extend(catalog::runbook_files(std::slice::from_ref(root)));
        } else if root.is_file() {
            files.push(root.clone());
        } else {
            return Err(Error::NotFound(root.display().to_string()));
        }
    }
    if files.is_empty() {
        return Err(Error::Usage(format!(
            "no runbooks found in {}",
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let checked: Vec<Checked> = files
        .into_iter()
        .map(|file| Checked {
            result: Runbook::load(&file, silent_host(Mode::Plan)),
            file,
        })
        .collect();

    // Problems that only show across files: two runbooks with one id.
    let mut cross: Vec<(usize, String)> = Vec::new();
    for (i, c) in checked.iter().enumerate() {
        if let Ok(rb) = &c.result
            && let Some(first) = checked[..i]
                .iter()
                .find(|o| o.result.as_ref().is_ok_and(|r| r.meta.id == rb.meta.id))
        {
            cross.push((
                i,
                format!(
                    "id {:?} is already used by {}",
                    rb.meta.id,
                    first.file.display()
                ),
            ));
        }
    }

    let mut bad = 0;
    let mut json_rows = Vec::new();
    for (i, c) in checked.iter().enumerate() {
        let mut errors: Vec<serde_json::Value> = Vec::new();
        let mut warnings: Vec<serde_json::Value> = Vec::new();
        let diag_json = |d: &ScriptDiagnostic| json!({"file": d.location.file, "line": d.location.line, "col": d.location.col, "message": d.message});
        let mut text = String::new();
        match &c.result {
            Ok(rb) => {
                for w in &rb.warnings {
                    warnings.push(diag_json(w));
                    text.push_str(&format!("warning: {}", w.render(color())));
                }
                let stem = c.file.file_stem().map(|s| s.to_string_lossy().into_owned());
                if stem.as_deref() != Some(rb.meta.id.as_str()) {
                    let msg = format!(
                        "file name does not match the id {:?}: `runbook run {}` will have to search for it",
                        rb.meta.id, rb.meta.id
                    );
                    warnings.push(json!({"file": rb.file, "line": 1, "col": 1, "message": msg}));
                    text.push_str(&format!("warning: {}: {msg}\n", rb.file));
                }
                for (_, msg) in cross.iter().filter(|(j, _)| *j == i) {
                    errors.push(json!({"file": rb.file, "line": 1, "col": 1, "message": msg}));
                    text.push_str(&format!("{}:1:1: {msg}\n", rb.file));
                }
            }
            Err(Error::Script(diags)) => {
                errors.extend(diags.iter().map(diag_json));
                text.push_str(&render_all(diags));
            }
            Err(other) => {
                errors.push(
                    json!({"file": c.file.display().to_string(), "message": other.to_string()}),
                );
                text.push_str(&format!("{}: {other}\n", c.file.display()));
            }
        }
        if !errors.is_empty() {
            bad += 1;
        }
        match output {
            Output::Human => {
                let head = match (&c.result, errors.is_empty()) {
                    (Ok(rb), true) => format!(
                        "ok      {} ({}@{}, {} steps)",
                        c.file.display(),
                        rb.meta.id,
                        rb.meta.version,
                        rb.steps.len()
                    ),
                    _ => format!("INVALID {}", c.file.display()),
                };
                out(&format!("{head}\n"));
                if !text.is_empty() {
                    err(&text);
                }
            }
            Output::Json => {
                let (id, version) = match &c.result {
                    Ok(rb) => (json!(rb.meta.id), json!(rb.meta.version.to_string())),
                    Err(_) => (json!(null), json!(null)),
                };
                json_rows.push(json!({
                    "file": c.file.display().to_string(),
                    "id": id,
                    "version": version,
                    "ok": errors.is_empty(),
                    "errors": errors,
                    "warnings": warnings,
                }));
            }
        }
    }
    Ok((json_rows, bad))
}

/// The mandate's check, printing the human report; its JSON and how many violations it found.
fn policy(
    dirs: &[PathBuf],
    alerts: &Path,
    results: &Path,
    now: Option<chrono::NaiveDate>,
    output: Output,
) -> Result<(serde_json::Value, usize)> {
    let catalogue = crate::front::policy::load_catalogue(alerts)?;
    let runbooks: Vec<Runbook> = catalog::runbook_files(dirs)
        .iter()
        .filter_map(|f| Runbook::load(f, silent_host(Mode::Plan)).ok())
        .collect();
    let records = crate::front::drill::read_records(results);
    let today = now.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let violations = crate::front::policy::check(&runbooks, &catalogue, &records, today);
    if output == Output::Human {
        if violations.is_empty() {
            out(&format!(
                "policy ok: {} alert(s), {} runbook(s), {} drill record(s), as of {today}\n",
                catalogue.alerts.len(),
                runbooks.len(),
                records.len()
            ));
        }
        for v in &violations {
            out(&format!(
                "POLICY  {} [{}]: {}\n",
                v.subject, v.rule, v.message
            ));
        }
    }
    let doc = json!({
        "date": today.to_string(),
        "alerts": catalogue.alerts.len(),
        "runbooks": runbooks.len(),
        "drill_records": records.len(),
        "violations": violations,
    });
    Ok((doc, violations.len()))
}

/// `list` (or with `--alert NAME`, only the runbooks that answer that alert: exit 1 when none).
pub(super) fn list(dirs: &[PathBuf], output: Output, alert: Option<&str>) -> Result<()> {
    let mut rows = Vec::new();
    for file in catalog::runbook_files(dirs) {
        let row = match Runbook::load(&file, silent_host(Mode::Plan)) {
            Ok(rb) => {
                let phases: Vec<String> = Phase::ALL
                    .iter()
                    .map(|p| {
                        let n = rb.steps.iter().filter(|s| s.phase == *p).count();
                        format!("{}{n}", &p.as_str()[..1].to_uppercase())
                    })
                    .collect();
                json!({
                    "id": rb.meta.id,
                    "version": rb.meta.version.to_string(),
                    "severity": rb.meta.severity.as_str(),
                    "phases": phases.join(" "),
                    "alerts": rb.meta.alerts,
                    "reviewed": rb.meta.reviewed.map(|d| d.to_string()),
                    "title": rb.meta.title,
                    "file": file.display().to_string(),
                    "valid": true,
                })
            }
            Err(_) => json!({"id": null, "file": file.display().to_string(), "valid": false}),
        };
        rows.push(row);
    }
    let mut result = Ok(());
    if let Some(name) = alert {
        let invalid = rows.iter().filter(|r| r["valid"] != true).count();
        rows.retain(|r| {
            r["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == name))
        });
        if rows.is_empty() {
            let folders = dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let unread = match invalid {
                0 => String::new(),
                n => format!(
                    " ({n} runbook file(s) could not be loaded and were not searched: `runbook check` says why)"
                ),
            };
            result = Err(Error::NoMatch(format!(
                "no runbook in {folders} answers alert {name:?}{unread}"
            )));
        }
    }
    match output {
        Output::Json => {
            return super::json::finish(
                "list",
                json!({
                    "status": if result.is_ok() { "ok" } else { "no_match" },
                    "alert": alert,
                    "runbooks": rows,
                }),
                result,
            );
        }
        Output::Human if result.is_err() => {}
        Output::Human => {
            let mut text = format!(
                "{:<28} {:<9} {:<4} {:<10} {:<11} {:<28} TITLE\n",
                "ID", "VERSION", "SEV", "PHASES", "REVIEWED", "ALERTS"
            );
            for r in &rows {
                if r["valid"] == true {
                    let alerts = r["alerts"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .filter(|a| !a.is_empty())
                        .unwrap_or_else(|| "-".into());
                    text.push_str(&format!(
                        "{:<28} {:<9} {:<4} {:<10} {:<11} {:<28} {}\n",
                        r["id"].as_str().unwrap_or(""),
                        r["version"].as_str().unwrap_or(""),
                        r["severity"].as_str().unwrap_or(""),
                        r["phases"].as_str().unwrap_or(""),
                        r["reviewed"].as_str().unwrap_or("never"),
                        alerts,
                        r["title"].as_str().unwrap_or("")
                    ));
                } else {
                    text.push_str(&format!(
                        "{:<28} (invalid: run `runbook check {}`)\n",
                        "?",
                        r["file"].as_str().unwrap_or("")
                    ));
                }
            }
            out(&text);
        }
    }
    result
}

pub(super) fn show(dirs: &[PathBuf], target: &str, output: Output) -> Result<()> {
    let rb = catalog::load(dirs, target, silent_host(Mode::Plan))?;
    if output == Output::Human {
        out(&rb.to_markdown());
        return Ok(());
    }
    let steps: Vec<serde_json::Value> = rb
        .steps
        .iter()
        .map(|s| {
            json!({
                "index": s.index,
                "phase": s.phase.as_str(),
                "title": s.title,
                "description": s.description,
                "timeout_ms": u64::try_from(s.timeout.as_millis()).unwrap_or(u64::MAX),
                "retries": s.retries,
                "backoff_ms": u64::try_from(s.backoff.as_millis()).unwrap_or(u64::MAX),
                "confirm": s.confirm,
                "allow_failure": s.allow_failure,
                "rollback": s.on_failure.is_some(),
                "conditional": s.when.is_some(),
            })
        })
        .collect();
    super::json::finish(
        "show",
        json!({
            "status": "ok",
            "file": rb.file,
            "runbook": rb.meta,
            "steps": steps,
        }),
        Ok(()),
    )
}
