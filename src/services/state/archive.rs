//! Transcripts off the box (the `aws` backend): every run's transcript in the S3 bucket, its
//! index entry and chain head in the table.
//!
//! **Objects** (all under `<prefix>/<run id>/`, each written once with `If-None-Match: *` and,
//! when `retention_days` is set, Object Lock in compliance mode until then):
//!
//! | object | holds | written |
//! |---|---|---|
//! | `part-<first>-<last>.jsonl` | the transcript's lines `first..=last` (seq numbers, 8 digits) | at every step boundary, with the lines since the last part |
//! | `transcript-<lines>.jsonl` | the whole transcript, `lines` lines | when the run finishes (again after a resume that finishes) |
//!
//! No object is ever replaced: a retry of the same upload finds its own bytes there (accepted),
//! and different bytes under a key that exists are refused loudly. A run that crashed has only
//! parts; they join into the transcript up to its last step boundary ([`AwsStore::fetch_transcript`]).
//!
//! **Index** (the table): one item per run, `pk = RUN`, `sk = <run id>` (ULIDs, so the sort key
//! orders runs by start): runbook `id@version`, environment, targets, operator, host, started,
//! finished, status, the whole transcript's key and the chain `head` with the number of lines
//! (`events`) it covers. The head only moves forward (a conditional update): it is what
//! `transcript verify` compares a file's last hash with, so a file cut short, or rewritten whole
//! with fresh hashes, fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use super::aws::{AwsStore, is_condition_failed, n, num, s, sdk_error, text};
use crate::base::error::{Error, Result};
use crate::data::transcript;

/// The index's partition: every run is one item under it.
const INDEX_PK: &str = "RUN";

/// A run's entry in the table's index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunEntry {
    pub run_id: String,
    /// `id@version`.
    pub runbook: String,
    pub environment: String,
    pub targets: Vec<String>,
    pub operator: String,
    /// The host that ran it (or last resumed it).
    pub host: String,
    /// RFC 3339.
    pub started: String,
    /// RFC 3339, when the run finished (its transcript ends with `run_finished`).
    pub finished: Option<String>,
    /// `running`, `interrupted` (its process ended before the run did), or the run's status.
    pub status: String,
    /// The whole transcript's key, once the run finished.
    pub key: Option<String>,
    /// The hash of the last archived line, and how many lines it closes.
    pub head: Option<String>,
    pub events: u64,
    /// The transcript's path on `host`.
    pub transcript: String,
}

/// One archived object of a run, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// Lines `first..=last`.
    Part { first: u64, last: u64 },
    /// The whole transcript of `lines` lines.
    Whole { lines: u64 },
}

impl Piece {
    fn parse(name: &str) -> Option<Piece> {
        let stem = name.strip_suffix(".jsonl")?;
        if let Some(range) = stem.strip_prefix("part-") {
            let (a, b) = range.split_once('-')?;
            let (first, last) = (a.parse().ok()?, b.parse().ok()?);
            return (first <= last).then_some(Piece::Part { first, last });
        }
        let lines = stem.strip_prefix("transcript-")?.parse().ok()?;
        (lines > 0).then_some(Piece::Whole { lines })
    }

    /// The first line and one past the last.
    fn range(self) -> (u64, u64) {
        match self {
            Piece::Part { first, last } => (first, last.saturating_add(1)),
            Piece::Whole { lines } => (0, lines),
        }
    }
}

/// What an upload found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Written,
    /// The same bytes were there already (a retry of an upload that had succeeded).
    AlreadyThere,
}

/// A run's transcript fetched from the archive by [`AwsStore::fetch_transcript`].
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    /// Lines in it (verified).
    pub events: usize,
    /// The hash of its last line.
    pub head: String,
    /// The status of its `run_finished`, None when the run never finished (cut off at a step
    /// boundary: resume it).
    pub finished: Option<String>,
    /// The objects it was joined from.
    pub keys: Vec<String>,
}

/// A run id as it may appear in a key: ULIDs and ids like them; never a path.
pub(crate) fn checked_run_id(run_id: &str) -> Result<&str> {
    let ok = !run_id.is_empty()
        && run_id.len() <= 128
        && run_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !run_id.starts_with('-');
    if ok {
        Ok(run_id)
    } else {
        Err(Error::Usage(format!(
            "{run_id:?} is not a run id (letters, digits, - and _)"
        )))
    }
}

impl AwsStore {
    /// The folder of a run's objects: `<prefix>/<run id>/`.
    pub(crate) fn run_folder(&self, run_id: &str) -> Result<String> {
        let id = checked_run_id(run_id)?;
        Ok(if self.prefix.is_empty() {
            format!("{id}/")
        } else {
            format!("{}/{id}/", self.prefix)
        })
    }

    pub(crate) fn part_key(&self, run_id: &str, first: u64, last: u64) -> Result<String> {
        Ok(format!(
            "{}part-{first:08}-{last:08}.jsonl",
            self.run_folder(run_id)?
        ))
    }

    pub(crate) fn whole_key(&self, run_id: &str, lines: u64) -> Result<String> {
        Ok(format!(
            "{}transcript-{lines:08}.jsonl",
            self.run_folder(run_id)?
        ))
    }

    /// Writes `body` at `key` if nothing is there (`If-None-Match: *`), with Object Lock in
    /// compliance mode for `retention_days` when set. A key that exists is never written: the
    /// same bytes there are accepted (a retry of an upload that succeeded), other bytes refused.
    pub fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<Stored> {
        let (s3, bucket, key_) = (self.s3.clone(), self.bucket.clone(), key.to_string());
        let lock_until = self.retention_days.map(|days| {
            chrono::Utc::now()
                .timestamp()
                .saturating_add(i64::from(days).saturating_mul(86_400))
        });
        let sent = body.clone();
        let put = self.run(async move {
            let mut req = s3
                .put_object()
                .bucket(bucket)
                .key(key_)
                .content_type("application/x-ndjson")
                .if_none_match("*")
                // S3 (and moto) want a checksum on every write that carries Object Lock.
                .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
                .body(aws_sdk_s3::primitives::ByteStream::from(sent));
            if let Some(until) = lock_until {
                req = req
                    .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Compliance)
                    .object_lock_retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
                        until,
                    ));
            }
            req.send().await
        })?;
        match put {
            Ok(_) => Ok(Stored::Written),
            // 412, or 409 when another write of the key is in flight.
            Err(e)
                if matches!(
                    e.code(),
                    Some("PreconditionFailed" | "ConditionalRequestConflict")
                ) =>
            {
                let there = self.get_object(&self.bucket, key)?;
                if there == body {
                    Ok(Stored::AlreadyThere)
                } else {
                    Err(Error::Environment(format!(
                        "s3://{}/{key} already exists with other content: an archived transcript is never overwritten (the local copy differs from what was archived)",
                        self.bucket
                    )))
                }
            }
            Err(e) => Err(sdk_error("transcript bucket", "PutObject", e)),
        }
    }

    /// The bytes of `s3://bucket/key`.
    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        let (s3, bucket_, key_) = (self.s3.clone(), bucket.to_string(), key.to_string());
        let got = self.run(async move {
            let out = s3.get_object().bucket(bucket_).key(key_).send().await?;
            Ok::<_, aws_sdk_s3::error::SdkError<_>>(out.body.collect().await)
        })?;
        match got {
            Ok(Ok(bytes)) => Ok(bytes.into_bytes().to_vec()),
            Ok(Err(e)) => Err(Error::Environment(format!(
                "transcript bucket: cannot read s3://{bucket}/{key}: {e}"
            ))),
            Err(e) if e.code() == Some("NoSuchKey") => Err(Error::NotFound(format!(
                "s3://{bucket}/{key} (no such object)"
            ))),
            Err(e) => Err(sdk_error("transcript bucket", "GetObject", e)),
        }
    }

    /// The run's archived objects, by name.
    fn pieces(&self, run_id: &str) -> Result<Vec<(Piece, String)>> {
        let folder = self.run_folder(run_id)?;
        let (s3, bucket, folder_) = (self.s3.clone(), self.bucket.clone(), folder.clone());
        let keys = self
            .run(async move {
                let mut keys = Vec::new();
                let mut token = None;
                loop {
                    let out = s3
                        .list_objects_v2()
                        .bucket(&bucket)
                        .prefix(&folder_)
                        .set_continuation_token(token)
                        .send()
                        .await?;
                    keys.extend(
                        out.contents()
                            .iter()
                            .filter_map(|o| o.key().map(str::to_string)),
                    );
                    match out.next_continuation_token() {
                        Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                        _ => return Ok::<_, aws_sdk_s3::error::SdkError<_>>(keys),
                    }
                }
            })?
            .map_err(|e| sdk_error("transcript bucket", "ListObjectsV2", e))?;
        Ok(keys
            .into_iter()
            .filter_map(|k| {
                let piece = Piece::parse(k.strip_prefix(&folder)?)?;
                Some((piece, k))
            })
            .collect())
    }

    /// The objects that join into the longest transcript from line 0 (the largest whole one,
    /// then the parts that continue it, in order), and how many lines they cover.
    fn chain_of(pieces: &[(Piece, String)]) -> (Vec<(Piece, String)>, u64) {
        let mut chosen = Vec::new();
        let mut covered = 0u64;
        if let Some(whole) = pieces
            .iter()
            .filter(|(p, _)| matches!(p, Piece::Whole { .. }))
            .max_by_key(|(p, _)| p.range().1)
        {
            covered = whole.0.range().1;
            chosen.push(whole.clone());
        }
        loop {
            // The part that starts at or before the first missing line and reaches furthest.
            let next = pieces
                .iter()
                .filter(|(p, _)| matches!(p, Piece::Part { .. }))
                .filter(|(p, _)| {
                    let (first, end) = p.range();
                    first <= covered && end > covered
                })
                .max_by_key(|(p, _)| p.range().1);
            match next {
                Some(piece) => {
                    covered = piece.0.range().1;
                    chosen.push(piece.clone());
                }
                None => return (chosen, covered),
            }
        }
    }

    /// How many lines of the run's transcript are archived, contiguous from line 0.
    pub(crate) fn archived_lines(&self, run_id: &str) -> Result<u64> {
        Ok(Self::chain_of(&self.pieces(run_id)?).1)
    }

    /// Fetches the archived transcript of run `run_id` into `dest`, a new local file, for taking
    /// the run over on another host (a replica whose peer died mid-run) or for reading it.
    ///
    /// The run's objects (`<prefix>/<run id>/`) are joined: the largest whole transcript, then
    /// the parts after it, so a run that crashed comes back up to its last archived step
    /// boundary. Nothing is written unless the joined text verifies (hash chain, from
    /// `run_started`) and reaches the chain head the table holds for the run (a shorter archive,
    /// or one whose line at the head differs, is refused). `dest` must not exist (a transcript is
    /// evidence, never overwritten); it is created 0600 with its missing folders 0700.
    ///
    /// To continue the run from it: `runbook resume <dest>` (or the launch machinery with
    /// `Launch::resume`), which appends to `dest`; its archiver then uploads from the line the
    /// archive ended with, so nothing archived is uploaded twice. Errors: `NotFound` when the run
    /// has no archived objects; `Environment` when the bucket or the table cannot be read, or
    /// what is archived is incomplete or does not verify.
    pub fn fetch_transcript(&self, run_id: &str, dest: &Path) -> Result<Fetched> {
        let (bytes, keys) = self.joined_transcript(run_id)?;
        let shown = PathBuf::from(format!("s3://{}/{}", self.bucket, self.run_folder(run_id)?));
        let (events, report) = transcript::read_verified_from(std::io::Cursor::new(&bytes), &shown)
            .map_err(|e| {
                Error::Environment(format!(
                    "the archived transcript of run {run_id} does not verify: {e}"
                ))
            })?;
        if let Some(entry) = self.run_entry(run_id)? {
            check_reaches_head(&entry, &events)?;
        }
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            transcript::create_private_dir(parent)
                .map_err(|e| Error::io("cannot create the folder of", dest, e))?;
        }
        let mut file = transcript::create_private(dest)
            .map_err(|e| Error::io("cannot create (it must not exist yet)", dest, e))?;
        std::io::Write::write_all(&mut file, &bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("cannot write", dest, e))?;
        Ok(Fetched {
            path: dest.to_path_buf(),
            events: report.events,
            head: report.head,
            finished: report.finished,
            keys,
        })
    }

    /// The run's transcript joined from its objects (not verified), and their keys.
    pub(crate) fn joined_transcript(&self, run_id: &str) -> Result<(Vec<u8>, Vec<String>)> {
        let pieces = self.pieces(run_id)?;
        if pieces.is_empty() {
            return Err(Error::NotFound(format!(
                "run {run_id} in s3://{}/{} (nothing archived)",
                self.bucket,
                self.run_folder(run_id)?
            )));
        }
        let (chain, covered) = Self::chain_of(&pieces);
        if let Some(gap) = pieces
            .iter()
            .map(|(p, _)| p.range().0)
            .filter(|first| *first > covered)
            .min()
        {
            return Err(Error::Environment(format!(
                "the archive of run {run_id} is missing lines {covered}..{}: its parts do not join",
                gap.saturating_sub(1)
            )));
        }
        let mut joined: Vec<u8> = Vec::new();
        let mut lines = 0u64;
        let mut keys = Vec::new();
        for (piece, key) in chain {
            let body = self.get_object(&self.bucket, &key)?;
            let (first, end) = piece.range();
            let mut in_piece = 0u64;
            for line in body.split_inclusive(|b| *b == b'\n') {
                let seq = first.saturating_add(in_piece);
                in_piece += 1;
                if seq >= lines && seq < end {
                    joined.extend_from_slice(line);
                    lines = seq.saturating_add(1);
                }
            }
            if first.saturating_add(in_piece) != end {
                return Err(Error::Environment(format!(
                    "s3://{}/{key} holds {in_piece} line(s), not the {} its name says",
                    self.bucket,
                    end.saturating_sub(first)
                )));
            }
            keys.push(key);
        }
        Ok((joined, keys))
    }

    // ---- the index ----------------------------------------------------------------------------

    /// Records a run that starts (or resumes) in the index: its description and status
    /// `running` (`live`), or, for an upload finished later by another process, only what the
    /// entry lacks (status `interrupted` if it has none). The head it has is kept (it only moves
    /// forward).
    pub(crate) fn index_started(&self, e: &RunEntry, live: bool) -> Result<()> {
        checked_run_id(&e.run_id)?;
        let (ddb, table) = (self.ddb().clone(), self.table.clone());
        let e = e.clone();
        let update = if live {
            "SET #rb = :rb, #env = :env, #tg = :tg, #op = :op, #host = :host, #tr = :tr, #st = :st, #started = if_not_exists(#started, :started) REMOVE #fin, #key"
        } else {
            "SET #rb = if_not_exists(#rb, :rb), #env = if_not_exists(#env, :env), #tg = if_not_exists(#tg, :tg), #op = if_not_exists(#op, :op), #host = if_not_exists(#host, :host), #tr = if_not_exists(#tr, :tr), #st = if_not_exists(#st, :st), #started = if_not_exists(#started, :started)"
        };
        let status = if live { "running" } else { "interrupted" };
        self.run(async move {
            let req = ddb
                .update_item()
                .table_name(table)
                .key("pk", s(INDEX_PK))
                .key("sk", s(&e.run_id))
                .update_expression(update);
            // A resumed run is running again: its earlier end and whole transcript are history
            // (the objects stay; `show` joins the newer parts after them).
            let req = if live {
                req.expression_attribute_names("#fin", "finished")
                    .expression_attribute_names("#key", "key")
            } else {
                req
            };
            req.expression_attribute_names("#rb", "runbook")
                .expression_attribute_names("#env", "environment")
                .expression_attribute_names("#tg", "targets")
                .expression_attribute_names("#op", "operator")
                .expression_attribute_names("#host", "host")
                .expression_attribute_names("#tr", "transcript")
                .expression_attribute_names("#st", "status")
                .expression_attribute_names("#started", "started")
                .expression_attribute_values(":rb", s(&e.runbook))
                .expression_attribute_values(":env", s(&e.environment))
                .expression_attribute_values(
                    ":tg",
                    AttributeValue::L(e.targets.iter().map(s).collect()),
                )
                .expression_attribute_values(":op", s(&e.operator))
                .expression_attribute_values(":host", s(&e.host))
                .expression_attribute_values(":tr", s(&e.transcript))
                .expression_attribute_values(":st", s(status))
                .expression_attribute_values(":started", s(&e.started))
                .send()
                .await
        })?
        .map(|_| ())
        .map_err(|e| sdk_error("state table", "UpdateItem", e))
    }

    /// Moves the run's head forward to `head` (the hash of line `events - 1`), and when `end`
    /// is given records its status, finish time and whole transcript's key. Refused (loudly) if
    /// the table holds a longer head, or another head for as many lines: the archive would then
    /// disagree with itself.
    pub(crate) fn index_head(
        &self,
        run_id: &str,
        head: &str,
        events: u64,
        end: Option<(&str, &str, &str)>,
    ) -> Result<()> {
        checked_run_id(run_id)?;
        let (ddb, table) = (self.ddb().clone(), self.table.clone());
        let (id, head_, end_) = (
            run_id.to_string(),
            head.to_string(),
            end.map(|(st, at, key)| (st.to_string(), at.to_string(), key.to_string())),
        );
        let count = i64::try_from(events).unwrap_or(i64::MAX);
        let updated = self.run(async move {
            let mut req = ddb
                .update_item()
                .table_name(table)
                .key("pk", s(INDEX_PK))
                .key("sk", s(id))
                .condition_expression(
                    "attribute_not_exists(#ev) OR #ev < :ev OR (#ev = :ev AND #head = :head)",
                )
                .expression_attribute_names("#ev", "events")
                .expression_attribute_names("#head", "head")
                .expression_attribute_values(":ev", n(count))
                .expression_attribute_values(":head", s(head_));
            req = match end_ {
                Some((status, at, key)) => req
                    .update_expression(
                        "SET #head = :head, #ev = :ev, #st = :st, #fin = :fin, #key = :key",
                    )
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_names("#fin", "finished")
                    .expression_attribute_names("#key", "key")
                    .expression_attribute_values(":st", s(status))
                    .expression_attribute_values(":fin", s(at))
                    .expression_attribute_values(":key", s(key)),
                None => req.update_expression("SET #head = :head, #ev = :ev"),
            };
            req.send().await
        })?;
        match updated {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(Error::Environment(format!(
                "state table: run {run_id} already has a head past line {events} or another head at it: this transcript is not the one archived"
            ))),
            Err(e) => Err(sdk_error("state table", "UpdateItem", e)),
        }
    }

    /// Sets the status of a run whose process ended before the run did (`interrupted`), unless
    /// it finished or resumed meanwhile.
    pub(crate) fn index_interrupted(&self, run_id: &str) -> Result<()> {
        let (ddb, table, id) = (self.ddb().clone(), self.table.clone(), run_id.to_string());
        let updated = self.run(async move {
            ddb.update_item()
                .table_name(table)
                .key("pk", s(INDEX_PK))
                .key("sk", s(id))
                .update_expression("SET #st = :int")
                .condition_expression("#st = :running")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":int", s("interrupted"))
                .expression_attribute_values(":running", s("running"))
                .send()
                .await
        })?;
        match updated {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk_error("state table", "UpdateItem", e)),
        }
    }

    /// The index entry of `run_id`, if the table has one.
    pub fn run_entry(&self, run_id: &str) -> Result<Option<RunEntry>> {
        checked_run_id(run_id)?;
        Ok(self.get(INDEX_PK, run_id)?.map(|item| entry_of(&item)))
    }

    /// Every run in the index started at or after `since_ms` (epoch ms; all without), oldest
    /// first.
    pub fn run_entries(&self, since_ms: Option<i64>) -> Result<Vec<RunEntry>> {
        // Run ids are ULIDs: the first ULID of a millisecond bounds every run started in it.
        let from = since_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| ulid::Ulid::from_parts(ms, 0).to_string().to_lowercase());
        let (ddb, table) = (self.ddb().clone(), self.table.clone());
        let items = self
            .run(async move {
                let mut items = Vec::new();
                let mut start = None;
                loop {
                    let mut q = ddb
                        .query()
                        .table_name(&table)
                        .consistent_read(true)
                        .expression_attribute_values(":pk", s(INDEX_PK))
                        .set_exclusive_start_key(start);
                    q = match &from {
                        Some(from) => q
                            .key_condition_expression("pk = :pk AND sk >= :from")
                            .expression_attribute_values(":from", s(from)),
                        None => q.key_condition_expression("pk = :pk"),
                    };
                    let out = q.send().await?;
                    items.extend(out.items.unwrap_or_default());
                    match out.last_evaluated_key {
                        Some(k) if !k.is_empty() => start = Some(k),
                        _ => return Ok::<_, aws_sdk_dynamodb::error::SdkError<_>>(items),
                    }
                }
            })?
            .map_err(|e| sdk_error("state table", "Query", e))?;
        Ok(items.iter().map(entry_of).collect())
    }
}

/// Checks that a verified transcript's `events` reach the head the table holds for its run:
/// at least as many lines, and the line at the head is the one archived.
pub(crate) fn check_reaches_head(entry: &RunEntry, events: &[serde_json::Value]) -> Result<()> {
    let Some(head) = &entry.head else {
        return Ok(());
    };
    let at = usize::try_from(entry.events).unwrap_or(usize::MAX);
    let line_hash = at
        .checked_sub(1)
        .and_then(|i| events.get(i))
        .and_then(|e| e["hash"].as_str());
    match line_hash {
        None => Err(Error::Environment(format!(
            "run {}: the table's head closes line {at}, but the transcript has {} line(s): its tail was cut",
            entry.run_id,
            events.len()
        ))),
        Some(h) if h != head => Err(Error::Environment(format!(
            "run {}: line {at}'s hash {} is not the head the table holds ({}): the transcript was rewritten",
            entry.run_id,
            short(h),
            short(head)
        ))),
        Some(_) => Ok(()),
    }
}

/// The first 12 characters of a hash, for messages.
pub(crate) fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn entry_of(item: &HashMap<String, AttributeValue>) -> RunEntry {
    RunEntry {
        run_id: text(item, "sk").unwrap_or_default(),
        runbook: text(item, "runbook").unwrap_or_default(),
        environment: text(item, "environment").unwrap_or_default(),
        targets: item
            .get("targets")
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|t| t.as_s().ok().cloned()).collect())
            .unwrap_or_default(),
        operator: text(item, "operator").unwrap_or_default(),
        host: text(item, "host").unwrap_or_default(),
        started: text(item, "started").unwrap_or_default(),
        finished: text(item, "finished"),
        status: text(item, "status").unwrap_or_default(),
        key: text(item, "key"),
        head: text(item, "head"),
        events: num(item, "events")
            .and_then(|e| u64::try_from(e).ok())
            .unwrap_or(0),
        transcript: text(item, "transcript").unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(first: u64, last: u64) -> (Piece, String) {
        (Piece::Part { first, last }, format!("p{first}-{last}"))
    }

    #[test]
    fn object_names_parse_back_to_their_lines() {
        assert_eq!(
            Piece::parse("part-00000003-00000007.jsonl"),
            Some(Piece::Part { first: 3, last: 7 })
        );
        assert_eq!(
            Piece::parse("transcript-00000012.jsonl"),
            Some(Piece::Whole { lines: 12 })
        );
        for other in [
            "part-7-3.jsonl",
            "transcript-0.jsonl",
            "notes.md",
            "part-1.jsonl",
        ] {
            assert_eq!(Piece::parse(other), None, "{other}");
        }
    }

    #[test]
    fn the_chain_takes_the_largest_whole_then_the_parts_that_continue_it() {
        let pieces = vec![
            part(0, 4),
            part(5, 9),
            (Piece::Whole { lines: 8 }, "w8".into()),
            part(8, 12),
            part(20, 22),
        ];
        let (chain, covered) = AwsStore::chain_of(&pieces);
        let keys: Vec<&str> = chain.iter().map(|(_, k)| k.as_str()).collect();
        assert_eq!(keys, ["w8", "p8-12"]);
        assert_eq!(covered, 13, "the part from line 20 does not join");
        // A retried, larger part overlapping the one before it continues the chain.
        let (chain, covered) = AwsStore::chain_of(&[part(0, 2), part(0, 5), part(3, 4)]);
        assert_eq!(covered, 6);
        assert_eq!(chain.len(), 1);
    }

    #[test]
    fn a_run_id_that_is_not_one_never_becomes_a_key() {
        for bad in ["", "../x", "a/b", "-rf", "a b"] {
            assert!(checked_run_id(bad).is_err(), "{bad}");
        }
        assert!(checked_run_id("01jd8x3k2m4n5p6q7r8s9t0v1w").is_ok());
    }
}
