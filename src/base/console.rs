//! What a person watching a run sees on stderr: on a terminal, an overall step bar with a spinner
//! for the current step and its elapsed time (and bars for SSM fan-out); plain
//! one-line-per-event output everywhere else (CI logs, pipes), because spinners in a log file are
//! noise. In interactive runs the overall bar stays off: it would redraw over the prompt.
//!
//! Before anything asks a person (a prompt, a typed confirmation, an approval) the progress
//! display is taken down with [`Console::person`], which also keeps the time spent waiting for
//! that person apart from the time the step worked. `TERM=dumb` counts as "not a terminal":
//! indicatif draws nothing there, and a step line drawn through it would be lost.
//!
//! Everything printed here has already been redacted by the caller.

use std::cell::{Cell, RefCell};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

pub struct Console {
    tty: bool,
    color: bool,
    quiet: bool,
    spinner: RefCell<Option<ProgressBar>>,
    /// The overall step bar and the area it shares with the spinner (terminal, unattended).
    bars: RefCell<Option<(MultiProgress, ProgressBar)>>,
    overall: Cell<bool>,
    /// Lines printed now come from a step preview (a plan), not from something that happened:
    /// they are kept, marked, for the driver to show with the step they preview.
    preview: RefCell<Option<Vec<String>>>,
    /// The whole run is a plan: what its steps log describes would-be effects, so it is marked.
    planning: Cell<bool>,
    /// Time spent waiting for a person since the last [`Console::take_waited`].
    waited: Cell<Duration>,
    /// How many [`Console::person`] calls are open (the inspect REPL holds one around its
    /// prompts): only the outermost counts its time, so nothing is counted twice.
    asking: Cell<u32>,
}

/// Whether stderr is a terminal that can draw progress: `TERM=dumb` (Emacs shells, some CI
/// runners) cannot, and indicatif hides everything drawn through it there.
fn drawable_terminal() -> bool {
    std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

impl Console {
    /// A console that decides for itself whether stderr is a terminal.
    pub fn detect(quiet: bool) -> Self {
        let tty = drawable_terminal();
        Console {
            tty,
            color: tty && std::env::var_os("NO_COLOR").is_none(),
            quiet,
            spinner: RefCell::new(None),
            bars: RefCell::new(None),
            overall: Cell::new(true),
            preview: RefCell::new(None),
            planning: Cell::new(false),
            waited: Cell::new(Duration::ZERO),
            asking: Cell::new(0),
        }
    }

    /// A console that prints nothing (check, list, benchmarks).
    pub fn silent() -> Self {
        Console {
            tty: false,
            color: false,
            quiet: true,
            spinner: RefCell::new(None),
            bars: RefCell::new(None),
            overall: Cell::new(false),
            preview: RefCell::new(None),
            planning: Cell::new(false),
            waited: Cell::new(Duration::ZERO),
            asking: Cell::new(0),
        }
    }

    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// Whether what this console prints may be coloured (a terminal, `NO_COLOR` unset).
    pub fn color(&self) -> bool {
        self.color
    }

    /// Runs `f`, which waits for a person (a prompt, an approval): the progress display is taken
    /// down first (a spinner redrawing over a prompt hides the question), and the time is
    /// counted as waiting, not as the step's work.
    pub fn person<T>(&self, f: impl FnOnce() -> T) -> T {
        if let Some(bar) = self.spinner.borrow_mut().take() {
            bar.finish_and_clear();
        }
        let started = Instant::now();
        self.asking.set(self.asking.get().saturating_add(1));
        let out = f();
        self.asking.set(self.asking.get().saturating_sub(1));
        if self.asking.get() == 0 {
            self.waited
                .set(self.waited.get().saturating_add(started.elapsed()));
        }
        out
    }

    /// The time spent waiting for a person since the last call, and starts counting again.
    pub fn take_waited(&self) -> Duration {
        self.waited.replace(Duration::ZERO)
    }

    /// From now on, lines are a preview's (a plan of a step, not what happened): kept, marked,
    /// until [`Console::end_preview`] hands them over.
    pub fn start_preview(&self) {
        *self.preview.borrow_mut() = Some(Vec::new());
    }

    /// The preview's lines, each marked `preview:` (and dim on a colour terminal).
    pub fn end_preview(&self) -> Vec<String> {
        self.preview.borrow_mut().take().unwrap_or_default()
    }

    /// Turns the overall step bar off (interactive runs: the prompt needs the terminal).
    pub fn set_overall(&self, on: bool) {
        self.overall.set(on);
    }

    /// Clears the bars at the end of a run.
    pub fn finish(&self) {
        if let Some((multi, bar)) = self.bars.borrow_mut().take() {
            bar.finish_and_clear();
            let _ = multi.clear();
        }
    }

    /// Prints a line above the spinner (or plainly).
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        if let Some(kept) = self.preview.borrow_mut().as_mut() {
            // Dim on a colour terminal, and always the word: a copied log must say it too.
            let body = text.trim_start();
            kept.push(if self.color {
                format!("   \x1b[2mpreview: {body}\x1b[0m")
            } else {
                format!("   preview: {body}")
            });
            return;
        }
        self.print(text);
    }

    fn print(&self, text: &str) {
        if let Some((multi, _)) = self.bars.borrow().as_ref() {
            let _ = multi.println(text);
            return;
        }
        match self.spinner.borrow().as_ref() {
            Some(bar) => bar.println(text),
            None => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{text}");
            }
        }
    }

    /// Prints even when quiet (the REPL's answers are its output).
    pub fn force_line(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{text}");
    }

    /// From now on every `log()` line is marked as a plan's (`runbook plan`): "2 volume
    /// snapshot(s) taken" in a plan is what would happen, not what did.
    pub fn set_planning(&self, planning: bool) {
        self.planning.set(planning);
    }

    pub fn log(&self, level: &str, message: &str) {
        if self.planning.get() && self.preview.borrow().is_none() {
            let body = format!("plan: {level}: {message}");
            self.line(&if self.color {
                format!("    \x1b[2m{body}\x1b[0m")
            } else {
                format!("    {body}")
            });
            return;
        }
        self.line(&format!("    {level}: {message}"));
    }

    pub fn step_started(&self, index: usize, total: usize, phase: &str, title: &str) {
        let label = format!("[{}/{total}] {phase} · {title}", index + 1);
        if self.quiet {
            return;
        }
        if self.tty {
            let mut bar = ProgressBar::new_spinner();
            if self.overall.get() {
                let mut bars = self.bars.borrow_mut();
                let (multi, overall) = bars.get_or_insert_with(|| {
                    let multi = MultiProgress::new();
                    let overall = multi.add(ProgressBar::new(total as u64));
                    if let Ok(style) =
                        ProgressStyle::with_template("{bar:30} {pos}/{len} steps ({elapsed})")
                    {
                        overall.set_style(style);
                    }
                    (multi, overall)
                });
                overall.set_position(index as u64);
                bar = multi.add(bar);
            }
            let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_message(label);
            bar.enable_steady_tick(Duration::from_millis(100));
            *self.spinner.borrow_mut() = Some(bar);
        } else {
            self.line(&format!("{label} ..."));
        }
    }

    /// Shows what the current step is waiting for, next to its spinner (terminal only).
    pub fn status(&self, text: &str) {
        if let Some(bar) = self.spinner.borrow().as_ref() {
            bar.set_message(format!(
                "{} · {text}",
                bar.message()
                    .split(" · ")
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" · ")
            ));
        }
    }

    /// A progress bar for fan-out work (SSM results), on a terminal only.
    pub fn progress(&self, len: u64, label: &str) -> Option<ProgressBar> {
        if self.quiet || !self.tty {
            return None;
        }
        let mut bar = ProgressBar::new(len);
        if let Some((multi, _)) = self.bars.borrow().as_ref() {
            bar = multi.add(bar);
        }
        if let Ok(style) =
            ProgressStyle::with_template("    {msg} [{bar:30}] {pos}/{len} ({elapsed})")
        {
            bar.set_style(style);
        }
        bar.set_message(label.to_string());
        Some(bar)
    }

    /// The step's end line: its working time, and the time it waited for a person when it did.
    pub fn step_finished(
        &self,
        index: usize,
        total: usize,
        title: &str,
        status: &str,
        ms: u64,
        waiting_ms: u64,
    ) {
        if let Some(bar) = self.spinner.borrow_mut().take() {
            bar.finish_and_clear();
        }
        if let Some((_, overall)) = self.bars.borrow().as_ref() {
            overall.set_position(index as u64 + 1);
        }
        let mark = match status {
            "ok" => "✓",
            "skipped" => "-",
            _ => "✗",
        };
        let waiting = if waiting_ms > 0 {
            format!(", {:.1} s waiting for a person", waiting_ms as f64 / 1000.0)
        } else {
            String::new()
        };
        self.line(&format!(
            "{mark} [{}/{total}] {title}: {status} ({ms} ms{waiting})",
            index + 1
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asking_a_person_takes_the_spinner_down_and_counts_the_wait_once() {
        let console = Console::silent();
        *console.spinner.borrow_mut() = Some(ProgressBar::hidden());
        let outer = Instant::now();
        let answer = console.person(|| {
            // A nested question (a prompt inside the inspect REPL) is the same wait.
            console.person(|| std::thread::sleep(Duration::from_millis(20)));
            42
        });
        let outer = outer.elapsed();
        assert_eq!(answer, 42);
        assert!(
            console.spinner.borrow().is_none(),
            "no spinner may draw over a prompt"
        );
        let waited = console.take_waited();
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        // Counted twice, it would exceed the outer call's own length by the inner wait.
        assert!(waited <= outer, "counted once: {waited:?} of {outer:?}");
        assert_eq!(console.take_waited(), Duration::ZERO);
    }
}
