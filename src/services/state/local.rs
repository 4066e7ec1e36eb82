//! The `local` backend: state in files on this host.
//!
//! A target lock is a file in `[state] locks` (default `.runbook/locks` beside runbook.toml)
//! held with `flock` for the life of the run: the kernel releases it when the process ends,
//! however it ends, so a crashed run never leaves a stale lock and needs no heartbeat. The file
//! holds the holder's description, read by whoever is refused.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use super::Holder;
use crate::base::error::{Error, Result};
use crate::data::config::StateConfig;

#[derive(Clone)]
pub struct LocalStore {
    locks: PathBuf,
}

/// A held lock: the open, `flock`ed file (closing it releases the lock).
pub struct LocalLease {
    pub(crate) key: String,
    _file: File,
}

impl LocalStore {
    pub fn new(config: &StateConfig) -> Self {
        LocalStore {
            locks: config.locks.clone(),
        }
    }

    /// The lock file of `key`: one safe file name per key (anything outside `[A-Za-z0-9._-]`
    /// is hex-escaped, so `a/b` and `a_b` never share a file and no key escapes the folder).
    fn path_of(&self, key: &str) -> PathBuf {
        let mut name = String::with_capacity(key.len() + 5);
        for b in key.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' || (b == b'.' && !name.is_empty()) {
                name.push(b as char);
            } else {
                name.push_str(&format!("_{b:02x}"));
            }
        }
        name.push_str(".lock");
        self.locks.join(name)
    }

    /// Takes the lock of `key` now, or says who holds it.
    pub(crate) fn try_lock(
        &self,
        key: &str,
        holder: &Holder,
    ) -> Result<std::result::Result<LocalLease, Holder>> {
        std::fs::create_dir_all(&self.locks)
            .map_err(|e| Error::io("cannot create the lock folder", &self.locks, e))?;
        let path = self.path_of(key);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("cannot open the lock file", &path, e))?;
        // `flock` (std's `try_lock`): released by the kernel when the holder exits, however it
        // exits, so a crashed run never leaves a stale lock on one host.
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(Error::io("cannot lock", &path, err));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                // Written by the holder right after it locked: empty only in that instant.
                let held = serde_json::from_str(&text).unwrap_or_else(|_| Holder {
                    operator: "unknown (the lock file names nobody yet)".into(),
                    run_id: "unknown".into(),
                    host: "this host".into(),
                    pid: 0,
                    since: "unknown".into(),
                });
                return Ok(Err(held));
            }
        }
        let described = serde_json::to_vec(holder)
            .map_err(|e| Error::Internal(format!("cannot encode the lock holder: {e}")))?;
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            f.write_all(&described)?;
            f.flush()
        };
        write(&mut file).map_err(|e| Error::io("cannot write", &path, e))?;
        Ok(Ok(LocalLease {
            key: key.to_string(),
            _file: file,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::state::Store;

    fn store(dir: &std::path::Path) -> Store {
        Store::open(&StateConfig::local(dir)).unwrap()
    }

    #[test]
    fn a_locked_target_is_refused_naming_the_holder_until_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (store(dir.path()), store(dir.path()));
        let alice = Holder::this_process("alice", "run-1");
        let held = a
            .lock("prod", &["i-0abc".to_string()], &alice, None)
            .unwrap();
        assert_eq!(held.keys(), vec!["prod/i-0abc".to_string()]);
        let bob = Holder::this_process("bob", "run-2");
        let err = b
            .lock("prod", &["i-0abc".to_string()], &bob, None)
            .err()
            .expect("the second run must be refused")
            .to_string();
        assert!(err.contains("locked by alice (run run-1"), "{err}");
        assert!(err.contains(&alice.host), "{err}");
        // Another target, or the same id in another environment, is free.
        assert!(b.lock("staging", &["i-0abc".into()], &bob, None).is_ok());
        drop(held);
        assert!(b.lock("prod", &["i-0abc".into()], &bob, None).is_ok());
    }

    #[test]
    fn keys_that_differ_never_share_a_lock_file() {
        let s = LocalStore {
            locks: PathBuf::from("/l"),
        };
        assert_ne!(s.path_of("a/b"), s.path_of("a_b"));
        assert_ne!(s.path_of("a/b"), s.path_of("a_2fb"));
        assert_eq!(s.path_of("../x").parent(), Some(std::path::Path::new("/l")));
    }
}
