//! `runbook state init` and `runbook state check`: create the table and bucket the `aws`
//! backend needs, print the least-privilege IAM policies, and check access.

use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types as ddbt;
use aws_sdk_s3::types as s3t;

use super::Store;
use super::aws::AwsStore;
use crate::base::error::{Error, Result};
use crate::data::config::StateConfig;

fn aws_only(config: &StateConfig) -> Result<std::sync::Arc<AwsStore>> {
    match Store::open(config)? {
        Store::Aws(a) => Ok(a),
        Store::Local(_) => Err(Error::Usage(
            "the state backend is local (files on this host): nothing to create or check; set [state] backend = \"aws\" in runbook.toml for a shared one".into(),
        )),
    }
}

fn env_err(what: &str, e: impl ProvideErrorMetadata + std::fmt::Display) -> Error {
    Error::Environment(format!(
        "{what}: {}: {}",
        e.code().unwrap_or("unknown"),
        e.message()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string())
    ))
}

/// Creates the table (keys `pk`/`sk`, on-demand, TTL on `ttl`) and the bucket (versioned; with
/// Object Lock in compliance mode when `retention_days` is set). What exists already is kept.
/// Returns the report to print, IAM policies included.
pub fn init(config: &StateConfig) -> Result<String> {
    let store = aws_only(config)?;
    let mut out = Vec::new();
    let (ddb, table) = (store.ddb().clone(), store.table().to_string());
    let (pk, sk) = (attr("pk")?, attr("sk")?);
    let (hash, range) = (
        key("pk", ddbt::KeyType::Hash)?,
        key("sk", ddbt::KeyType::Range)?,
    );
    store.run(async move {
        let created = ddb
            .create_table()
            .table_name(table)
            .billing_mode(ddbt::BillingMode::PayPerRequest)
            .attribute_definitions(pk)
            .attribute_definitions(sk)
            .key_schema(hash)
            .key_schema(range)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceInUseException") => Ok(()),
            Err(e) => Err(env_err("CreateTable", e)),
        }
    })??;
    out.push(format!(
        "table {}: ready (pk, sk; on demand)",
        store.table()
    ));
    wait_active(&store)?;
    let (ddb, table) = (store.ddb().clone(), store.table().to_string());
    store.run(async move {
        let spec = ddbt::TimeToLiveSpecification::builder()
            .attribute_name("ttl")
            .enabled(true)
            .build()
            .map_err(|e| Error::Internal(format!("TTL specification: {e}")))?;
        match ddb
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(spec)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already on: what we wanted.
            Err(e) if e.message().is_some_and(|m| m.contains("already enabled")) => Ok(()),
            Err(e) => Err(env_err("UpdateTimeToLive", e)),
        }
    })??;
    out.push("  TTL on `ttl` (clean-up only: every decision compares expiries itself)".into());

    let (s3, bucket, days) = (
        store.s3.clone(),
        store.bucket().to_string(),
        store.retention_days,
    );
    let region = s3.config().region().map(|r| r.to_string());
    store.run(async move {
        let mut create = s3.create_bucket().bucket(&bucket);
        if let Some(region) = region.filter(|r| r != "us-east-1") {
            create = create.create_bucket_configuration(
                s3t::CreateBucketConfiguration::builder()
                    .location_constraint(s3t::BucketLocationConstraint::from(region.as_str()))
                    .build(),
            );
        }
        if days.is_some() {
            create = create.object_lock_enabled_for_bucket(true);
        }
        match create.send().await {
            Ok(_) => {}
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => {}
            Err(e) => return Err(env_err("CreateBucket", e)),
        }
        s3.put_bucket_versioning()
            .bucket(&bucket)
            .versioning_configuration(
                s3t::VersioningConfiguration::builder()
                    .status(s3t::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| env_err("PutBucketVersioning", e))?;
        if let Some(days) = days {
            let days = i32::try_from(days).unwrap_or(i32::MAX);
            // Already so (a second `init`): moto refuses to set it again on a bucket that holds
            // objects, and there is nothing to change.
            let current = s3
                .get_object_lock_configuration()
                .bucket(&bucket)
                .send()
                .await
                .ok()
                .and_then(|out| out.object_lock_configuration)
                .and_then(|c| c.rule)
                .and_then(|r| r.default_retention);
            let same = current.is_some_and(|r| {
                r.mode == Some(s3t::ObjectLockRetentionMode::Compliance) && r.days == Some(days)
            });
            if same {
                return Ok::<(), Error>(());
            }
            s3.put_object_lock_configuration()
                .bucket(&bucket)
                .object_lock_configuration(
                    s3t::ObjectLockConfiguration::builder()
                        .object_lock_enabled(s3t::ObjectLockEnabled::Enabled)
                        .rule(
                            s3t::ObjectLockRule::builder()
                                .default_retention(
                                    s3t::DefaultRetention::builder()
                                        .mode(s3t::ObjectLockRetentionMode::Compliance)
                                        .days(days)
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .map_err(|e| env_err("PutObjectLockConfiguration", e))?;
        }
        Ok::<(), Error>(())
    })??;
    out.push(format!(
        "bucket {}: ready (versioned{})",
        store.bucket(),
        match store.retention_days {
            Some(d) => format!(", Object Lock compliance {d} day(s)"),
            None => String::new(),
        }
    ));
    out.push(String::new());
    out.push(policies(config));
    Ok(out.join("\n"))
}

fn attr(name: &str) -> Result<ddbt::AttributeDefinition> {
    ddbt::AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ddbt::ScalarAttributeType::S)
        .build()
        .map_err(|e| Error::Internal(format!("attribute definition: {e}")))
}

fn key(name: &str, kind: ddbt::KeyType) -> Result<ddbt::KeySchemaElement> {
    ddbt::KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|e| Error::Internal(format!("key schema: {e}")))
}

/// Waits (up to two minutes) for a new table to become ACTIVE: TTL cannot be set before.
fn wait_active(store: &AwsStore) -> Result<()> {
    for _ in 0..120 {
        let (ddb, table) = (store.ddb().clone(), store.table().to_string());
        let status = store.run(async move {
            ddb.describe_table()
                .table_name(table)
                .send()
                .await
                .map(|out| out.table.and_then(|t| t.table_status))
                .map_err(|e| env_err("DescribeTable", e))
        })??;
        if status == Some(ddbt::TableStatus::Active) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(Error::Environment(format!(
        "table {} did not become ACTIVE within two minutes",
        store.table()
    )))
}

/// Verifies access: the table exists with our keys and takes a conditional write, and the
/// bucket answers a listing. Returns one line per check.
pub fn check(config: &StateConfig) -> Result<String> {
    let store = aws_only(config)?;
    let (ddb, table) = (store.ddb().clone(), store.table().to_string());
    let keys = store.run(async move {
        ddb.describe_table()
            .table_name(table)
            .send()
            .await
            .map(|out| {
                out.table
                    .map(|t| {
                        t.key_schema
                            .unwrap_or_default()
                            .iter()
                            .map(|k| k.attribute_name.clone())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .map_err(|e| env_err("DescribeTable", e))
    })??;
    if keys != ["pk", "sk"] {
        return Err(Error::Environment(format!(
            "table {} has keys {keys:?}, not [\"pk\", \"sk\"]: it was not made by `runbook state init`",
            store.table()
        )));
    }
    let mut out = vec![format!("table {}: keys pk, sk", store.table())];
    // A write and its undo, both conditional, as every decision is.
    let probe = super::Holder::this_process("state-check", &crate::base::clock::now_utc());
    let locks = store.try_lock(&format!("check/{}", probe.host), &probe)?;
    match locks {
        Ok(lease) => lease.release(),
        Err(holder) => {
            return Err(Error::Environment(format!(
                "the check item is held by {} ({}): another `state check` is running",
                holder.operator, holder.host
            )));
        }
    }
    out.push("  conditional write and delete: ok".into());
    let (s3, bucket) = (store.s3.clone(), store.bucket().to_string());
    store.run(async move {
        s3.list_objects_v2()
            .bucket(bucket)
            .max_keys(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| env_err("ListObjectsV2", e))
    })??;
    out.push(format!("bucket {}: listing ok", store.bucket()));
    Ok(out.join("\n"))
}

/// The least-privilege policies: what the runner needs, and what `state init` needs on top.
pub fn policies(config: &StateConfig) -> String {
    let table = format!("arn:aws:dynamodb:*:*:table/{}", config.table);
    let bucket = format!("arn:aws:s3:::{}", config.bucket);
    let objects = if config.prefix.is_empty() {
        format!("arn:aws:s3:::{}/*", config.bucket)
    } else {
        format!("arn:aws:s3:::{}/{}/*", config.bucket, config.prefix)
    };
    // Object Lock headers on a PutObject need the retention permission too.
    let mut object_actions = vec!["s3:PutObject", "s3:GetObject"];
    if config.retention_days.is_some() {
        object_actions.push("s3:PutObjectRetention");
    }
    let runner = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            { "Effect": "Allow",
              "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                         "dynamodb:DeleteItem", "dynamodb:Query", "dynamodb:BatchGetItem",
                         "dynamodb:DescribeTable"],
              "Resource": table },
            { "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": bucket },
            { "Effect": "Allow", "Action": object_actions, "Resource": objects }
        ]
    });
    let init = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            { "Effect": "Allow",
              "Action": ["dynamodb:CreateTable", "dynamodb:DescribeTable", "dynamodb:UpdateTimeToLive"],
              "Resource": table },
            { "Effect": "Allow",
              "Action": ["s3:CreateBucket", "s3:PutBucketVersioning", "s3:PutBucketObjectLockConfiguration"],
              "Resource": bucket }
        ]
    });
    format!(
        "IAM policy for every runner (serve replicas, operators):\n{}\n\nIAM policy for `runbook state init` only:\n{}",
        serde_json::to_string_pretty(&runner).unwrap_or_default(),
        serde_json::to_string_pretty(&init).unwrap_or_default()
    )
}
