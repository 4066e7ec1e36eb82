//! The admission guardrails: what decides whether a routed alert may start a run.
//!
//! The checks, in order (the first that refuses decides, and is recorded):
//!
//! 1. **dedupe**: the same fingerprint within `dedupe_window` is acknowledged, not run
//!    (Alertmanager re-sends firing alerts; SNS retries deliveries).
//! 2. **kill switch**: while the file exists (or cannot be checked), nothing starts; the refusal
//!    is not remembered by dedupe, so a still-firing alert runs once the switch is removed.
//! 3. **protected**: a protected environment only with a route that allows it.
//! 4. **breaker**: an open breaker (overall or the runbook's) refuses until a person resets it.
//! 5. **cooldown**: a runbook that ran on a target recently does not run on it again: if the
//!    alert is back, the remediation did not work, and repeating it is a loop, not a fix.
//! 6. **rate**: the run that would exceed the hourly limit (overall or per runbook) opens the
//!    breaker instead of starting. A flood of alerts is an incident in itself; a person decides.
//!
//! The state is wall-clock based and saved to a file, so a restart neither forgets an open
//! breaker nor re-runs an alert it already handled.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::GuardrailSettings;
use crate::base::digest::Digest;
use crate::services::state::aws::AwsStore;
use crate::services::state::{Admission, Refused as Shared, Ticket};
use std::sync::Arc;

const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: i64 = 60_000;

/// Why an alert was not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Deduplicated,
    KillSwitch,
    Protected,
    BreakerOpen {
        scope: String,
    },
    Cooldown {
        until_ms: i64,
    },
    /// This alert tripped the breaker.
    RateLimited {
        scope: String,
        limit: usize,
    },
    /// The shared state (`[state] backend = "aws"`) could not decide: refused, so that no
    /// replica runs what the others cannot count (the sender retries the 503).
    StateUnavailable {
        detail: String,
    },
}

impl Refusal {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Refusal::Deduplicated => "deduplicated",
            Refusal::KillSwitch => "kill_switch",
            Refusal::Protected => "protected",
            Refusal::BreakerOpen { .. } => "breaker_open",
            Refusal::Cooldown { .. } => "cooldown",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::StateUnavailable { .. } => "state_unavailable",
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Refusal::Deduplicated => "the same alert was handled within the dedupe window".into(),
            Refusal::KillSwitch => "the kill switch is set".into(),
            Refusal::Protected => {
                "the environment is protected and the route does not allow it".into()
            }
            Refusal::BreakerOpen { scope } => {
                format!("the circuit breaker ({scope}) is open until a person resets it")
            }
            Refusal::Cooldown { until_ms } => format!(
                "the runbook ran on this target recently; cooldown until {}",
                ms_to_rfc3339(*until_ms)
            ),
            Refusal::RateLimited { scope, limit } => format!(
                "{limit} runs in the last hour ({scope}): the breaker is now open until a person resets it"
            ),
            Refusal::StateUnavailable { detail } => {
                format!("the shared guardrail state cannot be reached: {detail}")
            }
        }
    }

    /// Whether a person should hear about it. Dedupe is routine; everything else means the
    /// automation stepped back from an alert that is still firing.
    pub(crate) fn escalates(&self) -> bool {
        !matches!(self, Refusal::Deduplicated | Refusal::BreakerOpen { .. })
    }
}

fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Breaker {
    pub opened_at: String,
    pub reason: String,
}

/// What the gate remembers (saved as JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct GateState {
    /// A digest of each fingerprint → when it was last seen (Unix ms). Digests, not the
    /// fingerprints: 16 bytes an entry whatever a sender puts in a fingerprint, in memory and in
    /// the file saved every second (45,000 entries at 50 alerts/s in the default window).
    #[serde(default)]
    seen_digests: BTreeMap<Digest, i64>,
    /// What versions before round 6 kept instead: the fingerprints themselves. Read from an
    /// older file and folded into `seen_digests` by [`load_state`]; never written.
    #[serde(default, skip_serializing)]
    seen: BTreeMap<String, i64>,
    /// runbook|target → until when it cools down (Unix ms; the route's cooldown or the global).
    #[serde(default)]
    cooldown_until: BTreeMap<String, i64>,
    /// The runs admitted in the last hour, per runbook and minute.
    #[serde(default)]
    hourly: Hourly,
    /// What versions before round 5 kept instead: one (when, runbook) per run. Read from an
    /// older file and folded into `hourly` by [`load_state`]; never written.
    #[serde(default, skip_serializing)]
    starts: VecDeque<(i64, String)>,
    /// Open breakers: `*` for the overall one, else a runbook id.
    #[serde(default)]
    pub breakers: BTreeMap<String, Breaker>,
}

impl GateState {
    /// Entries of each map: fingerprints seen, cooldowns, starts of the last hour, breakers.
    pub(crate) fn sizes(&self) -> [(&'static str, usize); 4] {
        [
            ("guard_fingerprints_seen", self.seen_digests.len()),
            ("guard_cooldowns", self.cooldown_until.len()),
            ("guard_hourly_starts", self.hourly.entries()),
            ("guard_breakers", self.breakers.len()),
        ]
    }
}

/// The runs admitted in the last hour, counted per runbook and minute: runbook -> (minute since
/// the Unix epoch, runs), oldest first. At most 61 entries a runbook whatever the alert rate (one
/// entry a run was 180,000 at 50 alerts/s, scanned on every admission and saved every second).
/// A minute's runs count until the whole minute is an hour old, so a run counts for between 60
/// and 61 minutes: the limit errs towards refusing, never towards letting one more run start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Hourly(BTreeMap<String, VecDeque<(i64, u32)>>);

impl Hourly {
    fn add(&mut self, runbook: &str, now_ms: i64) {
        let minute = now_ms.div_euclid(MINUTE_MS);
        let q = self.0.entry(runbook.to_string()).or_default();
        match q.back_mut() {
            // A clock that stepped back counts in the newest minute, keeping the order.
            Some((last, n)) if *last >= minute => *n = n.saturating_add(1),
            _ => q.push_back((minute, 1)),
        }
    }

    /// Takes back the latest run of `runbook` (an admission cancelled right after it was made).
    fn take_back(&mut self, runbook: &str) {
        let Some(q) = self.0.get_mut(runbook) else {
            return;
        };
        if let Some((_, n)) = q.back_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                q.pop_back();
            }
        }
        if q.is_empty() {
            self.0.remove(runbook);
        }
    }

    /// Drops the minutes that ended an hour or more before `now_ms`.
    fn prune(&mut self, now_ms: i64) {
        let ended_an_hour_ago = |minute: i64| {
            now_ms.saturating_sub(minute.saturating_add(1).saturating_mul(MINUTE_MS)) >= HOUR_MS
        };
        self.0.retain(|_, q| {
            while q.front().is_some_and(|(m, _)| ended_an_hour_ago(*m)) {
                q.pop_front();
            }
            !q.is_empty()
        });
    }

    fn of(&self, runbook: &str) -> usize {
        self.0.get(runbook).map_or(0, Self::sum)
    }

    fn total(&self) -> usize {
        self.0.values().map(Self::sum).sum()
    }

    fn sum(q: &VecDeque<(i64, u32)>) -> usize {
        q.iter()
            .map(|(_, n)| usize::try_from(*n).unwrap_or(usize::MAX))
            .fold(0, usize::saturating_add)
    }

    /// Entries kept (runbook-minutes), for the metrics.
    fn entries(&self) -> usize {
        self.0.values().map(VecDeque::len).sum()
    }
}

/// One admission request: everything the gate needs to know about a routed alert.
pub(crate) struct Candidate<'a> {
    pub fingerprint: &'a str,
    pub runbook: &'a str,
    pub target: &'a str,
    pub cooldown: Option<Duration>,
    pub protected_refused: bool,
    pub kill_switch: bool,
}

pub(crate) struct Gate {
    settings: GuardrailSettings,
    pub state: GateState,
    /// Set when the state changed since it was last saved.
    pub dirty: bool,
    /// When the maps were last pruned (Unix ms): once a second is enough, every admission
    /// would be a scan of thousands of entries at hundreds of alerts a second.
    last_prune: i64,
    /// The guardrails every replica shares (`[state] backend = "aws"`): they decide, and
    /// `state.breakers` only mirrors what this replica saw, for `/healthz` and the metrics.
    shared: Option<Arc<AwsStore>>,
}

/// What an admission changed, so it can be taken back when the run cannot be queued.
pub(crate) struct Admitted {
    prev_seen: Option<i64>,
    prev_cooldown: Option<i64>,
    /// What the shared admission wrote.
    ticket: Option<Ticket>,
}

/// A breaker opened on this admission, so the gate's state must be saved. (Which breaker, and
/// why, is the refusal's own description.)
pub(crate) struct Opened;

impl Gate {
    pub(crate) fn new(settings: GuardrailSettings, state: GateState) -> Self {
        Gate {
            settings,
            state,
            dirty: false,
            last_prune: i64::MIN,
            shared: None,
        }
    }

    /// Decides with the shared guardrails when there are some (the local state is then only a
    /// mirror, started empty: a breaker from a local past does not refuse for the team).
    pub(crate) fn with_shared(mut self, shared: Option<Arc<AwsStore>>) -> Self {
        if shared.is_some() {
            self.state = GateState::default();
        }
        self.shared = shared;
        self
    }

    /// Decides on one candidate at `now_ms`; on `Ok` the run counts as started.
    pub(crate) fn admit(
        &mut self,
        c: &Candidate,
        now_ms: i64,
    ) -> Result<Admitted, (Refusal, Option<Opened>)> {
        if let Some(shared) = self.shared.clone() {
            return self.admit_shared(&shared, c, now_ms);
        }
        self.prune(now_ms);
        let s = &mut self.state;
        let window = millis(self.settings.dedupe_window);
        let fingerprint = Digest::of(c.fingerprint);
        if let Some(&at) = s.seen_digests.get(&fingerprint)
            && now_ms.saturating_sub(at) < window
        {
            return Err((Refusal::Deduplicated, None));
        }
        // Before the alert is remembered: the switch is temporary by nature, and the alert that
        // is still firing once it is removed must run, not be "deduplicated".
        if c.kill_switch {
            return Err((Refusal::KillSwitch, None));
        }
        let prev_seen = s.seen_digests.insert(fingerprint, now_ms);
        self.dirty = true;
        if c.protected_refused {
            return Err((Refusal::Protected, None));
        }
        for scope in ["*", c.runbook] {
            if s.breakers.contains_key(scope) {
                return Err((
                    Refusal::BreakerOpen {
                        scope: scope_name(scope),
                    },
                    None,
                ));
            }
        }
        if let Some(&until_ms) = s.cooldown_until.get(c.target)
            && now_ms < until_ms
        {
            return Err((Refusal::Cooldown { until_ms }, None));
        }
        let overall = s.hourly.total();
        let mine = s.hourly.of(c.runbook);
        let tripped = if overall >= self.settings.max_runs_per_hour {
            Some(("*", self.settings.max_runs_per_hour))
        } else if mine >= self.settings.max_runs_per_hour_per_runbook {
            Some((c.runbook, self.settings.max_runs_per_hour_per_runbook))
        } else {
            None
        };
        if let Some((scope, limit)) = tripped {
            let refusal = Refusal::RateLimited {
                scope: scope_name(scope),
                limit,
            };
            let reason = refusal.describe();
            s.breakers.insert(
                scope.to_string(),
                Breaker {
                    opened_at: ms_to_rfc3339(now_ms),
                    reason: reason.clone(),
                },
            );
            return Err((refusal, Some(Opened)));
        }
        let cooldown = millis(c.cooldown.unwrap_or(self.settings.cooldown));
        // A zero cooldown holds nothing (as in the shared gate): "until now" would refuse an
        // alert whose arrival time is a moment earlier than this one's.
        let prev_cooldown = if cooldown > 0 {
            s.cooldown_until
                .insert(c.target.to_string(), now_ms.saturating_add(cooldown))
        } else {
            s.cooldown_until.get(c.target).copied()
        };
        s.hourly.add(c.runbook, now_ms);
        Ok(Admitted {
            prev_seen,
            prev_cooldown,
            ticket: None,
        })
    }

    /// Takes an admission back (the run could not be queued): as if the alert never came, so
    /// the sender's retry is judged afresh.
    pub(crate) fn cancel(&mut self, c: &Candidate, a: Admitted) {
        if let (Some(shared), Some(ticket)) = (&self.shared, &a.ticket) {
            shared.cancel(ticket);
            return;
        }
        let s = &mut self.state;
        let fingerprint = Digest::of(c.fingerprint);
        match a.prev_seen {
            Some(at) => s.seen_digests.insert(fingerprint, at),
            None => s.seen_digests.remove(&fingerprint),
        };
        match a.prev_cooldown {
            Some(until) => s.cooldown_until.insert(c.target.to_string(), until),
            None => s.cooldown_until.remove(c.target),
        };
        s.hourly.take_back(c.runbook);
    }

    /// Closes breakers: all of them, or one runbook's (`*` is the overall one). Returns what
    /// was closed, or why the shared breakers could not be reset (nothing is then closed
    /// anywhere). The hourly count is cleared with them, or the next alert would trip again.
    pub(crate) fn reset(&mut self, scope: Option<&str>) -> Result<Vec<String>, String> {
        if let Some(shared) = self.shared.clone() {
            return self.reset_shared(&shared, scope);
        }
        let closed: Vec<String> = match scope {
            None => std::mem::take(&mut self.state.breakers)
                .into_keys()
                .collect(),
            Some(s) => self
                .state
                .breakers
                .remove_entry(s)
                .map(|(k, _)| vec![k])
                .unwrap_or_default(),
        };
        for scope in &closed {
            if scope == "*" {
                self.state.hourly.0.clear();
            } else {
                self.state.hourly.0.remove(scope.as_str());
            }
        }
        self.dirty = true;
        Ok(closed)
    }

    fn prune(&mut self, now_ms: i64) {
        let s = &mut self.state;
        s.hourly.prune(now_ms);
        if now_ms.saturating_sub(self.last_prune) < 1000 {
            return;
        }
        self.last_prune = now_ms;
        // Bounded by the windows: an entry is dropped once it can no longer refuse anything.
        let window = millis(self.settings.dedupe_window);
        s.seen_digests
            .retain(|_, at| now_ms.saturating_sub(*at) < window);
        s.cooldown_until.retain(|_, until| now_ms < *until);
    }
}

impl Gate {
    fn admit_shared(
        &mut self,
        shared: &AwsStore,
        c: &Candidate,
        now_ms: i64,
    ) -> Result<Admitted, (Refusal, Option<Opened>)> {
        let asked = Admission {
            fingerprint: c.fingerprint,
            runbook: c.runbook,
            target: c.target,
            now_ms,
            dedupe_ms: millis(self.settings.dedupe_window),
            cooldown_ms: millis(c.cooldown.unwrap_or(self.settings.cooldown)),
            max_per_hour: self.settings.max_runs_per_hour,
            max_per_hour_per_runbook: self.settings.max_runs_per_hour_per_runbook,
            kill_switch: c.kill_switch,
            protected_refused: c.protected_refused,
        };
        let refused = match shared.admit(&asked) {
            Ok(Ok(ticket)) => {
                return Ok(Admitted {
                    prev_seen: None,
                    prev_cooldown: None,
                    ticket: Some(ticket),
                });
            }
            Ok(Err(refused)) => refused,
            Err(e) => {
                tracing::error!("{e}");
                let detail = super::clip(&e.to_string());
                return Err((Refusal::StateUnavailable { detail }, None));
            }
        };
        let mut mirror = |scope: &str, reason: String| {
            self.state
                .breakers
                .entry(scope.to_string())
                .or_insert(Breaker {
                    opened_at: ms_to_rfc3339(now_ms),
                    reason,
                });
        };
        Err(match refused {
            Shared::Deduplicated => (Refusal::Deduplicated, None),
            Shared::KillSwitch => (Refusal::KillSwitch, None),
            Shared::Protected => (Refusal::Protected, None),
            Shared::Cooldown { until_ms } => (Refusal::Cooldown { until_ms }, None),
            Shared::BreakerOpen { scope } => {
                mirror(&scope, "opened by another replica".into());
                let scope = scope_name(&scope);
                (Refusal::BreakerOpen { scope }, None)
            }
            Shared::RateLimited {
                scope,
                limit,
                opened,
            } => {
                let refusal = Refusal::RateLimited {
                    scope: scope_name(&scope),
                    limit,
                };
                let reason = refusal.describe();
                mirror(&scope, reason.clone());
                let opened = opened.then_some(Opened);
                (refusal, opened)
            }
        })
    }

    fn reset_shared(
        &mut self,
        shared: &AwsStore,
        scope: Option<&str>,
    ) -> Result<Vec<String>, String> {
        match shared.reset_breakers(scope) {
            Ok(closed) => {
                match scope {
                    None => self.state.breakers.clear(),
                    Some(s) => {
                        self.state.breakers.remove(s);
                    }
                }
                self.dirty = true;
                Ok(closed)
            }
            Err(e) => {
                tracing::error!("the breakers could not be reset: {e}");
                Err(format!("the breakers could not be reset: {e}"))
            }
        }
    }
}

/// A duration in milliseconds, saturated (a configured "300000000y" must not wrap negative).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn scope_name(scope: &str) -> String {
    if scope == "*" {
        "all runbooks".into()
    } else {
        format!("runbook {scope}")
    }
}

/// Loads the saved state; a missing file is a fresh start, a corrupt one an error (silently
/// forgetting an open breaker would defeat it).
pub(crate) fn load_state(path: &Path) -> crate::base::error::Result<GateState> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut state: GateState = serde_json::from_str(&text).map_err(|e| {
                crate::base::error::Error::Internal(format!(
                    "{}: the guardrail state is unreadable ({e}); fix or remove it (this also closes any open breaker)",
                    path.display()
                ))
            })?;
            // An older file's runs of the last hour still count after the upgrade, and its
            // fingerprints still deduplicate.
            for (at, runbook) in std::mem::take(&mut state.starts) {
                state.hourly.add(&runbook, at);
            }
            for (fingerprint, at) in std::mem::take(&mut state.seen) {
                let seen = state
                    .seen_digests
                    .entry(Digest::of(&fingerprint))
                    .or_insert(at);
                *seen = (*seen).max(at);
            }
            Ok(state)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(GateState::default()),
        Err(e) => Err(crate::base::error::Error::io("cannot read", path, e)),
    }
}

/// Saves the state atomically (temp file and rename).
pub(crate) fn save_state(path: &Path, state: &GateState) -> crate::base::error::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| crate::base::error::Error::io("cannot create", parent, e))?;
    }
    let tmp = path.with_extension("tmp");
    // Streamed to the file, not built in memory first: at 50 alerts/s the dedupe window alone
    // is megabytes of JSON, and a buffer that size every second is what a long-running server's
    // allocator keeps. Synced before the rename: an open breaker must survive a machine crash,
    // not only ours.
    let write = || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        serde_json::to_writer(&mut out, state).map_err(std::io::Error::other)?;
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| crate::base::error::Error::io("cannot write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GuardrailSettings {
        GuardrailSettings {
            dedupe_window: Duration::from_secs(60),
            cooldown: Duration::from_secs(600),
            max_runs_per_hour: 5,
            max_runs_per_hour_per_runbook: 3,
            max_resources: None,
            kill_switch: None,
            kill_switch_parameter: None,
        }
    }

    fn cand<'a>(fp: &'a str, runbook: &'a str, target: &'a str) -> Candidate<'a> {
        Candidate {
            fingerprint: fp,
            runbook,
            target,
            cooldown: None,
            protected_refused: false,
            kill_switch: false,
        }
    }

    fn reason(r: Result<Admitted, (Refusal, Option<Opened>)>) -> &'static str {
        match r {
            Ok(_) => "admitted",
            Err((refusal, _)) => refusal.reason(),
        }
    }

    #[test]
    fn a_kill_switch_refusal_is_not_remembered_by_dedupe() {
        let mut g = Gate::new(settings(), GateState::default());
        let mut stopped = cand("f", "rb", "t1");
        stopped.kill_switch = true;
        assert_eq!(reason(g.admit(&stopped, 0)), "kill_switch");
        // The switch is removed; the alert still fires and is re-sent a second later.
        assert_eq!(reason(g.admit(&cand("f", "rb", "t1"), 1_000)), "admitted");
    }

    #[test]
    fn dedupes_within_the_window_only() {
        let mut g = Gate::new(settings(), GateState::default());
        assert_eq!(reason(g.admit(&cand("f", "rb", "t1"), 0)), "admitted");
        assert_eq!(
            reason(g.admit(&cand("f", "rb", "t2"), 59_000)),
            "deduplicated"
        );
        // The window counts from the sighting that was handled, not from duplicates of it.
        assert_eq!(reason(g.admit(&cand("f", "rb", "t3"), 61_000)), "admitted");
        assert_eq!(
            reason(g.admit(&cand("f", "rb", "t4"), 120_000)),
            "deduplicated"
        );
    }

    #[test]
    fn cooldown_is_per_target() {
        let mut g = Gate::new(settings(), GateState::default());
        assert_eq!(reason(g.admit(&cand("a", "rb", "rb|i-1"), 0)), "admitted");
        assert_eq!(
            reason(g.admit(&cand("b", "rb", "rb|i-1"), 1_000)),
            "cooldown"
        );
        assert_eq!(
            reason(g.admit(&cand("c", "rb", "rb|i-2"), 2_000)),
            "admitted"
        );
        assert_eq!(
            reason(g.admit(&cand("d", "rb", "rb|i-1"), 600_000)),
            "admitted"
        );
    }

    #[test]
    fn a_zero_cooldown_refuses_no_alert_even_one_that_arrived_a_moment_earlier() {
        let mut g = Gate::new(settings(), GateState::default());
        let zero = |fp| {
            let mut c = cand(fp, "rb", "rb|i-1");
            c.cooldown = Some(Duration::ZERO);
            c
        };
        assert_eq!(reason(g.admit(&zero("a"), 5_000)), "admitted");
        // Admitted second, but its arrival time (its `now`) is earlier than the first one's.
        assert_eq!(reason(g.admit(&zero("b"), 4_990)), "admitted");
        // A route with a cooldown on the same target still holds one.
        assert_eq!(
            reason(g.admit(&cand("c", "rb", "rb|i-1"), 5_000)),
            "admitted"
        );
        assert_eq!(
            reason(g.admit(&cand("d", "rb", "rb|i-1"), 6_000)),
            "cooldown"
        );
    }

    #[test]
    fn a_route_cooldown_longer_than_the_global_one_survives_pruning() {
        let mut g = Gate::new(settings(), GateState::default());
        let mut c = cand("a", "rb", "rb|i-1");
        c.cooldown = Some(Duration::from_secs(3 * 3600));
        assert_eq!(reason(g.admit(&c, 0)), "admitted");
        // Two hours on (the global cooldown is 10 minutes; pruning has run since).
        let mut again = cand("b", "rb", "rb|i-1");
        again.cooldown = c.cooldown;
        assert_eq!(
            reason(g.admit(&cand("x", "rb", "rb|i-9"), 2 * HOUR_MS - 1)),
            "admitted"
        );
        assert_eq!(reason(g.admit(&again, 2 * HOUR_MS)), "cooldown");
        assert_eq!(reason(g.admit(&again, 3 * HOUR_MS)), "admitted");
    }

    #[test]
    fn the_breaker_opens_at_the_limit_and_stays_open_until_reset() {
        let mut g = Gate::new(settings(), GateState::default());
        for i in 0..3 {
            let (fp, t) = (format!("f{i}"), format!("t{i}"));
            assert_eq!(reason(g.admit(&cand(&fp, "rb", &t), i * 1000)), "admitted");
        }
        let tripped = g.admit(&cand("f3", "rb", "t3"), 4_000);
        let Err((refusal @ Refusal::RateLimited { .. }, Some(Opened))) = tripped else {
            panic!("the fourth run of rb in an hour must trip its breaker");
        };
        assert!(
            refusal.describe().contains("(runbook rb)"),
            "{}",
            refusal.describe()
        );
        // Open: refused even after the hour has passed.
        assert_eq!(
            reason(g.admit(&cand("f4", "rb", "t4"), 2 * HOUR_MS)),
            "breaker_open"
        );
        // Other runbooks are unaffected until the overall limit.
        assert_eq!(
            reason(g.admit(&cand("f5", "other", "u1"), 5_000)),
            "admitted"
        );
        assert_eq!(g.reset(Some("rb")), Ok(vec!["rb".to_string()]));
        assert_eq!(reason(g.admit(&cand("f6", "rb", "t6"), 6_000)), "admitted");
    }

    #[test]
    fn the_overall_limit_opens_the_overall_breaker() {
        let mut g = Gate::new(settings(), GateState::default());
        for i in 0..5 {
            let (fp, t, rb) = (format!("f{i}"), format!("t{i}"), format!("rb{i}"));
            assert_eq!(reason(g.admit(&cand(&fp, &rb, &t), i)), "admitted");
        }
        assert_eq!(reason(g.admit(&cand("x", "rbx", "tx"), 10)), "rate_limited");
        assert_eq!(reason(g.admit(&cand("y", "rby", "ty"), 11)), "breaker_open");
        assert_eq!(g.reset(None), Ok(vec!["*".to_string()]));
        assert_eq!(reason(g.admit(&cand("z", "rbz", "tz"), 12)), "admitted");
    }

    #[test]
    fn state_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut g = Gate::new(settings(), GateState::default());
        for i in 0..4 {
            let (fp, t) = (format!("f{i}"), format!("t{i}"));
            let _ = g.admit(&cand(&fp, "rb", &t), i);
        }
        save_state(&path, &g.state).unwrap();
        let mut again = Gate::new(settings(), load_state(&path).unwrap());
        assert_eq!(
            reason(again.admit(&cand("n", "rb", "tn"), 100)),
            "breaker_open"
        );
        assert_eq!(
            reason(again.admit(&cand("f0", "other", "x"), 100)),
            "deduplicated"
        );
        std::fs::write(&path, "{broken").unwrap();
        assert!(
            load_state(&path).is_err(),
            "a corrupt state must not silently reset breakers"
        );
    }

    #[test]
    fn the_hourly_count_keeps_one_entry_a_runbook_and_minute_however_many_runs_start() {
        let mut lax = settings();
        lax.max_runs_per_hour = 1_000_000;
        lax.max_runs_per_hour_per_runbook = 1_000_000;
        let mut g = Gate::new(lax, GateState::default());
        for i in 0..3_000i64 {
            let (fp, target) = (format!("f{i}"), format!("t{i}"));
            // 1,000 runs in each of three minutes.
            let at = (i / 1_000) * MINUTE_MS + i % 1_000;
            assert_eq!(reason(g.admit(&cand(&fp, "rb", &target), at)), "admitted");
        }
        assert_eq!(g.state.hourly.total(), 3_000);
        let sizes = g.state.sizes();
        assert_eq!(sizes[2], ("guard_hourly_starts", 3), "one entry a minute");
    }

    #[test]
    fn a_run_counts_against_the_hourly_limit_for_a_full_hour_and_not_past_the_minute_after() {
        // Three runs of "rb" (its limit) at 00:00:30.
        let full = || {
            let mut g = Gate::new(settings(), GateState::default());
            for i in 0..3 {
                let (fp, t) = (format!("f{i}"), format!("t{i}"));
                assert_eq!(reason(g.admit(&cand(&fp, "rb", &t), 30_000)), "admitted");
            }
            g
        };
        let mut g = full();
        assert_eq!(
            reason(g.admit(&cand("late", "rb", "t9"), 30_000 + HOUR_MS - 1)),
            "rate_limited",
            "an hour has not passed since the runs"
        );
        let mut g = full();
        assert_eq!(
            reason(g.admit(&cand("later", "rb", "t9"), HOUR_MS + MINUTE_MS)),
            "admitted",
            "the runs' whole minute is an hour old"
        );
    }

    #[test]
    fn an_older_state_file_s_runs_of_the_last_hour_still_count_and_are_saved_per_minute() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guardrails.json");
        std::fs::write(
            &path,
            r#"{"seen":{},"cooldown_until":{},"starts":[[1000,"rb"],[2000,"rb"],[3000,"rb"]],"breakers":{}}"#,
        )
        .unwrap();
        let state = load_state(&path).unwrap();
        assert_eq!(state.hourly.of("rb"), 3);
        save_state(&path, &state).unwrap();
        let saved = std::fs::read_to_string(&path).unwrap();
        assert!(!saved.contains("\"starts\""), "{saved}");
        let mut g = Gate::new(settings(), load_state(&path).unwrap());
        assert_eq!(
            reason(g.admit(&cand("f", "rb", "t"), 4_000)),
            "rate_limited"
        );
    }

    #[test]
    fn fingerprints_are_kept_and_saved_as_digests_and_an_older_file_s_still_deduplicate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guardrails.json");
        let mut g = Gate::new(settings(), GateState::default());
        let secretive = "customer-4411/payments-db/AKIA-shaped-label";
        assert_eq!(reason(g.admit(&cand(secretive, "rb", "t"), 0)), "admitted");
        save_state(&path, &g.state).unwrap();
        let saved = std::fs::read_to_string(&path).unwrap();
        assert!(!saved.contains("customer-4411"), "{saved}");
        assert!(
            saved.contains(&format!(
                "{:?}",
                serde_json::to_value(Digest::of(secretive))
                    .unwrap()
                    .as_str()
                    .unwrap()
            )),
            "{saved}"
        );
        let mut again = Gate::new(settings(), load_state(&path).unwrap());
        assert_eq!(
            reason(again.admit(&cand(secretive, "rb", "t2"), 10)),
            "deduplicated"
        );
        // A file written before digests: its fingerprints are folded in, and written no more.
        std::fs::write(
            &path,
            r#"{"seen":{"old-fp":5},"cooldown_until":{},"breakers":{}}"#,
        )
        .unwrap();
        let state = load_state(&path).unwrap();
        save_state(&path, &state).unwrap();
        let saved = std::fs::read_to_string(&path).unwrap();
        assert!(!saved.contains("old-fp"), "{saved}");
        let mut g = Gate::new(settings(), load_state(&path).unwrap());
        assert_eq!(
            reason(g.admit(&cand("old-fp", "rb", "t"), 10)),
            "deduplicated"
        );
        assert_eq!(reason(g.admit(&cand("new-fp", "rb", "t9"), 10)), "admitted");
    }

    #[test]
    fn a_cancelled_admission_leaves_no_trace() {
        let mut g = Gate::new(settings(), GateState::default());
        let c = cand("f", "rb", "t");
        let a = g.admit(&c, 0).unwrap_or_else(|_| panic!("admitted"));
        g.cancel(&c, a);
        assert_eq!(
            reason(g.admit(&c, 1)),
            "admitted",
            "neither deduplicated nor cooling down"
        );
        assert_eq!(g.state.hourly.total(), 1);
    }

    #[test]
    fn kill_switch_and_protected_refuse_before_counting() {
        let mut g = Gate::new(settings(), GateState::default());
        let mut c = cand("a", "rb", "t");
        c.kill_switch = true;
        assert_eq!(reason(g.admit(&c, 0)), "kill_switch");
        let mut c = cand("b", "rb", "t");
        c.protected_refused = true;
        assert_eq!(reason(g.admit(&c, 0)), "protected");
        assert_eq!(reason(g.admit(&cand("c", "rb", "t"), 0)), "admitted");
    }
}
