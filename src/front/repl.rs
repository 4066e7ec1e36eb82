//! `runbook repl`: every binding, for the chosen environment, at a prompt.
//!
//! For looking around during an incident ("which instances are blue?", "what does the health
//! endpoint say?") with the same sandbox, redaction and recording as a run: every call lands in a
//! session transcript that verifies like any other. `:plan on` turns mutating calls into
//! recorded would-calls, `:plan off` back; history and completion of binding names as usual.

use std::borrow::Cow;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use rhai::{Dynamic, Scope};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use serde_json::json;

use crate::base::error::{Error, Result};
use crate::data::transcript::{Counts, Durability, Event, RunStatus, RunbookRef, TranscriptWriter};
use crate::sandbox::engine::{self, Host, ImportRoots};
use crate::sandbox::recorder::{Mode, Stage};

/// Completes binding names (`ec2::find`, `health::http`, `log`, ...).
struct Names(Vec<String>);

impl Completer for Names {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |i| i + 1);
        let word = &line[start..pos];
        let found = self
            .0
            .iter()
            .filter(|n| !word.is_empty() && n.starts_with(word))
            .map(|n| Pair {
                display: n.clone(),
                replacement: n.clone(),
            })
            .collect();
        Ok((start, found))
    }
}

impl Hinter for Names {
    type Hint = String;
}
impl Highlighter for Names {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}
impl Validator for Names {}
impl Helper for Names {}

/// Every function name our modules register, namespaced where they are.
fn binding_names(engine: &rhai::Engine) -> Vec<String> {
    let mut names: Vec<String> = engine
        .gen_fn_signatures(false)
        .into_iter()
        .filter_map(|sig| sig.split('(').next().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

pub(crate) fn run(
    host: Rc<Host>,
    transcript: PathBuf,
    env_name: &str,
    operator: &str,
) -> Result<()> {
    let dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let engine = crate::bindings::engine(&host, ImportRoots::for_runbook(&dir.join("repl.rhai")));
    let writer = TranscriptWriter::create(&transcript, host.redactor.clone())?;
    host.recorder.attach(writer);
    *host.notes_path.borrow_mut() = Some(transcript.with_extension("notes.md"));
    // The session is named after its transcript file, so the id shown is the file to open.
    let session = transcript
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(crate::base::identity::new_run_id);
    let started = Instant::now();
    let first = Event::RunStarted {
        run_id: session.clone(),
        runbook: RunbookRef {
            id: "repl".into(),
            version: "0.0.0".into(),
            title: "Interactive session".into(),
            severity: "P4".into(),
            ..RunbookRef::default()
        },
        operator: operator.to_string(),
        identity: Some(crate::base::identity::Who::this_process()),
        trigger: None,
        mode: "repl".into(),
        clock: None,
        environment: env_name.to_string(),
        backend: None,
        account: None,
        region: None,
        endpoint: None,
        fleet: None,
        params: json!({}),
        guardrails: None,
        tool: format!("runbook {}", env!("CARGO_PKG_VERSION")),
        steps: Vec::new(),
    };
    host.recorder
        .record(&first, Durability::Synced)
        .map_err(|e| Error::io("cannot write", &transcript, std::io::Error::other(e)))?;
    // Bindings refuse to run while a runbook loads; a session is always "between steps".
    host.recorder.set_stage(Stage::Idle);

    let mut editor: Editor<Names, rustyline::history::DefaultHistory> =
        Editor::new().map_err(|e| Error::Environment(format!("cannot open the terminal: {e}")))?;
    editor.set_helper(Some(Names(binding_names(&engine))));
    let say = |text: &str| host.console.force_line(text);
    say(&format!(
        "runbook repl · env {env_name} · session {session} · transcript {}\n:plan on|off, :help, Ctrl-D to leave",
        transcript.display()
    ));
    let mut scope = Scope::new();
    let mut buffer = String::new();
    let mut lines = 0usize;
    loop {
        let prompt = match (buffer.is_empty(), host.recorder.mode()) {
            (false, _) => "  ...> ",
            (true, Mode::Plan) => "repl (plan)> ",
            (true, Mode::Run) => "repl> ",
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(_) => break,
        };
        let _ = editor.add_history_entry(line.as_str());
        match line.trim() {
            ":plan on" => {
                host.recorder.set_mode(Mode::Plan);
                say("plan mode: mutating calls are recorded, not sent");
                continue;
            }
            ":plan off" => {
                host.recorder.set_mode(Mode::Run);
                say("run mode: mutating calls are sent");
                continue;
            }
            ":help" => {
                say(
                    ":plan on|off   switch plan mode\n:q or Ctrl-D   leave\nany Rhai: ec2::find(#{ tags: #{ Color: \"blue\" } }), health::http(url), ...",
                );
                continue;
            }
            ":q" | ":quit" => break,
            "" if buffer.is_empty() => continue,
            _ => {}
        }
        buffer.push_str(&line);
        buffer.push('\n');
        let ast = match engine.compile_with_scope(&scope, &buffer) {
            Ok(ast) => ast,
            Err(e)
                if matches!(
                    e.err_type(),
                    rhai::ParseErrorType::MissingToken(..) | rhai::ParseErrorType::UnexpectedEOF
                ) =>
            {
                continue;
            }
            Err(e) => {
                say(&format!("error: {e}"));
                buffer.clear();
                continue;
            }
        };
        // The whole input is recorded, not only its last line: a multi-line statement is one
        // input, and the record must show what ran.
        let input = std::mem::take(&mut buffer);
        lines += 1;
        host.recorder.log("repl", input.trim_end());
        match engine.eval_ast_with_scope::<Dynamic>(&mut scope, &ast) {
            Ok(v) if v.is_unit() => {}
            Ok(v) => say(&format!("= {}", host.redactor.redact(&format!("{v:?}")))),
            Err(e) => say(&format!(
                "error: {}",
                host.redactor
                    .redact(&engine::describe_error(&e, "repl").message)
            )),
        }
        // A Ctrl-C during a call stopped it; the session goes on.
        host.interrupt.reset();
    }
    let (calls, sent) = host.recorder.call_counts();
    let end = Event::RunFinished {
        status: RunStatus::Ok,
        reason: format!("session ended after {lines} input(s)"),
        duration_ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
        // A session has no steps: every count is 0.
        counts: Some(Counts::default()),
        calls: Some(calls),
        mutating_calls_sent: Some(sent),
        undelivered_notifications: None,
        error: None,
    };
    let _ = host.recorder.record(&end, Durability::Synced);
    host.recorder.detach();
    say(&format!("session recorded in {}", transcript.display()));
    Ok(())
}
