//! `runbook serve` and `runbook hook`: tier 1, alerts in, runs out (see [`crate::front::hooks`]).

use std::path::Path;

use super::Global;
use crate::base::error::{Error, Result};
use crate::data::config::Config;

pub(super) fn serve(
    g: Global,
    hooks: &Path,
    listen: Option<String>,
    addr_file: Option<&Path>,
    check: bool,
) -> Result<()> {
    let config = g.load_config()?;
    if check {
        let hooks = crate::front::hooks::config::Hooks::load(hooks)?;
        for line in crate::front::hooks::hub::check(&hooks, &g.dirs, &config)? {
            super::out(&format!("{line}\n"));
        }
        return Ok(());
    }
    retry_pending_uploads(&config)?;
    crate::front::hooks::serve(hooks, g.dirs, config, listen, addr_file)
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
