//! Data read and written as files: `runbook.toml` (config) and the audit transcript. Above the
//! leaves only; nothing here runs a script or talks to a cloud.

pub(crate) mod config;
pub mod transcript;
