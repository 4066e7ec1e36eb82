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
    let config = Config::load(g.config.as_deref())?;
    if check {
        let hooks = crate::front::hooks::config::Hooks::load(hooks)?;
        for line in crate::front::hooks::hub::check(&hooks, &g.dirs, &config)? {
            println!("{line}");
        }
        return Ok(());
    }
    crate::front::hooks::serve(hooks, g.dirs, config, listen, addr_file)
}

pub(super) fn hook(
    g: Global,
    source: Option<crate::front::hooks::Source>,
    hooks: &Path,
    reset_breakers: bool,
    scope: Option<&str>,
) -> Result<()> {
    if reset_breakers {
        let config = Config::load(g.config.as_deref())?;
        let closed = crate::front::hooks::reset_breakers(hooks, config.state(), scope)?;
        println!(
            "closed: {}",
            if closed.is_empty() {
                "none (no breaker was open)".to_string()
            } else {
                closed.join(", ")
            }
        );
        return Ok(());
    }
    let Some(source) = source else {
        return Err(Error::Usage("--source is required".into()));
    };
    let mut payload = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut payload)
        .map_err(|e| Error::io("cannot read", Path::new("<stdin>"), e))?;
    let config = Config::load(g.config.as_deref())?;
    crate::front::hooks::one_shot(hooks, g.dirs, config, source, &payload)
}
