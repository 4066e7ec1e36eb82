//! The one error type of the library, and the exit codes the CLI maps it to.
//!
//! Script problems carry a [`ScriptDiagnostic`] (file, line, column, the source line and a caret)
//! so that every refusal points at the exact place to fix, whichever command found it.

use std::fmt;
use std::path::{Path, PathBuf};

use miette::{Diagnostic, NamedSource, SourceSpan};

/// Process exit codes. Documented in the README; scripts and CI jobs rely on them, so they never change.
pub(crate) mod exit {
    /// Everything ran and every step finished ok (or the command succeeded).
    pub(crate) const OK: u8 = 0;
    /// A run failed (a step failed), a check found a violation, or a transcript does not verify.
    pub(crate) const FAILED: u8 = 1;
    /// Invalid input: a broken runbook or configuration file, a bad parameter, an unknown runbook
    /// or a bad command line.
    pub(crate) const INVALID: u8 = 2;
    /// The run was aborted (operator, Ctrl-C, a confirmation that nobody gave) or a step timed out.
    pub(crate) const ABORTED: u8 = 3;
    /// The outside world refused: an endpoint that cannot be reached, credentials for another
    /// account, a transcript another process holds. Trying again later may work; the input was fine.
    /// sysexits' `EX_UNAVAILABLE`.
    pub(crate) const UNAVAILABLE: u8 = 69;
    /// Our bug or the operating system failing us (a thread that cannot start, a poisoned lock):
    /// nothing the user gave was wrong. sysexits' `EX_SOFTWARE`.
    pub(crate) const INTERNAL: u8 = 70;
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure reported by a binding: becomes a catchable script error and a recorded call error.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BindingError {
    /// A stable code a script can match on (`InvalidInstanceID.NotFound`, `io`, `denied`, ...).
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl BindingError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        BindingError {
            code: code.into(),
            message: message.into(),
            request_id: None,
        }
    }
}

/// Where something is in a source file, 1-based like every editor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A problem at a position in a runbook or module, rendered with the line and a caret.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct ScriptDiagnostic {
    pub message: String,
    #[source_code]
    pub src: NamedSource<String>,
    #[label("{label}")]
    pub span: SourceSpan,
    pub label: String,
    #[help]
    pub help: Option<String>,
    pub location: Location,
}

impl ScriptDiagnostic {
    /// Builds a diagnostic at 1-based `line`/`col` of `source`. Out-of-range positions are
    /// clamped to the end of the text rather than trusted, so a bad position never panics.
    pub fn new(
        file: &str,
        source: &str,
        line: usize,
        col: usize,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Self {
        let offset = byte_offset(source, line, col);
        // Span one character (or nothing at the very end) so the caret sits under the spot.
        let len = source[offset..].chars().next().map_or(0, char::len_utf8);
        ScriptDiagnostic {
            message: message.into(),
            src: NamedSource::new(file, source.to_string()),
            span: (offset, len).into(),
            label: label.into(),
            help: None,
            location: Location {
                file: file.to_string(),
                line: line.max(1),
                col: col.max(1),
            },
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The diagnostic as text: `file:line:col: message`, then the source line with a caret.
    /// Colour only when asked for (a terminal), so logs and CI output stay clean.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        };
        let mut out = format!("{}: {}\n", self.location, self.message);
        let handler = miette::GraphicalReportHandler::new_themed(theme).with_context_lines(1);
        if handler.render_report(&mut out, self).is_err() {
            // The header line above already carries the position; never fail to report.
            out.push_str("(could not render the source excerpt)\n");
        }
        out
    }
}

/// Shortens `text` to at most `max` bytes without cutting a character in two; true when it did.
pub(crate) fn truncate_utf8(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// Converts a 1-based line/column (columns count characters, as Rhai does) to a byte offset.
pub(crate) fn byte_offset(source: &str, line: usize, col: usize) -> usize {
    let mut offset = 0;
    for (i, text) in source.split_inclusive('\n').enumerate() {
        if i + 1 == line.max(1) {
            let within: usize = text
                .chars()
                .take(col.saturating_sub(1))
                .map(char::len_utf8)
                .sum();
            return (offset + within).min(source.len());
        }
        offset += text.len();
    }
    source.len()
}

/// Each variant names what went wrong, and [`Error::exit_code`] follows from it alone, so a new
/// call site cannot pick a misleading exit code by reusing a convenient variant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line asks for something that cannot be done: a bad flag value or parameter,
    /// flags that do not go together, a run that has nothing to resume.
    #[error("{0}")]
    Usage(String),

    /// A configuration or scenario file (`runbook.toml`, `hooks.toml`, `alerts.toml`, a fleet
    /// fixture, a drill) that cannot be accepted. The message never repeats the file: it is shown first.
    #[error("{}", config_message(file, message))]
    Config { file: PathBuf, message: String },

    /// Data the command was handed that it cannot accept: an alert payload, a runbook folder
    /// with two runbooks of one id.
    #[error("{0}")]
    Input(String),

    /// The outside world refused: an endpoint that cannot be reached or listened on, credentials
    /// for another account, no terminal, a transcript another process holds.
    #[error("{0}")]
    Environment(String),

    /// Our bug or the operating system failing us: a thread or runtime that cannot start, a value
    /// that cannot be serialised, a state file of ours that no longer parses.
    #[error("{0}")]
    Internal(String),

    /// A runbook or module that cannot be accepted: every problem found, each with its position.
    #[error("{}", script_summary(.0))]
    Script(Vec<ScriptDiagnostic>),

    /// `check` found problems in this many runbooks (each was reported on its own).
    #[error("{count} runbook(s) with problems")]
    Invalid { count: usize },

    /// No runbook with that id (or file) could be found.
    #[error("runbook not found: {0}")]
    NotFound(String),

    /// `ID@VERSION` pinned a version the file does not have.
    #[error("runbook {id} is at version {found}, but {pinned} was pinned")]
    VersionMismatch {
        id: String,
        pinned: String,
        found: String,
    },

    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A transcript whose hash chain does not hold.
    #[error("{}:{line}: transcript broken: {reason}", path.display())]
    TranscriptBroken {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    /// `check --policy` found violations of the runbook mandate.
    #[error("{count} policy violation(s)")]
    PolicyViolations { count: usize },

    /// A search that found nothing (`list --alert` naming an alert no runbook answers).
    #[error("{0}")]
    NoMatch(String),

    /// Drills that did not pass.
    #[error("{count} drill(s) failed")]
    DrillsFailed { count: usize },

    /// `runbook replay`: the version replayed does not do what the incident did.
    #[error("the replay diverges from the incident in {count} place(s)")]
    ReplayDiverged { count: usize },

    /// `runbook hook`: runs the alerts started that did not end ok (each escalated).
    #[error("{count} run(s) did not end ok (first: {first})")]
    HookRunsFailed { count: usize, first: String },

    /// A run that ended in a non-ok state; the transcript has the details.
    #[error("run {status}: {reason}")]
    RunEnded {
        status: RunEndStatus,
        reason: String,
    },
}

/// The non-ok ends of a run, each with its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEndStatus {
    Failed,
    Aborted,
    TimedOut,
}

impl fmt::Display for RunEndStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunEndStatus::Failed => "failed",
            RunEndStatus::Aborted => "aborted",
            RunEndStatus::TimedOut => "timed out",
        })
    }
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_)
            | Error::Config { .. }
            | Error::Input(_)
            | Error::Script(_)
            | Error::Invalid { .. }
            | Error::NotFound(_)
            | Error::VersionMismatch { .. } => exit::INVALID,
            Error::Io { .. }
            | Error::TranscriptBroken { .. }
            | Error::PolicyViolations { .. }
            | Error::NoMatch(_)
            | Error::DrillsFailed { .. }
            | Error::ReplayDiverged { .. }
            | Error::HookRunsFailed { .. } => exit::FAILED,
            Error::RunEnded { status, .. } => match status {
                RunEndStatus::Failed => exit::FAILED,
                RunEndStatus::Aborted | RunEndStatus::TimedOut => exit::ABORTED,
            },
            Error::Environment(_) => exit::UNAVAILABLE,
            Error::Internal(_) => exit::INTERNAL,
        }
    }

    /// A problem in the configuration file `file`.
    pub fn config(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Config {
            file: file.into(),
            message: message.into(),
        }
    }

    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn script(diag: ScriptDiagnostic) -> Self {
        Error::Script(vec![diag])
    }
}

/// `file: message`, or `file:` and the message's own lines when it is a list that starts on a new line.
fn config_message(file: &Path, message: &str) -> String {
    if message.starts_with('\n') {
        format!("{}:{message}", file.display())
    } else {
        format!("{}: {message}", file.display())
    }
}

fn script_summary(diags: &[ScriptDiagnostic]) -> String {
    match diags {
        [] => "invalid runbook".into(),
        [one] => format!("{}: {}", one.location, one.message),
        [first, rest @ ..] => format!(
            "{}: {} (and {} more problem(s))",
            first.location,
            first.message,
            rest.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_error_exits_with_its_own_code() {
        let io = || std::io::Error::other("disk on fire");
        let cases = [
            (Error::Usage("--source is required".into()), exit::INVALID),
            (Error::config("hooks.toml", "bad"), exit::INVALID),
            (Error::Input("payload too large".into()), exit::INVALID),
            (
                Error::script(ScriptDiagnostic::new("a.rhai", "x", 1, 1, "m", "l")),
                exit::INVALID,
            ),
            (Error::Invalid { count: 1 }, exit::INVALID),
            (Error::NotFound("rb".into()), exit::INVALID),
            (
                Error::VersionMismatch {
                    id: "rb".into(),
                    pinned: "1".into(),
                    found: "2".into(),
                },
                exit::INVALID,
            ),
            (
                Error::io("cannot write", Path::new("t.jsonl"), io()),
                exit::FAILED,
            ),
            (
                Error::TranscriptBroken {
                    path: "t.jsonl".into(),
                    line: 2,
                    reason: "r".into(),
                },
                exit::FAILED,
            ),
            (Error::PolicyViolations { count: 1 }, exit::FAILED),
            (Error::NoMatch("x".into()), exit::FAILED),
            (Error::DrillsFailed { count: 1 }, exit::FAILED),
            (Error::ReplayDiverged { count: 1 }, exit::FAILED),
            (
                Error::HookRunsFailed {
                    count: 1,
                    first: "f".into(),
                },
                exit::FAILED,
            ),
            (
                Error::RunEnded {
                    status: RunEndStatus::Failed,
                    reason: "r".into(),
                },
                exit::FAILED,
            ),
            (
                Error::RunEnded {
                    status: RunEndStatus::Aborted,
                    reason: "r".into(),
                },
                exit::ABORTED,
            ),
            (
                Error::RunEnded {
                    status: RunEndStatus::TimedOut,
                    reason: "r".into(),
                },
                exit::ABORTED,
            ),
            (Error::Environment("in use".into()), exit::UNAVAILABLE),
            (
                Error::Internal("cannot start a worker thread".into()),
                exit::INTERNAL,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit_code(), code, "{error}");
        }
    }

    #[test]
    fn the_exit_codes_are_the_documented_ones_and_distinct() {
        let codes = [
            exit::OK,
            exit::FAILED,
            exit::INVALID,
            exit::ABORTED,
            exit::UNAVAILABLE,
            exit::INTERNAL,
        ];
        assert_eq!(codes, [0, 1, 2, 3, 69, 70]);
    }

    #[test]
    fn a_config_error_names_its_file_first() {
        let one = Error::config("conf/hooks.toml", "unknown field `rout`");
        assert_eq!(one.to_string(), "conf/hooks.toml: unknown field `rout`");
        let list = Error::config("hooks.toml", "\n  route \"a\": x\n  route \"b\": y");
        assert_eq!(
            list.to_string(),
            "hooks.toml:\n  route \"a\": x\n  route \"b\": y"
        );
    }

    #[test]
    fn offsets_follow_lines_and_chars() {
        let src = "ab\nçd\nef";
        assert_eq!(byte_offset(src, 1, 1), 0);
        assert_eq!(byte_offset(src, 2, 2), 5); // 'ç' is two bytes
        assert_eq!(byte_offset(src, 3, 2), 8);
        assert_eq!(byte_offset(src, 9, 9), src.len());
    }

    #[test]
    fn truncation_never_cuts_a_character() {
        let mut s = "aé".to_string(); // 'é' is bytes 1..3
        assert!(truncate_utf8(&mut s, 2));
        assert_eq!(s, "a");
        let mut short = "abc".to_string();
        assert!(!truncate_utf8(&mut short, 3));
        assert_eq!(short, "abc");
    }

    #[test]
    fn rendering_names_the_position_and_shows_the_line() {
        let d = ScriptDiagnostic::new("rb.rhai", "let x = 1;\nlet y = ;\n", 2, 9, "bad", "here");
        let text = d.render(false);
        assert!(text.starts_with("rb.rhai:2:9: bad"), "{text}");
        assert!(text.contains("let y = ;"), "{text}");
        assert!(text.contains("here"), "{text}");
    }
}
