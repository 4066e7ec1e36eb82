//! Run ownership (aws backend): which `serve` replica is running which hook run, as a lease in
//! the table renewed by the replica's heartbeat. A replica that dies stops renewing; once the
//! lease has expired, another replica claims the run (one conditional write: exactly one
//! claimer wins) and resumes it from its archived transcript.
//!
//! | item | pk / sk | the write that decides |
//! |---|---|---|
//! | run owner | `OWNER` / `<run id>` | put if absent; renewed (or marked `unarchived`) if `replica = :me`; claimed if `lease_until = :seen AND lease_until <= :now`; deleted by its owner when the run ends |
//!
//! `job` holds what the claimer needs to set the run up again (the route, the alert, the
//! parameters), as the owner wrote it; it holds nothing secret (route parameters come from the
//! alert, which the journal records too).

use serde_json::Value;

use super::aws::{AwsStore, is_condition_failed, n, num, s, sdk, text};
use crate::base::error::{Error, Result};

/// A run as its owner item says.
#[derive(Debug, Clone)]
pub struct Owned {
    pub run_id: String,
    /// `host:pid` of the replica holding it.
    pub replica: String,
    /// When the lease ends (epoch ms, the owner's clock).
    pub lease_until: i64,
    pub job: Value,
    /// A write of the run was sent although its intent could not be archived: the archive may
    /// not show it, so the run cannot be resumed safely from it.
    pub unarchived: bool,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl AwsStore {
    fn lease_from(&self, now: i64) -> i64 {
        now.saturating_add(super::millis(self.lease()))
    }

    /// Records this replica as the owner of run `run_id` (a new run: refused if the run has an
    /// owner already, which only a bug could cause).
    pub fn own_run(&self, run_id: &str, job: &Value) -> Result<()> {
        let until = self.lease_from(now_ms());
        let (ddb, table, sk, me, job) = (
            self.ddb().clone(),
            self.table.clone(),
            run_id.to_string(),
            self.me().to_string(),
            job.to_string(),
        );
        self.run(async move {
            ddb.put_item()
                .table_name(table)
                .item("pk", s("OWNER"))
                .item("sk", s(sk))
                .item("replica", s(me))
                .item("lease_until", n(until))
                .item("job", s(job))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await
        })?
        .map(|_| ())
        .map_err(|e| sdk("PutItem", e))
    }

    /// Extends this replica's lease on `run_id`: Ok(false) when another replica holds it now
    /// (this one was presumed dead and the run was taken over).
    pub fn renew_run(&self, run_id: &str) -> Result<bool> {
        let until = self.lease_from(now_ms());
        let (ddb, table, sk, me) = (
            self.ddb().clone(),
            self.table.clone(),
            run_id.to_string(),
            self.me().to_string(),
        );
        let renewed = self.run(async move {
            ddb.update_item()
                .table_name(table)
                .key("pk", s("OWNER"))
                .key("sk", s(sk))
                .update_expression("SET lease_until = :until")
                .condition_expression("replica = :me")
                .expression_attribute_values(":until", n(until))
                .expression_attribute_values(":me", s(me))
                .send()
                .await
        })?;
        match renewed {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk("UpdateItem", e)),
        }
    }

    /// Marks run `run_id` (owned by this replica) as having sent a write whose intent is not
    /// archived: a replica that takes it over must ask a person instead of resuming it.
    pub fn mark_unarchived(&self, run_id: &str) -> Result<()> {
        let (ddb, table, sk, me) = (
            self.ddb().clone(),
            self.table.clone(),
            run_id.to_string(),
            self.me().to_string(),
        );
        self.run(async move {
            ddb.update_item()
                .table_name(table)
                .key("pk", s("OWNER"))
                .key("sk", s(sk))
                .update_expression("SET unarchived = :yes")
                .condition_expression("replica = :me")
                .expression_attribute_values(
                    ":yes",
                    aws_sdk_dynamodb::types::AttributeValue::Bool(true),
                )
                .expression_attribute_values(":me", s(me))
                .send()
                .await
        })?
        .map(|_| ())
        .map_err(|e| sdk("UpdateItem", e))
    }

    /// Deletes the owner item of a run that ended, if this replica still holds it.
    pub fn release_run(&self, run_id: &str) -> Result<()> {
        let (ddb, table, sk, me) = (
            self.ddb().clone(),
            self.table.clone(),
            run_id.to_string(),
            self.me().to_string(),
        );
        let deleted = self.run(async move {
            ddb.delete_item()
                .table_name(table)
                .key("pk", s("OWNER"))
                .key("sk", s(sk))
                .condition_expression("replica = :me")
                .expression_attribute_values(":me", s(me))
                .send()
                .await
        })?;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk("DeleteItem", e)),
        }
    }

    /// Runs whose owner's lease has expired (by this runner's clock): candidates for takeover.
    pub fn expired_runs(&self) -> Result<Vec<Owned>> {
        let now = now_ms();
        let mut out = Vec::new();
        for item in self.query_items("OWNER", None, true)? {
            let lease_until = num(&item, "lease_until").unwrap_or(0);
            if lease_until > now {
                continue;
            }
            let job = text(&item, "job").unwrap_or_default();
            out.push(Owned {
                run_id: text(&item, "sk").unwrap_or_default(),
                replica: text(&item, "replica").unwrap_or_default(),
                lease_until,
                unarchived: item
                    .get("unarchived")
                    .and_then(|v| v.as_bool().ok())
                    .copied()
                    .unwrap_or(false),
                job: serde_json::from_str(&job).map_err(|e| {
                    Error::Environment(format!("state table: a run owner's job is not JSON: {e}"))
                })?,
            });
        }
        Ok(out)
    }

    /// Claims an expired run for this replica: true for exactly one claimer (the item must
    /// still hold the lease that was seen expired, and it must still be expired).
    pub fn claim_run(&self, owned: &Owned) -> Result<bool> {
        let now = now_ms();
        let until = self.lease_from(now);
        let (ddb, table, sk, me, seen) = (
            self.ddb().clone(),
            self.table.clone(),
            owned.run_id.clone(),
            self.me().to_string(),
            owned.lease_until,
        );
        let claimed = self.run(async move {
            ddb.update_item()
                .table_name(table)
                .key("pk", s("OWNER"))
                .key("sk", s(sk))
                .update_expression("SET replica = :me, lease_until = :until")
                .condition_expression("lease_until = :seen AND lease_until <= :now")
                .expression_attribute_values(":me", s(me))
                .expression_attribute_values(":until", n(until))
                .expression_attribute_values(":seen", n(seen))
                .expression_attribute_values(":now", n(now))
                .send()
                .await
        })?;
        match claimed {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk("UpdateItem", e)),
        }
    }
}
