//! The front-ends: the command line, the alert receiver (`serve`), drills, policy checks, the REPL
//! and the generated docs. Nothing imports from here but `main.rs`.

pub(crate) mod capture;
pub mod cli;
pub(crate) mod docs;
pub mod drill;
pub mod hooks;
pub(crate) mod policy;
pub(crate) mod repl;
