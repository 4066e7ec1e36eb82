//! `runbook`: a runtime for incident runbooks written in Rhai.
//!
//! The path of one run: [`front::cli`] parses arguments → [`run::launch`] builds the host →
//! [`runbook::Runbook::load`] compiles the file in the sandboxed [`sandbox::engine`] and collects
//! every step → [`run::executor::Executor`] walks the steps, asking a [`run::executor::Driver`]
//! what to do → steps call [`bindings`], whose every call passes the [`sandbox::recorder`] →
//! which writes the hash-chained [`data::transcript`]. See `src/README.md`.
//!
//! The modules are grouped in layers, one folder each: from the bottom up `base`, `data`,
//! `services`, `sandbox`, `bindings`, `runbook`, `run`, `front`. A module imports only from its
//! own layer or the ones below it (`tests/layers.rs` checks this; `src/README.md` maps them).

pub mod base;
pub(crate) mod bindings;
pub mod data;
pub mod front;
pub mod run;
pub mod runbook;
pub mod sandbox;
pub mod services;

pub use base::error::{Error, Result};
