//! `runbook serve`: the HTTP receiver (axum on tokio).
//!
//! | Route                         | What                                                   |
//! |-------------------------------|--------------------------------------------------------|
//! | `POST /hooks/alertmanager`    | Alertmanager webhook (v4), bearer token                |
//! | `POST /hooks/sns`             | SNS HTTP subscription protocol, signature verified     |
//! | `POST /hooks/generic`         | JSON signed with HMAC-SHA256 over timestamp and body   |
//! | `GET /runs`, `GET /runs/{id}` | queued, running and recent runs (admin token if set)   |
//! | `GET /healthz`                | 200 while healthy; 503 while draining, with a worker   |
//! |                               | missing, or while the journal cannot be written        |
//! | `GET /metrics`                | Prometheus text                                        |
//! |                               | (both also on `server.probe_listen`, if set, alone)    |
//! | `POST /admin/breaker/reset`   | close breakers (`?scope=RUNBOOK` or all); admin token  |
//! | `POST /hooks/slack/interactions` | Approve/Deny clicks on approval requests, signed by |
//! |                               | Slack (see `hooks::slack`)                             |
//!
//! Every request turned away is counted and journaled; every alert's outcome is journaled
//! before the answer is sent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::hub::{AlertOutcome, Hub};
use super::metrics::Metrics;
use super::{Alert, Rejection, Source};
use crate::base::error::{Error, Result};
use crate::data::transcript::JournalEvent;

pub(crate) fn router(hub: Arc<Hub>) -> Router {
    let limit = hub.hooks.file.server.max_body;
    probe_routes()
        .route("/hooks/alertmanager", post(alertmanager))
        .route("/hooks/sns", post(sns))
        .route("/hooks/generic", post(generic))
        .route("/runs", get(runs))
        .route("/runs/{id}", get(run))
        .route("/admin/breaker/reset", post(reset))
        .route("/hooks/slack/interactions", post(slack_interaction))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(hub)
}

/// Serves until SIGTERM or SIGINT, then drains: no new alerts, running runs get
/// `server.drain` to finish, the rest are aborted (and record it).
///
/// Connections are served by hyper directly (not `axum::serve`) for the limits a receiver on
/// a network needs: at most `server.max_connections` at once (further ones wait in the
/// listen backlog), and a request head must arrive within `server.header_timeout`, which also
/// closes idle connections; bodies are held to `server.body_timeout` by [`TimedBody`].
///
/// `probes`, when given, is a second listener that serves only `/healthz` and `/metrics`, on
/// [`PROBE_CONNECTIONS`] connections of its own, until the drain has ended: a probe never
/// waits behind alerts for a slot, and it sees the drain (503) instead of a refused connection.
pub(crate) async fn serve(
    hub: Arc<Hub>,
    listener: tokio::net::TcpListener,
    probes: Option<tokio::net::TcpListener>,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, journal = %hub.journal_path(), "listening");
    let _ = hub
        .journal
        .record(JournalEvent::Listening { addr: addr.clone() })
        .await;
    // Guardrail state is saved once a second when it changed (breakers immediately); every
    // ten seconds the allocator hands back what it keeps free (`release_free_memory` says why).
    let saver = {
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for second in 0u64.. {
                tick.tick().await;
                let h = hub.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    h.save_state_if_dirty();
                    if second % 10 == 0 {
                        crate::base::memory::release_free_memory();
                    }
                })
                .await;
            }
        })
    };
    let settings = hub.hooks.file.server.clone();
    let (probes_stop, probes_stopped) = tokio::sync::watch::channel(false);
    let probing = probes.map(|probes| {
        let app = probe_router(hub.clone());
        let header_timeout = settings.header_timeout;
        tokio::spawn(async move {
            let mut until = probes_stopped.clone();
            let mut open = accept_until(
                probes,
                app,
                PROBE_CONNECTIONS,
                header_timeout,
                probes_stopped,
                async move {
                    let _ = until.changed().await;
                },
            )
            .await;
            while open.join_next().await.is_some() {}
        })
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = accept_until(
        listener,
        router(hub.clone()),
        settings.max_connections,
        settings.header_timeout,
        stop_rx,
        async {
            let signal = shutdown_signal().await;
            tracing::info!(signal, "stopping: no new alerts; draining runs");
        },
    )
    .await;
    hub.stop_accepting();
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    saver.abort();
    let deadline = hub.hooks.file.server.drain;
    let drained = {
        let hub = hub.clone();
        tokio::task::spawn_blocking(move || hub.drain(deadline))
            .await
            .map_err(|e| Error::Internal(format!("the drain failed: {e}")))?
    };
    hub.flush_escalations().await;
    let _ = probes_stop.send(true);
    if let Some(probing) = probing {
        let _ = probing.await;
    }
    let _ = hub
        .journal
        .record(JournalEvent::Stopped {
            aborted_runs: drained.aborted,
        })
        .await;
    tracing::info!(aborted = drained.aborted, "stopped");
    Ok(())
}

/// Serves one connection (HTTP/1.1, its head within `header_timeout`) holding its slot; on
/// `stop`, finishes the request in flight and closes.
async fn connection(
    stream: tokio::net::TcpStream,
    app: Router,
    header_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let _slot = slot;
    let _ = stream.set_nodelay(true);
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Connections the probe listener serves at once. Probes and scrapes are small and quick; a
/// flood there waits in its own backlog and never takes an alert's slot.
const PROBE_CONNECTIONS: usize = 16;

/// The routes the probe listener serves, and the alert listener too: nothing that starts,
/// changes or lists runs.
fn probe_routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
}

fn probe_router(hub: Arc<Hub>) -> Router {
    probe_routes().with_state(hub)
}

/// Accepts connections on `listener`, at most `cap` open at once, until `until` completes;
/// returns the connections still open (each finishes its request in flight and closes once
/// `stop` changes). Beyond the cap a connection waits in the backlog, unread, until an open one
/// closes (idle ones do after the header timeout).
async fn accept_until(
    listener: tokio::net::TcpListener,
    app: Router,
    cap: usize,
    header_timeout: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
    until: impl std::future::Future<Output = ()>,
) -> tokio::task::JoinSet<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(cap));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(until);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut until => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, or this loop would spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut until => break,
        };
        connections.spawn(connection(
            stream,
            app.clone(),
            header_timeout,
            stop.clone(),
            slot,
        ));
        // Reap finished connections so the set does not grow with every one ever served.
        while connections.try_join_next().is_some() {}
    }
    connections
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the server can only be killed; never return (that would stop
        // it at once).
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Answers a request turned away before any alert was read: counted, journaled, never run.
/// The detail is the sender's text as often as ours (a parser quoting the body), so it is
/// clipped ([`super::clip`]) everywhere it goes.
async fn reject(hub: &Hub, source: Source, r: Rejection) -> Response {
    refuse(hub, source.as_str(), r).await
}

/// [`reject`] for a sender that brings no alerts (`slack`).
async fn refuse(hub: &Hub, source: &str, r: Rejection) -> Response {
    Metrics::inc(
        &hub.metrics.requests_rejected,
        &[("source", source), ("reason", r.reason())],
    );
    let detail = super::clip(&r.to_string());
    tracing::warn!(source, reason = r.reason(), "request refused: {detail}");
    let _ = hub
        .journal
        .record(JournalEvent::RequestRefused {
            source: source.to_string(),
            status: r.status(),
            reason: r.reason().to_string(),
            detail: detail.to_string(),
        })
        .await;
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, axum::Json(json!({ "error": detail }))).into_response();
    if matches!(r, Rejection::TimedOut) {
        // The rest of the body may never come: the connection is not reused.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The body, or the rejection for it (413 over the limit).
fn body_of(
    body: std::result::Result<Bytes, BytesRejection>,
    limit: usize,
) -> std::result::Result<Bytes, Rejection> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Rejection::TooLarge(limit)
        } else {
            Rejection::Malformed(e.body_text())
        }
    })
}

/// A request body read within `server.max_body` bytes and `server.body_timeout`: a sender
/// that stops half-way is answered 408 and cut off instead of holding the connection.
struct TimedBody(std::result::Result<Bytes, Rejection>);

impl axum::extract::FromRequest<Arc<Hub>> for TimedBody {
    type Rejection = std::convert::Infallible;

    async fn from_request(
        req: axum::extract::Request,
        hub: &Arc<Hub>,
    ) -> std::result::Result<Self, Self::Rejection> {
        let s = &hub.hooks.file.server;
        let read = <Bytes as axum::extract::FromRequest<Arc<Hub>>>::from_request(req, hub);
        Ok(TimedBody(
            match tokio::time::timeout(s.body_timeout, read).await {
                Ok(body) => body_of(body, s.max_body),
                Err(_) => Err(Rejection::TimedOut),
            },
        ))
    }
}

/// Admits parsed alerts and answers: 200 with each alert's outcome, or 503 when any could not
/// be queued or journaled (so the sender retries; accepted ones are deduplicated on the
/// retry). On a 503 the request's replay key is forgotten: the retry is the same signed
/// request, and must not be refused as a replay of one that was never handled.
async fn answer(
    hub: &Arc<Hub>,
    alerts: Vec<Alert>,
    via: &str,
    received: Instant,
    replay_key: Option<&str>,
) -> Response {
    let outcomes: Vec<AlertOutcome> = hub.admit_all(alerts, via, received).await;
    for o in &outcomes {
        tracing::info!(
            alert = %super::clip(&o.alert),
            outcome = o.outcome,
            reason = o.reason.as_deref().unwrap_or(""),
            run_id = o.run_id.as_deref().unwrap_or(""),
            "alert"
        );
    }
    let retry = outcomes.iter().any(AlertOutcome::retry);
    let status = if retry {
        if let Some(key) = replay_key {
            hub.forget(key);
        }
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(json!({ "alerts": outcomes }))).into_response()
}

/// A click on an approval request's button: believed only signed by Slack, fresh and new; then
/// recorded as the clicking user's answer where the run reads it. The run judges it (four-eyes,
/// the group, the plan) and records a refusal in its transcript.
async fn slack_interaction(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    TimedBody(body): TimedBody,
) -> Response {
    use super::slack;
    let body = match body {
        Ok(b) => b,
        Err(r) => return refuse(&hub, "slack", r).await,
    };
    let now = chrono::Utc::now().timestamp();
    let verified = hub.slack.secret().and_then(|secret| {
        slack::verify(
            secret.as_bytes(),
            header_str(&headers, slack::TIMESTAMP_HEADER),
            header_str(&headers, slack::SIGNATURE_HEADER),
            &body,
            now,
        )
    });
    let signature = match verified {
        Ok(sig) => sig,
        Err(r) => return refuse(&hub, "slack", r).await,
    };
    if let Err(r) = hub.first_sighting(
        &format!("slack:{}", hex::encode(signature)),
        now,
        slack::WINDOW,
    ) {
        return refuse(&hub, "slack", r).await;
    }
    let click = match slack::parse(&body) {
        Ok(c) => c,
        Err(r) => return refuse(&hub, "slack", r).await,
    };
    let who = hub.slack.who(&click);
    let Some(answer) =
        crate::services::approvals::slack::answer_of(&click.action_id, &click.value, None)
    else {
        return refuse(
            &hub,
            "slack",
            Rejection::Malformed("not an approval button".into()),
        )
        .await;
    };
    let store = hub.state_store().clone();
    let (a, w) = (answer.clone(), who.clone());
    let delivered = tokio::task::spawn_blocking(move || {
        crate::services::approvals::slack::deliver(&store, &a, &w)
    })
    .await
    .unwrap_or_else(|e| Err(format!("the answer could not be recorded: {e}")));
    let text = match delivered {
        Ok(()) => format!(
            "{} recorded as {}'s answer to request {} of run {}",
            if answer.approve { "Approval" } else { "Denial" },
            who.display(),
            answer.number,
            answer.run_id
        ),
        Err(why) => {
            tracing::warn!("slack click not recorded: {why}");
            why
        }
    };
    (
        StatusCode::OK,
        axum::Json(json!({ "response_type": "ephemeral", "text": text })),
    )
        .into_response()
}

async fn alertmanager(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    TimedBody(body): TimedBody,
) -> Response {
    let received = Instant::now();
    let source = Source::Alertmanager;
    // Authenticate before looking at the body: nothing unauthenticated is parsed.
    if let Err(r) = hub.check_bearer(header_str(&headers, header::AUTHORIZATION)) {
        return reject(&hub, source, r).await;
    }
    match body.and_then(|b| super::alertmanager::parse(&b)) {
        Ok(alerts) => answer(&hub, alerts, "alertmanager", received, None).await,
        Err(r) => reject(&hub, source, r).await,
    }
}

async fn generic(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    TimedBody(body): TimedBody,
) -> Response {
    let received = Instant::now();
    let source = Source::Generic;
    let body = match body {
        Ok(b) => b,
        Err(r) => return reject(&hub, source, r).await,
    };
    let checked = hub.check_generic(
        header_str(&headers, super::generic::TIMESTAMP_HEADER),
        header_str(&headers, super::generic::SIGNATURE_HEADER),
        &body,
    );
    let key = match checked {
        Ok(key) => key,
        Err(r) => return reject(&hub, source, r).await,
    };
    // Malformed once authentic is refused for good: the key stays remembered.
    match super::generic::parse(&body) {
        Ok(alerts) => answer(&hub, alerts, "generic", received, Some(&key)).await,
        Err(r) => reject(&hub, source, r).await,
    }
}

async fn sns(State(hub): State<Arc<Hub>>, TimedBody(body): TimedBody) -> Response {
    let received = Instant::now();
    let source = Source::Sns;
    let body = match body {
        Ok(b) => b,
        Err(r) => return reject(&hub, source, r).await,
    };
    match hub.sns_message(&body).await {
        Ok((alerts, _)) if alerts.is_empty() => {
            (StatusCode::OK, axum::Json(json!({ "alerts": [] }))).into_response()
        }
        Ok((alerts, key)) => answer(&hub, alerts, "sns", received, Some(&key)).await,
        Err(r) => reject(&hub, source, r).await,
    }
}

#[derive(Deserialize)]
struct RunsQuery {
    limit: Option<usize>,
}

async fn runs(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Response {
    if let Err(r) = hub.check_admin(header_str(&headers, header::AUTHORIZATION), false) {
        return (StatusCode::UNAUTHORIZED, r.to_string()).into_response();
    }
    // Serialized straight from the records: a JSON tree of thousands of runs first would cost
    // several times the answer's size in memory.
    #[derive(serde::Serialize)]
    struct Page {
        runs: Vec<super::pool::RunRecord>,
    }
    let limit = q.limit.unwrap_or(100).min(hub.hooks.file.server.history);
    // The aws backend answers for every replica, from the state table (a blocking call).
    let team = {
        let hub = hub.clone();
        tokio::task::spawn_blocking(move || hub.team_runs(limit)).await
    };
    match team {
        Ok(None) => {}
        Ok(Some(Ok(runs))) => return axum::Json(json!({ "runs": runs })).into_response(),
        Ok(Some(Err(e))) => return state_unavailable(&e.to_string()),
        Err(e) => return state_unavailable(&e.to_string()),
    }
    let runs = hub.runs_list(limit);
    axum::Json(Page { runs }).into_response()
}

/// The state table could not answer: said so, as a 503 (the caller may try again).
fn state_unavailable(detail: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(
            json!({ "error": format!("the state table cannot be read: {}", super::clip(detail)) }),
        ),
    )
        .into_response()
}

async fn run(State(hub): State<Arc<Hub>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = hub.check_admin(header_str(&headers, header::AUTHORIZATION), false) {
        return (StatusCode::UNAUTHORIZED, r.to_string()).into_response();
    }
    let team = {
        let (hub, id) = (hub.clone(), id.clone());
        tokio::task::spawn_blocking(move || hub.team_run(&id)).await
    };
    let found = match team {
        Ok(None) => hub
            .run_record(&id)
            .and_then(|r| serde_json::to_value(r).ok()),
        Ok(Some(Ok(found))) => found,
        Ok(Some(Err(e))) => return state_unavailable(&e.to_string()),
        Err(e) => return state_unavailable(&e.to_string()),
    };
    match found {
        Some(r) => axum::Json(r).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": format!("no run {id}") })),
        )
            .into_response(),
    }
}

async fn healthz(State(hub): State<Arc<Hub>>) -> Response {
    let body = {
        let hub = hub.clone();
        tokio::task::spawn_blocking(move || hub.health()).await
    }
    .unwrap_or_else(|e| json!({ "status": "error", "error": e.to_string() }));
    let status = if body["status"] == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    // Reads /proc and takes the structures' locks briefly: off the async workers.
    let text = tokio::task::spawn_blocking(move || hub.render_metrics())
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[derive(Deserialize)]
struct ResetQuery {
    scope: Option<String>,
}

async fn reset(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Query<ResetQuery>,
) -> Response {
    if let Err(r) = hub.check_admin(header_str(&headers, header::AUTHORIZATION), true) {
        return reject(&hub, Source::Generic, r).await;
    }
    match hub.reset_breakers(q.scope.as_deref(), "admin token").await {
        Ok(closed) => axum::Json(json!({ "closed": closed })).into_response(),
        Err(e) => state_unavailable(&e),
    }
}
