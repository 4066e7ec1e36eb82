//! Loading: a `.rhai` file compiled in the sandboxed engine, its top level run once to declare,
//! its imports kept for the steps, and what it declared validated.

use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use rhai::{AST, Engine, EvalAltResult};
use sha2::{Digest, Sha256};

use super::Runbook;
use super::validate::validate;
use crate::base::error::{Error, Result, ScriptDiagnostic};
use crate::sandbox::engine::{self, Host, ImportRoots, ModuleRecord};
use crate::sandbox::recorder::Stage;

/// How long a runbook's top level may run while it is loaded: a top-level `loop {}` must not
/// hang `check`.
const DECLARATION_DEADLINE: Duration = Duration::from_secs(10);

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

        let engine = crate::bindings::engine(&host, ImportRoots::for_runbook(&canonical));
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
        host.commands_allow.borrow_mut().clone_from(&meta.commands);
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
pub(crate) fn error_diagnostic(
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
