//! Signs SNS envelopes the way AWS does, with the TEST-ONLY keys in `tests/fixtures/sns/`.
//!
//! The receiver (`src/hooks/sns.rs`) checks the signature over a canonical "string to sign"; this
//! helper builds that string independently, from the AWS documentation's key order, so a test
//! fails if either side gets the order wrong rather than both agreeing on a mistake.
//!
//! SignatureVersion "2" (RSA PKCS#1 v1.5 with SHA-256) is signed with aws-lc-rs. aws-lc-rs has no
//! SHA-1 *signing* encoding, only SHA-1 verification, so SignatureVersion "1" is signed through
//! aws-lc-sys (the C library aws-lc-rs already links, same version, no extra build), which is the
//! only way to make fresh v1 signatures at test time without running `openssl`.

// The test certificates are made through aws-lc's C API (the only `unsafe` outside the
// counting allocator), in tests only.
#![allow(unsafe_code)]
// Included by the integration tests and by the receiver's unit tests (`#[path]`): its `pub` items
// are for whichever includes it.
#![allow(unreachable_pub)]

use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};

/// TEST-ONLY private key (PKCS#8 PEM) that signs the envelopes the tests expect to verify.
pub const KEY: &str = include_str!("../fixtures/sns/signing-key.pem");
/// Self-signed certificate for [`KEY`], valid 2025-01-01 to 2125-01-01.
pub const CERT: &str = include_str!("../fixtures/sns/signing-cert.pem");
/// An unrelated TEST-ONLY key, to sign with the wrong key.
pub const OTHER_KEY: &str = include_str!("../fixtures/sns/other-key.pem");
/// The certificate for [`OTHER_KEY`].
pub const OTHER_CERT: &str = include_str!("../fixtures/sns/other-cert.pem");
/// [`KEY`]'s public key in a certificate that expired on 2021-01-01.
pub const EXPIRED_CERT: &str = include_str!("../fixtures/sns/expired-cert.pem");
/// [`KEY`]'s public key in a certificate valid only from 2120-01-01.
pub const NOT_YET_VALID_CERT: &str = include_str!("../fixtures/sns/not-yet-valid-cert.pem");

/// A full, signed SNS `Notification` envelope, as SNS POSTs it.
pub fn signed_notification(
    topic_arn: &str,
    cert_url: &str,
    message: &str,
    subject: Option<&str>,
    version: &str,
    key_pem: &str,
) -> Value {
    signed_notification_at(
        topic_arn,
        cert_url,
        message,
        subject,
        version,
        key_pem,
        &timestamp(),
    )
}

/// [`signed_notification`], sent (and signed) at `timestamp` (RFC 3339).
pub fn signed_notification_at(
    topic_arn: &str,
    cert_url: &str,
    message: &str,
    subject: Option<&str>,
    version: &str,
    key_pem: &str,
    timestamp: &str,
) -> Value {
    let message_id = fresh_id();
    let timestamp = timestamp.to_string();
    let mut to_sign = String::new();
    push(&mut to_sign, "Message", message);
    push(&mut to_sign, "MessageId", &message_id);
    if let Some(subject) = subject {
        push(&mut to_sign, "Subject", subject);
    }
    push(&mut to_sign, "Timestamp", &timestamp);
    push(&mut to_sign, "TopicArn", topic_arn);
    push(&mut to_sign, "Type", "Notification");

    let mut envelope = json!({
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": topic_arn,
        "Message": message,
        "Timestamp": timestamp,
        "SignatureVersion": version,
        "Signature": sign(&to_sign, version, key_pem),
        "SigningCertURL": cert_url,
        "UnsubscribeURL": format!(
            "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic_arn}:{}",
            fresh_id()
        ),
    });
    if let Some(subject) = subject {
        envelope["Subject"] = Value::from(subject);
    }
    envelope
}

/// A full, signed SNS `SubscriptionConfirmation` envelope for `subscribe_url`.
pub fn signed_subscription_confirmation(
    topic_arn: &str,
    cert_url: &str,
    subscribe_url: &str,
    version: &str,
    key_pem: &str,
) -> Value {
    let message_id = fresh_id();
    let timestamp = timestamp();
    let token = format!("2336412f37fb687f5d51e6e2425{}", fresh_id().replace('-', ""));
    let message = format!(
        "You have chosen to subscribe to the topic {topic_arn}.\n\
         To confirm the subscription, visit the SubscribeURL included in this message."
    );
    let mut to_sign = String::new();
    push(&mut to_sign, "Message", &message);
    push(&mut to_sign, "MessageId", &message_id);
    push(&mut to_sign, "SubscribeURL", subscribe_url);
    push(&mut to_sign, "Timestamp", &timestamp);
    push(&mut to_sign, "Token", &token);
    push(&mut to_sign, "TopicArn", topic_arn);
    push(&mut to_sign, "Type", "SubscriptionConfirmation");

    json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": message_id,
        "Token": token,
        "TopicArn": topic_arn,
        "Message": message,
        "SubscribeURL": subscribe_url,
        "Timestamp": timestamp,
        "SignatureVersion": version,
        "Signature": sign(&to_sign, version, key_pem),
        "SigningCertURL": cert_url,
    })
}

/// A CloudWatch alarm state change, shaped like the JSON string AWS puts in `Message`.
pub fn cloudwatch_alarm_message(
    alarm_name: &str,
    state: &str,
    dimensions: &[(&str, &str)],
) -> String {
    let old_state = if state == "OK" { "ALARM" } else { "OK" };
    let dimensions: Vec<Value> = dimensions
        .iter()
        .map(|(name, value)| json!({ "value": value, "name": name }))
        .collect();
    json!({
        "AlarmName": alarm_name,
        "AlarmDescription": format!("{alarm_name}: CPU above 80% for 10 minutes"),
        "AWSAccountId": "123456789012",
        "AlarmConfigurationUpdatedTimestamp": "2025-03-01T09:12:44.123+0000",
        "NewStateValue": state,
        "NewStateReason": "Threshold Crossed: 2 out of the last 2 datapoints [93.1 (01/03/25 10:05:00), 88.4 (01/03/25 10:00:00)] were greater than the threshold (80.0) (minimum 2 datapoints for OK -> ALARM transition).",
        "StateChangeTime": "2025-03-01T10:10:27.358+0000",
        "Region": "US East (N. Virginia)",
        "AlarmArn": format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:{alarm_name}"),
        "OldStateValue": old_state,
        "OKActions": [],
        "AlarmActions": ["arn:aws:sns:us-east-1:123456789012:runbook-alarms"],
        "InsufficientDataActions": [],
        "Trigger": {
            "MetricName": "CPUUtilization",
            "Namespace": "AWS/EC2",
            "StatisticType": "Statistic",
            "Statistic": "AVERAGE",
            "Unit": null,
            "Dimensions": dimensions,
            "Period": 300,
            "EvaluationPeriods": 2,
            "DatapointsToAlarm": 2,
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 80.0,
            "TreatMissingData": "missing",
            "EvaluateLowSampleCountPercentile": ""
        }
    })
    .to_string()
}

/// `key\nvalue\n`, the unit the string to sign is made of.
fn push(to_sign: &mut String, key: &str, value: &str) {
    to_sign.push_str(key);
    to_sign.push('\n');
    to_sign.push_str(value);
    to_sign.push('\n');
}

/// Base64 RSA PKCS#1 v1.5 signature: SHA-1 for version "1", SHA-256 for "2".
fn sign(to_sign: &str, version: &str, key_pem: &str) -> String {
    let key = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).expect("PKCS#8 PEM key");
    let signature = match version {
        "1" => sign_sha1(key.secret_pkcs8_der(), to_sign.as_bytes()),
        "2" => {
            let pair = RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()).expect("RSA PKCS#8 key");
            let mut signature = vec![0; pair.public_modulus_len()];
            let rng = aws_lc_rs::rand::SystemRandom::new();
            pair.sign(&RSA_PKCS1_SHA256, &rng, to_sign.as_bytes(), &mut signature)
                .expect("RSA SHA-256 signature");
            signature
        }
        other => panic!("test helper signs SignatureVersion 1 or 2, not {other:?}"),
    };
    STANDARD.encode(signature)
}

/// RSA PKCS#1 v1.5 over SHA-1, through the aws-lc C API (see the module docs for why).
fn sign_sha1(pkcs8_der: &[u8], message: &[u8]) -> Vec<u8> {
    use aws_lc_sys as sys;
    use std::os::raw::{c_int, c_uint};

    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, message);
    let digest = digest.as_ref();
    // SAFETY: every pointer handed to aws-lc points into a live Rust buffer of the stated length;
    // the EVP_PKEY and RSA objects are checked for null before use and freed exactly once (the RSA
    // from EVP_PKEY_get1_RSA carries its own reference).
    unsafe {
        let mut cbs = sys::CBS {
            data: std::ptr::null(),
            len: 0,
        };
        sys::CBS_init(&mut cbs, pkcs8_der.as_ptr(), pkcs8_der.len());
        let pkey = sys::EVP_parse_private_key(&mut cbs);
        assert!(!pkey.is_null(), "aws-lc could not parse the PKCS#8 key");
        let rsa = sys::EVP_PKEY_get1_RSA(pkey);
        sys::EVP_PKEY_free(pkey);
        assert!(!rsa.is_null(), "the PKCS#8 key is not an RSA key");
        let mut signature = vec![0u8; sys::RSA_size(rsa) as usize];
        let mut len: c_uint = 0;
        let ok = sys::RSA_sign(
            sys::NID_sha1 as c_int,
            digest.as_ptr(),
            digest.len(),
            signature.as_mut_ptr(),
            &mut len,
            rsa,
        );
        sys::RSA_free(rsa);
        assert_eq!(ok, 1, "RSA_sign(SHA-1) failed");
        signature.truncate(len as usize);
        signature
    }
}

/// A UUID-shaped id, unique within the test run (the receiver never interprets it).
fn fresh_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = chrono::Utc::now().timestamp_subsec_nanos();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        nanos,
        n & 0xffff,
        n >> 16 & 0xfff,
        0,
        n
    )
}

/// The timestamp format SNS uses: ISO 8601 UTC with milliseconds.
fn timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}
