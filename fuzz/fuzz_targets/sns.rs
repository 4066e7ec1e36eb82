//! The SNS receiver's parsing and signature checks, without the network:
//! `hooks::sns::parse` (the envelope), `string_to_sign`, the signature check against the test
//! signing certificate (`verify_with_certificate`: topic, version, certificate URL, base64,
//! certificate validity, RSA signature) and `cloudwatch_alarm` (the alarm in a notification).
//!
//! The first byte says what the rest is:
//! - `A`: a CloudWatch alarm message (the JSON inside a notification's `Message`);
//! - `S`: an envelope the target signs (SignatureVersion 2) with the test key before checking,
//!   so a well-formed envelope from a trusted topic must then verify;
//! - anything else: an envelope checked as sent.
#![no_main]

use std::sync::LazyLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use runbook::front::hooks::sns::{self, SnsError, SnsTrust};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

/// The TEST-ONLY key and certificate of the SNS tests (tests/fixtures/sns/README.md).
const KEY: &str = include_str!("../../tests/fixtures/sns/signing-key.pem");
const CERT: &str = include_str!("../../tests/fixtures/sns/signing-cert.pem");
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:runbook-alarms";
/// 2026-11-30T00:00:00Z, inside the test certificate's validity (2025 to 2125).
const NOW: u64 = 1_795_996_800;

static TRUST: LazyLock<SnsTrust> =
    LazyLock::new(|| SnsTrust::new(vec![TOPIC.to_string()]).expect("the default patterns compile"));
static CERT_DER: LazyLock<Vec<u8>> = LazyLock::new(|| {
    CertificateDer::from_pem_slice(CERT.as_bytes())
        .expect("the test certificate is PEM")
        .to_vec()
});
static SIGNER: LazyLock<RsaKeyPair> = LazyLock::new(|| {
    let der = PrivatePkcs8KeyDer::from_pem_slice(KEY.as_bytes()).expect("the test key is PEM");
    RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("the test key is RSA")
});

fn sign_v2(text: &str) -> String {
    let mut sig = vec![0; SIGNER.public_modulus_len()];
    SIGNER
        .sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            text.as_bytes(),
            &mut sig,
        )
        .expect("signing with the test key");
    STANDARD.encode(sig)
}

fn check_alarm(message: &str) {
    if let Ok(alarm) = sns::cloudwatch_alarm(message) {
        // The region code comes from the ARN's fourth field, when there is one.
        if let Some(code) = &alarm.region_code {
            assert!(!code.is_empty() && !code.contains(':'));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode == b'A' {
        if let Ok(text) = std::str::from_utf8(rest) {
            check_alarm(text);
        }
        return;
    }
    let mut envelope = match sns::parse(rest) {
        Ok(e) => e,
        Err(e) => {
            assert!(matches!(e, SnsError::Malformed(_)), "{e}");
            return;
        }
    };
    let signed = mode == b'S';
    if signed {
        envelope.signature_version = "2".into();
        envelope.signature = sign_v2(&sns::string_to_sign(&envelope));
    }
    let verdict = sns::verify_with_certificate(&envelope, &TRUST, &CERT_DER, NOW);
    if signed && envelope.topic_arn == TOPIC && TRUST.cert_url.is_match(&envelope.signing_cert_url)
    {
        assert!(
            verdict.is_ok(),
            "a correctly signed envelope was refused: {verdict:?}"
        );
    }
    if verdict.is_ok() {
        assert_eq!(envelope.topic_arn, TOPIC);
        // Another field changed after signing: refused.
        let mut tampered = envelope.clone();
        tampered.message.push(' ');
        assert!(sns::verify_with_certificate(&tampered, &TRUST, &CERT_DER, NOW).is_err());
        check_alarm(&envelope.message);
    }
    if let Err(e) = &verdict {
        let _ = (e.to_string(), e.reason());
    }
});
