//! Services a run talks to: the async runtime, Slack/Teams delivery, approvals, and the cloud
//! (AWS through the SDK, or the deterministic simulator). None of them knows the Rhai engine.

pub(crate) mod approvals;
pub mod cloud;
pub mod notify;
pub(crate) mod runtime;
pub mod state;
