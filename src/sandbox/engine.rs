//! The sandboxed Rhai engine and the host state its functions see.
//!
//! The engine starts from `Engine::new_raw()` (nothing registered) and gets exactly: Rhai's
//! standard package (pure data functions: strings, arrays, maps, maths; none touches files, the
//! network or processes), then, from the layers above (`bindings::engine`), the runbook
//! declaration functions and our bindings; the sandbox itself knows neither. Every limit is set,
//! `eval` is disabled, variables must be declared, and `import` resolves only inside `stdlib/` and
//! the runbook's own folder (`.rhai` files only). A step's timeout, Ctrl-C and the script's total
//! memory are checked through `on_progress`, so even `loop {}` never hangs: it ends `timed_out` at
//! the step's timeout, `aborted`, or `failed` when it exhausts the operation budget first.

use std::cell::RefCell;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use rhai::packages::{Package, StandardPackage};
use rhai::{AST, Dynamic, Engine, EvalAltResult, Module, Position, Scope, Shared};

pub type SharedModule = Shared<Module>;
use sha2::{Digest, Sha256};

use crate::base::console::Console;
use crate::base::interrupt::Interrupt;
use crate::base::redact::Redactor;
use crate::sandbox::declare::Declarations;
use crate::sandbox::recorder::{Mode, Recorder, Stage};

/// Operations one step (or the whole declaration pass) may perform. A step's timeout is the main
/// guard against runaway scripts; this bound is the backstop for a step with a long timeout.
/// A step that exhausts it ends `failed` (code `too_many_operations`): it hit a limit of the
/// sandbox, it did not run out of time. `RUNBOOK_MAX_OPERATIONS` sets another budget.
pub const MAX_OPERATIONS: u64 = 200_000_000;

/// The operation budget in force: `RUNBOOK_MAX_OPERATIONS` when it is a positive number, else
/// [`MAX_OPERATIONS`].
pub fn max_operations() -> u64 {
    static BUDGET: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        std::env::var("RUNBOOK_MAX_OPERATIONS")
            .ok()
            .and_then(|v| v.trim().replace('_', "").parse::<u64>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(MAX_OPERATIONS)
    });
    *BUDGET
}
pub const MAX_CALL_LEVELS: usize = 48;
pub const MAX_EXPR_DEPTH: usize = 64;
pub const MAX_FN_EXPR_DEPTH: usize = 32;
pub const MAX_STRING_SIZE: usize = 4 * 1024 * 1024;
pub const MAX_ARRAY_SIZE: usize = 100_000;
pub const MAX_MAP_SIZE: usize = 20_000;
pub const MAX_VARIABLES: usize = 2_000;
pub const MAX_FUNCTIONS: usize = 2_000;
pub const MAX_MODULES: usize = 64;
/// Bytes a script may hold in total (all its strings, arrays, maps and variables together),
/// above what its thread held when the engine was built. Rhai's limits are per value; this is
/// the sum (see [`crate::base::memory`]). Enforced by the `runbook` binary's counting allocator.
pub const MAX_SCRIPT_MEMORY: i64 = 256 * 1024 * 1024;
/// The termination token (and error code) of a script over [`MAX_SCRIPT_MEMORY`].
pub const TOO_MUCH_MEMORY: &str = "too_much_memory";
/// How often (in operations) the progress callback looks at the clock and the abort flag:
/// often enough to stop within a millisecond, rarely enough to cost nothing measurable.
const PROGRESS_EVERY: u64 = 512;

/// A module a runbook imported, as it was when loaded (its hash goes into the transcript).
#[derive(Debug, Clone)]
pub struct ModuleRecord {
    /// The import path as written, e.g. `stdlib/ec2_helpers`.
    pub import: String,
    /// Where it was read from, as shown in diagnostics.
    pub file: String,
    pub sha256: String,
    pub source: Rc<str>,
}

/// Everything the engine's host functions can reach, shared through the engine's tag.
pub struct Host {
    pub recorder: Recorder,
    pub interrupt: Interrupt,
    pub redactor: Rc<Redactor>,
    pub console: Console,
    pub decls: RefCell<Declarations>,
    pub modules: RefCell<Vec<ModuleRecord>>,
    /// Modules evaluated so far, by import path, so top-level imports can be made visible to steps.
    pub loaded: RefCell<Vec<(String, SharedModule)>>,
    /// Environment variables the runbook declared it reads (`env` in its metadata).
    pub env_allow: RefCell<Vec<String>>,
    /// Local programs the runbook declared it runs (`commands` in its metadata).
    pub commands_allow: RefCell<Vec<String>>,
    /// The incident notes file next to the transcript (`notes::append`).
    pub notes_path: RefCell<Option<PathBuf>>,
    /// The async runtime network bindings block on.
    pub io: crate::services::runtime::AsyncIo,
    /// Slack and Teams delivery (or capture).
    pub notifier: crate::services::notify::Notifier,
    /// The environment and its cloud backend (`ec2::`, `ssm::`).
    pub cloud: crate::services::cloud::CloudAccess,
    /// Blast radius and kill switch, checked before every write.
    pub guardrails: crate::sandbox::recorder::Guardrails,
    /// The terminal, in interactive runs: approvals ask the operator there.
    pub prompt: RefCell<Option<Box<crate::services::approvals::Ask>>>,
    /// Whether mutating calls in a protected environment were confirmed for this run.
    pub protected_confirmed: std::cell::Cell<bool>,
    /// The run's `[state]` backend, where approval requests are filed (None: next to the
    /// transcript).
    pub state: Option<crate::services::state::Store>,
    /// The run's incident thread in Slack (channel, thread ts), once the run posted one: where
    /// its approval requests go.
    pub incident_thread: RefCell<Option<(String, String)>>,
}

/// Everything a [`Host`] is made from, decided before it exists: nothing about a run's
/// configuration is set on a host after [`Host::build`] (`crate::run::launch` decides these for every
/// entry point).
pub(crate) struct HostParts {
    pub mode: Mode,
    pub console: Console,
    /// Set by Ctrl-C (or a hook server's shutdown) from another thread.
    pub abort: Arc<AtomicBool>,
    /// The environment and its backend (possibly already connected: the hook server's shared sim).
    pub cloud: crate::services::cloud::CloudAccess,
    /// Waits advance the clock at once instead of sleeping (plans, sim drills; see
    /// [`crate::base::clock`]).
    pub simulated_clock: bool,
    pub limits: crate::sandbox::recorder::Limits,
    /// Mutating calls in a protected environment are confirmed for the whole run in advance.
    pub protected_confirmed: bool,
    /// Where script approvals ask a person (the terminal, in interactive runs).
    pub prompt: Option<Box<crate::services::approvals::Ask>>,
    /// The run's `[state]` backend (approvals go through its table when it is `aws`).
    pub state: Option<crate::services::state::Store>,
}

impl HostParts {
    /// The parts of a host with no run-specific configuration: no guardrail limits, nothing
    /// confirmed, no prompt, and the clock simulated in plans only.
    pub(crate) fn new(
        mode: Mode,
        console: Console,
        abort: Arc<AtomicBool>,
        cloud: crate::services::cloud::CloudAccess,
    ) -> Self {
        HostParts {
            mode,
            console,
            abort,
            cloud,
            // A plan never sleeps: its waits advance a simulated clock.
            simulated_clock: mode == Mode::Plan,
            limits: crate::sandbox::recorder::Limits::default(),
            protected_confirmed: false,
            prompt: None,
            state: None,
        }
    }
}

impl Host {
    /// A host on the built-in sim environment with nothing run-specific: for loading and
    /// checking runbooks (`check`, `list`, `show`, `docs`), benchmarks and fuzzing.
    pub fn new(mode: Mode, console: Console, abort: Arc<AtomicBool>) -> Rc<Self> {
        Self::build(HostParts::new(
            mode,
            console,
            abort,
            crate::services::cloud::CloudAccess::new(
                crate::data::config::Environment::builtin_sim(),
            ),
        ))
    }

    /// A host made of `parts`, complete: the run's configuration is fixed from here on.
    pub(crate) fn build(parts: HostParts) -> Rc<Self> {
        let HostParts {
            mode,
            console,
            abort,
            cloud,
            simulated_clock,
            limits,
            protected_confirmed,
            prompt,
            state,
        } = parts;
        let env = cloud.environment();
        let redactor = Rc::new(Redactor::new());
        let interrupt = Interrupt::new(abort);
        interrupt.clock().set_simulated(simulated_clock);
        // A cloud connected earlier (the hook server's shared sim) keeps its own clock.
        cloud.set_clock(interrupt.clock().clone());
        // Webhook URLs and tokens are secrets from the first moment, whatever prints them; the
        // notifier registers them on the run's redactor, which it shares to redact what it sends.
        let notifier =
            crate::services::notify::Notifier::with_redactor(env.notify.clone(), redactor.share());
        Rc::new(Host {
            recorder: Recorder::new(mode),
            interrupt,
            notifier,
            redactor,
            console,
            decls: RefCell::new(Declarations::default()),
            modules: RefCell::new(Vec::new()),
            loaded: RefCell::new(Vec::new()),
            env_allow: RefCell::new(Vec::new()),
            commands_allow: RefCell::new(Vec::new()),
            notes_path: RefCell::new(None),
            io: crate::services::runtime::AsyncIo::default(),
            cloud,
            protected_confirmed: std::cell::Cell::new(protected_confirmed),
            prompt: RefCell::new(prompt),
            state,
            incident_thread: RefCell::new(None),
            guardrails: crate::sandbox::recorder::Guardrails::new(limits),
        })
    }

    /// The source text of a file the engine loaded (the runbook is registered as a module too).
    pub fn source_of(&self, file: &str) -> Option<Rc<str>> {
        self.modules
            .borrow()
            .iter()
            .find(|m| m.file == file)
            .map(|m| m.source.clone())
    }

    /// This run as the one asking for an approval: its transcript, the step running, its
    /// console and its interrupt.
    pub(crate) fn asker(&self) -> crate::services::approvals::Asker<'_> {
        crate::services::approvals::Asker {
            transcript: self.recorder.transcript_path(),
            step: self.recorder.stage().step(),
            console: &self.console,
            interrupt: &self.interrupt,
            store: self.state.clone(),
            note: Box::new(|line: &str| self.recorder.log("approval", line)),
            slack: self.approval_channel(),
            members: Box::new(|id: &str| self.slack_group_members(id)),
        }
    }

    /// Who is in Slack user group `id` now (`usergroups.users.list`, with the bot token), for an
    /// approver group that names it: a run that cannot ask Slack gets an error, and the answer
    /// it was judging is refused.
    fn slack_group_members(&self, id: &str) -> Result<Vec<String>, String> {
        let answer = self
            .io
            .block_on(
                &self.interrupt,
                self.notifier
                    .slack_read("usergroups.users.list", &[("usergroup", id)]),
            )
            .map_err(|e| e.message)?;
        answer["users"]
            .as_array()
            .map(|users| {
                users
                    .iter()
                    .filter_map(|u| u.as_str().map(str::to_string))
                    .collect()
            })
            .ok_or_else(|| "usergroups.users.list answered without a users list".to_string())
    }

    /// Where approval requests are posted with buttons: Slack's Web API with a bot token, when
    /// messages are really sent (a captured sim run has nobody to click), into the run's
    /// incident thread once it has one, else to the configured channel.
    fn approval_channel(&self) -> Option<crate::services::approvals::slack::SlackPost<'_>> {
        let settings = self.notifier.settings();
        if settings.delivery != crate::data::config::Delivery::Send
            || settings.slack_bot_token.is_none()
        {
            return None;
        }
        let (channel, thread_ts) = match self.incident_thread.borrow().clone() {
            Some((channel, ts)) => (channel, Some(ts)),
            None => (settings.slack_channel.clone()?, None),
        };
        Some(crate::services::approvals::slack::SlackPost {
            notifier: &self.notifier,
            io: &self.io,
            channel,
            thread_ts,
        })
    }

    /// Keeps (channel, ts) as the run's incident thread: the latest thread the run posted an
    /// incident message or a reply in.
    pub(crate) fn note_incident_thread(&self, channel: &str, ts: &str) {
        if !channel.is_empty() && !ts.is_empty() && ts != "planned" {
            *self.incident_thread.borrow_mut() = Some((channel.to_string(), ts.to_string()));
        }
    }
}

/// Where `import` may look.
#[derive(Debug, Clone)]
pub struct ImportRoots {
    /// The runbook's own folder (canonical).
    pub runbook_dir: PathBuf,
    /// The nearest `stdlib/` folder above the runbook (canonical), if any.
    pub stdlib_dir: Option<PathBuf>,
}

impl ImportRoots {
    /// Roots for a runbook at `file`: its folder, and the first `stdlib/` found walking up from it.
    pub fn for_runbook(file: &Path) -> Self {
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let runbook_dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let stdlib_dir = std::env::var_os("RUNBOOK_STDLIB")
            .map(PathBuf::from)
            .or_else(|| {
                runbook_dir
                    .ancestors()
                    .map(|a| a.join("stdlib"))
                    .find(|c| c.is_dir())
            })
            .and_then(|p| p.canonicalize().ok());
        ImportRoots {
            runbook_dir,
            stdlib_dir,
        }
    }

    /// Maps an import path to a file, or says why it is refused.
    pub fn locate(&self, import: &str) -> Result<PathBuf, String> {
        let refuse = |why: &str| {
            format!(
                "import \"{import}\" refused: {why}; modules may only come from stdlib/ or the runbook's own folder"
            )
        };
        let rel = Path::new(import);
        if import.is_empty()
            || import.contains('\\')
            || import.contains(':')
            || import.starts_with('~')
            || rel.is_absolute()
        {
            return Err(refuse(
                "absolute or platform-specific paths are not allowed",
            ));
        }
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(refuse("\"..\" and \".\" are not allowed in import paths"));
        }
        let (root, rest) = match import.strip_prefix("stdlib/") {
            Some(rest) => match &self.stdlib_dir {
                Some(dir) => (dir, rest),
                None => return Err(refuse("no stdlib/ folder was found above the runbook")),
            },
            None => (&self.runbook_dir, import),
        };
        let mut file = root.join(rest);
        if file.extension().is_none() {
            file.set_extension("rhai");
        }
        // Only Rhai modules: any other file next to a runbook (notes, credentials, configs) is
        // not code, and a failed compile would quote its content in the error.
        let is_rhai = |p: &Path| p.extension().is_some_and(|e| e == "rhai");
        if !is_rhai(&file) {
            return Err(refuse("only .rhai files can be imported"));
        }
        let canonical = file.canonicalize().map_err(|_| {
            format!(
                "import \"{import}\": module not found at {}",
                file.display()
            )
        })?;
        // A symlink inside the folder must not lead out of it, nor to a file that is not a module.
        if !canonical.starts_with(root) {
            return Err(refuse("the module resolves outside its folder"));
        }
        if !is_rhai(&canonical) || !canonical.is_file() {
            return Err(refuse("only .rhai files can be imported"));
        }
        Ok(canonical)
    }
}

/// Resolves `import` statements under [`ImportRoots`], records each module's hash, and refuses
/// imports once the declaration pass is over (every module is then known to the first event).
struct SandboxResolver {
    roots: ImportRoots,
    host: Rc<Host>,
    cache: RefCell<Vec<(PathBuf, SharedModule)>>,
}

impl rhai::ModuleResolver for SandboxResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        let fail = |msg: String| Box::new(EvalAltResult::ErrorRuntime(Dynamic::from(msg), pos));
        if self.host.recorder.stage() != Stage::Loading {
            return Err(fail(format!(
                "import \"{path}\" refused: imports belong at the top level of a runbook or module, so every module is known before the first step"
            )));
        }
        let file = self.roots.locate(path).map_err(fail)?;
        if let Some((_, m)) = self.cache.borrow().iter().find(|(p, _)| *p == file) {
            return Ok(m.clone());
        }
        let text = std::fs::read_to_string(&file).map_err(|e| {
            fail(format!(
                "import \"{path}\": cannot read {}: {e}",
                file.display()
            ))
        })?;
        let display = display_path(&file);
        let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
        self.host.modules.borrow_mut().push(ModuleRecord {
            import: path.to_string(),
            file: display.clone(),
            sha256: sha256.clone(),
            source: Rc::from(text.as_str()),
        });
        let wrap =
            |e: Box<EvalAltResult>| Box::new(EvalAltResult::ErrorInModule(display.clone(), e, pos));
        let ast = compiled(&display, &sha256, || {
            let mut ast = engine.compile(&text)?;
            ast.set_source(display.as_str());
            Ok(ast)
        })
        .map_err(|e: rhai::ParseError| wrap(e.into()))?;
        let module: SharedModule = Module::eval_ast_as_new(Scope::new(), &ast, engine)
            .map_err(wrap)?
            .into();
        self.cache.borrow_mut().push((file, module.clone()));
        self.host
            .loaded
            .borrow_mut()
            .push((path.to_string(), module.clone()));
        Ok(module)
    }
}

/// A path as shown to people: relative to the current folder when it is below it.
pub fn display_path(path: &Path) -> String {
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|c| c.canonicalize().ok());
    match cwd.as_deref().and_then(|c| path.strip_prefix(c).ok()) {
        Some(rel) => rel.display().to_string(),
        None => path.display().to_string(),
    }
}

/// Builds the sandbox for one runbook: Rhai's standard package, every limit, the import
/// resolver and the host's callbacks. Nothing of ours is registered here: the declaration
/// functions and the bindings belong to the layers above, which add them to this engine (the
/// bindings' `engine` builds the one a runbook runs in).
pub(crate) fn sandbox(host: &Rc<Host>, roots: ImportRoots) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(shared_module("std", None, || {
        StandardPackage::new().as_shared_module()
    }));

    engine.disable_symbol("eval");
    engine.set_strict_variables(true);
    engine.set_fail_on_invalid_map_property(false);
    engine.set_max_operations(max_operations());
    engine.set_max_call_levels(MAX_CALL_LEVELS);
    engine.set_max_expr_depths(MAX_EXPR_DEPTH, MAX_FN_EXPR_DEPTH);
    engine.set_max_string_size(MAX_STRING_SIZE);
    engine.set_max_array_size(MAX_ARRAY_SIZE);
    engine.set_max_map_size(MAX_MAP_SIZE);
    engine.set_max_variables(MAX_VARIABLES);
    engine.set_max_functions(MAX_FUNCTIONS);
    engine.set_max_modules(MAX_MODULES);

    engine.set_module_resolver(SandboxResolver {
        roots,
        host: host.clone(),
        cache: RefCell::new(Vec::new()),
    });
    engine.set_default_tag(Dynamic::from(host.clone()));

    let h = host.clone();
    // Memory is checked at every operation (one thread-local read): one operation can allocate
    // at most a few of the largest values Rhai allows, so the overshoot stays a few MB.
    let baseline = crate::base::memory::thread_live_bytes();
    engine.on_progress(move |ops| {
        let held = crate::base::memory::thread_live_bytes().saturating_sub(baseline);
        if held > MAX_SCRIPT_MEMORY {
            return Some(Dynamic::from(TOO_MUCH_MEMORY));
        }
        if ops % PROGRESS_EVERY != 0 {
            return None;
        }
        h.interrupt.check().map(|stop| Dynamic::from(stop.token()))
    });
    let h = host.clone();
    engine.on_print(move |text| {
        h.console.log("print", &h.redactor.redact(text));
        h.recorder.log("print", text);
    });
    let h = host.clone();
    engine.on_debug(move |text, _source, pos| {
        let msg = format!("{text} ({pos})");
        h.console.log("debug", &h.redactor.redact(&msg));
        h.recorder.log("debug", &msg);
    });
    engine
}

thread_local! {
    /// The function modules every engine on this thread registers, built once (see
    /// [`shared_module`]).
    static SHARED_MODULES: RefCell<Vec<(&'static str, SharedModule)>> = const { RefCell::new(Vec::new()) };
    /// Compiled scripts on this thread, newest last (see [`compiled`]).
    static COMPILED: RefCell<std::collections::VecDeque<Compiled>> =
        const { RefCell::new(std::collections::VecDeque::new()) };
}

/// The module `key` names, built by `build` the first time this thread asks and shared (one
/// `Rc`) by every engine built on the thread afterwards; `namespace` indexes it for
/// `register_static_module` under that name, so registering it copies nothing.
///
/// Building Rhai's standard package and our plugin modules was most of the cost of loading a
/// runbook (`serve` builds an engine per alert). Sharing them cannot let one run see another's
/// state: they hold native functions only (no variables a script could assign), and everything
/// a run owns is reached through its own engine's tag (the `Host`). Per thread because Rhai's
/// shared values are `Rc`s (the crate is built without `sync`): a `serve` worker builds them
/// once, for every run it takes.
pub(crate) fn shared_module(
    key: &'static str,
    namespace: Option<&'static str>,
    build: impl FnOnce() -> SharedModule,
) -> SharedModule {
    let found = SHARED_MODULES.with(|m| {
        m.borrow()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, module)| module.clone())
    });
    if let Some(module) = found {
        return module;
    }
    let mut module = build();
    if let Some(name) = namespace {
        // Unshared yet, so this changes it in place.
        let m = Shared::make_mut(&mut module);
        m.set_id(name);
        m.build_index();
    }
    SHARED_MODULES.with(|m| m.borrow_mut().push((key, module.clone())));
    module
}

/// How many compiled scripts a thread keeps: every route's runbook and its imports, with room.
const COMPILED_KEPT: usize = 64;

/// A compiled script and what it was compiled from.
struct Compiled {
    /// The source name set on the AST (the file as shown in diagnostics).
    name: String,
    sha256: String,
    ast: AST,
}

/// The AST of the script `name` whose text hashes to `sha256`: compiled by `compile` the first
/// time, then a copy of the one this thread compiled (a changed file has another hash, so it is
/// compiled again, and the old version's AST is dropped). Compiling is pure: the same text in
/// engines configured the same way (every engine comes from [`sandbox`] and the same
/// registrations) gives the same AST, and an AST is immutable, so runs sharing one see nothing of
/// each other. A failed compile is not kept: its diagnostics come from compiling again.
pub(crate) fn compiled<E>(
    name: &str,
    sha256: &str,
    compile: impl FnOnce() -> std::result::Result<AST, E>,
) -> std::result::Result<AST, E> {
    let found = COMPILED.with(|c| {
        c.borrow()
            .iter()
            .find(|e| e.name == name && e.sha256 == sha256)
            .map(|e| e.ast.clone())
    });
    if let Some(ast) = found {
        return Ok(ast);
    }
    let ast = compile()?;
    COMPILED.with(|c| {
        let mut c = c.borrow_mut();
        c.retain(|e| e.name != name);
        if c.len() >= COMPILED_KEPT {
            c.pop_front();
        }
        c.push_back(Compiled {
            name: name.to_string(),
            sha256: sha256.to_string(),
            ast: ast.clone(),
        });
    });
    Ok(ast)
}

/// A script error flattened for people and transcripts: the innermost message and where it was.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErrorInfo {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip)]
    pub file: Option<String>,
    #[serde(skip)]
    pub line: usize,
    #[serde(skip)]
    pub col: usize,
}

/// A script error as the transcript records it (`message`, `code`, `location`).
impl From<&ErrorInfo> for crate::data::transcript::ErrorRecord {
    fn from(e: &ErrorInfo) -> Self {
        crate::data::transcript::ErrorRecord {
            message: e.message.clone(),
            code: e.code.clone(),
            location: e.location.clone(),
            request_id: None,
        }
    }
}

/// Unwraps nested function-call and module errors to the one that says what went wrong, keeping
/// track of which file its position refers to.
pub fn describe_error(err: &EvalAltResult, top_file: &str) -> ErrorInfo {
    let mut file = top_file.to_string();
    let mut current = err;
    loop {
        match current {
            EvalAltResult::ErrorInFunctionCall(_, source, inner, _) => {
                if !source.is_empty() {
                    file = source.clone();
                }
                current = inner;
            }
            EvalAltResult::ErrorInModule(name, inner, _) => {
                file = name.clone();
                current = inner;
            }
            _ => break,
        }
    }
    let (message, code) = match current {
        EvalAltResult::ErrorRuntime(value, _) => match value.clone().try_cast::<rhai::Map>() {
            Some(map) => (
                map.get("message")
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| value.to_string()),
                map.get("code").map(|c| c.to_string()),
            ),
            None => (value.to_string(), None),
        },
        EvalAltResult::ErrorTerminated(token, _) => (
            match token.to_string().as_str() {
                "timed_out" => "the step ran past its timeout".to_string(),
                "aborted" => "the run was aborted".to_string(),
                TOO_MUCH_MEMORY => format!(
                    "the script holds more than its memory limit of {} MiB (MAX_SCRIPT_MEMORY: all its values together)",
                    MAX_SCRIPT_MEMORY / (1024 * 1024)
                ),
                other => other.to_string(),
            },
            Some(token.to_string()),
        ),
        EvalAltResult::ErrorTooManyOperations(_) => (
            format!(
                "the script exceeded its budget of {} operations (the sandbox's operation limit; RUNBOOK_MAX_OPERATIONS)",
                max_operations()
            ),
            Some("too_many_operations".into()),
        ),
        other => (strip_position(&other.to_string()), None),
    };
    let pos = current.position();
    let (line, col) = (pos.line().unwrap_or(0), pos.position().unwrap_or(0));
    ErrorInfo {
        message,
        code,
        location: (line > 0).then(|| format!("{file}:{line}:{}", col.max(1))),
        file: (line > 0).then_some(file),
        line,
        col: col.max(1),
    }
}

/// Rhai appends " (line L, position P)" to messages; the position is reported separately.
fn strip_position(text: &str) -> String {
    match text.rfind(" (line ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(dir: &Path) -> ImportRoots {
        std::fs::create_dir_all(dir.join("runbooks")).unwrap();
        std::fs::create_dir_all(dir.join("stdlib")).unwrap();
        std::fs::write(dir.join("stdlib/helpers.rhai"), "fn x() { 1 }").unwrap();
        std::fs::write(dir.join("runbooks/local.rhai"), "fn y() { 2 }").unwrap();
        std::fs::write(dir.join("secret.rhai"), "fn z() { 3 }").unwrap();
        ImportRoots::for_runbook(&dir.join("runbooks/rb.rhai"))
    }

    #[test]
    fn a_shared_module_is_built_once_per_thread_and_indexed_under_its_namespace() {
        let built = std::cell::Cell::new(0);
        let build = || {
            built.set(built.get() + 1);
            Shared::new(Module::new())
        };
        let first = shared_module("test-shared", Some("t"), build);
        let again = shared_module("test-shared", Some("t"), build);
        assert!(Shared::ptr_eq(&first, &again));
        assert_eq!(built.get(), 1);
        assert!(first.is_indexed() && first.id() == Some("t"));
        // Another thread builds its own: Rhai's shared values are not `Send`.
        let other = std::thread::spawn(|| {
            let m = shared_module("test-shared", Some("t"), || Shared::new(Module::new()));
            Shared::as_ptr(&m) as usize
        })
        .join()
        .unwrap();
        assert_ne!(other, Shared::as_ptr(&first) as usize);
    }

    #[test]
    fn a_script_is_compiled_once_per_text_and_again_when_its_text_changes() {
        let engine = Engine::new_raw();
        let compiles = std::cell::Cell::new(0);
        let compile = |text: &str| {
            compiles.set(compiles.get() + 1);
            engine.compile(text)
        };
        let a = compiled("test.rhai", "sha-1", || compile("fn f() { 1 }")).unwrap();
        let b = compiled("test.rhai", "sha-1", || compile("fn f() { 1 }")).unwrap();
        assert_eq!(compiles.get(), 1);
        assert!(Shared::ptr_eq(a.shared_lib(), b.shared_lib()));
        let c = compiled("test.rhai", "sha-2", || compile("fn f() { 2 }")).unwrap();
        assert_eq!(compiles.get(), 2);
        assert!(!Shared::ptr_eq(a.shared_lib(), c.shared_lib()));
        // The old version is dropped, and a failed compile is never kept.
        assert!(compiled("test.rhai", "sha-3", || compile("fn (")).is_err());
        assert!(compiled("test.rhai", "sha-3", || compile("fn (")).is_err());
        assert_eq!(compiles.get(), 4);
        let d = compiled("test.rhai", "sha-1", || compile("fn f() { 1 }")).unwrap();
        assert_eq!(compiles.get(), 5);
        assert!(!Shared::ptr_eq(a.shared_lib(), d.shared_lib()));
    }

    #[test]
    fn imports_resolve_only_inside_the_two_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let r = roots(tmp.path());
        assert!(r.locate("stdlib/helpers").is_ok());
        assert!(r.locate("local").is_ok());
        for bad in [
            "../secret",
            "/etc/passwd",
            "stdlib/../secret",
            "./local",
            "~/x",
            "C:\\x",
            "",
        ] {
            let err = r.locate(bad).unwrap_err();
            assert!(err.contains("refused"), "{bad}: {err}");
        }
        assert!(r.locate("missing").unwrap_err().contains("not found"));
    }

    #[test]
    fn only_rhai_files_can_be_imported() {
        let tmp = tempfile::tempdir().unwrap();
        let r = roots(tmp.path());
        std::fs::write(tmp.path().join("runbooks/notes.txt"), "password=hunter22").unwrap();
        for bad in ["notes.txt", "stdlib/helpers.rhai.bak"] {
            let err = r.locate(bad).unwrap_err();
            assert!(err.contains("only .rhai files"), "{bad}: {err}");
        }
        assert!(r.locate("local.rhai").is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_rhai_named_symlink_to_another_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let r = roots(tmp.path());
        std::fs::write(tmp.path().join("runbooks/notes.txt"), "password=hunter22").unwrap();
        std::os::unix::fs::symlink(
            tmp.path().join("runbooks/notes.txt"),
            tmp.path().join("runbooks/notes.rhai"),
        )
        .unwrap();
        assert!(r.locate("notes").unwrap_err().contains("only .rhai files"));
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_cannot_lead_out_of_the_runbook_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let r = roots(tmp.path());
        std::os::unix::fs::symlink(
            tmp.path().join("secret.rhai"),
            tmp.path().join("runbooks/link.rhai"),
        )
        .unwrap();
        assert!(r.locate("link").unwrap_err().contains("outside"));
    }
}
