//! `runbook serve` and `runbook hook`: tier 1, alerts in, runs out (see [`crate::front::hooks`]).

use std::path::Path;

use super::Global;
use crate::base::error::{Error, Result};
use crate::data::config::Config;
use crate::front::hooks::Listen;

pub(super) fn serve(g: Global, hooks: &Path, listen: Listen, check: bool) -> Result<()> {
    let config = g.load_config()?;
    if check {
        let hooks = crate::front::hooks::config::Hooks::load(hooks)?;
        for line in crate::front::hooks::hub::check(&hooks, &g.dirs, &config)? {
            super::out(&format!("{line}\n"));
        }
        return Ok(());
    }
    retry_pending_uploads(&config)?;
    crate::front::hooks::serve(hooks, g.dirs, config, listen)
}

/// With the aws backend, finishes transcript uploads left pending (by a crashed process, or an
/// upload that failed) now and every minute while the server runs, on a thread of its own.
fn retry_pending_uploads(config: &Config) -> Result<()> {
    let Some(store) = crate::services::state::Store::open(config.state())?.aws() else {
        return Ok(());
    };
    let spawned = std::thread::Builder::new()
        .name("pending-uploads".into())
        .spawn(move || {
            loop {
                let (lines, _) = crate::services::state::upload::retry_pending(&store);
                for line in lines {
                    if line.contains("NOT archived") {
                        tracing::error!("{line}");
                    } else {
                        tracing::info!("{line}");
                    }
                }
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the pending-upload thread: {e}");
    }
    Ok(())
}

/// How long the probe waits for `/healthz` (hooks.toml's `health_timeout` is held under it).
const HEALTHCHECK_TIMEOUT: std::time::Duration = crate::front::hooks::config::HEALTHCHECK_WAIT;

/// `runbook serve --healthcheck [URL]`: the probe a container image without curl needs. Every
/// failure exits 1, the code Docker's HEALTHCHECK reads as "unhealthy" (it reserves 2).
///
/// Without a URL it probes the probe listener when there is one (it answers while every
/// alert connection is taken), else the alert listener.
pub(super) fn healthcheck(hooks: &Path, url: &str, listen: Listen) -> Result<()> {
    let unhealthy = |what: &str, why: String| Error::Io {
        action: "health check failed:",
        path: what.into(),
        source: std::io::Error::other(why),
    };
    let url = if url.is_empty() {
        // The address the server bound (port 0 resolved) before the one it was asked for.
        let read = |file: &Path| {
            std::fs::read_to_string(file)
                .map(|a| a.trim().to_string())
                .map_err(|e| unhealthy(&file.display().to_string(), e.to_string()))
        };
        let configured = || {
            crate::front::hooks::config::Hooks::load(hooks)
                .map(|h| h.file.server)
                .map_err(|e| unhealthy(&hooks.display().to_string(), e.to_string()))
        };
        let addr = match listen {
            Listen {
                probe_addr_file: Some(file),
                ..
            } => read(&file)?,
            Listen {
                probe_listen: Some(probe),
                ..
            } => probe,
            Listen {
                addr_file: Some(file),
                ..
            } => read(&file)?,
            Listen {
                listen: Some(listen),
                ..
            } => listen,
            Listen { .. } => {
                let server = configured()?;
                server.probe_listen.unwrap_or(server.listen)
            }
        };
        format!("http://{}/healthz", probe_address(&addr))
    } else {
        url.to_string()
    };
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| unhealthy(&url, e.to_string()))?
        .block_on(async {
            let client = reqwest::Client::builder()
                .timeout(HEALTHCHECK_TIMEOUT)
                // A proxy from the environment has no business between a probe and loopback.
                .no_proxy()
                .build()
                .map_err(|e| e.to_string())?;
            // Worded as `health::http` words them (its probe runs inside a runbook's sandbox).
            let response = client.get(&url).send().await.map_err(|e| {
                if e.is_timeout() {
                    format!("no answer within {}s", HEALTHCHECK_TIMEOUT.as_secs())
                } else if e.is_connect() {
                    "connection refused or unreachable (is `runbook serve` running?)".to_string()
                } else {
                    format!("request failed: {}", e.without_url())
                }
            })?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            Ok::<_, String>((status, body))
        })
        .map_err(|e| unhealthy(&url, e))?;
    let (status, body) = answer;
    let body = crate::front::hooks::clip(body.trim());
    if status == reqwest::StatusCode::OK {
        println!("{url}: {status} {body}");
        Ok(())
    } else {
        Err(unhealthy(&url, format!("{status} {body}")))
    }
}

/// `0.0.0.0:9750` (listen on every address) is probed on loopback; anything else as given.
fn probe_address(listen: &str) -> String {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(mut addr) if addr.ip().is_unspecified() => {
            addr.set_ip(match addr {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
            addr.to_string()
        }
        _ => listen.to_string(),
    }
}

pub(super) fn hook(
    g: Global,
    source: Option<crate::front::hooks::Source>,
    hooks: &Path,
    reset_breakers: bool,
    scope: Option<&str>,
) -> Result<()> {
    if reset_breakers {
        let config = g.load_config()?;
        let closed = crate::front::hooks::reset_breakers(hooks, config.state(), scope)?;
        super::out(&format!(
            "closed: {}\n",
            if closed.is_empty() {
                "none (no breaker was open)".to_string()
            } else {
                closed.join(", ")
            }
        ));
        return Ok(());
    }
    let Some(source) = source else {
        return Err(Error::Usage("--source is required".into()));
    };
    let mut payload = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut payload)
        .map_err(|e| Error::io("cannot read", Path::new("<stdin>"), e))?;
    let config = g.load_config()?;
    crate::front::hooks::one_shot(hooks, g.dirs, config, source, &payload)
}

#[cfg(test)]
mod tests {
    use super::probe_address;

    #[test]
    fn a_server_listening_on_every_address_is_probed_on_loopback() {
        assert_eq!(probe_address("0.0.0.0:9750"), "127.0.0.1:9750");
        assert_eq!(probe_address("[::]:9750"), "[::1]:9750");
        assert_eq!(probe_address("10.0.0.5:9750"), "10.0.0.5:9750");
        assert_eq!(
            probe_address("runbook.internal:9750"),
            "runbook.internal:9750"
        );
    }
}
