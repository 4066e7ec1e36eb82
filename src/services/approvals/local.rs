//! The `local` approval channel: files in `<run>.approvals/` next to the transcript (one host).
//!
//! The folder is group-writable with the sticky and setgid bits (`rwxrws--T`): a second person
//! in the run's group can write an answer there, nobody can remove or rename another's file, and
//! every file takes the folder's group, so the run can read the answers. Files are `0640`: never
//! world-readable.
//!
//! An answer is `<n>.answer.<uid>.json`, written into a new file (create-new, never through a
//! link) and linked into place whole. Its author is the account that owns the file, which the
//! kernel set when it was created; what the file says about its author is only a claimed name.
//! An answer whose inode changed before its request was filed (planted in advance) is refused,
//! and so is one that does not repeat the request's nonce.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Answer, Read, Request};
use crate::base::error::{BindingError, Error, Result};
use crate::base::identity::Who;

/// Group-writable, sticky (no one removes another's file) and setgid (files take the folder's
/// group, so the run can read a second person's answer).
const FOLDER_MODE: u32 = 0o3770;
/// Readable by the run's group, never by the world.
const FILE_MODE: u32 = 0o640;

pub(crate) struct Folder {
    dir: PathBuf,
    transcript: PathBuf,
}

impl Folder {
    /// The approvals folder of a transcript.
    pub(crate) fn of(transcript: &Path) -> Folder {
        Folder {
            dir: transcript.with_extension("approvals"),
            transcript: transcript.to_path_buf(),
        }
    }

    /// Makes the folder (or checks the one there is this account's real folder) and gives it its
    /// mode.
    fn prepare(&self) -> std::io::Result<()> {
        match std::fs::create_dir(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = std::fs::symlink_metadata(&self.dir)?;
                if !meta.is_dir() || meta.uid() != crate::base::identity::current_uid() {
                    return Err(std::io::Error::other(format!(
                        "{} is not a folder this account made (a link, a file, or another's): refusing to file approvals there",
                        self.dir.display()
                    )));
                }
            }
            Err(e) => return Err(e),
        }
        // Set explicitly: the umask would strip the group's bits from `mkdir`'s mode.
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(FOLDER_MODE))
    }

    fn request_path(&self, number: u32) -> PathBuf {
        self.dir.join(format!("{number}.request.json"))
    }

    /// Files `request` under the next free number (linking into place claims a number, so two
    /// requests filed at once take different ones).
    pub(crate) fn file(&self, request: &mut Request) -> std::result::Result<(), BindingError> {
        let io = |what: &str, e: std::io::Error| BindingError::new("io", format!("{what}: {e}"));
        self.prepare()
            .map_err(|e| io(&format!("cannot create {}", self.dir.display()), e))?;
        let mut number = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".request.json"))
                    .count()
            })
            .unwrap_or(0) as u32;
        loop {
            number = number.saturating_add(1);
            request.number = number;
            let text = serde_json::to_string_pretty(&*request)
                .map_err(|e| BindingError::new("internal", e.to_string()))?;
            match write_whole(&self.request_path(number), &text) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && number < 10_000 => {}
                Err(e) => return Err(io("cannot file the approval request", e)),
            }
        }
    }

    /// Every answer file of `request`, read as its owner's (or refused, saying why).
    pub(crate) fn answers(&self, request: &Request) -> Vec<Read> {
        let prefix = format!("{}.answer.", request.number);
        let filed = std::fs::symlink_metadata(self.request_path(request.number))
            .map(|m| (m.ctime(), m.ctime_nsec()))
            .ok();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) {
                continue;
            }
            let refused = |why: String| Read::Refused {
                key: name.clone(),
                why: format!("{name}: {why}"),
            };
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(e.path())
            {
                Ok(f) => f,
                Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
                    out.push(refused("a symlink, never followed".into()));
                    continue;
                }
                Err(err) => {
                    out.push(refused(format!("unreadable ({err})")));
                    continue;
                }
            };
            let Ok(meta) = file.metadata() else {
                out.push(refused("cannot be examined".into()));
                continue;
            };
            if !meta.is_file() {
                out.push(refused("not a plain file".into()));
                continue;
            }
            // A second name: another file linked in (or this one's temporary name, for the
            // instant before the writer removes it). It counts for nothing while it has one.
            if meta.nlink() != 1 {
                continue;
            }
            let uid = meta.uid();
            if name != format!("{prefix}{uid}.json") {
                out.push(refused(format!(
                    "owned by uid {uid}, but named for another account"
                )));
                continue;
            }
            // ctime is set by the kernel (no one can set it back), when the file was linked in.
            if filed.is_none_or(|f| (meta.ctime(), meta.ctime_nsec()) < f) {
                out.push(refused(
                    "older than its request (written before the request was filed)".into(),
                ));
                continue;
            }
            let answer: Option<Answer> = std::io::read_to_string(&file)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            let Some(answer) = answer else {
                out.push(refused("not an answer".into()));
                continue;
            };
            let who = Who::os_account(uid).claiming(answer.claimed.clone());
            out.push(Read::Given {
                key: name,
                who: Box::new(who),
                answer: Box::new(answer),
            });
        }
        out
    }

    /// The newest request (or request `number`) filed by the run itself: a request file owned
    /// by anyone but the transcript's owner is not the run's and is never shown or answered.
    pub(crate) fn request(&self, number: Option<u32>) -> Result<Request> {
        let owner = std::fs::symlink_metadata(&self.transcript)
            .map_err(|e| Error::io("cannot examine", &self.transcript, e))?
            .uid();
        let entries = std::fs::read_dir(&self.dir).map_err(|_| {
            Error::Usage(format!(
                "run {} has no approval requests",
                self.transcript.display()
            ))
        })?;
        let mut requests: Vec<Request> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".request.json"))
            .filter(|e| {
                std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_file() && m.uid() == owner)
            })
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect();
        requests.sort_by_key(|r| r.number);
        match number {
            Some(n) => requests.into_iter().find(|r| r.number == n),
            None => requests.into_iter().last(),
        }
        .ok_or_else(|| Error::Usage("no such approval request".into()))
    }

    /// Writes this account's answer: once (a second answer by the same account is refused).
    pub(crate) fn give(&self, answer: &Answer) -> Result<()> {
        let uid = crate::base::identity::current_uid();
        let path = self
            .dir
            .join(format!("{}.answer.{uid}.json", answer.number));
        let text =
            serde_json::to_string_pretty(answer).map_err(|e| Error::Internal(e.to_string()))?;
        match write_whole(&path, &text) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Usage(format!(
                "request {} already has an answer from this account ({}); an answer is given once",
                answer.number,
                path.display()
            ))),
            Err(e) => Err(Error::io("cannot write", &path, e)),
        }
    }
}

/// Writes `text` into a new file (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0640) beside `path`, then
/// links it to `path`, which fails if anything (a file, a planted link) is there already:
/// nothing is written through a link, nothing replaced, and readers only ever see whole files.
fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        crate::base::identity::new_run_id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let done = file
        .set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_data())
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    done
}
