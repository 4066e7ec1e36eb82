//! The hook journal and the run records of every `serve` replica, in the table (aws backend), so
//! `GET /runs` on any replica answers for the whole team.
//!
//! | item | pk / sk | written |
//! |---|---|---|
//! | journal lines | `JOURNAL#<journal>` / the first line's number (12 digits) | one put per chunk of a written batch, before the batch is acknowledged |
//! | run record | `RUNS#<day of the run id>` / `<run id>` | put unless the stored record is further along (`rank`) |
//!
//! A run id is a ULID: its first characters are its creation time, so the day (the partition) is
//! known from the id alone (`GET /runs/ID` is one GetItem) and ids sort by time inside a day
//! (`GET /runs` queries the newest days backwards). Records and lines carry `ttl` for clean-up
//! only, as every item of the table.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;

use super::aws::{AwsStore, is_condition_failed, n, s, sdk, text};
use crate::base::error::{Error, Result};

/// How long run records and journal lines are kept (TTL clean-up; nothing depends on it).
const KEEP_DAYS: i64 = 90;
/// How many days back `GET /runs` looks for the newest runs.
const LIST_DAYS: i64 = 14;
/// Bytes of journal text per item: DynamoDB's item limit is 400 KB.
const CHUNK_BYTES: usize = 300 * 1024;

/// The partition of a run's record: the UTC day its ULID was made, or None for an id that is
/// not one (never written by `serve`).
pub(crate) fn run_partition(run_id: &str) -> Option<String> {
    let ulid = ulid::Ulid::from_string(&run_id.to_ascii_uppercase()).ok()?;
    let ms = i64::try_from(ulid.timestamp_ms()).ok()?;
    let day = chrono::DateTime::from_timestamp_millis(ms)?.format("%Y-%m-%d");
    Some(format!("RUNS#{day}"))
}

fn keep_until(now_ms: i64) -> AttributeValue {
    n(now_ms
        .saturating_div(1000)
        .saturating_add(KEEP_DAYS.saturating_mul(86_400)))
}

impl AwsStore {
    /// Stores the lines `first` onwards of journal `journal` (one batch, as written to the
    /// replica's file), in chunks that fit an item. All or nothing as far as it can be: when a
    /// chunk fails, the chunks of this batch already written are deleted again, so the next
    /// batch (which takes the same numbers) leaves no stray lines behind.
    pub fn put_journal_lines(&self, journal: &str, first: u64, lines: &[String]) -> Result<()> {
        let mut chunks: Vec<(u64, String)> = Vec::new();
        let mut number = first;
        for line in lines {
            match chunks.last_mut() {
                Some((_, text)) if text.len().saturating_add(line.len()) < CHUNK_BYTES => {
                    text.push_str(line);
                    text.push('\n');
                }
                _ => chunks.push((number, format!("{line}\n"))),
            }
            number = number.saturating_add(1);
        }
        let pk = format!("JOURNAL#{journal}");
        let now = chrono::Utc::now().timestamp_millis();
        let mut written: Vec<String> = Vec::new();
        for (start, body) in chunks {
            let sk = format!("{start:012}");
            let (ddb, table, pk_, sk_) = (
                self.ddb().clone(),
                self.table.clone(),
                pk.clone(),
                sk.clone(),
            );
            let put = self.run(async move {
                ddb.put_item()
                    .table_name(table)
                    .item("pk", s(pk_))
                    .item("sk", s(sk_))
                    .item("lines", s(body))
                    .item("ttl", keep_until(now))
                    .send()
                    .await
            });
            match put {
                Ok(Ok(_)) => written.push(sk),
                Ok(Err(e)) => {
                    self.forget(&pk, &written);
                    return Err(sdk("PutItem", e));
                }
                Err(e) => {
                    self.forget(&pk, &written);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn forget(&self, pk: &str, sks: &[String]) {
        for sk in sks {
            if let Err(e) = self.delete_item(pk, sk) {
                tracing::error!("cannot take back journal chunk {pk}/{sk}: {e}");
            }
        }
    }

    /// The journal `journal`'s lines, in order (for the tests and for reading it back).
    pub fn journal_lines(&self, journal: &str) -> Result<Vec<String>> {
        let items = self.query_items(&format!("JOURNAL#{journal}"), None, true)?;
        Ok(items
            .iter()
            .filter_map(|i| text(i, "lines"))
            .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
            .collect())
    }

    /// Stores run records (JSON objects with a `run_id`), each unless the stored one has a
    /// higher `rank` (a run's states only move forward: a late "queued" never hides its end).
    pub fn put_run_records(&self, records: &[(Value, i64)]) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        for (record, rank) in records {
            let Some(run_id) = record["run_id"].as_str() else {
                continue;
            };
            let Some(pk) = run_partition(run_id) else {
                continue;
            };
            let (ddb, table, sk, body, rank) = (
                self.ddb().clone(),
                self.table.clone(),
                run_id.to_string(),
                record.to_string(),
                *rank,
            );
            let put = self.run(async move {
                ddb.put_item()
                    .table_name(table)
                    .item("pk", s(pk))
                    .item("sk", s(sk))
                    .item("record", s(body))
                    .item("rank", n(rank))
                    .item("ttl", keep_until(now))
                    .condition_expression("attribute_not_exists(pk) OR #rank <= :rank")
                    .expression_attribute_names("#rank", "rank")
                    .expression_attribute_values(":rank", n(rank))
                    .send()
                    .await
            })?;
            match put {
                Ok(_) => {}
                Err(e) if is_condition_failed(&e) => {}
                Err(e) => return Err(sdk("PutItem", e)),
            }
        }
        Ok(())
    }

    /// The newest `limit` run records of every replica, newest first.
    pub fn run_records(&self, limit: usize) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let today = chrono::Utc::now().date_naive();
        for back in 0..LIST_DAYS {
            if out.len() >= limit {
                break;
            }
            let Some(day) = today.checked_sub_days(chrono::Days::new(back.unsigned_abs())) else {
                break;
            };
            let pk = format!("RUNS#{}", day.format("%Y-%m-%d"));
            let left = limit.saturating_sub(out.len());
            for item in self.query_items(&pk, Some(left), false)? {
                out.push(record_of(&item)?);
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// One run's record, from whichever replica ran it.
    pub fn run_record(&self, run_id: &str) -> Result<Option<Value>> {
        let Some(pk) = run_partition(run_id) else {
            return Ok(None);
        };
        self.get(pk, run_id)?.map(|i| record_of(&i)).transpose()
    }
}

fn record_of(item: &HashMap<String, AttributeValue>) -> Result<Value> {
    let body = text(item, "record").unwrap_or_default();
    serde_json::from_str(&body).map_err(|e| {
        Error::Environment(format!(
            "state table: the run record {} is not JSON: {e}",
            text(item, "sk").unwrap_or_default()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_names_its_day_and_anything_else_has_none() {
        let id = ulid::Ulid::from_parts(1_764_500_000_000, 7)
            .to_string()
            .to_lowercase();
        assert_eq!(run_partition(&id).as_deref(), Some("RUNS#2025-11-30"));
        assert_eq!(run_partition("not-a-ulid"), None);
    }
}
