//! `runbook serve` under test: started on a free loopback port in a workspace, driven over real
//! HTTP, stopped with a real SIGTERM.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Workspace;

pub struct Served {
    child: Option<Child>,
    pub base: String,
    pub log: PathBuf,
    /// Sent as a bearer token with `get` (for `GET /runs` when an admin token is configured).
    pub admin: Option<String>,
}

/// Runs one future to completion on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// An HTTP exchange's status and body (JSON when it parses, else a string).
pub async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = client.request(method, url).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

impl Served {
    /// Starts `runbook serve` in `ws` (its hooks.toml, runbook.toml and runbooks/) with `env`.
    pub fn start(ws: &Workspace, env: &[(&str, &str)]) -> Served {
        Served::start_with(ws, env, &[])
    }

    /// [`Served::start`] with more arguments for `runbook serve`.
    pub fn start_with(ws: &Workspace, env: &[(&str, &str)], args: &[&str]) -> Served {
        let addr_file = ws.path().join("serve.addr");
        let log = ws.path().join("serve.log");
        // A previous server's address must not be mistaken for this one's.
        let _ = std::fs::remove_file(&addr_file);
        let mut cmd = ws.cmd().args(&[
            "serve",
            "--hooks",
            "hooks.toml",
            "--listen",
            "127.0.0.1:0",
            "--addr-file",
            addr_file.to_str().unwrap(),
        ]);
        cmd = cmd.args(args);
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        let mut child = cmd.spawn_logged(&log);
        let started = Instant::now();
        let addr = loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                break a;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "runbook serve exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "runbook serve did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Served {
            child: Some(child),
            base: format!("http://{}", addr.trim()),
            log,
            admin: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        block_on(send(
            &client(),
            reqwest::Method::POST,
            &self.url(path),
            headers,
            body.to_vec(),
        ))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let auth = self.admin.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        block_on(send(
            &client(),
            reqwest::Method::GET,
            &self.url(path),
            &headers,
            Vec::new(),
        ))
    }

    /// Waits until `n` runs are running (a worker has taken them).
    pub fn wait_running(&self, n: usize, timeout: Duration) {
        let started = Instant::now();
        loop {
            let (_, body) = self.get("/runs?limit=100000");
            let runs = body["runs"].as_array().cloned().unwrap_or_default();
            if runs.iter().filter(|r| r["status"] == "running").count() >= n {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "{n} run(s) not running after {timeout:?}: {runs:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `n` runs have finished (none queued or running) and returns them all.
    pub fn wait_finished(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let (_, body) = self.get("/runs?limit=100000");
            let runs = body["runs"].as_array().cloned().unwrap_or_default();
            let done = runs
                .iter()
                .filter(|r| r["status"] != "queued" && r["status"] != "running")
                .count();
            if done >= n && done == runs.len() {
                return runs;
            }
            assert!(
                started.elapsed() < timeout,
                "{done} of {n} runs finished in {timeout:?}: {runs:#?}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit code.
    pub fn terminate(&mut self, timeout: Duration) -> i32 {
        let mut child = self.child.take().expect("still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code().unwrap_or(-1);
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                panic!(
                    "serve did not stop within {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
