//! Shared by the fuzz targets (included with `#[path]`, each target is its own binary).
#![allow(dead_code)]

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use runbook::base::console::Console;
use runbook::sandbox::engine::Host;
use runbook::sandbox::recorder::Mode;

/// A silent host on the built-in sim, as `runbook check` makes one.
pub fn host() -> Rc<Host> {
    Host::new(
        Mode::Plan,
        Console::silent(),
        Arc::new(AtomicBool::new(false)),
    )
}

/// Where a fuzzed runbook "lives": in the repository's runbooks/ folder (the file need not
/// exist), so `import "stdlib/..."` resolves as it does for the real runbooks.
pub fn runbook_path(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../runbooks")).join(name)
}
