//! `health::`: HTTP and TCP probes and latency percentiles, so a runbook can test "is it
//! healthy?" and the seed's "latency > 500 ms" / "> 2 s" conditions itself.
//!
//! On the sim backend, URLs declared as `[[endpoints]]` in the fleet fixture answer with their
//! scripted behaviour (down or slow until a given step, flaky); every other URL is probed for real.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rhai::Map;
use rhai::plugin::*;
use serde_json::{Value, json};

use super::args;
use crate::base::error::BindingError;
use crate::sandbox::engine::Host;
use crate::sandbox::recorder::{self, Binding, Effect, ScriptResult, unit_placeholder};

static HTTP: Binding = Binding {
    name: "health::http",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static TCP: Binding = Binding {
    name: "health::tcp",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};
static LATENCY: Binding = Binding {
    name: "health::latency",
    effect: Effect::ReadOnly,
    placeholder: unit_placeholder,
};

/// Response bodies kept in a probe result (and so in the transcript).
const BODY_LIMIT: usize = 2048;

#[derive(Debug, Clone)]
struct HttpOptions {
    method: reqwest::Method,
    expect_status: Vec<u16>,
    expect_body: Option<String>,
    max_latency: Option<Duration>,
    timeout: Duration,
    retries: u32,
    retry_delay: Duration,
    headers: Vec<(String, String)>,
}

fn parse_http(opts: &Map) -> Result<HttpOptions, BindingError> {
    args::known(
        opts,
        &[
            "method",
            "expect_status",
            "expect_body",
            "max_latency",
            "timeout",
            "retries",
            "retry_delay",
            "headers",
        ],
    )?;
    let method = args::string(opts, "method")?.unwrap_or_else(|| "GET".into());
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).map_err(|_| {
        BindingError::new("bad_argument", format!("unknown HTTP method {method:?}"))
    })?;
    let expect_status = match opts.get("expect_status") {
        None => Vec::new(),
        Some(v) if v.is_int() => vec![v.as_int().unwrap_or(200) as u16],
        Some(v) => v
            .clone()
            .try_cast::<rhai::Array>()
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_int().ok().map(|n| n as u16))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                BindingError::new(
                    "bad_argument",
                    "`expect_status` must be an int or an array of ints",
                )
            })?,
    };
    let headers = args::tags(opts.get("headers"))?.into_iter().collect();
    Ok(HttpOptions {
        method,
        expect_status,
        expect_body: args::string(opts, "expect_body")?,
        max_latency: opts
            .get("max_latency")
            .map(|_| args::duration(opts, "max_latency", Duration::ZERO))
            .transpose()?,
        timeout: args::duration(opts, "timeout", Duration::from_secs(10))?,
        retries: args::int(opts, "retries", 0)?.clamp(0, 20) as u32,
        retry_delay: args::duration(opts, "retry_delay", Duration::from_secs(1))?,
        headers,
    })
}

/// One HTTP probe's outcome, before the expectations are applied.
struct Answer {
    status: u16,
    latency_ms: f64,
    body: String,
}

fn judge(o: &HttpOptions, answer: Result<Answer, String>) -> Value {
    match answer {
        Err(error) => {
            json!({ "ok": false, "status": 0, "latency_ms": 0, "body": "", "error": error })
        }
        Ok(a) => {
            let status_ok = if o.expect_status.is_empty() {
                (200..400).contains(&a.status)
            } else {
                o.expect_status.contains(&a.status)
            };
            let mut problems = Vec::new();
            if !status_ok {
                problems.push(format!("status {}", a.status));
            }
            if let Some(needle) = &o.expect_body
                && !a.body.contains(needle.as_str())
            {
                problems.push(format!("body lacks {needle:?}"));
            }
            if let Some(max) = o.max_latency
                && a.latency_ms > max.as_secs_f64() * 1000.0
            {
                problems.push(format!(
                    "latency {:.0} ms over {} ms",
                    a.latency_ms,
                    max.as_millis()
                ));
            }
            let mut body = a.body;
            crate::base::error::truncate_utf8(&mut body, BODY_LIMIT);
            json!({
                "ok": problems.is_empty(),
                "status": a.status,
                "latency_ms": (a.latency_ms * 10.0).round() / 10.0,
                "body": body,
                "error": if problems.is_empty() { Value::Null } else { json!(problems.join("; ")) },
            })
        }
    }
}

/// An HTTP client made on first use: a probe the sim answers needs none (building one loads the
/// root certificates, most of a simulated probe's cost).
struct LazyClient {
    timeout: Duration,
    client: std::sync::OnceLock<reqwest::Client>,
}

impl LazyClient {
    fn new(timeout: Duration) -> Self {
        LazyClient {
            timeout,
            client: std::sync::OnceLock::new(),
        }
    }

    fn get(&self) -> Result<&reqwest::Client, BindingError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let made = client(self.timeout)?;
        Ok(self.client.get_or_init(|| made))
    }
}

fn client(timeout: Duration) -> Result<reqwest::Client, BindingError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("runbook-health/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BindingError::new("http_client", e.to_string()))
}

/// One request: the sim's scripted answer for a declared endpoint, a real one otherwise.
async fn fetch(
    host: &Host,
    client: &LazyClient,
    url: &str,
    o: &HttpOptions,
) -> Result<Answer, String> {
    if let Some(sim) = host.cloud.sim() {
        let step = host.recorder.stage().step().map(|s| s + 1).unwrap_or(0);
        if let Some((status, latency_ms, body)) = sim.http(url, step) {
            return Ok(Answer {
                status,
                latency_ms: latency_ms as f64,
                body,
            });
        }
    }
    let mut req = client
        .get()
        .map_err(|e| e.message)?
        .request(o.method.clone(), url);
    for (k, v) in &o.headers {
        req = req.header(k, v);
    }
    let started = Instant::now();
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            Ok(Answer {
                status,
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                body,
            })
        }
        Err(e) if e.is_timeout() => Err(format!("timed out after {} ms", o.timeout.as_millis())),
        Err(e) if e.is_connect() => Err("connection refused or unreachable".into()),
        Err(e) => Err(format!("request failed: {}", e.without_url())),
    }
}

fn ensure_sim(host: &Host) {
    // The sim answers for declared endpoints, so connect it (cheap) before the first probe.
    if host.cloud.environment().backend == crate::data::config::Backend::Sim {
        let _ = host.cloud.get(&host.io);
    }
}

fn arg_error(ctx: &NativeCallContext, e: BindingError) -> Box<EvalAltResult> {
    recorder::runtime_error(&e.code, &e.message, ctx.call_position())
}

/// Nearest-rank percentile of sorted samples.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Health probes: HTTP, TCP and latency percentiles. All read-only.
#[export_module]
pub mod health_api {
    /// Probes `url` with GET and returns `#{ ok, status, latency_ms, body, error }`. `ok` needs a
    /// 2xx/3xx status (see `http(url, options)`). Never throws for an unhealthy answer: check `ok`.
    #[rhai_fn(name = "http", return_raw)]
    pub(crate) fn http(ctx: NativeCallContext, url: &str) -> ScriptResult<Map> {
        http_with(ctx, url, Map::new())
    }

    /// Probes `url`. Options: `method`, `expect_status` (int or array; default any 2xx/3xx),
    /// `expect_body` (text the body must contain), `max_latency` (`"500ms"`), `timeout`
    /// (default `"10s"`), `retries` (default 0) with `retry_delay` (default `"1s"`), `headers`.
    #[rhai_fn(name = "http", return_raw)]
    pub(crate) fn http_with(ctx: NativeCallContext, url: &str, options: Map) -> ScriptResult<Map> {
        let o = parse_http(&options).map_err(|e| arg_error(&ctx, e))?;
        let url = url.to_string();
        recorder::call(
            &ctx,
            &HTTP,
            json!({ "url": url, "method": o.method.as_str() }),
            |host| {
                ensure_sim(host);
                let client = LazyClient::new(o.timeout);
                let result = host.io.block_on(&host.interrupt, async {
                    let mut last = Value::Null;
                    for attempt in 0..=o.retries {
                        if attempt > 0 {
                            host.interrupt.clock().sleep(o.retry_delay).await;
                        }
                        last = judge(&o, fetch(host, &client, &url, &o).await);
                        if last["ok"] == true {
                            break;
                        }
                    }
                    Ok(last)
                })?;
                args::to_dynamic(&result)
            },
        )
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }

    /// Opens a TCP connection to `host:port`: `#{ ok, latency_ms, error }` (timeout 5 s).
    #[rhai_fn(name = "tcp", return_raw)]
    pub(crate) fn tcp(ctx: NativeCallContext, host_name: &str, port: i64) -> ScriptResult<Map> {
        tcp_with(ctx, host_name, port, Map::new())
    }

    /// `tcp` with a `timeout` option.
    #[rhai_fn(name = "tcp", return_raw)]
    pub(crate) fn tcp_with(
        ctx: NativeCallContext,
        host_name: &str,
        port: i64,
        options: Map,
    ) -> ScriptResult<Map> {
        let timeout = args::duration(&options, "timeout", Duration::from_secs(5))
            .map_err(|e| arg_error(&ctx, e))?;
        let port = u16::try_from(port).map_err(|_| {
            arg_error(
                &ctx,
                BindingError::new("bad_argument", format!("port {port} is out of range")),
            )
        })?;
        let target = host_name.to_string();
        recorder::call(&ctx, &TCP, json!({ "host": target, "port": port }), |host| {
            let result = host.io.block_on(&host.interrupt, async {
                let started = Instant::now();
                let outcome = tokio::time::timeout(timeout, tokio::net::TcpStream::connect((target.as_str(), port))).await;
                let latency = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
                Ok(match outcome {
                    Ok(Ok(_)) => json!({ "ok": true, "latency_ms": latency, "error": null }),
                    Ok(Err(e)) => json!({ "ok": false, "latency_ms": latency, "error": e.kind().to_string() }),
                    Err(_) => json!({ "ok": false, "latency_ms": latency, "error": format!("timed out after {} ms", timeout.as_millis()) }),
                })
            })?;
            args::to_dynamic(&result)
        })
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }

    /// Samples `url`'s latency. Options: `samples` (default 20), `concurrency` (default 4),
    /// `timeout` (per request, default `"10s"`). Returns `#{ samples, errors, p50, p95, p99,
    /// min, max, mean }` in milliseconds, over the successful (2xx/3xx) answers.
    #[rhai_fn(return_raw)]
    pub(crate) fn latency(ctx: NativeCallContext, url: &str, options: Map) -> ScriptResult<Map> {
        let parsed = (|| -> Result<_, BindingError> {
            args::known(&options, &["samples", "concurrency", "timeout"])?;
            Ok((
                args::int(&options, "samples", 20)?.clamp(1, 10_000) as usize,
                args::int(&options, "concurrency", 4)?.clamp(1, 256) as usize,
                args::duration(&options, "timeout", Duration::from_secs(10))?,
            ))
        })();
        let (samples, concurrency, timeout) = parsed.map_err(|e| arg_error(&ctx, e))?;
        let url = url.to_string();
        recorder::call(
            &ctx,
            &LATENCY,
            json!({ "url": url, "samples": samples, "concurrency": concurrency }),
            |host| {
                ensure_sim(host);
                let client = LazyClient::new(timeout);
                let o = parse_http(&Map::new())?;
                let result = host.io.block_on(&host.interrupt, async {
                    let answers: Vec<Result<Answer, String>> =
                        futures_util::stream::iter(0..samples)
                            .map(|_| fetch(host, &client, &url, &o))
                            .buffer_unordered(concurrency)
                            .collect()
                            .await;
                    let mut ms: Vec<f64> = answers
                        .iter()
                        .filter_map(|a| {
                            a.as_ref()
                                .ok()
                                .filter(|a| (200..400).contains(&a.status))
                                .map(|a| a.latency_ms)
                        })
                        .collect();
                    ms.sort_by(f64::total_cmp);
                    let round = |x: f64| (x * 10.0).round() / 10.0;
                    let mean = if ms.is_empty() {
                        0.0
                    } else {
                        ms.iter().sum::<f64>() / ms.len() as f64
                    };
                    Ok(json!({
                        "samples": samples,
                        "errors": samples - ms.len(),
                        "p50": round(percentile(&ms, 50.0)),
                        "p95": round(percentile(&ms, 95.0)),
                        "p99": round(percentile(&ms, 99.0)),
                        "min": round(ms.first().copied().unwrap_or(0.0)),
                        "max": round(ms.last().copied().unwrap_or(0.0)),
                        "mean": round(mean),
                    }))
                })?;
                args::to_dynamic(&result)
            },
        )
        .map(|d| d.try_cast::<Map>().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 95.0), 95.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
