//! Running a loaded runbook: one `Launch` for every entry point, the executor and its drivers,
//! the interactive terminal driver, resume, and run-lifecycle observers.

pub mod executor;
pub(crate) mod interactive;
pub(crate) mod launch;
pub(crate) mod lifecycle;
pub(crate) mod replay;
pub mod resume;
