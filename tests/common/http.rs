//! A loopback HTTP server for the notification and health tests: it captures Slack Web API,
//! Slack webhook and Teams webhook requests (headers and JSON bodies), can answer 429 with
//! `Retry-After` or 500, and serves a `/health` target whose status, latency and body the test
//! controls.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Captured {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
    pub at: Instant,
}

#[derive(Default)]
pub struct Control {
    /// How many Slack API calls answer 429 (Retry-After: 1) before they succeed.
    pub throttle: AtomicU32,
    /// Webhooks answer 500 while set.
    pub fail_webhooks: AtomicBool,
    /// The health target's answer.
    pub health_status: AtomicU16,
    pub health_delay_ms: AtomicU64,
    pub health_hits: AtomicU64,
    /// Files served at `/files/{name}` (an SNS signing certificate, say); GETs are captured.
    pub files: Mutex<std::collections::HashMap<String, String>>,
    /// Slack user groups `usergroups.users.list` answers with (id -> user ids); any other id is
    /// answered `no_such_subteam`.
    pub usergroups: Mutex<std::collections::HashMap<String, Vec<String>>>,
}

#[derive(Clone)]
struct Shared {
    captured: Arc<Mutex<Vec<Captured>>>,
    control: Arc<Control>,
}

pub struct Server {
    pub port: u16,
    captured: Arc<Mutex<Vec<Captured>>>,
    pub control: Arc<Control>,
}

impl Server {
    pub fn start() -> Server {
        let shared = Shared {
            captured: Arc::new(Mutex::new(Vec::new())),
            control: Arc::new(Control::default()),
        };
        shared.control.health_status.store(200, Ordering::SeqCst);
        let app = Router::new()
            .route("/api/{method}", post(slack_api))
            .route("/hooks/{*rest}", post(webhook))
            .route("/teams/{*rest}", post(webhook))
            .route("/health", get(health))
            .route("/files/{name}", get(file))
            .route("/confirm", get(confirm))
            .with_state(shared.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap().port()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("test server started");
        Server {
            port,
            captured: shared.captured,
            control: shared.control,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Serves `content` at `/files/{name}`.
    pub fn serve_file(&self, name: &str, content: &str) {
        self.control
            .files
            .lock()
            .unwrap()
            .insert(name.to_string(), content.to_string());
    }

    /// Makes `usergroups.users.list` answer `users` for Slack user group `id`.
    pub fn slack_usergroup(&self, id: &str, users: &[&str]) {
        self.control.usergroups.lock().unwrap().insert(
            id.to_string(),
            users.iter().map(|u| u.to_string()).collect(),
        );
    }

    pub fn captured(&self) -> Vec<Captured> {
        self.captured.lock().unwrap().clone()
    }
}

/// A JSON body as it is; a form-encoded one (Slack's read methods) as an object of its fields.
fn body_value(body: &Bytes) -> Value {
    if let Ok(v) = serde_json::from_slice(body) {
        return v;
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Value::Null;
    };
    let decode = |t: &str| -> String {
        let bytes = t.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() + 1 => {
                    let hex =
                        std::str::from_utf8(&bytes[i + 1..(i + 3).min(bytes.len())]).unwrap_or("");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let fields: serde_json::Map<String, Value> = text
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), json!(decode(v))))
        .collect();
    if fields.is_empty() {
        Value::Null
    } else {
        Value::Object(fields)
    }
}

fn capture(s: &Shared, path: String, headers: &HeaderMap, body: &Bytes) {
    let body = body_value(body);
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    s.captured.lock().unwrap().push(Captured {
        path,
        authorization,
        body,
        at: Instant::now(),
    });
}

async fn slack_api(
    State(s): State<Shared>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    capture(&s, format!("/api/{method}"), &headers, &body);
    if s.control.throttle.load(Ordering::SeqCst) > 0 {
        s.control.throttle.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "").into_response();
    }
    let sent: Value = body_value(&body);
    if method == "usergroups.users.list" {
        let id = sent["usergroup"].as_str().unwrap_or_default();
        return match s.control.usergroups.lock().unwrap().get(id) {
            Some(users) => axum::Json(json!({ "ok": true, "users": users })).into_response(),
            None => axum::Json(json!({ "ok": false, "error": "no_such_subteam" })).into_response(),
        };
    }
    let n = s.captured.lock().unwrap().len();
    let ts = match method.as_str() {
        "chat.update" => sent["ts"].clone(),
        _ => json!(format!("1700000001.{n:06}")),
    };
    axum::Json(json!({ "ok": true, "ts": ts, "channel": "C0INCIDENTS" })).into_response()
}

async fn webhook(
    State(s): State<Shared>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    capture(&s, format!("/hooks/{rest}"), &headers, &body);
    if s.control.fail_webhooks.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    }
    (StatusCode::OK, "ok").into_response()
}

async fn health(State(s): State<Shared>) -> Response {
    s.control.health_hits.fetch_add(1, Ordering::SeqCst);
    let delay = s.control.health_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = StatusCode::from_u16(s.control.health_status.load(Ordering::SeqCst))
        .unwrap_or(StatusCode::OK);
    (status, "{\"status\":\"HEALTHY\"}").into_response()
}

async fn file(State(s): State<Shared>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    capture(&s, format!("/files/{name}"), &headers, &Bytes::new());
    match s.control.files.lock().unwrap().get(&name) {
        Some(content) => (StatusCode::OK, content.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

/// An SNS SubscribeURL: the visit is what the test looks for.
async fn confirm(State(s): State<Shared>, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    capture(&s, uri.to_string(), &headers, &Bytes::new());
    (StatusCode::OK, "<ConfirmSubscriptionResponse/>").into_response()
}
