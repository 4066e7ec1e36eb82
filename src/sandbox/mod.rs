//! The sandbox a runbook runs in: the engine with its limits, the host state the bindings reach,
//! the one recorder every binding call passes (with the guardrails), and the declaration types.

pub(crate) mod declare;
pub mod engine;
pub mod recorder;
