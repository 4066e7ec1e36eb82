//! Host APIs a runbook can call, one plugin module per concern.
//!
//! Every function here is a documented `#[export_module]` function: its doc comment is the runbook
//! author's API reference (`runbook docs` prints them). Each one that touches the world goes through
//! [`crate::recorder::call`] with its static [`Binding`](crate::recorder::Binding) declaration;
//! none writes the transcript or looks at the mode itself.

use rhai::Engine;
use rhai::plugin::*;

pub mod core;

/// Namespaces taken by bindings: an `import ... as <alias>` may not reuse them.
pub const NAMESPACES: &[&str] = &["json", "notes"];

/// Registers every binding module on `engine`. Called once, from [`crate::engine::build`].
pub fn register(engine: &mut Engine) {
    engine.register_global_module(exported_module!(core::core_api).into());
    engine.register_static_module("json", exported_module!(core::json_api).into());
    engine.register_static_module("notes", exported_module!(core::notes_api).into());
}
