//! A small builder for driving the real `runbook` binary in a scratch workspace.
//!
//! Each test gets its own temporary folder with `runbooks/` and `stdlib/`, runs the binary there
//! with a clean environment (no `AWS_*`, `SLACK_*`, `TEAMS_*` or `RUNBOOK_*` from the caller, so a
//! developer's credentials can never leak into, or change, a test), and reads back what it wrote.

pub mod http;
pub mod moto;
pub mod serve;
pub mod sns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create temp workspace");
        std::fs::create_dir_all(dir.path().join("runbooks")).unwrap();
        std::fs::create_dir_all(dir.path().join("stdlib")).unwrap();
        Workspace { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file relative to the workspace and returns its path.
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
        path
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel))
            .unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.dir.path().join(rel).exists()
    }

    /// A command for the binary, run inside the workspace.
    pub fn cmd(&self) -> Cmd {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
        command.current_dir(self.dir.path());
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if ["AWS_", "SLACK_", "TEAMS_", "RUNBOOK_"]
                .iter()
                .any(|p| key.starts_with(p))
            {
                command.env_remove(&key);
            }
        }
        command.env("RUNBOOK_OPERATOR", "tester@ci");
        command.env("NO_COLOR", "1");
        command.env_remove("RUST_LOG");
        command.stdin(Stdio::null());
        Cmd { command }
    }

    /// Runs `args` and returns the result.
    pub fn run(&self, args: &[&str]) -> Run {
        self.cmd().args(args).output()
    }
}

/// Whether the tests run as root (and so can act as a second local account).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

pub struct Cmd {
    command: Command,
}

impl Cmd {
    pub fn args(mut self, args: &[&str]) -> Self {
        self.command.args(args);
        self
    }

    /// Runs the command as another local account (uid, gid): a second person on this host.
    /// Only root may switch; callers check [`is_root`] first.
    pub fn run_as(mut self, uid: u32, gid: u32) -> Self {
        use std::os::unix::process::CommandExt;
        self.command.uid(uid).gid(gid);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.command.env(key, value);
        self
    }

    /// Feeds `file` to the command's stdin.
    pub fn stdin_file(mut self, file: &Path) -> Self {
        self.command.stdin(Stdio::from(
            std::fs::File::open(file).expect("open stdin file"),
        ));
        self
    }

    pub fn output(mut self) -> Run {
        let out: Output = self.command.output().expect("spawn runbook");
        Run::from(out)
    }

    /// Starts the binary with stdout and stderr going to `log` (a server's log can outgrow a
    /// pipe nobody reads).
    pub fn spawn_logged(mut self, log: &Path) -> Child {
        let file = std::fs::File::create(log).expect("create log file");
        let err = file.try_clone().expect("clone log file");
        self.command
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn runbook")
    }

    pub fn spawn(mut self) -> Child {
        self.command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn runbook")
    }
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The events of a transcript, parsed.
pub fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("transcript line is JSON"))
        .collect()
}

/// Events of one type.
pub fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// A minimal valid metadata header for test runbooks.
pub fn header(id: &str) -> String {
    format!(
        "runbook(#{{ id: \"{id}\", version: \"1.0.0\", title: \"Test {id}\", severity: \"P3\" }});\n"
    )
}
