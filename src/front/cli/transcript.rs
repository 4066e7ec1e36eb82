//! `runbook transcript verify|show|render|list|upload`.
//!
//! A transcript is named by its file, by `s3://bucket/key`, or (`show`) by its run id: with
//! `[state] backend = "aws"` the state table's index says where the run is archived, with
//! `local` the transcripts folder of this host is searched.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::Global;
use super::args::{Output, RenderFormat, TranscriptCommand};
use crate::base::error::{Error, Result};
use crate::data::transcript;
use crate::services::state::Store;
use crate::services::state::archive::{RunEntry, check_reaches_head, checked_run_id, short};
use crate::services::state::aws::AwsStore;

pub(super) fn command(g: &Global, cmd: TranscriptCommand) -> Result<()> {
    match cmd {
        TranscriptCommand::Verify {
            file,
            allow_unfinished,
            key_file,
            chain_only,
            output,
        } => verify(
            g,
            &file,
            allow_unfinished,
            key_file.as_deref(),
            chain_only,
            output,
        ),
        TranscriptCommand::Show { run, output } => {
            let (events, report, file) = load(g, &run)?;
            if output == Output::Human {
                super::out(&transcript::show(&events));
                return Ok(());
            }
            let mut doc = match report.kind {
                transcript::Kind::Run => super::json::run_summary(&events),
                transcript::Kind::Journal => serde_json::json!({}),
            };
            doc["kind"] = kind_name(report.kind).into();
            doc["file"] = file.display().to_string().into();
            doc["events"] = Value::Array(events);
            super::json::finish("transcript show", doc, Ok(()))
        }
        TranscriptCommand::Render { file, format } => {
            let (events, report) = transcript::read_verified(&file)?;
            if report.kind == transcript::Kind::Journal {
                return Err(Error::Usage(format!(
                    "{} is a hook journal, not a run: `runbook transcript show` prints it",
                    file.display()
                )));
            }
            let text = match format {
                RenderFormat::Md => transcript::render_markdown(&events, &report, &file),
                RenderFormat::Html => transcript::render_html(&events, &report, &file),
            };
            super::out(&text);
            Ok(())
        }
        TranscriptCommand::List {
            runbook,
            target,
            since,
            limit,
            output,
        } => list(
            g,
            runbook.as_deref(),
            target.as_deref(),
            since.as_deref(),
            limit,
            output,
        ),
        TranscriptCommand::Upload => upload(g),
        TranscriptCommand::Prune {
            hooks,
            dry_run,
            keep_days,
            max_size,
        } => prune(g, &super::hooks_file(hooks), dry_run, keep_days, max_size),
        TranscriptCommand::Fetch { run_id, to } => {
            let config = g.load_config()?;
            let to = to.unwrap_or_else(|| crate::run::executor::default_transcript_path(&run_id));
            let got = Store::open(config.state())?.fetch_transcript(&run_id, &to)?;
            super::out(&format!(
                "fetched run {run_id}: {} · {} lines · head {} · {}\n",
                got.path.display(),
                got.events,
                got.head,
                match &got.finished {
                    Some(status) => format!("run finished: {status}"),
                    None => format!(
                        "the run never finished: `runbook resume {}` continues it",
                        got.path.display()
                    ),
                }
            ));
            Ok(())
        }
    }
}

/// The aws store of the configuration, or None with `local`.
fn aws_store(g: &Global) -> Result<Option<Arc<AwsStore>>> {
    let config = g.load_config()?;
    Ok(Store::open(config.state())?.aws())
}

/// `s3://bucket/key` as (bucket, key).
fn s3_url(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("s3://")?;
    rest.split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
}

/// A transcript named by a file, `s3://bucket/key` or a run id: its verified events and report,
/// and the name it is shown under.
fn load(g: &Global, name: &str) -> Result<(Vec<Value>, transcript::VerifyReport, PathBuf)> {
    let path = Path::new(name);
    if path.is_file() {
        let (events, report) = transcript::read_verified(path)?;
        return Ok((events, report, path.to_path_buf()));
    }
    let (bytes, shown) = if let Some((bucket, key)) = s3_url(name) {
        let store = aws_store(g)?.ok_or_else(|| {
            Error::Usage(format!(
                "{name}: reading from S3 needs [state] backend = \"aws\" in runbook.toml (its region, profile and endpoint)"
            ))
        })?;
        (store.get_object(bucket, key)?, PathBuf::from(name))
    } else if checked_run_id(name).is_ok() {
        match aws_store(g)? {
            // A run archived by the team; else one this host ran before the aws backend.
            Some(store) => match archived_by_run_id(&store, name) {
                Err(Error::NotFound(why)) => {
                    let found = crate::services::approvals::find_transcript(name)
                        .map_err(|_| Error::NotFound(why))?;
                    let (events, report) = transcript::read_verified(&found)?;
                    return Ok((events, report, found));
                }
                other => other?,
            },
            None => {
                let found = crate::services::approvals::find_transcript(name)?;
                let (events, report) = transcript::read_verified(&found)?;
                return Ok((events, report, found));
            }
        }
    } else {
        return Err(Error::NotFound(format!(
            "{name}: no such file, and not an s3:// URL or a run id"
        )));
    };
    let (events, report) = transcript::read_verified_from(std::io::Cursor::new(&bytes), &shown)?;
    Ok((events, report, shown))
}

/// A run's archived transcript: the whole one the index names, else its parts joined (a run
/// still running, or cut off).
fn archived_by_run_id(store: &AwsStore, run_id: &str) -> Result<(Vec<u8>, PathBuf)> {
    let entry = store.run_entry(run_id)?;
    if let Some(key) = entry.as_ref().and_then(|e| e.key.clone()) {
        let shown = PathBuf::from(format!("s3://{}/{key}", store.bucket()));
        return Ok((store.get_object(store.bucket(), &key)?, shown));
    }
    let (bytes, _) = store
        .joined_transcript(run_id)
        .map_err(|e| match (e, &entry) {
            (Error::NotFound(_), None) => Error::NotFound(format!(
                "run {run_id} (not in table {} nor in s3://{}/)",
                store.table(),
                store.bucket()
            )),
            (e, _) => e,
        })?;
    let shown = PathBuf::from(format!(
        "s3://{}/{}",
        store.bucket(),
        store.run_folder(run_id)?
    ));
    Ok((bytes, shown))
}

/// `run` or `journal`, as the JSON documents name a transcript's kind.
fn kind_name(kind: transcript::Kind) -> &'static str {
    match kind {
        transcript::Kind::Run => "run",
        transcript::Kind::Journal => "journal",
    }
}

fn verify(
    g: &Global,
    name: &str,
    allow_unfinished: bool,
    key_file: Option<&Path>,
    chain_only: bool,
    output: Output,
) -> Result<()> {
    let (events, report, file) = load(g, name)?;
    let mut signatures = None;
    let signed = match key_file {
        Some(key) => {
            let signer = transcript::Signer::from_file(key)?;
            let n = transcript::check_signatures(&file, &events, &report, &signer)?;
            signatures = Some((n, signer.key_id.clone()));
            format!(" · {n} signature(s) verified with key {}", signer.key_id)
        }
        None => String::new(),
    };
    let end = match (report.kind, &report.finished) {
        (transcript::Kind::Journal, _) => "hook journal (a log: it has no end to check)".into(),
        (transcript::Kind::Run, Some(status)) => format!("run finished: {status}"),
        (transcript::Kind::Run, None) if allow_unfinished => {
            "the run never finished (crashed, still running, or cut short; accepted with --allow-unfinished)".into()
        }
        (transcript::Kind::Run, None) => {
            return Err(Error::TranscriptBroken {
                path: file.clone(),
                line: report.events,
                reason: "the run never finished: the transcript does not end with run_finished (it crashed, is still running, or was cut short); `runbook resume` continues it, --allow-unfinished accepts it as it is".into(),
            });
        }
    };
    let archived = if chain_only {
        String::new()
    } else {
        match aws_store(g)? {
            Some(store) => head_check(&store, &file, &events, &report, allow_unfinished)?,
            None => String::new(),
        }
    };
    let legacy = match report.legacy_lines {
        0 => String::new(),
        n => {
            format!(" · {n} line(s) in the form of an earlier version (keys in the writer's order)")
        }
    };
    if output == Output::Json {
        let doc = serde_json::json!({
            "status": "ok",
            "file": file.display().to_string(),
            "kind": kind_name(report.kind),
            "run_id": report.run_id,
            "events": report.events,
            "head": report.head,
            "finished": report.finished,
            "signatures": signatures.as_ref().map(|(n, _)| n),
            "key_id": signatures.as_ref().map(|(_, k)| k),
            "head_checked": !archived.is_empty(),
            "legacy_lines": report.legacy_lines,
            "detail": format!("{end}{signed}{archived}{legacy}").trim_start_matches(" · ").to_string(),
        });
        return super::json::finish("transcript verify", doc, Ok(()));
    }
    super::out(&format!(
        "ok: {} · {} events · chain intact · head {} · {end}{signed}{archived}{legacy}\n",
        file.display(),
        report.events,
        report.head
    ));
    Ok(())
}

/// With the aws backend, a run's transcript must end at the head the table holds for the run:
/// a file cut short, or rewritten whole with fresh hashes, fails. What it adds to the ok line.
fn head_check(
    store: &AwsStore,
    file: &Path,
    events: &[Value],
    report: &transcript::VerifyReport,
    allow_unfinished: bool,
) -> Result<String> {
    let broken = |line: usize, reason: String| Error::TranscriptBroken {
        path: file.to_path_buf(),
        line,
        reason,
    };
    let first = events.first().cloned().unwrap_or_default();
    let mode = first["mode"].as_str().unwrap_or("");
    // Drills run in the simulator under the operator "drill", and take no lock.
    let drill = first["operator"] == "drill" && first["backend"] == "sim";
    if report.kind != transcript::Kind::Run || mode != "run" || drill {
        // Journals, plans, drills and repl sessions are not archived: their chain is all there is.
        return Ok(String::new());
    }
    let run_id = report.run_id.clone().unwrap_or_default();
    let entry: Option<RunEntry> = match checked_run_id(&run_id) {
        Ok(id) => store.run_entry(id)?,
        Err(_) => None,
    };
    let Some(entry) = entry else {
        return Err(broken(
            1,
            format!(
                "run {run_id:?} has no entry in state table {}: it was never archived, so its head cannot be checked (a run under the local backend: --chain-only checks the chain alone)",
                store.table()
            ),
        ));
    };
    let Some(head) = entry.head.clone() else {
        return Err(broken(
            1,
            format!(
                "run {run_id} has no archived head in state table {} yet (its uploads are pending: `runbook transcript upload` on {})",
                store.table(),
                entry.host
            ),
        ));
    };
    check_reaches_head(&entry, events).map_err(|e| {
        let line = usize::try_from(entry.events)
            .unwrap_or(usize::MAX)
            .min(events.len());
        broken(line.max(1), format!("{e} (state table {})", store.table()))
    })?;
    let archived = usize::try_from(entry.events).unwrap_or(usize::MAX);
    if events.len() > archived {
        let running = matches!(entry.status.as_str(), "running" | "interrupted");
        if !(running && allow_unfinished) {
            return Err(broken(
                archived.saturating_add(1),
                format!(
                    "{} line(s) after the head archived for run {run_id} (line {archived}, status {}): not archived (`runbook transcript upload` on {} finishes a pending upload) or appended since",
                    events.len() - archived,
                    entry.status,
                    entry.host
                ),
            ));
        }
        return Ok(format!(
            " · the table's head is line {archived} ({}; the run is {}): {} line(s) after it not archived yet",
            short(&head),
            entry.status,
            events.len() - archived
        ));
    }
    Ok(format!(
        " · head matches state table {} (run {run_id}, {})",
        store.table(),
        entry.status
    ))
}

/// Parses `--since`: a date, an RFC 3339 time, or a duration ago. Epoch ms.
fn since_ms(text: &str) -> Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    if let Some(t) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Ok(t.and_utc().timestamp_millis());
    }
    let ago = crate::base::clock::parse_duration(text).map_err(|_| {
        Error::Usage(format!(
            "--since {text}: give a date (2026-11-30), an RFC 3339 time or a duration ago (24h)"
        ))
    })?;
    let ago = chrono::Duration::from_std(ago).unwrap_or(chrono::Duration::MAX);
    Ok(chrono::Utc::now()
        .checked_sub_signed(ago)
        .map_or(0, |t| t.timestamp_millis()))
}

fn list(
    g: &Global,
    runbook: Option<&str>,
    target: Option<&str>,
    since: Option<&str>,
    limit: usize,
    output: Output,
) -> Result<()> {
    let since = since.map(since_ms).transpose()?;
    let (mut runs, source, bucket) = match aws_store(g)? {
        Some(store) => (
            store.run_entries(since)?,
            format!("state table {}", store.table()),
            store.bucket().to_string(),
        ),
        None => {
            let (runs, source) = local_runs(since);
            (runs, source, String::new())
        }
    };
    runs.retain(|r| {
        runbook.is_none_or(|id| r.runbook == id || r.runbook.starts_with(&format!("{id}@")))
            && target.is_none_or(|t| r.targets.iter().any(|x| x == t))
    });
    // Newest first (run ids are ULIDs: they sort by start).
    runs.sort_by(|a, b| b.run_id.cmp(&a.run_id));
    runs.truncate(limit);
    match output {
        Output::Json => {
            return super::json::finish(
                "transcript list",
                serde_json::json!({ "source": source, "runs": runs }),
                Ok(()),
            );
        }
        Output::Human => {
            if runs.is_empty() {
                super::err(&format!("no runs found in {source}\n"));
            }
            for r in &runs {
                super::out(&format!(
                    "{}  {}  {}  {}  {}  by {} on {}  targets {}  {}\n",
                    r.run_id,
                    r.started,
                    r.status,
                    r.runbook,
                    r.environment,
                    r.operator,
                    r.host,
                    if r.targets.is_empty() {
                        "-".to_string()
                    } else {
                        r.targets.join(",")
                    },
                    r.key
                        .as_deref()
                        .map_or_else(|| r.transcript.clone(), |k| format!("s3://{bucket}/{k}"))
                ));
            }
        }
    }
    Ok(())
}

/// The runs whose transcripts are under this host's transcripts folder (`RUNBOOK_TRANSCRIPTS` or
/// ./transcripts), as index entries: read from their first and last lines (not verified: `show`
/// and `verify` do that). With `local`, the targets are the run's parameter values: the
/// transcript does not say which parameters the runbook marks `target: true`.
fn local_runs(since: Option<i64>) -> (Vec<RunEntry>, String) {
    let root = crate::data::config::transcripts_dir();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let mut runs = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "jsonl")
                && let Some(run) = local_run(&path, &host)
            {
                runs.push(run);
            }
        }
    }
    if let Some(since) = since {
        runs.retain(|r| {
            chrono::DateTime::parse_from_rfc3339(&r.started)
                .is_ok_and(|t| t.timestamp_millis() >= since)
        });
    }
    (runs, format!("{} on this host", root.display()))
}

fn local_run(path: &Path, host: &str) -> Option<RunEntry> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).ok()?;
    let mut lines = std::io::BufReader::new(file)
        .lines()
        .map_while(std::result::Result::ok);
    let first: Value = serde_json::from_str(&lines.next()?).ok()?;
    let transcript::Event::RunStarted {
        run_id,
        runbook,
        operator,
        mode,
        environment,
        params,
        ..
    } = transcript::Event::parse(&first).ok()?
    else {
        return None;
    };
    if mode != "run" {
        return None;
    }
    let last = lines
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .filter(|e| e["type"] != "signature")
        .last();
    let finished = last.as_ref().filter(|e| e["type"] == "run_finished");
    let targets = params
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Some(RunEntry {
        run_id,
        runbook: format!("{}@{}", runbook.id, runbook.version),
        environment,
        targets,
        operator,
        host: host.to_string(),
        started: first["ts"].as_str().unwrap_or_default().to_string(),
        finished: finished.and_then(|e| e["ts"].as_str().map(str::to_string)),
        status: finished
            .and_then(|e| e["status"].as_str().map(str::to_string))
            .unwrap_or_else(|| "unfinished".into()),
        key: None,
        head: last.and_then(|e| e["hash"].as_str().map(str::to_string)),
        events: 0,
        transcript: path.display().to_string(),
    })
}

fn prune(
    g: &Global,
    hooks: &Path,
    dry_run: bool,
    keep_days: Option<u32>,
    max_size: Option<u64>,
) -> Result<()> {
    use crate::front::hooks::retention;
    let hooks = crate::front::hooks::config::Hooks::load(hooks)?;
    let config = g.load_config()?;
    let mut settings = hooks.file.retention.clone();
    if keep_days.is_some() {
        settings.keep_days = keep_days;
    }
    if max_size.is_some() {
        settings.max_size = max_size;
    }
    let policy = retention::Policy::of(&settings);
    if !policy.is_set() {
        return Err(Error::Usage(format!(
            "no retention policy: set keep_days or max_size under [retention] in {}, or give --keep-days / --max-size",
            hooks.path.display()
        )));
    }
    let spool = (config.state().backend == crate::data::config::StateBackend::Aws)
        .then(|| config.state().spool.clone());
    let root = hooks.transcripts();
    let plan = retention::plan(
        &root,
        policy,
        spool.as_deref(),
        std::time::SystemTime::now(),
    );
    println!("{}:", root.display());
    for line in retention::describe(&root, &plan, dry_run) {
        println!("{line}");
    }
    if dry_run {
        return Ok(());
    }
    let done = retention::apply(&root, &plan);
    println!(
        "deleted {} files ({} bytes); {} files ({} bytes) kept{}",
        done.deleted.len(),
        done.deleted_bytes,
        done.kept_files,
        done.kept_bytes,
        if done.became_busy > 0 {
            format!(
                "; {} run(s) started being written meanwhile and were kept",
                done.became_busy
            )
        } else {
            String::new()
        }
    );
    if done.errors.is_empty() {
        Ok(())
    } else {
        for e in &done.errors {
            eprintln!("error: cannot delete {e}");
        }
        Err(Error::Environment(format!(
            "{} file(s) could not be deleted (see above)",
            done.errors.len()
        )))
    }
}

fn upload(g: &Global) -> Result<()> {
    let Some(store) = aws_store(g)? else {
        return Err(Error::Usage(
            "the state backend is local: transcripts stay on this host, nothing is uploaded (set [state] backend = \"aws\")".into(),
        ));
    };
    let (lines, all) = crate::services::state::upload::retry_pending(&store);
    if lines.is_empty() {
        super::out("no pending uploads\n");
    }
    for line in &lines {
        super::out(&format!("{line}\n"));
    }
    if all {
        Ok(())
    } else {
        Err(Error::Environment(
            "some transcripts are still not archived (see above); run `runbook transcript upload` again once the bucket and table answer".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_a_date_a_time_or_a_duration_ago() {
        assert_eq!(since_ms("2026-11-30").unwrap(), 1_795_996_800_000);
        assert_eq!(
            since_ms("2026-11-30T01:00:00Z").unwrap(),
            1_795_996_800_000 + 3_600_000
        );
        let ago = since_ms("24h").unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        assert!(ago <= now - 86_400_000 && ago > now - 86_500_000);
        assert!(since_ms("last tuesday").is_err());
    }

    #[test]
    fn only_a_bucket_and_a_key_make_an_s3_url() {
        assert_eq!(s3_url("s3://b/k/x.jsonl"), Some(("b", "k/x.jsonl")));
        for bad in ["s3://b", "s3:///k", "s3://b/", "b/k"] {
            assert_eq!(s3_url(bad), None, "{bad}");
        }
    }
}
