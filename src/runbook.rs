//! The runbook format: loading a `.rhai` file, the declaration pass, and validation.
//!
//! Loading runs the script's top level once, in the [`Stage::Loading`](crate::recorder::Stage)
//! stage where every binding is refused: the only things a top level can do are compute values,
//! `import` modules and call the declaration functions below (`runbook(...)`, `containment(...)`,
//! `eradication(...)`, `recovery(...)`). So every step is known before the first one runs, and a
//! broken runbook is refused, with its position, before anything happens.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use rhai::plugin::*;
use rhai::{AST, Dynamic, Engine, FnPtr, Map};
use sha2::{Digest, Sha256};

use crate::engine::{self, Host, ImportRoots, ModuleRecord};
use crate::error::{Error, Location, Result, ScriptDiagnostic};
use crate::recorder::{ScriptResult, Stage};
use crate::redact::MIN_SECRET_LEN;

/// The three phases of incident response, in the order they must run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Containment,
    Eradication,
    Recovery,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Containment, Phase::Eradication, Phase::Recovery];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Containment => "containment",
            Phase::Eradication => "eradication",
            Phase::Recovery => "recovery",
        }
    }
}

/// A step as declared, before validation.
#[derive(Clone)]
pub struct RawStep {
    pub phase: Phase,
    pub title: String,
    pub body: FnPtr,
    pub options: Map,
    pub pos: Position,
    pub source: Option<String>,
}

/// What the declaration pass collected.
#[derive(Default)]
pub struct Declarations {
    pub meta: Option<(Map, Position)>,
    pub duplicate_meta: Option<Position>,
    pub steps: Vec<RawStep>,
}

/// Adds the declaration functions to an engine.
pub fn register_declarations(engine: &mut Engine) {
    engine.register_global_module(exported_module!(declare_api).into());
}

fn declare(
    ctx: &NativeCallContext,
    phase: Phase,
    title: &str,
    body: FnPtr,
    options: Map,
) -> ScriptResult<()> {
    let host = crate::recorder::host_of(ctx)?;
    if host.recorder.stage() != Stage::Loading {
        return Err(crate::recorder::runtime_error(
            "not_at_top_level",
            "steps are declared at the top level of a runbook, not inside a step",
            ctx.call_position(),
        ));
    }
    host.decls.borrow_mut().steps.push(RawStep {
        phase,
        title: title.to_string(),
        body,
        options,
        pos: ctx.call_position(),
        source: ctx.call_source().map(str::to_string),
    });
    Ok(())
}

/// Declaring a runbook: metadata and steps. These run while the file loads; nothing else does.
#[export_module]
pub mod declare_api {
    /// Declares the runbook's metadata. Call it once, before the steps.
    ///
    /// Keys: `id` (kebab-case, unique), `version` (semver), `title`, `severity` (`"P1"`..`"P4"`),
    /// and optionally `description`, `service`, `owner`, `reviewed` (`"YYYY-MM-DD"`), `alerts`
    /// (alert names this runbook answers), `tags`, `env` (environment variables `env()` may read)
    /// and `params`: a map from name to `#{ type, required, default, pattern, choices, secret, target, description }`.
    /// `type` is `"string"` (the default), `"int"`, `"float"`, `"bool"` or `"duration"`: text
    /// such as `"30s"` or `"5m"`, refused by `check` (a default) or before any step (a
    /// `--param`) when it is not a duration the bindings accept (or is over 366 days), and given
    /// to the script as that text, so `sleep(ctx.pause)` takes it.
    /// A `secret` value is redacted everywhere (transcripts, logs, errors, Slack and Teams
    /// messages) and must be at least 4 characters long; a shorter one is refused.
    #[rhai_fn(return_raw)]
    pub fn runbook(ctx: NativeCallContext, meta: Map) -> ScriptResult<()> {
        let host = crate::recorder::host_of(&ctx)?;
        let mut decls = host.decls.borrow_mut();
        if decls.meta.is_some() {
            decls.duplicate_meta.get_or_insert(ctx.call_position());
        } else {
            decls.meta = Some((meta, ctx.call_position()));
        }
        Ok(())
    }

    /// Declares a containment step: stop the damage from spreading.
    ///
    /// `body` is a closure `|ctx| { ... }`; `ctx` holds the parameters and whatever earlier steps stored.
    #[rhai_fn(name = "containment", return_raw)]
    pub fn containment(ctx: NativeCallContext, title: &str, body: FnPtr) -> ScriptResult<()> {
        declare(&ctx, Phase::Containment, title, body, Map::new())
    }

    /// Declares a containment step with its options written first, so a guard such as
    /// `confirm: "TERMINATE"` is read before the code it guards:
    /// `containment("Isolate", #{ confirm: "ISOLATE", timeout: "2m" }, |ctx| { ... })`.
    ///
    /// Options: `timeout` (`"2m"`), `retries`, `backoff` (`"1s"`, doubled after each retry),
    /// `confirm` (`true` or the word the operator must type), `on_failure` (a rollback closure
    /// `|ctx| { ... }`), `when` (a closure returning whether to run), `allow_failure` (the run
    /// goes on when this step fails) and `description`.
    ///
    /// A step that runs past its `timeout` ends `timed_out`; one that hits a limit of the sandbox
    /// ends `failed`, with the limit named: `too_many_operations` (the operation budget, 200
    /// million by default) or `too_much_memory` (256 MiB held by the script in total).
    #[rhai_fn(name = "containment", return_raw)]
    pub fn containment_guarded(
        ctx: NativeCallContext,
        title: &str,
        options: Map,
        body: FnPtr,
    ) -> ScriptResult<()> {
        declare(&ctx, Phase::Containment, title, body, options)
    }

    /// Declares a containment step with its options after the body (the older form; the same
    /// options and checks as `containment(title, options, body)`).
    #[rhai_fn(name = "containment", return_raw)]
    pub fn containment_with(
        ctx: NativeCallContext,
        title: &str,
        body: FnPtr,
        options: Map,
    ) -> ScriptResult<()> {
        declare(&ctx, Phase::Containment, title, body, options)
    }

    /// Declares an eradication step: remove the cause.
    #[rhai_fn(name = "eradication", return_raw)]
    pub fn eradication(ctx: NativeCallContext, title: &str, body: FnPtr) -> ScriptResult<()> {
        declare(&ctx, Phase::Eradication, title, body, Map::new())
    }

    /// Declares an eradication step with its options first (see `containment`):
    /// `eradication("title", #{ confirm: "WORD", timeout: "5m" }, |ctx| { ... })`.
    #[rhai_fn(name = "eradication", return_raw)]
    pub fn eradication_guarded(
        ctx: NativeCallContext,
        title: &str,
        options: Map,
        body: FnPtr,
    ) -> ScriptResult<()> {
        declare(&ctx, Phase::Eradication, title, body, options)
    }

    /// Declares an eradication step with its options after the body (the older form).
    #[rhai_fn(name = "eradication", return_raw)]
    pub fn eradication_with(
        ctx: NativeCallContext,
        title: &str,
        body: FnPtr,
        options: Map,
    ) -> ScriptResult<()> {
        declare(&ctx, Phase::Eradication, title, body, options)
    }

    /// Declares a recovery step: bring the service back and prove it is healthy.
    #[rhai_fn(name = "recovery", return_raw)]
    pub fn recovery(ctx: NativeCallContext, title: &str, body: FnPtr) -> ScriptResult<()> {
        declare(&ctx, Phase::Recovery, title, body, Map::new())
    }

    /// Declares a recovery step with its options first (see `containment`):
    /// `recovery("title", #{ confirm: "WORD", timeout: "5m" }, |ctx| { ... })`.
    #[rhai_fn(name = "recovery", return_raw)]
    pub fn recovery_guarded(
        ctx: NativeCallContext,
        title: &str,
        options: Map,
        body: FnPtr,
    ) -> ScriptResult<()> {
        declare(&ctx, Phase::Recovery, title, body, options)
    }

    /// Declares a recovery step with its options after the body (the older form).
    #[rhai_fn(name = "recovery", return_raw)]
    pub fn recovery_with(
        ctx: NativeCallContext,
        title: &str,
        body: FnPtr,
        options: Map,
    ) -> ScriptResult<()> {
        declare(&ctx, Phase::Recovery, title, body, options)
    }
}

/// Severity, as in the incident classification of the EC2 Manager DevOps document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Severity {
    P1,
    P2,
    P3,
    P4,
}

impl Severity {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "P1" => Some(Severity::P1),
            "P2" => Some(Severity::P2),
            "P3" => Some(Severity::P3),
            "P4" => Some(Severity::P4),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::P1 => "P1",
            Severity::P2 => "P2",
            Severity::P3 => "P3",
            Severity::P4 => "P4",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Int,
    Float,
    Bool,
    /// Duration text such as `"30s"` or `"5m"`, checked when the runbook is checked and when a
    /// value is given, and handed to the script as that text (so `sleep(ctx.pause)` takes it).
    Duration,
}

impl ParamType {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "string" => Some(ParamType::String),
            "int" => Some(ParamType::Int),
            "float" => Some(ParamType::Float),
            "bool" => Some(ParamType::Bool),
            "duration" => Some(ParamType::Duration),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
            ParamType::Duration => "duration",
        }
    }

    /// Converts command-line text to a typed value.
    fn convert(self, text: &str) -> std::result::Result<Dynamic, String> {
        match self {
            // A duration stays text; `check_value` checks it like a default.
            ParamType::String | ParamType::Duration => Ok(text.into()),
            ParamType::Int => text
                .parse::<i64>()
                .map(Dynamic::from)
                .map_err(|_| format!("{text:?} is not an int")),
            ParamType::Float => text
                .parse::<f64>()
                .map(Dynamic::from)
                .map_err(|_| format!("{text:?} is not a float")),
            ParamType::Bool => match text {
                "true" | "yes" | "1" => Ok(true.into()),
                "false" | "no" | "0" => Ok(false.into()),
                _ => Err(format!("{text:?} is not a bool (true/false)")),
            },
        }
    }

    fn accepts(self, value: &Dynamic) -> bool {
        match self {
            ParamType::String | ParamType::Duration => value.is_string(),
            ParamType::Int => value.is_int(),
            ParamType::Float => value.is_float() || value.is_int(),
            ParamType::Bool => value.is_bool(),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ParamType,
    pub required: bool,
    #[serde(skip)]
    pub default: Option<Dynamic>,
    #[serde(skip)]
    pub pattern: Option<Regex>,
    pub choices: Vec<String>,
    pub secret: bool,
    /// The run acts on the resource this parameter names: it takes that target's lock
    /// (`runbook run` is refused while another run holds it).
    pub target: bool,
    pub description: String,
    #[serde(skip)]
    pub line: usize,
    #[serde(skip)]
    pub col: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Metadata {
    pub id: String,
    pub version: semver::Version,
    pub title: String,
    pub severity: Severity,
    pub description: String,
    pub service: String,
    pub owner: String,
    pub reviewed: Option<chrono::NaiveDate>,
    pub alerts: Vec<String>,
    pub tags: Vec<String>,
    pub env: Vec<String>,
    pub params: Vec<ParamSpec>,
    /// `notify: #{ slack: "#channel" }`: lifecycle notifications for every run.
    pub notify_slack: Option<String>,
}

/// How a step asks for confirmation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confirm {
    /// A yes from the operator (or `--yes`).
    Yes,
    /// The operator must type this word (the seed's `ROLLBACK`-style typed confirmation).
    Word(String),
}

#[derive(Clone)]
pub struct Step {
    pub index: usize,
    pub phase: Phase,
    pub title: String,
    pub description: String,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub confirm: Option<Confirm>,
    pub allow_failure: bool,
    pub body: FnPtr,
    pub on_failure: Option<FnPtr>,
    pub when: Option<FnPtr>,
    pub location: Location,
}

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

/// How long a runbook's top level may run while it is loaded: a top-level `loop {}` must not
/// hang `check`.
const DECLARATION_DEADLINE: Duration = Duration::from_secs(10);

static KEBAB: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(-[a-z0-9]+)*$").expect("valid regex"));
static IDENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z_][a-z0-9_]*$").expect("valid regex"));
static ENV_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Z_][A-Z0-9_]*$").expect("valid regex"));

impl Runbook {
    /// Reads, compiles and declares a runbook, then validates everything it declared.
    pub fn load(path: &Path, host: Rc<Host>) -> Result<Runbook> {
        let source =
            std::fs::read_to_string(path).map_err(|e| Error::io("cannot read runbook", path, e))?;
        Self::load_source(path, &source, host, DECLARATION_DEADLINE)
    }

    /// [`load`](Self::load) of source text already in memory, as if read from `path` (which
    /// need not exist: it names the runbook in diagnostics and roots its imports), with the
    /// declaration pass stopped after `declare_for`. For the fuzz targets (`fuzz/`), which
    /// load millions of generated runbooks and cannot give each endless loop ten seconds.
    #[doc(hidden)]
    pub fn load_source(
        path: &Path,
        source: &str,
        host: Rc<Host>,
        declare_for: Duration,
    ) -> Result<Runbook> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let file = engine::display_path(&canonical);
        let source: Rc<str> = Rc::from(source);
        let sha256 = hex::encode(Sha256::digest(source.as_bytes()));
        host.modules.borrow_mut().push(ModuleRecord {
            import: String::new(),
            file: file.clone(),
            sha256: sha256.clone(),
            source: source.clone(),
        });

        let engine = engine::build(&host, ImportRoots::for_runbook(&canonical));
        let mut ast = engine.compile(&*source).map_err(|e| {
            let pos = e.position();
            let mut diag = ScriptDiagnostic::new(
                &file,
                &source,
                pos.line().unwrap_or(1),
                pos.position().unwrap_or(1),
                format!("syntax error: {}", e.err_type()),
                "here",
            );
            if let rhai::ParseErrorType::Reserved(word) = e.err_type() {
                diag = diag.with_help(format!(
                    "`{word}` is reserved in Rhai; as a map key, quote it: \"{word}\": ..."
                ));
            }
            Error::script(diag)
        })?;
        ast.set_source(file.as_str());

        host.recorder.set_stage(Stage::Loading);
        // The declaration pass gets a deadline too: a top-level `loop {}` must not hang `check`.
        host.interrupt.set_timeout(Some(declare_for));
        let declared = engine.run_ast(&ast);
        host.interrupt.set_deadline(None);
        if let Err(err) = declared {
            return Err(Error::script(error_diagnostic(
                &host,
                &err,
                &file,
                "while loading the runbook",
            )));
        }

        // A closure called later (a step) does not see the imports of the evaluation that
        // created it, so each top-level `import "x" as y` is made a static module of the engine.
        let mut engine = engine;
        expose_imports(&mut engine, &ast, &host, &file, &source)?;

        let validated = {
            let decls = host.decls.borrow();
            let modules = host.modules.borrow();
            validate(&file, &source, &decls, &modules)
        };
        let (meta, steps, warnings) = validated.map_err(Error::Script)?;
        host.env_allow.borrow_mut().clone_from(&meta.env);
        host.recorder.set_stage(Stage::Idle);
        Ok(Runbook {
            path: canonical,
            file,
            source,
            sha256,
            meta,
            steps,
            warnings,
            engine,
            ast,
            host,
        })
    }

    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.meta.params.iter().find(|p| p.name == name)
    }

    /// Why `text`, given for parameter `name`, would be refused by [`Runbook::resolve_params`],
    /// if it would: for values fixed ahead of a run (a literal route parameter in hooks.toml,
    /// checked by `serve --check`). Never shows a secret value.
    pub(crate) fn param_text_problem(&self, name: &str, text: &str) -> Option<String> {
        let p = self.param(name)?;
        let why = match p.ty.convert(text) {
            Err(_) if p.secret => format!("the given value is not of type {}", p.ty.as_str()),
            Err(why) => why,
            Ok(value) => {
                let why = p.check_value(&value)?;
                if p.secret {
                    format!("the given value {why}")
                } else {
                    format!("{value:?} {why}")
                }
            }
        };
        Some(format!(
            "parameter {name}: {}",
            self.host.redactor.redact(&why)
        ))
    }

    fn param_diag(&self, p: &ParamSpec, message: String) -> ScriptDiagnostic {
        ScriptDiagnostic::new(
            &self.file,
            &self.source,
            p.line,
            p.col,
            message,
            "declared here",
        )
    }

    /// Checks and converts `--param k=v` values against the declared params: unknown names,
    /// missing required ones, wrong types, patterns and choices are all refused here, before
    /// any step. Secret values are handed to the redactor at once.
    /// The values of the parameters declared `target: true` in resolved `params`: what a run
    /// locks (see `state::Store::lock`).
    pub fn targets(&self, params: &Map) -> Vec<String> {
        self.meta
            .params
            .iter()
            .filter(|p| p.target)
            .filter_map(|p| params.get(p.name.as_str()))
            .filter(|v| !v.is_unit())
            .map(|v| v.to_string())
            .filter(|v| !v.is_empty())
            .collect()
    }

    pub fn resolve_params(&self, given: &[(String, String)]) -> Result<Map> {
        let mut problems = Vec::new();
        let mut values = Map::new();
        let redactor = &self.host.redactor;
        refuse_nameless(given)?;
        for (name, _) in given {
            if self.param(name).is_none() {
                let known: Vec<&str> = self.meta.params.iter().map(|p| p.name.as_str()).collect();
                return Err(Error::Usage(format!(
                    "unknown parameter {:?} for runbook {}; it declares: {}",
                    redactor.redact(name),
                    self.meta.id,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        for p in &self.meta.params {
            let raw = given
                .iter()
                .rev()
                .find(|(n, _)| *n == p.name)
                .map(|(_, v)| v.as_str());
            let value = match raw {
                Some(text) => match p.ty.convert(text) {
                    Ok(v) => v,
                    Err(why) => {
                        // A secret's value is never shown, nor a credential-shaped one.
                        let why = if p.secret {
                            format!("the given value is not of type {}", p.ty.as_str())
                        } else {
                            redactor.redact(&why)
                        };
                        problems.push(self.param_diag(p, format!("parameter {}: {why}", p.name)));
                        continue;
                    }
                },
                None => match &p.default {
                    Some(d) => d.clone(),
                    None if p.required => {
                        problems.push(
                            self.param_diag(p, format!("missing required parameter {}", p.name))
                                .with_help(format!("pass it with --param {}=VALUE", p.name)),
                        );
                        continue;
                    }
                    None => Dynamic::UNIT,
                },
            };
            if let Some(why) = p.check_value(&value) {
                // Never echo a secret value in the error, nor a credential-shaped one.
                let shown = if p.secret {
                    "the given value".to_string()
                } else {
                    redactor.redact(&format!("{value:?}"))
                };
                problems.push(self.param_diag(p, format!("parameter {}: {shown} {why}", p.name)));
                continue;
            }
            if p.secret && !value.is_unit() {
                // Whatever its type, a secret is registered as the text it prints as.
                let text = value.to_string();
                if let Some(why) = secret_too_short(&text) {
                    problems.push(self.param_diag(p, format!("parameter {}: {why}", p.name)));
                    continue;
                }
                redactor.add_secret(&text);
            }
            values.insert(p.name.as_str().into(), value);
        }
        if problems.is_empty() {
            Ok(values)
        } else {
            Err(Error::Script(problems))
        }
    }

    /// Imported modules (import path, file, sha256), in load order; the runbook itself excluded.
    pub fn modules(&self) -> Vec<ModuleRecord> {
        self.host
            .modules
            .borrow()
            .iter()
            .filter(|m| !m.import.is_empty())
            .cloned()
            .collect()
    }

    /// Metadata and steps as Markdown (`runbook show`).
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write as _;
        let m = &self.meta;
        let mut out = format!("# {} (`{}@{}`)\n\n", m.title, m.id, m.version);
        if !m.description.is_empty() {
            let _ = writeln!(out, "{}\n", m.description);
        }
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| Severity | {} |", m.severity.as_str());
        let _ = writeln!(out, "| Alerts | {} |", m.alerts.join(", "));
        let _ = writeln!(out, "| Service | {} |", m.service);
        let _ = writeln!(out, "| Owner | {} |", m.owner);
        let _ = writeln!(
            out,
            "| Reviewed | {} |",
            m.reviewed
                .map(|d| d.to_string())
                .unwrap_or_else(|| "never".into())
        );
        let _ = writeln!(
            out,
            "| File | `{}` (sha256 `{}`) |",
            self.file,
            &self.sha256[..12]
        );
        if !m.params.is_empty() {
            let _ = writeln!(
                out,
                "\n## Parameters\n\n| Name | Type | Required | Default | Description |\n|---|---|---|---|---|"
            );
            for p in &m.params {
                let default = match (&p.default, p.secret) {
                    (_, true) => "(secret)".to_string(),
                    (Some(d), _) => format!("`{d}`"),
                    (None, _) => String::new(),
                };
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | {} | {} |",
                    p.name,
                    p.ty.as_str(),
                    if p.required { "yes" } else { "no" },
                    default,
                    p.description
                );
            }
        }
        for phase in Phase::ALL {
            let steps: Vec<&Step> = self.steps.iter().filter(|s| s.phase == phase).collect();
            if steps.is_empty() {
                continue;
            }
            let mut name = phase.as_str().to_string();
            name[..1].make_ascii_uppercase();
            let _ = writeln!(out, "\n## {name}\n");
            for s in steps {
                let mut flags = vec![format!("timeout {}", humantime::format_duration(s.timeout))];
                if s.retries > 0 {
                    flags.push(format!("{} retries", s.retries));
                }
                match &s.confirm {
                    Some(Confirm::Yes) => flags.push("needs confirmation".into()),
                    Some(Confirm::Word(w)) => flags.push(format!("type `{w}` to confirm")),
                    None => {}
                }
                if s.on_failure.is_some() {
                    flags.push("has rollback".into());
                }
                if s.allow_failure {
                    flags.push("may fail".into());
                }
                let _ = writeln!(
                    out,
                    "{}. **{}** ({})",
                    s.index + 1,
                    s.title,
                    flags.join(", ")
                );
                if !s.description.is_empty() {
                    let _ = writeln!(out, "   {}", s.description);
                }
            }
        }
        out
    }
}

/// Why a secret cannot be accepted: one shorter than [`MIN_SECRET_LEN`] cannot be redacted
/// (searching for "ab" would destroy every record), so it is refused rather than left in clear.
/// An empty value is no secret (an optional secret left out), so it is accepted.
fn secret_too_short(value: &str) -> Option<String> {
    (!value.is_empty() && value.chars().count() < MIN_SECRET_LEN).then(|| {
        format!(
            "a secret must be at least {MIN_SECRET_LEN} characters long so it can be redacted everywhere; the given value is shorter"
        )
    })
}

impl ParamSpec {
    /// Why `value` is not acceptable, if it is not.
    fn check_value(&self, value: &Dynamic) -> Option<String> {
        if value.is_unit() {
            return None;
        }
        if !self.ty.accepts(value) {
            return Some(format!("is not of type {}", self.ty.as_str()));
        }
        if self.ty == ParamType::Duration
            && let Some(why) = duration_problem(value)
        {
            // The parser's detail may quote the value, which a secret must not show.
            return Some(if self.secret {
                "is not a duration such as \"30s\" or \"5m\" up to 366 days".to_string()
            } else {
                why
            });
        }
        if let Ok(s) = value.clone().into_string() {
            if let Some(re) = &self.pattern
                && !re.is_match(&s)
            {
                return Some(format!("does not match the pattern {}", re.as_str()));
            }
            if !self.choices.is_empty() && !self.choices.contains(&s) {
                return Some(format!("is not one of: {}", self.choices.join(", ")));
            }
        }
        None
    }
}

/// Why duration text would be refused by `sleep`, the waits and step options, if it would: a
/// `duration` parameter goes through the one duration parser ([`crate::clock::parse_duration`]),
/// so `check`, `--param` and `serve --check` accept exactly what `sleep(ctx.pause)` will, range
/// included. The parser's message starts with the value, which the callers show (or hide) already.
fn duration_problem(value: &Dynamic) -> Option<String> {
    let text = value.to_string();
    crate::clock::parse_duration(&text).err().map(|why| {
        why.strip_prefix(&format!("{text:?} "))
            .map_or_else(|| why.clone(), str::to_string)
    })
}

/// Registers each top-level `import "path" as alias` as a static module named `alias`.
fn expose_imports(
    engine: &mut Engine,
    ast: &AST,
    host: &Host,
    file: &str,
    source: &str,
) -> Result<()> {
    let mut problems = Vec::new();
    for stmt in ast.statements() {
        let rhai::Stmt::Import(import, pos) = stmt else {
            continue;
        };
        let (expr, alias) = &**import;
        let at = (pos.line().unwrap_or(1), pos.position().unwrap_or(1));
        let diag = |msg: String| ScriptDiagnostic::new(file, source, at.0, at.1, msg, "here");
        let rhai::Expr::StringConstant(path, _) = expr else {
            problems.push(diag(
                "an import path must be a string literal, so it is known before anything runs"
                    .into(),
            ));
            continue;
        };
        if alias.name.is_empty() {
            continue;
        }
        if crate::bindings::NAMESPACES.contains(&alias.name.as_str()) {
            problems.push(diag(format!(
                "`as {}` would hide the {}:: bindings; choose another alias",
                alias.name, alias.name
            )));
            continue;
        }
        let module = host
            .loaded
            .borrow()
            .iter()
            .find(|(p, _)| p == path.as_str())
            .map(|(_, m)| m.clone());
        if let Some(module) = module {
            engine.register_static_module(alias.name.as_str(), module);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Script(problems))
    }
}

/// Turns a load-time script error into a diagnostic pointing into the right file.
pub fn error_diagnostic(
    host: &Host,
    err: &EvalAltResult,
    top_file: &str,
    context: &str,
) -> ScriptDiagnostic {
    let info = engine::describe_error(err, top_file);
    let file = info.file.clone().unwrap_or_else(|| top_file.to_string());
    let source = host.source_of(&file).unwrap_or_else(|| Rc::from(""));
    ScriptDiagnostic::new(
        &file,
        &source,
        info.line.max(1),
        info.col,
        format!("{}: {}", context, info.message),
        "here",
    )
}

fn line_col_at(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Finds where `key:` is written after `from` (a map literal's key has no runtime position, but
/// the text does). Falls back to `from` itself.
fn key_position(source: &str, from: (usize, usize), key: &str) -> (usize, usize) {
    let start = crate::error::byte_offset(source, from.0, from.1);
    let pattern = format!(r#"(?:\b{k}|"{k}")\s*:"#, k = regex::escape(key));
    match Regex::new(&pattern)
        .ok()
        .and_then(|re| re.find(&source[start..]))
    {
        Some(m) => line_col_at(source, start + m.start()),
        None => from,
    }
}

/// Where the keys of map literals are written, by the map's anchor: a call's position for a map
/// passed to it (`containment("t", |ctx| {...}, #{ timeout: "2m" })`), or the position of the key
/// that holds a nested map (`params: #{ pin: #{ ... } }`). Read from an unoptimised parse,
/// because the optimiser folds a constant map into one value and forgets where its keys were.
#[derive(Default)]
struct KeyIndex(std::collections::HashMap<LineCol, Vec<(String, LineCol)>>);

/// A 1-based line and column.
type LineCol = (usize, usize);

impl KeyIndex {
    fn build(source: &str) -> KeyIndex {
        use rhai::{ASTNode, Expr, Stmt};
        let mut engine = Engine::new_raw();
        engine.set_optimization_level(rhai::OptimizationLevel::None);
        engine.set_max_expr_depths(engine::MAX_EXPR_DEPTH, engine::MAX_FN_EXPR_DEPTH);
        let Ok(ast) = engine.compile(source) else {
            return KeyIndex::default();
        };
        let mut index = KeyIndex::default();
        let pos = |p: Position| (p.line().unwrap_or(0), p.position().unwrap_or(0));
        fn add_map(
            index: &mut KeyIndex,
            anchor: (usize, usize),
            expr: &Expr,
            pos: &dyn Fn(Position) -> (usize, usize),
        ) {
            let Expr::Map(map, _) = expr else { return };
            let keys = map
                .0
                .iter()
                .map(|(ident, value)| {
                    let at = pos(ident.pos);
                    add_map(index, at, value, pos);
                    (ident.name.to_string(), at)
                })
                .collect();
            index.0.entry(anchor).or_insert(keys);
        }
        ast.walk(&mut |nodes: &[ASTNode]| {
            let call = match nodes.last() {
                Some(ASTNode::Stmt(Stmt::FnCall(call, p))) => Some((call, *p)),
                Some(ASTNode::Expr(Expr::FnCall(call, p))) => Some((call, *p)),
                _ => None,
            };
            // A step's options come first (`containment("t", #{ ... }, |ctx| {...})`) or last
            // (`containment("t", |ctx| {...}, #{ ... })`): index the call's map literal wherever it is.
            if let Some((call, p)) = call
                && let Some(map) = call.args.iter().find(|a| matches!(a, Expr::Map(..)))
            {
                add_map(&mut index, pos(p), map, &pos);
            }
            true
        });
        index
    }

    fn get(&self, anchor: (usize, usize), key: &str) -> Option<(usize, usize)> {
        self.0
            .get(&anchor)?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, at)| *at)
    }
}

struct Validator<'a> {
    file: &'a str,
    source: &'a str,
    /// Other files steps may be declared in (imported modules), for their positions.
    modules: &'a [ModuleRecord],
    /// Parsed on first use, per file: most runbooks never need it.
    keys: std::cell::RefCell<std::collections::HashMap<String, KeyIndex>>,
    errors: Vec<ScriptDiagnostic>,
    warnings: Vec<ScriptDiagnostic>,
}

impl<'a> Validator<'a> {
    /// Where `key` is written in the map anchored at `at` (see [`KeyIndex`]); the first `key:`
    /// after `at` in the text when the map is not a literal.
    fn key_at(&self, at: (usize, usize), key: &str) -> (usize, usize) {
        let source = self.source;
        let mut keys = self.keys.borrow_mut();
        let index = keys
            .entry(self.file.to_string())
            .or_insert_with(|| KeyIndex::build(source));
        index
            .get(at, key)
            .unwrap_or_else(|| key_position(source, at, key))
    }

    /// Switches diagnostics and positions to `file` (a step declared in an imported module);
    /// returns what to switch back to.
    fn switch_to(&mut self, file: &str) -> (&'a str, &'a str) {
        let previous = (self.file, self.source);
        if let Some(m) = self.modules.iter().find(|m| m.file == file) {
            self.file = m.file.as_str();
            self.source = &m.source;
        }
        previous
    }

    fn error(&mut self, at: (usize, usize), message: String) {
        self.errors.push(ScriptDiagnostic::new(
            self.file,
            self.source,
            at.0,
            at.1,
            message,
            "here",
        ));
    }

    fn warn(&mut self, at: (usize, usize), message: String) {
        self.warnings.push(ScriptDiagnostic::new(
            self.file,
            self.source,
            at.0,
            at.1,
            message,
            "here",
        ));
    }

    fn string(
        &mut self,
        map: &Map,
        key: &str,
        at: (usize, usize),
        required: bool,
    ) -> Option<String> {
        match map.get(key) {
            None if required => {
                self.error(
                    at,
                    format!("runbook metadata is missing the required key `{key}`"),
                );
                None
            }
            None => None,
            Some(v) => match v.clone().into_string() {
                Ok(s) => Some(s),
                Err(t) => {
                    let at = self.key_at(at, key);
                    self.error(at, format!("`{key}` must be a string, not {t}"));
                    None
                }
            },
        }
    }

    fn strings(&mut self, map: &Map, key: &str, at: (usize, usize)) -> Vec<String> {
        let Some(v) = map.get(key) else {
            return Vec::new();
        };
        let items = v.clone().try_cast::<rhai::Array>().map(|a| {
            a.into_iter()
                .map(|d| d.into_string().ok())
                .collect::<Option<Vec<_>>>()
        });
        match items {
            Some(Some(list)) => list,
            _ => {
                let at = self.key_at(at, key);
                self.error(at, format!("`{key}` must be an array of strings"));
                Vec::new()
            }
        }
    }

    fn duration(
        &mut self,
        opts: &Map,
        key: &str,
        at: (usize, usize),
        default: Duration,
    ) -> Duration {
        match opts.get(key) {
            None => default,
            Some(v) => {
                let text = v.clone().into_string().unwrap_or_else(|t| format!("<{t}>"));
                // The one duration parser: it also refuses durations over the documented maximum.
                match crate::clock::parse_duration(&text) {
                    Ok(d) if !d.is_zero() => d,
                    outcome => {
                        let at = self.key_at(at, key);
                        let why = match outcome {
                            Err(e) if e.contains("maximum") => format!(": {e}"),
                            _ => String::new(),
                        };
                        self.error(
                            at,
                            format!(
                                "`{key}` must be a duration such as \"90s\" or \"2m\", not {text:?}{why}"
                            ),
                        );
                        default
                    }
                }
            }
        }
    }
}

type Validated = (Metadata, Vec<Step>, Vec<ScriptDiagnostic>);

/// Checks everything the declaration pass collected; returns every problem found, not just the first.
fn validate(
    file: &str,
    source: &str,
    decls: &Declarations,
    modules: &[ModuleRecord],
) -> std::result::Result<Validated, Vec<ScriptDiagnostic>> {
    let mut v = Validator {
        file,
        source,
        modules,
        keys: Default::default(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let pos = |p: Position| (p.line().unwrap_or(1), p.position().unwrap_or(1));

    if let Some(p) = decls.duplicate_meta {
        v.error(
            pos(p),
            "runbook(...) is called more than once; a file declares one runbook".into(),
        );
    }
    let Some((meta, meta_pos)) = &decls.meta else {
        v.error((1, 1), "this file never declares its metadata: call runbook(#{ id: ..., version: ..., title: ..., severity: ... }) at the top".into());
        return Err(v.errors);
    };
    let at = pos(*meta_pos);
    for key in meta.keys() {
        if !META_KEYS.contains(&key.as_str()) {
            let kp = v.key_at(at, key);
            v.error(
                kp,
                format!(
                    "unknown metadata key `{key}`; known keys: {}",
                    META_KEYS.join(", ")
                ),
            );
        }
    }
    let id = v.string(meta, "id", at, true).unwrap_or_default();
    if !id.is_empty() && !KEBAB.is_match(&id) {
        v.error(
            v.key_at(at, "id"),
            format!("id {id:?} must be kebab-case (a-z, 0-9 and single dashes)"),
        );
    }
    let version_text = v.string(meta, "version", at, true).unwrap_or_default();
    let version = match semver::Version::parse(&version_text) {
        Ok(ver) => ver,
        Err(e) => {
            if meta.contains_key("version") {
                v.error(
                    v.key_at(at, "version"),
                    format!("version {version_text:?} is not semver (MAJOR.MINOR.PATCH): {e}"),
                );
            }
            semver::Version::new(0, 0, 0)
        }
    };
    let title = v.string(meta, "title", at, true).unwrap_or_default();
    let severity_text = v.string(meta, "severity", at, true).unwrap_or_default();
    let severity = Severity::parse(&severity_text).unwrap_or_else(|| {
        if meta.contains_key("severity") {
            v.error(
                v.key_at(at, "severity"),
                format!("severity {severity_text:?} must be one of P1, P2, P3, P4"),
            );
        }
        Severity::P4
    });
    let reviewed = v.string(meta, "reviewed", at, false).and_then(|text| {
        match chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
            Ok(d) => Some(d),
            Err(_) => {
                v.error(
                    v.key_at(at, "reviewed"),
                    format!("reviewed {text:?} must be a date, YYYY-MM-DD"),
                );
                None
            }
        }
    });
    let env = v.strings(meta, "env", at);
    for name in &env {
        if !ENV_NAME.is_match(name) {
            v.error(
                v.key_at(at, "env"),
                format!("env entry {name:?} is not an environment variable name"),
            );
        }
    }
    let params = match meta.get("params") {
        None => Vec::new(),
        Some(p) => match p.clone().try_cast::<Map>() {
            Some(map) => {
                let params_at = v.key_at(at, "params");
                validate_params(&mut v, &map, params_at)
            }
            None => {
                v.error(
                    v.key_at(at, "params"),
                    "`params` must be a map of parameter specs".into(),
                );
                Vec::new()
            }
        },
    };
    let notify_slack = match meta.get("notify") {
        None => None,
        Some(n) => match n.clone().try_cast::<Map>() {
            Some(map) => {
                let np = v.key_at(at, "notify");
                for key in map.keys() {
                    if key.as_str() != "slack" {
                        v.error(
                            v.key_at(np, key),
                            format!("unknown notify key `{key}`; known: slack"),
                        );
                    }
                }
                v.string(&map, "slack", np, false)
            }
            None => {
                v.error(
                    v.key_at(at, "notify"),
                    "`notify` must be a map such as #{ slack: \"#incidents\" }".into(),
                );
                None
            }
        },
    };
    let metadata = Metadata {
        id,
        version,
        title,
        severity,
        description: v.string(meta, "description", at, false).unwrap_or_default(),
        service: v.string(meta, "service", at, false).unwrap_or_default(),
        owner: v.string(meta, "owner", at, false).unwrap_or_default(),
        reviewed,
        alerts: v.strings(meta, "alerts", at),
        tags: v.strings(meta, "tags", at),
        env,
        params,
        notify_slack,
    };

    let steps = validate_steps(&mut v, &decls.steps);
    if v.errors.is_empty() {
        Ok((metadata, steps, v.warnings))
    } else {
        Err(v.errors)
    }
}

fn validate_params(v: &mut Validator, map: &Map, at: (usize, usize)) -> Vec<ParamSpec> {
    let mut out = Vec::new();
    for (name, spec) in map {
        let pat = v.key_at(at, name);
        if !IDENT.is_match(name) || name == "run" {
            v.error(
                pat,
                format!(
                    "parameter name {name:?} must be snake_case and not `run` (ctx.run is reserved)"
                ),
            );
            continue;
        }
        let Some(spec) = spec.clone().try_cast::<Map>() else {
            v.error(pat, format!("parameter {name}: its spec must be a map such as #{{ type: \"string\", required: true }}"));
            continue;
        };
        for key in spec.keys() {
            if !PARAM_KEYS.contains(&key.as_str()) {
                let kp = v.key_at(pat, key);
                v.error(
                    kp,
                    format!(
                        "parameter {name}: unknown key `{key}`; known keys: {}",
                        PARAM_KEYS.join(", ")
                    ),
                );
            }
        }
        let ty_text = spec
            .get("type")
            .map(|t| t.to_string())
            .unwrap_or_else(|| "string".into());
        let Some(ty) = ParamType::parse(&ty_text) else {
            v.error(
                v.key_at(pat, "type"),
                format!(
                    "parameter {name}: type {ty_text:?} must be string, int, float, bool or duration"
                ),
            );
            continue;
        };
        let flag = |key: &str| {
            spec.get(key)
                .and_then(|d| d.as_bool().ok())
                .unwrap_or(false)
        };
        let pattern = match spec.get("pattern").map(|p| p.to_string()) {
            None => None,
            Some(text) => match Regex::new(&text) {
                Ok(re) => Some(re),
                Err(e) => {
                    v.error(
                        v.key_at(pat, "pattern"),
                        format!("parameter {name}: invalid pattern: {e}"),
                    );
                    None
                }
            },
        };
        let choices = match spec.get("choices") {
            None => Vec::new(),
            Some(c) => c
                .clone()
                .try_cast::<rhai::Array>()
                .map(|a| a.into_iter().map(|d| d.to_string()).collect())
                .unwrap_or_default(),
        };
        let p = ParamSpec {
            name: name.to_string(),
            ty,
            required: flag("required"),
            default: spec.get("default").cloned(),
            pattern,
            choices,
            secret: flag("secret"),
            target: flag("target"),
            description: spec
                .get("description")
                .map(|d| d.to_string())
                .unwrap_or_default(),
            line: pat.0,
            col: pat.1,
        };
        if p.secret
            && let Some(d) = &p.default
            && !d.is_unit()
            && let Some(why) = secret_too_short(&d.to_string())
        {
            v.error(
                v.key_at(pat, "default"),
                format!("parameter {name}: the default: {why}"),
            );
        }
        if let Some(d) = &p.default
            && let Some(why) = p.check_value(d)
        {
            v.error(
                v.key_at(pat, "default"),
                format!("parameter {name}: the default {why}"),
            );
        }
        out.push(p);
    }
    out
}

fn validate_steps(v: &mut Validator, raw: &[RawStep]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    if raw.is_empty() {
        v.error((1, 1), "the runbook declares no steps: add containment(...), eradication(...) and recovery(...) steps".into());
    }
    let mut latest_phase = Phase::Containment;
    for (index, r) in raw.iter().enumerate() {
        let at = (r.pos.line().unwrap_or(1), r.pos.position().unwrap_or(1));
        // A step declared in an imported module is reported in that module's file.
        let previous = match &r.source {
            Some(f) if f != v.file => Some(v.switch_to(f)),
            _ => None,
        };
        if r.title.trim().is_empty() {
            v.error(at, "a step needs a title".into());
        }
        if let Some(first) = steps
            .iter()
            .find(|s| s.title.eq_ignore_ascii_case(&r.title))
        {
            v.error(
                at,
                format!(
                    "duplicate step title {:?} (first declared at line {})",
                    r.title, first.location.line
                ),
            );
        }
        if r.phase < latest_phase {
            v.warn(at, format!(
                "{} step {:?} comes after a {} step; phases run in declaration order, so containment, eradication, recovery is expected",
                r.phase.as_str(), r.title, latest_phase.as_str()
            ));
        }
        latest_phase = latest_phase.max(r.phase);
        for key in r.options.keys() {
            if !STEP_KEYS.contains(&key.as_str()) {
                let kp = v.key_at(at, key);
                v.error(
                    kp,
                    format!(
                        "unknown step option `{key}`; known options: {}",
                        STEP_KEYS.join(", ")
                    ),
                );
            }
        }
        let timeout = v.duration(&r.options, "timeout", at, DEFAULT_TIMEOUT);
        let backoff = v.duration(&r.options, "backoff", at, DEFAULT_BACKOFF);
        let retries = match r.options.get("retries").map(|d| d.as_int()) {
            None => 0,
            Some(Ok(n)) if (0..=MAX_RETRIES).contains(&n) => n as u32,
            Some(_) => {
                v.error(
                    v.key_at(at, "retries"),
                    format!("`retries` must be an int from 0 to {MAX_RETRIES}"),
                );
                0
            }
        };
        let confirm = match r.options.get("confirm") {
            None => None,
            Some(c) if c.is_bool() => c.as_bool().ok().filter(|b| *b).map(|_| Confirm::Yes),
            Some(c) if c.is_string() => {
                let word = c.to_string();
                if word.trim().is_empty() || word.contains(char::is_whitespace) {
                    v.error(
                        v.key_at(at, "confirm"),
                        "`confirm` must be true or one word to type".into(),
                    );
                }
                Some(Confirm::Word(word))
            }
            Some(_) => {
                v.error(
                    v.key_at(at, "confirm"),
                    "`confirm` must be true or one word to type".into(),
                );
                None
            }
        };
        let mut closure = |key: &str| match r.options.get(key) {
            None => None,
            Some(f) => match f.clone().try_cast::<FnPtr>() {
                Some(f) => Some(f),
                None => {
                    v.error(
                        v.key_at(at, key),
                        format!("`{key}` must be a closure such as |ctx| {{ ... }}"),
                    );
                    None
                }
            },
        };
        let on_failure = closure("on_failure");
        let when = closure("when");
        let allow_failure = r
            .options
            .get("allow_failure")
            .and_then(|d| d.as_bool().ok())
            .unwrap_or(false);
        let description = r
            .options
            .get("description")
            .map(|d| d.to_string())
            .unwrap_or_default();
        steps.push(Step {
            index,
            phase: r.phase,
            title: r.title.clone(),
            description,
            timeout,
            retries,
            backoff,
            confirm,
            allow_failure,
            body: r.body.clone(),
            on_failure,
            when,
            location: Location {
                file: r.source.clone().unwrap_or_else(|| v.file.to_string()),
                line: at.0,
                col: at.1,
            },
        });
        if let Some((file, source)) = previous {
            v.file = file;
            v.source = source;
        }
    }
    steps
}

/// Refuses a `--param` given without its name (the command line keeps it nameless rather than
/// let clap quote it: the text may be a secret).
pub(crate) fn refuse_nameless(given: &[(String, String)]) -> Result<()> {
    if given.iter().any(|(name, _)| name.is_empty()) {
        return Err(Error::Usage(
            "a --param is not NAME=VALUE (its text is not repeated: it may be a secret)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_positions_are_found_in_the_text() {
        let src = "runbook(#{\n    id: \"x\",\n    bogus: 1,\n});";
        assert_eq!(key_position(src, (1, 1), "bogus"), (3, 5));
        assert_eq!(key_position(src, (1, 1), "missing"), (1, 1));
    }

    #[test]
    fn a_step_option_is_found_in_the_step_s_own_map() {
        let src = "containment(\"a\", |ctx| {\n    x(#{ timeout: 1 });\n}, #{\n    timeout: \"banana\" });";
        let index = KeyIndex::build(src);
        assert_eq!(index.get((1, 1), "timeout"), Some((4, 5)));
        assert_eq!(index.get((2, 5), "timeout"), Some((2, 10)));
    }

    #[test]
    fn a_step_option_written_first_is_found_in_the_step_s_own_map() {
        let src = "containment(\"a\", #{\n    on_failure: |ctx| x(#{ timeout: 1 }),\n    timeout: \"banana\" }, |ctx| {});";
        let index = KeyIndex::build(src);
        assert_eq!(index.get((1, 1), "timeout"), Some((3, 5)));
    }

    #[test]
    fn a_duration_param_accepts_what_sleep_accepts_and_stays_text() {
        let spec = |secret| ParamSpec {
            name: "pause".into(),
            ty: ParamType::Duration,
            required: false,
            default: None,
            pattern: None,
            choices: Vec::new(),
            secret,
            target: false,
            description: String::new(),
            line: 1,
            col: 1,
        };
        let value = ParamType::Duration.convert("1m 30s").unwrap();
        assert_eq!(value.clone().into_string().unwrap(), "1m 30s");
        assert_eq!(spec(false).check_value(&value), None);
        let bad = ParamType::Duration.convert("banana").unwrap();
        let why = spec(false).check_value(&bad).unwrap();
        assert!(why.starts_with("is not a duration such as"), "{why}");
        let long = Dynamic::from("400d".to_string());
        let why = spec(false).check_value(&long).unwrap();
        assert!(why.starts_with("is longer than the maximum"), "{why}");
        // Nothing of a secret's value, nor the parser's detail about it, is shown.
        let secret = Dynamic::from("banana-s3cret".to_string());
        let why = spec(true).check_value(&secret).unwrap();
        assert!(
            !why.contains("s3cret") && !why.contains("expected"),
            "{why}"
        );
        assert!(spec(false).check_value(&Dynamic::from(30_i64)).is_some());
    }

    #[test]
    fn params_convert_from_text() {
        assert_eq!(ParamType::Int.convert("42").unwrap().as_int().unwrap(), 42);
        assert!(ParamType::Int.convert("4x").is_err());
        assert!(ParamType::Bool.convert("yes").unwrap().as_bool().unwrap());
        assert!(ParamType::Bool.convert("maybe").is_err());
    }
}
