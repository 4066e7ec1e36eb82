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
        Self::load_text(path, &source, host, DECLARATION_DEADLINE, Reuse::Compiled)
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
        // Every text is new to a fuzzer: keeping its AST would only cost a copy.
        Self::load_text(path, source, host, declare_for, Reuse::Nothing)
    }

    fn load_text(
        path: &Path,
        source: &str,
        host: Rc<Host>,
        declare_for: Duration,
        reuse: Reuse,
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
        let compile = || -> Result<AST> {
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
            Ok(ast)
        };
        // A `serve` worker loads its route's runbook for every alert: the same text compiles to
        // the same AST, so it is compiled once per version of the file (see `engine::compiled`).
        let ast = match reuse {
            Reuse::Compiled => engine::compiled(&file, &sha256, compile)?,
            Reuse::Nothing => compile()?,
        };

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

/// Whether a load may reuse the AST this thread compiled from the same text.
enum Reuse {
    Compiled,
    Nothing,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::base::console::Console;
    use crate::sandbox::recorder::Mode;

    fn host() -> Rc<Host> {
        Host::new(
            Mode::Plan,
            Console::silent(),
            Arc::new(AtomicBool::new(false)),
        )
    }

    fn runbook(title: &str) -> String {
        format!(
            "runbook(#{{ id: \"t\", version: \"1.0.0\", title: \"{title}\", severity: \"P3\" }});\n\
             containment(\"Note\", |ctx| {{ log(\"noted\"); }});\n"
        )
    }

    #[test]
    fn a_runbook_loaded_again_reuses_its_compiled_ast_until_its_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.rhai");
        std::fs::write(&path, runbook("First title")).unwrap();
        let a = Runbook::load(&path, host()).unwrap();
        let b = Runbook::load(&path, host()).unwrap();
        assert!(rhai::Shared::ptr_eq(a.ast.shared_lib(), b.ast.shared_lib()));
        assert_eq!(b.meta.title, "First title");
        std::fs::write(&path, runbook("Second title")).unwrap();
        let c = Runbook::load(&path, host()).unwrap();
        assert_eq!(c.meta.title, "Second title");
        assert!(!rhai::Shared::ptr_eq(
            a.ast.shared_lib(),
            c.ast.shared_lib()
        ));
    }

    #[test]
    fn the_sandbox_limits_hold_for_an_engine_built_from_shared_modules() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("t.rhai");
        std::fs::write(&good, runbook("Warms the thread's modules")).unwrap();
        Runbook::load(&good, host()).unwrap();
        // The second engine on this thread shares every module with the first; its limits are
        // its own: a string past MAX_STRING_SIZE is refused, and `eval` is still disabled.
        let hog = dir.path().join("hog.rhai");
        std::fs::write(&hog, "let s = \"x\"; loop { s += s; }").unwrap();
        let err = Runbook::load(&hog, host()).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("too large")),
            "{err:?}"
        );
        let evil = dir.path().join("evil.rhai");
        std::fs::write(&evil, "eval(\"1\");").unwrap();
        assert!(Runbook::load(&evil, host()).is_err());
    }
}
