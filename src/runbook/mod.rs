//! The runbook format: loading a `.rhai` file, the declaration pass, and validation.
//!
//! Loading runs the script's top level once, in the [`Stage::Loading`](crate::sandbox::recorder::Stage)
//! stage where every binding is refused: the only things a top level can do are compute values,
//! `import` modules and call the declaration functions below (`runbook(...)`, `containment(...)`,
//! `eradication(...)`, `recovery(...)`). So every step is known before the first one runs, and a
//! broken runbook is refused, with its position, before anything happens.
//!
//! The declared types and the declaration plugin live a layer below, in `declare`; this module
//! holds the loaded `Runbook`, and the rest is split by concern:
//! `load` (compiling and declaring a file), `params` (checking `--param` values), `validate`
//! (everything the declaration pass collected, with positions) and `markdown` (`runbook show`).

pub mod catalog;
mod load;
mod markdown;
mod params;
mod validate;

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use rhai::{AST, Engine};

use crate::base::error::ScriptDiagnostic;
use crate::sandbox::declare::{
    Confirm, Declarations, Metadata, ParamSpec, ParamType, Phase, RawStep, Severity, Step,
};
use crate::sandbox::engine::Host;

pub(crate) use params::refuse_nameless;

/// Defaults for step options: long enough for cloud waits, short enough that a stuck step is
/// noticed well inside the 15-minute P1 response time.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(2);
pub const MAX_RETRIES: i64 = 20;

const META_KEYS: &[&str] = &[
    "id",
    "version",
    "title",
    "severity",
    "description",
    "service",
    "owner",
    "reviewed",
    "alerts",
    "tags",
    "env",
    "params",
    "notify",
    "commands",
];
const PARAM_KEYS: &[&str] = &[
    "type",
    "required",
    "default",
    "pattern",
    "choices",
    "secret",
    "target",
    "description",
];
const STEP_KEYS: &[&str] = &[
    "timeout",
    "retries",
    "backoff",
    "confirm",
    "on_failure",
    "when",
    "allow_failure",
    "description",
];

/// A loaded, validated runbook with the engine that runs it.
pub struct Runbook {
    pub path: PathBuf,
    /// The path as shown in diagnostics and transcripts.
    pub file: String,
    pub source: Rc<str>,
    pub sha256: String,
    pub meta: Metadata,
    pub steps: Vec<Step>,
    pub warnings: Vec<ScriptDiagnostic>,
    pub engine: Engine,
    pub ast: AST,
    pub host: Rc<Host>,
}
