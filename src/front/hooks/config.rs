//! `hooks.toml`: which alerts start which runbooks, and the limits unattended runs are held to.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:9750"
//! probe_listen = "127.0.0.1:9751" # optional: /healthz and /metrics only, never behind alerts
//! health_timeout = "800ms"     # /healthz's wait for the state table (aws backend)
//! workers = 4                  # runs at once (the concurrency guardrail)
//! queue = 32                   # runs waiting for a worker; beyond this, 503 (recorded)
//!
//! [auth]
//! alertmanager_token_env = "RUNBOOK_ALERTMANAGER_TOKEN"
//! generic_secret_env = "RUNBOOK_HOOK_SECRET"
//! slack_signing_secret_env = "RUNBOOK_SLACK_SIGNING_SECRET"
//! slack_interactions = true    # Slack approval clicks come here: the secret must be set
//!
//! [guardrails]
//! dedupe_window = "15m"
//! cooldown = "30m"
//! max_runs_per_hour = 20
//!
//! [[route]]
//! name = "cpu-high"
//! alert = "ec2-cpu-high"
//! runbook = "ec2-high-cpu@1.0.0"
//! params = { instance_id = "{labels.instance_id}" }
//! target = "{labels.instance_id}"   # the cooldown key: required with params
//! ```
//!
//! Secrets are never in the file: it names the environment variables that hold them. The file is
//! checked whole before anything listens (every route's runbook found at its pinned version, every
//! parameter it fills declared by that runbook), so a typo is a start-up error, not a 3 a.m. one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::Alert;
use crate::base::error::{Error, Result};
use crate::sandbox::recorder::kill_switch_set;

pub const FILE_NAME: &str = "hooks.toml";

/// The smallest `server.sim_history` accepted.
pub const MIN_SIM_HISTORY: usize = 100;

/// The longest header or body timeout accepted (also keeps `Instant + timeout` far from overflow).
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long `runbook serve --healthcheck` waits for `/healthz` (a container runtime's own
/// health-check timeout is longer, so a hung server is reported by us, with the reason).
pub(crate) const HEALTHCHECK_WAIT: Duration = Duration::from_secs(5);

/// The longest `server.health_timeout`: `/healthz` must answer within [`HEALTHCHECK_WAIT`].
const MAX_HEALTH_TIMEOUT: Duration = Duration::from_secs(4);

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

fn opt_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
        .transpose()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksFile {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub auth: AuthSettings,
    #[serde(default)]
    pub sns: SnsSettings,
    #[serde(default)]
    pub guardrails: GuardrailSettings,
    #[serde(default)]
    pub escalation: EscalationSettings,
    #[serde(default)]
    pub retention: RetentionSettings,
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub listen: String,
    /// Runs executing at once.
    pub workers: usize,
    /// Accepted runs waiting for a worker.
    pub queue: usize,
    /// Larger request bodies are answered 413.
    pub max_body: usize,
    /// Where run transcripts and the hook journal go (relative to hooks.toml).
    pub transcripts: PathBuf,
    /// Guardrail state (dedupe, cooldowns, hourly counts, breakers), kept across restarts.
    pub state: Option<PathBuf>,
    /// On SIGTERM, how long running runs may go on before they are aborted.
    #[serde(deserialize_with = "duration")]
    pub drain: Duration,
    /// Finished runs `GET /runs` remembers.
    pub history: usize,
    /// Entries of a simulated cloud's per-run history (its mutating calls and SSM commands with
    /// their output) kept: the runs of a server share one simulated cloud for weeks.
    pub sim_history: usize,
    /// A request's head must arrive within this (also how long an idle connection stays
    /// open): a client that opens a connection and sends nothing, or sends a header a byte at
    /// a time, is cut off instead of holding a slot.
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// A request's body must arrive within this once its head did (answered 408 otherwise).
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog until one closes
    /// (idle ones close after `header_timeout`, so a flood of idle connections cannot starve
    /// a real alert for longer than that).
    pub max_connections: usize,
    /// A second address that serves only `GET /healthz` and `GET /metrics`, on connections of
    /// its own: a health check or a scrape never waits behind alerts for a slot, so a server
    /// that is only busy is not restarted as hung, and an overload stays observable.
    pub probe_listen: Option<String>,
    /// How long `/healthz` waits for the state table (aws backend) before it answers
    /// `state_unavailable`: a probe must learn that the table is slow from us, with the reason,
    /// before its own timeout gives up on a server that is only waiting (Kubernetes' default
    /// probe timeout is 1 s; `serve --healthcheck` waits 5 s).
    #[serde(deserialize_with = "duration")]
    pub health_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:9750".into(),
            workers: 4,
            queue: 32,
            max_body: 256 * 1024,
            transcripts: PathBuf::from("transcripts/hooks"),
            state: None,
            drain: Duration::from_secs(60),
            history: 1000,
            sim_history: 1000,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 256,
            probe_listen: None,
            health_timeout: Duration::from_millis(800),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// The variable holding the bearer token Alertmanager sends (its `http_config.authorization`).
    pub alertmanager_token_env: String,
    /// The variable holding the generic webhook's HMAC-SHA256 key.
    pub generic_secret_env: String,
    /// The variable holding the token for `GET /runs` and `POST /admin/...`.
    pub admin_token_env: String,
    /// The variable holding the Slack app's signing secret (`POST /hooks/slack/interactions`).
    pub slack_signing_secret_env: String,
    /// Slack approval clicks are expected here: the signing secret must then be set, or
    /// `serve --check` and `serve` refuse the configuration (without it, clicks are taken only
    /// when the secret happens to be set).
    pub slack_interactions: bool,
    /// Signed generic requests older (or newer) than this are refused as replays.
    #[serde(deserialize_with = "duration")]
    pub replay_window: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            alertmanager_token_env: "RUNBOOK_ALERTMANAGER_TOKEN".into(),
            generic_secret_env: "RUNBOOK_HOOK_SECRET".into(),
            admin_token_env: "RUNBOOK_ADMIN_TOKEN".into(),
            slack_signing_secret_env: "RUNBOOK_SLACK_SIGNING_SECRET".into(),
            slack_interactions: false,
            replay_window: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnsSettings {
    /// Topic ARNs whose messages are accepted (and whose subscriptions are confirmed).
    pub topics: Vec<String>,
    /// Messages older than this (by their signed Timestamp) are refused as replays.
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
    /// A regex signing-certificate URLs must match (default: AWS's).
    pub cert_url: Option<String>,
    /// A regex SubscribeURLs must match before they are visited (default: AWS's).
    pub subscribe_url: Option<String>,
}

impl Default for SnsSettings {
    fn default() -> Self {
        SnsSettings {
            topics: Vec::new(),
            max_age: Duration::from_secs(3600),
            cert_url: None,
            subscribe_url: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardrailSettings {
    /// The same alert (fingerprint) again within this window is acknowledged, not run.
    #[serde(deserialize_with = "duration")]
    pub dedupe_window: Duration,
    /// After a run for a target, further runs of that runbook on it wait this long.
    #[serde(deserialize_with = "duration")]
    pub cooldown: Duration,
    /// Runs started in any hour, all runbooks together; reaching it opens the breaker.
    pub max_runs_per_hour: usize,
    /// Runs of one runbook in any hour; reaching it opens that runbook's breaker.
    pub max_runs_per_hour_per_runbook: usize,
    /// The most distinct resources one run may change (checked before every write).
    pub max_resources: Option<usize>,
    /// While this file exists no run starts and no write is sent.
    pub kill_switch: Option<PathBuf>,
    /// While this SSM parameter (in the run's environment) is set, no write is sent.
    pub kill_switch_parameter: Option<String>,
}

impl Default for GuardrailSettings {
    fn default() -> Self {
        GuardrailSettings {
            dedupe_window: Duration::from_secs(15 * 60),
            cooldown: Duration::from_secs(30 * 60),
            max_runs_per_hour: 20,
            max_runs_per_hour_per_runbook: 6,
            max_resources: Some(5),
            kill_switch: None,
            kill_switch_parameter: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationSettings {
    /// The tier-2 channel (default: the notifications' channel or webhook).
    pub channel: Option<String>,
    /// Who is paged in the message, e.g. `@oncall-engineer`.
    pub mention: Option<String>,
    /// The same alert escalated for the same reason again within this is not sent again
    /// (journaled alerts still say what happened to each).
    #[serde(deserialize_with = "duration")]
    pub dedupe_window: Duration,
    /// Escalations sent in any hour; beyond it they are counted, and the next one sent says
    /// how many were held back.
    pub max_per_hour: usize,
}

impl Default for EscalationSettings {
    fn default() -> Self {
        EscalationSettings {
            channel: None,
            mention: None,
            dedupe_window: Duration::from_secs(15 * 60),
            max_per_hour: 30,
        }
    }
}

/// What `serve` (every `every`) and `runbook transcript prune` delete under the transcripts
/// folder, and when the hook journal moves on to a new file. Without `keep_days` and
/// `max_size`, nothing is ever deleted (the default: the audit trail is shipped first, see
/// docs/memory.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Runs (transcript, notes, approvals) and closed hook journals last written more than this
    /// many days ago are deleted.
    pub keep_days: Option<u32>,
    /// The transcripts folder is kept under this size ("20GB", "500MB", or bytes): the oldest
    /// runs and closed journals are deleted first.
    #[serde(default, deserialize_with = "opt_size")]
    pub max_size: Option<u64>,
    /// How often `serve` applies the policy (and measures the folder for `/metrics`).
    #[serde(deserialize_with = "duration")]
    pub every: Duration,
    /// The hook journal moves on to a new file at this size ("64MB"; "0" never).
    #[serde(deserialize_with = "size")]
    pub journal_max_size: u64,
    /// And at the first write of each UTC day.
    pub journal_daily: bool,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            keep_days: None,
            max_size: None,
            every: Duration::from_secs(600),
            journal_max_size: 64 * 1024 * 1024,
            journal_daily: true,
        }
    }
}

/// A size: bytes, or a number with `KB`, `MB`, `GB`, `TB` (powers of 1000) or `KiB`, `MiB`,
/// `GiB`, `TiB` (powers of 1024). Overflow is refused.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 20GB, 500MB, 1048576)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?}: unknown size unit {other:?} (KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A size as text or a plain integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeText {
    Bytes(u64),
    Text(String),
}

fn size<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    match SizeText::deserialize(d)? {
        SizeText::Bytes(n) => Ok(n),
        SizeText::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
    }
}

fn opt_size<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    size(d).map(Some)
}

/// One routing rule: which alerts, which runbook, with what.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    /// The alert name (Alertmanager `alertname`, CloudWatch alarm name, generic `alert`).
    pub alert: String,
    /// Labels (or alarm dimensions) that must all have these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Only alerts from this source.
    pub source: Option<super::Source>,
    /// `runbook-id@version`: unattended runs are pinned, never "whatever is in the folder now".
    pub runbook: String,
    /// The environment (from runbook.toml); default: its default.
    pub environment: Option<String>,
    /// Parameters: literal text with `{labels.X}`, `{annotations.X}`, `{alert.name}` or
    /// `{alert.fingerprint}` filled from the alert.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The cooldown key (same placeholders): what the runbook acts on, e.g.
    /// `{labels.instance_id}`. Required when the route has parameters: keyed on every
    /// parameter, an alert could dodge the cooldown by varying an unrelated one (a pause).
    pub target: Option<String>,
    /// Steps that ask for confirmation may run (the rule is the confirmation, recorded as such).
    #[serde(default)]
    pub allow_confirm: bool,
    /// The environment may be protected (the rule confirms it, recorded as such).
    #[serde(default)]
    pub allow_protected: bool,
    /// Overrides of the global limits for this route.
    pub max_resources: Option<usize>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub cooldown: Option<Duration>,
}

impl Route {
    pub fn matches(&self, alert: &Alert) -> bool {
        alert.name == self.alert
            && self.source.is_none_or(|s| s == alert.source)
            && self
                .labels
                .iter()
                .all(|(k, v)| alert.labels.get(k) == Some(v))
    }

    /// The parameters for `alert`, or the placeholder that could not be filled.
    pub fn params_for(&self, alert: &Alert) -> std::result::Result<Vec<(String, String)>, String> {
        self.params
            .iter()
            .map(|(k, template)| Ok((k.clone(), fill(template, alert)?)))
            .collect()
    }

    /// The cooldown key for `alert`: the runbook and the target. A route without parameters
    /// and without `target` has one target: the runbook itself (validation refuses a route
    /// with parameters and no `target`).
    pub fn target_for(&self, alert: &Alert) -> std::result::Result<String, String> {
        let target = match &self.target {
            Some(t) => fill(t, alert)?,
            None => String::new(),
        };
        Ok(format!("{}|{target}", self.runbook_id()))
    }

    /// The target a run of this route locks (the filled-in `target`), if the route names one.
    pub fn lock_target(&self, alert: &Alert) -> Vec<String> {
        let filled = self.target.as_ref().and_then(|t| fill(t, alert).ok());
        filled.into_iter().filter(|t| !t.is_empty()).collect()
    }

    /// The runbook id without its version pin.
    pub fn runbook_id(&self) -> &str {
        self.runbook.split('@').next().unwrap_or(&self.runbook)
    }
}

/// Fills `{labels.X}`, `{annotations.X}`, `{alert.name}`, `{alert.fingerprint}` in `template`;
/// `{labels.X|text}` gives a default. A placeholder the alert cannot fill (and that has no
/// default) is an error: a run with a guessed parameter is worse than no run.
pub fn fill(template: &str, alert: &Alert) -> std::result::Result<String, String> {
    static PLACEHOLDER: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\{([a-z]+)\.([^{}]+)\}").expect("valid regex")
    });
    let mut missing = None;
    let filled = PLACEHOLDER.replace_all(template, |c: &regex::Captures| {
        let (scope, key) = (&c[1], &c[2]);
        let (key, default) = match key.split_once('|') {
            Some((k, d)) => (k, Some(d)),
            None => (key, None),
        };
        let value = match scope {
            "labels" => alert.labels.get(key).cloned(),
            "annotations" => alert.annotations.get(key).cloned(),
            "alert" if key == "name" => Some(alert.name.clone()),
            "alert" if key == "fingerprint" => Some(alert.fingerprint.clone()),
            _ => None,
        }
        .or_else(|| default.map(str::to_string));
        value.unwrap_or_else(|| {
            missing.get_or_insert_with(|| c[0].to_string());
            String::new()
        })
    });
    match missing {
        Some(m) => Err(format!("the alert has no value for {m}")),
        None => Ok(filled.into_owned()),
    }
}

/// The loaded and checked hooks configuration.
#[derive(Debug, Clone)]
pub struct Hooks {
    pub file: HooksFile,
    /// The folder paths in the file are relative to.
    pub base: PathBuf,
    pub path: PathBuf,
}

impl Hooks {
    pub fn load(path: &Path) -> Result<Hooks> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
        Self::from_text(&text, path)
    }

    /// [`load`](Self::load) of text already in memory, as if read from `path`. For the fuzz
    /// targets (`fuzz/`).
    #[doc(hidden)]
    pub fn from_text(text: &str, path: &Path) -> Result<Hooks> {
        let file: HooksFile =
            toml::from_str(text).map_err(|e| Error::config(path, e.to_string()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let hooks = Hooks {
            file,
            base,
            path: path.to_path_buf(),
        };
        hooks.validate()?;
        Ok(hooks)
    }

    fn validate(&self) -> Result<()> {
        let f = &self.file;
        let mut problems = Vec::new();
        if f.server.workers == 0 {
            problems.push("server.workers must be at least 1".to_string());
        }
        if f.escalation.max_per_hour == 0 {
            problems.push(
                "escalation.max_per_hour must be at least 1 (0 would never call a person)"
                    .to_string(),
            );
        }
        if f.server.max_connections == 0 {
            problems.push("server.max_connections must be at least 1".to_string());
        }
        // A run polls its SSM command while others send theirs: the bound must leave it there.
        if f.server.sim_history < MIN_SIM_HISTORY {
            problems.push(format!(
                "server.sim_history must be at least {MIN_SIM_HISTORY} (a running run's SSM command must stay readable)"
            ));
        }
        if f.retention.every < Duration::from_secs(1) {
            problems.push("retention.every must be at least 1s".to_string());
        }
        let under_probe = format!(
            " (under the {} `serve --healthcheck` waits, so a slow state table is reported with its reason, not as a hung server)",
            humantime::format_duration(HEALTHCHECK_WAIT)
        );
        for (key, d, max, why) in [
            ("header_timeout", f.server.header_timeout, MAX_TIMEOUT, ""),
            ("body_timeout", f.server.body_timeout, MAX_TIMEOUT, ""),
            (
                "health_timeout",
                f.server.health_timeout,
                MAX_HEALTH_TIMEOUT,
                under_probe.as_str(),
            ),
        ] {
            if d.is_zero() || d > max {
                problems.push(format!(
                    "server.{key} must be between 1ms and {}{why}",
                    humantime::format_duration(max)
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for r in &f.routes {
            if !names.insert(&r.name) {
                problems.push(format!("route {:?} is defined twice", r.name));
            }
            if !r.params.is_empty() && r.target.is_none() {
                problems.push(format!(
                    "route {:?}: set `target` (the cooldown key, e.g. \"{{labels.instance_id}}\"): a route with parameters needs one, or varying any parameter would dodge the cooldown",
                    r.name
                ));
            }
            if !r.runbook.contains('@') {
                problems.push(format!(
                    "route {:?}: pin the runbook's version ({}@X.Y.Z): unattended runs never take whatever is in the folder",
                    r.name, r.runbook
                ));
            }
        }
        for pattern in [&f.sns.cert_url, &f.sns.subscribe_url]
            .into_iter()
            .flatten()
        {
            if let Err(e) = regex::Regex::new(pattern) {
                problems.push(format!("sns: bad pattern {pattern:?}: {e}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::config(&self.path, problems.join("; ")))
        }
    }

    /// A path from the file, relative to the file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() || self.base == Path::new(".") {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    pub fn transcripts(&self) -> PathBuf {
        self.resolve(&self.file.server.transcripts)
    }

    pub fn state_path(&self) -> PathBuf {
        match &self.file.server.state {
            Some(p) => self.resolve(p),
            None => self.transcripts().join("guardrails.json"),
        }
    }

    pub fn kill_switch(&self) -> Option<PathBuf> {
        self.file
            .guardrails
            .kill_switch
            .as_deref()
            .map(|p| self.resolve(p))
    }

    /// Whether the kill switch is set (see [`kill_switch_set`]).
    pub fn kill_switch_set(&self) -> bool {
        self.kill_switch().is_some_and(|p| kill_switch_set(&p))
    }

    /// The first route matching `alert`.
    pub fn route(&self, alert: &Alert) -> Option<&Route> {
        self.file.routes.iter().find(|r| r.matches(alert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_bytes_with_decimal_or_binary_units_and_overflow_is_refused() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("20GB"), Ok(20_000_000_000));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("500mb"), Ok(500_000_000));
        assert!(parse_size("GB").is_err());
        assert!(
            parse_size("99999999999TB")
                .unwrap_err()
                .contains("too large")
        );
    }
    use crate::front::hooks::Source;

    fn alert(labels: &[(&str, &str)]) -> Alert {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Alert {
            source: Source::Alertmanager,
            name: "ec2-cpu-high".into(),
            firing: true,
            fingerprint: Alert::fingerprint_of(Source::Alertmanager, "ec2-cpu-high", &labels),
            labels,
            annotations: BTreeMap::new(),
            starts_at: None,
        }
    }

    fn route(toml_text: &str) -> Route {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn fills_placeholders_and_refuses_missing_ones() {
        let a = alert(&[("instance_id", "i-0abc1234"), ("env", "prod")]);
        assert_eq!(
            fill("{labels.instance_id} in {labels.env} ({alert.name})", &a).unwrap(),
            "i-0abc1234 in prod (ec2-cpu-high)"
        );
        assert_eq!(fill("{labels.pause|0s}", &a).unwrap(), "0s");
        assert_eq!(fill("{labels.env|staging}", &a).unwrap(), "prod");
        let err = fill("{labels.missing}", &a).unwrap_err();
        assert!(err.contains("{labels.missing}"), "{err}");
        assert_eq!(fill("literal", &a).unwrap(), "literal");
    }

    #[test]
    fn label_values_are_never_expanded_again() {
        let a = alert(&[
            ("instance_id", "{labels.secret}{alert.fingerprint}"),
            ("secret", "s3cr3t"),
        ]);
        assert_eq!(
            fill("{labels.instance_id}", &a).unwrap(),
            "{labels.secret}{alert.fingerprint}"
        );
    }

    #[test]
    fn only_the_routes_declared_params_are_filled() {
        let r = route(
            r#"name = "r"
               alert = "ec2-cpu-high"
               runbook = "ec2-high-cpu@1.0.0"
               params = { instance_id = "{labels.instance_id}" }
               target = "{labels.instance_id}""#,
        );
        let a = alert(&[
            ("instance_id", "i-1"),
            ("service", "rm -rf /"),
            ("pause", "1y"),
        ]);
        assert_eq!(
            r.params_for(&a).unwrap(),
            vec![("instance_id".to_string(), "i-1".to_string())]
        );
    }

    #[test]
    fn matches_name_labels_and_source() {
        let r = route(
            r#"name = "r"
               alert = "ec2-cpu-high"
               labels = { env = "prod" }
               runbook = "ec2-high-cpu@1.0.0""#,
        );
        assert!(r.matches(&alert(&[("env", "prod"), ("x", "y")])));
        assert!(!r.matches(&alert(&[("env", "staging")])));
        assert!(!r.matches(&alert(&[])));
        let mut other = alert(&[("env", "prod")]);
        other.name = "ec2-memory-high".into();
        assert!(!r.matches(&other));
        let sns_only = route(
            r#"name = "r"
               alert = "ec2-cpu-high"
               source = "sns"
               runbook = "ec2-high-cpu@1.0.0""#,
        );
        assert!(!sns_only.matches(&alert(&[])));
    }

    fn hooks_with(routes: &str) -> Result<Hooks> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hooks.toml");
        std::fs::write(&path, routes).unwrap();
        Hooks::load(&path)
    }

    #[test]
    fn a_route_with_params_must_name_its_target() {
        let err = hooks_with(
            r#"[[route]]
               name = "r"
               alert = "ec2-cpu-high"
               runbook = "ec2-high-cpu@1.0.0"
               params = { instance_id = "{labels.instance_id}", pause = "{labels.pause|0s}" }"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("set `target`"), "{err}");
        let ok = hooks_with(
            r#"[[route]]
               name = "r"
               alert = "ec2-cpu-high"
               runbook = "ec2-high-cpu@1.0.0"
               params = { instance_id = "{labels.instance_id}", pause = "{labels.pause|0s}" }
               target = "{labels.instance_id}""#,
        )
        .unwrap();
        // The pause does not change the target: varying it cannot dodge the cooldown.
        let r = &ok.file.routes[0];
        let a = alert(&[("instance_id", "i-0abc1234"), ("pause", "1ms")]);
        let b = alert(&[("instance_id", "i-0abc1234"), ("pause", "2ms")]);
        assert_eq!(r.target_for(&a).unwrap(), r.target_for(&b).unwrap());
        assert_eq!(r.target_for(&a).unwrap(), "ec2-high-cpu|i-0abc1234");
    }

    #[test]
    fn a_kill_switch_that_cannot_be_checked_counts_as_set() {
        let dir = tempfile::tempdir().unwrap();
        let stop = dir.path().join("STOP");
        assert!(!kill_switch_set(&stop));
        std::fs::write(&stop, "").unwrap();
        assert!(kill_switch_set(&stop));
        std::fs::remove_file(&stop).unwrap();
        // A dangling symlink: something was put there on purpose.
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &stop).unwrap();
        assert!(kill_switch_set(&stop));
        std::fs::remove_file(&stop).unwrap();
        // A symlink loop cannot be resolved at all.
        std::os::unix::fs::symlink(&stop, &stop).unwrap();
        assert!(kill_switch_set(&stop));
        let inside = stop.join("STOP");
        assert!(
            kill_switch_set(&inside),
            "a path through the loop fails closed"
        );
    }
}
