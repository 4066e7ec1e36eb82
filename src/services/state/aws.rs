//! The `aws` backend: coordination in one DynamoDB table, transcripts in one S3 bucket.
//!
//! Table: string keys `pk` and `sk`, and a TTL attribute `ttl` (epoch seconds) that only cleans
//! up: every condition compares the stored expiry (epoch ms, written by the runner's clock) with
//! now, because DynamoDB deletes expired items up to days late and moto never does.
//!
//! | item | pk / sk | the write that decides |
//! |---|---|---|
//! | dedupe | `DEDUPE#<fingerprint>` / `-` | Put if `attribute_not_exists(pk) OR exp <= :now` |
//! | cooldown | `COOLDOWN#<runbook>\|<target>` / `-` | Put if absent or `until <= :now` |
//! | hourly count | `RATE` / `<scope>` | `ADD n :1` if `until > :now AND n < :limit`; else a new window if `until <= :now` |
//! | breaker | `BREAKER` / `<scope>` | Put if absent; one Query reads them all |
//! | target lock | `LOCK#<env>/<target>` / `-` | Put if absent, or `lease_until <= :now`, or `run = :me` |
//! | run index (see `archive`) | `RUN` / `<run id>` | head moves forward only: `events < :n` (or the same head) |
//!
//! The SDK runs on a small runtime of this store's own: callers are plain threads, tokio workers
//! or the script thread alike, and none of them may `block_on` inside another runtime.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{Admission, Holder, OpenBreaker, Refused, Ticket};
use crate::base::error::{Error, Result};
use crate::data::config::StateConfig;

const HOUR_MS: i64 = 3_600_000;
/// How often a decision is retried when another replica changed the item in between.
const MAX_RACES: usize = 8;

pub struct AwsStore {
    ddb: aws_sdk_dynamodb::Client,
    /// Who the state credentials are (approvals record the STS caller).
    sts: aws_sdk_sts::Client,
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) table: String,
    pub(crate) bucket: String,
    pub(crate) prefix: String,
    pub(crate) retention_days: Option<u32>,
    /// Transcript uploads not finished yet (see `upload`).
    pub(crate) spool: std::path::PathBuf,
    lease: Duration,
    /// Who writes (`host:pid`), recorded on breakers.
    me: String,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for AwsStore {
    fn drop(&mut self) {
        // Dropping a runtime from inside another one's context panics; this never blocks.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A held lease on a target lock.
#[derive(Clone)]
pub struct AwsLease {
    pub(crate) key: String,
    run_id: String,
    store: Arc<AwsStoreRef>,
}

/// What a lease needs to release itself (the store, without a cycle through `Locks`).
struct AwsStoreRef {
    ddb: aws_sdk_dynamodb::Client,
    table: String,
    handle: tokio::runtime::Handle,
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn num(item: &HashMap<String, AttributeValue>, key: &str) -> Option<i64> {
    item.get(key)?.as_n().ok()?.parse().ok()
}

pub(super) fn text(item: &HashMap<String, AttributeValue>, key: &str) -> Option<String> {
    item.get(key)?.as_s().ok().cloned()
}

/// The TTL attribute for an expiry in ms: a minute after it, in seconds (clean-up only).
fn ttl_of(exp_ms: i64) -> AttributeValue {
    n(exp_ms.saturating_div(1000).saturating_add(60))
}

pub(super) fn is_condition_failed<E: ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

/// An SDK error as ours, with its AWS code; never the request (it could carry a fingerprint's
/// labels, but never a secret: nothing secret is stored in the table).
pub(crate) fn sdk<E>(what: &str, e: aws_sdk_dynamodb::error::SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    sdk_error("state table", what, e)
}

/// An SDK error of `service` (the table, the bucket) as ours: its AWS code and message.
pub(crate) fn sdk_error<E>(
    service: &str,
    what: &str,
    e: aws_sdk_dynamodb::error::SdkError<E>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = e.code().unwrap_or("unknown").to_string();
    let message = e.message().map(str::to_string).unwrap_or_else(|| {
        let mut out = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            out.push_str(&format!(": {s}"));
            source = s.source();
        }
        out
    });
    Error::Environment(format!("{service}: {what}: {code}: {message}"))
}

impl AwsStore {
    /// Makes the SDK clients (region, profile, endpoint and retries as an environment's).
    pub fn open(config: &StateConfig) -> Result<AwsStore> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("state-io")
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the state runtime: {e}")))?;
        let settings = config.aws.clone();
        let sdk_config = rt.block_on(async move {
            let mut loader = aws_config::defaults(BehaviorVersion::latest());
            if let Some(region) = &settings.region {
                loader = loader.region(aws_config::Region::new(region.clone()));
            }
            if let Some(profile) = &settings.profile {
                loader = loader.profile_name(profile);
            }
            if let Some(endpoint) = &settings.endpoint {
                loader = loader.endpoint_url(endpoint);
            }
            if let Some(attempts) = settings.max_attempts {
                loader =
                    loader.retry_config(RetryConfig::standard().with_max_attempts(attempts.max(1)));
            }
            loader.load().await
        });
        let mut s3 = aws_sdk_s3::config::Builder::from(&sdk_config);
        if sdk_config.endpoint_url().is_some() {
            // moto, MinIO, LocalStack: buckets in the path, not in the host name.
            s3 = s3.force_path_style(true);
        }
        // A transcript upload runs beside a run, and a run's end waits for the last one: a
        // bucket that does not answer must not hold either for long (the SDK retries within).
        s3 = s3.timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
        Ok(AwsStore {
            ddb: aws_sdk_dynamodb::Client::new(&sdk_config),
            sts: aws_sdk_sts::Client::new(&sdk_config),
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            table: config.table.clone(),
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
            retention_days: config.retention_days,
            spool: config.spool.clone(),
            lease: config.lease,
            me: format!(
                "{}:{}",
                gethostname::gethostname().to_string_lossy(),
                std::process::id()
            ),
            rt: Some(rt),
        })
    }

    /// This process as a writer of the table (`host:pid`).
    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix of transcripts in the bucket.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn ddb(&self) -> &aws_sdk_dynamodb::Client {
        &self.ddb
    }

    /// The caller ARN STS answers for the state credentials: who a process is on this backend.
    pub(crate) fn caller_arn(&self) -> Result<String> {
        let sts = self.sts.clone();
        let out = self
            .run(async move { sts.get_caller_identity().send().await })?
            .map_err(|e| {
                Error::Environment(format!(
                    "STS GetCallerIdentity: {}",
                    aws_sdk_sts::error::DisplayErrorContext(&e)
                ))
            })?;
        out.arn()
            .map(str::to_string)
            .ok_or_else(|| Error::Environment("STS named no caller ARN".into()))
    }

    fn handle(&self) -> Result<tokio::runtime::Handle> {
        self.rt
            .as_ref()
            .map(|rt| rt.handle().clone())
            .ok_or_else(|| Error::Internal("the state runtime is gone".into()))
    }

    /// Runs `fut` on the store's runtime and waits for it from any thread.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        run_on(&self.handle()?, fut)
    }

    // ---- guardrails -----------------------------------------------------------------------

    /// Decides one admission for every replica at once. The order and meaning are those of
    /// `hooks::guard` (dedupe, kill switch, protected, breaker, cooldown, hourly limits), each
    /// decided by a conditional write.
    pub fn admit(&self, a: &Admission<'_>) -> Result<std::result::Result<Ticket, Refused>> {
        // Before the alert is remembered, as the local gate does: the alert that still fires
        // once the switch is removed must run, not be "deduplicated".
        if a.kill_switch {
            return Ok(Err(Refused::KillSwitch));
        }
        let now = a.now_ms;
        let dedupe_exp = now.saturating_add(a.dedupe_ms);
        let fresh =
            self.put_if_expired(format!("DEDUPE#{}", a.fingerprint), "exp", dedupe_exp, now)?;
        if !fresh {
            return Ok(Err(Refused::Deduplicated));
        }
        let mut ticket = Ticket {
            fingerprint: a.fingerprint.to_string(),
            dedupe_exp,
            target: a.target.to_string(),
            cooldown_until: 0,
            counted: Vec::new(),
        };
        // A step that fails after the dedupe put takes back what this admission wrote: the
        // alert is answered `state_unavailable`, and the sender's retry must be judged afresh,
        // not "deduplicated" by a remembered alert that never ran.
        let decided = self.admit_remembered(a, &mut ticket);
        if decided.is_err() {
            self.cancel(&ticket);
        }
        decided
    }

    /// [`AwsStore::admit`] once the alert is remembered: what it wrote beyond the dedupe item
    /// is in `ticket` at every return, so an error can be taken back whole.
    fn admit_remembered(
        &self,
        a: &Admission<'_>,
        ticket: &mut Ticket,
    ) -> Result<std::result::Result<Ticket, Refused>> {
        let now = a.now_ms;
        if a.protected_refused {
            return Ok(Err(Refused::Protected));
        }
        let open = self.breakers_open_of(&["*", a.runbook])?;
        for scope in ["*", a.runbook] {
            if open.iter().any(|b| b == scope) {
                return Ok(Err(Refused::BreakerOpen {
                    scope: scope.to_string(),
                }));
            }
        }
        // No cooldown configured means none is held: a put with `until = now` would refuse an
        // alert admitted a moment later whose `now` (taken when it arrived) is earlier, so
        // alerts on one target at two replicas at once would refuse each other.
        let until = now.saturating_add(a.cooldown_ms);
        if a.cooldown_ms > 0 {
            if !self.put_if_expired(format!("COOLDOWN#{}", a.target), "until", until, now)? {
                let held = self.get(format!("COOLDOWN#{}", a.target), "-")?;
                let until_ms = held.as_ref().and_then(|i| num(i, "until")).unwrap_or(now);
                return Ok(Err(Refused::Cooldown { until_ms }));
            }
            ticket.cooldown_until = until;
        }
        for (scope, limit) in [
            ("*", a.max_per_hour),
            (a.runbook, a.max_per_hour_per_runbook),
        ] {
            match self.count_in(scope, limit, now)? {
                Some(window_end) => ticket.counted.push((scope.to_string(), window_end)),
                None => {
                    // Over the limit: nothing of this admission but the dedupe stays.
                    self.uncount(&std::mem::take(&mut ticket.counted));
                    if ticket.cooldown_until != 0 {
                        self.delete_if(format!("COOLDOWN#{}", a.target), "until", until);
                        ticket.cooldown_until = 0;
                    }
                    let reason = format!(
                        "{limit} runs in the last hour ({}): the breaker is now open until a person resets it",
                        scope_name(scope)
                    );
                    let opened = self.open_breaker(scope, &reason, now)?;
                    return Ok(Err(Refused::RateLimited {
                        scope: scope.to_string(),
                        limit,
                        opened,
                    }));
                }
            }
        }
        Ok(Ok(ticket.clone()))
    }

    /// Takes an admission back (the run could not be queued): the sender's retry is judged
    /// afresh. Each delete is conditioned on this admission's own values, so a newer admission
    /// by another replica is never undone.
    pub fn cancel(&self, t: &Ticket) {
        self.delete_if(format!("DEDUPE#{}", t.fingerprint), "exp", t.dedupe_exp);
        if t.cooldown_until != 0 {
            self.delete_if(format!("COOLDOWN#{}", t.target), "until", t.cooldown_until);
        }
        self.uncount(&t.counted);
    }

    /// Closes breakers (all, or one scope) and clears their hourly counts, or the next alert
    /// would trip again. Returns the scopes closed.
    pub fn reset_breakers(&self, scope: Option<&str>) -> Result<Vec<String>> {
        let open = self.open_breakers()?;
        let mut closed = Vec::new();
        for b in open {
            if scope.is_some_and(|s| s != b.scope) {
                continue;
            }
            self.delete("BREAKER", &b.scope)?;
            if b.scope == "*" {
                for counted in self.query("RATE")? {
                    if let Some(sk) = text(&counted, "sk") {
                        self.delete("RATE", &sk)?;
                    }
                }
            } else {
                self.delete("RATE", &b.scope)?;
            }
            closed.push(b.scope);
        }
        Ok(closed)
    }

    /// Which of `scopes` have an open breaker: one consistent BatchGetItem of their items,
    /// read by key. Admission asks only for the two scopes that can refuse it (the overall one
    /// and its runbook's), so its cost does not grow with the breakers open elsewhere (moto's
    /// Query also walks the whole table, which made every admission slower as the table grew).
    fn breakers_open_of(&self, scopes: &[&str]) -> Result<Vec<String>> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let mut keys = Vec::new();
        for scope in scopes {
            keys.push(HashMap::from([
                ("pk".to_string(), s("BREAKER")),
                ("sk".to_string(), s(*scope)),
            ]));
        }
        let mut request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .projection_expression("sk")
            .build()
            .map_err(|e| Error::Internal(format!("BatchGetItem of the breakers: {e}")))?;
        let mut open = Vec::new();
        // Keys DynamoDB leaves unprocessed (throttling) are asked again, a few times, then the
        // admission fails: a breaker that cannot be read must not read as closed.
        for _ in 0..MAX_RACES {
            let (ddb, table) = (self.ddb.clone(), self.table.clone());
            let asked = request.clone();
            let out = self
                .run(async move {
                    ddb.batch_get_item()
                        .request_items(table, asked)
                        .send()
                        .await
                })?
                .map_err(|e| sdk("BatchGetItem", e))?;
            for item in out
                .responses
                .as_ref()
                .and_then(|r| r.get(&self.table))
                .into_iter()
                .flatten()
            {
                open.extend(text(item, "sk"));
            }
            match out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .filter(|k| !k.keys.is_empty())
            {
                Some(left) => request = left,
                None => return Ok(open),
            }
        }
        Err(Error::Internal(
            "the breakers could not be read: DynamoDB left keys unprocessed".into(),
        ))
    }

    /// Every open breaker (one consistent Query).
    pub fn open_breakers(&self) -> Result<Vec<OpenBreaker>> {
        Ok(breakers_of(&self.query("BREAKER")?))
    }

    /// [`AwsStore::open_breakers`] that gives up after `deadline` (None), for `/healthz`: a
    /// health check must answer "the table is slow" before its prober's own timeout reports a
    /// hung server. The Query is abandoned, not left running, when the deadline passes.
    pub fn open_breakers_within(&self, deadline: Duration) -> Result<Option<Vec<OpenBreaker>>> {
        let query = self.query_future("BREAKER", None, true);
        match self.run(async move { tokio::time::timeout(deadline, query).await })? {
            Err(_elapsed) => Ok(None),
            Ok(items) => Ok(Some(breakers_of(&items.map_err(|e| sdk("Query", e))?))),
        }
    }

    /// Counts one run into `scope`'s current window if it is under `limit`: the window's end,
    /// or None when the limit is reached. A window is an hour from the first run after the
    /// previous one ended.
    fn count_in(&self, scope: &str, limit: usize, now: i64) -> Result<Option<i64>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        for _ in 0..MAX_RACES {
            let (ddb, table, scope_) = (self.ddb.clone(), self.table.clone(), scope.to_string());
            // In the current window and under the limit: one atomic ADD decides.
            let added = self.run(async move {
                ddb.update_item()
                    .table_name(table)
                    .key("pk", s("RATE"))
                    .key("sk", s(scope_))
                    .update_expression("ADD #n :one")
                    .condition_expression("#u > :now AND #n < :limit")
                    .expression_attribute_names("#n", "n")
                    .expression_attribute_names("#u", "until")
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":now", n(now))
                    .expression_attribute_values(":limit", n(limit))
                    .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
                    .send()
                    .await
            })?;
            match added {
                Ok(out) => {
                    let end = out
                        .attributes()
                        .and_then(|i| num(i, "until"))
                        .unwrap_or(now);
                    return Ok(Some(end));
                }
                Err(e) if is_condition_failed(&e) => {}
                Err(e) => return Err(sdk("UpdateItem", e)),
            }
            if limit < 1 {
                return Ok(None);
            }
            // No window, or it ended: start a new one with this run, if nobody just did.
            let end = now.saturating_add(HOUR_MS);
            let (ddb, table, scope_) = (self.ddb.clone(), self.table.clone(), scope.to_string());
            let started = self.run(async move {
                ddb.put_item()
                    .table_name(table)
                    .item("pk", s("RATE"))
                    .item("sk", s(scope_))
                    .item("n", n(1))
                    .item("until", n(end))
                    .item("ttl", ttl_of(end))
                    .condition_expression("attribute_not_exists(pk) OR #u <= :now")
                    .expression_attribute_names("#u", "until")
                    .expression_attribute_values(":now", n(now))
                    .send()
                    .await
            })?;
            match started {
                Ok(_) => return Ok(Some(end)),
                Err(e) if is_condition_failed(&e) => {}
                Err(e) => return Err(sdk("PutItem", e)),
            }
            // Both refused: the window is current and full, or another replica changed it
            // between the two writes (then try again).
            let item = self.get("RATE", scope)?;
            let current = item.as_ref().and_then(|i| num(i, "until")).unwrap_or(0) > now;
            let full = item.as_ref().and_then(|i| num(i, "n")).unwrap_or(0) >= limit;
            if current && full {
                return Ok(None);
            }
        }
        Err(Error::Environment(format!(
            "state table: the hourly count of {} kept changing under {MAX_RACES} attempts",
            scope_name(scope)
        )))
    }

    fn uncount(&self, counted: &[(String, i64)]) {
        for (scope, end) in counted {
            let (ddb, table, scope, end) =
                (self.ddb.clone(), self.table.clone(), scope.clone(), *end);
            let undone = self.run(async move {
                ddb.update_item()
                    .table_name(table)
                    .key("pk", s("RATE"))
                    .key("sk", s(scope))
                    .update_expression("ADD #n :minus")
                    .condition_expression("#u = :end AND #n > :zero")
                    .expression_attribute_names("#n", "n")
                    .expression_attribute_names("#u", "until")
                    .expression_attribute_values(":minus", n(-1))
                    .expression_attribute_values(":zero", n(0))
                    .expression_attribute_values(":end", n(end))
                    .send()
                    .await
            });
            if let Ok(Err(e)) = undone
                && !is_condition_failed(&e)
            {
                tracing::error!("{}", sdk("UpdateItem", e));
            }
        }
    }

    /// Opens `scope`'s breaker: true if this call opened it, false if it already was open.
    fn open_breaker(&self, scope: &str, reason: &str, now: i64) -> Result<bool> {
        let (ddb, table) = (self.ddb.clone(), self.table.clone());
        let (scope, reason, by) = (scope.to_string(), reason.to_string(), self.me.clone());
        let at = chrono::DateTime::from_timestamp_millis(now)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        let put = self.run(async move {
            ddb.put_item()
                .table_name(table)
                .item("pk", s("BREAKER"))
                .item("sk", s(scope))
                .item("at", s(at))
                .item("reason", s(reason))
                .item("by", s(by))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await
        })?;
        match put {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk("PutItem", e)),
        }
    }

    /// Puts `pk`/`-` with `attr = value` unless an unexpired one is there: true if written.
    fn put_if_expired(&self, pk: String, attr: &'static str, value: i64, now: i64) -> Result<bool> {
        let (ddb, table) = (self.ddb.clone(), self.table.clone());
        let put = self.run(async move {
            ddb.put_item()
                .table_name(table)
                .item("pk", s(pk))
                .item("sk", s("-"))
                .item(attr, n(value))
                .item("ttl", ttl_of(value))
                .condition_expression("attribute_not_exists(pk) OR #e <= :now")
                .expression_attribute_names("#e", attr)
                .expression_attribute_values(":now", n(now))
                .send()
                .await
        })?;
        match put {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk("PutItem", e)),
        }
    }

    /// Deletes `pk`/`-` if its `attr` is still `value` (best effort: an undo).
    fn delete_if(&self, pk: String, attr: &'static str, value: i64) {
        let (ddb, table) = (self.ddb.clone(), self.table.clone());
        let deleted = self.run(async move {
            ddb.delete_item()
                .table_name(table)
                .key("pk", s(pk))
                .key("sk", s("-"))
                .condition_expression("#e = :v")
                .expression_attribute_names("#e", attr)
                .expression_attribute_values(":v", n(value))
                .send()
                .await
        });
        if let Ok(Err(e)) = deleted
            && !is_condition_failed(&e)
        {
            tracing::error!("{}", sdk("DeleteItem", e));
        }
    }

    fn delete(&self, pk: &str, sk: &str) -> Result<()> {
        let (ddb, table, pk, sk) = (
            self.ddb.clone(),
            self.table.clone(),
            pk.to_string(),
            sk.to_string(),
        );
        self.run(async move {
            ddb.delete_item()
                .table_name(table)
                .key("pk", s(pk))
                .key("sk", s(sk))
                .send()
                .await
        })?
        .map(|_| ())
        .map_err(|e| sdk("DeleteItem", e))
    }

    pub(crate) fn get(
        &self,
        pk: impl Into<String>,
        sk: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>> {
        let (ddb, table, pk, sk) = (
            self.ddb.clone(),
            self.table.clone(),
            pk.into(),
            sk.to_string(),
        );
        self.run(async move {
            ddb.get_item()
                .table_name(table)
                .key("pk", s(pk))
                .key("sk", s(sk))
                .consistent_read(true)
                .send()
                .await
        })?
        .map(|out| out.item)
        .map_err(|e| sdk("GetItem", e))
    }

    pub(crate) fn delete_item(&self, pk: &str, sk: &str) -> Result<()> {
        self.delete(pk, sk)
    }

    fn query(&self, pk: &str) -> Result<Vec<HashMap<String, AttributeValue>>> {
        self.query_items(pk, None, true)
    }

    /// The items of partition `pk` (consistent), in sort-key order (`forward`) or reversed,
    /// at most `limit` of them.
    pub(crate) fn query_items(
        &self,
        pk: &str,
        limit: Option<usize>,
        forward: bool,
    ) -> Result<Vec<HashMap<String, AttributeValue>>> {
        self.run(self.query_future(pk, limit, forward))?
            .map_err(|e| sdk("Query", e))
    }

    /// The Query of [`AwsStore::query_items`], not yet run.
    fn query_future(
        &self,
        pk: &str,
        limit: Option<usize>,
        forward: bool,
    ) -> impl Future<Output = QueryOutcome> + Send + 'static {
        let (ddb, table, pk) = (self.ddb.clone(), self.table.clone(), pk.to_string());
        let limit = limit.unwrap_or(usize::MAX);
        async move {
            let mut items = Vec::new();
            let mut start = None;
            loop {
                let out = ddb
                    .query()
                    .table_name(&table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(&pk))
                    .consistent_read(true)
                    .scan_index_forward(forward)
                    .set_limit(i32::try_from(limit.saturating_sub(items.len())).ok())
                    .set_exclusive_start_key(start)
                    .send()
                    .await?;
                items.extend(out.items.unwrap_or_default());
                match out.last_evaluated_key {
                    Some(k) if !k.is_empty() && items.len() < limit => start = Some(k),
                    _ => return Ok(items),
                }
            }
        }
    }

    // ---- target locks ---------------------------------------------------------------------

    /// Takes the lock of `key` (a put that succeeds when it is free, expired, or ours), or says
    /// who holds it.
    pub(crate) fn try_lock(
        &self,
        key: &str,
        holder: &Holder,
    ) -> Result<std::result::Result<AwsLease, Holder>> {
        let now = chrono::Utc::now().timestamp_millis();
        let until = now.saturating_add(super::millis(self.lease));
        let (ddb, table) = (self.ddb.clone(), self.table.clone());
        let pk = format!("LOCK#{key}");
        let h = holder.clone();
        let pk_ = pk.clone();
        let put = self.run(async move {
            ddb.put_item()
                .table_name(table)
                .item("pk", s(pk_))
                .item("sk", s("-"))
                .item("run", s(&h.run_id))
                .item("operator", s(&h.operator))
                .item("host", s(&h.host))
                .item("pid", n(i64::from(h.pid)))
                .item("since", s(&h.since))
                .item("lease_until", n(until))
                .item("ttl", ttl_of(until))
                .condition_expression(
                    "attribute_not_exists(pk) OR lease_until <= :now OR #run = :me",
                )
                .expression_attribute_names("#run", "run")
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":me", s(&h.run_id))
                .send()
                .await
        })?;
        match put {
            Ok(_) => Ok(Ok(AwsLease {
                key: key.to_string(),
                run_id: holder.run_id.clone(),
                store: Arc::new(AwsStoreRef {
                    ddb: self.ddb.clone(),
                    table: self.table.clone(),
                    handle: self.handle()?,
                }),
            })),
            Err(e) if is_condition_failed(&e) => {
                let item = self.get(pk, "-")?.unwrap_or_default();
                Ok(Err(Holder {
                    operator: text(&item, "operator").unwrap_or_else(|| "unknown".into()),
                    run_id: text(&item, "run").unwrap_or_else(|| "unknown".into()),
                    host: text(&item, "host").unwrap_or_else(|| "unknown".into()),
                    pid: num(&item, "pid")
                        .and_then(|p| u32::try_from(p).ok())
                        .unwrap_or(0),
                    since: text(&item, "since").unwrap_or_else(|| "unknown".into()),
                }))
            }
            Err(e) => Err(sdk("PutItem", e)),
        }
    }

    /// Extends a lease we hold (refused if it expired and someone else took the target).
    pub(crate) fn renew(&self, lease: &AwsLease) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        let until = now.saturating_add(super::millis(self.lease));
        let (ddb, table) = (self.ddb.clone(), self.table.clone());
        let (pk, me) = (format!("LOCK#{}", lease.key), lease.run_id.clone());
        self.run(async move {
            ddb.update_item()
                .table_name(table)
                .key("pk", s(pk))
                .key("sk", s("-"))
                .update_expression("SET lease_until = :until, #ttl = :ttl")
                .condition_expression("#run = :me")
                .expression_attribute_names("#run", "run")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":until", n(until))
                .expression_attribute_values(":ttl", ttl_of(until))
                .expression_attribute_values(":me", s(me))
                .send()
                .await
        })?
        .map(|_| ())
        .map_err(|e| {
            if is_condition_failed(&e) {
                Error::Environment(format!(
                    "the lock on {} was lost: another run holds it now",
                    lease.key
                ))
            } else {
                sdk("UpdateItem", e)
            }
        })
    }
}

impl AwsLease {
    /// Deletes the lock item if it is still ours (an expired lease someone else took stays).
    pub(crate) fn release(self) {
        let st = self.store.clone();
        let (pk, me) = (format!("LOCK#{}", self.key), self.run_id.clone());
        let deleted = run_on(&st.handle, {
            let (ddb, table) = (st.ddb.clone(), st.table.clone());
            async move {
                ddb.delete_item()
                    .table_name(table)
                    .key("pk", s(pk))
                    .key("sk", s("-"))
                    .condition_expression("#run = :me")
                    .expression_attribute_names("#run", "run")
                    .expression_attribute_values(":me", s(me))
                    .send()
                    .await
            }
        });
        match deleted {
            Ok(Err(e)) if !is_condition_failed(&e) => {
                tracing::error!(
                    "cannot release the lock on {}: {}",
                    self.key,
                    sdk("DeleteItem", e)
                )
            }
            Err(e) => tracing::error!("cannot release the lock on {}: {e}", self.key),
            _ => {}
        }
    }
}

/// Runs `fut` on `handle` and waits for it on this thread, which may be anything: a plain
/// thread, the script thread, or a worker of another runtime (a std channel is not a runtime).
fn run_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| Error::Internal("the state runtime stopped during a request".into()))
}

/// What a Query of one partition comes to: its items, or the SDK's error.
type QueryOutcome = std::result::Result<
    Vec<HashMap<String, AttributeValue>>,
    aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::query::QueryError>,
>;

/// The open breakers the items of the BREAKER partition describe.
fn breakers_of(items: &[HashMap<String, AttributeValue>]) -> Vec<OpenBreaker> {
    items
        .iter()
        .map(|i| OpenBreaker {
            scope: text(i, "sk").unwrap_or_default(),
            opened_at: text(i, "at").unwrap_or_default(),
            reason: text(i, "reason").unwrap_or_default(),
            by: text(i, "by").unwrap_or_default(),
        })
        .collect()
}

pub(crate) fn scope_name(scope: &str) -> String {
    if scope == "*" {
        "all runbooks".into()
    } else {
        format!("runbook {scope}")
    }
}
