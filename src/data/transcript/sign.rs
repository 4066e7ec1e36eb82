//! The optional signature of a run's head (an HMAC with a key kept outside the transcripts).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::base::error::{Error, Result};

/// `alg` of a `signature` line.
pub const SIGNATURE_ALG: &str = "hmac-sha256";

/// Signs a run's final head with a key kept outside the transcript folder.
///
/// The key comes from `RUNBOOK_SIGNING_KEY_FILE` (a file) or `RUNBOOK_SIGNING_KEY` (the key
/// itself), at least 16 bytes. A signature proves the transcript up to that head was written by
/// someone holding the key, so a cut or rewritten file no longer verifies with `--key-file`. It
/// does not protect against the key's owner: only a copy off the machine (the S3/DynamoDB anchor
/// of the team-state work) does.
pub struct Signer {
    key: Vec<u8>,
    /// The first 8 hex digits of the key's SHA-256: which key signed, without revealing it.
    pub key_id: String,
}

impl Signer {
    pub const MIN_KEY_BYTES: usize = 16;

    pub fn new(key: Vec<u8>) -> Result<Self> {
        if key.len() < Self::MIN_KEY_BYTES {
            return Err(Error::Usage(format!(
                "the signing key has {} bytes; it needs at least {}",
                key.len(),
                Self::MIN_KEY_BYTES
            )));
        }
        let key_id = hex::encode(&Sha256::digest(&key)[..4]);
        Ok(Signer { key, key_id })
    }

    /// Reads a key file (trailing newlines are not part of the key).
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut key =
            std::fs::read(path).map_err(|e| Error::io("cannot read signing key", path, e))?;
        while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            key.pop();
        }
        Self::new(key)
    }

    /// The key configured in the environment, if any. A key file inside the transcript's own
    /// folder is refused: whoever can rewrite the transcript could read the key beside it.
    pub fn from_env(transcript: &Path) -> Result<Option<Self>> {
        if let Some(file) = std::env::var_os("RUNBOOK_SIGNING_KEY_FILE").filter(|f| !f.is_empty()) {
            let file = PathBuf::from(file);
            let parent = |p: &Path| {
                p.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf()
            };
            // The transcript's own folder and the transcripts root (RUNBOOK_TRANSCRIPTS).
            let folders = [
                Some(parent(transcript)),
                std::env::var_os("RUNBOOK_TRANSCRIPTS").map(PathBuf::from),
            ];
            let key_dir = parent(&file).canonicalize();
            for folder in folders.into_iter().flatten() {
                if let (Ok(key_dir), Ok(folder)) = (&key_dir, folder.canonicalize())
                    && key_dir.starts_with(&folder)
                {
                    return Err(Error::Usage(format!(
                        "the signing key {} is inside the transcript folder {}: keep it elsewhere (whoever can rewrite a transcript could read a key beside it)",
                        file.display(),
                        folder.display()
                    )));
                }
            }
            return Self::from_file(&file).map(Some);
        }
        match std::env::var("RUNBOOK_SIGNING_KEY") {
            Ok(key) if !key.is_empty() => Self::new(key.into_bytes()).map(Some),
            _ => Ok(None),
        }
    }

    /// HMAC-SHA256 of the head (its hex text), in hex.
    pub fn sign(&self, head: &str) -> String {
        use hmac::{KeyInit, Mac};
        // HMAC accepts keys of any length; the error arm cannot happen but must not panic.
        match <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.key) {
            Ok(mut mac) => {
                mac.update(head.as_bytes());
                hex::encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        }
    }

    /// Whether `signature` (hex) signs `head`, compared in constant time.
    pub fn verify(&self, head: &str, signature: &str) -> bool {
        use hmac::{KeyInit, Mac};
        let (Ok(given), Ok(mut mac)) = (
            hex::decode(signature),
            <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.key),
        ) else {
            return false;
        };
        mac.update(head.as_bytes());
        mac.verify_slice(&given).is_ok()
    }
}
