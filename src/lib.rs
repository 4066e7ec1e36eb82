//! `runbook`: a runtime for incident runbooks written in Rhai.
//!
//! The path of one run: [`cli`] parses arguments → [`runbook::Runbook::load`] compiles the file in
//! the sandboxed [`engine`] and collects every step → [`executor::Executor`] walks the steps,
//! asking a [`executor::Driver`] what to do → steps call [`bindings`], whose every call passes the
//! [`recorder`] → which writes the hash-chained [`transcript`]. See `src/README.md`.

pub mod approvals;
pub mod bindings;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod console;
pub mod docs;
pub mod drill;
pub mod engine;
pub mod error;
pub mod executor;
pub mod git;
pub mod hooks;
pub mod interactive;
pub mod io;
pub mod memory;
pub mod notify;
pub mod policy;
pub mod recorder;
pub mod redact;
pub mod repl;
pub mod resume;
pub mod runbook;
pub mod state;
pub mod transcript;

pub use error::{Error, Result};
