//! Finding runbooks: by file, or by `ID[@VERSION]` in the runbook folders.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::runbook::Runbook;

/// The id a runbook file declares, or None when it does not load.
pub fn id_of(path: &Path) -> Option<String> {
    let host = crate::engine::Host::new(
        crate::recorder::Mode::Plan,
        crate::console::Console::silent(),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    Runbook::load(path, host).ok().map(|rb| rb.meta.id)
}

/// Resolves and loads a target (`file.rhai` or `ID[@VERSION]`) on `host`, enforcing its
/// version pin.
pub fn load(
    dirs: &[PathBuf],
    target: &str,
    host: std::rc::Rc<crate::engine::Host>,
) -> Result<Runbook> {
    let target = Target::parse(target);
    let path = locate(&target, dirs, id_of)?;
    load_at(&path, &target, host)
}

/// Loads the file `target` was located at, enforcing its version pin.
pub fn load_at(
    path: &Path,
    target: &Target,
    host: std::rc::Rc<crate::engine::Host>,
) -> Result<Runbook> {
    let rb = Runbook::load(path, host)?;
    if let Target::Id { id, pin: Some(pin) } = target
        && !pin_matches(pin, &rb.meta.version)?
    {
        return Err(Error::VersionMismatch {
            id: id.clone(),
            pinned: pin.clone(),
            found: rb.meta.version.to_string(),
        });
    }
    Ok(rb)
}

/// The folders to search: `--runbooks`/`RUNBOOK_PATH` when given, else `./runbooks`.
pub fn search_dirs(given: &[PathBuf]) -> Vec<PathBuf> {
    if given.is_empty() {
        vec![PathBuf::from("runbooks")]
    } else {
        given.to_vec()
    }
}

/// Every `.rhai` file directly in the folders, sorted, so listings are stable.
pub fn runbook_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut here: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "rhai"))
            .collect();
        here.sort();
        files.extend(here);
    }
    files
}

/// A run target: a file, or a runbook id with an optional version pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    File(PathBuf),
    Id { id: String, pin: Option<String> },
}

impl Target {
    pub fn parse(text: &str) -> Target {
        let path = Path::new(text);
        if path.is_file() || text.ends_with(".rhai") || text.contains('/') {
            return Target::File(path.to_path_buf());
        }
        match text.split_once('@') {
            Some((id, pin)) => Target::Id {
                id: id.to_string(),
                pin: Some(pin.to_string()),
            },
            None => Target::Id {
                id: text.to_string(),
                pin: None,
            },
        }
    }
}

/// The file for a target. By convention `<id>.rhai` is tried first; otherwise every runbook in
/// the folders is asked for its id (`id_of` loads one file's metadata).
pub fn locate(
    target: &Target,
    dirs: &[PathBuf],
    id_of: impl Fn(&Path) -> Option<String>,
) -> Result<PathBuf> {
    match target {
        Target::File(path) => {
            if path.is_file() {
                Ok(path.clone())
            } else {
                Err(Error::NotFound(path.display().to_string()))
            }
        }
        Target::Id { id, .. } => {
            for dir in dirs {
                let candidate = dir.join(format!("{id}.rhai"));
                if candidate.is_file() && id_of(&candidate).as_deref() == Some(id.as_str()) {
                    return Ok(candidate);
                }
            }
            runbook_files(dirs)
                .into_iter()
                .find(|f| id_of(f).as_deref() == Some(id.as_str()))
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "{id} (searched {})",
                        dirs.iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
        }
    }
}

/// Whether `found` satisfies a pin: an exact version (`1.2.0`) or a requirement (`^1.2`).
pub fn pin_matches(pin: &str, found: &semver::Version) -> Result<bool> {
    if let Ok(exact) = semver::Version::parse(pin) {
        return Ok(&exact == found);
    }
    semver::VersionReq::parse(pin)
        .map(|req| req.matches(found))
        .map_err(|e| Error::Usage(format!("bad version pin {pin:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_files_or_pinned_ids() {
        assert_eq!(
            Target::parse("ec2-high-cpu@1.2.0"),
            Target::Id {
                id: "ec2-high-cpu".into(),
                pin: Some("1.2.0".into())
            }
        );
        assert_eq!(
            Target::parse("x.rhai"),
            Target::File(PathBuf::from("x.rhai"))
        );
    }

    #[test]
    fn pins_are_exact_versions_or_requirements() {
        let v = semver::Version::parse("1.2.3").unwrap();
        assert!(pin_matches("1.2.3", &v).unwrap());
        assert!(!pin_matches("1.2.4", &v).unwrap());
        assert!(pin_matches("^1.2", &v).unwrap());
        assert!(pin_matches("not a pin!", &v).is_err());
    }
}
