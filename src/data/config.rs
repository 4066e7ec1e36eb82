//! `runbook.toml`: the environments a runbook can run against.
//!
//! ```toml
//! default = "sim"
//!
//! [environments.staging]
//! backend = "aws"
//! profile = "staging"
//! region = "eu-west-1"
//! account_id = "210987654321"     # refuse to run when the credentials resolve elsewhere
//!
//! [environments.prod]
//! backend = "aws"
//! region = "eu-west-1"
//! account_id = "123456789012"
//! protected = true                # mutating calls need --confirm-env prod (or a typed confirmation)
//! ```
//!
//! The file is found by walking up from the current folder (or given with `--config`). Without
//! one, the only environment is the built-in `sim`, which is also the default: a fresh clone needs
//! no AWS account.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::base::error::{Error, Result};

pub(crate) const FILE_NAME: &str = "runbook.toml";
pub(crate) const BUILTIN_SIM: &str = "sim";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Aws,
    Sim,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    default: Option<String>,
    #[serde(default)]
    environments: BTreeMap<String, EnvConfig>,
    /// Slack/Teams endpoints (the environment variables override these).
    #[serde(default)]
    notifications: NotifyFile,
    /// Where shared state lives (guardrails, target locks, transcripts): see [`StateConfig`].
    state: Option<StateFile>,
    /// Named groups of approvers: ARNs, Slack user ids, `os:user@host` (see `approve`).
    #[serde(default)]
    approvers: BTreeMap<String, Vec<String>>,
    /// Slack user id -> the identity that person is elsewhere (`aws:ARN`, `os:user@host`), so
    /// their click and their CLI answer count as one person.
    #[serde(default)]
    slack_users: BTreeMap<String, String>,
}

/// `[state]`: `local` (files on this host, the default) or `aws` (one DynamoDB table and an S3
/// bucket, shared by every replica and every operator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    #[default]
    Local,
    Aws,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    backend: Option<toml::Spanned<StateBackend>>,
    table: Option<toml::Spanned<String>>,
    bucket: Option<toml::Spanned<String>>,
    /// The key prefix of transcripts in the bucket.
    prefix: Option<String>,
    region: Option<String>,
    profile: Option<String>,
    endpoint: Option<String>,
    max_attempts: Option<u32>,
    /// Object Lock retention (compliance mode) of every transcript object, in days.
    retention_days: Option<toml::Spanned<u32>>,
    /// How long a target lock lasts without a heartbeat (renewed every third of it).
    lease: Option<toml::Spanned<String>>,
    /// local only: the folder of target lock files (relative to runbook.toml).
    locks: Option<toml::Spanned<PathBuf>>,
    /// aws only: the folder of pending-upload markers (relative to runbook.toml); a packaged
    /// install keeps runbook.toml in read-only /etc and this under /var/lib/runbook.
    spool: Option<toml::Spanned<PathBuf>>,
}

/// The resolved `[state]` section.
#[derive(Debug, Clone)]
pub struct StateConfig {
    pub backend: StateBackend,
    pub table: String,
    pub bucket: String,
    pub prefix: String,
    pub aws: AwsSettings,
    pub retention_days: Option<u32>,
    pub lease: std::time::Duration,
    /// local: the folder of target lock files.
    pub locks: PathBuf,
    /// aws: the folder of transcript uploads not finished yet (`.runbook/uploads` beside
    /// runbook.toml), finished by `runbook transcript upload` or a later `serve`.
    pub spool: PathBuf,
}

/// A target lock's lease unless `[state] lease` says otherwise: far longer than plausible clock
/// skew between hosts (DynamoDB has no server time; the runner's clock decides).
pub(crate) const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

impl StateConfig {
    /// `local`, with lock files in `.runbook/locks` under `base` (runbook.toml's folder, or the
    /// current one without a file).
    pub fn local(base: &Path) -> Self {
        StateConfig {
            backend: StateBackend::Local,
            table: String::new(),
            bucket: String::new(),
            prefix: String::new(),
            aws: AwsSettings::default(),
            retention_days: None,
            lease: DEFAULT_LEASE,
            locks: base.join(".runbook").join("locks"),
            spool: base.join(".runbook").join("uploads"),
        }
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig::local(Path::new("."))
    }
}

/// `line:col` (1-based) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Resolves `[state]`, naming the offending key's `file:line:col` when it cannot be accepted.
fn resolve_state(path: &Path, text: &str, file: Option<&StateFile>) -> Result<StateConfig> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = StateConfig::local(base);
    let Some(f) = file else {
        return Ok(out);
    };
    let at = |span: std::ops::Range<usize>, message: String| {
        let (line, col) = line_col(text, span.start);
        Error::config(format!("{}:{line}:{col}", path.display()), message)
    };
    if let Some(b) = &f.backend {
        out.backend = *b.get_ref();
    }
    if let Some(lease) = &f.lease {
        let d = crate::base::clock::parse_duration(lease.get_ref())
            .map_err(|why| at(lease.span(), format!("[state] lease: {why}")))?;
        if d < std::time::Duration::from_secs(3) {
            return Err(at(
                lease.span(),
                "[state] lease: at least 3s (it is renewed every third of it)".into(),
            ));
        }
        out.lease = d;
    }
    if let Some(days) = &f.retention_days
        && *days.get_ref() == 0
    {
        return Err(at(
            days.span(),
            "[state] retention_days: at least 1 (leave it out for no Object Lock)".into(),
        ));
    }
    out.retention_days = f.retention_days.as_ref().map(|d| *d.get_ref());
    match out.backend {
        StateBackend::Local => {
            for (key, span) in [
                ("table", f.table.as_ref().map(|s| s.span())),
                ("bucket", f.bucket.as_ref().map(|s| s.span())),
                (
                    "retention_days",
                    f.retention_days.as_ref().map(|s| s.span()),
                ),
            ] {
                if let Some(span) = span {
                    return Err(at(
                        span,
                        format!("[state] {key} only applies to backend = \"aws\""),
                    ));
                }
            }
            if let Some(locks) = &f.locks {
                out.locks = base.join(locks.get_ref());
            }
            if let Some(spool) = &f.spool {
                return Err(at(
                    spool.span(),
                    "[state] spool only applies to backend = \"aws\" (local runs upload nothing)"
                        .into(),
                ));
            }
        }
        StateBackend::Aws => {
            let backend_at = f.backend.as_ref().map(|b| b.span()).unwrap_or(0..0);
            if let Some(locks) = &f.locks {
                return Err(at(
                    locks.span(),
                    "[state] locks only applies to backend = \"local\" (locks are in the table)"
                        .into(),
                ));
            }
            let named = |key: &str, v: &Option<toml::Spanned<String>>| -> Result<String> {
                match v {
                    Some(s) if !s.get_ref().trim().is_empty() => Ok(s.get_ref().clone()),
                    Some(s) => Err(at(s.span(), format!("[state] {key} must not be empty"))),
                    None => Err(at(
                        backend_at.clone(),
                        format!("[state] backend = \"aws\" needs `{key}`"),
                    )),
                }
            };
            if let Some(spool) = &f.spool {
                out.spool = base.join(spool.get_ref());
            }
            out.table = named("table", &f.table)?;
            out.bucket = named("bucket", &f.bucket)?;
            out.prefix = f
                .prefix
                .clone()
                .unwrap_or_else(|| "transcripts".into())
                .trim_matches('/')
                .to_string();
            out.aws = AwsSettings {
                region: f.region.clone(),
                profile: f.profile.clone(),
                endpoint: f.endpoint.clone(),
                max_attempts: f.max_attempts,
            };
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvConfig {
    backend: Backend,
    profile: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    account_id: Option<String>,
    #[serde(default)]
    protected: bool,
    /// sim only: the fleet fixture (relative to runbook.toml); the embedded fleet otherwise.
    fleet: Option<PathBuf>,
    /// sim only: keep the simulated state in this file across processes (relative to runbook.toml).
    state: Option<PathBuf>,
    /// aws only: the SDK's standard-mode retry attempts.
    max_attempts: Option<u32>,
    /// `send` or `capture` (keep messages in memory); default: capture on sim, send on aws.
    notifications: Option<Delivery>,
    /// Every approval in this environment must come from this group of `[approvers]`.
    approvers: Option<String>,
    /// aws only: the local programs `local::run` may start here (a runbook must declare them
    /// too). On the sim no program starts: the fleet's `local_commands` answer.
    #[serde(default)]
    commands: Vec<String>,
}

/// One selected environment, ready to connect.
#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    pub backend: Backend,
    pub aws: AwsSettings,
    pub account_id: Option<String>,
    pub protected: bool,
    /// The sim fixture's text (None: the embedded default fleet).
    pub fleet: Option<String>,
    /// Where the fleet came from, for the transcript.
    pub fleet_source: String,
    /// sim only: the file the simulated state persists in.
    pub sim_state: Option<PathBuf>,
    pub notify: NotifySettings,
    /// The `[approvers]` group every approval here needs (name, members), if the environment
    /// names one.
    pub approvers: Option<(String, Vec<String>)>,
    /// Every `[approvers]` group, for a runbook's `approve(q, #{ group: "name" })`.
    pub approver_groups: BTreeMap<String, Vec<String>>,
    /// Local programs `local::run` may start in this environment (aws backend only).
    pub commands: Vec<String>,
}

impl Environment {
    /// The zero-setup default: the simulated cloud with the embedded fleet.
    pub fn builtin_sim() -> Self {
        Environment {
            name: BUILTIN_SIM.into(),
            backend: Backend::Sim,
            aws: AwsSettings::default(),
            account_id: None,
            protected: false,
            fleet: None,
            fleet_source: "embedded:sim/default-fleet.toml".into(),
            sim_state: None,
            notify: NotifySettings::resolve(&NotifyFile::default(), Delivery::Capture),
            approvers: None,
            approver_groups: BTreeMap::new(),
            commands: Vec::new(),
        }
    }
}

/// Checks `[approvers]`: a Slack user group is named by its id (`slack-group:S0123ABCD`), so a
/// typo is a configuration error, not a group that silently admits nobody at 3 a.m.
fn check_approvers(groups: &BTreeMap<String, Vec<String>>) -> std::result::Result<(), String> {
    for (name, members) in groups {
        for m in members {
            if let Some(id) = m.strip_prefix("slack-group:")
                && (!id.starts_with('S')
                    || id.len() < 2
                    || !id
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
            {
                return Err(format!(
                    "[approvers] {name}: {m:?} is not a Slack user group id (slack-group:S0123ABCD)"
                ));
            }
        }
    }
    Ok(())
}

/// The project's folder, as a path relative to the current one: the nearest folder holding a
/// `runbook.toml`, walking up (`..`, `../..`), or the current folder (an empty path, so
/// `project_root().join("transcripts")` is `transcripts` there). The defaults that name folders
/// of the project (`runbooks/`, `transcripts/`) start from it, so a command run from a subfolder
/// finds the same runbooks and writes its audit trail to the same place as from the root.
pub(crate) fn project_root() -> PathBuf {
    let Ok(cwd) = std::env::current_dir() else {
        return PathBuf::new();
    };
    cwd.ancestors()
        .position(|a| a.join(FILE_NAME).is_file())
        .map(|up| (0..up).map(|_| "..").collect())
        .unwrap_or_default()
}

/// A file or folder of the project named on the command line (as given, from the current
/// folder), else `default` in the project's folder: `hooks.toml`, `alerts.toml` and `drills/`
/// are the same files from a subfolder as from the root, as `runbooks/` and `transcripts/` are.
pub(crate) fn in_project(given: Option<&Path>, default: &str) -> PathBuf {
    given.map_or_else(|| project_root().join(default), Path::to_path_buf)
}

/// The transcripts folder: `RUNBOOK_TRANSCRIPTS`, else `transcripts/` in the project's folder.
pub(crate) fn transcripts_dir() -> PathBuf {
    std::env::var_os("RUNBOOK_TRANSCRIPTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("transcripts"))
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    path: Option<PathBuf>,
    file: ConfigFile,
    state: StateConfig,
    aws_flags: AwsFlags,
}

/// `--profile` and `--region` from the command line: they win over everything else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsFlags {
    pub profile: Option<String>,
    pub region: Option<String>,
}

impl AwsFlags {
    fn is_empty(&self) -> bool {
        self.profile.is_none() && self.region.is_none()
    }
}

impl Config {
    /// Loads `explicit`, or the first `runbook.toml` found walking up from the current folder.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => std::env::current_dir().ok().and_then(|cwd| {
                cwd.ancestors()
                    .map(|a| a.join(FILE_NAME))
                    .find(|p| p.is_file())
            }),
        };
        let Some(path) = path else {
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
            return Ok(Config {
                state: StateConfig::local(&cwd),
                ..Config::default()
            });
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| Error::io("cannot read", &path, e))?;
        let file: ConfigFile =
            toml::from_str(&text).map_err(|e| Error::config(&path, e.to_string()))?;
        check_approvers(&file.approvers).map_err(|e| Error::config(&path, e))?;
        let mut state = resolve_state(&path, &text, file.state.as_ref())?;
        if state.backend == StateBackend::Aws {
            state.aws.resolve(&AwsFlags::default());
        }
        Ok(Config {
            path: Some(path),
            file,
            state,
            aws_flags: AwsFlags::default(),
        })
    }

    /// The configuration with `--profile`/`--region` over every AWS setting it resolves: every
    /// aws environment `select` returns, and the `[state]` table and bucket.
    pub fn with_aws_flags(mut self, flags: AwsFlags) -> Self {
        if self.state.backend == StateBackend::Aws {
            self.state.aws.resolve(&flags);
        }
        self.aws_flags = flags;
        self
    }

    /// The resolved `[state]` section (`local` without one).
    pub fn state(&self) -> &StateConfig {
        &self.state
    }

    /// The top-level `[notifications]`, resolved against the environment variables.
    pub fn notifications(&self, delivery: Delivery) -> NotifySettings {
        NotifySettings::resolve(&self.file.notifications, delivery)
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.file.environments.keys().cloned().collect();
        if !names.iter().any(|n| n == BUILTIN_SIM) {
            names.insert(0, BUILTIN_SIM.into());
        }
        names
    }

    /// A problem in this configuration's file (only an environment the file declared can have one).
    fn invalid(&self, message: String) -> Error {
        Error::config(
            self.path.as_deref().unwrap_or(Path::new(FILE_NAME)),
            message,
        )
    }

    /// `[slack_users]`: who each Slack user is elsewhere (for four-eyes).
    pub fn slack_users(&self) -> &BTreeMap<String, String> {
        &self.file.slack_users
    }

    /// The environment called `name` (or the default one).
    pub fn select(&self, name: Option<&str>) -> Result<Environment> {
        let name = name
            .map(str::to_string)
            .or_else(|| self.file.default.clone())
            .unwrap_or_else(|| BUILTIN_SIM.into());
        let Some(env) = self.file.environments.get(&name) else {
            if name == BUILTIN_SIM {
                let mut sim = Environment::builtin_sim();
                sim.notify = NotifySettings::resolve(&self.file.notifications, Delivery::Capture);
                sim.approver_groups = self.file.approvers.clone();
                return Ok(sim);
            }
            return Err(Error::Usage(format!(
                "unknown environment {name:?}; known: {}{}",
                self.names().join(", "),
                match &self.path {
                    Some(p) => format!(" (from {})", p.display()),
                    None => " (no runbook.toml found)".into(),
                }
            )));
        };
        let base = self
            .path
            .as_deref()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."));
        let (fleet, fleet_source) = match (&env.fleet, env.backend) {
            (Some(rel), Backend::Sim) => {
                let p = base.join(rel);
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| Error::io("cannot read fleet fixture", &p, e))?;
                (Some(text), p.display().to_string())
            }
            (Some(_), Backend::Aws) => {
                return Err(self.invalid(format!(
                    "environment {name}: `fleet` only applies to the sim backend"
                )));
            }
            (None, _) => (None, "embedded:sim/default-fleet.toml".into()),
        };
        let approvers = match &env.approvers {
            Some(group) => match self.file.approvers.get(group) {
                Some(members) => Some((group.clone(), members.clone())),
                None => {
                    return Err(self.invalid(format!(
                        "environment {name}: approvers = {group:?} names no group in [approvers]"
                    )));
                }
            },
            None => None,
        };
        let mut aws = AwsSettings {
            region: env.region.clone(),
            profile: env.profile.clone(),
            endpoint: env.endpoint.clone(),
            max_attempts: env.max_attempts,
        };
        match env.backend {
            Backend::Aws => aws.resolve(&self.aws_flags),
            Backend::Sim if self.aws_flags.is_empty() => {}
            Backend::Sim => {
                return Err(Error::Usage(format!(
                    "--profile and --region apply to an aws environment; {name} is the simulator (its region is its fleet's)"
                )));
            }
        }
        Ok(Environment {
            approvers,
            approver_groups: self.file.approvers.clone(),
            name: name.clone(),
            backend: env.backend,
            aws,
            account_id: env.account_id.clone(),
            protected: env.protected,
            fleet,
            fleet_source,
            sim_state: match (&env.state, env.backend) {
                (Some(rel), Backend::Sim) => Some(base.join(rel)),
                (Some(_), Backend::Aws) => {
                    return Err(self.invalid(format!(
                        "environment {name}: `state` only applies to the sim backend"
                    )));
                }
                (None, _) => None,
            },
            commands: match env.backend {
                Backend::Aws => env.commands.clone(),
                Backend::Sim if env.commands.is_empty() => Vec::new(),
                Backend::Sim => {
                    return Err(self.invalid(format!(
                        "environment {name}: `commands` only applies to the aws backend (on the sim the fleet's local_commands answer)"
                    )));
                }
            },
            notify: NotifySettings::resolve(
                &self.file.notifications,
                env.notifications.unwrap_or(match env.backend {
                    Backend::Sim => Delivery::Capture,
                    Backend::Aws => Delivery::Send,
                }),
            ),
        })
    }
}

/// How to reach AWS, from `runbook.toml`.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint: Option<String>,
    pub max_attempts: Option<u32>,
}

impl AwsSettings {
    /// The AWS CLI's precedence for the profile and the region: the command line's flag, then
    /// the environment (`AWS_PROFILE`; `AWS_REGION`, `AWS_DEFAULT_REGION`), then runbook.toml;
    /// what is still unset comes from the shared config files (`~/.aws/config`, the profile's
    /// `region`) when the SDK loads. The endpoint keeps runbook.toml's word over
    /// `AWS_ENDPOINT_URL` (a configured emulator must not be left by accident).
    fn resolve(&mut self, flags: &AwsFlags) {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        self.region = flags
            .region
            .clone()
            .or_else(|| var("AWS_REGION"))
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| self.region.take());
        self.profile = flags
            .profile
            .clone()
            .or_else(|| var("AWS_PROFILE"))
            .or_else(|| self.profile.take());
    }
}

const DEFAULT_SLACK_API: &str = "https://slack.com/api";

/// Whether notifications are sent or kept in memory (the sim's default, for drills to assert on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    Send,
    Capture,
}

/// `[notifications]` in runbook.toml. Prefer the environment variables for secrets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    pub slack_webhook_url: Option<String>,
    pub slack_bot_token: Option<String>,
    pub slack_api_url: Option<String>,
    pub slack_channel: Option<String>,
    pub teams_webhook_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub delivery: Delivery,
    pub slack_webhook_url: Option<String>,
    pub slack_bot_token: Option<String>,
    pub slack_api_url: String,
    pub slack_channel: Option<String>,
    pub teams_webhook_url: Option<String>,
}

impl NotifySettings {
    /// Environment variables win over the file (a CI secret overrides a checked-in default).
    pub fn resolve(file: &NotifyFile, delivery: Delivery) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        NotifySettings {
            delivery,
            slack_webhook_url: var("SLACK_WEBHOOK_URL").or_else(|| file.slack_webhook_url.clone()),
            slack_bot_token: var("SLACK_BOT_TOKEN").or_else(|| file.slack_bot_token.clone()),
            slack_api_url: var("SLACK_API_URL")
                .or_else(|| file.slack_api_url.clone())
                .unwrap_or_else(|| DEFAULT_SLACK_API.into())
                .trim_end_matches('/')
                .to_string(),
            slack_channel: var("SLACK_CHANNEL").or_else(|| file.slack_channel.clone()),
            teams_webhook_url: var("TEAMS_WEBHOOK_URL").or_else(|| file.teams_webhook_url.clone()),
        }
    }

    /// Values that must be redacted wherever they appear.
    pub fn secrets(&self) -> Vec<String> {
        [
            &self.slack_webhook_url,
            &self.slack_bot_token,
            &self.teams_webhook_url,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_file_the_default_is_the_builtin_sim() {
        let env = Config::default().select(None).unwrap();
        assert_eq!(env.name, "sim");
        assert_eq!(env.backend, Backend::Sim);
        assert!(!env.protected);
    }

    #[test]
    fn environments_are_read_and_unknown_keys_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(
            &path,
            "default = \"prod\"\n[environments.prod]\nbackend = \"aws\"\nregion = \"eu-west-1\"\naccount_id = \"123456789012\"\nprotected = true\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&path)).unwrap();
        let prod = cfg.select(None).unwrap();
        assert_eq!(prod.name, "prod");
        assert!(prod.protected);
        assert_eq!(prod.aws.region.as_deref(), Some("eu-west-1"));
        assert!(cfg.select(Some("staging")).is_err());

        std::fs::write(
            &path,
            "[environments.x]\nbackend = \"aws\"\nregoin = \"x\"\n",
        )
        .unwrap();
        assert!(Config::load(Some(&path)).is_err());
    }

    fn load_text(text: &str) -> (tempfile::TempDir, Result<Config>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, text).unwrap();
        let cfg = Config::load(Some(&path));
        (dir, cfg)
    }

    #[test]
    fn a_slack_user_group_approver_must_be_named_by_its_id() {
        let (_d, cfg) =
            load_text("[approvers]\nleads = [\"slack-group:S0123ABCD\", \"U0CAROL\"]\n");
        assert!(cfg.is_ok());
        let (_d, cfg) = load_text("[approvers]\nleads = [\"slack-group:@leads\"]\n");
        let err = cfg.err().unwrap().to_string();
        assert!(err.contains("is not a Slack user group id"), "{err}");
    }

    #[test]
    fn without_a_state_section_the_backend_is_local_with_locks_beside_the_file() {
        let (dir, cfg) = load_text("[environments.x]\nbackend = \"sim\"\n");
        let state = cfg.unwrap().state().clone();
        assert_eq!(state.backend, StateBackend::Local);
        assert_eq!(state.locks, dir.path().join(".runbook/locks"));
        assert_eq!(state.lease, DEFAULT_LEASE);
    }

    #[test]
    fn an_aws_state_section_is_read_like_an_environment() {
        let (_dir, cfg) = load_text(
            "[state]\nbackend = \"aws\"\ntable = \"rb\"\nbucket = \"b\"\nregion = \"eu-west-1\"\nendpoint = \"http://127.0.0.1:5000\"\nretention_days = 30\nlease = \"45s\"\n",
        );
        let state = cfg.unwrap().state().clone();
        assert_eq!(state.backend, StateBackend::Aws);
        assert_eq!((state.table.as_str(), state.bucket.as_str()), ("rb", "b"));
        assert_eq!(state.prefix, "transcripts");
        assert_eq!(state.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(state.retention_days, Some(30));
        assert_eq!(state.lease, std::time::Duration::from_secs(45));
    }

    #[test]
    fn the_upload_spool_moves_out_of_the_config_folder_with_the_aws_backend_only() {
        let (dir, cfg) = load_text("[state]\nbackend = \"aws\"\ntable = \"t\"\nbucket = \"b\"\n");
        assert_eq!(
            cfg.unwrap().state().spool,
            dir.path().join(".runbook/uploads")
        );
        let (_dir, cfg) = load_text(
            "[state]\nbackend = \"aws\"\ntable = \"t\"\nbucket = \"b\"\nspool = \"/var/lib/runbook/uploads\"\n",
        );
        assert_eq!(
            cfg.unwrap().state().spool,
            Path::new("/var/lib/runbook/uploads")
        );
        let (_d, cfg) = load_text("[state]\nspool = \"/var/lib/runbook/uploads\"\n");
        let err = cfg.unwrap_err().to_string();
        assert!(
            err.contains("runbook.toml:2:9: [state] spool only applies to backend = \"aws\""),
            "{err}"
        );
    }

    #[test]
    fn state_errors_name_the_key_by_file_line_and_column() {
        let (_d, cfg) = load_text("default = \"sim\"\n[state]\nbackend = \"aws\"\ntable = \"t\"\n");
        let err = cfg.unwrap_err().to_string();
        assert!(
            err.contains("runbook.toml:3:11: [state] backend = \"aws\" needs `bucket`"),
            "{err}"
        );
        let (_d, cfg) = load_text("[state]\nlease = \"soon\"\n");
        let err = cfg.unwrap_err().to_string();
        assert!(err.contains("runbook.toml:2:9: [state] lease:"), "{err}");
        let (_d, cfg) = load_text("[state]\nbucket = \"b\"\n");
        let err = cfg.unwrap_err().to_string();
        assert!(
            err.contains("runbook.toml:2:10: [state] bucket only applies to backend = \"aws\""),
            "{err}"
        );
        let (_d, cfg) = load_text("[state]\nbackend = \"dynamo\"\n");
        assert!(
            cfg.unwrap_err().to_string().contains("line 2"),
            "unknown backends are refused by position"
        );
    }
}
