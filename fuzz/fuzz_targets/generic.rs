//! The generic signed webhook: `hooks::generic::verify` (HMAC-SHA256 over timestamp and body,
//! replay window) and `hooks::generic::parse`.
//!
//! Input: four header lines, then the body:
//!
//! ```text
//! X-Runbook-Timestamp value
//! X-Runbook-Signature value, or SIGN to have the target sign correctly (so the checks after
//!   the signature are reached too)
//! now (Unix seconds)
//! replay window (seconds)
//! body...
//! ```
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use runbook::front::hooks::{Rejection, generic};

const KEY: &[u8] = b"fuzz-shared-key";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(5, |b| *b == b'\n');
    let (Some(ts), Some(sig), Some(now), Some(window)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let body = parts.next().unwrap_or_default();
    let (Ok(ts), Ok(sig), Ok(now), Ok(window)) = (
        std::str::from_utf8(ts),
        std::str::from_utf8(sig),
        std::str::from_utf8(now),
        std::str::from_utf8(window),
    ) else {
        return;
    };
    let (Ok(now), Ok(window)) = (now.trim().parse::<i64>(), window.trim().parse::<u64>()) else {
        return;
    };
    let window = Duration::from_secs(window);
    let signed_ts = ts.trim().parse::<i64>().ok();
    let signature = match (sig, signed_ts) {
        ("SIGN", Some(t)) => generic::sign(KEY, t, body),
        _ => sig.to_string(),
    };
    let verdict = generic::verify(KEY, Some(ts), Some(&signature), body, now, window);
    // Whether the request is inside the replay window (computed wide: no overflow here).
    let inside =
        |t: i64| (i128::from(now) - i128::from(t)).unsigned_abs() <= u128::from(window.as_secs());
    match &verdict {
        Ok(mac) => {
            // The MAC handed to the replay memory is the one checked: an HMAC-SHA256.
            assert_eq!(
                mac.len(),
                32,
                "verify returned something other than the MAC"
            );
            // Only a timestamp inside the window passes (the signature cannot be forged here).
            let t = signed_ts.expect("a verified request has a numeric timestamp");
            assert!(inside(t), "accepted outside the replay window");
        }
        Err(r) => {
            assert!(matches!(r, Rejection::Unauthenticated(_)), "{r}");
            // A correctly signed request inside the window is never refused.
            if sig == "SIGN"
                && let Some(t) = signed_ts
            {
                assert!(!inside(t), "a signed, fresh request was refused: {r}");
            }
        }
    }
    // Signed under another key: never accepted.
    if sig == "SIGN" {
        assert!(
            generic::verify(
                b"another key",
                Some(ts),
                Some(&signature),
                body,
                now,
                window
            )
            .is_err()
        );
    }
    match generic::parse(body) {
        Ok(alerts) => {
            for a in alerts {
                let _ = serde_json::to_string(&a);
            }
        }
        Err(r) => assert_eq!(r.status(), 400),
    }
});
