//! Finding runbooks: by file, or by `ID[@VERSION]` in the runbook folders.

use std::path::{Path, PathBuf};

use crate::base::error::{Error, Result};
use crate::runbook::Runbook;

/// The id a runbook file declares, or None when it does not load.
pub fn id_of(path: &Path) -> Option<String> {
    let host = crate::sandbox::engine::Host::new(
        crate::sandbox::recorder::Mode::Plan,
        crate::base::console::Console::silent(),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    Runbook::load(path, host).ok().map(|rb| rb.meta.id)
}

/// Resolves and loads a target (`file.rhai` or `ID[@VERSION]`) on `host`, enforcing its
/// version pin.
pub fn load(
    dirs: &[PathBuf],
    target: &str,
    host: std::rc::Rc<crate::sandbox::engine::Host>,
) -> Result<Runbook> {
    let target = Target::parse(target);
    let path = locate(&target, dirs, id_of)?;
    load_at(&path, &target, host)
}

/// Loads the file `target` was located at, enforcing its version pin.
pub fn load_at(
    path: &Path,
    target: &Target,
    host: std::rc::Rc<crate::sandbox::engine::Host>,
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

/// The folders to search: `--runbooks`/`RUNBOOK_PATH` when given, else `runbooks/` in the
/// project's folder (the nearest one up holding runbook.toml, else this one).
pub fn search_dirs(given: &[PathBuf]) -> Vec<PathBuf> {
    if given.is_empty() {
        vec![crate::data::config::project_root().join("runbooks")]
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

/// The file for a target. Every runbook in the folders is asked for its id (`id_of` loads one
/// file's metadata), not only `<id>.rhai`: two files declaring one id would make which one runs
/// depend on file names, so that is refused, naming both.
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
            let mut found: Vec<PathBuf> = runbook_files(dirs)
                .into_iter()
                .filter(|f| id_of(f).as_deref() == Some(id.as_str()))
                .collect();
            // The conventional name first, so a single match reads the same as before.
            found.sort_by_key(|f| f.file_stem().is_none_or(|s| s != id.as_str()));
            match found.len() {
                0 => Err(Error::NotFound(format!(
                    "{id} (searched {})",
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
                1 => Ok(found.remove(0)),
                _ => Err(Error::Input(format!(
                    "runbook id {id:?} is declared by more than one file: {}; give each runbook its own id (`runbook check` reports this too)",
                    found
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" and ")
                ))),
            }
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
    fn two_files_declaring_one_id_are_refused_naming_both() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["a.rhai", "b.rhai", "c.rhai"] {
            std::fs::write(tmp.path().join(name), "").unwrap();
        }
        let dirs = [tmp.path().to_path_buf()];
        let id_of = |p: &Path| {
            Some(
                if p.ends_with("c.rhai") {
                    "other"
                } else {
                    "same"
                }
                .to_string(),
            )
        };
        let err = locate(&Target::parse("same"), &dirs, id_of)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.rhai") && err.contains("b.rhai"), "{err}");
        assert!(
            locate(&Target::parse("other"), &dirs, id_of)
                .unwrap()
                .ends_with("c.rhai")
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
