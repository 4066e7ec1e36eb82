//! On-call mode: the operator sees each step before it acts and decides.
//!
//! Before every step the driver shows its phase, title, description and a preview of the
//! mutating calls it would make (a plan of that one step, computed by the executor), then asks:
//! run, skip, inspect (a REPL with `ctx` and every binding), plan (the preview again), abort or
//! help. Steps with `confirm` ask for the typed confirmation word (the DevOps document's
//! `ROLLBACK`-style safety), and the first write in a protected environment asks for the
//! environment's name; a mismatch is refused and recorded. Every decision carries the operator's
//! identity and how long they took.
//!
//! At 3 a.m. a stray key must not act: Enter alone never chooses anything (it asks again), a skip
//! needs a reason (it goes into the transcript), and every prompt answers `h` with its choices.

use std::io::Write;
use std::time::Instant;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::run::executor::{Action, AfterFailure, Decision, Driver, StepView};
use crate::sandbox::declare::{Confirm, Step};
use crate::sandbox::engine::ErrorInfo;

pub(crate) struct Interactive {
    editor: DefaultEditor,
    operator: String,
}

const HELP: &str = "  r, run      run the step
  s, skip     skip it (asks for a reason; recorded)
  i, inspect  open a REPL with `ctx` and every binding; an empty line returns here
  p, plan     show the calls the step would make again
  a, abort    stop the run (recorded; the transcript ends properly)
  h, help     this help
  Enter alone asks again.";

const AFTER_HELP: &str = "  r, retry    run the step again
  s, skip     leave it as it ended and go on with the next step (asks for a reason; recorded;
              the run still ends as not ok)
  a, abort    stop the run (recorded; the transcript ends properly)
  h, help     this help
  Enter alone asks again; Ctrl-C here aborts.";

const REASON_HELP: &str =
    "  a few words on why this step is skipped: they go into the transcript with your name.
  Ctrl-C or Ctrl-D stops the run instead.";

impl Interactive {
    pub(crate) fn new(operator: String) -> Result<Self, String> {
        let editor = DefaultEditor::new().map_err(|e| format!("cannot open the terminal: {e}"))?;
        Ok(Interactive { editor, operator })
    }

    fn say(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{text}");
    }

    /// One line from the operator; None on Ctrl-C or Ctrl-D (both mean "stop").
    fn ask(&mut self, prompt: &str) -> Option<String> {
        match self.editor.readline(prompt) {
            Ok(line) => {
                let _ = self.editor.add_history_entry(line.as_str());
                Some(line)
            }
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => None,
            Err(e) => {
                self.say(&format!("cannot read from the terminal: {e}"));
                None
            }
        }
    }

    fn decision(&self, action: Action, reason: impl Into<String>, started: Instant) -> Decision {
        Decision {
            decided_ms: Some(started.elapsed().as_millis() as u64),
            ..Decision::recorded(action, &self.operator, reason)
        }
    }

    fn show(&self, view: &StepView) {
        let s = view.step;
        self.say(&format!(
            "\n━━ [{}/{}] {} · {}",
            s.index + 1,
            view.total,
            s.phase.as_str(),
            s.title
        ));
        if !s.description.is_empty() {
            self.say(&format!("   {}", s.description));
        }
        self.show_preview(view);
        match &s.confirm {
            Some(Confirm::Word(w)) => self.say(&format!("   needs the typed confirmation {w}")),
            Some(Confirm::Yes) => self.say("   needs confirmation (type yes)"),
            None => {}
        }
    }

    fn show_preview(&self, view: &StepView) {
        for line in view.preview_log {
            self.say(line);
        }
        if view.preview.is_empty() {
            self.say("   would change nothing (read-only)");
        } else {
            self.say("   would call:");
            for c in view.preview {
                self.say(&format!("     {}({})", c.binding, c.args));
            }
        }
        if let Some(e) = view.preview_error {
            self.say(&format!("   (the preview stopped early: {e})"));
        }
    }

    /// Asks for `word` to be typed; Some(true) when it matches, None when the operator stopped.
    fn typed(&mut self, what: &str, word: &str) -> Option<bool> {
        loop {
            let line = self.ask(&format!("type {word} to {what} (h for help): "))?;
            match line.trim() {
                typed if typed == word => return Some(true),
                "h" | "help" | "?" => self.say(&format!(
                    "  type {word} exactly (case matters) to {what}; anything else refuses (recorded);\n  Ctrl-C or Ctrl-D stops the run"
                )),
                "" => {}
                _ => return Some(false),
            }
        }
    }

    /// Why a step is skipped; None when the operator stopped instead.
    fn reason(&mut self) -> Option<String> {
        loop {
            let line = self.ask("reason for skipping (recorded; h for help): ")?;
            match line.trim() {
                "" => self.say("   a reason is needed: it goes into the transcript"),
                "h" | "help" | "?" => self.say(REASON_HELP),
                why => return Some(why.to_string()),
            }
        }
    }
}

impl Driver for Interactive {
    fn wants_preview(&self) -> bool {
        true
    }

    fn before_step(&mut self, view: &StepView) -> Decision {
        self.show(view);
        let started = Instant::now();
        loop {
            let Some(line) = self.ask("[r]un [s]kip [i]nspect [p]lan [a]bort [h]elp > ") else {
                return self.decision(
                    Action::Abort,
                    "operator stopped the run at the prompt",
                    started,
                );
            };
            match line.trim() {
                "" => {}
                "r" | "run" => {
                    let mut confirms_environment = false;
                    if let (Some(env), false) = (view.protected, view.preview.is_empty()) {
                        match self.typed(
                            &format!("allow writes in the protected environment {env}"),
                            env,
                        ) {
                            None => {
                                return self.decision(
                                    Action::Abort,
                                    "operator stopped at the environment confirmation",
                                    started,
                                );
                            }
                            Some(false) => {
                                self.say("   does not match: refused");
                                return self.decision(
                                    Action::Refused,
                                    format!(
                                        "typed confirmation for environment {env} did not match"
                                    ),
                                    started,
                                );
                            }
                            Some(true) => confirms_environment = true,
                        }
                    }
                    let word = match &view.step.confirm {
                        Some(Confirm::Word(w)) => Some(w.clone()),
                        Some(Confirm::Yes) => Some("yes".to_string()),
                        None => None,
                    };
                    if let Some(word) = word {
                        match self.typed("confirm", &word) {
                            None => {
                                return self.decision(
                                    Action::Abort,
                                    "operator stopped at the confirmation",
                                    started,
                                );
                            }
                            Some(false) => {
                                self.say("   does not match: refused");
                                return self.decision(
                                    Action::Refused,
                                    format!("typed confirmation did not match {word:?}"),
                                    started,
                                );
                            }
                            Some(true) => {}
                        }
                    }
                    let mut d =
                        self.decision(Action::Run, "operator chose to run the step", started);
                    d.confirms_environment = confirms_environment;
                    return d;
                }
                "s" | "skip" => {
                    let Some(why) = self.reason() else {
                        return self.decision(
                            Action::Abort,
                            "operator stopped at the skip reason",
                            started,
                        );
                    };
                    return self.decision(
                        Action::Skip,
                        format!("operator skipped the step: {why}"),
                        started,
                    );
                }
                "i" | "inspect" => {
                    return self.decision(
                        Action::Inspect,
                        "operator inspected before deciding",
                        started,
                    );
                }
                "p" | "plan" => self.show_preview(view),
                "a" | "abort" => {
                    return self.decision(Action::Abort, "operator aborted the run", started);
                }
                "h" | "help" | "?" => self.say(HELP),
                other => self.say(&format!("   unknown choice {other:?}; h for help")),
            }
        }
    }

    fn after_failure(&mut self, step: &Step, error: &ErrorInfo) -> AfterFailure {
        self.say(&format!(
            "   step {:?} did not succeed: {}",
            step.title, error.message
        ));
        self.choose("[r]etry, [s]kip to the next step, [a]bort, [h]elp? > ")
    }

    fn after_interrupt(&mut self, step: &Step) -> AfterFailure {
        self.say(&format!(
            "\n   interrupted {:?} (Ctrl-C again at the prompt aborts)",
            step.title
        ));
        self.choose("[r]etry, [s]kip to the next step, [a]bort, [h]elp? > ")
    }

    fn on_uncertain(&mut self, step: &Step, calls: &[String]) -> bool {
        self.say(&format!(
            "\n   step {:?} was cut off after sending, without a recorded result:",
            step.title
        ));
        for c in calls {
            self.say(&format!("     {c}"));
        }
        self.say("   check whether it took effect before running the step again.");
        matches!(self.typed("run the step again anyway", "RUN"), Some(true))
    }

    fn read_line(&mut self, prompt: &str) -> Option<String> {
        self.ask(prompt)
    }
}

impl Interactive {
    fn choose(&mut self, prompt: &str) -> AfterFailure {
        loop {
            let Some(line) = self.ask(prompt) else {
                return AfterFailure::Stop;
            };
            match line.trim() {
                "" => {}
                "r" | "retry" => return AfterFailure::Retry,
                "s" | "skip" => {
                    return match self.reason() {
                        Some(why) => AfterFailure::Continue(why),
                        None => AfterFailure::Stop,
                    };
                }
                "a" | "abort" => return AfterFailure::Stop,
                "h" | "help" | "?" => self.say(AFTER_HELP),
                other => self.say(&format!("   unknown choice {other:?}; h for help")),
            }
        }
    }
}
