//! What a runbook declares, and the declaration functions that collect it.
//!
//! A runbook's top level runs once while it loads (the [`Stage::Loading`] stage, where every
//! binding is refused) and calls `runbook(...)`, `containment(...)`, `eradication(...)` and
//! `recovery(...)`: the plugin module [`declare_api`] collects those calls in the host's
//! [`Declarations`]. The types a loaded runbook is made of (its [`Metadata`], [`ParamSpec`]s and
//! [`Step`]s) live here too, below the bindings and the run, so both can name a step without
//! knowing how a runbook file is loaded and validated (`crate::runbook`).

use std::time::Duration;

use regex::Regex;
use rhai::plugin::*;
use rhai::{Dynamic, Engine, FnPtr, Map};

use crate::base::error::Location;
use crate::sandbox::recorder::{ScriptResult, Stage};

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
pub(crate) fn register_declarations(engine: &mut Engine) {
    engine.register_global_module(crate::sandbox::engine::shared_module(
        "declare",
        None,
        || exported_module!(declare_api).into(),
    ));
}

fn declare(
    ctx: &NativeCallContext,
    phase: Phase,
    title: &str,
    body: FnPtr,
    options: Map,
) -> ScriptResult<()> {
    let host = crate::sandbox::recorder::host_of(ctx)?;
    if host.recorder.stage() != Stage::Loading {
        return Err(crate::sandbox::recorder::runtime_error(
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
    pub(crate) fn runbook(ctx: NativeCallContext, meta: Map) -> ScriptResult<()> {
        let host = crate::sandbox::recorder::host_of(&ctx)?;
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
    pub(crate) fn containment(
        ctx: NativeCallContext,
        title: &str,
        body: FnPtr,
    ) -> ScriptResult<()> {
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
    pub(crate) fn containment_guarded(
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
    pub(crate) fn containment_with(
        ctx: NativeCallContext,
        title: &str,
        body: FnPtr,
        options: Map,
    ) -> ScriptResult<()> {
        declare(&ctx, Phase::Containment, title, body, options)
    }

    /// Declares an eradication step: remove the cause.
    #[rhai_fn(name = "eradication", return_raw)]
    pub(crate) fn eradication(
        ctx: NativeCallContext,
        title: &str,
        body: FnPtr,
    ) -> ScriptResult<()> {
        declare(&ctx, Phase::Eradication, title, body, Map::new())
    }

    /// Declares an eradication step with its options first (see `containment`):
    /// `eradication("title", #{ confirm: "WORD", timeout: "5m" }, |ctx| { ... })`.
    #[rhai_fn(name = "eradication", return_raw)]
    pub(crate) fn eradication_guarded(
        ctx: NativeCallContext,
        title: &str,
        options: Map,
        body: FnPtr,
    ) -> ScriptResult<()> {
        declare(&ctx, Phase::Eradication, title, body, options)
    }

    /// Declares an eradication step with its options after the body (the older form).
    #[rhai_fn(name = "eradication", return_raw)]
    pub(crate) fn eradication_with(
        ctx: NativeCallContext,
        title: &str,
        body: FnPtr,
        options: Map,
    ) -> ScriptResult<()> {
        declare(&ctx, Phase::Eradication, title, body, options)
    }

    /// Declares a recovery step: bring the service back and prove it is healthy.
    #[rhai_fn(name = "recovery", return_raw)]
    pub(crate) fn recovery(ctx: NativeCallContext, title: &str, body: FnPtr) -> ScriptResult<()> {
        declare(&ctx, Phase::Recovery, title, body, Map::new())
    }

    /// Declares a recovery step with its options first (see `containment`):
    /// `recovery("title", #{ confirm: "WORD", timeout: "5m" }, |ctx| { ... })`.
    #[rhai_fn(name = "recovery", return_raw)]
    pub(crate) fn recovery_guarded(
        ctx: NativeCallContext,
        title: &str,
        options: Map,
        body: FnPtr,
    ) -> ScriptResult<()> {
        declare(&ctx, Phase::Recovery, title, body, options)
    }

    /// Declares a recovery step with its options after the body (the older form).
    #[rhai_fn(name = "recovery", return_raw)]
    pub(crate) fn recovery_with(
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
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "string" => Some(ParamType::String),
            "int" => Some(ParamType::Int),
            "float" => Some(ParamType::Float),
            "bool" => Some(ParamType::Bool),
            "duration" => Some(ParamType::Duration),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
            ParamType::Duration => "duration",
        }
    }

    /// Converts command-line text to a typed value.
    pub(crate) fn convert(self, text: &str) -> std::result::Result<Dynamic, String> {
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

    pub(crate) fn accepts(self, value: &Dynamic) -> bool {
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
    /// `commands: ["kubectl", ...]`: the local programs `local::run` may start.
    pub commands: Vec<String>,
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
