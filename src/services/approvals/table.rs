//! The `table` approval channel: requests and answers as items in the `aws` state backend's
//! DynamoDB table, so `runbook approve RUN_ID` works from any machine and working directory that
//! can reach the table.
//!
//! | item | pk / sk | written |
//! |---|---|---|
//! | request | `APPROVAL#<run>` / `REQ#<n>` | Put if absent (claims number n) |
//! | answer | `APPROVAL#<run>` / `ANS#<n>#<identity key>` | Put if absent: each identity answers once |
//!
//! The answerer is the STS caller of the process that wrote the answer (`who`), never the
//! answer's text: the table's IAM policy is the boundary of who can write there at all.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{Answer, Read, Request};
use crate::base::error::{BindingError, Error, Result};
use crate::base::identity::Who;
use crate::services::state::aws::AwsStore;

/// Requests and answers are kept this long (DynamoDB's TTL cleans up; nothing relies on it).
const KEEP_SECS: i64 = 30 * 24 * 3600;

pub(crate) struct Table {
    store: Arc<AwsStore>,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn pk(run_id: &str) -> String {
    format!("APPROVAL#{run_id}")
}

fn req_sk(number: u32) -> String {
    format!("REQ#{number:06}")
}

fn ans_prefix(number: u32) -> String {
    format!("ANS#{number:06}#")
}

fn text(item: &HashMap<String, AttributeValue>, key: &str) -> Option<String> {
    item.get(key)?.as_s().ok().cloned()
}

fn ttl() -> AttributeValue {
    AttributeValue::N(
        chrono::Utc::now()
            .timestamp()
            .saturating_add(KEEP_SECS)
            .to_string(),
    )
}

fn sdk<E: ProvideErrorMetadata + std::fmt::Debug>(what: &str, e: &E) -> Error {
    Error::Environment(format!(
        "state table: {what}: {}: {}",
        e.code().unwrap_or("unknown"),
        e.message().unwrap_or("no message")
    ))
}

impl Table {
    pub(crate) fn new(store: Arc<AwsStore>) -> Table {
        Table { store }
    }

    /// Who this process is on the table: the STS caller of the state credentials.
    pub(crate) fn caller(&self) -> Result<Who> {
        Ok(Who::aws(&self.store.caller_arn()?))
    }

    /// The items of `pk` whose sort key starts with `prefix`.
    fn query(&self, pk: String, prefix: String) -> Result<Vec<HashMap<String, AttributeValue>>> {
        let (ddb, table) = (self.store.ddb().clone(), self.store.table().to_string());
        self.store
            .run(async move {
                let mut items = Vec::new();
                let mut start = None;
                loop {
                    let out = ddb
                        .query()
                        .table_name(&table)
                        .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                        .expression_attribute_values(":pk", s(&pk))
                        .expression_attribute_values(":p", s(&prefix))
                        .consistent_read(true)
                        .set_exclusive_start_key(start)
                        .send()
                        .await?;
                    items.extend(out.items.unwrap_or_default());
                    match out.last_evaluated_key {
                        Some(k) if !k.is_empty() => start = Some(k),
                        _ => return Ok(items),
                    }
                }
            })?
            .map_err(|e: aws_sdk_dynamodb::error::SdkError<_>| sdk("Query", &e))
    }

    /// Puts an item unless its key exists: Ok(false) when it did.
    fn put_new(&self, item: HashMap<String, AttributeValue>) -> Result<bool> {
        let (ddb, table) = (self.store.ddb().clone(), self.store.table().to_string());
        match self.store.run(async move {
            ddb.put_item()
                .table_name(table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await
        })? {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(sdk("PutItem", &e)),
        }
    }

    /// Files `request` under the next free number of its run.
    pub(crate) fn file(&self, request: &mut Request) -> std::result::Result<(), BindingError> {
        let unavailable = |e: Error| BindingError::new("state_unavailable", e.to_string());
        let mut number = self
            .query(pk(&request.run_id), "REQ#".into())
            .map_err(unavailable)?
            .len() as u32;
        loop {
            number = number.saturating_add(1);
            request.number = number;
            let body = serde_json::to_string(&*request)
                .map_err(|e| BindingError::new("internal", e.to_string()))?;
            let item = HashMap::from([
                ("pk".to_string(), s(pk(&request.run_id))),
                ("sk".to_string(), s(req_sk(number))),
                ("body".to_string(), s(body)),
                ("ttl".to_string(), ttl()),
            ]);
            if self.put_new(item).map_err(unavailable)? {
                return Ok(());
            }
            if number >= 10_000 {
                return Err(BindingError::new(
                    "internal",
                    "no free approval request number",
                ));
            }
        }
    }

    /// Every answer to `request`, as its writer's STS identity.
    pub(crate) fn answers(&self, request: &Request) -> Vec<Read> {
        let items = match self.query(pk(&request.run_id), ans_prefix(request.number)) {
            Ok(items) => items,
            Err(e) => {
                // The next poll tries again; the wait's timeout bounds an outage.
                tracing::warn!("cannot read approval answers: {e}");
                return Vec::new();
            }
        };
        items
            .iter()
            .map(|item| {
                let key = text(item, "sk").unwrap_or_default();
                let answer: Option<Answer> =
                    text(item, "body").and_then(|b| serde_json::from_str(&b).ok());
                let who: Option<Who> = text(item, "who").and_then(|w| serde_json::from_str(&w).ok());
                match (answer, who) {
                    (Some(answer), Some(who)) if key == format!("{}{}", ans_prefix(request.number), who.key()) => {
                        Read::Given {
                        key,
                        who: Box::new(who),
                        answer: Box::new(answer),
                    }
                    }
                    _ => Read::Refused {
                        why: format!("{key}: not an answer written by `runbook approve` (its identity and key disagree, or it is unreadable)"),
                        key,
                    },
                }
            })
            .collect()
    }

    /// The newest request of `run_id` (or request `number`).
    pub(crate) fn request(&self, run_id: &str, number: Option<u32>) -> Result<Request> {
        let mut requests: Vec<Request> = self
            .query(pk(run_id), "REQ#".into())?
            .iter()
            .filter_map(|i| text(i, "body"))
            .filter_map(|b| serde_json::from_str(&b).ok())
            .collect();
        if requests.is_empty() {
            return Err(Error::Usage(format!(
                "run {run_id} has no approval requests in the state table {}",
                self.store.table()
            )));
        }
        requests.sort_by_key(|r| r.number);
        match number {
            Some(n) => requests.into_iter().find(|r| r.number == n),
            None => requests.into_iter().last(),
        }
        .ok_or_else(|| Error::Usage("no such approval request".into()))
    }

    /// Records `who`'s answer, once.
    pub(crate) fn give(&self, answer: &Answer, who: &Who) -> Result<()> {
        let body = serde_json::to_string(answer).map_err(|e| Error::Internal(e.to_string()))?;
        let who_text = serde_json::to_string(who).map_err(|e| Error::Internal(e.to_string()))?;
        let item = HashMap::from([
            ("pk".to_string(), s(pk(&answer.run_id))),
            (
                "sk".to_string(),
                s(format!("{}{}", ans_prefix(answer.number), who.key())),
            ),
            ("body".to_string(), s(body)),
            ("who".to_string(), s(who_text)),
            ("ttl".to_string(), ttl()),
        ]);
        if self.put_new(item)? {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "request {} already has an answer from {}; an answer is given once",
                answer.number,
                who.display()
            )))
        }
    }
}
