//! Validation: everything the declaration pass collected (metadata, parameter specs, step
//! options, titles, phase order) checked at once, each problem reported at its `file:line:col`.

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use rhai::{Engine, FnPtr, Map, Position};

use super::params::secret_too_short;
use super::{
    Confirm, DEFAULT_BACKOFF, DEFAULT_TIMEOUT, Declarations, MAX_RETRIES, META_KEYS, Metadata,
    PARAM_KEYS, ParamSpec, ParamType, Phase, RawStep, STEP_KEYS, Severity, Step,
};
use crate::base::error::{Location, ScriptDiagnostic};
use crate::sandbox::engine::{self, ModuleRecord};

/// A program `local::run` may start: a name looked up on PATH, never a path or a command line.
static PROGRAM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$").expect("valid regex"));
static KEBAB: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(-[a-z0-9]+)*$").expect("valid regex"));
static IDENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z_][a-z0-9_]*$").expect("valid regex"));
static ENV_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Z_][A-Z0-9_]*$").expect("valid regex"));

fn line_col_at(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Finds where `key:` is written after `from` (a map literal's key has no runtime position, but
/// the text does). Falls back to `from` itself.
fn key_position(source: &str, from: (usize, usize), key: &str) -> (usize, usize) {
    let start = crate::base::error::byte_offset(source, from.0, from.1);
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
                match crate::base::clock::parse_duration(&text) {
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

pub(super) type Validated = (Metadata, Vec<Step>, Vec<ScriptDiagnostic>);

/// Checks everything the declaration pass collected; returns every problem found, not just the first.
pub(super) fn validate(
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
    let commands = v.strings(meta, "commands", at);
    for program in &commands {
        if !PROGRAM.is_match(program) {
            v.error(
                v.key_at(at, "commands"),
                format!(
                    "commands entry {program:?} must be a program name found on PATH (letters, digits, `.`, `_`, `+`, `-`), not a path or a command line"
                ),
            );
        }
    }
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
        commands,
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
}
