//! The integration tests: one crate, so the helpers in `common` exist once and the AWS-SDK-sized
//! library is linked into one test binary instead of one per file (minutes of link time on the
//! 2-core CI machines). Each module drives the real `runbook` binary; run one with
//! `cargo test --test main hooks::` and one test by its sentence of a name.

// A test or bench crate has no users outside itself: its `pub` helpers are for its modules.
#![allow(unreachable_pub)]

mod common;

mod approvals;
mod bounded;
mod cli;
mod cloud_actions;
mod cloud_moto;
mod cloud_sim;
mod core;
mod drill_policy;
mod errors;
mod hooks;
mod hooks_alertmanager;
mod install;
mod interactive;
mod layers;
mod local_commands;
mod notify_health;
mod replay;
mod resume;
mod scripting;
mod state;
mod transcript_format;
mod transcripts_s3;
