//! Redaction: what must never reach a transcript, a log line or the terminal.
//!
//! Two kinds of secrets are removed from every string that is recorded: values the run knows are
//! secret (secret parameters, allow-listed environment values, parameters read from a secret store)
//! and strings that *look like* credentials whatever their origin (Slack and Teams webhook URLs,
//! `xox?-` tokens, AWS access key ids and secret access keys, Bearer and Basic credentials). A
//! registered secret is also found in its JSON-escaped forms. Each becomes `[redacted:<hash>]`, where the hash is salted per
//! run: two mentions of one secret can be correlated inside a transcript, but the hash cannot be
//! brute-forced offline because the salt never leaves the process.

use std::sync::{Arc, LazyLock, RwLock};

use base64::Engine as _;
use regex::Regex;
use sha2::{Digest, Sha256};

/// Secrets shorter than this cannot be searched for: redacting every "a" or "1" in a transcript
/// would destroy it while protecting nothing. Secret parameters shorter than this are refused
/// (see `Runbook::resolve_params`) rather than silently left in clear.
pub const MIN_SECRET_LEN: usize = 4;

/// Whether a candidate really is a credential.
type Accept = fn(&str) -> bool;

/// A credential format: where it is found, and which part of the match is the secret.
struct Shape {
    re: Regex,
    /// Whether a candidate (the `v` group, else the whole match) really is a credential.
    accept: Accept,
}

fn always(_: &str) -> bool {
    true
}

/// `Basic` is an English word too: only a token that decodes to `user:password` is redacted.
fn basic_credentials(token: &str) -> bool {
    let general = base64::engine::general_purpose::STANDARD;
    let no_pad = base64::engine::general_purpose::STANDARD_NO_PAD;
    general
        .decode(token)
        .or_else(|_| no_pad.decode(token.trim_end_matches('=')))
        .is_ok_and(|bytes| bytes.contains(&b':'))
}

/// A standalone 40-character base64 token is an AWS secret access key when it mixes upper case,
/// lower case and digits (or `/`, `+`); hex digests (lower case only) and words do not.
fn aws_secret_shaped(token: &str) -> bool {
    token.chars().any(|c| c.is_ascii_uppercase())
        && token.chars().any(|c| c.is_ascii_lowercase())
        && token
            .chars()
            .any(|c| c.is_ascii_digit() || c == '/' || c == '+')
}

static SHAPES: LazyLock<Vec<Shape>> = LazyLock::new(|| {
    // Each is a credential format with a recognisable prefix or context. URL hosts and schemes
    // are case-insensitive, so the URL shapes are too; an explicit port is still the same URL.
    let shapes: [(&str, Accept); 8] = [
        (
            r"(?i)https?://hooks\.slack\.com(?::[0-9]+)?/[A-Za-z0-9/_\-]+",
            always,
        ),
        (
            r"(?i)https?://[A-Za-z0-9.\-]+\.webhook\.office\.com(?::[0-9]+)?/[^\s\x22'<>]+",
            always,
        ),
        (r"xox[abposre]-[A-Za-z0-9\-]+", always),
        // No word boundary: `key_AKIA...` or `idAKIA...` is still a key id.
        (r"(?:AKIA|ASIA)[A-Z0-9]{16}", always),
        (r"(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{8,}", always),
        (
            r"(?i:basic)\s+(?P<v>[A-Za-z0-9+/]{4,}={0,2})",
            basic_credentials,
        ),
        // After a key name (`aws_secret_access_key = ...`, `"SecretAccessKey": "..."`) any value is
        // the secret.
        (
            r#"(?i)(?:secret_?access_?key|aws_?secret_?key)["']?\s*[:=]\s*["']?(?P<v>[A-Za-z0-9/+=]{16,})"#,
            always,
        ),
        (
            r"(?:^|[^A-Za-z0-9/+=])(?P<v>[A-Za-z0-9/+]{40})(?:$|[^A-Za-z0-9/+=])",
            aws_secret_shaped,
        ),
    ];
    shapes
        .into_iter()
        .filter_map(|(pattern, accept)| Regex::new(pattern).ok().map(|re| Shape { re, accept }))
        .collect()
});

/// One alternation of every shape, so text without any candidate costs one scan.
static ANY_SHAPE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    let all: Vec<String> = SHAPES
        .iter()
        .map(|s| format!("(?:{})", s.re.as_str().replace("?P<v>", "")))
        .collect();
    Regex::new(&all.join("|")).ok()
});

/// Shares its secret list with every [`share`](Redactor::share)d handle (the notifier redacts
/// on other threads with the same list and salt).
pub struct Redactor {
    salt: [u8; 16],
    /// (text to find, the secret it stands for), longest first.
    secrets: Arc<RwLock<Vec<(String, String)>>>,
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
            secrets: Arc::new(RwLock::new(Vec::new())),
        }
    }

    /// Another handle on the same secrets and salt, usable from another thread.
    pub(crate) fn share(&self) -> Redactor {
        Redactor {
            salt: self.salt,
            secrets: Arc::clone(&self.secrets),
        }
    }

    /// Registers a value that must never be recorded from now on. Values shorter than
    /// [`MIN_SECRET_LEN`] cannot be redacted and are ignored: callers that take secrets from
    /// people refuse them first.
    pub fn add_secret(&self, value: &str) {
        if value.chars().count() < MIN_SECRET_LEN {
            return;
        }
        let mut secrets = match self.secrets.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        // The secret as written, and as it appears inside JSON or a debug dump once or twice
        // (`json::encode` of a map holding it, then that text logged): `"` and `\` are escaped
        // there, so the plain form would not be found.
        let mut forms = vec![value.to_string()];
        for _ in 0..2 {
            let Some(last) = forms.last() else { break };
            let quoted = serde_json::to_string(last).unwrap_or_default();
            let escaped = quoted
                .strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .unwrap_or_default()
                .to_string();
            if escaped.is_empty() || escaped == *last {
                break;
            }
            forms.push(escaped);
        }
        for form in forms {
            if !secrets.iter().any(|(s, _)| *s == form) {
                secrets.push((form, value.to_string()));
            }
        }
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
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
        {
            let secrets = match self.secrets.read() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            for (needle, secret) in secrets.iter() {
                if out.contains(needle.as_str()) {
                    out = out.replace(needle.as_str(), &self.marker(secret));
                }
            }
        }
        if !ANY_SHAPE.as_ref().is_some_and(|re| re.is_match(&out)) {
            return out;
        }
        for shape in SHAPES.iter() {
            if !shape.re.is_match(&out) {
                continue;
            }
            out = shape
                .re
                .replace_all(&out, |c: &regex::Captures<'_>| {
                    let Some(whole) = c.get(0) else {
                        return String::new();
                    };
                    let v = c.name("v").unwrap_or(whole);
                    if !(shape.accept)(v.as_str()) {
                        return whole.as_str().to_string();
                    }
                    let text = whole.as_str();
                    let from = v.start().saturating_sub(whole.start());
                    let to = v.end().saturating_sub(whole.start());
                    format!(
                        "{}{}{}",
                        &text[..from],
                        self.marker(v.as_str()),
                        &text[to..]
                    )
                })
                .into_owned();
        }
        out
    }

    /// Whether `text` holds a registered secret or a credential-shaped token.
    pub fn is_sensitive(&self, text: &str) -> bool {
        self.redact(text) != text
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
            "HTTPS://HOOKS.SLACK.COM/SERVICES/T000/B000/XXXXXXXXXXXX",
            "https://hooks.slack.com:443/services/T000/B000/XXXXXXXXXXXX",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
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

    #[test]
    fn aws_secret_keys_basic_credentials_and_glued_key_ids_are_matched() {
        let r = Redactor::new();
        let key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        for text in [
            format!("aws_secret_access_key = {key}"),
            format!("{{\"SecretAccessKey\": \"{key}\"}}"),
            format!("AWS_SECRET_ACCESS_KEY={key}"),
        ] {
            let out = r.redact(&text);
            assert!(!out.contains(key), "{out}");
            assert!(out.contains("[redacted:"), "{out}");
        }
        let out = r.redact("key_AKIAIOSFODNN7EXAMPLE;");
        assert!(!out.contains("AKIAIOSFODNN7EXAMPLE"), "{out}");
        // base64("admin:hunter22")
        let out = r.redact("Authorization: Basic YWRtaW46aHVudGVyMjI=");
        assert!(!out.contains("YWRtaW46aHVudGVyMjI"), "{out}");
        assert!(out.starts_with("Authorization: Basic [redacted:"), "{out}");
    }

    #[test]
    fn ordinary_text_hashes_and_words_survive() {
        let r = Redactor::new();
        for text in [
            "Basic authentication is disabled",
            "sha1 0123456789abcdef0123456789abcdef01234567",
            "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "instance i-0a1b2c3d4e5f67890 in sg-0123456789abcdef0",
        ] {
            assert_eq!(r.redact(text), text);
        }
    }

    #[test]
    fn a_secret_is_found_in_its_json_escaped_forms() {
        let r = Redactor::new();
        let secret = r#"pa"ss\word"#;
        r.add_secret(secret);
        let once = serde_json::to_string(&serde_json::json!({ "pw": secret })).unwrap();
        let twice = serde_json::to_string(&once).unwrap();
        for text in [secret.to_string(), once, twice] {
            let out = r.redact(&text);
            assert!(!out.contains("ss\\"), "{out}");
            assert!(out.contains(&r.marker(secret)), "{out}");
        }
    }

    #[test]
    fn shared_handles_see_secrets_added_later() {
        let r = Redactor::new();
        let other = r.share();
        r.add_secret("added-after-sharing");
        assert_eq!(
            other.redact("x added-after-sharing"),
            format!("x {}", r.marker("added-after-sharing"))
        );
    }
}
