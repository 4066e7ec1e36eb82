//! The receiving side of the AWS SNS HTTP/HTTPS subscription protocol.
//!
//! SNS POSTs a JSON envelope to our endpoint. Anyone who can reach the endpoint can POST the same
//! shape, so nothing in an envelope is believed until [`CertCache::verify`] has checked, in order:
//!
//! 1. the topic is one we were told to trust (so a valid message for someone else's topic, which
//!    AWS would happily sign, can't drive our runbooks);
//! 2. the signature version is one we implement;
//! 3. the signing certificate's URL is on the allow-list *before* we fetch it (otherwise an
//!    attacker names their own certificate, or makes us fetch arbitrary URLs);
//! 4. the certificate parses and is inside its validity period;
//! 5. the signature verifies over the canonical string SNS signs ([`string_to_sign`]).
//!
//! Authenticity of the certificate itself comes from step 3: the allow-listed URL is an HTTPS URL
//! on an AWS host, so TLS vouches for the bytes. That is what AWS documents; no X.509 chain to a
//! root is built here.
//!
//! Subscriptions are confirmed by GETting the `SubscribeURL` ([`confirm_subscription`]), again only
//! after verification and only for an allow-listed topic and URL: a forged confirmation would
//! otherwise make us subscribe ourselves to, or probe, whatever URL it names.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256, RsaParameters,
    UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{
    AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm,
    UnixTime, alg_id,
};
use serde::Deserialize;
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};

mod alarm;

pub use alarm::{CloudWatchAlarm, cloudwatch_alarm};

/// The default for [`SnsTrust::cert_url`]: SNS's own signing certificates, in every commercial
/// and China region, over HTTPS only.
///
/// The host is `sns.<region>.amazonaws.com[.cn]` with a region's shape (`us-east-1`,
/// `us-gov-west-1`, `cn-north-1`): a looser `sns.<anything>` would also match S3's
/// virtual-host URLs (`sns.s3.amazonaws.com` is a bucket named `sns`, which anyone can own).
pub const DEFAULT_CERT_URL_PATTERN: &str = r"^https://sns\.[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}\.amazonaws\.com(\.cn)?/SimpleNotificationService-[0-9a-f]+\.pem$";

/// The default for [`SnsTrust::subscribe_url`]: SNS's own `ConfirmSubscription` endpoint.
pub const DEFAULT_SUBSCRIBE_URL_PATTERN: &str = r"^https://sns\.[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}\.amazonaws\.com(\.cn)?/\?Action=ConfirmSubscription&";

/// A signature's decoded size: an RSA signature is as long as the key's modulus, and the keys
/// accepted are 2048 to 8192 bits. Anything else is refused before a certificate is fetched.
const SIGNATURE_BYTES: std::ops::RangeInclusive<usize> = 256..=1024;

/// How long a failed certificate fetch is remembered (the same bad URL is not fetched again
/// for every message naming it).
const FAILURE_TTL: Duration = Duration::from_secs(30);

/// Certificate fetches allowed per minute, all URLs together (SNS rotates its certificate
/// rarely; a flood of distinct URLs must not turn the receiver into a request amplifier).
const FETCHES_PER_MINUTE: usize = 20;

/// The largest signing certificate we accept. Real ones are about 2 KiB; the limit keeps a
/// misbehaving server from making us buffer an unbounded body.
const MAX_CERT_BYTES: usize = 16 * 1024;

/// How long a certificate fetch or a subscription confirmation may take. The caller is an HTTP
/// handler that SNS retries if it doesn't answer in time, so waiting longer helps nobody.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// How many certificates [`CertCache`] keeps. SNS uses one certificate per region at a time, so
/// this is plenty; the bound only matters if the allow-list is widened.
const MAX_CACHED_CERTS: usize = 32;

/// What the receiver trusts (from hooks.toml).
#[derive(Debug, Clone)]
pub struct SnsTrust {
    /// Topic ARNs whose messages are accepted and whose subscriptions are confirmed.
    pub topics: Vec<String>,
    /// SigningCertURL must match this (default: [`DEFAULT_CERT_URL_PATTERN`]).
    pub cert_url: regex::Regex,
    /// SubscribeURL must match this before we GET it (default: [`DEFAULT_SUBSCRIBE_URL_PATTERN`]).
    pub subscribe_url: regex::Regex,
}

impl SnsTrust {
    /// Trust `topics`, with the default AWS-only certificate and subscribe URL patterns.
    ///
    /// Fallible only because the patterns are compiled at run time; the defaults always compile.
    pub fn new(topics: Vec<String>) -> Result<Self, regex::Error> {
        Ok(SnsTrust {
            topics,
            cert_url: regex::Regex::new(DEFAULT_CERT_URL_PATTERN)?,
            subscribe_url: regex::Regex::new(DEFAULT_SUBSCRIBE_URL_PATTERN)?,
        })
    }

    fn trusts_topic(&self, topic_arn: &str) -> bool {
        self.topics.iter().any(|t| t == topic_arn)
    }
}

/// The envelope's `Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A message published to the topic.
    Notification,
    /// SNS asks us to confirm a new subscription by visiting `SubscribeURL`.
    SubscriptionConfirmation,
    /// SNS tells us the subscription was removed.
    UnsubscribeConfirmation,
}

impl Kind {
    /// The `Type` value as AWS spells it (it is part of the signed string).
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Notification => "Notification",
            Kind::SubscriptionConfirmation => "SubscriptionConfirmation",
            Kind::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }
}

/// A parsed SNS envelope (the JSON body SNS POSTs), fields as AWS names them.
///
/// Parsing checks shape only; nothing here is authentic until [`CertCache::verify`] says so.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `Type`.
    pub kind: Kind,
    /// `MessageId`: unique per message, so it is the key to drop SNS's redeliveries.
    pub message_id: String,
    /// `TopicArn`.
    pub topic_arn: String,
    /// `Subject`: only notifications have one, and only when the publisher set it.
    pub subject: Option<String>,
    /// `Message`: for a CloudWatch alarm, a JSON string ([`cloudwatch_alarm`]).
    pub message: String,
    /// `Timestamp`, as sent (it is signed verbatim, so it is not reformatted).
    pub timestamp: String,
    /// `SignatureVersion`: "1" (SHA-1) or "2" (SHA-256).
    pub signature_version: String,
    /// `Signature`, base64.
    pub signature: String,
    /// `SigningCertURL`.
    pub signing_cert_url: String,
    /// `SubscribeURL`: present on (and required for) both confirmation kinds.
    pub subscribe_url: Option<String>,
    /// `Token`: present on (and required for) both confirmation kinds.
    pub token: Option<String>,
    /// `UnsubscribeURL`: present on notifications; not signed, kept for logging.
    pub unsubscribe_url: Option<String>,
}

/// Why an envelope was refused. [`SnsError::reason`] gives a stable token for metrics.
#[derive(Debug, thiserror::Error)]
pub enum SnsError {
    /// The body or the alarm message isn't the JSON SNS sends.
    #[error("malformed SNS message: {0}")]
    Malformed(String),
    /// The topic isn't in [`SnsTrust::topics`].
    #[error("topic {0} is not trusted")]
    UnknownTopic(String),
    /// `SigningCertURL` doesn't match [`SnsTrust::cert_url`]; nothing was fetched.
    #[error("signing certificate URL {0} is not allowed")]
    CertUrlNotAllowed(String),
    /// The certificate couldn't be downloaded.
    #[error("could not fetch the signing certificate: {0}")]
    CertFetch(String),
    /// The certificate downloaded but isn't a usable, currently valid X.509 certificate.
    #[error("bad signing certificate: {0}")]
    BadCertificate(String),
    /// The signature isn't valid base64, or doesn't verify with the certificate's key.
    #[error("the SNS signature does not verify")]
    BadSignature,
    /// `SignatureVersion` is neither "1" nor "2".
    #[error("unsupported SNS SignatureVersion {0:?}")]
    UnsupportedSignatureVersion(String),
    /// `SubscribeURL` doesn't match [`SnsTrust::subscribe_url`]; nothing was fetched.
    #[error("subscribe URL {0} is not allowed")]
    SubscribeUrlNotAllowed(String),
    /// Confirming the subscription failed (or the envelope isn't a confirmation request).
    #[error("could not confirm the subscription: {0}")]
    Confirm(String),
}

impl SnsError {
    /// A short stable token for metrics and records, so dashboards don't depend on message text.
    pub fn reason(&self) -> &'static str {
        match self {
            SnsError::Malformed(_) => "malformed",
            SnsError::UnknownTopic(_) => "unknown_topic",
            SnsError::CertUrlNotAllowed(_) => "cert_url",
            SnsError::CertFetch(_) => "cert_fetch",
            SnsError::BadCertificate(_) => "bad_certificate",
            SnsError::BadSignature => "bad_signature",
            SnsError::UnsupportedSignatureVersion(_) => "signature_version",
            SnsError::SubscribeUrlNotAllowed(_) => "subscribe_url",
            SnsError::Confirm(_) => "confirm",
        }
    }
}

/// The envelope as it comes off the wire, before the per-kind required fields are checked.
#[derive(Deserialize)]
struct RawEnvelope {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "MessageId")]
    message_id: String,
    #[serde(rename = "TopicArn")]
    topic_arn: String,
    #[serde(rename = "Subject", default)]
    subject: Option<String>,
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "Timestamp")]
    timestamp: String,
    #[serde(rename = "SignatureVersion")]
    signature_version: String,
    #[serde(rename = "Signature")]
    signature: String,
    #[serde(rename = "SigningCertURL")]
    signing_cert_url: String,
    #[serde(rename = "SubscribeURL", default)]
    subscribe_url: Option<String>,
    #[serde(rename = "Token", default)]
    token: Option<String>,
    #[serde(rename = "UnsubscribeURL", default)]
    unsubscribe_url: Option<String>,
}

/// Parse an SNS POST body. Checks shape only (see [`CertCache::verify`] for authenticity).
///
/// Confirmations must carry `SubscribeURL` and `Token`, because both are part of the signed
/// string: without them the signature could never verify, so they are rejected here instead.
pub fn parse(body: &[u8]) -> Result<Envelope, SnsError> {
    let raw: RawEnvelope =
        serde_json::from_slice(body).map_err(|e| SnsError::Malformed(e.to_string()))?;
    let kind = match raw.kind.as_str() {
        "Notification" => Kind::Notification,
        "SubscriptionConfirmation" => Kind::SubscriptionConfirmation,
        "UnsubscribeConfirmation" => Kind::UnsubscribeConfirmation,
        other => return Err(SnsError::Malformed(format!("unknown Type {other:?}"))),
    };
    if kind != Kind::Notification {
        if raw.subscribe_url.is_none() {
            return Err(SnsError::Malformed(format!(
                "{} without SubscribeURL",
                kind.as_str()
            )));
        }
        if raw.token.is_none() {
            return Err(SnsError::Malformed(format!(
                "{} without Token",
                kind.as_str()
            )));
        }
    }
    Ok(Envelope {
        kind,
        message_id: raw.message_id,
        topic_arn: raw.topic_arn,
        subject: raw.subject,
        message: raw.message,
        timestamp: raw.timestamp,
        signature_version: raw.signature_version,
        signature: raw.signature,
        signing_cert_url: raw.signing_cert_url,
        subscribe_url: raw.subscribe_url,
        token: raw.token,
        unsubscribe_url: raw.unsubscribe_url,
    })
}

/// The canonical string SNS signs (the documented key order per message type; Subject only when
/// present).
///
/// Each key, then its value, each followed by `\n`. The keys are in byte order, which is why
/// `Subject` sits between `MessageId` and `Timestamp`.
pub fn string_to_sign(e: &Envelope) -> String {
    let mut out = String::with_capacity(e.message.len() + 512);
    let mut push = |key: &str, value: &str| {
        out.push_str(key);
        out.push('\n');
        out.push_str(value);
        out.push('\n');
    };
    push("Message", &e.message);
    push("MessageId", &e.message_id);
    match e.kind {
        Kind::Notification => {
            if let Some(subject) = &e.subject {
                push("Subject", subject);
            }
            push("Timestamp", &e.timestamp);
        }
        Kind::SubscriptionConfirmation | Kind::UnsubscribeConfirmation => {
            push(
                "SubscribeURL",
                e.subscribe_url.as_deref().unwrap_or_default(),
            );
            push("Timestamp", &e.timestamp);
            push("Token", e.token.as_deref().unwrap_or_default());
        }
    }
    push("TopicArn", &e.topic_arn);
    push("Type", e.kind.as_str());
    out
}

/// RSA PKCS#1 v1.5 verification on top of aws-lc-rs, for webpki's
/// [`EndEntityCert::verify_signature`].
///
/// webpki ships no RSA-SHA1 algorithm (SHA-1 is gone from TLS), but SNS SignatureVersion 1 is
/// still the default for topics, so both versions are provided here the same way.
struct RsaPkcs1 {
    name: &'static str,
    params: &'static RsaParameters,
    signature_alg_id: AlgorithmIdentifier,
}

impl fmt::Debug for RsaPkcs1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl SignatureVerificationAlgorithm for RsaPkcs1 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        UnparsedPublicKey::new(self.params, public_key)
            .verify(message, signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        self.signature_alg_id
    }
}

/// SignatureVersion "1".
static RSA_PKCS1_SHA1: RsaPkcs1 = RsaPkcs1 {
    name: "RSA_PKCS1_SHA1",
    params: &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
    // The content of the AlgorithmIdentifier for sha1WithRSAEncryption (OID 1.2.840.113549.1.1.5,
    // NULL parameters); rustls-pki-types has no constant for it. Only used in webpki's error
    // reports: certificate-signature matching never sees this algorithm.
    signature_alg_id: AlgorithmIdentifier::from_slice(&[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05, 0x00,
    ]),
};

/// SignatureVersion "2".
static RSA_PKCS1_SHA256: RsaPkcs1 = RsaPkcs1 {
    name: "RSA_PKCS1_SHA256",
    params: &RSA_PKCS1_2048_8192_SHA256,
    signature_alg_id: alg_id::RSA_PKCS1_SHA256,
};

/// Signing certificates by URL, fetched once (only from allow-listed URLs, with a size limit
/// and a timeout) and kept (bounded).
///
/// SNS signs every message with the same regional certificate, so fetching it per message would
/// put AWS's certificate host on the hot path of every alarm. Only the DER bytes are kept; the
/// validity period is checked on every use, so a cached certificate still expires.
pub struct CertCache {
    http: reqwest::Client,
    certs: Mutex<Certs>,
    fetches: AtomicUsize,
    fetches_per_minute: usize,
}

/// A certificate fetch that failed recently: the URL, when, and the error to repeat.
struct Failure {
    url: String,
    at: Instant,
    bad_certificate: bool,
    message: String,
}

impl Failure {
    fn error(&self) -> SnsError {
        let message = format!("{} (failed recently; not fetched again yet)", self.message);
        if self.bad_certificate {
            SnsError::BadCertificate(message)
        } else {
            SnsError::CertFetch(message)
        }
    }
}

/// The cache proper: oldest URL first in `order`, evicted when full; recent failures (each
/// forgotten after [`FAILURE_TTL`], at most [`MAX_CACHED_CERTS`]); when the fetches of the last
/// minute started.
#[derive(Default)]
struct Certs {
    by_url: HashMap<String, Arc<CertificateDer<'static>>>,
    order: VecDeque<String>,
    failed: VecDeque<Failure>,
    fetched_at: VecDeque<Instant>,
}

impl CertCache {
    /// A cache that fetches with `http` (shared, so connections are pooled with the rest of the
    /// receiver). Each fetch is limited to 5 s regardless of the client's own timeouts.
    pub fn new(http: reqwest::Client) -> Self {
        CertCache {
            http,
            certs: Mutex::new(Certs::default()),
            fetches: AtomicUsize::new(0),
            fetches_per_minute: FETCHES_PER_MINUTE,
        }
    }

    /// The same, allowing `n` fetches a minute (tests that fetch many certificates).
    pub fn with_fetches_per_minute(mut self, n: usize) -> Self {
        self.fetches_per_minute = n;
        self
    }

    /// How many certificate fetches were made (so tests can prove caching).
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Full check, in this order: topic allow-listed ([`SnsError::UnknownTopic`]),
    /// SignatureVersion "1" (RSA PKCS#1 v1.5 SHA-1) or "2" (SHA-256) else
    /// [`SnsError::UnsupportedSignatureVersion`], cert URL allow-listed
    /// ([`SnsError::CertUrlNotAllowed`], checked before any fetch), signature is base64, cert
    /// fetched or cached and parsed (X.509 PEM, inside its validity period), signature verified
    /// over [`string_to_sign`] with the certificate's RSA public key.
    ///
    /// The cheap, local checks come first so that junk never costs a fetch.
    pub async fn verify(&self, e: &Envelope, trust: &SnsTrust) -> Result<(), SnsError> {
        let (algorithm, signature) = local_checks(e, trust)?;
        let der = self.certificate(&e.signing_cert_url, trust).await?;
        check_signature(e, algorithm, &signature, &der, UnixTime::now())
    }

    /// The certificate at `url` from the cache, or fetched (and then cached).
    ///
    /// Two concurrent first uses of a URL may both fetch; that is harmless and keeps the lock
    /// from being held across an await.
    async fn certificate(
        &self,
        url: &str,
        trust: &SnsTrust,
    ) -> Result<Arc<CertificateDer<'static>>, SnsError> {
        {
            let mut certs = self.lock();
            if let Some(der) = certs.by_url.get(url) {
                return Ok(Arc::clone(der));
            }
            certs.failed.retain(|f| f.at.elapsed() < FAILURE_TTL);
            if let Some(failure) = certs.failed.iter().find(|f| f.url == url) {
                return Err(failure.error());
            }
            while certs
                .fetched_at
                .front()
                .is_some_and(|at| at.elapsed() >= Duration::from_secs(60))
            {
                certs.fetched_at.pop_front();
            }
            if certs.fetched_at.len() >= self.fetches_per_minute {
                return Err(SnsError::CertFetch(format!(
                    "{url}: over {} certificate fetches a minute; try again shortly",
                    self.fetches_per_minute
                )));
            }
            certs.fetched_at.push_back(Instant::now());
        }
        let der = match self.fetch(url, trust).await {
            Ok(der) => Arc::new(der),
            Err(e) => {
                let mut certs = self.lock();
                while certs.failed.len() >= MAX_CACHED_CERTS {
                    certs.failed.pop_front();
                }
                let (bad_certificate, message) = match &e {
                    SnsError::BadCertificate(m) => (true, m.clone()),
                    SnsError::CertFetch(m) => (false, m.clone()),
                    other => (false, other.to_string()),
                };
                certs.failed.push_back(Failure {
                    url: url.to_string(),
                    at: Instant::now(),
                    bad_certificate,
                    message,
                });
                return Err(e);
            }
        };
        let mut certs = self.lock();
        if !certs.by_url.contains_key(url) {
            while certs.order.len() >= MAX_CACHED_CERTS {
                if let Some(oldest) = certs.order.pop_front() {
                    certs.by_url.remove(&oldest);
                }
            }
            certs.order.push_back(url.to_string());
            certs.by_url.insert(url.to_string(), Arc::clone(&der));
        }
        Ok(der)
    }

    /// The cache, even if a panicking thread poisoned the lock: the map is never left half
    /// updated, so its contents stay good.
    fn lock(&self) -> std::sync::MutexGuard<'_, Certs> {
        self.certs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Download and parse one certificate. Only called for allow-listed URLs.
    async fn fetch(
        &self,
        url: &str,
        trust: &SnsTrust,
    ) -> Result<CertificateDer<'static>, SnsError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fetch_error = |detail: String| SnsError::CertFetch(format!("{url}: {detail}"));
        let mut response = self
            .http
            .get(url)
            .timeout(HTTP_TIMEOUT)
            .send()
            .await
            .map_err(|e| fetch_error(e.without_url().to_string()))?;
        // The client may follow redirects; the allow-list is about where the bytes come from.
        if !trust.cert_url.is_match(response.url().as_str()) {
            return Err(fetch_error(format!(
                "redirected to {}, which is not allowed",
                response.url()
            )));
        }
        let status = response.status();
        if !status.is_success() {
            return Err(fetch_error(format!("HTTP {status}")));
        }
        let too_big = || fetch_error(format!("larger than {MAX_CERT_BYTES} bytes"));
        if response
            .content_length()
            .is_some_and(|len| len > MAX_CERT_BYTES as u64)
        {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fetch_error(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > MAX_CERT_BYTES {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        let der = CertificateDer::from_pem_slice(&body)
            .map_err(|e| SnsError::BadCertificate(format!("{url}: not a PEM certificate: {e}")))?;
        // Parse now so that garbage is never cached.
        EndEntityCert::try_from(&der)
            .map_err(|e| SnsError::BadCertificate(format!("{url}: {e}")))?;
        Ok(der)
    }
}

/// [`CertCache::verify`]'s checks before any fetch: topic, signature version, certificate URL,
/// base64 signature. Returns the algorithm and the decoded signature.
fn local_checks(e: &Envelope, trust: &SnsTrust) -> Result<(&'static RsaPkcs1, Vec<u8>), SnsError> {
    if !trust.trusts_topic(&e.topic_arn) {
        return Err(SnsError::UnknownTopic(e.topic_arn.clone()));
    }
    let algorithm: &'static RsaPkcs1 = match e.signature_version.as_str() {
        "1" => &RSA_PKCS1_SHA1,
        "2" => &RSA_PKCS1_SHA256,
        other => return Err(SnsError::UnsupportedSignatureVersion(other.to_string())),
    };
    if !trust.cert_url.is_match(&e.signing_cert_url) {
        return Err(SnsError::CertUrlNotAllowed(e.signing_cert_url.clone()));
    }
    // The signature's shape before anything is fetched: base64 of a 2048- to 8192-bit RSA
    // signature (and not megabytes of it).
    let encoded = e.signature.trim();
    if encoded.len() > SIGNATURE_BYTES.end().div_ceil(3) * 4 {
        return Err(SnsError::BadSignature);
    }
    let signature = STANDARD
        .decode(encoded)
        .map_err(|_| SnsError::BadSignature)?;
    if !SIGNATURE_BYTES.contains(&signature.len()) {
        return Err(SnsError::BadSignature);
    }
    Ok((algorithm, signature))
}

/// [`CertCache::verify`]'s checks after the fetch: the certificate parses, is valid at `now`,
/// and its key verifies `signature` over [`string_to_sign`].
fn check_signature(
    e: &Envelope,
    algorithm: &'static RsaPkcs1,
    signature: &[u8],
    der: &CertificateDer<'_>,
    now: UnixTime,
) -> Result<(), SnsError> {
    let cert = EndEntityCert::try_from(der)
        .map_err(|err| SnsError::BadCertificate(format!("{}: {err}", e.signing_cert_url)))?;
    check_validity(&cert, now)?;
    match cert.verify_signature(algorithm, string_to_sign(e).as_bytes(), signature) {
        Ok(()) => Ok(()),
        Err(webpki::Error::InvalidSignatureForPublicKey) => Err(SnsError::BadSignature),
        // Anything else means the key itself is unusable (not RSA, under 2048 bits, ...).
        Err(err) => Err(SnsError::BadCertificate(format!(
            "{}: {err:?}",
            e.signing_cert_url
        ))),
    }
}

/// [`CertCache::verify`] with the certificate given (DER) instead of fetched, at `now` (Unix
/// seconds). For the fuzz targets (`fuzz/`), which must not reach the network.
#[doc(hidden)]
pub fn verify_with_certificate(
    e: &Envelope,
    trust: &SnsTrust,
    der: &[u8],
    now: u64,
) -> Result<(), SnsError> {
    let (algorithm, signature) = local_checks(e, trust)?;
    check_signature(
        e,
        algorithm,
        &signature,
        &CertificateDer::from(der),
        UnixTime::since_unix_epoch(Duration::from_secs(now)),
    )
}

/// Reject a certificate outside its validity period at `now`.
///
/// webpki has no accessor for notBefore/notAfter, but its path builder checks them first, before
/// looking for an issuer. So the certificate is "verified" against no trust anchors with an
/// accept-anything EKU policy: `UnknownIssuer` then means every issuer-independent check (validity,
/// basic constraints) passed. Any other error, including the validity ones, rejects it. This is
/// pinned by the expired and not-yet-valid certificate tests.
fn check_validity(cert: &EndEntityCert<'_>, now: UnixTime) -> Result<(), SnsError> {
    match cert.verify_for_usage(&[], &[], &[], now, AnyUsage, None, None) {
        Ok(_) | Err(webpki::Error::UnknownIssuer) => Ok(()),
        Err(webpki::Error::CertExpired { not_after, .. }) => Err(SnsError::BadCertificate(
            format!("expired at {}", rfc3339(not_after)),
        )),
        Err(webpki::Error::CertNotValidYet { not_before, .. }) => Err(SnsError::BadCertificate(
            format!("not valid before {}", rfc3339(not_before)),
        )),
        Err(err) => Err(SnsError::BadCertificate(format!("{err:?}"))),
    }
}

fn rfc3339(time: UnixTime) -> String {
    i64::try_from(time.as_secs())
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .map_or_else(
            || format!("{}s after the epoch", time.as_secs()),
            |t| t.to_rfc3339(),
        )
}

/// An EKU policy that accepts anything: the SNS certificate is a TLS server certificate, and what
/// it may be used for says nothing about whether SNS signed with it.
struct AnyUsage;

impl ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// For a verified SubscriptionConfirmation of an allow-listed topic: GET the SubscribeURL (must
/// match `trust.subscribe_url`) and succeed on 2xx.
///
/// The caller must have run [`CertCache::verify`] first; the topic and URL are checked again here
/// because this is the call with a side effect, and it must never be pointed somewhere else.
/// Errors leave the URL out where they can: it carries the subscription token.
pub async fn confirm_subscription(
    http: &reqwest::Client,
    e: &Envelope,
    trust: &SnsTrust,
) -> Result<(), SnsError> {
    if e.kind != Kind::SubscriptionConfirmation {
        return Err(SnsError::Confirm(format!(
            "a {} is not a SubscriptionConfirmation",
            e.kind.as_str()
        )));
    }
    if !trust.trusts_topic(&e.topic_arn) {
        return Err(SnsError::UnknownTopic(e.topic_arn.clone()));
    }
    let url = e.subscribe_url.as_deref().unwrap_or_default();
    if !trust.subscribe_url.is_match(url) {
        return Err(SnsError::SubscribeUrlNotAllowed(url.to_string()));
    }
    let response = http
        .get(url)
        .timeout(HTTP_TIMEOUT)
        .send()
        .await
        .map_err(|err| SnsError::Confirm(err.without_url().to_string()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(SnsError::Confirm(format!("HTTP {status}")))
    }
}

/// The integration tests' envelope signer, shared so both test suites sign the same way.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../tests/common/sns.rs"]
mod test_signer;

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::extract::State;
    use axum::http::{StatusCode, Uri};
    use axum::response::{IntoResponse, Redirect, Response};
    use serde_json::{Value, json};

    use super::test_signer::{self, CERT, KEY, OTHER_KEY};
    use super::*;

    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:runbook-alarms";
    const GOOD_CERT: &str = "SimpleNotificationService-0123456789abcdef.pem";

    /// A loopback stand-in for SNS's certificate host and ConfirmSubscription endpoint. Every
    /// request's path and query is recorded, so tests can prove what was (not) fetched.
    struct Sns {
        base: String,
        hits: Arc<Mutex<Vec<String>>>,
    }

    impl Sns {
        async fn start() -> Sns {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let hits = Arc::new(Mutex::new(Vec::new()));
            let app = axum::Router::new()
                .fallback(Sns::handle)
                .with_state(Arc::clone(&hits));
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            Sns { base, hits }
        }

        async fn handle(State(hits): State<Arc<Mutex<Vec<String>>>>, uri: Uri) -> Response {
            let path_and_query = uri.path_and_query().map_or("", |p| p.as_str()).to_string();
            hits.lock().unwrap().push(path_and_query.clone());
            let cert = |pem: &'static str| pem.into_response();
            match uri.path() {
                "/" if path_and_query.contains("fail") => {
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
                "/" => "<ConfirmSubscriptionResponse/>".into_response(),
                "/SimpleNotificationService-e0.pem" => cert(test_signer::EXPIRED_CERT),
                "/SimpleNotificationService-f0.pem" => cert(test_signer::NOT_YET_VALID_CERT),
                "/SimpleNotificationService-b16.pem" => "A".repeat(20 * 1024).into_response(),
                "/SimpleNotificationService-9a4b.pem" => "this is not PEM".into_response(),
                "/SimpleNotificationService-7e.pem" => {
                    Redirect::temporary("/elsewhere.pem").into_response()
                }
                "/SimpleNotificationService-dead.pem" => StatusCode::NOT_FOUND.into_response(),
                "/elsewhere.pem" => cert(CERT),
                p if p.starts_with("/SimpleNotificationService-") => cert(CERT),
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }

        fn url(&self, path: &str) -> String {
            format!("{}/{path}", self.base)
        }

        fn hits(&self) -> Vec<String> {
            self.hits.lock().unwrap().clone()
        }

        fn trust(&self) -> SnsTrust {
            Sns::trust_for(r"^http://127\.0\.0\.1:\d+/SimpleNotificationService-[0-9a-f]+\.pem$")
        }

        fn trust_for(cert_url: &str) -> SnsTrust {
            SnsTrust {
                topics: vec![TOPIC.to_string()],
                cert_url: regex::Regex::new(cert_url).unwrap(),
                subscribe_url: regex::Regex::new(
                    r"^http://127\.0\.0\.1:\d+/\?Action=ConfirmSubscription&",
                )
                .unwrap(),
            }
        }
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    fn envelope(v: &Value) -> Envelope {
        parse(&serde_json::to_vec(v).unwrap()).unwrap()
    }

    /// A body as AWS documents it (values made up), so parsing is checked against AWS's
    /// spelling rather than against our own signer's.
    fn aws_notification() -> Value {
        json!({
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": TOPIC,
            "Subject": "ALARM: \"cpu-high\" in US East (N. Virginia)",
            "Message": "{\"AlarmName\":\"cpu-high\"}",
            "Timestamp": "2025-03-01T10:10:27.400Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQvi2egU3N858fiTDN6bkkOxYDVrY0Ad8L10Hs3zH81mtnPk5uvvolIC1CXGu43obcgFxeL3khZl8IKvO61GWB6jI9b5+gLPoBc1Q=",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-east-1:123456789012:runbook-alarms:c9135db0-26c4-47ec-8998-413945fb5a96"
        })
    }

    fn aws_confirmation(kind: &str) -> Value {
        json!({
            "Type": kind,
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6fdb82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736",
            "TopicArn": TOPIC,
            "Message": format!("You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the subscription, visit the SubscribeURL included in this message."),
            "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:123456789012:runbook-alarms&Token=2336412f37",
            "Timestamp": "2025-03-01T10:00:00.000Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLE=",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"
        })
    }

    #[test]
    fn notification_string_to_sign_follows_the_documented_order() {
        let e = envelope(&aws_notification());
        assert_eq!(e.kind, Kind::Notification);
        assert_eq!(e.topic_arn, TOPIC);
        assert_eq!(e.message_id, "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324");
        assert!(e.subscribe_url.is_none() && e.token.is_none());
        assert!(e.unsubscribe_url.is_some());
        let expected = format!(
            "Message\n{{\"AlarmName\":\"cpu-high\"}}\n\
             MessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n\
             Subject\nALARM: \"cpu-high\" in US East (N. Virginia)\n\
             Timestamp\n2025-03-01T10:10:27.400Z\n\
             TopicArn\n{TOPIC}\n\
             Type\nNotification\n"
        );
        assert_eq!(string_to_sign(&e), expected);
    }

    #[test]
    fn notification_without_subject_leaves_subject_out() {
        for subject in [None, Some(Value::Null)] {
            let mut body = aws_notification();
            let object = body.as_object_mut().unwrap();
            match subject {
                None => object.remove("Subject"),
                Some(null) => object.insert("Subject".into(), null),
            };
            let e = envelope(&body);
            assert_eq!(e.subject, None);
            let expected = format!(
                "Message\n{{\"AlarmName\":\"cpu-high\"}}\n\
                 MessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n\
                 Timestamp\n2025-03-01T10:10:27.400Z\n\
                 TopicArn\n{TOPIC}\n\
                 Type\nNotification\n"
            );
            assert_eq!(string_to_sign(&e), expected);
        }
    }

    #[test]
    fn confirmation_string_to_sign_follows_the_documented_order() {
        for (name, kind) in [
            ("SubscriptionConfirmation", Kind::SubscriptionConfirmation),
            ("UnsubscribeConfirmation", Kind::UnsubscribeConfirmation),
        ] {
            let e = envelope(&aws_confirmation(name));
            assert_eq!(e.kind, kind);
            let expected = format!(
                "Message\nYou have chosen to subscribe to the topic {TOPIC}.\nTo confirm the subscription, visit the SubscribeURL included in this message.\n\
                 MessageId\n165545c9-2a5c-472c-8df2-7ff2be2b3b1b\n\
                 SubscribeURL\nhttps://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:123456789012:runbook-alarms&Token=2336412f37\n\
                 Timestamp\n2025-03-01T10:00:00.000Z\n\
                 Token\n2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6fdb82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736\n\
                 TopicArn\n{TOPIC}\n\
                 Type\n{name}\n"
            );
            assert_eq!(string_to_sign(&e), expected, "{name}");
        }
    }

    #[test]
    fn parse_rejects_what_sns_would_not_send() {
        let without = |kind: Value, key: &str| {
            let mut v = if kind == "Notification" {
                aws_notification()
            } else {
                aws_confirmation(kind.as_str().unwrap())
            };
            v.as_object_mut().unwrap().remove(key);
            serde_json::to_vec(&v).unwrap()
        };
        let mut unknown_type = aws_notification();
        unknown_type["Type"] = json!("Surprise");
        let bodies: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"not json".to_vec(),
            b"[]".to_vec(),
            serde_json::to_vec(&unknown_type).unwrap(),
            without(json!("Notification"), "Signature"),
            without(json!("Notification"), "TopicArn"),
            without(json!("Notification"), "SigningCertURL"),
            without(json!("SubscriptionConfirmation"), "Token"),
            without(json!("SubscriptionConfirmation"), "SubscribeURL"),
            without(json!("UnsubscribeConfirmation"), "Token"),
        ];
        for body in bodies {
            let err = parse(&body).unwrap_err();
            assert!(
                matches!(err, SnsError::Malformed(_)),
                "{err:?} for {}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(err.reason(), "malformed");
        }
    }

    #[tokio::test]
    async fn valid_v1_and_v2_signatures_verify() {
        let sns = Sns::start().await;
        let cache = CertCache::new(client());
        for version in ["1", "2"] {
            let body = test_signer::signed_notification(
                TOPIC,
                &sns.url(GOOD_CERT),
                "{\"AlarmName\":\"x\"}",
                Some("ALARM"),
                version,
                KEY,
            );
            cache.verify(&envelope(&body), &sns.trust()).await.unwrap();
            let body = test_signer::signed_notification(
                TOPIC,
                &sns.url(GOOD_CERT),
                "no subject",
                None,
                version,
                KEY,
            );
            cache.verify(&envelope(&body), &sns.trust()).await.unwrap();
            let body = test_signer::signed_subscription_confirmation(
                TOPIC,
                &sns.url(GOOD_CERT),
                &format!("{}/?Action=ConfirmSubscription&Token=t", sns.base),
                version,
                KEY,
            );
            cache.verify(&envelope(&body), &sns.trust()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn tampered_fields_fail_the_signature() {
        let sns = Sns::start().await;
        let cache = CertCache::new(client());
        for version in ["1", "2"] {
            let body = test_signer::signed_notification(
                TOPIC,
                &sns.url(GOOD_CERT),
                "original",
                Some("s"),
                version,
                KEY,
            );
            let tampered: [(&str, Value); 4] = [
                ("Message", json!("tampered")),
                ("Subject", json!("other subject")),
                ("Timestamp", json!("2099-01-01T00:00:00.000Z")),
                ("Type", json!("UnsubscribeConfirmation")),
            ];
            for (key, value) in tampered {
                let mut body = body.clone();
                body[key] = value;
                if key == "Type" {
                    body["SubscribeURL"] = json!("x");
                    body["Token"] = json!("y");
                }
                let err = cache
                    .verify(&envelope(&body), &sns.trust())
                    .await
                    .unwrap_err();
                assert!(
                    matches!(err, SnsError::BadSignature),
                    "v{version} {key}: {err:?}"
                );
                assert_eq!(err.reason(), "bad_signature");
            }
            // Dropping the subject changes the signed string as well.
            let mut body = body.clone();
            body.as_object_mut().unwrap().remove("Subject");
            let err = cache
                .verify(&envelope(&body), &sns.trust())
                .await
                .unwrap_err();
            assert!(
                matches!(err, SnsError::BadSignature),
                "v{version} no subject: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn signature_by_another_key_or_of_another_version_fails() {
        let sns = Sns::start().await;
        let cache = CertCache::new(client());
        for version in ["1", "2"] {
            let body = test_signer::signed_notification(
                TOPIC,
                &sns.url(GOOD_CERT),
                "m",
                None,
                version,
                OTHER_KEY,
            );
            let err = cache
                .verify(&envelope(&body), &sns.trust())
                .await
                .unwrap_err();
            assert!(matches!(err, SnsError::BadSignature), "v{version}: {err:?}");
        }
        // A v1 (SHA-1) signature claimed to be v2 must not verify, nor the other way round.
        for (signed, claimed) in [("1", "2"), ("2", "1")] {
            let mut body = test_signer::signed_notification(
                TOPIC,
                &sns.url(GOOD_CERT),
                "m",
                None,
                signed,
                KEY,
            );
            body["SignatureVersion"] = json!(claimed);
            let err = cache
                .verify(&envelope(&body), &sns.trust())
                .await
                .unwrap_err();
            assert!(
                matches!(err, SnsError::BadSignature),
                "{signed} as {claimed}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_signature_that_is_not_base64_fails_without_a_fetch() {
        let sns = Sns::start().await;
        let cache = CertCache::new(client());
        let mut body =
            test_signer::signed_notification(TOPIC, &sns.url(GOOD_CERT), "m", None, "2", KEY);
        body["Signature"] = json!("%%% not base64 %%%");
        let err = cache
            .verify(&envelope(&body), &sns.trust())
            .await
            .unwrap_err();
        assert!(matches!(err, SnsError::BadSignature), "{err:?}");
        assert_eq!(cache.fetches(), 0);
        assert!(sns.hits().is_empty());
    }

    #[tokio::test]
    async fn unknown_topic_is_refused_before_anything_else() {
        let sns = Sns::start().await;
        let cache = CertCache::new(client());
        let other = "arn:aws:sns:us-east-1:999999999999:someone-else";
        let body =
            test_signer::signed_notification(other, &sns.url(GOOD_CERT), "m", None, "2", KEY);
        let err = cache
            .verify(&envelope(&body), &sns.trust())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SnsError::UnknownTopic(t) if t == other),
            "{err:?}"
        );
        assert_eq!(err.reason(), "unknown_topic");
        // Even with every other field wrong too.
        let mut body = body;
        body["SignatureVersion"] = json!("3");
        body["SigningCertURL"] = json!("https://evil.example/cert.pem");
        let err = cache
            .verify(&envelope(&body), &sns.trust())
            .await
            .unwrap_err();
        assert!(matches!(err, SnsError::UnknownTopic(_)), "{err:?}");
        assert_eq!(cache.fetches(), 0);
        assert!(sns.hits().is_empty());
    }

    #[tokio::test]
    async fn unsupported_signature_version_is_refused_before_the_cert_url() {
        let sns = Sns::start().await;
        let cache = CertCache::new(client());
        for version in ["3", "", "01"] {
            let mut body = test_signer::signed_notification(
                TOPIC,
                "https://evil.example/x.pem",
                "m",
                None,
                "2",
                KEY,
            );
            body["SignatureVersion"] = json!(version);
            let err = cache
                .verify(&envelope(&body), &sns.trust())
                .await
                .unwrap_err();
            assert!(
                matches!(&err, SnsError::UnsupportedSignatureVersion(v) if v == version),
                "{err:?}"
            );
            assert_eq!(err.reason(), "signature_version");
        }
        assert_eq!(cache.fetches(), 0);
    }

    #[tokio::test]
    async fn cert_url_off_the_allow_list_is_never_fetched() {
        let sns = Sns::start().await;
        let cache = CertCache::new(client());
        let urls = [
            sns.url("elsewhere.pem"),
            sns.url("SimpleNotificationService-0123.pem?x=1"),
            sns.url("SimpleNotificationService-XYZ.pem"),
            format!("{}.evil.example/SimpleNotificationService-01.pem", sns.base),
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-01.pem".to_string(),
        ];
        for url in urls {
            let body = test_signer::signed_notification(TOPIC, &url, "m", None, "1", KEY);
            let err = cache
                .verify(&envelope(&body), &sns.trust())
                .await
                .unwrap_err();
            assert!(
                matches!(&err, SnsError::CertUrlNotAllowed(u) if *u == url),
                "{err:?}"
            );
            assert_eq!(err.reason(), "cert_url");
        }
        assert_eq!(cache.fetches(), 0);
        assert!(sns.hits().is_empty(), "{:?}", sns.hits());
    }

    #[tokio::test]
    async fn the_certificate_is_fetched_once() {
        let sns = Sns::start().await;
        let cache = CertCache::new(client());
        for version in ["1", "2", "1"] {
            let body = test_signer::signed_notification(
                TOPIC,
                &sns.url(GOOD_CERT),
                "m",
                None,
                version,
                KEY,
            );
            cache.verify(&envelope(&body), &sns.trust()).await.unwrap();
        }
        assert_eq!(cache.fetches(), 1);
        assert_eq!(sns.hits(), vec![format!("/{GOOD_CERT}")]);
    }

    #[tokio::test]
    async fn the_cache_is_bounded_and_evicts_the_oldest() {
        let sns = Sns::start().await;
        let cache = CertCache::new(client()).with_fetches_per_minute(100);
        let url = |i: usize| sns.url(&format!("SimpleNotificationService-{i:04x}.pem"));
        for i in 0..=MAX_CACHED_CERTS {
            let body = test_signer::signed_notification(TOPIC, &url(i), "m", None, "2", KEY);
            cache.verify(&envelope(&body), &sns.trust()).await.unwrap();
        }
        assert_eq!(cache.fetches(), MAX_CACHED_CERTS + 1);
        assert_eq!(cache.lock().by_url.len(), MAX_CACHED_CERTS);
        assert_eq!(cache.lock().order.len(), MAX_CACHED_CERTS);
        // The newest is still cached; the oldest was evicted and is fetched again.
        let body =
            test_signer::signed_notification(TOPIC, &url(MAX_CACHED_CERTS), "m", None, "2", KEY);
        cache.verify(&envelope(&body), &sns.trust()).await.unwrap();
        assert_eq!(cache.fetches(), MAX_CACHED_CERTS + 1);
        let body = test_signer::signed_notification(TOPIC, &url(0), "m", None, "2", KEY);
        cache.verify(&envelope(&body), &sns.trust()).await.unwrap();
        assert_eq!(cache.fetches(), MAX_CACHED_CERTS + 2);
    }

    #[tokio::test]
    async fn certificate_download_failures_are_cert_fetch_and_cached_briefly() {
        let sns = Sns::start().await;
        let cache = CertCache::new(client());
        for (file, why) in [
            ("SimpleNotificationService-dead.pem", "404"),
            ("SimpleNotificationService-b16.pem", "larger than"),
            ("SimpleNotificationService-7e.pem", "redirected"),
        ] {
            for _ in 0..2 {
                let body =
                    test_signer::signed_notification(TOPIC, &sns.url(file), "m", None, "2", KEY);
                let err = cache
                    .verify(&envelope(&body), &sns.trust())
                    .await
                    .unwrap_err();
                assert!(
                    matches!(&err, SnsError::CertFetch(m) if m.contains(why)),
                    "{file}: {err:?}"
                );
                assert_eq!(err.reason(), "cert_fetch");
            }
        }
        // Each bad URL was fetched once: its failure is remembered for a while.
        assert_eq!(cache.fetches(), 3);
        // Nothing listens on port 9 of loopback, normally: a connection error is a fetch error.
        let trust = Sns::trust_for(r"^http://127\.0\.0\.1:9/");
        let body = test_signer::signed_notification(
            TOPIC,
            "http://127.0.0.1:9/SimpleNotificationService-01.pem",
            "m",
            None,
            "2",
            KEY,
        );
        let err = cache.verify(&envelope(&body), &trust).await.unwrap_err();
        assert!(matches!(err, SnsError::CertFetch(_)), "{err:?}");
    }

    #[tokio::test]
    async fn an_oversized_body_without_content_length_is_cut_off() {
        // axum always sends Content-Length for a fixed body, so this server speaks raw HTTP/1.1
        // and streams until it closes: only the running byte count can stop it.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/SimpleNotificationService-0b16.pem",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n";
            let _ = socket.write_all(head.as_bytes()).await;
            for _ in 0..64 {
                if socket.write_all(&[b'A'; 1024]).await.is_err() {
                    break;
                }
            }
        });
        let cache = CertCache::new(client());
        let trust =
            Sns::trust_for(r"^http://127\.0\.0\.1:\d+/SimpleNotificationService-[0-9a-f]+\.pem$");
        let body = test_signer::signed_notification(TOPIC, &url, "m", None, "2", KEY);
        let err = cache.verify(&envelope(&body), &trust).await.unwrap_err();
        assert!(
            matches!(&err, SnsError::CertFetch(m) if m.contains("larger than 16384 bytes")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn unusable_certificates_are_bad_certificate() {
        let sns = Sns::start().await;
        let cache = CertCache::new(client());
        for (file, why) in [
            (
                "SimpleNotificationService-9a4b.pem",
                "not a PEM certificate",
            ),
            ("SimpleNotificationService-e0.pem", "expired at 2021-01-01"),
            (
                "SimpleNotificationService-f0.pem",
                "not valid before 2120-01-01",
            ),
        ] {
            let body = test_signer::signed_notification(TOPIC, &sns.url(file), "m", None, "2", KEY);
            let err = cache
                .verify(&envelope(&body), &sns.trust())
                .await
                .unwrap_err();
            assert!(
                matches!(&err, SnsError::BadCertificate(m) if m.contains(why)),
                "{file}: {err:?}"
            );
            assert_eq!(err.reason(), "bad_certificate");
        }
    }

    #[test]
    fn validity_is_checked_against_the_given_time() {
        let der = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
        let cert = EndEntityCert::try_from(&der).unwrap();
        let at = |rfc3339: &str| {
            let t = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
            UnixTime::since_unix_epoch(Duration::from_secs(t.timestamp() as u64))
        };
        check_validity(&cert, at("2025-01-01T00:00:00Z")).unwrap();
        check_validity(&cert, at("2030-06-15T12:00:00Z")).unwrap();
        check_validity(&cert, at("2125-01-01T00:00:00Z")).unwrap();
        let err = check_validity(&cert, at("2024-12-31T23:59:59Z")).unwrap_err();
        assert!(
            matches!(&err, SnsError::BadCertificate(m) if m.contains("not valid before 2025-01-01")),
            "{err:?}"
        );
        let err = check_validity(&cert, at("2125-01-01T00:00:01Z")).unwrap_err();
        assert!(
            matches!(&err, SnsError::BadCertificate(m) if m.contains("expired at 2125-01-01")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn confirm_subscription_gets_the_subscribe_url() {
        let sns = Sns::start().await;
        let subscribe_url = format!(
            "{}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=abc",
            sns.base
        );
        let body = test_signer::signed_subscription_confirmation(
            TOPIC,
            &sns.url(GOOD_CERT),
            &subscribe_url,
            "1",
            KEY,
        );
        let e = envelope(&body);
        CertCache::new(client())
            .verify(&e, &sns.trust())
            .await
            .unwrap();
        confirm_subscription(&client(), &e, &sns.trust())
            .await
            .unwrap();
        let hits = sns.hits();
        assert_eq!(hits.len(), 2, "{hits:?}");
        assert_eq!(
            hits[1],
            format!("/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=abc")
        );
    }

    #[tokio::test]
    async fn confirm_subscription_refuses_what_it_must_not_get() {
        let sns = Sns::start().await;
        let confirmation = |topic: &str, url: &str| {
            envelope(&test_signer::signed_subscription_confirmation(
                topic,
                &sns.url(GOOD_CERT),
                url,
                "2",
                KEY,
            ))
        };
        for url in [
            format!("{}/?Action=Unsubscribe&Token=abc", sns.base),
            format!("{}/evil?Action=ConfirmSubscription&Token=abc", sns.base),
            "https://evil.example/?Action=ConfirmSubscription&Token=abc".to_string(),
        ] {
            let err = confirm_subscription(&client(), &confirmation(TOPIC, &url), &sns.trust())
                .await
                .unwrap_err();
            assert!(
                matches!(&err, SnsError::SubscribeUrlNotAllowed(u) if *u == url),
                "{err:?}"
            );
            assert_eq!(err.reason(), "subscribe_url");
        }
        let good = format!("{}/?Action=ConfirmSubscription&Token=abc", sns.base);
        let err = confirm_subscription(
            &client(),
            &confirmation("arn:aws:sns:us-east-1:1:other", &good),
            &sns.trust(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SnsError::UnknownTopic(_)), "{err:?}");
        let mut unsubscribe = confirmation(TOPIC, &good);
        unsubscribe.kind = Kind::UnsubscribeConfirmation;
        let err = confirm_subscription(&client(), &unsubscribe, &sns.trust())
            .await
            .unwrap_err();
        assert!(matches!(err, SnsError::Confirm(_)), "{err:?}");
        assert!(sns.hits().is_empty(), "{:?}", sns.hits());

        // Reached, but SNS says no.
        let failing = format!("{}/?Action=ConfirmSubscription&Token=fail", sns.base);
        let err = confirm_subscription(&client(), &confirmation(TOPIC, &failing), &sns.trust())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SnsError::Confirm(m) if m.contains("500")),
            "{err:?}"
        );
        assert_eq!(err.reason(), "confirm");
        assert_eq!(sns.hits().len(), 1);
    }

    #[tokio::test]
    async fn certificate_fetches_are_rate_limited() {
        let sns = Sns::start().await;
        let cache = CertCache::new(client()).with_fetches_per_minute(2);
        let url = |i: usize| sns.url(&format!("SimpleNotificationService-{i:04x}.pem"));
        for i in 0..2 {
            let body = test_signer::signed_notification(TOPIC, &url(i), "m", None, "2", KEY);
            cache.verify(&envelope(&body), &sns.trust()).await.unwrap();
        }
        let body = test_signer::signed_notification(TOPIC, &url(2), "m", None, "2", KEY);
        let err = cache
            .verify(&envelope(&body), &sns.trust())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SnsError::CertFetch(m) if m.contains("a minute")),
            "{err:?}"
        );
        assert_eq!(cache.fetches(), 2);
    }

    #[tokio::test]
    async fn a_signature_of_the_wrong_shape_is_refused_before_any_fetch() {
        let sns = Sns::start().await;
        let cache = CertCache::new(client());
        let body =
            test_signer::signed_notification(TOPIC, &sns.url(GOOD_CERT), "m", None, "2", KEY);
        for signature in [
            STANDARD.encode([7u8; 16]),
            STANDARD.encode(vec![7u8; 2048]),
            "A".repeat(100_000),
        ] {
            let mut forged = body.clone();
            forged["Signature"] = json!(signature);
            let err = cache
                .verify(&envelope(&forged), &sns.trust())
                .await
                .unwrap_err();
            assert!(matches!(err, SnsError::BadSignature), "{err:?}");
        }
        assert_eq!(cache.fetches(), 0);
    }

    #[test]
    fn default_patterns_accept_aws_and_nothing_else() {
        let trust = SnsTrust::new(vec![TOPIC.into()]).unwrap();
        for ok in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-0123.pem",
        ] {
            assert!(trust.cert_url.is_match(ok), "{ok}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-01.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-01.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-01.pem.evil",
            "https://evil.example/sns.us-east-1.amazonaws.com/SimpleNotificationService-01.pem",
            "https://sns.us-east-1.amazonaws.com@evil.example/SimpleNotificationService-01.pem",
            // S3 virtual-host URLs: a bucket named `sns` is anyone's.
            "https://sns.s3.amazonaws.com/SimpleNotificationService-01.pem",
            "https://sns.s3-us-west-2.amazonaws.com/SimpleNotificationService-01.pem",
            "https://sns.s3.us-east-1.amazonaws.com/SimpleNotificationService-01.pem",
            "https://sns.execute-api.amazonaws.com/SimpleNotificationService-01.pem",
        ] {
            assert!(!trust.cert_url.is_match(bad), "{bad}");
        }
        for ok in [
            "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-01.pem",
            "https://sns.ap-southeast-2.amazonaws.com/SimpleNotificationService-01.pem",
        ] {
            assert!(trust.cert_url.is_match(ok), "{ok}");
        }
        assert!(!trust.subscribe_url.is_match(
            "https://sns.s3.amazonaws.com/?Action=ConfirmSubscription&TopicArn=a&Token=b"
        ));
        assert!(trust.subscribe_url.is_match(
            "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=a&Token=b"
        ));
        assert!(
            !trust
                .subscribe_url
                .is_match("https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&x")
        );
        assert!(
            !trust
                .subscribe_url
                .is_match("https://evil.example/?Action=ConfirmSubscription&x")
        );
    }

    /// The receiver runs these in axum handlers on a multi-threaded runtime, which needs Send
    /// futures and a shareable cache; a lock held across an await would break that.
    #[test]
    fn futures_are_send_and_the_cache_is_shareable() {
        fn send<T: Send>(_: &T) {}
        fn send_sync<T: Send + Sync>() {}
        send_sync::<CertCache>();
        send_sync::<SnsTrust>();
        let cache = CertCache::new(client());
        let e = envelope(&aws_notification());
        let trust = SnsTrust::new(vec![TOPIC.into()]).unwrap();
        let http = client();
        send(&cache.verify(&e, &trust));
        send(&confirm_subscription(&http, &e, &trust));
    }

    #[test]
    fn reasons_are_stable() {
        let all = [
            (SnsError::Malformed(String::new()), "malformed"),
            (SnsError::UnknownTopic(String::new()), "unknown_topic"),
            (SnsError::CertUrlNotAllowed(String::new()), "cert_url"),
            (SnsError::CertFetch(String::new()), "cert_fetch"),
            (SnsError::BadCertificate(String::new()), "bad_certificate"),
            (SnsError::BadSignature, "bad_signature"),
            (
                SnsError::UnsupportedSignatureVersion(String::new()),
                "signature_version",
            ),
            (
                SnsError::SubscribeUrlNotAllowed(String::new()),
                "subscribe_url",
            ),
            (SnsError::Confirm(String::new()), "confirm"),
        ];
        for (err, reason) in all {
            assert_eq!(err.reason(), reason, "{err:?}");
        }
    }
}
