//! Redaction: what must never reach a transcript, a log line or the terminal.
//!
//! Two kinds of secrets are removed from every string that is recorded: values the run knows are
//! secret (secret parameters, allow-listed environment values, parameters read from a secret store)
//! and strings that *look like* credentials whatever their origin (Slack webhook URLs, `xox?-` tokens,
//! AWS access key ids, Bearer tokens). Each becomes `[redacted:<hash>]`, where the hash is salted per
//! run: two mentions of one secret can be correlated inside a transcript, but the hash cannot be
//! brute-forced offline because the salt never leaves the process.

use std::cell::RefCell;
use std::sync::LazyLock;

use regex::Regex;
use sha2::{Digest, Sha256};

/// Secrets shorter than this are not searched for: redacting every "a" or "1" in a transcript
/// would destroy it while protecting nothing worth protecting.
const MIN_SECRET_LEN: usize = 4;

static TOKEN_SHAPES: LazyLock<Regex> = LazyLock::new(|| {
    // Each alternative is a credential format with a fixed, recognisable prefix.
    Regex::new(concat!(
        r"https://hooks\.slack\.com/[A-Za-z0-9/_\-]+",
        r"|https://[A-Za-z0-9.\-]+\.webhook\.office\.com/[^\s\x22']+",
        r"|xox[abposre]-[A-Za-z0-9\-]+",
        r"|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
        r"|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}",
    ))
    .expect("static redaction pattern is valid")
});

pub struct Redactor {
    salt: [u8; 16],
    secrets: RefCell<Vec<String>>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new()
    }
}

impl Redactor {
    pub fn new() -> Self {
        // A ULID carries 80 random bits; reusing it avoids another randomness dependency.
        let salt = ulid::Ulid::generate().0.to_le_bytes();
        Redactor {
            salt,
            secrets: RefCell::new(Vec::new()),
        }
    }

    /// Registers a value that must never be recorded from now on.
    pub fn add_secret(&self, value: &str) {
        if value.chars().count() < MIN_SECRET_LEN {
            return;
        }
        let mut secrets = self.secrets.borrow_mut();
        if !secrets.iter().any(|s| s == value) {
            secrets.push(value.to_string());
            // Longest first, so a secret that contains another is replaced whole.
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// The marker that replaces `secret`.
    pub fn marker(&self, secret: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(secret.as_bytes());
        let digest = h.finalize();
        format!("[redacted:{}]", hex::encode(&digest[..4]))
    }

    /// Returns `text` with every known secret and every credential-shaped token replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in self.secrets.borrow().iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), &self.marker(secret));
            }
        }
        if TOKEN_SHAPES.is_match(&out) {
            out = TOKEN_SHAPES
                .replace_all(&out, |c: &regex::Captures<'_>| self.marker(&c[0]))
                .into_owned();
        }
        out
    }

    /// Redacts every string (keys included) inside a JSON value, in place.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                let r = self.redact(s);
                if r != *s {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let needs_key_change = map.keys().any(|k| self.redact(k) != *k);
                if needs_key_change {
                    let old = std::mem::take(map);
                    for (k, mut v) in old {
                        self.redact_json(&mut v);
                        map.insert(self.redact(&k), v);
                    }
                } else {
                    map.values_mut().for_each(|v| self.redact_json(v));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_secrets_are_replaced_everywhere_with_a_stable_marker() {
        let r = Redactor::new();
        r.add_secret("hunter22");
        let a = r.redact("pw=hunter22; again hunter22");
        assert!(!a.contains("hunter22"));
        let marker = r.marker("hunter22");
        assert_eq!(a, format!("pw={marker}; again {marker}"));
    }

    #[test]
    fn short_values_are_not_treated_as_secrets() {
        let r = Redactor::new();
        r.add_secret("ab");
        assert_eq!(r.redact("abc"), "abc");
    }

    #[test]
    fn credential_shapes_are_replaced_without_being_registered() {
        let r = Redactor::new();
        for token in [
            "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXX",
            "xoxb-1234-5678-abcdefgh",
            "AKIAIOSFODNN7EXAMPLE",
            "Bearer abcdefghijklmnop",
        ] {
            let out = r.redact(&format!("before {token} after"));
            assert!(!out.contains(token), "{token} survived: {out}");
            assert!(out.starts_with("before [redacted:"), "{out}");
            assert!(out.ends_with(" after"), "{out}");
        }
    }

    #[test]
    fn markers_differ_between_runs() {
        assert_ne!(Redactor::new().marker("x"), Redactor::new().marker("x"));
    }

    #[test]
    fn json_keys_and_nested_values_are_redacted() {
        let r = Redactor::new();
        r.add_secret("s3cr3t-value");
        let mut v = serde_json::json!({"a": ["s3cr3t-value", {"s3cr3t-value": 1}], "b": 2});
        r.redact_json(&mut v);
        assert!(!v.to_string().contains("s3cr3t-value"), "{v}");
        assert_eq!(v["b"], 2);
    }
}
