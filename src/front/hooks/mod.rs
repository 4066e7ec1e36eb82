//! Tier-1 auto-remediation: alerts start runbooks with nobody at the keyboard, under guardrails,
//! and a person is called (tier 2) when a guardrail trips or a run fails.
//!
//! The path of one alert, whichever way it arrives (`runbook serve` over HTTP, or `runbook hook`
//! from a pipe):
//!
//! 1. **Authenticate** the request: a bearer token (Alertmanager), an SNS message signature
//!    ([`sns`]), or an HMAC over timestamp and body ([`generic`]). Nothing unauthenticated is even
//!    parsed into an alert.
//! 2. **Normalise** the payload into [`Alert`]s ([`alertmanager`], [`sns`], [`generic`]).
//! 3. **Route** each firing alert by name and labels to a pinned runbook, an environment and
//!    parameters ([`config`]). An unmatched or resolved alert is recorded and acknowledged.
//! 4. **Admit** it through the [`guard::Gate`]: deduplication, kill switch, per-target cooldown,
//!    hourly run limits with a circuit breaker, protected environments.
//! 5. **Run** it on the bounded pool ([`pool`]); a full queue is refused (503) and recorded.
//!    The run carries the blast-radius cap and the kill switch into the recorder, which checks
//!    them before every write.
//!
//! Every decision is a line in the hook journal (a hash-chained JSONL file, like a transcript),
//! so "why did (or didn't) this alert start a run?" always has a recorded answer.

pub mod alertmanager;
pub mod config;
pub(crate) mod escalate;
pub mod generic;
pub(crate) mod guard;
pub(crate) mod hub;
pub(crate) mod journal;
pub(crate) mod metrics;
pub(crate) mod pool;
pub(crate) mod retention;
pub(crate) mod server;
pub mod slack;
pub mod sns;

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Where an alert came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Alertmanager,
    Sns,
    Generic,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Alertmanager => "alertmanager",
            Source::Sns => "sns",
            Source::Generic => "generic",
        }
    }
}

/// One alert, whatever sent it: Alertmanager's alert, a CloudWatch alarm (its dimensions become
/// labels), or a generic webhook's alert.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Alert {
    pub source: Source,
    /// `alertname` (Alertmanager), the alarm name (CloudWatch), `alert` (generic).
    pub name: String,
    /// True while the alert fires; false once it is resolved (recorded, never run).
    pub firing: bool,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Identifies "the same alert" across deliveries, for deduplication.
    pub fingerprint: String,
    /// When the alert started, as the sender said (RFC 3339), if it said.
    pub starts_at: Option<String>,
}

impl Alert {
    /// A fingerprint from what identifies an alert: its source, name and labels (sorted).
    /// Used when the sender gives none.
    pub fn fingerprint_of(source: Source, name: &str, labels: &BTreeMap<String, String>) -> String {
        let mut h = Sha256::new();
        h.update(source.as_str());
        h.update([0]);
        h.update(name);
        for (k, v) in labels {
            h.update([0]);
            h.update(k);
            h.update([1]);
            h.update(v);
        }
        hex::encode(&h.finalize()[..8])
    }
}

/// Why a request is turned away before any alert in it is looked at.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("request body over the limit of {0} bytes")]
    TooLarge(usize),
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the request body did not arrive in time")]
    TimedOut,
}

impl Rejection {
    /// The HTTP status the receiver answers with.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Unauthenticated(_) => 401,
            Rejection::TooLarge(_) => 413,
            Rejection::Malformed(_) => 400,
            Rejection::ShuttingDown => 503,
            Rejection::TimedOut => 408,
        }
    }

    /// A short stable token for metrics and the journal.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Unauthenticated(_) => "unauthenticated",
            Rejection::TooLarge(_) => "too_large",
            Rejection::Malformed(_) => "malformed",
            Rejection::ShuttingDown => "shutting_down",
            Rejection::TimedOut => "timed_out",
        }
    }
}

/// The most bytes of attacker-supplied text (a refusal's detail, a label in a log line) kept in
/// the journal, a log line or an answer: a 250 KB unauthenticated body must not cost 250 KB of
/// fsync'd journal, log and response each.
pub(crate) const MAX_DETAIL: usize = 256;

/// `text` made safe to journal, log and answer: control characters escaped (a newline in an
/// unauthenticated field must not forge a separate log line) and cut to [`MAX_DETAIL`] bytes
/// on a character boundary, marked with `…` when it was cut.
pub(crate) fn clip(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_DETAIL + 8));
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > MAX_DETAIL {
            break;
        }
    }
    if crate::base::error::truncate_utf8(&mut out, MAX_DETAIL) {
        out.push('…');
    }
    out
}

/// Compares secrets in constant time (a byte-by-byte early exit leaks how much of a guess was
/// right through response timing).
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    // Hash first so lengths leak nothing either.
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

fn runtime() -> crate::base::error::Result<tokio::runtime::Runtime> {
    // Two threads: the receiver is I/O-bound, and runs execute on their own worker threads.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("hook-io")
        .enable_all()
        .build()
        .map_err(|e| {
            crate::base::error::Error::Internal(format!("cannot start the async runtime: {e}"))
        })
}

/// `runbook serve`: checks the configuration, starts the workers, listens until SIGTERM.
pub fn serve(
    hooks_path: &std::path::Path,
    dirs: Vec<std::path::PathBuf>,
    config: crate::data::config::Config,
    listen: Listen,
) -> crate::base::error::Result<()> {
    use crate::base::error::Error;
    let hooks = config::Hooks::load(hooks_path)?;
    let rt = runtime()?;
    let addr = listen
        .listen
        .unwrap_or_else(|| hooks.file.server.listen.clone());
    let probe_addr = listen
        .probe_listen
        .or_else(|| hooks.file.server.probe_listen.clone());
    if listen.probe_addr_file.is_some() && probe_addr.is_none() {
        return Err(Error::Usage(
            "--probe-addr-file needs a probe address: --probe-listen, or server.probe_listen in hooks.toml".into(),
        ));
    }
    let hub = hub::Hub::new(hooks, dirs, config, rt.handle().clone())?;
    for warning in hub.closed_endpoints() {
        tracing::warn!("{warning}");
    }
    hub.start_workers()?;
    hub.start_takeover()?;
    hub.start_retention()?;
    rt.block_on(async {
        // A file-size limit (systemd's LimitFSIZE, ulimit -f) reached by the journal must fail
        // that write (rolled back, answered 503, /healthz unhealthy), not kill the receiver
        // with SIGXFSZ. Handled signals stay handled for the life of the process.
        if let Err(e) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))
        {
            tracing::warn!("cannot handle SIGXFSZ: {e}");
        }
        let listener = bind(&addr, listen.addr_file.as_deref()).await?;
        let probes = match &probe_addr {
            Some(probe) => Some(bind(probe, listen.probe_addr_file.as_deref()).await?),
            None => None,
        };
        let shown = |l: &tokio::net::TcpListener, asked: &str| {
            l.local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| asked.to_string())
        };
        eprintln!(
            "runbook serve: listening on {}{} · journal {}",
            shown(&listener, &addr),
            match (&probes, &probe_addr) {
                (Some(p), Some(asked)) =>
                    format!(" · /healthz and /metrics also on {}", shown(p, asked)),
                _ => String::new(),
            },
            hub.journal_path()
        );
        server::serve(hub, listener, probes).await
    })
}

/// Where `serve` listens: the alerts' address and the probes' (each with a file to write the
/// bound address to, for port 0), from the command line; hooks.toml's `[server]` fills the rest.
#[derive(Debug, Default)]
pub struct Listen {
    pub listen: Option<String>,
    pub addr_file: Option<std::path::PathBuf>,
    pub probe_listen: Option<String>,
    pub probe_addr_file: Option<std::path::PathBuf>,
}

/// Binds `addr`, and writes the bound address (port 0 resolved) to `file` when asked.
async fn bind(
    addr: &str,
    file: Option<&std::path::Path>,
) -> crate::base::error::Result<tokio::net::TcpListener> {
    use crate::base::error::Error;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Environment(format!("cannot listen on {addr}: {e}")))?;
    if let Some(path) = file {
        let bound = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the bound address for", path, e))?;
        // Written whole then renamed, so a reader never sees half an address.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bound.to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| Error::io("cannot write", path, e))?;
    }
    Ok(listener)
}

/// `runbook hook`: one payload from stdin through the same path as `serve` (routing,
/// guardrails, journal, escalation), its runs executed before returning. The caller is local
/// and trusted by the OS (it could run `runbook run` itself), so Alertmanager and generic
/// payloads need no token or signature here; SNS messages are still verified, because their
/// signature is part of the message.
///
/// Prints each alert's outcome and each run's record as JSON. Fails when a run did not end ok.
pub fn one_shot(
    hooks_path: &std::path::Path,
    dirs: Vec<std::path::PathBuf>,
    config: crate::data::config::Config,
    source: Source,
    payload: &[u8],
) -> crate::base::error::Result<()> {
    use crate::base::error::Error;
    let hooks = config::Hooks::load(hooks_path)?;
    if payload.len() > hooks.file.server.max_body {
        return Err(Error::Input(
            Rejection::TooLarge(hooks.file.server.max_body).to_string(),
        ));
    }
    let rt = runtime()?;
    let hub = hub::Hub::new(hooks, dirs, config, rt.handle().clone())?;
    hub.start_workers()?;
    let received = std::time::Instant::now();
    let outcomes = rt.block_on(async {
        let alerts = match source {
            Source::Alertmanager => alertmanager::parse(payload),
            Source::Generic => generic::parse(payload),
            Source::Sns => hub.sns_message(payload).await.map(|(alerts, _)| alerts),
        }
        .map_err(|r| Error::Input(r.to_string()))?;
        Ok::<_, Error>(hub.admit_all(alerts, "stdin", received).await)
    })?;
    hub.finish_queued();
    rt.block_on(hub.flush_escalations());
    let runs: Vec<pool::RunRecord> = outcomes
        .iter()
        .filter_map(|o| o.run_id.as_deref())
        .filter_map(|id| hub.run_record(id))
        .collect();
    let out =
        serde_json::json!({ "alerts": outcomes, "runs": runs, "journal": hub.journal_path() });
    crate::front::cli::out(&format!(
        "{}\n",
        serde_json::to_string_pretty(&out).unwrap_or_default()
    ));
    let failed: Vec<&pool::RunRecord> = runs.iter().filter(|r| r.status != "ok").collect();
    if let Some(r) = failed.first() {
        return Err(Error::HookRunsFailed {
            count: failed.len(),
            first: format!(
                "{} {}: {}",
                r.run_id,
                r.status,
                r.reason.as_deref().unwrap_or("")
            ),
        });
    }
    Ok(())
}

/// `runbook hook --reset-breakers`: closes breakers in the saved state (for a stopped server;
/// a running one is reset with `POST /admin/breaker/reset`), and with the aws backend in the
/// state table, for every replica.
pub fn reset_breakers(
    hooks_path: &std::path::Path,
    state: &crate::data::config::StateConfig,
    scope: Option<&str>,
) -> crate::base::error::Result<Vec<String>> {
    let hooks = config::Hooks::load(hooks_path)?;
    let path = hooks.state_path();
    let saved = guard::load_state(&path)?;
    let store = crate::services::state::Store::open(state)?;
    let mut gate = guard::Gate::new(hooks.file.guardrails.clone(), saved)
        .with_shared(store.shared_guardrails());
    let closed = gate
        .reset(scope)
        .map_err(crate::base::error::Error::Environment)?;
    guard::save_state(&path, &gate.state)?;
    Ok(closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_text_is_one_short_line() {
        assert_eq!(clip("plain"), "plain");
        assert_eq!(
            clip("a\nlevel=ERROR forged\r\u{1b}[31m"),
            "a\\nlevel=ERROR forged\\r\\u{1b}[31m"
        );
        let long = "é".repeat(10_000);
        let c = clip(&long);
        assert!(c.len() <= MAX_DETAIL + '…'.len_utf8(), "{}", c.len());
        assert!(c.ends_with('…'));
    }
}
